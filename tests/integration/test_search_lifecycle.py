"""Retention policy and shard settings against the real search server.

The local stack's OpenSearch is embedded from Maven Central, where the Index
State Management plugin is not published: there the processor must detect
that ISM is absent (and the ISM test is skipped, saying so). Against a server
with ISM (``THERMOWATCH_STACK_DIR`` / ``THERMOWATCH_SEARCH_PORT`` naming one),
the ISM test checks the policy, its attachment to a new monthly index and the
explain API.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloud_processor.storage import Storage
from stagekit.search import ThreadedBackend
from stagekit.search import api as search
from stagekit.search.api import Request, SearchError
from stagekit.search.indices import INDEXES, IndexNames
from stagekit.search.lifecycle import policy_marker, policy_name
from testsupport.search import admin_backend

pytestmark = pytest.mark.integration

JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB = JAN + 31 * 86_400_000


@pytest.fixture
async def admin(stack: dict[str, Any]) -> AsyncIterator[ThreadedBackend]:
    backend = admin_backend(stack["search"])
    yield backend
    await backend.close()


@pytest.fixture
async def names(admin: ThreadedBackend) -> AsyncIterator[IndexNames]:
    names = IndexNames(f"t{uuid.uuid4().hex[:8]}-")
    yield names
    with contextlib.suppress(SearchError):
        await admin.perform(search.delete_index(f"{names.prefix}*"))
    for spec in INDEXES:
        with contextlib.suppress(SearchError):
            await admin.perform(search.delete_index_template(names.base(spec)))
    for path in (
        f"/_plugins/_ism/policies/{policy_name(names)}",
        f"/_ilm/policy/{policy_name(names)}",
    ):
        with contextlib.suppress(SearchError):
            await admin.perform(Request("DELETE", path))


async def plugins(admin: ThreadedBackend) -> set[str]:
    rows = await admin.perform(Request("GET", "/_cat/plugins", params={"format": "json"}))
    return {row["component"] for row in rows}


async def test_shards_and_replicas_from_config_shape_every_new_index(
    admin: ThreadedBackend, names: IndexNames
) -> None:
    storage = Storage(admin, names, shards=2, replicas=0, retry_initial_s=0.1)
    await storage.ensure_schema(now_ms=JAN)
    created = [names.for_ts(spec, JAN) for spec in INDEXES]
    settings = await admin.perform(search.Request("GET", f"/{','.join(created)}/_settings"))
    for index in created:
        got = settings[index]["settings"]["index"]
        assert (got["number_of_shards"], got["number_of_replicas"]) == ("2", "0"), index
    # One node, no replica: every shard is placed, the indices are green.
    health = await admin.perform(
        Request(
            "GET",
            f"/_cluster/health/{','.join(created)}",
            params={"wait_for_status": "green"},
        )
    )
    assert health["status"] == "green"


async def test_lifecycle_detected_is_the_plugin_the_server_has(
    admin: ThreadedBackend, names: IndexNames
) -> None:
    storage = Storage(admin, names, retention_days=30, retry_initial_s=0.1)
    await storage.ensure_schema(now_ms=JAN)
    has_ism = "opensearch-index-management" in await plugins(admin)
    assert storage.lifecycle == ("ism" if has_ism else "none")
    assert storage.policy == (policy_name(names) if has_ism else None)


async def test_ism_policy_exists_and_manages_a_new_monthly_index(
    admin: ThreadedBackend, names: IndexNames
) -> None:
    if "opensearch-index-management" not in await plugins(admin):
        pytest.skip("this search server has no Index State Management plugin")
    storage = Storage(admin, names, retention_days=30, retry_initial_s=0.1)
    await storage.ensure_schema(now_ms=JAN)
    policy = await admin.perform(search.get_ism_policy(policy_name(names)))
    assert policy["policy"]["description"] == policy_marker(30)
    (index, *_) = await storage.create_indices(now_ms=FEB)
    assert index == names.readings_for(FEB)
    managed: Any = None
    for _ in range(30):  # the explain API shows the policy as soon as ISM took the index
        answer = await admin.perform(search.ism_explain(index))
        managed = answer.get(index, {}).get("index.plugins.index_state_management.policy_id")
        if managed:
            break
        await asyncio.sleep(0.5)
    assert managed == policy_name(names)
