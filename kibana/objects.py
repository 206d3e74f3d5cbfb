"""Kibana saved objects generated from the processor's field definitions (pure).

Nothing here is hand-written JSON: every data view, Lens visualization and
dashboard is built from :mod:`stagekit.search.indices` (the same
:class:`~stagekit.search.indices.IndexSpec` objects the index templates are
built from). Field types, number formats, units and time fields come from
the definitions, and every field a panel plots is looked up with
:meth:`IndexSpec.field`, so renaming a field in the schema makes generation
fail (and :mod:`kibana.check` reports the committed NDJSON as broken) instead
of producing a dashboard that silently shows nothing.

The parts: :mod:`kibana.saved` (the envelope and migration versions every
object carries, the NDJSON form), :mod:`kibana.dataviews`, :mod:`kibana.lens`
(columns and layouts), :mod:`kibana.panels` (thermowatch's visualizations) and
:mod:`kibana.dashboards`. This module puts them together in the order
Kibana's export uses.

>>> objs = build_objects()
>>> [o["type"] for o in objs].count("index-pattern"), [o["type"] for o in objs].count("dashboard")
(4, 2)
>>> objs[0]["id"], objs[0]["attributes"]["title"], objs[0]["attributes"]["timeFieldName"]
('thermowatch-dv-readings', 'thermowatch-readings-*', '@timestamp')
>>> to_ndjson(objs).count("\\n") == len(objs)
True
"""

from __future__ import annotations

from typing import Any

from kibana.dashboards import DASHBOARDS, DashboardDef, dashboard
from kibana.dataviews import data_view, data_view_id
from kibana.lens import lens_object
from kibana.panels import visualizations
from kibana.saved import (
    CORE_MIGRATION_VERSION,
    DEFAULT_FILE,
    MIN_KIBANA,
    TYPE_MIGRATION_VERSIONS,
    to_ndjson,
)
from stagekit.search import indices as schema
from stagekit.search.indices import IndexNames

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


def build_objects(prefix: str = "thermowatch-") -> list[dict[str, Any]]:
    """Every saved object, data views first (the order Kibana's export uses).

    ``prefix`` is the processor's ``search.index_prefix``: it names the index
    patterns and prefixes every object id, so two installations can share a
    Kibana. Raises KeyError or ValueError if a field a panel needs is missing
    from the schema or has the wrong type.
    """
    names = IndexNames(prefix)
    out = [data_view(spec, names) for spec in schema.INDEXES]
    out += [lens_object(lens, names) for lens in visualizations()]
    out += [dashboard(d, names) for d in DASHBOARDS]
    return out
