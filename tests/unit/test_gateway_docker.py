"""The gateway's container image, checked statically (no Docker engine needed).

Parses ``deploy/docker/gateway.Dockerfile`` and the gateway service of
``deploy/compose.yaml``: slim base, non-root user, a health check that probes
``/readyz`` on the port the image configures, and an entry point that is a
real command of this repository run with a config file the image ships.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

from gateway.config import load_config
from testsupport.prerequisites import require
from thermowatch.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "gateway.Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instrs) if word == "FROM"]
    return instrs[starts[-1] :]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_every_stage_uses_a_slim_python_base() -> None:
    bases = [args.split()[0] for word, args in instructions(DOCKERFILE) if word == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim(-\w+)?", base), base


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = [args for word, args in final_stage(instructions(DOCKERFILE)) if word == "USER"]
    assert users, "no USER in the final stage: the gateway would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user


def test_healthcheck_probes_readyz_on_the_configured_port() -> None:
    stage = final_stage(instructions(DOCKERFILE))
    checks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(checks) == 1
    port = env_of(stage)["THERMOWATCH_GATEWAY__HTTP__PORT"]
    assert f"127.0.0.1:{port}/readyz" in checks[0]
    assert "CMD" in checks[0]
    assert any(word == "EXPOSE" and args.split()[0] == port for word, args in stage)


def test_entrypoint_is_a_real_command_with_a_shipped_valid_config() -> None:
    stage = final_stage(instructions(DOCKERFILE))
    entry = exec_form(next(args for word, args in stage if word == "ENTRYPOINT"))
    cmd = exec_form(next(args for word, args in stage if word == "CMD"))
    argv = entry + cmd
    # The console script is declared in pyproject and resolves to an existing module.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    module, _, func = scripts[argv[0]].partition(":")
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    assert func == "main"
    args = build_parser().parse_args(argv[1:])
    assert callable(args.func)
    assert args.func.__module__ == "gateway.__main__" and args.func.__name__ == "_run"
    # The config named in CMD is the one COPY puts there, and it loads.
    copies = {
        parts[-1]: parts[0]
        for word, rest in stage
        if word == "COPY" and not rest.startswith("--from")
        for parts in [rest.split()]
    }
    source = copies[args.config]
    assert (REPO / source).is_file()
    assert load_config(REPO / source, env={}).validate() == []


def test_build_stage_copies_only_existing_sources() -> None:
    for word, rest in instructions(DOCKERFILE):
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source


def test_compose_gateway_service_builds_this_dockerfile() -> None:
    require(importlib.util.find_spec("yaml") is not None, "pyyaml (the dev extra)")
    yaml = importlib.import_module("yaml")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    gateways = {
        name: svc
        for name, svc in services.items()
        if isinstance(svc.get("build"), dict)
        and svc["build"].get("dockerfile") == "deploy/docker/gateway.Dockerfile"
    }
    assert gateways, "no compose service builds the gateway image"
    for name, svc in gateways.items():
        context = (COMPOSE.parent / svc["build"]["context"]).resolve()
        assert (context / svc["build"]["dockerfile"]) == DOCKERFILE, name
        env = svc.get("environment", {})
        assert env.get("THERMOWATCH_GATEWAY__GATEWAY__ID"), f"{name}: needs a stable gateway id"
        assert "kafka" in svc.get("depends_on", {}) and "mosquitto" in svc["depends_on"]
