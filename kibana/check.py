"""Checks that a broken dashboard cannot pass (pure).

Four layers, each a function returning :class:`Problem` objects (empty: fine):

* :func:`parse_ndjson` -- the file's structure: one JSON object per line, with
  ``type``, ``id``, ``attributes`` and ``references``; the export summary line
  Kibana appends is accepted and skipped.
* :func:`check_structure` -- unique ids, every reference resolves to an object
  of the set, every panel/layer/control has its reference, every attribute
  stored as a JSON string parses, migration versions are not newer than the
  ones Kibana :data:`~kibana.objects.MIN_KIBANA` knows, every Lens object has
  the state shape Kibana 8.9 reads (:mod:`kibana.lens_state`).
* :func:`field_uses` -- every field a data view or visualization uses, with
  what the use needs (a date, a number, an aggregatable field).
* :func:`check_fields` -- each use against a mapping: the processor's mapping
  definitions (:func:`spec_field_types`) in the contract tests, the live
  mapping read from the search server (:func:`flatten_mapping` on a
  ``GET <pattern>/_mapping`` answer) in the integration tests and in
  ``thermowatch kibana check --search-url``.

>>> from kibana.objects import build_objects
>>> objs = build_objects("tw-")
>>> check_structure(objs) + check_fields(objs, spec_field_types("tw-"))
[]
>>> bad = check_fields(objs, {"tw-readings-*": {"@timestamp": "date"}})
>>> str(bad[0])
'index-pattern/tw-dv-readings: field anomaly_score (field format) not in mapping of tw-readings-*'
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kibana.lens_state import LAYER_REFERENCE, lens_state_problems
from kibana.saved import TYPE_MIGRATION_VERSIONS
from stagekit.search import indices as schema
from stagekit.search.indices import IndexNames
from telemetry_contract import printable
from telemetry_contract.explain import nesting_exceeds

__all__ = [
    "COMPATIBLE",
    "MAX_DEPTH",
    "FieldUse",
    "Problem",
    "check_fields",
    "check_structure",
    "field_uses",
    "flatten_mapping",
    "live_field_types",
    "parse_ndjson",
    "spec_field_types",
]

_NUMERIC: Final = frozenset(
    {
        "float",
        "double",
        "half_float",
        "scaled_float",
        "long",
        "integer",
        "short",
        "byte",
        "unsigned_long",
    }
)
#: What a use needs -> mapping types that satisfy it.
COMPATIBLE: Final[Mapping[str, frozenset[str]]] = {
    "date": frozenset({"date", "date_nanos"}),
    "number": _NUMERIC,
    "number_or_date": frozenset({*_NUMERIC, "date", "date_nanos"}),
    "aggregatable": frozenset(
        {"keyword", "constant_keyword", "boolean", "ip", "date", "date_nanos", *_NUMERIC}
    ),
    "keyword": frozenset({"keyword", "constant_keyword", "boolean", "ip"}),
    "any": frozenset(),  # existence is enough
}
#: Lens operation -> what its source field needs.
_OPERATION_NEEDS: Final[Mapping[str, str]] = {
    "date_histogram": "date",
    "average": "number",
    "sum": "number",
    "median": "number",
    "percentile": "number",
    "standard_deviation": "number",
    "min": "number_or_date",  # Lens computes min/max of dates too
    "max": "number_or_date",
    "range": "number",
    "terms": "aggregatable",
    "unique_count": "aggregatable",
    "last_value": "aggregatable",
    "count": "any",
}
_RECORDS: Final = "___records___"
#: ``field :`` in a KQL query (field names may be quoted).
_KQL_FIELD: Final = re.compile(r'(?:^|[\s(])"?([@A-Za-z_][\w.@-]*)"?\s*:')
_LAYER_REF: Final = LAYER_REFERENCE


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the saved objects are broken."""

    object: str  # "type/id", or "line N" for unparsable lines
    message: str

    def __str__(self) -> str:
        return printable(f"{self.object}: {self.message}", 2048)


@dataclass(frozen=True, slots=True)
class FieldUse:
    """One field used by one saved object, through one data view."""

    object: str
    data_view: str  # index pattern (the data view's title)
    field: str
    need: str  # key of COMPATIBLE
    where: str  # what uses it, for the message


def _name(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('type')}/{obj.get('id')}"


def parse_ndjson(text: str | bytes) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Objects of an NDJSON export, and what is wrong with its structure.

    Total: any text or bytes give objects and problems, never an exception.
    A line that is not UTF-8, not JSON, nested deeper than :data:`MAX_DEPTH`,
    or shaped so that the checks cannot read it is a problem naming the line,
    and its object is left out of the other checks.

    >>> parse_ndjson('{"type":"lens","id":"a","attributes":{},"references":[]}\\nnope\\n')[1]
    [Problem(object='line 2', message='not JSON: Expecting value')]
    >>> parse_ndjson(b'\\xff\\n' + b'[' * 500 + b']' * 500)[1]  # doctest: +NORMALIZE_WHITESPACE
    [Problem(object='line 1', message='not UTF-8: invalid start byte at offset 0'),
     Problem(object='line 2', message='nests deeper than 128 levels')]
    """
    objects: list[dict[str, Any]] = []
    problems: list[Problem] = []
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        obj, problem = _parse_line(line)
        if problem is not None:
            problems.append(Problem(f"line {n}", problem))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(f"line {n}", "not a JSON object"))
            continue
        if "exportedCount" in obj:  # the summary line of a Kibana export
            continue
        missing = [k for k in ("type", "id", "attributes", "references") if k not in obj]
        if missing:
            problems.append(Problem(f"line {n}", f"missing {', '.join(missing)}"))
            continue
        shape = _shape_problem(obj)
        if shape is not None:
            problems.append(Problem(f"line {n}", shape))
            continue
        objects.append(obj)
    return objects, problems


#: Deepest nesting of a line read (the saved objects nest about 10 levels);
#: it keeps ``json.loads`` far from Python's recursion limit.
MAX_DEPTH: Final = 128


def _parse_line(line: bytes) -> tuple[Any, str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: {exc.reason} at offset {exc.start}"
    if nesting_exceeds(line, MAX_DEPTH):
        return None, f"nests deeper than {MAX_DEPTH} levels"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg}"
    except (ValueError, RecursionError) as exc:  # a number of 4,300+ digits; a deep stack
        return None, f"not JSON: {printable(str(exc), 200)}"


def _shape_problem(obj: dict[str, Any]) -> str | None:
    """What keeps the checks from reading this object, or None.

    Saved objects are open-ended JSON and the checks read them with plain
    dictionary access (as Kibana's own code does); rather than a schema of
    every attribute, each object is first run through the checks alone, and
    an object of a shape they cannot read is reported here, by its line.
    """
    if not isinstance(obj["type"], str) or not isinstance(obj["id"], str):
        return "type and id must be strings"
    if not isinstance(obj["attributes"], dict) or not isinstance(obj["references"], list):
        return f"{_name(obj)}: attributes must be an object, references a list"
    if not all(isinstance(r, dict) for r in obj["references"]):
        return f"{_name(obj)}: every reference must be an object"
    # Stand-ins for the data views it references, so that the field walk
    # reads everything it would read in the whole set.
    views = [
        {"type": "index-pattern", "id": str(r.get("id")), "attributes": {}, "references": []}
        for r in obj["references"]
    ]
    try:
        check_structure([obj])
        check_fields([obj, *views], {})
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        detail = printable(f"{type(exc).__name__}: {exc}", 200)
        return f"{printable(_name(obj), 200)}: unexpected structure ({detail})"
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _json_attr(
    obj: Mapping[str, Any], container: Mapping[str, Any], key: str, problems: list[Problem]
) -> Any:
    raw = container.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        problems.append(Problem(_name(obj), f"{key} must be a JSON string"))
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problems.append(Problem(_name(obj), f"{key} is not valid JSON: {exc.msg}"))
        return None


def check_structure(objects: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """Ids unique, references resolvable, embedded JSON valid, versions importable."""
    problems: list[Problem] = []
    keys = Counter((o["type"], o["id"]) for o in objects)
    for (type_, id_), n in sorted(keys.items()):
        if n > 1:
            problems.append(Problem(f"{type_}/{id_}", f"id used {n} times"))
    known = set(keys)
    for obj in objects:
        name = _name(obj)
        type_ = str(obj["type"])
        tmv = obj.get("typeMigrationVersion")
        if type_ not in TYPE_MIGRATION_VERSIONS:
            problems.append(Problem(name, f"unexpected type {type_!r}"))
        elif not isinstance(tmv, str) or not re.fullmatch(r"\d+\.\d+\.\d+", tmv):
            problems.append(Problem(name, "typeMigrationVersion missing or malformed"))
        elif _version(tmv) > _version(TYPE_MIGRATION_VERSIONS[type_]):
            problems.append(
                Problem(name, f"typeMigrationVersion {tmv} is newer than the minimum Kibana knows")
            )
        ref_names = Counter(str(r.get("name")) for r in obj["references"])
        for rname, n in ref_names.items():
            if n > 1:
                problems.append(Problem(name, f"reference name {rname!r} used {n} times"))
        for ref in obj["references"]:
            if (ref.get("type"), ref.get("id")) not in known:
                problems.append(
                    Problem(
                        name,
                        f"reference {ref.get('name')!r} -> {ref.get('type')}/"
                        f"{ref.get('id')} is not in the set",
                    )
                )
        if type_ == "index-pattern":
            for key in ("fieldFormatMap", "fieldAttrs", "runtimeFieldMap", "sourceFilters"):
                _json_attr(obj, obj["attributes"], key, problems)
            if not obj["attributes"].get("title"):
                problems.append(Problem(name, "data view without a title (index pattern)"))
        elif type_ == "lens":
            _check_lens(obj, problems)
        elif type_ == "dashboard":
            _check_dashboard(obj, ref_names, problems)
    return problems


def _check_lens(obj: Mapping[str, Any], problems: list[Problem]) -> None:
    """The 8.9 state shape (:mod:`kibana.lens_state`), then the visualization's columns."""
    name = _name(obj)
    shape = lens_state_problems(obj)
    problems += [Problem(name, p) for p in shape]
    unreadable = ("attributes:", "attributes.state:", "attributes.state.datasourceStates")
    if any(p.startswith(unreadable) for p in shape):
        return  # the walk below reads what the shape check found missing
    layers = _lens_layers(obj)
    vis = obj["attributes"].get("state", {}).get("visualization", {})
    if not isinstance(vis, dict):
        return  # reported by the shape check
    all_columns = {c for layer in layers.values() for c in layer.get("columns", {})}
    for accessor in _accessors(vis):
        if accessor not in all_columns:
            problems.append(Problem(name, f"visualization uses unknown column {accessor}"))


def _accessors(vis: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for layer in vis.get("layers", []):
        if not isinstance(layer, dict):
            continue  # reported by the shape check
        out += list(layer.get("accessors", []))
        out += [layer[k] for k in ("xAccessor", "splitAccessor") if layer.get(k)]
    out += [c["columnId"] for c in vis.get("columns", []) if isinstance(c, dict)]
    if vis.get("metricAccessor"):
        out.append(vis["metricAccessor"])
    return out


def _lens_layers(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    states = obj["attributes"].get("state", {}).get("datasourceStates", {})
    layers: dict[str, dict[str, Any]] = states.get("formBased", {}).get("layers", {})
    return layers


def _check_dashboard(
    obj: Mapping[str, Any], ref_names: Counter[str], problems: list[Problem]
) -> None:
    name = _name(obj)
    attrs = obj["attributes"]
    panels = _json_attr(obj, attrs, "panelsJSON", problems) or []
    _json_attr(obj, attrs, "optionsJSON", problems)
    _json_attr(obj, attrs.get("kibanaSavedObjectMeta", {}), "searchSourceJSON", problems)
    indexes = Counter(p.get("panelIndex") for p in panels)
    for index, n in indexes.items():
        if n > 1:
            problems.append(Problem(name, f"panelIndex {index} used {n} times"))
    for p in panels:
        ref = f"{p.get('panelIndex')}:{p.get('panelRefName')}"
        if ref not in ref_names:
            problems.append(Problem(name, f"panel {p.get('panelIndex')} has no reference {ref}"))
    controls = _json_attr(obj, attrs.get("controlGroupInput", {}), "panelsJSON", problems) or {}
    for cid in controls:
        if f"controlGroup_{cid}:optionsListDataView" not in ref_names:
            problems.append(Problem(name, f"control {cid} has no data view reference"))


def _kql_fields(query: Any) -> list[str]:
    if not isinstance(query, Mapping) or query.get("language", "kuery") != "kuery":
        return []
    return _KQL_FIELD.findall(str(query.get("query", "")))


def field_uses(objects: Sequence[Mapping[str, Any]]) -> list[FieldUse]:
    """Every field used, per object and data view (see :data:`_OPERATION_NEEDS`)."""
    titles = {
        o["id"]: str(o["attributes"].get("title")) for o in objects if o["type"] == "index-pattern"
    }
    by_id = {(o["type"], o["id"]): o for o in objects}
    out: list[FieldUse] = []
    for obj in objects:
        name = _name(obj)
        attrs = obj["attributes"]
        refs = {str(r.get("name")): str(r.get("id")) for r in obj["references"]}
        if obj["type"] == "index-pattern":
            dv = titles[obj["id"]]
            if attrs.get("timeFieldName"):
                out.append(FieldUse(name, dv, str(attrs["timeFieldName"]), "date", "time field"))
            for field, fmt in _loads(attrs.get("fieldFormatMap")).items():
                need = "number" if isinstance(fmt, dict) and fmt.get("id") == "number" else "any"
                out.append(FieldUse(name, dv, field, need, "field format"))
            for field in _loads(attrs.get("fieldAttrs")):
                out.append(FieldUse(name, dv, field, "any", "field attributes"))
        elif obj["type"] == "lens":
            out += _lens_uses(obj, name, refs, titles)
        elif obj["type"] == "dashboard":
            out += _dashboard_uses(obj, name, refs, titles, by_id)
    return out


def _loads(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _lens_uses(
    obj: Mapping[str, Any], name: str, refs: Mapping[str, str], titles: Mapping[str, str]
) -> list[FieldUse]:
    out: list[FieldUse] = []
    state = obj["attributes"].get("state", {})
    layer_dvs: list[str] = []
    for layer_id, layer in _lens_layers(obj).items():
        dv = titles.get(refs.get(f"{_LAYER_REF}{layer_id}", ""), "")
        if not dv:
            continue  # reported by check_structure
        layer_dvs.append(dv)
        for col_id, col in layer.get("columns", {}).items():
            op = str(col.get("operationType"))
            src = col.get("sourceField")
            where = f"column {col_id} ({op})"
            if src and src != _RECORDS:
                out.append(FieldUse(name, dv, str(src), _OPERATION_NEEDS.get(op, "any"), where))
            sort_field = col.get("params", {}).get("sortField")
            if sort_field:
                out.append(FieldUse(name, dv, str(sort_field), "date", f"column {col_id} sort"))
            for f in _kql_fields(col.get("filter")):
                out.append(FieldUse(name, dv, f, "any", f"column {col_id} filter"))
    for dv in layer_dvs:
        for f in _kql_fields(state.get("query")):
            out.append(FieldUse(name, dv, f, "any", "query"))
    return out


def _dashboard_uses(
    obj: Mapping[str, Any],
    name: str,
    refs: Mapping[str, str],
    titles: Mapping[str, str],
    by_id: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[FieldUse]:
    """Control fields: in the control's data view, and in every panel's data view.

    A control's filter applies to every panel of the dashboard; a panel whose
    data view lacks the field would show nothing once a value is picked.
    """
    out: list[FieldUse] = []
    panel_dvs: set[str] = set()
    for ref in obj["references"]:
        target = by_id.get((ref.get("type"), ref.get("id")))
        if ref.get("type") == "lens" and target is not None:
            target_refs = {str(r.get("name")): str(r.get("id")) for r in target["references"]}
            for layer_id in _lens_layers(target):
                dv = titles.get(target_refs.get(f"{_LAYER_REF}{layer_id}", ""), "")
                if dv:
                    panel_dvs.add(dv)
    controls = _loads(obj["attributes"].get("controlGroupInput", {}).get("panelsJSON"))
    for cid, control in controls.items():
        field = str(control.get("explicitInput", {}).get("fieldName") or "")
        dv = titles.get(refs.get(f"controlGroup_{cid}:optionsListDataView", ""), "")
        if not field or not dv:
            continue
        out.append(FieldUse(name, dv, field, "keyword", f"control {cid}"))
        for other in sorted(panel_dvs - {dv}):
            out.append(FieldUse(name, other, field, "keyword", f"control {cid} filters panels"))
    return out


def check_fields(
    objects: Sequence[Mapping[str, Any]], field_types: Mapping[str, Mapping[str, str]]
) -> list[Problem]:
    """Every used field exists in the mapping of its data view, with a compatible type.

    ``field_types``: index pattern (data view title) -> field path -> mapping type.
    """
    problems: list[Problem] = []
    for use in field_uses(objects):
        mapping = field_types.get(use.data_view)
        if mapping is None:
            problems.append(Problem(use.object, f"no mapping known for {use.data_view}"))
            continue
        got = mapping.get(use.field)
        if got is None:
            problems.append(
                Problem(
                    use.object, f"field {use.field} ({use.where}) not in mapping of {use.data_view}"
                )
            )
            continue
        allowed = COMPATIBLE[use.need]
        if allowed and got not in allowed:
            problems.append(
                Problem(
                    use.object,
                    f"field {use.field} ({use.where}) is {got} in {use.data_view}, "
                    f"needs {use.need}",
                )
            )
    return _unique(problems)


def _unique(problems: Iterable[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def flatten_mapping(mappings: Mapping[str, Any], parent: str = "") -> dict[str, str]:
    """Field path -> type of one index's ``mappings`` (objects and multi-fields walked).

    >>> flatten_mapping({"properties": {"a": {"type": "text", "fields": {"keyword":
    ...     {"type": "keyword"}}}, "o": {"properties": {"b": {"type": "long"}}}}})
    {'a': 'text', 'a.keyword': 'keyword', 'o': 'object', 'o.b': 'long'}
    """
    out: dict[str, str] = {}
    for name, body in mappings.get("properties", {}).items():
        path = f"{parent}{name}"
        out[path] = str(body.get("type", "object"))
        for sub, sub_body in body.get("fields", {}).items():
            out[f"{path}.{sub}"] = str(sub_body.get("type", "object"))
        if "properties" in body:
            out.update(flatten_mapping(body, f"{path}."))
    return out


def live_field_types(answer: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Merge a ``GET <pattern>/_mapping`` answer over all its indices.

    Returns field -> type and the fields whose type differs between indices
    (Kibana shows those as *conflict* and cannot aggregate on them).

    >>> live_field_types({"i1": {"mappings": {"properties": {"x": {"type": "long"}}}},
    ...                   "i2": {"mappings": {"properties": {"x": {"type": "keyword"}}}}})
    ({'x': 'conflict'}, ['x: i1=long, i2=keyword'])
    """
    seen: dict[str, dict[str, str]] = {}
    for index, body in sorted(answer.items()):
        for field, type_ in flatten_mapping(body.get("mappings", {})).items():
            seen.setdefault(field, {})[index] = type_
    out: dict[str, str] = {}
    conflicts: list[str] = []
    for field, per_index in sorted(seen.items()):
        types = set(per_index.values())
        if len(types) == 1:
            out[field] = types.pop()
        else:
            out[field] = "conflict"
            detail = ", ".join(f"{i}={t}" for i, t in sorted(per_index.items()))
            conflicts.append(f"{field}: {detail}")
    return out, conflicts


def spec_field_types(prefix: str = "thermowatch-") -> dict[str, dict[str, str]]:
    """Index pattern -> field types, from the mappings the processor installs.

    Reads :data:`stagekit.search.indices.INDEXES` at call time (so a test that
    perturbs the definitions sees its change).

    >>> spec_field_types("tw-")["tw-alerts"]["message.keyword"]
    'keyword'
    """
    names = IndexNames(prefix)
    return {names.pattern(spec): flatten_mapping(spec.mappings()) for spec in schema.INDEXES}
