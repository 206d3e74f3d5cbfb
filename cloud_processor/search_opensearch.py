"""OpenSearch adapter of the search port (opensearch-py).

opensearch-py 3.2 ships ``AsyncOpenSearch`` only with its optional aiohttp
extra; rather than add that dependency, the synchronous client (urllib3,
pooled, thread-safe) runs in worker threads. Retries are the caller's business
(:mod:`cloud_processor.storage`), so the client's own are off.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgspec

from cloud_processor.search import Request, SearchError

__all__ = ["OpenSearchBackend"]

_ENC: Final = msgspec.json.Encoder()


class OpenSearchBackend:
    """Runs :class:`~cloud_processor.search.Request` objects against OpenSearch."""

    name = "opensearch"

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        verify_certs: bool = True,
        timeout_s: float = 30.0,
        pool_size: int = 8,
    ) -> None:
        from opensearchpy import OpenSearch

        auth = (username, password) if username else None
        self._client = OpenSearch(
            hosts=[url],
            http_auth=auth,
            verify_certs=verify_certs,
            timeout=timeout_s,
            max_retries=0,
            retry_on_timeout=False,
            pool_maxsize=pool_size,
            http_compress=False,
        )
        self._closed = False

    def _perform_sync(self, request: Request) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import TransportError

        body: bytes | None
        if request.body is None or isinstance(request.body, bytes):
            body = request.body
        else:
            body = _ENC.encode(request.body)
        headers = {"content-type": "application/json", **request.headers}
        try:
            return self._client.transport.perform_request(
                request.method,
                request.path,
                params=dict(request.params),
                body=body,
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
