"""The web chat's visitor side without a server: tokens, what a visitor's message must look like, and that a
message is acknowledged with what the inbox stored (a resend with the same client id is a duplicate)."""

from __future__ import annotations

from typing import Any

from bridges.channels import ChannelConfig, Channels
from bridges.conversations import _transfer_text, flow_by_channel
from bridges.messages import InboundMessage
from bridges.webchat import WebChat, new_token, visitor_id


class MemoryInbox:
    """An in-memory stand-in for bridges.inbox.Inbox.accept: ids by (provider, provider message id)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}

    async def accept(self, **message: Any) -> tuple[int, bool]:
        key = (message["provider"], message["provider_message_id"])
        if key in self.stored:
            return self.stored[key][0], False
        self.stored[key] = (len(self.stored) + 1, message)
        return self.stored[key][0], True


def chat() -> tuple[WebChat, MemoryInbox]:
    inbox = MemoryInbox()
    return WebChat(inbox, redis=None, namespace="t"), inbox  # type: ignore[arg-type]


def test_a_visitor_is_known_by_a_hash_of_their_token() -> None:
    token = new_token()
    assert len(token) == 43 and new_token() != token
    visitor = visitor_id(token)
    assert visitor.startswith("v1-") and token not in visitor
    assert visitor_id(token) == visitor


async def test_a_message_is_acknowledged_with_its_stored_id_and_a_resend_is_a_duplicate() -> None:
    web, inbox = chat()
    first = await web.accept("v1-abc", "web", {"type": "message", "id": "m1", "text": " hello "})
    assert first == {"type": "ack", "id": "m1", "message_id": 1, "duplicate": False}
    again = await web.accept("v1-abc", "web", {"type": "message", "id": "m1", "text": "hello"})
    assert again == {"type": "ack", "id": "m1", "message_id": 1, "duplicate": True}
    ((_, stored),) = inbox.stored.values()
    assert stored["text"] == "hello" and stored["sender"] == "v1-abc" and stored["recipient"] == "web"
    assert stored["channel"] == "webchat" and stored["provider_message_id"] == "v1-abc:m1"
    # another visitor's m1 is another message
    other = await web.accept("v1-def", "web", {"type": "message", "id": "m1", "choice_id": "2"})
    assert other["message_id"] == 2 and other["duplicate"] is False


async def test_bad_visitor_messages_are_refused_naming_the_field() -> None:
    web, inbox = chat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "bad id!", "text": "x"}, "id"),
        ({"id": "m1", "text": 5}, "text"),
        ({"id": "m1", "text": "   "}, "text"),
        ({"id": "m1", "text": "x" * 4097}, "text"),
        ({"id": "m1", "choice_id": ["1"]}, "choice_id"),
    ]
    for frame, field in cases:
        answer = await web.accept("v1-abc", "web", {"type": "message", **frame})
        assert answer["type"] == "error" and answer["field"] == field, (frame, answer)
    assert inbox.stored == {}


def test_the_channel_names_the_flow_and_a_transfer_becomes_a_call_request() -> None:
    channels = Channels(
        [ChannelConfig(name="wa", provider="whatsapp_cloud", phone_number_id="12345", flow="support")], "AC" + "0" * 32
    )
    pick = flow_by_channel(channels)

    def message(channel_name: str | None) -> InboundMessage:
        return InboundMessage(
            1, "whatsapp", "whatsapp_cloud", "wamid.1", "34600111222", "12345", "hi", channel_name=channel_name
        )

    assert pick(message("wa")) == "support"
    assert pick(message(None)) is None
    assert pick(message("gone")) is None
    assert _transfer_text("+34910000999") == "This request cannot continue in a chat. Please call +34910000999."
    assert _transfer_text("sales_desk") == "This request cannot continue in a chat. Please call us."


def test_the_rate_limited_address_is_the_peer_unless_a_trusted_proxy_forwarded_it() -> None:
    import ipaddress

    from aiohttp.test_utils import make_mocked_request

    from bridges.webchat_limits import client_address

    proxies = [ipaddress.ip_network("10.0.0.0/8")]

    def request(peer: str, forwarded: str | None) -> Any:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        req = make_mocked_request("GET", "/chat/ws", headers=headers)
        return req.clone(remote=peer)

    assert client_address(request("203.0.113.9", "198.51.100.1"), proxies) == "203.0.113.9"  # not a proxy: ignored
    assert client_address(request("10.0.0.2", "198.51.100.1"), proxies) == "198.51.100.1"
    # the client may write its own X-Forwarded-For: only what the proxies appended counts
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.3"), proxies) == "198.51.100.1"
    assert client_address(request("10.0.0.2", None), proxies) == "10.0.0.2"
    assert client_address(request("10.0.0.2", "198.51.100.1"), []) == "10.0.0.2"


def web_channel(site: str, flow: str) -> ChannelConfig:
    return ChannelConfig(name=f"webchat-{site}", provider="webchat", site=site, flow=flow)


async def test_a_visitor_opens_only_the_sites_channels_yaml_lists() -> None:
    """Visitors are anonymous: `?site=` chooses among the listed sites, never any flow by its name (before,
    a site named like any flow ran that flow)."""
    from aiohttp.test_utils import make_mocked_request

    from bridges.webchat import visitor_ws

    inbox = MemoryInbox()
    channels = Channels([web_channel("web", "demo"), web_channel("help", "support")])
    web = WebChat(inbox, redis=None, namespace="t", channels=channels)  # type: ignore[arg-type]
    for site in ("support", "feedback", "demo", "nowhere"):  # flows, and a name that is nothing
        refused = await visitor_ws(make_mocked_request("GET", f"/chat/ws?site={site}"), web)
        assert refused.status == 404, site
    assert web.site_open("web") and web.site_open("help")
    # A listed site's messages carry its channel, whose flow the conversation runs.
    await web.accept("v1-abc", "help", {"type": "message", "id": "m1", "text": "hi"})
    ((_, stored),) = inbox.stored.values()
    assert stored["recipient"] == "help" and stored["channel_name"] == "webchat-help"
    pick = flow_by_channel(channels)
    message = InboundMessage(1, "webchat", "webchat", "v1-abc:m1", "v1-abc", "help", "hi", channel_name="webchat-help")
    assert pick(message) == "support"
    # With no web chat channel listed, only the default site opens (it runs the default flow).
    bare = WebChat(inbox, redis=None, namespace="t", channels=Channels([]))  # type: ignore[arg-type]
    assert bare.site_open("web") and not bare.site_open("support")


def test_a_webchat_channel_names_a_site_and_nothing_else() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs `site`"):
        ChannelConfig(name="w", provider="webchat", flow="demo")
    with pytest.raises(ValidationError, match="not a number"):
        ChannelConfig(name="w", provider="webchat", site="web", flow="demo", phone_number_id="12345")
    with pytest.raises(ValidationError, match="site is for webchat"):
        ChannelConfig(name="w", provider="whatsapp_cloud", phone_number_id="12345", site="web", flow="demo")
