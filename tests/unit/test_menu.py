from typing import Any

from dialplans.models import Menu
from ivr.menu import run_menu

MENU = Menu(
    prompt="p", invalid="bad", no_input="silence", retries=3, timeout_s=1, options={"1": "sales", "2": "support"}
)


class ScriptedCaller:
    """A session whose caller presses the given keys in turn (None = says nothing)."""

    def __init__(self, keys: list[str | None]) -> None:
        self.keys = keys
        self.heard: list[str] = []

    async def say(self, text: str, *, interruptible: bool = True) -> None:
        self.heard.append(text)

    async def read_digit(self, timeout: float) -> str | None:
        return self.keys.pop(0)


async def run(keys: list[str | None]) -> tuple[str | None, ScriptedCaller, list[tuple[str, dict[str, Any]]]]:
    caller, events = ScriptedCaller(keys), []

    async def record(type_: str, data: dict[str, Any]) -> None:
        events.append((type_, data))

    return await run_menu(caller, MENU, record), caller, events


async def test_valid_choice_first_time() -> None:
    choice, caller, events = await run(["2"])
    assert choice == "support"
    assert caller.heard == ["p"]
    assert events[-1] == ("ivr.input", {"digit": "2", "valid": True, "attempt": 1})


async def test_wrong_key_then_silence_then_right_key() -> None:
    choice, caller, events = await run(["9", None, "1"])
    assert choice == "sales"
    assert caller.heard == ["p", "bad", "p", "silence", "p"]
    assert [e[0] for e in events] == ["ivr.menu", "ivr.input", "ivr.menu", "ivr.no_input", "ivr.menu", "ivr.input"]


async def test_gives_up_after_retries() -> None:
    choice, caller, _ = await run(["9", "8", "7"])
    assert choice is None
    assert caller.heard.count("p") == 3
