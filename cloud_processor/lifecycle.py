"""Install the retention policy in the search cluster at start (ILM or ISM), idempotently.

The bodies are pure (:mod:`stagekit.search.lifecycle`); this module only
talks to the server, through a ``call(what, request)`` that retries while the
server is down (:meth:`cloud_processor.storage.Storage.ensure_schema` passes
its own) and raises :class:`~stagekit.search.api.SearchError` for a refusal.

Each start reads the installed policy and writes it only when its marker
differs from the configured retention (first start, a changed
``search.retention_days``, a newer policy revision), so several processors
starting together agree: ILM's ``PUT`` replaces, ISM's update names the
version it read (a concurrent update gets 409, and the loop reads again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from stagekit.search import api as search
from stagekit.search.api import Request, SearchError
from stagekit.search.indices import IndexNames
from stagekit.search.lifecycle import (
    ilm_policy,
    ism_policy,
    managed_patterns,
    policy_marker,
    policy_name,
)

__all__ = ["Call", "Lifecycle", "install_policy", "probe"]

log = logging.getLogger(__name__)

Lifecycle = Literal["ilm", "ism", "none"]
Call = Callable[[str, Request], Awaitable[Any]]

_PROBES: Final[dict[str, tuple[tuple[str, Lifecycle], ...]]] = {
    "elasticsearch": (("/_ilm/status", "ilm"),),
    "opensearch": (("/_plugins/_ism/policies", "ism"),),
}
_ANY: Final[tuple[tuple[str, Lifecycle], ...]] = (
    ("/_ilm/status", "ilm"),
    ("/_plugins/_ism/policies", "ism"),
)
#: Concurrent ISM updates by other processors: read again at most this often.
_ISM_ATTEMPTS: Final = 5


async def probe(call: Call, backend: str) -> Lifecycle:
    """``ilm`` or ``ism`` when the cluster manages lifecycles, else ``none``.

    Elasticsearch is asked for ILM and OpenSearch for ISM (the flavour the
    backend detected); an unknown backend is asked for both. A refusal (401,
    403) is logged as a warning naming the missing permission.
    """
    for path, kind in _PROBES.get(backend, _ANY):
        try:
            await call(f"probe_{kind}", Request("GET", path))
        except SearchError as exc:
            if exc.status is None:
                raise
            if exc.status in (401, 403):
                _forbidden(kind, exc.status, str(exc))
            continue
        return kind
    return "none"


async def install_policy(
    call: Call, kind: Lifecycle, names: IndexNames, retention_days: int
) -> str | None:
    """Create or update ``<prefix>retention`` and attach it; returns its name.

    None when ``kind`` is ``none``, or when the server refuses (401, 403): that
    is logged as a warning, and the processor runs on without a policy.

    ILM: the policy, then ``index.lifecycle.name`` on the monthly indices that
    exist (the templates name it for new ones). ISM: the policy (its
    ``ism_template`` takes new indices), then the add API on the monthly indices
    that exist, and after an update the change-policy API so that indices
    managed by the old version take the new one.
    """
    if kind == "none":
        return None
    name = policy_name(names)
    try:
        if kind == "ilm":
            await _install_ilm(call, name, names, retention_days)
        else:
            await _install_ism(call, name, names, retention_days)
    except SearchError as exc:
        if exc.status not in (401, 403):
            raise
        # Retention is not worth refusing readings for: say so and run on.
        _forbidden(kind, exc.status, str(exc))
        return None
    return name


def _forbidden(kind: str, status: int, error: str) -> None:
    log.warning(
        "event=lifecycle_forbidden lifecycle=%s status=%d detail=the search user may not "
        "manage %s policies; grant it (docs/security.md) or retention will not be managed "
        "error=%s",
        kind,
        status,
        kind.upper(),
        error[:200],
    )


async def _install_ilm(call: Call, name: str, names: IndexNames, retention_days: int) -> None:
    body = ilm_policy(retention_days)
    current: dict[str, Any] = {}
    try:
        current = await call("get_ilm_policy", search.get_ilm_policy(name))
    except SearchError as exc:
        if exc.status != 404:
            raise
    installed = current.get(name, {}).get("policy", {}).get("_meta", {}).get("description")
    if installed == policy_marker(retention_days):
        log.info("event=lifecycle_policy_unchanged lifecycle=ilm policy=%s", name)
    else:
        await call("put_ilm_policy", search.put_ilm_policy(name, body))
        log.info(
            "event=lifecycle_policy_installed lifecycle=ilm policy=%s retention_days=%d was=%s",
            name,
            retention_days,
            installed or "none",
        )
    for pattern in managed_patterns(names):
        await call(
            "attach_ilm_policy", search.put_settings(pattern, {"index.lifecycle.name": name})
        )


async def _install_ism(call: Call, name: str, names: IndexNames, retention_days: int) -> None:
    body = ism_policy(names, retention_days)
    marker = policy_marker(retention_days)
    updated = False
    for _ in range(_ISM_ATTEMPTS):
        try:
            current: dict[str, Any] = await call("get_ism_policy", search.get_ism_policy(name))
        except SearchError as exc:
            if exc.status != 404:
                raise
            current = {}
        installed = current.get("policy", {}).get("description")
        if installed == marker:
            break
        request = search.put_ism_policy(
            name, body, seq_no=current.get("_seq_no"), primary_term=current.get("_primary_term")
        )
        try:
            await call("put_ism_policy", request)
        except SearchError as exc:
            if exc.status != 409:  # another processor wrote it meanwhile: read again
                raise
            continue
        updated = bool(current)
        log.info(
            "event=lifecycle_policy_installed lifecycle=ism policy=%s retention_days=%d was=%s",
            name,
            retention_days,
            installed or "none",
        )
        break
    else:
        raise SearchError(f"ISM policy {name}: changed by others {_ISM_ATTEMPTS} times in a row")
    patterns = ",".join(managed_patterns(names))
    added = await _ism_bulk(call, "ism_add", search.ism_add(patterns, name))
    changed = 0
    if updated:
        changed = await _ism_bulk(
            call, "ism_change_policy", search.ism_change_policy(patterns, name)
        )
    log.info(
        "event=lifecycle_policy_attached lifecycle=ism policy=%s added=%d changed=%d",
        name,
        added,
        changed,
    )


async def _ism_bulk(call: Call, what: str, request: Request) -> int:
    """Run an add/change-policy request; the number of indices it updated.

    Indices that have a policy already are the normal case for ``add`` and
    are not logged; other failures are (one line each, at most 10).
    """
    try:
        answer: dict[str, Any] = await call(what, request)
    except SearchError as exc:
        if exc.status == 404:  # no monthly index yet
            return 0
        raise
    for failed in answer.get("failed_indices", [])[:10]:
        reason = str(failed.get("reason", ""))
        if "already" not in reason.lower():
            log.warning(
                "event=lifecycle_attach_failed op=%s index=%s reason=%s",
                what,
                failed.get("index_name"),
                reason[:200],
            )
    return int(answer.get("updated_indices", 0))
