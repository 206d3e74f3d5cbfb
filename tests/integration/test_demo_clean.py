"""``thermowatch demo clean`` removes old runs' topics, indices, templates and
directories against the real Kafka and search server, and nothing else."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from stagekit.kafka import KafkaTarget, settings_for
from testsupport.search import admin_session
from thermowatch.demo.clean import clean_demo_runs, list_runs

pytestmark = pytest.mark.integration


def _run_id(offset_s: int) -> str:
    # Far in the past so a developer's real demo runs (kept by keep=1) are newer
    # than ours would be if they shared a stack dir; ours use a tmp dir anyway.
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(1_000_000_000 + offset_s))
    return stamp + uuid.uuid4().hex[:4]


async def _make_topics(kafka: KafkaTarget, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        await admin.close()


async def _topics(kafka: KafkaTarget) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_clean_removes_all_but_the_newest_runs(
    stack: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    kafka = stack["kafka"]
    url = stack["search"]["url"]
    old, middle, new = _run_id(0), _run_id(60), _run_id(120)
    # A lookalike that must survive: the same digits but a longer id.
    lookalike = old + "0"
    for rid in (old, middle, new):
        (tmp_path / "demo" / rid).mkdir(parents=True)
    (tmp_path / "demo" / "not-a-run").mkdir()

    topics = [f"demo.{rid}.telemetry" for rid in (old, middle, new, lookalike)]
    asyncio.run(_make_topics(kafka, topics))
    indices = [f"demo-{rid}-alerts" for rid in (old, middle, new, lookalike)]
    with admin_session(stack["search"]) as http:
        for name in indices:
            http.put(f"{url}/{name}", timeout=30).raise_for_status()
            http.put(
                f"{url}/_index_template/{name}",
                json={"index_patterns": [f"{name}-x-*"], "priority": 250},
                timeout=30,
            ).raise_for_status()
        try:
            report = clean_demo_runs(tmp_path, stack, keep=1)

            assert report.errors == []
            assert report.runs == [old, middle]
            assert report.topics == sorted(topics[:2])
            assert report.indices == sorted(indices[:2])
            assert report.templates == sorted(indices[:2])
            assert list_runs(tmp_path) == [new]
            assert (tmp_path / "demo" / "not-a-run").is_dir()

            left = asyncio.run(_topics(kafka))
            assert not left & set(topics[:2])
            assert {topics[2], topics[3]} <= left
            for name in indices[:2]:
                assert http.head(f"{url}/{name}", timeout=15).status_code == 404
            for name in indices[2:]:
                assert http.head(f"{url}/{name}", timeout=15).status_code == 200

            # Nothing left to do: a second clean is a no-op.
            again = clean_demo_runs(tmp_path, stack, keep=1)
            assert again.runs == [] and again.topics == [] and again.indices == []
        finally:
            for name in indices[2:]:
                http.delete(f"{url}/{name}", timeout=30)
                http.delete(f"{url}/_index_template/{name}", timeout=30)
            clean_demo_runs(tmp_path, stack, keep=0)
            # The lookalike is no run of ours: remove its topic by hand.
            from aiokafka.admin import AIOKafkaAdminClient

            async def _drop() -> None:
                admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
                await admin.start()
                try:
                    await admin.delete_topics([topics[3]])
                finally:
                    await admin.close()

            asyncio.run(_drop())


def test_clean_reports_a_service_that_is_down_and_keeps_the_run(tmp_path: Path) -> None:
    rid = _run_id(0)
    (tmp_path / "demo" / rid).mkdir(parents=True)
    endpoints = {
        "kafka": {"bootstrap": "127.0.0.1:9"},
        "search": {"url": "http://127.0.0.1:9"},
    }
    report = clean_demo_runs(tmp_path, endpoints, keep=0)
    assert report.runs == [rid]
    assert [e.split(":")[0] for e in report.errors] == ["kafka", "search"]
    assert list_runs(tmp_path) == [rid]


def test_each_run_is_cleaned_on_the_search_server_it_wrote_to(
    stack: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """A ``demo --search elasticsearch`` run records its server in ``run.json``:
    its indices are looked for there, and a server that is down keeps only the
    runs that wrote to it."""
    import json

    on_opensearch, on_elastic = _run_id(0), _run_id(60)
    for rid in (on_opensearch, on_elastic):
        (tmp_path / "demo" / rid).mkdir(parents=True)
    (tmp_path / "demo" / on_elastic / "run.json").write_text(
        json.dumps({"search_backend": "elasticsearch"}), encoding="utf-8"
    )
    endpoints = {**stack, "elasticsearch": {"url": "http://127.0.0.1:9"}}  # down
    report = clean_demo_runs(tmp_path, endpoints, keep=0)
    assert report.runs == [on_opensearch, on_elastic]
    assert [e.split(":")[0] for e in report.errors] == ["elasticsearch"]
    assert list_runs(tmp_path) == [on_elastic]
    # only= names the runs to remove, whatever their age
    (tmp_path / "demo" / on_elastic / "run.json").unlink()
    newer = _run_id(120)
    (tmp_path / "demo" / newer).mkdir()
    report = clean_demo_runs(tmp_path, endpoints, keep=5, only=[newer, "unknown"])
    assert report.runs == [newer] and report.errors == []
    assert list_runs(tmp_path) == [on_elastic]
