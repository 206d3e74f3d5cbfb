"""The one error type of the contract, and the reasons it can carry."""

from __future__ import annotations

import enum

__all__ = ["ContractError", "Reason"]


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


class ContractError(ValueError):
    """A payload or topic that breaks the message contract.

    ``str(err)`` names the field and the problem, e.g.
    ``temp_c: must be between -55 and 125 °C, got 130.0``.

    >>> err = ContractError(Reason.MISSING_FIELD, "required field is missing", field="seq")
    >>> str(err)
    'seq: required field is missing'
    >>> err.reason.value
    'missing_field'
    """

    def __init__(self, reason: Reason, problem: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.problem = problem
        self.field = field
        super().__init__(f"{field}: {problem}" if field else problem)
