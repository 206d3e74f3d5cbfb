"""Micro-benchmark of the web view's core: readings folded per second, delta and snapshot cost.

Run: ``python benchmarks/web/bench_view.py [--devices 100] [--readings 1000] [--incidents 0]``
(``--incidents N``: N open incidents of 3 alerts each, the cost of one incidents poll too).
No services needed; the end-to-end latency (alert published -> SSE event) is
printed by ``pytest tests/integration/test_web_live.py -s``.
"""

from __future__ import annotations

import argparse
import json
import time

import msgspec

from telemetry_contract import (
    Alert,
    AlertStatus,
    Incident,
    IncidentChange,
    IncidentChangeKind,
    IncidentScope,
    IncidentStatus,
    Reading,
    Severity,
    alert_fields,
    encode,
    incident_change_doc,
)
from thermowatch.web.view import FleetView, fold_record

T0 = 1_767_225_600_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--readings", type=int, default=1000, help="per device")
    parser.add_argument("--incidents", type=int, default=0, help="open, 3 alerts each")
    args = parser.parse_args()
    view = FleetView(max_devices=args.devices)
    names = [f"s{d // 10}-d{d % 10:02d}" for d in range(args.devices)]
    records = [
        encode(
            Reading(
                device_id=name,
                sensor_id="host",
                site=name.split("-")[0],
                seq=i,
                ts=T0 + i * 1000,
                temp_c=4.0 + (i % 7) / 10,
            )
        )
        for i in range(1, args.readings + 1)
        for name in names
    ]
    start = time.perf_counter()
    for rec in records:
        fold_record(view, "telemetry", rec, now_ms=T0)
    fold_s = time.perf_counter() - start
    view.delta(T0)
    for name in names:
        view.add_reading(name, "s", 10**9, T0 + 10**7, 1.0, "ok")
    sync_ms = _incidents(view, names, args.incidents)
    start = time.perf_counter()
    view.delta(T0 + 10**7)
    delta_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    body = msgspec.json.encode(view.snapshot(T0 + 10**7))
    snapshot_ms = (time.perf_counter() - start) * 1000
    print(
        json.dumps(
            {
                "devices": args.devices,
                "readings": len(records),
                "readings_folded_per_s": round(len(records) / fold_s),
                "delta_all_dirty_ms": round(delta_ms, 2),
                "snapshot_ms": round(snapshot_ms, 2),
                "snapshot_bytes": len(body),
                "incidents": args.incidents,
                "incidents_poll_ms": round(sync_ms, 2),
            }
        )
    )


def _incidents(view: FleetView, names: list[str], count: int) -> float:
    """Fold ``count`` incidents of 3 alerts each; the milliseconds one poll of them takes."""
    docs = []
    for n in range(count):
        device = names[n % len(names)]
        rules = ("edge_anomaly", "rate_of_change", "threshold_high")
        alerts = [
            Alert(f"{device}.{r}.{n}", device, "s", r, Severity.WARNING, AlertStatus.OPEN, 1, n, n)
            for r in rules
        ]
        for a in alerts:
            view.on_alert(alert_fields(a), now_ms=T0)
        inc = Incident(
            f"device.{device}.{n}", IncidentScope.DEVICE, "s", (device,), Severity.CRITICAL,
            IncidentStatus.OPEN, 2, n, n, rules=rules,
            alert_ids=tuple(a.alert_id for a in alerts), alert_count=3,
        )  # fmt: skip
        docs.append(incident_change_doc(IncidentChange(IncidentChangeKind.ESCALATED, inc)))
    start = time.perf_counter()
    view.sync_incidents(docs, now_ms=T0)
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
