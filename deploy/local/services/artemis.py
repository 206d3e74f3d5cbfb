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

In the cluster profile (``stack up --cluster artemis``) Artemis runs
:attr:`Artemis.cluster_nodes` nodes, each with its own instance and journal
(``<stack>/data/artemis-<n>``) and its own listeners (node ``n``: the client
port + 10 (n - 1), passwords on that + 1), plus a TLS core-protocol listener
for the other nodes on that + 2 (:attr:`Artemis.cluster_port`). Each node has a
``cluster-connection`` with static connectors to every other node (no UDP
discovery) for the ``thermowatch`` addresses: a message goes to another node only
when a queue of the same name there has a consumer (``ON_DEMAND``), so a shared
subscription's members on two nodes share its messages; a queue whose consumers
left its node hands its messages to the other nodes' queue after
:data:`REDISTRIBUTION_DELAY_MS`. The nodes log in to each other as the cluster
user of ``<stack>/artemis-cluster.json`` (0600, a random password made at first use).
No HA: what a node holds waits in its journal until it runs again.
"""

from __future__ import annotations

import hashlib
import json
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
from deploy.local.process import flock
from deploy.local.services.base import Launch
from deploy.local.services.mqtt_broker import MqttBroker

__all__ = [
    "ARTEMIS_ARTIFACT",
    "ARTEMIS_HEAP",
    "ARTEMIS_PORT_ENV",
    "ARTEMIS_SHA256",
    "ARTEMIS_VERSION",
    "CLUSTER_USER",
    "DEFAULT_ARTEMIS_PORT",
    "REDISTRIBUTION_DELAY_MS",
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
#: The user the nodes of a cluster log in to each other as (its password: artemis-cluster.json).
CLUSTER_USER: Final = "thermowatch-cluster"
#: How long a clustered queue without consumers keeps its messages before it hands
#: them to a queue of the same name on another node that has consumers.
REDISTRIBUTION_DELAY_MS: Final = 5000
#: The addresses the cluster connection balances: the pipeline's MQTT topics only
#: (not the broker's own, e.g. ``$sys.mqtt.sessions``: each node keeps its sessions).
CLUSTER_ADDRESSES: Final = "thermowatch"

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
    cluster_nodes = 2

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
        """``<stack>/data/artemis`` (a cluster's node ``n``: ``data/artemis-<n>``)."""
        return self.layout.data_dir(self.node_name)

    def cluster_port_of(self, node: int) -> int:
        """The core-protocol listener node ``node`` takes the other nodes' connections on."""
        return self.node_port(node) + 2

    @property
    def cluster_port(self) -> int:
        """This node's cluster listener (client port + 2); only in a cluster."""
        return self.cluster_port_of(self.node)

    @property
    def cluster_secrets_file(self) -> Path:
        return self.layout.root / "artemis-cluster.json"

    def cluster_secrets(self) -> dict[str, str]:
        """``{"user", "password"}`` the nodes log in to each other with; made (0600) on
        first use and shared by every node."""
        with flock(self.layout.run_dir / "artemis-cluster.lock"):
            if self.cluster_secrets_file.exists():
                data: dict[str, str] = json.loads(
                    self.cluster_secrets_file.read_text(encoding="utf-8")
                )
                return data
            from deploy.local.credentials import new_password

            data = {"user": CLUSTER_USER, "password": new_password()}
            self.cluster_secrets_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.cluster_secrets_file, json.dumps(data, indent=2) + "\n")
            return data

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
        keystore = self.etc / "server.pem"
        cluster = self._cluster_xml(keystore) if self.clustered else ("", "", "")
        return render(
            "artemis-broker.xml",
            name=f"thermowatch-{self.node_name}",
            host=self.host,
            port=self.port,
            password_port=self.password_port,
            keystore=keystore,
            ca_file=self.pki.ca_file,
            crl_file=self.pki.crl_file,
            data=self.instance / "data",
            security_settings=security_settings_xml(users, sites),
            cluster_acceptor=cluster[0],
            cluster_connection=cluster[1],
            redistribution=cluster[2],
        )

    def _cluster_xml(self, keystore: Path) -> tuple[str, str, str]:
        """What a cluster node adds to broker.xml: its cluster acceptor; its connectors
        (itself and every other node), cluster user and ``cluster-connection``; the
        redistribution delay of the address settings. Lines end with a newline."""
        secrets = self.cluster_secrets()
        acceptor = (
            "         <!-- The other nodes (core protocol, TLS, the cluster user). -->\n"
            f'         <acceptor name="cluster">tcp://{self.host}:{self.cluster_port}?protocols=CORE;'
            f"sslEnabled=true;keyStoreType=PEM;keyStorePath={keystore};"
            "enabledProtocols=TLSv1.2,TLSv1.3</acceptor>\n"
        )
        connectors = "".join(
            f'         <connector name="node-{n}">tcp://{self.host}:{self.cluster_port_of(n)}?'
            f"sslEnabled=true;trustStoreType=PEMCA;trustStorePath={self.pki.ca_file};"
            "verifyHost=true</connector>\n"
            for n in self.node_ids()
        )
        others = "".join(
            f"               <connector-ref>node-{n}</connector-ref>\n"
            for n in self.node_ids()
            if n != self.node
        )
        connection = (
            f"      <!-- Node {self.node} of {self.nodes}: static connectors, no UDP. -->\n"
            f"      <cluster-user>{secrets['user']}</cluster-user>\n"
            f"      <cluster-password>{secrets['password']}</cluster-password>\n"
            "      <connectors>\n"
            f"{connectors}"
            "      </connectors>\n"
            "      <cluster-connections>\n"
            '         <cluster-connection name="thermowatch-artemis">\n'
            f"            <address>{CLUSTER_ADDRESSES}</address>\n"
            f"            <connector-ref>node-{self.node}</connector-ref>\n"
            "            <check-period>1000</check-period>\n"
            "            <connection-ttl>5000</connection-ttl>\n"
            "            <retry-interval>500</retry-interval>\n"
            "            <max-retry-interval>2000</max-retry-interval>\n"
            "            <initial-connect-attempts>-1</initial-connect-attempts>\n"
            "            <reconnect-attempts>-1</reconnect-attempts>\n"
            "            <use-duplicate-detection>true</use-duplicate-detection>\n"
            "            <message-load-balancing>ON_DEMAND</message-load-balancing>\n"
            "            <max-hops>1</max-hops>\n"
            "            <static-connectors>\n"
            f"{others}"
            "            </static-connectors>\n"
            "         </cluster-connection>\n"
            "      </cluster-connections>\n"
        )
        redistribution = (
            f"            <redistribution-delay>{REDISTRIBUTION_DELAY_MS}</redistribution-delay>\n"
        )
        return acceptor, connection, redistribution


def _check_sha256(archive: Path) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != ARTEMIS_SHA256:
        raise StackError(f"artemis: {archive.name} has SHA-256 {digest}, expected {ARTEMIS_SHA256}")
