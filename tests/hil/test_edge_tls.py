"""MQTT over TLS with a client certificate and username/password (from password_file)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from testsupport.prerequisites import require_tools

pytestmark = pytest.mark.hil


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tw-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=tw-{name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
            cwd=d,
        )


def test_tls_client_certificate_and_password(
    hil: Any, w1_tree: Any, run_agent: Any, tmp_path: Path
) -> None:
    require_tools("openssl", "mosquitto_passwd")
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "hil-d1", "s3cret"], check=True)
    passwd.chmod(0o600)
    broker = hil.PrivateMosquitto(tmp_path / "broker")
    broker.conf.write_text(
        broker.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
        + f"password_file {passwd}\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
    )
    broker.start()
    pw_file = tmp_path / "mqtt.password"
    pw_file.write_text("s3cret\n")
    try:
        ra = run_agent(
            hil.config(
                w1_root=w1_tree("ok"),
                state_dir=tmp_path / "state",
                port=broker.port,
                extra="",
            ).replace(
                "[mqtt]\n",
                # No subscriber on this broker: the PUBACKs say "no matching
                # subscribers", which would keep the readings for a re-send.
                f'[mqtt]\nresend_unrouted = false\nusername = "hil-d1"\n'
                f'password_file = "{pw_file}"\ntls = true\n'
                f'ca_file = "{pki / "ca.crt"}"\ncert_file = "{pki / "client.crt"}"\n'
                f'key_file = "{pki / "client.key"}"\n',
            )
        )
        agent = ra.agent
        assert hil.wait_for(lambda: agent.link.connected, timeout=30)
        # Readings are acknowledged by the broker over TLS: the outbox drains.
        assert hil.wait_for(
            lambda: agent.outbox.stats().next_seq >= 10 and agent.outbox.stats().depth < 5,
            timeout=30,
        )
        ra.stop()
    finally:
        broker.stop()
