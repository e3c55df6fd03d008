"""Who may use a recording, and the short-lived signed URLs the browser plays it from.

Agents may use the recordings of their own calls (the agent on the recorded call); supervisors and admins
all of them. Playback in a browser cannot send a bearer token with an <audio> element, so the API hands out
a URL that carries its own proof: the recording id, what it is for (playback or download), who asked, and
an expiry, signed with HMAC-SHA256 under a key derived from the recording key ring."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from console.sessions import Principal
from recordings.catalog import Recording

Mode = Literal["playback", "download"]
STAFF_ROLES = frozenset({"admin", "supervisor"})


def may_use(who: Principal, rec: Recording) -> bool:
    if who.role in STAFF_ROLES:
        return True
    return who.role == "agent" and who.agent_id is not None and who.agent_id == rec.agent_id


def actor_of(who: Principal) -> str:
    """How audit rows name a person or tool: console:<user> for a signed-in user, api:<role> for a token."""
    return f"console:{who.username}" if who.username else f"api:{who.role}"


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
