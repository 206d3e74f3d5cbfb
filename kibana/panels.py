"""thermowatch's visualizations: the question each panel answers, built from the schema.

Each panel is one :class:`~kibana.lens.Lens` on one data view; dashboards
place them by ``key`` (:mod:`kibana.dashboards`). kibana/README.md lists the
question each one answers.

>>> [lens.key for lens in visualizations()][:3]
['temperature-over-time', 'latest-temperature', 'temperature-band']
"""

from __future__ import annotations

from kibana.lens import (
    Lens,
    count,
    date_histogram,
    kql_eq,
    last_value,
    max_date,
    metric,
    metric_vis,
    table,
    terms,
    unique_count,
    xy,
)
from stagekit.search import indices as schema
from telemetry_contract import AlertStatus, Rule

__all__ = ["visualizations"]


def visualizations() -> list[Lens]:
    """Every panel, built from the current field definitions."""
    r, a, al = schema.READINGS, schema.AGGREGATES, schema.ALERTS
    return [
        Lens(
            "temperature-over-time",
            "Temperature over time per device",
            "Average temperature per device and time bucket (readings).",
            r,
            "lnsXY",
            {
                "device": terms(r, "device_id", "Device", 20, "temp"),
                "time": date_histogram(r),
                "temp": metric(r, "average", "temp_c", "Temperature"),
            },
            xy("line", "time", ["temp"], "device"),
        ),
        Lens(
            "latest-temperature",
            "Latest temperature per device",
            "Last temperature each device reported, with its site and time.",
            r,
            "lnsDatatable",
            {
                "device": terms(r, "device_id", "Device", 500, None),
                "site": last_value(r, "site", "Site"),
                "temp": last_value(r, "temp_c", "Temperature"),
                "seen": max_date(r, r.time_field, "Last reading"),
            },
            table(["device", "site", "temp", "seen"]),
        ),
        Lens(
            "temperature-band",
            "Temperature band (1-minute min / mean / max)",
            "Lowest, mean and highest temperature from the one-minute aggregates.",
            a,
            "lnsXY",
            {
                "time": date_histogram(a),
                "min": metric(a, "min", "temp_min", "Minimum"),
                "mean": metric(a, "average", "temp_mean", "Mean"),
                "max": metric(a, "max", "temp_max", "Maximum"),
            },
            xy("line", "time", ["min", "mean", "max"], None),
        ),
        Lens(
            "anomaly-score",
            "Edge anomaly score over time",
            "Highest edge-detector anomaly score per device and time bucket.",
            r,
            "lnsXY",
            {
                "device": terms(r, "device_id", "Device", 20, "score"),
                "time": date_histogram(r),
                "score": metric(r, "max", "anomaly_score", "Anomaly score"),
            },
            xy("line", "time", ["score"], "device"),
        ),
        Lens(
            "alerts-by-severity",
            "Alerts over time by severity",
            "Alerts opened per time bucket, stacked by severity.",
            al,
            "lnsXY",
            {
                "severity": terms(al, "severity", "Severity", 5, "alerts"),
                "time": date_histogram(al),
                "alerts": count("Alerts"),
            },
            xy("bar_stacked", "time", ["alerts"], "severity"),
        ),
        Lens(
            "open-alerts",
            "Open alerts",
            "Alerts still open: which device, which rule, since when, last value.",
            al,
            "lnsDatatable",
            {
                "severity": terms(al, "severity", "Severity", 5, None),
                "device": terms(al, "device_id", "Device", 500, None),
                "rule": terms(al, "rule", "Rule", 50, None),
                "opened": max_date(al, "opened_at", "Opened"),
                "value": last_value(al, "value", "Value"),
            },
            table(["severity", "device", "rule", "opened", "value"]),
            query=kql_eq(al, "status", AlertStatus.OPEN.value),
        ),
        Lens(
            "devices-online",
            "Devices online",
            "Distinct devices that sent at least one reading in the time range.",
            r,
            "lnsMetric",
            {"devices": unique_count(r, "device_id", "Devices online")},
            metric_vis("devices"),
        ),
        Lens(
            "devices-offline",
            "Devices offline",
            "Distinct devices with an open device-offline alert (last will seen).",
            al,
            "lnsMetric",
            {"devices": unique_count(al, "device_id", "Devices offline")},
            metric_vis("devices"),
            query=kql_eq(al, "rule", Rule.OFFLINE.value)
            + " and "
            + kql_eq(al, "status", AlertStatus.OPEN.value),
        ),
    ]
