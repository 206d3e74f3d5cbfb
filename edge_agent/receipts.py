"""Receipts on the edge: which receipts to believe, and when a missing one means re-send.

Pure logic, no I/O: the agent hands it receipt payloads, PUBACK progress and
the oldest row still awaiting a receipt; it answers with the seq ranges to
delete and whether to send everything stored again now.

* A receipt is decoded with the contract and checked against this device
  (device and site: any ``mqtt.topic_root``) and against the seqs this
  device has allocated. A bad one is counted and logged (one line per minute at most,
  a hostile publisher cannot flood the log) and deletes nothing.
* Overdue: the oldest row awaiting a receipt was PUBACKed ``timeout_s`` ago
  (default 30 s: the gateway confirms within its coalescing window plus a
  Kafka round trip, well under a second, so 30 s is many round trips and
  still short next to an outage). Then the agent sends what is stored
  again, with bounded exponential, jittered backoff between such re-sends
  while receipts keep not coming (``timeout_s``, doubling, up to
  ``resend_max_s``; reset when the oldest awaiting row moves on), so a
  Kafka outage does not make a fleet flood its broker with duplicates.
  Downstream stores a seq once (document id ``device_id:seq``), so a
  re-send costs bandwidth, never a duplicate document.
* The PUBACK times live here, in memory: after a restart everything stored
  is sent again anyway.

>>> t = [0.0]
>>> rt = ReceiptTracker(device_id="d", site="s", timeout_s=30.0, resend_max_s=600.0,
...                     monotonic=lambda: t[0], rng=lambda: 1.0)
>>> ok = (b'{"type":"receipt","device_id":"d","site":"s","ts":1767225600000,'
...       b'"ranges":[[0,4],[7,7]]}')
>>> rt.offer(ok, next_seq=10, now_ms=1_767_225_600_000)
[(0, 4), (7, 7)]
>>> rt.offer(b"junk", next_seq=10), rt.rejected
(None, 1)
>>> rt.pubacked(12); t[0] = 31.0
>>> rt.due(lambda: 5)  # row 5 (PUBACKed at 0 s) has no receipt after 31 s: re-send
True
>>> rt.rewound(); rt.pubacked(12); t[0] = 70.0
>>> rt.due(lambda: 5)  # still none: re-send (the backoff waited 30 s; next 60 s)
True
>>> rt.rewound(); rt.pubacked(12); t[0] = 110.0
>>> rt.due(lambda: 5)  # overdue again, but the backoff waits until 130 s
False
>>> t[0] = 130.0; rt.due(lambda: 5), rt.overdue_resends
(True, 3)
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable

from stagekit.backoff import Backoff
from stagekit.ratelog import RateLimitedLog
from telemetry_contract import Receipt, decode_as, printable

__all__ = ["ReceiptTracker"]

log = logging.getLogger(__name__)

#: Longest error text of a rejected receipt in the log.
_MAX_ERROR_CHARS = 200


class ReceiptTracker:
    """Receipts for one device (see the module docstring)."""

    def __init__(
        self,
        *,
        device_id: str,
        site: str,
        timeout_s: float,
        resend_max_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._device = (device_id, site)
        self.timeout_s = timeout_s
        self._monotonic = monotonic
        self._backoff = Backoff(timeout_s, max(timeout_s, resend_max_s), jitter="equal", rng=rng)
        # (row id, monotonic time): every row up to that id was PUBACKed by then; ascending.
        self._pubacked: collections.deque[tuple[int, float]] = collections.deque()
        self._resend_at = 0.0  # no overdue re-send before this (the backoff)
        self._stuck_row: int | None = None  # the oldest awaiting row at the last re-send
        self._log = RateLimitedLog(lines=1, per_s=60.0, clock=monotonic)
        #: Receipts accepted (their ranges deleted), rejected, and overdue re-sends, since start.
        self.applied = 0
        self.rejected = 0
        self.overdue_resends = 0

    def offer(
        self, payload: bytes, *, next_seq: int, now_ms: int | None = None
    ) -> list[tuple[int, int]] | None:
        """The seq ranges a receipt covers, or None when it is not a good one; never raises."""
        try:
            receipt = decode_as(payload, Receipt, now_ms=now_ms)
            if (receipt.device_id, receipt.site) != self._device:
                raise ValueError(
                    f"device_id: receipt for {receipt.site}/{receipt.device_id}, this is "
                    f"{self._device[1]}/{self._device[0]}"
                )
            last = receipt.ranges[-1][1]
            if last >= next_seq:
                raise ValueError(f"ranges: seq {last} was never allocated (next_seq {next_seq})")
        except Exception as exc:  # any payload: count it, delete nothing
            self.rejected += 1
            why = printable(f"{type(exc).__name__}: {exc}", _MAX_ERROR_CHARS)
            self._log.log(log, logging.WARNING, "event=receipt_rejected error=%s", why)
            return None
        self.applied += 1
        return [(first, end) for first, end in receipt.ranges]

    def pubacked(self, through_id: int) -> None:
        """Every row up to ``through_id`` has its PUBACK now (since the last send-all)."""
        if not self._pubacked or through_id > self._pubacked[-1][0]:
            self._pubacked.append((through_id, self._monotonic()))

    def rewound(self) -> None:
        """Everything stored is being sent again: PUBACK times start afresh."""
        self._pubacked.clear()

    def due(self, oldest_awaiting: Callable[[], int | None]) -> bool:
        """Whether to send everything stored again now: a receipt is overdue and the
        backoff allows it. ``oldest_awaiting`` (asked only when it may matter) gives
        the row id of the oldest row awaiting a receipt."""
        now = self._monotonic()
        if not self._pubacked or now - self._pubacked[0][1] < self.timeout_s:
            return False
        oldest = oldest_awaiting()
        while self._pubacked and (oldest is None or self._pubacked[0][0] < oldest):
            self._pubacked.popleft()  # those rows are all covered
        if self._stuck_row is not None and (oldest is None or oldest > self._stuck_row):
            log.info("event=receipts_resumed overdue_resends=%d", self.overdue_resends)
            self._stuck_row, self._resend_at = None, 0.0
            self._backoff.reset()
        if not self._pubacked or now - self._pubacked[0][1] < self.timeout_s:
            return False
        if now < self._resend_at:
            return False
        if self._stuck_row is None:  # one line per episode; the counter counts the rest
            log.warning("event=receipt_overdue row=%s timeout_s=%.1f", oldest, self.timeout_s)
        self._stuck_row = oldest
        self._resend_at = now + self._backoff.next()
        self.overdue_resends += 1
        return True
