"""Signing in to the console under attack: every limit is taken before a password is checked (a parallel
burst gets no more checks than a sequence would), per address as well as per user name, with a cap on
checks at once on the node; login CSRF; the session cookie and HSTS behind a TLS proxy.

The real sign-in handler on aiohttp's test client, fakeredis (which runs the Lua script), the user table
stubbed. The test client's address (127.0.0.1) is made a trusted proxy, so that each request names the
client address it stands for in X-Forwarded-For."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from console import desk
from console import users as console_users
from console.users import ConsoleUser
from hilo.passwords import Cost, hash_password, needs_rehash, verify_password, verify_password_async
from hilo.web.forwarded import Proxies, add_transport_security, address_bucket
from hilo.web.keys import POOL
from hilo.web.sessions import COOKIE, SESSIONS, SessionStore
from hilo.web.signin import FAILURE_WINDOW_S, MAX_FAILURES, SIGNIN, SignInLimiter, SignInLimits

FAST = Cost(n=2**10, r=8, p=1)  # tests need not pay the real cost
ATTACKER = "203.0.113.66"
OFFICE = "198.51.100.10"
NAMES = ["alice", "bob", "carol", *(f"agent-{i:02}" for i in range(40))]


def limits(**changes: int) -> SignInLimits:
    """Limits that let a burst through to the one under test."""
    return SignInLimits(**{"attempts_per_address": 1000, "concurrent_checks": 1000, **changes})


def password_of(username: str) -> str:
    return f"the password of {username}"


@dataclass
class Desk:
    client: TestClient  # type: ignore[type-arg]
    limiter: SignInLimiter
    checks: list[str] = field(default_factory=list)  # the password of every check made, in order

    async def sign_in(self, username: str, password: str, address: str, **headers: str) -> tuple[int, int]:
        """(status, Retry-After or 0)"""
        resp = await self.client.post(
            "/console/api/login",
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": address, **headers},
        )
        return resp.status, int(resp.headers.get("Retry-After", 0))


MakeDesk = Callable[..., Awaitable[Desk]]


@pytest.fixture
async def make_desk(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeDesk]:
    opened: list[tuple[TestClient, Any]] = []  # type: ignore[type-arg]
    table = {name: ConsoleUser(name, "agent", name, hash_password(password_of(name), FAST)) for name in NAMES}

    async def get_user(pool: asyncpg.Pool, username: str) -> ConsoleUser | None:
        return table.get(username)

    monkeypatch.setattr(console_users, "get_user", get_user)
    monkeypatch.setattr(desk, "needs_rehash", lambda stored: needs_rehash(stored, FAST))

    async def make(limited: SignInLimits | None = None, proxies: str = "127.0.0.1", hsts_max_age_s: int = 3600) -> Desk:
        redis = fakeredis.FakeAsyncRedis()
        app = web.Application()
        app[POOL] = cast(asyncpg.Pool, None)  # the user table is stubbed
        app[SESSIONS] = SessionStore(redis, "unit")
        limiter = SignInLimiter(redis, "unit", limited or limits())
        app[SIGNIN] = limiter
        add_transport_security(app, Proxies.parse(proxies), hsts_max_age_s)
        app.router.add_post("/console/api/login", desk.login)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        opened.append((client, redis))
        made = Desk(client, limiter)
        real_check = verify_password_async

        async def counted(password: str, stored: str | None) -> bool:
            made.checks.append(password)
            return await real_check(password, stored)

        monkeypatch.setattr(desk, "verify_password_async", counted)
        return made

    yield make
    for client, redis in opened:
        await client.close()
        await redis.aclose()


# -- the lockout holds under a parallel burst --------------------------------------------------------


async def test_a_parallel_burst_of_wrong_passwords_gets_no_more_checks_than_the_limit(make_desk: MakeDesk) -> None:
    d = await make_desk()
    answers = await asyncio.gather(*(d.sign_in("alice", f"wrong guess {i}", ATTACKER) for i in range(60)))
    assert Counter(status for status, _ in answers) == {401: MAX_FAILURES, 429: 60 - MAX_FAILURES}
    assert len(d.checks) == MAX_FAILURES
    assert all(0 < wait <= FAILURE_WINDOW_S for status, wait in answers if status == 429)
    # The right password from that address is refused as well, without being checked.
    status, wait = await d.sign_in("alice", password_of("alice"), ATTACKER)
    assert status == 429 and 0 < wait <= FAILURE_WINDOW_S
    assert len(d.checks) == MAX_FAILURES
    # One address cannot lock an agent out: alice signs in from her own, and so does everybody else.
    assert (await d.sign_in("alice", password_of("alice"), OFFICE))[0] == 200
    assert (await d.sign_in("bob", password_of("bob"), "198.51.100.11"))[0] == 200


async def test_the_right_password_in_a_burst_is_checked_only_if_it_took_one_of_the_slots(make_desk: MakeDesk) -> None:
    d = await make_desk()
    guesses = [f"wrong guess {i}" for i in range(59)] + [password_of("alice")]
    answers = await asyncio.gather(*(d.sign_in("alice", guess, ATTACKER) for guess in guesses))
    statuses = Counter(status for status, _ in answers)
    assert len(d.checks) == MAX_FAILURES
    assert statuses[401] + statuses[200] == MAX_FAILURES and statuses[429] == 60 - MAX_FAILURES
    assert statuses[200] == (password_of("alice") in d.checks)


async def test_failures_from_many_addresses_lock_the_name_for_everybody(make_desk: MakeDesk) -> None:
    d = await make_desk(limits(failures_per_user=12))
    addresses = [f"203.0.113.{n}" for n in range(1, 5)]
    answers = await asyncio.gather(
        *(d.sign_in("alice", f"wrong {n}", address) for address in addresses for n in range(MAX_FAILURES + 1))
    )
    assert Counter(status for status, _ in answers) == {401: 12, 429: len(answers) - 12}
    assert len(d.checks) == 12
    status, wait = await d.sign_in("alice", password_of("alice"), OFFICE)
    assert status == 429 and 0 < wait <= FAILURE_WINDOW_S
    assert (await d.sign_in("bob", password_of("bob"), OFFICE))[0] == 200


# -- per address, before any hashing -----------------------------------------------------------------


async def test_an_address_over_its_budget_is_refused_before_any_check(make_desk: MakeDesk) -> None:
    d = await make_desk(limits(attempts_per_address=10, window_s=60))
    names = [f"agent-{i:02}" for i in range(30)]
    answers = await asyncio.gather(*(d.sign_in(name, "a wrong password", ATTACKER) for name in names))
    assert Counter(status for status, _ in answers) == {401: 10, 429: 20}
    assert len(d.checks) == 10
    assert all(0 < wait <= 60 for status, wait in answers if status == 429)
    assert (await d.sign_in("bob", password_of("bob"), ATTACKER))[0] == 429  # right or wrong
    assert (await d.sign_in("bob", password_of("bob"), OFFICE))[0] == 200  # other addresses are not affected
    assert len(d.checks) == 11


async def test_right_passwords_spend_the_address_budget_too(make_desk: MakeDesk) -> None:
    d = await make_desk(limits(attempts_per_address=3))
    for name in ("alice", "bob", "carol"):
        assert (await d.sign_in(name, password_of(name), OFFICE))[0] == 200
    assert (await d.sign_in("agent-00", password_of("agent-00"), OFFICE))[0] == 429


async def test_an_ipv6_client_is_counted_by_its_64(make_desk: MakeDesk) -> None:
    d = await make_desk(limits(attempts_per_address=2))
    assert (await d.sign_in("alice", password_of("alice"), "2001:db8:0:7::1"))[0] == 200
    assert (await d.sign_in("bob", password_of("bob"), "2001:db8:0:7::2"))[0] == 200
    assert (await d.sign_in("carol", password_of("carol"), "2001:db8:0:7:ffff::3"))[0] == 429
    assert (await d.sign_in("carol", password_of("carol"), "2001:db8:0:8::3"))[0] == 200


def test_address_buckets() -> None:
    assert address_bucket("192.0.2.7") == "192.0.2.7"
    assert address_bucket("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_bucket("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_bucket("not an address") == "not an address"
    assert len(address_bucket("x" * 500)) == 64


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(make_desk: MakeDesk) -> None:
    d = await make_desk(limits(attempts_per_address=2), proxies="10.9.9.9")
    # The test client is not a trusted proxy here: whatever it writes, it is counted as 127.0.0.1.
    assert (await d.sign_in("alice", password_of("alice"), "192.0.2.1"))[0] == 200
    assert (await d.sign_in("bob", password_of("bob"), "192.0.2.2"))[0] == 200
    assert (await d.sign_in("carol", password_of("carol"), "192.0.2.3"))[0] == 429


# -- the node checks a bounded number at once ---------------------------------------------------------


async def test_more_sign_ins_at_once_than_the_node_checks_are_refused_holding_nothing(
    make_desk: MakeDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = await make_desk(limits(concurrent_checks=3))
    release, all_busy = asyncio.Event(), asyncio.Event()

    async def slow_check(password: str, stored: str | None) -> bool:
        d.checks.append(password)
        if len(d.checks) == 3:
            all_busy.set()
        await release.wait()
        return False

    monkeypatch.setattr(desk, "verify_password_async", slow_check)
    held = [asyncio.create_task(d.sign_in(f"agent-{i:02}", "wrong", f"203.0.113.{i}")) for i in range(3)]
    await asyncio.wait_for(all_busy.wait(), 5)
    refused = await asyncio.gather(*(d.sign_in(f"agent-{i:02}", "wrong", f"203.0.113.{i}") for i in range(3, 10)))
    assert refused == [(429, 1)] * 7
    assert len(d.checks) == 3
    release.set()
    assert [status for status, _ in await asyncio.gather(*held)] == [401] * 3
    # The refused ones were counted against nobody's name; the held ones were.
    redis = d.limiter.redis
    for i in range(10):
        expected = 1 if i < 3 else 0
        assert int(await redis.get(f"unit:console:signin:fail:agent-{i:02}") or 0) == expected
        assert int(await redis.get(f"unit:console:signin:fail:agent-{i:02}:203.0.113.{i}") or 0) == expected
    assert d.limiter.checking == 0


async def test_a_right_password_clears_its_address_failures(make_desk: MakeDesk) -> None:
    d = await make_desk()
    for n in range(MAX_FAILURES - 1):
        assert (await d.sign_in("alice", f"typo {n}", OFFICE))[0] == 401
    assert (await d.sign_in("alice", password_of("alice"), OFFICE))[0] == 200
    for n in range(MAX_FAILURES - 1):
        assert (await d.sign_in("alice", f"typo again {n}", OFFICE))[0] == 401
    assert (await d.sign_in("alice", password_of("alice"), OFFICE))[0] == 200


async def test_a_hash_of_an_older_cost_is_upgraded_at_sign_in(
    make_desk: MakeDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = await make_desk()
    older = hash_password(password_of("carol"), Cost(n=2**11, r=8, p=1))
    replaced: list[tuple[str, str, str]] = []

    async def get_user(pool: asyncpg.Pool, username: str) -> ConsoleUser | None:
        return ConsoleUser(username, "supervisor", None, older if username == "carol" else "")

    async def replace(pool: asyncpg.Pool, username: str, old_hash: str, new_hash: str) -> bool:
        replaced.append((username, old_hash, new_hash))
        return True

    async def fast_hash(password: str) -> str:
        return hash_password(password, FAST)

    monkeypatch.setattr(console_users, "get_user", get_user)
    monkeypatch.setattr(console_users, "replace_password_hash", replace)
    monkeypatch.setattr(desk, "hash_password_async", fast_hash)
    assert (await d.sign_in("carol", password_of("carol"), OFFICE))[0] == 200
    [(username, old_hash, new_hash)] = replaced
    assert (username, old_hash) == ("carol", older)
    assert verify_password(password_of("carol"), new_hash) and not needs_rehash(new_hash, FAST)


# -- login CSRF ---------------------------------------------------------------------------------------


async def test_sign_in_from_another_sites_page_is_refused(make_desk: MakeDesk) -> None:
    d = await make_desk()
    body = json.dumps({"username": "bob", "password": password_of("bob")})
    resp = await d.client.post(
        "/console/api/login", data=body, headers={"Content-Type": "application/json", "Origin": "https://evil.example"}
    )
    assert resp.status == 403 and (await resp.json())["field"] == "origin"
    assert COOKIE not in resp.cookies
    # The cross-site form's way: a JSON-looking text/plain body (or any other form encoding).
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = await d.client.post("/console/api/login", data=body, headers={"Content-Type": content_type})
        assert resp.status == 415 and (await resp.json())["field"] == "body"
        assert COOKIE not in resp.cookies
    assert d.checks == []
    # The page's own way.
    origin = str(d.client.make_url("/")).rstrip("/")
    resp = await d.client.post(
        "/console/api/login",
        data=body,
        headers={"Content-Type": "application/json; charset=utf-8", "Origin": origin},
    )
    assert resp.status == 200 and COOKIE in resp.cookies


# -- behind a TLS proxy --------------------------------------------------------------------------------


async def test_https_through_a_trusted_proxy_makes_the_cookie_secure_and_sends_hsts(make_desk: MakeDesk) -> None:
    d = await make_desk(hsts_max_age_s=3600)
    resp = await d.client.post(
        "/console/api/login",
        json={"username": "bob", "password": password_of("bob")},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": OFFICE},
    )
    assert resp.status == 200
    assert resp.cookies[COOKIE]["secure"] is True
    assert resp.headers["Strict-Transport-Security"] == "max-age=3600"
    # Every HTTPS answer carries it, refusals and unknown paths too.
    resp = await d.client.get("/nowhere", headers={"X-Forwarded-Proto": "https"})
    assert resp.status == 404 and resp.headers["Strict-Transport-Security"] == "max-age=3600"
    # Plain HTTP: no Secure (the browser would drop the cookie), no HSTS (it would be ignored).
    resp = await d.client.post(
        "/console/api/login",
        json={"username": "bob", "password": password_of("bob")},
        headers={"X-Forwarded-For": OFFICE},
    )
    assert resp.status == 200 and not resp.cookies[COOKIE]["secure"]
    assert "Strict-Transport-Security" not in resp.headers


async def test_x_forwarded_proto_from_anyone_else_is_ignored(make_desk: MakeDesk) -> None:
    d = await make_desk(proxies="10.9.9.9")
    resp = await d.client.post(
        "/console/api/login",
        json={"username": "bob", "password": password_of("bob")},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert resp.status == 200 and not resp.cookies[COOKIE]["secure"]
    assert "Strict-Transport-Security" not in resp.headers


async def test_the_origin_check_uses_the_host_a_trusted_proxy_was_asked_for(make_desk: MakeDesk) -> None:
    body = {"username": "bob", "password": password_of("bob")}
    forwarded = {"Origin": "https://hilo.example", "X-Forwarded-Host": "hilo.example", "X-Forwarded-Proto": "https"}
    trusted = await make_desk()
    assert (await trusted.client.post("/console/api/login", json=body, headers=forwarded)).status == 200
    untrusted = await make_desk(proxies="")
    assert (await untrusted.client.post("/console/api/login", json=body, headers=forwarded)).status == 403


def test_tls_to_hilo_itself_is_https_and_hsts_can_be_turned_off() -> None:
    request = make_mocked_request("GET", "/", sslcontext=ssl.create_default_context())
    assert Proxies().is_https(request)
    assert not Proxies().is_https(make_mocked_request("GET", "/", headers={"X-Forwarded-Proto": "https"}))
    app = web.Application()
    add_transport_security(app, Proxies(), 0)
    assert not app.on_response_prepare
