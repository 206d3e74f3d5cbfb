"""The ``Service`` interface: what the stack needs to know to run one server.

A service says who it is (``name``, the marker in its command line), where it
listens (its client port, from a constructor argument, an environment
variable or a default), what it needs installed, how it is started (command
line and environment, after writing its config files) and how to tell that it
is healthy. The orchestrator (:class:`deploy.local.stack.LocalStack`) does the
rest the same way for all of them: pid files, logs, locks, waiting, stopping.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from deploy.local.credentials import Credentials
from deploy.local.layout import StackLayout, StateFile, env_port
from deploy.local.process import ServiceProcess, ephemeral_port_range

logger = logging.getLogger(__name__)

__all__ = ["Launch", "SearchNode", "Service", "StackContext"]


@dataclass(frozen=True)
class StackContext:
    """What a service may use of the stack it belongs to."""

    layout: StackLayout
    credentials: Credentials
    state: StateFile


@dataclass(frozen=True)
class Launch:
    """How to start a service: its argv (``argv[0]`` an absolute path) and environment.

    ``env`` None means the caller's environment unchanged.
    """

    argv: list[str]
    env: dict[str, str] | None = None


class Service(ABC):
    """One server of the local stack; subclasses live one per module in this package."""

    #: The name used on the command line, in file names and in ``status --json``.
    name: ClassVar[str]
    #: Environment variable that overrides the client port, and its default.
    port_env: ClassVar[str]
    default_port: ClassVar[int]
    #: Found in ``/proc/<pid>/cmdline``, so a recycled pid is never taken for the service.
    cmdline_marker: ClassVar[bytes]
    #: Started, stopped and shown only when named (``stack up elasticsearch``).
    optional: ClassVar[bool] = False
    #: How many nodes the cluster profile (``stack up --cluster``) runs; 1: never clustered.
    cluster_nodes: ClassVar[int] = 1
    #: Node ``n`` of a cluster listens on the base port + (n - 1) x this.
    node_port_step: ClassVar[int] = 10

    def __init__(
        self, ctx: StackContext, port: int | None = None, *, node: int = 1, nodes: int = 1
    ) -> None:
        """``port`` None or 0: ``$<port_env>``, else ``default_port`` (node 1's port).

        ``node`` of ``nodes``: one node of a cluster (``nodes`` > 1), with its own port
        (:meth:`node_port`), pid file, log and data directory (``<name>-<node>``).
        """
        self.ctx = ctx
        self.layout = ctx.layout
        self.host = ctx.layout.host
        self.node = node
        self.nodes = nodes
        self.base_port = port or env_port(self.port_env, self.default_port)
        self.port = self.node_port(node)
        low, high = ephemeral_port_range()
        if low <= self.port <= high:
            # An outgoing connection may be given this port while the service is
            # down (a client reconnecting to it can even connect to itself), and
            # the service then cannot bind it.
            logger.warning(
                "port in the kernel's ephemeral range service=%s port=%d range=%d-%d "
                "hint='pick a port below %d (%s)'",
                self.name, self.port, low, high, low, self.port_env,
            )  # fmt: skip
        self.process = ServiceProcess(
            self.node_name,
            self.cmdline_marker,
            ctx.layout.pid_file(self.node_name),
            ctx.layout.log_file(self.node_name),
        )

    @property
    def clustered(self) -> bool:
        """True for a node of a cluster of several nodes."""
        return self.nodes > 1

    @property
    def node_name(self) -> str:
        """``name`` alone, or ``<name>-<node>`` for a node of a cluster: the name of its
        pid file, log file, data directory and rendered config files."""
        return f"{self.name}-{self.node}" if self.clustered else self.name

    def node_port(self, node: int) -> int:
        """The client port of node ``node`` (1-based) of this service's cluster."""
        return self.base_port + (node - 1) * self.node_port_step

    def node_ids(self) -> range:
        """1 .. nodes."""
        return range(1, self.nodes + 1)

    def address(self) -> dict[str, Any]:
        """How clients name the service beyond host and port (``bootstrap``, ``url``)."""
        return {}

    def security(self) -> dict[str, Any]:
        """``{"tls": bool, "auth": kind}`` of the client listener, in ``status --json``.

        ``auth`` names how clients authenticate (``"none"`` when anyone may connect);
        a service overrides it with what its rendered config really asks for.
        """
        return {"tls": False, "auth": "none"}

    def endpoint(self) -> dict[str, Any]:
        """``{"host", "port", ...address()}``: what a client needs to connect."""
        return {"host": self.host, "port": self.port, **self.address()}

    @abstractmethod
    def install(self) -> None:
        """Fetch, build or install what is missing; a no-op when all is there."""

    @abstractmethod
    def launch(self) -> Launch:
        """Write the config files of this start and return how to start the process."""

    @abstractmethod
    def probe(self, timeout: float) -> bool:
        """One meaningful health check (a login, an admin request); may raise."""

    def config_changed(self) -> bool:
        """True when a start now would write another config than the running process
        was started with (a checkout upgraded under a running stack): ``up`` restarts it."""
        return False


class SearchNode(Service):
    """A search server node (OpenSearch, Elasticsearch): clients use its URL;
    the node's transport port is the client port + 100."""

    #: The ``search.backend`` (:class:`stagekit.search.SearchSettings`) that speaks to it.
    backend: ClassVar[str] = "opensearch"

    @property
    def transport_port(self) -> int:
        return self.port + 100

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def address(self) -> dict[str, Any]:
        return {"url": self.url}
