"""``thermowatch demo --search elasticsearch``: the demo on the stack's Elasticsearch 8,
then ``thermowatch kibana check`` against the live mapping the run left there.

The command runs as a user runs it (a subprocess, a short fleet), on the
shared stack's Mosquitto and Kafka and its optional ``elasticsearch`` service,
which it starts itself when missing (fetching the distribution from Maven
Central on first use): nothing here skips. Kibana reads only Elasticsearch,
so this is the path to the dashboards: the summary must be exact, and the
saved objects, built for the run's index prefix, must find every field they
use in the indices the demo's processor created and filled.

Like ``make demo``, the command first removes older demo runs of the stack
but the newest; the test removes its own run afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from deploy.local.stack import LocalStack
from kibana.app import live_check
from kibana.objects import build_objects, to_ndjson
from stagekit.search import SearchSettings
from stagekit.search.indices import INDEXES
from testsupport.search import admin_session
from thermowatch.demo.clean import clean_demo_runs
from thermowatch.demo.run import DemoRun

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _indices(endpoint: dict[str, Any], pattern: str) -> list[str]:
    with admin_session(endpoint) as http:
        resp = http.get(
            f"{endpoint['url']}/_cat/indices/{pattern}",
            params={"format": "json", "h": "index", "expand_wildcards": "all"},
            timeout=30,
        )
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return sorted(row["index"] for row in resp.json())


async def _web_view_readings(settings: SearchSettings) -> list[dict[str, Any]]:
    """What the web view's search source shows for the run (newest reading per device)."""
    from stagekit.search import make_backend
    from thermowatch.web.config import SearchSettings as WebSearchSettings
    from thermowatch.web.search import SearchSource

    web = msgspec.convert(msgspec.to_builtins(settings), WebSearchSettings)
    source = SearchSource(web, points=5, backend=make_backend(web))
    try:
        return await source.recent_readings(time.time_ns() // 1_000_000)
    finally:
        await source.close()


def test_demo_on_elasticsearch_is_exact_and_kibana_check_passes_on_its_live_mapping(
    local_stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thermowatch.cli import main

    es_was_up = local_stack.is_healthy("elasticsearch")
    summary_file = tmp_path / "summary.json"
    argv = [
        sys.executable,
        "-m",
        "thermowatch",
        "demo",
        "--search",
        "elasticsearch",
        "--duration",
        "40",
        "--no-live",
        "--summary",
        str(summary_file),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=840, check=False)
    summary: dict[str, Any] = (
        json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.exists() else {}
    )
    endpoints = local_stack.endpoints()
    es_url = endpoints["elasticsearch"]["url"]
    run_id = str(summary.get("run_id", ""))
    try:
        detail = f"exit {proc.returncode}\n{summary}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        assert proc.returncode == 0, detail
        # Exact: every reading the agents' outboxes allocated is stored once.
        assert summary["readings_sent"] >= 30 * 30, detail
        assert summary["readings_stored"] == summary["readings_sent"], detail
        assert (summary["readings_lost"], summary["readings_duplicated"]) == (0, 0), detail
        assert summary["gap_conflicts"] == 0, detail
        # Every scripted incident alerted. (Not asserted here: readings_unexpected,
        # false_alerts and exactly as many dead letters as malformed payloads. The
        # demo fleet's MQTT topics are the stack's, shared by every demo run: a
        # second demo running at the same time on the same stack feeds this run's
        # gateway too. The demo's own test holds those.)
        assert summary["incidents_injected"] == 4, detail
        assert summary["incidents_alerted"] == 4, detail
        assert summary["malformed_dead_lettered"] >= summary["malformed_sent"] > 0, detail
        assert summary["malformed_stored"] == 0 and summary["ok"], detail
        assert summary["services"] == {"gateway_exit": 0, "processor_exit": 0}, detail

        # The run lives on Elasticsearch (and its run record says so), not on OpenSearch.
        run = DemoRun.load(local_stack.root / "demo" / run_id)
        assert run.search_backend == "elasticsearch"
        prefix = run.index_prefix
        assert _indices(endpoints["search"], f"{prefix}*") == []
        on_es = _indices({"url": es_url}, f"{prefix}*")
        for spec in INDEXES:
            pattern = run.indices.pattern(spec)
            assert any(i == pattern or i.startswith(pattern[:-1]) for i in on_es), (pattern, on_es)

        # kibana check against that live Elasticsearch mapping, as a user runs it ...
        capsys.readouterr()
        code = main(
            [
                "kibana",
                "check",
                "--prefix",
                prefix,
                "--search-url",
                es_url,
                "--search-backend",
                "elasticsearch",
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "ok" in out
        # ... and the same check through the library: no problem at all, every
        # data view matching an index ("no index matches" would be one).
        settings = SearchSettings(backend="elasticsearch", url=es_url)
        assert live_check(to_ndjson(build_objects(prefix)), settings) == []

        # The run can be counted again from its directory (it records its server).
        assert main(["demo", "account", "--run-dir", str(run.run_dir)]) == 0
        # The web view, given the run's search settings, reads the fleet from there.
        docs = asyncio.run(_web_view_readings(run.search_settings(endpoints)))
        assert set(run.devices) <= {d["device_id"] for d in docs}  # (+ shared-topic guests)
    finally:
        if run_id:
            report = clean_demo_runs(local_stack.root, endpoints, only=[run_id])
            assert report.errors == [], report.errors
            assert _indices({"url": es_url}, f"demo-{run_id}-*") == []
        if not es_was_up and os.environ.get("THERMOWATCH_KEEP_STACK") != "1":
            local_stack.down(["elasticsearch"])
