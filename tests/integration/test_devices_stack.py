"""``thermowatch devices`` against the shared local stack, through the command line.

A device added with ``devices add`` runs from its bundle exactly as the bundle's
README says (``thermowatch edge run -c BUNDLE/edge.toml``), its readings reach
the broker, and after ``devices remove`` its next login is refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deploy.local.stack import LocalStack
from telemetry_contract import Reading, decode

pytestmark = pytest.mark.integration


def thermowatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thermowatch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Subscriber:
    """``admin`` subscribed to one topic filter; the decoded messages."""

    def __init__(self, host: str, port: int, password: str, topic: str) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"admin:devices-it-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self._client.username_pw_set("admin", password)
        self._client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert subscribed.wait(20), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(decode(msg.payload))

    def readings(self) -> list[Reading]:
        with self._lock:
            return [m for m in self.messages if isinstance(m, Reading)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def test_added_device_runs_from_its_bundle_and_is_refused_after_remove(
    local_stack: LocalStack, stack: dict[str, Any], tmp_path: Path
) -> None:
    device = f"it-dev-{uuid.uuid4().hex[:8]}"
    site = f"it{uuid.uuid4().hex[:6]}"
    mq = stack["mosquitto"]
    mosquitto = local_stack.service("mosquitto")
    added = thermowatch("devices", "add", device, "--site", site, "--out", "bundle", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    bundle = tmp_path / "bundle"
    password = (bundle / "edge.password").read_text(encoding="utf-8").strip()
    sub = Subscriber(mq["host"], mq["port"], mq["users"]["admin"], f"thermowatch/{site}/{device}/#")
    agent = subprocess.Popen(
        [sys.executable, "-m", "thermowatch", "edge", "run", "-c", str(bundle / "edge.toml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: len(sub.readings()) >= 3, 30.0), "no readings at the broker"
        agent.send_signal(signal.SIGTERM)
        log, _ = agent.communicate(timeout=30)
        assert agent.returncode == 0, log
        first = sub.readings()[0]
        assert (first.device_id, first.site, first.sensor_id) == (device, site, "28-00000000cafe")
        assert first.temp_c == pytest.approx(4.0)

        removed = thermowatch("devices", "remove", device, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert not mosquitto.login(device, password, 5.0)
        listed = thermowatch("devices", "list", cwd=tmp_path)
        assert device not in listed.stdout
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        sub.close()
        if device in local_stack.credentials():
            local_stack.remove_mqtt_user(device)
