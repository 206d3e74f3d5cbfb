"""Retention policies: pure bodies, and the processor installing them on a cluster.

The cluster is an in-memory model of the ISM and ILM REST APIs the processor
uses, with the semantics that matter here: ISM refuses a plain ``PUT`` over an
existing policy (409) and an update naming a stale ``_seq_no``; its
``ism_template`` manages a new matching index; ``add`` leaves managed indices
alone; ``change_policy`` moves them to the current version. ILM's ``PUT``
replaces; templates and ``_settings`` name the policy of an index.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
from collections.abc import Callable
from typing import Any

import pytest

from cloud_processor.config import ProcessorConfig
from cloud_processor.storage import Storage
from deploy.local.search_users import (
    ISM_CLUSTER_ACTIONS,
    ISM_INDEX_ACTION,
    MONTHLY_PATTERNS,
    ROLES,
)
from stagekit.config import loads
from stagekit.search.api import Request, SearchError
from stagekit.search.indices import IndexNames, index_templates
from stagekit.search.lifecycle import (
    MONTH_SLACK_DAYS,
    delete_after_days,
    ilm_policy,
    ism_policy,
    managed_patterns,
    policy_marker,
)

NAMES = IndexNames("x-")
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB = JAN + 31 * 86_400_000


def _matches(index: str, patterns: str | list[str]) -> bool:
    items = patterns.split(",") if isinstance(patterns, str) else patterns
    return any(fnmatch.fnmatchcase(index, p) for p in items)


class Cluster:
    """A search cluster with ISM (``flavour="opensearch"``) or ILM (``"elasticsearch"``)."""

    def __init__(self, flavour: str, *, data_nodes: int = 1) -> None:
        self.name = flavour
        self.data_nodes = data_nodes
        self.requests: list[Request] = []
        self.templates: dict[str, Any] = {}
        #: index -> settings (ILM: index.lifecycle.name)
        self.indices: dict[str, dict[str, Any]] = {}
        #: ISM: name -> (body, seq_no); managed index -> (policy, seq_no of its version)
        self.ism: dict[str, tuple[dict[str, Any], int]] = {}
        self.managed: dict[str, tuple[str, int]] = {}
        self.seq = 0
        #: ILM: name -> (body, version)
        self.ilm: dict[str, tuple[dict[str, Any], int]] = {}
        #: Before the next ISM PUT, another processor writes this body (a race).
        self.race: dict[str, Any] | None = None
        #: Requests refused with an error: a missing plugin, a missing permission.
        self.refuse: list[tuple[Callable[[Request], bool], SearchError]] = []

    def puts(self, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.method == "PUT" and r.path.startswith(prefix)]

    async def perform(self, r: Request) -> Any:
        self.requests.append(r)
        for when, error in self.refuse:
            if when(r):
                raise error
        parts = r.path.strip("/").split("/")
        if r.path == "/_cluster/health":
            return {"status": "green", "number_of_data_nodes": self.data_nodes}
        if r.path.startswith("/_plugins/_ism"):
            if self.name != "opensearch":
                raise SearchError("no handler", status=400)
            return self._ism(r, parts[2:])
        if r.path.startswith("/_ilm"):
            if self.name != "elasticsearch":
                raise SearchError("no handler", status=400)
            return self._ilm(r, parts[1:])
        if parts[0] == "_index_template" and r.method == "PUT":
            self.templates[parts[1]] = r.body
        elif len(parts) == 1 and r.method == "PUT" and not parts[0].startswith("_"):
            self._create(parts[0])
        elif len(parts) == 2 and parts[1] == "_settings":
            for index in self.indices:
                if _matches(index, parts[0]):
                    self.indices[index].update(r.body)  # type: ignore[arg-type]
        return {}

    def _create(self, index: str) -> None:
        if index in self.indices:
            raise SearchError(
                "exists", status=400, body={"error": {"type": "resource_already_exists_exception"}}
            )
        settings: dict[str, Any] = {}
        for t in self.templates.values():
            if _matches(index, t["index_patterns"]):
                settings = dict(t["template"]["settings"])
        self.indices[index] = settings
        for name, (body, seq) in self.ism.items():
            for tmpl in body["policy"].get("ism_template", []):
                if _matches(index, tmpl["index_patterns"]):
                    self.managed[index] = (name, seq)

    def _ism(self, r: Request, parts: list[str]) -> Any:
        kind, target = parts[0], parts[1] if len(parts) > 1 else ""
        if kind == "policies" and not target:
            return {"policies": [], "total_policies": len(self.ism)}
        if kind == "policies" and r.method == "GET":
            if target not in self.ism:
                raise SearchError("not found", status=404)
            body, seq = self.ism[target]
            return {"_id": target, "_seq_no": seq, "_primary_term": 1, **copy.deepcopy(body)}
        if kind == "policies" and r.method == "PUT":
            if self.race is not None:
                self.seq += 1
                self.ism[target] = (self.race, self.seq)
                self.race = None
            if target in self.ism and r.params.get("if_seq_no") != str(self.ism[target][1]):
                raise SearchError("version conflict", status=409)
            self.seq += 1
            self.ism[target] = (copy.deepcopy(r.body), self.seq)  # type: ignore[arg-type]
            return {"_id": target, "_seq_no": self.seq}
        policy = r.body["policy_id"] if isinstance(r.body, dict) else ""
        matching = [i for i in self.indices if _matches(i, target)]
        if kind == "add":
            failed = [i for i in matching if i in self.managed]
            for i in matching:
                self.managed.setdefault(i, (policy, self.ism[policy][1]))
            return {
                "updated_indices": len(matching) - len(failed),
                "failures": bool(failed),
                "failed_indices": [
                    {"index_name": i, "reason": "This index already has a policy"} for i in failed
                ],
            }
        if kind == "change_policy":
            changed = [i for i in matching if i in self.managed]
            for i in changed:
                self.managed[i] = (policy, self.ism[policy][1])
            return {"updated_indices": len(changed), "failures": False, "failed_indices": []}
        if kind == "explain":
            name, _ = self.managed.get(target, (None, 0))
            return {target: {"index.plugins.index_state_management.policy_id": name}}
        raise AssertionError(r)

    def _ilm(self, r: Request, parts: list[str]) -> Any:
        if parts[0] == "status":
            return {"operation_mode": "RUNNING"}
        name = parts[1]
        if r.method == "GET":
            if name not in self.ilm:
                raise SearchError("not found", status=404)
            body, version = self.ilm[name]
            return {name: {"version": version, **copy.deepcopy(body)}}
        version = self.ilm.get(name, ({}, 0))[1] + 1
        self.ilm[name] = (copy.deepcopy(r.body), version)  # type: ignore[arg-type]
        return {"acknowledged": True}

    async def close(self) -> None:
        pass


async def start(cluster: Cluster, retention_days: int = 400, **kw: Any) -> Storage:
    storage = Storage(cluster, NAMES, retention_days=retention_days, retry_initial_s=0.001, **kw)
    await storage.ensure_schema(now_ms=JAN)
    return storage


# -- pure bodies ------------------------------------------------------------


def test_delete_phase_is_retention_plus_one_month_from_creation() -> None:
    assert delete_after_days(90) == 90 + MONTH_SLACK_DAYS
    ilm = ilm_policy(90)["policy"]["phases"]["delete"]
    assert ilm == {"min_age": "121d", "actions": {"delete": {}}}
    states = ism_policy(NAMES, 90)["policy"]["states"]
    assert states[0]["transitions"][0]["conditions"] == {"min_index_age": "121d"}
    assert states[1]["actions"] == [{"delete": {}}]


def test_ism_template_covers_the_monthly_indices_only() -> None:
    (tmpl,) = ism_policy(NAMES, 90)["policy"]["ism_template"]
    assert tmpl["index_patterns"] == ["x-readings-*", "x-agg1m-*"]
    assert not _matches("x-alerts", tmpl["index_patterns"])
    assert not _matches("x-incidents", tmpl["index_patterns"])


@pytest.mark.parametrize("bad", [-1, 36_501, True, 1.5])
def test_bad_retention_is_refused_naming_the_key(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^search\.retention_days: "):
        ism_policy(NAMES, bad)
    with pytest.raises(ValueError, match=r"^search\.retention_days: "):
        ilm_policy(bad)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("retention_days", "-1", "must be at least 0"),
        ("retention_days", "40000", "must be at most 36500"),
        ("shards", "0", "must be at least 1"),
        ("replicas", "-1", "must be at least 0"),
    ],
)
def test_config_refuses_bad_lifecycle_and_shard_values_naming_the_key(
    key: str, value: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=rf"^search\.{key}: {problem}, got {value}$"):
        loads(ProcessorConfig, f"[search]\n{key} = {value}\n")


def test_marker_changes_with_retention_only() -> None:
    assert policy_marker(400) == policy_marker(400)
    assert policy_marker(400) != policy_marker(401)


def test_shards_and_replicas_reach_every_template() -> None:
    templates = index_templates(NAMES, shards=3, replicas=1)
    assert sorted(templates) == ["x-agg1m", "x-alerts", "x-incidents", "x-readings"]
    for body in templates.values():
        settings = body["template"]["settings"]
        assert (settings["number_of_shards"], settings["number_of_replicas"]) == (3, 1)


def test_processor_role_may_install_ism_policies_and_delete_monthly_indices_only() -> None:
    writer = ROLES["thermowatch_writer"]
    assert set(ISM_CLUSTER_ACTIONS) <= set(writer["cluster_permissions"])
    own, monthly = writer["index_permissions"]
    assert ISM_INDEX_ACTION in own["allowed_actions"]
    # ISM's delete step runs as the policy's user: the processor.
    assert monthly == {
        "index_patterns": MONTHLY_PATTERNS,
        "allowed_actions": ["indices:admin/delete"],
    }
    assert set(managed_patterns(IndexNames("thermowatch-"))) <= set(MONTHLY_PATTERNS)
    for single in ("thermowatch-alerts", "thermowatch-incidents", "demo-x-alerts"):
        assert not _matches(single, MONTHLY_PATTERNS)
    reader = ROLES["thermowatch_reader"]
    assert not set(ISM_CLUSTER_ACTIONS) & set(reader["cluster_permissions"])
    assert len(reader["index_permissions"]) == 1


# -- OpenSearch ISM -----------------------------------------------------------


async def test_ism_policy_installed_and_manages_the_new_monthly_indices() -> None:
    cluster = Cluster("opensearch")
    storage = await start(cluster)
    assert (storage.lifecycle, storage.policy) == ("ism", "x-retention")
    body, _ = cluster.ism["x-retention"]
    assert body == ism_policy(NAMES, 400)
    assert cluster.managed == {
        "x-readings-2026.01": ("x-retention", 1),
        "x-agg1m-2026.01": ("x-retention", 1),
    }
    # ISM names its indices itself: the templates carry no lifecycle setting.
    assert all(
        "index.lifecycle.name" not in t["template"]["settings"] for t in cluster.templates.values()
    )
    assert not any(r.path.startswith("/_ilm") for r in cluster.requests)


async def test_ism_same_retention_again_writes_nothing() -> None:
    cluster = Cluster("opensearch")
    await start(cluster)
    before = len(cluster.puts("/_plugins/_ism/policies"))
    await start(cluster)
    assert len(cluster.puts("/_plugins/_ism/policies")) == before == 1
    assert cluster.ism["x-retention"][1] == 1


async def test_ism_changed_retention_updates_the_policy_and_its_indices() -> None:
    cluster = Cluster("opensearch")
    await start(cluster, 400)
    await start(cluster, 30)
    body, seq = cluster.ism["x-retention"]
    assert body == ism_policy(NAMES, 30)
    update = cluster.puts("/_plugins/_ism/policies")[-1]
    assert update.params == {"if_seq_no": "1", "if_primary_term": "1"}
    assert cluster.managed["x-readings-2026.01"] == ("x-retention", seq)
    assert cluster.managed["x-agg1m-2026.01"] == ("x-retention", seq)


async def test_ism_attaches_indices_that_existed_before_the_policy() -> None:
    cluster = Cluster("opensearch")
    cluster.indices = {"x-readings-2025.06": {}, "x-agg1m-2025.06": {}, "x-alerts": {}}
    await start(cluster)
    assert cluster.managed["x-readings-2025.06"] == ("x-retention", 1)
    assert cluster.managed["x-agg1m-2025.06"] == ("x-retention", 1)
    assert "x-alerts" not in cluster.managed


async def test_ism_update_racing_another_processor_reads_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster("opensearch")
    await start(cluster, 400)
    cluster.race = ism_policy(NAMES, 200)  # another processor, older config, writes first
    with caplog.at_level(logging.INFO, logger="cloud_processor.lifecycle"):
        await start(cluster, 30)
    assert cluster.ism["x-retention"][0] == ism_policy(NAMES, 30)
    assert "was=" + policy_marker(200) in caplog.text


async def test_retention_zero_keeps_managed_indices_for_ever() -> None:
    cluster = Cluster("opensearch")
    await start(cluster, 400)
    await start(cluster, 0)
    body, seq = cluster.ism["x-retention"]
    assert [s["name"] for s in body["policy"]["states"]] == ["hot"]
    assert cluster.managed["x-readings-2026.01"] == ("x-retention", seq)


# -- Elasticsearch ILM --------------------------------------------------------


async def test_ilm_policy_named_by_templates_and_existing_indices() -> None:
    cluster = Cluster("elasticsearch")
    cluster.indices = {"x-readings-2025.06": {}, "x-alerts": {}}
    storage = await start(cluster)
    assert (storage.lifecycle, storage.policy) == ("ilm", "x-retention")
    assert cluster.ilm["x-retention"][0] == ilm_policy(400)
    assert cluster.indices["x-readings-2025.06"]["index.lifecycle.name"] == "x-retention"
    assert cluster.indices["x-readings-2026.01"]["index.lifecycle.name"] == "x-retention"
    assert cluster.indices["x-agg1m-2026.01"]["index.lifecycle.name"] == "x-retention"
    assert "index.lifecycle.name" not in cluster.indices["x-alerts"]
    assert not any(r.path.startswith("/_plugins") for r in cluster.requests)


async def test_ilm_policy_written_once_per_retention() -> None:
    cluster = Cluster("elasticsearch")
    await start(cluster, 400)
    await start(cluster, 400)
    assert cluster.ilm["x-retention"][1] == 1
    await start(cluster, 30)
    assert cluster.ilm["x-retention"] == (ilm_policy(30), 2)


# -- neither, and replicas ----------------------------------------------------


def _lifecycle_api(r: Request) -> bool:
    return r.path.startswith(("/_ilm", "/_plugins"))


@pytest.mark.parametrize(
    ("flavour", "status", "asked"),
    [("opensearch", 400, ["/_plugins/_ism/policies"]), ("elasticsearch", 405, ["/_ilm/status"])],
)
async def test_a_cluster_without_its_lifecycle_plugin_gets_no_policy(
    flavour: str, status: int, asked: list[str]
) -> None:
    """OpenSearch without the ISM plugin answers 400 (no handler), the Elasticsearch
    test distribution 405; each flavour is asked for its own engine only."""
    cluster = Cluster(flavour)
    cluster.refuse = [(_lifecycle_api, SearchError("no handler", status=status))]
    storage = await start(cluster)
    assert (storage.lifecycle, storage.policy) == ("none", None)
    assert [r.path for r in cluster.requests if _lifecycle_api(r)] == asked


async def test_forbidden_probe_is_a_warning_naming_the_permission(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster("opensearch")
    cluster.refuse = [(_lifecycle_api, SearchError("no permissions", status=403))]
    with caplog.at_level(logging.WARNING):
        storage = await start(cluster)
    assert storage.lifecycle == "none"
    assert "event=lifecycle_forbidden lifecycle=ism status=403" in caplog.text


async def test_a_refused_policy_write_is_a_warning_and_the_processor_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster("opensearch")

    refused = SearchError("no permissions for [ism/policy/write]", status=403)
    cluster.refuse = [(lambda r: r.method == "PUT" and "_ism/policies/" in r.path, refused)]
    with caplog.at_level(logging.WARNING):
        storage = await start(cluster)
    assert (storage.lifecycle, storage.policy) == ("none", None)
    assert "event=lifecycle_forbidden lifecycle=ism status=403" in caplog.text
    assert "x-readings-2026.01" in cluster.indices  # the schema is there all the same


@pytest.mark.parametrize(
    ("replicas", "nodes", "warned"), [(0, 1, False), (1, 1, True), (1, 2, False)]
)
async def test_replicas_that_cannot_be_placed_are_a_warning(
    caplog: pytest.LogCaptureFixture, replicas: int, nodes: int, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="cloud_processor.storage"):
        await start(Cluster("opensearch", data_nodes=nodes), replicas=replicas)
    assert ("event=replicas_unassignable detail=search.replicas:" in caplog.text) == warned


async def test_manual_retention_tool_deletes_nothing_when_data_is_kept_for_ever(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cloud_processor.__main__ import _retention

    cfg = loads(ProcessorConfig, "[search]\nretention_days = 0\nurl = 'https://127.0.0.1:1'\n")
    assert await _retention(cfg) == 0  # no server is asked: port 1 would refuse
    assert "nothing deleted" in capsys.readouterr().out
