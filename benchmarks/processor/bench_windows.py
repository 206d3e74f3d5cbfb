"""Window flush: one-minute windows folded in memory vs recomputed by a query,
for the windows one commit interval touches at fleet scale.

Needs the search server of the local stack (``thermowatch stack up search``;
the ``THERMOWATCH_*`` variables name a private one). Results:
docs/benchmarks.md ("One-minute windows from memory")::

    python benchmarks/processor/bench_windows.py --devices 1000 8333 20000 --rounds 4

At one reading per device per minute and a 5 s commit interval, a flush
touches devices / 12 windows: 8,333 at 100,000 devices. Per round (one
minute of event time), every device's reading is stored through the
processor's own sink (which folds it), then the same windows are flushed
both ways, in alternating order, each writing its documents with the same
bulk request: *fold* (:meth:`LiveWindows.take_changed`) and *query* (a
refresh and the composite aggregation, ``Storage.compute_windows``, as every
flush did before). The two must give the same windows (checked every round).
Prints each round and the medians as JSON; deletes what it created.

``--memory-only N`` measures instead (no server) what the windows of N devices
held in memory cost, with :mod:`tracemalloc`: each device reporting once a
minute holds 3 windows at most with ``live_hold_s`` = 120 s::

    python benchmarks/processor/bench_windows.py --memory-only 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from cloud_processor.aggregates import DirtyWindows, WindowAggregate
from cloud_processor.batches import Prepared
from cloud_processor.chain import PendingWrite
from cloud_processor.config import ProcessorConfig, SearchSettings
from cloud_processor.documents import Action, BulkItem, reading_doc, reading_id
from cloud_processor.factory import make_storage
from cloud_processor.storage import Storage
from cloud_processor.testing import bare_sink, drop_prefix
from cloud_processor.windowfold import LiveWindows
from deploy.local.stack import LocalStack
from telemetry_contract import Reading

T0 = 1_767_225_600_000
MINUTE = 60_000


def minute_of_readings(devices: int, minute: int, rng: random.Random) -> list[Reading]:
    """One reading per device in ``minute``, at a random second."""
    return [
        Reading(
            device_id=f"dev-{d:06d}",
            sensor_id="probe",
            site=f"site-{d // 50:04d}",
            seq=minute + 1,
            ts=T0 + minute * MINUTE + rng.randrange(MINUTE),
            temp_c=round(rng.uniform(-25.0, 35.0), 2),
        )
        for d in range(devices)
    ]


async def flush(storage: Storage, windows: list[WindowAggregate]) -> None:
    await storage.write(storage.aggregate_items(windows))


async def one_size(storage: Storage, devices: int, rounds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    now = [T0]
    live: LiveWindows[str] = LiveWindows(hold_ms=120_000)
    sink = bare_sink(storage, live=live, now_ms=lambda: now[0])
    live.check("p0", 0, T0)
    out = []
    for minute in range(rounds):
        readings = minute_of_readings(devices, minute, rng)
        prepared = Prepared(
            readings=[
                BulkItem(
                    Action.CREATE, storage.names.readings_for(r.ts), reading_id(r), reading_doc(r)
                )
                for r in readings
            ],
            windowed=[("p0", r) for r in readings],
        )
        await sink.write(PendingWrite(prepared))  # stores the readings, folds them
        assert len(sink.requery) == 0
        dirty = DirtyWindows()
        for r in readings:
            dirty.add(r.device_id, r.site, r.ts)
        timings: dict[str, float] = {}
        got: dict[str, list[WindowAggregate]] = {}
        for arm in ("fold", "query") if minute % 2 == 0 else ("query", "fold"):
            t = time.perf_counter()
            if arm == "fold":
                windows = live.take_changed()
            else:
                windows = await storage.compute_windows(dirty)
            await flush(storage, windows)
            timings[arm] = time.perf_counter() - t
            got[arm] = sorted(windows, key=lambda w: (w.device_id, w.start))
        if got["fold"] != got["query"]:
            raise SystemExit(f"the two paths differ at minute {minute}")
        now[0] = T0 + (minute + 1) * MINUTE
        live.evict(now[0])
        row = {
            "minute": minute,
            "windows": len(got["fold"]),
            "fold_ms": round(timings["fold"] * 1000, 1),
            "query_ms": round(timings["query"] * 1000, 1),
            "ratio": round(timings["fold"] / timings["query"], 3),
        }
        print(json.dumps({"devices": devices, **row}), flush=True)
        out.append(row)
    return {
        "devices": devices,
        "rounds": out,
        "median_fold_ms": statistics.median(r["fold_ms"] for r in out),
        "median_query_ms": statistics.median(r["query_ms"] for r in out),
        "median_ratio": statistics.median(r["ratio"] for r in out),
        "windows_in_memory": len(live),
    }


def memory(devices: int, windows_per_device: int = 3) -> dict[str, Any]:
    """Bytes allocated per window held, folded from one reading each (the usual
    case at one reading a minute)."""
    rng = random.Random(0)
    readings = [r for m in range(windows_per_device) for r in minute_of_readings(devices, m, rng)]
    live: LiveWindows[str] = LiveWindows(hold_ms=120_000)
    live.check("p0", 0, T0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in readings:
        assert r.temp_c is not None
        live.fold("p0", r.device_id, r.site, seq=r.seq, ts=r.ts, temp_c=r.temp_c)
    live.take_changed()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "devices": devices,
        "windows": len(live),
        "bytes": used,
        "bytes_per_window": round(used / len(live)),
        "bytes_per_device": round(used / devices),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    endpoint = LocalStack().endpoints()["search"]
    results: dict[str, Any] = {"sizes": []}
    for n, devices in enumerate(args.devices):
        prefix = f"bench{uuid.uuid4().hex[:6]}-"
        config = ProcessorConfig(
            search=SearchSettings.from_endpoint(endpoint, "admin", index_prefix=prefix)
        )
        storage = make_storage(config)
        try:
            await storage.ensure_schema(now_ms=T0)
            results["sizes"].append(await one_size(storage, devices, args.rounds, seed=n))
        finally:
            await drop_prefix(storage.backend, storage.names)
            await storage.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 8333, 20000])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument(
        "--memory-only", type=int, metavar="N", help="only the memory of N devices' windows"
    )
    args = ap.parse_args()
    result = memory(args.memory_only) if args.memory_only else asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
