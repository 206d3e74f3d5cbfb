"""The webhook notifier: alert changes POSTed (plain JSON or Slack) to one URL.

Delivery: each change is POSTed in order (one alert's changes never overtake
each other), retried with capped exponential backoff on connection errors,
429 and 5xx, at most ``max_attempts`` times, and rate limited by a token
bucket. Once a change has been given up on, later changes get a single
attempt each until the receiver answers again, so a dead receiver costs the
stream one timeout per change rather than a full backoff series. Every
payload carries ``alert_id`` and ``version`` (also in the
``X-Thermowatch-Change`` header) so a receiver can drop the rare repeat after
a processor crash.

>>> from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind
>>> from telemetry_contract import Severity
>>> a = Alert("d1.threshold_high.1", "d1", "s1", "threshold_high", Severity.CRITICAL,
...           AlertStatus.OPEN, 1, 1_767_225_600_000, 1_767_225_600_000, value=9.5,
...           message="temp_c 9.5 >= 8.0")
>>> change_payload(AlertChange(ChangeKind.OPENED, a))["change"]
'opened'
>>> slack_payload(AlertChange(ChangeKind.OPENED, a))["text"]
':rotating_light: CRITICAL opened threshold_high on d1 (s1): temp_c 9.5 >= 8.0'
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from cloud_processor.config import WebhookSettings
from stagekit.backoff import Backoff
from telemetry_contract import AlertChange, alert_change_doc

__all__ = ["TokenBucket", "WebhookNotifier", "change_payload", "slack_payload"]

log = logging.getLogger(__name__)

_ENC: Final = msgspec.json.Encoder()
_ICON: Final = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":information_source:",
}


def change_payload(change: AlertChange) -> dict[str, Any]:
    """The JSON body of a change: the contract's wire form (the alert's fields,
    ``change`` and ``notify``; see :mod:`telemetry_contract.alerts`)."""
    return alert_change_doc(change)


def slack_payload(change: AlertChange) -> dict[str, Any]:
    """A Slack incoming-webhook body (``text``), same facts in one line."""
    a = change.alert
    icon = ":white_check_mark:" if change.kind.value == "resolved" else _ICON[a.severity.value]
    text = (
        f"{icon} {a.severity.value.upper()} {change.kind.value} {a.rule} on {a.device_id} "
        f"({a.site}): {a.clear_reason if change.kind.value == 'resolved' else a.message}"
    )
    return {"text": text, "alert_id": a.alert_id, "version": a.version}


class TokenBucket:
    """At most ``rate`` events per second with bursts of ``burst``.

    >>> now = [0.0]
    >>> b = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    >>> b.delay(), b.delay(), b.delay()
    (0.0, 0.0, 0.5)
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def delay(self) -> float:
        """Take one token; return how long to wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate


class WebhookNotifier:
    """POSTs alert changes to one URL (requests, in a worker thread): a
    :class:`~cloud_processor.ports.Notifier`."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        import requests

        self._settings = settings
        self._session = requests.Session()
        self._bucket = TokenBucket(settings.rate_per_s, settings.burst)
        self._on_result = on_result
        self._closed = False
        self._down_since: float | None = None

    def _post(self, body: bytes, change_key: str) -> int:
        resp = self._session.post(
            self._settings.url,
            data=body,
            headers={"content-type": "application/json", "x-thermowatch-change": change_key},
            timeout=self._settings.timeout_s,
        )
        resp.close()
        return int(resp.status_code)

    async def notify(self, changes: Sequence[AlertChange]) -> None:
        """POST each change in order (what it gives up on is logged and counted)."""
        for change in changes:
            await self.send(change)

    async def send(self, change: AlertChange) -> bool:
        """Deliver one change; False when it was given up on (logged)."""
        import requests

        if not self._settings.url or not change.notify:
            return True
        payload = (
            slack_payload(change) if self._settings.format == "slack" else change_payload(change)
        )
        body = _ENC.encode(payload)
        key = f"{change.alert.alert_id}/{change.alert.version}"
        backoff = Backoff(
            self._settings.backoff_initial_s,
            max(self._settings.backoff_max_s, self._settings.backoff_initial_s),
            jitter="equal",
        )
        # After a give-up, the receiver gets one attempt per change until it
        # answers again: a dead webhook must not hold the stream for minutes.
        attempts = 1 if self._down_since is not None else self._settings.max_attempts
        for attempt in range(1, attempts + 1):
            wait = self._bucket.delay()
            if wait:
                await asyncio.sleep(wait)
            try:
                status = await asyncio.to_thread(self._post, body, key)
            except requests.RequestException as exc:
                status, detail = 0, str(exc)
            else:
                detail = f"status={status}"
            if 200 <= status < 300:
                self._down_since = None
                self._result("sent")
                return True
            if status and status < 500 and status != 429:
                log.error("event=webhook_rejected change=%s %s", key, detail)
                self._result("rejected")
                return False
            log.warning(
                "event=webhook_retry change=%s attempt=%d delay_s=%.2f %s",
                key,
                attempt,
                backoff.current_s,
                detail,
            )
            if attempt < attempts:
                await asyncio.sleep(backoff.next())
        if self._down_since is None:
            self._down_since = time.monotonic()
        log.error("event=webhook_gave_up change=%s attempts=%d", key, attempts)
        self._result("failed")
        return False

    def _result(self, what: str) -> None:
        if self._on_result:
            self._on_result(what)

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if not self._closed:
            self._closed = True
            self._session.close()
