"""MQTT adapter (paho-mqtt 2.x, MQTT v5, QoS 1, persistent session).

Moves bytes and reports what happened; it decides nothing. Nothing here
touches the outbox.

* **No network thread.** paho is driven from the agent's main loop with its
  external-loop API (``loop_read``/``loop_write``/``loop_misc`` on the socket
  from :meth:`MqttLink.socket_fds`): ``publish()`` writes the PUBLISH to the
  socket at once, PUBACKs are read when the loop wakes, and every paho
  callback runs on the main thread. paho's own thread (``loop_start``) cost
  more CPU per message in wake-ups, locks and GIL hand-overs than the rest
  of the agent's work (measured in docs/benchmarks.md).
* Only the blocking part, opening the connection (TCP connect, TLS
  handshake, sending CONNECT: up to ``connect_timeout`` seconds against an
  unreachable broker), runs on a small connector thread, so it never stalls
  sampling, alarms or watchdog pings. While it runs the main loop leaves the
  client alone; once the socket is open the main loop owns it again.
* Stable client id + ``clean_start=False`` and, by default, no session kept
  after a disconnect (``session_expiry_s = 0``, see its comment in
  :mod:`edge_agent.config`): the config and receipt topics are subscribed
  again on every connect, the retained config arrives again, and the outbox
  re-sends whatever was not acknowledged.
* paho re-sends unacknowledged QoS 1 messages after a reconnect, so the
  agent never hands the same row out twice in one process; a restarted
  process starts from the outbox again (duplicates of a seq are possible,
  reuse of a seq is not).
* The ``DeviceStatus`` offline message is the last will; online is
  published on every connect. Neither is retained: the broker refuses retained
  messages from devices (docs/security.md), and the gateway's persistent
  session receives every status while it is away.
* Reconnect: full-jitter exponential backoff between ``reconnect_min_s`` and
  ``reconnect_max_s``.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import random
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttSettings
from stagekit.backoff import Backoff
from stagekit.mqttwire import BufferedClient

__all__ = [
    "Acked",
    "ConfigReceived",
    "Connected",
    "Disconnected",
    "Link",
    "MqttLink",
    "ReceiptReceived",
    "SocketOpened",
    "decode_puback",
]

log = logging.getLogger(__name__)

#: Fixed header byte of a PUBACK.
_PUBACK = 0x40


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
class SocketOpened:
    """Wake-up from the connector thread: the main loop owns the new socket."""


@dataclass(frozen=True, slots=True)
class ConfigReceived:
    payload: bytes
    retained: bool


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """A message on the device's receipt topic (decoded by the agent)."""

    payload: bytes


class Link(Protocol):
    """The port the agent drives: :class:`MqttLink`, or a test's fake."""

    #: PUBACK outcomes, oldest first (the agent drains them).
    acks: collections.deque[Acked]
    #: Whether the caller's wait should include the socket for PUBACKs.
    wake_on_ack: bool

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int: ...

    def set_online_payload(self, payload: bytes | Callable[[], bytes]) -> None: ...

    def socket_fds(self) -> tuple[list[int], list[int]]: ...

    def service(self) -> None: ...

    def stop(self, offline_payload: bytes | None = None, timeout_s: float = 2.0) -> None: ...


_PUBACK_REASONS: dict[int, ReasonCode] = {}


@functools.cache
def _no_properties() -> Properties:
    """One empty PUBACK ``Properties``, shared (made on first use: no work at import)."""
    return Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def decode_puback(packet: bytes | bytearray) -> tuple[int, ReasonCode] | None:
    """``(mid, reason)`` of an MQTT v5 PUBACK body that carries no properties, else None.

    paho 2.x builds a new ``ReasonCode`` and a new ``Properties`` object for
    every PUBACK, a large share of its CPU per message; such a
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


class _Client(BufferedClient):
    """paho's Client, made cheaper per message for an external loop.

    Socket reads are buffered (:class:`stagekit.mqttwire.BufferedClient`:
    one ``recv`` of up to 64 KiB serves a whole burst of PUBACKs), and PUBACKs
    are decoded by :func:`decode_puback`, through paho's own bookkeeping
    (``_do_on_publish``); everything else, and any PUBACK with properties,
    takes paho's own path.

    tests/unit/test_edge_mqtt.py checks the decoding against paho's and that
    the paho internals used here still exist.
    """

    def _fast_packet(self, first: int, body: bytearray) -> MQTTErrorCode | None:
        if first != _PUBACK or self._protocol != paho.MQTTv5:
            return None
        fast = decode_puback(body)
        if fast is None:
            return None
        mid, reason = fast
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _no_properties())
        return MQTTErrorCode.MQTT_ERR_SUCCESS

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


#: ``publish()`` outcomes that leave the message with paho, to be sent (again) on
#: the next connection: offline, or the connection broke while writing it.
_KEPT = (
    MQTTErrorCode.MQTT_ERR_SUCCESS,
    MQTTErrorCode.MQTT_ERR_NO_CONN,
    MQTTErrorCode.MQTT_ERR_CONN_LOST,
)


class MqttLink:
    """One device's MQTT connection, driven by the caller's loop (see the module docstring).

    The caller waits on the descriptors from :meth:`socket_fds` (plus its own
    wake-up descriptor; the connector thread puts :class:`SocketOpened` on
    ``events`` when a new socket is ready), then calls :meth:`service`.
    Connection and config events go to ``events``; PUBACK outcomes collect in
    :attr:`acks`, oldest first. Every method but :attr:`connected` belongs to
    the caller's thread.
    """

    def __init__(
        self,
        cfg: MqttSettings,
        *,
        client_id: str,
        password: str,
        status_topic: str,
        config_topic: str,
        will_payload: bytes | Callable[[], bytes],
        events: queue.Queue[Any],
        rng: random.Random | None = None,
        receipt_topic: str = "",
    ) -> None:
        self._cfg = cfg
        self._client_id = client_id
        self._password = password
        self._status_topic = status_topic
        self._config_topic = config_topic
        self._receipt_topic = receipt_topic  # "": receipts off, not subscribed
        self._receipt_sub_mid: int | None = None  # the SUBSCRIBE whose SUBACK says if allowed
        self._will = will_payload
        self._events = events
        rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        #: Reconnect delays: full jitter over [reconnect_min_s, min_s * 2**attempt],
        #: capped at reconnect_max_s, so a fleet that lost its broker comes back spread out.
        self.reconnect_backoff = Backoff(
            cfg.reconnect_min_s, cfg.reconnect_max_s, jitter="full", rng=rng.random
        )
        self._client: _Client | None = None
        self._online_payload: bytes | Callable[[], bytes] = b""
        self._connected = threading.Event()
        #: PUBACK outcomes, oldest first (appended by :meth:`service`, drained by the agent).
        self.acks: collections.deque[Acked] = collections.deque()
        #: Whether the caller's wait includes the socket once connected. The agent
        #: turns it off in steady state (its next wake-up collects the PUBACKs:
        #: deletes ride along with the next write anyway) and on while a backlog
        #: waits for room in the in-flight window. Before CONNACK it is always in.
        self.wake_on_ack = True
        # The connector thread owns the client while _connecting is set.
        self._cv = threading.Condition()
        self._connecting = False
        self._connect_at = 0.0  # monotonic time of the next connection attempt
        self._stopping = False
        self._connector: threading.Thread | None = None
        self._next_misc = 0.0  # monotonic time of the next keepalive check

    @property
    def connected(self) -> bool:
        """CONNACK received and the connection not lost since (any thread may ask)."""
        return self._connected.is_set()

    def set_online_payload(self, payload: bytes | Callable[[], bytes]) -> None:
        """The status published on (re)connect (not retained); published now if connected.

        Give a function to compose it afresh at every connection (and the will
        likewise, see ``will_payload``): a status carries its event time, and the
        processor orders a device's statuses by it, so a reconnection's
        "online" must be newer than the last will of the connection before.
        """
        self._online_payload = payload
        if self._client is not None and self.connected:
            self._client.publish(self._status_topic, _payload(payload), qos=1, retain=False)

    def start(self) -> None:
        """Create the client and start connecting on the connector thread (non-blocking)."""
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
        client.will_set(
            self._status_topic, _payload(self._will), qos=1, retain=False,
            properties=self._will_properties(),
        )  # fmt: skip
        client.max_inflight_messages_set(c.max_inflight)
        client.max_queued_messages_set(0)  # the agent bounds what it hands out
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = c.session_expiry_s
        client.connect_async(
            c.host, c.port, keepalive=c.keepalive_s, clean_start=False, properties=props
        )
        self._client = client
        self._connecting, self._connect_at, self._stopping = True, 0.0, False
        self._connector = threading.Thread(
            target=self._connect_loop, name=f"mqtt-connect-{self._client_id}", daemon=True
        )
        self._connector.start()
        log.info(
            "event=mqtt_start host=%s port=%d client_id=%s tls=%s",
            c.host,
            c.port,
            self._client_id,
            c.tls,
        )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Hand a QoS 1 message to paho (written at once if connected); returns its mid."""
        client = self._client
        if client is None:
            raise RuntimeError("MqttLink.start() was not called")
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in _KEPT:
            raise OSError(f"mqtt publish failed: {paho.error_string(info.rc)}")
        return info.mid

    def socket_fds(self) -> tuple[list[int], list[int]]:
        """Descriptors for the caller's ``select``: (wait to read, wait to write)."""
        client = self._client
        if client is None or self._connecting:
            return [], []
        sock = client.socket()
        if sock is None:
            return [], []
        fd = sock.fileno()
        # Before CONNACK (and while a broken connection closes) every byte matters.
        rd = [fd] if self.wake_on_ack or not self._connected.is_set() else []
        return rd, ([fd] if client.want_write() else [])

    def service(self) -> None:
        """Read what has arrived, write what waits, keep alive; never blocks.

        Called on every wake-up of the caller, whether or not the socket was
        in its ``select``: that is how PUBACKs are collected in steady state.
        A lost connection hands the client to the connector thread (after a
        backoff).
        """
        client = self._client
        if client is None or self._connecting:
            return
        if client.socket() is not None:
            rc = client.loop_read()
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._unread(client):
                rc = client.loop_read()
            if client.socket() is not None and client.want_write():
                client.loop_write()
            now = time.monotonic()
            if now >= self._next_misc and client.socket() is not None:
                self._next_misc = now + 1.0
                client.loop_misc()
        if client.socket() is None and not self._stopping:
            self._schedule_connect(self.reconnect_backoff.next())

    @staticmethod
    def _unread(client: _Client) -> bool:
        """Read data that no ``select`` would announce: our buffer, or TLS's."""
        if client.buffered():
            return True
        sock = client.socket()
        pending = getattr(sock, "pending", None)
        return sock is not None and pending is not None and pending() > 0

    def stop(self, offline_payload: bytes | None = None, timeout_s: float = 2.0) -> None:
        """Publish the offline status (if connected), disconnect, close; idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._connector is not None:
            # A connection attempt in progress ends within connect_timeout.
            self._connector.join(client.connect_timeout + 1.0)
            self._connector = None
        deadline = time.monotonic() + timeout_s
        if offline_payload is not None and self.connected and client.socket() is not None:
            info = client.publish(self._status_topic, offline_payload, qos=1, retain=False)
            self._drive(client, info.is_published, deadline)
        if client.socket() is not None:
            client.disconnect()  # paho closes the socket once DISCONNECT is written
            self._drive(client, lambda: client.socket() is None, deadline)
        if client.socket() is not None:
            client._sock_close()
        self._connected.clear()
        log.info("event=mqtt_stopped client_id=%s", self._client_id)

    @staticmethod
    def _drive(client: _Client, done: Any, deadline: float) -> None:
        """Run the network loop here until ``done()`` or the deadline (used by stop)."""
        while not done() and time.monotonic() < deadline:
            sock = client.socket()
            if sock is None:
                return
            wr = [sock] if client.want_write() else []
            select.select([sock], wr, [], max(0.0, min(0.05, deadline - time.monotonic())))
            if client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
                client.loop_write()

    # Connecting (connector thread) --------------------------------------------------
    def _schedule_connect(self, delay: float) -> None:
        with self._cv:
            if self._connecting or self._stopping:
                return
            self._connected.clear()
            self._connecting = True
            self._connect_at = time.monotonic() + delay
            self._cv.notify_all()

    def _will_properties(self) -> Properties:
        """The will's MQTT 5 properties: its Will Delay Interval (``will_delay_s``)."""
        props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        props.WillDelayInterval = self._cfg.will_delay_s
        return props

    def _connect_loop(self) -> None:
        """Connector thread: open connections when the main loop hands the client over."""
        c = self._cfg
        while True:
            with self._cv:
                while not self._stopping:
                    wait = self._connect_at - time.monotonic()
                    if self._connecting and wait <= 0:
                        break
                    self._cv.wait(wait if self._connecting else None)
                client = self._client
                if self._stopping or client is None:
                    return
            try:
                if callable(self._will):  # a will as of this connection (see set_online_payload)
                    client.will_set(
                        self._status_topic, self._will(), qos=1, retain=False,
                        properties=self._will_properties(),
                    )  # fmt: skip
                client.reconnect()  # TCP connect, TLS handshake, CONNECT written
                ok = client.socket() is not None
                error = "" if ok else "connection closed while sending CONNECT"
            except Exception as exc:  # refused, unreachable, TLS failure, timeout...
                ok, error = False, str(exc) or type(exc).__name__
            with self._cv:
                if ok:
                    self._connecting = False
                else:
                    delay = self.reconnect_backoff.next()
                    self._connect_at = time.monotonic() + delay
                    log.warning(
                        "event=mqtt_connect_failed host=%s port=%d error=%r retry_in_s=%.1f",
                        c.host,
                        c.port,
                        error,
                        delay,
                    )
                    continue
            self._events.put(SocketOpened())  # wakes the main loop to wait for CONNACK

    # paho callbacks (the caller's thread, inside service()) ------------------------------
    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:  # paho closes the socket; service() reconnects later
            log.warning("event=mqtt_refused reason=%s", reason_code)
            return
        self.reconnect_backoff.reset()
        self._connected.set()
        if self._online_payload:
            online = _payload(self._online_payload)
            client.publish(self._status_topic, online, qos=1, retain=False)
        client.subscribe(self._config_topic, qos=1)
        if self._receipt_topic:
            # QoS 0: the gateway publishes receipts at QoS 0 (a missed one costs a re-send).
            _rc, self._receipt_sub_mid = client.subscribe(self._receipt_topic, qos=0)
        log.info(
            "event=mqtt_connected session_present=%s client_id=%s",
            flags.session_present,
            self._client_id,
        )
        self._events.put(Connected(bool(flags.session_present)))

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
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
        ok = not reason_code.is_failure
        self.acks.append(Acked(mid, ok, str(reason_code), reason_code.value))

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, codes: Any, _properties: Any
    ) -> None:
        if mid == self._receipt_sub_mid and any(c.is_failure for c in codes):
            # No receipts will come (e.g. an ACL without the receipt topic): everything
            # stays in the outbox and is re-sent with backoff. Once per connection.
            log.warning(
                "event=receipt_subscribe_refused topic=%s reason=%s",
                self._receipt_topic,
                ",".join(str(c) for c in codes),
            )

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        # paho re-raises a callback's exception out of its loop (our main loop): never
        # let one message do that (``topic`` decodes UTF-8 and may raise).
        try:
            if msg.topic == self._config_topic:
                self._events.put(ConfigReceived(bytes(msg.payload), bool(msg.retain)))
            elif self._receipt_topic and msg.topic == self._receipt_topic:
                self._events.put(ReceiptReceived(bytes(msg.payload)))
        except Exception as exc:
            log.warning("event=mqtt_message_dropped error=%s", type(exc).__name__)


def _payload(value: bytes | Callable[[], bytes]) -> bytes:
    """A payload given as bytes, or as a function composing it now."""
    return value() if callable(value) else value
