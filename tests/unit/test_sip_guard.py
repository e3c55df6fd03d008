"""The SIP guard's counting and blocking (asterisk/sip_guard.py) against fakeredis, a folder standing in for
Asterisk's configuration, and a reload that only counts: N failures within the window block a source, the
ACL file then denies it, entries expire, trunks and never_block addresses are never blocked, the list is
bounded, and each AMI event is counted once however many nodes hear it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry

from asterisk.sip_guard import (
    PJSIP_TEMPLATE,
    AclFile,
    GuardConfig,
    SipGuard,
    guard_config,
    mask,
    parse_failure,
    remote_address,
    source_network,
    trunk_networks,
)

ATTACKER = "203.0.113.7"


def event(name: str = "ChallengeResponseFailed", address: str = ATTACKER, **extra: str) -> dict[str, Any]:
    return {
        "Event": name,
        "Privilege": "security,all",
        "EventTV": extra.pop("tv", "2026-01-01T10:00:00.000+0000"),
        "Severity": "Error",
        "Service": "PJSIP",
        "AccountID": "agent-alice",
        "SessionID": extra.pop("session", "call-1"),
        "RemoteAddress": f"IPV4/UDP/{address}/5099",
        **extra,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Guarded:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        (tmp_path / "etc" / "asterisk").mkdir(parents=True)
        self.reloads = 0
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.redis = fakeredis.FakeAsyncRedis()
        self.acl = AclFile(tmp_path, "hilo-test")
        never = config.pop("never_block", guard_config_never())
        self.guard = SipGuard(
            self.redis,
            "hilo-test",
            GuardConfig(**{"block_after": 3, "window_s": 60, "block_s": 900, **config}, never_block=never),
            acl=self.acl,
            reload=self._reload,
            registry=self.registry,
            clock=self.clock,
        )
        self.seq = 0
        self.fail_reloads = 0

    async def _reload(self) -> None:
        if self.fail_reloads:
            self.fail_reloads -= 1
            raise TimeoutError("AMI is not logged in")
        self.reloads += 1

    async def fail(self, address: str = ATTACKER, name: str = "ChallengeResponseFailed") -> bool:
        self.seq += 1
        failure = parse_failure(event(name, address, session=f"call-{self.seq}"))
        assert failure is not None
        return await self.guard.record(failure)

    def denied(self) -> list[str]:
        text = self.acl.read() or ""
        return [line.removeprefix("deny=") for line in text.splitlines() if line.startswith("deny=")]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def guard_config_never() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return guard_config(block_after=3, window_s=60, block_s=900, max_blocked=10, never_block="127.0.0.1/32").never_block


def test_failures_are_read_from_pjsip_security_events_only() -> None:
    failure = parse_failure(event())
    assert failure is not None
    assert (failure.event, str(failure.address), failure.account) == (
        "ChallengeResponseFailed",
        ATTACKER,
        "agent-alice",
    )
    assert parse_failure(event("InvalidAccountID")) is not None
    assert parse_failure(event("RequestNotSupported")) is not None  # a REGISTER where none is allowed
    # the normal steps of digest authentication, other services, unreadable addresses
    assert parse_failure(event("ChallengeSent")) is None
    assert parse_failure(event("SuccessfulAuth")) is None
    assert parse_failure({**event(), "Service": "AMI"}) is None
    assert parse_failure({**event(), "RemoteAddress": "garbage"}) is None
    assert remote_address("IPV6/UDP/[2001:db8::7]/5060") == ipaddress.ip_address("2001:db8::7")


def test_a_source_is_an_ipv4_address_or_an_ipv6_64_and_logs_mask_it() -> None:
    assert str(source_network(ipaddress.ip_address(ATTACKER))) == "203.0.113.7/32"
    assert str(source_network(ipaddress.ip_address("2001:db8:1:2:3::9"))) == "2001:db8:1:2::/64"
    assert str(source_network(ipaddress.ip_address("::ffff:203.0.113.7"))) == "203.0.113.7/32"
    assert mask(ipaddress.ip_address(ATTACKER)) == "203.0.113.x"
    assert mask(ipaddress.ip_address("2001:db8:1:2:3::9")) == "2001:db8:1::/48"


def test_the_trunks_of_the_shipped_pjsip_conf_are_never_blocked() -> None:
    trunks = {str(n) for n in trunk_networks(PJSIP_TEMPLATE.read_text())}
    assert trunks == {"127.0.0.2/32", "127.0.0.3/32"}  # carrier-sim, carrier-test
    config = guard_config(block_after=5, window_s=60, block_s=900, max_blocked=10, never_block="127.0.0.1, ::1")
    assert config.protected(ipaddress.ip_address("127.0.0.2")) and config.protected(ipaddress.ip_address("::1"))
    assert not config.protected(ipaddress.ip_address("127.0.0.66"))
    with pytest.raises(ValueError, match="HILO_SIP_NEVER_BLOCK: 'nonsense'"):
        guard_config(block_after=5, window_s=60, block_s=900, max_blocked=10, never_block="nonsense")


async def test_n_failures_within_the_window_block_the_source_in_asterisks_acl(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    assert not await g.fail() and not await g.fail()
    assert g.reloads == 0 and g.acl.read() is None  # nothing to tell Asterisk yet
    ttl = await g.redis.ttl(f"hilo-test:sipguard:failures:{ATTACKER}/32")
    assert 0 < ttl <= 60  # the count lasts one window
    assert await g.fail()
    assert g.denied() == [f"{ATTACKER}/32"] and g.reloads == 1
    assert "[hilo-sip-blocks-hilo-test]\ntype=acl\n" in (g.acl.read() or "")
    [block] = await g.guard.blocked()
    assert block.until == g.clock.now + 900
    # another source is not affected, and counts from zero
    assert not await g.fail("198.51.100.1")
    assert g.denied() == [f"{ATTACKER}/32"]
    assert g.metric("hilo_sip_security_events_total", event="ChallengeResponseFailed") == 4
    assert g.metric("hilo_sip_blocks_total") == 1 and g.metric("hilo_sip_blocked_sources") == 1


async def test_a_block_expires_and_asterisk_is_told(tmp_path: Path) -> None:
    g = Guarded(tmp_path, block_s=30)
    for _ in range(3):
        await g.fail()
    assert g.denied() == [f"{ATTACKER}/32"]
    g.clock.now += 29
    assert not await g.guard.sync()  # still blocked: nothing changes, no reload
    g.clock.now += 2
    assert await g.guard.sync()
    assert g.denied() == [] and g.reloads == 2 and await g.guard.blocked() == []
    assert g.metric("hilo_sip_blocked_sources") == 0
    assert not await g.guard.sync()  # the file says it already


async def test_trunks_and_never_block_addresses_are_counted_but_never_blocked(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    for address in ("127.0.0.2", "127.0.0.1"):
        for _ in range(5):
            assert not await g.fail(address, "InvalidAccountID")
    assert g.denied() == [] and g.reloads == 0
    assert g.metric("hilo_sip_security_events_total", event="InvalidAccountID") == 10


async def test_one_event_heard_by_several_nodes_counts_once(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    same = parse_failure(event(session="one-request"))
    assert same is not None
    for _ in range(5):  # five nodes hear the same AMI event
        assert not await g.guard.record(same)
    assert g.denied() == []
    assert g.metric("hilo_sip_security_events_total", event="ChallengeResponseFailed") == 1


async def test_the_list_is_bounded_and_entries_closest_to_expiry_give_way(tmp_path: Path) -> None:
    g = Guarded(tmp_path, block_after=1, max_blocked=2)
    for n in range(1, 4):
        await g.fail(f"198.51.100.{n}")
        g.clock.now += 1
    assert g.denied() == ["198.51.100.2/32", "198.51.100.3/32"]


async def test_an_admin_lifts_a_block_and_the_file_follows_redis(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    for _ in range(3):
        await g.fail()
    assert await g.guard.unblock(ipaddress.ip_network(f"{ATTACKER}/32"))
    assert g.denied() == [] and not await g.guard.unblock(ipaddress.ip_network(f"{ATTACKER}/32"))
    # the list lost (Redis emptied): the file is rewritten to say so
    for _ in range(3):
        await g.fail()
    await g.redis.flushall()
    assert await g.guard.sync() and g.denied() == []


async def test_the_ami_handler_queues_failures_and_ignores_the_rest(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    g.guard.on_ami_event({"Event": "Newchannel", "Channel": "PJSIP/x"})
    g.guard.on_ami_event(event("ChallengeSent"))
    g.guard.on_ami_event(event())
    assert g.guard._queue.qsize() == 1


async def test_a_failed_reload_is_tried_again_at_the_next_sync(tmp_path: Path) -> None:
    g = Guarded(tmp_path)
    await g.fail()
    await g.fail()
    g.fail_reloads = 1
    with pytest.raises(TimeoutError):
        await g.fail()  # the file says it, but Asterisk has not loaded it
    assert g.denied() == [f"{ATTACKER}/32"] and g.reloads == 0
    assert await g.guard.sync() and g.reloads == 1
    assert not await g.guard.sync()
