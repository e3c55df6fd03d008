"""A stored recording made for a test without a call: its interaction, its catalogue row, and a quiet second of
audio stored by the recorder's own code (`CallRecorder.keep`: encrypted into the store, the row `stored` with
its `recording.stored` event), so what the tests read cannot drift from what calls leave."""

from __future__ import annotations

import asyncio
import uuid
import wave
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from crm_bridge import identity
from recordings import catalog
from recordings.catalog import Recording
from tests.stack.calls import KNOWN_CALLER
from tests.stack.conftest import Stack


async def stored_recording(
    stack: Stack,
    *,
    agent_id: str | None = "bob",
    queue: str | None = "support",
    kind: str = "call",
    days_ago: int = 0,
    retention_days: int = 30,
    context: dict[str, Any] | None = None,
    before_stored: Callable[[Recording], Awaitable[None]] | None = None,
) -> Recording:
    """A recording of a call of Ana García's (`context`: the interaction's, e.g. its flow's language) that
    began `days_ago` days ago, stored now. `before_stored`: what to do between its creation and its storing
    (e.g. queue its transcript job as a worker that died would have left it)."""
    assert stack.services.timeline is not None and stack.services.recordings is not None
    found = await identity.identify_or_create(stack.pool, "phone", KNOWN_CALLER, "ES")
    interaction = await stack.services.timeline.start_interaction(
        found.customer_id, "voice", "inbound", context=context or {}
    )
    rec = await catalog.create(
        stack.pool,
        kind=kind,
        interaction_id=interaction.id,
        customer_id=found.customer_id,
        agent_id=agent_id,
        queue=queue,
        asterisk_name=f"test-{uuid.uuid4()}",
        started_at=datetime.now(UTC) - timedelta(days=days_ago),
        retention_days=retention_days,
    )
    if before_stored is not None:
        await before_stored(rec)
    quiet = stack.settings.recordings_dir / f"quiet-{rec.id}.wav"
    await asyncio.to_thread(_quiet_second, quiet)
    try:
        rec, event = await stack.services.recordings.keep(rec, quiet, 1.0)
    finally:
        quiet.unlink()
    await stack.services.timeline.publish(event)
    return rec


def _quiet_second(path: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setparams((1, 2, 8000, 0, "NONE", "not compressed"))
        w.writeframes(b"\x10\x00" * 8000)
