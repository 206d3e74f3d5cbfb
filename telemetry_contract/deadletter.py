"""The one dead-letter builder: a rejected payload kept, with why and where.

The gateway dead-letters MQTT payloads that break the contract; the
processor dead-letters Kafka records that do. Both build the
:class:`~telemetry_contract.DeadLetter` here, so a dead letter always has
the same shape and limits: the payload as UTF-8 text, or base64 when it is
not valid UTF-8, cut (and the detail saying so) when the encoded letter
would exceed :data:`DEADLETTER_LIMIT` -- the contract's payload limit, so
that any consumer decodes the dead-letter topic with default settings.

:func:`dead_letter` never raises and its encoding is never over the limit,
whatever the strings it is given (lone surrogates, control characters and
bidirectional marks in the detail, topic or gateway id are written as
escapes). The payload is cut to what can fit *before* it is copied or
decoded, so a 64 MiB payload costs a few times the limit, not the payload.

>>> letter, value = dead_letter(b"x" * 70000, Reason.TOO_LARGE, "payload: too big",
...                             source_topic="thermowatch/s1/d1/telemetry", received_ms=5)
>>> len(letter.payload), letter.detail
(8192, 'payload: too big (payload cut to the first 8192 of 70000 bytes)')
>>> len(value) <= DEADLETTER_LIMIT
True
>>> letter, _ = dead_letter(b"\\xff", Reason.NOT_JSON, "not JSON", source_topic="t", received_ms=1)
>>> letter.payload, letter.payload_encoding, letter.gateway_id
('/w==', 'base64', '')
>>> dead_letter(b"{}", Reason.NOT_JSON, "key \\ud800", source_topic="t", received_ms=1)[0].detail
'key \\\\ud800'
"""

from __future__ import annotations

import base64
from typing import Final, Literal

from telemetry_contract.codec import MAX_PAYLOAD_BYTES, encode
from telemetry_contract.errors import Reason, printable
from telemetry_contract.messages import DeadLetter

__all__ = ["DEADLETTER_LIMIT", "MIN_DEADLETTER_LIMIT", "dead_letter"]

#: Largest encoded dead letter, in bytes.
DEADLETTER_LIMIT: Final = MAX_PAYLOAD_BYTES
#: Smallest ``limit`` accepted: an empty letter with long metadata fits in it.
MIN_DEADLETTER_LIMIT: Final = 1024
_MAX_DETAIL: Final = 4096
_MAX_TOPIC: Final = 1024
_MAX_ID: Final = 128
_MAX_REASON: Final = 64
_MAX_TS: Final = 2**63 - 1
#: Bytes a cut payload's note and encoding name may add to the empty letter.
_SLACK: Final = 48
#: Bytes of a letter's own JSON besides its strings (names, tags, ts: ~170) and
#: the cut note (~75), rounded up.
_FRAME: Final = 320


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
    refused it ("" when the processor refused a Kafka record). A payload that
    does not fit whole is cut to at most ``limit // 2`` bytes (less when
    escaping or base64 makes it grow), on a character boundary when it is text.
    ``limit`` below :data:`MIN_DEADLETTER_LIMIT` is raised to it (a programming
    error, not an input).
    """
    limit = max(limit, MIN_DEADLETTER_LIMIT)
    size = len(payload)
    # Metadata first, each bounded in characters and then, together, in bytes:
    # at most 4 bytes a character, their total must leave room for the frame.
    meta_budget = (limit - _FRAME) // 2
    code = printable(str(getattr(reason, "value", reason)), _MAX_REASON) or "unknown"
    source = _fit(printable(str(source_topic), _MAX_TOPIC), meta_budget // 4)
    gateway = _fit(printable(str(gateway_id), _MAX_ID), meta_budget // 8)
    note_room = len(f" (payload cut to the first {size} of {size} bytes)")
    spent = _utf8_len(code) + _utf8_len(source) + _utf8_len(gateway)
    why = _fit(printable(str(detail), _MAX_DETAIL - note_room), meta_budget - spent)
    received = min(max(0, received_ms), _MAX_TS)

    def letter_of(kept: bytes) -> tuple[DeadLetter, bytes]:
        cut = len(kept) < size
        text, encoding = _as_text(kept, cut=cut)
        note = f" (payload cut to the first {len(kept)} of {size} bytes)" if cut else ""
        letter = DeadLetter(
            reason=code,
            detail=why + note,
            source_topic=source,
            received_ts=received,
            payload=text,
            payload_encoding=encoding,
            gateway_id=gateway,
        )
        return letter, encode(letter)

    # What the payload may take: the limit less the letter without it. Every
    # payload byte costs at least one encoded byte, so nothing beyond this can
    # fit, and only this much is ever copied out of the payload.
    base = len(letter_of(b"")[1])
    room = max(0, limit - base - _SLACK)
    keep = size if size <= room else min(room, limit // 2)
    while True:
        letter, value = letter_of(bytes(payload[:keep]))
        if len(value) <= limit or keep == 0:
            return letter, value
        # Escaping (up to 6 bytes a byte) or base64 (4 for 3) made it grow:
        # keep the share that fits at the rate this part cost.
        cost = max(1, len(value) - base)
        keep = max(0, min(keep - 1, limit // 2, keep * room // cost))


def _as_text(kept: bytes, *, cut: bool) -> tuple[str, Literal["utf-8", "base64"]]:
    """The payload as UTF-8 text, or base64 when it is not UTF-8.

    A cut payload that ends inside a character loses that partial character
    rather than becoming base64.
    """
    try:
        return kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data" and exc.end == len(kept):
            try:
                return kept[: exc.start].decode("utf-8"), "utf-8"
            except UnicodeDecodeError:  # pragma: no cover - the prefix decoded above
                pass
    return base64.b64encode(kept).decode("ascii"), "base64"


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _fit(text: str, max_bytes: int) -> str:
    """``text`` cut (with ``…``) so that its UTF-8 takes at most ``max_bytes`` bytes."""
    if _utf8_len(text) <= max_bytes:
        return text
    cut = text.encode("utf-8")[: max(0, max_bytes - 3)].decode("utf-8", "ignore")
    return cut + "…"
