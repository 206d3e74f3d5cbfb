"""Seq ranges for :class:`~telemetry_contract.Receipt`: from the seqs a gateway
forwarded to the compact ranges it sends, and back.

Pure functions, shared by the gateway (which builds receipts) and the edge
and tests (which read them).

>>> seq_ranges([5, 1, 2, 3, 9, 2])
[(1, 3), (5, 5), (9, 9)]
>>> merge_ranges([(1, 3), (4, 6), (10, 12)], [(7, 7), (11, 20)])
[(1, 7), (10, 20)]
>>> [len(c) for c in chunk_ranges([(i * 2, i * 2) for i in range(600)], 256)]
[256, 256, 88]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["chunk_ranges", "merge_ranges", "seq_ranges"]


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering exactly ``seqs`` (repeats allowed)."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def merge_ranges(*parts: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of inclusive ranges, sorted, with touching ranges joined."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(r for part in parts for r in part):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def chunk_ranges(ranges: Sequence[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """``ranges`` split into lists of at most ``size`` (one receipt each)."""
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    return [list(ranges[i : i + size]) for i in range(0, len(ranges), size)]
