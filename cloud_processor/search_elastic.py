"""Elasticsearch 8 adapter of the search port (elasticsearch-py 8).

Same requests as the OpenSearch adapter (built in :mod:`cloud_processor.search`);
only the transport differs. The synchronous client runs in worker threads
(``AsyncElasticsearch`` would need aiohttp). Elasticsearch 8 wants its
versioned media types, which the client derives from the plain ones.

Tested against a real Elasticsearch 8.19 (the local stack's optional
``elasticsearch`` service) by ``tests/integration/test_processor_elasticsearch.py``.
A cluster without ILM answers the lifecycle probe with 405 (the client then
logs that it put the node on a short timeout; a single node is used anyway).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgspec

from cloud_processor.search import Request, SearchError

__all__ = ["ElasticsearchBackend"]

_ENC: Final = msgspec.json.Encoder()


class ElasticsearchBackend:
    """Runs :class:`~cloud_processor.search.Request` objects against Elasticsearch 8."""

    name = "elasticsearch"

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        api_key: str = "",
        verify_certs: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        from elasticsearch import Elasticsearch

        self._client = Elasticsearch(
            url,
            basic_auth=(username, password) if username else None,
            api_key=api_key or None,
            verify_certs=verify_certs,
            request_timeout=timeout_s,
            max_retries=0,
            retry_on_timeout=False,
        )
        self._closed = False

    def _perform_sync(self, request: Request) -> Any:
        from elastic_transport import ConnectionError as ESConnectionError
        from elastic_transport import ConnectionTimeout
        from elasticsearch import ApiError

        body: bytes | None
        if request.body is None or isinstance(request.body, bytes):
            body = request.body
        else:
            body = _ENC.encode(request.body)
        ctype = request.headers.get("content-type", "application/json")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = ctype
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

    async def perform(self, request: Request) -> Any:
        """Run ``request`` in a worker thread."""
        if self._closed:
            raise SearchError("client is closed")
        return await asyncio.to_thread(self._perform_sync, request)

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._client.close)
