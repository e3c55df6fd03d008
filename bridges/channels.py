"""dialplans/channels.yaml: which provider address is which messaging channel, and the flow it runs.

A Twilio webhook names its channel by `MessagingServiceSid` when the channel has one, else by `AccountSid`
and `To`; a WhatsApp Cloud webhook by `metadata.phone_number_id`. Outbound messages go out with the same
entry (the Twilio account, the sender number or messaging service, the Cloud phone number id).

A web chat site (`/chat/?site=<site>`) is a channel of provider `webchat`: the sites listed are the only
ones a visitor may open, each running its `flow:` (anonymous visitors choose the site, so they must not
choose any flow). With no `webchat` channel listed, only the default site `web` is open, running the
default flow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bridges.messages import Channel, Provider
from hilo.yamlconf import load_model

log = logging.getLogger(__name__)

FILE_NAME = "channels.yaml"
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    provider: Literal["twilio", "whatsapp_cloud", "webchat"]
    flow: Name  # the flow (dialplans/flows/*.yaml `flow:` id) a conversation on this channel runs
    # Twilio: the number messages arrive at, as Twilio writes `To` ("+34910000100", or
    # "whatsapp:+34910000100" for WhatsApp through Twilio), and/or the Messaging Service that owns it.
    address: Annotated[str, StringConstraints(pattern=r"^(whatsapp:)?\+[1-9][0-9]{6,14}$")] | None = None
    messaging_service_sid: Annotated[str, StringConstraints(pattern=r"^MG[0-9a-f]{32}$")] | None = None
    account_sid: Annotated[str, StringConstraints(pattern=r"^AC[0-9a-f]{32}$")] | None = (
        None  # default: HILO_TWILIO_ACCOUNT_SID
    )
    # WhatsApp Cloud API: the business phone number's id, and the language of the templates sent from it.
    phone_number_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{5,32}$")] | None = None
    template_language: str = Field(default="en_US", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    # Web chat: the site the widget names (`/chat/?site=<site>`).
    site: Name | None = None

    @model_validator(mode="after")
    def _provider_fields(self) -> ChannelConfig:
        if self.provider == "webchat":
            if self.site is None:
                raise ValueError("a webchat channel needs `site` (the widget's ?site=)")
            if self.address or self.messaging_service_sid or self.account_sid or self.phone_number_id:
                raise ValueError("a webchat channel has a `site`, not a number, service or phone number id")
            return self
        if self.site is not None:
            raise ValueError("site is for webchat channels")
        if self.provider == "twilio":
            if self.address is None and self.messaging_service_sid is None:
                raise ValueError("a twilio channel needs `address` (the To number) or `messaging_service_sid`")
            if self.phone_number_id is not None:
                raise ValueError("phone_number_id is for whatsapp_cloud channels, not twilio")
        else:
            if self.phone_number_id is None:
                raise ValueError("a whatsapp_cloud channel needs `phone_number_id`")
            if self.address or self.messaging_service_sid or self.account_sid:
                raise ValueError("address, messaging_service_sid and account_sid are for twilio channels")
        return self

    @property
    def kind(self) -> Channel | None:
        """sms or whatsapp when the configuration says; None for a Messaging Service without an address
        (then each message's `whatsapp:` prefix says)."""
        if self.provider == "whatsapp_cloud":
            return "whatsapp"
        if self.provider == "webchat":
            return "webchat"
        if self.address is None:
            return None
        return "whatsapp" if self.address.startswith("whatsapp:") else "sms"


class ChannelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[ChannelConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ChannelsFile:
        seen: dict[tuple[str, str], str] = {}
        for channel in self.channels:
            keys = [("name", channel.name)]
            if channel.messaging_service_sid:
                keys.append(("messaging_service_sid", channel.messaging_service_sid))
            if channel.address:
                keys.append(("address", f"{channel.account_sid or ''}|{channel.address}"))
            if channel.phone_number_id:
                keys.append(("phone_number_id", channel.phone_number_id))
            if channel.site:
                keys.append(("site", channel.site))
            for key in keys:
                if key in seen:
                    raise ValueError(f"channels {seen[key]!r} and {channel.name!r} have the same {key[0]}")
                seen[key] = channel.name
        return self


class Channels:
    """The configured channels, looked up the ways the webhooks and the outbox need."""

    def __init__(self, channels: list[ChannelConfig], default_account_sid: str = "") -> None:
        self.all = list(channels)
        self.default_account_sid = default_account_sid

    def account_of(self, channel: ChannelConfig) -> str:
        return channel.account_sid or self.default_account_sid

    def by_name(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.all if c.name == name), None)

    def for_twilio(self, messaging_service_sid: str | None, account_sid: str, to: str) -> ChannelConfig | None:
        """The channel of a Twilio webhook: by its Messaging Service, else by account and `To`."""
        twilio = [c for c in self.all if c.provider == "twilio"]
        if messaging_service_sid:
            for c in twilio:
                if c.messaging_service_sid == messaging_service_sid:
                    return c
        return next((c for c in twilio if account_sid and c.address == to and self.account_of(c) == account_sid), None)

    def for_site(self, site: str) -> ChannelConfig | None:
        """The web chat channel of a site; None when the site is not listed."""
        return next((c for c in self.all if c.provider == "webchat" and c.site == site), None)

    def site_open(self, site: str, default_site: str) -> bool:
        """May a visitor open this web chat site: a listed one, or (when none is listed) the default."""
        if any(c.provider == "webchat" for c in self.all):
            return self.for_site(site) is not None
        return site == default_site

    def for_whatsapp(self, phone_number_id: str) -> ChannelConfig | None:
        return next((c for c in self.all if c.phone_number_id == phone_number_id), None)

    def for_sender(self, provider: Provider, sender: str) -> ChannelConfig | None:
        """The channel an outbound message leaves by: `sender` is what an inbound message had as recipient
        (a Twilio `To`, a Cloud phone_number_id) or a Messaging Service sid."""
        for c in self.all:
            if c.provider != provider:
                continue
            if sender in (c.address, c.messaging_service_sid, c.phone_number_id):
                return c
        return None


def load_channels(folder: Path, default_account_sid: str = "") -> Channels:
    """channels.yaml in `folder` (no file: no channels). ConfigError names file:line: field."""
    path = folder / FILE_NAME
    if not path.exists():
        return Channels([], default_account_sid)
    config = load_model(path, ChannelsFile)
    if default_account_sid == "":
        unnamed = [c.name for c in config.channels if c.provider == "twilio" and c.account_sid is None]
        if unnamed:  # Twilio is simply off on this node (its webhooks are refused until configured)
            log.warning(
                "%s: channels %s name no account_sid and HILO_TWILIO_ACCOUNT_SID is not set: they match nothing",
                path,
                ", ".join(unnamed),
            )
    return Channels(config.channels, default_account_sid)
