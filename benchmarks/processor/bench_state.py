"""Rule state at fleet scale: memory per device, tick time, takeover rebuild cost.

No services: :class:`~cloud_processor.rules.FleetRules` in memory, processing
time simulated. Results: docs/benchmarks.md ("Processor state at 10k and 100k
devices")::

    taskset -c 0 python benchmarks/processor/bench_state.py --before d71ee67

For each fleet size (``--devices``) and share of active devices (``--active``):

1. every device reports six times, 10 s apart (rate windows full), then only
   the active ones go on reporting every 30 s, for 30 minutes of processing
   time, with a tick after every round (the processor ticks once per batch):
   the silent ones go stale (300 s) and, with this code, are compacted (900 s);
2. **tick**: the median wall time of the last 10 ticks (steady state, the
   active devices' readings of that round already judged) and, with this
   code, the devices a tick looked at (``StaleSensor.examined``);
3. **memory** (a second run of the same scenario under ``tracemalloc``):
   bytes held per device after the first phase (all active), and per idle
   device after the second (all devices idle, ``--active 0``: idle devices
   with their open stale alert), with this code also with the compact
   records in an SQLite file (``rules.state_spill_dir``; ``tracemalloc``
   does not see SQLite's own page cache, at most ~2 MB by default, nor the
   file: its size per device is printed);
4. **takeover** (this code, ``--active 0.1`` only): the alerts the fleet
   produced, as the alerts index would return them (JSON of the documents),
   decoded and restored into a fresh ``FleetRules`` (what a processor that
   takes over partitions does before judging, ``Processor._restore``), then
   the first reading of every device judged on it.

``--before REF`` runs the same scenario on the code at git ref REF (extracted
to a temporary directory, eviction left at its defaults there: a day idle, so
never within these 30 minutes) in a subprocess, and prints after / before.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from cloud_processor.rules import FleetRules
from cloud_processor.rules.settings import AlertSettings, RulesConfig
from telemetry_contract import Reading

T0 = 1_767_225_600_000
ROUND_MS = 30_000
#: Processing time simulated after the first phase: stale (300 s) and compaction
#: (from 900 s, at most 10,000 devices a tick) happen, and 10 ticks follow them.
RUN_MS = 1_800_000
ROOT = Path(__file__).resolve().parents[2]


def config() -> RulesConfig:
    """The rules of the processor benchmark; no limit on devices kept."""
    return RulesConfig(
        threshold_high_c=8.0,
        critical_high_c=12.0,
        threshold_low_c=-30.0,
        min_duration_s=60,
        rate_max_c_per_min=3.0,
        max_devices=1_000_000,
    )


def reading(d: int, seq: int, now: int) -> Reading:
    return Reading(
        device_id=f"dev-{d:06d}",
        sensor_id="host",
        site=f"site-{d // 50:04d}",  # 50 probes per store
        seq=seq,
        ts=now - 40,
        temp_c=4.0 + (d * 7 + seq) % 20 / 10,
    )


def scenario(
    devices: int, active: float, *, measure_memory: bool, records: Any = None
) -> dict[str, Any]:
    """Run one fleet; what it measured (``records``: where compact records go)."""
    if records is None:
        rules = FleetRules(config(), AlertSettings())
    else:
        rules = FleetRules(config(), AlertSettings(), records=records)
    if measure_memory:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    live = int(devices * active)
    # The changes are kept for the takeover only (not while measuring memory).
    changes: list[Any] = _Discard() if measure_memory else []  # type: ignore[assignment]
    now = T0
    for seq in range(1, 7):
        now = T0 + (seq - 1) * 10_000
        for d in range(devices):
            changes += rules.on_reading(reading(d, seq, now), now_ms=now)
        changes += rules.tick(now)
    out: dict[str, Any] = {"devices": devices, "active": active}
    if measure_memory:
        gc.collect()
        out["bytes_per_active_device"] = (tracemalloc.get_traced_memory()[0] - base) / devices
    ticks: list[float] = []
    stale = next((r for r in getattr(rules, "_rules", []) if hasattr(r, "examined")), None)
    examined: list[int] = []
    seq = 6
    start = now
    while now < start + RUN_MS:
        now += ROUND_MS
        seq += 1
        for d in range(live):
            changes += rules.on_reading(reading(d, seq, now), now_ms=now)
        before = stale.examined if stale is not None else 0
        t = time.perf_counter()
        changes += rules.tick(now)
        ticks.append(time.perf_counter() - t)
        examined.append((stale.examined if stale is not None else 0) - before)
    out["tick_ms_median_last10"] = statistics.median(ticks[-10:]) * 1000
    out["tick_ms_max"] = max(ticks) * 1000
    out["examined_per_tick_last10"] = statistics.mean(examined[-10:]) if stale else None
    out["compacted"] = len(getattr(rules, "_parked", {}))
    out["open_alerts"] = getattr(rules.book, "open_count", None) or len(rules.book.active_alerts())
    if measure_memory:
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        if live == 0:
            out["bytes_per_idle_device"] = held / devices
        else:
            out["bytes_held_per_device"] = held / devices
    elif active == 0.1:
        out.update(takeover(devices, changes, now + ROUND_MS))
    return out


class _Discard(list):  # type: ignore[type-arg]
    """A list that keeps nothing (``+=`` drops what it is given)."""

    def __iadd__(self, other: Any) -> _Discard:
        return self


def takeover(devices: int, changes: list[Any], now: int) -> dict[str, Any]:
    """Rebuild from the alerts index (its documents as JSON), then first readings."""
    from stagekit.search.alerts import alert_doc, alert_from_doc

    latest: dict[str, Any] = {}
    for change in changes:
        latest[change.alert.alert_id] = change.alert  # the index keeps the latest version
    body = json.dumps([alert_doc(a) for a in latest.values()]).encode()
    t = time.perf_counter()
    alerts = [alert_from_doc(doc) for doc in json.loads(body)]
    decoded = time.perf_counter()
    rules = FleetRules(config(), AlertSettings())
    rules.restore(alerts, now_ms=now)
    restored = time.perf_counter()
    for d in range(devices):
        rules.on_reading(reading(d, 10_000, now), now_ms=now)
    rules.tick(now)
    judged = time.perf_counter()
    return {
        "takeover_alert_docs": len(alerts),
        "takeover_json_mb": len(body) / 1e6,
        "takeover_decode_s": decoded - t,
        "takeover_restore_s": restored - decoded,
        "takeover_first_readings_s": judged - restored,
    }


def spill_store() -> Any:
    """The SQLite store of compact records, if this code has one."""
    try:
        from cloud_processor.spill import SpillStore
    except ImportError:
        return None
    return SpillStore


def child(args: argparse.Namespace) -> None:
    results = []
    for devices in args.devices:
        for active in args.active:
            run = scenario(devices, active, measure_memory=False)
            run.update(
                {
                    k: v
                    for k, v in scenario(devices, active, measure_memory=True).items()
                    if k.startswith("bytes")
                }
            )
            if active == 0 and spill_store() is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    store = spill_store()(tmp)  # type: ignore[misc]
                    spilled = scenario(devices, active, measure_memory=True, records=store)
                    run["bytes_per_idle_device_spilled"] = spilled["bytes_per_idle_device"]
                    run["spill_file_bytes_per_device"] = Path(store._path).stat().st_size / devices
                    store.close()
            results.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps(results))


def before(ref: str, argv: list[str]) -> list[dict[str, Any]]:
    """The same scenario on the code at ``ref`` (its cloud_processor, in a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "archive",
                ref,
                "cloud_processor",
                "stagekit",
                "telemetry_contract",
            ],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        script = Path(__file__).resolve()
        done = subprocess.run(
            [sys.executable, str(script), "--child", *argv],
            check=True,
            capture_output=True,
            env=env,
            cwd=tmp,
            text=True,
        )
        result: list[dict[str, Any]] = json.loads(done.stdout)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--active", type=float, nargs="+", default=[1.0, 0.1, 0.0])
    parser.add_argument("--before", metavar="REF", help="also run the code at this git ref")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    argv = ["--devices", *map(str, args.devices), "--active", *map(str, args.active)]
    old = before(args.before, argv) if args.before else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *argv],
        check=True,
        capture_output=True,
        env=env,
        text=True,
    )
    new = json.loads(done.stdout)
    keys = (
        "tick_ms_median_last10",
        "bytes_per_active_device",
        "bytes_held_per_device",
        "bytes_per_idle_device",
    )
    for i, run in enumerate(new):
        print(json.dumps(run))
        if old is not None:
            ratios = {
                f"{k} after/before": round(run[k] / old[i][k], 3)
                for k in keys
                if k in run and old[i].get(k)
            }
            print("  before:", json.dumps(old[i]))
            print("  ", json.dumps(ratios))


if __name__ == "__main__":
    main()
