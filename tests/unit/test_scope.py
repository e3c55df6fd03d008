"""The one scope rule (routing/scope.py): who gets which scope, what each scope covers (agents, queues, work
with and without an agent), the same rule in SQL, and a refusal: 403 with the reason, audited."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from hilo.web.sessions import Principal
from routing import scope as scoping
from routing.scope import EVERYTHING, Scope, refuse, scope_of


class Directory:
    """console_users and agents as the scope reads them, standing in for the pool (the demo's two agents)."""

    AGENTS: ClassVar[dict[str, tuple[list[str], list[str]]]] = {
        "alice": (["front-office"], ["sales"]),
        "bob": (["back-office"], ["support"]),
    }
    USERS: ClassVar[dict[str, tuple[str, str | None, list[str]]]] = {
        "sam": ("supervisor", None, ["front-office", "back-office"]),
        "fran": ("supervisor", None, ["front-office"]),
        "nat": ("supervisor", None, []),
        "bob": ("agent", "bob", []),
    }
    SAM = Scope(
        "supervisor",
        teams=("back-office", "front-office"),
        agents=frozenset({"alice", "bob"}),
        queues=frozenset({"sales", "support"}),
    )
    FRAN = Scope("supervisor", teams=("front-office",), agents=frozenset({"alice"}), queues=frozenset({"sales"}))

    def __init__(self) -> None:
        self.audited: list[tuple[Any, ...]] = []

    async def fetchrow(self, sql: str, username: str) -> dict[str, Any] | None:
        user = self.USERS.get(username)
        if sql == scoping._SUPERVISED:
            if user is None or user[0] != "supervisor":
                return None
            teams = set(user[2])
            agents = sorted(a for a, (a_teams, _) in self.AGENTS.items() if teams & set(a_teams))
            queues = sorted({q for a in agents for q in self.AGENTS[a][1]})
            return {"teams": user[2], "agents": agents, "queues": queues}
        assert sql.startswith("SELECT role, agent_id FROM console_users"), sql
        return None if user is None else {"role": user[0], "agent_id": user[1]}

    async def fetchval(self, sql: str, *args: Any) -> int:
        assert sql.startswith("INSERT INTO supervisor_actions"), sql
        self.audited.append(args)
        return len(self.audited)


async def test_who_gets_which_scope() -> None:
    db: Any = Directory()
    assert await scope_of(db, Principal("admin")) == EVERYTHING  # the API token
    assert await scope_of(db, Principal("admin", None, "root")) == EVERYTHING  # a console admin
    assert await scope_of(db, Principal("agent", "bob", "bob")) == Scope("agent", agent_id="bob")
    assert await scope_of(db, Principal("agent", None, "nobody")) == Scope("agent")
    assert await scope_of(db, Principal("supervisor", None, "sam")) == Directory.SAM
    assert await scope_of(db, Principal("supervisor", None, "fran")) == Directory.FRAN
    assert await scope_of(db, Principal("supervisor", None, "nat")) == Scope("supervisor", teams=())  # no teams
    assert await scope_of(db, Principal("supervisor")) == Scope("supervisor")  # a token: no user, no teams
    assert await scope_of(db, Principal("supervisor", None, "bob")) == Scope("supervisor")  # not a supervisor user
    assert await scope_of(db, Principal("viewer", "bob")) == Scope("viewer")


def test_a_supervisor_has_their_teams_agents_and_queues_only() -> None:
    fran = Directory.FRAN
    assert fran.has_agent("alice") and not fran.has_agent("bob") and not fran.has_agent(None)
    assert fran.has_queue("sales") and not fran.has_queue("support") and not fran.has_queue(None)
    # work belongs to its agent: bob's call in sales (an overflow) is not fran's; alice's in support is
    assert not fran.has_work("bob", "sales") and fran.has_work("alice", "support")
    # with no agent, to its queue
    assert fran.has_work(None, "sales") and not fran.has_work(None, "support") and not fran.has_work([None], [])
    # several agents (offered to one, taken by another): any one of them
    assert fran.has_work(["bob", "alice"], None) and not fran.has_work(["bob"], ["sales"])
    assert not fran.has_work(None, None)  # still in the IVR: an admin's only
    assert fran.teams_shown == frozenset({"front-office"})


def test_without_teams_a_supervisor_has_nothing_an_agent_themselves_an_admin_everything() -> None:
    teamless = Scope("supervisor")
    assert not any([teamless.has_agent("alice"), teamless.has_queue("sales"), teamless.has_work(None, "sales")])
    assert teamless.teams_shown == frozenset()  # the wallboard: nothing (not "all", as it was)
    bob = Scope("agent", agent_id="bob")
    assert bob.has_agent("bob") and not bob.has_agent("alice")
    assert bob.has_work("bob", "support") and not bob.has_work(None, "support")  # waiting work is no agent's
    assert not Scope("agent").has_agent(None) and not Scope("agent").has_work(None, "support")
    assert EVERYTHING.has_work(None, None) and EVERYTHING.has_agent("anyone") and EVERYTHING.teams_shown is None


def test_the_same_rule_in_sql() -> None:
    assert EVERYTHING.condition(3) == ("true", [])
    assert Scope("agent", agent_id="bob").condition(3, agent="c.agent_id") == ("c.agent_id = $3", ["bob"])
    assert Scope("supervisor").condition(3) == ("false", [])
    sql, args = Directory.SAM.condition(3, agent="x.agent", queue="x.queue")
    assert sql == "(x.agent = ANY($3::text[]) OR (x.agent IS NULL AND x.queue = ANY($4::text[])))"
    assert args == [["alice", "bob"], ["sales", "support"]]


def test_a_refusal_says_why() -> None:
    assert Directory.FRAN.refusal("this call") == "this call is outside your teams (front-office)"
    assert "you supervise no team" in Scope("supervisor").refusal("agent bob")
    assert "hilo users add --team" in Scope("supervisor").refusal("agent bob")
    assert "not yours" in Scope("agent", agent_id="alice").refusal("this call")
    assert "not linked to an agent" in Scope("agent").refusal("this call")


async def test_a_refusal_is_audited_and_answered_403() -> None:
    db = Directory()
    who = Principal("supervisor", None, "fran", door="console")
    error = await refuse(
        db,  # type: ignore[arg-type]
        who,
        Directory.FRAN,
        action="listen",
        target_kind="interaction",
        target_id="i-1",
        what="this call",
        field="interaction_id",
        detail={"agent": "bob"},
    )
    assert error.status == 403
    assert error.body.model_dump(exclude_none=True) == {
        "error": "forbidden",
        "field": "interaction_id",
        "reason": "this call is outside your teams (front-office)",
    }
    [row] = db.audited
    assert row == (
        "user:fran@console",
        "supervisor",
        "listen",
        "interaction",
        "i-1",
        False,
        {"reason": "this call is outside your teams (front-office)", "agent": "bob"},
    )


@pytest.mark.parametrize("role", ["admin", "agent"])
async def test_admins_and_agents_need_no_query(role: str) -> None:
    class NoDb:
        async def fetchrow(self, *args: Any) -> None:
            raise AssertionError("an admin's or an agent's scope reads nothing")

    found = await scope_of(NoDb(), Principal(role, "bob" if role == "agent" else None))  # type: ignore[arg-type]
    assert found.everything == (role == "admin")
