"""What the stack's MQTT brokers (Mosquitto, the optional Artemis) have in common.

Both listen over TLS with the installation's CA (:mod:`deploy.local.pki`): the
client port asks for a client certificate whose CN names the user; the port
after it takes a user of ``credentials.json`` with its password. Both take
their users from ``credentials.json``, so a client connects to either with
:func:`deploy.local.pki.client_tls` and the broker's :meth:`MqttBroker.endpoint`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local.errors import StackError
from deploy.local.mqtt_auth import client_id_for
from deploy.local.pki import Pki, client_tls
from deploy.local.process import port_open
from deploy.local.services.base import Service

__all__ = ["MqttBroker"]


class MqttBroker(Service):
    """An MQTT broker of the stack: certificate port, password port (+1), one CA."""

    def security(self) -> dict[str, Any]:
        return {"tls": self.plain_port is None, "auth": "certificate+password"}

    def probe(self, timeout: float) -> bool:
        return self.cert_login("admin", timeout)

    @property
    def pki(self) -> Pki:
        return Pki(self.layout.root / "pki")

    @property
    def password_port(self) -> int:
        """The TLS listener that takes a user name and password (no client certificate)."""
        return self.port + 1

    def endpoint(self) -> dict[str, Any]:
        """Host, port (certificates), ``password_port``, ``ca_file``, ``certs_dir``
        (``<identity>.crt``/``.key``: :func:`deploy.local.pki.client_tls`), ``users``
        (every MQTT user with its password), ``plain_port`` when plaintext is on."""
        out = {
            **super().endpoint(),
            "tls": True,
            "password_port": self.password_port,
            **self.endpoint_paths(),
            "users": self.ctx.credentials.all(),
        }
        if self.plain_port is not None:
            out["plain_port"] = self.plain_port
        return out

    @property
    def plain_port(self) -> int | None:
        """A plaintext listener's port; None when there is none."""
        return None

    def issue_cert(self, identity: str) -> tuple[Path, Path]:
        """A client certificate for ``identity`` (kept when it has one); its paths."""
        return self.pki.issue(identity)

    def login(self, user: str, password: str, timeout: float) -> bool:
        """True when an MQTT v5 connect as ``user`` with ``password`` (TLS listener
        for passwords) gets a successful CONNACK.

        A service logs in as ``<user>:health-<random>``; a device can only use its
        own id as client id, so this login takes over a running device's
        connection (only ``devices add`` and ``rotate`` log in as a device)."""
        return self._connects(
            user, self.password_port, timeout, lambda c: c.username_pw_set(user, password)
        )

    def cert_login(self, identity: str, timeout: float) -> bool:
        """True when an MQTT v5 connect with ``identity``'s client certificate (the
        client port) gets a successful CONNACK; False when it has no certificate."""
        try:
            tls = client_tls(self.endpoint_paths(), identity)
        except StackError:
            return False
        return self._connects(identity, self.port, timeout, lambda _c: None, tls.apply)

    def endpoint_paths(self) -> dict[str, Any]:
        """The part of :meth:`endpoint` that :func:`client_tls` reads (no credentials)."""
        return {"ca_file": str(self.pki.ca_file), "certs_dir": str(self.pki.clients_dir)}

    def _connects(
        self,
        user: str,
        port: int,
        timeout: float,
        configure: Callable[[Any], None],
        tls: Callable[[Any], None] | None = None,
    ) -> bool:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if not port_open(self.host, port, timeout=min(timeout, 1.0)):
            return False
        connected = threading.Event()
        ok: list[bool] = []

        def on_connect(
            client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object
        ) -> None:
            ok.append(not reason.is_failure)
            connected.set()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id_for(user, f"health-{uuid.uuid4().hex[:8]}"),
            protocol=mqtt.MQTTv5,
        )
        configure(client)
        if tls is not None:
            tls(client)
        else:  # the password listener: TLS with the CA, no client certificate
            client.tls_set(ca_certs=str(self.pki.ca_file))
        client.on_connect = on_connect
        try:
            client.connect(self.host, port, keepalive=10)
            client.loop_start()
            try:
                connected.wait(timeout)
            finally:
                client.disconnect()
                client.loop_stop()
        except OSError:  # a refused handshake (revoked certificate, unknown CA)
            return False
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
        return bool(ok) and ok[0]
