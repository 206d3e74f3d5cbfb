"""The search-server port: requests as data, one error type, one Protocol.

Every request the processor sends is built here by a pure function returning
a :class:`Request` (method, path, query parameters, body). The OpenSearch and
Elasticsearch adapters only execute requests, so both servers receive the very
same bytes, and tests can inspect a request without a server.

>>> put_index_template("tw-readings", {"index_patterns": ["tw-readings-*"]}).path
'/_index_template/tw-readings'
>>> bulk(b"").headers["content-type"]
'application/x-ndjson'
>>> delete_index_template("tw-readings").method, count("tw-readings-*").path
('DELETE', '/tw-readings-*/_count')
>>> SearchError("boom", status=429).retriable, SearchError("bad", status=400).retriable
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

__all__ = [
    "Request",
    "SearchBackend",
    "SearchError",
    "bulk",
    "cat_indices",
    "cluster_health",
    "count",
    "create_doc",
    "create_index",
    "delete_index",
    "delete_index_template",
    "get_doc",
    "get_ilm_policy",
    "get_index_templates",
    "get_ism_policy",
    "get_mapping",
    "info",
    "ism_add",
    "ism_change_policy",
    "ism_explain",
    "mget",
    "put_ilm_policy",
    "put_index_template",
    "put_ism_policy",
    "put_mapping",
    "put_settings",
    "refresh",
    "search",
    "update_doc",
]


class SearchError(Exception):
    """A request failed. ``retriable``: the server is down, busy or overloaded.

    ``status`` is the HTTP status, or None when no answer came (connection
    refused, reset, timed out) -- which is always retriable.
    """

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def retriable(self) -> bool:
        """True when trying again later can succeed."""
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the search server."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class SearchBackend(Protocol):
    """What the processor needs from a search client: run a request, close."""

    name: str

    async def perform(self, request: Request) -> Any:
        """Run ``request``; return the decoded JSON answer or raise SearchError."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


def _p(name: str) -> str:
    return quote(name, safe=",*-_.")


def info() -> Request:
    """``GET /``: cluster name and version."""
    return Request("GET", "/")


def put_index_template(name: str, body: Mapping[str, Any]) -> Request:
    """Create or replace a composable index template (idempotent)."""
    return Request("PUT", f"/_index_template/{_p(name)}", body=body)


def delete_index_template(name: str) -> Request:
    """Delete a composable index template (clean-up of tests, benchmarks, demo runs)."""
    return Request("DELETE", f"/_index_template/{_p(name)}")


def put_ilm_policy(name: str, body: Mapping[str, Any]) -> Request:
    """Create or replace an Elasticsearch ILM policy (idempotent)."""
    return Request("PUT", f"/_ilm/policy/{_p(name)}", body=body)


def get_ilm_policy(name: str) -> Request:
    """An Elasticsearch ILM policy (``{name: {"version", "policy"}}``; 404 when there is none)."""
    return Request("GET", f"/_ilm/policy/{_p(name)}")


def get_ism_policy(name: str) -> Request:
    """An OpenSearch ISM policy with its ``_seq_no``/``_primary_term`` (404 when there is none)."""
    return Request("GET", f"/_plugins/_ism/policies/{_p(name)}")


def put_ism_policy(
    name: str,
    body: Mapping[str, Any],
    *,
    seq_no: int | None = None,
    primary_term: int | None = None,
) -> Request:
    """Create an ISM policy, or replace the version read (``seq_no``, ``primary_term``).

    ISM refuses a plain ``PUT`` over an existing policy (409); an update names
    the version it replaces, so two processors updating at once cannot both win.

    >>> put_ism_policy("tw-retention", {}, seq_no=3, primary_term=1).params
    {'if_seq_no': '3', 'if_primary_term': '1'}
    """
    params = {}
    if seq_no is not None and primary_term is not None:
        params = {"if_seq_no": str(seq_no), "if_primary_term": str(primary_term)}
    return Request("PUT", f"/_plugins/_ism/policies/{_p(name)}", params=params, body=body)


def ism_add(patterns: str, policy: str) -> Request:
    """Attach an ISM policy to existing indices (those managed already are reported, untouched).

    >>> ism_add("tw-readings-*,tw-agg1m-*", "tw-retention").path
    '/_plugins/_ism/add/tw-readings-*,tw-agg1m-*'
    """
    return Request("POST", f"/_plugins/_ism/add/{_p(patterns)}", body={"policy_id": policy})


def ism_change_policy(patterns: str, policy: str) -> Request:
    """Move managed indices to the policy's current version (after its current state's actions)."""
    return Request(
        "POST", f"/_plugins/_ism/change_policy/{_p(patterns)}", body={"policy_id": policy}
    )


def ism_explain(index: str) -> Request:
    """Whether ISM manages ``index`` and with which policy."""
    return Request("GET", f"/_plugins/_ism/explain/{_p(index)}")


def create_index(name: str) -> Request:
    """Create an index (its settings and mappings come from the matching template)."""
    return Request("PUT", f"/{_p(name)}")


def put_mapping(pattern: str, properties: Mapping[str, Any]) -> Request:
    """Add fields to the mapping of the existing indices matching ``pattern``.

    The templates shape indices created from now on; this brings indices
    that already exist up to date (adding a field is always allowed; changing
    a field's type is refused). No matching index is not an error.

    >>> r = put_mapping("tw-readings-*", {"seq": {"type": "long"}})
    >>> r.method, r.path, r.params["allow_no_indices"], r.body
    ('PUT', '/tw-readings-*/_mapping', 'true', {'properties': {'seq': {'type': 'long'}}})
    """
    return Request(
        "PUT",
        f"/{_p(pattern)}/_mapping",
        params={"allow_no_indices": "true", "ignore_unavailable": "true"},
        body={"properties": dict(properties)},
    )


def put_settings(pattern: str, settings: Mapping[str, Any]) -> Request:
    """Change dynamic settings of the existing indices matching ``pattern`` (none: no error).

    >>> r = put_settings("tw-readings-*", {"index.lifecycle.name": "tw-retention"})
    >>> r.method, r.path, r.params["allow_no_indices"]
    ('PUT', '/tw-readings-*/_settings', 'true')
    """
    return Request(
        "PUT",
        f"/{_p(pattern)}/_settings",
        params={"allow_no_indices": "true", "ignore_unavailable": "true"},
        body=dict(settings),
    )


def cluster_health() -> Request:
    """``GET /_cluster/health``: status and node counts."""
    return Request("GET", "/_cluster/health")


def delete_index(name: str) -> Request:
    """Delete an index."""
    return Request("DELETE", f"/{_p(name)}")


def bulk(body: bytes, *, refresh: str | None = None) -> Request:
    """``POST /_bulk`` with an NDJSON body (see :func:`documents.bulk_body`)."""
    params = {"refresh": refresh} if refresh else {}
    return Request(
        "POST", "/_bulk", params=params, body=body, headers={"content-type": "application/x-ndjson"}
    )


def refresh(pattern: str) -> Request:
    """Make everything written so far visible to search."""
    return Request("POST", f"/{_p(pattern)}/_refresh", params={"ignore_unavailable": "true"})


def search(pattern: str, body: Mapping[str, Any]) -> Request:
    """``POST /<pattern>/_search``; missing indices are an empty answer."""
    return Request(
        "POST",
        f"/{_p(pattern)}/_search",
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        body=body,
    )


def count(pattern: str, body: Mapping[str, Any] | None = None) -> Request:
    """``/<pattern>/_count``: documents searchable now (those ``body``'s query matches, if
    given); missing indices count 0."""
    return Request(
        "GET" if body is None else "POST",
        f"/{_p(pattern)}/_count",
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        body=body,
    )


def get_doc(index: str, doc_id: str) -> Request:
    """Real-time ``GET`` of one document."""
    return Request("GET", f"/{_p(index)}/_doc/{quote(doc_id, safe='')}")


def mget(docs: Sequence[tuple[str, str]]) -> Request:
    """Real-time ``GET`` of many documents, as (index, id) pairs; each answer
    says ``found``, or carries an ``error`` (a missing index, for one).

    >>> mget([("tw-agg1m-2026.12", "d1:60000")]).body
    {'docs': [{'_index': 'tw-agg1m-2026.12', '_id': 'd1:60000'}]}
    """
    return Request("POST", "/_mget", body={"docs": [{"_index": i, "_id": d} for i, d in docs]})


def update_doc(index: str, doc_id: str, partial: Mapping[str, Any]) -> Request:
    """Partial update of one existing document, visible at once."""
    return Request(
        "POST",
        f"/{_p(index)}/_update/{quote(doc_id, safe='')}",
        params={"refresh": "true"},
        body={"doc": partial},
    )


def get_mapping(pattern: str) -> Request:
    """The mappings of the indices matching ``pattern``; none matching is an empty answer.

    >>> get_mapping("tw-readings-*").path
    '/tw-readings-*/_mapping'
    """
    return Request(
        "GET",
        f"/{_p(pattern)}/_mapping",
        params={"ignore_unavailable": "true", "allow_no_indices": "true"},
    )


def cat_indices(pattern: str) -> Request:
    """List index names matching ``pattern`` (JSON format)."""
    return Request("GET", f"/_cat/indices/{_p(pattern)}", params={"format": "json", "h": "index"})


def create_doc(
    index: str, doc_id: str, doc: Mapping[str, Any], *, refresh: bool = False
) -> Request:
    """Create a document by id; a second create of the same id is refused (409)."""
    params = {"refresh": "true"} if refresh else {}
    return Request("PUT", f"/{_p(index)}/_create/{quote(doc_id, safe='')}", params=params, body=doc)


def get_index_templates() -> Request:
    """Every composable index template (``{"index_templates": [{"name": ...}, ...]}``)."""
    return Request("GET", "/_index_template")
