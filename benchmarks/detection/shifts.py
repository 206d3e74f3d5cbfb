"""Change points: level shifts on a quiet 1 Hz probe, how many a detector flags at once.

Each seed is a stream of 21 level shifts of 0.2-1.0 °C (up or down, 5-15 min
apart) on a probe drifting 0.5 °C/h, with 0.03 °C noise and DS18B20
quantisation (0.0625 °C). A shift counts as caught when a reading in its first
10 s is flagged; a false onset is a flag (not continuing one) more than 2 min
after every shift.

Usage (from the repository root)::

    python -m benchmarks.detection.shifts                     # zscore, 5 seeds
    python -m benchmarks.detection.shifts --detector zscore --param window_s=120
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/detection/shifts.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.nab.run import parse_param
from edge_agent.detect import Param, SensorMonitor

STEP = 0.0625
SHIFTS = 21


def stream(seed: int) -> tuple[list[float], list[int]]:
    """The readings (1 s apart) and the index of each shift's first reading."""
    rng = random.Random(seed)
    level, t = 20.0, 0
    temps: list[float] = []
    shifts: list[int] = []

    def run(n: int) -> None:
        nonlocal t
        for _ in range(n):
            temps.append(round((level + 0.5 * t / 3600 + rng.gauss(0, 0.03)) / STEP) * STEP)
            t += 1

    for _ in range(SHIFTS):
        run(rng.randint(300, 900))
        shifts.append(t)
        level += rng.choice([-1, 1]) * rng.uniform(0.2, 1.0)
    run(600)
    return temps, shifts


def measure(name: str, params: Mapping[str, Param], seed: int) -> tuple[int, int, float]:
    """(shifts caught within 10 s, false onsets, hours) of one seed's stream."""
    temps, shifts = stream(seed)
    mon = SensorMonitor(name, params)
    flags = [mon.observe(x, i * 1000).is_anomaly for i, x in enumerate(temps)]
    caught = sum(any(flags[s : s + 10]) for s in shifts)
    near = {j for s in shifts for j in range(s, s + 120)}
    onsets = sum(1 for i, f in enumerate(flags) if f and i not in near and not flags[i - 1])
    return caught, onsets, len(temps) / 3600


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="detection-shifts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default="zscore")
    ap.add_argument("--param", action="append", type=parse_param, default=[], metavar="K=V")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args(argv)
    caught = onsets = 0
    hours = 0.0
    for seed in range(args.seeds):
        c, o, h = measure(args.detector, dict(args.param), seed)
        caught, onsets, hours = caught + c, onsets + o, hours + h
    print(
        f"{args.detector} {dict(args.param)}: caught {caught}/{SHIFTS * args.seeds} shifts "
        f"within 10 s; {onsets} false onsets in {hours:.1f} h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
