"""Webhook notifications fed from the Kafka alerts topic, durable across crashes.

The processor publishes every alert change to ``<prefix>.alerts`` on its
write path (at least once, before it commits the reading that raised it).
:class:`AlertFeed` reads that topic with a consumer group of its own
(``webhook.group_id``, default ``<kafka.group_id>-notify``) and offers each
change to the :class:`~cloud_processor.dispatch.NotificationDispatcher`
(coalescing, rate limits, overflow), off the write path.

Delivery guarantee of this hop: an alerts-topic offset is committed only once
every change below it is *resolved* (:class:`Resolutions`): delivered,
superseded by a later change of the same alert key that was delivered,
refused by the receiver after ``webhook.max_attempts``, dropped on a full
queue (counted ``overflow``), not meant to be notified (late or suppressed
changes) or undecodable (logged). After a crash the feed re-reads from the
last commit, so the latest change of every alert key reaches the webhook; a
change delivered just before the crash may arrive again: a receiver drops
repeats by ``alert_id`` + ``version`` (in the body and in the
``X-Thermowatch-Change`` header).

Incidents (:mod:`cloud_processor.incidentlog`): with an :class:`IncidentLog`
the feed applies each alert change to the incident book, stores the incident
changes of a batch, and then offers to the dispatcher either the notified
incident changes (``webhook.notify = "incidents"``, the default) or the alert
changes as above (``"alerts"``); a change's offset is resolved once every
change it caused is. Receivers drop repeats by ``incident_id`` + ``version``:
every start (a clean redeploy too) offers again the latest notified change of
each open incident (:meth:`IncidentLog.restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence

from cloud_processor.dispatch import NotificationDispatcher
from cloud_processor.incidentlog import IncidentLog
from cloud_processor.metrics import Metrics
from cloud_processor.ports import Batch, Change, Partition, Source
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import AlertChange, IncidentChange, decode_alert_change

__all__ = ["AlertFeed", "Resolutions"]

log = logging.getLogger(__name__)

#: A change read from the topic: its partition, offset and the partition's epoch.
Ticket = tuple[Partition, int, int]


class Resolutions:
    """Which alerts-topic offsets may be committed (pure bookkeeping).

    Per partition, the offsets read and not yet resolved, and the offset after
    the last one read. What may be committed is the first unresolved offset
    (nothing at or above it), or, with none open, the offset after the last
    read. A partition taken away by the group (:meth:`revoke`) starts a new
    epoch: tickets of the old one resolve nothing.

    Offsets of a partition are read in increasing order, so a dict (insertion
    order) keeps them sorted: the first key is the lowest open offset.

    >>> book = Resolutions()
    >>> a, b, c = (book.read("p", off) for off in (10, 11, 12))
    >>> book.resolve(b); book.resolve(c)
    >>> book.committable()
    {'p': 10}
    >>> book.resolve(a); book.committable()
    {'p': 13}
    """

    def __init__(self) -> None:
        self._open: dict[Partition, dict[int, None]] = {}
        self._next: dict[Partition, int] = {}
        self._epoch: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    @property
    def unresolved(self) -> int:
        """Changes read and not resolved yet, over all partitions."""
        return sum(len(o) for o in self._open.values())

    def read(self, tp: Partition, offset: int) -> Ticket:
        """The change at ``tp``/``offset`` was read: open until resolved."""
        self._open.setdefault(tp, {})[offset] = None
        self._next[tp] = offset + 1
        return (tp, offset, self._epoch.get(tp, 0))

    def resolve(self, ticket: Ticket) -> None:
        """The change needs nothing more (idempotent; stale epochs are ignored)."""
        tp, offset, epoch = ticket
        if epoch == self._epoch.get(tp, 0) and tp in self._open:
            self._open[tp].pop(offset, None)

    def committable(self, assigned: Collection[Partition] | None = None) -> dict[Partition, int]:
        """Per partition (of ``assigned``), the offset to commit: the lowest
        unresolved one, else the one after the last read; only what moved since
        :meth:`committed`."""
        out: dict[Partition, int] = {}
        for tp, nxt in self._next.items():
            if assigned is not None and tp not in assigned:
                continue
            off = next(iter(self._open[tp]), nxt)
            if off != self._committed.get(tp):
                out[tp] = off
        return out

    def committed(self, offsets: dict[Partition, int]) -> None:
        """``offsets`` are committed."""
        self._committed.update(offsets)

    def revoke(self, revoked: Iterable[Partition]) -> None:
        """The group took these partitions away: forget them, start a new epoch."""
        for tp in revoked:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
            self._epoch[tp] = self._epoch.get(tp, 0) + 1


class AlertFeed:
    """Reads the alerts topic into ``dispatcher``, commits what is resolved.

    A :class:`~cloud_processor.ports.Notifier` only for its lifecycle: its
    :meth:`notify` does nothing (the changes reach it through the topic);
    :meth:`start` joins the group and starts reading; :meth:`close` stops
    reading, lets the dispatcher drain (``webhook.drain_timeout_s``), commits
    what is resolved and leaves the group. At most ``max_unresolved`` changes
    are read ahead of their resolution (then reading waits).
    """

    def __init__(
        self,
        source: Source,
        dispatcher: NotificationDispatcher,
        *,
        commit_interval_s: float = 5.0,
        poll_timeout_ms: int = 500,
        max_batch: int = 500,
        max_unresolved: int = 100_000,
        metrics: Metrics | None = None,
        incidents: IncidentLog | None = None,
        notify_incidents: bool = True,
        deliver: bool = True,
    ) -> None:
        self.source = source
        self.dispatcher = dispatcher
        self.incidents = incidents
        #: Offer incident changes (True) or alert changes (False) to the dispatcher.
        self.notify_incidents = notify_incidents and incidents is not None
        #: False: no webhook, the feed only keeps incidents (nothing is offered).
        self.deliver = deliver
        self.book = Resolutions()
        self.counts: Counter[str] = Counter()
        self._commit_interval_s = commit_interval_s
        self._poll_timeout_ms = poll_timeout_ms
        self._max_batch = max_batch
        self._max_unresolved = max_unresolved
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._restored = False
        self._closed = False
        self._bad_log = RateLimitedLog(lines=1, per_s=10.0)

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        """Nothing: the changes reach the feed through the alerts topic."""

    async def start(self) -> None:
        """Join the alerts group and start reading (idempotent).

        A start that fails (Kafka unreachable: the caller retries) leaves no
        half-started consumer behind, and the next call starts afresh; the
        open incidents are restored and offered again only once.
        """
        if self._started or self._closed:
            return
        self._started = True
        try:
            if self.incidents is not None and not self._restored:
                again = await self.incidents.restore()
                self._restored = True
                if self.notify_incidents and self.deliver:
                    for change in again:
                        self._offer(change, None)
            await self.source.start(self._on_revoked, self._on_assigned)
        except BaseException:
            self._started = False
            with contextlib.suppress(Exception):
                await self.source.stop()
            raise
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop reading, drain the dispatcher, commit what is resolved, leave."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.dispatcher.close()
        if self._started:
            try:
                await self.commit()
            except Exception as exc:  # the next start re-reads: repeats, never a gap
                log.warning("event=notify_commit_failed error=%s", type(exc).__name__)
            await self.source.stop()

    async def commit(self) -> None:
        """Commit, per partition, the offset below which every change is resolved.

        No lock: a rebalance commits from inside the consumer (``on_revoked``)
        while the loop may be committing; an overtaken commit can only move an
        offset back (a repeat after a crash), never past an unresolved change.
        """
        offsets = self.book.committable(self.source.assignment())
        if offsets and await self.source.commit(offsets):
            self.book.committed(offsets)

    async def _on_revoked(self, revoked: set[Partition]) -> None:
        try:
            await self.commit()
        except Exception as exc:
            log.warning("event=notify_commit_on_revoke_failed error=%s", type(exc).__name__)
        self.book.revoke(revoked)

    async def _on_assigned(self, assigned: set[Partition]) -> None:
        log.info("event=notify_partitions_assigned count=%d", len(assigned))

    async def _run(self) -> None:
        last_commit = time.monotonic()
        while True:
            try:
                if self.book.unresolved >= self._max_unresolved:
                    await asyncio.sleep(self._poll_timeout_ms / 1000)  # the queue catches up
                else:
                    batch = await self.source.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                    )
                    if self.incidents is None:
                        self.handle(batch)
                    else:
                        await self.handle_incidents(batch)
                        await self._settle([(None, self.incidents.expire())])
                if time.monotonic() - last_commit >= self._commit_interval_s:
                    last_commit = time.monotonic()
                    await self.commit()
                if self._metrics is not None:
                    self._metrics.notifications_unresolved.set(self.book.unresolved)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka trouble: log, wait, go on (never a gap)
                log.error("event=notify_feed_error error=%s", type(exc).__name__)
                await asyncio.sleep(1.0)

    def handle(self, batch: Batch) -> None:
        """Offer each change of ``batch`` to the dispatcher, with its ticket."""
        for tp, records in batch.items():
            for record in records:
                ticket = self.book.read(tp, record.offset)
                done = functools.partial(self.book.resolve, ticket)
                change = self._decode(tp, record.offset, record.value)
                if change is None or not change.notify:  # nothing to notify
                    done()
                    continue
                self.counts["read"] += 1
                self.dispatcher.offer(change, done)

    async def handle_incidents(self, batch: Batch) -> None:
        """Apply each change of ``batch`` to the incident book, store the incident
        changes, then offer what is notified (incident or alert changes)."""
        assert self.incidents is not None
        caused: list[tuple[Ticket | None, list[IncidentChange]]] = []
        alerts: dict[Ticket, AlertChange] = {}
        for tp, records in batch.items():
            for record in records:
                ticket = self.book.read(tp, record.offset)
                change = self._decode(tp, record.offset, record.value)
                if change is None:
                    self.book.resolve(ticket)
                    continue
                caused.append((ticket, self.incidents.apply(change)))
                if change.notify:
                    alerts[ticket] = change
        await self._settle(caused, alerts)

    async def _settle(
        self,
        caused: list[tuple[Ticket | None, list[IncidentChange]]],
        alerts: dict[Ticket, AlertChange] | None = None,
    ) -> None:
        """Store the incident changes, then offer each ticket's notified changes;
        a ticket resolves once all of them are."""
        assert self.incidents is not None
        await self.incidents.store([c for _, changes in caused for c in changes])
        for ticket, changes in caused:
            offers: list[Change]
            if not self.deliver:
                offers = []
            elif self.notify_incidents:
                offers = [c for c in changes if c.notify]
            else:
                alert = alerts.get(ticket) if alerts and ticket is not None else None
                offers = [] if alert is None else [alert]
            done = None if ticket is None else _countdown(len(offers), ticket, self.book)
            if done is not None and not offers:
                done()
            for change in offers:
                self._offer(change, done)

    def _offer(self, change: Change, done: Callable[[], None] | None) -> None:
        self.counts["read"] += 1
        if isinstance(change, IncidentChange) and self._metrics is not None:
            self._metrics.incident_notifications.labels(change.kind.value).inc()
        self.dispatcher.offer(change, done)

    def _decode(self, tp: Partition, offset: int, value: bytes | None) -> AlertChange | None:
        try:
            return decode_alert_change(value or b"")
        except Exception as exc:  # one bad record never stops the feed
            self.counts["undecodable"] += 1
            if self._metrics is not None:
                self._metrics.notifications_undecodable.inc()
            if (held := self._bad_log.take()) is not None:
                log.warning(
                    "event=alert_change_undecodable topic=%s partition=%d offset=%d "
                    "count=%d error=%s",
                    tp.topic,
                    tp.partition,
                    offset,
                    held + 1,
                    type(exc).__name__,
                )
            return None


def _countdown(n: int, ticket: Ticket, book: Resolutions) -> Callable[[], None]:
    """A callback that resolves ``ticket`` at its ``n``-th call (at once for 0)."""
    left = [n]

    def done() -> None:
        left[0] -= 1
        if left[0] <= 0:
            book.resolve(ticket)

    return done
