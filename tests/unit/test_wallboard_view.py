"""Cutting the wallboard snapshot per subscription: filters by channel, queue, team and time slot, a
supervisor's team scope, grouping with subtotals recomputed from the group's contacts, and the alerts of the
queues shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reports.config import KpiConfig
from reports.facts import Today, Waiting
from reports.kpis import Contact
from reports.service import rules_of
from reports.wallboard_view import ALL, AgentNow, BoardFilter, FilterError, Snapshot, parse_filter, view

NOW = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
EVERY = frozenset({"voice", "sms", "whatsapp", "webchat"})


def agent(id: str, queues: tuple[str, ...], teams: tuple[str, ...], channels: frozenset[str] = EVERY) -> AgentNow:
    return AgentNow(id, id.title(), queues, teams, channels, "available", None, None, 0, None)


def contact(n: int, channel: str, queue: str | None, minutes_ago: float, wait_s: float | None) -> Contact:
    started = NOW - timedelta(minutes=minutes_ago)
    queued = started + timedelta(seconds=5) if queue else None
    answered = queued + timedelta(seconds=wait_s) if queued and wait_s is not None else None
    ended = None if answered else (queued + timedelta(seconds=40) if queued else started + timedelta(seconds=30))
    return Contact(
        interaction_id=f"i{n}",
        customer_id=f"c{n}",
        channel=channel,
        started_at=started,
        queue=queue,
        queued_at=queued,
        agent="alice" if answered else None,
        answered_at=answered,
        ended_at=ended,
        outcome=None if answered else "abandoned",
    )


def snapshot() -> Snapshot:
    contacts = [
        contact(1, "voice", "sales", 5, 10),  # in 20 s: in time
        contact(2, "voice", "sales", 50, 40),  # late, and outside the last 15 minutes
        contact(3, "sms", "support", 10, 100),  # late (support: 30 s)
        contact(4, "whatsapp", "support", 3, None),  # abandoned
        contact(5, "voice", None, 2, None),  # left in the IVR: no queue
        contact(6, "webchat", "support", 300, 5),  # this morning
    ]
    short = [c for c in contacts if c.started_at >= NOW - timedelta(hours=1)]
    return Snapshot(
        at=NOW,
        timezone="UTC",
        window_minutes=30,
        queues=[("sales", "Sales"), ("support", "Support"), ("billing", "Billing")],
        service_level_s={"sales": 20, "support": 30, "billing": 20},
        thresholds={q: {"waiting_above": 0} for q in ("sales", "support", "billing")},
        agents=[
            agent("alice", ("sales",), ("front-office",)),
            agent("bob", ("support",), ("back-office",), frozenset({"voice"})),
            agent("carol", ("support", "billing"), ("back-office", "front-office")),
            agent("dave", ("billing",), ()),
        ],
        waiting=[
            Waiting("w1", "voice", "support", NOW - timedelta(seconds=90)),
            Waiting("w2", "sms", "sales", NOW - timedelta(seconds=30)),
            Waiting("w3", "whatsapp", "support", NOW - timedelta(seconds=10)),
        ],
        contacts={
            "window": [c for c in short if c.started_at >= NOW - timedelta(minutes=30)],
            "15m": [c for c in short if c.started_at >= NOW - timedelta(minutes=15)],
            "1h": short,
            "today": contacts,
        },
        active_by_channel={"voice": 4, "sms": 1},
        today=Today({}, {"voice": 2}, {"voice": 9, "sms": 2}),
        rules=rules_of(KpiConfig.model_validate({"queues": {}})),
        alerts=[
            {"id": 1, "queue": "support", "kind": "waiting"},
            {"id": 2, "queue": "sales", "kind": "waiting"},
        ],
    )


def rows(picture: dict[str, object], table: str, key: str) -> list[str]:
    return [row[key] for row in picture[table]]  # type: ignore[attr-defined]


def test_parse_reads_the_query_and_names_what_is_wrong() -> None:
    f = parse_filter({"channel": "voice,sms", "queue": "support", "team": "back-office", "slot": "1h", "group": "team"})
    teams = frozenset({"back-office"})
    assert f == BoardFilter(frozenset({"voice", "sms"}), frozenset({"support"}), teams, "1h", "team")
    assert parse_filter({}) == ALL
    with pytest.raises(FilterError) as bad:
        parse_filter({"channel": "voice,fax"})
    assert (bad.value.field, bad.value.reason) == ("channel", "fax: not one of voice, sms, whatsapp, webchat")
    with pytest.raises(FilterError, match="slot: 2h: not one of window, 15m, 1h, today"):
        parse_filter({"slot": "2h"})
    with pytest.raises(FilterError, match="group: agent"):
        parse_filter({"group": "agent"})


def test_unfiltered_shows_everything() -> None:
    picture = view(snapshot())
    assert rows(picture, "queues", "queue") == ["sales", "support", "billing"]
    assert rows(picture, "agents", "id") == ["alice", "bob", "carol", "dave"]
    assert rows(picture, "waiting", "interaction_id") == ["w1", "w2", "w3"]
    assert rows(picture, "channels", "channel") == ["sms", "voice", "whatsapp"]
    voice = picture["channels"][1]
    assert (voice["active"], voice["started_today"], voice["handled_today"]) == (4, 9, 2)  # every interaction's
    assert {a["queue"] for a in picture["alerts"]} == {"sales", "support"}
    assert picture["queue_groups"] is None


def test_a_team_sees_its_agents_the_queues_they_serve_and_what_waits_there() -> None:
    picture = view(snapshot(), BoardFilter(teams=frozenset({"back-office"})))
    assert rows(picture, "agents", "id") == ["bob", "carol"]
    assert rows(picture, "queues", "queue") == ["support", "billing"]  # carol serves billing too
    assert rows(picture, "waiting", "interaction_id") == ["w1", "w3"]
    assert [a["queue"] for a in picture["alerts"]] == ["support"]  # sales' alert is not theirs
    support = picture["queues"][0]
    assert support["agents"]["available"] == 2 and support["alerts"] == ["waiting"]
    billing = picture["queues"][1]
    assert billing["agents"]["available"] == 1  # carol; dave has no team
    # channels count those queues' contacts, not the IVR's nor sales'
    assert rows(picture, "channels", "channel") == ["sms", "voice", "webchat", "whatsapp"]
    by_channel = {c["channel"]: c for c in picture["channels"]}
    assert (by_channel["voice"]["started_today"], by_channel["voice"]["waiting"]) == (0, 1)
    assert (by_channel["sms"]["started_today"], by_channel["sms"]["active"]) == (1, 1)


def test_a_channel_filter_cuts_every_table() -> None:
    picture = view(snapshot(), BoardFilter(channels=frozenset({"voice"})))
    assert rows(picture, "channels", "channel") == ["voice"]
    assert rows(picture, "waiting", "interaction_id") == ["w1"]
    queues = {q["queue"]: q for q in picture["queues"]}
    assert (queues["support"]["waiting"], queues["sales"]["waiting"]) == (1, 0)
    assert queues["support"]["offered"] == 0  # its sms and whatsapp contacts are not voice
    assert queues["sales"]["offered"] == 1  # the 50-minute-old one is outside the 30-minute window
    only_sms = view(snapshot(), BoardFilter(channels=frozenset({"sms"})))
    assert rows(only_sms, "agents", "id") == ["alice", "carol", "dave"]  # bob takes voice only


def test_a_queue_filter_and_the_time_slots() -> None:
    f = BoardFilter(queues=frozenset({"sales"}))
    picture = view(snapshot(), f)
    assert rows(picture, "queues", "queue") == ["sales"]
    assert rows(picture, "agents", "id") == ["alice"]
    assert rows(picture, "waiting", "interaction_id") == ["w2"]
    sales = picture["queues"][0]
    assert (sales["offered"], sales["service_level"]) == (1, 1.0)
    hour = view(snapshot(), BoardFilter(queues=f.queues, slot="1h"))["queues"][0]
    assert (hour["offered"], hour["service_level"], hour["asa_s"]) == (2, 0.5, 25.0)
    slots = ("15m", "1h", "today")
    support = {s: view(snapshot(), BoardFilter(queues=frozenset({"support"}), slot=s))["queues"][0] for s in slots}
    assert [support[s]["offered"] for s in ("15m", "1h", "today")] == [2, 2, 3]
    assert support["today"]["abandoned"] == 1 and support["today"]["service_level"] == pytest.approx(1 / 3)


def test_a_supervisor_is_held_to_their_teams() -> None:
    mine = BoardFilter().limited_to(["front-office"])
    picture = view(snapshot(), mine)
    assert rows(picture, "agents", "id") == ["alice", "carol"]
    assert rows(picture, "queues", "queue") == ["sales", "support", "billing"]  # carol serves support, billing
    assert picture["choices"]["teams"] == ["front-office"]
    assert [q["id"] for q in picture["choices"]["queues"]] == ["sales", "support", "billing"]
    with pytest.raises(FilterError) as refused:
        BoardFilter(teams=frozenset({"back-office"})).limited_to(["front-office"])
    assert refused.value.field == "team" and "back-office is not one of your teams (front-office)" in str(refused.value)
    back = view(snapshot(), BoardFilter().limited_to(["back-office"]))
    assert [q["id"] for q in back["choices"]["queues"]] == ["support", "billing"]
    assert BoardFilter().limited_to(None) == ALL


def test_a_supervisor_without_teams_sees_nothing() -> None:
    """Scope.teams_shown (routing/scope.py) is empty for them: the same "none" as everywhere else."""
    nothing = BoardFilter().limited_to(frozenset())
    assert nothing.key != ALL.key
    picture = view(snapshot(), nothing)
    assert (picture["agents"], picture["queues"], picture["waiting"], picture["alerts"]) == ([], [], [], [])
    assert (picture["choices"]["teams"], picture["choices"]["queues"]) == ([], [])
    assert all(c["started_today"] == 0 and c["offered"] == 0 for c in picture["channels"])
    with pytest.raises(FilterError) as refused:
        BoardFilter(teams=frozenset({"front-office"})).limited_to(frozenset())
    assert "you supervise no team" in str(refused.value)


def test_grouping_by_team_gives_subtotals_from_the_groups_own_contacts() -> None:
    picture = view(snapshot(), BoardFilter(group="team", slot="1h"))
    groups = {g["group"]: g for g in picture["queue_groups"]}
    assert list(groups) == ["back-office", "front-office"]  # every queue has a team's agent: no "no team" group
    assert [q["queue"] for q in groups["back-office"]["queues"]] == ["support", "billing"]
    assert [q["queue"] for q in groups["front-office"]["queues"]] == ["sales", "support", "billing"]
    back = groups["back-office"]["totals"]
    assert (back["waiting"], back["offered"], back["abandoned"]) == (2, 2, 1)
    assert back["service_level"] == 0.0  # neither of support's two offered contacts was in time
    assert back["agents"]["available"] == 2  # bob and carol, counted once each
    front = groups["front-office"]["totals"]
    assert (front["waiting"], front["offered"]) == (3, 4)
    assert front["service_level"] == 0.25  # a ratio over the group's contacts, not a sum of the queues' ratios
    assert front["agents"]["available"] == 2  # alice, carol
    # within a group, a queue's agents are those of the group
    support_front = groups["front-office"]["queues"][1]
    assert support_front["agents"]["available"] == 1 and support_front["alerts"] == ["waiting"]


def test_grouping_by_channel_splits_queues_per_channel() -> None:
    picture = view(snapshot(), BoardFilter(group="channel", slot="1h", channels=frozenset({"voice", "sms"})))
    groups = {g["group"]: g for g in picture["queue_groups"]}
    assert list(groups) == ["voice", "sms"]
    assert [q["queue"] for q in groups["voice"]["queues"]] == ["sales", "support"]
    voice_sales = groups["voice"]["queues"][0]
    assert (voice_sales["offered"], voice_sales["waiting"]) == (2, 0)
    assert (groups["voice"]["totals"]["waiting"], groups["voice"]["totals"]["offered"]) == (1, 2)
    assert [q["queue"] for q in groups["sms"]["queues"]] == ["sales", "support"]
    assert groups["sms"]["totals"]["agents"]["available"] == 3  # alice, carol, dave: bob takes no sms


def test_a_key_per_distinct_subscription() -> None:
    a = parse_filter({"channel": "sms,voice", "slot": "1h"})
    b = parse_filter({"channel": "voice,sms", "slot": "1h"})
    assert a.key == b.key and a.key != parse_filter({"channel": "voice"}).key
    assert a.key != a.limited_to(["x"]).key


async def test_the_monitor_cuts_each_distinct_subscription_once_and_pushes_only_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reports import monitor as monitor_module

    cuts: list[str] = []

    def counting_view(snap: Snapshot, f: BoardFilter = ALL) -> dict[str, object]:
        cuts.append(f.key)
        return view(snap, f)

    monkeypatch.setattr(monitor_module, "view", counting_view)
    monitor = monitor_module.WallboardMonitor.__new__(monitor_module.WallboardMonitor)
    monitor._viewers, monitor._shown = {}, {}
    received: dict[str, list[dict[str, object]]] = {"a": [], "b": [], "c": []}

    def page(name: str) -> monitor_module.Viewer:
        async def send(text: str) -> None:
            received[name].append(json.loads(text))

        return send

    sales = BoardFilter(queues=frozenset({"sales"}))
    monitor._viewers = {page("a"): sales, page("b"): sales, page("c"): BoardFilter(teams=frozenset({"back-office"}))}
    snap = snapshot()
    await monitor._push(snap)
    assert sorted(cuts) == sorted([sales.key, BoardFilter(teams=frozenset({"back-office"})).key])  # 2 cuts, 3 pages
    assert [len(received[n]) for n in "abc"] == [1, 1, 1]
    assert [q["queue"] for q in received["a"][0]["queues"]] == ["sales"]  # type: ignore[attr-defined]
    # only support changes: the sales pages get nothing new
    snap.waiting = [w for w in snap.waiting if w.queue != "support"]
    await monitor._push(snap)
    assert [len(received[n]) for n in "abc"] == [1, 1, 2]
