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

import collections
import contextlib
import functools
import logging
import math
import queue
import random
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttSection

__all__ = ["Acked", "AcksReady", "ConfigReceived", "Connected", "Disconnected", "MqttLink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connected:
    session_present: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker's PUBACK for ``mid``: ``ok`` unless its reason code is an error."""

    mid: int
    ok: bool
    reason: str
    #: The MQTT v5 reason code (0 success, 16 no matching subscribers, 135 not
    #: authorized, 151 quota exceeded, ...).
    code: int = 0


@dataclass(frozen=True, slots=True)
class AcksReady:
    """Wake-up: :attr:`MqttLink.acks` has PUBACKs to handle."""


@dataclass(frozen=True, slots=True)
class ConfigReceived:
    payload: bytes
    retained: bool


_PUBACK_REASONS: dict[int, ReasonCode] = {}


@functools.cache
def _no_properties() -> Properties:
    """One empty PUBACK ``Properties``, shared (made on first use: no work at import)."""
    return Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def decode_puback(packet: bytes | bytearray) -> tuple[int, ReasonCode] | None:
    """``(mid, reason)`` of an MQTT v5 PUBACK body that carries no properties, else None.

    paho 2.x builds a new ``ReasonCode`` and a new ``Properties`` object for
    every PUBACK, about half of its network thread's CPU per message; such a
    PUBACK is only a packet id and at most one reason byte, so reason codes are
    made once per value and reused (nothing mutates them).

    >>> mid, rc = decode_puback(bytes([0, 5]))
    >>> mid, rc.value, rc.is_failure
    (5, 0, False)
    >>> mid, rc = decode_puback(bytes([1, 0, 0x87, 0]))
    >>> mid, str(rc), rc.is_failure
    (256, 'Not authorized', True)
    >>> decode_puback(bytes([0, 5, 0x87, 3, 0x1F, 0, 0])) is None  # has properties
    True
    """
    n = len(packet)
    if n < 2 or n > 4 or (n == 4 and packet[3] != 0):
        return None
    code = packet[2] if n > 2 else 0
    reason = _PUBACK_REASONS.get(code)
    if reason is None:
        reason = _PUBACK_REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
    return (packet[0] << 8) | packet[1], reason


class _Client(paho.Client):
    """paho's Client with the cheaper PUBACK decoding of :func:`decode_puback`.

    Everything else (and any PUBACK with properties) takes paho's own path.
    tests/unit/test_edge_mqtt.py checks the result against paho's decoder and
    that the paho internals used here still exist.
    """

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        fast = None
        if cmd == "PUBACK" and self._protocol == paho.MQTTv5:
            fast = decode_puback(self._in_packet["packet"])
        if fast is None:
            return super()._handle_pubackcomp(cmd)
        mid, reason = fast
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _no_properties())
        return MQTTErrorCode.MQTT_ERR_SUCCESS


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
        #: PUBACK outcomes, oldest first (appended on paho's thread, drained by the agent).
        self.acks: collections.deque[Acked] = collections.deque()
        self._unacked = 0  # messages handed to paho and not yet acknowledged
        #: Whether a completed burst of PUBACKs wakes the agent. The agent turns it
        #: off in steady state (its next sampling round collects them: deletes ride
        #: along with the next write anyway) and on while a backlog waits for room
        #: in the in-flight window. A refusal always wakes it.
        self.wake_on_ack = True
        self._count_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def set_online_payload(self, payload: bytes) -> None:
        """The retained status published on (re)connect; published now if connected."""
        self._online_payload = payload
        if self._client is not None and self.connected:
            self._publish(self._client, self._status_topic, payload, retain=True)

    def start(self) -> None:
        """Create the client and start connecting in the background (non-blocking)."""
        c = self._cfg
        client = _Client(
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
        info = self._publish(self._client, topic, payload, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise OSError(f"mqtt publish failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def _publish(
        self, client: paho.Client, topic: str, payload: bytes, *, retain: bool
    ) -> paho.MQTTMessageInfo:
        # Counted before paho has it: its PUBACK may come back before publish() returns.
        with self._count_lock:
            self._unacked += 1
        try:
            info = client.publish(topic, payload, qos=1, retain=retain)
        except BaseException:
            self._uncount()
            raise
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._uncount()  # refused by paho: no PUBACK will ever come
        return info

    def _uncount(self) -> bool:
        """One message less in flight; True when none is left."""
        with self._count_lock:
            self._unacked -= 1
            return self._unacked <= 0

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
            self._publish(client, self._status_topic, self._online_payload, retain=True)
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
        failed = bool(reason_code.is_failure)
        ack = Acked(mid, not failed, str(reason_code), int(reason_code.value))
        self.acks.append(ack)
        # Wake the agent once per burst, when nothing is left in flight (or at once
        # for a refusal); otherwise the acks wait in the deque for its next wake-up
        # (at most ~1 s): deleting acknowledged rows is never urgent.
        if (self._uncount() and self.wake_on_ack) or failed:
            self._events.put(AcksReady())

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._config_topic:
            self._events.put(ConfigReceived(bytes(msg.payload), bool(msg.retain)))
