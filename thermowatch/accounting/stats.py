"""Latency percentiles for the demo's summary and the benchmarks.

>>> percentiles([3, 1, 2], qs=(50,))
{'p50': 2}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["percentiles"]


def percentiles(
    values: Iterable[float], qs: Sequence[int] = (50, 95, 99)
) -> dict[str, float | None]:
    """Nearest-rank percentiles (``None`` when there is no value).

    >>> percentiles([10, 20, 30, 40])
    {'p50': 20, 'p95': 40, 'p99': 40}
    >>> percentiles([])
    {'p50': None, 'p95': None, 'p99': None}
    """
    data = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{q}"] = data[max(0, math.ceil(q / 100 * len(data)) - 1)] if data else None
    return out
