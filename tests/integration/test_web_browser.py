"""The web view in a real browser: Debian's headless Chromium driven by selenium.

The page loads and lists the devices; an incident (a reading above the
threshold, run through the real processor) makes an alert appear in the page,
a device's last will greys it out, and markup inside a status reason is shown
as text, never parsed. The processor's incident of the hot device is listed
with its rules and its alert under it, and a device that announced its
shutdown is shown shut down, not offline, its alert among the informational
ones. A screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from telemetry_contract import (
    DeviceState,
    DeviceStatus,
    Reading,
)
from thermowatch.web.testing import live_pipeline

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEVICES = [(f"wb-{site}{n}", f"wb{site}") for site in (1, 2) for n in (1, 2, 3)]


async def until(driver: Any, check: Callable[[Any], Any], what: str, within: float = 60.0) -> Any:
    """Poll ``check(driver)`` (in a thread: the pipeline keeps running) until truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check, driver)
        if got:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"browser: {what} not seen within {within} s")


def cards(driver: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        e.get_attribute("data-device-id"): e.get_attribute("class")
        for e in driver.find_elements(By.CSS_SELECTOR, "#devices .device")
    }


def alert_rows(driver: Any) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    return [
        (e.get_attribute("data-device-id"), e.text)
        for e in driver.find_elements(By.CSS_SELECTOR, "#alerts li.alert")
    ]


def incident_rows(driver: Any) -> dict[str, dict[str, Any]]:
    """The listed incidents, read in one script (the page re-renders the list as it changes)."""
    rows: list[dict[str, Any]] = driver.execute_script(
        """return [...document.querySelectorAll("#incidents li.incident")].map((e) => ({
             id: e.dataset.incidentId,
             rules: [...e.querySelectorAll(".rule")].map((r) => r.textContent),
             alerts: [...e.querySelectorAll(".member-alerts li.alert")].map(
               (m) => m.dataset.alertId),
             devices: e.dataset.devices,
             severity: [...e.classList].find((c) => c.startsWith("sev-")).slice(4),
             first: e === e.parentElement.firstElementChild,
             text: e.textContent}));"""
    )
    return {r["id"]: r for r in rows}


async def test_page_lists_devices_and_shows_an_injected_alert(
    stack: dict[str, Any], browser: Any
) -> None:
    async with live_pipeline(stack["kafka"], stack["search"], critical_high_c=9.0) as p:
        now = int(time.time() * 1000)
        history: list[Any] = []
        for i, (dev, site) in enumerate(DEVICES):
            history.append(
                DeviceStatus(device_id=dev, site=site, ts=now - 60_000, state=DeviceState.ONLINE)
            )
            history += [
                Reading(
                    device_id=dev,
                    sensor_id="host",
                    site=site,
                    seq=k + 1,
                    ts=now - 40_000 + k * 1000,
                    temp_c=round(3.0 + i * 0.4 + 0.3 * ((k * (i + 3)) % 7) / 7, 2),
                )
                for k in range(36)
            ]
        await p.send(history)

        await asyncio.to_thread(browser.get, f"{p.url}/")

        def all_online(d: Any) -> dict[str, str] | None:
            c = cards(d)
            ok = len(c) == len(DEVICES) and all("online" in v.split() for v in c.values())
            return c if ok else None

        listed = await until(browser, all_online, "every device, online")
        assert set(listed) == {dev for dev, _ in DEVICES}
        assert alert_rows(browser) == []

        # the incident: wb-22 warms past 8 °C; wb-13 drops off the broker
        hot, gone = "wb-22", "wb-13"
        await p.send(
            [
                Reading(
                    device_id=hot,
                    sensor_id="host",
                    site="wb2",
                    seq=37 + k,
                    ts=now - 3000 + k * 1000,
                    temp_c=t,
                )
                for k, t in enumerate([7.1, 8.6, 9.4])
            ]
            + [
                DeviceStatus(
                    device_id=gone,
                    site="wb1",
                    ts=now,
                    state=DeviceState.OFFLINE,
                    reason="<b>lost</b> <img src=x onerror=alert(1)>",
                ),
            ]
        )
        rows = await until(
            browser, lambda d: [r for r in alert_rows(d) if r[0] == hot], "the threshold alert"
        )
        assert "threshold high" in rows[0][1]
        # 9.4 °C is past the critical limit too: the row turns critical
        await until(
            browser,
            lambda d: any(r[0] == hot and "CRITICAL" in r[1].upper() for r in alert_rows(d)),
            "the critical severity",
        )
        await until(browser, lambda d: "alerting" in cards(d)[hot].split(), "the alerting card")
        await until(browser, lambda d: "offline" in cards(d)[gone].split(), "the offline card")

        # the processor's incident of wb-22, listed first with its rules and its alert
        # under it; wb-21 announces its shutdown
        alert_id = browser.execute_script(
            "return document.querySelector(`#alerts li.alert[data-device-id='${arguments[0]}']`)"
            ".dataset.alertId",
            hot,
        )
        shut = "wb-21"
        await p.send(
            [
                DeviceStatus(
                    device_id=shut, site="wb2", ts=now, state=DeviceState.OFFLINE, reason="shutdown"
                )
            ]
        )

        def hot_incident(d: Any) -> dict[str, Any] | None:
            rows = [r for r in incident_rows(d).values() if r["devices"] == hot]
            return rows[0] if rows and rows[0]["severity"] == "critical" else None

        shown = await until(browser, hot_incident, "the critical incident of the hot device")
        assert "threshold high" in shown["rules"]
        assert alert_id in shown["alerts"]  # its alert, listed under it
        assert shown["first"]  # the most severe
        await until(
            browser,
            lambda d: {"shutdown", "announced"} <= set(cards(d)[shut].split()),
            "the shut-down card",
        )
        assert "offline" not in cards(browser)[shut].split()
        await until(  # its offline alert is informational, listed apart from the others
            browser,
            lambda d: d.execute_script(
                "return document.querySelector("
                "`#info-alerts li[data-device-id='${arguments[0]}']`)",
                shut,
            ),
            "the shutdown among the informational alerts",
        )
        assert shut not in {dev for dev, _ in alert_rows(browser)}

        # markup in data stays text
        from selenium.webdriver.common.by import By

        offline_card = browser.find_element(By.CSS_SELECTOR, f'[data-device-id="{gone}"]')
        assert browser.find_elements(By.CSS_SELECTOR, "#devices b, main img, #incidents b") == []
        assert "<b>lost</b>" in (offline_card.get_attribute("title") or "") or any(
            "<b>lost</b>" in text for _, text in alert_rows(browser)
        )
        assert browser.execute_script("return document.body.dataset.ready") == "1"

        await asyncio.sleep(1.0)  # let the sparkline and "ago" texts settle for the picture
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "web-browser.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
