"""Kibana saved objects generated from the processor's field definitions (pure).

Nothing here is hand-written JSON: every data view, Lens visualization and
dashboard is built from :mod:`stagekit.search.indices` (the same
:class:`~stagekit.search.indices.IndexSpec` objects the index templates are
built from). Field types, number formats, units and time fields come from
the definitions, and every field a panel plots is looked up with
:meth:`IndexSpec.field`, so renaming a field in the schema makes generation
fail (and :mod:`kibana.check` reports the committed NDJSON as broken) instead
of producing a dashboard that silently shows nothing.

Target: Kibana 8.x, minimum :data:`MIN_KIBANA` (8.9.0). The objects carry the
migration versions of that release (``coreMigrationVersion`` 8.8.0 -- the last
core migration of 8.x --, ``index-pattern`` 8.0.0, ``lens`` 8.9.0,
``dashboard`` 8.9.0) so Kibana 8.9 imports them as they are and later 8.x/9.x
releases migrate them forward on import; an older Kibana refuses them, which is
why the client checks the version first.

>>> objs = build_objects()
>>> [o["type"] for o in objs].count("index-pattern"), [o["type"] for o in objs].count("dashboard")
(3, 2)
>>> objs[0]["id"], objs[0]["attributes"]["title"], objs[0]["attributes"]["timeFieldName"]
('thermowatch-dv-readings', 'thermowatch-readings-*', '@timestamp')
>>> to_ndjson(objs).count("\\n") == len(objs)
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stagekit.search import indices as schema
from stagekit.search.indices import FieldSpec, IndexNames, IndexSpec
from telemetry_contract import AlertStatus, Rule

__all__ = [
    "CORE_MIGRATION_VERSION",
    "DEFAULT_FILE",
    "MIN_KIBANA",
    "TYPE_MIGRATION_VERSIONS",
    "DashboardDef",
    "build_objects",
    "data_view_id",
    "to_ndjson",
]

#: Oldest Kibana release these objects import into unchanged.
MIN_KIBANA: Final = (8, 9, 0)
#: Last core migration of Kibana 8.x (the value every 8.8+ export carries).
CORE_MIGRATION_VERSION: Final = "8.8.0"
#: Latest migration of each type in Kibana 8.9 (data views became
#: multi-namespace in 8.0.0; Lens and, through its panels, dashboards 8.9.0).
TYPE_MIGRATION_VERSIONS: Final[Mapping[str, str]] = {
    "index-pattern": "8.0.0",
    "lens": "8.9.0",
    "dashboard": "8.9.0",
}
#: Name of the committed file under ``kibana/saved_objects/``.
DEFAULT_FILE: Final = "thermowatch.ndjson"

_NUMERIC: Final = frozenset({"float", "double", "long", "integer"})
_LAYER: Final = "layer1"
_KQL_ALL: Final = {"query": "", "language": "kuery"}


def _json(value: Any) -> str:
    """Compact, key-sorted JSON (Kibana stores several attributes as JSON strings)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def data_view_id(spec: IndexSpec, names: IndexNames) -> str:
    """Stable id of the data view of ``spec``.

    >>> data_view_id(schema.ALERTS, IndexNames("tw-"))
    'tw-dv-alerts'
    """
    return f"{names.prefix}dv-{spec.key}"


def _saved(
    type_: str, id_: str, attributes: dict[str, Any], refs: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "attributes": attributes,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "id": id_,
        "references": refs,
        "type": type_,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[type_],
    }


def _label(f: FieldSpec) -> str:
    return f"{f.name} ({f.unit})" if f.unit else f.name


def _number_format(f: FieldSpec) -> dict[str, Any]:
    """Lens column format: decimals from the pattern, the unit as suffix."""
    decimals = len(f.format.partition(".")[2]) if f.format else 2
    params: dict[str, Any] = {"decimals": decimals}
    if f.unit:
        params["suffix"] = f" {f.unit}"
    return {"id": "number", "params": params}


def _data_view(spec: IndexSpec, names: IndexNames) -> dict[str, Any]:
    """A data view: index pattern, time field, number formats and unit labels."""
    formats = {
        f.name: {"id": "number", "params": {"pattern": f.format}}
        for f in spec.fields
        if f.format and f.type in _NUMERIC
    }
    attrs = {f.name: {"customLabel": _label(f), "count": 0} for f in spec.fields if f.unit}
    return _saved(
        "index-pattern",
        data_view_id(spec, names),
        {
            "fieldAttrs": _json(attrs),
            "fieldFormatMap": _json(formats),
            "name": f"thermowatch {spec.key}",
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "timeFieldName": spec.time_field,
            "title": names.pattern(spec),
        },
        [],
    )


# -- Lens columns ----------------------------------------------------------------


def _date_histogram(spec: IndexSpec) -> dict[str, Any]:
    f = spec.field(spec.time_field)
    return {
        "dataType": "date",
        "isBucketed": True,
        "label": f.name,
        "operationType": "date_histogram",
        "params": {"dropPartials": False, "includeEmptyRows": True, "interval": "auto"},
        "scale": "interval",
        "sourceField": f.name,
    }


def _metric(spec: IndexSpec, op: str, field: str, label: str) -> dict[str, Any]:
    """A numeric metric column (average, min, max, ...) over a numeric field."""
    f = spec.field(field)
    if f.type not in _NUMERIC:
        raise ValueError(f"{spec.key}.{field}: {op} needs a number, the schema says {f.type}")
    return {
        "customLabel": True,
        "dataType": "number",
        "isBucketed": False,
        "label": label,
        "operationType": op,
        "params": {"emptyAsNull": True, "format": _number_format(f)},
        "scale": "ratio",
        "sourceField": f.name,
    }


def _last_value(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    f = spec.field(field)
    col: dict[str, Any] = {
        "customLabel": True,
        "dataType": "number" if f.type in _NUMERIC else "string",
        "filter": {"language": "kuery", "query": f'"{f.name}": *'},
        "isBucketed": False,
        "label": label,
        "operationType": "last_value",
        "params": {"showArrayValues": False, "sortField": spec.time_field},
        "scale": "ratio" if f.type in _NUMERIC else "ordinal",
        "sourceField": f.name,
    }
    if f.type in _NUMERIC:
        col["params"]["format"] = _number_format(f)
    return col


def _max_date(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    f = spec.field(field)
    if f.type != "date":
        raise ValueError(f"{spec.key}.{field}: expected a date, the schema says {f.type}")
    return {
        "customLabel": True,
        "dataType": "date",
        "isBucketed": False,
        "label": label,
        "operationType": "max",
        "params": {"emptyAsNull": True},
        "scale": "ratio",
        "sourceField": f.name,
    }


def _terms(
    spec: IndexSpec, field: str, label: str, size: int, order_by: str | None
) -> dict[str, Any]:
    f = spec.field(field)
    if f.type not in {"keyword", "boolean", *_NUMERIC}:
        raise ValueError(f"{spec.key}.{field}: terms needs keyword, the schema says {f.type}")
    order: dict[str, Any] = (
        {"columnId": order_by, "type": "column"}
        if order_by
        else {"fallback": True, "type": "alphabetical"}
    )
    return {
        "customLabel": True,
        "dataType": "string",
        "isBucketed": True,
        "label": label,
        "operationType": "terms",
        "params": {
            "missingBucket": False,
            "orderBy": order,
            "orderDirection": "desc" if order_by else "asc",
            "otherBucket": True,
            "parentFormat": {"id": "terms"},
            "size": size,
        },
        "scale": "ordinal",
        "sourceField": f.name,
    }


def _count(label: str) -> dict[str, Any]:
    return {
        "customLabel": True,
        "dataType": "number",
        "isBucketed": False,
        "label": label,
        "operationType": "count",
        "params": {"emptyAsNull": True},
        "scale": "ratio",
        "sourceField": "___records___",
    }


def _unique_count(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    f = spec.field(field)
    return {
        "customLabel": True,
        "dataType": "number",
        "isBucketed": False,
        "label": label,
        "operationType": "unique_count",
        "params": {"emptyAsNull": False},
        "scale": "ratio",
        "sourceField": f.name,
    }


def _kql_eq(spec: IndexSpec, field: str, value: str) -> str:
    """``field : "value"`` after checking that the field exists."""
    return f'{spec.field(field).name} : "{value}"'


# -- Lens visualizations ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lens:
    key: str
    title: str
    description: str
    spec: IndexSpec
    vis_type: str
    columns: Mapping[str, dict[str, Any]]
    visualization: dict[str, Any]
    query: str = ""


def _lens_object(lens: _Lens, names: IndexNames) -> dict[str, Any]:
    layer = {
        "columnOrder": list(lens.columns),
        "columns": dict(lens.columns),
        "incompleteColumns": {},
        "sampling": 1,
    }
    return _saved(
        "lens",
        f"{names.prefix}lens-{lens.key}",
        {
            "description": lens.description,
            "state": {
                "adHocDataViews": {},
                "datasourceStates": {"formBased": {"layers": {_LAYER: layer}}},
                "filters": [],
                "internalReferences": [],
                "query": {"language": "kuery", "query": lens.query},
                "visualization": lens.visualization,
            },
            "title": lens.title,
            "visualizationType": lens.vis_type,
        },
        [
            {
                "id": data_view_id(lens.spec, names),
                "name": f"indexpattern-datasource-layer-{_LAYER}",
                "type": "index-pattern",
            }
        ],
    )


def _xy(series: str, x: str, ys: Sequence[str], split: str | None) -> dict[str, Any]:
    layer: dict[str, Any] = {
        "accessors": list(ys),
        "layerId": _LAYER,
        "layerType": "data",
        "seriesType": series,
        "xAccessor": x,
    }
    if split:
        layer["splitAccessor"] = split
    return {
        "fittingFunction": "None",
        "layers": [layer],
        "legend": {"isVisible": True, "position": "right"},
        "preferredSeriesType": series,
        "valueLabels": "hide",
    }


def _table(columns: Iterable[str]) -> dict[str, Any]:
    return {
        "columns": [{"columnId": c, "isTransposed": False} for c in columns],
        "layerId": _LAYER,
        "layerType": "data",
    }


def _metric_vis(accessor: str) -> dict[str, Any]:
    return {"layerId": _LAYER, "layerType": "data", "metricAccessor": accessor}


def _visualizations() -> list[_Lens]:
    """Every panel, built from the current field definitions."""
    r, a, al = schema.READINGS, schema.AGGREGATES, schema.ALERTS
    out = [
        _Lens(
            "temperature-over-time",
            "Temperature over time per device",
            "Average temperature per device and time bucket (readings).",
            r,
            "lnsXY",
            {
                "device": _terms(r, "device_id", "Device", 20, "temp"),
                "time": _date_histogram(r),
                "temp": _metric(r, "average", "temp_c", "Temperature"),
            },
            _xy("line", "time", ["temp"], "device"),
        ),
        _Lens(
            "latest-temperature",
            "Latest temperature per device",
            "Last temperature each device reported, with its site and time.",
            r,
            "lnsDatatable",
            {
                "device": _terms(r, "device_id", "Device", 500, None),
                "site": _last_value(r, "site", "Site"),
                "temp": _last_value(r, "temp_c", "Temperature"),
                "seen": _max_date(r, r.time_field, "Last reading"),
            },
            _table(["device", "site", "temp", "seen"]),
        ),
        _Lens(
            "temperature-band",
            "Temperature band (1-minute min / mean / max)",
            "Lowest, mean and highest temperature from the one-minute aggregates.",
            a,
            "lnsXY",
            {
                "time": _date_histogram(a),
                "min": _metric(a, "min", "temp_min", "Minimum"),
                "mean": _metric(a, "average", "temp_mean", "Mean"),
                "max": _metric(a, "max", "temp_max", "Maximum"),
            },
            _xy("line", "time", ["min", "mean", "max"], None),
        ),
        _Lens(
            "anomaly-score",
            "Edge anomaly score over time",
            "Highest edge-detector anomaly score per device and time bucket.",
            r,
            "lnsXY",
            {
                "device": _terms(r, "device_id", "Device", 20, "score"),
                "time": _date_histogram(r),
                "score": _metric(r, "max", "anomaly_score", "Anomaly score"),
            },
            _xy("line", "time", ["score"], "device"),
        ),
        _Lens(
            "alerts-by-severity",
            "Alerts over time by severity",
            "Alerts opened per time bucket, stacked by severity.",
            al,
            "lnsXY",
            {
                "severity": _terms(al, "severity", "Severity", 5, "alerts"),
                "time": _date_histogram(al),
                "alerts": _count("Alerts"),
            },
            _xy("bar_stacked", "time", ["alerts"], "severity"),
        ),
        _Lens(
            "open-alerts",
            "Open alerts",
            "Alerts still open: which device, which rule, since when, last value.",
            al,
            "lnsDatatable",
            {
                "severity": _terms(al, "severity", "Severity", 5, None),
                "device": _terms(al, "device_id", "Device", 500, None),
                "rule": _terms(al, "rule", "Rule", 50, None),
                "opened": _max_date(al, "opened_at", "Opened"),
                "value": _last_value(al, "value", "Value"),
            },
            _table(["severity", "device", "rule", "opened", "value"]),
            query=_kql_eq(al, "status", AlertStatus.OPEN.value),
        ),
        _Lens(
            "devices-online",
            "Devices online",
            "Distinct devices that sent at least one reading in the time range.",
            r,
            "lnsMetric",
            {"devices": _unique_count(r, "device_id", "Devices online")},
            _metric_vis("devices"),
        ),
        _Lens(
            "devices-offline",
            "Devices offline",
            "Distinct devices with an open device-offline alert (last will seen).",
            al,
            "lnsMetric",
            {"devices": _unique_count(al, "device_id", "Devices offline")},
            _metric_vis("devices"),
            query=_kql_eq(al, "rule", Rule.OFFLINE.value)
            + " and "
            + _kql_eq(al, "status", AlertStatus.OPEN.value),
        ),
    ]
    return out


# -- dashboards ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DashboardDef:
    """A dashboard: panels (lens key, x, y, w, h), controls, time range, refresh."""

    key: str
    title: str
    description: str
    panels: tuple[tuple[str, int, int, int, int], ...]
    #: (field, title, single select) on the readings data view.
    controls: tuple[tuple[str, str, bool], ...]
    time_from: str
    refresh_ms: int


DASHBOARDS: Final[tuple[DashboardDef, ...]] = (
    DashboardDef(
        "fleet-overview",
        "thermowatch: Fleet overview",
        "Is the fleet healthy? Devices online/offline, temperatures, alerts.",
        (
            ("devices-online", 0, 0, 12, 8),
            ("devices-offline", 12, 0, 12, 8),
            ("open-alerts", 24, 0, 24, 16),
            ("temperature-over-time", 0, 8, 24, 16),
            ("alerts-by-severity", 24, 16, 24, 12),
            ("latest-temperature", 0, 24, 24, 16),
        ),
        (("site", "Site", False), ("device_id", "Device", False)),
        "now-24h",
        30_000,
    ),
    DashboardDef(
        "device-detail",
        "thermowatch: Device detail",
        "One device (pick it in the Device control): temperature, band, anomaly score, alerts.",
        (
            ("temperature-over-time", 0, 0, 48, 14),
            ("temperature-band", 0, 14, 24, 14),
            ("anomaly-score", 24, 14, 24, 14),
            ("open-alerts", 0, 28, 32, 12),
            ("latest-temperature", 32, 28, 16, 12),
        ),
        (("site", "Site", True), ("device_id", "Device", True)),
        "now-6h",
        10_000,
    ),
)


def _dashboard(d: DashboardDef, names: IndexNames) -> dict[str, Any]:
    panels = []
    refs: list[dict[str, str]] = []
    for n, (lens_key, x, y, w, h) in enumerate(d.panels, start=1):
        index = f"p{n}"
        panels.append(
            {
                "embeddableConfig": {"enhancements": {}},
                "gridData": {"h": h, "i": index, "w": w, "x": x, "y": y},
                "panelIndex": index,
                "panelRefName": f"panel_{index}",
                "type": "lens",
                "version": ".".join(map(str, MIN_KIBANA)),
            }
        )
        refs.append(
            {
                "id": f"{names.prefix}lens-{lens_key}",
                "name": f"{index}:panel_{index}",
                "type": "lens",
            }
        )
    controls: dict[str, Any] = {}
    for order, (field, title, single) in enumerate(d.controls):
        cid = f"control-{schema.READINGS.field(field).name}"
        controls[cid] = {
            "explicitInput": {
                "enhancements": {},
                "fieldName": field,
                "id": cid,
                "selectedOptions": [],
                "singleSelect": single,
                "title": title,
            },
            "grow": True,
            "order": order,
            "type": "optionsListControl",
            "width": "medium",
        }
        refs.append(
            {
                "id": data_view_id(schema.READINGS, names),
                "name": f"controlGroup_{cid}:optionsListDataView",
                "type": "index-pattern",
            }
        )
    ignore = {
        "ignoreFilters": False,
        "ignoreQuery": False,
        "ignoreTimerange": False,
        "ignoreValidations": False,
    }
    options = {
        "hidePanelTitles": False,
        "syncColors": False,
        "syncCursor": True,
        "syncTooltips": False,
        "useMargins": True,
    }
    return _saved(
        "dashboard",
        f"{names.prefix}dash-{d.key}",
        {
            "controlGroupInput": {
                "chainingSystem": "HIERARCHICAL",
                "controlStyle": "oneLine",
                "ignoreParentSettingsJSON": _json(ignore),
                "panelsJSON": _json(controls),
            },
            "description": d.description,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _json({"filter": [], "query": _KQL_ALL})},
            "optionsJSON": _json(options),
            "panelsJSON": _json(panels),
            "refreshInterval": {"pause": False, "value": d.refresh_ms},
            "timeFrom": d.time_from,
            "timeRestore": True,
            "timeTo": "now",
            "title": d.title,
            "version": 1,
        },
        refs,
    )


def build_objects(prefix: str = "thermowatch-") -> list[dict[str, Any]]:
    """Every saved object, data views first (the order Kibana's export uses).

    ``prefix`` is the processor's ``search.index_prefix``: it names the index
    patterns and prefixes every object id, so two installations can share a
    Kibana. Raises KeyError or ValueError if a field a panel needs is missing
    from the schema or has the wrong type.
    """
    names = IndexNames(prefix)
    out = [_data_view(spec, names) for spec in schema.INDEXES]
    out += [_lens_object(lens, names) for lens in _visualizations()]
    out += [_dashboard(d, names) for d in DASHBOARDS]
    return out


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One compact, key-sorted JSON object per line (stable bytes for a diff).

    >>> to_ndjson([{"b": 1, "a": "°C"}])
    '{"a":"°C","b":1}\\n'
    """
    return "".join(_json(o) + "\n" for o in objects)
