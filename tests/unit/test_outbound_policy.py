"""The outbound policy (routing/outbound.py): which numbers Hilo may dial on its own (callbacks, flows'
transfers to numbers) and how many callbacks it books per number and per hour."""

from __future__ import annotations

import shutil
from pathlib import Path

import fakeredis
import pytest

from dialplans.models import Outbound, OutboundLimit, load_routing
from hilo.yamlconf import ConfigError
from routing.outbound import OutboundGuard, OutboundPolicy
from tests.paths import DIALPLANS


def policy(region: str = "ES", **config: object) -> OutboundPolicy:
    return OutboundPolicy(Outbound.model_validate(config), region)


@pytest.mark.parametrize("number", ["+34911222333", "+34600112233", "600112233", "0034 911 22 23 33"])
def test_national_fixed_and_mobile_numbers_are_dialled_by_default(number: str) -> None:
    assert policy().refusal(number) is None


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("+34806123456", "blocked range +3480"),  # ES premium rate
        ("+34905123456", "blocked range +3490"),  # ES mass-calling premium
        ("+34902123456", "blocked range +3490"),  # ES shared cost
        ("+449098790000", "blocked range +449"),  # GB premium rate
        ("+447012345678", "blocked range +4470"),  # GB personal numbers
        ("+19005550100", "blocked range +1900"),  # US premium rate
        ("+18765551234", "country JM is not allowed (allowed: ES)"),  # looks like a US number: Jamaica
        ("+442079460000", "country GB is not allowed (allowed: ES)"),
        ("+34511234567", "number type uan is not allowed"),
        ("+3412", "not a valid number"),
        ("anonymous", "not a phone number"),
    ],
)
def test_premium_shared_cost_international_and_odd_numbers_are_refused(number: str, reason: str) -> None:
    assert policy().refusal(number) == reason


def test_the_configuration_widens_or_narrows_what_is_dialled() -> None:
    gb = policy(countries=["ES", "GB"])
    assert gb.refusal("+442079460000") is None
    assert gb.refusal("+449098790000") == "blocked range +449"  # premium stays refused
    us = policy("US", number_types=["fixed_line_or_mobile"])
    assert us.refusal("2125550142") is None
    assert us.refusal("+18005550100") == "number type toll_free is not allowed"
    madrid = policy(allow=["+34 91"])
    assert madrid.refusal("+34911222333") is None
    assert madrid.refusal("+34600112233") == "not in the allowed ranges"
    assert policy(block=["+34 600"]).refusal("+34600112233") == "blocked range +34600"


def test_routing_yaml_outbound_is_validated_with_its_line(tmp_path: Path) -> None:
    folder = tmp_path / "dialplans"
    shutil.copytree(DIALPLANS, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    assert load_routing(folder).outbound == Outbound()  # the shipped file keeps the defaults
    text = (folder / "routing.yaml").read_text()
    (folder / "routing.yaml").write_text(text + "outbound:\n  allow: ['+34 91']\n  number_types: [premium_rate]\n")
    line = len(text.splitlines()) + 3
    with pytest.raises(ConfigError, match=rf"routing.yaml:{line}: outbound.number_types.0: Input should be"):
        load_routing(folder)
    (folder / "routing.yaml").write_text(text + "outbound:\n  block: ['806']\n")
    with pytest.raises(ConfigError, match=rf"routing.yaml:{line - 1}: outbound.block.0: String should match"):
        load_routing(folder)


async def test_callbacks_are_limited_per_number_and_per_hour() -> None:
    redis = fakeredis.FakeAsyncRedis()
    now = [7200.0 * 1000]
    config = Outbound(per_number=OutboundLimit(max=2, within_s=3600), per_hour=3)
    guard = OutboundGuard(OutboundPolicy(config, "ES"), redis, "t", clock=lambda: now[0])
    assert await guard.callback_refusal("+34911222333") is None
    assert await guard.callback_refusal("911 22 23 33") is None  # the same number in another form
    assert await guard.callback_refusal("+34911222333") == "more than 2 callbacks to this number within 3600s"
    assert await guard.callback_refusal("+34600112233") is None  # the third of the hour
    assert await guard.callback_refusal("+34600112234") == "more than 3 callbacks booked this hour"
    now[0] += 3600  # the next hour
    assert await guard.callback_refusal("+34600112235") is None
    assert await guard.callback_refusal("+34806123456") == "blocked range +3480"  # the policy first
    keys = [k.decode() if isinstance(k, bytes) else k for k in await redis.keys("t:outbound:*")]
    assert keys and not any("911222333" in k for k in keys)  # numbers stay out of key names
    assert all(0 < ttl <= 7200 for ttl in [await redis.ttl(k) for k in keys])  # every counter expires
