"""Exact accounting of readings: was every seq the edge allocated stored exactly once?

The pure core: three inputs in, a verdict out, no I/O (the sources in this
package fetch the inputs):

* **allocated**: the seqs each device's outbox handed out (``0..next_seq-1``);
* **stored**: how many documents the search server holds per ``(device, seq)``;
* **gaps**: the ``Gap`` messages the edge published (seqs it had to drop and
  said so), read back from the Kafka telemetry topic.

Every allocated seq is exactly one of *stored* or *covered* (by a Gap) or
*lost*, and every stored copy beyond the first is *duplicated*.

>>> acc = account(
...     {"d1": range(5), "d2": range(3)},
...     {("d1", 0): 1, ("d1", 1): 2, ("d1", 3): 1, ("d2", 0): 1, ("d2", 1): 1, ("d2", 2): 1},
...     [GapRange("d1", 4, 4)],
... )
>>> acc.sent, acc.stored, acc.lost, acc.duplicated, acc.covered
(8, 6, 1, 1, 1)
>>> acc.lost_examples, acc.ok
((('d1', 2),), False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from telemetry_contract import ContractError, Gap, decode

__all__ = [
    "EXAMPLES",
    "Accounting",
    "GapRange",
    "account",
    "parse_gaps",
    "reading_keys",
]

#: How many lost / duplicated (device, seq) pairs a report names.
EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class GapRange:
    """Seqs ``first_seq..last_seq`` (inclusive) the edge of ``device_id`` declared dropped."""

    device_id: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Accounting:
    """The verdict: counts over allocated seqs, plus a few examples of each defect."""

    sent: int
    #: Allocated (device, seq) pairs with at least one stored document.
    stored: int
    #: Allocated, not stored, not covered by a Gap: a broken promise.
    lost: int
    #: Stored copies beyond the first (a broken promise too).
    duplicated: int
    #: Allocated, not stored, covered by a Gap: declared losses (outbox bounds).
    covered: int
    #: Stored pairs that no outbox allocated (foreign traffic or a seq bug).
    unexpected: int
    #: Seqs covered by a Gap although they were stored, or covered by two Gaps.
    gap_conflicts: int
    lost_examples: tuple[tuple[str, int], ...] = ()
    duplicated_examples: tuple[tuple[str, int], ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing stored twice, and the Gaps tell the truth."""
        return self.lost == 0 and self.duplicated == 0 and self.gap_conflicts == 0


def account(
    allocated: Mapping[str, Iterable[int]],
    stored: Mapping[tuple[str, int], int],
    gaps: Iterable[GapRange] = (),
) -> Accounting:
    """Compare what the edge allocated with what is stored and what Gaps cover.

    ``allocated`` maps a device to its seqs (usually ``range(next_seq)``);
    ``stored`` maps ``(device, seq)`` to its number of documents. Seqs of
    devices not in ``allocated`` count as ``unexpected`` and nothing else.

    >>> account({"d": range(3)}, {("d", 0): 1, ("d", 1): 1, ("d", 2): 1}).ok
    True
    >>> a = account({"d": range(4)}, {("d", 0): 1, ("x", 9): 1}, [GapRange("d", 1, 3)])
    >>> a.lost, a.covered, a.unexpected, a.ok
    (0, 3, 1, True)
    >>> account({"d": range(2)}, {("d", 0): 1}, [GapRange("d", 1, 1)] * 2).gap_conflicts  # re-sent
    0
    >>> account({"d": range(2)}, {("d", 0): 1, ("d", 1): 1}, [GapRange("d", 1, 1)]).gap_conflicts
    1
    """
    covered_by: dict[tuple[str, int], int] = {}
    # The same Gap twice is one declaration sent again (a reconnect, or an edge
    # re-sending what no receipt covered yet); two Gaps are two ranges.
    for g in dict.fromkeys(gaps):
        for seq in range(g.first_seq, g.last_seq + 1):
            key = (g.device_id, seq)
            covered_by[key] = covered_by.get(key, 0) + 1
    sent = stored_n = lost = covered = conflicts = 0
    lost_ex: list[tuple[str, int]] = []
    expected: set[tuple[str, int]] = set()
    for device, seqs in allocated.items():
        for seq in seqs:
            key = (device, seq)
            expected.add(key)
            sent += 1
            n_gaps = covered_by.get(key, 0)
            if n_gaps > 1:
                conflicts += 1
            if stored.get(key, 0) > 0:
                stored_n += 1
                if n_gaps:
                    conflicts += 1
            elif n_gaps:
                covered += 1
            else:
                lost += 1
                if len(lost_ex) < EXAMPLES:
                    lost_ex.append(key)
    duplicated = unexpected = 0
    dup_ex: list[tuple[str, int]] = []
    for key, count in sorted(stored.items()):
        if key not in expected:
            unexpected += 1
            continue
        if count > 1:
            duplicated += count - 1
            if len(dup_ex) < EXAMPLES:
                dup_ex.append(key)
    return Accounting(
        sent=sent,
        stored=stored_n,
        lost=lost,
        duplicated=duplicated,
        covered=covered,
        unexpected=unexpected,
        gap_conflicts=conflicts,
        lost_examples=tuple(lost_ex),
        duplicated_examples=tuple(dup_ex),
    )


def parse_gaps(values: Iterable[bytes], devices: Iterable[str]) -> list[GapRange]:
    """The ``Gap`` messages of ``devices`` among telemetry record values (others skipped).

    >>> gap = b'{"type": "gap", "device_id": "d", "site": "s", "first_seq": 3, "last_seq": 5,'
    >>> gap += b' "ts": 1767225600000, "reason": "outbox_full"}'
    >>> parse_gaps([gap, b"junk"], ["d"])
    [GapRange(device_id='d', first_seq=3, last_seq=5)]
    >>> parse_gaps([gap], ["other"])
    []
    """
    wanted = set(devices)
    gaps: list[GapRange] = []
    for value in values:
        if b'"gap"' not in value:
            continue
        try:
            msg = decode(value, now_ms=2**62)
        except ContractError:
            continue
        if isinstance(msg, Gap) and msg.device_id in wanted:
            gaps.append(GapRange(msg.device_id, msg.first_seq, msg.last_seq))
    return gaps


def reading_keys(values: Iterable[bytes]) -> dict[tuple[str, int], int]:
    """Records per ``(device_id, seq)`` of the readings among telemetry record values.

    Read leniently (no validation): a reading the gateway forwarded counts
    even if it would not decode today.

    >>> reading_keys([b'{"type": "reading", "device_id": "d", "seq": 1}'] * 2 + [b"[]", b"x"])
    {('d', 1): 2}
    """
    import json

    out: dict[tuple[str, int], int] = {}
    for value in values:
        try:
            body = json.loads(value)
            if body.get("type") != "reading":
                continue
            key = (str(body["device_id"]), int(body["seq"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        out[key] = out.get(key, 0) + 1
    return out
