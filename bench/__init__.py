"""Benchmarks against the running stack (see bench/README.md)."""
