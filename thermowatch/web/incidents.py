"""The web view's incidents: fold incident changes and documents into what the page lists.

The processor groups the alerts of one device (or of one site, when most of
its devices fire together) into one incident: a severity (the highest of its
alerts), the rules that contributed, the alert ids, ``open`` then
``resolved``. It publishes no Kafka topic of incidents: it stores each in the
incidents index (``<prefix>incidents``), which the web view reads every
``search.incidents_refresh_s`` (2 s); the page shows the open ones first, each
with its rules, and a short list of recently resolved ones.

The same facts come again at every poll, in any order, so the fold
follows the alerts' rules: a change replaces the held incident only if its
``version`` is newer, and a resolved incident is remembered (as a tombstone,
for an hour) so a replayed ``opened`` never reopens it. Anything that is not
an incident is counted in :attr:`IncidentBook.refused` and skipped.

Info-severity incidents (an announced shutdown, a maintenance window) are
held but not listed: they are an informational state of the devices, not
something to act on.

>>> book = IncidentBook(max_resolved=2)
>>> t0 = 1_767_225_600_000
>>> doc = {"incident_id": "device.a1", "scope": "device", "site": "s1",
...        "device_ids": ["s1-d01"], "severity": "warning", "status": "open",
...        "version": 1, "opened_at": t0, "updated_at": t0,
...        "rules": ["threshold_high"], "alert_ids": ["a1"], "change": "opened"}
>>> book.fold(doc, now_ms=t0)
True
>>> [i["rules"] for i in book.open_json()]
[['threshold_high']]
>>> book.fold({**doc, "status": "resolved", "version": 3, "resolved_at": t0 + 9}, now_ms=t0)
True
>>> book.fold(doc, now_ms=t0), book.open_json()      # the replayed opening is ignored
(False, [])
>>> [i["incident_id"] for i in book.resolved_json()]
['device.a1']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from stagekit.search.incidents import incident_from_doc
from telemetry_contract import ContractError, Incident, IncidentStatus, Severity

__all__ = ["IncidentBook", "IncidentView"]

SEVERITY_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
#: Resolved incidents are remembered this long (so an older copy cannot reopen them).
_TOMBSTONE_MS: Final = 3_600_000
#: Held incidents at most (open and resolved): a flood of made-up ids cannot grow the view.
_MAX_HELD: Final = 5_000


@dataclass(frozen=True, slots=True)
class IncidentView:
    """An incident as the page shows it: the contract's :class:`~telemetry_contract.Incident`."""

    incident: Incident

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> IncidentView:
        """Read an incidents-index document (or an incident change as data).

        Decoded with the contract (:func:`stagekit.search.incidents.incident_from_doc`);
        ValueError names the field that is wrong.

        >>> IncidentView.from_doc({"type": "incident_change", "incident_id": "x"})
        Traceback (most recent call last):
        ...
        ValueError: scope: required field is missing
        """
        if not isinstance(doc, Mapping):
            raise ValueError(f"incident: expected a JSON object, got {type(doc).__name__}")
        try:
            return cls(incident_from_doc(dict(doc)).incident)
        except ContractError as exc:
            raise ValueError(str(exc)) from None
        except (TypeError, OverflowError, msgspec.MsgspecError) as exc:  # not JSON at all
            raise ValueError(f"incident: {type(exc).__name__}: {exc}"[:512]) from None

    @property
    def incident_id(self) -> str:
        """The incident's id."""
        return self.incident.incident_id

    @property
    def version(self) -> int:
        """The incident's version (its number of changes)."""
        return self.incident.version

    @property
    def is_open(self) -> bool:
        """Whether the incident is still open."""
        return self.incident.status is IncidentStatus.OPEN

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dictionary (the page's incident row)."""
        i = self.incident
        return {
            "incident_id": i.incident_id,
            "scope": i.scope.value,
            "site": i.site,
            "devices": list(i.device_ids),
            "device_count": i.device_count,
            "severity": i.severity.value,
            "status": i.status.value,
            "version": i.version,
            "opened_at": i.opened_at,
            "updated_at": i.updated_at,
            "resolved_at": i.resolved_at,
            "rules": list(i.rules),
            "alert_ids": list(i.alert_ids),
            "alerts": i.alert_count,
            "active_alerts": i.active_alerts,
            "title": i.title,
            "message": i.message,
        }


@dataclass(slots=True)
class _Held:
    view: IncidentView
    #: Processing time of the last change folded in (grace before dropping it).
    touched_ms: int


def _open_order(v: IncidentView) -> tuple[int, int, str]:
    """Most severe first, then newest first."""
    i = v.incident
    return (-SEVERITY_RANK[i.severity], -i.opened_at, i.incident_id)


def _resolved_order(v: IncidentView) -> tuple[int, str]:
    """Most recently resolved first."""
    i = v.incident
    return (-(i.resolved_at or i.updated_at), i.incident_id)


class IncidentBook:
    """Held incidents: :meth:`fold` and :meth:`sync` in, ``*_json`` out; see the module doc."""

    def __init__(
        self,
        *,
        max_open: int = 200,
        max_resolved: int = 20,
        grace_s: float = 30.0,
    ) -> None:
        self._max_open = max_open
        self._max_resolved = max_resolved
        self._grace_ms = int(grace_s * 1000)
        self._held: dict[str, _Held] = {}
        #: Documents and changes that were not incidents (skipped).
        self.refused = 0
        #: Set by every change of what the page lists; the caller clears it.
        self.dirty = False

    def __len__(self) -> int:
        return len(self._held)

    def parse(self, doc: Mapping[str, Any] | IncidentView) -> IncidentView | None:
        """The incident in ``doc``; None (and counted in :attr:`refused`) if it is not one."""
        if isinstance(doc, IncidentView):
            return doc
        try:
            return IncidentView.from_doc(doc)
        except ValueError:
            self.refused += 1
            return None

    def fold(self, doc: Mapping[str, Any] | IncidentView, *, now_ms: int) -> bool:
        """Fold one incident if it is newer than the one held (a higher ``version``)."""
        view = self.parse(doc)
        if view is None:
            return False
        held = self._held.get(view.incident_id)
        if held is not None and view.version <= held.view.version:
            return False
        self._held[view.incident_id] = _Held(view, now_ms)
        if len(self._held) > _MAX_HELD:
            self._evict()
        self.dirty = True
        return True

    def _evict(self) -> None:
        """Drop the least useful incidents: the oldest resolved, then the least severe open."""
        resolved = sorted(
            (h.view for h in self._held.values() if not h.view.is_open), key=_resolved_order
        )
        opened = sorted((h.view for h in self._held.values() if h.view.is_open), key=_open_order)
        excess = len(self._held) - _MAX_HELD
        for view in (resolved[::-1] + opened[::-1])[:excess]:
            del self._held[view.incident_id]

    def sync(self, docs: Iterable[Mapping[str, Any] | IncidentView], *, now_ms: int) -> int:
        """Make the held incidents match the search server's (open and recently resolved).

        An incident held open but absent from ``docs`` is dropped once its last
        change is older than the grace period (resolved meanwhile, or too new
        to be searchable); a resolved one is forgotten after an hour.
        """
        changed = 0
        seen: set[str] = set()
        for doc in docs:
            view = self.parse(doc)
            if view is None:
                continue
            seen.add(view.incident_id)
            changed += self.fold(view, now_ms=now_ms)
        for incident_id, held in list(self._held.items()):
            age = now_ms - held.touched_ms
            if held.view.is_open:
                if incident_id not in seen and age > self._grace_ms:
                    del self._held[incident_id]
                    self.dirty = True
                    changed += 1
            elif incident_id not in seen and age > max(self._grace_ms, _TOMBSTONE_MS):
                del self._held[incident_id]
                self.dirty = True
        return changed

    def open_incidents(self) -> list[IncidentView]:
        """Open incidents worth acting on (not info), most severe and newest first."""
        out = [
            h.view
            for h in self._held.values()
            if h.view.is_open and h.view.incident.severity is not Severity.INFO
        ]
        out.sort(key=_open_order)
        return out[: self._max_open]

    def resolved_incidents(self) -> list[IncidentView]:
        """The most recently resolved incidents (not info), at most ``max_resolved``."""
        out = [
            h.view
            for h in self._held.values()
            if not h.view.is_open and h.view.incident.severity is not Severity.INFO
        ]
        out.sort(key=_resolved_order)
        return out[: self._max_resolved]

    def open_json(self) -> list[dict[str, Any]]:
        """:meth:`open_incidents` as the page's rows."""
        return [i.to_json() for i in self.open_incidents()]

    def resolved_json(self) -> list[dict[str, Any]]:
        """:meth:`resolved_incidents` as the page's rows."""
        return [i.to_json() for i in self.resolved_incidents()]

    def incident_of_alerts(self) -> dict[str, str]:
        """``alert_id -> incident_id`` for the listed open incidents (groups alert rows)."""
        return {a: i.incident_id for i in self.open_incidents() for a in i.incident.alert_ids}
