"""The one error type of the contract, the reasons it can carry, and safe error text.

An error names what a device sent (a field name, a value), so its text is
attacker-controlled: :func:`printable` renders it as escapes where it could
break a log line, a terminal or an encoder (control characters, lone
surrogates, bidirectional marks) and bounds its length, and every
:class:`ContractError` passes its field and problem through it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["MAX_FIELD_CHARS", "MAX_PROBLEM_CHARS", "ContractError", "Reason", "printable"]

#: Longest ``field`` of an error, in characters (after escaping).
MAX_FIELD_CHARS: Final = 256
#: Longest ``problem`` of an error, in characters (after escaping).
MAX_PROBLEM_CHARS: Final = 1024
_ELLIPSIS: Final = "…"


class Reason(enum.StrEnum):
    """Machine-readable cause of a rejected payload (dead-letter ``reason``)."""

    NOT_JSON = "not_json"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    WRONG_MESSAGE_TYPE = "wrong_message_type"
    FUTURE_TIMESTAMP = "future_timestamp"
    DEVICE_MISMATCH = "device_mismatch"
    SITE_MISMATCH = "site_mismatch"
    BAD_TOPIC = "bad_topic"
    TOO_DEEP = "too_deep"


def printable(text: str, max_chars: int = MAX_PROBLEM_CHARS, *, quote: bool = False) -> str:
    """``text`` safe to log, print and encode as UTF-8, at most ``max_chars`` long.

    Every character that is not printable (``str.isprintable``: controls,
    format characters such as the right-to-left mark, lone surrogates,
    unassigned code points, separators other than the space) becomes the
    escape ``repr`` would show; a longer text is cut and ends with ``…``.
    Printable non-ASCII text (``°C``, ``Zürich``) stays readable.

    This is the one function every stage uses to put untrusted text (ids,
    topics, field names, error text) into a log line, an error or a dead
    letter. With ``quote=True`` the result is one double-quoted token, ``"``
    and ``\\`` escaped as well, for the value of a ``key=value`` log line whose
    text may hold spaces or ``=``: a device cannot make it look like another
    pair (``x event=forged``). The quotes count within ``max_chars``.

    >>> printable("host\\n\\u202e\\ud800 °C")
    'host\\\\n\\\\u202e\\\\ud800 °C'
    >>> printable("x" * 10, 5)
    'xxxx…'
    >>> print(printable('a"b\\n event=forged', 40, quote=True))
    "a\\"b\\n event=forged"
    >>> len(printable("y" * 10_000, 40, quote=True))
    40
    """
    text = text[: max_chars + 1]  # never more work than the result needs
    if quote:
        max_chars = max(0, max_chars - 2)
        text = text[: max_chars + 1].replace("\\", "\\\\").replace('"', '\\"')
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + _ELLIPSIS
    return f'"{text}"' if quote else text


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class ContractError(ValueError):
    """A payload or topic that breaks the message contract.

    ``str(err)`` names the field and the problem, e.g.
    ``temp_c: must be between -55 and 125 °C, got 130.0``. Field and problem
    are :func:`printable` (escaped, and at most :data:`MAX_FIELD_CHARS` /
    :data:`MAX_PROBLEM_CHARS` characters), so the text is always safe to log
    and to encode.

    >>> err = ContractError(Reason.MISSING_FIELD, "required field is missing", field="seq")
    >>> str(err)
    'seq: required field is missing'
    >>> err.reason.value
    'missing_field'
    """

    def __init__(self, reason: Reason, problem: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.problem = problem = printable(problem, MAX_PROBLEM_CHARS)
        self.field = field = None if field is None else printable(field, MAX_FIELD_CHARS)
        super().__init__(f"{field}: {problem}" if field else problem)
