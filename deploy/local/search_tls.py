"""Certificates for the local search server: a CA, the node's certificate, the admin's.

Small functions over the ``cryptography`` library, so another part of the
stack can hand in its own CA (:func:`issue` takes any CA key and certificate)
instead of the one :func:`ensure_ca` makes. Private keys are written with mode
0600 from the first byte (``os.open``), never restricted afterwards.

Files (all under one directory, made once, kept across restarts):
``ca.pem``/``ca-key.pem``, ``node.pem``/``node-key.pem`` (the HTTP and
transport certificate, SAN ``localhost`` and the node's IP) and
``admin.pem``/``admin-key.pem`` (the security plugin's super-admin, by DN).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.local.layout import write_private

__all__ = [
    "ORGANIZATION",
    "SearchPki",
    "ensure_ca",
    "ensure_search_pki",
    "issue",
    "subject_dn",
]

ORGANIZATION: Final = "thermowatch"
CA_DAYS: Final = 3650
LEAF_DAYS: Final = 825  # the longest lifetime browsers and most TLS stacks still accept

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    # One RDN only: the node takes its DN list settings from the command line,
    # where a comma would split one DN into two (``CN=a,O=b`` -> ``CN=a``, ``O=b``).
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION}-{common_name}")])


def subject_dn(common_name: str) -> str:
    """The RFC 2253 DN the security plugin matches (``nodes_dn``, ``admin_dn``).

    >>> subject_dn("admin")
    'CN=thermowatch-admin'
    """
    return _name(common_name).rfc4514_string()


def _save(directory: Path, stem: str, key: Key, cert: x509.Certificate) -> None:
    # PKCS#8: the only PEM key format the security plugin reads.
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # write_private creates the file 0600 from the first byte (os.open).
    write_private(directory / f"{stem}-key.pem", key_pem)
    write_private(directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))


def _load(directory: Path, stem: str) -> tuple[Key, x509.Certificate] | None:
    key_file, cert_file = directory / f"{stem}-key.pem", directory / f"{stem}.pem"
    if not (key_file.exists() and cert_file.exists()):
        return None
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file}: not an EC private key")
    return key, x509.load_pem_x509_certificate(cert_file.read_bytes())


def ensure_ca(directory: Path, common_name: str = "local-ca") -> tuple[Key, x509.Certificate]:
    """The CA in ``directory`` (``ca.pem``, ``ca-key.pem``), made on first use."""
    found = _load(directory, "ca")
    if found is not None:
        return found
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _save(directory, "ca", key, cert)
    return key, cert


def issue(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> tuple[Key, x509.Certificate]:
    """A new key and a certificate for it, signed by the CA, for server and client use."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class SearchPki:
    """Where the search server's certificate files are."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.pem"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}-key.pem"


def ensure_search_pki(directory: Path, host: str) -> SearchPki:
    """The CA, node and admin certificates in ``directory``, each made once.

    The node's certificate names ``localhost`` and ``host`` (the address it listens on).
    """
    ca_key, ca_cert = ensure_ca(directory)
    wanted = {"node": (("localhost",), _ips(host)), "admin": ((), ())}
    for stem, (dns, ips) in wanted.items():
        if _load(directory, stem) is None:
            key, cert = issue(ca_key, ca_cert, stem, dns=dns, ips=ips)
            _save(directory, stem, key, cert)
    return SearchPki(directory)


def _ips(host: str) -> tuple[str, ...]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ("127.0.0.1",)
    return tuple(dict.fromkeys((host, "127.0.0.1")))
