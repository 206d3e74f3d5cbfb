"""What a run's numbers say: percentiles, the split of (b), the summary, the printed line, the plot.

Pure functions of the result dict (the plot writes a PNG), so the report can
be redone from a saved ``results/<timestamp>.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from thermowatch.accounting import percentiles

__all__ = ["pct", "plot", "step_line", "summarize", "webhook_split"]

#: One anomaly as sent: device, seq, event time (ms), label of its step.
Anomaly = tuple[str, int, int, str]


def pct(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (nearest rank), max and count of ``values``.

    >>> pct([10.0, 20.0, 30.0])
    {'p50': 20.0, 'p95': 30.0, 'p99': 30.0, 'max': 30.0, 'n': 3}
    """
    out = percentiles(values)
    out["max"] = max(values) if values else None
    out["n"] = len(values)
    return out


def webhook_split(
    label: str,
    anomalies: Iterable[Anomaly],
    reading_ts: Mapping[tuple[str, int], int],
    alert_ts: Mapping[tuple[str, int], int],
    webhook_ms: Mapping[tuple[str, int], int],
) -> dict[str, dict[str, float | None]]:
    """Latency (b) of step ``label`` cut at the Kafka append times of the reading and the alert.

    The maps are keyed ``(device_id, ts)`` of the anomalous reading (``ts`` is
    also the alert's ``opened_at``).

    >>> s = webhook_split("x", [("d", 1, 100, "x")], {("d", 100): 130}, {("d", 100): 150},
    ...                   {("d", 100): 160})
    >>> [v["p50"] for v in s.values()]
    [30.0, 20.0, 50.0, 10.0]
    """
    to_gw: list[float] = []
    gw_to_alert: list[float] = []
    to_kafka: list[float] = []
    kafka_to_hook: list[float] = []
    for d, _s, ts, lab in anomalies:
        key = (d, ts)
        if lab != label:
            continue
        if key in reading_ts:
            to_gw.append(float(reading_ts[key] - ts))
            if key in alert_ts:
                gw_to_alert.append(float(alert_ts[key] - reading_ts[key]))
        if key in alert_ts:
            to_kafka.append(float(alert_ts[key] - ts))
            if key in webhook_ms:
                kafka_to_hook.append(float(webhook_ms[key] - alert_ts[key]))
    return {
        "send_to_reading_in_kafka (mqtt + gateway)": pct(to_gw),
        "reading_in_kafka_to_alert_in_kafka (processor)": pct(gw_to_alert),
        "send_to_alert_in_kafka": pct(to_kafka),
        "alert_in_kafka_to_webhook (processor: ack + POST)": pct(kafka_to_hook),
    }


def step_line(st: Mapping[str, Any]) -> str:
    """The one line printed per measured step."""
    a, b = st["searchable_ms"], st["webhook_ms"]
    return (
        f"offered {st['offered_per_s']:>7g}/s  achieved {st['acked_in_window_per_s']:>8.1f}/s  "
        f"searchable p50/p95/p99 {a['p50']}/{a['p95']}/{a['p99']} ms  "
        f"webhook p50/p95/p99 {b['p50']}/{b['p95']}/{b['p99']} ms  "
        f"(missing {st['webhooks_missing']}, load {st['load_avg_1_5_15'][0]})"
    )


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets: (b) p99 < 250 ms at 1000/s; highest load with (b) p99 < 1 s."""
    sustainable = [
        s
        for s in steps
        if s["webhook_ms"]["p99"] is not None
        and s["webhook_ms"]["p99"] < 1000
        and s["webhooks_missing"] == 0
        and not s["generator_saturated"]
    ]
    at_1000 = next((s for s in steps if s["offered_per_s"] == 1000), None)
    best = max(sustainable, key=lambda s: s["acked_in_window_per_s"], default=None)
    first_bad = next((s for s in steps if s not in sustainable), None)
    limit = None
    if first_bad is not None:
        limit = (
            "load generator (achieved < 95 % of offered)"
            if first_bad["generator_saturated"]
            else "pipeline (webhook p99 >= 1 s or webhooks missing)"
        )
    return {
        "webhook_p99_at_1000_ms": at_1000["webhook_ms"]["p99"] if at_1000 else None,
        "target_webhook_p99_at_1000_met": bool(
            at_1000
            and at_1000["webhook_ms"]["p99"] is not None
            and at_1000["webhook_ms"]["p99"] < 250
        ),
        "highest_sustainable_offered_per_s": best["offered_per_s"] if best else None,
        "highest_sustainable_achieved_per_s": best["acked_in_window_per_s"] if best else None,
        "target_sustainable_5000_met": bool(best and best["acked_in_window_per_s"] >= 4750),
        "first_failing_step": first_bad["label"] if first_bad else None,
        "limit_hit": limit,
    }


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Latency percentiles of (a) and (b) against the achieved load, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    steps = result["steps"]
    xs = [s["acked_in_window_per_s"] for s in steps]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, key, title in (
        (axes[0], "searchable_ms", "(a) event time -> searchable"),
        (axes[1], "webhook_ms", "(b) anomalous reading -> webhook"),
    ):
        for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^-")):
            ys = [s[key][q] for s in steps]
            ax.plot(xs, ys, style, label=q)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(xs, [f"{x:,.0f}" for x in xs])
        for x, st in zip(xs, steps, strict=True):
            ax.annotate(
                f"load {st['load_avg_1_5_15'][0]:g}",
                (x, st[key]["p50"] or 1),
                textcoords="offset points",
                xytext=(0, -14),
                fontsize=7,
                ha="center",
                color="gray",
            )
        ax.set_xlabel("achieved load (readings/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(250, color="tab:green", lw=0.8, ls=":", label="250 ms target @1000/s")
    axes[1].axhline(1000, color="tab:red", lw=0.8, ls=":", label="1 s (sustainable)")
    for ax in axes:
        ax.legend(fontsize=8)
    la = result["machine"]["load_avg_before_1_5_15"]
    fig.suptitle(
        f"thermowatch end-to-end latency ({result['started_utc']}, "
        f"{result['machine']['cpus']} cores, load avg before {la[0]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
