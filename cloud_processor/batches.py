"""One polled batch -> documents, alert changes, committable offsets, dead letters.

:meth:`BatchPreparer.prepare` decodes every record, turns readings into
documents, feeds every message to the rules, lists the readings that shape a
one-minute window (the write chain folds or recomputes their windows once
they are stored: :mod:`~cloud_processor.windowfold`), and notes which records
the rules hold for reordering (so that no commit passes them). It does no
I/O: the write chain stores what it returns.

A record it cannot handle -- one that breaks the contract, or one that makes
decoding, the rules or the document building raise anything at all -- is
skipped: nothing of it is stored, it becomes a bounded dead letter
(:mod:`~cloud_processor.quarantine`), and the offsets move past it like past
any other record. One record never stops the stream.

A reading whose one-minute window is further than
``aggregates.recompute_window_s`` from processing time is stored but shapes
no window (counted in ``readings_not_aggregated_total``): a flush recomputes
only windows near now, whatever a device claims its clock says.

The first records of a partition after its assignment are where
:class:`~cloud_processor.windowfold.LiveWindows` checks that it was this
process that read the partition last (:meth:`~cloud_processor.windowfold.LiveWindows.check`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cloud_processor.aggregates import window_start
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.metrics import Metrics
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Batch, Partition, Source
from cloud_processor.quarantine import (
    SKIPPED_LOG_LINES,
    SKIPPED_LOG_PER_S,
    dead_letter_for,
    log_skipped,
)
from cloud_processor.rules import FleetRules
from cloud_processor.windowfold import LiveWindows
from stagekit.ratelog import RateLimitedLog
from stagekit.search.indices import IndexNames
from telemetry_contract import (
    AlertChange,
    ContractError,
    DeadLetter,
    DeviceStatus,
    EdgeAlert,
    Gap,
    Reading,
    decode,
)

__all__ = ["BatchPreparer", "Prepared"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What one or more batches give the write chain."""

    readings: list[BulkItem] = field(default_factory=list)
    changes: list[AlertChange] = field(default_factory=list)
    #: Per partition, the offset after the batch's last record.
    offsets: dict[Partition, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Readings that shape their one-minute window, with their partition.
    windowed: list[tuple[Partition | None, Reading]] = field(default_factory=list)

    def merge(self, other: Prepared) -> None:
        """Append ``other`` (a later batch) to this one."""
        self.readings += other.readings
        self.changes += other.changes
        self.offsets.update(other.offsets)
        self.dead += other.dead
        self.windowed += other.windowed


class BatchPreparer:
    """Decodes and routes records to documents and the rules (pure but for metrics)."""

    def __init__(
        self,
        *,
        rules: FleetRules,
        names: IndexNames,
        locations: dict[str, tuple[float, float]],
        source: Source,
        offsets: Offsets,
        metrics: Metrics,
        recompute_window_s: float = 7 * 86_400.0,
        live: LiveWindows[Partition] | None = None,
    ) -> None:
        self.rules = rules
        self.names = names
        self.locations = locations
        self.source = source
        self.offsets = offsets
        self.metrics = metrics
        self.live = live
        self._reading_count = 0
        self._given_up = 0  # FleetRules.given_up already counted in the metric
        self._evicted = self._evicted_alerts = 0  # already counted in the metrics
        self._recompute_ms = int(recompute_window_s * 1000)
        self._skipped_log = RateLimitedLog(lines=SKIPPED_LOG_LINES, per_s=SKIPPED_LOG_PER_S)

    def prepare(self, batch: Batch, now_ms: int) -> Prepared:
        """Route every record of ``batch``, tick the rules, update the metrics."""
        out = Prepared()
        assigned = self.source.assignment()
        for tp, records in batch.items():
            if tp not in assigned or not records:
                continue  # revoked meanwhile: the new owner reads them again
            if self.live is not None and not self.live.checked(tp):
                self.live.check(tp, records[0].offset, now_ms)
            for rec in records:
                self._one(rec.value, now_ms, out, tp, rec.offset)
            out.offsets[tp] = records[-1].offset + 1
            self.offsets.consumed(tp, records[-1].offset + 1)
        out.changes += self.rules.tick(now_ms)
        self._count_reorder()
        self._count_evictions()
        if self._reading_count:
            self.metrics.records.labels("reading").inc(self._reading_count)
            self._reading_count = 0
        for tp in assigned:
            lag = self.offsets.lag(tp, self.source.highwater(tp))
            if lag is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        return out

    def _one(
        self, value: bytes | None, now_ms: int, out: Prepared, tp: Partition, offset: int
    ) -> None:
        """Route one record; skip it as a dead letter if anything goes wrong."""
        readings = len(out.readings)
        try:
            error: BaseException | None = self.route(value, now_ms, out, (tp, offset))
        except Exception as exc:  # a bug or an input nobody foresaw: skip, never stop
            del out.readings[readings:]  # store nothing of it
            self.metrics.invalid.inc()
            self.metrics.record_errors.labels(type(exc).__name__).inc()
            error = exc
        if error is None:
            return
        log_skipped(
            log, self._skipped_log, error, topic=tp.topic, partition=tp.partition, offset=offset
        )
        letter, _ = dead_letter_for(value or b"", error, topic=tp.topic, now_ms=now_ms)
        out.dead.append(letter)

    def route(
        self,
        value: bytes | None,
        now_ms: int,
        out: Prepared,
        where: tuple[Partition, int] | None = None,
    ) -> ContractError | None:
        """Route one record into ``out``; a record that breaks the contract is returned."""
        m = self.metrics
        try:
            msg = decode(value or b"", now_ms=now_ms)
        except ContractError as exc:
            m.invalid.inc()
            return exc
        if isinstance(msg, Reading):
            self._reading(msg, now_ms, out, where)
        elif isinstance(msg, Gap):
            m.records.labels("gap").inc()
            out.changes += self.rules.on_gap(msg, now_ms=now_ms)
        elif isinstance(msg, EdgeAlert):
            m.records.labels("edge_alert").inc()
            out.changes += self.rules.on_edge_alert(msg, now_ms=now_ms)
        elif isinstance(msg, DeviceStatus):
            m.records.labels("device_status").inc()
            out.changes += self.rules.on_status(msg, now_ms=now_ms)
        else:
            m.records.labels("other").inc()
        return None

    def _reading(
        self, r: Reading, now_ms: int, out: Prepared, where: tuple[Partition, int] | None
    ) -> None:
        self._reading_count += 1  # added to the metric once per batch: a hot path
        out.readings.append(
            BulkItem(
                Action.CREATE,
                self.names.readings_for(r.ts),
                reading_id(r),
                reading_doc(r, self.locations.get(r.device_id)),
            )
        )
        if r.temp_c is not None and r.quality.value == "ok":
            if abs(window_start(r.ts) - now_ms) <= self._recompute_ms:
                out.windowed.append((where[0] if where is not None else None, r))
            else:
                self.metrics.not_aggregated.labels("past" if r.ts < now_ms else "future").inc()
        out.changes += self.rules.on_reading(r, now_ms=now_ms)
        if where is not None and self.rules.is_held(r.device_id, r.seq):
            self.offsets.hold((r.device_id, r.seq), *where)

    def _count_evictions(self) -> None:
        rules, m = self.rules, self.metrics
        m.devices.set(rules.device_count)
        if rules.evicted > self._evicted:
            m.evicted.inc(rules.evicted - self._evicted)
            self._evicted = rules.evicted
        if rules.evicted_alerts > self._evicted_alerts:
            m.evicted_alerts.inc(rules.evicted_alerts - self._evicted_alerts)
            log.warning(
                "event=alerts_resolved_by_eviction count=%d limit=rules.max_devices",
                rules.evicted_alerts - self._evicted_alerts,
            )
            self._evicted_alerts = rules.evicted_alerts

    def _count_reorder(self) -> None:
        """Held readings and given-up seqs: metrics, and one warning per hole."""
        self.metrics.reorder_held.set(self.rules.held_count)
        if self.rules.given_up <= self._given_up:
            return
        self.metrics.reorder_given_up.inc(self.rules.given_up - self._given_up)
        self._given_up = self.rules.given_up
        for device_id, first, last in self.rules.take_given_up():
            log.warning(
                "event=seqs_given_up device=%s first_seq=%d last_seq=%d count=%d "
                "(no Gap announced them: lost in transit unless they arrive late)",
                device_id,
                first,
                last,
                last - first + 1,
            )
