"""Heap of one sensor's detector at the configuration bounds (docs/benchmarks.md).

python benchmarks/edge/detector_memory.py
"""

from __future__ import annotations

import random
import tracemalloc

from edge_agent.detect import Detector, Param

CASES: dict[str, tuple[str, dict[str, Param]]] = {
    "context cap 40000, orders 1..8, bins 1000": (
        "context",
        {"cap": 40000, "orders": "1,2,3,4,5,6,7,8", "bins": 1000, "warmup": 10},
    ),
    "context defaults": ("context", {}),
    "thermal defaults (1 s readings)": ("thermal", {"learning_h": 1.0}),
}


def main() -> None:
    Detector("zscore", {}).observe("warm-import", 1.0)  # river's import is not the model's cost
    for label, (name, params) in CASES.items():
        tracemalloc.start()
        det = Detector(name, params)
        rng = random.Random(1)
        for _ in range(20_000):
            det.observe("p", rng.uniform(0, 100))
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        state = len(det.dumps())
        print(f"{label}: {held / 2**20:.1f} MiB held, {peak / 2**20:.1f} MiB peak, "
              f"state {state / 2**10:.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
