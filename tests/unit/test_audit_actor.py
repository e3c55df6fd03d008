"""The one actor form of every audit trail (hilo/audit.py): built for each door, parsed back, and nothing
that is not exactly in the form taken for an actor."""

from __future__ import annotations

import getpass

import pytest

from hilo import audit
from hilo.audit import Actor, actor, parse
from hilo.web.sessions import Principal


def test_a_console_user_through_each_door() -> None:
    maria = Principal("supervisor", None, "maria", "digest")
    assert actor(maria) == "user:maria@api"  # a session token as bearer: a tool, through the API
    assert actor(Principal("supervisor", None, "maria", "digest", door="console")) == "user:maria@console"
    assert actor(maria, "console") == "user:maria@console"  # a door given overrides the principal's
    assert parse(actor(maria)).who == parse(actor(maria, "console")).who == "user:maria"


def test_the_api_token_is_named_by_its_role_never_by_the_token() -> None:
    assert actor(Principal("admin")) == "token:admin@api"
    assert actor(Principal("agent")) == "token:agent@api"


def test_a_user_called_admin_is_not_the_admin_token() -> None:
    assert actor(Principal("admin", None, "admin")) == "user:admin@api" != actor(Principal("admin"))


def test_the_command_line_and_the_system() -> None:
    assert audit.cli("maria") == "login:maria@cli"
    assert audit.cli() == f"login:{audit.encode_name(getpass.getuser())}@cli"
    assert audit.system("retention") == "system:retention@system"
    assert audit.system("retention", "cli") == "system:retention@cli"
    assert audit.UNVERIFIED == "unknown:unverified@api"


@pytest.mark.parametrize(
    ("text", "kind", "name", "door"),
    [
        ("user:maria@console", "user", "maria", "console"),
        ("user:maria.lopez-2@api", "user", "maria.lopez-2", "api"),
        ("token:admin@api", "token", "admin", "api"),
        ("login:root@cli", "login", "root", "cli"),
        ("system:retention@system", "system", "retention", "system"),
        ("system:retention@cli", "system", "retention", "cli"),
        ("user:maria@unknown", "user", "maria", "unknown"),
        ("unknown:unverified@api", "unknown", "unverified", "api"),
        ("unknown:admin%20token%20%28api%29@api", "unknown", "admin token (api)", "api"),
        ("login:make%20run@cli", "login", "make run", "cli"),
        ("unknown:api%3Aadmin@unknown", "unknown", "api:admin", "unknown"),
        ("login:Jos%C3%A9@cli", "login", "José", "cli"),
        ("login:a%40b@cli", "login", "a@b", "cli"),
    ],
)
def test_parse_gives_back_what_was_built(text: str, kind: str, name: str, door: str) -> None:
    parsed = parse(text)
    assert (parsed.kind, parsed.name, parsed.door) == (kind, name, door)
    assert str(parsed) == text  # one actor, one text
    assert str(Actor(parsed.kind, name, parsed.door)) == text
    assert audit.is_actor(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "maria",  # the old forms, each of them
        "api-token",
        "api-token:admin",
        "console:maria",
        "api:admin",
        "maria (api)",
        "admin token (api)",
        "root (cli)",
        "system:retention",
        "unverified",
        "user:maria",  # no door
        "user:@console",  # no name
        "user:maria@phone",  # no such door
        "person:maria@console",  # no such kind
        "User:maria@console",
        "user:maria@console ",
        "user:ma ria@console",
        "user:ma@ria@console",  # '@' in a name is always encoded
        "user:ma:ria@console",  # so is ':'
        "login:%61@cli",  # 'a' need not be encoded: not the one text of this actor
        "login:%c3%a9@cli",  # lower-case hex
        "login:%ZZ@cli",
        "login:%FF@cli",  # not UTF-8
        "user:" + "a" * 65 + "@console",  # longer than a console user name can be
    ],
)
def test_anything_else_is_not_an_actor(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)
    assert not audit.is_actor(text)


def test_names_are_encoded_never_refused_for_their_characters() -> None:
    for name in ["make run", "a:b@c", "José", "😀", "tab\there", "100%"]:
        built = audit.cli(name)
        assert " " not in built and built.count(":") == 1 and built.count("@") == 1
        assert parse(built) == Actor("login", name, "cli")
    with pytest.raises(ValueError):
        audit.cli("x" * 65)
    with pytest.raises(ValueError):
        Actor("user", "", "console")
    with pytest.raises(ValueError):
        Actor("user", "maria", "phone")  # type: ignore[arg-type]


def test_hilos_own_jobs_are_the_system() -> None:
    from recordings import flow, retention

    assert retention.ACTOR == "system:retention@system"  # the server's schedule; the purge command says @cli
    assert flow.ACTOR == "system:flow@system"
