"""``thermowatch demo`` prints a web-view URL that shows its run live, in a real browser.

One real demo run (a short one) as a subprocess against the shared local
stack, as a user starts it: the URL is taken from what it prints, opened in
Debian's headless Chromium (selenium) while the fleet runs. The page must
list the run's 30 devices online, show an alert row for every scripted
incident the run's own accounting says was alerted (and at least one), the
killed agent offline, and nothing of a device outside the run, even when
such a device's messages reach the run's Kafka topics (MQTT topics are
shared between runs and hand-run devices). Not in a terminal, the demo exits
after its summary (and stops its web view).
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from stagekit.kafka import KafkaTarget, settings_for
from thermowatch.demo.plan import plan
from thermowatch.demo.run import demo_sites

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: Long enough for every scripted incident to alert (their times scale with it).
DURATION_S = 60.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
URL_LINE = re.compile(
    r"Web view of this run \(live devices and alerts\): (http://127\.0\.0\.1:\d+/)$"
)
RUN_DIR_LINE = re.compile(r"run dir (\S+)$")
STRAY = "stray-bench-01"


class Demo:
    """``thermowatch demo`` as a subprocess; its output lines as they come."""

    def __init__(self, summary: Path) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thermowatch",
                "demo",
                "--duration",
                str(DURATION_S),
                "--no-live",
                "--timeout",
                "300",
                "--summary",
                str(summary),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], within: float) -> re.Match[str]:
        """The first output line (from here on) matching ``pattern``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if m := pattern.search(line):
                return m
        raise AssertionError(f"demo: {pattern.pattern!r} not printed:\n" + self.output())

    def drain(self, within: float) -> int:
        """Read to the end; the exit code."""
        code = self.proc.wait(within)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self._reader.join(30)  # at the end of the output once the demo has exited
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def output(self) -> str:
        return "\n".join(self.lines[-60:])


def cards(driver: Any) -> dict[str, str]:
    """Device id -> class list of each card (read in one script: no stale elements)."""
    got = driver.execute_script(
        "return Array.from(document.querySelectorAll('#devices .device'))"
        ".map(e => [e.dataset.deviceId, e.className]);"
    )
    return {str(k): str(v) for k, v in got}


def alert_devices(driver: Any) -> set[str]:
    """Device ids of the alert rows."""
    got = driver.execute_script(
        "return Array.from(document.querySelectorAll('#alerts li.alert'))"
        ".map(e => e.dataset.deviceId);"
    )
    return {str(d) for d in got}


def until(driver: Any, check: Callable[[Any], Any], what: str, within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if got := check(driver):
            return got
        time.sleep(0.25)
    raise AssertionError(f"browser: {what} not seen within {within} s")


def _send_stray(kafka: KafkaTarget, kafka_prefix: str) -> None:
    """A device outside the run, as its messages reach the run's topics through its gateway."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from telemetry_contract import DeviceState, DeviceStatus, Reading, encode, kafka_topics

    topics = kafka_topics(kafka_prefix)
    now = int(time.time() * 1000)

    async def send() -> None:
        producer = AIOKafkaProducer(**settings_for(kafka).client_options(), acks="all")
        await producer.start()
        try:
            status = DeviceStatus(device_id=STRAY, site="lab", ts=now, state=DeviceState.ONLINE)
            await producer.send_and_wait(topics.status, encode(status), key=STRAY.encode())
            for seq in range(1, 4):
                reading = Reading(
                    device_id=STRAY,
                    sensor_id="host",
                    site="lab",
                    seq=seq,
                    ts=now + seq,
                    temp_c=99.0,
                )
                await producer.send_and_wait(topics.telemetry, encode(reading), key=STRAY.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def test_demo_prints_a_url_whose_page_shows_the_run_live(
    stack: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    summary_file = tmp_path / "summary.json"
    demo = Demo(summary_file)
    try:
        url = demo.wait_for(URL_LINE, within=360)[1]
        run_dir = Path(demo.wait_for(RUN_DIR_LINE, within=60)[1])
        browser.get(url)
        fleet = demo_sites()
        devices = {d for devs in fleet.values() for d in devs}

        def fleet_online(d: Any) -> dict[str, str] | None:
            c = cards(d)
            online = {k for k, v in c.items() if "online" in v.split()}
            return c if online >= devices else None

        listed = until(browser, fleet_online, "the 30 devices online", within=90)
        # the stack's addresses and the run's names: both sources up
        assert browser.execute_script("return document.body.dataset.ready") == "1"
        with urlopen(url + "healthz", timeout=10) as resp:
            health = json.loads(resp.read())
        assert health["search"] is True and health["kafka"] is True, health
        web_toml = (run_dir / "web.toml").read_text()
        assert stack["kafka"]["bootstrap"] in web_toml
        assert stack["search"]["url"] in web_toml
        _send_stray(stack["kafka"], f"demo.{run_dir.name}")

        script = plan(fleet, DURATION_S)
        seen_alerts: set[str] = set()
        seen_offline: set[str] = set()
        shot = False
        while demo.proc.poll() is None:
            try:
                seen_alerts |= alert_devices(browser)
                c = cards(browser)
            except Exception:
                if demo.proc.poll() is not None:
                    break  # the demo stopped its web view after the summary
                raise
            offline = {k for k, v in c.items() if "offline" in v.split()}
            if len(offline) <= 3:  # not the fleet's own stop at the end, when all go offline
                seen_offline |= offline
            assert STRAY not in c, "a device outside the run is on the run's page"
            assert set(c) <= devices, set(c) - devices
            if not shot and seen_alerts >= {i.device_id for i in script.incidents}:
                shot = True
                ARTIFACTS.mkdir(exist_ok=True)
                browser.save_screenshot(str(ARTIFACTS / "demo-web-browser.png"))
            time.sleep(0.5)
        code = demo.drain(within=300)
    finally:
        demo.close()
    detail = f"\n{demo.output()}"
    assert code == 0, detail
    assert set(listed) >= devices
    summary = json.loads(summary_file.read_text())
    alerted = {i["device_id"] for i in summary["incidents"] if i["alerted"]}
    assert alerted, "the run alerted no incident" + detail
    assert alerted <= seen_alerts, f"alerted {alerted}, page showed {seen_alerts}" + detail
    assert script.offline_device in seen_offline | seen_alerts, detail
    assert STRAY not in seen_alerts
    # one page URL, printed once, before the fleet started (the probes table
    # lists the search server's address too, with no page behind it)
    printed = [line for line in demo.lines if re.search(r"http://\S+/(\s|$)", line)]
    assert len(printed) == 1, printed
    fleet_line = next(i for i, line in enumerate(demo.lines) if "fleet of 30 agents" in line)
    assert demo.lines.index(printed[0]) < fleet_line
    # not a terminal: no "still at" hold, and the view was stopped with the demo
    assert not any("still at" in line for line in demo.lines)
    log = (run_dir / "logs" / "web.log").read_text()
    assert "Traceback" not in log, log
    print(demo.output())
