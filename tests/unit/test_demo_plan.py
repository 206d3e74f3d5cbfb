"""The demo's script and its malformed payloads, without any service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local.errors import StackError
from telemetry_contract import TopicKind, kafka_topics, mqtt_topic
from thermowatch.demo import (
    demo_sites,
    gateway_config,
    malformed_payloads,
    processor_config,
)
from thermowatch.demo.plan import plan


def test_demo_fleet_is_the_stack_users() -> None:
    sites = demo_sites()
    devices = [d for devs in sites.values() for d in devs]
    assert list(sites) == ["s1", "s2", "s3"]
    assert len(devices) == 30 and devices[0] == "s1-d01" and devices[-1] == "s3-d10"


def test_plan_gives_each_incident_its_own_device_within_the_run() -> None:
    p = plan(demo_sites(), 150.0)
    targets = [i.device_id for i in p.incidents] + [p.offline_device, p.malformed_device]
    assert len(set(targets)) == len(targets)
    kinds = {i.kind for i in p.incidents}
    assert kinds == {"door_open", "fire", "stuck"}
    for i in p.incidents:
        assert i.device_id in p.sites[i.site]
        assert i.start_s > 0 and i.start_s + i.duration_s <= p.duration_s
    assert 0 < p.offline_at_s < p.online_at_s < p.duration_s
    assert p.base_c["s1"] < -15 < p.base_c["s2"] < p.base_c["s3"]


def test_plan_needs_three_sites() -> None:
    with pytest.raises(ValueError, match="3 sites"):
        plan({"a": ["a-1", "a-2"]}, 60)


def test_every_malformed_payload_is_dead_lettered_by_the_gateway_core() -> None:
    from gateway.bridge import bridge

    topics = kafka_topics("t")
    topic = mqtt_topic("s2", "s2-d10", TopicKind.TELEMETRY)
    payloads = malformed_payloads("s2-d10", "s2-d01", "s2", 24)
    assert len(payloads) == 24
    for p in payloads:
        rec = bridge(topic, p, received_ms=1_790_000_000_000, gateway_id="g", topics=topics)
        assert rec.dead_letter, p
        assert rec.topic == topics.deadletter


def test_configs_isolate_the_run_and_parse(tmp_path: Path) -> None:
    import msgspec

    from cloud_processor.config import ProcessorConfig
    from deploy.local.pki import Pki
    from gateway.config import GatewayConfig
    from thermowatch.demo import DemoRun

    run = DemoRun(run_id="r1", run_dir=tmp_path, w1_dir=tmp_path, sites=demo_sites(), duration_s=10)
    pki = Pki(tmp_path / "pki")
    pki.issue("gateway")
    mqtt = {"ca_file": str(pki.ca_file), "certs_dir": str(pki.clients_dir)}
    endpoints = {
        "mosquitto": {"host": "127.0.0.1", "port": 1, "users": {"gateway": "pw"}, **mqtt},
        "kafka": {"bootstrap": "127.0.0.1:2"},
        "search": {"url": "http://127.0.0.1:3"},
    }
    gw = msgspec.convert(gateway_config(run, endpoints), GatewayConfig)
    pr = msgspec.convert(processor_config(run, endpoints), ProcessorConfig)
    assert gw.kafka.topic_prefix == pr.kafka.topic_prefix == "demo.r1"
    assert pr.search.index_prefix == "demo-r1-"
    # One gateway: a plain subscription (kept across a broker restart, gateway/README.md).
    assert gw.mqtt.share_group == "" and pr.kafka.group_id == "demo-processor-r1"
    assert gw.validate() == [] and pr.validate() == []
    # The gateway logs in with its certificate from the stack's CA, over TLS.
    assert gw.mqtt.tls.enabled and gw.mqtt.password == ""
    assert gw.mqtt.tls.cert_file == str(pki.clients_dir / "gateway.crt")
    assert pr.rules.for_device("s1-d03", "s1").threshold_high_c == -15.0


def test_a_kafka_cluster_gets_topics_with_as_many_copies_as_it_asks_for(tmp_path: Path) -> None:
    """The stack's cluster endpoint asks for 3 copies: the gateway and the processor
    create their topics with them; a single broker's configs stay as they were."""
    import msgspec

    from cloud_processor.config import ProcessorConfig
    from deploy.local.pki import Pki
    from gateway.config import GatewayConfig
    from thermowatch.demo import DemoRun

    run = DemoRun(run_id="r1", run_dir=tmp_path, w1_dir=tmp_path, sites=demo_sites(), duration_s=10)
    pki = Pki(tmp_path / "pki")
    pki.issue("gateway")
    mqtt = {"ca_file": str(pki.ca_file), "certs_dir": str(pki.clients_dir)}
    single = {
        "mosquitto": {"host": "127.0.0.1", "port": 1, "users": {"gateway": "pw"}, **mqtt},
        "kafka": {"bootstrap": "127.0.0.1:2"},
        "search": {"url": "http://127.0.0.1:3"},
    }
    cluster = {**single, "kafka": {"bootstrap": "127.0.0.1:2,127.0.0.1:4", "replication_factor": 3}}
    for make in (gateway_config, processor_config):
        assert "replication_factor" not in make(run, single)["kafka"]
    gw = msgspec.convert(gateway_config(run, cluster), GatewayConfig)
    pr = msgspec.convert(processor_config(run, cluster), ProcessorConfig)
    assert gw.kafka.replication_factor == pr.kafka.replication_factor == 3
    assert gw.kafka.servers == pr.kafka.servers == ("127.0.0.1:2", "127.0.0.1:4")
    assert gw.validate() == [] and pr.validate() == []


def test_a_run_on_elasticsearch_configures_the_processor_for_it_and_records_it(
    tmp_path: Path,
) -> None:
    """``demo --search elasticsearch``: the processor, the accounting and a later
    ``demo account`` all reach the stack's Elasticsearch service, not OpenSearch."""
    import msgspec

    from cloud_processor.config import ProcessorConfig
    from thermowatch.demo import DemoRun
    from thermowatch.demo.run import new_run

    endpoints = {
        "kafka": {"bootstrap": "127.0.0.1:2"},
        "search": {"url": "http://127.0.0.1:3"},
        "elasticsearch": {"url": "http://127.0.0.1:4"},
    }
    run = new_run(tmp_path, demo_sites(), 10.0, search_backend="elasticsearch")
    pr = msgspec.convert(processor_config(run, endpoints), ProcessorConfig)
    assert (pr.search.backend, pr.search.url) == ("elasticsearch", "http://127.0.0.1:4")
    assert pr.validate() == []
    settings = run.search_settings(endpoints)
    assert (settings.backend, settings.url, settings.index_prefix) == (
        "elasticsearch",
        "http://127.0.0.1:4",
        run.index_prefix,
    )
    run.run_dir.mkdir(parents=True)
    run.save()
    assert DemoRun.load(run.run_dir).search_settings(endpoints) == settings
    # a run recorded before the option existed is an OpenSearch run
    record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    del record["search_backend"]
    (run.run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert DemoRun.load(run.run_dir).search_settings(endpoints).url == "http://127.0.0.1:3"
    with pytest.raises(StackError, match="search backend: must be one of opensearch"):
        new_run(tmp_path, demo_sites(), 10.0, search_backend="solr")


def test_the_script_plays_every_planned_step_once_in_time_order() -> None:
    from thermowatch.demo.scenario import Action, script

    p = plan(demo_sites(), 150.0)
    steps = script(p)
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)
    assert [s.action for s in steps].count(Action.INJECT) == len(p.incidents)
    kill = next(s for s in steps if s.action is Action.KILL_AGENT)
    restart = next(s for s in steps if s.action is Action.RESTART_AGENT)
    burst = next(s for s in steps if s.action is Action.MALFORMED)
    assert kill.device_id == restart.device_id == p.offline_device
    assert (kill.at_s, restart.at_s) == (p.offline_at_s, p.online_at_s)
    assert (burst.device_id, burst.at_s) == (p.malformed_device, p.malformed_at_s)
    assert steps[0].label == "inject door_open on s1-d03"


def test_the_demo_fleets_agents_trust_the_stacks_config_signing_key(tmp_path: Path) -> None:
    from deploy.local.config_keys import ensure_key_pair
    from deploy.local.pki import Pki
    from thermowatch.demo.fleet import DemoFleet

    public = ensure_key_pair(tmp_path / "stack")[1]
    pki = Pki(tmp_path / "stack" / "pki")
    pki.issue("s1-d01")
    tls = {"ca_file": str(pki.ca_file), "certs_dir": str(pki.clients_dir)}
    fleet = DemoFleet(
        plan(demo_sites(), 150.0),
        run_dir=tmp_path / "run",
        w1_dir=tmp_path / "w1",
        mqtt={"host": "127.0.0.1", "port": 1883, "users": {"s1-d01": "pw"}, **tls},
        run_id="r1",
        config_public_key=str(public),
    )
    cfg = fleet._config("s1-d01")
    assert cfg.remote_config.public_key_file == str(public)
    assert len(cfg.remote_config.trusted_keys()) == 1 and not cfg.remote_config.allow_unsigned
