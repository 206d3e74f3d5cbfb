"""Counting a finished demo run: the summary, from where the data really is.

:func:`account_run` fetches (outboxes, search server, Kafka) through
:mod:`thermowatch.accounting`; :func:`summarize` is the pure part that turns
the verdicts into the summary the demo prints and writes as JSON
(``docs/demo.md`` says where each number comes from).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from telemetry_contract import ContractError, DeadLetter, decode, kafka_topics
from thermowatch import accounting as acc
from thermowatch.demo.malformed import MALFORMED_SEQ
from thermowatch.demo.monitor import SearchWatch
from thermowatch.demo.run import DemoRun

__all__ = [
    "MAX_NOTIFICATIONS_PER_INCIDENT",
    "account_run",
    "alert_problems",
    "count_dead_letters",
    "summarize",
]

LATENCY_NOTE = "incident start (scripted time) to the Kafka time its first alert was published"


def count_dead_letters(values: list[bytes], source_topic: str) -> int:
    """Dead letters among ``values`` whose payload came from ``source_topic``.

    >>> count_dead_letters([b"junk"], "t")
    0
    """
    dead = 0
    for value in values:
        try:
            msg = decode(value, now_ms=2**62)
        except ContractError:
            continue
        if isinstance(msg, DeadLetter) and msg.source_topic == source_topic:
            dead += 1
    return dead


async def account_run(
    run: DemoRun, endpoints: Mapping[str, Any], outboxes: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """The summary of a finished run, counted from the search server, Kafka and the outboxes."""
    server = run.search_settings(endpoints)
    kafka = run.kafka_settings(endpoints)
    names, topics = run.indices, kafka_topics(run.kafka_prefix)
    allocated = acc.allocated_from_outboxes(run.outbox_paths() if outboxes is None else outboxes)
    stored = await asyncio.to_thread(acc.fetch_stored, server, names.readings_pattern, run.devices)
    stored = {k: v for k, v in stored.items() if k[1] < MALFORMED_SEQ}
    gaps = await acc.fetch_gaps(kafka, topics.telemetry, run.devices)
    readings = acc.account(allocated, stored, gaps)
    alerts = await asyncio.to_thread(acc.fetch_alerts, server, names.alerts, run.devices)
    incidents = [
        acc.Incident(i["kind"], i["device_id"], int(i["start_ms"]), int(i["end_ms"]))
        for i in run.incidents
    ]
    # When each alert was published as opened: the Kafka record time of its first change.
    published = acc.first_published(await acc.fetch_alert_changes(kafka, topics.alerts))
    score = acc.score_alerts(
        incidents,
        alerts,
        since_ms=run.started_ms,
        until_ms=run.fleet_stopped_ms or None,
        published_ms=published,
    )
    processor_incidents = await asyncio.to_thread(acc.fetch_incidents, server, names.incidents)
    notified = acc.count_notifications(incidents, processor_incidents)
    stopped = acc.shutdown_alerts(alerts, run.fleet_stopped_ms) if run.fleet_stopped_ms else {}
    dead = count_dead_letters(await acc.read_topic(kafka, topics.deadletter), run.malformed_topic)
    watch = SearchWatch(server, run.devices)
    try:
        malformed_stored = await asyncio.to_thread(watch.count_seq_at_least, MALFORMED_SEQ)
    finally:
        watch.close()
    return summarize(
        run,
        readings,
        incidents,
        score,
        dead=dead,
        malformed_stored=malformed_stored,
        notifications=notified,
        shutdown_alerts=stopped,
    )


#: The most notifications one scripted incident may cause: opened, escalated, resolved.
MAX_NOTIFICATIONS_PER_INCIDENT = 3


def alert_problems(summary: Mapping[str, Any]) -> list[str]:
    """What broke the alerting promise in a run's summary (empty: alerts few, right and fast).

    An incident missed, an alert without an incident, more than
    :data:`MAX_NOTIFICATIONS_PER_INCIDENT` notifications for one scripted
    incident, or a critical alert once the fleet was shut down on purpose.

    >>> alert_problems({"incidents_missed": 0, "false_alerts": 0,
    ...                 "notifications_per_incident": 3, "shutdown_alerts": {"info": 30}})
    []
    >>> alert_problems({"incidents_missed": 1, "false_alerts": 2,
    ...                 "notifications_per_incident": 5, "shutdown_alerts": {"critical": 1}})
    ... # doctest: +NORMALIZE_WHITESPACE
    ['incidents_missed: 1 scripted incident(s) raised no alert',
     'false_alerts: 2 alert(s) without a scripted incident',
     'notifications_per_incident: 5 (at most 3)',
     'shutdown_alerts: 1 critical alert(s) after an announced shutdown']
    """
    out: list[str] = []
    missed = int(summary.get("incidents_missed", 0))
    if missed:
        out.append(f"incidents_missed: {missed} scripted incident(s) raised no alert")
    false = int(summary.get("false_alerts", 0))
    if false:
        out.append(f"false_alerts: {false} alert(s) without a scripted incident")
    most = int(summary.get("notifications_per_incident", 0))
    if most > MAX_NOTIFICATIONS_PER_INCIDENT:
        out.append(f"notifications_per_incident: {most} (at most {MAX_NOTIFICATIONS_PER_INCIDENT})")
    critical = int(dict(summary.get("shutdown_alerts") or {}).get("critical", 0))
    if critical:
        out.append(f"shutdown_alerts: {critical} critical alert(s) after an announced shutdown")
    return out


def summarize(
    run: DemoRun,
    readings: acc.Accounting,
    incidents: list[acc.Incident],
    score: acc.AlertScore,
    *,
    dead: int,
    malformed_stored: int,
    notifications: list[acc.Notifications] | None = None,
    shutdown_alerts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The summary of a run (JSON-ready), from the accounting verdicts.

    ``notifications``: per injected incident, the processor's incidents and
    their notifications; ``shutdown_alerts``: alerts opened once the fleet was
    stopped, by severity.
    """
    lat = [x for x in score.latencies_ms if x is not None]
    notified = notifications or []
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "duration_s": run.duration_s,
        "devices": len(run.devices),
        "kafka_topic_prefix": run.kafka_prefix,
        "index_prefix": run.index_prefix,
        "readings_sent": readings.sent,
        "readings_stored": readings.stored,
        "readings_lost": readings.lost,
        "readings_duplicated": readings.duplicated,
        "readings_covered_by_gap": readings.covered,
        "readings_unexpected": readings.unexpected,
        "gap_conflicts": readings.gap_conflicts,
        "lost_examples": [list(x) for x in readings.lost_examples],
        "duplicated_examples": [list(x) for x in readings.duplicated_examples],
        "incidents_injected": score.injected,
        "incidents_alerted": score.alerted,
        "incidents_missed": score.missed,
        "false_alerts": score.false_alerts,
        "false_alert_ids": list(score.false_alert_ids),
        "alert_latency_ms": acc.percentiles(lat),
        "alert_latency_note": LATENCY_NOTE,
        "incidents": [
            {
                "kind": inc.kind,
                "device_id": inc.device_id,
                "alerted": lat_ms is not None,
                "latency_ms": lat_ms,
                "rules": list(rules),
            }
            for inc, lat_ms, rules in zip(incidents, score.latencies_ms, score.rules, strict=True)
        ],
        "notifications": [n.as_dict() for n in notified],
        "notifications_per_incident": max((n.total for n in notified), default=0),
        "shutdown_alerts": dict(shutdown_alerts or {}),
        "malformed_sent": run.malformed_sent,
        "malformed_dead_lettered": dead,
        "malformed_stored": malformed_stored,
        "ok": readings.ok and malformed_stored == 0,
    }
    summary["alert_problems"] = alert_problems(summary)
    return summary
