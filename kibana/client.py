"""Kibana HTTP client (requests): status, saved-object import and export.

Speaks the documented saved objects API: ``GET /api/status`` (version),
``POST /api/saved_objects/_import?overwrite=true`` (multipart field ``file``
named ``*.ndjson``, header ``kbn-xsrf``) and ``POST /api/saved_objects/_export``;
``/s/<space>`` is prefixed for a non-default space.

Retries: connection errors, 429 and 5xx are retried with exponential backoff
by urllib3's ``Retry`` mounted on the session -- POST included, because an
import with ``overwrite=true`` of objects with fixed ids is idempotent (a
second import leaves the same objects) and an export only reads.

Secrets: the API key or password only ever go into the ``Authorization``
header. Error messages and log lines are built from :attr:`KibanaClient.url`
(user info stripped) and pass through :meth:`KibanaClient.redact`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kibana.saved import MIN_KIBANA

__all__ = [
    "AuthenticationError",
    "ImportReport",
    "KibanaClient",
    "KibanaError",
    "ObjectResult",
    "UnsupportedVersionError",
    "parse_version",
]

log = logging.getLogger(__name__)

RETRY_STATUS: Final = (429, 500, 502, 503, 504)


class KibanaError(Exception):
    """Something went wrong talking to Kibana (the subclasses say what)."""


class KibanaUnavailableError(KibanaError):
    """No answer (connection refused/reset, timeout) or 5xx after every retry."""


class AuthenticationError(KibanaError):
    """401 (wrong or missing credentials) or 403 (not allowed)."""


class UnsupportedVersionError(KibanaError):
    """Kibana is older than :data:`~kibana.objects.MIN_KIBANA` (or not 8.x/9.x)."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``8.12.2`` or ``8.13.0-SNAPSHOT`` -> (8, 12, 2).

    >>> parse_version("8.13.0-SNAPSHOT")
    (8, 13, 0)
    """
    core = text.split("-", 1)[0]
    parts = [int(p) for p in core.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """What the import did with one object."""

    type: str
    id: str
    title: str
    ok: bool
    #: ``created``/``overwritten`` when ok, else Kibana's ``error.type``.
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.type}/{self.id} ({self.title}): {self.outcome}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(slots=True)
class ImportReport:
    """The documented import answer, per object."""

    success: bool
    success_count: int
    results: list[ObjectResult] = field(default_factory=list)

    @property
    def errors(self) -> list[ObjectResult]:
        """Objects Kibana did not import."""
        return [r for r in self.results if not r.ok]

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> ImportReport:
        """Read ``success``, ``successCount``, ``successResults`` and ``errors``.

        >>> r = ImportReport.from_answer({"success": False, "successCount": 1,
        ...     "successResults": [{"type": "lens", "id": "a", "meta": {"title": "A"}}],
        ...     "errors": [{"type": "dashboard", "id": "d", "title": "D", "error": {
        ...         "type": "missing_references",
        ...         "references": [{"type": "lens", "id": "x"}]}}]})
        >>> [str(x) for x in r.results]
        ['lens/a (A): created', 'dashboard/d (D): missing_references: lens/x']
        """
        results = [
            ObjectResult(
                str(s.get("type")),
                str(s.get("id")),
                str(s.get("meta", {}).get("title", "")),
                True,
                "overwritten" if s.get("overwrite") else "created",
            )
            for s in answer.get("successResults", [])
        ]
        for err in answer.get("errors", []):
            e = err.get("error", {})
            kind = str(e.get("type", "unknown"))
            if kind == "missing_references":
                detail = ", ".join(
                    f"{r.get('type')}/{r.get('id')}" for r in e.get("references", [])
                )
            elif kind in ("conflict", "ambiguous_conflict"):
                detail = "exists already (import without overwrite?)"
            elif kind == "unsupported_type":
                detail = "this Kibana does not know this type"
            else:
                detail = str(e.get("message", ""))
            title = str(err.get("title") or err.get("meta", {}).get("title", ""))
            results.append(
                ObjectResult(str(err.get("type")), str(err.get("id")), title, False, kind, detail)
            )
        return cls(bool(answer.get("success")), int(answer.get("successCount", 0)), results)


class KibanaClient:
    """One Kibana, one space, one identity. Close it (or use ``with``)."""

    def __init__(
        self,
        url: str,
        *,
        space: str | None = None,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KibanaError(f"--url must be http(s)://host[:port], got {self._strip(url)!r}")
        secrets: list[str] = [s for s in (api_key, password, parts.password) if s]
        if parts.username and not username:
            username = parts.username
            password = password or parts.password
        self.url = self._strip(url.rstrip("/"))
        self.space = space if space and space != "default" else None
        self._secrets = tuple(secrets)
        self._timeout = timeout_s
        self._session = requests.Session()
        self._session.verify = verify
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff_s,
            status_forcelist=RETRY_STATUS,
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if api_key:
            self._session.headers["Authorization"] = f"ApiKey {api_key}"
        elif username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._session.headers["Authorization"] = f"Basic {token}"
        self._session.headers["kbn-xsrf"] = "thermowatch"
        self._session.headers["User-Agent"] = "thermowatch-kibana"

    @staticmethod
    def _strip(url: str) -> str:
        """The URL without user info (never print a password given in the URL)."""
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def redact(self, text: str) -> str:
        """``text`` with every credential replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _api(self, path: str) -> str:
        space = f"/s/{quote(self.space, safe='')}" if self.space else ""
        return f"{self.url}{space}{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self._api(path)
        try:
            resp = self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise KibanaUnavailableError(
                self.redact(
                    f"{method} {url}: Kibana unreachable after retries: {type(exc).__name__}"
                )
            ) from None
        log.debug(
            "event=kibana_request method=%s path=%s status=%d", method, path, resp.status_code
        )
        if resp.status_code in (401, 403):
            what = "authentication failed" if resp.status_code == 401 else "permission denied"
            hint = (
                "check --api-key-file (KIBANA_API_KEY) / --user and KIBANA_PASSWORD"
                if resp.status_code == 401
                else "the user or API key lacks the saved objects privileges of this space"
            )
            raise AuthenticationError(
                self.redact(f"{method} {url}: {what} (HTTP {resp.status_code}): {hint}")
            )
        if resp.status_code == 404 and self.space:
            raise KibanaError(
                self.redact(f"{method} {url}: HTTP 404: does space {self.space!r} exist?")
            )
        if resp.status_code >= 500:
            raise KibanaUnavailableError(
                self.redact(
                    f"{method} {url}: HTTP {resp.status_code} after retries: {_message(resp)}"
                )
            )
        if resp.status_code >= 400:
            raise KibanaError(
                self.redact(f"{method} {url}: HTTP {resp.status_code}: {_message(resp)}")
            )
        return resp

    def status(self) -> dict[str, Any]:
        """``GET /api/status`` (version and overall state)."""
        answer: dict[str, Any] = self._request("GET", "/api/status").json()
        return answer

    def version(self) -> tuple[int, int, int]:
        """Kibana's version, from ``GET /api/status`` ``version.number``."""
        number = self.status().get("version", {}).get("number")
        if not isinstance(number, str):
            raise KibanaError(f"GET {self.url}/api/status: no version.number in the answer")
        return parse_version(number)

    def check_version(self) -> tuple[int, int, int]:
        """The version, or UnsupportedVersionError if the objects cannot be imported."""
        got = self.version()
        minimum = ".".join(map(str, MIN_KIBANA))
        if got < MIN_KIBANA or got[0] > MIN_KIBANA[0] + 1:
            raise UnsupportedVersionError(
                f"Kibana {'.'.join(map(str, got))} at {self.url} is not supported: these saved "
                f"objects need Kibana >= {minimum} (8.x or 9.x)"
            )
        return got

    def import_ndjson(self, data: bytes, *, filename: str = "thermowatch.ndjson") -> ImportReport:
        """Import with overwrite; the report says what happened to each object."""
        if not filename.endswith(".ndjson"):
            filename += ".ndjson"
        resp = self._request(
            "POST",
            "/api/saved_objects/_import",
            params={"overwrite": "true"},
            files={"file": (filename, data, "application/ndjson")},
        )
        report = ImportReport.from_answer(resp.json())
        for r in report.results:
            log.info(
                "event=kibana_import type=%s id=%s ok=%s outcome=%s", r.type, r.id, r.ok, r.outcome
            )
        return report

    def export_ndjson(self, objects: Iterable[tuple[str, str]], *, deep: bool = True) -> bytes:
        """``POST /api/saved_objects/_export`` of (type, id) pairs (and what they reference)."""
        body = {
            "objects": [{"type": t, "id": i} for t, i in objects],
            "includeReferencesDeep": deep,
            "excludeExportDetails": False,
        }
        resp = self._request(
            "POST",
            "/api/saved_objects/_export",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return resp.content

    def close(self) -> None:
        """Release pooled connections (idempotent)."""
        self._session.close()

    def __enter__(self) -> KibanaClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:300]
