"""``kibana check`` refuses a Lens object Kibana 8.9 would show as a broken panel.

The objects are stamped ``typeMigrationVersion`` 8.9.0, Lens' last migration
of 8.x, so Kibana imports them as written and repairs nothing: every case
below breaks one thing the 8.9 Lens state must contain (see
``kibana/lens_state.py`` for the shape and where it comes from) and must be
refused with an error naming the object and the path, by the static check
(``thermowatch kibana check``, and before every ``kibana import``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kibana.app import committed_file, static_check
from kibana.check import check_structure, parse_ndjson
from kibana.lens_state import lens_state_problems
from kibana.objects import build_objects, to_ndjson

LENS = "thermowatch-lens-temperature-over-time"  # an lnsXY on the readings data view
TABLE = "thermowatch-lens-open-alerts"  # an lnsDatatable (a terms column) on the alerts view
NAME = f"lens/{LENS}"
FORM = "attributes.state.datasourceStates.formBased"


def _objects() -> list[dict[str, Any]]:
    return copy.deepcopy(build_objects())


def _lens(objects: list[dict[str, Any]], lens_id: str = LENS) -> dict[str, Any]:
    return next(o for o in objects if o["id"] == lens_id)


def _layer(obj: dict[str, Any]) -> dict[str, Any]:
    layer: dict[str, Any] = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"][
        "layer1"
    ]
    return layer


def _refusals(objects: list[dict[str, Any]]) -> list[str]:
    """What the static check (the command's) says, as printed."""
    return [str(p) for p in static_check(to_ndjson(objects))]


def test_the_shipped_objects_have_the_8_9_lens_shape() -> None:
    objects, problems = parse_ndjson(committed_file().read_text(encoding="utf-8"))
    assert problems == []
    lenses = [o for o in objects if o["type"] == "lens"]
    assert len(lenses) >= 8
    assert {o["attributes"]["visualizationType"] for o in lenses} == {
        "lnsXY",
        "lnsDatatable",
        "lnsMetric",
    }
    for obj in lenses:
        assert lens_state_problems(obj) == [], obj["id"]
    assert check_structure(objects) == []
    # and for another prefix too (the objects `--prefix` builds on the fly)
    assert static_check(to_ndjson(build_objects("lab-")), prefix="lab-") == []


def _pre_8_6_datasource(o: dict[str, Any]) -> None:
    states = o["attributes"]["state"]["datasourceStates"]
    states["indexpattern"] = states.pop("formBased")


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    """Delete the key at dotted ``path`` (from the object's top)."""

    def edit(o: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = o
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(o: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = o
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return edit


def _rename_layer_reference(o: dict[str, Any]) -> None:
    o["references"][0]["name"] = "indexpattern-datasource-layer-layer2"


def _extra_column(o: dict[str, Any]) -> None:
    _layer(o)["columns"]["ghost"] = copy.deepcopy(_layer(o)["columns"]["temp"])


L1 = f"{FORM}.layers.layer1"
CASES: list[tuple[str, str, Callable[[dict[str, Any]], None], list[str]]] = [
    (
        "pre-8.6 datasource name",
        LENS,
        _pre_8_6_datasource,
        [
            "attributes.state.datasourceStates.indexpattern: the pre-8.6 name of formBased "
            "(Kibana 8.9 runs no migration on an object stamped 8.9.0)",
            f"{FORM}: missing",
        ],
    ),
    ("no formBased", LENS, _drop(FORM), [f"{FORM}: missing"]),
    ("no layers", LENS, _drop(f"{FORM}.layers"), [f"{FORM}.layers: missing or empty"]),
    ("empty layers", LENS, _set(f"{FORM}.layers", {}), [f"{FORM}.layers: missing or empty"]),
    ("no state", LENS, _drop("attributes.state"), ["attributes.state: missing (an object)"]),
    (
        "no visualization",
        LENS,
        _drop("attributes.state.visualization"),
        ["attributes.state.visualization: missing (an object)"],
    ),
    (
        "no query",
        LENS,
        _drop("attributes.state.query"),
        ["attributes.state.query: missing (an object with query and language)"],
    ),
    (
        "query without language",
        LENS,
        _drop("attributes.state.query.language"),
        ["attributes.state.query.language: missing (kuery or lucene)"],
    ),
    (
        "filters not a list",
        LENS,
        _set("attributes.state.filters", {}),
        ["attributes.state.filters: missing (a list)"],
    ),
    (
        "adHocDataViews not an object",
        LENS,
        _set("attributes.state.adHocDataViews", []),
        ["attributes.state.adHocDataViews: not an object"],
    ),
    (
        "internalReferences malformed",
        LENS,
        _set("attributes.state.internalReferences", [{"name": "x"}]),
        ["attributes.state.internalReferences: not a list of {name, type, id}"],
    ),
    (
        "unknown visualization type",
        LENS,
        _set("attributes.visualizationType", "lnsBar"),
        ["attributes.visualizationType: 'lnsBar' is not a Lens visualization of Kibana 8.9"],
    ),
    ("no title", LENS, _drop("attributes.title"), ["attributes.title: missing (a string)"]),
    (
        "layer reference names another layer",
        LENS,
        _rename_layer_reference,
        [
            "references.0: indexpattern-datasource-layer-layer2 names no formBased layer",
            "references: no indexpattern-datasource-layer-layer1 for layer layer1",
        ],
    ),
    (
        "layer reference of the wrong type",
        LENS,
        _set("references.0.type", "search"),
        ["references.0: indexpattern-datasource-layer-layer1 must be of type index-pattern"],
    ),
    (
        "no layer reference",
        LENS,
        _set("references", []),
        ["references: no indexpattern-datasource-layer-layer1 for layer layer1"],
    ),
    (
        "columnOrder names an unknown column",
        LENS,
        _set(f"{L1}.columnOrder", ["time", "temp", "device", "nope"]),
        [f"{L1}.columnOrder: names unknown column nope"],
    ),
    (
        "a column missing from columnOrder",
        LENS,
        _extra_column,
        [f"{L1}.columns.ghost: not in columnOrder"],
    ),
    (
        "no columnOrder",
        LENS,
        _drop(f"{L1}.columnOrder"),
        [f"{L1}.columnOrder: missing (a list of column ids)"],
    ),
    (
        "column without sourceField",
        LENS,
        _drop(f"{L1}.columns.temp.sourceField"),
        [f"{L1}.columns.temp.sourceField: missing (average reads a field)"],
    ),
    (
        "column without operationType",
        LENS,
        _drop(f"{L1}.columns.temp.operationType"),
        [f"{L1}.columns.temp.operationType: missing (a string)"],
    ),
    (
        "column of an unknown data type",
        LENS,
        _set(f"{L1}.columns.temp.dataType", "float"),
        [f"{L1}.columns.temp.dataType: 'float' is not a Lens data type"],
    ),
    (
        "column without isBucketed",
        LENS,
        _drop(f"{L1}.columns.time.isBucketed"),
        [f"{L1}.columns.time.isBucketed: missing (true or false)"],
    ),
    (
        "terms column without size",
        LENS,
        _drop(f"{L1}.columns.device.params.size"),
        [f"{L1}.columns.device.params.size: missing (a number)"],
    ),
    (
        "terms column without orderBy",
        LENS,
        _drop(f"{L1}.columns.device.params.orderBy"),
        [f"{L1}.columns.device.params.orderBy: missing"],
    ),
    (
        "visualization layer that is no formBased layer",
        LENS,
        _set("attributes.state.visualization.layers.0.layerId", "layer9"),
        ["attributes.state.visualization.layers.0.layerId: 'layer9' is not a formBased layer"],
    ),
    (
        "table on a layer that is no formBased layer",
        TABLE,
        _set("attributes.state.visualization.layerId", "other"),
        ["attributes.state.visualization.layerId: 'other' is not a formBased layer"],
    ),
]


@pytest.mark.parametrize(
    ("lens_id", "edit", "expected"),
    [pytest.param(lens_id, edit, expected, id=case) for case, lens_id, edit, expected in CASES],
)
def test_a_lens_object_kibana_8_9_cannot_read_is_refused_naming_object_and_path(
    lens_id: str, edit: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    objects = _objects()
    edit(_lens(objects, lens_id))
    got = _refusals(objects)
    mine = [p for p in got if p.startswith(f"lens/{lens_id}: ")]
    assert mine, got
    assert got == mine, "another object was blamed"
    for want in expected:
        assert any(p.startswith(f"lens/{lens_id}: {want}") for p in mine), (want, mine)


def test_a_column_on_a_field_the_live_mapping_lacks_is_refused() -> None:
    """The third kind of breakage: a column whose sourceField is not mapped
    (against the live server: ``tests/integration/test_kibana_live_mapping.py``)."""
    objects = _objects()
    _layer(_lens(objects))["columns"]["temp"]["sourceField"] = "temperature"
    assert _refusals(objects) == [
        f"{NAME}: field temperature (column temp (average)) not in mapping of "
        "thermowatch-readings-*"
    ]


def test_the_shape_check_is_total_on_any_json() -> None:
    """Whatever a hand-edited file holds, a list of problems, never an exception."""
    odd: list[Any] = [None, 1, "x", [], {}, {"layers": 1}, {"layers": {"a": 1}}]
    for value in odd:
        for path in (
            "attributes",
            "attributes.state",
            "attributes.state.datasourceStates",
            f"{FORM}",
            f"{FORM}.layers",
            f"{L1}",
            f"{L1}.columns",
            f"{L1}.columns.temp",
            f"{L1}.columns.device.params",
            "attributes.state.visualization",
            "attributes.state.visualization.layers",
            "attributes.state.query",
            "references",
        ):
            obj = copy.deepcopy(_lens(build_objects()))
            try:
                _set(path, value)(obj)
            except (KeyError, TypeError, IndexError):
                continue  # a parent is already gone
            assert isinstance(lens_state_problems(obj), list)
            text = to_ndjson([obj])
            assert all(isinstance(str(p), str) for p in static_check(text))


def test_the_check_command_refuses_a_pre_8_6_lens_naming_object_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from thermowatch.cli import main

    objects = _objects()
    _pre_8_6_datasource(_lens(objects))
    broken = tmp_path / "broken.ndjson"
    broken.write_text(to_ndjson(objects), encoding="utf-8")
    assert main(["kibana", "check", "--file", str(broken)]) == 1
    err = capsys.readouterr().err
    assert (
        f"broken.ndjson: {NAME}: attributes.state.datasourceStates.indexpattern: "
        "the pre-8.6 name of formBased" in err
    )
    assert f"broken.ndjson: {NAME}: {FORM}: missing" in err
