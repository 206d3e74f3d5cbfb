"""The thermowatch local stack: Mosquitto, Kafka (KRaft) and OpenSearch as plain processes.

Optional, started only when named: a real Elasticsearch 8 (``up(["elasticsearch"])``).

Everything listens on 127.0.0.1 on non-default ports, runs detached from the
caller (its own session, output appended to ``<stack>/logs/<svc>.log``) and
keeps its data under ``<stack>/data/<svc>/`` across ``down``/``up``.

:class:`LocalStack` is the orchestrator: the same start, wait, stop and
status steps for every service. What differs per service (ports, install,
config files, command line, health check) lives in one module per service
under :mod:`deploy.local.services`; process plumbing in
:mod:`deploy.local.process`, installing in :mod:`deploy.local.install`.

Example (needs the real services, so not run as a doctest)::

    stack = LocalStack()
    stack.up(["kafka"])
    stack.endpoints()["kafka"]["bootstrap"]  # '127.0.0.1:19092'
    stack.kill("kafka", signal.SIGKILL)      # chaos
    stack.up(["kafka"])                      # restart, waits until healthy
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from deploy.local.config_keys import ensure_key_pair
from deploy.local.credentials import SERVICE_USERS as SERVICE_USERS
from deploy.local.credentials import TEST_DEVICES as TEST_DEVICES
from deploy.local.credentials import Credentials, demo_fleet
from deploy.local.errors import StackError as StackError
from deploy.local.errors import UnknownUserError as UnknownUserError
from deploy.local.errors import UserExistsError as UserExistsError
from deploy.local.install import MVN_DEPENDENCY_PLUGIN as MVN_DEPENDENCY_PLUGIN
from deploy.local.layout import CACHE_DIR_ENV, STACK_DIR_ENV, StackLayout, StateFile
from deploy.local.layout import HOST as HOST
from deploy.local.pki import ClientTls, client_tls
from deploy.local.process import flock, free_port, port_open
from deploy.local.services import (
    OPTIONAL_SERVICES,
    REGISTRY,
    SERVICES,
    Service,
    StackContext,
    check_names,
)
from deploy.local.services.elasticsearch import DEFAULT_ELASTIC_PORT as DEFAULT_ELASTIC_PORT
from deploy.local.services.elasticsearch import ELASTIC_ARTIFACT as ELASTIC_ARTIFACT
from deploy.local.services.elasticsearch import ELASTIC_HEAP as ELASTIC_HEAP
from deploy.local.services.elasticsearch import ELASTIC_JAVA_HOME_ENV as ELASTIC_JAVA_HOME_ENV
from deploy.local.services.elasticsearch import ELASTIC_PORT_ENV as ELASTIC_PORT_ENV
from deploy.local.services.elasticsearch import ELASTIC_SYSTEM_DIR as ELASTIC_SYSTEM_DIR
from deploy.local.services.elasticsearch import ELASTIC_USER as ELASTIC_USER
from deploy.local.services.elasticsearch import ELASTIC_VERSION as ELASTIC_VERSION
from deploy.local.services.kafka import DEFAULT_KAFKA_PORT as DEFAULT_KAFKA_PORT
from deploy.local.services.kafka import KAFKA_HEAP as KAFKA_HEAP
from deploy.local.services.kafka import KAFKA_PORT_ENV as KAFKA_PORT_ENV
from deploy.local.services.mosquitto import DEFAULT_MQTT_PORT as DEFAULT_MQTT_PORT
from deploy.local.services.mosquitto import MQTT_PORT_ENV as MQTT_PORT_ENV
from deploy.local.services.mosquitto import Mosquitto
from deploy.local.services.opensearch import DEFAULT_SEARCH_PORT as DEFAULT_SEARCH_PORT
from deploy.local.services.opensearch import SEARCH_CLUSTER_NAME as SEARCH_CLUSTER_NAME
from deploy.local.services.opensearch import SEARCH_HEAP as SEARCH_HEAP
from deploy.local.services.opensearch import SEARCH_PORT_ENV as SEARCH_PORT_ENV

# The names above imported "as" themselves are kept importable from here for
# code written before the services got their own modules; new code imports
# them from where they are defined.
__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_HEALTH_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "OPTIONAL_SERVICES",
    "SERVICES",
    "STACK_DIR_ENV",
    "LocalStack",
    "StackError",
    "UnknownUserError",
    "UserExistsError",
    "demo_fleet",
    "free_port",
]

logger = logging.getLogger(__name__)

DEFAULT_HEALTH_TIMEOUT: Final = 120.0
DEFAULT_STOP_TIMEOUT: Final = 45.0


class LocalStack:
    """Manage the local stack rooted at one stack directory.

    Construction does no I/O beyond reading the environment; every method is
    safe to call repeatedly, and ``up``/``down`` hold a lock file so that two
    callers (a CLI and a test session) do not race.

    Ports: the keyword argument, else ``$THERMOWATCH_<SVC>_PORT``, else the
    service's default; ``ports={"name": port}`` sets any service's port by name.

    Nodes: ``cluster=True`` runs each service's ``cluster_nodes``; ``nodes={"name":
    count}`` overrides that count per service (e.g. two Artemis nodes beside one
    Kafka and one search node: ``cluster=True, nodes={"kafka": 1, "search": 1}``).
    A service that does not cluster takes 1 only. None: what the stack was last
    brought up with (``state.json``) when ``cluster`` is None too, else no override.
    """

    def __init__(
        self,
        stack_dir: Path | str | None = None,
        cache_dir: Path | str | None = None,
        *,
        mqtt_port: int | None = None,
        kafka_port: int | None = None,
        search_port: int | None = None,
        elastic_port: int | None = None,
        ports: Mapping[str, int] | None = None,
        cluster: bool | None = None,
        nodes: Mapping[str, int] | None = None,
    ) -> None:
        self.layout = StackLayout.from_env(stack_dir, cache_dir)
        self.root = self.layout.root
        self.cache = self.layout.cache
        self.host = self.layout.host
        self._credentials = Credentials(
            self.layout.credentials_file, self.layout.run_dir / "credentials.lock"
        )
        ctx = StackContext(
            self.layout, self._credentials, StateFile(self.layout.state_file, self.status)
        )
        given = {
            "mosquitto": mqtt_port,
            "kafka": kafka_port,
            "search": search_port,
            "elasticsearch": elastic_port,
            **(ports or {}),
        }
        self._state = ctx.state
        #: The cluster profile: 3 Kafka and 3 search nodes. None: the profile the stack
        #: was last brought up with (``state.json``), else the single-node one.
        self.cluster = (
            cluster if cluster is not None else self._state.read().get("profile") == "cluster"
        )
        if nodes is None and cluster is None:
            nodes = self._state.read().get("nodes") or None
        #: Per-service node counts that differ from the profile's (``nodes=``).
        self.node_counts: dict[str, int] = _check_node_counts(nodes or {})
        self._nodes: dict[str, list[Service]] = {}
        for cls in REGISTRY:
            count = self.node_counts.get(cls.name, cls.cluster_nodes if self.cluster else 1)
            self._nodes[cls.name] = [
                cls(ctx, given.get(cls.name), node=n, nodes=count) for n in range(1, count + 1)
            ]
        #: Each service's first node: the one that describes the service to clients.
        self._services: dict[str, Service] = {name: n[0] for name, n in self._nodes.items()}

    # ------------------------------------------------------------------ layout
    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir

    @property
    def logs_dir(self) -> Path:
        return self.layout.logs_dir

    @property
    def profile(self) -> str:
        """``"cluster"`` or ``"single"``."""
        return "cluster" if self.cluster else "single"

    def pid_file(self, name: str) -> Path:
        return self.layout.pid_file(name)

    def log_file(self, name: str, node: int | None = None) -> Path:
        """The log of service ``name`` (of its node ``node`` in a cluster; default: the first)."""
        return self.node(name, node).process.log_file

    def data_dir(self, name: str) -> Path:
        return self.layout.data_dir(name)

    @property
    def credentials_file(self) -> Path:
        return self.layout.credentials_file

    @property
    def state_file(self) -> Path:
        return self.layout.state_file

    def service(self, name: str) -> Service:
        """The :class:`~deploy.local.services.base.Service` called ``name``."""
        check_names([name])
        return self._services[name]

    def node(self, name: str, node: int | None = None) -> Service:
        """Node ``node`` (1-based; None: the first) of service ``name``; a service that
        does not cluster, or the single-node profile, has node 1 only."""
        check_names([name])
        nodes = self._nodes[name]
        index = 1 if node is None else node
        if not 1 <= index <= len(nodes):
            raise StackError(
                f"{name}: no node {index} in the {self.profile} profile (nodes 1..{len(nodes)})"
            )
        return nodes[index - 1]

    def nodes(self, name: str) -> list[Service]:
        """Every node of service ``name`` (one unless clustered)."""
        check_names([name])
        return list(self._nodes[name])

    def port(self, name: str) -> int:
        """The client port of service ``name``."""
        return self.service(name).port

    # ------------------------------------------------------------- public API
    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Where to reach each service, with the MQTT users and their passwords.

        ``{"mosquitto": {"host", "port", "users": {name: password}},
        "kafka": {"host", "port", "bootstrap"}, "search": {"host", "port", "url"},
        "elasticsearch": {"host", "port", "url"}}`` (the last one whether it runs or not).
        """
        return {name: svc.endpoint() for name, svc in self._services.items()}

    def status(self, services: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each service's host, port and pid (None when not running); no health check.

        Kafka also has ``bootstrap``, search and elasticsearch ``url``, and every
        service ``tls`` and ``auth`` (:meth:`Service.security`): the shape of
        ``status --json``. The default services unless ``services`` names others.

        In the cluster profile, a clustered service's ``pid`` is its first node's and
        ``nodes`` lists every node: ``[{"id", "host", "port", "pid"}, ...]``.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in check_names(services):
            svc = self._services[name]
            out[name] = {
                "host": svc.host,
                "port": svc.port,
                "pid": svc.process.pid(),
                **svc.address(),
                **svc.security(),
            }
            if svc.clustered:
                out[name]["nodes"] = [
                    {"id": n.node, "host": n.host, "port": n.port, "pid": n.process.pid()}
                    for n in self._nodes[name]
                ]
        return out

    def service_pid(self, name: str, node: int | None = None) -> int | None:
        """Pid of the running service (its node ``node``), or None (a stale pid file is removed)."""
        return self.node(name, node).process.pid()

    def kill(self, name: str, sig: int = signal.SIGKILL, node: int | None = None) -> bool:
        """Send ``sig`` to the service (its node ``node``); False when it was not running.

        Does not wait (except for SIGKILL, until the process is gone) and does
        not remove the pid file: the chaos tests use this for ``kill -9`` and
        SIGSTOP/SIGCONT. Use :meth:`down` to stop.
        """
        return self.node(name, node).process.signal(sig)

    def is_healthy(self, name: str, timeout: float = 5.0, node: int | None = None) -> bool:
        """One meaningful health check of ``name`` (an authenticated connect,
        an admin request, a cluster health call); of its node ``node`` in a cluster,
        else of every node."""
        targets = self._nodes[name] if node is None else [self.node(name, node)]
        for svc in targets:
            try:
                if not svc.probe(timeout):
                    return False
            except Exception as exc:  # a health probe reports, it never raises
                logger.debug("health probe failed service=%s error=%r", svc.node_name, exc)
                return False
        return True

    def wait_healthy(
        self, name: str, timeout: float = DEFAULT_HEALTH_TIMEOUT, node: int | None = None
    ) -> None:
        """Block until ``name`` (its node ``node``; default: every node) passes its health
        check; StackError (with the log tail) on timeout or when its process dies meanwhile."""
        deadline = time.monotonic() + timeout
        for svc in self._nodes[name] if node is None else [self.node(name, node)]:
            process = svc.process
            while True:
                left = min(10.0, max(1.0, deadline - time.monotonic()))
                if self.is_healthy(name, timeout=left, node=svc.node):
                    break
                if process.pid() is None:
                    raise StackError(process.failure("process exited"))
                if time.monotonic() >= deadline:
                    raise StackError(process.failure(f"not healthy after {timeout:.0f}s"))
                time.sleep(0.5)

    def up(
        self, services: Iterable[str] | None = None, timeout: float = DEFAULT_HEALTH_TIMEOUT
    ) -> dict[str, str]:
        """Start the services (the default ones unless named) and wait until each is healthy.

        Idempotent: a healthy running service is left alone, unless its config
        template changed since it started (an upgraded checkout): then it is
        restarted. Returns ``{service: "started" | "running" | "restarted"}``.
        Raises StackError on failure.
        """
        names = check_names(services)
        with self._lock():
            self._check_profile()
            self._prepare_dirs()
            self._state.record(profile=self.profile, nodes=self.node_counts)
            self.config_signing_key()
            result: dict[str, str] = {}
            for name in names:
                what: list[str] = []
                for svc in self._nodes[name]:
                    what.append(self._up_one(svc))
                # "started" when any node was, else "restarted", else "running".
                result[name] = next((w for w in ("started", "restarted") if w in what), "running")
            # Start every process first, then wait: the JVMs boot in parallel.
            for name in names:
                self.wait_healthy(name, timeout)
                logger.info("healthy service=%s pid=%s", name, self.service_pid(name))
            self._state.record(profile=self.profile)
            return result

    def start_node(self, name: str, node: int, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> str:
        """Start one node of a cluster (after a chaos kill) and wait until it is healthy;
        ``"started"``, ``"restarted"`` or ``"running"``."""
        svc = self.node(name, node)
        with self._lock():
            self._check_profile()
            what = self._up_one(svc)
        self.wait_healthy(name, timeout, node=node)
        return what

    def _up_one(self, svc: Service) -> str:
        """Start one service node unless it runs with its current config (under the lock)."""
        if svc.process.pid() is not None:
            if not svc.config_changed():
                return "running"
            logger.info("restarting service=%s reason=config_changed", svc.node_name)
            self._stop(svc, DEFAULT_STOP_TIMEOUT)
            self._start(svc)
            return "restarted"
        svc.install()
        self._start(svc)
        return "started"

    def _check_profile(self) -> None:
        """StackError when the stack runs in the other profile, or with other node
        counts (``nodes=``): the two do not mix (the single node's data is not a
        cluster's, and their ports overlap)."""
        state = self._state.read()
        recorded = state.get("profile", "single")
        recorded_nodes = state.get("nodes") or {}
        if recorded == self.profile and recorded_nodes == self.node_counts:
            return
        other = LocalStack(
            self.root, self.cache, cluster=recorded == "cluster", nodes=recorded_nodes
        )
        running = [
            svc.node_name
            for nodes in other._nodes.values()
            for svc in nodes
            if svc.process.pid() is not None
        ]
        if running:
            counts = f" with nodes {recorded_nodes}" if recorded_nodes else ""
            raise StackError(
                f"the stack in {self.root} runs the {other.profile} profile{counts} "
                f"({', '.join(running)}): `thermowatch stack down` first, or use another "
                f"{STACK_DIR_ENV}"
            )

    def down(
        self, services: Iterable[str] | None = None, timeout: float = DEFAULT_STOP_TIMEOUT
    ) -> dict[str, str]:
        """SIGTERM the services (all by default), SIGKILL after ``timeout``.

        Idempotent. Returns ``{service: "stopped" | "not running"}``; with no
        names, an optional service is included only when it runs.
        """
        names = check_names(services)
        if not services:
            names += [n for n in OPTIONAL_SERVICES if self.service_pid(n) is not None]
        with self._lock():
            result: dict[str, str] = {}
            # Reverse order: consumers of a service go down before it.
            for name in reversed(names):
                nodes = self._nodes[name]
                # A cluster's nodes stop together: one by one, the last Kafka nodes
                # would wait for a controller quorum that is already gone.
                with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
                    stopped = list(pool.map(lambda svc: self._stop(svc, timeout), nodes))
                result[name] = "stopped" if any(stopped) else "not running"
            if self.root.exists():
                # All stopped: the next `stack up` starts the profile it is asked for.
                self._state.record(**({} if services else {"profile": "single", "nodes": {}}))
            return result

    # Single-service spellings for the chaos tests.
    def start(self, name: str, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> None:
        """Start one service (every node of it) and wait until it is healthy."""
        self.up([name], timeout)

    def stop(self, name: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop one service (SIGTERM, then SIGKILL after ``timeout``)."""
        self.down([name], timeout)

    def stop_node(self, name: str, node: int, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop one node of a cluster (SIGTERM, then SIGKILL); False if it did not run."""
        svc = self.node(name, node)
        with self._lock():
            return self._stop(svc, timeout)

    def credentials(self) -> dict[str, str]:
        """MQTT ``{username: password}``; generated on first use and kept in
        ``<stack>/credentials.json`` (mode 0600)."""
        return self._credentials.all()

    def add_mqtt_user(self, name: str, password: str | None = None) -> str:
        """Add (or re-password) an MQTT user and make a running broker reload.

        Returns the password (a random one when ``password`` is None). The ACL
        gives a user the device rules, so ``name`` should be the device id.
        Waits until the new login works when the broker is running.
        """
        return self._mosquitto.add_user(name, password)

    def add_mqtt_users(
        self, names: Iterable[str], *, certificates: bool = True, timeout: float | None = None
    ) -> dict[str, str]:
        """Add the new users of ``names`` in one batch (one render of the password
        file and ACL, one broker reload); ``{name: password}`` for every name.
        ``certificates=False``: password login only (no client certificates).
        See :meth:`deploy.local.services.mosquitto.Mosquitto.add_users`."""
        return self._mosquitto.add_users(names, certificates=certificates, timeout=timeout)

    def add_device(self, device_id: str, site: str) -> str:
        """Add a new device user with a random password and record its site.

        Returns the password; :class:`UserExistsError` when the user exists.
        """
        return self._mosquitto.add_user(device_id, site=site, new_only=True)

    def rotate_device(self, device_id: str) -> str:
        """A new random password for an existing device user (site kept); returns it.

        :class:`UnknownUserError` when there is no such user.
        """
        return self._mosquitto.add_user(device_id, existing_only=True)

    def remove_mqtt_user(self, name: str) -> None:
        """Remove an MQTT user; a running broker refuses its next login.

        :class:`UnknownUserError` when there is no such user.
        """
        self._mosquitto.remove_user(name)

    def issue_client_cert(self, identity: str) -> tuple[Path, Path]:
        """A client certificate (CN = ``identity``) signed by the installation's CA
        for a service or tool (a gateway replica, the web view, an admin script);
        an existing one is kept. Returns ``(cert, key)`` paths, the key mode 0600.
        The identity also needs an MQTT user (:meth:`add_mqtt_user`) for the ACL."""
        return self._mosquitto.issue_cert(identity)

    def client_tls(self, identity: str) -> ClientTls:
        """How an MQTT client of ``identity`` connects: a device with its certificate,
        a service with its password, both over TLS (:func:`deploy.local.pki.client_tls`)."""
        return client_tls(self._mosquitto.endpoint(), identity)

    def config_signing_key(self) -> tuple[Path, Path]:
        """The config publisher's key pair ``(private, public)``, made at first use
        (``<stack>/config-signing.key``, mode 0600, and ``.pub``)."""
        return ensure_key_pair(self.root)

    def device_sites(self) -> dict[str, str]:
        """``{device_id: site}`` of the devices added with a site."""
        return self._credentials.sites()

    @property
    def _mosquitto(self) -> Mosquitto:
        mosquitto = self._services[Mosquitto.name]
        assert isinstance(mosquitto, Mosquitto)
        return mosquitto

    def log_tail(self, name: str, lines: int = 30, node: int | None = None) -> list[str]:
        """The last ``lines`` lines of the service's log file (of its node ``node``)."""
        return self.node(name, node).process.log_tail(lines)

    # --------------------------------------------------------------- internals
    def _stop(self, svc: Service, timeout: float) -> bool:
        """Stop ``svc``'s process if it runs (under the lock); False if it did not run."""
        pid = svc.process.pid()
        if pid is not None:
            svc.process.stop(pid, timeout)
        with contextlib.suppress(OSError):
            svc.process.pid_file.unlink()
        return pid is not None

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises up/down. Taken before the credentials lock, never after it."""
        return flock(self.run_dir / "stack.lock")

    def _prepare_dirs(self) -> None:
        data = [self.data_dir(svc.node_name) for n in SERVICES for svc in self._nodes[n]]
        for folder in (self.run_dir, self.logs_dir, *data):
            folder.mkdir(parents=True, exist_ok=True)

    def _start(self, svc: Service) -> None:
        if port_open(svc.host, svc.port):
            raise StackError(
                f"{svc.node_name}: port {svc.host}:{svc.port} is already in use "
                "by a process this stack does not manage"
            )
        launch = svc.launch()
        svc.process.spawn(launch.argv, launch.env)


def _check_node_counts(nodes: Mapping[str, int]) -> dict[str, int]:
    """``nodes`` checked: known services, a positive count, more than 1 only for a
    service that clusters; a StackError names the service otherwise.

    >>> _check_node_counts({"artemis": 2, "kafka": 1})
    {'artemis': 2, 'kafka': 1}
    >>> _check_node_counts({"mosquitto": 2})
    Traceback (most recent call last):
    ...
    deploy.local.errors.StackError: nodes: mosquitto does not cluster (1 node only), got 2
    """
    classes = {cls.name: cls for cls in REGISTRY}
    out: dict[str, int] = {}
    for name, count in nodes.items():
        if name not in classes:
            raise StackError(f"nodes: unknown service {name!r}; known: {', '.join(classes)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise StackError(f"nodes: {name} must be a whole number of nodes >= 1, got {count!r}")
        if count > 1 and classes[name].cluster_nodes == 1:
            raise StackError(f"nodes: {name} does not cluster (1 node only), got {count}")
        out[name] = count
    return out
