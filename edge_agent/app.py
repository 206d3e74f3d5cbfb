"""The edge agent: wiring, lifecycle and the main loop.

One main thread owns the decisions; helper threads only report:

* sensor reads run on a thread pool (:class:`~edge_agent.sensor_pool.SensorPool`)
  and collect :class:`~edge_agent.sensors.Sample` objects in a deque, waking
  the loop once per round (:mod:`edge_agent.events`);
* paho has no thread of its own: the loop drives it (``MqttLink.service``),
  so its callbacks (connection, PUBACK, config) run here too; only opening a
  connection runs on a connector thread.

Per round the loop hands the samples to the reading pipeline (judge, alarm,
store: :mod:`edge_agent.pipeline`), then the publisher hands stored rows to
MQTT within the in-flight window (:mod:`edge_agent.publisher`); a PUBACK
deletes the row (deletes are batched: losing one only re-sends a duplicate
of the same seq), or with receipts on (``outbox.receipts``) a reading waits
for the gateway's receipt, and everything stored is sent again after every
(re)connect and when a receipt is overdue (:mod:`edge_agent.receipts`). A
retained config message is applied or rejected (:mod:`edge_agent.remote_config`).
The loop pings the systemd watchdog, saves the detector state periodically,
and on stop flushes the outbox, saves the model and publishes the offline status.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.adapters import make_link, make_outbox, make_outputs, make_pool
from edge_agent.alerts import AlertTracker
from edge_agent.config import EdgeConfig
from edge_agent.detect import Detector
from edge_agent.errors import NoSensorError
from edge_agent.events import WakeQueue
from edge_agent.gpio import Outputs, StatusLight
from edge_agent.mqtt import Acked, ConfigReceived, Connected, Disconnected, Link, ReceiptReceived
from edge_agent.outbox import Outbox
from edge_agent.pipeline import ReadingPipeline
from edge_agent.publisher import Publisher
from edge_agent.receipts import ReceiptTracker
from edge_agent.remote_config import MAX_REASON_CHARS, Accepted, RemoteConfigGate
from edge_agent.sensor_pool import SensorPool
from edge_agent.sensors import Sample, now_ms
from edge_agent.status import Presence
from edge_agent.trust import ConfigTrust
from edge_agent.watchdog import Notifier, SystemdNotifier
from telemetry_contract import DeviceState, EdgeAlert, TopicKind, printable
from telemetry_contract.messages import MIN_TS_MS

__all__ = ["EdgeAgent"]

log = logging.getLogger(__name__)

#: Outbox state key: the newest remote config version applied (rollback protection).
_NEWEST_CONFIG_KEY = "remote_config_newest"


class EdgeAgent:
    """The agent: ``start()``, ``run(stop_event)``, ``shutdown()`` (idempotent).

    Every adapter may be given; one not given is built from ``config``
    (:mod:`edge_agent.adapters`). A given ``pool`` must deliver into the given
    ``events`` (``make_pool(config, events, ...)``). The MQTT link is started
    by :meth:`start` (and built there unless ``link`` is given).
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        pin_factory: Any = None,
        clock_ms: Callable[[], int] = now_ms,
        events: WakeQueue | None = None,
        pool: SensorPool | None = None,
        outbox: Outbox | None = None,
        outputs: Outputs | None = None,
        link: Link | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self._clock_ms = clock_ms
        # First: no pin factory (no GPIO here) fails with a hint before anything else.
        self.outputs = (
            outputs if outputs is not None else make_outputs(config, pin_factory=pin_factory)
        )
        self.events = events if events is not None else WakeQueue()
        self.outbox = outbox if outbox is not None else make_outbox(config, clock_ms=clock_ms)
        self.pool = pool if pool is not None else make_pool(config, self.events, clock_ms=clock_ms)
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        #: The MQTT link once started (None without MQTT).
        self.link: Link | None = None
        self._given_link = link
        self.presence = Presence(config.device, clock_ms=clock_ms)
        self.pipeline = ReadingPipeline(
            config, outbox=self.outbox, outputs=self.outputs, clock_ms=clock_ms
        )
        o = config.outbox
        #: Receipt bookkeeping (None: ``outbox.receipts`` off, delete on PUBACK).
        self.receipts = (
            ReceiptTracker(
                device_id=config.device.device_id,
                site=config.device.site,
                timeout_s=o.receipt_timeout_s,
                resend_max_s=o.resend_max_s,
            )
            if o.receipts
            else None
        )
        self.publisher = Publisher(self.outbox, config.mqtt, receipts=self.receipts)
        self.remote_config = RemoteConfigGate(
            topic=config.topic(TopicKind.CONFIG), trust=ConfigTrust.from_config(config)
        )
        self._interval = config.sampling.interval_s
        self._next_tick = 0.0
        self._started = False
        self._closed = False
        self._clock_warned = False

    # What the parts know ------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        """The per-sensor models (replaced when a remote config changes the detector)."""
        return self.pipeline.detector

    @property
    def tracker(self) -> AlertTracker:
        return self.pipeline.tracker

    @property
    def readings_stored(self) -> int:
        return self.pipeline.readings_stored

    @property
    def publish_refusals(self) -> int:
        """PUBACKs with an error reason code, since start."""
        return self.publisher.refusals

    @property
    def publish_retries(self) -> int:
        """Times refused rows were sent again."""
        return self.publisher.retries

    @property
    def receipts_applied(self) -> int:
        """Receipts accepted (the rows they cover deleted), since start."""
        return 0 if self.receipts is None else self.receipts.applied

    @property
    def receipts_rejected(self) -> int:
        """Bad receipts (malformed, another device's, unallocated seqs), since start."""
        return 0 if self.receipts is None else self.receipts.rejected

    @property
    def overdue_resends(self) -> int:
        """Times everything stored was sent again because a receipt was overdue."""
        return 0 if self.receipts is None else self.receipts.overdue_resends

    @property
    def config_version(self) -> int:
        """Version of the remote config in force (0: the local file only)."""
        return self.presence.config_version

    # Lifecycle ------------------------------------------------------------------
    def start(self, *, mqtt: bool = True) -> None:
        """Open the outbox, restore the model, claim pins, find sensors, connect."""
        self._started = True
        self.events.open()
        self.outbox.open(defer_when_full=True)  # a full disk: run, count, Gap later
        self.pool.restore_stuck(self.pipeline.restore_stuck_runs())
        self.pipeline.restore_detector()
        newest = self.outbox.load_state(_NEWEST_CONFIG_KEY)
        self.remote_config.newest_applied = int(newest) if newest and newest.isdigit() else 0
        self.outputs.start()
        self.outputs.set_outputs_enabled(
            buzzer=self.config.alarm.buzzer_enabled, relay=self.config.alarm.relay_enabled
        )
        self.outputs.set_status(StatusLight.BUFFERING)
        if self.config.sensors.require_sensor:
            self.presence.sensors = self.pool.start()
        else:
            try:
                self.presence.sensors = self.pool.start()
            except NoSensorError as exc:  # wait for hot-plug
                log.warning("event=no_sensor_yet detail=%r", str(exc))
        if mqtt:
            link = self._given_link
            if link is None:
                link = make_link(self.config, self.events, self.presence)
            link.set_online_payload(self.presence.online_of_connection)
            link.start()
            self.link = link
        self._log_remote_config_policy()
        stats = self.outbox.stats()
        log.info(
            "event=agent_started device=%s sensors=%s next_seq=%d backlog=%d",
            self.config.device.device_id,
            ",".join(self.presence.sensors),
            stats.next_seq,
            stats.depth,
        )
        self.notifier.notify("READY=1")

    def run(self, stop: threading.Event) -> None:
        """The main loop, until ``stop`` is set."""
        last_save = last_ping = last_flush = time.monotonic()
        self._next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= self._next_tick:
                self.sample_round()
                self._next_tick += self._interval
                if self._next_tick < now:  # fell behind (suspend, overload): skip, do not burst
                    self._next_tick = now + self._interval
            # Sleep until the next round, a finished round, PUBACKs making room for a
            # backlog, or reads to spread over more threads (at most 1 s: the watchdog
            # ping). Every needless wake-up costs CPU.
            wait = min(self._next_tick - time.monotonic(), 1.0)
            spread_at = self.pool.spread_deadline()
            if spread_at is not None:
                wait = min(wait, spread_at - time.monotonic())
            self.process_events(max(0.0, wait))
            spread_at = self.pool.spread_deadline()
            if spread_at is not None and time.monotonic() >= spread_at:
                self.pool.spread()  # a slow or hung probe: the others do not wait for it
            self.pump()
            now = time.monotonic()
            if now - last_flush >= 60.0:
                # Deletes normally ride along with a reading transaction in batches
                # (Outbox.ack_batch); this bounds how long they wait without readings.
                self.outbox.flush_acks()
                last_flush = now
            if now - last_ping >= 1.0:
                self.check_receipts()
                self.notifier.notify("WATCHDOG=1")
                self._update_status_light()
                last_ping = now
            if now - last_save >= self.config.detector.save_interval_s:
                self.save_detector()
                last_save = now

    def shutdown(self) -> None:
        """Flush the outbox (bounded wait), save the model, go offline, release everything."""
        if self._closed or not self._started:
            return
        self._closed = True
        self.notifier.notify("STOPPING=1")
        self.pool.close()
        self.process_events(0.0)
        self.flush(self.config.outbox.flush_timeout_s)
        self.save_detector()
        if self.link is not None:
            self.link.stop(self.presence.status(DeviceState.OFFLINE, "shutdown"))
        self.outputs.close()
        stats = self.outbox.stats()
        self.outbox.close()
        self.events.close()
        log.info(
            "event=agent_stopped backlog=%d next_seq=%d awaiting_receipt=%d",
            stats.depth,
            stats.next_seq,
            stats.awaiting_receipt,
        )

    def flush(self, timeout_s: float) -> bool:
        """Publish the backlog and wait for its PUBACKs; True when the outbox is empty."""
        if self.link is None:
            return self.outbox.stats().depth == 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.link.connected:
                self.process_events(0.1)
                continue
            self.pump()
            if not self.publisher.inflight and self.outbox.pending_unsent() == 0:
                return True
            self.process_events(0.05)
        return False

    def sample_once(self, timeout_s: float) -> int:
        """One round, waited for until every sensor's reading is stored; how many were."""
        before = self.readings_stored
        self.sample_round()
        deadline = time.monotonic() + timeout_s
        while self.readings_stored - before < len(self.pool.sensor_ids()):
            if time.monotonic() > deadline:
                break
            self.process_events(0.1)
        return self.readings_stored - before

    def save_detector(self) -> None:
        """Save the models now (also done periodically and at shutdown)."""
        self.pipeline.save_detector()

    # The loop's steps -------------------------------------------------------------
    def sample_round(self) -> None:
        """Start reading every sensor (results arrive as events)."""
        if self._clock_ms() < MIN_TS_MS:
            if not self._clock_warned:
                self._clock_warned = True
                log.warning("event=clock_not_set detail='waiting for NTP before sampling'")
            return
        if self._clock_warned:
            self._clock_warned = False
            log.info("event=clock_set")
        self.pool.round()
        ids = self.pool.sensor_ids()
        if ids != self.presence.sensors:
            self.presence.sensors = ids
            if self.link is not None:
                self.link.set_online_payload(self.presence.online_of_connection)

    def process_events(self, timeout_s: float) -> None:
        """Handle everything that has arrived, waiting up to ``timeout_s`` for a wake-up.

        One ``select`` waits on the event queue's wake-up pipe and, when it
        matters (before CONNACK, a backlog waiting for room in the in-flight
        window, data to write), the MQTT socket. Samples and PUBACKs collect
        in deques; the sensor pool wakes this thread once per round, and in
        steady state PUBACKs are read at the next wake-up: each wake-up costs
        system calls and GIL hand-overs.
        """
        ev = self.events
        link = self.link
        batch: list[Any] = []
        fd = ev.fileno()
        if fd < 0:  # not started: a plain queue
            with contextlib.suppress(queue.Empty):
                batch.append(ev.get(timeout=timeout_s) if timeout_s > 0 else ev.get_nowait())
        else:
            if timeout_s > 0 and ev.empty():
                rd, wr = link.socket_fds() if link is not None else ([], [])
                select.select([fd, *rd], wr, [], timeout_s)
            ev.clear_wakeups()
        if link is not None:
            link.service()  # reads PUBACKs, CONNACK, config; writes; keepalive
        batch.extend(ev.drain())
        samples: list[Sample] = []
        acks: list[Acked] = []
        link_acks = link.acks if link is not None else None
        while link_acks:
            acks.append(link_acks.popleft())
        for item in batch:
            if isinstance(item, Acked):
                acks.append(item)
            elif isinstance(item, Sample):
                samples.append(item)
            elif isinstance(item, ReceiptReceived):
                self.handle_receipt(item.payload)
            elif isinstance(item, Connected | Disconnected):
                if isinstance(item, Connected):
                    self.publisher.request_resend()  # receipts: send what is not covered
                self._update_status_light()
            elif isinstance(item, ConfigReceived):
                self.handle_config(item.payload)
        refusals = self.publisher.refusals
        acked = self.publisher.settle(acks)
        if self.publisher.refusals != refusals:
            self._update_status_light()  # buffering while refused
        samples.extend(ev.take_samples())
        # Deletes ride along with the next reading transaction (one fsync for both).
        self.outbox.ack(acked, defer=True)
        if samples:
            self.handle_samples(samples)
        self._report_disk()

    def _report_disk(self) -> None:
        """Say in the status and the status light whether the disk is full."""
        ob = self.outbox
        text = "disk_full: the outbox cannot store readings" if ob.disk_full else None
        if self.presence.set_condition("disk_full", text):
            self._publish_status()
            self._update_status_light()

    def _publish_status(self) -> None:
        if self.link is not None:
            self.link.set_online_payload(self.presence.online_of_connection)

    def handle_samples(self, samples: list[Sample]) -> list[int]:
        """Judge, alarm, store (see :mod:`edge_agent.pipeline`); returns the seqs allocated."""
        return self.pipeline.handle(samples)

    def handle_receipt(self, payload: bytes) -> bool:
        """Delete what a receipt covers (with the next write); count a bad one; never raises."""
        if self.receipts is None:
            return False
        ranges = self.receipts.offer(payload, next_seq=self.outbox.next_seq)
        if ranges is not None:
            self.outbox.receipt(ranges)
        return ranges is not None

    def check_receipts(self) -> bool:
        """Send everything stored again if a receipt is overdue (and the backoff allows)."""
        if self.receipts is None or self.link is None or not self.link.connected:
            return False
        if not self.receipts.due(self.outbox.oldest_awaiting):
            return False
        self.publisher.request_resend()
        return True

    def pump(self) -> int:
        """Hand stored rows to MQTT, oldest first, within the in-flight window."""
        if self.link is None or not self.link.connected:
            return 0
        return self.publisher.pump(self.link)

    def _update_status_light(self) -> None:
        if self.tracker.fault_active or self.outbox.disk_full:
            self.outputs.set_status(StatusLight.FAULT)
        elif self.link is not None and self.link.connected and self.publisher.flowing:
            self.outputs.set_status(StatusLight.CONNECTED)
        else:
            self.outputs.set_status(StatusLight.BUFFERING)

    # Remote configuration -------------------------------------------------------------
    def handle_config(self, payload: bytes) -> bool:
        """Apply a retained DeviceConfig if valid and newer; reject it with an alert if not.

        Never raises: whatever the payload, one bounded log line and the agent
        goes on with the last good configuration.
        """
        try:
            got = self.remote_config.offer(
                payload,
                current=self.config,
                version=self.presence.config_version,
                now_ms=self._clock_ms(),
            )
            if isinstance(got, Accepted):
                self._apply(got)
        except Exception as exc:  # a bug here must cost one config, not the agent
            why = printable(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS)
            log.error("event=config_failed error=%s", why)
            return False
        rejected = self.remote_config.last_rejected
        text = None
        if rejected is not None:
            text = f"config_rejected: version {rejected.version}: {rejected.reason}"
        if self.presence.set_condition("config_rejected", text):
            self._publish_status()
        if isinstance(got, EdgeAlert):
            self.pipeline.store_alert(got)
        return isinstance(got, Accepted)

    def _log_remote_config_policy(self) -> None:
        """One line at start on what remote configs this agent accepts (a warning when insecure)."""
        trust = self.remote_config.trust
        keys = ",".join(sorted(trust.keys)) or "none"
        if trust.allow_unsigned:
            log.warning(
                "event=remote_config_unsigned_allowed keys=%s detail=%r",
                keys,
                "[remote_config] allow_unsigned = true: anyone who can publish on this "
                "device's config topic can change its configuration",
            )
        elif not trust.keys:
            log.warning(
                "event=remote_config_off detail=%r",
                "no [remote_config] public_key_file: every remote config is refused",
            )
        else:
            log.info(
                "event=remote_config_signed keys=%s safety_changes=%s",
                keys,
                "allowed" if trust.allow_safety_changes else "refused",
            )

    def _apply(self, got: Accepted) -> None:
        new = got.config
        self.pipeline.reconfigure(new)  # first: the only step that may fail (a new detector)
        self.config = new
        self.presence.config_version = got.version
        if got.version > self.remote_config.newest_applied:
            self.remote_config.newest_applied = got.version
            self.outbox.save_state(_NEWEST_CONFIG_KEY, str(got.version).encode())
        if new.sampling.interval_s != self._interval:
            self._interval = new.sampling.interval_s
            # Takes effect within one (new) interval, not after the old one.
            self._next_tick = min(self._next_tick, time.monotonic() + self._interval)
        self.outputs.set_outputs_enabled(
            buzzer=new.alarm.buzzer_enabled, relay=new.alarm.relay_enabled
        )
        if self.link is not None:
            self.link.set_online_payload(self.presence.online_of_connection)
        log.info(
            "event=config_applied version=%d interval_s=%s detector=%s",
            got.version,
            new.sampling.interval_s,
            new.detector.name,
        )
