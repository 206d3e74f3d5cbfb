"""The configs the demo gives its gateway and processor (plain data, written as TOML).

Each is a function of the run and the stack's endpoints, so a test can parse
them with the stages' own config types without starting anything; the chaos
tests and benchmarks adjust them with :func:`merge_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.local.pki import client_tls
from stagekit.kafka import connection_keys
from thermowatch.demo.run import DemoRun

__all__ = ["gateway_config", "merge_config", "processor_config", "web_config", "write_toml"]


def gateway_config(run: DemoRun, endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """The run's gateway: one member, a plain subscription, the run's topic prefix."""
    m = endpoints["mosquitto"]
    # A service logs in with its password on the broker's TLS password port (its
    # client id is then gateway:<id>); devices use their certificates.
    login = client_tls(m, "gateway")
    return {
        "gateway": {"id": f"demo-{run.run_id}", "shutdown_grace_s": 10.0},
        "mqtt": {
            "host": m["host"],
            "port": login.port,
            "username": login.username,
            "password": login.password,
            "tls": login.tls_block(),
            # One gateway: a plain subscription, the only kind Mosquitto 2.0.11
            # keeps across a broker restart (tests/chaos, gateway/README.md).
            "share_group": "",
            "session_expiry_s": 600,
        },
        "kafka": {
            **connection_keys(endpoints["kafka"], "gateway"),
            "topic_prefix": run.kafka_prefix,
            "partitions": 3,
            **_replication(endpoints),
        },
        "http": {"host": "127.0.0.1", "port": 0},
    }


def processor_config(run: DemoRun, endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """The run's processor: its own group and index prefix; thresholds per site kind."""
    names = list(run.sites)
    return {
        "kafka": {
            **connection_keys(endpoints["kafka"], "processor"),
            "topic_prefix": run.kafka_prefix,
            "group_id": run.group_id,
            "client_id": f"demo-processor-{run.run_id}",
            "commit_interval_s": 1.0,
            **_replication(endpoints),
        },
        "search": {
            **_search_block(run, endpoints, "processor"),
            "refresh_interval": "1s",
            # A search cluster (the stack's cluster profile) keeps a copy of each shard.
            **_replicas(endpoints),
        },
        "rules": {
            "threshold_high_c": 35.0,
            "min_duration_s": 10.0,
            "rate_max_c_per_min": 6.0,
            "rate_window_s": 20.0,
            "groups": {
                "freezers": {"sites": [names[0]], "threshold_high_c": -15.0},
                "cold_rooms": {"sites": [names[1]], "threshold_high_c": 8.0},
            },
        },
        # A demo incident resolves within its run (the default grace is 120 s).
        "incidents": {"resolve_grace_s": 15.0},
        "http": {"enabled": False},
    }


def _replication(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """``replication_factor`` for the topics a stage creates, when the stack's Kafka is a
    cluster that asks for more than one copy (a single broker: the key is left out).

    >>> _replication({"kafka": {"bootstrap": "k1:1,k2:1", "replication_factor": 3}})
    {'replication_factor': 3}
    >>> _replication({"kafka": {"bootstrap": "k:1"}})
    {}
    """
    factor = int(endpoints["kafka"].get("replication_factor", 1))
    return {"replication_factor": factor} if factor > 1 else {}


def _replicas(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    """``{"replicas": n}`` when the search endpoint asks for shard copies, else nothing.

    >>> _replicas({"search": {"url": "https://h:1", "replicas": 1}}), _replicas({"search": {}})
    ({'replicas': 1}, {})
    """
    replicas = endpoints["search"].get("replicas", 0)
    return {"replicas": int(replicas)} if replicas else {}


def _search_block(run: DemoRun, endpoints: Mapping[str, Any], user: str) -> dict[str, Any]:
    """The ``[search]`` keys of the run's search server for ``user`` (non-default ones;
    ``urls`` too for a cluster: every node)."""
    settings = run.search_settings(endpoints, user)
    keys = ("backend", "url", "username", "password", "ca_file", "index_prefix")
    block = {k: getattr(settings, k) for k in keys if getattr(settings, k)}
    if len(settings.urls) > 1:
        block["urls"] = list(settings.urls)
    return block


def web_config(run: DemoRun, endpoints: Mapping[str, Any], port: int = 0) -> dict[str, Any]:
    """The run's web view: the processor's search server and Kafka, the run's prefixes,
    and only the run's devices (the MQTT topics are shared: a device run by hand, or
    another run's fleet, reaches this run's topics through its gateway)."""
    import msgspec

    import stagekit.settings

    proc = processor_config(run, endpoints)
    shared_kafka = {f.name for f in msgspec.structs.fields(stagekit.settings.KafkaSettings)}
    return {
        "http": {"host": "127.0.0.1", "port": port},
        "search": _search_block(run, endpoints, "web"),
        "kafka": {
            **{k: v for k, v in proc["kafka"].items() if k in shared_kafka},
            **connection_keys(endpoints["kafka"], "web"),
            "client_id": f"demo-web-{run.run_id}",
            "retry_s": 2.0,
        },
        "view": {"devices": run.devices},
    }


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied table by table (a nested dict merge).

    >>> merge_config({"kafka": {"a": 1, "b": 2}, "x": 1}, {"kafka": {"b": 3}, "y": {"z": 0}})
    {'kafka': {'a': 1, 'b': 3}, 'x': 1, 'y': {'z': 0}}
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def write_toml(path: Path, data: Mapping[str, Any]) -> None:
    """Write a config file readable by its owner only (it holds MQTT, Kafka and search
    passwords): created 0600, never readable by others even for a moment."""
    import tomli_w

    from deploy.local.layout import write_private

    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, tomli_w.dumps(dict(data)))
