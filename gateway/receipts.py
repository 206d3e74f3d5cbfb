"""Receipts: which device seqs Kafka confirmed, gathered per device, as MQTT messages.

Pure: no I/O and no clock of its own. The run loop (:mod:`gateway.app`)
calls :meth:`ReceiptBook.add` for every record Kafka confirmed (acks=all)
that carries seqs (a reading's ``seq``, a gap's ``first_seq``..``last_seq``),
and every ``receipts.interval_s`` (or at once when :meth:`ReceiptBook.add`
says the book is full) publishes what :meth:`ReceiptBook.take` returns at
QoS 0 on each device's receipt topic. So a receipt only ever names seqs that
are in Kafka, and a device that supports receipts keeps a reading until one
covers it (re-sending it otherwise); a device that does not ignores them.

Dead letters carry no seqs: a payload the gateway refused gives no seq it can
trust, so no receipt ever names it.

Memory is bounded by ``max_ranges``: each device holds at least one range, so
it bounds the devices too. A full book is flushed early, never dropped.

>>> book = ReceiptBook(max_ranges=1000)
>>> for seq in (1, 2, 3, 7):
...     _ = book.add("s1", "d1", seq, seq)
>>> book.add("s1", "d2", 10, 14)  # a Gap's first_seq..last_seq
False
>>> [(r.device_id, r.ranges) for r in book.take(gateway_id="gw1", now_ms=1_767_225_600_000)]
[('d1', [(1, 3), (7, 7)]), ('d2', [(10, 14)])]
>>> book.take(gateway_id="gw1", now_ms=1_767_225_600_000)
[]
"""

from __future__ import annotations

from typing import Final

from telemetry_contract import Receipt, TopicKind, chunk_ranges, merge_ranges, mqtt_topic
from telemetry_contract.messages import MAX_RECEIPT_RANGES
from telemetry_contract.topics import TOPIC_ROOT

__all__ = ["DEFAULT_MAX_RANGES", "ReceiptBook", "publish_bytes", "receipt_topic"]

#: Default bound on the ranges held between two flushes (all devices together).
DEFAULT_MAX_RANGES: Final = 65_536

_Range = tuple[int, int]


class ReceiptBook:
    """Per-device seq ranges confirmed by Kafka since the last :meth:`take`.

    ``add`` is the hot path (one call per confirmed record): a seq that
    continues the device's last range extends it in place; anything else is
    appended and merged at :meth:`take` (:func:`~telemetry_contract.merge_ranges`).
    """

    __slots__ = ("_devices", "_held", "max_ranges")

    def __init__(self, max_ranges: int = DEFAULT_MAX_RANGES) -> None:
        if max_ranges < 1:
            raise ValueError(f"max_ranges: must be >= 1, got {max_ranges}")
        self.max_ranges = max_ranges
        #: (site, device_id) -> ranges as added (ascending runs extended in place).
        self._devices: dict[tuple[str, str], list[_Range]] = {}
        self._held = 0

    def __len__(self) -> int:
        """Ranges held (before merging); at most ``max_ranges`` if the caller flushes when told."""
        return self._held

    def add(self, site: str, device_id: str, first: int, last: int) -> bool:
        """Note that Kafka has seqs ``first``..``last`` of a device; True when full.

        Full means ``max_ranges`` ranges are held: take them now.

        >>> book = ReceiptBook(max_ranges=2)
        >>> book.add("s", "d", 1, 1), book.add("s", "d", 2, 5), book.add("s", "d", 9, 9)
        (False, False, True)
        """
        ranges = self._devices.get((site, device_id))
        if ranges is None:
            self._devices[(site, device_id)] = [(first, last)]
        else:
            prev_first, prev_last = ranges[-1]
            if prev_first <= first <= prev_last + 1:  # in order (the usual case): extend
                if last > prev_last:
                    ranges[-1] = (prev_first, last)
                return self._held >= self.max_ranges
            ranges.append((first, last))
        self._held += 1
        return self._held >= self.max_ranges

    def take(
        self, *, gateway_id: str, now_ms: int, max_ranges: int = MAX_RECEIPT_RANGES
    ) -> list[Receipt]:
        """The receipts for everything held (one per device, more when a device has
        more than ``max_ranges`` ranges), and an empty book."""
        devices, self._devices, self._held = self._devices, {}, 0
        out: list[Receipt] = []
        for (site, device_id), ranges in devices.items():
            merged = ranges if len(ranges) == 1 else merge_ranges(ranges)
            for chunk in chunk_ranges(merged, max_ranges):
                out.append(
                    Receipt(
                        device_id=device_id,
                        site=site,
                        ts=now_ms,
                        ranges=chunk,
                        gateway_id=gateway_id,
                    )
                )
        return out


def receipt_topic(receipt: Receipt, root: str = TOPIC_ROOT) -> str:
    """The MQTT topic a receipt goes to: ``<root>/<site>/<device_id>/receipt``.

    Site and device id were checked by the contract on the way in (they match
    the topic the device published on), so this does not raise for them.

    >>> r = Receipt(device_id="d1", site="s1", ts=1_767_225_600_000, ranges=[(0, 0)])
    >>> receipt_topic(r)
    'thermowatch/s1/d1/receipt'
    """
    return mqtt_topic(receipt.site, receipt.device_id, TopicKind.RECEIPT, root=root)


def publish_bytes(topic: str, payload: bytes) -> int:
    """Size on the wire of an MQTT v5 QoS 0 PUBLISH without properties.

    Fixed header (1 byte and the remaining length's 1-4), topic (2 + its
    UTF-8 bytes), property length (1 byte, 0), payload.

    >>> publish_bytes("thermowatch/s1/d1/receipt", b"x" * 99), publish_bytes("t", b"x" * 200)
    (129, 207)
    """
    remaining = 2 + len(topic.encode()) + 1 + len(payload)
    length_bytes, rest = 1, remaining >> 7
    while rest:  # the remaining length is a varint, 7 bits per byte
        length_bytes, rest = length_bytes + 1, rest >> 7
    return 1 + length_bytes + remaining
