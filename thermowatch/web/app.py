"""Wiring and lifecycle of the web view: search + Kafka -> view -> HTTP/SSE.

Start-up loads the recent readings, the open alerts and the open and recently
resolved incidents from the search server, then four tasks run: the Kafka
feed folds alert changes, device status and (optionally) readings into the
view as they arrive (there is no Kafka topic of incidents); a reload from the search
server every ``search.refresh_s`` corrects anything missed (Kafka down, a
document written by someone else, an acknowledgement); the incidents are
read every ``search.incidents_refresh_s`` (the processor stores them in the
search server); and a push loop sends what changed to every open event
stream every ``http.push_interval_s``.
Neither source is required: without Kafka the page lags by the reload
interval, without the search server it shows what Kafka brings. Both states
are in ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

import msgspec

from stagekit.kafka import warn_if_insecure
from stagekit.ratelog import RateLimitedLog
from stagekit.search import make_backend
from stagekit.search.api import SearchBackend, SearchError
from telemetry_contract import printable
from thermowatch.web.config import WebConfig
from thermowatch.web.kafka import LiveFeed
from thermowatch.web.search import SearchSource
from thermowatch.web.server import Asset, WebServer
from thermowatch.web.view import REFUSED_LOG_LINES, REFUSED_LOG_PER_S, FleetView, fold_record

__all__ = ["WebApp", "load_assets"]

log = logging.getLogger(__name__)

_ENC: Final = msgspec.json.Encoder()
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def load_assets() -> dict[str, Asset]:
    """The page's static files by URL path (read once, at start)."""
    root = resources.files("thermowatch.web") / "static"
    out: dict[str, Asset] = {}
    for name in ("index.html", "app.js", "app.css"):
        suffix = name[name.rindex(".") :]
        out[f"/{name}"] = Asset(_TYPES[suffix], (root / name).read_bytes())
    return out


class WebApp:
    """The web view: ``await start()``, ``await run(stop)``, ``await close()``."""

    def __init__(
        self,
        config: WebConfig,
        *,
        backend: SearchBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        v = config.view
        self.view = FleetView(
            sparkline_points=v.sparkline_points,
            offline_after_s=v.offline_after_s,
            alert_grace_s=v.alert_grace_s,
            max_devices=config.search.max_devices,
            max_alerts=config.search.max_alerts,
            devices=v.devices,
        )
        self._backend = backend
        self._clock = clock
        self._source: SearchSource | None = None
        self._feed: LiveFeed | None = None
        self._server: WebServer | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: None until the first reload; then whether the search server answered.
        self.search_ok: bool | None = None
        #: Whether the last incidents query answered (an error there leaves the alerts).
        self.incidents_ok: bool | None = None
        #: Records of the live feed the view failed on (logged and skipped).
        self.feed_errors = 0
        #: The log budget of the feed's refused and failed records (each its own key).
        self.refused_log = RateLimitedLog(lines=REFUSED_LOG_LINES, per_s=REFUSED_LOG_PER_S)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def port(self) -> int:
        """The bound HTTP port."""
        assert self._server is not None
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL of the page."""
        host = self.config.http.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"  # noqa: S104

    async def start(self) -> None:
        """Bind the HTTP server, load from the search server, start following Kafka."""
        cfg = self.config
        self._stop = asyncio.Event()
        if insecure := cfg.search.insecure():
            log.warning(
                "event=search_insecure url=%s detail=%s",
                cfg.search.shown(),
                "; ".join(insecure),
            )
        if self._backend is None:
            self._backend = make_backend(cfg.search)
        self._source = SearchSource(
            cfg.search, points=cfg.view.sparkline_points, backend=self._backend
        )
        self._server = WebServer(
            cfg.http.host,
            cfg.http.port,
            assets=load_assets(),
            state=self._state_json,
            health=self._health_json,
            max_clients=cfg.http.max_clients,
            heartbeat_s=cfg.http.heartbeat_s,
        )
        await self._server.start()
        if cfg.kafka.servers:
            warn_if_insecure(cfg.kafka, log)
            self._feed = LiveFeed(cfg.kafka, self._on_record)
            self._tasks.append(asyncio.create_task(self._feed.run(self._stop)))
        await self.reload()
        self._tasks.append(
            asyncio.create_task(self._every(self.config.search.refresh_s, self.reload))
        )
        self._tasks.append(
            asyncio.create_task(
                self._every(self.config.search.incidents_refresh_s, self.reload_incidents)
            )
        )
        self._tasks.append(asyncio.create_task(self._push_loop()))
        log.info("event=web_started url=%s", self.url)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set."""
        await (stop or asyncio.Event()).wait()

    async def close(self) -> None:
        """Stop the tasks, the server and the clients (idempotent)."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._source is not None:
            await self._source.close()
            self._source = None
        elif self._backend is not None:
            await self._backend.close()
        self._backend = None

    async def __aenter__(self) -> WebApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- inputs ----------------------------------------------------------------

    def _on_record(self, kind: str, payload: bytes | None) -> None:
        """Fold one record; whatever goes wrong with it, log one bounded line and go on.

        :func:`fold_record` is total for any payload (a record the contract
        refuses is skipped there); this guard keeps the feed alive should the
        view itself fail on one record, instead of ending the feed's task.
        Both lines are rate-limited by :attr:`refused_log`: a hostile producer
        cannot turn its records into log volume.
        """
        try:
            fold_record(
                self.view, kind, payload, now_ms=self._now_ms(), refused_log=self.refused_log
            )
        except Exception as exc:
            self.feed_errors += 1
            self.refused_log.log(  # no traceback: one short line, at most 10 per 10 s
                log,
                logging.ERROR,
                "event=feed_record_failed kind=%s size=%d error=%s",
                printable(kind, 32),
                len(payload or b""),
                printable(f"{type(exc).__name__}: {exc}", 512, quote=True),
                key="failed",
            )

    async def reload(self) -> None:
        """Fold the search server's recent readings, open alerts and incidents into the view."""
        assert self._source is not None
        try:
            readings = await self._source.recent_readings(self._now_ms())
            alerts = await self._source.open_alerts()
            incidents = await self._incidents()
        except SearchError as exc:
            if self.search_ok is not False:
                log.warning("event=search_unavailable error=%s", exc)
            self.search_ok = False
            return
        if self.search_ok is not True:
            log.info("event=search_available readings=%d alerts=%d", len(readings), len(alerts))
        self.search_ok = True
        for doc in readings:
            self.view.on_reading_doc(doc)
        self.view.sync_alerts(alerts, now_ms=self._now_ms())
        if incidents is not None:
            self.view.sync_incidents(incidents, now_ms=self._now_ms())

    async def _incidents(self) -> list[dict[str, Any]] | None:
        """The incident documents; None when the search server refuses the query.

        A refusal (an answer, not an outage) leaves the page with the alerts
        only: one log line when it starts, one when it ends.
        """
        assert self._source is not None
        try:
            docs = await self._source.incidents(self._now_ms())
        except SearchError as exc:
            if exc.status is None:
                raise  # the search server is down: the caller says so
            if self.incidents_ok is not False:
                log.warning(
                    "event=incidents_unavailable index=%s error=%s",
                    self._source.incidents_index,
                    printable(str(exc), 512, quote=True),
                )
            self.incidents_ok = False
            return None
        if self.incidents_ok is False:
            log.info("event=incidents_available incidents=%d", len(docs))
        self.incidents_ok = True
        return docs

    async def reload_incidents(self) -> None:
        """Fold the search server's incidents into the view (between full reloads).

        A search server that is down is left to :meth:`reload` to report.
        """
        if self._source is None or self.search_ok is False:
            return
        with contextlib.suppress(SearchError):
            incidents = await self._incidents()
            if incidents is not None:
                self.view.sync_incidents(incidents, now_ms=self._now_ms())

    async def _every(self, seconds: float, reload: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            if not self._stop.is_set():
                try:
                    await reload()
                except Exception as exc:  # keep serving what the view has; try again next time
                    self.refused_log.log(  # one short line, no traceback per reload
                        log,
                        logging.ERROR,
                        "event=reload_failed error=%s",
                        printable(f"{type(exc).__name__}: {exc}", 512, quote=True),
                        key="reload",
                    )

    async def _push_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.http.push_interval_s)
            delta = self.view.delta(self._now_ms())
            if delta is not None and self._server is not None:
                self._server.publish("delta", _ENC.encode(delta))

    # -- outputs ---------------------------------------------------------------

    def _state_json(self) -> bytes:
        return _ENC.encode(self.view.snapshot(self._now_ms()))

    def _health_json(self) -> bytes:
        return _ENC.encode(
            {
                "status": "ok",
                "search": self.search_ok,
                "kafka": None if self._feed is None else self._feed.connected,
                "clients": 0 if self._server is None else self._server.clients,
                "devices": len(self.view.device_ids()),
            }
        )
