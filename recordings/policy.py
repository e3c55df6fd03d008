"""Whether a call is recorded, and for how long it is kept.

A queue records its calls unless routing.yaml says `recording: {record: false}`. A flow can leave one caller
out: a `consent` node the caller answers with a refusal (kept on the interaction as `recording_consent`), or
a `set` node giving the variable `record_consent` the value false (or "no", "0", "off"), means that call is
not recorded, whatever the queue says. With `recording: {legs: true}` the caller's and the agent's sides
are recorded on their own as well, beside the mixed conversation. The days a file is kept come
from the queue's `recording.retention_days`, else the server's default."""

from __future__ import annotations

from typing import Any

from dialplans.models import Queue, QueueRecording
from flows.schema import CONSENT_VARIABLE

CONSENT_KEY = "recording_consent"  # in interactions.context: the caller's answer to a `consent` node
_REFUSALS = frozenset({"false", "no", "n", "0", "off"})


def consent_refused(variables: dict[str, Any]) -> bool:
    value = variables.get(CONSENT_VARIABLE)
    if value is None:
        return False
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return str(value).strip().lower() in _REFUSALS


class RecordingPolicy:
    def __init__(self, queues: list[Queue], default_retention_days: int) -> None:
        self.queues: dict[str, QueueRecording] = {q.id: q.recording for q in queues}
        self.default_retention_days = default_retention_days

    def skip_reason(self, queue: str | None, ivr_variables: dict[str, Any], consent: Any = None) -> str | None:
        """Why this call is not recorded ("consent", "queue"), or None to record it. `consent`: the answer to
        a flow's `consent` node kept on the interaction (False = refused), which no queue overrides."""
        if consent is False or consent_refused(ivr_variables):
            return "consent"
        if queue is not None and queue in self.queues and not self.queues[queue].record:
            return "queue"
        return None

    def legs(self, queue: str | None) -> bool:
        """Whether each side of the conversation (caller, agent) is also recorded on its own."""
        return queue is not None and queue in self.queues and self.queues[queue].legs

    def retention_days(self, queue: str | None) -> int:
        own = self.queues[queue].retention_days if queue is not None and queue in self.queues else None
        return own or self.default_retention_days
