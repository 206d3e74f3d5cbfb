"""The broker's identities and topics as rendered from credentials.json.

Pure: the rendered ACL, the password-file hashes, the options handed to the
``thermowatch_auth`` plugin and the migration of an older credentials.json.
The real broker enforcing them: tests/integration/test_mqtt_identity.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from deploy.local.credentials import RETIRED_USERS, SERVICE_USERS, Credentials
from deploy.local.layout import TEMPLATE_DIR
from deploy.local.mqtt_auth import (
    CLIENT_ID_SEPARATOR,
    RETAIN_USERS,
    acl_text,
    passwd_text,
    password_hash,
)
from telemetry_contract.messages import DEVICE_ID_PATTERN

TEMPLATE = (TEMPLATE_DIR / "mosquitto-acl.conf").read_text(encoding="utf-8")


def _rules(text: str) -> dict[str, list[str]]:
    """``{user: ["write thermowatch/...", ...]}`` of an ACL file."""
    rules: dict[str, list[str]] = {}
    user = ""
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split()[1]
            rules[user] = []
        elif line.startswith("topic "):
            rules[user].append(line.removeprefix("topic "))
        elif line.startswith("pattern "):
            rules.setdefault("%pattern", []).append(line)
    return rules


def test_a_device_with_a_site_gets_exactly_its_four_topics_and_reads_two() -> None:
    rules = _rules(acl_text(TEMPLATE, {"lab-d1": "p", "admin": "a"}, {"lab-d1": "lab"}))
    assert rules["lab-d1"] == [
        "write thermowatch/lab/lab-d1/telemetry",
        "write thermowatch/lab/lab-d1/status",
        "write thermowatch/lab/lab-d1/alert",
        "write thermowatch/lab/lab-d1/gap",
        "read thermowatch/lab/lab-d1/config",
        "read thermowatch/lab/lab-d1/receipt",
    ]
    # No rule for every user: no "pattern" lines, no "#" in a device's rules.
    assert "%pattern" not in rules
    assert not any("#" in rule for rule in rules["lab-d1"])


def test_a_device_without_a_recorded_site_gets_one_site_level_and_its_own_id() -> None:
    rules = _rules(acl_text(TEMPLATE, {"dev-test-1": "p"}, {}))
    assert rules["dev-test-1"][0] == "write thermowatch/+/dev-test-1/telemetry"
    assert all("/dev-test-1/" in rule and "#" not in rule for rule in rules["dev-test-1"])


def test_service_accounts_keep_their_template_rules_and_no_device_rules() -> None:
    rules = _rules(acl_text(TEMPLATE, dict.fromkeys(SERVICE_USERS, "p"), {}))
    assert rules == {
        "admin": ["readwrite thermowatch/#"],
        "gateway": ["read thermowatch/#", "write thermowatch/+/+/receipt"],
        "config-publisher": ["readwrite thermowatch/+/+/config"],
    }


def test_the_client_id_separator_can_never_occur_in_a_device_id() -> None:
    # So a device (client id == its id) can never produce "<service>:<suffix>".
    assert not re.fullmatch(DEVICE_ID_PATTERN, f"gateway{CLIENT_ID_SEPARATOR}x")
    assert set(RETAIN_USERS) <= set(SERVICE_USERS)


def test_password_hash_is_mosquittos_pbkdf2_sha512_format() -> None:
    salt = bytes(range(12))
    tag, alg, rounds, salt64, digest64 = password_hash("pw", salt).split("$")
    assert (tag, alg, rounds) == ("", "7", "101")
    assert base64.b64decode(salt64) == salt
    assert base64.b64decode(digest64) == hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101)


def test_password_file_has_one_salted_line_per_user_and_no_clear_text() -> None:
    text = passwd_text({"b": "secret-b", "a": "secret-a"})
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["a", "b"]
    assert "secret" not in text
    assert passwd_text({"a": "x"}) != passwd_text({"a": "x"})  # a fresh salt each time


def test_an_older_credentials_file_gains_the_new_services_and_loses_processor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(
        json.dumps({"mqtt": {"admin": "a", "gateway": "g", "processor": "x", "s1-d01": "d"}}),
        encoding="utf-8",
    )
    creds = Credentials(path, tmp_path / "credentials.lock")
    users = creds.all()
    assert set(RETIRED_USERS).isdisjoint(users)
    assert users["admin"] == "a" and users["s1-d01"] == "d"
    assert set(SERVICE_USERS) <= set(users)
    assert creds.all() == users  # saved at once: the new password is stable
    assert path.stat().st_mode & 0o777 == 0o600


def test_adding_a_user_to_a_running_broker_puts_no_password_on_a_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password file and the ACL are rendered in Python (0600), then SIGHUP."""
    import subprocess

    from deploy.local.services import mosquitto as module
    from deploy.local.stack import LocalStack

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args!r}")

    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, no_process)
    monkeypatch.setattr(module, "run", no_process)
    broker = LocalStack(tmp_path).service("mosquitto")
    assert isinstance(broker, module.Mosquitto)
    signals: list[int] = []
    monkeypatch.setattr(
        type(broker.process), "signal", lambda _self, sig: signals.append(sig) or True
    )
    monkeypatch.setattr(broker, "login", lambda *_a: True)
    broker.layout.run_dir.mkdir(parents=True, exist_ok=True)
    with broker.ctx.credentials.locked():
        broker._write_auth_files()  # as a start does
    broker.add_user("lab-d1", site="lab")
    passwd = (broker.layout.run_dir / "mosquitto.passwd").read_text(encoding="utf-8")
    acl = (broker.layout.run_dir / "mosquitto.acl").read_text(encoding="utf-8")
    assert signals  # the broker was told to reload
    assert "lab-d1:$7$101$" in passwd and "topic write thermowatch/lab/lab-d1/telemetry" in acl
    for password in broker.ctx.credentials.all().values():
        assert password not in passwd and password not in acl
    for name in ("mosquitto.passwd", "mosquitto.acl"):
        assert (broker.layout.run_dir / name).stat().st_mode & 0o777 == 0o600


def test_a_user_or_site_that_could_add_acl_rules_gets_no_block() -> None:
    """A newline (or any character outside the contract's id pattern) in a user
    name or site never reaches the ACL file: that user gets no rules at all."""
    text = acl_text(
        "# services",
        {"d1": "p", "evil\ntopic readwrite #": "p"},
        {"d1": "lab/x\ntopic readwrite #\n#"},
    )
    assert "readwrite #" not in text
    assert "user d1" not in text
