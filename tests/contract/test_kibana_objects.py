"""Kibana saved objects against the processor's mapping definitions (no services).

The committed NDJSON must be exactly what the generator produces from
stagekit.search.indices, must pass every structural check, and every field it
uses must exist with a compatible type in the mappings the processor installs.
Renaming (or retyping) any field the dashboards use must make the check fail.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from kibana.app import committed_file, static_check
from kibana.check import (
    check_fields,
    check_structure,
    field_uses,
    flatten_mapping,
    parse_ndjson,
    spec_field_types,
)
from kibana.objects import (
    CORE_MIGRATION_VERSION,
    MIN_KIBANA,
    TYPE_MIGRATION_VERSIONS,
    build_objects,
    to_ndjson,
)
from stagekit.search import indices as schema
from stagekit.search.indices import IndexNames, index_templates

PREFIX = "thermowatch-"


def committed() -> list[dict[str, Any]]:
    objects, problems = parse_ndjson(committed_file().read_text(encoding="utf-8"))
    assert problems == []
    return objects


def installed_field_types(prefix: str = PREFIX) -> dict[str, dict[str, str]]:
    """Field types from the index templates the processor PUTs (not from the specs)."""
    return {
        body["index_patterns"][0]: flatten_mapping(body["template"]["mappings"])
        for body in index_templates(IndexNames(prefix)).values()
    }


def messages(problems: list[Any]) -> str:
    return "\n".join(map(str, problems))


# -- the committed file is the generator's output ---------------------------------------


def test_committed_ndjson_is_what_the_generator_produces() -> None:
    want = to_ndjson(build_objects(PREFIX))
    have = committed_file().read_text(encoding="utf-8")
    assert have == want, "kibana/saved_objects is stale: run 'thermowatch kibana generate'"


def test_generate_check_command_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    from thermowatch.cli import main

    assert main(["kibana", "generate", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_generate_check_command_fails_on_a_stale_file(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from thermowatch.cli import main

    stale = tmp_path / "x.ndjson"
    stale.write_text(committed_file().read_text(encoding="utf-8").replace("now-24h", "now-1h"))
    assert main(["kibana", "generate", "--check", "--out", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["kibana", "generate", "--out", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == to_ndjson(build_objects(PREFIX))


# -- the committed file passes every check ------------------------------------------------


def test_committed_objects_pass_every_check() -> None:
    text = committed_file().read_text(encoding="utf-8")
    assert static_check(text) == []
    objects = committed()
    assert check_fields(objects, installed_field_types()) == []


def test_checks_are_not_vacuous() -> None:
    uses = field_uses(committed())
    used = {(u.data_view, u.field) for u in uses}
    # every visualization's main field, the time fields, the control fields
    for pattern, field in [
        ("thermowatch-readings-*", "temp_c"),
        ("thermowatch-readings-*", "anomaly_score"),
        ("thermowatch-readings-*", "device_id"),
        ("thermowatch-readings-*", "site"),
        ("thermowatch-readings-*", "@timestamp"),
        ("thermowatch-agg1m-*", "temp_min"),
        ("thermowatch-agg1m-*", "temp_max"),
        ("thermowatch-alerts", "severity"),
        ("thermowatch-alerts", "status"),
        ("thermowatch-alerts", "rule"),
        ("thermowatch-alerts", "site"),  # the site control also filters alert panels
    ]:
        assert (pattern, field) in used, (pattern, field)
    assert {u.need for u in uses} >= {"date", "number", "aggregatable", "keyword"}


def test_every_object_carries_the_migration_versions_of_the_minimum_kibana() -> None:
    assert MIN_KIBANA == (8, 9, 0)
    for obj in committed():
        assert obj["coreMigrationVersion"] == CORE_MIGRATION_VERSION == "8.8.0"
        assert obj["typeMigrationVersion"] == TYPE_MIGRATION_VERSIONS[obj["type"]]


def test_the_required_objects_exist() -> None:
    objects = committed()
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for o in objects:
        by_type.setdefault(o["type"], {})[o["attributes"]["title"]] = o
    assert set(by_type["index-pattern"]) == {
        "thermowatch-readings-*",
        "thermowatch-agg1m-*",
        "thermowatch-alerts",
        "thermowatch-incidents",
    }
    assert set(by_type["lens"]) == {
        "Temperature over time per device",
        "Latest temperature per device",
        "Temperature band (1-minute min / mean / max)",
        "Edge anomaly score over time",
        "Alerts over time by severity",
        "Open alerts",
        "Devices online",
        "Devices offline",
    }
    assert set(by_type["dashboard"]) == {
        "thermowatch: Fleet overview",
        "thermowatch: Device detail",
    }
    for dash in by_type["dashboard"].values():
        a = dash["attributes"]
        assert a["timeRestore"] is True and a["timeFrom"].startswith("now-")
        assert a["refreshInterval"]["pause"] is False and a["refreshInterval"]["value"] > 0
        controls = json.loads(a["controlGroupInput"]["panelsJSON"])
        ordered = sorted(controls.values(), key=lambda c: c["order"])
        fields = [c["explicitInput"]["fieldName"] for c in ordered]
        assert fields == ["site", "device_id"]


def test_data_views_carry_time_field_and_formats_from_the_schema() -> None:
    dvs = {
        o["attributes"]["title"]: o["attributes"]
        for o in committed()
        if o["type"] == "index-pattern"
    }
    readings = dvs["thermowatch-readings-*"]
    assert readings["timeFieldName"] == schema.READINGS.time_field
    formats = json.loads(readings["fieldFormatMap"])
    assert formats["temp_c"]["params"]["pattern"] == schema.READINGS.field("temp_c").format
    assert formats["anomaly_score"]["params"]["pattern"] == "0.000"
    assert "°C" in json.loads(readings["fieldAttrs"])["temp_c"]["customLabel"]
    alerts = json.loads(dvs["thermowatch-alerts"]["fieldFormatMap"])
    assert alerts["score"]["params"]["pattern"] == "0.000"


def test_lens_columns_show_the_unit_from_the_schema() -> None:
    lens = next(o for o in committed() if o["id"] == "thermowatch-lens-temperature-over-time")
    layer = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    fmt = layer["columns"]["temp"]["params"]["format"]
    assert fmt == {"id": "number", "params": {"decimals": 2, "suffix": " °C"}}


def test_another_prefix_gives_other_ids_and_patterns() -> None:
    objects = build_objects("lab-")
    assert check_structure(objects) == []
    assert check_fields(objects, spec_field_types("lab-")) == []
    assert all(o["id"].startswith("lab-") for o in objects)
    # objects for one prefix do not fit another prefix's indices
    assert check_fields(objects, spec_field_types(PREFIX)) != []


# -- renaming or retyping a field in the definitions breaks the check ---------------------


def _spec_for(pattern: str) -> schema.IndexSpec:
    names = IndexNames(PREFIX)
    return next(s for s in schema.INDEXES if names.pattern(s) == pattern)


def _perturb(
    monkeypatch: pytest.MonkeyPatch,
    spec: schema.IndexSpec,
    field: str,
    *,
    rename: str | None = None,
    retype: str | None = None,
) -> None:
    """Replace ``spec`` in stagekit.search.indices with one field renamed or retyped."""
    fields = tuple(
        dataclasses.replace(f, name=rename or f.name, type=retype or f.type)  # type: ignore[arg-type]
        if f.name == field
        else f
        for f in spec.fields
    )
    new = dataclasses.replace(spec, fields=fields)
    for attr in ("READINGS", "AGGREGATES", "ALERTS"):
        if getattr(schema, attr) is spec:
            monkeypatch.setattr(schema, attr, new)
    monkeypatch.setattr(schema, "INDEXES", tuple(new if s is spec else s for s in schema.INDEXES))


USED = sorted({(u.data_view, u.field) for u in field_uses(committed())})


@pytest.mark.parametrize(("pattern", "field"), USED, ids=[f"{p}:{f}" for p, f in USED])
def test_renaming_any_used_field_in_the_definitions_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, pattern: str, field: str
) -> None:
    _perturb(monkeypatch, _spec_for(pattern), field, rename=f"{field}_renamed")
    problems = static_check(committed_file().read_text(encoding="utf-8"))
    assert any(f"field {field} " in str(p) and pattern in str(p) for p in problems), messages(
        problems
    )


def test_renaming_a_field_makes_generation_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    _perturb(monkeypatch, schema.READINGS, "temp_c", rename="temperature_c")
    with pytest.raises(KeyError, match="temp_c"):
        build_objects(PREFIX)


def test_retyping_a_plotted_field_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    _perturb(monkeypatch, schema.READINGS, "temp_c", retype="keyword")
    problems = static_check(committed_file().read_text(encoding="utf-8"))
    assert any("field temp_c" in str(p) and "needs number" in str(p) for p in problems), messages(
        problems
    )
    with pytest.raises(ValueError, match="temp_c"):
        build_objects(PREFIX)


def test_retyping_a_control_field_to_text_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _perturb(monkeypatch, schema.ALERTS, "site", retype="text")
    problems = static_check(committed_file().read_text(encoding="utf-8"))
    assert any(
        "dashboard/" in str(p) and "field site" in str(p) and "thermowatch-alerts" in str(p)
        for p in problems
    ), messages(problems)


# -- a broken object set cannot pass the structural checks --------------------------------


def _find(objects: list[dict[str, Any]], id_: str) -> dict[str, Any]:
    return next(o for o in objects if o["id"] == id_)


def test_duplicate_ids_are_reported() -> None:
    objects = committed()
    objects.append(copy.deepcopy(objects[0]))
    assert "id used 2 times" in messages(check_structure(objects))


def test_a_dangling_reference_is_reported() -> None:
    objects = [o for o in committed() if o["id"] != "thermowatch-lens-open-alerts"]
    problems = messages(check_structure(objects))
    assert "lens/thermowatch-lens-open-alerts is not in the set" in problems


def test_a_missing_data_view_is_reported() -> None:
    objects = [o for o in committed() if o["id"] != "thermowatch-dv-agg1m"]
    assert "index-pattern/thermowatch-dv-agg1m is not in the set" in messages(
        check_structure(objects)
    )


def test_broken_embedded_json_and_panel_references_are_reported() -> None:
    objects = committed()
    dash = _find(objects, "thermowatch-dash-fleet-overview")
    dash["attributes"]["panelsJSON"] = dash["attributes"]["panelsJSON"][:-1]
    assert "panelsJSON is not valid JSON" in messages(check_structure(objects))

    objects = committed()
    dash = _find(objects, "thermowatch-dash-device-detail")
    dash["references"] = [r for r in dash["references"] if r["name"] != "p1:panel_p1"]
    assert "panel p1 has no reference p1:panel_p1" in messages(check_structure(objects))


def test_lens_layer_without_reference_or_with_unknown_accessor_is_reported() -> None:
    objects = committed()
    lens = _find(objects, "thermowatch-lens-anomaly-score")
    lens["references"] = []
    vis = lens["attributes"]["state"]["visualization"]
    vis["layers"][0]["accessors"] = ["nope"]
    problems = messages(check_structure(objects))
    assert "references: no indexpattern-datasource-layer-layer1 for layer layer1" in problems
    assert "visualization uses unknown column nope" in problems


def test_a_newer_migration_version_is_reported() -> None:
    objects = committed()
    objects[-1]["typeMigrationVersion"] = "10.3.0"
    assert "newer than the minimum Kibana knows" in messages(check_structure(objects))


def test_ndjson_structure_errors_are_reported() -> None:
    text = committed_file().read_text(encoding="utf-8")
    bad = text + "{not json\n" + '{"type":"lens"}\n' + "[1]\n"
    _, problems = parse_ndjson(bad)
    lines = len(text.splitlines())
    assert [p.object for p in problems] == [f"line {lines + n}" for n in (1, 2, 3)]
    assert "missing id, attributes, references" in messages(problems)


def test_a_field_missing_from_a_lens_column_is_reported() -> None:
    objects = committed()
    lens = _find(objects, "thermowatch-lens-temperature-band")
    layer = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]
    layer["columns"]["max"]["sourceField"] = "temp_maximum"
    layer["columns"]["min"]["sourceField"] = "device_id"
    problems = messages(check_fields(objects, spec_field_types()))
    assert "field temp_maximum (column max (max)) not in mapping of thermowatch-agg1m-*" in problems
    assert "field device_id (column min (min)) is keyword in thermowatch-agg1m-*" in problems


def test_the_export_summary_line_is_accepted() -> None:
    text = committed_file().read_text(encoding="utf-8")
    summary = {"exportedCount": 13, "missingRefCount": 0, "missingReferences": []}
    objects, problems = parse_ndjson(text + json.dumps(summary) + "\n")
    assert problems == [] and len(objects) == len(committed())


# -- the fields the dashboards use are fields the processor actually writes ---------------


def _written_fields() -> dict[str, set[str]]:
    """Keys of the documents the processor builds from the golden messages, per pattern."""
    from pathlib import Path

    from cloud_processor.aggregates import WindowAggregate, aggregate_doc
    from cloud_processor.documents import reading_doc
    from stagekit.search.alerts import alert_doc
    from stagekit.search.incidents import incident_doc
    from telemetry_contract import (
        Alert,
        AlertStatus,
        Reading,
        Severity,
        decode_as,
        decode_incident_change,
    )

    valid = Path(__file__).resolve().parents[1] / "fixtures" / "messages" / "valid"
    readings = [
        decode_as(p.read_bytes(), Reading, now_ms=1_767_225_700_000)
        for p in sorted(valid.glob("reading_*.json"))
    ]
    assert readings
    t0 = readings[0].ts
    window = WindowAggregate("d1", "s1", t0, 3, 1.0, 3.0, 2.0, 3.0, t0 + 5, 6.0, 9)
    alert = Alert(
        "d1.threshold_high.1", "d1", "s1", "threshold_high", Severity.WARNING,
        AlertStatus.OPEN, 1, t0, t0, value=31.0, threshold=30.0, score=0.9, message="m",
    )  # fmt: skip
    names = IndexNames(PREFIX)
    docs = {
        names.readings_pattern: [reading_doc(r) for r in readings],
        names.aggregates_pattern: [aggregate_doc(window)],
        names.alerts: [alert_doc(alert)],
        names.incidents: [
            incident_doc(decode_incident_change(p.read_bytes()), processed_at=t0)
            for p in sorted((valid.parent / "incident_change").glob("[!i]*.json"))
        ],
    }
    return {
        pattern: {k for d in ds for k, v in d.items() if v is not None}
        for pattern, ds in docs.items()
    }


def _unwritten_uses() -> list[str]:
    written = _written_fields()
    return [
        f"{use.object} uses {use.field} ({use.where}), which the processor never writes "
        f"into {use.data_view}"
        for use in field_uses(committed())
        if use.field not in written[use.data_view]
    ]


def test_every_used_field_is_written_by_the_processor_document_builders() -> None:
    assert _unwritten_uses() == []


def test_a_rename_in_the_document_builder_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract's temp_c renamed on its way into the reading document."""
    from cloud_processor import documents

    original = documents.reading_doc

    def renamed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        doc = original(*args, **kwargs)
        if "temp_c" in doc:
            doc["temperature_c"] = doc.pop("temp_c")
        return doc

    monkeypatch.setattr(documents, "reading_doc", renamed)
    problems = "\n".join(_unwritten_uses())
    assert "uses temp_c (column temp (average))" in problems
    assert "thermowatch-readings-*" in problems
