"""For every test run, unit and stack: what the per-test bound does when it passes (tests/timeouts.py)."""

from tests.timeouts import pytest_timeout_set_timer  # noqa: F401  (a hook: pytest finds it here by name)
