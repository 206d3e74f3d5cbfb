"""Settings blocks every stage shares: Kafka, TLS, the probe HTTP server.

Each is declared once here, with its checks, and a stage's config uses it
as a section (``[kafka]``, ``[http]``, ``[mqtt.tls]``), subclassing it only
to add its own keys or change a default (the gateway writes to Kafka on
9092 by default, the processor reads the local stack's 19092). So a secured
Kafka (TLS, SASL) is reached the same way by the gateway, the processor and
the web view.

>>> k = KafkaSettings(bootstrap_servers="k1:9093,k2:9093", security_protocol="SASL_SSL")
>>> k.servers
('k1:9093', 'k2:9093')
>>> k.problems()
['kafka.sasl_username: required with security_protocol SASL_SSL']
>>> KafkaSettings(bootstrap_servers=("nohost",)).problems()
["kafka.bootstrap_servers: expected host:port, got 'nohost'"]
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from stagekit.address import host_problems, server_problems

__all__ = [
    "NAME_PATTERN",
    "HttpSettings",
    "KafkaSettings",
    "Port",
    "TlsSettings",
    "file_problems",
]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
#: Ids, share groups and topic prefixes: they become MQTT topic levels, Kafka
#: names and client ids.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def file_problems(section: str, settings: object, keys: tuple[str, ...]) -> list[str]:
    """``section.key: no such file '...'`` for each named path that is set but missing."""
    out = []
    for key in keys:
        path = getattr(settings, key)
        if path and not Path(path).is_file():
            out.append(f"{section}.{key}: no such file {path!r}")
    return out


class TlsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """TLS towards a server. Off unless ``enabled``; empty paths mean system defaults."""

    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    #: Skip hostname verification (test setups with self-signed certs only).
    insecure: bool = False

    def problems(self, section: str) -> list[str]:
        """Missing files, as ``section.key: problem``."""
        return file_problems(section, self, ("ca_file", "cert_file", "key_file"))

    def context(self) -> ssl.SSLContext:
        """A client context: the CA (or the system's), the client certificate if set."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        if self.insecure:
            ctx.check_hostname = False
        return ctx


class KafkaSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where Kafka is and how to reach it: servers, topic prefix, TLS and SASL."""

    #: ``["host:port", ...]`` or one comma-separated string.
    bootstrap_servers: tuple[str, ...] | str = ("127.0.0.1:9092",)
    #: Topic names are ``<prefix>.telemetry``, ``<prefix>.alerts``, ...
    topic_prefix: str = "thermowatch"
    client_id: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""

    @property
    def tls(self) -> TlsSettings:
        """The ``ssl_*`` keys as the shared TLS block (the keys keep Kafka's names)."""
        return TlsSettings(
            enabled=self.security_protocol in ("SSL", "SASL_SSL"),
            ca_file=self.ssl_ca_file,
            cert_file=self.ssl_cert_file,
            key_file=self.ssl_key_file,
        )

    @property
    def insecure(self) -> str:
        """What the connection lacks (``"no TLS"``, ``"no authentication"``, both), or ``""``.

        Each stage logs it as a warning at start: plaintext must be asked for
        explicitly, and stay visible.

        >>> KafkaSettings().insecure
        'no TLS, no authentication'
        >>> KafkaSettings(security_protocol="SASL_SSL", sasl_username="u").insecure
        ''
        """
        lacks = []
        if self.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            lacks.append("no TLS")
        if not self.security_protocol.startswith("SASL") and not self.ssl_cert_file:
            lacks.append("no authentication")
        return ", ".join(lacks)

    @property
    def servers(self) -> tuple[str, ...]:
        """The bootstrap servers as a tuple (empty: Kafka is not used)."""
        raw = self.bootstrap_servers
        parts = raw.split(",") if isinstance(raw, str) else raw
        return tuple(s.strip() for s in parts if s.strip())

    def problems(self, section: str = "kafka", *, required: bool = True) -> list[str]:
        """Problems as ``section.key: problem`` (``required=False``: no servers is fine)."""
        out: list[str] = []
        if required and not self.servers:
            out.append(f"{section}.bootstrap_servers: must list at least one host:port")
        for server in self.servers:
            out += server_problems(f"{section}.bootstrap_servers", server)
        if not NAME_PATTERN.fullmatch(self.topic_prefix):
            out.append(
                f"{section}.topic_prefix: must match {NAME_PATTERN.pattern}, "
                f"got {self.topic_prefix!r}"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            out.append(
                f"{section}.sasl_username: required with security_protocol {self.security_protocol}"
            )
        out += file_problems(section, self, ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"))
        return out

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for the connection (servers, client id, TLS, SASL)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": list(self.servers),
            "security_protocol": self.security_protocol,
        }
        if self.client_id:
            opts["client_id"] = self.client_id
        if self.security_protocol in ("SSL", "SASL_SSL"):
            opts["ssl_context"] = self.tls.context()
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password
        return opts


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``/metrics``, ``/healthz`` and ``/readyz`` (:mod:`stagekit.health`). Port 0 picks one."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464

    def problems(self, section: str = "http") -> list[str]:
        """The listen address's problems as ``section.key: problem``."""
        return host_problems(f"{section}.host", self.host)
