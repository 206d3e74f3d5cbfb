"""Lens building blocks: columns, layouts, and the saved object of one visualization.

Every column looks its field up with :meth:`IndexSpec.field` and checks the
type the operation needs, so a renamed or retyped field fails generation
instead of producing a panel that silently shows nothing.

>>> from stagekit.search import indices as schema
>>> col = metric(schema.READINGS, "average", "temp_c", "Temperature")
>>> col["operationType"], col["sourceField"], col["params"]["format"]["params"]["suffix"]
('average', 'temp_c', ' °C')
>>> metric(schema.READINGS, "average", "device_id", "Device")
Traceback (most recent call last):
...
ValueError: readings.device_id: average needs a number, the schema says keyword
>>> kql_eq(schema.ALERTS, "status", "open")
'status : "open"'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kibana.dataviews import NUMERIC_TYPES, data_view_id
from kibana.saved import saved_object
from stagekit.search.indices import FieldSpec, IndexNames, IndexSpec

__all__ = [
    "LAYER",
    "Lens",
    "count",
    "date_histogram",
    "kql_eq",
    "last_value",
    "lens_id",
    "lens_object",
    "max_date",
    "metric",
    "metric_vis",
    "number_format",
    "table",
    "terms",
    "unique_count",
    "xy",
]

#: The id of the one data layer every visualization here has.
LAYER: Final = "layer1"


def number_format(f: FieldSpec) -> dict[str, Any]:
    """Lens column format: decimals from the pattern, the unit as suffix."""
    decimals = len(f.format.partition(".")[2]) if f.format else 2
    params: dict[str, Any] = {"decimals": decimals}
    if f.unit:
        params["suffix"] = f" {f.unit}"
    return {"id": "number", "params": params}


# -- columns -----------------------------------------------------------------------


def date_histogram(spec: IndexSpec) -> dict[str, Any]:
    """Time buckets over the index's time field."""
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


def metric(spec: IndexSpec, op: str, field: str, label: str) -> dict[str, Any]:
    """A numeric metric column (average, min, max, ...) over a numeric field."""
    f = spec.field(field)
    if f.type not in NUMERIC_TYPES:
        raise ValueError(f"{spec.key}.{field}: {op} needs a number, the schema says {f.type}")
    return {
        "customLabel": True,
        "dataType": "number",
        "isBucketed": False,
        "label": label,
        "operationType": op,
        "params": {"emptyAsNull": True, "format": number_format(f)},
        "scale": "ratio",
        "sourceField": f.name,
    }


def last_value(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    """The latest value of a field (by the index's time field)."""
    f = spec.field(field)
    numeric = f.type in NUMERIC_TYPES
    col: dict[str, Any] = {
        "customLabel": True,
        "dataType": "number" if numeric else "string",
        "filter": {"language": "kuery", "query": f'"{f.name}": *'},
        "isBucketed": False,
        "label": label,
        "operationType": "last_value",
        "params": {"showArrayValues": False, "sortField": spec.time_field},
        "scale": "ratio" if numeric else "ordinal",
        "sourceField": f.name,
    }
    if numeric:
        col["params"]["format"] = number_format(f)
    return col


def max_date(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    """The latest time in a date field."""
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


def terms(
    spec: IndexSpec, field: str, label: str, size: int, order_by: str | None
) -> dict[str, Any]:
    """The top ``size`` values of a field, ordered by a column (or alphabetically)."""
    f = spec.field(field)
    if f.type not in {"keyword", "boolean", *NUMERIC_TYPES}:
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


def count(label: str) -> dict[str, Any]:
    """The number of documents."""
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


def unique_count(spec: IndexSpec, field: str, label: str) -> dict[str, Any]:
    """The number of distinct values of a field."""
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


def kql_eq(spec: IndexSpec, field: str, value: str) -> str:
    """``field : "value"`` after checking that the field exists."""
    return f'{spec.field(field).name} : "{value}"'


# -- layouts -----------------------------------------------------------------------


def xy(series: str, x: str, ys: Sequence[str], split: str | None) -> dict[str, Any]:
    """A line or bar chart: ``x`` along the bottom, one series per ``split`` value."""
    layer: dict[str, Any] = {
        "accessors": list(ys),
        "layerId": LAYER,
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


def table(columns: Iterable[str]) -> dict[str, Any]:
    """A table of the given columns, in order."""
    return {
        "columns": [{"columnId": c, "isTransposed": False} for c in columns],
        "layerId": LAYER,
        "layerType": "data",
    }


def metric_vis(accessor: str) -> dict[str, Any]:
    """One big number."""
    return {"layerId": LAYER, "layerType": "data", "metricAccessor": accessor}


# -- the saved object -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lens:
    """One Lens visualization: its columns (by id) on one data view, and the layout."""

    key: str
    title: str
    description: str
    spec: IndexSpec
    vis_type: str
    columns: Mapping[str, dict[str, Any]]
    visualization: dict[str, Any]
    query: str = ""


def lens_id(key: str, names: IndexNames) -> str:
    """Stable id of the visualization ``key``.

    >>> lens_id("open-alerts", IndexNames("tw-"))
    'tw-lens-open-alerts'
    """
    return f"{names.prefix}lens-{key}"


def lens_object(lens: Lens, names: IndexNames) -> dict[str, Any]:
    """The saved object of ``lens``, referencing its data view."""
    layer = {
        "columnOrder": list(lens.columns),
        "columns": dict(lens.columns),
        "incompleteColumns": {},
        "sampling": 1,
    }
    return saved_object(
        "lens",
        lens_id(lens.key, names),
        {
            "description": lens.description,
            "state": {
                "adHocDataViews": {},
                "datasourceStates": {"formBased": {"layers": {LAYER: layer}}},
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
                "name": f"indexpattern-datasource-layer-{LAYER}",
                "type": "index-pattern",
            }
        ],
    )
