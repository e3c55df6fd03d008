"""A text session: prompts go to a list (and an optional callback), answers come from scripted inputs.

Used by `hilo flows simulate` and the tests; the text channels (SMS, WhatsApp, web chat) feed the same
interface one message at a time (bridges/conversation_flow.py, which replays a conversation's answers).
An answer is whatever the person typed: a key, digits, or a menu label (the engine matches labels
case-insensitively). Secrets (PINs, dates of birth) reach `on_input` masked."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable


class TypedAnswers(ABC):
    """A session whose answers are typed text: a prompt or a file's text alternative goes to `_send`, every
    read takes the next answer from `_next` (digits with their spaces dropped). `TextSession` and the text
    channels' replay (bridges/conversation_flow.py, which also takes a menu reply by its button's title)
    differ only in where answers come from and where prompts go."""

    @abstractmethod
    def _send(self, text: str) -> None: ...

    @abstractmethod
    def _next(self, *, secret: bool = False) -> str | None: ...

    async def say(self, text: str) -> None:
        self._send(text)

    async def play(self, file: str, text_alt: str) -> None:
        self._send(text_alt)

    async def read_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None:
        answer = self._next()
        return None if answer is None else answer.replace(" ", "")

    async def read_secret_digits(
        self,
        *,
        min_digits: int,
        max_digits: int,
        terminator: str | None,
        timeout_s: float,
        inter_digit_timeout_s: float,
    ) -> str | None:
        """Like `read_digits` for a PIN or a date of birth: `_next` is told the answer is a secret."""
        answer = self._next(secret=True)
        return None if answer is None else answer.replace(" ", "")

    async def read_choice(self, timeout_s: float) -> str | None:
        return self._next()


class TextSession(TypedAnswers):
    def __init__(
        self,
        inputs: Iterable[str | None] = (),
        *,
        on_output: Callable[[str], None] | None = None,
        on_input: Callable[[str | None], None] | None = None,
    ) -> None:
        self.inputs: list[str | None] = list(inputs)
        self.output: list[str] = []
        self.on_output = on_output
        self.on_input = on_input

    def _send(self, text: str) -> None:
        self.output.append(text)
        if self.on_output is not None:
            self.on_output(text)

    def _next(self, *, secret: bool = False) -> str | None:
        # No scripted answer left: the person said nothing (the flow's no-input path).
        answer = self.inputs.pop(0) if self.inputs else None
        if self.on_input is not None:
            self.on_input("*" * len(answer.strip()) if secret and answer is not None else answer)
        return answer
