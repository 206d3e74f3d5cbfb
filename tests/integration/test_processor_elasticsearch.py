"""The processor's Elasticsearch backend against a real Elasticsearch 8 (the stack's
optional ``elasticsearch`` service): the OpenSearch storage suite re-run on it,
exact mappings, the golden documents, redelivery, and a whole processor run
through Kafka that warns about the missing ILM and carries on.

The suites this reuses are loaded from their files (the tests tree is not a
package): the storage tests of ``test_processor_storage.py`` are collected here
a second time with this module's Elasticsearch-backed ``storage`` fixture, the
expected documents come from ``tests/unit/test_processor_documents.py`` and the
Kafka helpers from ``test_processor_pipeline.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from cloud_processor.documents import reading_doc, reading_id
from cloud_processor.storage import Storage
from cloud_processor.testing import drop_prefix
from deploy.local.stack import LocalStack
from stagekit.kafka import create_topics, delete_topics
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.backends import ElasticsearchBackend
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import Reading

pytestmark = pytest.mark.integration

_TESTS = Path(__file__).resolve().parents[1]


def _load(relpath: str) -> ModuleType:
    """Import a sibling test file under a private name (no assertion rewriting)."""
    path = _TESTS / relpath
    name = f"_tw_es_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_storage_suite = _load("integration/test_processor_storage.py")
_documents = _load("unit/test_processor_documents.py")
_pipeline = _load("integration/test_processor_pipeline.py")

golden_readings = _storage_suite.golden_readings
items_for = _storage_suite.items_for
count = _storage_suite.count

# The OpenSearch storage suite, run again here against Elasticsearch.
test_schema_setup_is_idempotent_and_mappings_exact = (
    _storage_suite.test_schema_setup_is_idempotent_and_mappings_exact
)
test_start_up_creates_every_index_so_data_views_resolve_before_the_first_reading = (
    _storage_suite.test_start_up_creates_every_index_so_data_views_resolve_before_the_first_reading
)
test_golden_readings_stored_exactly_and_never_twice = (
    _storage_suite.test_golden_readings_stored_exactly_and_never_twice
)
test_windows_recomputed_from_stored_readings = (
    _storage_suite.test_windows_recomputed_from_stored_readings
)
test_unknown_field_is_rejected_not_retried_forever = (
    _storage_suite.test_unknown_field_is_rejected_not_retried_forever
)
test_retention_deletes_only_whole_months_past_retention = (
    _storage_suite.test_retention_deletes_only_whole_months_past_retention
)


@pytest.fixture(scope="module")
def elastic_url() -> Iterator[str]:
    """The stack's Elasticsearch, started for this module unless it already runs."""
    stack = LocalStack()
    result = stack.up(["elasticsearch"], timeout=240.0)
    yield str(stack.endpoints()["elasticsearch"]["url"])
    if result["elasticsearch"] == "started" and os.environ.get("THERMOWATCH_KEEP_STACK") != "1":
        stack.down(["elasticsearch"])


@pytest.fixture
async def storage(elastic_url: str) -> AsyncIterator[Storage]:
    backend = ElasticsearchBackend(elastic_url)
    names = IndexNames(f"t{uuid.uuid4().hex[:8]}-")
    st = Storage(backend, names, retry_initial_s=0.1, retry_max_s=1.0)
    await st.ensure_schema()
    yield st
    await drop_prefix(backend, names)
    await backend.close()


async def test_server_is_elasticsearch_8_and_the_backend_reads_its_info(
    elastic_url: str, storage: Storage
) -> None:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(elastic_url)
    try:
        info = client.info()  # raises UnsupportedProductError unless it is Elasticsearch
        health = client.cluster.health()
    finally:
        client.close()
    assert info["version"]["number"].startswith("8.")
    assert health["status"] in ("yellow", "green")
    answer = await storage.backend.perform(search.info())
    assert answer["cluster_uuid"] == info["cluster_uuid"]
    assert storage.backend.name == "elasticsearch"


async def test_templates_give_every_field_the_type_schema_says(storage: Storage) -> None:
    await storage.ensure_schema()  # a second time: replaces, no error
    for spec in INDEXES:
        name = storage.names.base(spec)
        got = await storage.backend.perform(search.Request("GET", f"/_index_template/{name}"))
        (template,) = got["index_templates"]
        assert template["index_template"]["template"]["mappings"] == spec.mappings(), name
    # and the concrete indices created from them
    await storage.write(items_for(storage, golden_readings()[:1]))
    for pattern, spec in (
        (storage.names.readings_pattern, INDEXES[0]),
        (storage.names.alerts, INDEXES[2]),
    ):
        got = await storage.backend.perform(search.Request("GET", f"/{pattern}/_mapping"))
        assert got, pattern
        for index, mapping in got.items():  # this month's (start-up) and the golden one's
            assert mapping["mappings"] == _as_served(spec.mappings()), index


#: Elasticsearch's default date format: an index's mapping leaves it out.
ES_DEFAULT_DATE_FORMAT = "strict_date_optional_time||epoch_millis"


def _as_served(mappings: dict[str, Any]) -> dict[str, Any]:
    """``mappings`` as an index's ``_mapping`` shows it (defaults left out)."""
    props = {
        name: {k: v for k, v in field.items() if (k, v) != ("format", ES_DEFAULT_DATE_FORMAT)}
        for name, field in mappings["properties"].items()
    }
    return {**mappings, "properties": props}


async def test_golden_readings_become_the_expected_documents(storage: Storage) -> None:
    expected: dict[str, tuple[str, str, dict[str, Any]]] = _documents.EXPECTED
    readings = {name: _documents._reading(name) for name in expected}
    totals = await storage.write(items_for(storage, list(readings.values())))
    assert (totals.stored, totals.duplicates, totals.rejected) == (len(expected), 0, 0)
    for name, (index, doc_id, doc) in expected.items():
        # the expectation is written for the prefix "tw-"
        mine = storage.names.prefix + index.removeprefix("tw-")
        got = await storage.backend.perform(search.get_doc(mine, doc_id))
        assert got["_source"] == doc, name


async def test_redelivered_batch_is_stored_once_409_is_already_stored(storage: Storage) -> None:
    readings = golden_readings()
    first = await storage.write(items_for(storage, readings))
    assert (first.stored, first.rejected) == (len(readings), 0)
    # the same batch again, then a mix of new and redelivered readings
    again = await storage.write(items_for(storage, readings))
    assert (again.stored, again.duplicates, again.rejected) == (0, len(readings), 0)
    extra = msgspec.structs.replace(readings[0], seq=readings[0].seq + 10_000)
    mixed = await storage.write(items_for(storage, [extra, *readings[:2]]))
    assert (mixed.stored, mixed.duplicates, mixed.rejected) == (1, 2, 0)
    assert await count(storage, storage.names.readings_pattern) == len(readings) + 1


async def test_processor_on_elasticsearch_stores_the_golden_pipeline_and_warns_without_ilm(
    stack: dict[str, Any], elastic_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = _pipeline.Env({**stack, "search": {"url": elastic_url}})  # no users: no security
    await env.backend.close()  # Env's OpenSearch client: not used here
    cfg = env.config()
    cfg = msgspec.structs.replace(
        cfg, search=msgspec.structs.replace(cfg.search, backend="elasticsearch")
    )
    es = ElasticsearchBackend(elastic_url)
    modules = await es.perform(search.Request("GET", "/_nodes/plugins"))
    (node,) = modules["nodes"].values()
    has_ilm = any(m["name"] == "x-pack-ilm" for m in node["modules"])
    await create_topics(env.kafka, env.topics.all(), partitions=3)
    messages = _pipeline.golden()
    readings = [m for m in messages if isinstance(m, Reading)]
    assert readings
    try:
        await _pipeline.produce(env.kafka, env.topics, messages)
        caplog.set_level(logging.INFO, logger="cloud_processor.app")
        async with _pipeline.running(cfg) as p:
            assert p.storage is not None
            assert p.storage.lifecycle == ("ilm" if has_ilm else "none")
            storage = Storage(es, env.names)

            async def all_stored() -> bool:
                return bool(await count(storage, env.names.readings_pattern) >= len(readings))

            await _pipeline.wait_for(all_stored, within=60.0)
        warned = [
            r
            for r in caplog.records
            if r.name == "cloud_processor.app" and "event=no_lifecycle_management" in r.message
        ]
        if has_ilm:
            assert not warned
        else:
            assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert await count(storage, env.names.readings_pattern) == len(readings)
        for r in readings:
            got = await es.perform(search.get_doc(env.names.readings_for(r.ts), reading_id(r)))
            assert got["_source"] == reading_doc(r)
        # the golden backlog's late alerts were upserted into the alerts index
        await es.perform(search.refresh(env.names.alerts))
        alerts = await es.perform(search.search(env.names.alerts, {"size": 100}))
        assert {h["_source"]["rule"] for h in alerts["hits"]["hits"]} >= {"data_gap"}
    finally:
        with contextlib.suppress(SearchError):
            await drop_prefix(es, env.names)
        await es.close()
        await delete_topics(env.kafka, env.topics.all())
