"""The Artemis nodes of the cluster profile without starting anything: where each
listens, where it keeps its journal, and the cluster connection its broker.xml
renders. The live cluster is proved in ``tests/chaos/test_chaos_artemis_cluster.py``."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from deploy.local.services.artemis import CLUSTER_USER, Artemis
from deploy.local.stack import LocalStack, StackError

NS = {"c": "urn:activemq:core"}
USERS = {"admin": "p", "gateway": "p", "s1-d01": "p"}
SITES = {"s1-d01": "s1"}


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT", "KAFKA", "SEARCH", "ELASTIC", "ARTEMIS"):
        monkeypatch.delenv(f"THERMOWATCH_{name}_PORT", raising=False)


def _nodes(stack: LocalStack) -> list[Artemis]:
    nodes = stack.nodes("artemis")
    assert all(isinstance(n, Artemis) for n in nodes)
    return [n for n in nodes if isinstance(n, Artemis)]


def _core(node: Artemis) -> ET.Element:
    core = ET.fromstring(node._config_text(USERS, SITES)).find("c:core", NS)
    assert core is not None
    return core


def _text(core: ET.Element, path: str) -> str:
    found = core.find(path, NS)
    assert found is not None, path
    return (found.text or "").strip()


def _by_name(core: ET.Element, path: str) -> dict[str, str]:
    return {e.get("name", ""): (e.text or "").strip() for e in core.findall(path, NS)}


def test_the_cluster_profile_runs_two_artemis_nodes_on_their_own_ports(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache", cluster=True)
    nodes = _nodes(stack)
    assert [n.node_name for n in nodes] == ["artemis-1", "artemis-2"]
    assert [(n.port, n.password_port, n.cluster_port) for n in nodes] == [
        (18883, 18884, 18885),
        (18893, 18894, 18895),
    ]
    assert [n.instance.name for n in nodes] == ["artemis-1", "artemis-2"]
    assert [n.process.pid_file.name for n in nodes] == ["artemis-1.pid", "artemis-2.pid"]
    every_port = [
        p
        for name in ("mosquitto", "kafka", "search", "artemis")
        for n in stack.nodes(name)
        for p in (n.port, n.port + 1, n.port + 2)
    ]
    assert len(set(every_port)) == len(every_port)
    assert [n["port"] for n in stack.status(["artemis"])["artemis"]["nodes"]] == [18883, 18893]


def test_each_node_renders_a_static_cluster_connection_to_the_others(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache", cluster=True)
    cores = [_core(n) for n in _nodes(stack)]
    for i, core in enumerate(cores, start=1):
        port = 18883 + 10 * (i - 1)
        assert _text(core, "c:name") == f"thermowatch-artemis-{i}"
        assert _text(core, "c:journal-directory").endswith(f"/data/artemis-{i}/data/journal")
        acceptors = _by_name(core, "c:acceptors/c:acceptor")
        assert acceptors["mqtt-certificates"].startswith(f"tcp://127.0.0.1:{port}?protocols=MQTT;")
        assert acceptors["mqtt-passwords"].startswith(f"tcp://127.0.0.1:{port + 1}?protocols=MQTT;")
        cluster = acceptors["cluster"]
        assert cluster.startswith(f"tcp://127.0.0.1:{port + 2}?protocols=CORE;sslEnabled=true;")
        connectors = _by_name(core, "c:connectors/c:connector")
        assert sorted(connectors) == ["node-1", "node-2"]
        for n, url in connectors.items():
            assert url.startswith(
                f"tcp://127.0.0.1:{18885 + 10 * (int(n[-1]) - 1)}?sslEnabled=true;"
            )
            assert "trustStoreType=PEMCA" in url
        cc = core.find("c:cluster-connections/c:cluster-connection", NS)
        assert cc is not None
        assert _text(cc, "c:connector-ref") == f"node-{i}"
        assert [e.text for e in cc.findall("c:static-connectors/c:connector-ref", NS)] == [
            f"node-{3 - i}"
        ]
        assert _text(cc, "c:message-load-balancing") == "ON_DEMAND"
        assert _text(cc, "c:address") == "thermowatch"
        assert _text(cc, "c:reconnect-attempts") == "-1"
        assert cc.find("c:discovery-group-ref", NS) is None  # no UDP discovery
        assert _text(core, "c:cluster-user") == CLUSTER_USER
        setting = core.find("c:address-settings/c:address-setting", NS)
        assert setting is not None and _text(setting, "c:redistribution-delay") == "5000"
    # One cluster password, made once, shared by the nodes, kept 0600.
    passwords = {_text(core, "c:cluster-password") for core in cores}
    secrets_file = stack.root / "artemis-cluster.json"
    assert len(passwords) == 1 and passwords.pop() in secrets_file.read_text(encoding="utf-8")
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_a_three_node_cluster_connects_each_node_to_the_two_others(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack", tmp_path / "cache", cluster=True, nodes={"artemis": 3})
    core = _core(_nodes(stack)[1])
    cc = core.find("c:cluster-connections/c:cluster-connection", NS)
    assert cc is not None
    others = [e.text for e in cc.findall("c:static-connectors/c:connector-ref", NS)]
    assert others == ["node-1", "node-3"]
    assert sorted(_by_name(core, "c:connectors/c:connector")) == ["node-1", "node-2", "node-3"]


@pytest.mark.parametrize("nodes", [None, {"artemis": 1}])
def test_a_single_node_renders_no_cluster(tmp_path: Path, nodes: dict[str, int] | None) -> None:
    stack = LocalStack(
        tmp_path / "stack", tmp_path / "cache", cluster=nodes is not None, nodes=nodes
    )
    (node,) = _nodes(stack)
    assert (node.node_name, node.port, node.instance.name) == ("artemis", 18883, "artemis")
    core = _core(node)
    assert _text(core, "c:name") == "thermowatch-artemis"
    assert sorted(_by_name(core, "c:acceptors/c:acceptor")) == [
        "mqtt-certificates",
        "mqtt-passwords",
    ]
    for absent in ("c:connectors", "c:cluster-connections", "c:cluster-user", "c:cluster-password"):
        assert core.find(absent, NS) is None, absent
    assert core.find("c:address-settings/c:address-setting/c:redistribution-delay", NS) is None
    assert not (stack.root / "artemis-cluster.json").exists()


def test_node_counts_override_the_profile_per_service(tmp_path: Path) -> None:
    stack = LocalStack(
        tmp_path / "stack", tmp_path / "cache", cluster=True, nodes={"kafka": 1, "search": 1}
    )
    assert [len(stack.nodes(n)) for n in ("kafka", "search", "artemis")] == [1, 1, 2]
    assert stack.node("kafka").node_name == "kafka" and stack.profile == "cluster"
    # Remembered like the profile: `stack status`/`down` later see the same nodes.
    stack.layout.root.mkdir(parents=True)
    stack._state.record(profile=stack.profile, nodes=stack.node_counts)
    again = LocalStack(stack.root, stack.cache)
    assert [len(again.nodes(n)) for n in ("kafka", "search", "artemis")] == [1, 1, 2]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({"mosquitto": 2}, "nodes: mosquitto does not cluster"),
        ({"rabbitmq": 2}, "nodes: unknown service 'rabbitmq'"),
        ({"artemis": 0}, "nodes: artemis must be a whole number of nodes >= 1, got 0"),
    ],
)
def test_bad_node_counts_name_the_service(
    tmp_path: Path, nodes: dict[str, int], message: str
) -> None:
    with pytest.raises(StackError, match=message):
        LocalStack(tmp_path / "stack", tmp_path / "cache", cluster=True, nodes=nodes)
