"""HIL tier for the edge agent: fake w1 sysfs trees, gpiozero mock pins, a real broker.

The broker is a private Mosquitto started per test on a free port (anonymous,
persistence on) so that a test may stop and restart it without touching the
shared stack.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.local.stack import free_port
from telemetry_contract import decode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def backlog_drained(outbox_path: Path) -> Callable[[], bool]:
    """A condition: every outbox row stored until now has been acknowledged.

    A running agent's outbox is seldom empty (each round's readings wait for
    their PUBACKs until the next round), so ``depth == 0`` holds only by luck
    of timing; the rows stored before this call are what must go. Reads the
    file through its own read-only connection (WAL lets it beside the agent).
    """
    uri = f"file:{outbox_path}?mode=ro"

    def count(sql: str, *args: int) -> int:
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            return int(db.execute(sql, args).fetchone()[0])

    mark = count("SELECT COALESCE(MAX(id), 0) FROM outbox")
    return lambda: count("SELECT COUNT(*) FROM outbox WHERE id <= ?", mark) == 0


class PrivateMosquitto:
    """A Mosquitto process of our own; ``stop()``/``start()`` keep its persistence."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
            "log_type all\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(20)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    b = PrivateMosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Subscriber:
    """Persistent-session QoS 1 subscriber recording every decoded message."""

    def __init__(self, port: int, topic: str, *, username: str = "", password: str = "") -> None:
        self.messages: list[tuple[str, Any, bytes]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"hil-sub-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if username:
            self.client.username_pw_set(username, password)
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(20), "subscriber could not connect"

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)
            time.sleep(0.05)
            self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            decoded = decode(msg.payload) if msg.payload else None
        except Exception as exc:  # pragma: no cover - a contract bug shows up in the test
            decoded = exc
        with self.lock:
            self.messages.append((msg.topic, decoded, bytes(msg.payload)))

    def of_kind(self, kind: str) -> list[tuple[Any, bytes]]:
        with self.lock:
            return [(m, raw) for t, m, raw in self.messages if t.endswith("/" + kind)]

    def readings(self) -> list[tuple[Any, bytes]]:
        return [(m, raw) for m, raw in self.of_kind("telemetry") if type(m).__name__ == "Reading"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def w1_tree(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        dst = tmp_path / f"w1-{name}"
        shutil.copytree(FIXTURES / name, dst)
        return dst

    return make


def edge_config_text(
    *,
    w1_root: Path,
    state_dir: Path,
    port: int,
    device_id: str = "hil-d1",
    site: str = "hil",
    interval_s: float = 0.2,
    extra: str = "",
    detector: str = "",
) -> str:
    return f"""
[device]
device_id = "{device_id}"
site = "{site}"
state_dir = "{state_dir}"
[sensors]
w1_root = "{w1_root}"
retry_delay_s = 0.0
# The fixture trees never change their values: the stuck check (120 identical
# readings, tests/unit/test_edge_stuck.py) would call every probe stuck after 24 s at 5 Hz.
stuck_after = 0
[sampling]
interval_s = {interval_s}
[gpio]
pin_factory = "mock"
relay_pin = 23
button_pin = 24
[outbox]
flush_timeout_s = 10.0
# No gateway here to send receipts: PUBACK deletes (test_edge_receipts.py turns them on).
receipts = false
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "hil-{uuid.uuid4().hex[:8]}"
reconnect_min_s = 1.0
reconnect_max_s = 2.0
session_expiry_s = 3600
{detector}
{extra}
"""


class RunningAgent:
    """An EdgeAgent on mock pins, its main loop on a thread."""

    def __init__(self, config_text: str) -> None:
        from gpiozero.pins.mock import MockFactory

        from edge_agent.app import EdgeAgent
        from edge_agent.config import loads_config

        self.config = loads_config(config_text)
        self.factory = MockFactory()
        self.agent = EdgeAgent(self.config, pin_factory=self.factory)
        self.stop_event = threading.Event()
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop_event,))
        self.thread.start()

    def pin(self, number: int) -> Any:
        return self.factory.pin(number)

    def stop(self) -> None:
        if not self.stop_event.is_set():
            self.stop_event.set()
            self.thread.join(30)
            self.agent.shutdown()


class Hil:
    """Helpers handed to the tests (test modules cannot import conftest)."""

    wait_for = staticmethod(wait_for)
    backlog_drained = staticmethod(backlog_drained)
    config = staticmethod(edge_config_text)
    Subscriber = Subscriber
    PrivateMosquitto = PrivateMosquitto


@pytest.fixture
def hil() -> type[Hil]:
    return Hil


@pytest.fixture
def run_agent() -> Iterator[Callable[[str], RunningAgent]]:
    agents: list[RunningAgent] = []

    def start(config_text: str) -> RunningAgent:
        a = RunningAgent(config_text)
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.stop()
