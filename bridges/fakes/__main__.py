"""The provider fakes for a demo against a running Hilo (`make run`), with the credentials of .run/env.

    python -m bridges.fakes serve     # Twilio on 127.0.0.1:8091, the Cloud API on 127.0.0.1:8092, until Ctrl-C
    python -m bridges.fakes send sms +34600111222 "Hola"            # a signed inbound SMS (Twilio)
    python -m bridges.fakes send whatsapp 34600111222 "Hola"        # a signed inbound WhatsApp (Cloud API)
    python -m bridges.fakes send whatsapp-twilio +34600111222 "Hola"

For Hilo's replies to reach the fakes, set in .run/env (then restart Hilo):
    HILO_TWILIO_API_BASE=http://127.0.0.1:8091
    HILO_WHATSAPP_API_BASE=http://127.0.0.1:8092
The fakes print what they receive (numbers masked) and report `sent` then `delivered` for each message."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bridges.channels import load_channels
from bridges.fakes.twilio import FakeTwilio
from bridges.fakes.whatsapp import FakeWhatsApp
from hilo.logs import mask_pii
from hilo.settings import Settings, load_settings


def hilo_base(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/") or f"http://{settings.http_host}:{settings.http_port}"


def fakes(settings: Settings) -> tuple[FakeTwilio, FakeWhatsApp]:
    twilio = FakeTwilio(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    meta = FakeWhatsApp(
        settings.whatsapp_access_token.get_secret_value(),
        settings.whatsapp_app_secret.get_secret_value(),
        settings.whatsapp_api_version,
    )
    meta.webhook_url = hilo_base(settings) + "/webhooks/whatsapp"
    return twilio, meta


async def serve(settings: Settings, twilio_port: int, whatsapp_port: int) -> int:
    twilio, meta = fakes(settings)
    for fake in (twilio, meta):
        fake.auto_statuses = ["sent", "delivered"]
    twilio_url, meta_url = await twilio.start(twilio_port), await meta.start(whatsapp_port)
    print(f"Twilio fake on {twilio_url}, WhatsApp Cloud API fake on {meta_url}")
    seen = 0
    try:
        while True:
            await asyncio.sleep(0.5)
            everything = twilio.received + meta.received
            for record in everything[seen:]:
                print(mask_pii(f"received: {record}"), flush=True)
            seen = len(everything)
    finally:
        await twilio.close()
        await meta.close()


async def send(settings: Settings, kind: str, sender: str, text: str) -> int:
    twilio, meta = fakes(settings)
    channels = load_channels(settings.dialplans_dir, settings.twilio_account_sid)
    base = hilo_base(settings)
    if kind == "whatsapp":
        channel = next((c for c in channels.all if c.provider == "whatsapp_cloud"), None)
        if channel is None or channel.phone_number_id is None:
            print("error: channels.yaml has no whatsapp_cloud channel", file=sys.stderr)
            return 2
        status, body = await meta.post_signed(
            base + "/webhooks/whatsapp",
            meta.envelope(channel.phone_number_id, messages=[meta.text_message(sender, text)]),
        )
    else:
        want_whatsapp = kind == "whatsapp-twilio"
        channel = next(
            (
                c
                for c in channels.all
                if c.provider == "twilio" and c.address and c.address.startswith("whatsapp:") == want_whatsapp
            ),
            None,
        )
        if channel is None or channel.address is None:
            print(
                f"error: channels.yaml has no twilio {'whatsapp' if want_whatsapp else 'sms'} channel", file=sys.stderr
            )
            return 2
        params = twilio.inbound_params(("whatsapp:" if want_whatsapp else "") + sender, channel.address, text)
        status, body = await twilio.post_signed(base + "/webhooks/twilio/messages", params)
    print(f"Hilo answered {status}: {body}")
    return 0 if status == 200 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridges.fakes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run both fakes until Ctrl-C")
    run.add_argument("--twilio-port", type=int, default=8091)
    run.add_argument("--whatsapp-port", type=int, default=8092)
    message = sub.add_parser("send", help="send Hilo a signed inbound message")
    message.add_argument("kind", choices=("sms", "whatsapp", "whatsapp-twilio"))
    message.add_argument("sender", help="the customer's number (+34600111222; a wa_id 34600111222 for whatsapp)")
    message.add_argument("text")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(settings, args.twilio_port, args.whatsapp_port))
        return 0
    return asyncio.run(send(settings, args.kind, args.sender, args.text))


if __name__ == "__main__":
    sys.exit(main())
