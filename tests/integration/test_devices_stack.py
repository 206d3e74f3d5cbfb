"""``thermowatch devices`` and the broker's TLS, against the local stack.

A device added with ``devices add`` runs from its bundle exactly as the bundle's
README says (``thermowatch edge run -c BUNDLE/edge.toml``: TLS with its client
certificate), its readings reach the broker, and after ``devices remove`` its
certificate and its password are refused. The default stack takes no plaintext
connection, no TLS client without a certificate on its client port, and no
certificate from another CA.
"""

from __future__ import annotations

import signal
import ssl
import stat
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

from deploy.local.mqtt_auth import client_id_for
from deploy.local.pki import ClientTls, Pki, client_tls
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

    def __init__(self, mq: dict[str, Any], topic: str) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"admin:devices-it-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        tls = client_tls(mq, "admin")  # a service: TLS and its password
        tls.apply(self._client)
        self._client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_a: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(mq["host"], tls.port)
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
    for name in ("edge.toml", "edge.password", "device.key"):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o600, name
    password = (bundle / "edge.password").read_text(encoding="utf-8").strip()
    bundle_tls = ClientTls(*(str(bundle / n) for n in ("ca.pem", "device.crt", "device.key")))
    sub = Subscriber(mq, f"thermowatch/{site}/{device}/#")
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

        assert connack(mq["host"], mq["port"], bundle_tls.apply, client_id=device) == "Success"
        removed = thermowatch("devices", "remove", device, cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert not mosquitto.login(device, password, 5.0)
        # The certificate is in the CRL the broker re-read: the handshake fails.
        refused = connack(mq["host"], mq["port"], bundle_tls.apply, client_id=device)
        assert refused.startswith("refused"), refused
        listed = thermowatch("devices", "list", cwd=tmp_path)
        assert device not in listed.stdout
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        sub.close()
        if device in local_stack.credentials():
            local_stack.remove_mqtt_user(device)


def connack(
    host: str, port: int, configure: Any, timeout: float = 10.0, client_id: str = ""
) -> str:
    """``"Success"`` or the CONNACK's reason; ``"refused: ..."`` when the connection
    or the TLS handshake fails (nothing was sent). The client id: ``client_id``,
    else one of ``admin``'s."""
    result: list[str] = []
    done = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or client_id_for("admin", f"tls-it-{uuid.uuid4().hex[:8]}"),
        protocol=paho.MQTTv5,
    )
    configure(client)

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(str(rc))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_a: done.set()
    try:
        client.connect(host, port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {exc!r}"
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else "refused: no CONNACK"


def test_default_broker_refuses_plaintext_missing_and_foreign_certificates(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    mq = stack["mosquitto"]
    host, port = mq["host"], mq["port"]
    assert "plain_port" not in mq  # no plaintext listener unless asked for
    # The controls: a device with its certificate on the client port, a service
    # with its password on the password port (both TLS).
    device = client_tls(mq, "dev-test-1")
    assert device.port == port and connack(host, port, device.apply) == "Success"
    admin = client_tls(mq, "admin")
    assert admin.port == mq["password_port"] and connack(host, admin.port, admin.apply) == "Success"

    # Plaintext MQTT, even with a valid password, on either port: no CONNACK.
    def password_only(c: Any) -> None:
        c.username_pw_set("admin", mq["users"]["admin"])

    assert connack(host, port, password_only).startswith("refused")
    assert connack(host, mq["password_port"], password_only).startswith("refused")
    # TLS without a client certificate on the client port: the handshake fails.
    assert connack(host, port, lambda c: c.tls_set(ca_certs=mq["ca_file"])).startswith("refused")
    # A certificate named "admin" from another CA: refused as well.
    other = Pki(tmp_path / "other-ca")
    cert, key = other.issue("admin")
    forged = ClientTls(mq["ca_file"], str(cert), str(key))
    assert connack(host, port, forged.apply).startswith("refused")

    # The password port: TLS with the stack's CA and a password works, a wrong one not.
    def tls_password(pw: str) -> Any:
        def configure(c: Any) -> None:
            c.username_pw_set("admin", pw)
            c.tls_set(ca_certs=mq["ca_file"])

        return configure

    assert connack(host, mq["password_port"], tls_password(mq["users"]["admin"])) == "Success"
    assert connack(host, mq["password_port"], tls_password("wrong")) != "Success"
