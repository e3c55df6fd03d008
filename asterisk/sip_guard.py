"""The SIP guard: Asterisk's security events counted, and a source that keeps failing refused at the door.

Asterisk reports on AMI (class `security`) every SIP request it refuses for who sent it: a name it does not
know (`InvalidAccountID`), a wrong password (`ChallengeResponseFailed`), a REGISTER where none is allowed
(`RequestNotSupported`), an address an endpoint's ACL refuses (`FailedACL`)... Each one counts for its source
(a single IPv4 address, or the /64 of an IPv6 one) in Redis, shared by every Hilo node of the namespace.
`block_after` failures within `window_s` seconds put the source on the block list for `block_s` seconds.

The block list is Asterisk's own: an ACL section (`type=acl`, one `deny=` per source) in
`hilo-sip-blocks.<namespace>.conf` beside pjsip.conf (which includes `hilo-sip-blocks.*.conf`), loaded with a
res_pjsip reload through AMI. From then on Asterisk answers that source's every request 403 before any
endpoint sees it. Redis holds the list with each entry's expiry (a sorted set), so it outlives a restart of
Hilo; `sync` writes the file again when it no longer says what Redis does (an entry expired, another node
blocked a source, the file was lost) and only then reloads. The list is bounded (`max_blocked`: the entries
closest to their expiry give way). The trunks' addresses (the `match=` of pjsip.conf's identify sections) and
`never_block` are never blocked: they would take the whole service down with them.

Every failure is counted on the server's registry (`hilo_sip_security_events_total{event}`) and logged as
`security.sip.<event>` with the source masked (its last IPv4 byte, or all but an IPv6 /48); blocks and
unblocks are logged in full as `security.sip.blocked|unblocked` for the admin, who also sees the list and can
lift an entry at `/api/sip/blocks` (asterisk/rest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterisk.ami import AmiClient
from asterisk.dialplan import CONFIG_DIR, write_atomically

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Security events that say a request was refused for who sent it (ChallengeSent and SuccessfulAuth are the
# normal steps of digest authentication; a phone's first request is always challenged).
FAILURES = frozenset(
    {
        "InvalidAccountID",
        "ChallengeResponseFailed",
        "InvalidPassword",
        "FailedACL",
        "RequestNotAllowed",
        "RequestNotSupported",
        "AuthMethodNotAllowed",
        "RequestBadFormat",
        "UnexpectedAddress",
        "InvalidTransport",
    }
)
PJSIP_TEMPLATE = Path(__file__).parent / "etc" / "pjsip.conf"
SEEN_TTL_S = 300  # an event is counted once however many nodes receive it
FILE_GLOB = "hilo-sip-blocks.*.conf"
QUEUE_MAX = 10_000  # failures waiting to be counted; more are dropped (and counted as dropped)


@dataclass(frozen=True)
class Failure:
    event: str
    address: Address
    account: str
    key: str  # the same for every copy of one event


def parse_failure(event: Mapping[str, Any]) -> Failure | None:
    """A refused SIP request from an AMI security event; None for anything else (other events, other services,
    an address that cannot be read)."""
    name = str(event.get("Event", ""))
    if name not in FAILURES or str(event.get("Service", "")).upper() != "PJSIP":
        return None
    address = remote_address(str(event.get("RemoteAddress", "")))
    if address is None:
        return None
    fields = {k: str(v) for k, v in event.items() if k not in ("content", "ActionID")}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    return Failure(name, address, str(event.get("AccountID", "")), key)


def remote_address(value: str) -> Address | None:
    """The address of Asterisk's `IPV4/UDP/203.0.113.7/5060` (or `IPV6/UDP/[2001:db8::1]/5060`)."""
    parts = value.split("/")
    if len(parts) < 3:
        return None
    try:
        return ipaddress.ip_address(parts[2].strip("[]"))
    except ValueError:
        return None


def source_network(address: Address) -> Network:
    """What one source is: an IPv4 address, or the /64 an IPv6 host is given (it can pick any address in it)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return ipaddress.IPv4Network(address.ipv4_mapped)
        return ipaddress.IPv6Network((address, 64), strict=False)
    return ipaddress.IPv4Network(address)


def mask(address: Address | Network) -> str:
    """For logs read by more people than the admin: 203.0.113.x, 2001:db8:85a3::/48."""
    if isinstance(address, ipaddress.IPv4Network | ipaddress.IPv6Network):
        address = address.network_address
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(str(address).split(".")[:3]) + ".x"
    return str(ipaddress.IPv6Network((address, 48), strict=False))


def parse_networks(text: str, *, setting: str = "HILO_SIP_NEVER_BLOCK") -> tuple[Network, ...]:
    """`127.0.0.1/32, 10.0.0.0/8, ::1` -> networks; a ValueError naming the setting and the item otherwise."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {item!r} is not an address or network: {exc}") from exc
    return tuple(networks)


def trunk_networks(pjsip_conf: str) -> tuple[Network, ...]:
    """The `match=` addresses of every `type=identify` section of a pjsip.conf text (the trunks Asterisk
    recognises by address). Host names and template markers are left out: only addresses can be compared."""
    sections: dict[str, tuple[set[str], list[str]]] = {}
    current: tuple[set[str], list[str]] | None = None
    for raw in pjsip_conf.splitlines():
        line = raw.split(";", 1)[0].strip()
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            current = sections.setdefault(f"{header.group(1)}#{len(sections)}", (set(), []))
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            continue
        if key.strip() == "type":
            current[0].add(value.strip())
        elif key.strip() == "match":
            current[1].extend(v.strip() for v in value.split(","))
    networks: list[Network] = []
    for types, matches in sections.values():
        if "identify" not in types:
            continue
        for value in matches:
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.ip_network(value, strict=False))
    return tuple(networks)


@dataclass
class GuardConfig:
    block_after: int = 5
    window_s: int = 60
    block_s: int = 900
    max_blocked: int = 1000
    check_s: float = 5.0  # how often expired entries are dropped and the file checked
    never_block: tuple[Network, ...] = field(default_factory=tuple)

    def protected(self, address: Address) -> bool:
        return any(address in network for network in self.never_block)


class AclFile:
    """`hilo-sip-blocks.<namespace>.conf` in Asterisk's configuration folder (None: Asterisk's configuration is
    not on this machine, and the guard can only count)."""

    def __init__(self, asterisk_root: Path | None, namespace: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", namespace)
        self.section = f"hilo-sip-blocks-{safe}"
        self.path = None if asterisk_root is None else asterisk_root / CONFIG_DIR / f"hilo-sip-blocks.{safe}.conf"

    def render(self, networks: Iterable[Network]) -> str:
        lines = [
            "; Written by Hilo's SIP guard (asterisk/sip_guard.py): sources refused after repeated failed requests.",
            "; Do not edit: Hilo rewrites it from its block list (GET/DELETE /api/sip/blocks).",
        ]
        denied = sorted({str(n) for n in networks})
        if denied:  # an ACL section without rules would be an error
            lines += ["", f"[{self.section}]", "type=acl", *(f"deny={n}" for n in denied)]
        return "\n".join(lines) + "\n"

    def read(self) -> str | None:
        if self.path is None:
            return None
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def write(self, text: str) -> None:
        if self.path is None:
            raise OSError("HILO_ASTERISK_ROOT is not set: Asterisk's configuration folder is not on this machine")
        write_atomically(self.path, text)


async def pjsip_reload(ami: AmiClient, *, login_timeout: float = 10.0) -> None:
    """Reload res_pjsip (pjsip.conf and what it includes) through AMI."""
    await asyncio.wait_for(ami.logged_in.wait(), login_timeout)
    reply = await ami.action({"Action": "Reload", "Module": "res_pjsip.so"}, timeout=10.0)
    first = reply[0] if isinstance(reply, list) and reply else reply
    if str(first.get("Response", "")).lower() != "success":
        raise RuntimeError(f"Asterisk did not reload res_pjsip: {first.get('Message', 'no message')}")


@dataclass(frozen=True)
class Block:
    network: Network
    until: float  # epoch seconds


class SipGuard:
    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        config: GuardConfig,
        *,
        acl: AclFile,
        reload: Callable[[], Awaitable[None]],
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.config = config
        self.acl = acl
        self.reload = reload
        self.clock = clock
        self.prefix = f"{namespace}:sipguard"
        self._queue: asyncio.Queue[Failure] = asyncio.Queue(QUEUE_MAX)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._told_unwritable = False
        self._unloaded = False  # the file was written but Asterisk's reload failed: reload at the next sync
        registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "hilo_sip_security_events", "SIP requests Asterisk refused for their sender, by event", ["event"],
            registry=registry,
        )  # fmt: skip
        self.blocks = Counter("hilo_sip_blocks", "Sources blocked after repeated failures", registry=registry)
        self.blocked_now = Gauge("hilo_sip_blocked_sources", "Sources on the SIP block list", registry=registry)
        self.dropped = Counter(
            "hilo_sip_security_events_dropped", "Failures not counted (queue full)", registry=registry
        )

    @property
    def _blocked_key(self) -> str:
        return f"{self.prefix}:blocked"

    # The AMI side ----------------------------------------------------------------------------------------

    def on_ami_event(self, event: dict[str, Any]) -> None:
        """AMI handler (asterisk/ami.py): queue a failure for counting; never blocks the event stream."""
        failure = parse_failure(event)
        if failure is None:
            return
        try:
            self._queue.put_nowait(failure)
        except asyncio.QueueFull:
            self.dropped.inc()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._count_loop(), name="sip-guard-count"),
            asyncio.create_task(self._sync_loop(), name="sip-guard-sync"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _count_loop(self) -> None:
        while True:
            failure = await self._queue.get()
            try:
                await self.record(failure)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SIP guard: counting a failure from %s failed", mask(failure.address))

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SIP guard: updating Asterisk's block list failed")
            await asyncio.sleep(self.config.check_s)

    # Counting and blocking --------------------------------------------------------------------------------

    async def record(self, failure: Failure) -> bool:
        """Count one failure (once, whichever nodes saw it); True if it got its source blocked."""
        if not await self.redis.set(f"{self.prefix}:seen:{failure.key}", 1, nx=True, ex=SEEN_TTL_S):
            return False
        self.events.labels(event=failure.event).inc()
        log.info("security.sip.%s source=%s account=%s", failure.event, mask(failure.address), failure.account[:64])
        if self.config.protected(failure.address):
            return False
        network = source_network(failure.address)
        key = f"{self.prefix}:failures:{network}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=self.config.window_s, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        if int(count) < self.config.block_after:
            return False
        await self.redis.delete(key)
        await self.block(network, reason=f"{count} failures within {self.config.window_s}s, the last {failure.event}")
        return True

    async def block(self, network: Network, *, reason: str, seconds: float | None = None) -> Block:
        """Put a source on the list (or extend its entry) and make Asterisk refuse it."""
        until = self.clock() + (self.config.block_s if seconds is None else seconds)
        await self.redis.zadd(self._blocked_key, {str(network): until})
        excess = await self.redis.zcard(self._blocked_key) - self.config.max_blocked
        if excess > 0:  # the list is full: the entries closest to their expiry give way
            await self.redis.zpopmin(self._blocked_key, excess)
        self.blocks.inc()
        log.warning(
            "security.sip.blocked source=%s for=%ds reason=%s",
            network,
            round(until - self.clock()),
            reason,
        )
        await self.sync()
        return Block(network, until)

    async def unblock(self, network: Network) -> bool:
        """Lift a source's entry now; False if it had none."""
        removed = await self.redis.zrem(self._blocked_key, str(network))
        if removed:
            log.warning("security.sip.unblocked source=%s reason=lifted by an admin", network)
            await self.sync()
        return bool(removed)

    async def blocked(self) -> list[Block]:
        now = self.clock()
        entries = cast(
            list[tuple[Any, float]],
            await self.redis.zrangebyscore(self._blocked_key, f"({now}", "+inf", withscores=True),
        )
        return [Block(ipaddress.ip_network(_text(member)), float(until)) for member, until in entries]

    async def sync(self) -> bool:
        """Drop expired entries, and give Asterisk the list Redis holds if its file says otherwise (then
        reload). True if Asterisk was given a new list."""
        async with self._lock:
            now = self.clock()
            expired = await self.redis.zrangebyscore(self._blocked_key, "-inf", now)
            if expired:
                await self.redis.zremrangebyscore(self._blocked_key, "-inf", now)
                for member in expired:
                    log.warning("security.sip.unblocked source=%s reason=expired", _text(member))
            current = await self.blocked()
            self.blocked_now.set(len(current))
            text = self.acl.render(b.network for b in current)
            if self.acl.path is None:
                if current and not self._told_unwritable:
                    log.error("SIP guard: cannot block sources: HILO_ASTERISK_ROOT is not set (Asterisk's config)")
                    self._told_unwritable = True
                return False
            existing = self.acl.read()
            if not self._unloaded and (existing == text or (existing is None and not current)):
                return False
            if existing != text:
                await asyncio.to_thread(self.acl.write, text)
            self._unloaded = True
            await self.reload()
            self._unloaded = False
            log.info("SIP guard: Asterisk refuses %d source(s) now", len(current))
            return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def guard_config(
    *,
    block_after: int,
    window_s: int,
    block_s: int,
    max_blocked: int,
    never_block: str,
    pjsip_template: Path = PJSIP_TEMPLATE,
) -> GuardConfig:
    """The guard's configuration from the settings; the trunks of the pjsip.conf template are never blocked.
    Raises ValueError for a never_block entry that is not an address or network."""
    protected = parse_networks(never_block) + trunk_networks(pjsip_template.read_text())
    return GuardConfig(block_after, window_s, block_s, max_blocked, never_block=protected)


SIP_GUARD = web.AppKey("sip_guard", SipGuard)
