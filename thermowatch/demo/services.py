"""The pipeline stages a demo run starts: gateway and processor as subprocesses.

Each runs as ``python -m <module> run -c FILE`` with its log in the run's
``logs/``; a :class:`Service` can be stopped cleanly (SIGTERM), killed (the
chaos tests), and asked for its log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stagekit.kafka import KafkaTarget, list_topics
from thermowatch.demo.configs import gateway_config, merge_config, processor_config, write_toml
from thermowatch.demo.run import DemoRun

__all__ = ["Service", "pipeline_services", "wait_topics"]

log = logging.getLogger(__name__)


class Service:
    """A pipeline stage run as ``python -m <module> run -c FILE``, logging to a file."""

    def __init__(self, name: str, module: str, config: Path, log_file: Path) -> None:
        self.name = name
        self.module = module
        self.config = config
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (its output appended to the log file)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        log.info("event=service_started name=%s pid=%d", self.name, self.proc.pid)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the current process (None before :meth:`start`)."""
        return None if self.proc is None else self.proc.pid

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (``kill -9`` by default) and wait for the exit; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        log.info("event=service_signalled name=%s pid=%d sig=%d", self.name, self.proc.pid, sig)
        return self.proc.returncode

    def log_size(self) -> int:
        """Bytes in the log file so far (a mark for :meth:`log_since`)."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What the service logged after ``offset`` (from :meth:`log_size`)."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        """The last ``lines`` of the log (for an error message)."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def pipeline_services(
    run: DemoRun,
    endpoints: Mapping[str, Any],
    *,
    gateway_overrides: Mapping[str, Any] | None = None,
    processor_overrides: Mapping[str, Any] | None = None,
) -> tuple[Service, Service]:
    """Write the run's gateway and processor configs; their (not yet started) services.

    The overrides are merged into :func:`gateway_config` / :func:`processor_config`
    (the chaos tests shorten the processor's Kafka session timeout this way).
    """
    gw_file, pr_file = run.run_dir / "gateway.toml", run.run_dir / "processor.toml"
    write_toml(gw_file, merge_config(gateway_config(run, endpoints), gateway_overrides or {}))
    write_toml(pr_file, merge_config(processor_config(run, endpoints), processor_overrides or {}))
    gateway = Service("gateway", "gateway", gw_file, run.run_dir / "logs" / "gateway.log")
    processor = Service(
        "processor", "cloud_processor", pr_file, run.run_dir / "logs" / "processor.log"
    )
    return gateway, processor


async def wait_topics(
    kafka: KafkaTarget, topics: Sequence[str], service: Service, wait_s: float
) -> None:
    """Wait until ``topics`` exist (the gateway creates them at start); fail if it died."""
    deadline = time.monotonic() + wait_s
    while True:
        if set(topics) <= set(await list_topics(kafka)):
            return
        if not service.alive:
            raise RuntimeError(f"{service.name} exited:\n{service.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service.name} did not create its Kafka topics in {wait_s}s")
        await asyncio.sleep(0.5)
