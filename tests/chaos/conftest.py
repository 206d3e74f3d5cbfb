"""Shared fixtures of the chaos tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.stack import STACK_DIR_ENV, LocalStack, free_port


@pytest.fixture(scope="module")
def mq_kafka_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A private Mosquitto + Kafka on free ports, for one test module.

    A module that needs more names them in ``STACK_SERVICES`` (e.g. the search server).

    Under ``$THERMOWATCH_STACK_DIR`` (CI) it lives in ``<that dir>/chaos_<topic>``
    (from the module name), so that what an interrupted run left there is
    stopped and removed at the next start; otherwise in a pytest temp dir.
    """
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    base = os.environ.get(STACK_DIR_ENV)
    if base:
        root = Path(base) / name
        LocalStack(stack_dir=root).down()
        shutil.rmtree(root, ignore_errors=True)
    else:
        root = tmp_path_factory.mktemp(name)
    stack = LocalStack(
        stack_dir=root,
        mqtt_port=free_port(span=2),
        kafka_port=free_port(span=1),
        search_port=free_port(span=100),
        ports={"artemis": free_port(span=2)},
    )
    services = getattr(request.module, "STACK_SERVICES", ["mosquitto", "kafka"])
    try:
        stack.up(services, timeout=240.0)
        yield stack
    finally:
        stack.down()
