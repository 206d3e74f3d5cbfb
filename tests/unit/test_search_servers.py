"""Several search servers: ``search.urls`` is checked key by key, shown masked, and
both clients move a request on to the next node when one is down (no cluster:
a dead port and a small local HTTP server answering like a node)."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

from cloud_processor.config import ProcessorConfig
from stagekit.config import ConfigError, dump_toml, loads
from stagekit.search import api as search
from stagekit.search.api import SearchError
from stagekit.search.backends import make_backend
from stagekit.search.settings import SearchSettings
from thermowatch.web.config import WebConfig

A, B, C = "https://n1:9200", "https://n2:9200", "https://n3:9200"


@pytest.mark.parametrize(
    ("urls", "url", "problem"),
    [
        ((A, B, C), None, None),
        ((A, B), A, None),  # the stack's cluster endpoint: url = the first node
        ((A,), None, None),
        ((A, "n2:9200"), None, "search.urls[1]: must start with http:// or https://"),
        ((A, B, "http://n3:9200"), None, "search.urls[2]: must use https:// like search.urls[0]"),
        (("ftp://x", A, "http://n3:1"), None, "urls[2]: must use https:// like search.urls[1]"),
        ((A, "https://bad host:1"), None, "search.urls[1]: not a host name or IP address"),
        ((A, "https://n2:0"), None, "search.urls[1]: port must be in 1..65535"),
        ((A, B, A), None, "search.urls[2]: repeats search.urls[0]"),
        ((A, B), C, "search.url: must be one of search.urls or left out (urls wins)"),
    ],
)
def test_urls_are_checked_naming_the_key_and_the_index(
    urls: tuple[str, ...], url: str | None, problem: str | None
) -> None:
    block = {"urls": list(urls), **({"url": url} if url else {})}
    for cls in (ProcessorConfig, WebConfig):
        text = "[search]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in block.items())
        if problem is None:
            assert loads(cls, text).search.servers == urls
            continue
        with pytest.raises(ConfigError) as err:
            loads(cls, text)
        assert problem in str(err.value)


def test_one_url_is_unchanged() -> None:
    s = SearchSettings(url="http://h:1")
    assert s.servers == ("http://h:1",) and s.problems() == []
    assert s.insecure()[0].startswith("plain http")


def test_the_scheme_of_the_urls_decides_what_is_insecure() -> None:
    login = {"username": "u", "password": "p"}
    assert SearchSettings(url="http://h:1", urls=(A, B), **login).insecure() == []
    plain = SearchSettings(urls=("http://n1:1", "http://n2:1"), **login)
    assert plain.insecure() == ["plain http (readings and credentials travel in clear)"]


def test_a_cluster_endpoint_gives_every_node() -> None:
    ep = {"url": A, "urls": [A, B, C], "users": {"web": "pw"}}
    s = SearchSettings.from_endpoint(ep, "web")
    assert s.servers == (A, B, C) and s.url == A and s.problems() == []
    assert SearchSettings.from_endpoint({"url": A}).urls == ()


def test_every_url_is_shown_and_masked() -> None:
    s = SearchSettings(urls=("https://u:s3cret@n1:9200", B))
    assert s.shown() == "https://********@n1:9200,https://n2:9200"
    cfg = loads(
        ProcessorConfig, '[search]\nurls = ["https://u:s3cret@n1:9200", "https://n2:9200"]\n'
    )
    shown = dump_toml(cfg)
    assert "s3cret" not in shown and "https://n2:9200" in shown


def test_the_demo_gives_the_processor_and_the_web_view_every_node(tmp_path: Any) -> None:
    import msgspec

    from thermowatch.demo import DemoRun, demo_sites, processor_config
    from thermowatch.demo.configs import web_config

    run = DemoRun(run_id="r1", run_dir=tmp_path, w1_dir=tmp_path, sites=demo_sites(), duration_s=10)
    one = "http://127.0.0.1:3"
    nodes = [one, "http://127.0.0.1:4", "http://127.0.0.1:5"]
    single = {"kafka": {"bootstrap": "127.0.0.1:2"}, "search": {"url": one}}
    cluster = {**single, "search": {"url": one, "urls": nodes}}
    assert "urls" not in processor_config(run, single)["search"]
    pr = msgspec.convert(processor_config(run, cluster), ProcessorConfig)
    web = msgspec.convert(web_config(run, cluster), WebConfig)
    assert list(pr.search.servers) == list(web.search.servers) == nodes
    assert pr.validate() == [] and web.validate() == []


# --- failover: one node down -------------------------------------------------


class _Node(BaseHTTPRequestHandler):
    """Answers ``GET /`` like a search node (both clients accept the answer)."""

    def do_GET(self) -> None:
        name = f"node-{self.server.server_address[1]}"
        body = json.dumps(
            {"name": name, "version": {"distribution": "opensearch", "number": "2.19.0"}}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-elastic-product", "Elasticsearch")  # elasticsearch-py checks it
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _name(url: str) -> str:
    """The name the node at ``url`` gives in its answer."""
    return f"node-{url.rsplit(':', 1)[1]}"


@pytest.fixture
def live_node() -> Iterator[str]:
    with _serving() as url:
        yield url


def _dead_nodes(count: int) -> list[str]:
    """Ports nobody listens on (bound together, so distinct): connections are refused."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"http://127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def hung_node() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def nodes_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both pools shuffle their nodes and pick one at random; keep them in order and
    pick the first live one, so that the node down is tried first."""

    def keep_order(items: list[Any]) -> None:
        pass

    def first(items: Sequence[Any]) -> Any:
        return items[0]

    monkeypatch.setattr(random, "shuffle", keep_order)
    monkeypatch.setattr(random, "choice", first)


Backend = Literal["opensearch", "elasticsearch"]
BACKENDS = ["opensearch", "elasticsearch"]


@pytest.mark.usefixtures("nodes_in_order")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("down", [1, 2])
def test_a_request_goes_on_to_the_next_node_when_one_is_down(
    backend: Backend, down: int, live_node: str
) -> None:
    """The first node (or two) refuse connections: requests are answered all the same."""
    urls = (*_dead_nodes(down), live_node)
    client = make_backend(SearchSettings(backend=backend, urls=urls, timeout_s=5))
    try:
        for _ in range(3):
            assert client.perform_sync(search.info())["name"] == _name(live_node)
    finally:
        client.close_sync()


@pytest.mark.usefixtures("nodes_in_order")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_node_that_does_not_answer_in_time_is_passed_over(
    backend: Backend, hung_node: str, live_node: str
) -> None:
    settings = SearchSettings(backend=backend, urls=(hung_node, live_node), timeout_s=0.5)
    client = make_backend(settings)
    try:
        assert client.perform_sync(search.info())["name"] == _name(live_node)
    finally:
        client.close_sync()


@pytest.mark.usefixtures("nodes_in_order")
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_node_down_alone_is_an_error_for_the_caller(backend: Backend) -> None:
    """A dead port is dead: with it alone, the caller gets a retriable error."""
    (dead,) = _dead_nodes(1)
    client = make_backend(SearchSettings(backend=backend, url=dead, timeout_s=5))
    try:
        with pytest.raises(SearchError) as err:
            client.perform_sync(search.info())
        assert err.value.retriable
    finally:
        client.close_sync()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_requests_are_spread_over_the_nodes(backend: Backend) -> None:
    """Each request runs in a thread of its own: a per-thread round robin would send
    them all to one node."""
    with _serving() as one, _serving() as two:
        client = make_backend(SearchSettings(backend=backend, urls=(one, two), timeout_s=5))
        try:
            answers = [await client.perform(search.info()) for _ in range(20)]
        finally:
            await client.close()
    assert {a["name"] for a in answers} == {_name(one), _name(two)}
