from pathlib import Path

import pytest

from dialplans.models import IvrLine, load_demo_customers, load_ivr, load_routing
from hilo.app import check_dialplans
from hilo.yamlconf import ConfigError, load_model

DIALPLANS = Path(__file__).resolve().parents[2] / "dialplans"


def test_shipped_dialplans_load_and_agree() -> None:
    ivr, routing = load_ivr(DIALPLANS), load_routing(DIALPLANS)
    check_dialplans(ivr, routing)
    assert ivr.menu.options == {"1": "sales", "2": "support"}
    assert {a.id: a.queues for a in routing.agents} == {"alice": ["sales"], "bob": ["support"]}
    assert len(load_demo_customers(DIALPLANS).customers) >= 2


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "demo.yaml"
    text = (DIALPLANS / "demo.yaml").read_text().replace('"2": support', '"22": support')
    bad.write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if '"22"' in t)
    with pytest.raises(ConfigError) as err:
        load_model(bad, IvrLine)
    message = str(err.value)
    assert f"{bad}:" in message and "menu.options" in message and "should match pattern" in message
    assert f"{bad}:{line}: menu.options.22" in message, message


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    bad = tmp_path / "demo.yaml"
    bad.write_text("numbers: [100\ngreeting: hi\n")
    with pytest.raises(ConfigError, match=r"demo.yaml:\d+: invalid YAML"):
        load_model(bad, IvrLine)


def test_menu_to_unknown_queue_is_refused() -> None:
    ivr, routing = load_ivr(DIALPLANS), load_routing(DIALPLANS)
    ivr.menu.options["3"] = "billing"
    with pytest.raises(ValueError, match="unknown queue 'billing'"):
        check_dialplans(ivr, routing)
