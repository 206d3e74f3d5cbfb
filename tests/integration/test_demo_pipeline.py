"""The whole pipeline on a small simulated fleet, counted from the search server.

Real Mosquitto, Kafka and OpenSearch (the shared local stack), real gateway
and processor subprocesses, real edge agents. Isolated from everybody else:
its own MQTT users and sites, Kafka topic prefix, consumer group, share
group and index prefix. A short run (40 s of fleet) of the same script as
``make demo``: freezer door, stuck probe, fire, an agent killed and
restarted, a burst of malformed payloads. Every incident must be alerted,
with no false alert, as one processor incident notified at most 3 times,
and the fleet's shutdown must raise no critical alert; then one stored
reading is deleted and ``thermowatch demo account`` must report it lost and
exit 1.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from stagekit.kafka import settings_for
from testsupport.search import admin_session

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_short_demo_loses_nothing_stores_nothing_twice_and_alerts(
    local_stack: Any, tmp_path: Path
) -> None:
    from rich.console import Console

    from thermowatch.demo import DemoRun, run_pipeline_demo

    tag = uuid.uuid4().hex[:6]
    sites = {f"t{tag}{s}": [f"t{tag}{s}-d{d}" for d in range(1, 3)] for s in "abc"}
    for devs in sites.values():
        for dev in devs:
            local_stack.add_mqtt_user(dev)
    endpoints = local_stack.endpoints()
    run = DemoRun(
        run_id=f"it{tag}",
        run_dir=tmp_path / "run",
        w1_dir=tmp_path / "w1" / "tree",
        sites=sites,
        duration_s=40.0,
    )
    out = io.StringIO()
    try:
        summary = asyncio.run(
            run_pipeline_demo(
                run, endpoints, live=False, console=Console(file=out), malformed_count=16
            )
        )
        detail = f"{summary}\n{out.getvalue()}"
        # 6 devices x ~40 readings; every seq an outbox allocated is stored exactly once.
        assert summary["readings_sent"] >= 6 * 30, detail
        assert summary["readings_lost"] == 0, detail
        assert summary["readings_duplicated"] == 0, detail
        assert summary["readings_stored"] == summary["readings_sent"], detail
        assert summary["gap_conflicts"] == 0, detail
        # The malformed burst went to the dead-letter topic, not to the search server.
        assert summary["malformed_sent"] == 16, detail
        assert summary["malformed_dead_lettered"] == 16, detail
        assert summary["malformed_stored"] == 0, detail
        # Every scripted incident raised an alert, and no alert was raised without one.
        assert summary["incidents_injected"] == 4, detail
        assert summary["incidents_alerted"] == 4, detail
        assert summary["incidents_missed"] == 0, detail
        assert summary["false_alerts"] == 0, detail
        # One incident per scripted incident, at most 3 notifications each; the
        # fleet's own shutdown at the end is informational, never critical.
        assert [len(n["incident_ids"]) for n in summary["notifications"]] == [1] * 4, detail
        assert 2 <= summary["notifications_per_incident"] <= 3, detail
        assert set(summary["shutdown_alerts"]) <= {"info"}, detail
        assert summary["ok"], detail
        assert summary["services"] == {"gateway_exit": 0, "processor_exit": 0}, detail
        assert_lost_reading_exits_1(run, endpoints, tmp_path / "recount.json")
    finally:
        asyncio.run(_drop_run(run, endpoints))


def assert_lost_reading_exits_1(run: Any, endpoints: dict[str, Any], summary_path: Path) -> None:
    """Delete one stored reading, count the run again with ``thermowatch demo account``:
    the command (the demo's own accounting and exit path) reports it lost and exits 1."""
    device, seq = run.devices[0], 5
    with admin_session(endpoints["search"]) as http:
        answer = http.post(
            f"{endpoints['search']['url']}/{run.indices.readings_pattern}/_delete_by_query"
            "?refresh=true&conflicts=proceed",
            json={
                "query": {
                    "bool": {"filter": [{"term": {"device_id": device}}, {"term": {"seq": seq}}]}
                }
            },
            timeout=60,
        )
    assert answer.ok and answer.json()["deleted"] == 1, answer.text
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "thermowatch",
            "demo",
            "account",
            "--run-dir",
            str(run.run_dir),
            "--summary",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    detail = done.stdout + done.stderr
    assert done.returncode == 1, detail
    assert "readings lost or stored twice" in done.stderr, detail
    recount = json.loads(summary_path.read_text(encoding="utf-8"))
    assert recount["readings_lost"] == 1, detail
    assert recount["lost_examples"] == [[device, seq]], detail
    assert recount["ok"] is False, detail


async def _drop_run(run: Any, endpoints: dict[str, Any]) -> None:
    """Delete the run's indices and Kafka topics (the stack is shared and long-lived)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from telemetry_contract import kafka_topics

    with admin_session(endpoints["search"]) as http:
        http.delete(
            f"{endpoints['search']['url']}/{run.index_prefix}*"
            "?ignore_unavailable=true&allow_no_indices=true",
            timeout=60,
        )
    admin = AIOKafkaAdminClient(**settings_for(endpoints["kafka"]).client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        topics = [t for t in kafka_topics(run.kafka_prefix).all() if t in existing]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
