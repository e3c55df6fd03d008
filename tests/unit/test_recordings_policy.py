"""Who is recorded (queue option, caller consent from the flow), for how long, who may use a recording, and
the signed playback URLs."""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dialplans.models import Queue, QueueRecording, load_routing
from recordings.access import UrlSigner, scope_of_actor, signed_actor
from recordings.crypto import KeyRing
from recordings.policy import RecordingPolicy, consent_refused
from routing.scope import EVERYTHING, Scope
from tests.unit.test_scope import Directory


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


def test_legs_are_a_queue_option_read_from_routing_yaml(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(
        "queues:\n  - id: support\n    name: Support\n    recording: {record: true, legs: true}\n"
        "  - id: sales\n    name: Sales\n"
        "agents:\n  - {id: bob, name: Bob, sip_endpoint: agent-bob, queues: [support]}\n"
    )
    policy = RecordingPolicy(load_routing(tmp_path).queues, default_retention_days=90)
    assert (policy.legs("support"), policy.legs("sales"), policy.legs(None), policy.legs("unknown")) == (
        True,
        False,
        False,
        False,
    )
    (tmp_path / "routing.yaml").write_text(
        "queues:\n  - id: support\n    name: Support\n    recording: {legs: sometimes}\n"
        "agents:\n  - {id: bob, name: Bob, sip_endpoint: agent-bob, queues: [support]}\n"
    )
    with pytest.raises(ValueError, match=r"routing.yaml.*4.*legs"):
        load_routing(tmp_path)


def test_the_recordings_rule_is_the_scope_as_one_sql_condition() -> None:
    assert EVERYTHING.condition(4) == ("true", [])
    assert Scope("agent", agent_id="bob").condition(4) == ("r.agent_id = $4", ["bob"])
    assert Scope("supervisor").condition(4) == ("false", [])  # a supervisor without teams
    assert Scope("agent").condition(4) == ("false", [])  # an agent user without an agent id
    team = Scope("supervisor", teams=("back-office",), agents=frozenset({"bob"}), queues=frozenset({"support"}))
    sql, args = team.condition(2, agent="rec.agent_id", queue="rec.queue")
    assert args == [["bob"], ["support"]]  # the ids and names are arguments, never SQL
    assert "bob" not in sql and "support" not in sql
    # the recordings of the teams' agents, and those with no agent whose queue an agent of the teams serves
    assert sql == "(rec.agent_id = ANY($2::text[]) OR (rec.agent_id IS NULL AND rec.queue = ANY($3::text[])))"
    assert "own calls" in Scope("agent", agent_id="bob").refusal("this recording")
    assert "(back-office)" in team.refusal("this recording") and "--team" in Scope("supervisor").refusal("it")


async def test_a_signed_urls_holder_is_judged_as_they_are_now() -> None:
    users: Any = Directory()  # stands in for the pool
    assert await scope_of_actor(users, "token:admin@api") == EVERYTHING
    assert await scope_of_actor(users, "api:admin") == EVERYTHING  # a URL signed before the one form
    assert await scope_of_actor(users, "user:sam@console") == Directory.SAM
    assert await scope_of_actor(users, "console:bob") == Scope("agent", agent_id="bob")
    assert await scope_of_actor(users, "user:gone@console") == Scope()  # removed since
    assert await scope_of_actor(users, "unverified") == Scope()
    assert await scope_of_actor(users, "unknown:unverified@api") == Scope()
    assert await scope_of_actor(users, "system:retention@system") == Scope()


def test_a_signed_urls_actor_old_or_new_is_read_as_one_form() -> None:
    assert str(signed_actor("user:bob@console")) == "user:bob@console"
    assert str(signed_actor("token:admin@api")) == "token:admin@api"
    # signed before the one form (migration 021 maps the audit rows the same way)
    assert str(signed_actor("console:bob")) == "user:bob@unknown"
    assert str(signed_actor("api:admin")) == "token:admin@api"
    assert signed_actor("unverified") is None and signed_actor("console:") is None and signed_actor("") is None


def test_signed_urls_expire_and_cannot_be_altered() -> None:
    ring = KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}", "k1")
    signer = UrlSigner(ring.url_keys())
    rid = uuid.uuid4()
    expires = int(time.time()) + 60
    sig = signer.sign(rid, "playback", expires, "user:bob@console")
    assert signer.check(rid, "playback", expires, "user:bob@console", sig, time.time()) is None
    assert signer.check(rid, "playback", expires, "user:bob@console", sig, expires + 1) == "the link has expired"
    for changed in [
        (uuid.uuid4(), "playback", expires, "user:bob@console"),
        (rid, "download", expires, "user:bob@console"),
        (rid, "playback", expires + 60, "user:bob@console"),
        (rid, "playback", expires, "user:alice@console"),
    ]:
        assert signer.check(*changed, sig, time.time()) == "the link's signature does not match"
    url = signer.url(rid, "download", expires, "user:bob@console")
    assert url.startswith(
        f"/api/recordings/{rid}/audio?mode=download&expires={expires}&actor=user%3Abob%40console&sig="
    )
    # After a key rotation, links signed a moment before still work until they expire.
    rotated = KeyRing.parse(
        f"k2:{base64.b64encode(os.urandom(32)).decode()},k1:{base64.b64encode(ring.keys['k1']).decode()}", "k2"
    )
    assert UrlSigner(rotated.url_keys()).check(rid, "playback", expires, "user:bob@console", sig, time.time()) is None
