"""Where the local stack keeps its files, and the settings read from the environment.

One stack directory holds everything that belongs to one running stack (pid
files, logs, data, MQTT credentials, ``state.json``); the cache directory
holds what any stack can reuse (jars, compiled launchers, the Elasticsearch
distribution). Templates and poms are read from this package's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy.local.errors import StackError

__all__ = [
    "CACHE_DIR_ENV",
    "HOST",
    "STACK_DIR_ENV",
    "TEMPLATE_DIR",
    "StackLayout",
    "StateFile",
    "env_port",
    "render",
    "write_private",
]

STACK_DIR_ENV: Final = "THERMOWATCH_STACK_DIR"
CACHE_DIR_ENV: Final = "THERMOWATCH_CACHE_DIR"
#: Every service listens on loopback only.
HOST: Final = "127.0.0.1"
#: ``deploy/local/``: the config templates, Java sources and Maven poms.
TEMPLATE_DIR: Final = Path(__file__).resolve().parent


def env_port(name: str, default: int) -> int:
    """The TCP port in environment variable ``name``, ``default`` when unset or empty.

    >>> env_port("THERMOWATCH_DOCTEST_UNSET_PORT", 18830)
    18830
    """
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


def render(template: str, **values: object) -> str:
    """``deploy/local/<template>`` with its ``$name`` placeholders filled in."""
    text = (TEMPLATE_DIR / template).read_text(encoding="utf-8")
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


def write_private(path: Path, text: str | bytes) -> None:
    """Write ``text`` (str as UTF-8, or bytes: a key) to ``path`` atomically, the file
    created 0600 from its first byte (it may hold passwords or keys)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # A leftover (or planted) file of that name would keep its own mode, and a
    # symlink would be followed: remove it, then create the file afresh.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode("utf-8") if isinstance(text, str) else text)
    tmp.replace(path)


@dataclass(frozen=True)
class StackLayout:
    """The paths of one stack: ``<root>/run``, ``logs``, ``data/<svc>`` and the cache.

    >>> layout = StackLayout(Path("/s"), Path("/c"))
    >>> str(layout.pid_file("kafka")), str(layout.log_file("kafka")), str(layout.data_dir("kafka"))
    ('/s/run/kafka.pid', '/s/logs/kafka.log', '/s/data/kafka')
    """

    root: Path
    cache: Path
    host: str = HOST

    @classmethod
    def from_env(
        cls, stack_dir: Path | str | None = None, cache_dir: Path | str | None = None
    ) -> StackLayout:
        """The given directories, else ``$THERMOWATCH_STACK_DIR``/``$THERMOWATCH_CACHE_DIR``,
        else ``~/.local/state/thermowatch/stack`` and ``~/.cache/thermowatch``."""
        home = Path.home()
        root = (
            Path(stack_dir).expanduser()
            if stack_dir is not None
            else _env_dir(STACK_DIR_ENV, home / ".local" / "state" / "thermowatch" / "stack")
        )
        cache = (
            Path(cache_dir).expanduser()
            if cache_dir is not None
            else _env_dir(CACHE_DIR_ENV, home / ".cache" / "thermowatch")
        )
        return cls(root.resolve(), cache.resolve())

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


class StateFile:
    """``<stack>/state.json``: the Kafka cluster id and the last known status.

    ``status`` is called at each :meth:`record`, so the file always shows the
    pids of the moment it was written.
    """

    def __init__(self, path: Path, status: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.path = path
        self._status = status

    def read(self) -> dict[str, Any]:
        """The recorded state; empty when the file is missing or unreadable."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return data

    def record(self, **extra: Any) -> None:
        """Merge ``extra`` into the state and write it with the current status."""
        state = self.read()
        state.update(extra)
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state["services"] = self._status()
        write_private(self.path, json.dumps(state, indent=2) + "\n")
