"""Per-profile summary of the detection runs, as JSON-ready data and a markdown table (pure).

>>> from benchmarks.detection.harness import FaultRun, NormalRun
>>> runs = [NormalRun("fridge", 1, samples=60480, hours=168.0, temperature_alarms=7)]
>>> faults = [FaultRun("fridge", 1, "crc_error", "sensor", 0.0, ttd_s=1.0)]
>>> s = summarize(runs, faults)
>>> s["fridge"]["temperature_per_week"], s["fridge"]["faults"]["crc_error"]["met"]
(7.0, True)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.detection.configs import ttd_target_s
from benchmarks.detection.harness import FaultRun, NormalRun

__all__ = ["markdown", "summarize"]

WEEK_H = 168.0


def summarize(normal: Sequence[NormalRun], faults: Sequence[FaultRun]) -> dict[str, Any]:
    """Per profile: false alarms per device-week, first-day alarms, cost, times to detect."""
    out: dict[str, Any] = {}
    for prof in sorted({r.profile for r in normal} | {f.profile for f in faults}):
        runs = [r for r in normal if r.profile == prof]
        weeks = sum(r.hours for r in runs) / WEEK_H
        samples = sum(r.samples for r in runs)
        temp = sum(r.temperature_alarms for r in runs)
        sens = sum(r.sensor_alarms for r in runs)
        entry: dict[str, Any] = {
            "device_weeks": weeks,
            "samples": samples,
            "temperature_alarms": temp,
            "temperature_per_week": temp / weeks if weeks else None,
            "sensor_alarms": sens,
            "sensor_per_week": sens / weeks if weeks else None,
            "temperature_alarms_24h": sum(r.temperature_alarms_24h for r in runs),
            "sensor_alarms_24h": sum(r.sensor_alarms_24h for r in runs),
            "us_per_sample": 1e6 * sum(r.cpu_s for r in runs) / samples if samples else None,
            "state_bytes": max((r.state_bytes for r in runs), default=0),
            "temperature_alarm_causes": {
                c: sum(r.causes.get(c, 0) for r in runs)
                for c in ("defrost", "door_open", "first_24h", "other")
            },
            "faults": {},
        }
        for kind in sorted({f.kind for f in faults if f.profile == prof}):
            fr = [f for f in faults if f.profile == prof and f.kind == kind]
            ttds = [f.ttd_s for f in fr if f.ttd_s is not None]
            target = ttd_target_s(prof, kind)
            worst = max(ttds) if len(ttds) == len(fr) and ttds else None
            entry["faults"][kind] = {
                "class": fr[0].klass,
                "runs": len(fr),
                "detected": len(ttds),
                "ttd_s": ttds,
                "ttd_median_s": statistics.median(ttds) if ttds else None,
                "ttd_max_s": worst,
                "target_s": target,
                "met": worst is not None and target is not None and worst <= target,
                "sensor_as_temperature": sum(f.sensor_as_temperature for f in fr),
                "alarm_on_at_start": sum(f.alarm_on_at_start for f in fr),
            }
        out[prof] = entry
    return out


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "–" if x is None else format(x, fmt)


def markdown(summary: Mapping[str, Any]) -> str:
    """Two tables: false alarms on normal operation, then time to detect per fault."""
    lines = [
        "| profile | device-weeks | temp. alarms / week | sensor alarms / week "
        "| alarms in first 24 h (temp. / sensor) | temp. alarms at defrost / door / first day "
        "/ other | µs / sample | state bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for prof, e in summary.items():
        lines.append(
            f"| {prof} | {e['device_weeks']:.1f} | {_num(e['temperature_per_week'])} "
            f"| {_num(e['sensor_per_week'])} "
            f"| {e['temperature_alarms_24h']} / {e['sensor_alarms_24h']} "
            f"| {' / '.join(str(n) for n in e['temperature_alarm_causes'].values())} "
            f"| {_num(e['us_per_sample'], '.1f')} | {e['state_bytes']} |"
        )
    lines += [
        "",
        "| profile | fault | class | detected | TTD median (s) | TTD max (s) | target (s) | met "
        "| sensor fault reported as temperature |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for prof, e in summary.items():
        for kind, f in e["faults"].items():
            as_temp = str(f["sensor_as_temperature"]) if f["class"] == "sensor" else ""
            lines.append(
                f"| {prof} | {kind} | {f['class']} | {f['detected']}/{f['runs']} "
                f"| {_num(f['ttd_median_s'], '.0f')} | {_num(f['ttd_max_s'], '.0f')} "
                f"| {_num(f['target_s'], '.0f')} | {'yes' if f['met'] else 'no'} | {as_temp} |"
            )
    return "\n".join(lines) + "\n"
