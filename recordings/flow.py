"""The recording a call's flow controls: its `record` nodes (start, stop, pause, resume) and its `consent`
node (flows/schema.py). One `FlowRecording` per call, made by ivr/inbound.py.

What `start` records: the caller's side of the call, through a snoop channel on the caller (`spy=both`:
what they say and what they hear, prompts included), recorded like any other call recording (same row,
same pause/resume, same store). A snoop leaves the caller's own channel free for prompts and keys, which a
recording of the caller's channel itself would hold up. The recording ends at `stop` or with the flow; the
conversation with an agent is recorded afterwards as the queue's policy says.

A refused consent is kept on the interaction (`recording_consent: false`): nothing of the call is recorded
from then on, the agent leg included, and a flow recording already running is thrown away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from asterisk.ari import AriError
from asterisk.stasis import StasisRouter
from crm_bridge.timeline import Interaction
from hilo import audit
from recordings.calls import CallRecorder, NotLive
from recordings.catalog import Recording
from recordings.policy import CONSENT_KEY

log = logging.getLogger(__name__)

# (task name, coroutine) -> run it as one of the call's own tasks (InboundCalls._spawn), which the call's
# owner waits for and cancels: a recording still being stored is never left behind unseen.
Spawn = Callable[[str, Coroutine[Any, Any, None]], None]

ACTOR = audit.system("flow")  # who pauses, resumes or discards a recording from a call's flow
SNOOP_WAIT_S = 5.0


class FlowRecording:
    def __init__(
        self,
        recorder: CallRecorder,
        stasis: StasisRouter,
        interaction: Interaction,
        caller_channel: str,
        spawn: Spawn | None = None,
    ) -> None:
        self.recorder = recorder
        self.spawn = spawn
        self.stasis = stasis
        self.interaction = interaction
        self.caller_channel = caller_channel
        self.recording: Recording | None = None
        self.snoop_id: str | None = None
        self._paused = False
        self._finishing: set[asyncio.Task[None]] = set()

    @property
    def paused(self) -> bool:
        return self._paused

    async def control(self, action: str) -> str:
        if action == "start":
            return await self._start()
        if action == "stop":
            return await self._stop()
        if action in ("pause", "resume"):
            # The flow's pause holds for what the caller keys next even when nothing is being recorded.
            self._paused = action == "pause"
            return await self._toggle(pause=action == "pause")
        raise ValueError(f"unknown recording action {action!r}")

    async def consent(self, given: bool, via: str) -> None:
        self.interaction.context[CONSENT_KEY] = given
        timeline = self.recorder.timeline
        await timeline.update(self.interaction)  # on the interaction now: the agent leg reads it
        await timeline.record(self.interaction, "recording.consent", {"given": given, "via": via})
        if not given and self.recording is not None:
            rec, self.recording = self.recording, None
            await self.recorder.discard(rec, "consent refused", ACTOR)
            await self._hangup_snoop()

    async def close(self) -> None:
        """At the end of the flow (or the call): stop what is recording and store it."""
        await self._stop()
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def _start(self) -> str:
        if self.interaction.context.get(CONSENT_KEY) is False:
            await self.recorder.timeline.record(self.interaction, "recording.skipped", {"reason": "consent"})
            return "refused"
        if self.recording is not None:
            return "unchanged"
        snoop_id = f"{self.recorder.ari.app}-recsnoop-{uuid.uuid4().hex[:12]}"
        state = self.stasis.watch(snoop_id)  # before it exists: its StasisStart must not look like a new call
        self.snoop_id = snoop_id
        try:
            await self.recorder.ari.snoop(self.caller_channel, snoop_id, spy="both", app_args="recording")
            await asyncio.wait_for(state.in_stasis.wait(), SNOOP_WAIT_S)
        except (AriError, TimeoutError) as exc:
            log.error("flow recording of interaction %s: no snoop on the caller: %s", self.interaction.id, exc)
            await self._hangup_snoop()
            await self.recorder.timeline.record(self.interaction, "recording.failed", {"reason": "snoop"})
            return "failed"
        self.recording = await self.recorder.start_channel(self.interaction, snoop_id)
        if self.recording is None:
            await self._hangup_snoop()
            return "failed"
        if self._paused:  # a pause asked for before the start holds
            await self._toggle(pause=True)
        return "started"

    async def _stop(self) -> str:
        rec, self.recording = self.recording, None
        if rec is None:
            return "unchanged"
        with contextlib.suppress(AriError):
            await self.recorder.ari.stop_recording(rec.asterisk_name)
        await self._hangup_snoop()
        # Asterisk closes the file; it is stored in the background, the flow goes on.
        if self.spawn is not None:
            self.spawn(f"flow-recording-{rec.id}", self.recorder.finish_call(rec))
        else:
            task = asyncio.create_task(self.recorder.finish_call(rec), name=f"flow-recording-{rec.id}")
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
        return "stopped"

    async def _toggle(self, *, pause: bool) -> str:
        if self.recording is None:
            return "not_recording"
        try:
            rec, changed = await (self.recorder.pause if pause else self.recorder.resume)(self.recording.id, ACTOR)
        except (NotLive, LookupError, AriError) as exc:
            log.warning("flow recording %s: cannot %s: %s", self.recording.id, "pause" if pause else "resume", exc)
            return "failed"
        self.recording = rec
        if not changed:
            return "unchanged"
        return "paused" if pause else "resumed"

    async def _hangup_snoop(self) -> None:
        snoop_id, self.snoop_id = self.snoop_id, None
        if snoop_id is None:
            return
        with contextlib.suppress(AriError):
            await self.recorder.ari.hangup(snoop_id)
        self.stasis.forget(snoop_id)
