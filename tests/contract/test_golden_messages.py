"""Golden payloads: every valid one decodes, every invalid one fails for its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from telemetry_contract import ContractError, decode, encode

FIXTURES = Path(__file__).parents[1] / "fixtures" / "messages"
MANIFEST: dict[str, list[dict[str, Any]]] = json.loads((FIXTURES / "manifest.json").read_text())
NOW_MS = 1_767_225_600_000 + 60_000  # a minute after the fixtures' event time


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [Path(e["file"]).stem for e in entries]


def test_manifest_lists_every_fixture_file() -> None:
    listed = {e["file"] for group in MANIFEST.values() for e in group}
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert listed == on_disk


def test_every_message_type_has_a_valid_fixture() -> None:
    from telemetry_contract import MESSAGE_TYPES

    assert {e["type"] for e in MANIFEST["valid"]} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("entry", MANIFEST["valid"], ids=_ids(MANIFEST["valid"]))
def test_valid_fixture_decodes_and_round_trips(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    message = decode(raw, topic=entry["topic"], now_ms=NOW_MS)
    assert type(message).__name__.lower().replace("_", "") == entry["type"].replace("_", "")
    # Encoding keeps every field the fixture gave, with the same value.
    original, encoded = json.loads(raw), json.loads(encode(message))
    assert {k: encoded[k] for k in original} == original
    assert decode(encode(message), now_ms=NOW_MS) == message


@pytest.mark.parametrize("entry", MANIFEST["invalid"], ids=_ids(MANIFEST["invalid"]))
def test_invalid_fixture_names_field_and_reason(entry: dict[str, Any]) -> None:
    raw = (FIXTURES / entry["file"]).read_bytes()
    with pytest.raises(ContractError) as info:
        decode(raw, topic=entry["topic"], now_ms=NOW_MS)
    err = info.value
    assert err.reason.value == entry["reason"]
    assert err.field == entry["field"]
    assert str(err).startswith(f"{entry['field']}: ")
    assert len(err.problem) > 10  # a sentence, not a code


REQUIRED_FAILURE_MODES = {
    "not_json",
    "missing_field",
    "wrong_type",
    "non_finite",
    "out_of_range",
    "future_timestamp",
    "too_large",
    "unknown_schema_version",
    "device_mismatch",
}


def test_every_required_failure_mode_has_a_fixture() -> None:
    assert {e["reason"] for e in MANIFEST["invalid"]} >= REQUIRED_FAILURE_MODES
    temp = [e for e in MANIFEST["invalid"] if e["field"] == "temp_c"]
    assert {"non_finite", "out_of_range"} <= {e["reason"] for e in temp}


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "thermowatch", "contract", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_cli_check_accepts_valid_and_rejects_invalid() -> None:
    for entry in MANIFEST["valid"]:
        args = [str(FIXTURES / entry["file"])]
        if entry["topic"]:
            args += ["--topic", entry["topic"]]
        done = _cli("check", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == b"ok"
    for entry in MANIFEST["invalid"]:
        done = _cli(
            "check",
            str(FIXTURES / entry["file"]),
            "--topic",
            entry["topic"],
            "--now-ms",
            str(NOW_MS),
        )
        assert done.returncode == 1, entry
        out = done.stdout.decode()
        assert out.startswith(f"error: {entry['field']}: "), out
        assert f"[{entry['reason']}]" in out


def test_cli_check_reads_stdin() -> None:
    raw = (FIXTURES / "valid" / "reading_ok.json").read_bytes()
    done = _cli("check", "-", stdin=raw)
    assert (done.returncode, done.stdout.strip()) == (0, b"ok")
    done = _cli("check", "-", stdin=b"{")
    assert done.returncode == 1
    assert done.stdout.startswith(b"error: payload: not valid JSON")


def test_cli_check_missing_file_is_a_clear_error() -> None:
    done = _cli("check", "/nonexistent/payload.json")
    assert done.returncode == 2
    assert b"/nonexistent/payload.json" in done.stderr


def test_cli_schema_prints_json_schema() -> None:
    done = _cli("schema", "reading")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["$defs"]["Reading"]["required"]
    every = json.loads(_cli("schema").stdout)
    processor = {"alert_change", "incident_change"}
    assert set(every) == {e["type"] for e in MANIFEST["valid"]} | processor
