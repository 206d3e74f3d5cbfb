"""Installing what the services need: Debian packages, Maven artifacts, compiled Java.

Everything here is idempotent at the caller's level: a service checks its
marker file or its tools first and calls these only for what is missing.
``apt-get`` runs only as root; otherwise the error says what to install.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from deploy.local.errors import StackError
from deploy.local.layout import TEMPLATE_DIR

__all__ = [
    "MAVEN_REPO_ENV",
    "MVN_DEPENDENCY_PLUGIN",
    "apt_install",
    "ensure_java",
    "file_digest",
    "is_root",
    "maven_libs",
    "maven_zip",
    "mvn",
    "run",
    "tool",
    "unzip",
    "which",
]

logger = logging.getLogger(__name__)

#: Full coordinates: Maven 3.8's default dependency plugin fails on these poms.
MVN_DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"
#: A local Maven repository to use instead of ``~/.m2/repository``.
MAVEN_REPO_ENV: Final = "THERMOWATCH_MAVEN_REPO"
_MARKER: Final = ".thermowatch-complete"


def is_root() -> bool:
    """True when running as root (apt-get allowed; Elasticsearch needs its own user)."""
    return os.geteuid() == 0


def which(name: str) -> str | None:
    """shutil.which that also looks in the sbin directories (mosquitto lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tool(name: str) -> str:
    """The path of program ``name``; StackError when it is not installed."""
    found = which(name)
    if found is None:
        raise StackError(f"{name} not found on PATH")
    return found


def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float = 900.0,
    env: dict[str, str] | None = None,
    secret: bool = False,
) -> None:
    """Run ``argv`` to completion; StackError with the last 30 output lines on failure.

    ``secret`` keeps the command line (a password) out of the log.
    """
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


def apt_install(*packages: str) -> None:
    """``apt-get update && apt-get install`` as root; StackError naming the packages otherwise."""
    if not is_root():
        raise StackError(
            f"{', '.join(packages)} missing and not running as root: "
            f"apt-get install -y {' '.join(packages)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update"], what="apt-get update", env=env)
    run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        what=f"apt-get install {' '.join(packages)}",
        env=env,
    )


def ensure_java() -> None:
    """A JDK (``java`` and ``javac``) for the JVM services, from Debian when missing."""
    if which("java") is None or which("javac") is None:
        apt_install("openjdk-17-jdk-headless")


def file_digest(*paths: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the files' contents, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def mvn(*args: str, what: str) -> None:
    """Run Maven quietly in batch mode (installed from Debian when missing).

    ``$THERMOWATCH_MAVEN_REPO`` becomes ``-Dmaven.repo.local``.
    """
    if which("mvn") is None:
        apt_install("maven")
    argv = [tool("mvn"), "-q", "-B", *args]
    repo = os.environ.get(MAVEN_REPO_ENV)
    if repo:
        argv.append(f"-Dmaven.repo.local={repo}")
    run(argv, what=what)


def maven_libs(cache: Path, which_pom: str) -> Path:
    """``<cache>/<which_pom>-libs``: the jars of ``deploy/local/maven/<which_pom>/pom.xml``.

    Fetched with Maven unless already complete for this exact pom (a marker
    file records the pom's digest, so bumping a version refetches).
    """
    pom = TEMPLATE_DIR / "maven" / which_pom / "pom.xml"
    libs = cache / f"{which_pom}-libs"
    marker = libs / _MARKER
    digest = file_digest(pom)
    if marker.exists() and marker.read_text(encoding="utf-8").strip() == digest:
        return libs
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".{which_pom}-libs.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    mvn(
        "-f",
        str(pom),
        f"{MVN_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={staging}",
        what=f"mvn copy-dependencies ({which_pom})",
    )
    (staging / _MARKER).write_text(digest + "\n", encoding="utf-8")
    shutil.rmtree(libs, ignore_errors=True)
    staging.replace(libs)
    logger.info(
        "fetched jars which=%s dir=%s seconds=%.1f", which_pom, libs, time.monotonic() - started
    )
    return libs


def maven_zip(
    parent: Path,
    artifact: str,
    name: str,
    stamp: str,
    *,
    check: Callable[[Path], None] | None = None,
    finish: Callable[[Path], None] | None = None,
    strict_checksums: bool = False,
) -> Path:
    """``<parent>/<name>``: the zip ``artifact`` from Maven, unzipped, once per ``stamp``.

    The zip must unpack into a folder ``name``. Skipped when a marker file in it
    holds ``stamp`` (say a version and a digest of what ``finish`` adds).
    ``check(archive)`` may raise to refuse the download; ``finish(folder)``
    completes the unpacked folder before it is moved into place. With
    ``strict_checksums`` Maven fails on a checksum mismatch instead of warning.
    """
    home = parent / name
    marker = home / _MARKER
    if marker.exists() and marker.read_text(encoding="utf-8").strip() == stamp:
        return home
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = parent / f".{name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    try:
        mvn(
            *(["-C"] if strict_checksums else []),
            f"{MVN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={staging}",
            what=f"mvn copy ({name})",
        )
        (archive,) = staging.glob("*.zip")
        if check is not None:
            check(archive)
        unzip(archive, staging)
        archive.unlink()
        unpacked = staging / name
        if finish is not None:
            finish(unpacked)
        (unpacked / _MARKER).write_text(stamp + "\n", encoding="utf-8")
        shutil.rmtree(home, ignore_errors=True)
        unpacked.replace(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetched %s dir=%s seconds=%.1f", name, home, time.monotonic() - started)
    return home


def unzip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` keeping the Unix modes (zipfile drops them)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                path.chmod(mode)
