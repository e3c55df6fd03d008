"""Finding recordings by what was said: PostgreSQL full-text search over their transcripts.

Each transcript is indexed stemmed in its own language (migration 013: `english`, `spanish`, else `simple`),
so the words asked for are stemmed the same way per language: "refunds" finds "refund" in an English call.
The query is the caller's text as `websearch_to_tsquery` reads it (words all required, "quoted phrases",
`or`, `-word`), never SQL. The same filters and access rule (`Scope`, routing/scope.py) as the plain listing
apply: an agent only finds recordings of their own calls, a supervisor those of their teams."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from recordings.catalog import Recording
from routing.scope import NOTHING, Scope

# Languages with their own text-search configuration; anything else is searched as `simple`.
TEXT_CONFIGS = {"en": "english", "es": "spanish"}
HEADLINE_OPTIONS = "MaxWords=20, MinWords=8, MaxFragments=2, StartSel=«, StopSel=»"


def match_condition(query_param: int) -> str:
    """SQL true when the transcript `t` matches the query text in parameter $`query_param`, per language.
    One branch per configuration keeps each `@@` on the GIN index."""
    branches = [
        f"(t.language = '{lang}' AND t.search @@ websearch_to_tsquery('{config}', ${query_param}))"
        for lang, config in TEXT_CONFIGS.items()
    ]
    known = ", ".join(f"'{lang}'" for lang in TEXT_CONFIGS)
    branches.append(f"(t.language NOT IN ({known}) AND t.search @@ websearch_to_tsquery('simple', ${query_param}))")
    return "(" + " OR ".join(branches) + ")"


def headline(query_param: int) -> str:
    """The matching words in context (marked «like this»), in the transcript's language."""
    cases = " ".join(f"WHEN '{lang}' THEN '{config}'" for lang, config in TEXT_CONFIGS.items())
    config = f"(CASE t.language {cases} ELSE 'simple' END)::regconfig"
    return f"ts_headline({config}, t.text, websearch_to_tsquery({config}, ${query_param}), '{HEADLINE_OPTIONS}')"


@dataclass(frozen=True)
class SearchQuery:
    text: str
    interaction_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    scope: Scope = NOTHING  # whose recordings may be found (routing/scope.py); by default none
    limit: int = 50


def build(search: SearchQuery) -> tuple[str, list[Any]]:
    """The SQL and its arguments: recordings (every catalogue column, `r.`) with a done transcript matching
    the text, plus `headline`, newest first. Deleted recordings are never found (their text is gone)."""
    columns = ", ".join(f"r.{name}" for name in Recording.__dataclass_fields__)
    allowed, scope_args = search.scope.condition(5)
    sql = (
        f"SELECT {columns}, {headline(1)} AS headline"  # noqa: S608 (column names and configs are ours)
        " FROM recordings r JOIN recording_transcripts t ON t.recording_id = r.id"
        f" WHERE t.state = 'done' AND r.deleted_at IS NULL AND {match_condition(1)}"
        " AND ($2::uuid IS NULL OR r.interaction_id = $2) AND ($3::uuid IS NULL OR r.customer_id = $3)"
        f" AND {allowed}"
        " ORDER BY r.started_at DESC, r.id LIMIT $4"
    )
    return sql, [search.text, search.interaction_id, search.customer_id, search.limit, *scope_args]
