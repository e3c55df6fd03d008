"""Hilo: the composition root (settings, app wiring, CLI, the one notifier)."""
