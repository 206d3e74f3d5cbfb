"""The demo's web view: ``thermowatch web run`` as a child process, on the run's names.

:func:`start_web` writes ``web.toml`` into the run directory
(:func:`thermowatch.demo.configs.web_config`: the stack's search server and
Kafka, the run's index and topic prefixes, only the run's devices), starts the
view as a subprocess (its log in ``logs/web.log``) and waits until it serves,
so the demo can print one URL before its fleet starts. A child process rather
than a task of the demo's event loop: the page stays quick while the demo's
loop is busy, its log lines stay out of the terminal, and it outlives the
demo's ``asyncio.run`` to stay up after the summary.

>>> url_in("2026-12-05 INFO ...\\nthermowatch web: serving http://127.0.0.1:41234/\\n")
'http://127.0.0.1:41234/'
>>> url_in("starting") is None
True
"""

from __future__ import annotations

import atexit
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

from thermowatch.demo.configs import web_config, write_toml
from thermowatch.demo.run import DemoRun
from thermowatch.demo.services import Service

__all__ = ["DemoWeb", "hold_web", "serve_web", "start_web", "url_in", "write_web_config"]

_SERVING: Final = re.compile(r"thermowatch web: serving (http://\S+?)/?$", re.MULTILINE)


def url_in(log_text: str) -> str | None:
    """The URL the web view said it serves (with a trailing ``/``), if it said so yet."""
    found = _SERVING.search(log_text)
    return None if found is None else found.group(1) + "/"


class DemoWeb:
    """The running web view of a demo run: its :attr:`url`; :meth:`stop` when done."""

    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url

    @property
    def alive(self) -> bool:
        """True while the web view runs."""
        return self.service.alive

    def wait(self) -> None:
        """Block until the web view exits (Ctrl-C reaches it and the demo alike)."""
        if self.service.proc is not None:
            self.service.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL after 10 s); the exit code (idempotent)."""
        return self.service.stop(timeout=10.0)


def write_web_config(run: DemoRun, endpoints: Mapping[str, Any], port: int = 0) -> None:
    """Write ``web.toml`` into the run directory (``thermowatch web run -c`` reads it)."""
    write_toml(run.run_dir / "web.toml", web_config(run, endpoints, port))


def start_web(
    run: DemoRun, endpoints: Mapping[str, Any], *, port: int = 0, wait_s: float = 30.0
) -> DemoWeb:
    """Start the run's web view on ``port`` (0: a free one) and wait until it serves.

    Raises ``RuntimeError`` with the end of its log if it exits or does not
    serve within ``wait_s`` (a port already taken, say).
    """
    config = run.run_dir / "web.toml"
    write_web_config(run, endpoints, port)
    service = Service("web", "thermowatch.web", config, run.run_dir / "logs" / "web.log")
    mark = service.log_size()
    service.start()
    deadline = time.monotonic() + wait_s
    while True:
        url = url_in(service.log_since(mark))
        if url is not None:
            return DemoWeb(service, url)
        if not service.alive:
            raise RuntimeError(f"the web view exited:\n{service.tail()}")
        if time.monotonic() > deadline:
            service.stop(timeout=5.0)
            raise RuntimeError(f"the web view did not start in {wait_s:.0f} s:\n{service.tail()}")
        time.sleep(0.1)


def serve_web(
    console: Any, run: DemoRun, endpoints: Mapping[str, Any], *, port: int, enabled: bool
) -> DemoWeb | None:
    """``thermowatch demo``'s web view: started, its URL printed, stopped at exit.

    With ``enabled`` False (``--no-web``) only ``web.toml`` is written, for the
    closing hint. The view is stopped when the demo's process exits however
    it ends (an error, Ctrl-C, SIGTERM).
    """
    if not enabled:
        write_web_config(run, endpoints, port)
        return None
    web = start_web(run, endpoints, port=port)
    atexit.register(web.stop)
    console.print(f"Web view of this run (live devices and alerts): {web.url}", soft_wrap=True)
    return web


def hold_web(console: Any, web: DemoWeb, *, interactive: bool | None = None) -> None:
    """After the summary: keep the view up until Ctrl-C when run in a terminal, else stop it.

    ``interactive`` defaults to whether stdin and stdout are terminals (CI
    and tests are not: the demo then exits after its summary).
    """
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        if interactive and web.alive:
            console.print(f"web view still at {web.url} — Ctrl-C to stop", soft_wrap=True)
            web.wait()
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()
