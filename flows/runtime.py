"""The flows that answer calls, and how a server follows applied changes without a restart.

A server answers with the newest applied version in PostgreSQL (`flows.versions`). The first server
on an empty database applies the `dialplans/` working copy as version 1. A new version is picked up on its
NOTIFY (and by a slow poll, in case a notification was missed while the listening connection was down):
it is checked again, its static prompts are rendered, and only then does it become `current`. A call
takes `current` once when it starts, so calls already running finish on the version they began with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from dialplans.models import load_routing
from flows.bundle import CheckedBundle, FlowBundle, check_bundle
from flows.hours import Calendars
from flows.loader import FlowProblem
from flows.schema import Flow, templates_of
from flows.validate import Checks
from flows.versions import FLOWS_CHANNEL, FlowVersions
from hilo import audit
from hilo.yamlconf import ConfigError
from speech.tts import voice_for

log = logging.getLogger(__name__)

POLL_S = 5.0  # the safety net behind NOTIFY


@dataclass(frozen=True)
class LiveFlows:
    flows: dict[str, Flow]
    numbers: dict[str, str]  # dialled number -> flow id
    version: int | None = None  # the applied version; None = straight from the working copy
    sources: dict[str, str] = field(default_factory=dict)  # flow id -> file in the bundle
    files: Mapping[str, str] = field(default_factory=dict)  # the bundle's files, as applied
    digest: str = ""
    calendars: Calendars = field(default_factory=Calendars)

    @classmethod
    def from_checked(cls, checked: CheckedBundle, version: int | None) -> LiveFlows:
        bundle = checked.bundle
        return cls(
            checked.flows, checked.numbers, version, checked.sources, bundle.files, bundle.digest(), checked.calendars
        )

    def for_number(self, dialed: str) -> Flow | None:
        flow_id = self.numbers.get(dialed)
        return self.flows.get(flow_id) if flow_id else None

    def static_prompts(self) -> list[tuple[str, str, str]]:
        """(text, voice, language) of every prompt without a template, to render before the first call."""
        prompts: list[tuple[str, str, str]] = []
        for flow in self.flows.values():
            for node in flow.nodes.values():
                for _, text in templates_of(node):
                    if "{" not in text:
                        prompts.append((text, voice_for(flow.language, flow.voice), flow.language))
        return prompts


def checks_for(dialplans_dir: Path, sounds_root: Path | None = None) -> Checks:
    """What flows are checked against beyond their own files: the queues of routing.yaml and, when
    Asterisk's sounds folder is on this machine, the files `play` nodes name."""
    try:
        routing = load_routing(dialplans_dir)
    except (ConfigError, OSError) as exc:
        raise ConfigError(f"cannot check flows against routing.yaml: {exc}") from exc
    sounds = sounds_root if sounds_root is not None and sounds_root.is_dir() else None
    return Checks(queues=frozenset(q.id for q in routing.queues), sounds_dir=sounds)


def _raise_problems(problems: list[FlowProblem], what: str) -> None:
    raise ConfigError(f"{what}:\n" + "\n".join(str(p) for p in problems))


def load_live_flows(dialplans_dir: Path) -> LiveFlows:
    """The working copy in `dialplans_dir`, fully checked; ConfigError lists every problem."""
    checked, problems = check_bundle(FlowBundle.from_dir(dialplans_dir), checks_for(dialplans_dir))
    if checked is None:
        _raise_problems(problems, f"the flows in {dialplans_dir} have problems")
    assert checked is not None
    return LiveFlows.from_checked(checked, None)


Prepare = Callable[[LiveFlows], Awaitable[None]]  # e.g. render the static prompts before a version goes live


async def _nothing_to_prepare(flows: LiveFlows) -> None:
    return None


Announce = Callable[[dict[str, Any]], Awaitable[None]]  # tells consoles and tools (hilo.notifier)


async def _no_announce(event: dict[str, Any]) -> None:
    return None


class FlowRuntime:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dialplans_dir: Path,
        dsn: str,
        prepare: Prepare = _nothing_to_prepare,
        announce: Announce = _no_announce,
        sounds_root: Path | None = None,
    ) -> None:
        self.versions = FlowVersions(pool)
        self.dialplans_dir = dialplans_dir
        self.dsn = dsn
        self.prepare = prepare
        self.announce = announce
        self.sounds_root = sounds_root  # Asterisk's sounds folder, to check `play` files; None = not checked
        self._current: LiveFlows | None = None
        self._changed = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    @property
    def current(self) -> LiveFlows:
        assert self._current is not None, "FlowRuntime.start() was not awaited"
        return self._current

    async def start(self) -> None:
        """Load the live version (applying the working copy first on an empty database) and follow changes.
        Refuses to start — ConfigError with every problem — rather than answer calls with a broken version."""
        live = await self.versions.live()
        if live is None:
            bundle = FlowBundle.from_dir(self.dialplans_dir)
            checked, problems = check_bundle(bundle, checks_for(self.dialplans_dir, self.sounds_root))
            if checked is None:
                _raise_problems(problems, f"the flows in {self.dialplans_dir} have problems")
            await self.versions.apply(
                bundle, applied_by=audit.system("serve"), comment="first start: dialplans/ working copy"
            )
        loaded = await self._load_live()
        if isinstance(loaded, list):
            _raise_problems(loaded, "the live flow version has problems")
        self._follower = asyncio.create_task(self._follow(), name="flow-versions")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower

    async def reload(self) -> LiveFlows | list[FlowProblem]:
        """Swap to the newest applied version if it is not current; its problems if it cannot be used."""
        return await self._load_live()

    async def _load_live(self) -> LiveFlows | list[FlowProblem]:
        live = await self.versions.live()
        if live is None:  # e.g. the table was emptied under us: keep answering with what we have
            return self.current
        version, bundle = live
        current = self._current
        if current is not None and (current.version, current.digest) == (version.version, version.digest):
            return current
        checked, problems = check_bundle(
            bundle, checks_for(self.dialplans_dir, self.sounds_root), where=f"version {version.version}"
        )
        if checked is None:
            log.error("flow version %d cannot go live here:\n%s", version.version, "\n".join(map(str, problems)))
            return problems
        flows = LiveFlows.from_checked(checked, version.version)
        await self.prepare(flows)
        self._current = flows
        log.info("flow version %d is live (applied by %s)", version.version, version.applied_by)
        await self.announce({"type": "flows.live", "data": version.as_dict()})
        return flows

    def _notified(self, *_: object) -> None:
        self._changed.set()

    async def _follow(self) -> None:
        conn: asyncpg.Connection | None = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn)
                    await conn.add_listener(FLOWS_CHANNEL, self._notified)
                    self._changed.set()  # catch up on anything applied while we were not listening
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), POLL_S)
                self._changed.clear()
                await self._load_live()
            except asyncio.CancelledError:
                if conn is not None and not conn.is_closed():
                    await conn.close()
                raise
            except Exception:
                log.exception("following flow versions failed; retrying")
                if conn is not None and not conn.is_closed():
                    conn.terminate()
                conn = None
                await asyncio.sleep(POLL_S)


FLOWS = web.AppKey("flows", FlowRuntime)
