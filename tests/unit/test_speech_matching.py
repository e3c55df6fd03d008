import pytest

from speech.engines import Heard, decide
from speech.matching import Grammar, GrammarError, normalize

MENU = Grammar.of({"1": ["Sales"], "2": ["Billing"], "3": ["technical support", "support"]})


def test_normalize_drops_case_punctuation_and_extra_spaces() -> None:
    assert normalize("  Technical   Support! ") == "technical support"
    assert normalize("I'd like SALES, please.") == "i'd like sales please"
    assert normalize("¿Facturación?") == "facturación"
    assert normalize("...") == ""


@pytest.mark.parametrize(
    ("heard", "choice"),
    [
        ("sales", "1"),
        ("SALES", "1"),
        ("technical support", "3"),
        ("support", "3"),
        ("i need technical support please", "3"),  # the words of one choice inside a sentence
        ("technical", "3"),  # a unique beginning (the decoder stopped early)
        ("", None),
        ("pizza delivery", None),
        ("sales and billing", None),  # two choices at once: ambiguous, no match
        ("te", None),  # too short to mean anything
    ],
)
def test_match(heard: str, choice: str | None) -> None:
    assert MENU.match(heard) == choice


def test_phrases_and_words_for_the_engines() -> None:
    assert MENU.phrases == ["sales", "billing", "technical support", "support"]
    assert MENU.words == ["billing", "sales", "support", "technical"]


def test_a_phrase_cannot_select_two_choices() -> None:
    with pytest.raises(GrammarError, match="'support' is given for both '2' and '3'"):
        Grammar.of({"2": ["support"], "3": ["Support"]})


def test_a_choice_needs_something_to_say() -> None:
    with pytest.raises(GrammarError, match="choice '1' has no phrase"):
        Grammar.of({"1": ["?!"]})


def test_grammars_are_values_usable_as_keys() -> None:
    assert Grammar.of_phrases(["billing", "sales"]) == Grammar.of_phrases(["Billing", "Sales"])
    assert len({Grammar.of_phrases(["a b"]), Grammar.of_phrases(["a b"])}) == 1


def test_decide_applies_the_grammar_and_the_minimum_confidence() -> None:
    assert decide(Heard("technical support", 0.9), MENU, 0.5) == ("3", 0.9)
    assert decide(Heard("technical support", 0.4), MENU, 0.5) == (None, 0.4)
    assert decide(Heard("pizza", 0.99), MENU, 0.5) == (None, 0.99)
    assert decide(Heard("sales", 0.9), None, 0.5) == (None, 0.9)


def test_spoken_digits_join_into_a_number() -> None:
    g = Grammar.digits("en", 3, 5)
    assert g.match("four two seven") == "427"
    assert g.match("one oh five three two") == "10532"
    assert g.match("Zero, zero, one.") == "001"
    assert g.match("one two") is None  # too few
    assert g.match("one two three four five six") is None  # too many
    assert g.match("one two pizza") is None  # not a digit
    assert Grammar.digits("es", 1, 4).match("uno cero nueve") == "109"


def test_spoken_digits_in_an_unknown_language_are_refused() -> None:
    with pytest.raises(GrammarError, match="not known in 'fr'"):
        Grammar.digits("fr", 1, 4)
    with pytest.raises(GrammarError, match="not a range"):
        Grammar.digits("en", 5, 4)
