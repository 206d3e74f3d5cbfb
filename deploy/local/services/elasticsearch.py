"""Elasticsearch 8 (optional service ``elasticsearch``): the integration-test distribution.

Maven Central carries one Elasticsearch distribution, the zip its own
integration tests use (modules: transport-netty4, x-pack-core, x-pack-security,
apm; no ILM, no data streams, no rest-root). It is fetched and unzipped once
per version, with ``deploy/local/ElasticRootPlugin.java`` compiled into its
``plugins/`` to answer ``GET /`` (elasticsearch-py's ``info()`` needs it).

Elasticsearch refuses to run as root and has no switch to allow it: as root
the node runs as the system user ``thermowatch-es`` (created once), and its
distribution and data live under ``/var/lib/thermowatch-es`` because the
cache and the stack dir sit in root's home (mode 0700 on Debian), as the
Debian package uses /usr/share and /var/lib. Health check: elasticsearch-py's
``info()`` (which checks that the server is Elasticsearch) and cluster health
yellow or green.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import zipfile
from pathlib import Path
from typing import Final

from deploy.local.install import (
    ensure_java,
    file_digest,
    is_root,
    maven_zip,
    run,
    tool,
)
from deploy.local.layout import TEMPLATE_DIR
from deploy.local.process import port_open
from deploy.local.services.base import Launch, SearchNode

__all__ = [
    "DEFAULT_ELASTIC_PORT",
    "ELASTIC_ARTIFACT",
    "ELASTIC_HEAP",
    "ELASTIC_JAVA_HOME_ENV",
    "ELASTIC_PORT_ENV",
    "ELASTIC_SYSTEM_DIR",
    "ELASTIC_USER",
    "ELASTIC_VERSION",
    "Elasticsearch",
]

logger = logging.getLogger(__name__)

ELASTIC_PORT_ENV: Final = "THERMOWATCH_ELASTIC_PORT"
DEFAULT_ELASTIC_PORT: Final = 19201
#: The JDK Elasticsearch runs on (default: the one of ``java`` on PATH).
ELASTIC_JAVA_HOME_ENV: Final = "THERMOWATCH_ES_JAVA_HOME"
ELASTIC_VERSION: Final = "8.19.21"
ELASTIC_ARTIFACT: Final = (
    f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ELASTIC_VERSION}:zip"
)
ELASTIC_HEAP: Final = "-Xms512m -Xmx1g"
#: As root the node runs as this system user, with its files under this directory.
ELASTIC_USER: Final = "thermowatch-es"
ELASTIC_SYSTEM_DIR: Final = Path("/var/lib/thermowatch-es")
_CLUSTER_NAME: Final = "thermowatch-es"


class Elasticsearch(SearchNode):
    """The node on ``http://127.0.0.1:19201``, transport on the port + 100."""

    name = "elasticsearch"
    backend = "elasticsearch"
    port_env = ELASTIC_PORT_ENV
    default_port = DEFAULT_ELASTIC_PORT
    # setpriv, env, the bin/elasticsearch script and the CLI JVM it execs (same
    # pid) all carry the script path: -Dcli.script=<home>/bin/elasticsearch.
    cmdline_marker = b"/bin/elasticsearch"
    optional = True

    def install(self) -> None:
        ensure_java()
        self._home()
        self._user()

    def _home(self) -> Path:
        """``<cache>/elasticsearch-<version>``: the distribution plus the root plugin.

        Fetched with Maven and unzipped unless already complete for this
        version and plugin source (a marker file records both).
        """
        parent = ELASTIC_SYSTEM_DIR if is_root() else self.layout.cache
        source = TEMPLATE_DIR / "ElasticRootPlugin.java"
        return maven_zip(
            parent,
            ELASTIC_ARTIFACT,
            f"elasticsearch-{ELASTIC_VERSION}",
            f"{ELASTIC_VERSION} {file_digest(source)}",
            finish=lambda unpacked: _build_root_plugin(unpacked, source),
        )

    def _user(self) -> pwd.struct_passwd | None:
        """The account the node runs as when we are root (created once), else None."""
        if not is_root():
            return None
        try:
            return pwd.getpwnam(ELASTIC_USER)
        except KeyError:
            pass
        run(
            [
                tool("useradd"),
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                str(ELASTIC_SYSTEM_DIR),
                "--shell",
                "/usr/sbin/nologin",
                ELASTIC_USER,
            ],
            what=f"useradd {ELASTIC_USER}",
        )
        return pwd.getpwnam(ELASTIC_USER)

    def _base(self) -> Path:
        """Config, data, logs and tmp of the node: ``<stack>/data/elasticsearch``,
        or as root a directory of the service user that this path links to."""
        link = self.layout.data_dir(self.name)
        if not is_root():
            return link
        stack_id = hashlib.sha256(str(self.layout.root).encode()).hexdigest()[:12]
        base = ELASTIC_SYSTEM_DIR / f"stack-{stack_id}"
        base.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                link.rmdir()  # an empty directory left by an earlier layout
            link.symlink_to(base)
        return base

    def launch(self) -> Launch:
        """Write the config dir (``ES_PATH_CONF``) and run the distribution's own script."""
        home = self._home()
        base = self._base()
        config, data, logs, tmp = (base / d for d in ("config", "data", "logs", "tmp"))
        for folder in (config, data, logs, tmp):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(home / "config" / "log4j2.properties", config / "log4j2.properties")
        # The distribution's jvm.options, with its relative file paths (resolved
        # against the working directory, which is the caller's) made absolute.
        options = (home / "config" / "jvm.options").read_text(encoding="utf-8")
        options = options.replace("file=gc.log:", f"file={logs}/gc.log:")
        options = options.replace("-XX:ErrorFile=hs_err", f"-XX:ErrorFile={logs}/hs_err")
        (config / "jvm.options").write_text(options, encoding="utf-8")
        (config / "jvm.options.d").mkdir(exist_ok=True)
        settings: dict[str, object] = {
            "cluster.name": _CLUSTER_NAME,
            "node.name": "thermowatch-es",
            "network.host": self.host,
            "http.port": self.port,
            "transport.port": self.transport_port,
            "discovery.type": "single-node",
            "path.data": data,
            "path.logs": logs,
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        if (home / "modules" / "x-pack-security").is_dir():
            settings["xpack.security.enabled"] = "false"
        (config / "elasticsearch.yml").write_text(
            "# written by deploy/local/services/elasticsearch.py at every start\n"
            + "".join(f"{k}: {json.dumps(str(v))}\n" for k, v in settings.items()),
            encoding="utf-8",
        )
        env = dict(
            os.environ,
            ES_PATH_CONF=str(config),
            ES_JAVA_HOME=_java_home(),
            ES_JAVA_OPTS=ELASTIC_HEAP,
            ES_TMPDIR=str(tmp),
        )
        env.pop("JAVA_HOME", None)  # the script only warns that it ignores it
        argv = [tool("env"), "-C", str(base), str(home / "bin" / "elasticsearch")]
        user = self._user()
        if user is None:
            return Launch(argv, env)
        # What the node creates is its own already; this covers what we wrote.
        for path in (base, tmp, data, logs, config, *config.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        setpriv = [
            tool("setpriv"),
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--",
        ]
        return Launch([*setpriv, *argv], env)

    def probe(self, timeout: float) -> bool:
        """Cluster health yellow/green and elasticsearch-py's ``info()`` (which
        also checks that the server says it is Elasticsearch)."""
        if not port_open(self.host, self.port, timeout=min(timeout, 1.0)):
            return False
        from elasticsearch import Elasticsearch as Client

        client = Client(self.url, request_timeout=timeout, max_retries=0)
        try:
            client.info()
            health = client.cluster.health()
        finally:
            client.close()
        return health.get("status") in ("yellow", "green")


def _java_home() -> str:
    raw = os.environ.get(ELASTIC_JAVA_HOME_ENV)
    if raw:
        return raw
    return str(Path(tool("java")).resolve().parent.parent)


def _build_root_plugin(home: Path, source: Path) -> None:
    """Compile ElasticRootPlugin.java into ``<home>/plugins/thermowatch-root``."""
    classes = home / ".thermowatch-root-classes"
    classes.mkdir()
    run(
        [
            tool("javac"),
            "-nowarn",
            "--release",
            "17",
            "-d",
            str(classes),
            "-cp",
            f"{home}/lib/*",
            str(source),
        ],
        what="javac ElasticRootPlugin",
    )
    plugin = home / "plugins" / "thermowatch-root"
    plugin.mkdir(parents=True)
    with zipfile.ZipFile(plugin / "thermowatch-root.jar", "w") as jar:
        for path in sorted(classes.glob("*.class")):
            jar.write(path, path.name)
    (plugin / "plugin-descriptor.properties").write_text(
        "description=thermowatch: GET / (the distribution has no rest-root module)\n"
        f"version={ELASTIC_VERSION}\n"
        "name=thermowatch-root\n"
        "classname=ElasticRootPlugin\n"
        "java.version=17\n"
        f"elasticsearch.version={ELASTIC_VERSION}\n",
        encoding="utf-8",
    )
    shutil.rmtree(classes)
