"""What a caller may say at a menu, and which choice a recognized text means.

A `Grammar` maps each choice (a menu key) to the phrases that select it ("technical support", "support").
Engines constrain recognition to the grammar's phrases; whatever they return is matched back here, so
that a result outside the choices is a no-match whatever the engine."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

_NOT_WORD = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, no punctuation, single spaces: how phrases are compared and handed to engines."""
    text = unicodedata.normalize("NFC", text).casefold()
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text)).strip()


class GrammarError(ValueError):
    pass


DIGIT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "0": ("zero", "oh"),
        "1": ("one",),
        "2": ("two",),
        "3": ("three",),
        "4": ("four",),
        "5": ("five",),
        "6": ("six",),
        "7": ("seven",),
        "8": ("eight",),
        "9": ("nine",),
    },
    "es": {
        "0": ("cero",),
        "1": ("uno", "un"),
        "2": ("dos",),
        "3": ("tres",),
        "4": ("cuatro",),
        "5": ("cinco",),
        "6": ("seis",),
        "7": ("siete",),
        "8": ("ocho",),
        "9": ("nueve",),
    },
}


@dataclass(frozen=True)
class Grammar:
    """choice -> phrases (normalized). Two choices may not share a phrase: the caller's words must select
    one choice only. With `repeat` (lowest, highest), the caller says a sequence of that many choices
    (digits: "four two seven") and the match is the choices joined ("427")."""

    choices: tuple[tuple[str, tuple[str, ...]], ...]
    repeat: tuple[int, int] | None = None

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
    def digits(cls, language: str, min_digits: int, max_digits: int) -> Grammar:
        """Spoken digits, one word each ("oh" for zero in English), `min_digits` to `max_digits` of them."""
        words = DIGIT_WORDS.get(language)
        if words is None:
            raise GrammarError(f"spoken digits are not known in {language!r} (known: {', '.join(DIGIT_WORDS)})")
        if not 1 <= min_digits <= max_digits:
            raise GrammarError(f"digits from {min_digits} to {max_digits} is not a range")
        return replace(cls.of(words), repeat=(min_digits, max_digits))

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
        if self.repeat is not None:
            return self._sequence(heard.split())
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


    def _sequence(self, words: list[str]) -> str | None:
        # Every word must be one of the choices' (one-word) phrases, and their number within `repeat`.
        assert self.repeat is not None
        owner = {p: c for c, phrases in self.choices for p in phrases}
        if any(w not in owner for w in words):
            return None
        low, high = self.repeat
        return "".join(owner[w] for w in words) if low <= len(words) <= high else None


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(words[i : i + n] == phrase for i in range(len(words) - n + 1))
