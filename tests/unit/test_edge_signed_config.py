"""Signed remote config: only a config signed by a trusted key is applied, and it may not
weaken the local alarm unless the local file allows it.

Pure tests of :mod:`telemetry_contract.signing`, :mod:`edge_agent.trust` and the gate,
plus the agent (no broker), the key files and the publisher's command line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.config_keys import ensure_key_pair, write_key_pair
from edge_agent.app import EdgeAgent
from edge_agent.config import loads_config
from edge_agent.remote_config import Accepted, RemoteConfigGate
from edge_agent.trust import ConfigTrust
from stagekit.config import ConfigError
from telemetry_contract import DeviceConfig, EdgeAlert, SignedConfig, decode, encode
from telemetry_contract.signing import (
    CONTEXT,
    SignatureError,
    key_id,
    load_public_key,
    open_signed_config,
    public_key_pem,
    sign_config,
    signed_bytes,
    trusted_keys,
)
from thermowatch.cli import main

NOW = int(time.time() * 1000)
TOPIC = "thermowatch/s1/d1/config"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "w1"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed test key
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TRUSTED = trusted_keys([KEY.public_key()])
BASE = loads_config('[device]\ndevice_id = "d1"\nsite = "s1"\n')


def dc(version: int = 2, device_id: str = "d1", site: str = "s1", **fields: Any) -> DeviceConfig:
    return DeviceConfig(device_id=device_id, site=site, version=version, ts=NOW, **fields)


def gate(local: Any = BASE, **trust: Any) -> RemoteConfigGate:
    policy = ConfigTrust.from_config(local, keys=trust.pop("keys", TRUSTED))
    return RemoteConfigGate(topic=TOPIC, trust=dataclasses.replace(policy, **trust))


def offer(g: RemoteConfigGate, payload: bytes, version: int = 1) -> Any:
    return g.offer(payload, current=BASE, version=version, now_ms=NOW)


def rejected(got: Any, reason: str) -> None:
    assert isinstance(got, EdgeAlert) and got.kind.value == "config_rejected", got
    assert reason in got.message, got.message


# What is signed ----------------------------------------------------------------------------
def test_the_signed_bytes_are_the_context_the_key_id_and_the_config_bytes_verbatim() -> None:
    env = sign_config(KEY, dc(alarm_high_c=6.0))
    assert env.key_id == key_id(KEY.public_key()) and len(env.key_id) == 16
    assert env.config == encode(dc(alarm_high_c=6.0))  # the DeviceConfig's own bytes
    message = CONTEXT + env.key_id.encode() + b"\n" + env.config
    assert signed_bytes(env.key_id, env.config) == message
    KEY.public_key().verify(env.signature, message)  # raises if not
    assert (env.device_id, env.site) == ("d1", "s1")


def test_a_signed_config_round_trips_through_the_wire_and_opens() -> None:
    env = decode(encode(sign_config(KEY, dc(sampling_interval_s=0.5))), topic=TOPIC, now_ms=NOW)
    assert isinstance(env, SignedConfig)
    assert open_signed_config(env, TRUSTED, topic=TOPIC, now_ms=NOW) == dc(sampling_interval_s=0.5)


# Tampering -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("device_id", "d2", "device_id"),  # the envelope's routing fields are checked too
        ("site", "s2", "site"),
        ("key_id", "0123456789abcdef", "key_id: 0123456789abcdef is not a trusted"),
        ("signature", bytes(64), "signature: does not verify"),
    ],
)
def test_tampering_with_an_envelope_field_is_rejected(field: str, value: Any, reason: str) -> None:
    env = msgspec.structs.replace(sign_config(KEY, dc()), **{field: value})
    topic = f"thermowatch/{env.site}/{env.device_id}/config"
    with pytest.raises((SignatureError, ValueError), match=reason):
        open_signed_config(env, TRUSTED, topic=topic, now_ms=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "d2"},
        {"site": "s2"},
        {"version": 3},
        {"ts": NOW - 1},
        {"sampling_interval_s": 60.0},
        {"alarm_high_c": 30.0},
        {"alarm_low_c": -30.0},
        {"detector": "zscore"},
        {"detector_params": {"warmup": 5}},
        {"buzzer_enabled": False},
        {"relay_enabled": False},
    ],
    ids=lambda c: next(iter(c)),
)
def test_tampering_with_any_config_field_breaks_the_signature(change: dict[str, Any]) -> None:
    env = sign_config(KEY, dc())
    forged = msgspec.structs.replace(env, config=encode(msgspec.structs.replace(dc(), **change)))
    got = offer(gate(), encode(forged), version=0)
    rejected(got, "signature: does not verify")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_property_any_changed_byte_of_the_signed_config_is_rejected(data: st.DataObject) -> None:
    env = sign_config(KEY, dc(alarm_high_c=6.0))
    i = data.draw(st.integers(0, len(env.config) - 1))
    flip = data.draw(st.integers(1, 255))
    raw = bytearray(env.config)
    raw[i] ^= flip
    with pytest.raises(SignatureError, match="signature"):
        open_signed_config(msgspec.structs.replace(env, config=bytes(raw)), TRUSTED)


def test_a_config_signed_by_another_key_is_rejected_even_under_the_trusted_key_id() -> None:
    rejected(offer(gate(), encode(sign_config(OTHER, dc()))), "key_id: ")
    relabelled = msgspec.structs.replace(sign_config(OTHER, dc()), key_id=key_id(KEY.public_key()))
    rejected(offer(gate(), encode(relabelled)), "signature: does not verify")


def test_a_config_signed_for_another_device_is_not_accepted_by_this_one() -> None:
    """Replay: d2's genuine signed config published on d1's topic (or relabelled as d1's)."""
    for_d2 = sign_config(KEY, dc(device_id="d2"))
    rejected(offer(gate(), encode(for_d2)), "device_id")
    relabelled = msgspec.structs.replace(for_d2, device_id="d1")
    rejected(offer(gate(), encode(relabelled)), "device_id")
    for_other_site = msgspec.structs.replace(sign_config(KEY, dc(site="s9")), site="s1")
    rejected(offer(gate(), encode(for_other_site)), "site")


def test_an_older_or_equal_signed_version_is_not_applied() -> None:
    g = gate()
    got = offer(g, encode(sign_config(KEY, dc(version=5, sampling_interval_s=2.0))), version=0)
    assert isinstance(got, Accepted) and got.version == 5
    assert offer(g, encode(sign_config(KEY, dc(version=4))), version=5) is None
    assert offer(g, encode(sign_config(KEY, dc(version=5))), version=5) is None


# Policy ---------------------------------------------------------------------------------------
def test_an_unsigned_config_is_refused_by_default_and_accepted_only_when_allowed() -> None:
    rejected(offer(gate(), encode(dc())), "signature: unsigned config refused")
    assert isinstance(offer(gate(allow_unsigned=True), encode(dc())), Accepted)


def test_without_a_configured_key_every_remote_config_is_refused() -> None:
    g = RemoteConfigGate(topic=TOPIC)  # the default policy: no key, nothing unsigned
    rejected(offer(g, encode(sign_config(KEY, dc()))), "key_id: no config signing key configured")
    rejected(offer(g, encode(dc())), "unsigned config refused")


@pytest.mark.parametrize(
    ("local", "fields", "field"),
    [
        ("", {"buzzer_enabled": False}, "buzzer_enabled: the buzzer cannot be turned off"),
        ("relay_enabled = true\n", {"relay_enabled": False}, "relay_enabled: the relay cannot"),
        ("high_c = 8.0\n", {"alarm_high_c": 8.5}, "alarm_high_c: 8.5 is above the local"),
        ("low_c = -1.0\n", {"alarm_low_c": -3.0}, "alarm_low_c: -3.0 is below the local"),
    ],
)
def test_a_remote_config_may_not_weaken_the_local_alarm(
    local: str, fields: dict[str, Any], field: str
) -> None:
    cfg = loads_config(f'[device]\ndevice_id = "d1"\nsite = "s1"\n[alarm]\n{local}')
    got = offer(gate(cfg), encode(sign_config(KEY, dc(**fields))))
    rejected(got, field)
    assert "allow_safety_changes = false" in got.message
    assert isinstance(
        offer(gate(cfg, allow_safety_changes=True), encode(sign_config(KEY, dc(**fields)))),
        Accepted,
    )


def test_stricter_alarm_settings_are_always_accepted() -> None:
    cfg = loads_config(
        '[device]\ndevice_id = "d1"\nsite = "s1"\n[alarm]\nhigh_c = 8.0\nlow_c = -1.0\n'
    )
    stricter = dc(alarm_high_c=6.0, alarm_low_c=0.0, buzzer_enabled=True, relay_enabled=True)
    assert isinstance(offer(gate(cfg), encode(sign_config(KEY, stricter))), Accepted)


def test_the_equipment_profiles_hard_limits_are_the_floor_when_the_file_sets_none() -> None:
    fridge = loads_config(
        '[device]\ndevice_id = "d1"\nsite = "s1"\n[detector]\nprofile = "fridge"\n'
    )
    rejected(offer(gate(fridge), encode(sign_config(KEY, dc(alarm_high_c=12.0)))), "limit 8.0")
    assert isinstance(offer(gate(fridge), encode(sign_config(KEY, dc(alarm_high_c=7.0)))), Accepted)


# Key files and the edge config --------------------------------------------------------------
def test_the_private_key_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    kid = write_key_pair(priv, pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert key_id(load_public_key(pub.read_bytes())) == kid
    before = priv.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_pair(priv, pub)
    assert priv.read_bytes() == before
    assert ensure_key_pair(tmp_path / "stack") == ensure_key_pair(tmp_path / "stack")
    assert list((tmp_path / "stack").iterdir()) != []


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('public_key_file = "/nonexistent/p.pub"\n', "remote_config.public_key_file: cannot read"),
        ('public_key_file = "{junk}"\n', "remote_config.public_key_file: not a PEM public key"),
        ('extra_public_key_files = ["{junk}"]\n', "remote_config.extra_public_key_files[0]: not"),
    ],
)
def test_a_bad_key_file_is_a_config_error_naming_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loads_config("[remote_config]\n" + toml.replace("{junk}", str(junk)))


# The agent ------------------------------------------------------------------------------------
def start_agent(tmp_path: Path) -> EdgeAgent:
    if not (tmp_path / "w1").exists():
        shutil.copytree(FIXTURES / "ok", tmp_path / "w1")
        (tmp_path / "p.pub").write_bytes(public_key_pem(KEY.public_key()))
    cfg = loads_config(
        f'[device]\ndevice_id = "d1"\nsite = "s1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[sensors]\nw1_root = "{tmp_path / "w1"}"\n[gpio]\npin_factory = "mock"\n'
        f'[remote_config]\npublic_key_file = "{tmp_path / "p.pub"}"\n'
    )
    a = EdgeAgent(cfg, pin_factory=MockFactory())
    a.start(mqtt=False)
    return a


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[EdgeAgent]:
    a = start_agent(tmp_path)
    yield a
    a.shutdown()


def test_an_older_signed_config_is_refused_after_a_restart_too(tmp_path: Path) -> None:
    """Rollback: the newest version applied is kept in the outbox's state."""
    a = start_agent(tmp_path)
    newest = encode(sign_config(KEY, dc(version=5, sampling_interval_s=2.0)))
    assert a.handle_config(newest)
    a.shutdown()
    b = start_agent(tmp_path)  # runs its local file again (version 0)
    try:
        assert not b.handle_config(encode(sign_config(KEY, dc(version=3, sampling_interval_s=9.0))))
        assert "version: 3 is older than 5" in b.presence.reason
        assert b.config.sampling.interval_s == 1.0
        assert b.handle_config(newest)  # the retained newest one applies again
        assert b.config_version == 5 and b.config.sampling.interval_s == 2.0
    finally:
        b.shutdown()


def test_the_agent_keeps_its_last_good_config_after_a_badly_signed_one(agent: EdgeAgent) -> None:
    assert agent.handle_config(encode(sign_config(KEY, dc(version=3, sampling_interval_s=2.0))))
    good = agent.config
    forged = msgspec.structs.replace(
        sign_config(KEY, dc(version=4, sampling_interval_s=0.1)), signature=bytes(64)
    )
    assert not agent.handle_config(encode(forged))
    assert not agent.handle_config(encode(dc(version=5, sampling_interval_s=0.1)))  # unsigned
    assert agent.config is good and agent.config_version == 3
    assert "signature" in agent.presence.reason
    rows = agent.outbox.next_batch(100)
    alerts = [json.loads(r.payload) for r in rows if b"config_rejected" in r.payload]
    assert any("signature: does not verify" in a["message"] for a in alerts)


def test_the_agent_says_at_start_what_remote_configs_it_accepts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(FIXTURES / "ok", tmp_path / "w1")
    for extra, event in (
        ("", "remote_config_off"),
        ("allow_unsigned = true\n", "unsigned_allowed"),
    ):
        cfg = loads_config(
            f'[device]\ndevice_id = "d1"\nsite = "s1"\nstate_dir = "{tmp_path / event}"\n'
            f'[sensors]\nw1_root = "{tmp_path / "w1"}"\n[gpio]\npin_factory = "mock"\n'
            f"[remote_config]\n{extra}"
        )
        a = EdgeAgent(cfg, pin_factory=MockFactory())
        with caplog.at_level(logging.WARNING, logger="edge_agent.app"):
            a.start(mqtt=False)
        a.shutdown()
        assert any(event in r.getMessage() for r in caplog.records), event


# The publisher's command line ---------------------------------------------------------------
def test_keygen_and_sign_make_an_envelope_the_device_accepts(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["config", "keygen", "--out", str(tmp_path)]) == 0
    assert stat.S_IMODE((tmp_path / "config-signing.key").stat().st_mode) == 0o600
    (tmp_path / "c.json").write_bytes(encode(dc(version=7, alarm_high_c=5.0)))
    capsysbinary.readouterr()
    assert (
        main(
            [
                "config",
                "sign",
                "--key",
                str(tmp_path / "config-signing.key"),
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    env = decode(capsysbinary.readouterr().out, topic=TOPIC, now_ms=NOW)
    trusted = trusted_keys([load_public_key((tmp_path / "config-signing.pub").read_bytes())])
    assert isinstance(env, SignedConfig)
    assert open_signed_config(env, trusted, topic=TOPIC, now_ms=NOW).version == 7
    # A second keygen never replaces the key.
    assert main(["config", "keygen", "--out", str(tmp_path)]) == 1
