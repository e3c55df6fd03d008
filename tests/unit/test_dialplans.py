import shutil
from pathlib import Path

import pytest

from dialplans.models import RoutingConfig, load_demo_customers, load_numbers, load_phones, load_routing
from flows.runtime import checks_for, load_live_flows
from hilo.yamlconf import ConfigError, load_model
from tests.paths import DIALPLANS as TESTS_OWN
from tests.paths import SHIPPED_DIALPLANS

DIALPLANS = SHIPPED_DIALPLANS  # these tests are of the shipped files themselves (but the next)


def test_the_tests_own_dialplans_load_with_what_the_tests_rely_on() -> None:
    """tests/dialplans/ (tests/paths.py), which the stack tests' server runs on: it loads as the server loads
    it, and has what the tests are written against, whatever an admin does to dialplans/."""
    routing = load_routing(TESTS_OWN)
    assert {a.id: (a.queues, a.sip_endpoint) for a in routing.agents} == {
        "alice": (["sales"], "agent-alice"),
        "bob": (["support"], "agent-bob"),
    }
    support = next(q for q in routing.queues if q.id == "support")
    assert [(step.after_s, step.overflow) for step in support.escalation] == [(60, None), (120, "sales")]
    assert load_phones(TESTS_OWN).endpoints() >= {"agent-alice", "agent-bob", "agent-noanswer", "supervisor-demo"}
    assert dict(load_numbers(TESTS_OWN).numbers) == {"100": "demo", "150": "feedback"}
    customers = {c.name: c for c in load_demo_customers(TESTS_OWN).customers}
    assert "Ana García" in customers
    checks_for(TESTS_OWN)  # what the server checks at its start
    live = load_live_flows(TESTS_OWN)
    flows = {number: live.for_number(number) for number in ("100", "150")}
    assert {number: flow.flow if flow else None for number, flow in flows.items()} == {
        "100": "demo",
        "150": "feedback",
    }


def test_shipped_dialplans_load_and_agree() -> None:
    routing = load_routing(DIALPLANS)
    assert {a.id: a.queues for a in routing.agents} == {"alice": ["sales"], "bob": ["support"]}
    assert len(load_demo_customers(DIALPLANS).customers) >= 2
    assert load_numbers(DIALPLANS).numbers["100"] == "demo"
    live = load_live_flows(DIALPLANS)
    flow = live.for_number("100")
    assert flow is not None and flow.flow == "demo"
    assert live.for_number("999") is None
    texts = [text for text, _, _ in live.static_prompts()]
    assert "For sales, say sales or press 1. For technical support, say technical support or press 2." in texts
    assert "Please use your keypad. For sales, press 1. For support, press 2." in texts
    assert not any("{" in t for t in texts)  # templated prompts are rendered per call, not in advance


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    text = (DIALPLANS / "routing.yaml").read_text().replace("sip_endpoint: agent-bob", "sip_endpont: agent-bob")
    bad.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "sip_endpont" in t)
    with pytest.raises(ConfigError) as err:
        load_model(bad, RoutingConfig)
    assert f"{bad}:{line}: agents.1.sip_endpont: Extra inputs are not permitted" in str(err.value)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    bad.write_text("queues: [sales\nagents: []\n")
    with pytest.raises(ConfigError, match=r"routing.yaml:\d+: invalid YAML"):
        load_model(bad, RoutingConfig)


def test_agent_in_unknown_queue_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "routing.yaml"
    bad.write_text((DIALPLANS / "routing.yaml").read_text().replace("queues: [support]", "queues: [billing]"))
    with pytest.raises(ConfigError, match="agent bob serves unknown queue 'billing'"):
        load_model(bad, RoutingConfig)


def test_live_flows_refuse_a_number_to_an_unknown_flow(tmp_path: Path) -> None:
    folder = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "numbers.yaml").write_text('numbers:\n  "100": demo\n  "200": nowhere\n')
    with pytest.raises(ConfigError, match=r"numbers.yaml:3:1: number '200' goes to unknown flow 'nowhere'"):
        load_live_flows(folder)


def test_live_flows_refuse_a_flow_queueing_to_an_unknown_queue(tmp_path: Path) -> None:
    folder = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    demo = folder / "flows" / "demo.yaml"
    demo.write_text(demo.read_text().replace("queue: sales", "queue: billing"))
    with pytest.raises(ConfigError, match=r"demo.yaml:\d+:\d+: .*billing"):
        load_live_flows(folder)
