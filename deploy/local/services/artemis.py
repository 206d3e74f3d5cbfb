"""Apache ActiveMQ Artemis (optional service ``artemis``): a durable MQTT 5 broker.

Mosquitto acknowledges a QoS 1 PUBLISH before anything is on disk; Artemis
writes it to its journal and syncs the file first (``journal-datasync``), so
what it acknowledged survives a SIGKILL. Started only when named
(``stack up artemis``); Mosquitto stays the default broker.

The distribution (Maven Central ``org.apache.activemq:apache-artemis``, the
``bin`` zip) is fetched once per version with Maven's strict checksum policy
and checked against the SHA-256 recorded here, then unzipped into the cache.
The instance (``etc/`` and the journal) lives in ``<stack>/data/artemis``;
``etc/`` is rendered afresh at every start. Same listeners as Mosquitto, both
TLS with the installation's CA: the client port takes a client certificate
(its subject names the user), the port after it a user name and password;
users and roles come from ``credentials.json`` (:mod:`deploy.local.artemis_auth`).
Health check: an MQTT v5 connect as ``admin`` with its client certificate.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Final

from deploy.local.artemis_auth import (
    cert_users_text,
    roles_text,
    security_settings_xml,
    users_text,
)
from deploy.local.errors import StackError
from deploy.local.install import ensure_java, maven_zip, tool
from deploy.local.layout import render, write_private
from deploy.local.services.base import Launch
from deploy.local.services.mqtt_broker import MqttBroker

__all__ = [
    "ARTEMIS_ARTIFACT",
    "ARTEMIS_HEAP",
    "ARTEMIS_PORT_ENV",
    "ARTEMIS_SHA256",
    "ARTEMIS_VERSION",
    "DEFAULT_ARTEMIS_PORT",
    "Artemis",
]

logger = logging.getLogger(__name__)

ARTEMIS_PORT_ENV: Final = "THERMOWATCH_ARTEMIS_PORT"
DEFAULT_ARTEMIS_PORT: Final = 18883
ARTEMIS_VERSION: Final = "2.40.0"
ARTEMIS_ARTIFACT: Final = f"org.apache.activemq:apache-artemis:{ARTEMIS_VERSION}:zip:bin"
#: SHA-256 of apache-artemis-2.40.0-bin.zip (its SHA-1 on Maven Central:
#: 6e214d287bcc2b9d788230b63f17bb76983bf9dd, which Maven checks with -C).
ARTEMIS_SHA256: Final = "09f0445a4c3cd5eaec1d3bfbe2acb20459d21fe6edac6e3c425916a6a4da9189"
ARTEMIS_HEAP: Final = ("-Xms128m", "-Xmx384m")

_LOGIN_CONFIG: Final = """\
// written by deploy/local/services/artemis.py at every start
certificates {
   org.apache.activemq.artemis.spi.core.security.jaas.TextFileCertificateLoginModule required
      reload=true
      org.apache.activemq.jaas.textfiledn.user="cert-users.properties"
      org.apache.activemq.jaas.textfiledn.role="cert-roles.properties";
};
passwords {
   org.apache.activemq.artemis.spi.core.security.jaas.PropertiesLoginModule required
      reload=true
      org.apache.activemq.jaas.properties.user="artemis-users.properties"
      org.apache.activemq.jaas.properties.role="artemis-roles.properties";
};
"""

_LOG4J: Final = """\
# written by deploy/local/services/artemis.py: to stdout, which the stack appends
# to <stack>/logs/artemis.log
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = console
logger.audit.name = org.apache.activemq.audit
logger.audit.level = OFF
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d %-5level [%logger] %msg%n
"""


class Artemis(MqttBroker):
    """The broker on ``127.0.0.1:18883`` (certificates) and ``:18884`` (passwords),
    both TLS; the instance in ``<stack>/data/artemis``, the CA in ``<stack>/pki``."""

    name = "artemis"
    port_env = ARTEMIS_PORT_ENV
    default_port = DEFAULT_ARTEMIS_PORT
    cmdline_marker = b"org.apache.activemq.artemis.boot.Artemis"
    optional = True

    def install(self) -> None:
        ensure_java()
        self._home()

    def _home(self) -> Path:
        """``<cache>/apache-artemis-<version>``: fetched, checked and unzipped once."""
        return maven_zip(
            self.layout.cache,
            ARTEMIS_ARTIFACT,
            f"apache-artemis-{ARTEMIS_VERSION}",
            f"{ARTEMIS_VERSION} {ARTEMIS_SHA256}",
            check=_check_sha256,
            strict_checksums=True,  # a download whose SHA-1 differs fails
        )

    @property
    def instance(self) -> Path:
        return self.layout.data_dir(self.name)

    @property
    def etc(self) -> Path:
        return self.instance / "etc"

    def launch(self) -> Launch:
        """Render ``etc/`` (users, roles, broker.xml) and start the broker's JVM."""
        home = self._home()
        for folder in (self.etc, self.instance / "data", self.instance / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        credentials = self.ctx.credentials
        with credentials.locked():
            self.pki.ensure_server(self.host)
            self.pki.issue_missing(credentials.load())
            self._write_auth_files()
        keystore = self.etc / "server.pem"
        write_private(
            keystore, self.pki.server_key.read_bytes() + self.pki.server_cert.read_bytes()
        )
        (self.etc / "login.config").write_text(_LOGIN_CONFIG, encoding="utf-8")
        (self.etc / "log4j2.properties").write_text(_LOG4J, encoding="utf-8")
        # No JMX connector, no web console: MQTT is all this broker serves.
        (self.etc / "management.xml").write_text(
            '<management-context xmlns="http://activemq.apache.org/schema"/>\n', encoding="utf-8"
        )
        (self.etc / "bootstrap.xml").write_text(
            '<broker xmlns="http://activemq.apache.org/schema">\n'
            '   <jaas-security domain="passwords"/>\n'
            f'   <server configuration="{(self.etc / "broker.xml").as_uri()}"/>\n'
            "</broker>\n",
            encoding="utf-8",
        )
        argv = [
            tool("java"),
            *ARTEMIS_HEAP,
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={(self.etc / 'log4j2.properties').as_uri()}",
            "-Dlog4j2.disableJmx=true",
            f"-Djava.security.auth.login.config={self.etc / 'login.config'}",
            "--add-opens",
            "java.base/jdk.internal.misc=ALL-UNNAMED",
            "-classpath",
            str(home / "lib" / "artemis-boot.jar"),
            f"-Dartemis.home={home}",
            f"-Dartemis.instance={self.instance}",
            f"-Dartemis.instance.etc={self.etc}",
            f"-Djava.io.tmpdir={self.instance / 'tmp'}",
            f"-Ddata.dir={self.instance / 'data'}",
            "org.apache.activemq.artemis.boot.Artemis",
            "run",
        ]
        return Launch(argv)

    def _write_auth_files(self) -> None:
        """Users, roles and broker.xml from credentials.json (the caller holds its lock).

        Written at start only: ``devices add``/``remove``/``rotate`` update
        Mosquitto; a running Artemis takes them at its next start."""
        users = self.ctx.credentials.load()
        sites = self.ctx.credentials.load_sites()
        roles = roles_text(users, sites)
        write_private(self.etc / "artemis-users.properties", users_text(users, sites))
        write_private(self.etc / "artemis-roles.properties", roles)
        write_private(self.etc / "cert-users.properties", cert_users_text(users, sites))
        write_private(self.etc / "cert-roles.properties", roles)
        write_private(self.etc / "broker.xml", self._config_text(users, sites))

    def _config_text(self, users: dict[str, str], sites: dict[str, str]) -> str:
        return render(
            "artemis-broker.xml",
            host=self.host,
            port=self.port,
            password_port=self.password_port,
            keystore=self.etc / "server.pem",
            ca_file=self.pki.ca_file,
            crl_file=self.pki.crl_file,
            data=self.instance / "data",
            security_settings=security_settings_xml(users, sites),
        )


def _check_sha256(archive: Path) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != ARTEMIS_SHA256:
        raise StackError(f"artemis: {archive.name} has SHA-256 {digest}, expected {ARTEMIS_SHA256}")
