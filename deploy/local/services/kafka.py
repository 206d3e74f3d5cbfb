"""Apache Kafka 4.4 in KRaft mode: one process that is both broker and controller
(three of them in the cluster profile, ``stack up --cluster``).

The jars come from ``deploy/local/maven/kafka/pom.xml`` (Maven Central) into
the cache. The log dir is formatted once, with a cluster id kept in
``state.json`` so that a re-format after a lost ``meta.properties`` reuses it.
Health check: a real admin request (DescribeCluster) through aiokafka, as ``admin``.

Security (the default): the client listener speaks SASL_SSL with SCRAM-SHA-512
only; the broker also uses it for itself (inter-broker). The controller
listener is on 127.0.0.1 and wants TLS with a client certificate signed by the
stack's CA (only the node itself has one). The certificates come from
:mod:`deploy.local.kafka_tls`. One SCRAM user per service (``admin`` for tests
and tools, ``gateway``, ``processor``, ``web``) plus ``broker``; their
passwords are generated the first time, kept in ``<stack>/kafka-secrets.json``
(0600) and written into the metadata log when the storage is formatted.

Why at format time, and how: ``kafka-storage format --add-scram`` is the only
way to create SCRAM users before any SCRAM listener can authenticate anybody
(KRaft keeps them in the metadata log), and it takes them only as arguments.
So the arguments go into a Java ``@argfile`` (0600, removed afterwards): the
``java`` launcher expands it, and ``/proc/<pid>/cmdline`` shows only its path.

``THERMOWATCH_KAFKA_PLAINTEXT=1`` asks for the old plaintext, unauthenticated
listener instead (logged as a warning at every start).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Final

import msgspec

from deploy.local.errors import StackError
from deploy.local.install import ensure_java, maven_libs, tool
from deploy.local.kafka_tls import ensure_broker_tls
from deploy.local.layout import TEMPLATE_DIR, render, write_private
from deploy.local.process import flock, port_open
from deploy.local.services.base import Launch, Service, StackContext
from stagekit.settings import KafkaSettings

__all__ = [
    "DEFAULT_KAFKA_PORT",
    "KAFKA_HEAP",
    "KAFKA_MECHANISM",
    "KAFKA_PLAINTEXT_ENV",
    "KAFKA_PORT_ENV",
    "KAFKA_USERS",
    "Kafka",
    "kafka_healthy",
    "new_cluster_id",
    "security_lines",
]

logger = logging.getLogger(__name__)

KAFKA_PORT_ENV: Final = "THERMOWATCH_KAFKA_PORT"
#: ``1``/``true``/``yes``: a plaintext listener without authentication (warned about).
KAFKA_PLAINTEXT_ENV: Final = "THERMOWATCH_KAFKA_PLAINTEXT"
DEFAULT_KAFKA_PORT: Final = 19092
KAFKA_HEAP: Final = ("-Xms256m", "-Xmx1g")
KAFKA_MECHANISM: Final = "SCRAM-SHA-512"
#: The SCRAM users clients get: tests and tools, then one per service.
KAFKA_USERS: Final[tuple[str, ...]] = ("admin", "gateway", "processor", "web")
#: The broker's own user (inter-broker connections); never handed to clients.
BROKER_USER: Final = "broker"
#: The node's certificate (``kafka_tls``) as an SSL principal: its own controller client.
NODE_PRINCIPAL: Final = "User:CN=thermowatch kafka broker,O=thermowatch"
#: What each service user may do (StandardAuthorizer; ``admin`` and the broker are
#: super users, anything not listed is denied): ``(user, resource, pattern, name, op)``.
#: Topic names vary with each run's prefix, so topics are ``*``; what differs is the
#: operation: the gateway only writes (never reads), the web view only reads.
KAFKA_ACLS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    *(("gateway", "TOPIC", "LITERAL", "*", op) for op in ("DESCRIBE", "WRITE", "CREATE")),
    *(("processor", "TOPIC", "LITERAL", "*", op) for op in ("DESCRIBE", "READ", "WRITE", "CREATE")),
    *(("processor", "GROUP", "LITERAL", "*", op) for op in ("DESCRIBE", "READ")),
    *(("web", "TOPIC", "LITERAL", "*", op) for op in ("DESCRIBE", "READ")),
)
#: In the data dir: a digest of the ACLs applied to this metadata log.
ACL_MARKER: Final = "thermowatch-acls.sha256"
#: In the data dir: a digest of the secrets the metadata log was formatted with.
SCRAM_MARKER: Final = "thermowatch-scram.sha256"
_JAAS: Final = "org.apache.kafka.common.security.scram.ScramLoginModule"
#: The least time a health probe gives each step (TLS handshake, SASL, the request).
PROBE_TIMEOUT_S: Final = 30.0


def plaintext_requested() -> bool:
    """True when ``$THERMOWATCH_KAFKA_PLAINTEXT`` explicitly asks for a plaintext listener."""
    return os.environ.get(KAFKA_PLAINTEXT_ENV, "").strip().lower() in ("1", "true", "yes")


def security_lines(
    host: str,
    port: int,
    controller_port: int,
    *,
    plaintext: bool = False,
    keystore: Path | None = None,
    ca_file: Path | None = None,
    key_password: str = "",
    broker_password: str = "",
) -> str:
    """The listener and TLS/SASL lines of the server properties.

    >>> print(security_lines("127.0.0.1", 9092, 9093, plaintext=True))
    listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
    advertised.listeners=PLAINTEXT://127.0.0.1:9092
    inter.broker.listener.name=PLAINTEXT
    listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
    >>> text = security_lines("127.0.0.1", 9092, 9093, keystore=Path("/k.p12"),
    ...                       ca_file=Path("/ca.pem"), key_password="kp", broker_password="bp")
    >>> "CLIENT:SASL_SSL,CONTROLLER:SSL" in text, "sasl.enabled.mechanisms=SCRAM-SHA-512" in text
    (True, True)
    """
    if plaintext:
        return "\n".join(
            [
                f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{host}:{port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        )
    jaas = f'{_JAAS} required username="{BROKER_USER}" password="{broker_password}";'
    return "\n".join(
        [
            f"listeners=CLIENT://{host}:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=CLIENT://{host}:{port}",
            "inter.broker.listener.name=CLIENT",
            "listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:SSL",
            # SCRAM only: no PLAIN, and no listener without TLS.
            f"sasl.enabled.mechanisms={KAFKA_MECHANISM}",
            f"listener.name.client.sasl.enabled.mechanisms={KAFKA_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={KAFKA_MECHANISM}",
            f"listener.name.client.{KAFKA_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            # The controller listener: only a certificate signed by the stack's CA.
            "listener.name.controller.ssl.client.auth=required",
            # Authorization: what is not allowed by an ACL (KAFKA_ACLS) is denied.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{BROKER_USER};User:admin;{NODE_PRINCIPAL}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={keystore}",
            f"ssl.keystore.password={key_password}",
            f"ssl.key.password={key_password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca_file}",
            "ssl.enabled.protocols=TLSv1.3,TLSv1.2",
        ]
    )


class Kafka(Service):
    """The broker on ``127.0.0.1:19092``, its controller on the port + 1.

    In the cluster profile, node ``n`` of 3 listens on 19092 + 10 (n - 1) (its
    controller on that + 1): every node is broker and controller (a static quorum
    of three voters), topics get 3 replicas and ``min.insync.replicas=2``.
    """

    name = "kafka"
    port_env = KAFKA_PORT_ENV
    default_port = DEFAULT_KAFKA_PORT
    cmdline_marker = b"kafka.Kafka"
    cluster_nodes = 3

    def __init__(
        self, ctx: StackContext, port: int | None = None, *, node: int = 1, nodes: int = 1
    ) -> None:
        super().__init__(ctx, port, node=node, nodes=nodes)
        #: Read once, when the stack is made: ``$THERMOWATCH_KAFKA_PLAINTEXT``.
        self.plaintext = plaintext_requested()

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def node_bootstrap(self) -> str:
        """This node's own ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated (one for a single node)."""
        return ",".join(f"{self.host}:{self.node_port(n)}" for n in self.node_ids())

    @property
    def replication_factor(self) -> int:
        """Replicas of every topic: 3 in a cluster (at most the node count), else 1."""
        return min(3, self.nodes)

    def quorum_line(self) -> str:
        """How the node finds the controller quorum: a dynamic quorum of one (formatted
        ``--standalone``) for a single node, the static voters of a cluster
        (:func:`cluster_quorum`)."""
        if not self.clustered:
            return f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        return cluster_quorum("127.0.0.1", [(n, self.node_port(n) + 1) for n in self.node_ids()])

    @property
    def tls_dir(self) -> Path:
        return self.layout.root / "kafka-tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def secrets_file(self) -> Path:
        return self.layout.root / "kafka-secrets.json"

    def address(self) -> dict[str, Any]:
        """``bootstrap``, and how to connect: protocol, SASL mechanism and the CA file."""
        cluster = {"replication_factor": self.replication_factor} if self.clustered else {}
        if self.plaintext:
            return {"bootstrap": self.bootstrap, "security_protocol": "PLAINTEXT", **cluster}
        return {
            "bootstrap": self.bootstrap,
            **cluster,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": KAFKA_MECHANISM,
            "ca_file": str(self.ca_file),
        }

    def security(self) -> dict[str, Any]:
        if self.plaintext:
            return {"tls": False, "auth": "none"}
        return {"tls": True, "auth": KAFKA_MECHANISM.lower()}

    def endpoint(self) -> dict[str, Any]:
        """:meth:`address` plus ``users``: the SCRAM password of each client user."""
        ep = super().endpoint()
        if not self.plaintext:
            secrets = self.secrets()
            ep["users"] = {name: secrets[name] for name in KAFKA_USERS}
        return ep

    def settings(self, user: str = "admin") -> KafkaSettings:
        """Client settings for ``user`` (one of :data:`KAFKA_USERS`)."""
        from stagekit.kafka import settings_for

        return settings_for(self.endpoint(), user)

    def secrets(self) -> dict[str, str]:
        """``{user: password, "key_password": ...}``, generated (0600) on first use."""
        with flock(self.layout.run_dir / "kafka-secrets.lock"):
            if self.secrets_file.exists():
                data: dict[str, str] = json.loads(self.secrets_file.read_text(encoding="utf-8"))
                return data
            from deploy.local.credentials import new_password

            data = {name: new_password() for name in (*KAFKA_USERS, BROKER_USER, "key_password")}
            self.secrets_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.secrets_file, json.dumps(data, indent=2) + "\n")
            # A keystore encrypted with a lost key password is of no use.
            (self.tls_dir / "broker.p12").unlink(missing_ok=True)
            return data

    def rotate(self, user: str, timeout: float = 120.0, *, password: str | None = None) -> None:
        """Give ``user`` (one of :data:`KAFKA_USERS`) a new random password (or
        ``password``), on the running broker and in ``kafka-secrets.json``.

        The broker gets it first (AlterUserScramCredentials as ``admin``, through
        ``deploy/local/KafkaAdmin.java``, passwords on its stdin); then the file.
        Connections already authenticated stay open; every new one needs it.
        """
        if user not in KAFKA_USERS:
            raise StackError(
                f"kafka rotate: unknown user {user!r} (one of {', '.join(KAFKA_USERS)})"
            )
        if self.plaintext:
            raise StackError("kafka rotate: this stack's Kafka has no users (plaintext listener)")
        from deploy.local.credentials import new_password

        password = password or new_password()
        self._admin_tool(["scram", user], password + "\n", timeout)
        with flock(self.layout.run_dir / "kafka-secrets.lock"):
            secrets = json.loads(self.secrets_file.read_text(encoding="utf-8"))
            secrets[user] = password
            write_private(self.secrets_file, json.dumps(secrets, indent=2) + "\n")
        # The metadata log holds the new password now: no reformat at the next start
        # (of any node: they share the metadata log).
        for node in self.node_ids():
            marker = self.layout.data_dir(self._node_name(node)) / SCRAM_MARKER
            if marker.parent.exists():
                marker.write_text(self._secrets_digest() + "\n", encoding="utf-8")
        logger.info("kafka password rotated user=%s", user)

    def _admin_tool(self, args: list[str], stdin: str, timeout: float = 120.0) -> None:
        """``deploy/local/KafkaAdmin.java`` as ``admin`` (its password first on stdin)."""
        done = subprocess.run(
            [
                tool("java"),
                "-cp",
                f"{self.layout.cache / 'kafka-libs'}/*",
                str(TEMPLATE_DIR / "KafkaAdmin.java"),
                self.bootstrap,
                str(self.ca_file),
                "admin",
                *args,
            ],
            input=f"{self.secrets()['admin']}\n{stdin}",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise StackError(f"kafka {args[0]}: exit {done.returncode}: {' | '.join(tail)}")

    def ensure_acls(self) -> bool:
        """Add :data:`KAFKA_ACLS` once per metadata log (a digest in the data dir says
        which were added); True when they are in place."""
        spec = "".join(f"User:{u} {r} {p} {n} {o}\n" for u, r, p, n, o in KAFKA_ACLS)
        digest = hashlib.sha256(spec.encode("utf-8")).hexdigest()
        marker = self.layout.data_dir(self.node_name) / ACL_MARKER
        if marker.exists() and marker.read_text(encoding="utf-8").strip() == digest:
            return True
        self._admin_tool(["acls"], spec)
        marker.write_text(digest + "\n", encoding="utf-8")
        logger.info("kafka acls added count=%d", len(KAFKA_ACLS))
        return True

    def install(self) -> None:
        ensure_java()
        maven_libs(self.layout.cache, "kafka")

    def _node_name(self, node: int) -> str:
        return f"{self.name}-{node}" if self.clustered else self.name

    def _props_text(self) -> str:
        data = self.layout.data_dir(self.node_name)
        if self.plaintext:
            security = security_lines(self.host, self.port, self.controller_port, plaintext=True)
        else:
            secrets = self.secrets()
            tls = ensure_broker_tls(
                self.tls_dir, (self.host, "127.0.0.1", "localhost"), secrets["key_password"]
            )
            security = security_lines(
                self.host,
                self.port,
                self.controller_port,
                keystore=tls.keystore_file,
                ca_file=tls.ca_file,
                key_password=tls.key_password,
                broker_password=secrets[BROKER_USER],
            )
        return render(
            "kafka-server.properties",
            node_id=self.node,
            security=security,
            quorum=self.quorum_line(),
            log_dir=data,
            replication=replication_lines(self.replication_factor),
        )

    def config_changed(self) -> bool:
        """The listeners or settings differ from what the running broker was started with."""
        props = self.layout.run_dir / f"{self.node_name}-server.properties"
        try:
            return props.read_text(encoding="utf-8") != self._props_text()
        except OSError:
            return False

    def launch(self) -> Launch:
        """Render the server and log4j2 properties; format the log dir the first time."""
        libs = self.layout.cache / "kafka-libs"
        run_dir = self.layout.run_dir
        data = self.layout.data_dir(self.node_name)
        if self.plaintext:
            logger.warning(
                "kafka listener is PLAINTEXT without authentication (%s is set): "
                "anyone who reaches %s can read and write every topic",
                KAFKA_PLAINTEXT_ENV, self.bootstrap,
            )  # fmt: skip
        props = run_dir / f"{self.node_name}-server.properties"
        write_private(props, self._props_text())
        log4j = run_dir / "kafka-log4j2.properties"
        shutil.copyfile(TEMPLATE_DIR / "kafka-log4j2.properties", log4j)
        java = [
            tool("java"),
            f"-Dlog4j2.configurationFile={log4j}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
        ]
        wanted = "" if self.plaintext else self._secrets_digest()
        if (data / "meta.properties").exists() and wanted and self._formatted_digest() != wanted:
            # Formatted without these SCRAM users (an older stack, or lost secrets): the
            # users can only be added at format time, so the local data starts again.
            logger.warning(
                "kafka storage has no SCRAM users for the current secrets: reformatting dir=%s",
                data,
            )
            shutil.rmtree(data)
        if not (data / "meta.properties").exists():
            self._format(java, props)
        return Launch([java[0], *KAFKA_HEAP, "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)])

    def _secrets_digest(self) -> str:
        raw = json.dumps(self.secrets(), sort_keys=True).encode("utf-8")
        return hashlib.sha256(raw).hexdigest()

    def _formatted_digest(self) -> str:
        try:
            marker = self.layout.data_dir(self.node_name) / SCRAM_MARKER
            return marker.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _format(self, java: list[str], props: Path) -> None:
        """``kafka-storage format --standalone`` (with ``--add-scram`` for each user),
        output appended to the service log; a node of a cluster is formatted for the
        static voters of its properties (every node with the same users)."""
        data = self.layout.data_dir(self.node_name)
        cluster_id = self.ctx.state.read().get("kafka_cluster_id") or new_cluster_id()
        self.ctx.state.record(kafka_cluster_id=cluster_id)
        logger.info("formatting kafka storage dir=%s cluster_id=%s", data, cluster_id)
        args = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
        args += ["--ignore-formatted"] if self.clustered else ["--standalone", "--ignore-formatted"]
        if not self.plaintext:
            for user, password in self.secrets().items():
                if user != "key_password":
                    args += ["--add-scram", f"{KAFKA_MECHANISM}=[name={user},password={password}]"]
        # The java launcher expands @argfile itself: the passwords never reach a command line.
        argfile = self.layout.run_dir / f"{self.node_name}-format.args"
        write_private(argfile, "\n".join(args) + "\n")
        try:
            with self.process.log_file.open("ab") as fh:
                done = subprocess.run(
                    [*java, f"@{argfile}"],
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                    check=False,
                )
        finally:
            argfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise StackError(self.process.failure(f"storage format exit {done.returncode}"))
        if not self.plaintext:
            (data / SCRAM_MARKER).write_text(self._secrets_digest() + "\n", encoding="utf-8")

    def probe(self, timeout: float) -> bool:
        if not port_open(self.host, self.port, timeout=min(timeout, 1.0)):
            return False  # not listening: no need for the secrets yet
        if self.plaintext:
            return kafka_healthy(self.node_bootstrap, timeout)
        # This node answers (DescribeCluster through it alone), and the services can use
        # the cluster: their ACLs are in place (node 1 adds them: the metadata log is shared).
        own = msgspec.structs.replace(self.settings("admin"), bootstrap_servers=self.node_bootstrap)
        if not kafka_healthy(own, timeout):
            return False
        return self.node != 1 or self.ensure_acls()


def cluster_quorum(host: str, voters: list[tuple[int, int]]) -> str:
    """The static controller quorum of a cluster: ``(node id, controller port)`` each.

    >>> cluster_quorum("127.0.0.1", [(1, 9093), (2, 9103), (3, 9113)])
    'controller.quorum.voters=1@127.0.0.1:9093,2@127.0.0.1:9103,3@127.0.0.1:9113'
    """
    return "controller.quorum.voters=" + ",".join(f"{n}@{host}:{port}" for n, port in voters)


def replication_lines(replicas: int) -> str:
    """Replication defaults: a record is acknowledged (``acks=all``) once all in-sync
    replicas have it, and with 3 replicas at least 2 must be in sync, so a broker
    lost after the acknowledgement loses nothing and one broker down stops nothing.

    >>> print(replication_lines(1))
    default.replication.factor=1
    min.insync.replicas=1
    offsets.topic.replication.factor=1
    transaction.state.log.replication.factor=1
    transaction.state.log.min.isr=1
    share.coordinator.state.topic.replication.factor=1
    share.coordinator.state.topic.min.isr=1
    >>> replication_lines(3).splitlines()[:2]
    ['default.replication.factor=3', 'min.insync.replicas=2']
    """
    min_isr = 2 if replicas >= 3 else 1
    return "\n".join(
        [
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
        ]
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-``: the storage tool would read it as an option
    (Kafka's own Uuid generator avoids those too).

    >>> cid = new_cluster_id()
    >>> len(cid), cid.startswith("-"), "=" in cid
    (22, False, False)
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


async def _close_conn(conn: Any, wait_s: float = 2.0) -> None:
    """Close an aiokafka connection and wait (bounded) until its socket is closed.

    ``close()`` only starts the TLS shutdown; ``asyncio.run`` would close the loop
    before it ends under load, leaving the socket open (a ResourceWarning, an error
    in the tests). Past ``wait_s`` the transport is aborted instead.
    """
    conn.close()
    closed = getattr(conn, "_closed_fut", None)
    protocol = getattr(conn, "_protocol", None)
    if closed is None or protocol is None:  # no transport was made
        await asyncio.sleep(0)
        return
    try:
        await asyncio.wait_for(asyncio.shield(closed), wait_s)
    except TimeoutError:
        transport = getattr(protocol, "_transport", None)
        if transport is not None:
            transport.abort()
        await asyncio.sleep(0)


def kafka_healthy(kafka: KafkaSettings | str, timeout: float) -> bool:
    """A real, authenticated metadata request to ``kafka``'s first server, through
    aiokafka with ``kafka``'s TLS and SASL: it answers with the live brokers.

    Runs in a worker thread with its own event loop, so it works whether or not
    the caller is inside a running loop (async tests call wait_healthy too).
    """
    settings = KafkaSettings(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    host, _, port = settings.servers[0].rpartition(":")
    if not port_open(host, int(port), timeout=min(timeout, 1.0)):
        return False  # not listening yet: spare the aiokafka connection errors

    async def probe() -> bool:
        # One connection to that server alone (an admin client would send its request
        # to any broker it learnt of, so a dead node 2 could fail the check of a
        # healthy node 1). A TLS handshake cut off by a timeout leaves its socket open
        # (asyncio closes an SSL transport asynchronously, after the loop is gone), so
        # a slow broker (a JVM starting beside five others) gets a generous timeout,
        # and the connection is closed down to its socket whatever happened.
        from aiokafka.conn import AIOKafkaConnection
        from aiokafka.protocol.metadata import MetadataRequest

        options = settings.client_options()
        options.pop("bootstrap_servers")
        # What aiokafka's create_conn does, keeping hold of the connection when its
        # connect fails too, so that it is closed here either way.
        request_timeout_ms = int(max(timeout, PROBE_TIMEOUT_S) * 1000)
        conn = AIOKafkaConnection(host, int(port), **options, request_timeout_ms=request_timeout_ms)
        try:
            await conn.connect()
            metadata = await conn.send(MetadataRequest([]))
        finally:
            await _close_conn(conn)
        return bool(metadata.brokers)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-health") as pool:
        return pool.submit(asyncio.run, probe()).result(max(timeout, PROBE_TIMEOUT_S) * 2 + 10)
