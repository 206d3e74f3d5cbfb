"""Apache Kafka 4.4 in KRaft mode: one process that is both broker and controller.

The jars come from ``deploy/local/maven/kafka/pom.xml`` (Maven Central) into
the cache. The log dir is formatted once, with a cluster id kept in
``state.json`` so that a re-format after a lost ``meta.properties`` reuses it.
Health check: a real admin request (DescribeCluster) through aiokafka.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Final

from deploy.local.errors import StackError
from deploy.local.install import ensure_java, maven_libs, tool
from deploy.local.layout import TEMPLATE_DIR, render
from deploy.local.process import port_open
from deploy.local.services.base import Launch, Service

__all__ = [
    "DEFAULT_KAFKA_PORT",
    "KAFKA_HEAP",
    "KAFKA_PORT_ENV",
    "Kafka",
    "kafka_healthy",
    "new_cluster_id",
]

logger = logging.getLogger(__name__)

KAFKA_PORT_ENV: Final = "THERMOWATCH_KAFKA_PORT"
DEFAULT_KAFKA_PORT: Final = 19092
KAFKA_HEAP: Final = ("-Xms256m", "-Xmx1g")


class Kafka(Service):
    """The broker on ``127.0.0.1:19092``, its controller on the port + 1."""

    name = "kafka"
    port_env = KAFKA_PORT_ENV
    default_port = DEFAULT_KAFKA_PORT
    cmdline_marker = b"kafka.Kafka"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def address(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap}

    def install(self) -> None:
        ensure_java()
        maven_libs(self.layout.cache, "kafka")

    def launch(self) -> Launch:
        """Render the server and log4j2 properties; format the log dir the first time."""
        libs = self.layout.cache / "kafka-libs"
        run_dir = self.layout.run_dir
        data = self.layout.data_dir(self.name)
        props = run_dir / "kafka-server.properties"
        props.write_text(
            render(
                "kafka-server.properties",
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                log_dir=data,
            ),
            encoding="utf-8",
        )
        log4j = run_dir / "kafka-log4j2.properties"
        shutil.copyfile(TEMPLATE_DIR / "kafka-log4j2.properties", log4j)
        java = [
            tool("java"),
            f"-Dlog4j2.configurationFile={log4j}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
        ]
        if not (data / "meta.properties").exists():
            self._format(java, props)
        return Launch([java[0], *KAFKA_HEAP, "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)])

    def _format(self, java: list[str], props: Path) -> None:
        """``kafka-storage format --standalone``, output appended to the service log."""
        data = self.layout.data_dir(self.name)
        cluster_id = self.ctx.state.read().get("kafka_cluster_id") or new_cluster_id()
        self.ctx.state.record(kafka_cluster_id=cluster_id)
        logger.info("formatting kafka storage dir=%s cluster_id=%s", data, cluster_id)
        with self.process.log_file.open("ab") as fh:
            done = subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    "--standalone",
                    "--ignore-formatted",
                ],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            raise StackError(self.process.failure(f"storage format exit {done.returncode}"))

    def probe(self, timeout: float) -> bool:
        return kafka_healthy(self.bootstrap, timeout)


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


def kafka_healthy(bootstrap: str, timeout: float) -> bool:
    """A real admin request (DescribeCluster) through aiokafka.

    Runs in a worker thread with its own event loop, so it works whether or not
    the caller is inside a running loop (async tests call wait_healthy too).
    """
    host, _, port = bootstrap.rpartition(":")
    if not port_open(host, int(port), timeout=min(timeout, 1.0)):
        return False  # not listening yet: spare the aiokafka connection errors

    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(max(timeout, 1.0) * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        finally:
            await admin.close()
        return bool(cluster.get("brokers"))

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-health") as pool:
        return pool.submit(asyncio.run, probe()).result(timeout + 5.0)
