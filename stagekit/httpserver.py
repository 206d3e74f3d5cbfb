"""The one hand-written HTTP/1.1 server: one bounded request per connection.

Both of the project's HTTP endpoints are built on it: the stages' probes
(:class:`stagekit.health.HealthServer`: ``/metrics``, ``/healthz``,
``/readyz``) and the live web view (``thermowatch.web.server``: the page and
its server-sent events). A subclass says what to answer in
:meth:`HttpServer.handle`; this module reads the request line and the headers
(bounded in size, count and time), writes responses and keeps track of open
connections so that :meth:`HttpServer.close` can end them.

Hand-written rather than a framework because the probes must be answered from
the stage's own event loop (a stuck loop must fail liveness, which a server
thread such as prometheus-client's would not), and because a handful of
``GET`` routes and one event stream do not justify a web framework as a
dependency of every stage.

>>> response_head(404, "text/plain", 10).decode().splitlines()[:3]
['HTTP/1.1 404 Not Found', 'Content-Type: text/plain', 'Content-Length: 10']
>>> host_allowed("localhost:8088", bind_host="127.0.0.1")
True
>>> host_allowed("evil.example:8088", bind_host="127.0.0.1")
False
>>> host_allowed("evil.example", bind_host="0.0.0.0")
True
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LOOPBACK",
    "MAX_HEADERS",
    "MAX_LINE",
    "REASONS",
    "HttpServer",
    "Request",
    "host_allowed",
    "read_request",
    "response_head",
]

log = logging.getLogger(__name__)

REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
#: Longest request line or header line accepted (the stream reader's limit).
MAX_LINE: Final = 16 * 1024
#: Most header lines read before the request is refused.
MAX_HEADERS: Final = 100
LOOPBACK: Final = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True, slots=True)
class Request:
    """What the servers look at: the method, the path without its query, the ``Host``."""

    method: str
    path: str
    host: str = ""


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read a request line and its headers; ``ValueError`` for a malformed request.

    Only ``Host`` is kept. Lines longer than the reader's limit raise
    ``ValueError`` too (from the reader); the caller bounds the time.
    """
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) < 2:
        raise ValueError("bad request line")
    host = ""
    for _ in range(MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "host":
            host = value.strip()
    else:
        raise ValueError("too many headers")
    return Request(parts[0], parts[1].split("?", 1)[0], host)


def response_head(status: int, content_type: str, length: int, headers: str = "") -> bytes:
    """Status line and headers of a complete response; ``headers`` are extra ``Name: v\\r\\n``."""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"{headers}Connection: close\r\n\r\n"
    ).encode()


def host_allowed(host: str, *, bind_host: str) -> bool:
    """Whether a request's ``Host`` header may be served.

    Bound to loopback, only loopback names are accepted, so a web page on
    another site cannot reach the server through a DNS name it controls
    (DNS rebinding).

    >>> host_allowed("[::1]:8088", bind_host="::1"), host_allowed("", bind_host="127.0.0.1")
    (True, False)
    """
    if bind_host not in LOOPBACK:
        return True
    name = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return name.lower() in LOOPBACK


class HttpServer:
    """Accepts connections, reads one request each, hands it to :meth:`handle`.

    A request that is malformed or not complete within ``request_timeout_s``
    gets a 400. Every response closes its connection. ``headers`` are added
    to every response :meth:`respond` writes.
    """

    #: ``event=<name>_listening`` in the log.
    name = "http"

    def __init__(
        self, host: str, port: int, *, headers: str = "", request_timeout_s: float = 5.0
    ) -> None:
        self._host = host
        self._port = port
        self._headers = headers
        self._timeout = request_timeout_s
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        """The configured listen address."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def serving(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._server is not None

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=MAX_LINE
        )
        log.info("event=%s_listening host=%s port=%d", self.name, self._host, self.port)

    async def close(self) -> None:
        """Stop serving; open connections get 5 s to end, then are cancelled (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.closing()
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def closing(self) -> None:
        """Called by :meth:`close` once no new connection is accepted (end long responses)."""

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one request (a subclass writes the response with :meth:`respond`)."""
        raise NotImplementedError

    async def respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
    ) -> None:
        """Write a complete response (no body for ``HEAD``)."""
        writer.write(
            response_head(status, content_type, len(body), self._headers) + (b"" if head else body)
        )
        await writer.drain()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                request = await asyncio.wait_for(read_request(reader), self._timeout)
            except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                await self.respond(writer, 400, "text/plain", b"bad request\n")
                return
            await self.handle(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
