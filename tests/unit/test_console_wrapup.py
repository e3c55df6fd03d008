"""Wrap-up input: a disposition from the configured list, a bounded note; errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.config import ConsoleConfig, load_console_config
from console.wrapup import Wrapup, WrapupError, parse_wrapup
from hilo.settings import REPO_ROOT
from hilo.yamlconf import ConfigError

CONFIG = ConsoleConfig(
    dispositions={"resolved": "Resolved", "sale": "Sale"}, away_reasons={"lunch": "Lunch"}, note_max_length=20
)


def test_a_valid_wrapup_is_parsed_and_the_note_trimmed() -> None:
    assert parse_wrapup({"disposition": "sale", "note": "  bought two  "}, CONFIG) == Wrapup("sale", "bought two")
    assert parse_wrapup({"disposition": "resolved"}, CONFIG) == Wrapup("resolved", "")
    assert parse_wrapup({"disposition": "resolved", "note": None}, CONFIG) == Wrapup("resolved", "")


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ([], "body", "JSON object"),
        (None, "body", "JSON object"),
        ({"note": "x"}, "disposition", "one of resolved, sale"),
        ({"disposition": "happy"}, "disposition", "one of resolved, sale"),
        ({"disposition": "sale", "note": 5}, "note", "text"),
        ({"disposition": "sale", "note": "x" * 21}, "note", "at most 20"),
        ({"disposition": "sale", "mood": "good"}, "mood", "unknown field"),
    ],
)
def test_bad_wrapups_name_the_field(body: Any, field: str, reason: str) -> None:
    with pytest.raises(WrapupError) as caught:
        parse_wrapup(body, CONFIG)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_the_shipped_console_file_loads() -> None:
    config = load_console_config(REPO_ROOT / "dialplans")
    assert "resolved" in config.dispositions and "break" in config.away_reasons
    assert config.note_max_length == 2000


def test_a_broken_console_file_names_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "console.yaml").write_text(
        "dispositions:\n  resolved: Resolved\n  Bad Id: Nope\naway_reasons:\n  lunch: Lunch\nnote_max_length: 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_console_config(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path / 'console.yaml'}:6: note_max_length" in message
    assert "dispositions" in message
