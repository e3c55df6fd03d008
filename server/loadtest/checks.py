"""After a run, the centre must be at rest within a few seconds: no channel of the run left in Asterisk (a
ghost), no caller waiting in a queue, every agent who was available before available again. (The probe call
that must then reach an agent is placed by the runner, like any other call.)"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilo.settings import REPO_ROOT
from server.loadtest.rest import Ari, HiloApi, RestError

PJSIP_CONF = REPO_ROOT / "asterisk" / "etc" / "pjsip.conf"


def trunk_for(address: str, conf: Path = PJSIP_CONF) -> str | None:
    """The PJSIP endpoint Asterisk takes calls from `address` for (the `type=identify` sections)."""
    sections = re.split(r"^\[([^\]]+)\][^\n]*$", conf.read_text(), flags=re.M)
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        values = dict(
            (k.strip(), v.split(";")[0].strip())
            for k, _, v in (line.partition("=") for line in body.splitlines())
            if _ and not k.strip().startswith(";")
        )
        if values.get("type") == "identify" and address in {m.strip() for m in values.get("match", "").split(",")}:
            return values.get("endpoint", name)
    return None


def available_agents(wallboard: dict[str, Any]) -> set[str]:
    return {a["id"] for a in wallboard.get("agents", []) if a.get("state") == "available"}


def waiting_callers(wallboard: dict[str, Any]) -> int:
    return sum(int(q.get("waiting", 0)) for q in wallboard.get("queues", []))


@dataclass
class Rest:
    at_rest: bool = False
    after_s: float | None = None  # how long after the run it was at rest
    ghost_channels: list[str] = field(default_factory=list)
    waiting: int | None = None
    agents_not_available: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def ghosts(ari: Ari, trunk: str, namespace: str | None, ignore: Collection[str] = ()) -> list[str]:
    """The run's channels still in Asterisk: the trunk's calls and, for Hilo, its agent legs. `ignore`: the
    channels of a call not of the run's that may outlive it (the capacity soak's long call)."""
    found = list(await ari.endpoint_channels("PJSIP", trunk))
    if namespace:
        found += [c["id"] for c in await ari.channels() if c["id"].startswith(f"{namespace}-agent-")]
    return [c for c in found if c not in ignore]


async def wait_at_rest(
    ari: Ari,
    api: HiloApi | None,
    *,
    trunk: str,
    namespace: str | None,
    agents_before: set[str],
    within_s: float,
    since: float | None = None,
    ignore: Collection[str] = (),
) -> Rest:
    """Polls until the centre is at rest or `within_s` has passed since `since` (epoch: the last call's end;
    default now); the last look is what is reported, `after_s` counted from `since`."""
    start = time.time() if since is None else since
    result = Rest()
    while True:
        result = Rest()
        try:
            result.ghost_channels = await ghosts(ari, trunk, namespace, ignore)
        except RestError as exc:
            result.errors.append(str(exc))
        if api is not None:
            try:
                board = await api.wallboard()
                result.waiting = waiting_callers(board)
                result.agents_not_available = sorted(agents_before - available_agents(board))
            except RestError as exc:
                result.errors.append(str(exc))
        result.at_rest = (
            not result.errors and not result.ghost_channels and not result.waiting and not result.agents_not_available
        )
        elapsed = time.time() - start
        if result.at_rest:
            result.after_s = round(elapsed, 2)
            return result
        if elapsed >= within_s:
            return result
        await asyncio.sleep(0.25)
