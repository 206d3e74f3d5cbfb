"""MQTT adapter (paho-mqtt 2.x, MQTT v5, QoS 1, persistent session).

Moves bytes and reports what happened; it decides nothing. paho runs its
network loop on its own thread and calls our callbacks there - while holding
its own locks (``on_publish`` runs under paho's out-message mutex) - so every
callback only puts an event on a queue that the agent's main loop drains.
Nothing here touches the outbox.

* Stable client id + ``clean_start=False`` + a session expiry interval: the
  broker keeps our session (and the config subscription) across reconnects.
* paho re-sends unacknowledged QoS 1 messages after a reconnect, so the
  agent never hands the same row out twice in one process; a restarted
  process starts from the outbox again (duplicates of a seq are possible,
  reuse of a seq is not).
* The retained ``DeviceStatus`` offline message is the last will; online is
  published, retained, on every connect.
* Reconnect: full-jitter exponential backoff between ``reconnect_min_s`` and
  ``reconnect_max_s``, set into paho before each wait.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import ssl
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.config import MqttSection

__all__ = ["Acked", "ConfigReceived", "Connected", "Disconnected", "MqttLink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connected:
    session_present: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


@dataclass(frozen=True, slots=True)
class Acked:
    mid: int
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ConfigReceived:
    payload: bytes
    retained: bool


class MqttLink:
    """One device's MQTT connection; events go to ``events`` (a thread-safe queue)."""

    def __init__(
        self,
        cfg: MqttSection,
        *,
        client_id: str,
        password: str,
        status_topic: str,
        config_topic: str,
        will_payload: bytes,
        events: queue.Queue[Any],
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = cfg
        self._client_id = client_id
        self._password = password
        self._status_topic = status_topic
        self._config_topic = config_topic
        self._will = will_payload
        self._events = events
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._attempt = 0
        self._client: paho.Client | None = None
        self._online_payload: bytes = b""
        self._connected = threading.Event()
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def set_online_payload(self, payload: bytes) -> None:
        """The retained status published on (re)connect; published now if connected."""
        self._online_payload = payload
        if self._client is not None and self.connected:
            self._client.publish(self._status_topic, payload, qos=1, retain=True)

    def start(self) -> None:
        """Create the client and start connecting in the background (non-blocking)."""
        c = self._cfg
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
        )
        if c.username:
            client.username_pw_set(c.username, self._password or None)
        if c.tls:
            client.tls_set(
                ca_certs=c.ca_file or None,
                certfile=c.cert_file or None,
                keyfile=c.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(self._status_topic, self._will, qos=1, retain=True)
        client.max_inflight_messages_set(c.max_inflight)
        client.max_queued_messages_set(0)  # the agent bounds what it hands out
        first = max(1, math.ceil(c.reconnect_min_s))
        client.reconnect_delay_set(first, first)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = c.session_expiry_s
        client.connect_async(
            c.host, c.port, keepalive=c.keepalive_s, clean_start=False, properties=props
        )
        self._client = client
        client.loop_start()
        log.info(
            "event=mqtt_start host=%s port=%d client_id=%s tls=%s",
            c.host,
            c.port,
            self._client_id,
            c.tls,
        )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Hand a QoS 1 message to paho (queued while offline); returns its mid."""
        if self._client is None:
            raise RuntimeError("MqttLink.start() was not called")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise OSError(f"mqtt publish failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def stop(self, offline_payload: bytes | None = None, timeout_s: float = 2.0) -> None:
        """Publish the offline status (if connected), disconnect, stop the loop; idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        if offline_payload is not None and self.connected:
            info = client.publish(self._status_topic, offline_payload, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self._stopping = True
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        log.info("event=mqtt_stopped client_id=%s", self._client_id)

    # paho callbacks (network thread): only enqueue -------------------------------
    def _backoff(self, client: paho.Client) -> None:
        c = self._cfg
        cap = min(c.reconnect_max_s, c.reconnect_min_s * 2 ** min(self._attempt, 20))
        # paho takes whole seconds; full jitter over [min, cap], rounded up.
        delay = max(1, math.ceil(self._rng.uniform(c.reconnect_min_s, max(cap, c.reconnect_min_s))))
        self._attempt += 1
        client.reconnect_delay_set(delay, delay)

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.warning("event=mqtt_refused reason=%s", reason_code)
            self._backoff(client)
            return
        self._attempt = 0
        self._connected.set()
        if self._online_payload:
            client.publish(self._status_topic, self._online_payload, qos=1, retain=True)
        client.subscribe(self._config_topic, qos=1)
        log.info(
            "event=mqtt_connected session_present=%s client_id=%s",
            flags.session_present,
            self._client_id,
        )
        self._events.put(Connected(bool(flags.session_present)))

    def _on_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        self._backoff(client)

    def _on_disconnect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._backoff(client)
        if was:
            level = logging.INFO if self._stopping else logging.WARNING
            log.log(level, "event=mqtt_disconnected reason=%s", reason_code)
            self._events.put(Disconnected(str(reason_code)))

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        self._events.put(Acked(mid, not reason_code.is_failure, str(reason_code)))

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._config_topic:
            self._events.put(ConfigReceived(bytes(msg.payload), bool(msg.retain)))
