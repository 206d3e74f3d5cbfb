"""Test helpers that ship with the package: fakes of the ports, a cuttable TCP
proxy, a webhook receiver.

Used by the tests and the benchmark; nothing here runs at import.

* :class:`FakeSource`, :class:`FakeProducer` and :class:`FakeStore` are
  in-memory :mod:`~cloud_processor.ports` for a
  :class:`~cloud_processor.app.Processor` without Kafka or a search server.
* :class:`TcpProxy` forwards a local port to a real server and can be cut
  (existing connections reset, new ones refused) and restored, which is how
  the tests take the search server "down" without touching the shared one.
* :class:`WebhookReceiver` is a local HTTP server that records every POST.
* :func:`bare_sink` is the processor's write step on a store alone (no Kafka,
  no notifier); :func:`drop_prefix` deletes what a test or benchmark created
  under its index prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloud_processor.aggregates import DirtyWindows, WindowAggregate
from cloud_processor.config import AlertSettings, RulesConfig
from cloud_processor.documents import Action, BulkItem
from cloud_processor.metrics import Metrics
from cloud_processor.notifiers import Notifications
from cloud_processor.offsets import Offsets
from cloud_processor.ports import Batch, Partition, Producer, Rebalanced, Source, Store
from cloud_processor.rules import FleetRules
from cloud_processor.sink import Sink
from cloud_processor.storage import BulkTotals
from cloud_processor.windowfold import LiveWindows
from stagekit.search import api as search
from stagekit.search.alerts import alert_doc
from stagekit.search.api import SearchBackend, SearchError
from stagekit.search.indices import INDEXES, IndexNames
from telemetry_contract import Alert

__all__ = [
    "FakeProducer",
    "FakeSource",
    "FakeStore",
    "TcpProxy",
    "WebhookReceiver",
    "bare_sink",
    "drop_prefix",
]


def bare_sink(storage: Store, *, live: LiveWindows[Any] | None, now_ms: Callable[[], int]) -> Sink:
    """The processor's write step (readings, windows) on ``storage`` alone."""
    return Sink(
        storage=storage,
        producer=FakeProducer(),
        deadletter_topic="unused",
        notifications=Notifications([]),
        offsets=Offsets(),
        rules=FleetRules(RulesConfig(), AlertSettings()),
        locations={},
        metrics=Metrics(),
        now_ms=now_ms,
        live=live,
    )


async def drop_prefix(backend: SearchBackend, names: IndexNames) -> None:
    """Delete the indices and templates under ``names``' prefix: the indices by
    name, as Elasticsearch 8 refuses wildcard deletes
    (``action.destructive_requires_name``)."""
    rows = await backend.perform(search.cat_indices(f"{names.prefix}*"))
    indices = sorted(row["index"] for row in rows)
    if indices:
        await backend.perform(search.delete_index(",".join(indices)))
    for spec in INDEXES:
        with contextlib.suppress(SearchError):
            await backend.perform(search.Request("DELETE", f"/_index_template/{names.base(spec)}"))


class FakeSource:
    """A consumer group member that is assigned ``partitions`` and hands out ``batches``.

    :meth:`start` calls back ``on_assigned`` as a group join does; each
    :meth:`getmany` returns the next queued batch or, when none is queued,
    sets :attr:`drained` (the loop has handled every batch and asks for more)
    and returns nothing after a short sleep. Commits are kept in :attr:`commits`.
    """

    replay_from_ms: int | None = None

    def __init__(self, *partitions: Partition) -> None:
        self.partitions = set(partitions)
        self.batches: deque[Batch] = deque()
        self.commits: list[dict[Partition, int]] = []
        self.end_offsets: dict[Partition, int] = {}
        self.drained = asyncio.Event()
        self.started = self.stopped = False
        #: Which devices' records come here (what :meth:`owner` returns).
        self.owns: Callable[[str], bool] = lambda device_id: True

    async def start(self, on_revoked: Rebalanced, on_assigned: Rebalanced) -> None:
        """Join: the partitions are assigned."""
        self.started = True
        await on_assigned(set(self.partitions))

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Batch:
        """The next queued batch, else nothing after (at most) 10 ms."""
        if self.batches:
            self.drained.clear()
            return self.batches.popleft()
        self.drained.set()
        await asyncio.sleep(min(timeout_ms, 10) / 1000)
        return {}

    def assignment(self) -> Collection[Partition]:
        """Every partition given to the constructor."""
        return self.partitions

    def owner(self) -> Callable[[str], bool]:
        """:attr:`owns` (default: every device is this member's)."""
        return self.owns

    def highwater(self, tp: Partition) -> int | None:
        """Unknown."""
        return None

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Record the commit."""
        self.commits.append(dict(offsets))
        return True

    async def stop(self) -> None:
        """Note it."""
        self.stopped = True


class FakeProducer:
    """Keeps every record sent as ``(topic, value, key)`` in :attr:`sent`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def start(self) -> None:
        """Nothing to connect."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Awaitable[Any]:
        """Keep the record; it is delivered at once."""
        self.sent.append((topic, value, key))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def stop(self) -> None:
        """Nothing to disconnect."""


class FakeStore:
    """A search server that stores every item at once (kept in :attr:`written`)."""

    available: bool | None = True
    lifecycle = "none"
    policy: str | None = None
    backend_name = "fake"

    def __init__(self, alerts: Sequence[Alert] = ()) -> None:
        #: What :meth:`load_alerts` returns (the alert state to restore).
        self.alerts = list(alerts)
        self.written: list[BulkItem] = []
        #: What :meth:`load_last_heard` finds: (device_id, site, last event time).
        self.last_heard: list[tuple[str, str, int]] = []

    async def ensure_schema(self, *, stop: asyncio.Event | None = None) -> dict[str, Any]:
        """Nothing to create."""
        return {"version": {"number": "0"}}

    async def load_alerts(self, *, since_ms: int, stop: asyncio.Event | None = None) -> list[Alert]:
        """:attr:`alerts`."""
        return list(self.alerts)

    async def write(self, items: Sequence[BulkItem], *, ordered: bool = False) -> BulkTotals:
        """Keep the items; all stored."""
        self.written += items
        return BulkTotals(stored=len(items))

    def alert_item(
        self,
        a: Alert,
        location: tuple[float, float] | None = None,
        *,
        processed_at: int | None = None,
    ) -> BulkItem:
        """The same upsert as :meth:`cloud_processor.storage.Storage.alert_item`."""
        doc = alert_doc(a, location, processed_at=processed_at)
        return BulkItem(Action.UPDATE, "alerts", a.alert_id, doc)

    async def compute_windows(self, dirty: DirtyWindows) -> list[WindowAggregate]:
        """No readings to aggregate here."""
        return []

    async def load_last_heard(
        self, *, since_ms: int, stop: asyncio.Event | None = None
    ) -> list[tuple[str, str, int]]:
        """:attr:`last_heard` with a last reading at or after ``since_ms``."""
        return [(d, s, ts) for d, s, ts in self.last_heard if ts >= since_ms]

    async def load_windows(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], WindowAggregate | None]:
        """No window documents."""
        return dict.fromkeys(keys)

    def aggregate_items(
        self,
        windows: Sequence[WindowAggregate],
        locations: dict[str, tuple[float, float]] | None = None,
    ) -> list[BulkItem]:
        """No windows."""
        return []

    async def close(self) -> None:
        """Nothing to release."""


class TcpProxy:
    """Forward a local port to ``target_host:target_port``; :meth:`cut`, :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on a free port the first time, the same port afterwards)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.close()

    async def cut(self) -> None:
        """Stop listening and reset every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            transport = w.transport
            if transport is not None:
                transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def close(self) -> None:
        """Cut and wait for the pipes to finish."""
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class WebhookReceiver:
    """Records POSTed JSON bodies; ``status`` is what it answers (tests flip it).

    Also keeps each request's headers and raw body (``requests``), can answer
    slowly (``delay_s`` per request), with a ``location`` header (redirects)
    and with ``body_bytes`` of body.
    """

    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    port: int = 0
    delay_s: float = 0.0
    location: str = ""
    body_bytes: int = 0
    #: ``(headers with lower-case names, raw body)`` of every request.
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                self.requests.append((headers, body))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                status = self.status
                if status == 200 and body:
                    self.received.append(json.loads(body))
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {self.body_bytes}\r\n"
                if self.location:
                    head += f"Location: {self.location}\r\n"
                writer.write(head.encode("latin-1") + b"\r\n" + b"x" * self.body_bytes)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None
            await asyncio.sleep(0.05)


if TYPE_CHECKING:  # mypy checks that the fakes implement the ports

    def _conforms() -> tuple[Source, Producer, Store]:
        return FakeSource(), FakeProducer(), FakeStore()
