"""What a caller may say at a menu, and which choice a recognized text means.

A `Grammar` maps each choice (a menu key) to the phrases that select it ("technical support", "support").
Engines constrain recognition to the grammar's phrases; whatever they return is matched back here, so
that a result outside the choices is a no-match whatever the engine."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_NOT_WORD = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, no punctuation, single spaces: how phrases are compared and handed to engines."""
    text = unicodedata.normalize("NFC", text).casefold()
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text)).strip()


class GrammarError(ValueError):
    pass


@dataclass(frozen=True)
class Grammar:
    """choice -> phrases (normalized). Two choices may not share a phrase: the caller's words must select
    one choice only."""

    choices: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, choices: Mapping[str, Iterable[str]]) -> Grammar:
        owner: dict[str, str] = {}
        built: list[tuple[str, tuple[str, ...]]] = []
        for choice, phrases in choices.items():
            clean = tuple(dict.fromkeys(p for p in (normalize(x) for x in phrases) if p))
            if not clean:
                raise GrammarError(f"choice {choice!r} has no phrase to say")
            for phrase in clean:
                if phrase in owner and owner[phrase] != choice:
                    raise GrammarError(f"phrase {phrase!r} is given for both {owner[phrase]!r} and {choice!r}")
                owner[phrase] = choice
            built.append((choice, clean))
        if not built:
            raise GrammarError("no choices")
        return cls(tuple(built))

    @classmethod
    def of_phrases(cls, phrases: Iterable[str]) -> Grammar:
        """Each phrase is its own choice: `--choices "billing,technical support,sales"`."""
        return cls.of({normalize(p): [p] for p in phrases if normalize(p)})

    @property
    def phrases(self) -> list[str]:
        return [p for _, phrases in self.choices for p in phrases]

    @property
    def words(self) -> list[str]:
        return sorted({w for p in self.phrases for w in p.split()})

    def match(self, text: str) -> str | None:
        """The choice `text` selects, or None. Exact phrases first; otherwise a text that holds the words of
        exactly one choice's phrase ("i need technical support please"), or a unique leading part of one
        ("technical" when the decoder stopped early); anything ambiguous is no match."""
        heard = normalize(text)
        if not heard:
            return None
        for choice, phrases in self.choices:
            if heard in phrases:
                return choice
        words = heard.split()
        contained = {c for c, phrases in self.choices for p in phrases if _contains(words, p.split())}
        if len(contained) == 1:
            return contained.pop()
        if contained:
            return None
        prefixed = {c for c, phrases in self.choices for p in phrases if p.split()[: len(words)] == words}
        return prefixed.pop() if len(prefixed) == 1 and len(words) >= 1 and len(heard) >= 4 else None


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))
