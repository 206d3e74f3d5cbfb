"""The Kibana client and ``thermowatch kibana import|export|status`` against FakeKibana.

Kibana itself cannot be installed here; kibana.testing.FakeKibana is a local
HTTP server that enforces the documented import API (kbn-xsrf, multipart
field ``file`` named *.ndjson, ``overwrite``, the documented answer shape,
401 on bad credentials, GET /api/status with a version).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.local.stack import free_port
from kibana.app import committed_file, import_objects
from kibana.client import (
    AuthenticationError,
    ImportReport,
    KibanaClient,
    KibanaUnavailableError,
    UnsupportedVersionError,
)
from kibana.config import resolve_password
from kibana.objects import build_objects
from kibana.testing import FakeKibana
from thermowatch.cli import main

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    with FakeKibana(api_key=API_KEY, users={"elastic": PASSWORD}, spaces={"default", "ops"}) as k:
        yield k


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    """The API key in a file: a key is never a command-line argument."""
    path = tmp_path / "kibana.key"
    path.write_text(API_KEY + "\n", encoding="utf-8")
    return str(path)


def test_the_api_key_is_never_a_command_line_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run("status", "--url", "http://127.0.0.1:9", "--api-key", API_KEY) == 1
    err = capsys.readouterr().err
    assert "--api-key-file FILE" in err and API_KEY not in err
    empty = tmp_path / "empty.key"
    empty.write_text("\n", encoding="utf-8")
    assert run("status", "--url", "http://127.0.0.1:9", "--api-key-file", str(empty)) == 1
    assert f"--api-key-file: {empty} is empty" in capsys.readouterr().err


def committed_ids() -> set[tuple[str, str]]:
    return {(o["type"], o["id"]) for o in build_objects()}


def run(*argv: str) -> int:
    return main(["kibana", *argv])


# -- the done-when: import twice (idempotent), wrong key fails clearly --------------------


def test_import_succeeds_twice_in_a_row(
    kibana: FakeKibana,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 0
    first = capsys.readouterr().out
    stored_once = kibana.objects()
    assert set(stored_once) == committed_ids()
    assert first.count("ok     ") == len(committed_ids())
    assert ": created" in first and "FAILED" not in first

    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 0
    second = capsys.readouterr().out
    assert second.count(": overwritten") == len(committed_ids())
    assert kibana.objects() == stored_once  # same objects, nothing duplicated
    assert f"imported {len(committed_ids())} object(s)" in second


def test_import_request_follows_the_documented_api(kibana: FakeKibana, key_file: str) -> None:
    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 0
    posts = [r for r in kibana.requests if r.method == "POST"]
    assert len(posts) == 1
    req = posts[0]
    assert req.path == "/api/saved_objects/_import?overwrite=true"
    assert "kbn-xsrf" in req.headers
    assert req.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="thermowatch.ndjson"' in req.body
    assert req.headers["authorization"] == f"ApiKey {API_KEY}"
    gets = [r.path for r in kibana.requests if r.method == "GET"]
    assert gets == ["/api/status"]  # version checked before importing


def test_wrong_api_key_fails_with_a_clear_message_and_no_secret(
    kibana: FakeKibana,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "d3Jvbmcta2V5LXRoYXQtbXVzdC1ub3QtbGVhaw=="
    wrong_file = tmp_path / "wrong.key"
    wrong_file.write_text(wrong + "\n", encoding="utf-8")
    assert run("import", "--url", kibana.url, "--api-key-file", str(wrong_file)) == 1
    out, err = capsys.readouterr()
    assert "authentication failed (HTTP 401)" in err
    assert "--api-key-file" in err  # tells what to fix
    for text in (out, err, caplog.text):
        assert wrong not in text
    assert kibana.objects() == {}


def test_basic_auth_password_comes_from_the_environment(
    kibana: FakeKibana,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("KIBANA_PASSWORD", PASSWORD)
    assert run("import", "--url", kibana.url, "--user", "elastic") == 0
    monkeypatch.setenv("KIBANA_PASSWORD", PASSWORD + "-wrong")
    assert run("import", "--url", kibana.url, "--user", "elastic") == 1
    out, err = capsys.readouterr()
    assert "authentication failed" in err
    for text in (out, err, caplog.text):
        assert PASSWORD not in text


def test_password_is_never_a_command_line_option() -> None:
    with pytest.raises(SystemExit):
        run("import", "--url", "http://127.0.0.1:1", "--user", "u", "--password", "x")


def test_without_password_and_terminal_the_error_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="set KIBANA_PASSWORD"):
        resolve_password("elastic", {}, interactive=False)
    assert resolve_password("elastic", {}, prompt=lambda _p: "typed", interactive=True) == "typed"


def test_password_in_the_url_is_stripped_from_messages(kibana: FakeKibana) -> None:
    url = kibana.url.replace("http://", f"http://elastic:{PASSWORD}-x@")
    with KibanaClient(url, retries=0) as client:
        assert PASSWORD not in client.url
        with pytest.raises(AuthenticationError) as exc:
            client.status()
    assert PASSWORD not in str(exc.value)


# -- version, retries, connection errors -------------------------------------------------


@pytest.mark.parametrize("version", ["8.8.2", "7.17.18", "10.0.0"])
def test_unsupported_kibana_is_refused_before_importing(
    kibana: FakeKibana,
    version: str,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    kibana.version = version
    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 1
    err = capsys.readouterr().err
    assert f"Kibana {version}" in err and "need Kibana >= 8.9.0" in err
    assert kibana.objects() == {}


@pytest.mark.parametrize("version", ["8.9.0", "8.19.3", "9.1.0"])
def test_supported_kibana_versions(kibana: FakeKibana, version: str) -> None:
    kibana.version = version
    with KibanaClient(kibana.url, api_key=API_KEY) as client:
        assert client.check_version()[0] in (8, 9)


def test_5xx_answers_are_retried_with_backoff(kibana: FakeKibana) -> None:
    kibana.fail_next = [503, 502, 500]
    with KibanaClient(kibana.url, api_key=API_KEY, retries=4, backoff_s=0.01) as client:
        report = import_objects(client, committed_file().read_text(encoding="utf-8"))
    assert report.success
    assert len(kibana.requests) == 5  # 3 failures + status + import


def test_5xx_after_every_retry_is_a_clear_error(kibana: FakeKibana) -> None:
    kibana.fail_next = [503] * 10
    with (
        KibanaClient(kibana.url, api_key=API_KEY, retries=2, backoff_s=0.01) as client,
        pytest.raises(KibanaUnavailableError, match="HTTP 503 after retries"),
    ):
        client.status()
    assert len(kibana.requests) == 3


def test_connection_refused_is_retried_then_reported(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    key_file: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}"
    code = run("status", "--url", url, "--api-key-file", key_file, "--retries", "2")
    assert code == 1
    err = capsys.readouterr().err
    assert "Kibana unreachable after retries" in err and url in err
    assert API_KEY not in err and API_KEY not in caplog.text
    assert "Retrying" in caplog.text  # urllib3 did retry


# -- per-object results: missing references, conflicts, unsupported types -----------------


def test_missing_references_are_reported_per_object(kibana: FakeKibana) -> None:
    objects = [o for o in build_objects() if o["type"] != "index-pattern"]
    data = "".join(json.dumps(o) + "\n" for o in objects).encode()
    with KibanaClient(kibana.url, api_key=API_KEY) as client:
        report = client.import_ndjson(data)
    assert not report.success
    lens_errors = [r for r in report.errors if r.type == "lens"]
    assert lens_errors and all(r.outcome == "missing_references" for r in lens_errors)
    assert "index-pattern/thermowatch-dv-readings" in str(lens_errors[0])


def test_broken_objects_are_refused_before_any_request(
    kibana: FakeKibana,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    broken = tmp_path / "broken.ndjson"
    objects = [o for o in build_objects() if o["id"] != "thermowatch-dv-alerts"]
    broken.write_text("".join(json.dumps(o) + "\n" for o in objects))
    assert (
        run("import", "--url", kibana.url, "--api-key-file", key_file, "--file", str(broken)) == 1
    )
    err = capsys.readouterr().err
    assert "refusing to import broken saved objects" in err
    assert "index-pattern/thermowatch-dv-alerts is not in the set" in err
    assert kibana.requests == []


def test_conflict_and_unsupported_type_answers_are_explained() -> None:
    answer = {
        "success": False,
        "successCount": 0,
        "errors": [
            {
                "id": "a",
                "type": "dashboard",
                "title": "A",
                "meta": {"title": "A"},
                "error": {"type": "conflict"},
            },
            {
                "id": "b",
                "type": "widget",
                "title": "B",
                "meta": {"title": "B"},
                "error": {"type": "unsupported_type"},
            },
            {
                "id": "c",
                "type": "lens",
                "title": "C",
                "meta": {"title": "C"},
                "error": {"type": "unknown", "message": "boom", "statusCode": 500},
            },
        ],
    }
    report = ImportReport.from_answer(answer)
    assert [str(r) for r in report.errors] == [
        "dashboard/a (A): conflict: exists already (import without overwrite?)",
        "widget/b (B): unsupported_type: this Kibana does not know this type",
        "lens/c (C): unknown: boom",
    ]


def test_cli_reports_failed_objects(
    kibana: FakeKibana, capsys: pytest.CaptureFixture[str], key_file: str
) -> None:
    kibana.known_types = frozenset({"index-pattern", "lens"})  # a Kibana without dashboards
    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 1
    out, err = capsys.readouterr()
    assert out.count("FAILED") == 2 and "unsupported_type" in out
    assert "failed for 2 object(s) (unsupported_type)" in err


# -- the fake really enforces the documented API -----------------------------------------


def _post(kibana: FakeKibana, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"ApiKey {API_KEY}", **kwargs.pop("headers", {})}
    with requests.Session() as s:
        return s.post(
            f"{kibana.url}/api/saved_objects/_import", headers=headers, timeout=10, **kwargs
        )


def test_fake_enforces_xsrf_multipart_field_and_extension(kibana: FakeKibana) -> None:
    data = committed_file().read_bytes()
    assert _post(kibana, files={"file": ("x.ndjson", data)}).status_code == 400  # no kbn-xsrf
    xsrf = {"kbn-xsrf": "1"}
    assert _post(kibana, headers=xsrf, files={"upload": ("x.ndjson", data)}).status_code == 400
    assert _post(kibana, headers=xsrf, files={"file": ("x.json", data)}).status_code == 400
    assert _post(kibana, headers=xsrf, data=data).status_code == 400
    ok = _post(kibana, headers=xsrf, files={"file": ("x.ndjson", data)})
    assert ok.status_code == 200 and ok.json()["success"] is True
    # without overwrite a second import conflicts, as documented
    again = _post(kibana, headers=xsrf, files={"file": ("x.ndjson", data)}).json()
    assert again["success"] is False
    assert {e["error"]["type"] for e in again["errors"]} == {"conflict"}


# -- spaces, export, status ---------------------------------------------------------------


def test_space_is_addressed_by_path(
    kibana: FakeKibana, capsys: pytest.CaptureFixture[str], key_file: str
) -> None:
    assert run("import", "--url", kibana.url, "--api-key-file", key_file, "--space", "ops") == 0
    assert set(kibana.objects("ops")) == committed_ids() and kibana.objects() == {}
    assert run("import", "--url", kibana.url, "--api-key-file", key_file, "--space", "nope") == 1
    assert "does space 'nope' exist?" in capsys.readouterr().err


def test_export_returns_what_was_imported(
    kibana: FakeKibana,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    assert run("import", "--url", kibana.url, "--api-key-file", key_file) == 0
    out = tmp_path / "export.ndjson"
    assert run("export", "--url", kibana.url, "--api-key-file", key_file, "--out", str(out)) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    summary = lines.pop()
    assert summary["exportedCount"] == len(committed_ids()) and summary["missingRefCount"] == 0
    assert sorted(lines, key=lambda o: o["id"]) == sorted(build_objects(), key=lambda o: o["id"])


def test_status_prints_version_and_support(
    kibana: FakeKibana,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    assert run("status", "--url", kibana.url, "--api-key-file", key_file) == 0
    out = capsys.readouterr().out
    assert f"kibana {kibana.version}" in out and "status=available" in out
    assert "supported (minimum 8.9.0)" in out


def test_api_key_from_the_environment(kibana: FakeKibana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBANA_API_KEY", API_KEY)
    assert run("status", "--url", kibana.url) == 0


def test_target_repr_hides_secrets() -> None:
    from kibana.config import KibanaTarget

    t = KibanaTarget(url="http://k:5601", api_key=API_KEY, user=None, password=PASSWORD)
    assert API_KEY not in repr(t) and PASSWORD not in repr(t)


def test_check_version_raises_the_typed_error(kibana: FakeKibana) -> None:
    kibana.version = "8.8.0"
    with (
        KibanaClient(kibana.url, api_key=API_KEY) as client,
        pytest.raises(UnsupportedVersionError, match=r"Kibana 8\.8\.0 "),
    ):
        client.check_version()


def test_forbidden_is_reported_as_a_permission_problem(
    kibana: FakeKibana,
    capsys: pytest.CaptureFixture[str],
    key_file: str,
) -> None:
    kibana.fail_next = [403]
    assert run("status", "--url", kibana.url, "--api-key-file", key_file) == 1
    err = capsys.readouterr().err
    assert "permission denied (HTTP 403)" in err and API_KEY not in err
    assert len(kibana.requests) == 1  # 403 is not retried
