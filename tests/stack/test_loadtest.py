"""`hilo loadtest`'s whole pipeline on the real stack, at a small scale: SIPp callers on the test trunk
(127.0.0.3, whose calls go to the Stasis app `hilo-test` of the server these tests run in-process) dial the
demo line at 2 calls/s for 5 s, key 2 by SIP INFO, hold and hang up; the agent talks 1 s. The run must give a
report with plausible non-zero figures (every call answered, timed on SIP and on the RTP, queued by Hilo, CPU
seen in Asterisk), find the centre at rest afterwards with the next call reaching an agent, leave no channel
on the trunk, and write a page whose plots render in Chromium.

The run drives the stack from inside the test (server.loadtest.runner, what `hilo loadtest` runs), against the
test server's settings and HTTP port: a `hilo loadtest` process would need a `hilo serve` of its own."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, expect

from server.loadtest.cli import target_from_settings
from server.loadtest.profile import Profile, VoiceLoad
from server.loadtest.runner import LoadRun
from tests.stack.conftest import Stack
from tests.stack.test_console_browser import SCREENSHOTS, browser  # noqa: F401 (fixture)

TEST_TRUNK = "127.0.0.3"  # carrier-test: its calls go to the Stasis app hilo-test


async def test_a_short_peak_gives_a_plausible_report_and_leaves_nothing_behind(
    stack: Stack,
    tmp_path: Path,
    browser: Browser,  # noqa: F811 (fixture)
) -> None:
    port = urlsplit(str(stack.client.make_url("/"))).port
    settings = stack.settings.model_copy(update={"http_port": port})
    voice = VoiceLoad(
        number="100",
        rate=2,
        duration_s=5,
        key="2",
        key_mode="info",
        key_after_s=2.0,
        # the key is read once: the queue node's "Please hold while we connect you" (about 3 s) is heard before
        # the caller is queued, so a caller holding 3 s left as the agent's phone rang and nobody was answered
        hold_s=6.0,
        sip_target=f"{settings.sip_host}:{settings.sip_port}",
        trunk_ip=TEST_TRUNK,
        callers=20,
    )
    # bob hangs up 1 s after answering (ended over ARI), so he takes several of the run's callers
    profile = Profile(voice=voice, agent_talk_s=1.0, settle_s=5.0, probe=True, drain_s=20.0)
    profile.check()
    target = target_from_settings(settings, voice)
    assert target.trunk == "carrier-test" and target.namespace == "hilo-test"

    report = await LoadRun(profile, target, tmp_path, label="stack test", progress=False).execute()

    calls = report["voice"]
    assert calls["counts"] == {"offered": 10, "answered": 10, "succeeded": 10, "failed": 0, "in_call": 0}
    assert calls["rate_achieved"] is not None and 1.8 <= calls["rate_achieved"] <= 2.2
    to_answer, to_audio = calls["latency_ms"]["INVITE → 200 OK"], calls["latency_ms"]["answer → first prompt audio"]
    assert to_answer["n"] == 10 and 0 < to_answer["p50"] < 1000
    assert to_audio["n"] == 10 and 0 < to_audio["p50"] < 3000  # the greeting, heard on the RTP
    assert calls["media"]["packets_received"] > 100 and calls["media"]["packets_sent"] > 100
    assert calls["hilo"]["queued"] == 10 and calls["hilo"]["answered_not_queued"] == 0
    assert calls["hilo"]["answered_by_agent"] >= 2 and calls["agent_talk"]["ended"] >= 2
    assert sum(calls["per_second"]["offered"]) == 10
    assert report["processes"]["asterisk"]["cpu_s"] > 0 and report["processes"]["hilo"]["cpu_s"] > 0
    after = report["after_run"]
    assert after["ok"], after["summary"]
    assert after["probe"]["reached_agent"] and after["probe"]["agent"] == "bob"
    assert after["after_probe_ghost_channels"] == 0
    assert stack.observer is not None
    trunk = await stack.observer.request("GET", "/endpoints/PJSIP/carrier-test")
    assert trunk["channel_ids"] == []

    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.goto((tmp_path / "report.html").as_uri())
        offered = page.locator('svg#calls-per-second g.series[data-name="offered"]')
        await expect(offered).to_have_attribute("data-points", str(len(calls["per_second"]["offered"])))
        line = offered.locator("polyline").first
        box = await line.bounding_box()
        assert box is not None and box["width"] > 100  # drawn across the plot
        for plot in ("latency", "queue-waits", "service-level", "cpu", "memory"):
            await expect(page.locator(f"svg#{plot}")).to_be_visible()
        assert await page.locator("svg#latency circle").count() >= 20  # two dots a call
        await expect(page.locator("#verdict")).to_contain_text("the next call reached agent bob")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "loadtest-report.png"), full_page=True)
        assert not errors
    finally:
        await page.close()
