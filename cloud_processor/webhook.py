"""The webhook notifier: incident or alert changes POSTed (plain JSON or Slack) to one URL.

By default (``webhook.notify = "incidents"``) the body is an incident change
(:mod:`telemetry_contract.incidents`: one when an incident opens, escalates or
resolves); with ``"alerts"`` every alert change, as before. Below, "change"
is either; an incident's ``incident_id`` + ``version`` play the part of an
alert's ``alert_id`` + ``version``.

Delivery: each change is POSTed in order (one alert's changes never overtake
each other), retried with capped exponential backoff on connection errors,
429 and 5xx, at most ``max_attempts`` times. Once a change has been given up
on, later changes get a single attempt each until the receiver answers
again, so a dead receiver costs the stream one timeout per change rather
than a full backoff series. Every payload carries ``alert_id`` and
``version`` (also in the ``X-Thermowatch-Change`` header) so a receiver can
drop the rare repeat. The processor puts this notifier behind
:class:`~cloud_processor.dispatch.NotificationDispatcher` (queue, coalescing,
rate limits): it never runs on the write path.

Hostile input and a hostile receiver:

- Device-controlled text (ids, messages) is escaped for the format: Slack
  mrkdwn gets ``&``, ``<`` and ``>`` as entities, so ``<!channel>``,
  ``<@U123>`` and ``<http://x|y>`` arrive as inert text; the JSON body is
  plain JSON (the encoder escapes). Free text is cut to ``max_text_chars``;
  control, bidi-override and lone-surrogate characters become U+FFFD.
- Redirects are not followed: a 3xx is a failure (``rejected``). At most
  ``max_response_bytes`` of a response body are read.
- With a ``secret`` every request is signed (:func:`sign`): header
  ``X-Thermowatch-Timestamp`` (Unix seconds) and ``X-Thermowatch-Signature``
  (``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.`` + body); a receiver checks
  it with :func:`verify_signature`.
- No log line holds the URL's path, query or user info, nor the secret:
  errors are logged with ``scheme://host:port`` and scrubbed text, and the
  HTTP library's own debug lines are scrubbed as well.

>>> from telemetry_contract import Alert, AlertChange, AlertStatus, ChangeKind
>>> from telemetry_contract import Severity
>>> a = Alert("d1.threshold_high.1", "d1", "s1", "threshold_high", Severity.CRITICAL,
...           AlertStatus.OPEN, 1, 1_767_225_600_000, 1_767_225_600_000, value=9.5,
...           message="temp_c 9.5 >= 8.0 <!channel>")
>>> change_payload(AlertChange(ChangeKind.OPENED, a))["change"]
'opened'
>>> slack_payload(AlertChange(ChangeKind.OPENED, a))["text"]
':rotating_light: CRITICAL opened threshold_high on d1 (s1): temp_c 9.5 &gt;= 8.0 &lt;!channel&gt;'
>>> body = b'{"a":1}'
>>> verify_signature("k", "1700000000", body, sign("k", "1700000000", body), now=1_700_000_010)
True
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from cloud_processor.config import WebhookSettings
from cloud_processor.dispatch import change_id
from cloud_processor.ports import Change
from stagekit.backoff import Backoff
from telemetry_contract import (
    AlertChange,
    IncidentChange,
    alert_change_doc,
    incident_change_doc,
    printable,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookNotifier",
    "bounded",
    "change_payload",
    "incident_payload",
    "incident_slack_payload",
    "sign",
    "slack_escape",
    "slack_payload",
    "verify_signature",
]

log = logging.getLogger(__name__)

#: Header names of the request signature.
TIMESTAMP_HEADER: Final = "X-Thermowatch-Timestamp"
SIGNATURE_HEADER: Final = "X-Thermowatch-Signature"
#: Default free-text bound (``webhook.max_text_chars``).
MAX_TEXT: Final = WebhookSettings().max_text_chars

_ENC: Final = msgspec.json.Encoder()
_ICON: Final = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":information_source:",
}
# C0/C1 controls, bidi embeddings/overrides/isolates, line/paragraph separators
# and lone surrogates: nothing a device needs in an alert line.
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
#: HTTP library loggers whose debug lines carry the request path.
_HTTP_LOGGERS: Final = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
    "urllib3.response",
)


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with unsafe characters as U+FFFD, cut to ``limit`` characters.

    >>> bounded("a\\u202eb\\nc" + "x" * 50, 8)
    'a\ufffdb\ufffdcxx…'
    """
    text = _UNSAFE.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters as entities (``<!channel>`` stays text).

    >>> slack_escape("<!channel> & <@U1|x>")
    '&lt;!channel&gt; &amp; &lt;@U1|x&gt;'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def change_payload(change: AlertChange, max_text: int = MAX_TEXT) -> dict[str, Any]:
    """The JSON body of a change: the contract's wire form (the alert's fields,
    ``change`` and ``notify``; see :mod:`telemetry_contract.alerts`), free text
    bounded."""
    doc = alert_change_doc(change)
    for field in ("message", "clear_reason"):
        if isinstance(doc.get(field), str):
            doc[field] = bounded(doc[field], max_text)
    return doc


def incident_payload(change: IncidentChange, max_text: int = MAX_TEXT) -> dict[str, Any]:
    """The JSON body of an incident change: the contract's wire form (see
    :mod:`telemetry_contract.incidents`), free text bounded.

    >>> from telemetry_contract import (Incident, IncidentChangeKind, IncidentScope,
    ...     IncidentStatus, Severity)
    >>> inc = Incident("device.d1.threshold_high.1", IncidentScope.DEVICE, "s1", ("d1",),
    ...                Severity.CRITICAL, IncidentStatus.OPEN, 1, 1, 1,
    ...                rules=("edge_anomaly",), title="d1: <!here>")
    >>> body = incident_payload(IncidentChange(IncidentChangeKind.OPENED, inc))
    >>> body["type"], body["change"], body["rules"]
    ('incident_change', 'opened', ['edge_anomaly'])
    >>> incident_slack_payload(IncidentChange(IncidentChangeKind.OPENED, inc))["text"]
    ':rotating_light: CRITICAL incident opened: d1: &lt;!here&gt; (s1; edge_anomaly): '
    """
    doc = incident_change_doc(change)
    for field in ("message", "title"):
        if isinstance(doc.get(field), str):
            doc[field] = bounded(doc[field], max_text)
    return doc


def incident_slack_payload(change: IncidentChange, max_text: int = MAX_TEXT) -> dict[str, Any]:
    """A Slack incoming-webhook body for an incident change, escaped and bounded."""
    i = change.incident
    resolved = change.kind.value == "resolved"
    icon = ":white_check_mark:" if resolved else _ICON[i.severity.value]

    def t(text: str) -> str:
        return slack_escape(bounded(text, max_text))

    text = (
        f"{icon} {i.severity.value.upper()} incident {change.kind.value}: {t(i.title)} "
        f"({t(i.site)}; {t(', '.join(i.rules))}): {t(i.message)}"
    )
    return {"text": text, "incident_id": bounded(i.incident_id, max_text), "version": i.version}


def payload(change: Change, settings: WebhookSettings) -> dict[str, Any]:
    """The body of ``change`` in the configured format."""
    limit = settings.max_text_chars
    if isinstance(change, IncidentChange):
        if settings.format == "slack":
            return incident_slack_payload(change, limit)
        return incident_payload(change, limit)
    if settings.format == "slack":
        return slack_payload(change, limit)
    return change_payload(change, limit)


def slack_payload(change: AlertChange, max_text: int = MAX_TEXT) -> dict[str, Any]:
    """A Slack incoming-webhook body (``text``), same facts in one line, every
    interpolated string bounded and escaped."""
    a = change.alert
    resolved = change.kind.value == "resolved"
    icon = ":white_check_mark:" if resolved else _ICON[a.severity.value]
    detail = (a.clear_reason or "") if resolved else a.message

    def t(text: str) -> str:
        return slack_escape(bounded(text, max_text))

    text = (
        f"{icon} {a.severity.value.upper()} {change.kind.value} {t(a.rule)} on {t(a.device_id)} "
        f"({t(a.site)}): {t(detail)}"
    )
    return {"text": text, "alert_id": bounded(a.alert_id, max_text), "version": a.version}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Thermowatch-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of
    ``<timestamp>.`` + body, keyed by the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: recompute :func:`sign` over the raw body, compare in
    constant time, and refuse a timestamp more than ``tolerance_s`` away from
    ``now`` (a replayed request)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class _Scrub(logging.Filter):
    """Removes the secrets of every open notifier from the HTTP library's log
    records (one filter for all, so that one notifier's secret inside another's
    cannot leave a remainder)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[int, tuple[list[str], str]] = {}  # id -> (secrets, netloc)

    def scrub(self, text: str) -> str:
        pairs = [(x, netloc) for secrets, netloc in self.secrets.values() for x in secrets]
        for secret, netloc in sorted(pairs, key=lambda p: len(p[0]), reverse=True):
            text = text.replace(secret, netloc if "@" in secret else "<redacted>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_SCRUB: Final = _Scrub()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_SCRUB)


class WebhookNotifier:
    """POSTs incident or alert changes to one URL (requests, in a worker thread): a
    :class:`~cloud_processor.ports.Notifier`."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        on_result: Callable[[str], None] | None = None,
        on_attempt: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import requests

        self._settings = settings
        self._session = requests.Session()
        self._on_result = on_result
        self._on_attempt = on_attempt  # seconds one POST took, answered or not
        self._clock = clock
        self._closed = False
        self._down_since: float | None = None
        #: Bytes of the last response body read (at most ``max_response_bytes``).
        self.last_body_bytes = 0
        parts = urlsplit(settings.url)
        public_netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        self.public_url = f"{parts.scheme}://{public_netloc}"
        secrets = [settings.url, parts.path, parts.query, settings.secret]
        if parts.query:
            secrets.append(f"{parts.path}?{parts.query}")
        secrets = [x for x in secrets if x and x != "/"]
        if "@" in parts.netloc:  # user:password@host
            secrets.append(parts.netloc)
        _SCRUB.secrets[id(self)] = (secrets, public_netloc)
        if settings.url and not settings.secret:
            log.warning("event=webhook_unsigned url=%s detail=set webhook.secret", self.public_url)

    def scrub(self, text: str) -> str:
        """``text`` without the URL's path, query, user info or the secret."""
        return _SCRUB.scrub(text)

    def _post(self, body: bytes, change_key: str) -> int:
        headers = {"content-type": "application/json", "x-thermowatch-change": change_key}
        if self._settings.secret:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._settings.secret, timestamp, body)
        resp = self._session.post(
            self._settings.url,
            data=body,
            headers=headers,
            timeout=self._settings.timeout_s,
            allow_redirects=False,
            stream=True,  # read at most max_response_bytes of the body, below
        )
        try:
            cap = self._settings.max_response_bytes
            self.last_body_bytes = len(resp.raw.read(cap)) if cap else 0
        finally:
            resp.close()  # an unread rest closes the connection instead of being read
        return int(resp.status_code)

    async def notify(self, changes: Sequence[Change]) -> None:
        """POST each change in order (what it gives up on is logged and counted)."""
        for change in changes:
            await self.send(change)

    async def send(self, change: Change) -> bool:
        """Deliver one change; False when it was given up on (logged)."""
        import requests

        settings = self._settings
        if not settings.url or not change.notify:
            return True
        body = _ENC.encode(payload(change, settings))
        key = change_id(change)
        backoff = Backoff(
            settings.backoff_initial_s,
            max(settings.backoff_max_s, settings.backoff_initial_s),
            jitter="equal",
        )
        # After a give-up, the receiver gets one attempt per change until it
        # answers again: a dead webhook must not hold the stream for minutes.
        attempts = 1 if self._down_since is not None else settings.max_attempts
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            try:
                status = await asyncio.to_thread(self._post, body, key)
            except requests.RequestException as exc:
                status = 0
                why = printable(self.scrub(str(exc)), 300, quote=True)
                detail = f"error={type(exc).__name__} detail={why}"
            else:
                detail = f"status={status}"
            if self._on_attempt:
                self._on_attempt(time.perf_counter() - started)
            if 200 <= status < 300:
                self._down_since = None
                self._result("sent")
                return True
            if status and status < 500 and status != 429:
                why = " detail=redirect not followed" if 300 <= status < 400 else ""
                log.error(
                    "event=webhook_rejected change=%s url=%s %s%s",
                    key,
                    self.public_url,
                    detail,
                    why,
                )
                self._result("rejected")
                return False
            log.warning(
                "event=webhook_retry change=%s url=%s attempt=%d delay_s=%.2f %s",
                key,
                self.public_url,
                attempt,
                backoff.current_s,
                detail,
            )
            if attempt < attempts:
                await asyncio.sleep(backoff.next())
        if self._down_since is None:
            self._down_since = time.monotonic()
        log.error(
            "event=webhook_gave_up change=%s url=%s attempts=%d", key, self.public_url, attempts
        )
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
            _SCRUB.secrets.pop(id(self), None)
