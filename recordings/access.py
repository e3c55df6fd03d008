"""Who may use a recording, and the short-lived signed URLs the browser plays it from.

Who may use which recording is the scope rule of every live-work route (routing/scope.py): agents the
recordings of their own calls (the agent on the recorded call); supervisors those of the agents in the teams
they supervise, and of calls with no agent (voicemail, a flow's recording) in a queue an agent of those teams
serves; a supervisor without teams none; admins all of them. The scope is read at each request, so a change
of team takes effect at once. The rule is one SQL condition (`Scope.condition`) used alike by the listing,
the search and each single recording, so what a list shows and what can be opened never differ.

Playback in a browser cannot send a bearer token with an <audio> element, so the API hands out a URL that
carries its own proof: the recording id, what it is for (playback or download), who asked, and an expiry,
signed with HMAC-SHA256 under a key derived from the recording key ring. Who asked is checked again when
the URL is played, so a link outlives neither its holder's access nor their account. Who asked is the actor
of hilo/audit.py (`user:maria@console`, `token:admin@api`), as in the recording audit; a URL signed before
that form (`console:maria`, `api:admin`) still plays until it expires, audited as migration 021 maps it."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode

from hilo import audit
from hilo.web.sessions import Principal
from routing.scope import NOTHING, Scope, scope_of

if TYPE_CHECKING:
    from hilo.db import Db

Mode = Literal["playback", "download"]


def signed_actor(actor: str) -> audit.Actor | None:
    """Who a signed URL was issued to: an actor of hilo/audit.py, or one of the forms URLs were signed with
    before it (`console:<user>`: a console user, door not recorded; `api:<role>`: the API token), read as
    migration 021 maps them. None if it is neither."""
    try:
        return audit.parse(actor)
    except ValueError:
        pass
    kind, _, name = actor.partition(":")
    try:
        if kind == "console":
            return audit.Actor("user", name, "unknown")
        if kind == "api":
            return audit.Actor("token", name, "api")
    except ValueError:
        return None
    return None


async def scope_of_actor(db: Db, actor: str) -> Scope:
    """The scope of whoever a signed URL was issued to (see `signed_actor`), as they are now: a console user
    removed or changed since is judged by what they are now (nothing, if removed)."""
    who = signed_actor(actor)
    if who is None:
        return NOTHING
    if who.kind == "token":
        return await scope_of(db, Principal(who.name))
    if who.kind == "user":
        row = await db.fetchrow("SELECT role, agent_id FROM console_users WHERE username = $1", who.name)
        if row is not None:
            return await scope_of(db, Principal(row["role"], row["agent_id"], who.name))
    return NOTHING


async def in_scope(db: Db, scope: Scope, recording_id: uuid.UUID) -> bool:
    condition, args = scope.condition(2)
    found = await db.fetchval(
        f"SELECT true FROM recordings r WHERE r.id = $1 AND {condition}",  # noqa: S608 (our own condition)
        recording_id,
        *args,
    )
    return bool(found)


def _message(recording_id: uuid.UUID, mode: str, expires: int, actor: str) -> bytes:
    return f"hilo-recording\n{recording_id}\n{mode}\n{expires}\n{actor}".encode()


@dataclass(frozen=True)
class UrlSigner:
    keys: list[bytes]  # the first signs; all verify (see KeyRing.url_keys)

    def sign(self, recording_id: uuid.UUID, mode: Mode, expires: int, actor: str) -> str:
        return hmac.new(self.keys[0], _message(recording_id, mode, expires, actor), hashlib.sha256).hexdigest()

    def url(self, recording_id: uuid.UUID, mode: Mode, expires: int, actor: str) -> str:
        query = {
            "mode": mode,
            "expires": str(expires),
            "actor": actor,
            "sig": self.sign(recording_id, mode, expires, actor),
        }
        return f"/api/recordings/{recording_id}/audio?{urlencode(query)}"

    def check(self, recording_id: uuid.UUID, mode: str, expires: int, actor: str, sig: str, now: float) -> str | None:
        """None if the URL is genuine and not expired, else why not."""
        if expires < now:
            return "the link has expired"
        message = _message(recording_id, mode, expires, actor)
        for key in self.keys:
            if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).hexdigest(), sig):
                return None
        return "the link's signature does not match"
