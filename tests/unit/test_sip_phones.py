"""The phones Hilo provisions (dialplans/phones.yaml): rendered for Asterisk with each phone's own digest
credentials (hashes only), refused without a usable password; an agent's SIP endpoint is a plain endpoint name
and one of those phones, checked with file:line:field in routing.yaml; a name that is not never reaches a dial
string."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from asterisk.phones import PhoneError, digest_hash, render_phones
from asterisk.stasis import ChannelState
from dialplans.models import Agent, Phones, load_phones, load_routing
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
