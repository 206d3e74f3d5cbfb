"""The search server's two adapters, OpenSearch and Elasticsearch 8, and the factory.

Both run the same :class:`~stagekit.search.api.Request` objects, so both
servers receive the very same bytes; only the transport differs. Each wraps
the library's synchronous client (urllib3, pooled, thread-safe):
``perform_sync`` for scripts and the top floor, ``perform`` (a worker thread)
for the asyncio stages -- the libraries' async clients would need aiohttp.
Retries are the caller's business (the processor's storage), so the clients'
own are off, except moving a request to another node of a cluster: given
several URLs (``search.urls``), the client's pool sends each request to a live
node picked at random and, when a node cannot be reached or does not answer
in time, puts it aside for a while (longer after each failure in a row) and
tries another (:func:`failover_options`). At random, not the clients' round
robin: it keeps its place per thread, and ``perform`` starts a thread per
request, so every request would go to the same node.

Elasticsearch: tested against a real Elasticsearch 8.19 (the local stack's
optional ``elasticsearch`` service) by
``tests/integration/test_processor_elasticsearch.py``. A cluster without ILM
answers the lifecycle probe with 405 (the client then logs that it put the
node on a short timeout; a single node is used anyway).

>>> from stagekit.search.settings import SearchSettings
>>> make_backend(SearchSettings(backend="opensearch")).name
'opensearch'
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from stagekit.search.api import Request, SearchError
from stagekit.search.settings import SearchSettings

__all__ = [
    "ElasticsearchBackend",
    "OpenSearchBackend",
    "ThreadedBackend",
    "failover_options",
    "make_backend",
]

_ENC: Final = msgspec.json.Encoder()


def _body(request: Request) -> bytes | None:
    if request.body is None or isinstance(request.body, bytes):
        return request.body
    return _ENC.encode(request.body)


def failover_options(nodes: int) -> dict[str, Any]:
    """The clients' retry options for ``nodes`` servers: a request tries each node once.

    One node: no retry at all (the caller retries, with its backoff). Several: a
    request that cannot reach a node (refused, reset, unreachable: a connection
    error) or gets no answer within the timeout (how elasticsearch-py reports a
    host that is off) goes on to the next live node, up to every node. An HTTP
    status is an answer from a live node, so it is left to the caller (and
    opensearch-py would put a node that answered 503 aside).

    >>> failover_options(1)
    {'max_retries': 0, 'retry_on_timeout': False, 'retry_on_status': ()}
    >>> failover_options(3)["max_retries"], failover_options(3)["retry_on_timeout"]
    (2, True)
    """
    return {"max_retries": nodes - 1, "retry_on_timeout": nodes > 1, "retry_on_status": ()}


class ThreadedBackend:
    """A synchronous client run in worker threads: ``perform`` and ``perform_sync``."""

    name = "search"

    def __init__(self) -> None:
        self._closed = False

    def perform_sync(self, request: Request) -> Any:
        """Run ``request`` in this thread; the decoded JSON answer or :class:`SearchError`."""
        raise NotImplementedError

    def _close_sync(self) -> None:
        raise NotImplementedError

    async def perform(self, request: Request) -> Any:
        """Run ``request`` in a worker thread of its own (a daemon thread).

        Not ``asyncio.to_thread``: its pool is joined when the loop and the
        interpreter shut down, so a request to a server that accepts and never
        answers would hold a stopping stage for the client's whole timeout.
        A caller that gives up on the request (the stage stops) leaves the
        thread to end with its timeout while the process exits.
        """
        if self._closed:
            raise SearchError("client is closed")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            try:
                result, error = self.perform_sync(request), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, answer, result, error)

        threading.Thread(target=work, name="search-request", daemon=True).start()
        return await answer

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._close_sync)

    def close_sync(self) -> None:
        """Close the connection pool from synchronous code (idempotent)."""
        if not self._closed:
            self._closed = True
            self._close_sync()


class OpenSearchBackend(ThreadedBackend):
    """Runs requests against OpenSearch (opensearch-py)."""

    name = "opensearch"

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        username: str = "",
        password: str = "",
        verify_certs: bool = True,
        ca_file: str = "",
        timeout_s: float = 30.0,
        pool_size: int = 8,
    ) -> None:
        from opensearchpy import OpenSearch
        from opensearchpy.connection_pool import RandomSelector

        super().__init__()
        hosts = [url] if isinstance(url, str) else list(url)
        auth = (username, password) if username else None
        self._client = OpenSearch(
            hosts=hosts,
            http_auth=auth,
            verify_certs=verify_certs,
            ca_certs=ca_file or None,
            timeout=timeout_s,
            pool_maxsize=pool_size,
            http_compress=False,
            selector_class=RandomSelector,
            **failover_options(len(hosts)),
        )

    def perform_sync(self, request: Request) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        if self._closed:
            raise SearchError("client is closed")
        headers = {"content-type": "application/json", **request.headers}
        try:
            return self._client.transport.perform_request(
                request.method,
                request.path,
                params=dict(request.params),
                body=_body(request),
                headers=headers,
            )
        except OSConnectionError as exc:
            raise SearchError(f"{request.method} {request.path}: {exc}") from exc
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else None
            raise SearchError(
                f"{request.method} {request.path}: status={exc.status_code} error={exc.error}",
                status=status,
                body=exc.info,
            ) from exc

    def _close_sync(self) -> None:
        self._client.close()


class ElasticsearchBackend(ThreadedBackend):
    """Runs requests against Elasticsearch 8 (elasticsearch-py 8, which derives the
    versioned media types Elasticsearch 8 wants from the plain ones)."""

    name = "elasticsearch"

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        username: str = "",
        password: str = "",
        api_key: str = "",
        verify_certs: bool = True,
        ca_file: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        from elastic_transport import RandomSelector
        from elasticsearch import Elasticsearch

        super().__init__()
        hosts = [url] if isinstance(url, str) else list(url)
        tls: dict[str, Any] = {"ca_certs": ca_file} if ca_file else {}
        self._client = Elasticsearch(
            hosts,
            basic_auth=(username, password) if username else None,
            api_key=api_key or None,
            verify_certs=verify_certs,
            request_timeout=timeout_s,
            node_selector_class=RandomSelector,
            **failover_options(len(hosts)),
            **tls,
        )

    def perform_sync(self, request: Request) -> Any:
        from elastic_transport import ConnectionError as ESConnectionError
        from elastic_transport import ConnectionTimeout
        from elasticsearch import ApiError

        if self._closed:
            raise SearchError("client is closed")
        body = _body(request)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = request.headers.get("content-type", "application/json")
        try:
            resp = self._client.perform_request(
                request.method,
                request.path,
                params=dict(request.params),
                headers=headers,
                body=body,
            )
        except (ESConnectionError, ConnectionTimeout) as exc:
            raise SearchError(f"{request.method} {request.path}: {exc}") from exc
        except ApiError as exc:
            raise SearchError(
                f"{request.method} {request.path}: status={exc.meta.status} error={exc.message}",
                status=exc.meta.status,
                body=exc.body,
            ) from exc
        return resp.body

    def _close_sync(self) -> None:
        self._client.close()


def _settle(answer: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if answer.done():  # the caller gave up on it
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


def make_backend(settings: SearchSettings) -> ThreadedBackend:
    """The adapter selected by ``search.backend``, connected to every server of the settings."""
    if settings.backend == "elasticsearch":
        return ElasticsearchBackend(
            settings.servers,
            username=settings.username,
            password=settings.password,
            api_key=settings.api_key,
            verify_certs=settings.verify_certs,
            ca_file=settings.ca_file,
            timeout_s=settings.timeout_s,
        )
    return OpenSearchBackend(
        settings.servers,
        username=settings.username,
        password=settings.password,
        verify_certs=settings.verify_certs,
        ca_file=settings.ca_file,
        timeout_s=settings.timeout_s,
    )
