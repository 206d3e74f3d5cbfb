"""Detached service processes: pid files, spawn, signals, stop, logs, ports, locks.

Every service runs in its own session with stdin on /dev/null and its output
appended to ``<stack>/logs/<svc>.log``; its pid is kept in
``<stack>/run/<svc>.pid``. A pid is trusted only while ``/proc/<pid>/cmdline``
still carries the service's marker, so a recycled pid in a stale pid file is
never mistaken for the service (and never signalled).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.local.errors import StackError

__all__ = [
    "ServiceProcess",
    "ephemeral_port_range",
    "flock",
    "free_port",
    "pid_alive",
    "poll_until",
    "port_open",
]

logger = logging.getLogger(__name__)


#: Linux's default ``net.ipv4.ip_local_port_range``, used where /proc cannot be read.
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
#: Service ports are picked at or above this (below it: well-known and registered
#: ports, and the local stack's own defaults such as 18830 and 19092).
LOWEST_SERVICE_PORT = 20000


def ephemeral_port_range(
    path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range"),
) -> tuple[int, int]:
    """The kernel's range for the local port of outgoing connections, inclusive.

    >>> ephemeral_port_range(Path("/no/such/file"))
    (32768, 60999)
    """
    try:
        low, high = (int(field) for field in path.read_text(encoding="ascii").split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def free_port(span: int = 0, *, rng: random.Random | None = None) -> int:
    """A free TCP port on 127.0.0.1 whose ``port + span`` is free too, both
    outside the kernel's ephemeral range.

    For a private stack beside the shared one (tests, experiments): Kafka's
    controller listens on its port + 1, OpenSearch's transport on + 100.
    Outside the ephemeral range because the kernel gives that range to
    outgoing connections: a client reconnecting quickly to a port nobody
    listens on (a stage while its Kafka restarts) can be given that very port
    and connect to itself, and the service then cannot bind it ("Address
    already in use"). The ports may be taken again before they are bound:
    callers retry or accept that rare failure.

    >>> low, high = ephemeral_port_range()
    >>> port = free_port(span=100)
    >>> all(not low <= p <= high for p in (port, port + 100))
    True
    """
    low, high = ephemeral_port_range()
    pick = rng or random.SystemRandom()
    ranges = [
        (start, end)
        for start, end in (
            (LOWEST_SERVICE_PORT, low - 1 - span),
            (max(high + 1, LOWEST_SERVICE_PORT), 65535 - span),
        )
        if start <= end
    ]
    if not ranges:
        raise RuntimeError(f"no port range outside the ephemeral range {low}-{high}")
    for _ in range(500):
        start, end = pick.choice(ranges)
        port = pick.randint(start, end)
        if all(_bindable(p) for p in ({port, port + span})):
            return port
    raise RuntimeError(f"no free port (pair) outside the ephemeral range {low}-{high}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def poll_until(check: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Call ``check`` every ``interval`` seconds until it is true (True) or ``timeout`` passes.

    A fixed interval, not a backoff: these waits are for a local process that
    is expected to change state within a second or two.

    >>> poll_until(lambda: True, 0.0, 0.1), poll_until(lambda: False, 0.0, 0.1)
    (True, False)
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, shared with other processes using the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is a dead child of this process (else it stays a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, marker: bytes) -> bool:
    """True while ``pid`` is the process whose command line carries ``marker``."""
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
class ServiceProcess:
    """The detached process of one service, known by its pid file and log file."""

    name: str
    #: Found in ``/proc/<pid>/cmdline`` of the service (see :func:`pid_alive`).
    marker: bytes
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """Pid of the running service, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid, self.marker):
            return pid
        logger.info("stale pid file service=%s pid=%s", self.name, pid)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``argv`` detached, output appended to the log; write the pid file."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.log_file.open("ab") as fh:
            fh.write(f"\n==== thermowatch stack: starting {self.name} at {stamp} ====\n".encode())
        fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
        self.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        logger.info("started service=%s pid=%d log=%s", self.name, pid, self.log_file)
        return pid

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False when the service was not running.

        Waits only for SIGKILL (until the process is gone) and never removes
        the pid file: the chaos tests use this for ``kill -9`` and SIGSTOP/SIGCONT.
        """
        pid = self.pid()
        if pid is None:
            return False
        logger.info("signal service=%s pid=%d sig=%d", self.name, pid, sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self.wait_exit(pid, 10.0)
        return True

    def wait_exit(self, pid: int, timeout: float) -> bool:
        """True once ``pid`` is gone, False if it still runs after ``timeout`` seconds."""
        return poll_until(lambda: not pid_alive(pid, self.marker), timeout, 0.1)

    def stop(self, pid: int, timeout: float) -> None:
        """SIGTERM ``pid``, SIGKILL after ``timeout``; StackError if it survives that."""
        logger.info("stopping service=%s pid=%d", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a SIGSTOPped process cannot handle SIGTERM
            os.kill(pid, signal.SIGTERM)
        if self.wait_exit(pid, timeout):
            return
        logger.warning("stop timed out, killing service=%s pid=%d", self.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self.wait_exit(pid, 10.0):
            raise StackError(f"{self.name}: pid {pid} survived SIGKILL")

    def log_tail(self, lines: int = 30) -> list[str]:
        """The last ``lines`` lines of the log (read from its last 256 KiB)."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                data = fh.read()
        except OSError:
            return []
        return data.decode("utf-8", errors="replace").splitlines()[-lines:]

    def failure(self, why: str) -> str:
        """A StackError message: what went wrong and the last 30 lines of the log."""
        tail = self.log_tail(30)
        return f"{self.name}: {why}; last {len(tail)} lines of {self.log_file}:\n" + "\n".join(tail)
