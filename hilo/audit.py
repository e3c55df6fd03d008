"""Who did it, and through which door: the one form every audit trail names its actor in.

Written by every audit writer through this module (never by hand): `supervisor_actions.actor`,
`recording_audit.actor`, `customer_merges.merged_by` / `undone_by`, `flow_versions.applied_by`,
`interaction_wrapups.username`, the actor carried by a signed recording URL, and the `by` of what a person
does on the timeline (call.held, call.unheld, routing.moved, message.sent by an agent, agent.handed_back,
agent.disposition, agent.note). Migration 021 rewrote the rows written before in the older forms.

Grammar (ABNF, RFC 5234)::

    actor = kind ":" name "@" door
    kind  = "user" / "token" / "login" / "system" / "unknown"
    name  = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / pct-encoded )  ; 1 to 64 characters once decoded;
                                                                    ; %XX: UTF-8, upper-case hex, only where needed
    door  = "console" / "api" / "cli" / "system" / "unknown"

Who (kind:name):
  user:<username>   a console user (console_users.username), who signed in with their password
  token:<role>      a configured API bearer token: tokens have no name, so the role it grants (never the token)
  login:<name>      a person at the `hilo` command line: their operating-system login, or the name given with --by
  system:<job>      Hilo on its own: retention, flow (a call's flow), serve (first start), conversation (a merge
                    proved by a conversation's verification)
  unknown:<text>    nobody could be established: `unverified` (a signed URL that failed its check); on rows
                    written before migration 021 whose old text could not be read for sure, that text itself

Door (how it came in):
  console   the browser console's session cookie
  api       an `Authorization: Bearer` header: an API token, or a console session's token used by a tool
  cli       the `hilo` command
  system    no request at all: a job inside a running server
  unknown   not recorded: rows written before migration 021 (the old forms did not say)

Examples: `user:maria@console`, `user:maria@api`, `token:admin@api`, `login:root@cli`,
`system:retention@system`, `system:retention@cli` (`hilo recordings purge`), `unknown:unverified@api`.

Why this form. Unambiguous: kind and door come from closed lists and the name is percent-encoded, so it never
holds ':', '@', spaces or control characters; the first ':' and the last '@' split any actor into its three
parts, and a user called `admin` (`user:admin@…`) is never confused with the admin token (`token:admin@api`)
as the older forms (`api:admin`, `api-token`, `maria`) allowed. Stable: a person is the same `kind:name`
whichever door they used, so `actor LIKE 'user:maria@%'` finds everything they did, and the text never depends
on anything that changes (no display names, no session ids). No secrets: a token is named by its role and a
session by its user, never by the token, its hash or a password. It is plain ASCII, fits a URL query as it is,
and sorts and greps by who first."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from hilo.web.sessions import Principal

Kind = Literal["user", "token", "login", "system", "unknown"]
Door = Literal["console", "api", "cli", "system", "unknown"]
KINDS: tuple[str, ...] = get_args(Kind)
DOORS: tuple[str, ...] = get_args(Door)
MAX_NAME = 64  # characters of a name (as console user names, migration 005)

_ACTOR = re.compile(
    rf"^(?P<kind>{'|'.join(KINDS)}):(?P<name>(?:[A-Za-z0-9._~-]|%[0-9A-F]{{2}})+)@(?P<door>{'|'.join(DOORS)})$"
)


def encode_name(name: str) -> str:
    """The name as it stands in an actor: RFC 3986 unreserved characters as they are, the rest %XX."""
    return quote(name, safe="", encoding="utf-8", errors="strict")


@dataclass(frozen=True)
class Actor:
    kind: Kind
    name: str  # decoded
    door: Door

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown actor kind {self.kind!r}")
        if self.door not in DOORS:
            raise ValueError(f"unknown door {self.door!r}")
        if not 0 < len(self.name) <= MAX_NAME:
            raise ValueError(f"an actor's name has 1 to {MAX_NAME} characters")

    def __str__(self) -> str:
        return f"{self.kind}:{encode_name(self.name)}@{self.door}"

    @property
    def who(self) -> str:
        """`kind:name` without the door: the same for a person whichever way they came in."""
        return f"{self.kind}:{encode_name(self.name)}"


def parse(text: str) -> Actor:
    """The actor written as `text`; ValueError if it is not exactly in the form (canonical encoding too, so
    that one actor has one text)."""
    found = _ACTOR.match(text)
    if found is None:
        raise ValueError(f"not an actor (kind:name@door): {text[:80]!r}")
    encoded = found["name"]
    try:
        name = unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"an actor's name is not UTF-8: {text[:80]!r}") from exc
    if encode_name(name) != encoded:
        raise ValueError(f"an actor's name is not encoded the one way: {text[:80]!r}")
    return Actor(cast(Kind, found["kind"]), name, cast(Door, found["door"]))


def is_actor(text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def actor(who: Principal, door: Door | None = None) -> str:
    """Who made a request, and through which door (by default the one they authenticated through,
    `Principal.door`): `user:<username>@<door>` for a console user, `token:<role>@api` for an API token."""
    through = door or who.door
    if who.username:
        return str(Actor("user", who.username, through))
    return str(Actor("token", who.role, through))


def system(job: str, door: Door = "system") -> str:
    """Hilo itself doing `job`: `system:<job>@system`, or `@cli` when a person started it with a command."""
    return str(Actor("system", job, door))


def login_name() -> str:
    """The operating-system login of whoever runs the command ("unknown" when there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def cli(name: str | None = None) -> str:
    """A person at the `hilo` command line: `login:<name>@cli`, with their login name unless one is given."""
    return str(Actor("login", name or login_name(), "cli"))


FORM_DESCRIPTION = (
    "who, and through which door: kind:name@door, e.g. user:maria@console, token:admin@api, login:root@cli,"
    " system:retention@system (kind: user, token, login, system, unknown; door: console, api, cli, system, unknown)"
)
UNVERIFIED = str(Actor("unknown", "unverified", "api"))  # a signed URL whose signature or expiry failed
