"""The one dead-letter builder: a rejected payload kept whole, with why and where.

The gateway dead-letters MQTT payloads that break the contract; the
processor dead-letters Kafka records that do. Both build the
:class:`~telemetry_contract.DeadLetter` here, so a dead letter always has
the same shape and limits: the payload as UTF-8 text, or base64 when it is
not valid UTF-8, cut (and the detail saying so) when the encoded letter
would exceed :data:`DEADLETTER_LIMIT` -- the contract's payload limit, so
that any consumer decodes the dead-letter topic with default settings.

>>> letter, value = dead_letter(b"x" * 70000, Reason.TOO_LARGE, "payload: too big",
...                             source_topic="thermowatch/s1/d1/telemetry", received_ms=5)
>>> len(letter.payload), letter.detail
(8192, 'payload: too big (payload cut to the first 8192 of 70000 bytes)')
>>> len(value) <= DEADLETTER_LIMIT
True
>>> letter, _ = dead_letter(b"\\xff", Reason.NOT_JSON, "not JSON", source_topic="t", received_ms=1)
>>> letter.payload, letter.payload_encoding, letter.gateway_id
('/w==', 'base64', '')
"""

from __future__ import annotations

import base64
from typing import Final

from telemetry_contract.codec import MAX_PAYLOAD_BYTES, encode
from telemetry_contract.errors import Reason
from telemetry_contract.messages import DeadLetter

__all__ = ["DEADLETTER_LIMIT", "dead_letter"]

#: Largest encoded dead letter, in bytes.
DEADLETTER_LIMIT: Final = MAX_PAYLOAD_BYTES
_MAX_DETAIL: Final = 4096
_MAX_TOPIC: Final = 1024
_MAX_ID: Final = 128


def dead_letter(
    payload: bytes,
    reason: Reason,
    detail: str,
    *,
    source_topic: str,
    received_ms: int,
    gateway_id: str = "",
    limit: int = DEADLETTER_LIMIT,
) -> tuple[DeadLetter, bytes]:
    """The dead letter of a rejected ``payload`` and its encoding (at most ``limit`` bytes).

    ``source_topic`` is the MQTT topic (gateway) or the Kafka topic
    (processor) the payload came from; ``gateway_id`` names the gateway that
    refused it ("" when the processor refused a Kafka record).
    """
    source = source_topic[:_MAX_TOPIC]
    keep = len(payload)
    while True:
        kept = payload[:keep]
        note = (
            f" (payload cut to the first {keep} of {len(payload)} bytes)"
            if keep < len(payload)
            else ""
        )
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        letter = DeadLetter(
            reason=reason.value,
            detail=(detail[: _MAX_DETAIL - len(note)] + note),
            source_topic=source,
            received_ts=max(0, received_ms),
            payload=text,
            payload_encoding="utf-8" if encoding == "utf-8" else "base64",
            gateway_id=gateway_id[:_MAX_ID],
        )
        value = encode(letter)
        if len(value) <= limit or keep == 0:
            return letter, value
        # Escaping and base64 grow the payload: keep what fits, cut on a byte.
        keep = min(keep // 2, limit // 2)
