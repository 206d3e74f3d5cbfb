"""Webhook delivery (retries, formats, rate limit) and the metrics/health endpoint."""

from __future__ import annotations

import asyncio

from cloud_processor.config import WebhookSettings
from cloud_processor.metrics import Metrics
from cloud_processor.testing import WebhookReceiver
from cloud_processor.webhook import TokenBucket, WebhookNotifier
from stagekit.health import HealthServer
from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind, Severity


def change(version: int = 1, notify: bool = True) -> AlertChange:
    a = Alert(
        "d1.threshold_high.1",
        "d1",
        "s1",
        "threshold_high",
        Severity.WARNING,
        AlertStatus.OPEN,
        version,
        1,
        1,
        value=9.0,
        message="hot",
    )
    return AlertChange(ChangeKind.OPENED if version == 1 else ChangeKind.UPDATED, a, notify)


def settings(url: str, **kw: object) -> WebhookSettings:
    base: dict[str, object] = {
        "url": url,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "rate_per_s": 1000.0,
        "burst": 100,
    }
    base.update(kw)
    return WebhookSettings(**base)  # type: ignore[arg-type]


async def test_webhook_retries_until_the_receiver_accepts() -> None:
    receiver = WebhookReceiver(status=503)
    await receiver.start()
    results: list[str] = []
    notifier = WebhookNotifier(settings(receiver.url, max_attempts=100), on_result=results.append)
    try:
        task = asyncio.create_task(notifier.send(change()))
        await asyncio.sleep(0.2)
        assert receiver.received == []
        receiver.status = 200
        assert await task
    finally:
        await notifier.close()
        await receiver.close()
    assert [(r["alert_id"], r["version"], r["change"]) for r in receiver.received] == [
        ("d1.threshold_high.1", 1, "opened")
    ]
    assert results == ["sent"]


async def test_webhook_gives_up_on_client_errors_and_skips_late_changes() -> None:
    receiver = WebhookReceiver(status=400)
    await receiver.start()
    notifier = WebhookNotifier(settings(receiver.url))
    try:
        assert not await notifier.send(change())
        receiver.status = 200
        assert await notifier.send(change(notify=False))  # late: nothing sent
    finally:
        await notifier.close()
        await receiver.close()
    assert receiver.received == []


async def test_slack_format_and_order() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    notifier = WebhookNotifier(settings(receiver.url, format="slack"))
    try:
        for v in (1, 2, 3):
            await notifier.send(change(v))
    finally:
        await notifier.close()
        await receiver.close()
    assert [r["version"] for r in receiver.received] == [1, 2, 3]
    assert receiver.received[0]["text"].startswith(":warning: WARNING opened threshold_high on d1")


def test_token_bucket_limits_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=5.0, burst=1, clock=lambda: now[0])
    assert bucket.delay() == 0.0
    assert bucket.delay() == 0.2
    now[0] = 10.0
    assert bucket.delay() == 0.0


async def _get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


async def test_metrics_health_and_readiness_endpoints() -> None:
    metrics = Metrics()
    ready = [False]
    server = HealthServer("127.0.0.1", 0, metrics.render, lambda: (ready[0], "r"))
    await server.start()
    try:
        metrics.docs.labels("readings", "stored").inc(3)
        metrics.consumer_lag.labels("t.telemetry", "0").set(7)
        status, body = await _get(server.port, "/metrics")
        assert status.endswith("200 OK")
        assert (
            b'thermowatch_processor_documents_total{index="readings",result="stored"} 3.0' in body
        )
        assert b'thermowatch_processor_consumer_lag{partition="0",topic="t.telemetry"} 7.0' in body
        assert (await _get(server.port, "/healthz"))[0].endswith("200 OK")
        assert (await _get(server.port, "/readyz"))[0].endswith("503 Service Unavailable")
        ready[0] = True
        assert (await _get(server.port, "/readyz"))[0].endswith("200 OK")
        assert (await _get(server.port, "/nope"))[0].endswith("404 Not Found")
    finally:
        await server.close()


async def test_dead_webhook_gets_one_attempt_per_change_until_it_recovers() -> None:
    receiver = WebhookReceiver(status=503)
    await receiver.start()
    results: list[str] = []
    notifier = WebhookNotifier(settings(receiver.url, max_attempts=3), on_result=results.append)
    try:
        assert not await notifier.send(change(1))  # full series, then given up
        assert not await notifier.send(change(2))  # one attempt only
        receiver.status = 200
        assert await notifier.send(change(3))
    finally:
        await notifier.close()
        await receiver.close()
    assert results == ["failed", "failed", "sent"]
    assert [r["version"] for r in receiver.received] == [3]
