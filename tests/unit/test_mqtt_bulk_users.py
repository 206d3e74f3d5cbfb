"""Bulk MQTT provisioning (``LocalStack.add_mqtt_users``): one batch, one render,
one reload, incremental. No broker: a running one is played by an existing
password file and a recorded SIGHUP."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.errors import StackError
from deploy.local.process import ServiceProcess
from deploy.local.services.mosquitto import Mosquitto
from deploy.local.stack import LocalStack


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStack:
    monkeypatch.setenv("THERMOWATCH_STACK_DIR", str(tmp_path / "stack"))
    return LocalStack()


def test_bulk_add_is_incremental_and_keeps_known_passwords(stack: LocalStack) -> None:
    first = stack.add_mqtt_users(["f-d1", "f-d2"], certificates=False)
    again = stack.add_mqtt_users(["f-d2", "f-d3", "f-d3"], certificates=False)
    assert again["f-d2"] == first["f-d2"]
    assert set(again) == {"f-d2", "f-d3"}
    users = stack.credentials()
    assert {k: users[k] for k in ("f-d1", "f-d2", "f-d3")} == {**first, **again}
    # Password login only: no client certificate was issued.
    assert not (stack.root / "pki" / "clients" / "f-d1.crt").exists()


def test_bulk_add_issues_certificates_when_asked(stack: LocalStack) -> None:
    stack.add_mqtt_users(["f-d4"])
    assert (stack.root / "pki" / "clients" / "f-d4.crt").exists()


def test_a_running_broker_gets_one_render_and_one_reload_per_batch(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    mosquitto = stack._mosquitto
    mosquitto._passwd_file.parent.mkdir(parents=True, exist_ok=True)
    mosquitto._passwd_file.write_text("", encoding="utf-8")  # as a started broker has
    signals: list[int] = []
    monkeypatch.setattr(ServiceProcess, "signal", lambda self, sig: signals.append(sig) or True)
    logins: list[str] = []
    monkeypatch.setattr(
        Mosquitto, "login", lambda self, user, pw, timeout: logins.append(user) or True
    )
    names = [f"f-d{i:03d}" for i in range(200)]
    stack.add_mqtt_users(names, certificates=False)
    assert len(signals) == 1
    assert logins == ["f-d199"]  # the reload is awaited once, by the last new user
    passwd = mosquitto._passwd_file.read_text(encoding="utf-8")
    acl = mosquitto._acl_file.read_text(encoding="utf-8")
    assert all(f"\n{n}:$7$" in passwd for n in names)
    assert all(f"\nuser {n}\n" in acl for n in names)
    stack.add_mqtt_users(names[:5], certificates=False)  # nothing new: no reload
    assert len(signals) == 1


def test_bad_name_in_a_batch_is_refused_naming_it_and_adds_nobody(stack: LocalStack) -> None:
    with pytest.raises(StackError, match="'bad name'"):
        stack.add_mqtt_users(["f-ok", "bad name"], certificates=False)
    assert "f-ok" not in stack.credentials()
