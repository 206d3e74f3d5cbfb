"""``thermowatch devices``: validation, the edge config bundle, credentials.json with sites.

No broker here: a stack directory of its own whose Mosquitto never ran, so
users change only in its credentials.json (the broker would read them at start).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from deploy.local.credentials import SERVICE_USERS
from deploy.local.pki import Pki
from deploy.local.stack import LocalStack
from edge_agent.adapters import read_sensors_once
from edge_agent.config import load_config
from thermowatch import devices
from thermowatch.cli import main
from thermowatch.devices import (
    DeviceError,
    bundle_config_text,
    check_device_id,
    check_site,
    write_bundle,
)


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "stack"
    monkeypatch.setenv("THERMOWATCH_STACK_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, str]:
    """A CA of its own and a client certificate, as ``write_bundle`` takes them."""
    pki = Pki(tmp_path / "pki")
    cert, key = pki.issue("s9-d01")
    return {"ca_file": str(pki.ca_file), "cert_file": str(cert), "key_file": str(key)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("bad", ["", "a b", "-x", "a/b", "x" * 65, "dev\n", "dé", "a+b", "a#"])
def test_device_id_outside_the_contract_pattern_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(DeviceError, match=r"^device_id: must be 1-64 letters"):
        check_device_id(bad, SERVICE_USERS)
    with pytest.raises(DeviceError, match=r"^--site: must be 1-64 letters"):
        check_site(bad)


@pytest.mark.parametrize("name", SERVICE_USERS)
def test_service_accounts_are_not_devices(name: str) -> None:
    with pytest.raises(DeviceError, match="service account"):
        check_device_id(name, SERVICE_USERS)


def test_bundle_files_are_0600_from_creation_never_chmodded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: dict[str, str]
) -> None:
    def no_chmod(*_a: object, **_k: object) -> None:
        raise AssertionError("chmod called: the file existed with a wider mode first")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old = os.umask(0)  # a permissive umask must not widen them
    try:
        out = write_bundle(
            tmp_path / "b", "s9-d01", "s9", "pw-1", host="127.0.0.1", port=18830, tls=tls
        )
    finally:
        os.umask(old)
    assert mode(out / "edge.toml") == 0o600
    assert mode(out / "edge.password") == 0o600
    assert mode(out / "device.key") == 0o600
    assert (out / "device.key").read_bytes() == Path(tls["key_file"]).read_bytes()
    assert mode(out) == 0o700
    assert "pw-1" not in (out / "edge.toml").read_text(encoding="utf-8")


def test_bundle_config_is_a_valid_edge_config_for_the_device(
    tmp_path: Path, tls: dict[str, str]
) -> None:
    out = write_bundle(tmp_path / "b", "s9-d01", "s9", "pw-1", host="10.0.0.5", port=18830, tls=tls)
    cfg = load_config(out / "edge.toml", env={})
    assert cfg.validate() == []
    assert (cfg.device.device_id, cfg.device.site) == ("s9-d01", "s9")
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.username) == ("10.0.0.5", 18830, "s9-d01")
    # TLS with the bundle's own CA, certificate and key; no password in use.
    assert cfg.mqtt.tls
    assert (cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file) == (
        str(out / "ca.pem"), str(out / "device.crt"), str(out / "device.key")
    )  # fmt: skip
    assert cfg.mqtt.password == "" and cfg.mqtt.password_file == ""
    assert cfg.gpio.pin_factory == "mock"
    assert Path(cfg.device.state_dir) == out / "state"
    # The simulated probe reads as a good DS18B20 reading.
    (sample,) = read_sensors_once(cfg)
    assert sample.ok and sample.temp_c == pytest.approx(4.0)


def test_w1_bundle_uses_the_real_probes_and_the_installed_certificate(
    tmp_path: Path, tls: dict[str, str]
) -> None:
    text = bundle_config_text("s9-d01", "s9", "10.0.0.5", 1883, tmp_path, sensor="w1")
    out = write_bundle(
        tmp_path / "b", "s9-d01", "s9", "pw", host="10.0.0.5", port=1883, tls=tls, sensor="w1"
    )
    assert (out / "edge.toml").read_text(encoding="utf-8").replace(str(out), "") == text.replace(
        str(tmp_path), ""
    )
    cfg = load_config(out / "edge.toml", env={})
    assert cfg.sensors.w1_root == "/sys/bus/w1/devices"
    assert cfg.gpio.pin_factory == ""
    assert cfg.mqtt.cert_file == "/etc/thermowatch/device.crt"
    assert cfg.mqtt.key_file == "/etc/thermowatch/device.key"
    assert cfg.mqtt.ca_file == "/etc/thermowatch/ca.pem"
    assert not (out / "w1").exists()


def test_bundle_never_overwrites_a_bundle(tmp_path: Path, tls: dict[str, str]) -> None:
    write_bundle(tmp_path / "b", "s9-d01", "s9", "pw", host="h", port=1, tls=tls)
    with pytest.raises(DeviceError, match=r"^--out: .*edge.toml exists already"):
        write_bundle(tmp_path / "b", "s9-d02", "s9", "pw2", host="h", port=1, tls=tls)
    assert "s9-d01" in (tmp_path / "b" / "edge.toml").read_text(encoding="utf-8")


def test_add_writes_bundle_records_site_and_refuses_a_duplicate(
    stack_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["devices", "add", "lab-d07", "--site", "lab", "--out", "bundle"]) == 0
    assert mode(Path("bundle/edge.toml")) == 0o600
    assert mode(Path("bundle/edge.password")) == 0o600
    assert mode(Path("bundle/device.key")) == 0o600
    cert = x509.load_pem_x509_certificate(Path("bundle/device.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=lab-d07"
    password = Path("bundle/edge.password").read_text(encoding="utf-8").strip()
    stack = LocalStack()
    assert stack.credentials()["lab-d07"] == password
    assert stack.device_sites() == {"lab-d07": "lab"}
    capsys.readouterr()

    assert main(["devices", "add", "lab-d07", "--site", "lab", "--out", "other"]) == 1
    err = capsys.readouterr().err
    assert "device_id: 'lab-d07' exists already" in err
    assert "thermowatch devices rotate lab-d07" in err
    assert not Path("other").exists()
    assert stack.credentials()["lab-d07"] == password  # untouched


def test_add_puts_the_stacks_config_signing_key_in_the_bundle(
    stack_dir: Path, tls: dict[str, str]
) -> None:
    assert main(["devices", "add", "lab-d13", "--site", "lab", "--out", "bundle"]) == 0
    private, public = LocalStack().config_signing_key()
    assert mode(private) == 0o600
    cfg = load_config(Path("bundle/edge.toml"), env={})
    assert cfg.remote_config.public_key_file == str(Path("bundle/config-signing.pub").absolute())
    assert Path(cfg.remote_config.public_key_file).read_bytes() == public.read_bytes()
    assert not cfg.remote_config.allow_unsigned and len(cfg.remote_config.trusted_keys()) == 1
    # A Pi bundle names the key where deploy/pi/install.sh puts it.
    pi = write_bundle(
        Path("pi"), "lab-d14", "lab", "pw", host="h", port=1, tls=tls, sensor="w1",
        public_key=public.read_bytes(),
    )  # fmt: skip
    assert 'public_key_file = "/etc/thermowatch/config-signing.pub"' in (
        pi / "edge.toml"
    ).read_text(encoding="utf-8")
    assert (pi / "config-signing.pub").read_bytes() == public.read_bytes()


def test_add_default_out_is_the_device_id(stack_dir: Path) -> None:
    assert main(["devices", "add", "lab-d08", "--site", "lab"]) == 0
    assert Path("lab-d08/edge.toml").is_file()
    assert "lab-d08" in Path("lab-d08/README.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["devices", "add", "admin", "--site", "lab"], "device_id: 'admin' is a service account"),
        (["devices", "add", "a b", "--site", "lab"], "device_id: must be"),
        (["devices", "add", "x1", "--site", "a/b"], "--site: must be"),
        (["devices", "remove", "gateway"], "device_id: 'gateway' is a service account"),
        (["devices", "remove", "never-added"], "device_id: no device 'never-added'"),
        (["devices", "rotate", "never-added"], "device_id: no device 'never-added'"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(
    stack_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    users_before = LocalStack().credentials()
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert LocalStack().credentials() == users_before


def test_remove_list_and_rotate(stack_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "add", "lab-d09", "--site", "lab"]) == 0
    old = Path("lab-d09/edge.password").read_text(encoding="utf-8")
    old_cert = x509.load_pem_x509_certificate(Path("lab-d09/device.crt").read_bytes())
    pki = Pki(stack_dir / "pki")
    assert main(["devices", "rotate", "lab-d09"]) == 0
    new = Path("lab-d09/edge.password").read_text(encoding="utf-8")
    assert new != old and mode(Path("lab-d09/edge.password")) == 0o600
    # A new certificate in the bundle; the old one is in the CRL.
    new_cert = x509.load_pem_x509_certificate(Path("lab-d09/device.crt").read_bytes())
    assert new_cert.serial_number != old_cert.serial_number
    assert mode(Path("lab-d09/device.key")) == 0o600
    assert pki.revoked_serials() == {old_cert.serial_number}
    assert LocalStack().credentials()["lab-d09"] == new.strip()
    capsys.readouterr()

    assert main(["devices", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"device_id": "lab-d09", "site": "lab"} in rows
    assert {"device_id": "dev-test-1", "site": None} in rows
    assert not {r["device_id"] for r in rows} & set(SERVICE_USERS)

    assert main(["devices", "remove", "lab-d09"]) == 0
    assert "lab-d09" not in LocalStack().credentials()
    assert new_cert.serial_number in pki.revoked_serials()
    assert "lab-d09" not in LocalStack().device_sites()


def test_credentials_without_sites_still_load_and_keep_their_users(stack_dir: Path) -> None:
    """A credentials.json written before sites were recorded (``{"mqtt": ...}`` only)."""
    stack_dir.mkdir(parents=True)
    (stack_dir / "credentials.json").write_text(
        json.dumps({"mqtt": {"admin": "a", "s1-d01": "b"}}), encoding="utf-8"
    )
    stack = LocalStack()
    assert stack.device_sites() == {}
    stack.add_device("lab-d10", "lab")
    stack.add_mqtt_user("s1-d01", "c")  # a plain re-password keeps the recorded sites
    data = json.loads((stack_dir / "credentials.json").read_text(encoding="utf-8"))
    assert data["mqtt"]["admin"] == "a" and data["mqtt"]["s1-d01"] == "c"
    assert data["sites"] == {"lab-d10": "lab"}


def test_out_that_is_a_file_is_refused_before_any_user_is_added(
    stack_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("afile").write_text("x", encoding="utf-8")
    assert main(["devices", "add", "lab-d11", "--site", "lab", "--out", "afile"]) == 1
    assert "--out: " in capsys.readouterr().err
    assert "lab-d11" not in LocalStack().credentials()


def test_a_bundle_that_cannot_be_written_leaves_no_user(
    stack_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(devices, "write_bundle", fail)
    assert main(["devices", "add", "lab-d12", "--site", "lab"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert "lab-d12" not in LocalStack().credentials()
    assert "lab-d12" not in LocalStack().device_sites()
