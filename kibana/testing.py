"""A fake Kibana that enforces the documented saved objects import API.

Kibana cannot be installed on the build machines, so the client is tested
against this local HTTP server (stdlib ``http.server`` in a thread). It holds
what the documentation promises and nothing more:

* every ``POST`` needs the ``kbn-xsrf`` header (else 400);
* ``Authorization: ApiKey <key>`` or ``Basic`` must match (else 401 with
  Kibana's error body);
* ``POST /api/saved_objects/_import`` takes ``multipart/form-data`` with a
  field ``file`` whose filename ends in ``.ndjson``, honours ``overwrite``, and
  answers ``{success, successCount, successResults, errors}`` with
  ``error.type`` ``conflict``, ``missing_references`` or ``unsupported_type``;
* ``POST /api/saved_objects/_export`` returns the requested objects (and
  their references) as NDJSON plus the export summary line;
* ``GET /api/status`` answers ``version.number``;
* ``/s/<space>/...`` addresses a space (unknown spaces answer 404).

``fail_next`` lets a test inject 5xx answers (the client must retry them);
``requests`` records what was received (method, path, headers) so a test can
assert that the API key never travels anywhere but the Authorization header.
"""

from __future__ import annotations

import base64
import email.policy
import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeKibana", "Received"]

_ICONS: Final = {"index-pattern": "indexPatternApp", "lens": "lensApp", "dashboard": "dashboardApp"}


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeKibana:
    """Local fake of Kibana's status and saved objects APIs. ``start()``/``close()``."""

    version: str = "8.15.2"
    api_key: str = "test-api-key"
    users: dict[str, str] = field(default_factory=dict)
    spaces: set[str] = field(default_factory=lambda: {"default"})
    #: HTTP statuses to answer to the next requests (then normal service).
    fail_next: list[int] = field(default_factory=list)
    known_types: frozenset[str] = frozenset(
        {"index-pattern", "lens", "dashboard", "visualization", "search", "config"}
    )
    requests: list[Received] = field(default_factory=list)
    #: space -> (type, id) -> object
    store: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKibana:
        """Listen on a free port in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakeKibana:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def objects(self, space: str = "default") -> dict[tuple[str, str], dict[str, Any]]:
        """What is stored in ``space``."""
        with self._lock:
            return dict(self.store.get(space, {}))

    # -- request handling -----------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(Received(method, h.path, headers, body))
            failure = self.fail_next.pop(0) if self.fail_next else None
        if failure is not None:
            self._reply(h, failure, {"statusCode": failure, "error": "Injected", "message": "fake"})
            return
        parts = urlsplit(h.path)
        path, query = parts.path, parse_qs(parts.query)
        space = "default"
        if path.startswith("/s/"):
            space, _, rest = path[3:].partition("/")
            path = "/" + rest
        if not self._authorized(headers):
            self._reply(
                h,
                401,
                {
                    "statusCode": 401,
                    "error": "Unauthorized",
                    "message": "[security_exception]: unable to authenticate",
                },
            )
            return
        if space not in self.spaces:
            self._reply(h, 404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"})
            return
        if method == "POST" and "kbn-xsrf" not in headers:
            self._reply(
                h,
                400,
                {
                    "statusCode": 400,
                    "error": "Bad Request",
                    "message": "Request must contain a kbn-xsrf header.",
                },
            )
            return
        if method == "GET" and path == "/api/status":
            self._reply(
                h,
                200,
                {
                    "name": "fake-kibana",
                    "version": {"number": self.version, "build_snapshot": False},
                    "status": {"overall": {"level": "available"}},
                },
            )
        elif method == "POST" and path == "/api/saved_objects/_import":
            self._import(h, space, headers, body, query)
        elif method == "POST" and path == "/api/saved_objects/_export":
            self._export(h, space, body)
        else:
            self._reply(h, 404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"})

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth == f"ApiKey {self.api_key}":
            return True
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return user in self.users and self.users[user] == password
        return False

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        content_type: str = "application/json",
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _bad(self, h: BaseHTTPRequestHandler, message: str) -> None:
        self._reply(h, 400, {"statusCode": 400, "error": "Bad Request", "message": message})

    def _import(
        self,
        h: BaseHTTPRequestHandler,
        space: str,
        headers: dict[str, str],
        body: bytes,
        query: dict[str, list[str]],
    ) -> None:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            self._bad(h, "Unsupported Media Type: expected multipart/form-data")
            return
        msg = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
        )
        files = [
            p
            for p in msg.iter_parts()
            if p.get_param("name", header="content-disposition") == "file"
        ]
        if len(files) != 1:
            self._bad(h, "[request body.file]: expected value of type [Stream] but got [undefined]")
            return
        filename = files[0].get_filename() or ""
        if not filename.endswith(".ndjson"):
            self._bad(h, f"Invalid file extension {filename.rpartition('.')[2] or filename}")
            return
        overwrite = query.get("overwrite", ["false"])[0] == "true"
        payload = files[0].get_payload(decode=True)
        text = payload.decode() if isinstance(payload, bytes) else ""
        incoming: list[dict[str, Any]] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                self._bad(h, "Unexpected token in JSON")
                return
            if "exportedCount" not in obj:
                incoming.append(obj)
        with self._lock:
            stored = self.store.setdefault(space, {})
            in_file = {(o.get("type"), o.get("id")) for o in incoming}
            successes: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for obj in incoming:
                key = (str(obj.get("type")), str(obj.get("id")))
                title = str(obj.get("attributes", {}).get("title", ""))
                meta = {"title": title, "icon": _ICONS.get(key[0], "")}
                base = {"type": key[0], "id": key[1], "title": title, "meta": meta}
                if key[0] not in self.known_types:
                    errors.append({**base, "error": {"type": "unsupported_type"}})
                    continue
                missing = [
                    {"type": r.get("type"), "id": r.get("id")}
                    for r in obj.get("references", [])
                    if (r.get("type"), r.get("id")) not in in_file
                    and (str(r.get("type")), str(r.get("id"))) not in stored
                ]
                if missing:
                    errors.append(
                        {**base, "error": {"type": "missing_references", "references": missing}}
                    )
                    continue
                existed = key in stored
                if existed and not overwrite:
                    errors.append({**base, "error": {"type": "conflict"}})
                    continue
                stored[key] = obj
                result: dict[str, Any] = {"type": key[0], "id": key[1], "meta": meta}
                if existed:
                    result["overwrite"] = True
                successes.append(result)
        answer: dict[str, Any] = {
            "success": not errors,
            "successCount": len(successes),
            "successResults": successes,
        }
        if errors:
            answer["errors"] = errors
        self._reply(h, 200, answer)

    def _export(self, h: BaseHTTPRequestHandler, space: str, body: bytes) -> None:
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._bad(h, "invalid JSON body")
            return
        with self._lock:
            stored = dict(self.store.get(space, {}))
        wanted = [(str(o.get("type")), str(o.get("id"))) for o in request.get("objects", [])]
        out: dict[tuple[str, str], dict[str, Any]] = {}
        missing: list[dict[str, str]] = []
        todo = list(wanted)
        while todo:
            key = todo.pop(0)
            if key in out:
                continue
            obj = stored.get(key)
            if obj is None:
                missing.append({"type": key[0], "id": key[1]})
                continue
            out[key] = obj
            if request.get("includeReferencesDeep"):
                todo += [(str(r.get("type")), str(r.get("id"))) for r in obj.get("references", [])]
        lines = [json.dumps(o, sort_keys=True) for o in out.values()]
        if not request.get("excludeExportDetails"):
            lines.append(
                json.dumps(
                    {
                        "excludedObjects": [],
                        "excludedObjectsCount": 0,
                        "exportedCount": len(out),
                        "missingRefCount": len(missing),
                        "missingReferences": missing,
                    }
                )
            )
        self._reply(h, 200, ("\n".join(lines) + "\n").encode(), "application/ndjson")
