"""Wiring and run loop: MQTT in, :func:`~gateway.bridge.bridge`, Kafka out, ack.

Delivery guarantee, end to end: an MQTT message is acknowledged only after
Kafka confirmed the record made from it (the record itself, or its dead
letter), so every message the broker accepted ends up in Kafka at least once.
Duplicates happen only when the gateway or its connection dies between the
Kafka write and the MQTT ack; consumers deduplicate by ``(device_id, seq)``.

Receipts (``[receipts]``, on by default): the seqs of the readings and gaps
Kafka confirmed are gathered per device (:class:`~gateway.receipts.ReceiptBook`)
and published every ``receipts.interval_s`` at QoS 0 on the device's receipt
topic, so a device may drop a reading only once it is in Kafka. Nothing is
confirmed before Kafka is, so a Kafka outage stops receipts and they resume
with it; with several gateways each confirms what it forwarded.

Acknowledgements go out in the order messages arrived (MQTT asks for that):
a window of in-flight messages, acknowledged from its head as the writes
complete. The window is bounded by the Receive Maximum the gateway announces
at connect; while Kafka is slow or down the window fills, the broker stops
sending and keeps the rest in the persistent session.

:class:`Gateway` takes its adapters (the ports of :mod:`gateway.ports`) in the
constructor; :func:`build_gateway` builds the real ones from the config.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.bridge import KafkaRecord, bridge, fallback_dead_letter
from gateway.config import GatewayConfig
from gateway.kafka import KafkaSetupError, KafkaSink
from gateway.metrics import Metrics
from gateway.mqtt import MqttSource
from gateway.ports import SYSTEM_CLOCK, Clock, Incoming, MessageSource, RecordSink
from gateway.receipts import ReceiptBook, publish_bytes, receipt_topic
from stagekit.health import HealthServer
from stagekit.kafka import warn_if_insecure
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import Reason, encode, kafka_topics, printable

__all__ = ["Gateway", "RetireOptions", "build_gateway"]

log = logging.getLogger(__name__)

#: Longest piece of device-controlled text (a topic) in one log line, in characters.
_TEXT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class RetireOptions:
    """How :meth:`Gateway.run` retires a gateway's MQTT session instead of serving.

    The gateway connects with the retired instance's client id and its
    persistent session, subscribes to nothing, forwards what the broker
    delivers from the session (acknowledging after Kafka as always) until
    nothing arrived for ``idle_s`` seconds, unsubscribes, waits ``idle_s``
    again for stragglers, and disconnects with Session Expiry Interval 0, so
    the broker deletes the session and stops queueing messages for it.
    """

    idle_s: float = 5.0
    timeout_s: float = 600.0


@dataclass(slots=True)
class _Entry:
    incoming: Incoming
    record: KafkaRecord
    done: bool = False


class Gateway:
    """One gateway process: call :meth:`run` inside an event loop.

    ``source`` and ``sink`` are started by :meth:`run` and stopped when it
    ends; a retiring gateway (``retire`` given) needs a source that does not
    subscribe (:func:`build_gateway` builds one).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        source: MessageSource,
        sink: RecordSink,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retire: RetireOptions | None = None,
    ) -> None:
        self.config = config
        self.retire = retire
        #: Set when a retirement finished: the session was ended on the broker.
        self.session_ended = False
        self.metrics = metrics or Metrics()
        self.topics = kafka_topics(config.kafka.topic_prefix)
        self.gateway_id = config.gateway_id
        self._source = source
        self._sink = sink
        self._wall_ms = clock.wall_ms
        self._monotonic = clock.monotonic
        self._window: collections.deque[_Entry] = collections.deque()
        # Per-message metric calls are the hot path's: cache the labelled
        # children, and read the in-flight gauge from the window when scraped.
        self.metrics.in_flight.set_function(lambda: len(self._window))
        #: In-flight bound: the Receive Maximum announced to the broker, enforced
        #: here too (by pausing reads) because a broker may not honour it.
        self._window_max = config.mqtt.receive_maximum
        #: Most messages ever held unacknowledged at once (the window's high-water
        #: mark); equal to ``receive_maximum`` means the window was exhausted.
        self.in_flight_max = 0
        self.metrics.in_flight_max.set_function(lambda: self.in_flight_max)
        self.metrics.receive_maximum.set(self._window_max)
        #: One log line per rejection reason every 10 s; the metrics keep exact counts.
        self._rejects = RateLimitedLog(lines=1, per_s=10.0)
        self._received: dict[str, Any] = {}
        self._forwarded: dict[str, Any] = {}
        self._last_message = 0.0
        self.received_count = 0
        self._stopping = False
        self._connection = 0
        self._health: HealthServer | None = None
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._fatal: str | None = None
        #: Seqs Kafka confirmed, per device, until their receipts go out (None: receipts off).
        self._receipts = (
            ReceiptBook(config.receipts.max_pending_ranges) if config.receipts.enabled else None
        )
        self._receipts_due = asyncio.Event()
        self._receipt_task: asyncio.Task[None] | None = None

    # --- public -------------------------------------------------------------

    @property
    def health_port(self) -> int | None:
        """Port of the HTTP endpoint once started (None when disabled)."""
        return None if self._health is None else self._health.port

    @property
    def in_flight(self) -> int:
        """Messages received and not yet acknowledged."""
        return len(self._window)

    def readiness(self) -> tuple[bool, str]:
        """Ready only when both MQTT and Kafka are connected and Kafka is not stalled."""
        mqtt_ok = self._source.connected
        kafka_ok = self._sink.healthy
        detail = (
            f"mqtt={'up' if mqtt_ok else 'down'} kafka={'up' if kafka_ok else 'down'} "
            f"in_flight={len(self._window)} in_flight_max={self.in_flight_max} "
            f"receive_maximum={self._window_max}"
        )
        return mqtt_ok and kafka_ok, detail

    def stop(self) -> None:
        """Ask :meth:`run` to finish (safe from signal handlers on the loop)."""
        self._stop.set()

    async def run(self) -> int:
        """Run until :meth:`stop`; returns the process exit code."""
        cfg = self.config
        log.info(
            "event=gateway_starting gateway_id=%s kafka_prefix=%s share_group=%s",
            self.gateway_id,
            cfg.kafka.topic_prefix,
            cfg.mqtt.share_group,
        )
        warn_if_insecure(cfg.kafka, log)
        if cfg.http.enabled:
            self._health = HealthServer(
                cfg.http.host, cfg.http.port, self.metrics.render, self.readiness
            )
            await self._health.start()
        watchdog = asyncio.create_task(self._watch())
        try:
            # Kafka first (retried until it answers, or until told to stop):
            # a message read before Kafka is there could not be acknowledged.
            if await self._until_stopped(self._sink.start(self._on_written)):
                self._source.start(self._on_message, self._on_connected)
                if self._receipts is not None:
                    self._receipt_task = asyncio.create_task(self._send_receipts_forever())
                if self.retire is None:
                    await self._stop.wait()
                else:
                    await self._until_stopped(self._retire_session(self.retire))
        except KafkaSetupError as exc:
            self._fatal = str(exc)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self._shutdown()
        if self._fatal:
            log.error("event=gateway_fatal error=%s", self._fatal)
            return 1
        return 0

    # --- message path (event loop) ------------------------------------------

    def _on_connected(self, connection: int) -> None:
        """A new MQTT connection: forget the messages that came on older ones.

        The broker re-sends every unacknowledged message on the new connection,
        so the old window entries would never be acknowledged. Their Kafka
        writes still complete (a duplicate, which is allowed).
        """
        self._connection = connection
        self._last_message = self._monotonic()  # idle time counts from the connection
        stale = sum(1 for e in self._window if e.incoming.connection != connection)
        if not stale:
            return
        self._window = collections.deque(
            e for e in self._window if e.incoming.connection == connection
        )
        log.info("event=mqtt_window_reset dropped=%d connection=%d", stale, connection)
        self._drain()  # the new head may be written already

    def _on_message(self, incoming: Incoming) -> None:
        if self._stopping or incoming.connection != self._connection:
            return  # not acknowledged: the broker re-sends it
        record = self._record_for(incoming)
        counter = self._received.get(record.kind)
        if counter is None:
            counter = self._received[record.kind] = self.metrics.received.labels(record.kind)
        counter.inc()
        self.received_count += 1
        self._last_message = self._monotonic()
        entry = _Entry(incoming, record)
        self._window.append(entry)
        held = len(self._window)
        if held > self.in_flight_max:
            self.in_flight_max = held
        if held >= self._window_max:
            self._source.pause_reading()  # the broker keeps the rest
        self._sink.submit(record, entry)

    def _record_for(self, incoming: Incoming) -> KafkaRecord:
        """The record for one message: never raises, so the message is always acknowledged.

        :func:`~gateway.bridge.bridge` never raises; should it all the same
        (a bug), the message becomes a fallback dead letter here.
        """
        try:
            return bridge(
                incoming.topic,
                incoming.payload,
                received_ms=self._wall_ms(),
                gateway_id=self.gateway_id,
                topics=self.topics,
                max_bytes=self.config.bridge.max_payload_bytes,
                user_properties=incoming.user_properties,
                topic_root=self.config.mqtt.topic_root,
            )
        except Exception as exc:
            error = f"bridge: {type(exc).__name__}"
        return fallback_dead_letter(
            str(incoming.topic),
            bytes(incoming.payload),
            Reason.INVALID_VALUE,
            f"the gateway could not handle this message ({error})",
            received_ms=self._wall_ms(),
            gateway_id=self.gateway_id,
            topics=self.topics,
            error=error,
            stage="bridge",
        )

    def _on_written(self, token: object) -> None:
        """Kafka confirmed an entry's record: count it and acknowledge what we can."""
        assert isinstance(token, _Entry)
        token.done = True
        record = token.record
        if record.reason is None:
            counter = self._forwarded.get(record.kind)
            if counter is None:
                counter = self._forwarded[record.kind] = self.metrics.forwarded.labels(record.kind)
            counter.inc()
            seqs = record.seqs
            if seqs is not None and self._receipts is not None:
                if self._receipts.add(seqs.site, seqs.device_id, seqs.first, seqs.last):
                    self._send_receipts()  # the book is full: send now, drop nothing
                elif not self._receipts_due.is_set():
                    self._receipts_due.set()
        else:
            # A dead letter confirms nothing: a refused payload has no seq to trust.
            self._dead_lettered(record, token.incoming)
        if self._window and self._window[0] is token:
            self._drain()

    def _dead_lettered(self, record: KafkaRecord, incoming: Incoming) -> None:
        """Count a written dead letter; one rate-limited, sanitised line per reason."""
        reason = record.reason.value if record.reason is not None else "unknown"
        self.metrics.deadlettered.labels(reason).inc()
        if record.error is not None:
            # An error the contract does not name: a bug below the gateway.
            stage = record.error_stage or "unknown"
            self.metrics.unexpected_errors.labels(stage).inc()
            self._rejects.log(
                log,
                logging.WARNING,
                "event=dead_letter_unexpected_error error=%s reason=%s topic=%s bytes=%d",
                printable(record.error, _TEXT_LIMIT, quote=True),
                reason,
                printable(incoming.topic, _TEXT_LIMIT, quote=True),
                len(incoming.payload),
                key="error:" + stage,
            )
            return
        self._rejects.log(
            log,
            logging.INFO,
            "event=dead_letter reason=%s topic=%s bytes=%d",
            reason,
            printable(incoming.topic, _TEXT_LIMIT, quote=True),
            len(incoming.payload),
            key=reason,
        )

    def _drain(self) -> None:
        """Acknowledge, in arrival order, every message whose write is done."""
        window = self._window
        source = self._source
        while window and window[0].done:
            source.ack(window.popleft().incoming)
        if source.paused and len(window) <= self._window_max // 2:
            source.resume_reading()
        if not window:
            self._drained.set()

    # --- receipts -------------------------------------------------------------

    async def _send_receipts_forever(self) -> None:
        """Send the receipts ``receipts.interval_s`` after the first seq of a batch came in.

        Idle (nothing confirmed, e.g. while Kafka is down) it waits without waking.
        """
        interval = self.config.receipts.interval_s
        while True:
            await self._receipts_due.wait()
            await asyncio.sleep(interval)
            self._receipts_due.clear()
            self._send_receipts()

    def _send_receipts(self) -> None:
        """Publish a receipt per device for every seq Kafka confirmed since the last one.

        A receipt the broker connection cannot take is not kept (QoS 0): the
        device re-sends what no receipt covered, and its next copy is confirmed.
        """
        book = self._receipts
        if book is None or not len(book):
            return
        root = self.config.mqtt.topic_root
        sent = size = 0
        for receipt in book.take(gateway_id=self.gateway_id, now_ms=self._wall_ms()):
            topic, payload = receipt_topic(receipt, root), encode(receipt)
            if self._source.publish(topic, payload):
                sent += 1
                size += publish_bytes(topic, payload)
        if sent:
            self.metrics.receipts_sent.inc(sent)
            self.metrics.receipt_bytes.inc(size)

    # --- retiring a session ---------------------------------------------------

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` until it ends or :meth:`stop` is called; True if it ended.

        An exception of ``work`` is raised here.
        """
        task = asyncio.create_task(work)
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
        for t in (task, stopper):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t  # raises the exception of a failed ``work``
        return finished

    async def _retire_session(self, opts: RetireOptions) -> None:
        source = self._source
        deadline = self._monotonic() + opts.timeout_s
        if not await source.wait_connected(opts.timeout_s):
            self._fatal = source.fatal or "retire: could not connect to the MQTT broker"
            return
        if not source.session_present:
            log.info("event=retire_no_session client_id=%s", self.config.mqtt_client_id)
        else:
            if not await self._quiet(opts.idle_s, deadline):
                self._fatal = "retire: the session kept delivering until the timeout"
                return
            if not await source.unsubscribe():
                self._fatal = "retire: the broker did not confirm the unsubscribe"
                return
            if not await self._quiet(opts.idle_s, deadline):
                self._fatal = "retire: messages still unacknowledged at the timeout"
                return
        self.session_ended = True  # _shutdown disconnects with session expiry 0
        log.info(
            "event=gateway_retired client_id=%s session_present=%s received=%d",
            self.config.mqtt_client_id,
            source.session_present,
            self.received_count,
        )

    async def _quiet(self, idle_s: float, deadline: float) -> bool:
        """Wait until every message is acknowledged and none came for ``idle_s``."""
        while self._monotonic() < deadline:
            idle = self._monotonic() - self._last_message
            if not self._window and idle >= idle_s and self._source.connected:
                return True
            await asyncio.sleep(0.1)
        return False

    # --- supervision --------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.metrics.connected.labels("kafka").set(1 if self._sink.healthy else 0)
            fatal = self._source.fatal or self._sink.broken
            if fatal:
                self._fatal = fatal
                self._stop.set()

    async def _shutdown(self) -> None:
        self._stopping = True
        grace = self.config.gateway.shutdown_grace_s
        if self._window and grace > 0:
            log.info("event=gateway_draining in_flight=%d grace_s=%.1f", len(self._window), grace)
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        if self._receipt_task is not None:
            self._receipt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receipt_task
        self._send_receipts()  # for the writes completed while draining
        # paho's DISCONNECT is sent after the queued PUBACKs.
        await self._source.stop(end_session=self.session_ended)
        await self._sink.stop()
        if self._health is not None:
            await self._health.stop()
        log.info(
            "event=gateway_stopped unacknowledged=%d gateway_id=%s",
            len(self._window),
            self.gateway_id,
        )


def build_gateway(
    config: GatewayConfig,
    *,
    retire: RetireOptions | None = None,
    metrics: Metrics | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Gateway:
    """The gateway with its real adapters, built from ``config``.

    The MQTT source, the Kafka sink and the gateway share one
    :class:`~gateway.metrics.Metrics`; a retiring gateway's source subscribes
    to nothing (it only drains its session).
    """
    metrics = metrics or Metrics()
    return Gateway(
        config,
        source=MqttSource(config, metrics, subscribe=retire is None),
        sink=KafkaSink(config.kafka, kafka_topics(config.kafka.topic_prefix), metrics),
        metrics=metrics,
        clock=clock,
        retire=retire,
    )
