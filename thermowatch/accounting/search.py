"""Source: what the search server holds -- documents per reading, alert documents.

Runs the shared queries (:mod:`stagekit.search.queries`) through the shared
backend (:func:`stagekit.search.make_backend`), so TLS and authentication
come from :class:`~stagekit.search.SearchSettings`. Tools and tests may pass
a plain URL instead. Every fetch refreshes first: nothing acknowledged by the
server is missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from stagekit.search import SearchSettings, ThreadedBackend, make_backend
from stagekit.search import api as search
from stagekit.search.alerts import alert_from_doc
from stagekit.search.api import SearchError
from stagekit.search.incidents import incident_from_doc
from stagekit.search.queries import device_alerts_query, parse_stored_pairs, stored_pairs_query
from telemetry_contract import Incident
from thermowatch.accounting.alerts import AlertDoc

__all__ = ["connect", "fetch_alerts", "fetch_incidents", "fetch_stored"]


def connect(server: SearchSettings | str, *, timeout: float | None = None) -> ThreadedBackend:
    """A backend for ``server`` (settings, or a plain URL); ``timeout`` overrides the settings'."""
    settings = SearchSettings(url=server) if isinstance(server, str) else server
    if timeout is not None:
        settings = msgspec.structs.replace(settings, timeout_s=timeout)
    return make_backend(settings)


def fetch_stored(
    server: SearchSettings | str,
    index_pattern: str,
    devices: Iterable[str],
    *,
    page: int = 2000,
    timeout: float = 60,
) -> dict[tuple[str, int], int]:
    """Documents per ``(device_id, seq)`` in ``index_pattern``, for ``devices``.

    A composite aggregation pages through every pair (after a refresh, so
    nothing acknowledged is missed); a count above 1 means stored twice.
    """
    devs = sorted(set(devices))
    out: dict[tuple[str, int], int] = {}
    backend = connect(server, timeout=timeout)
    try:
        backend.perform_sync(search.refresh(index_pattern))
        after: dict[str, Any] | None = None
        while True:
            answer = backend.perform_sync(
                search.search(index_pattern, stored_pairs_query(devs, page=page, after=after))
            )
            pairs, after = parse_stored_pairs(answer)
            for key, n in pairs.items():
                out[key] = out.get(key, 0) + n
            if after is None:
                return out
    finally:
        backend.close_sync()


def fetch_alerts(
    server: SearchSettings | str, index: str, devices: Iterable[str], *, timeout: float = 60
) -> list[AlertDoc]:
    """Every alert document of ``devices`` in the alerts index (one search, up to 10,000)."""
    backend = connect(server, timeout=timeout)
    try:
        backend.perform_sync(search.refresh(index))
        answer = backend.perform_sync(search.search(index, device_alerts_query(devices)))
    finally:
        backend.close_sync()
    hits = answer.get("hits", {}).get("hits", [])
    return [AlertDoc.of(alert_from_doc(h["_source"])) for h in hits]


def fetch_incidents(
    server: SearchSettings | str, index: str, *, timeout: float = 60
) -> list[Incident]:
    """Every incident document of ``index`` (one search, up to 10,000; none when
    the index does not exist)."""
    backend = connect(server, timeout=timeout)
    try:
        try:
            backend.perform_sync(search.refresh(index))
            answer = backend.perform_sync(
                search.search(index, {"size": 10_000, "query": {"match_all": {}}})
            )
        except SearchError as exc:
            if exc.status == 404:  # a processor older than incidents: none
                return []
            raise
    finally:
        backend.close_sync()
    hits = answer.get("hits", {}).get("hits", [])
    return [incident_from_doc(h["_source"]).incident for h in hits]
