"""The scale-out benchmark's pure parts: its configurations, the stored rate, the ratios.

``bench_scaleout.py`` runs one pipeline per configuration ``(gateways,
processors)`` and samples the number of readings in the index during its
measured step; these functions turn that into readings stored per second and
into ratios to the baseline configuration (one gateway, one processor).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BASELINE",
    "Config",
    "cpu_groups",
    "fits",
    "label",
    "markdown_table",
    "parse_configs",
    "ratios",
    "stored_rate",
]

#: ``(gateways per broker, processors)``.
Config = tuple[int, int]

#: The configuration every other one is compared with.
BASELINE: Config = (1, 1)


def label(config: Config) -> str:
    """``"<gateways>g<processors>p"``, the configuration's name in the results.

    >>> label((2, 1))
    '2g1p'
    """
    return f"{config[0]}g{config[1]}p"


def parse_configs(text: str) -> list[Config]:
    """The configurations of ``--configs``: ``GxP`` items, comma separated, run in that
    order (one may repeat, e.g. the baseline at the start and the end).

    >>> parse_configs("1x1, 1x2,2x1,1x1")
    [(1, 1), (1, 2), (2, 1), (1, 1)]
    >>> parse_configs("1x0")
    Traceback (most recent call last):
    ...
    ValueError: --configs: '1x0': gateways and processors must be at least 1
    """
    out: list[Config] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        g, sep, p = item.lower().partition("x")
        try:
            config = (int(g), int(p))
        except ValueError:
            raise ValueError(
                f"--configs: {item!r}: expected GATEWAYSxPROCESSORS, e.g. 1x2"
            ) from None
        if not sep or min(config) < 1:
            raise ValueError(f"--configs: {item!r}: gateways and processors must be at least 1")
        out.append(config)
    if BASELINE not in out:
        raise ValueError(f"--configs: the baseline {BASELINE[0]}x{BASELINE[1]} must be one of them")
    return out


def stored_rate(samples: Sequence[tuple[float, int]], start: float, end: float) -> float | None:
    """Readings stored per second between ``start`` and ``end`` (Unix s): the count's
    growth between the first and the last sample ``(time, count)`` inside that window
    (None with fewer than two; a sample of -1, a failed count, is skipped).

    >>> stored_rate([(0.0, 0), (2.0, 100), (12.0, 1100), (20.0, 1500)], 1.0, 15.0)
    100.0
    >>> stored_rate([(2.0, 100)], 1.0, 15.0) is None
    True
    """
    inside = [(t, n) for t, n in samples if start <= t <= end and n >= 0]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def ratios(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration label: its stored rates (one per run of it), their mean, and the
    mean's ratio to the baseline's mean (None when either has no rate).

    >>> r = ratios([{"config": "1g1p", "stored_per_s": 100.0},
    ...             {"config": "1g2p", "stored_per_s": 120.0},
    ...             {"config": "1g1p", "stored_per_s": 80.0}])
    >>> r["1g2p"]
    {'runs': [120.0], 'stored_per_s': 120.0, 'ratio_to_1g1p': 1.33}
    >>> r["1g1p"]["ratio_to_1g1p"], r["1g1p"]["runs"]
    (1.0, [100.0, 80.0])
    """
    by: dict[str, list[float]] = {}
    for row in rows:
        by.setdefault(str(row["config"]), [])
        if row.get("stored_per_s") is not None:
            by[str(row["config"])].append(float(row["stored_per_s"]))
    base_label = label(BASELINE)
    base = statistics.fmean(by[base_label]) if by.get(base_label) else None
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        mean = statistics.fmean(runs) if runs else None
        out[name] = {
            "runs": runs,
            "stored_per_s": round(mean, 1) if mean is not None else None,
            f"ratio_to_{base_label}": (
                round(mean / base, 2) if mean is not None and base else None
            ),
        }
    return out


#: Process-name prefixes of :func:`cpu_groups`, in the order of its result.
_GROUPS = ("gateway", "processor", "mosquitto", "kafka", "search", "load_generator")


def cpu_groups(cpu_percent: Mapping[str, float]) -> dict[str, float]:
    """A step's CPU per process (100 = one core) summed per kind of process, and the
    ``total`` (a name of no known kind is its own group).

    >>> cpu_groups({"processor0": 30.0, "processor1": 25.5, "kafka-1": 10.0, "kafka-2": 5.0,
    ...             "gateway0": 40.0, "load_generator": 20.0})
    {'gateway': 40.0, 'processor': 55.5, 'kafka': 15.0, 'load_generator': 20.0, 'total': 130.5}
    """
    out: dict[str, float] = {}
    for name, value in cpu_percent.items():
        group = next((g for g in _GROUPS if name.startswith(g)), name)
        out[group] = out.get(group, 0.0) + value
    ordered = {g: round(out.pop(g), 1) for g in _GROUPS if g in out}
    ordered |= {g: round(v, 1) for g, v in out.items()}
    ordered["total"] = round(sum(cpu_percent.values()), 1)
    return ordered


def fits(elapsed_s: float, durations_s: Sequence[float], budget_s: float) -> bool:
    """Whether one more configuration, taking as long as the longest so far, ends within
    ``budget_s`` (0: no budget) after ``elapsed_s``; the first one always runs.

    >>> fits(600.0, [200.0, 250.0], 900.0), fits(700.0, [200.0, 250.0], 900.0)
    (True, False)
    >>> fits(0.0, [], 60.0), fits(5000.0, [300.0], 0.0)
    (True, True)
    """
    if budget_s <= 0 or not durations_s:
        return True
    return elapsed_s + max(durations_s) <= budget_s


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of a run as the table of docs/benchmarks.md, in run order, each rate's
    ratio to the mean of the baseline's runs.

    >>> row = {"config": "1g1p", "offered_per_s": 3000.0, "stored_per_s": 1000.0,
    ...        "readings_lost": 0, "readings_duplicated": 0, "searchable_ms_p50": 900.0,
    ...        "searchable_ms_p99": 2000.0, "cpu_percent": {"total": 180.0},
    ...        "load_avg_1_5_15": [6.0, 5.0, 4.0]}
    >>> more = row | {"config": "1g2p", "stored_per_s": 1500.0, "searchable_ms_p50": None}
    >>> print("\\n".join(markdown_table([row, more]).splitlines()[2:]))
    | 1 | 1 × 1 | 3,000 | 1,000 | 1.00 | 0 | 0 | 900 / 2,000 | 180 | 6.0 |
    | 2 | 1 × 2 | 3,000 | 1,500 | 1.50 | 0 | 0 | – / 2,000 | 180 | 6.0 |
    """
    base = ratios(rows)[label(BASELINE)]["stored_per_s"]

    def num(x: Any) -> str:
        return "–" if x is None else f"{x:,.0f}"

    lines = [
        f"| # | gateways × processors | offered/s | stored/s | ratio to {label(BASELINE)} | lost "
        "| duplicated | searchable p50 / p99 ms | CPU % (all) | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        g, _, p = str(r["config"]).rstrip("p").partition("g")
        rate = r["stored_per_s"]
        ratio = f"{rate / base:.2f}" if rate is not None and base else "–"
        lines.append(
            f"| {i} | {g} × {p} | {num(r['offered_per_s'])} | {num(rate)} | {ratio} "
            f"| {r['readings_lost']} | {r['readings_duplicated']} "
            f"| {num(r['searchable_ms_p50'])} / {num(r['searchable_ms_p99'])} "
            f"| {num(r['cpu_percent'].get('total'))} | {r['load_avg_1_5_15'][0]:.1f} |"
        )
    return "\n".join(lines)
