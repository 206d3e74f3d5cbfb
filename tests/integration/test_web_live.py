"""The web view with the real stack: the real processor raises an alert, the page's
JSON snapshot and its event stream show it within a second of the processor
publishing it; device status, resolution and the search-only path too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from stagekit.kafka import settings_for
from telemetry_contract import DeviceState, DeviceStatus, Reading
from thermowatch.web.app import WebApp
from thermowatch.web.testing import LivePipeline, SseClient, get_json, live_pipeline

pytestmark = pytest.mark.integration


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met within {within} s")


def readings(
    device: str, site: str, first_seq: int, start_ms: int, temps: list[float]
) -> list[Reading]:
    return [
        Reading(
            device_id=device,
            sensor_id="host",
            site=site,
            seq=first_seq + i,
            ts=start_ms + i * 1000,
            temp_c=t,
        )
        for i, t in enumerate(temps)
    ]


async def state(p: LivePipeline) -> dict[str, Any]:
    status, body = await get_json(f"{p.url}/api/state")
    assert status == 200
    assert isinstance(body, dict)
    return body


def device(snapshot: dict[str, Any], device_id: str) -> dict[str, Any] | None:
    return next((d for d in snapshot["devices"] if d["device_id"] == device_id), None)


async def first_alert_record(p: LivePipeline, consumer: AIOKafkaConsumer) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            if records:
                return records[0]
    raise AssertionError("the processor published no alert change")


async def test_alert_reaches_state_and_event_stream_within_a_second(
    stack: dict[str, Any],
) -> None:
    async with live_pipeline(stack["kafka"], stack["search"]) as p:
        now = int(time.time() * 1000)
        await p.send(
            [
                DeviceStatus(
                    device_id="wa-1", site="wa", ts=now - 10_000, state=DeviceState.ONLINE
                ),
                DeviceStatus(
                    device_id="wa-2", site="wa", ts=now - 10_000, state=DeviceState.ONLINE
                ),
                *readings("wa-1", "wa", 1, now - 5000, [4.0, 4.1, 4.2]),
                *readings("wa-2", "wa", 1, now - 5000, [3.0, 3.1, 3.2]),
            ]
        )

        async def both_online() -> bool:
            s = await state(p)
            return all((d := device(s, x)) and d["state"] == "online" for x in ("wa-1", "wa-2"))

        await wait_for(both_online)
        s = await state(p)
        assert device(s, "wa-1")["spark"] == [4.0, 4.1, 4.2]  # type: ignore[index]
        assert s["alerts"] == []

        stream = SseClient(f"{p.url}/events")
        watcher = AIOKafkaConsumer(
            p.topics.alerts, **settings_for(p.kafka).client_options(), auto_offset_reset="earliest"
        )
        await watcher.start()
        try:
            await stream.connect()
            assert stream.status == 200
            first = await stream.next()
            assert first.event == "snapshot"
            assert {d["device_id"] for d in first.data["devices"]} == {"wa-1", "wa-2"}

            # the incident: wa-1 goes above the 8 °C threshold
            await p.send(readings("wa-1", "wa", 4, now - 2000, [9.5]))
            record = await first_alert_record(p, watcher)
            published_s = record.timestamp / 1000  # producer (processor) time of the change
            deadline = time.monotonic() + 30
            while True:
                ev = await stream.next(within=max(deadline - time.monotonic(), 0.1))
                if ev.event == "delta" and ev.data.get("alerts"):
                    break
            (alert,) = ev.data["alerts"]
            assert (alert["device_id"], alert["rule"], alert["severity"]) == (
                "wa-1",
                "threshold_high",
                "warning",
            )
            latency = ev.received - published_s
            print(f"alert published -> SSE event: {latency * 1000:.0f} ms")
            assert latency < 1.0, f"event stream lagged {latency:.3f} s behind the alerts topic"

            s = await state(p)
            assert [a["alert_id"] for a in s["alerts"]] == [alert["alert_id"]]
            wa1 = device(s, "wa-1")
            assert wa1 is not None and wa1["alerts"] == 1 and wa1["temp_c"] == 9.5

            # the page follows the search server alone too (Kafka off): same alert
            search_only = WebApp(p.web_config(bootstrap_servers=""))
            await search_only.start()
            try:

                async def listed() -> bool:
                    await search_only.reload()
                    snap = search_only.view.snapshot(int(time.time() * 1000))
                    ids = [a["alert_id"] for a in snap["alerts"]]
                    return ids == [alert["alert_id"]] and len(snap["devices"]) == 2

                await wait_for(listed)
            finally:
                await search_only.close()

            # wa-2's last will: offline; then wa-1 cools down: the alert resolves
            await p.send(
                [
                    DeviceStatus(
                        device_id="wa-2",
                        site="wa",
                        ts=now,
                        state=DeviceState.OFFLINE,
                        reason="connection lost",
                    ),
                    *readings("wa-1", "wa", 5, now - 1000, [4.0]),
                ]
            )

            async def settled() -> bool:
                s = await state(p)
                wa2 = device(s, "wa-2")
                offline_alert = any(a["rule"] == "device_offline" for a in s["alerts"])
                threshold_open = any(a["rule"] == "threshold_high" for a in s["alerts"])
                return bool(wa2 and wa2["state"] == "offline" and offline_alert) and not (
                    threshold_open
                )

            await wait_for(settled)
            s = await state(p)
            assert device(s, "wa-1")["state"] == "online"  # type: ignore[index]
            assert device(s, "wa-2")["state_reason"].startswith("device offline")  # type: ignore[index]
            status, health = await get_json(f"{p.url}/healthz")
            assert status == 200 and health["search"] is True and health["kafka"] is True
            assert health["clients"] == 1
        finally:
            await stream.close()
            await watcher.stop()


async def test_view_picks_up_topics_created_after_it_started(stack: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    from stagekit.kafka import create_topics, delete_topics
    from telemetry_contract import encode, kafka_key, kafka_topics
    from thermowatch.web.testing import web_config

    kafka, search_endpoint = stack["kafka"], stack["search"]
    prefix = f"wl{uuid.uuid4().hex[:8]}"
    topics = kafka_topics(prefix)
    web = WebApp(web_config(prefix, kafka, search_endpoint))
    await web.start()
    producer = AIOKafkaProducer(**settings_for(kafka).client_options(), acks="all")
    try:
        _, health = await get_json(f"{web.url}/healthz")
        assert health["kafka"] is False and health["search"] is True  # nothing there yet
        await create_topics(kafka, topics.all(), partitions=1)
        await producer.start()
        now = int(time.time() * 1000)
        (r,) = readings("wl-1", "wl", 1, now, [6.5])
        st = DeviceStatus(device_id="wl-1", site="wl", ts=now, state=DeviceState.ONLINE)
        await (await producer.send(topics.status, encode(st), key=kafka_key("wl-1")))

        async def following() -> bool:
            _, h = await get_json(f"{web.url}/healthz")
            return bool(h["kafka"])

        await wait_for(following)
        await (await producer.send(topics.telemetry, encode(r), key=kafka_key("wl-1")))

        async def shown() -> bool:
            _, s = await get_json(f"{web.url}/api/state")
            d = device(s, "wl-1")
            return bool(d and d["temp_c"] == 6.5 and d["state"] == "online")

        await wait_for(shown)
    finally:
        await producer.stop()
        await web.close()
        await delete_topics(kafka, topics.all())


async def test_open_incidents_are_read_before_many_resolved_ones(stack: dict[str, Any]) -> None:
    """The incidents query against the real search server, with the processor's mapping:
    an old open incident is read even when more resolved ones than the query's size are
    newer; an index that does not exist yet answers with none."""
    from stagekit.search import IndexNames
    from stagekit.search import api as search
    from stagekit.search.incidents import incident_doc
    from stagekit.search.indices import index_templates
    from telemetry_contract import (
        Incident,
        IncidentChange,
        IncidentChangeKind,
        IncidentScope,
        IncidentStatus,
        Severity,
    )
    from testsupport.search import admin_backend
    from thermowatch.web.config import SearchSettings
    from thermowatch.web.search import SearchSource

    names = IndexNames(f"wi{uuid.uuid4().hex[:8]}-")
    backend = admin_backend(stack["search"])
    source = SearchSource(
        SearchSettings.from_endpoint(
            stack["search"], "admin", index_prefix=names.prefix, max_alerts=10
        ),
        points=1,
        backend=backend,
    )
    now = int(time.time() * 1000)
    try:
        assert await source.incidents(now) == []  # an older processor: no index
        for name, body in index_templates(names).items():
            await backend.perform(search.put_index_template(name, body))

        def inc(n: int, status: IncidentStatus, updated: int) -> Incident:
            resolved = updated if status is IncidentStatus.RESOLVED else None
            return Incident(
                f"device.d{n}.threshold_high.{n}", IncidentScope.DEVICE, "wi", (f"d{n}",),
                Severity.WARNING, status, 2, updated - 1000, updated, resolved_at=resolved,
                rules=("threshold_high",),
            )  # fmt: skip

        incidents = [inc(0, IncidentStatus.OPEN, now - 600_000)] + [
            inc(n, IncidentStatus.RESOLVED, now - n * 1000) for n in range(1, 80)
        ]
        lines = []
        for i in incidents:
            lines.append(json.dumps({"index": {"_index": names.incidents, "_id": i.incident_id}}))
            lines.append(json.dumps(incident_doc(IncidentChange(IncidentChangeKind.UPDATED, i))))
        answer = await backend.perform(
            search.bulk(("\n".join(lines) + "\n").encode(), refresh="true")
        )
        assert not answer["errors"]
        docs = await source.incidents(now)
        assert len(docs) == 60  # max_alerts + 50
        assert docs[0]["incident_id"] == "device.d0.threshold_high.0"
        assert [d["updated_at"] for d in docs[1:]] == sorted(
            (d["updated_at"] for d in docs[1:]), reverse=True
        )
    finally:
        with contextlib.suppress(Exception):
            await backend.perform(search.delete_index(f"{names.prefix}*"))
        for name in index_templates(names):
            with contextlib.suppress(Exception):
                await backend.perform(search.delete_index_template(name))
        await source.close()
