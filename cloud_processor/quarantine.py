"""What happens to one Kafka record the processor cannot handle: a bounded
dead letter, a short sanitised log line (rate-limited), and the stream goes on.

Whatever the record is -- bytes that break the contract, or bytes that make
decoding, the rules or the document building raise anything at all -- the
processor turns it into a dead letter no larger than
:data:`~telemetry_contract.deadletter.DEADLETTER_LIMIT` (the record is cut
*before* it is copied into text), and commits past it.

Log lines carry attacker-controlled text (field names, values in an error
message): :func:`telemetry_contract.printable` with ``quote=True`` makes it
one quoted, escaped token of bounded length, so it can neither forge
``key=value`` pairs or lines nor flood the log; a
:class:`~stagekit.ratelog.RateLimitedLog` lets through at most a few lines
per interval and says how many it held back (the metrics count every record).

>>> letter, value = dead_letter_for(b"x" * 900_000, ValueError("boom"), topic="t", now_ms=1)
>>> letter.reason, len(value) <= DEADLETTER_LIMIT, letter.detail[:40]
('invalid_value', True, 'ValueError: boom (record of 900000 bytes')
"""

from __future__ import annotations

import logging
from typing import Final

from stagekit.ratelog import RateLimitedLog
from telemetry_contract import ContractError, DeadLetter, Reason, printable
from telemetry_contract.deadletter import DEADLETTER_LIMIT, dead_letter

__all__ = ["SKIPPED_LOG_LINES", "SKIPPED_LOG_PER_S", "dead_letter_for", "log_skipped"]

#: Characters of attacker-controlled text in one log line (after escaping).
LOG_TEXT_LIMIT: Final = 160
#: Log lines about skipped (or rejected) records let through per interval ...
SKIPPED_LOG_LINES: Final = 10
#: ... of this many seconds; the next line says how many were held back.
SKIPPED_LOG_PER_S: Final = 10.0
#: Text of an unexpected exception kept in a dead letter's detail.
_DETAIL_LIMIT: Final = 512


def _describe(exc: BaseException) -> str:
    """``str(exc)``, or the type name when even that fails."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ raises: say what we can
        text = "(no message)"
    if isinstance(exc, ContractError):
        return text[:_DETAIL_LIMIT]
    return f"{type(exc).__name__}: {text[:_DETAIL_LIMIT]}"


def dead_letter_for(
    value: bytes, exc: BaseException, *, topic: str, now_ms: int
) -> tuple[DeadLetter, bytes]:
    """The bounded dead letter of a record the processor could not handle.

    ``reason`` is the contract's reason for a :class:`ContractError`, else
    ``invalid_value`` (the detail names the exception). The record is cut to
    :data:`DEADLETTER_LIMIT` bytes before anything copies it (the dead letter
    could not hold more), and its full size is in the detail.
    """
    reason = exc.reason if isinstance(exc, ContractError) else Reason.INVALID_VALUE
    # The detail may quote the record (a field name): the contract's dead_letter
    # escapes it (telemetry_contract.printable), lone surrogates included.
    detail = _describe(exc)
    if len(value) > DEADLETTER_LIMIT:
        detail = f"{detail} (record of {len(value)} bytes)"
        value = value[:DEADLETTER_LIMIT]
    try:
        return dead_letter(value, reason, detail, source_topic=topic, received_ms=now_ms)
    except Exception:  # never let the dead letter itself stop the stream
        return dead_letter(
            b"",
            reason,
            f"{type(exc).__name__} (payload dropped: it could not be encoded)",
            source_topic=topic[:256],
            received_ms=max(0, now_ms),
        )


def log_skipped(
    logger: logging.Logger,
    budget: RateLimitedLog,
    exc: BaseException,
    *,
    topic: str,
    partition: int,
    offset: int,
) -> None:
    """One short warning line per skipped record, within ``budget``."""
    budget.log(
        logger,
        logging.WARNING,
        "event=record_skipped topic=%s partition=%d offset=%d reason=%s error=%s",
        printable(topic, 80, quote=True),
        partition,
        offset,
        exc.reason.value if isinstance(exc, ContractError) else type(exc).__name__,
        printable(_describe(exc), LOG_TEXT_LIMIT, quote=True),
    )
