"""A stage's probe endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

Shared by the gateway and the processor. ``/healthz`` answers 200 while the
event loop runs (liveness); ``/readyz`` answers 200 only when the readiness
callback says the stage can do its work, 503 otherwise. Anything else is 404;
a method other than ``GET``/``HEAD`` is a 400. One request per connection.

Built on :mod:`stagekit.httpserver` (hand-written, see there why): the
probes are answered from the stage's own event loop, so a stuck loop fails
liveness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from stagekit.httpserver import HttpServer, Request

__all__ = ["HealthServer"]

_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthServer(HttpServer):
    """Serves the endpoints until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        super().__init__(host, port)
        self._render = render
        self._ready = ready

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        await self.close()

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one probe."""
        status, ctype, body = self._answer(request)
        await self.respond(writer, status, ctype, body, head=request.method == "HEAD")

    def _answer(self, request: Request) -> tuple[int, str, bytes]:
        if request.method not in ("GET", "HEAD"):
            return 400, "text/plain", b"bad request\n"
        if request.path == "/metrics":
            return 200, _METRICS_TYPE, self._render()
        if request.path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if request.path == "/readyz":
            ok, detail = self._ready()
            return (200 if ok else 503), "text/plain", (detail + "\n").encode()
        return 404, "text/plain", b"not found\n"
