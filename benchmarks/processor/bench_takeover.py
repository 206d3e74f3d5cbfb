"""Takeover: how long a processor that takes over partitions needs to rebuild
rule state from the alerts index at fleet scale, before its rules judge again.

Needs the search server of the local stack (``thermowatch stack up search``;
the ``THERMOWATCH_*`` variables name a private one). Results:
docs/benchmarks.md ("Processor state at 10k and 100k devices")::

    python benchmarks/processor/bench_takeover.py --devices 100000 --rounds 3

1. The alerts of a fleet: every device reports once, then all but
   ``--active`` of them fall silent and open a ``stale_sensor`` alert;
   ``--churn`` of them also opened and resolved a threshold alert (resolved
   alerts of the last day are loaded too). Written to a private index prefix
   with the processor's own bulk upserts (``Storage.alert_item``).
2. Per round, what ``Processor._restore`` does when partitions are assigned:
   ``Storage.load_alerts`` (refresh, then pages of 1,000 sorted by
   ``alert_id``, open alerts and those changed within
   ``alerts.restore_resolved_s``), then ``FleetRules.restore`` into a fresh
   processor's rules; then the first reading of every device judged (each
   device's state is created, or rebuilt from the restored alerts).
3. Prints every round and the medians; deletes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from cloud_processor.config import AlertSettings, ProcessorConfig, RulesConfig, SearchSettings
from cloud_processor.factory import make_storage
from cloud_processor.rules import FleetRules
from cloud_processor.testing import drop_prefix
from deploy.local.stack import LocalStack
from telemetry_contract import Alert, Reading

T0 = 1_767_225_600_000
RULES = RulesConfig(threshold_high_c=8.0, min_duration_s=0, max_devices=1_000_000)


def reading(d: int, seq: int, now: int, temp: float = 4.0) -> Reading:
    return Reading(
        device_id=f"dev-{d:06d}",
        sensor_id="host",
        site=f"site-{d // 50:04d}",
        seq=seq,
        ts=now - 40,
        temp_c=temp,
    )


def fleet_alerts(devices: int, active: float, churn: float) -> tuple[list[Alert], int]:
    """The latest version of every alert the fleet produced, and the time after it."""
    rules = FleetRules(RULES, AlertSettings())
    latest: dict[str, Alert] = {}
    hot = int(devices * churn)
    for seq, temp in ((1, 9.0), (2, 4.0)):  # the churned ones open, then resolve
        for d in range(devices):
            for c in rules.on_reading(reading(d, seq, T0, temp if d < hot else 4.0), now_ms=T0):
                latest[c.alert.alert_id] = c.alert
    now = T0 + 301_000
    live = int(devices * active)
    for d in range(live):
        rules.on_reading(reading(d, 3, now), now_ms=now)
    for c in rules.tick(now):  # the silent ones go stale
        latest[c.alert.alert_id] = c.alert
    return list(latest.values()), now + 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--active", type=float, default=0.1, help="share that keeps reporting")
    ap.add_argument("--churn", type=float, default=0.1, help="share with a resolved alert")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    endpoint = LocalStack().endpoints()["search"]
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    config = ProcessorConfig(
        search=SearchSettings.from_endpoint(endpoint, "admin", index_prefix=prefix)
    )
    storage = make_storage(config)
    alerts, now = fleet_alerts(args.devices, args.active, args.churn)
    results: dict[str, object] = {"devices": args.devices, "alert_docs": len(alerts)}
    try:
        await storage.ensure_schema(now_ms=now)
        t = time.perf_counter()
        items = [storage.alert_item(a, processed_at=now) for a in alerts]
        for i in range(0, len(items), 5000):
            await storage.write(items[i : i + 5000])
        results["write_s"] = round(time.perf_counter() - t, 2)
        rounds = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            since = now - int(config.alerts.restore_resolved_s * 1000)
            loaded = await storage.load_alerts(since_ms=since)
            load_s = time.perf_counter() - t
            rules = FleetRules(RULES, AlertSettings())
            t = time.perf_counter()
            rules.restore(loaded, now_ms=now)
            restore_s = time.perf_counter() - t
            t = time.perf_counter()
            for d in range(args.devices):
                rules.on_reading(reading(d, 10, now + 1000), now_ms=now + 1000)
            rules.tick(now + 1000)
            first_s = time.perf_counter() - t
            rounds.append(
                {
                    "loaded": len(loaded),
                    "load_alerts_s": round(load_s, 2),
                    "restore_s": round(restore_s, 2),
                    "first_readings_s": round(first_s, 2),
                    "total_s": round(load_s + restore_s + first_s, 2),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
        results["rounds"] = rounds
        for key in ("load_alerts_s", "restore_s", "first_readings_s", "total_s"):
            results[f"median_{key}"] = statistics.median(r[key] for r in rounds)
    finally:
        await drop_prefix(storage.backend, storage.names)
        await storage.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
