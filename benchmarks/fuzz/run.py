"""Fuzz every parser of untrusted bytes with generated hostile inputs (issue 14).

``make fuzz`` runs 1,000,000 inputs, shared evenly by the targets of
:mod:`benchmarks.fuzz.targets` (contract decoders and dead letters, the
gateway's PUBLISH decoder and bridge, the processor's per-record routing, the
edge's remote-config gate, the web view's fold, the Kibana NDJSON check),
each input of one class of :mod:`testsupport.hostile` in turn.

For each target it reports the inputs, how many were refused the project's
way, the failures (any other exception, or a broken promise such as a dead
letter over its limit: each printed with its input, and the exit status is
1), the time per input (``time.perf_counter`` around the call alone, not
the generation: max, 99.9th percentile, mean; the largest CPU time,
``time.process_time``; and the 20 slowest inputs run again, best of 3, which
tells an expensive input from a machine that preempted the run), and the
peak memory of one call
(``tracemalloc``, on every ``--mem-every``-th input and on every input over
64 KiB, after each target's first 100; traced calls are left out of the times).

    python -m benchmarks.fuzz.run --inputs 1000000 --seed 1 --json out.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import json
import platform
import random
import sys
import time
import traceback
import tracemalloc
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.fuzz.targets import Target, targets
from testsupport.hostile import CLASSES, Hostile

_NDJSON = Path(__file__).resolve().parents[2] / "kibana" / "saved_objects" / "thermowatch.ndjson"
_BIG = 64 * 1024
#: Inputs of each target before memory is traced.
_WARM_UP = 100
#: How many of each target's slowest inputs are re-timed at the end.
_RETIME = 20


@dataclass
class Stats:
    inputs: int = 0
    accepted: int = 0
    failures: int = 0
    times: array = field(default_factory=lambda: array("d"))
    max_cpu: float = 0.0
    #: The slowest inputs (wall time, sequence number, class, input), re-timed at the end.
    slowest: list[tuple[float, int, str, Any]] = field(default_factory=list)
    retimed_max: float = 0.0
    max_bytes: int = 0
    peak_mem: int = 0
    peak_mem_input_bytes: int = 0
    traced: int = 0
    slowest_class: str = ""

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        n = len(ordered)
        return {
            "inputs": self.inputs,
            "accepted": self.accepted,
            "failures": self.failures,
            "max_ms": round(ordered[-1] * 1000, 3) if n else None,
            "max_cpu_ms": round(self.max_cpu * 1000, 3),
            "slowest_retimed_ms": round(self.retimed_max * 1000, 3),
            "p999_ms": round(ordered[min(n - 1, int(n * 0.999))] * 1000, 3) if n else None,
            "mean_us": round(sum(ordered) / n * 1e6, 1) if n else None,
            "slowest_class": self.slowest_class,
            "largest_input_bytes": self.max_bytes,
            "peak_mem_kib": round(self.peak_mem / 1024, 1),
            "peak_mem_input_bytes": self.peak_mem_input_bytes,
            "traced_inputs": self.traced,
        }


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        head = repr(value[:2000]) + (f" ... ({len(value)} bytes)" if len(value) > 2000 else "")
        full = base64.b64encode(value).decode() if len(value) <= 65536 else "(too large to print)"
        return f"{head}\n    base64: {full}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    text = repr(value)
    return text[:2000] + (f" ... ({len(text)} chars)" if len(text) > 2000 else "")


def fuzz(
    target: Target,
    n: int,
    rng: random.Random,
    hostiles: list[_ClassHostile],
    mem_every: int,
    stats: Stats,
) -> None:
    """Run ``n`` inputs through ``target``, the hostile classes in turn."""
    slowest = 0.0
    for i in range(n):
        klass = CLASSES[i % len(CLASSES)]
        for h in hostiles:
            h.next_class = klass
        arg = target.make(rng)
        size = target.size(arg)
        stats.max_bytes = max(stats.max_bytes, size)
        cpu = time.process_time()
        start = time.perf_counter()
        try:
            stats.accepted += bool(target.run(arg))
        except Exception as exc:
            stats.failures += 1
            if stats.failures <= 5:
                print(f"FAILURE {target.name} (class {klass}): {exc!r}", file=sys.stderr)
                traceback.print_exc(limit=6, file=sys.stderr)
                print(f"  input: {_show(arg)}", file=sys.stderr)
        took = time.perf_counter() - start
        cpu = time.process_time() - cpu
        stats.times.append(took)
        stats.max_cpu = max(stats.max_cpu, cpu)
        if took > slowest:
            slowest, stats.slowest_class = took, klass
        if len(stats.slowest) < _RETIME:
            heapq.heappush(stats.slowest, (took, i, klass, arg))
        elif took > stats.slowest[0][0]:
            heapq.heapreplace(stats.slowest, (took, i, klass, arg))
        # Memory: the same input again, traced (tracing slows a call several
        # times, so it is never the timed one). Not the first inputs: a first
        # call imports, compiles and fills caches.
        if i >= _WARM_UP and ((mem_every and i % mem_every == 0) or size > _BIG):
            tracemalloc.start()
            with contextlib.suppress(Exception):  # counted on the timed call
                target.run(arg)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            stats.traced += 1
            if peak > stats.peak_mem:
                stats.peak_mem, stats.peak_mem_input_bytes = peak, size
        stats.inputs += 1
    # A loaded machine preempts the process mid-call; the slowest inputs run
    # again (best of 3) tell an expensive input from a busy machine.
    for _, _, _, arg in stats.slowest:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            with contextlib.suppress(Exception):  # failures were counted above
                target.run(arg)
            best = min(best, time.perf_counter() - start)
        stats.retimed_max = max(stats.retimed_max, best)
    stats.slowest = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=1_000_000, help="total inputs (all targets)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="run the targets whose name contains this")
    parser.add_argument(
        "--mem-every", type=int, default=200, help="trace memory of every Nth input"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    lines = [line for line in _NDJSON.read_bytes().splitlines() if line.strip()]
    hostiles = {
        "any": _ClassHostile(random.Random(args.seed + 1)),
        "ndjson": _ClassHostile(random.Random(args.seed + 2), golden=lines),
        "device_config": _ClassHostile(random.Random(args.seed + 3), types=("device_config",)),
        "feed": _ClassHostile(
            random.Random(args.seed + 4), types=("reading", "device_status", "alert_change")
        ),
    }
    chosen = [t for t in targets(hostiles) if args.only in t.name]
    per = max(1, args.inputs // len(chosen))
    started = datetime.now(UTC)
    results: dict[str, dict[str, Any]] = {}
    total_failures = 0
    t0 = time.perf_counter()
    for target in chosen:
        stats = Stats()
        t1 = time.perf_counter()
        fuzz(target, per, rng, list(hostiles.values()), args.mem_every, stats)
        results[target.name] = stats.summary() | {"wall_s": round(time.perf_counter() - t1, 1)}
        total_failures += stats.failures
        print(_row(target.name, results[target.name]), flush=True)
    report = {
        "command": " ".join(["python -m benchmarks.fuzz.run", *(argv or sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "seed": args.seed,
        "inputs": sum(r["inputs"] for r in results.values()),
        "failures": total_failures,
        "python": platform.python_version(),
        "targets": results,
    }
    print(f"total: {report['inputs']} inputs, {total_failures} failures, {report['wall_s']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if total_failures else 0


def _row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:38} inputs={r['inputs']:>7} accepted={r['accepted']:>6} "
        f"failures={r['failures']:>3} "
        f"max={r['max_ms']} ms ({r['slowest_class']}) cpu max={r['max_cpu_ms']} ms "
        f"slowest re-timed={r['slowest_retimed_ms']} ms p99.9={r['p999_ms']} ms "
        f"mean={r['mean_us']} us peak={r['peak_mem_kib']} KiB "
        f"(input {r['peak_mem_input_bytes']} B) wall={r['wall_s']} s"
    )


class _ClassHostile(Hostile):
    """Makes the class the run asks for (round robin), whatever the target asks."""

    def __init__(
        self, rng: random.Random, golden: list[bytes] | None = None, *, types: tuple[str, ...] = ()
    ) -> None:
        super().__init__(rng, golden, types=types)
        self.next_class: str | None = None

    def make(self, kind: str | None = None) -> bytes:
        return super().make(kind or self.next_class)


if __name__ == "__main__":
    raise SystemExit(main())
