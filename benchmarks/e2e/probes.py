"""The benchmark's instruments, each watching the pipeline from outside.

* :class:`WebhookSink` -- the processor's webhook target: when each alert
  change arrived (latency (b));
* :class:`SearchProbe` -- when each sampled reading became searchable
  (latency (a));
* :func:`cpu_seconds`, :func:`scrape`, :func:`count_readings` -- a process's
  CPU time, the processor's ``/metrics``, the documents stored;
* :class:`StoredSampler` -- the documents stored, counted every few seconds
  (the stored rate of ``bench_scaleout.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from stagekit.search import SearchSettings, api, make_backend
from stagekit.search.api import SearchError
from stagekit.search.queries import ids_query
from telemetry_contract import AlertChange, ChangeKind, ContractError, Rule, decode_alert_change

__all__ = [
    "SearchProbe",
    "StoredSampler",
    "WebhookSink",
    "count_readings",
    "cpu_seconds",
    "scrape",
]


class WebhookSink:
    """A tiny HTTP server that records when each alert change arrives."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.changes: list[tuple[AlertChange, int]] = []  # change, received (ms)
        #: Every POST, decodable or not (``--storm`` counts them per step).
        self.posts = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received = time.time_ns() // 1_000_000
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with sink._lock:
                    sink.posts += 1
                if delay_s:
                    time.sleep(delay_s)  # a slow receiver (``--webhook-delay-ms``)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                try:
                    change = decode_alert_change(body)
                except ContractError:
                    return
                with sink._lock:
                    sink.changes.append((change, received))

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        self.thread.start()

    def opened(self) -> dict[tuple[str, int], int]:
        """``(device_id, opened_at) -> first receive time`` of ``opened`` changes."""
        out: dict[tuple[str, int], int] = {}
        with self._lock:
            for change, received in self.changes:
                if change.kind == ChangeKind.OPENED and change.alert.rule == Rule.THRESHOLD_HIGH:
                    key = (change.alert.device_id, change.alert.opened_at)
                    out[key] = min(out.get(key, received), received)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SearchProbe:
    """Polls ``_search`` for sampled document ids until each becomes visible.

    An ``ids`` query, not a real-time ``GET``: a document counts only once a
    refresh has made it visible to search, as it is for every reader.
    """

    def __init__(self, endpoint: dict[str, Any], pattern: str, queue: Any, poll_s: float) -> None:
        self._backend = make_backend(SearchSettings.from_endpoint(endpoint, "admin", timeout_s=10))
        self._pattern = pattern
        self._queue = queue
        self._poll_s = poll_s
        self.pending: dict[str, int] = {}
        self.found: list[tuple[str, int, int]] = []  # id, ts, found_ms
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain_queue(self) -> None:
        while True:
            try:
                doc_id, ts = self._queue.get_nowait()
            except Exception:  # queue.Empty (multiprocessing raises the stdlib one)
                return
            self.pending[doc_id] = ts

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_queue()
            if self.pending:
                ids = list(self.pending)[:1000]
                try:
                    answer = self._backend.perform_sync(api.search(self._pattern, ids_query(ids)))
                    answered = time.time_ns() // 1_000_000
                    hits = answer.get("hits", {}).get("hits", [])
                except Exception:  # SearchError, or an answer that is not a search's
                    self.errors += 1
                    hits = []
                for h in hits:
                    ts = self.pending.pop(h["_id"], None)
                    if ts is not None:
                        self.found.append((h["_id"], ts, answered))
            self._stop.wait(self._poll_s)

    def samples_empty(self) -> bool:
        """Whether every streamed sample has been picked up (approximate)."""
        return bool(self._queue.empty())

    def take(self) -> list[tuple[str, int, int]]:
        """Found samples so far (and forget them)."""
        out, self.found = self.found, []
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._backend.close_sync()


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (and its reaped children) from /proc."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process in MB (``VmRSS`` of /proc), None if gone."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page (``{}`` when unreachable)."""
    import requests

    out: dict[str, float] = {}
    try:
        resp = requests.get(url, timeout=5)
    except requests.RequestException:
        return out
    for line in resp.text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    resp.close()
    return out


def count_readings(endpoint: dict[str, Any], pattern: str) -> int:
    """Documents in ``pattern`` after a refresh (-1 when the server does not answer)."""
    backend = make_backend(SearchSettings.from_endpoint(endpoint, "admin", timeout_s=30))
    try:
        with contextlib.suppress(SearchError):
            backend.perform_sync(api.refresh(pattern))
        try:
            return int(backend.perform_sync(api.count(pattern)).get("count", 0))
        except SearchError:
            return -1
    finally:
        backend.close_sync()


class StoredSampler:
    """A thread that counts the documents of ``pattern`` (after a refresh) every
    ``every_s`` seconds: :attr:`samples` is ``(Unix time, count)`` per count, the
    time taken halfway through the count's requests (-1: the count failed)."""

    def __init__(self, endpoint: dict[str, Any], pattern: str, every_s: float = 3.0) -> None:
        self.endpoint = endpoint
        self.pattern = pattern
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        backend = make_backend(SearchSettings.from_endpoint(self.endpoint, "admin", timeout_s=30))
        try:
            while True:
                t0 = time.time()
                count = -1
                with contextlib.suppress(SearchError):
                    backend.perform_sync(api.refresh(self.pattern))
                    count = int(backend.perform_sync(api.count(self.pattern)).get("count", 0))
                self.samples.append(((t0 + time.time()) / 2, count))
                if self._stop.wait(max(0.0, self.every_s - (time.time() - t0))):
                    return
        finally:
            backend.close_sync()

    def stop(self) -> list[tuple[float, int]]:
        """Stop counting; the samples."""
        self._stop.set()
        self._thread.join(60)
        return list(self.samples)
