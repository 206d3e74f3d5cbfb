"""The thermowatch local stack: Mosquitto, Kafka (KRaft) and OpenSearch as plain processes.

Optional, started only when named: a real Elasticsearch 8 (``up(["elasticsearch"])``).

Everything listens on 127.0.0.1 on non-default ports, runs detached from the
caller (its own session, output appended to ``<stack>/logs/<svc>.log``) and
keeps its data under ``<stack>/data/<svc>/`` across ``down``/``up``.

What gets installed when missing: Mosquitto (apt, when root), the Java
classpaths of Kafka and OpenSearch (``mvn copy-dependencies`` of the pinned
poms under ``deploy/local/maven/`` into the cache directory) and, for
Elasticsearch, its integration-test distribution from Maven Central unzipped
into the cache.

Example (needs the real services, so not run as a doctest)::

    stack = LocalStack()
    stack.up(["kafka"])
    stack.endpoints()["kafka"]["bootstrap"]  # '127.0.0.1:19092'
    stack.kill("kafka", signal.SIGKILL)      # chaos
    stack.up(["kafka"])                      # restart, waits until healthy
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_HEALTH_TIMEOUT",
    "OPTIONAL_SERVICES",
    "SERVICES",
    "STACK_DIR_ENV",
    "LocalStack",
    "StackError",
    "demo_fleet",
]

logger = logging.getLogger(__name__)

SERVICES: Final[tuple[str, ...]] = ("mosquitto", "kafka", "search")
#: Started, stopped and shown only when named (``stack up elasticsearch``);
#: ``down`` with no names stops them too when they run.
OPTIONAL_SERVICES: Final[tuple[str, ...]] = ("elasticsearch",)
_KNOWN: Final = (*SERVICES, *OPTIONAL_SERVICES)
STACK_DIR_ENV: Final = "THERMOWATCH_STACK_DIR"
CACHE_DIR_ENV: Final = "THERMOWATCH_CACHE_DIR"
MQTT_PORT_ENV: Final = "THERMOWATCH_MQTT_PORT"
KAFKA_PORT_ENV: Final = "THERMOWATCH_KAFKA_PORT"
SEARCH_PORT_ENV: Final = "THERMOWATCH_SEARCH_PORT"
ELASTIC_PORT_ENV: Final = "THERMOWATCH_ELASTIC_PORT"
#: The JDK Elasticsearch runs on (default: the one of ``java`` on PATH).
ELASTIC_JAVA_HOME_ENV: Final = "THERMOWATCH_ES_JAVA_HOME"
DEFAULT_HEALTH_TIMEOUT: Final = 120.0
DEFAULT_STOP_TIMEOUT: Final = 45.0

HOST: Final = "127.0.0.1"
DEFAULT_MQTT_PORT: Final = 18830
DEFAULT_KAFKA_PORT: Final = 19092
DEFAULT_SEARCH_PORT: Final = 19200
DEFAULT_ELASTIC_PORT: Final = 19201

MVN_DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"
KAFKA_HEAP: Final = ("-Xms256m", "-Xmx1g")
SEARCH_HEAP: Final = ("-Xms512m", "-Xmx1g")
SEARCH_CLUSTER_NAME: Final = "thermowatch"
ELASTIC_VERSION: Final = "8.19.21"
# The only Elasticsearch distribution on Maven Central: the one its own
# integration tests use (modules: transport-netty4, x-pack-core,
# x-pack-security, apm; no ILM, no data streams, no rest-root).
ELASTIC_ARTIFACT: Final = (
    f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ELASTIC_VERSION}:zip"
)
ELASTIC_HEAP: Final = "-Xms512m -Xmx1g"
#: Elasticsearch refuses to run as root; as root it runs as this system user,
#: and its distribution and data live under this directory instead of the
#: cache and the stack dir, which sit in root's home (mode 0700 on Debian):
#: like the Debian package's /usr/share/elasticsearch and /var/lib/elasticsearch.
ELASTIC_USER: Final = "thermowatch-es"
ELASTIC_SYSTEM_DIR: Final = Path("/var/lib/thermowatch-es")

# Fixed service accounts; devices are added by demo_fleet() and add_mqtt_user().
SERVICE_USERS: Final[tuple[str, ...]] = ("admin", "gateway", "processor")
TEST_DEVICES: Final[tuple[str, ...]] = tuple(f"dev-test-{i}" for i in range(1, 5))

_HERE: Final = Path(__file__).resolve().parent
# A marker found in /proc/<pid>/cmdline of each service, so a recycled pid in a
# stale pid file is never mistaken for the service (and never signalled).
_CMDLINE_MARKER: Final = {
    "mosquitto": b"mosquitto",
    "kafka": b"kafka.Kafka",
    "search": b"SearchLauncher",
    # setpriv, env, the bin/elasticsearch script and the CLI JVM it execs (same
    # pid) all carry the script path: -Dcli.script=<home>/bin/elasticsearch.
    "elasticsearch": b"/bin/elasticsearch",
}


class StackError(RuntimeError):
    """A service could not be installed, started, stopped or reached."""


def demo_fleet() -> list[str]:
    """Device ids of the demo fleet: 3 sites of 10 devices.

    >>> fleet = demo_fleet()
    >>> len(fleet), fleet[0], fleet[-1]
    (30, 's1-d01', 's3-d10')
    """
    return [f"s{site}-d{dev:02d}" for site in range(1, 4) for dev in range(1, 11)]


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}: must be a TCP port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise StackError(f"{name}: must be in 1..65535, got {port}")
    return port


def _env_dir(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser() if raw else default


def _render(template: str, **values: object) -> str:
    text = (_HERE / template).read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    tmp.replace(path)


def _file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def free_port(span: int = 0) -> int:
    """A free TCP port on 127.0.0.1 whose ``port + span`` is free too.

    For a private stack beside the shared one (tests, experiments): Kafka's
    controller listens on its port + 1, OpenSearch's transport on + 100.
    The ports may be taken again before they are bound: callers retry or
    accept that rare failure.
    """
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + span >= 65536:
            continue
        if span:
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + span))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port pair")


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _is_root() -> bool:
    return os.geteuid() == 0


def _which(name: str) -> str | None:
    """shutil.which that also looks in the sbin directories (mosquitto lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _run(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float = 900.0,
    env: dict[str, str] | None = None,
    secret: bool = False,
) -> None:
    if secret:
        logger.debug("run what=%s", what)
    else:
        logger.info("run what=%s argv=%s", what, " ".join(argv))
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        raise StackError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(output))


def _apt_install(*packages: str) -> None:
    if not _is_root():
        raise StackError(
            f"{', '.join(packages)} missing and not running as root: "
            f"apt-get install -y {' '.join(packages)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update"], what="apt-get update", env=env)
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        what=f"apt-get install {' '.join(packages)}",
        env=env,
    )


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is a dead child of this process (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int, marker: bytes) -> bool:
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text(encoding="utf-8", errors="replace")
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    # Fields 3 and 4 of /proc/<pid>/stat, after the ")" closing the command name.
    fields = stat.rpartition(")")[2].split()
    state = fields[:1]
    if state in (["Z"], ["X"]):
        # A killed JVM's main thread is a zombie while its other threads still
        # tear down, holding the listening sockets: alive until they are gone.
        try:
            return len(list((proc / "task").iterdir())) > 1
        except OSError:
            return False
    if marker in cmdline:
        return True
    # A child we just spawned may still be between exec steps (setpriv -> env ->
    # script -> JVM) and not show the marker yet; a recycled pid is never our child.
    return len(fields) > 1 and fields[1] == str(os.getpid())


@dataclass(frozen=True)
class _Ports:
    mqtt: int
    kafka: int
    search: int
    elastic: int

    @property
    def kafka_controller(self) -> int:
        return self.kafka + 1

    @property
    def search_transport(self) -> int:
        return self.search + 100

    @property
    def elastic_transport(self) -> int:
        return self.elastic + 100


class LocalStack:
    """Manage the local stack rooted at one stack directory.

    Construction does no I/O beyond reading the environment; every method is
    safe to call repeatedly, and ``up``/``down`` hold a lock file so that two
    callers (a CLI and a test session) do not race.
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
    ) -> None:
        home = Path.home()
        self.root = (
            Path(stack_dir).expanduser()
            if stack_dir is not None
            else _env_dir(STACK_DIR_ENV, home / ".local" / "state" / "thermowatch" / "stack")
        ).resolve()
        self.cache = (
            Path(cache_dir).expanduser()
            if cache_dir is not None
            else _env_dir(CACHE_DIR_ENV, home / ".cache" / "thermowatch")
        ).resolve()
        self.host = HOST
        self._ports = _Ports(
            mqtt=mqtt_port or _env_port(MQTT_PORT_ENV, DEFAULT_MQTT_PORT),
            kafka=kafka_port or _env_port(KAFKA_PORT_ENV, DEFAULT_KAFKA_PORT),
            search=search_port or _env_port(SEARCH_PORT_ENV, DEFAULT_SEARCH_PORT),
            elastic=elastic_port or _env_port(ELASTIC_PORT_ENV, DEFAULT_ELASTIC_PORT),
        )
        self._creds_lock = threading.Lock()

    # ------------------------------------------------------------------ layout
    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def port(self, name: str) -> int:
        """The client port of service ``name``."""
        _check_names([name])
        return {
            "mosquitto": self._ports.mqtt,
            "kafka": self._ports.kafka,
            "search": self._ports.search,
            "elasticsearch": self._ports.elastic,
        }[name]

    # ------------------------------------------------------------- public API
    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Where to reach each service, with the MQTT users and their passwords.

        ``{"mosquitto": {"host", "port", "users": {name: password}},
        "kafka": {"host", "port", "bootstrap"}, "search": {"host", "port", "url"},
        "elasticsearch": {"host", "port", "url"}}`` (the last one whether it runs or not).
        """
        return {
            "mosquitto": {"host": self.host, "port": self._ports.mqtt, "users": self.credentials()},
            "kafka": {
                "host": self.host,
                "port": self._ports.kafka,
                "bootstrap": f"{self.host}:{self._ports.kafka}",
            },
            "search": {
                "host": self.host,
                "port": self._ports.search,
                "url": f"http://{self.host}:{self._ports.search}",
            },
            "elasticsearch": {
                "host": self.host,
                "port": self._ports.elastic,
                "url": f"http://{self.host}:{self._ports.elastic}",
            },
        }

    def status(self, services: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each service's host, port and pid (None when not running); no health check.

        Kafka also has ``bootstrap``, search and elasticsearch ``url``: the shape of
        ``status --json``. The default services unless ``services`` names others.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in _check_names(services):
            entry: dict[str, Any] = {
                "host": self.host,
                "port": self.port(name),
                "pid": self.service_pid(name),
            }
            if name == "kafka":
                entry["bootstrap"] = f"{self.host}:{self._ports.kafka}"
            elif name in ("search", "elasticsearch"):
                entry["url"] = f"http://{self.host}:{self.port(name)}"
            out[name] = entry
        return out

    def service_pid(self, name: str) -> int | None:
        """Pid of the running service, or None (a stale pid file is removed)."""
        _check_names([name])
        path = self.pid_file(name)
        try:
            pid = int(path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid, _CMDLINE_MARKER[name]):
            return pid
        logger.info("stale pid file service=%s pid=%s", name, pid)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to the service; False when it was not running.

        Does not wait and does not remove the pid file: the chaos tests use
        this for ``kill -9`` and SIGSTOP/SIGCONT. Use :meth:`down` to stop.
        """
        pid = self.service_pid(name)
        if pid is None:
            return False
        logger.info("signal service=%s pid=%d sig=%d", name, pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self._wait_exit(pid, name, 10.0)
        return True

    def is_healthy(self, name: str, timeout: float = 5.0) -> bool:
        """One meaningful health check of ``name`` (an authenticated connect,
        an admin request, a cluster health call)."""
        _check_names([name])
        try:
            if name == "mosquitto":
                return self._mqtt_healthy(timeout)
            if name == "kafka":
                return _kafka_healthy(f"{self.host}:{self._ports.kafka}", timeout)
            if name == "elasticsearch":
                return self._elastic_healthy(timeout)
            return self._search_healthy(timeout)
        except Exception as exc:  # a health probe reports, it never raises
            logger.debug("health probe failed service=%s error=%r", name, exc)
            return False

    def wait_healthy(self, name: str, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> None:
        """Block until ``name`` passes its health check; StackError (with the
        log tail) on timeout or when its process dies meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_healthy(name, timeout=min(10.0, max(1.0, deadline - time.monotonic()))):
                return
            if self.service_pid(name) is None:
                raise StackError(self._failure(name, "process exited"))
            if time.monotonic() >= deadline:
                raise StackError(self._failure(name, f"not healthy after {timeout:.0f}s"))
            time.sleep(0.5)

    def up(
        self, services: Iterable[str] | None = None, timeout: float = DEFAULT_HEALTH_TIMEOUT
    ) -> dict[str, str]:
        """Start the services (the default ones unless named) and wait until each is healthy.

        Idempotent: a healthy running service is left alone. Returns
        ``{service: "started" | "running"}``. Raises StackError on failure.
        """
        names = _check_names(services)
        with self._lock():
            self._prepare_dirs()
            result: dict[str, str] = {}
            started: list[str] = []
            for name in names:
                if self.service_pid(name) is not None:
                    result[name] = "running"
                    continue
                self._install(name)
                self._start(name)
                started.append(name)
                result[name] = "started"
            # Start every process first, then wait: the JVMs boot in parallel.
            for name in names:
                self.wait_healthy(name, timeout)
                logger.info("healthy service=%s pid=%s", name, self.service_pid(name))
            self._record_state()
            return result

    def down(
        self, services: Iterable[str] | None = None, timeout: float = DEFAULT_STOP_TIMEOUT
    ) -> dict[str, str]:
        """SIGTERM the services (all by default), SIGKILL after ``timeout``.

        Idempotent. Returns ``{service: "stopped" | "not running"}``; with no
        names, an optional service is included only when it runs.
        """
        names = _check_names(services)
        if not services:
            names += [n for n in OPTIONAL_SERVICES if self.service_pid(n) is not None]
        with self._lock():
            result: dict[str, str] = {}
            # Reverse order: consumers of a service go down before it.
            for name in reversed(names):
                pid = self.service_pid(name)
                if pid is None:
                    result[name] = "not running"
                else:
                    self._stop(name, pid, timeout)
                    result[name] = "stopped"
                with contextlib.suppress(OSError):
                    self.pid_file(name).unlink()
            if self.root.exists():
                self._record_state()
            return result

    # Single-service spellings for the chaos tests.
    def start(self, name: str, timeout: float = DEFAULT_HEALTH_TIMEOUT) -> None:
        """Start one service and wait until it is healthy."""
        self.up([name], timeout)

    def stop(self, name: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop one service (SIGTERM, then SIGKILL after ``timeout``)."""
        self.down([name], timeout)

    def credentials(self) -> dict[str, str]:
        """MQTT ``{username: password}``; generated on first use and kept in
        ``<stack>/credentials.json`` (mode 0600)."""
        with self._creds_locked():
            return self._load_credentials()

    def add_mqtt_user(self, name: str, password: str | None = None) -> str:
        """Add (or re-password) an MQTT user and make a running broker reload.

        Returns the password (a random one when ``password`` is None). The ACL
        gives a user the device rules, so ``name`` should be the device id.
        Waits until the new login works when the broker is running.
        """
        if not name or ":" in name or any(ch.isspace() for ch in name):
            raise StackError(f"add_mqtt_user: invalid user name {name!r}")
        pw = password if password is not None else secrets.token_urlsafe(18)
        with self._creds_locked():
            users = self._load_credentials()
            users[name] = pw
            _write_private(self.credentials_file, json.dumps({"mqtt": users}, indent=2) + "\n")
            passwd = self.run_dir / "mosquitto.passwd"
            running = False
            if passwd.exists():
                _run(
                    [self._tool("mosquitto_passwd"), "-b", str(passwd), name, pw],
                    what=f"mosquitto_passwd {name}",
                    secret=True,
                )
                # Mosquitto re-reads its password and ACL files on SIGHUP.
                running = self.kill("mosquitto", signal.SIGHUP)
        if running:
            # The reload happens in the broker's main loop: wait until it took.
            deadline = time.monotonic() + 15.0
            while not self._mqtt_login(name, pw, 3.0):
                if time.monotonic() >= deadline:
                    raise StackError(f"add_mqtt_user: {name} cannot log in after reload")
                time.sleep(0.2)
        logger.info("mqtt user added user=%s", name)
        return pw

    def log_tail(self, name: str, lines: int = 30) -> list[str]:
        """The last ``lines`` lines of the service's log file."""
        _check_names([name])
        path = self.log_file(name)
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                data = fh.read()
        except OSError:
            return []
        return data.decode("utf-8", errors="replace").splitlines()[-lines:]

    # --------------------------------------------------------------- internals
    @contextlib.contextmanager
    def _flock(self, lock_name: str) -> Iterator[None]:
        """An exclusive lock shared with other processes using this stack dir."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / lock_name).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises up/down. Taken before _creds_locked, never after it."""
        return self._flock("stack.lock")

    @contextlib.contextmanager
    def _creds_locked(self) -> Iterator[None]:
        """Serialises credentials.json and the password file (threads and processes)."""
        with self._creds_lock, self._flock("credentials.lock"):
            yield

    def _load_credentials(self) -> dict[str, str]:
        path = self.credentials_file
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            users: dict[str, str] = dict(data["mqtt"])
            return users
        users = {
            name: secrets.token_urlsafe(18)
            for name in (*SERVICE_USERS, *TEST_DEVICES, *demo_fleet())
        }
        _write_private(path, json.dumps({"mqtt": users}, indent=2) + "\n")
        return users

    def _prepare_dirs(self) -> None:
        for folder in (self.run_dir, self.logs_dir, *(self.data_dir(n) for n in SERVICES)):
            folder.mkdir(parents=True, exist_ok=True)

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return data

    def _record_state(self, **extra: Any) -> None:
        state = self._state()
        state.update(extra)
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state["services"] = self.status()
        _write_private(self.state_file, json.dumps(state, indent=2) + "\n")

    def _failure(self, name: str, why: str) -> str:
        tail = self.log_tail(name, 30)
        return f"{name}: {why}; last {len(tail)} lines of {self.log_file(name)}:\n" + "\n".join(
            tail
        )

    def _tool(self, name: str) -> str:
        found = _which(name)
        if found is None:
            raise StackError(f"{name} not found on PATH")
        return found

    # install ------------------------------------------------------------------
    def _install(self, name: str) -> None:
        if name == "mosquitto":
            if _which("mosquitto") is None or _which("mosquitto_passwd") is None:
                _apt_install("mosquitto", "mosquitto-clients")
            return
        if _which("java") is None or _which("javac") is None:
            _apt_install("openjdk-17-jdk-headless")
        if name == "kafka":
            self._maven_libs("kafka")
        elif name == "elasticsearch":
            self._elastic_home()
            self._elastic_user()
        else:
            self._maven_libs("opensearch")
            self._search_launcher_classes()

    def _maven_libs(self, which: str) -> Path:
        """``<cache>/<which>-libs``, fetched with Maven unless already complete
        for this exact pom (a marker file records the pom's digest)."""
        pom = _HERE / "maven" / which / "pom.xml"
        libs = self.cache / f"{which}-libs"
        marker = libs / ".thermowatch-complete"
        digest = _file_digest(pom)
        if marker.exists() and marker.read_text(encoding="utf-8").strip() == digest:
            return libs
        if _which("mvn") is None:
            _apt_install("maven")
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = self.cache / f".{which}-libs.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        argv = [
            self._tool("mvn"),
            "-q",
            "-B",
            "-f",
            str(pom),
            f"{MVN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        if os.environ.get("THERMOWATCH_MAVEN_REPO"):
            argv.append(f"-Dmaven.repo.local={os.environ['THERMOWATCH_MAVEN_REPO']}")
        started = time.monotonic()
        _run(argv, what=f"mvn copy-dependencies ({which})")
        (staging / ".thermowatch-complete").write_text(digest + "\n", encoding="utf-8")
        shutil.rmtree(libs, ignore_errors=True)
        staging.replace(libs)
        logger.info(
            "fetched jars which=%s dir=%s seconds=%.1f", which, libs, time.monotonic() - started
        )
        return libs

    def _search_launcher_classes(self) -> Path:
        source = _HERE / "SearchLauncher.java"
        out = self.cache / "search-launcher" / _file_digest(source)
        if (out / "SearchLauncher.class").exists():
            return out
        staging = out.with_name(out.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        libs = self.cache / "opensearch-libs"
        _run(
            [self._tool("javac"), "-nowarn", "-d", str(staging), "-cp", f"{libs}/*", str(source)],
            what="javac SearchLauncher",
        )
        shutil.rmtree(out, ignore_errors=True)
        staging.replace(out)
        return out

    # start / stop -------------------------------------------------------------
    def _start(self, name: str) -> None:
        if _port_open(self.host, self.port(name)):
            raise StackError(
                f"{name}: port {self.host}:{self.port(name)} is already in use "
                "by a process this stack does not manage"
            )
        if name == "mosquitto":
            argv = self._mosquitto_argv()
        elif name == "kafka":
            argv = self._kafka_argv()
        elif name == "elasticsearch":
            argv, env = self._elastic_argv()
            self._spawn(name, argv, env)
            return
        else:
            argv = self._search_argv()
        self._spawn(name, argv)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_file(name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with log.open("ab") as fh:
            fh.write(f"\n==== thermowatch stack: starting {name} at {stamp} ====\n".encode())
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # posix_spawn rather than Popen: no Popen object that would warn
            # "subprocess still running" when collected; setsid detaches it.
            pid = os.posix_spawn(
                argv[0],
                argv,
                env if env is not None else dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, fd, 1),
                    (os.POSIX_SPAWN_DUP2, fd, 2),
                    (os.POSIX_SPAWN_CLOSE, fd),
                ],
                setsid=True,
            )
        finally:
            os.close(fd)
        # posix_spawn does not chdir; the services use absolute paths only.
        self.pid_file(name).write_text(f"{pid}\n", encoding="utf-8")
        logger.info("started service=%s pid=%d log=%s", name, pid, log)

    def _wait_exit(self, pid: int, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid, _CMDLINE_MARKER[name]):
                return True
            time.sleep(0.1)
        return False

    def _stop(self, name: str, pid: int, timeout: float) -> None:
        logger.info("stopping service=%s pid=%d", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a SIGSTOPped process cannot handle SIGTERM
            os.kill(pid, signal.SIGTERM)
        if self._wait_exit(pid, name, timeout):
            return
        logger.warning("stop timed out, killing service=%s pid=%d", name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, name, 10.0):
            raise StackError(f"{name}: pid {pid} survived SIGKILL")

    # mosquitto ----------------------------------------------------------------
    def _mosquitto_argv(self) -> list[str]:
        run = self.run_dir
        passwd = run / "mosquitto.passwd"
        acl = run / "mosquitto.acl"
        tool = self._tool("mosquitto_passwd")
        # Rebuilt from credentials.json at every start, so it always matches it.
        with self._creds_locked():
            users = self._load_credentials()
            staging = run / ".mosquitto.passwd.tmp"
            staging.unlink(missing_ok=True)
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            for user, password in users.items():
                _run(
                    [tool, "-b", str(staging), user, password],
                    what=f"mosquitto_passwd {user}",
                    secret=True,
                )
            staging.replace(passwd)
        shutil.copyfile(_HERE / "mosquitto-acl.conf", acl)
        conf = run / "mosquitto.conf"
        conf.write_text(
            _render(
                "mosquitto.conf",
                host=self.host,
                port=self._ports.mqtt,
                password_file=passwd,
                acl_file=acl,
                persistence_dir=self.data_dir("mosquitto"),
                # Debian's mosquitto drops root to the "mosquitto" user unless told not to,
                # and that user could not write the stack dir.
                user_line="user root" if _is_root() else "",
            ),
            encoding="utf-8",
        )
        return [self._tool("mosquitto"), "-c", str(conf)]

    def _mqtt_healthy(self, timeout: float) -> bool:
        return self._mqtt_login("admin", self.credentials()["admin"], timeout)

    def _mqtt_login(self, user: str, password: str, timeout: float) -> bool:
        """True when an MQTT v5 connect as ``user`` gets a successful CONNACK."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        if not _port_open(self.host, self._ports.mqtt, timeout=min(timeout, 1.0)):
            return False
        connected = threading.Event()
        ok: list[bool] = []

        def on_connect(
            client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object
        ) -> None:
            ok.append(not reason.is_failure)
            connected.set()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"thermowatch-health-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(user, password)
        client.on_connect = on_connect
        try:
            client.connect(self.host, self._ports.mqtt, keepalive=10)
            client.loop_start()
            try:
                connected.wait(timeout)
            finally:
                client.disconnect()
                client.loop_stop()
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
        return bool(ok) and ok[0]

    # kafka ----------------------------------------------------------------------
    def _kafka_argv(self) -> list[str]:
        libs = self.cache / "kafka-libs"
        run = self.run_dir
        data = self.data_dir("kafka")
        props = run / "kafka-server.properties"
        props.write_text(
            _render(
                "kafka-server.properties",
                host=self.host,
                port=self._ports.kafka,
                controller_port=self._ports.kafka_controller,
                log_dir=data,
            ),
            encoding="utf-8",
        )
        log4j = run / "kafka-log4j2.properties"
        shutil.copyfile(_HERE / "kafka-log4j2.properties", log4j)
        java = [
            self._tool("java"),
            f"-Dlog4j2.configurationFile={log4j}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
        ]
        if not (data / "meta.properties").exists():
            state = self._state()
            cluster_id = state.get("kafka_cluster_id") or _kafka_cluster_id()
            self._record_state(kafka_cluster_id=cluster_id)
            logger.info("formatting kafka storage dir=%s cluster_id=%s", data, cluster_id)
            with self.log_file("kafka").open("ab") as fh:
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
                raise StackError(self._failure("kafka", f"storage format exit {done.returncode}"))
        return [java[0], *KAFKA_HEAP, "-XX:+UseG1GC", *java[1:], "kafka.Kafka", str(props)]

    # search ---------------------------------------------------------------------
    def _search_argv(self) -> list[str]:
        libs = self.cache / "opensearch-libs"
        classes = self._search_launcher_classes()
        base = self.data_dir("search")
        config = base / "node_1" / "config"
        config.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_HERE / "search-log4j2.properties", config / "log4j2.properties")
        # The runner copies its own (all-comment) opensearch.yml when none exists;
        # every setting is passed on the command line instead.
        yml = config / "opensearch.yml"
        if not yml.exists():
            yml.write_text(
                "# settings: see deploy/local/stack.py (_search_argv)\n", encoding="utf-8"
            )
        settings = {
            "network.host": self.host,
            "http.port": self._ports.search,
            "transport.port": self._ports.search_transport,
            "discovery.type": "single-node",
            "node.name": "thermowatch-search",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        return [
            self._tool("java"),
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

    def _search_healthy(self, timeout: float) -> bool:
        url = f"http://{self.host}:{self._ports.search}/_cluster/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return body.get("status") in ("yellow", "green")

    # elasticsearch --------------------------------------------------------------
    def _elastic_home(self) -> Path:
        """``<cache>/elasticsearch-<version>``: the distribution plus the root plugin.

        Fetched with Maven and unzipped unless already complete for this
        version and plugin source (a marker file records both).
        """
        parent = ELASTIC_SYSTEM_DIR if _is_root() else self.cache
        home = parent / f"elasticsearch-{ELASTIC_VERSION}"
        source = _HERE / "ElasticRootPlugin.java"
        digest = f"{ELASTIC_VERSION} {_file_digest(source)}"
        marker = home / ".thermowatch-complete"
        if marker.exists() and marker.read_text(encoding="utf-8").strip() == digest:
            return home
        if _which("mvn") is None:
            _apt_install("maven")
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = parent / f".elasticsearch.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        argv = [
            self._tool("mvn"),
            "-q",
            "-B",
            f"{MVN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={ELASTIC_ARTIFACT}",
            f"-DoutputDirectory={staging}",
        ]
        if os.environ.get("THERMOWATCH_MAVEN_REPO"):
            argv.append(f"-Dmaven.repo.local={os.environ['THERMOWATCH_MAVEN_REPO']}")
        started = time.monotonic()
        _run(argv, what="mvn copy (elasticsearch)")
        archive = staging / f"elasticsearch-{ELASTIC_VERSION}.zip"
        _unzip(archive, staging)
        archive.unlink()
        unpacked = staging / f"elasticsearch-{ELASTIC_VERSION}"
        self._elastic_root_plugin(unpacked, source)
        (unpacked / ".thermowatch-complete").write_text(digest + "\n", encoding="utf-8")
        shutil.rmtree(home, ignore_errors=True)
        unpacked.replace(home)
        shutil.rmtree(staging, ignore_errors=True)
        logger.info(
            "fetched elasticsearch version=%s dir=%s seconds=%.1f",
            ELASTIC_VERSION,
            home,
            time.monotonic() - started,
        )
        return home

    def _elastic_root_plugin(self, home: Path, source: Path) -> None:
        """Compile ElasticRootPlugin.java into ``<home>/plugins/thermowatch-root``."""
        classes = home / ".thermowatch-root-classes"
        classes.mkdir()
        _run(
            [
                self._tool("javac"),
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

    def _elastic_user(self) -> pwd.struct_passwd | None:
        """The account Elasticsearch runs as when we are root (created once), else None.

        Elasticsearch refuses to start as root and has no switch to allow it.
        """
        if not _is_root():
            return None
        try:
            return pwd.getpwnam(ELASTIC_USER)
        except KeyError:
            pass
        _run(
            [
                self._tool("useradd"),
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

    def _java_home(self) -> str:
        raw = os.environ.get(ELASTIC_JAVA_HOME_ENV)
        if raw:
            return raw
        return str(Path(self._tool("java")).resolve().parent.parent)

    def _elastic_base(self) -> Path:
        """Config, data, logs and tmp of the node: ``<stack>/data/elasticsearch``,
        or as root a directory of the service user that this path links to."""
        link = self.data_dir("elasticsearch")
        if not _is_root():
            return link
        stack_id = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        base = ELASTIC_SYSTEM_DIR / f"stack-{stack_id}"
        base.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                link.rmdir()  # an empty directory left by an earlier layout
            link.symlink_to(base)
        return base

    def _elastic_argv(self) -> tuple[list[str], dict[str, str]]:
        home = self._elastic_home()
        base = self._elastic_base()
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
        settings = {
            "cluster.name": f"{SEARCH_CLUSTER_NAME}-es",
            "node.name": "thermowatch-es",
            "network.host": self.host,
            "http.port": self._ports.elastic,
            "transport.port": self._ports.elastic_transport,
            "discovery.type": "single-node",
            "path.data": data,
            "path.logs": logs,
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        if (home / "modules" / "x-pack-security").is_dir():
            settings["xpack.security.enabled"] = "false"
        (config / "elasticsearch.yml").write_text(
            "# written by deploy/local/stack.py (_elastic_argv) at every start\n"
            + "".join(f"{k}: {json.dumps(str(v))}\n" for k, v in settings.items()),
            encoding="utf-8",
        )
        env = dict(
            os.environ,
            ES_PATH_CONF=str(config),
            ES_JAVA_HOME=self._java_home(),
            ES_JAVA_OPTS=ELASTIC_HEAP,
            ES_TMPDIR=str(tmp),
        )
        env.pop("JAVA_HOME", None)  # the script only warns that it ignores it
        argv = [self._tool("env"), "-C", str(base), str(home / "bin" / "elasticsearch")]
        user = self._elastic_user()
        if user is None:
            return argv, env
        # What the node creates is its own already; this covers what we wrote.
        for path in (base, tmp, data, logs, config, *config.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        setpriv = [
            self._tool("setpriv"),
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--",
        ]
        return [*setpriv, *argv], env

    def _elastic_healthy(self, timeout: float) -> bool:
        """Cluster health yellow/green and elasticsearch-py's ``info()`` (which
        also checks that the server says it is Elasticsearch)."""
        if not _port_open(self.host, self._ports.elastic, timeout=min(timeout, 1.0)):
            return False
        from elasticsearch import Elasticsearch

        client = Elasticsearch(
            f"http://{self.host}:{self._ports.elastic}", request_timeout=timeout, max_retries=0
        )
        try:
            client.info()
            health = client.cluster.health()
        finally:
            client.close()
        return health.get("status") in ("yellow", "green")


def _unzip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` keeping the Unix modes (zipfile drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)


def _kafka_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-``: the storage tool would read it as an option
    (Kafka's own Uuid generator avoids those too).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):
            return cid


def _kafka_healthy(bootstrap: str, timeout: float) -> bool:
    """A real admin request (DescribeCluster) through aiokafka.

    Runs in a worker thread with its own event loop, so it works whether or not
    the caller is inside a running loop (async tests call wait_healthy too).
    """

    host, _, port = bootstrap.rpartition(":")
    if not _port_open(host, int(port), timeout=min(timeout, 1.0)):
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


def _check_names(services: Iterable[str] | None) -> list[str]:
    """The named services in start order; the default ones (never the optional) when none.

    >>> _check_names(None), _check_names(["elasticsearch", "kafka"])
    (['mosquitto', 'kafka', 'search'], ['kafka', 'elasticsearch'])
    """
    if services is None:
        return list(SERVICES)
    names = list(dict.fromkeys(services))
    if not names:
        return list(SERVICES)
    unknown = [n for n in names if n not in _KNOWN]
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(_KNOWN)}")
    # Always in dependency order, whatever order was asked for.
    return [n for n in _KNOWN if n in names]
