"""The installation's own certificate authority: ``<stack>/pki/``, made at first start.

The CA signs the broker's server certificate and one client certificate per
MQTT identity (device or service; the certificate's CN is the identity, which
Mosquitto takes as the user name: ``use_identity_as_username``). Removing or
rotating an identity revokes its old certificate: the CRL (``crl.pem``) is
rendered from the CA and the broker reads it (``crlfile``) at start and reload.

Layout::

    pki/ca.pem  ca.key            the CA (key mode 0600)
    pki/server.crt  server.key    the broker's (SAN 127.0.0.1, localhost, the host)
    pki/clients/<identity>.crt  <identity>.key
    pki/crl.pem                   every revoked serial, signed by the CA

Every private key is created with mode 0600 by ``os.open`` (never a ``chmod``
afterwards). Keys are ECDSA P-256: a few hundred microseconds to make, so the
whole demo fleet gets certificates at first start without a noticeable wait.
The ``cryptography`` library does the X.509 work (no ``openssl`` subprocess:
nothing secret on a command line, and errors are Python exceptions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.local.credentials import SERVICE_USERS
from deploy.local.errors import StackError
from deploy.local.layout import write_private
from deploy.local.process import flock

__all__ = ["CA_NAME", "ClientTls", "Pki", "client_tls"]

CA_NAME: Final = "thermowatch installation CA"
#: The CA outlives every certificate it signs.
CA_DAYS: Final = 3650
#: Server and client certificates: rotate (``thermowatch devices rotate``) before.
CERT_DAYS: Final = 825
#: The CRL is re-signed at every broker start and every revocation; OpenSSL
#: refuses every client once it is past its next update, so it is long.
CRL_DAYS: Final = 365
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


#: The CA signs certificates and CRLs, nothing else.
_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def check_identity(identity: str) -> str:
    """``identity`` when it can be a certificate's CN and a file name.

    >>> check_identity("s1-d01")
    's1-d01'
    >>> check_identity("../x")
    Traceback (most recent call last):
    ...
    deploy.local.errors.StackError: pki: invalid identity '../x' (letters, digits, '_.@-')
    """
    if not _IDENTITY.fullmatch(identity):
        raise StackError(f"pki: invalid identity {identity!r} (letters, digits, '_.@-')")
    return identity


@dataclass(frozen=True)
class ClientTls:
    """How an MQTT identity connects to the stack's broker, always over TLS.

    A device logs in with its client certificate on the certificate listener
    (``port``), which makes its client id its certificate's name; a service
    (:data:`~deploy.local.credentials.SERVICE_USERS`) logs in with its password
    on the password listener, where the broker plugin takes ``<user>`` or
    ``<user>:<suffix>`` as client id (several connections, one gateway replica
    each). ``apply`` sets either on a paho client; connect to ``port``.
    ``edge_mqtt`` gives the edge agent's ``[mqtt]`` keys and ``tls_block`` the
    shared ``TlsSettings`` keys (gateway).
    """

    ca_file: str
    cert_file: str = ""
    key_file: str = ""
    #: The listener to connect to (0: unknown, the caller's endpoint knows).
    port: int = 0
    #: A password login (services); empty for a certificate login.
    username: str = ""
    password: str = ""

    def apply(self, client: Any) -> None:
        """``client.tls_set(...)`` on a paho ``Client`` (server name and CA checked),
        and the user name and password of a password login."""
        import ssl

        client.tls_set(
            ca_certs=self.ca_file,
            certfile=self.cert_file or None,
            keyfile=self.key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)

    def edge_mqtt(self) -> dict[str, Any]:
        return {
            "tls": True,
            "ca_file": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
        }

    def tls_block(self) -> dict[str, Any]:
        block: dict[str, Any] = {"enabled": True, "ca_file": self.ca_file}
        if self.cert_file:
            block |= {"cert_file": self.cert_file, "key_file": self.key_file}
        return block


def client_tls(endpoint: Mapping[str, Any], identity: str) -> ClientTls:
    """How ``identity`` connects to the stack's MQTT ``endpoint``.

    ``endpoint`` is ``stack.endpoints()["mosquitto"]`` (``ca_file``,
    ``certs_dir``, ``port``, ``password_port``, ``users``). A service account
    gets a password login on ``password_port`` when the endpoint names its
    password; anyone else its certificate. A :class:`StackError` names the
    identity when it has no certificate (``thermowatch devices add`` or
    ``LocalStack.issue_client_cert``).
    """
    check_identity(identity)
    users = endpoint.get("users") or {}
    if identity in SERVICE_USERS and identity in users and "password_port" in endpoint:
        return ClientTls(
            str(endpoint["ca_file"]),
            port=int(endpoint["password_port"]),
            username=identity,
            password=str(users[identity]),
        )
    certs = Path(endpoint["certs_dir"])
    cert, key = certs / f"{identity}.crt", certs / f"{identity}.key"
    if not cert.is_file() or not key.is_file():
        raise StackError(
            f"mqtt: no client certificate for {identity!r} in {certs} "
            "(thermowatch devices add, or LocalStack.issue_client_cert)"
        )
    return ClientTls(str(endpoint["ca_file"]), str(cert), str(key), int(endpoint.get("port", 0)))


class Pki:
    """The CA under ``root`` (``<stack>/pki``); every method takes its own lock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def crl_file(self) -> Path:
        return self.root / "crl.pem"

    @property
    def clients_dir(self) -> Path:
        return self.root / "clients"

    def cert_paths(self, identity: str) -> tuple[Path, Path]:
        """``(<identity>.crt, <identity>.key)`` (they may not exist)."""
        check_identity(identity)
        return self.clients_dir / f"{identity}.crt", self.clients_dir / f"{identity}.key"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with flock(self.root / "pki.lock"):
            yield

    # -------------------------------------------------------------- the CA
    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The CA, created on first use. The caller holds the lock."""
        if self.ca_file.exists() and self.ca_key_file.exists():
            cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise StackError(f"pki: {self.ca_key_file} is not an EC key")
            return cert, key
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.ca_key_file, _key_pem(key))
        _write_public(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def _sign(
        self, cn: str, usage: x509.ObjectIdentifier, sans: Iterable[x509.GeneralName] = ()
    ) -> tuple[x509.Certificate, bytes]:
        """A new key and certificate for ``cn`` signed by the CA: ``(cert, key PEM)``."""
        ca, ca_key = self._ca()
        key = _new_key()
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        san_list = list(sans)
        if san_list:
            builder = builder.add_extension(x509.SubjectAlternativeName(san_list), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), _key_pem(key)

    # -------------------------------------------------------------- broker
    def ensure_server(self, host: str) -> None:
        """The CA, and a server certificate whose SAN covers 127.0.0.1, localhost and
        ``host`` (re-issued when the host changed); then the CRL, freshly signed."""
        wanted = {_san("127.0.0.1"), _san("localhost"), _san(host)}
        with self._locked():
            self._ca()
            if self.server_cert.exists() and self.server_key.exists():
                cert = x509.load_pem_x509_certificate(self.server_cert.read_bytes())
                ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                fresh = cert.not_valid_after_utc > _now() + dt.timedelta(days=30)
                if wanted <= set(ext.value) and fresh:
                    self._write_crl([])
                    return
            cert, key_pem = self._sign("thermowatch-mqtt", ExtendedKeyUsageOID.SERVER_AUTH, wanted)
            write_private(self.server_key, key_pem)
            _write_public(self.server_cert, cert.public_bytes(serialization.Encoding.PEM))
            self._write_crl([])

    # -------------------------------------------------------------- clients
    def issue(self, identity: str, *, replace: bool = False) -> tuple[Path, Path]:
        """A client certificate for ``identity`` (CN = identity); returns its paths.

        An existing one is kept unless ``replace``: then the old one is revoked
        (the CRL re-rendered) and a new key and certificate take its place.
        """
        cert_path, key_path = self.cert_paths(identity)
        with self._locked():
            if cert_path.exists() and key_path.exists() and not replace:
                return cert_path, key_path
            revoked = [self._serial(cert_path)] if cert_path.exists() else []
            self.clients_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            cert, key_pem = self._sign(identity, ExtendedKeyUsageOID.CLIENT_AUTH)
            write_private(key_path, key_pem)
            _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            if revoked:
                self._write_crl(revoked)
        return cert_path, key_path

    def issue_missing(self, identities: Iterable[str]) -> None:
        """Issue a certificate to each identity that has none (the broker's start)."""
        for identity in identities:
            self.issue(identity)

    def revoke(self, identity: str) -> bool:
        """Revoke ``identity``'s certificate and delete it; False when it had none."""
        cert_path, key_path = self.cert_paths(identity)
        with self._locked():
            if not cert_path.exists():
                return False
            self._write_crl([self._serial(cert_path)])
            cert_path.unlink()
            key_path.unlink(missing_ok=True)
        return True

    def revoked_serials(self) -> set[int]:
        """The serial numbers in the CRL (empty before the first start)."""
        if not self.crl_file.exists():
            return set()
        crl = x509.load_pem_x509_crl(self.crl_file.read_bytes())
        return {entry.serial_number for entry in crl}

    @staticmethod
    def _serial(cert_path: Path) -> int:
        return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number

    def _write_crl(self, new_serials: list[int]) -> None:
        """Sign a CRL holding the revoked serials so far plus ``new_serials``.

        The caller holds the lock."""
        ca, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        known: set[int] = set()
        if self.crl_file.exists():  # earlier entries keep their revocation date
            for entry in x509.load_pem_x509_crl(self.crl_file.read_bytes()):
                builder = builder.add_revoked_certificate(entry)
                known.add(entry.serial_number)
        for serial in sorted(set(new_serials) - known):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        _write_public(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
