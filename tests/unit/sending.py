"""What the provider sender tests share: a send the provider refuses, and how the sender reports it."""

from __future__ import annotations

import pytest

from bridges.fakes.server import Failure, FakeServer
from bridges.messages import OutboundMessage, ProviderSender, SendFailed


async def refused(
    sender: ProviderSender, message: OutboundMessage, outbox_id: int, *, fake: FakeServer, failure: Failure | None
) -> SendFailed:
    """`sender` sends `message` and fails: the provider's fake answers with `failure` (None: the request
    itself is refused, e.g. a wrong token). Returns the SendFailed raised."""
    if failure is not None:
        fake.fail_next(failure)
    with pytest.raises(SendFailed) as caught:
        await sender.send(message, outbox_id)
    return caught.value
