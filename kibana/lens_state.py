"""The shape a Lens saved object stamped ``typeMigrationVersion`` 8.9.0 must have (pure).

Kibana migrates a saved object on import only through the migrations newer
than the version it is stamped with. Lens' last migrations in 8.x are 8.6.0
(the datasource key ``indexpattern`` renamed ``formBased``) and 8.9.0 (metric
formats), so an object stamped 8.9.0 is read exactly as written: a pre-8.6
``indexpattern`` state, a layer without its data view reference or a column
without its operation is not repaired but shown as a broken panel. This
module checks what Kibana 8.9's Lens reads from a persisted object:

* ``attributes``: ``title`` and ``visualizationType`` strings, ``state``;
* ``state.datasourceStates.formBased.layers``: layer id -> ``columnOrder``
  (column ids, each a key of ``columns``, every column listed) and
  ``columns`` (each with ``operationType``, ``dataType``, ``isBucketed``,
  ``label``; a field operation also ``sourceField``; ``terms`` also
  ``params.size`` and ``params.orderBy``);
* ``state.visualization`` (an object whose layer ids are formBased layers),
  ``state.query`` (``query`` and ``language``), ``state.filters`` (a list),
  and when present ``adHocDataViews`` (an object) and ``internalReferences``
  (a list of ``{name, type, id}``);
* ``references``: one ``index-pattern`` named
  ``indexpattern-datasource-layer-<layer id>`` per layer, none naming a layer
  that does not exist.

Sources: Kibana's Lens migrations (``x-pack/plugins/lens/server/migrations``
and the Lens embeddable factory's migration map: 7.10.0 moved the layers'
data view ids into references named ``indexpattern-datasource-layer-<id>``,
8.6.0 renamed the datasource, 8.9.0 is the last) and the Lens attributes
schema (``x-pack/plugins/lens/server/embeddable/schema``: the column fields,
data types and the ``query``/``filters``/``adHocDataViews``/
``internalReferences`` shapes). Whether each field used exists in the mapping
is :func:`kibana.check.check_fields`' job.

Each problem is ``"<path>: <what is wrong>"``, the path in dotted form from
the object's top (``attributes.state...``). Total: any JSON value gives a
list, never an exception.

>>> lens_state_problems({"attributes": {"title": "t", "visualizationType": "lnsXY",
...     "state": {"datasourceStates": {"indexpattern": {"layers": {}}}}}, "references": []})
... # doctest: +NORMALIZE_WHITESPACE
['attributes.state.datasourceStates.indexpattern: the pre-8.6 name of formBased
  (Kibana 8.9 runs no migration on an object stamped 8.9.0)',
 'attributes.state.datasourceStates.formBased: missing',
 'attributes.state.visualization: missing (an object)',
 'attributes.state.query: missing (an object with query and language)',
 'attributes.state.filters: missing (a list)']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "DATA_TYPES",
    "FIELD_OPERATIONS",
    "LAYER_REFERENCE",
    "VISUALIZATION_TYPES",
    "lens_state_problems",
]

#: Reference name of a formBased layer's data view: this prefix and the layer id.
LAYER_REFERENCE: Final = "indexpattern-datasource-layer-"
#: Lens visualizations of Kibana 8.9 (``visualizationType``).
VISUALIZATION_TYPES: Final = frozenset(
    {
        "lnsXY",
        "lnsDatatable",
        "lnsMetric",
        "lnsLegacyMetric",
        "lnsPie",
        "lnsHeatmap",
        "lnsGauge",
        "lnsTagcloud",
        "lnsChoropleth",
    }
)
#: A column's ``dataType``.
DATA_TYPES: Final = frozenset(
    {
        "string",
        "number",
        "date",
        "boolean",
        "document",
        "ip",
        "histogram",
        "geo_point",
        "geo_shape",
        "counter",
        "gauge",
        "murmur3",
    }
)
#: Operations that read one field (``count`` reads the pseudo-field ``___records___``).
FIELD_OPERATIONS: Final = frozenset(
    {
        "average",
        "count",
        "date_histogram",
        "last_value",
        "max",
        "median",
        "min",
        "percentile",
        "percentile_rank",
        "range",
        "standard_deviation",
        "sum",
        "terms",
        "unique_count",
    }
)
_STATE: Final = "attributes.state"
_FORM: Final = f"{_STATE}.datasourceStates.formBased"


def lens_state_problems(obj: Mapping[str, Any]) -> list[str]:
    """What in this Lens saved object Kibana 8.9 could not read (see the module doc)."""
    out: list[str] = []
    attrs = obj.get("attributes")
    if not isinstance(attrs, Mapping):
        return ["attributes: missing (an object)"]
    if not _text(attrs.get("title")):
        out.append("attributes.title: missing (a string)")
    vis_type = attrs.get("visualizationType")
    if vis_type not in VISUALIZATION_TYPES:
        out.append(
            f"attributes.visualizationType: {_show(vis_type)} is not a Lens visualization "
            f"of Kibana 8.9 ({', '.join(sorted(VISUALIZATION_TYPES))})"
        )
    state = attrs.get("state")
    if not isinstance(state, Mapping):
        return [*out, f"{_STATE}: missing (an object)"]
    layers = _datasource(state, out)
    _visualization(state.get("visualization"), layers, out)
    _query_and_filters(state, out)
    _layer_references(obj.get("references"), layers, out)
    return out


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _datasource(state: Mapping[str, Any], out: list[str]) -> dict[str, Mapping[str, Any]]:
    """The formBased layers that are objects (problems of the rest added to ``out``)."""
    sources = state.get("datasourceStates")
    if not isinstance(sources, Mapping):
        out.append(f"{_STATE}.datasourceStates: missing (an object)")
        return {}
    if "indexpattern" in sources:
        out.append(
            f"{_STATE}.datasourceStates.indexpattern: the pre-8.6 name of formBased "
            "(Kibana 8.9 runs no migration on an object stamped 8.9.0)"
        )
    form = sources.get("formBased")
    if not isinstance(form, Mapping):
        out.append(f"{_FORM}: missing")
        return {}
    raw = form.get("layers")
    if not isinstance(raw, Mapping) or not raw:
        out.append(f"{_FORM}.layers: missing or empty (layer id -> layer)")
        return {}
    layers: dict[str, Mapping[str, Any]] = {}
    for layer_id, layer in raw.items():
        path = f"{_FORM}.layers.{layer_id}"
        if not isinstance(layer, Mapping):
            out.append(f"{path}: not an object")
            continue
        layers[str(layer_id)] = layer
        _layer(path, layer, out)
    return layers


def _layer(path: str, layer: Mapping[str, Any], out: list[str]) -> None:
    columns = layer.get("columns")
    order = layer.get("columnOrder")
    if not isinstance(columns, Mapping):
        out.append(f"{path}.columns: missing (column id -> column)")
        columns = {}
    if not isinstance(order, list) or not all(isinstance(c, str) for c in order):
        out.append(f"{path}.columnOrder: missing (a list of column ids)")
        order = list(columns)
    for col in order:
        if col not in columns:
            out.append(f"{path}.columnOrder: names unknown column {col}")
    for col_id, col in columns.items():
        cpath = f"{path}.columns.{col_id}"
        if col_id not in order:
            out.append(f"{cpath}: not in columnOrder")
        if not isinstance(col, Mapping):
            out.append(f"{cpath}: not an object")
            continue
        _column(cpath, col, out)


def _column(path: str, col: Mapping[str, Any], out: list[str]) -> None:
    op = col.get("operationType")
    if not _text(op):
        out.append(f"{path}.operationType: missing (a string)")
    if col.get("dataType") not in DATA_TYPES:
        out.append(f"{path}.dataType: {_show(col.get('dataType'))} is not a Lens data type")
    if not isinstance(col.get("isBucketed"), bool):
        out.append(f"{path}.isBucketed: missing (true or false)")
    if not isinstance(col.get("label"), str):
        out.append(f"{path}.label: missing (a string)")
    if op in FIELD_OPERATIONS and not _text(col.get("sourceField")):
        out.append(f"{path}.sourceField: missing ({op} reads a field)")
    if op == "terms":
        params = col.get("params")
        params = params if isinstance(params, Mapping) else {}
        if not isinstance(params.get("size"), int) or isinstance(params.get("size"), bool):
            out.append(f"{path}.params.size: missing (a number)")
        if "orderBy" not in params:
            out.append(f"{path}.params.orderBy: missing")


def _visualization(vis: Any, layers: Mapping[str, Any], out: list[str]) -> None:
    path = f"{_STATE}.visualization"
    if not isinstance(vis, Mapping):
        out.append(f"{path}: missing (an object)")
        return
    ids: list[tuple[str, Any]] = []
    if "layerId" in vis:
        ids.append((f"{path}.layerId", vis.get("layerId")))
    vis_layers = vis.get("layers", [])
    if isinstance(vis_layers, list):
        for n, layer in enumerate(vis_layers):
            if isinstance(layer, Mapping) and layer.get("layerType", "data") == "data":
                ids.append((f"{path}.layers.{n}.layerId", layer.get("layerId")))
    for where, layer_id in ids:
        if layers and layer_id not in layers:
            out.append(f"{where}: {_show(layer_id)} is not a formBased layer")


def _query_and_filters(state: Mapping[str, Any], out: list[str]) -> None:
    query = state.get("query")
    if not isinstance(query, Mapping):
        out.append(f"{_STATE}.query: missing (an object with query and language)")
    else:
        if not isinstance(query.get("query"), str | Mapping):
            out.append(f"{_STATE}.query.query: missing (a string)")
        if not _text(query.get("language")):
            out.append(f"{_STATE}.query.language: missing (kuery or lucene)")
    filters = state.get("filters")
    if not isinstance(filters, list):
        out.append(f"{_STATE}.filters: missing (a list)")
    elif not all(isinstance(f, Mapping) for f in filters):
        out.append(f"{_STATE}.filters: every filter must be an object")
    if "adHocDataViews" in state and not isinstance(state["adHocDataViews"], Mapping):
        out.append(f"{_STATE}.adHocDataViews: not an object (id -> data view spec)")
    if "internalReferences" in state:
        refs = state["internalReferences"]
        if not isinstance(refs, list) or not all(_is_reference(r) for r in refs):
            out.append(f"{_STATE}.internalReferences: not a list of {{name, type, id}}")


def _is_reference(ref: Any) -> bool:
    return isinstance(ref, Mapping) and all(_text(ref.get(k)) for k in ("name", "type", "id"))


def _layer_references(refs: Any, layers: Mapping[str, Any], out: list[str]) -> None:
    if not isinstance(refs, list):
        out.append("references: missing (a list)")
        return
    named: set[str] = set()
    for n, ref in enumerate(refs):
        if not _is_reference(ref):
            out.append(f"references.{n}: not a {{name, type, id}} reference")
            continue
        name = str(ref["name"])
        if not name.startswith(LAYER_REFERENCE):
            continue
        layer_id = name.removeprefix(LAYER_REFERENCE)
        named.add(layer_id)
        if ref["type"] != "index-pattern":
            out.append(f"references.{n}: {name} must be of type index-pattern, not {ref['type']}")
        if layers and layer_id not in layers:
            out.append(f"references.{n}: {name} names no formBased layer")
    for layer_id in layers:
        if layer_id not in named:
            out.append(f"references: no {LAYER_REFERENCE}{layer_id} for layer {layer_id}")
