"""How fast the corpus is generated: CPU seconds per simulated device-week, per profile.

Usage (from the repository root)::

    python -m benchmarks.detection.speed                 # one week at 1 Hz per profile
    python -m benchmarks.detection.speed --interval-s 10
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/detection/speed.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_agent.equipment import PROFILES, generate

WEEK_S = 7 * 86400.0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="detection-speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for name in sorted(PROFILES):
        t0 = time.process_time()
        tr = generate(name, args.seed, duration_s=WEEK_S, interval_s=args.interval_s)
        cpu = time.process_time() - t0
        print(
            f"{name:<12} samples={len(tr)} cpu_s={cpu:.2f} "
            f"us_per_sample={1e6 * cpu / len(tr):.2f} events={len(tr.events)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
