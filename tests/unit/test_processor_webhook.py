"""Webhook delivery (retries, formats), its hostile-input handling (escaping,
redirects, body cap, signature, no secret in logs) and the metrics/health endpoint."""

from __future__ import annotations

import asyncio
import json
import logging

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from cloud_processor.config import WebhookSettings
from cloud_processor.metrics import Metrics
from cloud_processor.testing import WebhookReceiver
from cloud_processor.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookNotifier,
    change_payload,
    slack_payload,
    verify_signature,
)
from stagekit.health import HealthServer
from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind, Severity


def change(
    version: int = 1, notify: bool = True, message: str = "hot", device: str = "d1"
) -> AlertChange:
    a = Alert(
        f"{device}.threshold_high.1",
        device,
        "s1",
        "threshold_high",
        Severity.WARNING,
        AlertStatus.OPEN,
        version,
        1,
        1,
        value=9.0,
        message=message,
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


async def test_every_post_attempt_is_timed_answered_or_not() -> None:
    receiver = WebhookReceiver(status=503)
    await receiver.start()
    attempts: list[float] = []
    notifier = WebhookNotifier(settings(receiver.url, max_attempts=2), on_attempt=attempts.append)
    try:
        assert not await notifier.send(change(1))  # two attempts, both answered 503
        receiver.status = 200
        assert await notifier.send(change(2))
    finally:
        await notifier.close()
        await receiver.close()
    assert len(attempts) == 3 and all(0 < s < 5 for s in attempts)


# -- hostile input, hostile receiver -------------------------------------------

PINGS = "<!channel> <!here> <@U024BE7LH> <http://evil.example|click> & done"


def test_slack_text_escapes_mentions_and_links() -> None:
    text = slack_payload(change(message=PINGS))["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; &lt;!here&gt; &lt;@U024BE7LH&gt;" in text
    assert "&lt;http://evil.example|click&gt; &amp; done" in text


def test_free_text_is_bounded_and_stripped_of_control_characters() -> None:
    long = "\u202e" + "<" * 4000 + "\n"
    text = slack_payload(change(message=long), max_text=100)["text"]
    assert len(text) < 100 * len("&lt;") + 80 and "\u202e" not in text and "\n" not in text
    body = change_payload(change(message=long), max_text=100)
    assert len(body["message"]) == 100 and body["message"].endswith("…")
    assert json.loads(json.dumps(body))["message"] == body["message"]  # plain JSON


async def test_requests_are_signed_and_a_receiver_can_verify_them() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    notifier = WebhookNotifier(settings(receiver.url, secret="s3cr3t"), clock=lambda: 1_800_000_000)
    try:
        assert await notifier.send(change())
    finally:
        await notifier.close()
        await receiver.close()
    ((headers, body),) = receiver.requests
    ts, sig = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert ts == "1800000000" and sig.startswith("sha256=")
    assert verify_signature("s3cr3t", ts, body, sig, now=1_800_000_060)
    assert not verify_signature("s3cr3t", ts, body + b" ", sig, now=1_800_000_060)  # tampered
    assert not verify_signature("other", ts, body, sig, now=1_800_000_060)  # wrong secret
    assert not verify_signature("s3cr3t", ts, body, sig, now=1_800_001_000)  # replayed late
    assert not verify_signature("s3cr3t", "x", body, sig)


async def test_a_redirect_is_not_followed_and_counts_as_rejected() -> None:
    target = WebhookReceiver()
    await target.start()
    receiver = WebhookReceiver(status=302, location=target.url)
    await receiver.start()
    results: list[str] = []
    notifier = WebhookNotifier(settings(receiver.url), on_result=results.append)
    try:
        assert not await notifier.send(change())
    finally:
        await notifier.close()
        await receiver.close()
        await target.close()
    assert len(receiver.requests) == 1 and target.requests == []
    assert results == ["rejected"]


async def test_the_response_body_read_is_capped() -> None:
    receiver = WebhookReceiver(body_bytes=1_000_000)
    await receiver.start()
    notifier = WebhookNotifier(settings(receiver.url, max_response_bytes=1024))
    try:
        assert await notifier.send(change())
    finally:
        await notifier.close()
        await receiver.close()
    assert notifier.last_body_bytes == 1024


@pytest.mark.parametrize("answer", ["connection_error", 302, 500])
async def test_no_log_line_holds_the_url_secret(
    answer: str | int, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WebhookReceiver(status=answer if isinstance(answer, int) else 200)
    await receiver.start()
    port = receiver.port
    if answer == "connection_error":
        await receiver.close()  # nothing listens on the port any more
    path, query, secret = "/hooks/T000/B000/XXXXsecretpath", "token=qq-secret-q", "hmac-k3y"
    url = f"http://user:pw-secret@127.0.0.1:{port}{path}?{query}"
    notifier = WebhookNotifier(settings(url, max_attempts=2, secret=secret))
    try:
        with caplog.at_level(logging.DEBUG):  # the HTTP library's debug lines included
            assert not await notifier.send(change())
    finally:
        await notifier.close()
        await receiver.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=webhook_" in text and f"127.0.0.1:{port}" in text
    for leaked in ("XXXXsecretpath", "secretpath", "qq-secret-q", "pw-secret", secret):
        assert leaked not in text, text


@hsettings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(exclude_categories=()), max_size=600),
    st.sampled_from(["opened", "resolved"]),
)
def test_slack_text_never_carries_markup_from_the_device(message: str, kind: str) -> None:
    c = change(message=message)
    if kind == "resolved":
        c = AlertChange(ChangeKind.RESOLVED, msgspec.structs.replace(c.alert, clear_reason=message))
    body = slack_payload(c, max_text=100)
    text = body["text"]
    assert "<" not in text and ">" not in text
    assert text.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0
    assert len(text) <= 100 * len("&amp;") + 100
    json.loads(msgspec.json.encode(body))  # always encodable (no lone surrogate survives)
