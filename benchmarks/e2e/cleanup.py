"""Delete what one run created on the shared stack, and only that.

Kafka topics and the consumer group under the run's prefix, indices
``<index prefix>*`` and their index templates. Other engineers' and the
demo's data on the same stack stay untouched: every name is the run's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from stagekit.kafka import KafkaTarget, delete_topics, settings_for
from stagekit.search import SearchSettings, api, make_backend
from stagekit.search.api import SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import kafka_topics
from thermowatch.demo import DemoRun

__all__ = ["cleanup", "delete_group"]


async def delete_group(kafka: KafkaTarget, group_id: str) -> dict[str, Any]:
    """Delete a consumer group: its result as the report shows it, or the error."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import DeleteGroupsRequest

    admin = AIOKafkaAdminClient(**settings_for(kafka).client_options())
    await admin.start()
    try:
        # aiokafka's admin client has no delete_consumer_groups: send the
        # DeleteGroups request to the group's coordinator ourselves.
        node = await admin.find_coordinator(group_id)
        resp = await admin._send_request_to_node(node, DeleteGroupsRequest([group_id]))
        return {"group": {"name": group_id, "results": repr(getattr(resp, "results", resp))}}
    except Exception as exc:  # an old broker or a group already gone
        return {"group_error": repr(exc)}
    finally:
        await admin.close()


async def cleanup(endpoints: Mapping[str, Any], run: DemoRun) -> dict[str, Any]:
    """Delete this run's topics, consumer group, indices and index templates (only ours)."""
    done: dict[str, Any] = {}
    kafka = endpoints["kafka"]
    topics = kafka_topics(run.kafka_prefix)
    await delete_topics(kafka, topics.all())
    done["topics"] = list(topics.all())
    done.update(await delete_group(kafka, run.group_id))
    names = IndexNames(run.index_prefix)
    backend = make_backend(SearchSettings.from_endpoint(endpoints["search"], "admin"))
    try:
        with contextlib.suppress(SearchError):
            await backend.perform(api.delete_index(f"{names.prefix}*"))
        for spec in INDEXES:
            with contextlib.suppress(SearchError):
                await backend.perform(api.delete_index_template(names.base(spec)))
    finally:
        await backend.close()
    done["indices"] = f"{names.prefix}*"
    return done
