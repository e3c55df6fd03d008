"""The phones Hilo provisions (dialplans/phones.yaml): rendered for Asterisk with each phone's own digest
credentials (hashes only), refused without a usable password; an agent's SIP endpoint is a plain endpoint name
and one of those phones, checked with file:line:field in routing.yaml; a name that is not never reaches a dial
string."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from asterisk.phones import PhoneError, digest_hash, render_phones
from asterisk.phones_cli import run_phones_command
from asterisk.stasis import ChannelState
from dialplans.models import Agent, Phones, load_phones, load_routing
from hilo.settings import Settings
from hilo.yamlconf import ConfigError
from ivr.agent_leg import ring_agent

DIALPLANS = Path(__file__).resolve().parents[2] / "dialplans"
SECRETS = {
    "HILO_PHONE_SECRET_AGENT_ALICE": "a" * 32,
    "HILO_PHONE_SECRET_AGENT_BOB": "b" * 32,
    "HILO_PHONE_SECRET_AGENT_NOANSWER": "c" * 32,
    "HILO_PHONE_SECRET_SUPERVISOR_DEMO": "d" * 32,
    "HILO_PHONE_SECRET_AGENT_BUSY": "e" * 32,
}


def test_every_shipped_phone_gets_its_own_credentials_as_a_digest_hash_only() -> None:
    phones = load_phones(DIALPLANS)
    assert phones.endpoints() == {"agent-alice", "agent-bob", "agent-noanswer", "agent-busy", "supervisor-demo"}
    text = render_phones(phones, SECRETS, source="dialplans/phones.yaml")
    for phone in phones.phones:
        name, secret = phone.endpoint, SECRETS[phone.secret_key]
        assert f"[{name}](phone-endpoint)\nauth={name}\naors={name}\n" in text
        ha1 = hashlib.md5(f"{name}:hilo:{secret}".encode(), usedforsecurity=False).hexdigest()
        assert f"[{name}](phone-auth)\nusername={name}\npassword_digest=MD5:{ha1}\n" in text
        assert f"[{name}](phone-aor-static)\ncontact={phone.contact}\n" in text  # the demo's phones answer only
        assert secret not in text
    assert digest_hash("agent-alice", "a" * 32) in text


def test_no_phone_is_rendered_without_a_usable_password() -> None:
    phones = load_phones(DIALPLANS)
    missing = {k: v for k, v in SECRETS.items() if k != "HILO_PHONE_SECRET_AGENT_BOB"}
    with pytest.raises(PhoneError, match="agent-bob: no password in HILO_PHONE_SECRET_AGENT_BOB"):
        render_phones(phones, missing, source="phones.yaml")
    with pytest.raises(PhoneError, match="shorter than 16"):
        render_phones(phones, {**SECRETS, "HILO_PHONE_SECRET_AGENT_BOB": "short"}, source="phones.yaml")


def test_a_registering_phone_and_its_networks() -> None:
    phones = Phones.model_validate(
        {"phones": [{"endpoint": "desk-7", "caller_name": "Desk 7", "caller_number": "7", "permit": ["10.20.0.0/16"]}]}
    )
    text = render_phones(phones, {"HILO_PHONE_SECRET_DESK_7": "x" * 20}, source="phones.yaml")
    assert "[desk-7](phone-aor-registered)\n" in text and "contact=" not in text
    assert "deny=0.0.0.0/0\ndeny=::/0\npermit=10.20.0.0/16\n" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "agent-x\n[evil]"),
        ("endpoint", "carrier-sim/sip:+447700900123@127.0.0.2"),
        ("caller_name", 'Eve" <1>\ncontext=hilo-inbound'),
        ("contact", "sip:x@127.0.0.1:5071\nauth="),
        ("contact", "sip:x@127.0.0.1;transport=tls"),
    ],
)
def test_nothing_but_plain_values_reach_asterisks_configuration(field: str, value: str) -> None:
    phone = {"endpoint": "desk-7", "caller_name": "Desk 7", "caller_number": "7", field: value}
    with pytest.raises(ValidationError):
        Phones.model_validate({"phones": [phone]})


def test_two_phones_may_not_share_a_password_variable() -> None:
    same = [{"endpoint": e, "caller_name": "x", "caller_number": "1"} for e in ("desk-7", "desk_7")]
    with pytest.raises(ValidationError, match="same secret variable"):
        Phones.model_validate({"phones": same})


@pytest.mark.parametrize(
    "endpoint", ["carrier-sim/sip:+447700900123@127.0.0.2:5060", "agent-alice&Local/1@x", "a,b", "", "x" * 65]
)
def test_an_agents_endpoint_is_a_plain_endpoint_name(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="sip_endpoint"):
        Agent(id="carol", name="Carol", sip_endpoint=endpoint, queues=["sales"])


def test_routing_yaml_agents_must_have_a_provisioned_phone(tmp_path: Path) -> None:
    assert {a.sip_endpoint for a in load_routing(DIALPLANS).agents} <= load_phones(DIALPLANS).endpoints()
    folder = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (folder / "routing.yaml").read_text().replace("sip_endpoint: agent-bob", "sip_endpoint: agent-carol")
    (folder / "routing.yaml").write_text(text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "agent-carol" in t)
    with pytest.raises(ConfigError) as err:
        load_routing(folder)
    assert f"routing.yaml:{line}: agents.1.sip_endpoint: phone 'agent-carol' is not one Hilo provisions" in str(
        err.value
    )


async def test_a_stored_endpoint_that_is_not_a_phone_name_is_never_dialled() -> None:
    class NoAri:
        app = "hilo-test"

        async def originate(self, *args: object, **kwargs: object) -> None:
            raise AssertionError(f"dialled {args}")

    offer = await ring_agent(
        NoAri(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        ChannelState("caller"),
        agent_id="carol",
        endpoint="carrier-sim/sip:+447700900123@127.0.0.2:5060",
        interaction_id="x",
        caller_id="+34911222333",
        ring_timeout_s=5,
    )
    assert offer is None


def test_in_production_every_phone_talks_sip_over_tls_and_requires_srtp() -> None:
    phones = load_phones(DIALPLANS)
    plain = render_phones(phones, SECRETS, source="dialplans/phones.yaml")
    assert "transport=" not in plain and "media_encryption" not in plain  # the local stack: loopback UDP
    text = render_phones(phones, SECRETS, source="dialplans/phones.yaml", tls=True)
    for phone in phones.phones:
        name = phone.endpoint
        endpoint = text.split(f"[{name}](phone-endpoint)\n", 1)[1].split("\n\n", 1)[0]
        assert endpoint.splitlines()[-3:] == [
            "transport=transport-tls",
            "media_encryption=sdes",
            "media_encryption_optimistic=no",
        ]
    assert text.replace("transport=transport-tls\nmedia_encryption=sdes\nmedia_encryption_optimistic=no\n", "") == plain


PHONES_YAML = """phones:
  - {endpoint: desk-1, caller_name: Desk 1, caller_number: "1"}
  - {endpoint: desk-2, caller_name: Desk 2, caller_number: "2", contact: "sip:desk-2@10.0.0.2:5060"}
"""


def phones_cli(settings: Settings, command: str, **options: object) -> int:
    return run_phones_command(argparse.Namespace(phones_command=command, **options), settings)


def test_a_deployment_without_an_env_file_gets_each_phone_a_password_kept_in_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docker-compose.yml: `hilo phones new-secrets`, then `render` and `show` read the file it keeps."""
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "phones.yaml").write_text(PHONES_YAML)
    path = tmp_path / "phones" / "phones.env"
    settings = Settings(
        dialplans_dir=tmp_path / "dialplans", phone_secrets_file=path, sip_tls_port=5061, sip_host="sip.example.com"
    )
    assert phones_cli(settings, "new-secrets", renew=[]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    made = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert set(made) == {"HILO_PHONE_SECRET_DESK_1", "HILO_PHONE_SECRET_DESK_2"}
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in made.values()) and len(set(made.values())) == 2
    out = capsys.readouterr().out
    assert "new password: HILO_PHONE_SECRET_DESK_1" in out and not [v for v in made.values() if v in out]

    assert phones_cli(settings, "new-secrets", renew=[]) == 0  # kept: a restart changes nothing
    assert path.read_text().splitlines() == [f"{k}={v}" for k, v in made.items()]
    assert phones_cli(settings, "new-secrets", renew=["desk-1"]) == 0  # one renewed, the other kept
    again = dict(line.split("=", 1) for line in path.read_text().splitlines())
    assert again["HILO_PHONE_SECRET_DESK_1"] != made["HILO_PHONE_SECRET_DESK_1"]
    assert again["HILO_PHONE_SECRET_DESK_2"] == made["HILO_PHONE_SECRET_DESK_2"]
    assert phones_cli(settings, "new-secrets", renew=["desk-9"]) == 1
    assert "no phone desk-9" in capsys.readouterr().err

    output = tmp_path / "hilo-phones.conf"
    assert phones_cli(settings, "render", output=output) == 0
    conf = output.read_text()
    assert f"password_digest=MD5:{digest_hash('desk-1', again['HILO_PHONE_SECRET_DESK_1'])}" in conf
    assert conf.count("transport=transport-tls\nmedia_encryption=sdes\n") == 2  # HILO_SIP_TLS_PORT is set
    assert not [v for v in again.values() if v in conf]

    assert phones_cli(settings, "show", endpoint="desk-1") == 0
    shown = capsys.readouterr().out
    assert f"password  {again['HILO_PHONE_SECRET_DESK_1']}\n" in shown
    assert "server    sip.example.com:5061 (TLS only)\n" in shown and "SRTP" in shown

    nowhere = Settings(dialplans_dir=tmp_path / "dialplans", phone_secrets_file=None)
    assert phones_cli(nowhere, "new-secrets", renew=[]) == 1
    assert "HILO_PHONE_SECRETS_FILE is not set" in capsys.readouterr().err
