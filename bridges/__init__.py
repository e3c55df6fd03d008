"""Messaging bridges (SMS, WhatsApp, web chat) that feed the same flows and timeline as calls.

Not built yet: this package is reserved for that work and holds no code so far."""
