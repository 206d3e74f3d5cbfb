"""The optional Artemis broker (``stack up artemis``): logins, topic rights, durability, wills.

A module fixture starts Artemis in the session's stack dir (stopped afterwards
unless it ran before or ``THERMOWATCH_KEEP_STACK=1``); the other services are
not needed. The users and certificates are the stack's, as for Mosquitto.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.local.pki import client_tls
from deploy.local.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artemis() -> Iterator[LocalStack]:
    stack = LocalStack()
    result = stack.up(["artemis"], timeout=180.0)
    yield stack
    if result["artemis"] == "started" and os.environ.get("THERMOWATCH_KEEP_STACK") != "1":
        stack.down(["artemis"])


class Client:
    """A paho MQTT v5 client that records CONNACK, PUBACK/SUBACK reasons and messages."""

    def __init__(
        self,
        stack: LocalStack,
        identity: str,
        client_id: str,
        *,
        password: str | None = None,
        session_expiry: int = 0,
        will: tuple[str, int] | None = None,
    ) -> None:
        from paho.mqtt.client import Client as Paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.enums import MQTTProtocolVersion as V
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        ep = stack.endpoints()["artemis"]
        self.client = Paho(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=V.MQTTv5)
        self.connack = threading.Event()
        self.reason: Any = None
        self.acks: dict[int, str] = {}
        self.subacks: list[str] = []
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        if password is None:  # a certificate login (a device, or a service's certificate)
            tls = client_tls(ep, identity)
            tls.apply(self.client)
            port = tls.port
        else:
            self.client.tls_set(ca_certs=ep["ca_file"])
            self.client.username_pw_set(identity, password)
            port = int(ep["password_port"])
        if will is not None:
            props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            props.WillDelayInterval = will[1]
            self.client.will_set(will[0], b"offline", qos=1, properties=props)
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, str(rc))
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.extend(map(str, rcs))
        self.client.on_message = self._on_message
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = session_expiry
        self.client.connect(
            str(ep["host"]), port, clean_start=session_expiry == 0, properties=connect_props
        )
        self.client.loop_start()
        self.connack.wait(15)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.connack.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    @property
    def ok(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def publish(self, topic: str, payload: bytes) -> str:
        """QoS 1; the PUBACK's reason."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(15)
        return wait_for(lambda: self.acks.get(info.mid), 15)

    def subscribe(self, topic: str) -> str:
        self.subacks.clear()
        self.client.subscribe(topic, qos=1)
        return wait_for(lambda: self.subacks[0] if self.subacks else None, 15)

    def received(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def cut(self) -> None:
        """Lose the connection without a DISCONNECT (so the will applies)."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(get: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (value := get()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_status_says_tls_with_certificates_and_passwords(artemis: LocalStack) -> None:
    status = artemis.status(["artemis"])["artemis"]
    assert status["pid"] is not None
    assert (status["tls"], status["auth"]) == (True, "certificate+password")


def test_a_device_writes_only_its_own_topics_and_reads_only_its_own(artemis: LocalStack) -> None:
    users = artemis.credentials()
    site = f"t{uuid.uuid4().hex[:6]}"
    gateway = Client(artemis, "gateway", "gateway:itest", password=users["gateway"])
    device = Client(artemis, "dev-test-1", "dev-test-1")
    try:
        assert gateway.ok and device.ok
        assert gateway.subscribe(f"$share/itest/thermowatch/{site}/+/telemetry") == "Granted QoS 1"
        assert device.publish(f"thermowatch/{site}/dev-test-1/telemetry", b"mine") == "Success"
        assert device.publish(f"thermowatch/{site}/dev-test-2/telemetry", b"theirs") == (
            "Not authorized"
        )
        assert device.publish(f"thermowatch/{site}/dev-test-1/config", b"cfg") == "Not authorized"
        assert gateway.publish(f"thermowatch/{site}/dev-test-1/telemetry", b"gw") == (
            "Not authorized"
        )
        assert device.subscribe("thermowatch/#") == "Not authorized"
        assert device.subscribe(f"thermowatch/{site}/dev-test-1/receipt") == "Granted QoS 1"
        assert gateway.publish(f"thermowatch/{site}/dev-test-1/receipt", b"r") == "Success"
        got = wait_for(lambda: gateway.received() or None, 10)
        assert got == [(f"thermowatch/{site}/dev-test-1/telemetry", b"mine")]
        assert wait_for(lambda: device.received() or None, 10) == [
            (f"thermowatch/{site}/dev-test-1/receipt", b"r")
        ]
        # Nobody subscribed: Artemis drops it and still answers Success, never
        # Mosquitto's reason 16 "No matching subscribers".
        assert device.publish(f"thermowatch/{site}/dev-test-1/gap", b"nobody") == "Success"
    finally:
        gateway.close()
        device.close()


def test_what_artemis_does_not_enforce_unlike_mosquitto(artemis: LocalStack) -> None:
    """Mosquitto's plugin binds client ids to users and refuses devices' retained
    publishes; Artemis has no such plugin here (deploy/local/README.md)."""
    users = artemis.credentials()
    site = f"r{uuid.uuid4().hex[:6]}"
    device = Client(artemis, "dev-test-1", "dev-test-1")
    other = Client(artemis, "gateway", "dev-test-2", password=users["gateway"])
    try:
        assert other.ok  # a service with a device's client id
        info = device.client.publish(
            f"thermowatch/{site}/dev-test-1/status", b"x", retain=True, qos=1
        )
        assert wait_for(lambda: device.acks.get(info.mid), 15) == "Success"
        # Cleared again (an empty retained message) so no later subscriber gets it.
        clear = device.client.publish(
            f"thermowatch/{site}/dev-test-1/status", b"", retain=True, qos=1
        )
        assert wait_for(lambda: device.acks.get(clear.mid), 15) == "Success"
    finally:
        device.close()
        other.close()


def test_wrong_password_and_missing_certificate_are_refused(artemis: LocalStack) -> None:
    bad = Client(artemis, "gateway", "gateway:bad", password="not-the-password")
    unknown = Client(artemis, "nobody", "nobody", password="x")
    try:
        assert str(bad.reason) == "Bad user name or password"
        assert str(unknown.reason) == "Bad user name or password"
    finally:
        bad.close()
        unknown.close()
    ep = artemis.endpoints()["artemis"]
    context = ssl.create_default_context(cafile=ep["ca_file"])  # TLS, no client certificate
    with (
        socket.create_connection((str(ep["host"]), int(ep["port"])), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        context.wrap_socket(raw, server_hostname=str(ep["host"])) as tls,
    ):
        tls.sendall(b"\x10\x00")  # TLS 1.3: the refusal comes with the first read
        tls.recv(1)
        pytest.fail("the broker accepted a TLS client without a certificate")


def test_acknowledged_messages_survive_a_broker_sigkill(artemis: LocalStack) -> None:
    """What Artemis acknowledged is on disk: a persistent session gets all of it
    after ``kill -9`` and a restart (Mosquitto loses what it held since its last save)."""
    users = artemis.credentials()
    site, n = f"k{uuid.uuid4().hex[:6]}", 100
    client_id = f"gateway:durable-{site}"
    topic = f"thermowatch/{site}/+/telemetry"
    reader = Client(artemis, "gateway", client_id, password=users["gateway"], session_expiry=600)
    assert reader.subscribe(topic) == "Granted QoS 1"
    reader.close()  # the session and its queue stay (600 s)
    device = Client(artemis, "dev-test-2", "dev-test-2")
    acked = [
        device.publish(f"thermowatch/{site}/dev-test-2/telemetry", b"%d" % i) for i in range(n)
    ]
    device.close()
    assert acked == ["Success"] * n
    old_pid = artemis.service_pid("artemis")
    assert artemis.kill("artemis", signal.SIGKILL)
    artemis.start("artemis", timeout=180.0)
    assert artemis.service_pid("artemis") not in (None, old_pid)
    reader = Client(artemis, "gateway", client_id, password=users["gateway"], session_expiry=600)
    try:
        wait_for(lambda: True if len(reader.received()) >= n else None, 30)
        assert sorted(int(p) for _t, p in reader.received()) == list(range(n))
    finally:
        reader.close()
        Client(artemis, "gateway", client_id, password=users["gateway"]).close()  # session ended


def test_a_will_with_a_delay_is_published_when_the_connection_is_lost(artemis: LocalStack) -> None:
    """With a session expiry above 0, Artemis publishes the will after its Will Delay
    Interval (the edge sets 1 s); without one it would wait for the session to expire.
    The device logs in with its password: Artemis authenticates a will again
    when it sends it, which a certificate login usually fails by then
    (deploy/local/README.md, "Artemis")."""
    users = artemis.credentials()
    status = f"thermowatch/w{uuid.uuid4().hex[:6]}/dev-test-3/status"
    watcher = Client(artemis, "admin", "admin:will-watch", password=users["admin"])
    assert watcher.subscribe(status) == "Granted QoS 1"
    device = Client(
        artemis,
        "dev-test-3",
        "dev-test-3",
        password=users["dev-test-3"],
        session_expiry=600,
        will=(status, 1),
    )
    try:
        assert device.ok
        device.cut()
        assert wait_for(lambda: watcher.received() or None, 20) == [(status, b"offline")]
    finally:
        watcher.close()
        Client(artemis, "dev-test-3", "dev-test-3").close()  # clean start: session ended
