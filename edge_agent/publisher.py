"""The publishing pump: stored rows to MQTT in seq order, deleted only after their PUBACK.

At most ``mqtt.max_inflight`` rows are with the MQTT client at any time. A
PUBACK with an error reason code (135 not authorized, 151 quota exceeded...)
means the broker does not have the message: the row stays stored, publishing
pauses until the PUBACKs still due are in, and after a backoff
(``reconnect_min_s``, doubling per failed attempt up to ``reconnect_max_s``)
it resumes from the first refused row, so seq order is kept and nothing the
broker lacks is deleted. With ``mqtt.resend_unrouted`` (the default) PUBACK
16 "No matching subscribers" is handled the same way: the broker had nobody
to give the message to and dropped it.

With receipts (a :class:`~edge_agent.receipts.ReceiptTracker`), a PUBACKed
reading or Gap is not deleted: it awaits a receipt, and the publisher moves
the outbox's ``acked_through`` past it once no row at or below it is still
due a PUBACK or refused. :meth:`Publisher.request_resend` (after a
reconnect, or a receipt overdue) sends everything stored again, once the
PUBACKs still due are in, so no row is in flight twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from edge_agent.config import MqttSettings
from edge_agent.mqtt import Acked, Link
from edge_agent.outbox import Outbox
from edge_agent.receipts import ReceiptTracker
from stagekit.backoff import Backoff

__all__ = ["NO_MATCHING_SUBSCRIBERS", "Publisher"]

log = logging.getLogger(__name__)

#: MQTT v5 PUBACK reason code: the broker accepted the message but had no subscriber.
NO_MATCHING_SUBSCRIBERS = 16


class Publisher:
    """Hands outbox rows to a :class:`~edge_agent.mqtt.Link` and settles their PUBACKs."""

    def __init__(
        self,
        outbox: Outbox,
        mqtt: MqttSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        receipts: ReceiptTracker | None = None,
    ) -> None:
        self._outbox = outbox
        self._max_inflight = mqtt.max_inflight
        self._resend_unrouted = mqtt.resend_unrouted
        self._monotonic = monotonic
        #: paho mid -> outbox row id of every row handed out and not yet settled.
        self.inflight: dict[int, int] = {}
        self._resend_from: int | None = None  # lowest refused row id, not yet re-sent
        self._retry_at = 0.0  # monotonic time of the next attempt
        # Doubles per failed attempt (not per refused message), capped like reconnects.
        self._backoff = Backoff(mqtt.reconnect_min_s, mqtt.reconnect_max_s)
        #: The current refusal episode's backoff in seconds (0: not refusing).
        self.retry_s = 0.0
        #: PUBACKs with an error reason code, since start.
        self.refusals = 0
        #: Times refused rows were sent again.
        self.retries = 0
        self.receipts = receipts
        self._kept: set[int] = set()  # in-flight rows that await a receipt after their PUBACK
        self._resend_all = False  # send everything stored again, once nothing is in flight
        #: Times everything stored was sent again (reconnects, receipts overdue).
        self.resends = 0

    @property
    def flowing(self) -> bool:
        """Not paused by a refusal, and room in the in-flight window."""
        return self._resend_from is None and len(self.inflight) < self._max_inflight

    def pump(self, link: Link) -> int:
        """Hand stored rows to ``link`` (connected), oldest first, within the in-flight window."""
        if self._resend_from is not None:
            # Refused rows: wait out the backoff and the PUBACKs still due (so nothing
            # in flight is sent twice), then send again from the first refused row.
            if self.inflight or self._monotonic() < self._retry_at:
                return 0
            self._outbox.rewind(self._resend_from - 1)
            self._resend_from = None
            self.retries += 1
        elif self._resend_all and self.receipts is not None:
            # Not right after a refusal's rewind: its rows go first, and once their
            # PUBACKs are in, acked_through covers every row then stored and handed out.
            if self.inflight:  # paho sends those again itself after a reconnect
                return 0
            self._outbox.rewind(0)
            self.receipts.rewound()
            self._resend_all = False
            self.resends += 1
        room = self._max_inflight - len(self.inflight)
        rows = self._outbox.next_batch(room)
        for row in rows:
            mid = link.publish(row.topic, row.payload)
            self.inflight[mid] = row.id
            if self.receipts is not None and row.seq is not None:
                self._kept.add(row.id)
        # Rows left behind a full window (a backlog): PUBACKs must wake the loop to
        # make room. Otherwise the next round collects them (one wake-up less).
        link.wake_on_ack = len(rows) >= room
        return len(rows)

    def settle(self, acks: Iterable[Acked]) -> list[int]:
        """Account for PUBACKs; returns the row ids the broker has (to delete)."""
        acked: list[int] = []
        for ack in acks:
            row = self.inflight.pop(ack.mid, None)
            if row is None:
                continue  # a status message, not an outbox row
            kept = row in self._kept
            self._kept.discard(row)
            if ack.ok and not (ack.code == NO_MATCHING_SUBSCRIBERS and self._resend_unrouted):
                if not kept:
                    acked.append(row)
                if self.retry_s:
                    self._accepted()
            else:
                self._refused(row, ack)
        if self.receipts is not None:
            self._note_pubacked(self.receipts)
        return acked

    def request_resend(self) -> None:
        """Send every stored row again (receipts only): after a reconnect, or a receipt
        overdue. Waits for the PUBACKs still due, so no row is in flight twice."""
        if self.receipts is not None:
            self._resend_all = True

    def _note_pubacked(self, receipts: ReceiptTracker) -> None:
        """Rows up to the first still due a PUBACK (or refused) have all been PUBACKed."""
        through = self._outbox.handed_out
        if self.inflight:
            through = min(through, min(self.inflight.values()) - 1)
        if self._resend_from is not None:
            through = min(through, self._resend_from - 1)
        if through > 0:
            self._outbox.pubacked_through(through)
            receipts.pubacked(through)

    def _refused(self, row: int, ack: Acked) -> None:
        """The broker refused a row: keep it, back off, send it again later; log once."""
        self.refusals += 1
        if self._resend_from is not None:
            # Another refusal of the same attempt (the rest of a window): same backoff.
            self._resend_from = min(self._resend_from, row)
            return
        self._resend_from = row
        first = self.retry_s == 0.0
        self.retry_s = self._backoff.next()
        self._retry_at = self._monotonic() + self.retry_s
        if first:  # one line per refusal episode, not per message
            log.warning(
                "event=%s code=%d reason=%r row=%d retry_in_s=%.1f",
                # "Accepted" but dropped: nobody subscribes (no gateway yet, or a
                # broker that lost the gateway's subscription).
                "publish_unrouted" if ack.code == NO_MATCHING_SUBSCRIBERS else "publish_refused",
                ack.code,
                ack.reason,
                row,
                self.retry_s,
            )

    def _accepted(self) -> None:
        if self.retry_s and self._resend_from is None:
            log.info("event=publish_accepted_again refusals=%d", self.refusals)
            self.retry_s = 0.0
            self._backoff.reset()
