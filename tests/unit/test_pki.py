"""The installation's CA (``deploy/local/pki.py``): key modes, names, revocation."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from deploy.local.errors import StackError
from deploy.local.pki import Pki, client_tls


def cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_keys_are_0600_from_creation_never_chmodded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_chmod(*_a: object, **_k: object) -> None:
        raise AssertionError("chmod called: a key existed with a wider mode first")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    pki = Pki(tmp_path / "pki")
    old = os.umask(0)  # a permissive umask must not widen them
    try:
        pki.ensure_server("127.0.0.1")
        _cert, key = pki.issue("s1-d01")
    finally:
        os.umask(old)
    for path in (pki.ca_key_file, pki.server_key, key):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700


def test_server_certificate_names_loopback_and_the_host_and_chains_to_the_ca(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure_server("10.1.2.3")
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")
    }  # fmt: skip
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    # The same CA at the next start; a new host gets a new server certificate.
    pki.ensure_server("edge-gw.local")
    assert x509.load_pem_x509_certificate(pki.ca_file.read_bytes()) == ca
    san = x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge-gw.local" in names.get_values_for_type(x509.DNSName)


def test_client_certificate_cn_is_the_identity_and_is_kept_until_replaced(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path / "pki")
    cert, _key = pki.issue("gateway-2")
    assert cn(cert) == "gateway-2"
    first = cert.read_bytes()
    assert pki.issue("gateway-2")[0].read_bytes() == first
    old = x509.load_pem_x509_certificate(first).serial_number
    pki.issue("gateway-2", replace=True)
    assert cert.read_bytes() != first
    assert pki.revoked_serials() == {old}


def test_revoke_puts_the_serial_in_the_crl_and_keeps_earlier_ones(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure_server("127.0.0.1")
    serials = {}
    for name in ("a1", "a2"):
        cert, _ = pki.issue(name)
        serials[name] = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    assert pki.revoke("a1")
    assert not pki.revoke("a1")  # nothing left to revoke
    assert pki.revoke("a2")
    pki.ensure_server("127.0.0.1")  # the start re-signs the CRL, keeping every entry
    assert pki.revoked_serials() == set(serials.values())
    crl = x509.load_pem_x509_crl(pki.crl_file.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]


def test_client_tls_names_an_identity_without_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    endpoint = {"ca_file": str(pki.ca_file), "certs_dir": str(pki.clients_dir)}
    with pytest.raises(StackError, match="no client certificate for 'nobody'"):
        client_tls(endpoint, "nobody")
    with pytest.raises(StackError, match=r"invalid identity '\.\./etc'"):
        client_tls(endpoint, "../etc")
    cert, key = pki.issue("admin")
    tls = client_tls(endpoint, "admin")
    assert (tls.cert_file, tls.key_file) == (str(cert), str(key))
    assert tls.edge_mqtt()["tls"] is True and tls.tls_block()["enabled"] is True
