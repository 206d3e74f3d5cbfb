"""Index layout and field definitions: the one place that says what is stored.

Every index the processor writes is described here as data (:class:`IndexSpec`
holding :class:`FieldSpec` entries with a mapping type and a unit or format
hint). The mappings and composable index templates are generated from these
definitions, and so are the Kibana saved objects (``kibana/`` imports
:data:`INDEXES`), so a field renamed here is renamed everywhere.

Why time-partitioned indices and not data streams. A data stream accepts only
``op_type=create`` (good: that is our dedupe) but checks ``_id`` uniqueness only
inside its current write index: after a rollover, a reading redelivered by
Kafka would land in the new backing index as a second copy. Readings and
aggregates therefore go to regular indices whose name is derived from the
record's *event time* (``<prefix>readings-2026.01``): a redelivered record
always targets the same index and the same ``_id``, so ``create`` answers 409
forever, not just until the next rollover. Retention deletes whole months: the
cluster's own lifecycle management (:mod:`stagekit.search.lifecycle`) or, as a
manual tool, :func:`expired_indices`.

>>> names = IndexNames("tw-")
>>> names.readings_for(1_767_225_600_000)
'tw-readings-2026.01'
>>> names.readings_pattern, names.alerts
('tw-readings-*', 'tw-alerts')
>>> READINGS.field("temp_c").unit
'°C'
>>> READINGS.mappings()["properties"]["device_id"]
{'type': 'keyword'}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "AGGREGATES",
    "ALERTS",
    "INCIDENTS",
    "INDEXES",
    "READINGS",
    "FieldSpec",
    "FieldType",
    "IndexNames",
    "IndexSpec",
    "expired_indices",
    "index_templates",
    "month_suffix",
]

FieldType = Literal[
    "keyword", "text", "date", "float", "double", "long", "integer", "boolean", "geo_point"
]

#: Dates are written as epoch milliseconds (exact, cheap) but ISO strings are
#: accepted too (acknowledgement times typed by people).
DATE_FORMAT: Final = "strict_date_optional_time||epoch_millis"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One stored field: its mapping type plus display hints for dashboards."""

    name: str
    type: FieldType
    unit: str = ""
    description: str = ""
    #: Kibana number format pattern, e.g. ``0.00``.
    format: str = ""
    optional: bool = False

    def mapping(self) -> dict[str, Any]:
        """The mapping entry of this field.

        >>> FieldSpec("ts", "date").mapping()
        {'type': 'date', 'format': 'strict_date_optional_time||epoch_millis'}
        >>> FieldSpec("message", "text").mapping()
        {'type': 'text', 'fields': {'keyword': {'type': 'keyword', 'ignore_above': 256}}}
        """
        if self.type == "date":
            return {"type": "date", "format": DATE_FORMAT}
        if self.type == "text":
            return {
                "type": "text",
                "fields": {"keyword": {"type": "keyword", "ignore_above": 256}},
            }
        return {"type": self.type}


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index family: its base name, time field and fields."""

    key: str
    description: str
    time_field: str
    fields: tuple[FieldSpec, ...]
    #: True: one index per month of event time; False: one single index.
    monthly: bool

    def field(self, name: str) -> FieldSpec:
        """The field called ``name`` (KeyError if there is none)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def mappings(self) -> dict[str, Any]:
        """Strict mappings: an unknown field is an error, not a silent new column."""
        return {
            "dynamic": "strict",
            "properties": {f.name: f.mapping() for f in self.fields},
        }


_TS = FieldSpec("@timestamp", "date", description="Event time (UTC) of the reading.")

READINGS: Final = IndexSpec(
    key="readings",
    description="One document per reading; _id is device_id:seq.",
    time_field="@timestamp",
    monthly=True,
    fields=(
        _TS,
        FieldSpec("device_id", "keyword", description="Device identity."),
        FieldSpec("sensor_id", "keyword", description="1-Wire id or 'host'."),
        FieldSpec("site", "keyword", description="Site of the device."),
        FieldSpec("seq", "long", description="Per-device sequence number."),
        FieldSpec(
            "temp_c",
            "float",
            unit="°C",
            format="0.00",
            optional=True,
            description="Temperature; null unless quality is ok or stuck.",
        ),
        FieldSpec("quality", "keyword", description="ok, crc_error, power_on_reset, ..."),
        FieldSpec(
            "anomaly_score",
            "float",
            format="0.000",
            optional=True,
            description="Edge detector score.",
        ),
        FieldSpec("is_anomaly", "boolean", description="Edge detector verdict."),
        FieldSpec("detector", "keyword", optional=True, description="Edge detector name."),
        FieldSpec("schema_version", "integer", description="Contract version of the message."),
        FieldSpec(
            "location", "geo_point", optional=True, description="Configured device position."
        ),
    ),
)

AGGREGATES: Final = IndexSpec(
    key="agg1m",
    description="One-minute tumbling window per device, recomputed from stored readings.",
    time_field="@timestamp",
    monthly=True,
    fields=(
        FieldSpec("@timestamp", "date", description="Window start (UTC)."),
        FieldSpec("window_end", "date", description="Window end (exclusive)."),
        FieldSpec("device_id", "keyword"),
        FieldSpec("site", "keyword"),
        FieldSpec("temp_min", "float", unit="°C", format="0.00"),
        FieldSpec("temp_max", "float", unit="°C", format="0.00"),
        FieldSpec("temp_mean", "float", unit="°C", format="0.00"),
        FieldSpec("temp_last", "float", unit="°C", format="0.00"),
        FieldSpec("last_ts", "date", description="Event time of the last reading."),
        FieldSpec("count", "integer", description="Readings with a temperature."),
        FieldSpec(
            "temp_sum",
            "double",
            unit="°C",
            description="Sum of the readings' values (a new owner folds on from it).",
        ),
        FieldSpec("last_seq", "long", description="seq of the last reading (ties of last_ts)."),
        FieldSpec("location", "geo_point", optional=True),
    ),
)

ALERTS: Final = IndexSpec(
    key="alerts",
    description="One document per alert lifecycle (_id is alert_id), updated in place.",
    time_field="@timestamp",
    monthly=False,
    fields=(
        FieldSpec("@timestamp", "date", description="Event time the alert opened."),
        FieldSpec("alert_id", "keyword"),
        FieldSpec("device_id", "keyword"),
        FieldSpec("site", "keyword"),
        FieldSpec("sensor_id", "keyword", optional=True),
        FieldSpec("rule", "keyword", description="threshold_high, rate_of_change, ..."),
        FieldSpec("severity", "keyword", description="info, warning or critical."),
        FieldSpec("status", "keyword", description="open or resolved."),
        FieldSpec("version", "integer", description="Number of changes so far (1 = opened)."),
        FieldSpec("opened_at", "date"),
        FieldSpec("updated_at", "date"),
        FieldSpec("resolved_at", "date", optional=True),
        FieldSpec(
            "processed_at", "date", description="Processing time of the last change (restore)."
        ),
        FieldSpec("value", "float", optional=True, description="Value that triggered it."),
        FieldSpec("threshold", "float", optional=True),
        FieldSpec("score", "float", format="0.000", optional=True),
        FieldSpec("message", "text"),
        FieldSpec("clear_reason", "keyword", optional=True),
        FieldSpec("late", "boolean", description="Raised from data behind the watermark."),
        FieldSpec("flapping", "boolean"),
        FieldSpec("confirmed", "boolean", description="An edge alert confirmed by cloud evidence."),
        FieldSpec("acknowledged", "boolean"),
        FieldSpec("acknowledged_at", "date", optional=True),
        FieldSpec("acknowledged_by", "keyword", optional=True),
        FieldSpec("location", "geo_point", optional=True),
    ),
)

INCIDENTS: Final = IndexSpec(
    key="incidents",
    description="One document per incident (_id is incident_id): its latest change.",
    time_field="@timestamp",
    monthly=False,
    fields=(
        FieldSpec("@timestamp", "date", description="Event time the incident opened."),
        FieldSpec("type", "keyword", description="Always incident_change."),
        FieldSpec("schema_version", "integer", description="Contract version of the message."),
        FieldSpec("incident_id", "keyword"),
        FieldSpec("scope", "keyword", description="device or site."),
        FieldSpec("site", "keyword"),
        FieldSpec("device_ids", "keyword", description="Its devices (the first 64)."),
        FieldSpec("device_count", "integer"),
        FieldSpec("severity", "keyword", description="Highest severity of its active alerts."),
        FieldSpec("status", "keyword", description="open or resolved."),
        FieldSpec("version", "integer", description="Number of changes so far (1 = opened)."),
        FieldSpec("opened_at", "date"),
        FieldSpec("updated_at", "date"),
        FieldSpec("resolved_at", "date", optional=True),
        FieldSpec("rules", "keyword", description="Contributing rules."),
        FieldSpec("alert_ids", "keyword", description="Its alerts (the first 128)."),
        FieldSpec("alert_count", "integer"),
        FieldSpec("active_alerts", "integer", description="Its alerts still open."),
        FieldSpec("title", "text"),
        FieldSpec("message", "text"),
        FieldSpec("late", "boolean", description="Recorded from a backlog, never notified."),
        FieldSpec("peak_severity", "keyword", description="Highest severity it has had."),
        FieldSpec("notified", "keyword", description="Kinds of its notified changes."),
        FieldSpec("change", "keyword", description="opened, escalated, updated or resolved."),
        FieldSpec("notify", "boolean", description="Whether its latest change was notified."),
        FieldSpec(
            "processed_at", "date", description="Processing time of the last change (restore)."
        ),
    ),
)

INDEXES: Final[tuple[IndexSpec, ...]] = (READINGS, AGGREGATES, ALERTS, INCIDENTS)

_SUFFIX = re.compile(r"-(\d{4})\.(\d{2})$")


def month_suffix(ts_ms: int) -> str:
    """``YYYY.MM`` of an event time in UTC.

    >>> month_suffix(1_767_225_599_999), month_suffix(1_767_225_600_000)
    ('2025.12', '2026.01')
    """
    d = datetime.fromtimestamp(ts_ms / 1000.0, UTC)
    return f"{d.year:04d}.{d.month:02d}"


@functools.lru_cache(maxsize=4096)
def _monthly_name(base: str, day: int) -> str:
    """Index name for a UTC day number (cached: one datetime per day, not per document)."""
    return f"{base}-{month_suffix(day * 86_400_000)}"


@dataclass(frozen=True, slots=True)
class IndexNames:
    """Concrete index names under a prefix (tests use a unique prefix each)."""

    prefix: str = "thermowatch-"

    def base(self, spec: IndexSpec) -> str:
        """``<prefix><key>``: the template name and, for single indices, the index."""
        return f"{self.prefix}{spec.key}"

    def pattern(self, spec: IndexSpec) -> str:
        """Index pattern covering every index of ``spec``."""
        return f"{self.base(spec)}-*" if spec.monthly else self.base(spec)

    def for_ts(self, spec: IndexSpec, ts_ms: int) -> str:
        """The index a document of ``spec`` with event time ``ts_ms`` belongs to."""
        if not spec.monthly:
            return self.base(spec)
        return _monthly_name(self.base(spec), ts_ms // 86_400_000)

    def readings_for(self, ts_ms: int) -> str:
        """Readings index for an event time."""
        return self.for_ts(READINGS, ts_ms)

    def aggregates_for(self, ts_ms: int) -> str:
        """Aggregates index for a window start."""
        return self.for_ts(AGGREGATES, ts_ms)

    @property
    def readings_pattern(self) -> str:
        """Pattern of every readings index."""
        return self.pattern(READINGS)

    @property
    def aggregates_pattern(self) -> str:
        """Pattern of every aggregates index."""
        return self.pattern(AGGREGATES)

    @property
    def alerts(self) -> str:
        """The alerts index."""
        return self.base(ALERTS)

    @property
    def incidents(self) -> str:
        """The incidents index."""
        return self.base(INCIDENTS)


def index_templates(
    names: IndexNames,
    *,
    shards: int = 1,
    replicas: int = 0,
    refresh_interval: str = "5s",
    lifecycle_policy: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Composable index templates (``PUT _index_template/<name>``) by name.

    ``lifecycle_policy`` (Elasticsearch ILM) is attached to the monthly indices
    (OpenSearch ISM attaches its policy through the policy's ``ism_template``).

    >>> t = index_templates(IndexNames("x-"))
    >>> sorted(t), t["x-readings"]["index_patterns"]
    (['x-agg1m', 'x-alerts', 'x-incidents', 'x-readings'], ['x-readings-*'])
    >>> t["x-readings"]["template"]["mappings"]["properties"]["temp_c"]
    {'type': 'float'}
    >>> t = index_templates(IndexNames("x-"), lifecycle_policy="x-retention")
    >>> t["x-readings"]["template"]["settings"]["index.lifecycle.name"]
    'x-retention'
    >>> "index.lifecycle.name" in t["x-alerts"]["template"]["settings"]
    False
    """
    out: dict[str, dict[str, Any]] = {}
    for spec in INDEXES:
        settings: dict[str, Any] = {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "refresh_interval": refresh_interval,
        }
        if lifecycle_policy and spec.monthly:
            settings["index.lifecycle.name"] = lifecycle_policy
        out[names.base(spec)] = {
            "index_patterns": [names.pattern(spec)],
            # Above the priority of built-in templates, unique per prefix.
            "priority": 200 + len(names.prefix),
            "template": {"settings": settings, "mappings": spec.mappings()},
            "_meta": {"managed_by": "thermowatch", "description": spec.description},
        }
    return out


def expired_indices(
    existing: Iterable[str], names: IndexNames, *, now_ms: int, retention_days: int
) -> list[str]:
    """Monthly indices whose whole month ended more than ``retention_days`` ago.

    >>> names = IndexNames("tw-")
    >>> now = 1_767_225_600_000  # 2026-01-01
    >>> expired_indices(["tw-readings-2025.10", "tw-readings-2025.11", "tw-alerts",
    ...                  "tw-agg1m-2025.09", "other-2020.01"], names, now_ms=now,
    ...                 retention_days=40)
    ['tw-agg1m-2025.09', 'tw-readings-2025.10']
    """
    cutoff = now_ms - retention_days * 86_400_000
    bases = tuple(names.base(s) + "-" for s in INDEXES if s.monthly)
    out = []
    for name in existing:
        if not name.startswith(bases):
            continue
        m = _SUFFIX.search(name)
        if m is None:
            continue
        year, month = int(m[1]), int(m[2])
        nxt = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if nxt.timestamp() * 1000 <= cutoff:
            out.append(name)
    return sorted(out)
