"""MQTT identities and topics, tried as an attacker would against the real broker.

Each test adds its own devices (a fresh site, so nothing else on the shared
broker matches) and removes them again. The broker is the stack's Mosquitto
with the ``thermowatch_auth`` plugin, the rendered password file and ACL
(docs/security.md "MQTT identities and topics"). "Nothing reached a
subscriber" is proved without a timed wait: a last, allowed publish is
awaited, and the broker delivers a client's messages in order.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from deploy.local.pki import ClientTls
from deploy.local.stack import LocalStack

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x87


class Client:
    """One MQTT v5 connection: its CONNACK, PUBACK reason codes and messages."""

    def __init__(
        self,
        mq: dict[str, Any],
        user: str,
        password: str,
        client_id: str,
        cert: ClientTls | None = None,
    ) -> None:
        self._mq = mq
        self._c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        if cert is None:
            # The broker's password port (TLS): the login checked is the password's.
            self._c.username_pw_set(user, password)
            self._c.tls_set(ca_certs=mq["ca_file"])
            self._port = int(mq["password_port"])
        else:  # the certificate port: the certificate is the login
            cert.apply(self._c)
            self._port = cert.port
        self._cv = threading.Condition()
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes, bool]] = []
        self._c.on_connect = self._on_connect
        self._c.on_disconnect = lambda *_a: self.disconnected.set()
        self._c.on_publish = self._on_publish
        self._c.on_message = self._on_message

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._cv:
            self.connack = int(reason.value)
            self._cv.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._cv:
            self.pubacks[mid] = int(reason.value)
            self._cv.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cv.notify_all()

    def _wait(self, cond: Any, what: str) -> None:
        with self._cv:
            assert self._cv.wait_for(cond, 15.0), f"no {what}"

    def connect(self, will: tuple[str, bytes] | None = None) -> int:
        """Connect; the CONNACK's reason code (0: accepted). A refused client
        stops: paho would otherwise retry with the same client id."""
        if will is not None:
            self._c.will_set(will[0], will[1], qos=1, retain=False)
        self._c.connect(self._mq["host"], self._port, keepalive=30)
        self._c.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None
        if self.connack != 0:
            self._c.loop_stop()
        return self.connack

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self._c.on_subscribe = lambda *_a: done.set()
        self._c.subscribe(topic, qos=1)
        assert done.wait(15.0), "no SUBACK"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self._c.publish(topic, payload, qos=1, retain=retain)
        self._wait(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def wait_message(self, payload: bytes) -> list[tuple[str, bytes, bool]]:
        """Every message received up to and including ``payload``."""
        self._wait(lambda: any(m[1] == payload for m in self.messages), f"message {payload!r}")
        with self._cv:
            return list(self.messages)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def _copy_of(tls: ClientTls, where: Path) -> ClientTls:
    """The same login with its certificate and key copied (a rotation replaces them)."""
    where.mkdir()
    cert, key = where / "device.crt", where / "device.key"
    shutil.copyfile(tls.cert_file, cert)
    shutil.copyfile(tls.key_file, key)
    return dataclasses.replace(tls, cert_file=str(cert), key_file=str(key))


@pytest.fixture
def site() -> str:
    return f"it{uuid.uuid4().hex[:8]}"


@pytest.fixture
def devices(local_stack: LocalStack, site: str) -> Iterator[dict[str, str]]:
    """Two fresh devices of ``site``: ``{device_id: password}``."""
    tag = uuid.uuid4().hex[:6]
    added = {name: local_stack.add_device(name, site) for name in (f"a-{tag}", f"b-{tag}")}
    yield added
    for name in added:
        if name in local_stack.credentials():
            local_stack.remove_mqtt_user(name)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def watch(mq: dict[str, Any], topic: str, clients: list[Client]) -> Client:
    """``admin`` (the operator account, which reads everything) subscribed to ``topic``."""
    watcher = Client(mq, "admin", mq["users"]["admin"], f"admin:it-{uuid.uuid4().hex[:6]}")
    clients.append(watcher)
    assert watcher.connect() == 0
    watcher.subscribe(topic)
    return watcher


def test_a_device_using_another_identitys_client_id_is_refused_and_no_will_fires(
    stack: dict[str, Any], devices: dict[str, str], site: str, clients: list[Client]
) -> None:
    mq = stack["mosquitto"]
    (a, a_pw), (b, b_pw) = devices.items()
    watcher = watch(mq, f"thermowatch/{site}/#", clients)
    victim = Client(mq, b, b_pw, b)
    clients.append(victim)
    assert victim.connect(will=(f"thermowatch/{site}/{b}/status", b"offline")) == 0

    for stolen in (b, "gateway", "gateway:gw-1", "admin", f"{a}:x"):
        attacker = Client(mq, a, a_pw, stolen)
        assert attacker.connect() == NOT_AUTHORIZED, stolen
        attacker.close()

    # The victim kept its connection: its next publish arrives, and no last will before it.
    assert victim.publish(f"thermowatch/{site}/{b}/telemetry", b"still-here") == 0
    got = watcher.wait_message(b"still-here")
    assert got == [(f"thermowatch/{site}/{b}/telemetry", b"still-here", False)]
    assert not victim.disconnected.is_set()


def test_a_certificate_login_cannot_take_another_identitys_client_id(
    local_stack: LocalStack,
    stack: dict[str, Any],
    devices: dict[str, str],
    site: str,
    clients: list[Client],
) -> None:
    """On the certificate port Mosquitto 2.0 never asks the plugin at connect: the
    listener makes every client id its certificate's name, so a device asking for
    another device's, the gateway's or the operator's id still connects only as
    itself, and nobody is knocked off (no last will fires)."""
    mq = stack["mosquitto"]
    (a, _), (b, _) = devices.items()
    watcher = watch(mq, f"thermowatch/{site}/#", clients)
    victim = Client(mq, b, "", b, cert=local_stack.client_tls(b))
    clients.append(victim)
    assert victim.connect(will=(f"thermowatch/{site}/{b}/status", b"offline")) == 0
    service_id = f"gateway:it-{uuid.uuid4().hex[:6]}"
    service = Client(mq, "gateway", mq["users"]["gateway"], service_id)
    clients.append(service)
    assert service.connect() == 0

    for stolen in (b, service_id, "gateway", "admin"):
        attacker = Client(mq, a, "", stolen, cert=local_stack.client_tls(a))
        clients.append(attacker)
        assert attacker.connect() == 0, stolen  # accepted, but as ``a``
        # What it sends is ``a``'s, under ``a``'s rules: its own topic is allowed...
        assert attacker.publish(f"thermowatch/{site}/{a}/telemetry", stolen.encode()) == 0
        attacker.close()

    assert victim.publish(f"thermowatch/{site}/{b}/telemetry", b"still-here") == 0
    got = watcher.wait_message(b"still-here")
    assert (f"thermowatch/{site}/{b}/status", b"offline", False) not in got
    assert not victim.disconnected.is_set()
    assert not service.disconnected.is_set()


def test_a_device_publishing_outside_its_topics_or_retained_is_refused(
    stack: dict[str, Any], devices: dict[str, str], site: str, clients: list[Client]
) -> None:
    mq = stack["mosquitto"]
    (a, a_pw), (b, _) = devices.items()
    watcher = watch(mq, "thermowatch/#", clients)
    device = Client(mq, a, a_pw, a)
    clients.append(device)
    assert device.connect() == 0

    outside = [
        f"thermowatch/{site}/{b}/telemetry",  # another device
        f"thermowatch/other{site}/{a}/telemetry",  # another site
        f"thermowatch/{site}/{a}/telemetry/extra",  # an extra topic level
        f"thermowatch/{site}/{a}/config",  # its own config
        f"thermowatch/{site}/{a}/receipt",  # its own receipts
    ]
    for topic in outside:
        assert device.publish(topic, b"bad") == NOT_AUTHORIZED, topic
    assert device.publish(f"thermowatch/{site}/{a}/status", b"bad", retain=True) == NOT_AUTHORIZED

    for kind in ("telemetry", "status", "alert", "gap"):
        assert device.publish(f"thermowatch/{site}/{a}/{kind}", b"ok-" + kind.encode()) == 0
    got = watcher.wait_message(b"ok-gap")
    mine = [m for m in got if f"/{a}/" in m[0] or f"/{b}/" in m[0]]
    assert [payload for _t, payload, _r in mine] == [
        b"ok-telemetry",
        b"ok-status",
        b"ok-alert",
        b"ok-gap",
    ]


def test_the_gateway_cannot_publish_readings_or_config_and_only_config_publisher_retains(
    stack: dict[str, Any], devices: dict[str, str], site: str, clients: list[Client]
) -> None:
    mq = stack["mosquitto"]
    a, a_pw = next(iter(devices.items()))
    users = mq["users"]
    gateway = Client(mq, "gateway", users["gateway"], f"gateway:it-{uuid.uuid4().hex[:6]}")
    publisher = Client(mq, "config-publisher", users["config-publisher"], "config-publisher")
    device = Client(mq, a, a_pw, a)
    clients += [gateway, publisher, device]
    assert gateway.connect() == 0 and publisher.connect() == 0 and device.connect() == 0
    device.subscribe(f"thermowatch/{site}/{a}/#")  # only config and receipt are readable

    base = f"thermowatch/{site}/{a}"
    for kind in ("telemetry", "status", "alert", "gap", "config"):
        assert gateway.publish(f"{base}/{kind}", b"forged") == NOT_AUTHORIZED, kind
    assert gateway.publish(f"{base}/receipt", b"rcpt", retain=True) == NOT_AUTHORIZED
    assert gateway.publish(f"{base}/receipt", b"rcpt") == 0
    assert publisher.publish(f"{base}/telemetry", b"forged") == NOT_AUTHORIZED
    assert publisher.publish(f"{base}/config", b"cfg", retain=True) == 0
    try:
        got = device.wait_message(b"cfg")
        assert [(t.rsplit("/", 1)[1], p) for t, p, _r in got] == [
            ("receipt", b"rcpt"),
            ("config", b"cfg"),
        ]
    finally:
        assert publisher.publish(f"{base}/config", b"", retain=True) == 0  # clear it


def test_a_removed_or_rotated_device_is_disconnected_and_its_old_password_refused(
    local_stack: LocalStack, stack: dict[str, Any], devices: dict[str, str], clients: list[Client]
) -> None:
    mq = stack["mosquitto"]
    (a, a_pw), (b, b_pw) = devices.items()
    removed, rotated = Client(mq, a, a_pw, a), Client(mq, b, b_pw, b)
    clients += [removed, rotated]
    assert removed.connect() == 0 and rotated.connect() == 0

    local_stack.remove_mqtt_user(a)
    assert removed.disconnected.wait(15.0), "a removed device stays connected"
    local_stack.rotate_device(b)
    assert rotated.disconnected.wait(15.0), "a rotated device stays connected"
    removed.close()
    rotated.close()
    for user, password in ((a, a_pw), (b, b_pw)):
        again = Client(mq, user, password, user)
        assert again.connect() != 0, user
        again.close()


def test_a_removed_or_rotated_device_logged_in_by_certificate_is_disconnected(
    local_stack: LocalStack,
    stack: dict[str, Any],
    devices: dict[str, str],
    clients: list[Client],
    tmp_path: Path,
) -> None:
    """The reload re-reads passwords and the ACL, but the CRL only at the next
    handshake: the broker plugin disconnects a removed or re-keyed identity that
    logged in with its certificate (a stolen Pi stays connected otherwise)."""
    mq = stack["mosquitto"]
    (a, _), (b, _) = devices.items()
    a_cert, b_cert = (_copy_of(local_stack.client_tls(d), tmp_path / d) for d in (a, b))
    removed, rotated = Client(mq, a, "", a, cert=a_cert), Client(mq, b, "", b, cert=b_cert)
    clients += [removed, rotated]
    assert removed.connect() == 0 and rotated.connect() == 0

    local_stack.remove_mqtt_user(a)
    assert removed.disconnected.wait(15.0), "a removed device stays connected"
    local_stack.rotate_device(b)
    assert rotated.disconnected.wait(15.0), "a re-keyed device stays connected"
    removed.close()
    rotated.close()
    # The old certificates fail the handshake now (the CRL): no CONNACK at all.
    for user, cert in ((a, a_cert), (b, b_cert)):
        again = Client(mq, user, "", user, cert=cert)
        with pytest.raises((OSError, AssertionError)):
            again.connect()
        again.close()
