"""Data views: one per index family, with its time field, number formats and units.

>>> from stagekit.search import indices as schema
>>> view = data_view(schema.READINGS, IndexNames("tw-"))
>>> view["id"], view["attributes"]["title"], view["attributes"]["timeFieldName"]
('tw-dv-readings', 'tw-readings-*', '@timestamp')
"""

from __future__ import annotations

from typing import Any, Final

from kibana.saved import compact_json, saved_object
from stagekit.search.indices import FieldSpec, IndexNames, IndexSpec

__all__ = ["NUMERIC_TYPES", "data_view", "data_view_id", "field_label"]

#: Mapping types Lens treats as numbers.
NUMERIC_TYPES: Final = frozenset({"float", "double", "long", "integer"})


def data_view_id(spec: IndexSpec, names: IndexNames) -> str:
    """Stable id of the data view of ``spec``.

    >>> from stagekit.search import indices as schema
    >>> data_view_id(schema.ALERTS, IndexNames("tw-"))
    'tw-dv-alerts'
    """
    return f"{names.prefix}dv-{spec.key}"


def field_label(f: FieldSpec) -> str:
    """The field's name with its unit, as data views and columns show it."""
    return f"{f.name} ({f.unit})" if f.unit else f.name


def data_view(spec: IndexSpec, names: IndexNames) -> dict[str, Any]:
    """A data view: index pattern, time field, number formats and unit labels."""
    formats = {
        f.name: {"id": "number", "params": {"pattern": f.format}}
        for f in spec.fields
        if f.format and f.type in NUMERIC_TYPES
    }
    attrs = {f.name: {"customLabel": field_label(f), "count": 0} for f in spec.fields if f.unit}
    return saved_object(
        "index-pattern",
        data_view_id(spec, names),
        {
            "fieldAttrs": compact_json(attrs),
            "fieldFormatMap": compact_json(formats),
            "name": f"thermowatch {spec.key}",
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "timeFieldName": spec.time_field,
            "title": names.pattern(spec),
        },
        [],
    )
