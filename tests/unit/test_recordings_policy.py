"""Who is recorded (queue option, caller consent from the flow), for how long, who may use a recording, and
the signed playback URLs."""

from __future__ import annotations

import base64
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from console.sessions import Principal
from dialplans.models import Queue, QueueRecording, load_routing
from recordings.access import UrlSigner, actor_of, may_use
from recordings.catalog import Recording
from recordings.crypto import KeyRing
from recordings.policy import RecordingPolicy, consent_refused


def queues() -> list[Queue]:
    return [
        Queue(id="sales", name="Sales", recording=QueueRecording(record=False)),
        Queue(id="support", name="Support", recording=QueueRecording(retention_days=7)),
        Queue(id="billing", name="Billing"),
    ]


@pytest.mark.parametrize(
    ("value", "refused"),
    [(False, True), ("false", True), ("No", True), (" off ", True), (0, True), ("0", True), (True, False),
     ("yes", False), (1, False), ("maybe", False), (None, False)],
)  # fmt: skip
def test_consent_variable(value: object, refused: bool) -> None:
    variables = {} if value is None else {"record_consent": value}
    assert consent_refused(variables) is refused


def test_queue_option_and_consent_decide_what_is_recorded() -> None:
    policy = RecordingPolicy(queues(), default_retention_days=90)
    assert policy.skip_reason("support", {}) is None
    assert policy.skip_reason("billing", {}) is None  # recorded unless a queue says not to
    assert policy.skip_reason("sales", {}) == "queue"
    assert policy.skip_reason("support", {"record_consent": "no"}) == "consent"
    assert policy.skip_reason(None, {}) is None
    assert (policy.retention_days("support"), policy.retention_days("billing"), policy.retention_days(None)) == (
        7,
        90,
        90,
    )


def test_routing_yaml_recording_option_is_validated_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(
        "queues:\n  - id: support\n    name: Support\n    recording: {record: true, retention_days: 0}\n"
        "agents:\n  - {id: bob, name: Bob, sip_endpoint: agent-bob, queues: [support]}\n"
    )
    with pytest.raises(ValueError, match=r"routing.yaml.*4.*retention_days"):
        load_routing(tmp_path)


def rec(agent_id: str | None) -> Recording:
    now = datetime.now(UTC)
    return Recording(
        id=uuid.uuid4(),
        kind="call",
        interaction_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        agent_id=agent_id,
        queue="support",
        state="stored",
        asterisk_name="x",
        started_at=now,
        ended_at=now,
        duration_s=1.0,
        paused_spans=[],
        storage_key="k",
        key_id="k1",
        sha256="0" * 64,
        size_bytes=44,
        retention_days=30,
        delete_after=now,
        legal_hold=False,
        hold_reason=None,
        failure=None,
        deleted_at=None,
    )


def test_agents_use_their_own_calls_staff_use_all() -> None:
    bobs = rec("bob")
    assert may_use(Principal("agent", "bob", "bob"), bobs)
    assert not may_use(Principal("agent", "alice", "alice"), bobs)
    assert not may_use(Principal("agent", None, "nobody"), rec(None))  # a voicemail has no agent
    assert may_use(Principal("supervisor", None, "sup"), bobs) and may_use(Principal("admin"), bobs)
    assert not may_use(Principal("viewer", "bob"), bobs)
    assert actor_of(Principal("agent", "bob", "bob")) == "console:bob" and actor_of(Principal("admin")) == "api:admin"


def test_signed_urls_expire_and_cannot_be_altered() -> None:
    ring = KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}", "k1")
    signer = UrlSigner(ring.url_keys())
    rid = uuid.uuid4()
    expires = int(time.time()) + 60
    sig = signer.sign(rid, "playback", expires, "console:bob")
    assert signer.check(rid, "playback", expires, "console:bob", sig, time.time()) is None
    assert signer.check(rid, "playback", expires, "console:bob", sig, expires + 1) == "the link has expired"
    for changed in [
        (uuid.uuid4(), "playback", expires, "console:bob"),
        (rid, "download", expires, "console:bob"),
        (rid, "playback", expires + 60, "console:bob"),
        (rid, "playback", expires, "console:alice"),
    ]:
        assert signer.check(*changed, sig, time.time()) == "the link's signature does not match"
    url = signer.url(rid, "download", expires, "console:bob")
    assert url.startswith(f"/api/recordings/{rid}/audio?mode=download&expires={expires}&actor=console%3Abob&sig=")
    # After a key rotation, links signed a moment before still work until they expire.
    rotated = KeyRing.parse(
        f"k2:{base64.b64encode(os.urandom(32)).decode()},k1:{base64.b64encode(ring.keys['k1']).decode()}", "k2"
    )
    assert UrlSigner(rotated.url_keys()).check(rid, "playback", expires, "console:bob", sig, time.time()) is None
