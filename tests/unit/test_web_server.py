"""The web view's HTTP server and app wiring, on loopback, with a fake search server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stagekit.search.api import Request, SearchError
from thermowatch.web.app import WebApp, load_assets
from thermowatch.web.config import HttpSettings, KafkaSettings, SearchSettings, WebConfig
from thermowatch.web.server import WebServer
from thermowatch.web.testing import SseClient, get_json


async def raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[WebServer]:
    s = WebServer(
        "127.0.0.1",
        0,
        assets=load_assets(),
        state=lambda: b'{"devices":[]}',
        health=lambda: b'{"status":"ok"}',
        max_clients=2,
        heartbeat_s=0.2,
    )
    await s.start()
    yield s
    await s.close()


async def test_routes_and_security_headers(server: WebServer) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    page = await raw(server.port, b"GET / HTTP/1.1\r\n" + host + b"\r\n")
    assert page.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Security-Policy: default-src 'none'; script-src 'self'" in page
    assert b"X-Frame-Options: DENY" in page and b"<title>" in page
    js = await raw(server.port, b"GET /app.js HTTP/1.1\r\n" + host + b"\r\n")
    assert b"text/javascript" in js.split(b"\r\n\r\n")[0]
    head = await raw(server.port, b"HEAD /api/state HTTP/1.1\r\n" + host + b"\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert (await get_json(f"http://127.0.0.1:{server.port}/healthz")) == (200, {"status": "ok"})
    assert (await raw(server.port, b"GET /nope HTTP/1.1\r\n" + host + b"\r\n")).startswith(
        b"HTTP/1.1 404"
    )
    post = await raw(server.port, b"POST /api/state HTTP/1.1\r\n" + host + b"\r\n")
    assert post.startswith(b"HTTP/1.1 405")
    rebound = await raw(server.port, b"GET /api/state HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert rebound.startswith(b"HTTP/1.1 403")
    assert (await raw(server.port, b"\r\n")).startswith(b"HTTP/1.1 400")


async def test_stream_snapshot_then_published_deltas_and_heartbeats(server: WebServer) -> None:
    client = SseClient(f"http://127.0.0.1:{server.port}/events")
    await client.connect()
    try:
        assert client.status == 200
        first = await client.next()
        assert (first.event, first.data) == ("snapshot", {"devices": []})
        await asyncio.sleep(0.5)  # heartbeats (comments) are skipped by the reader
        server.publish("delta", b'{"n":1}')
        ev = await client.next()
        assert (ev.event, ev.data) == ("delta", {"n": 1})
        assert server.clients == 1
    finally:
        await client.close()
    for _ in range(200):
        if not server.clients:
            break
        await asyncio.sleep(0.05)
    assert server.clients == 0  # a closed browser frees its slot


async def test_streams_are_bounded_and_slow_ones_dropped(
    server: WebServer, caplog: pytest.LogCaptureFixture
) -> None:
    clients = [SseClient(f"http://127.0.0.1:{server.port}/events") for _ in range(3)]
    try:
        for c in clients:
            await c.connect()
        assert [c.status for c in clients] == [200, 200, 503]
        await clients[0].next()
        for n in range(200):  # no await: the queues overflow
            server.publish("delta", b'{"n":%d}' % n)
        seen = []
        with pytest.raises(ConnectionError):
            while True:
                seen.append(await clients[0].next(within=10))
        assert len(seen) < 200  # dropped, not fed forever
        slow = [r for r in caplog.records if "web_client_too_slow" in r.message]
        assert len(slow) == 2  # once per stream
        assert server.clients == 0
    finally:
        for c in clients:
            await c.close()


async def test_close_ends_open_streams() -> None:
    s = WebServer("127.0.0.1", 0, assets={}, state=lambda: b"{}", health=lambda: b"{}")
    await s.start()
    client = SseClient(f"http://127.0.0.1:{s.port}/events")
    await client.connect()
    try:
        await client.next()
        await s.close()
        with pytest.raises(ConnectionError):
            await client.next(within=10)
    finally:
        await client.close()


class FakeSearch:
    """Canned answers of the two queries (or a server that is down)."""

    name = "fake"

    def __init__(self) -> None:
        self.down = False
        now = int(time.time() * 1000)
        self.readings = [
            {
                "device_id": "f-1",
                "site": "f",
                "seq": s,
                "@timestamp": now - 3000 + s * 1000,
                "temp_c": 4.0 + s,
                "quality": "ok",
            }
            for s in range(3)
        ]
        self.alerts = [
            {
                "alert_id": "f-1.threshold_high.1",
                "device_id": "f-1",
                "site": "f",
                "rule": "threshold_high",
                "severity": "critical",
                "status": "open",
                "version": 1,
                "opened_at": now,
                "updated_at": now,
                "message": "<hot>",
            }
        ]
        self.incidents: list[dict[str, Any]] = [
            {
                "type": "incident_change",
                "schema_version": 1,
                "@timestamp": now,
                "incident_id": "device.f-1.threshold_high.1",
                "scope": "device",
                "site": "f",
                "device_ids": ["f-1"],
                "severity": "critical",
                "status": "open",
                "version": 2,
                "opened_at": now,
                "updated_at": now,
                "rules": ["edge_anomaly", "threshold_high"],
                "alert_ids": ["f-1.threshold_high.1", "f-1.edge_anomaly.1"],
                "alert_count": 2,
                "title": "f-1: threshold_high, edge_anomaly",
                "change": "escalated",
                "notify": True,
            }
        ]
        #: An older processor: no incidents index (the server answers with no hits).
        self.no_incidents = False
        #: The server refuses the incidents query (an answer, not an outage).
        self.refuse_incidents = False
        self.closed = False

    async def perform(self, request: Request) -> Any:
        if self.down:
            raise SearchError("down")
        if "incidents" in request.path:
            if self.refuse_incidents:
                raise SearchError("no such field", status=400)
            docs = [] if self.no_incidents else self.incidents
            return {"hits": {"hits": [{"_source": i} for i in docs]}}
        if "alerts" in request.path:
            return {"hits": {"hits": [{"_source": a} for a in self.alerts]}}
        hits = [{"_source": r} for r in self.readings]
        return {"aggregations": {"devices": {"buckets": [{"latest": {"hits": {"hits": hits}}}]}}}

    async def close(self) -> None:
        self.closed = True


async def test_app_serves_what_the_search_server_holds_without_kafka() -> None:
    fake = FakeSearch()
    cfg = WebConfig(http=HttpSettings(port=0), kafka=KafkaSettings(bootstrap_servers=""))
    app = WebApp(cfg, backend=fake)
    await app.start()
    try:
        status, state = await get_json(f"{app.url}/api/state")
        assert status == 200
        (device,) = state["devices"]
        assert (device["device_id"], device["spark"], device["state"]) == (
            "f-1",
            [4.0, 5.0, 6.0],
            "online",
        )
        assert [a["message"] for a in state["alerts"]] == ["<hot>"]
        (incident,) = state["incidents"]
        assert incident == {
            "incident_id": "device.f-1.threshold_high.1",
            "scope": "device",
            "site": "f",
            "devices": ["f-1"],
            "device_count": 1,
            "severity": "critical",
            "status": "open",
            "version": 2,
            "opened_at": incident["opened_at"],
            "updated_at": incident["opened_at"],
            "resolved_at": None,
            "rules": ["edge_anomaly", "threshold_high"],
            "alert_ids": ["f-1.threshold_high.1", "f-1.edge_anomaly.1"],
            "alerts": 2,
            "active_alerts": 0,
            "title": "f-1: threshold_high, edge_anomaly",
            "message": "",
        }
        assert state["alerts"][0]["incident_id"] == incident["incident_id"]
        assert state["resolved_incidents"] == []
        _, health = await get_json(f"{app.url}/healthz")
        assert health == {"status": "ok", "search": True, "kafka": None, "clients": 0, "devices": 1}
        fake.down = True
        await app.reload()  # degraded, not dead: the view keeps what it had
        assert app.search_ok is False
        _, state = await get_json(f"{app.url}/api/state")
        assert len(state["devices"]) == 1
    finally:
        await app.close()
    assert fake.closed
    await app.close()  # idempotent


@pytest.mark.parametrize("older", ["no_incidents", "refuse_incidents"])
async def test_without_incidents_the_page_shows_alerts_only(
    older: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A processor older than incidents: no index (no hits), or a query the server refuses."""
    fake = FakeSearch()
    setattr(fake, older, True)
    cfg = WebConfig(http=HttpSettings(port=0), kafka=KafkaSettings(bootstrap_servers=""))
    app = WebApp(cfg, backend=fake)
    await app.start()
    try:
        await app.reload()
        _, state = await get_json(f"{app.url}/api/state")
        assert (state["incidents"], state["resolved_incidents"]) == ([], [])
        assert [a["alert_id"] for a in state["alerts"]] == ["f-1.threshold_high.1"]
        assert state["alerts"][0]["incident_id"] is None
        assert app.search_ok is True
        assert app.incidents_ok is (older == "no_incidents")
        lines = [r.getMessage() for r in caplog.records if "incidents_unavailable" in r.message]
        assert len(lines) == (1 if older == "refuse_incidents" else 0)  # once, not per reload
        fake.no_incidents = fake.refuse_incidents = False  # the processor is upgraded
        await app.reload_incidents()  # the quick poll, between full reloads
        _, state = await get_json(f"{app.url}/api/state")
        assert [i["rules"] for i in state["incidents"]] == [["edge_anomaly", "threshold_high"]]
    finally:
        await app.close()


async def test_the_incidents_poll_leaves_an_outage_to_the_full_reload() -> None:
    fake = FakeSearch()
    cfg = WebConfig(http=HttpSettings(port=0), kafka=KafkaSettings(bootstrap_servers=""))
    app = WebApp(cfg, backend=fake)
    await app.start()
    try:
        fake.down = True
        await app.reload_incidents()  # no error, nothing changed
        assert app.search_ok is True and len(app.view.incidents.open_json()) == 1
        await app.reload()
        assert app.search_ok is False
        fake.down = False
        await app.reload_incidents()  # skipped until a full reload finds the server again
        await app.reload()
        assert app.search_ok is True and app.incidents_ok is True
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("search", "warned"),
    [
        (SearchSettings(url="http://127.0.0.1:9"), "plain http"),
        (SearchSettings(url="https://127.0.0.1:9"), "no login"),
        (SearchSettings(username="web", password="pw", verify_certs=False), "not verified"),
        (SearchSettings(username="web", password="pw"), None),
    ],
)
async def test_an_unprotected_search_connection_is_a_warning_at_start(
    search: SearchSettings, warned: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = WebConfig(
        http=HttpSettings(port=0), search=search, kafka=KafkaSettings(bootstrap_servers="")
    )
    app = WebApp(cfg, backend=FakeSearch())
    await app.start()
    await app.close()
    lines = [r.message for r in caplog.records if "event=search_insecure" in r.message]
    if warned is None:
        assert lines == []
    else:
        (line,) = lines
        assert warned in line and "pw" not in line
