"""The cluster profile of the local stack without starting anything: which nodes it
has, where they listen, what each renders, what ``status --json`` and ``endpoints()``
say, and that the two profiles never run at once. The live cluster is proved in
``tests/chaos/test_chaos_cluster.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.services.kafka import Kafka
from deploy.local.services.opensearch import OpenSearch
from deploy.local.stack import LocalStack, StackError
from stagekit.kafka import settings_for


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT", "KAFKA", "SEARCH", "ELASTIC", "ARTEMIS"):
        monkeypatch.delenv(f"THERMOWATCH_{name}_PORT", raising=False)


def _cluster(tmp_path: Path) -> LocalStack:
    return LocalStack(tmp_path / "stack", tmp_path / "cache", cluster=True)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_cluster_nodes_ports_and_files_are_their_own(tmp_path: Path) -> None:
    stack = _cluster(tmp_path)
    kafka, search = stack.nodes("kafka"), stack.nodes("search")
    assert [n.port for n in kafka] == [19092, 19102, 19112]
    assert [n.port for n in search] == [19200, 19210, 19220]
    assert [n.transport_port for n in search if isinstance(n, OpenSearch)] == [
        19300, 19310, 19320
    ]  # fmt: skip
    assert [n.process.pid_file.name for n in kafka] == ["kafka-1.pid", "kafka-2.pid", "kafka-3.pid"]
    assert [n.process.log_file.name for n in search] == [
        "search-1.log",
        "search-2.log",
        "search-3.log",
    ]
    # MQTT does not cluster (Mosquitto): one node in either profile.
    assert len(stack.nodes("mosquitto")) == 1
    every_port = [
        p for name in ("kafka", "search") for n in stack.nodes(name) for p in (n.port, n.port + 1)
    ]
    assert len(set(every_port)) == len(every_port)
    with pytest.raises(StackError, match="kafka: no node 4 in the cluster profile"):
        stack.node("kafka", 4)
    single = LocalStack(tmp_path / "one", tmp_path / "cache")
    assert single.profile == "single" and len(single.nodes("kafka")) == 1
    assert single.node("kafka").process.pid_file.name == "kafka.pid"
    with pytest.raises(StackError, match="no node 2 in the single profile"):
        single.node("kafka", 2)


def test_status_json_lists_every_node(tmp_path: Path) -> None:
    status = _cluster(tmp_path).status()
    assert status["kafka"]["nodes"] == [
        {"id": 1, "host": "127.0.0.1", "port": 19092, "pid": None},
        {"id": 2, "host": "127.0.0.1", "port": 19102, "pid": None},
        {"id": 3, "host": "127.0.0.1", "port": 19112, "pid": None},
    ]
    assert [n["port"] for n in status["search"]["nodes"]] == [19200, 19210, 19220]
    assert "nodes" not in status["mosquitto"]
    assert status["kafka"]["bootstrap"] == "127.0.0.1:19092,127.0.0.1:19102,127.0.0.1:19112"
    json.dumps(status)  # the shape of `status --json`
    assert "nodes" not in LocalStack(tmp_path / "one", tmp_path / "cache").status()["kafka"]


def test_cluster_endpoints_give_clients_every_node(tmp_path: Path) -> None:
    ep = _cluster(tmp_path).endpoints()
    assert ep["kafka"]["replication_factor"] == 3
    assert settings_for(ep["kafka"], "gateway").servers == (
        "127.0.0.1:19092", "127.0.0.1:19102", "127.0.0.1:19112"
    )  # fmt: skip
    assert ep["search"]["urls"] == [
        "https://127.0.0.1:19200", "https://127.0.0.1:19210", "https://127.0.0.1:19220"
    ]  # fmt: skip
    assert ep["search"]["url"] == "https://127.0.0.1:19200"
    assert ep["search"]["replicas"] == 1
    single = LocalStack(tmp_path / "one", tmp_path / "cache").endpoints()
    assert "replication_factor" not in single["kafka"] and "urls" not in single["search"]


def test_each_kafka_node_renders_the_static_quorum_and_three_replicas(tmp_path: Path) -> None:
    stack = _cluster(tmp_path)
    rendered = []
    for node in stack.nodes("kafka"):
        assert isinstance(node, Kafka)
        rendered.append(_props(node._props_text()))
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19103,3@127.0.0.1:19113"
    for i, props in enumerate(rendered, start=1):
        assert props["node.id"] == str(i)
        assert props["controller.quorum.voters"] == voters
        assert "controller.quorum.bootstrap.servers" not in props
        assert props["listeners"].startswith(f"CLIENT://127.0.0.1:{19092 + 10 * (i - 1)},")
        assert props["log.dirs"].endswith(f"/data/kafka-{i}")
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
    single = LocalStack(tmp_path / "one", tmp_path / "cache").service("kafka")
    assert isinstance(single, Kafka)
    props = _props(single._props_text())
    assert props["node.id"] == "1" and props["min.insync.replicas"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"


def test_each_search_node_finds_the_others_over_tls_transport(tmp_path: Path) -> None:
    nodes = _cluster(tmp_path).nodes("search")
    settings = []
    for node in nodes:
        assert isinstance(node, OpenSearch)
        settings.append(node._settings())
    names = "thermowatch-search-1,thermowatch-search-2,thermowatch-search-3"
    for i, s in enumerate(settings, start=1):
        assert s["node.name"] == f"thermowatch-search-{i}"
        assert s["discovery.seed_hosts"] == "127.0.0.1:19300,127.0.0.1:19310,127.0.0.1:19320"
        assert s["cluster.initial_cluster_manager_nodes"] == names
        assert "discovery.type" not in s
        assert s["http.port"] == 19200 + 10 * (i - 1)
        assert s["transport.port"] == 19300 + 10 * (i - 1)
        assert s["plugins.security.ssl.transport.pemcert_filepath"].endswith("node.pem")
    single = LocalStack(tmp_path / "one", tmp_path / "cache").service("search")
    assert isinstance(single, OpenSearch)
    assert single._settings()["discovery.type"] == "single-node"


@pytest.fixture
def fake_kafka_process(tmp_path: Path) -> Iterator[LocalStack]:
    """A single-node stack whose Kafka "runs": a sleeping process whose command line
    carries Kafka's marker, under the single node's pid file."""
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka"])
    try:
        stack.run_dir.mkdir(parents=True)
        stack.node("kafka").process.pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
        assert stack.service_pid("kafka") == proc.pid
        yield stack
    finally:
        proc.kill()
        proc.wait()


def test_the_cluster_profile_is_refused_while_the_single_node_runs(
    fake_kafka_process: LocalStack,
) -> None:
    stack = fake_kafka_process
    cluster = LocalStack(stack.root, stack.cache, cluster=True)
    with pytest.raises(StackError, match=r"runs the single profile \(kafka\).*stack down"):
        cluster.up(["kafka"])
    assert cluster.service_pid("kafka") is None  # nothing of the cluster was started


def test_the_profile_is_remembered_until_a_full_down(tmp_path: Path) -> None:
    stack = _cluster(tmp_path)
    stack.layout.root.mkdir(parents=True)
    stack._state.record(profile="cluster")
    assert LocalStack(stack.root, stack.cache).cluster  # status, down, kill: the same nodes
    stack.down(["search"])
    assert LocalStack(stack.root, stack.cache).cluster
    stack.down()
    assert not LocalStack(stack.root, stack.cache).cluster
