"""One polled batch -> documents, alert changes, committable offsets, dead letters.

:meth:`BatchPreparer.prepare` decodes every record (a record that breaks the
contract becomes a dead letter), turns readings into documents, feeds every
message to the rules, marks the one-minute windows readings touched, and
notes which records the rules hold for reordering (so that no commit passes
them). It does no I/O: the write chain stores what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cloud_processor.aggregates import DirtyWindows
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.metrics import Metrics
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Batch, Partition, Source
from cloud_processor.rules import FleetRules
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
from telemetry_contract.deadletter import dead_letter

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

    def merge(self, other: Prepared) -> None:
        """Append ``other`` (a later batch) to this one."""
        self.readings += other.readings
        self.changes += other.changes
        self.offsets.update(other.offsets)
        self.dead += other.dead


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
    ) -> None:
        self.rules = rules
        self.names = names
        self.locations = locations
        self.source = source
        self.offsets = offsets
        self.metrics = metrics
        #: Windows touched since the last :meth:`take_dirty`.
        self.dirty = DirtyWindows()
        self._reading_count = 0
        self._given_up = 0  # FleetRules.given_up already counted in the metric

    def take_dirty(self) -> DirtyWindows:
        """The windows touched so far; later readings mark a fresh set."""
        dirty, self.dirty = self.dirty, DirtyWindows()
        return dirty

    def prepare(self, batch: Batch, now_ms: int) -> Prepared:
        """Route every record of ``batch``, tick the rules, update the metrics."""
        out = Prepared()
        assigned = self.source.assignment()
        for tp, records in batch.items():
            if tp not in assigned or not records:
                continue  # revoked meanwhile: the new owner reads them again
            for rec in records:
                error = self.route(rec.value, now_ms, out, (tp, rec.offset))
                if error is not None:
                    letter, _ = dead_letter(
                        rec.value or b"",
                        error.reason,
                        str(error),
                        source_topic=tp.topic,
                        received_ms=now_ms,
                    )
                    out.dead.append(letter)
            out.offsets[tp] = records[-1].offset + 1
            self.offsets.consumed(tp, records[-1].offset + 1)
        out.changes += self.rules.tick(now_ms)
        self._count_reorder()
        if self._reading_count:
            self.metrics.records.labels("reading").inc(self._reading_count)
            self._reading_count = 0
        for tp in assigned:
            lag = self.offsets.lag(tp, self.source.highwater(tp))
            if lag is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        return out

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
            log.warning("event=invalid_record error=%s", exc)
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
            self.dirty.add(r.device_id, r.site, r.ts)
        out.changes += self.rules.on_reading(r, now_ms=now_ms)
        if where is not None and self.rules.is_held(r.device_id, r.seq):
            self.offsets.hold((r.device_id, r.seq), *where)

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
