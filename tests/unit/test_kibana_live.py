"""``kibana check --search-url``: the live mapping is read through stagekit.search.

A stdlib HTTP server stands in for the search server: it answers
``GET <pattern>/_mapping`` with the mappings the processor installs and
records the requests, so the test sees the credentials arrive the way every
stage sends them (from SearchSettings, not from a client of kibana's own).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kibana.app import live_check
from kibana.config import search_settings
from kibana.objects import build_objects, to_ndjson
from stagekit.search.indices import IndexNames, index_templates
from thermowatch.cli import main

PREFIX = "thermowatch-"


class FakeSearch(ThreadingHTTPServer):
    """Answers ``GET /<pattern>/_mapping`` from the processor's index templates."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str | None]] = []
        self.mappings = {
            body["index_patterns"][0]: body["template"]["mappings"]
            for body in index_templates(IndexNames(PREFIX)).values()
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeSearch

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization")))
        pattern = self.path.split("?", 1)[0].strip("/").removesuffix("/_mapping")
        mapping = self.server.mappings.get(pattern)
        body = json.dumps({} if mapping is None else {f"{pattern}-1": {"mappings": mapping}})
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def search() -> Iterator[FakeSearch]:
    server = FakeSearch()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_live_check_sends_the_settings_credentials(search: FakeSearch) -> None:
    settings = search_settings(search.url, {"SEARCH_PASSWORD": "pw"}, user="kibana-check")
    assert live_check(to_ndjson(build_objects(PREFIX)), settings) == []
    expected = "Basic " + base64.b64encode(b"kibana-check:pw").decode()
    assert search.requests and all(auth == expected for _, auth in search.requests)
    paths = sorted(path.split("?")[0] for path, _ in search.requests)
    assert paths == sorted(f"/{pattern}/_mapping" for pattern in search.mappings)


def test_check_command_with_a_search_user(
    search: FakeSearch, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEARCH_PASSWORD", "pw")
    argv = ["kibana", "check", "--search-url", search.url, "--search-user", "kibana-check"]
    assert main(argv) == 0
    assert "thermowatch.ndjson: ok" in capsys.readouterr().out
    assert all(auth and auth.startswith("Basic ") for _, auth in search.requests)


def test_a_missing_index_is_reported(search: FakeSearch) -> None:
    search.mappings.pop(f"{PREFIX}alerts")
    problems = [str(p) for p in live_check(to_ndjson(build_objects(PREFIX)), search.url)]
    assert f"{PREFIX}alerts: no index matches this data view yet" in problems


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--search-url", "search:9200"], "search.url: must start with http"),
        (["--search-url", "http://127.0.0.1:9", "--search-user", "u"], "set SEARCH_PASSWORD"),
        (
            ["--search-url", "https://127.0.0.1:9", "--search-ca-file", "/nonexistent/ca.pem"],
            "search.ca_file: no such file",
        ),
    ],
)
def test_search_server_errors_are_clear(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEARCH_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["kibana", "check", *argv]) == 1
    assert message in capsys.readouterr().err
