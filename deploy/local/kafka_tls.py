"""The Kafka broker's TLS material: a CA and a server certificate, made once.

``ensure_broker_tls(directory, hosts)`` writes, the first time:

- ``ca.pem``: the certificate clients trust (``kafka.ssl_ca_file``);
- ``ca-key.pem``: the CA's private key (0600), kept so the broker's
  certificate can be re-issued (a new host name) without clients changing CA;
- ``broker.p12``: the broker's keystore (key and certificate chain), and
  ``broker.pem`` its certificate. The CA file is a PEM truststore
  (``ssl.truststore.type=PEM``, KIP-651), but the keystore is PKCS#12: Kafka
  refuses a PEM keystore file without ``ssl.key.password``, and Java 17 cannot
  decrypt a PBES2-encrypted PKCS#8 key (``PBES2 SecretKeyFactory not
  available``), while it reads an AES/PBES2 PKCS#12 file. Its password is random,
  chosen by the caller (it goes into the 0600 server properties file, never on
  a command line).

The CA is its own small one for now; :func:`ensure_broker_tls` takes the CA
(certificate and key) as an argument, so that it can be pointed at the
installation's shared CA later without changing the Kafka service.

Every private key file is created 0600 through ``os.open`` (never written
first and restricted afterwards). ``cryptography`` does the X.509 work.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.local.layout import write_private

__all__ = ["BrokerTls", "CertAuthority", "ensure_broker_tls", "load_or_create_ca"]

#: Long enough for a development stack; re-issued when close to its end.
CERT_DAYS: Final = 825
RENEW_BEFORE: Final = dt.timedelta(days=30)


#: ``x509.KeyUsage`` with every usage off (a CA turns on what it signs with).
_NO_KEY_USAGE: Final = dict.fromkeys(
    (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    ),
    False,
)  # fmt: skip


@dataclass(frozen=True)
class CertAuthority:
    """A CA that signs the broker certificate: its certificate file and key."""

    cert_file: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class BrokerTls:
    """What the broker config and the clients need."""

    ca_file: Path
    keystore_file: Path
    key_password: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "thermowatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def load_or_create_ca(directory: Path, common_name: str = "thermowatch local CA") -> CertAuthority:
    """The CA in ``directory`` (``ca.pem`` and ``ca-key.pem``), created on first use."""
    cert_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
    if cert_file.exists() and key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file}: expected an EC private key")
        return CertAuthority(cert_file, key, x509.load_pem_x509_certificate(cert_file.read_bytes()))
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS * 2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(**{**_NO_KEY_USAGE, "key_cert_sign": True, "crl_sign": True}),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertAuthority(cert_file, key, cert)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _needs_new(cert_file: Path, ca: CertAuthority, hosts: list[str]) -> bool:
    """No certificate yet, another CA, other host names, or close to expiry."""
    if not cert_file.exists():
        return True
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return True
    wanted = _san(hosts)
    return (
        cert.issuer != ca.cert.subject
        or set(san) != set(wanted)
        or cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE
    )


def ensure_broker_tls(
    directory: Path, hosts: Iterable[str], key_password: str, ca: CertAuthority | None = None
) -> BrokerTls:
    """The broker's keystore and CA file in ``directory``, (re-)issued when needed.

    ``hosts`` are the names and addresses clients connect to (every one goes in
    the certificate's subject alternative names, so hostname verification stays
    on). ``key_password`` protects the PKCS#12 keystore. ``ca`` None: the CA
    kept in ``directory`` (created on first use).
    """
    ca = ca or load_or_create_ca(directory)
    host_list = list(dict.fromkeys(hosts))
    keystore, cert_file = directory / "broker.p12", directory / "broker.pem"
    if not keystore.exists() or _needs_new(cert_file, ca, host_list):
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("thermowatch kafka broker"))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(host_list), critical=False)
            # The broker also presents it as a client, to its own controller listener.
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(key_password.encode("utf-8"))
        )
        write_private(
            keystore,
            pkcs12.serialize_key_and_certificates(b"kafka", key, cert, [ca.cert], encryption),
        )
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return BrokerTls(ca.cert_file, keystore, key_password)
