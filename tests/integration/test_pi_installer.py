"""The Pi installer in a fresh Debian 12 root: the steps of the edge README, for real.

A bookworm root is built with ``debootstrap`` from Debian's packages (Raspberry
Pi OS is Debian 12 based) and cached as a tarball under ``~/.cache/thermowatch``,
keyed by what it was built from, so only the first run pays for it. Each run
unpacks a fresh copy, copies the checkout and a provisioning bundle in, and runs
``deploy/pi/install.sh --bundle /root/bundle`` with ``chroot``: pip in the root
downloads the hashed wheels from PyPI. Then, inside the root: the unit passes
``systemd-analyze verify``, the service user and the file modes are the
installer's, and the agent runs once as the service user with the unit's own
command line and environment (drop-ins included) against the shared local
stack's Mosquitto (the root shares the network namespace), on a simulated w1
tree and mock GPIO, until its readings reach an admin subscriber.

Needs root (chroot, mount) and debootstrap; ``make deps`` installs debootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_devices_stack import Subscriber, wait_for
from testsupport.prerequisites import require, require_tools

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
UNIT_NAME = "thermowatch-edge.service"
SERVICE_USER = "thermowatch"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "python3-pip", "systemd", "ca-certificates")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thermowatch"
# What the checkout copy leaves out: build output, caches, the local stack's data.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".stack*", "__pycache__", "*.egg-info", "build", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", "node_modules", "*.pyc",
)  # fmt: skip
# Debian's own sbin/bin: the root's tools, never the host's (a venv, pyenv).
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def root_tarball() -> Path:
    """The cached bookworm root (debootstrap, minbase + PACKAGES), built on first use."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    key = hashlib.sha256(
        json.dumps([SUITE, MIRROR, "minbase", arch, sorted(PACKAGES)]).encode()
    ).hexdigest()[:16]
    tarball = CACHE / f"debootstrap-{SUITE}-{arch}-{key}.tar.zst"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"debootstrap-{key}.building-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    started = time.monotonic()
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(build / "root"), MIRROR],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        took = time.monotonic() - started
        print(f"debootstrap {SUITE} ({arch}): {took:.1f} s")
        partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
        subprocess.run(
            ["tar", "--zstd", "-C", str(build / "root"), "-cf", str(partial), "."], check=True
        )
        partial.rename(tarball)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{exc.cmd[0]} failed:\n{exc.stdout}\n{exc.stderr}") from exc
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tarball


@contextmanager
def fresh_root(workdir: Path) -> Iterator[Path]:
    """A fresh copy of the cached root, with /proc and /dev mounted; unmounted in the end."""
    root = workdir / "root"
    root.mkdir()
    subprocess.run(["tar", "--zstd", "-C", str(root), "-xf", str(root_tarball())], check=True)
    # Trust what this machine trusts (an HTTPS proxy's CA), and resolve names as it does.
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(crt, root / "usr/local/share/ca-certificates" / crt.name)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    mounts: list[Path] = []
    try:
        for args, target in (
            (["-t", "proc", "proc"], root / "proc"),
            (["--bind", "/dev"], root / "dev"),
        ):
            subprocess.run(["mount", *args, str(target)], check=True)
            mounts.append(target)
        in_root(root, ["update-ca-certificates"])
        yield root
    finally:
        unmounted = True
        for target in reversed(mounts):
            if subprocess.run(["umount", str(target)], check=False).returncode != 0:
                unmounted = False
                subprocess.run(["umount", "--lazy", str(target)], check=False)
        if unmounted:  # never delete through a mount that is still there (/dev)
            shutil.rmtree(root, ignore_errors=True)


def in_root(
    root: Path, argv: list[str], env: dict[str, str] | None = None, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``root`` with a clean environment; fail with its output
    unless it exits ``expect``."""
    base = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    cmd = ["chroot", str(root), "/usr/bin/env", "-i", *_pairs({**base, **(env or {})}), *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == expect, f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def _pairs(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def unit_command(root: Path, directive: str) -> list[str]:
    """The unit's ``directive`` command line (e.g. ExecStart), as systemd splits it."""
    text = (root / "etc/systemd/system" / UNIT_NAME).read_text()
    (line,) = re.findall(rf"^{directive}=(.+)$", text, re.MULTILINE)
    return shlex.split(line)


def unit_environment(root: Path, credentials: str) -> dict[str, str]:
    """Environment= of the unit, then of its drop-ins (later wins), ``%d`` expanded."""
    unit = root / "etc/systemd/system" / UNIT_NAME
    files = [unit, *sorted((unit.parent / f"{UNIT_NAME}.d").glob("*.conf"))]
    env: dict[str, str] = {}
    for path in files:
        for value in re.findall(r"^Environment=(.+)$", path.read_text(), re.MULTILINE):
            for pair in shlex.split(value):
                key, _, val = pair.partition("=")
                env[key] = val.replace("%d", credentials)
    return env


def thermowatch(*args: str) -> subprocess.CompletedProcess[str]:
    """The checkout's ``thermowatch`` command line, on this machine (not in the root)."""
    out = subprocess.run(
        [sys.executable, "-m", "thermowatch", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"thermowatch {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out


@contextmanager
def device_added(device: str) -> Iterator[None]:
    """Removes the stack's MQTT user ``device`` at the end, if the test added it."""
    try:
        yield
    finally:
        listed = subprocess.run(
            [sys.executable, "-m", "thermowatch", "devices", "list", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if listed.returncode == 0 and device in {d["device_id"] for d in json.loads(listed.stdout)}:
            thermowatch("devices", "remove", device)


def test_installer_in_a_fresh_debian_root(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # debootstrap, chroot and useradd live in sbin, which a user's PATH may lack.
    monkeypatch.setenv("PATH", os.pathsep.join((os.environ["PATH"], "/usr/sbin", "/sbin")))
    # The prerequisites before the stack: a skip must not start services first.
    require(os.geteuid() == 0, "root (chroot and mount build the Debian root)")
    require_tools("debootstrap", "chroot", "mount")
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"{platform.machine()}: the hashed wheel set has no wheels for it")
    stack: dict[str, Any] = request.getfixturevalue("stack")
    mq = stack["mosquitto"]
    site = f"pi{uuid.uuid4().hex[:8]}"
    device = f"pi-{uuid.uuid4().hex[:8]}"
    with fresh_root(tmp_path) as root, device_added(device):
        # The edge README's steps: a bundle for real probes, copied to the device keeping
        # its modes (scp -rp there, cp -rp here), the installer run with it.
        bundle = tmp_path / device
        thermowatch("devices", "add", device, "--site", site, "--sensor", "w1",
                    "--mqtt-host", mq["host"], "--out", str(bundle))  # fmt: skip
        subprocess.run(["cp", "-rp", str(bundle), str(root / "root/bundle")], check=True)
        shutil.copytree(REPO, root / "root/thermowatch", ignore=COPY_IGNORE)
        installer = "/root/thermowatch/deploy/pi/install.sh"
        install = in_root(root, [installer, "--bundle", "/root/bundle"])
        log = install.stdout + install.stderr
        print(log)
        assert "systemd is not running here" in log, log
        assert "GPIO outputs use mock pins" in log, log
        # A bundle without its password is refused before anything changes, naming the file;
        # a second run with the good bundle (an upgrade) goes through again.
        (root / "root/half-bundle").mkdir()
        shutil.copy(root / "root/bundle/edge.toml", root / "root/half-bundle/edge.toml")
        refused = in_root(root, [installer, "--bundle", "/root/half-bundle"], expect=1)
        assert "bundle /root/half-bundle has no edge.password" in refused.stderr, refused.stderr
        assert "==>" not in refused.stdout, refused.stdout
        in_root(root, [installer, "--bundle", "/root/bundle"])

        # Every pinned wheel installed at its pinned version; nothing else from PyPI.
        requirements = (REPO / "deploy/pi/requirements-edge.txt").read_text()
        # A pin may carry an environment marker (``cffi==2.0.0 ; platform_... \``).
        pin = r"^([A-Za-z0-9_.-]+)==(\S+)(?: ;[^\\\n]*)? \\$"
        pinned = dict(re.findall(pin, requirements, re.MULTILINE))
        venv_pip = "/opt/thermowatch/venv/bin/pip"
        frozen = json.loads(in_root(root, [venv_pip, "list", "--local", "--format=json"]).stdout)
        installed = {p["name"].lower().replace("_", "-"): p["version"] for p in frozen}
        for name, version in pinned.items():
            assert installed.get(name.lower()) == version, (name, version, installed)
        assert installed["thermowatch"] == "0.1.0"
        extra = set(installed) - {n.lower() for n in pinned} - {"thermowatch", "pip"}
        assert not extra, f"installed without a hash: {extra}"

        # The service user, the file modes, the unit enabled and verified.
        # The root's own /etc/passwd (the host's has no such user).
        passwd = (root / "etc/passwd").read_text()
        (entry,) = [ln for ln in passwd.splitlines() if ln.startswith(f"{SERVICE_USER}:")]
        _, _, uid, gid, _, home, shell = entry.split(":")
        assert int(uid) < 1000, entry  # a system user
        assert (home, shell) == ("/var/lib/thermowatch-edge", "/usr/sbin/nologin")
        conf, password = root / "etc/thermowatch/edge.toml", root / "etc/thermowatch/edge.password"
        mode = conf.stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (0o640, 0, int(gid))
        mode = password.stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (0o600, 0, 0)
        # The client certificate's key: the service user's group may read it, no one else.
        mode = (root / "etc/thermowatch/device.key").stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (0o640, 0, int(gid))
        wants = root / "etc/systemd/system/multi-user.target.wants" / UNIT_NAME
        assert wants.is_symlink() and os.readlink(wants) == f"/etc/systemd/system/{UNIT_NAME}"
        enabled = in_root(root, ["systemctl", "is-enabled", UNIT_NAME])
        assert enabled.stdout.strip() == "enabled", enabled.stdout
        verify = in_root(root, ["systemd-analyze", "verify", f"/etc/systemd/system/{UNIT_NAME}"])
        assert verify.stderr.strip() == "", verify.stderr

        # The agent once, as systemd would start it: the service user, the unit's command
        # lines and environment; the credential and state directory laid out like systemd's.
        creds = root / "run/credentials" / UNIT_NAME
        creds.mkdir(parents=True)
        shutil.copy(password, creds / "mqtt-password")
        state = root / "var/lib/thermowatch-edge"
        state.mkdir(mode=0o750, exist_ok=True)
        w1 = root / "var/lib/thermowatch-sim/w1"
        shutil.copytree(REPO / "tests/fixtures/w1/ok", w1)
        for path in (creds, creds / "mqtt-password", state):
            os.chown(path, int(uid), int(gid))
        env = {
            **unit_environment(root, f"/run/credentials/{UNIT_NAME}"),
            "STATE_DIRECTORY": "/var/lib/thermowatch-edge",
            # Simulated sensors: the DS18B20 reader on a fake w1 tree; a faster round.
            "THERMOWATCH_EDGE__SENSORS__W1_ROOT": "/var/lib/thermowatch-sim/w1",
            "THERMOWATCH_EDGE__SAMPLING__INTERVAL_S": "0.2",
        }
        assert env["GPIOZERO_PIN_FACTORY"] == "mock"  # the installer's drop-in
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"]
        in_root(root, [*as_user, *unit_command(root, "ExecStartPre")], env=env)
        topic = f"thermowatch/{site}/{device}"
        admin = Subscriber(mq, f"{topic}/telemetry")
        base = {"PATH": ROOT_PATH, "HOME": "/var/lib/thermowatch-edge", "LANG": "C.UTF-8"}
        agent = subprocess.Popen(
            ["chroot", str(root), "/usr/bin/env", "-i", *_pairs({**base, **env}),
             *as_user, *unit_command(root, "ExecStart")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda: len(admin.readings()) >= 5 or agent.poll() is not None, 120)
            assert agent.poll() is None, agent.communicate()[0]
            agent.send_signal(signal.SIGTERM)
            out, _ = agent.communicate(timeout=60)
            assert agent.returncode == 0, out
            assert "event=agent_stopped" in out, out
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
            admin.close()  # (the agent's status is not retained: nothing to clear)
        readings = admin.readings()
        assert all(r.device_id == device and r.site == site for r in readings)
        assert sorted({r.seq for r in readings})[:5] == list(range(5))
        # The state the agent wrote belongs to the service user.
        outbox = state / "outbox.sqlite3"
        assert outbox.exists() and outbox.stat().st_uid == int(uid)
