"""Edge agent against the shared local stack's Mosquitto (auth + ACL on), as dev-test-3."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from deploy.local.config_keys import write_key_pair
from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from telemetry_contract import DeviceConfig, Quality, Reading, decode, encode
from telemetry_contract.signing import load_private_key, sign_config
from testsupport.mqtt_tls import edge_tls_toml, stack_tls

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
DEVICE = "dev-test-3"


def wait_for(cond: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


class Admin:
    def __init__(self, host: str, port: int, password: str, topic: str) -> None:
        self.msgs: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"admin:edge-it-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self.c.username_pw_set("admin", password)
        tls = stack_tls("admin")  # a service: TLS and its password
        tls.apply(self.c)
        self.topic = topic
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(host, tls.port or port)
        self.c.loop_start()
        assert self.ready.wait(20)
        time.sleep(0.3)  # SUBACK

    def _on_connect(self, c: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(self.topic, qos=1)
        self.ready.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.msgs.append((msg.topic, decode(msg.payload) if msg.payload else None))

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return [m for t, m in self.msgs if t.endswith("/" + kind) and m is not None]

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_agent_publishes_with_device_credentials_and_takes_remote_config(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    mq = stack["mosquitto"]
    site = f"it{uuid.uuid4().hex[:8]}"
    base = f"thermowatch/{site}/{DEVICE}"
    root = tmp_path / "w1"
    shutil.copytree(FIXTURES / "ok", root)
    write_key_pair(tmp_path / "signing.key", tmp_path / "signing.pub")
    key = load_private_key((tmp_path / "signing.key").read_bytes())
    cfg = loads_config(
        f"""
[remote_config]
public_key_file = "{tmp_path / "signing.pub"}"
[device]
device_id = "{DEVICE}"
site = "{site}"
state_dir = "{tmp_path / "state"}"
[sensors]
w1_root = "{root}"
[sampling]
interval_s = 0.5
[gpio]
pin_factory = "mock"
[mqtt]
host = "{mq["host"]}"
port = {mq["port"]}
username = "{DEVICE}"
{edge_tls_toml(DEVICE)}session_expiry_s = 0
"""
    )
    admin = Admin(mq["host"], mq["port"], mq["users"]["admin"], f"{base}/#")
    agent = EdgeAgent(cfg, pin_factory=MockFactory())
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    try:
        agent.start()
        thread.start()
        assert wait_for(lambda: len(admin.of("telemetry")) >= 6)
        online = [s for s in admin.of("status") if s.state.value == "online"]
        assert online and online[-1].sensors == ["28-0316a2791aff", "28-0416b3a1c2ff"]

        # The device may read its own config topic (ACL). An unsigned config is rejected
        # (a config_rejected alert naming the signature); a signed one applies.
        def config(version: int) -> DeviceConfig:
            now = int(time.time() * 1000)
            return DeviceConfig(
                device_id=DEVICE, site=site, version=version, ts=now, sampling_interval_s=0.25
            )

        admin.publish(f"{base}/config", encode(config(1)))
        assert wait_for(
            lambda: any("unsigned config refused" in a.message for a in admin.of("alert"))
        )
        assert agent.config_version == 0 and agent.config.sampling.interval_s == 0.5
        admin.publish(f"{base}/config", encode(sign_config(key, config(2))))
        assert wait_for(lambda: agent.config_version == 2, timeout=15)
        assert agent.config.sampling.interval_s == 0.25
        assert wait_for(lambda: any(s.config_version == 2 for s in admin.of("status")))
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(30)
        agent.shutdown()
    assert wait_for(lambda: admin.of("status")[-1].state.value == "offline", timeout=15)
    readings = admin.of("telemetry")
    seqs = [r.seq for r in readings]
    assert seqs == list(range(len(seqs)))
    assert all(r.quality is Quality.OK and r.device_id == DEVICE for r in readings)
    # Leave no retained messages behind on the shared broker.
    admin.publish(f"{base}/status", b"")
    admin.publish(f"{base}/config", b"")
    admin.close()


def test_refused_publish_is_kept_retried_with_backoff_and_delivered_later(
    stack: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misprovisioned device (logs in as dev-test-4, publishes as dev-test-3): the
    shared broker's ACL answers every PUBACK with 135. Nothing is deleted; the agent
    backs off, logs the reason once, and a later run with the right credentials
    delivers every seq."""
    mq = stack["mosquitto"]
    site = f"it{uuid.uuid4().hex[:8]}"
    base = f"thermowatch/{site}/{DEVICE}"
    root = tmp_path / "w1"
    shutil.copytree(FIXTURES / "ok", root)

    def config(username: str) -> str:
        return f"""
[device]
device_id = "{DEVICE}"
site = "{site}"
state_dir = "{tmp_path / "state"}"
[sensors]
w1_root = "{root}"
[sampling]
interval_s = 0.2
[gpio]
pin_factory = "mock"
[outbox]
flush_timeout_s = 1.0
[mqtt]
host = "{mq["host"]}"
port = {mq["port"]}
username = "{username}"
{edge_tls_toml(username)}session_expiry_s = 0
reconnect_min_s = 1.0
reconnect_max_s = 2.0
"""

    def run(cfg_text: str, until: Any) -> EdgeAgent:
        agent = EdgeAgent(loads_config(cfg_text), pin_factory=MockFactory())
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,))
        try:
            agent.start()
            thread.start()
            assert wait_for(lambda: until(agent), timeout=60)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(30)
            agent.shutdown()
        return agent

    admin = Admin(mq["host"], mq["port"], mq["users"]["admin"], f"{base}/#")
    try:
        with caplog.at_level("INFO", logger="edge_agent.publisher"):
            wrong = run(config("dev-test-4"), lambda a: a.publish_retries >= 2)
        refused = [
            r.getMessage() for r in caplog.records if "event=publish_refused" in r.getMessage()
        ]
        assert len(refused) == 1 and "code=135" in refused[0]  # one line, with the reason
        stored = wrong.readings_stored
        assert wrong.publish_refusals >= 3  # refused again on each retry
        assert stored > 0
        assert not admin.of("telemetry")  # the broker really refused them
        # Nothing was deleted: a new run with the right credentials delivers every seq.
        run(config(DEVICE), lambda a: len(admin.of("telemetry")) >= stored + 3)
        seqs = [r.seq for r in admin.of("telemetry") if isinstance(r, Reading)]
        assert sorted(set(seqs))[:stored] == list(range(stored))
        assert seqs == sorted(seqs)  # replayed in seq order
    finally:
        admin.publish(f"{base}/status", b"")
        admin.close()
