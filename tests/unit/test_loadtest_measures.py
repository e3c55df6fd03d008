"""What a load run measures besides the calls: processes from /proc, queue figures from Hilo's events, and
the report's per-second series."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime

import pytest

from server.loadtest.calls import CallBook
from server.loadtest.hilo_events import HiloEvents, queue_figures
from server.loadtest.procs import Sampler, _hex_address, parse_stat, pids_listening, with_descendants
from server.loadtest.report import concurrency, process_section, voice_section
from server.loadtest.sipp import LogEvent
from server.loadtest.stats import per_second, percentile, summary


def test_proc_stat_is_read_past_a_name_with_spaces_and_parentheses() -> None:
    line = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 500 0 0 0 120 35 0 0 20 0 1 0 99 1000 50"
    assert parse_stat(line) == (17, 155)
    assert _hex_address("0100007F:13C4") == ("127.0.0.1", 5060)
    assert with_descendants([1], {1: [2, 3], 3: [4], 9: [10]}) == {1, 2, 3, 4}


def test_a_process_is_found_by_the_port_it_listens_on_and_sampled() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert os.getpid() in pids_listening(server.getsockname()[1])
    sampler = Sampler({"me": {os.getpid()}, "nobody": set()})
    assert sampler.missing == ["nobody"]
    start = time.time()
    sampler.sample(start)
    burn = time.process_time() + 0.05
    while time.process_time() < burn:
        sum(range(10_000))  # some CPU to see
    sampler.sample(time.time())
    me = sampler.groups["me"]
    assert me.cpu_s > 0 and me.rss_mb[0] > 1 and len(me.cpu_pct) == 1
    assert sampler.cpu_between("me", start, time.time()) == pytest.approx(me.cpu_s)
    first_cpu = me.cpu_s
    sampler.add("me too", {os.getpid()})  # added late: counts from now, not from the process's start
    sampler.sample(time.time())
    assert sampler.groups["me too"].cpu_s < 0.05  # not the second or more this process used before
    section = process_section(sampler, start, time.time(), succeeded=2)
    assert section["me"]["cpu_ms_per_call"] == pytest.approx(1000 * me.cpu_s / 2, abs=0.01)
    assert me.cpu_s >= first_cpu


def at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def event(kind: str, iid: str, t: float, **data: object) -> dict[str, object]:
    return {"type": kind, "interaction_id": iid, "at": at(t), "channel": "voice", "data": data}


def test_queue_figures_from_hilos_events() -> None:
    t0 = 1_800_000_000.0
    events = HiloEvents()
    for e in [
        event("interaction.started", "a", t0 + 0.1, dialed="100"),
        event("routing.queued", "a", t0 + 3, queue="support"),
        event("agent.answered", "a", t0 + 4, agent="bob"),  # 1 s wait: within 30 s
        event("interaction.ended", "a", t0 + 12, outcome="completed"),
        event("interaction.started", "b", t0 + 1.1, dialed="100"),
        event("routing.queued", "b", t0 + 4, queue="support"),
        event("agent.answered", "b", t0 + 40, agent="bob"),  # 36 s: outside
        event("interaction.started", "c", t0 + 2.1, dialed="100"),
        event("routing.queued", "c", t0 + 5, queue="support"),
        event("interaction.ended", "c", t0 + 13, outcome="abandoned"),
        event("interaction.started", "d", t0 + 3.1, dialed="100"),
        event("routing.queued", "d", t0 + 6, queue="support"),  # still waiting
        event("interaction.started", "e", t0 + 3.5, dialed="150"),  # another line
        event("interaction.started", "f", t0 - 60, dialed="100"),  # before the run
    ]:
        events.add(e)
    ours = events.ours({"100"}, t0)
    assert sorted(i.id for i in ours) == ["a", "b", "c", "d"]
    assert [i.id for i in events.ours({"100"}, t0, until=t0 + 1.5)] == ["a", "b"]
    figures = queue_figures(ours, {"support": 30.0}, t0, 45)
    assert figures["queued"] == 4 and figures["answered_by_agent"] == 2
    assert figures["abandoned_in_queue"] == 1 and figures["still_waiting"] == 1
    assert figures["service_level_pct"] == pytest.approx(33.3)  # 1 of (2 answered + 1 abandoned)
    assert figures["queue_wait_s"]["max"] == 36.0
    assert figures["outcomes"] == {"completed": 1, "abandoned": 1}
    level = figures["per_second"]["service_level_pct"]
    assert level[2] is None and level[4] == 100.0 and level[13] == 50.0 and level[40] == pytest.approx(33.3)
    assert sum(figures["per_second"]["queued"]) == 4 and sum(figures["per_second"]["abandoned"]) == 1


def test_the_voice_section_counts_each_second() -> None:
    t0 = 1000.0
    book = CallBook()
    for i in range(4):
        book.add(LogEvent("I", f"c{i}", t0 + i * 0.5))
        book.add(LogEvent("A", f"c{i}", t0 + i * 0.5 + 0.01, ("127.0.0.1", str(13000 + 2 * i))))
    book.add(LogEvent("E", "c0", t0 + 3.2))
    book.add(LogEvent("R", "c1", t0 + 2.4))
    book.close()
    section = voice_section(book, t0, 5, rate_asked=2.0)
    per_s = section["per_second"]
    assert per_s["offered"] == [2, 2, 0, 0, 0]
    assert per_s["succeeded"] == [0, 0, 0, 1, 0]
    assert per_s["failed"] == [0, 2, 1, 0, 0]  # c2, c3 never ended (last seen at 1.x); c1 hung up on at 2.4
    assert section["rate_achieved"] == 2.0
    assert section["latency_ms"]["INVITE → 200 OK"]["n"] == 4
    assert concurrency(book, t0, 5) == [3, 4, 3, 2, 2]


def test_percentiles_and_per_second_counts() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99 and percentile(values, 0.5) == 50 and percentile([], 0.5) is None
    assert summary([1.0, 2.0, 3.0]) == {"n": 3, "p50": 2.0, "p90": 3.0, "p99": 3.0, "max": 3.0}
    # before the start counts in the first second, after the end in the last: the totals stay whole
    assert per_second([9.0, 10.2, 10.9, 12.5, 99.0], start=10.0, seconds=3) == [3, 0, 2]
