"""routing.yaml's queues and agents: the old short form still loads, the new fields are checked, and every
problem names the file, the line and the field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import fakeredis
import pytest

from dialplans.models import Queue, load_routing
from flows.hours import load_calendars_file
from hilo.yamlconf import ConfigError
from routing.engine import QueueClosed, RoutingEngine
from routing.model import (
    RoutingError,
    datetime_to_ms,
    decode_levels,
    encode_capacity,
    encode_levels,
    encode_steps,
)
from tests.paths import DIALPLANS, SHIPPED_DIALPLANS

OLD_STYLE = """\
queues:
  - id: sales
    name: Sales
agents:
  - id: alice
    name: Alice
    sip_endpoint: agent-alice
    queues: [sales]
"""


def write(tmp_path: Path, text: str, hours: bool = False) -> Path:
    (tmp_path / "routing.yaml").write_text(text)
    if hours:
        (tmp_path / "hours.yaml").write_text((DIALPLANS / "hours.yaml").read_text())
    return tmp_path


def test_the_shipped_routing_has_skills_levels_capacity_and_slas() -> None:
    routing = load_routing(SHIPPED_DIALPLANS)
    queues = {q.id: q for q in routing.queues}
    assert queues["support"].skills == {"support": 1}
    assert (queues["support"].sla.percent, queues["support"].sla.within_s) == (80, 30)
    assert [s.overflow for s in queues["support"].escalation] == [None, "sales"]
    bob = next(a for a in routing.agents if a.id == "bob")
    assert bob.skills["support"] == 5 and bob.capacity == {"voice": 1, "sms": 3, "whatsapp": 3, "webchat": 3}


def test_the_old_short_form_still_loads_with_defaults(tmp_path: Path) -> None:
    routing = load_routing(write(tmp_path, OLD_STYLE))
    queue, agent = routing.queues[0], routing.agents[0]
    assert (queue.skills, queue.priority, queue.aging_s, queue.escalation, queue.agent_order) == (
        {},
        0,
        60,
        [],
        "best_skill",
    )
    assert (agent.skills, agent.teams, agent.capacity) == ({}, [], {"voice": 1})


QUEUE = "    name: Sales\n"
AGENT = "    queues: [sales]\n"


@pytest.mark.parametrize(
    ("after", "added", "expected"),
    [
        (
            AGENT,
            "    skills: {sales: 11}\n",
            r"routing.yaml:9: agents.0.skills.sales: Input should be less",
        ),
        (
            QUEUE,
            "    escalation: [{after_s: 10}]\n",
            r"routing.yaml:4: queues.0.escalation.0: Value error",
        ),
        (QUEUE, "    escalation: [{after_s: 10, overflow: billing}]\n", r"overflows into unknown queue 'billing'"),
        (
            AGENT,
            "    capacity: {voice: 1, fax: 2}\n",
            r"routing.yaml:9: agents.0.capacity.fax.\[key\]: Input",
        ),
        (
            QUEUE,
            "    escalation: [{after_s: 30, skills: {}}, {after_s: 10, skills: {}}]\n",
            r"routing.yaml:2: queues.0: Value error, queue sales: escalation steps must have increasing after_s",
        ),
        (QUEUE, "    agent_order: random\n", r"routing.yaml:4: queues.0.agent_order: Input should be 'best_skill'"),
    ],
    ids=["level", "empty-step", "unknown-overflow", "channel", "step-order", "order"],
)
def test_problems_name_file_line_and_field(tmp_path: Path, after: str, added: str, expected: str) -> None:
    text = OLD_STYLE.replace(after, after + added, 1)
    with pytest.raises(ConfigError, match=expected):
        load_routing(write(tmp_path, text))


def test_ids_must_be_usable_as_names(tmp_path: Path) -> None:
    text = OLD_STYLE.replace("  - id: sales\n", "  - id: 'sales queue'\n", 1)
    with pytest.raises(ConfigError, match=r"routing.yaml:2: queues.0.id: String should match pattern"):
        load_routing(write(tmp_path, text))


def test_a_queue_names_a_calendar_of_hours_yaml(tmp_path: Path) -> None:
    text = OLD_STYLE.replace("    name: Sales\n", "    name: Sales\n    hours: support\n")
    assert load_routing(write(tmp_path, text, hours=True)).queues[0].hours == "support"
    bad = OLD_STYLE.replace("    name: Sales\n", "    name: Sales\n    hours: weekends\n")
    with pytest.raises(ConfigError, match=r"routing.yaml:4: queues.0.hours: unknown calendar 'weekends'"):
        load_routing(write(tmp_path, bad, hours=True))


def test_encodings_the_script_reads() -> None:
    assert encode_levels({}) == "*"
    assert encode_levels({"support": 3, "english": 1}) == "english=1,support=3"
    assert decode_levels("english=1,support=3") == {"english": 1, "support": 3}
    assert decode_levels("*") == {}
    assert encode_capacity({"webchat": 3, "voice": 1, "sms": 0}) == "voice=1,webchat=3"
    with pytest.raises(RoutingError, match="unknown channel"):
        encode_capacity({"fax": 1})
    queue = Queue.model_validate(
        {
            "id": "q",
            "name": "Q",
            "escalation": [{"after_s": 20, "skills": {}}, {"after_s": 60, "overflow": "b", "skills": {"x": 2}}],
        }
    )
    assert encode_steps(queue) == "20000|*|;60000|x=2|b"


def test_a_queue_out_of_its_hours_refuses_interactions() -> None:
    calendars, problems = load_calendars_file(DIALPLANS / "hours.yaml")
    assert calendars is not None and not problems
    engine = RoutingEngine(fakeredis.FakeAsyncRedis(), cast(Any, None), "unit", calendars=lambda: calendars)
    queue = Queue(id="support", name="Support", hours="support")
    monday_morning = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # 10:30 in Madrid
    engine._check_open(queue, datetime_to_ms(monday_morning))
    with pytest.raises(QueueClosed, match="queue support is closed now"):
        engine._check_open(queue, datetime_to_ms(datetime(2026, 11, 22, 12, 0, tzinfo=UTC)))  # a Sunday
    unknown = Queue(id="sales", name="Sales", hours="nowhere")  # not in the live hours: taken as open
    engine._check_open(unknown, datetime_to_ms(monday_morning))
