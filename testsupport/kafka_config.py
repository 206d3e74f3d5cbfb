"""The ``[kafka]`` keys of a stage's TOML config for the stack's Kafka, as one service user.

Tests and benchmarks write gateway and processor configs by hand; these lines
give them the servers, TLS and SCRAM keys of :func:`stagekit.kafka.connection_keys`.
"""

from __future__ import annotations

import json

from stagekit.kafka import KafkaTarget, connection_keys

__all__ = ["kafka_toml"]


def kafka_toml(kafka: KafkaTarget, user: str) -> str:
    """TOML lines (no section header) that connect to ``kafka`` as ``user``.

    >>> print(kafka_toml("k:9092", "gateway"))
    bootstrap_servers = "k:9092"
    """
    lines = []
    for key, value in connection_keys(kafka, user).items():
        # A JSON string is a valid TOML basic string; a tuple of servers becomes a list.
        shown = list(value) if isinstance(value, tuple) else value
        lines.append(f"{key} = {json.dumps(shown)}")
    return "\n".join(lines)
