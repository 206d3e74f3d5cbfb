"""Hostile payloads for the fleet test, one deterministic generator per class:
what a device holding one valid credential can publish on its own topics to
hurt the pipeline (the fuzz run's random generators, shared by the property
tests and ``make fuzz``, are in :mod:`testsupport.hostile`).

Each class is a function ``(target, i) -> bytes`` that returns the ``i``-th
payload of the class for ``target`` (a device, its site and a clock). Most
classes must be dead-lettered by the gateway (or refused by the broker); the
few that are valid messages (a reading stamped years ago, an edge alert
storm) must be handled like any other, at the cost of a fresh one.

Used by ``tests/integration/test_hostile_input.py`` (every class through the
real broker, gateway, Kafka, processor and web view).

>>> t = Target(device_id="s1-d01", site="s1", now_ms=1_767_225_600_000)
>>> sorted(DEAD_LETTERED) == sorted(set(DEAD_LETTERED))
True
>>> DEAD_LETTERED["surrogate_nan"](t, 0)
b'{"\\\\ud800": NaN}'
>>> len(DEAD_LETTERED["deep_nesting"](t, 0))
2000
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DEAD_LETTERED",
    "HOSTILE_SEQ",
    "STORED",
    "Target",
    "edge_alert_storm",
    "huge_publish",
]

#: Seqs at or above this are the hostile device's (far above any outbox's).
HOSTILE_SEQ: Final = 800_000_000
#: 2021-01-01T00:00:00Z: years before any run, after the contract's earliest time.
OLD_TS_MS: Final = 1_609_459_200_000


@dataclass(frozen=True)
class Target:
    """The device the payloads claim to come from (its own topic, its own id)."""

    device_id: str
    site: str
    now_ms: int
    sensor_id: str = "host"


def _reading(t: Target, i: int, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "reading",
        "schema_version": 1,
        "device_id": t.device_id,
        "sensor_id": t.sensor_id,
        "site": t.site,
        "seq": HOSTILE_SEQ + i,
        "ts": t.now_ms,
        "temp_c": 21.0,
    }
    doc.update(over)
    return doc


def _json(doc: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \\ud800 escapes (valid JSON text).
    return json.dumps(doc, ensure_ascii=True, allow_nan=True).encode()


def _with_ids(t: Target, i: int, value: str) -> bytes:
    return _json(_reading(t, i, sensor_id=value))


_ID_TRICKS: Final = (
    "host\n",
    "a/b",
    "a+",
    "#",
    "a\x00b",
    "\u202eevil",  # right-to-left override
    "\ud800",
    "x" * 10_000,
    "host\u200b",  # zero-width space
)


def _id_trick(t: Target, i: int) -> bytes:
    return _with_ids(t, i, _ID_TRICKS[i % len(_ID_TRICKS)])


def _oversize(t: Target, i: int) -> bytes:
    # Over the contract's 16 KiB, under any broker packet limit.
    return _json(_reading(t, i, pad="p" * (17 * 1024)))


def _invalid_utf8(t: Target, i: int) -> bytes:
    good = _json(_reading(t, i, sensor_id="hostXX"))
    return good.replace(b"hostXX", b"host\xff\xfe")


def _huge_numbers(t: Target, i: int) -> bytes:
    choices = (
        b'{"type":"reading","schema_version":1,"device_id":"%s","sensor_id":"host",'
        b'"site":"%s","seq":1' + b"0" * 400 + b',"ts":%d,"temp_c":21.0}',
        b'{"type":"reading","schema_version":1,"device_id":"%s","sensor_id":"host",'
        b'"site":"%s","seq":1,"ts":%d,"temp_c":1e400}',
    )
    raw = choices[i % 2]
    return raw % (t.device_id.encode(), t.site.encode(), t.now_ms)


def _duplicate_keys(t: Target, i: int) -> bytes:
    body = _json(_reading(t, i))
    # The same key twice: the second seq is out of range.
    return body[:-1] + b',"seq":-5,"temp_c":999}'


#: Payloads the gateway must dead-letter (never store), class name -> generator.
DEAD_LETTERED: Final[dict[str, Callable[[Target, int], bytes]]] = {
    "surrogate_nan": lambda t, i: b'{"\\ud800": NaN}',
    "deep_nesting": lambda t, i: b"[" * 1000 + b"]" * 1000,
    "deep_objects": lambda t, i: b'{"a":' * 600 + b"1" + b"}" * 600,
    "year_10000": lambda t, i: _json(_reading(t, i, ts=253_402_300_800_000 + i)),
    "nan_dotted_key": lambda t, i: b'{"a.b": NaN, "seq": %d}' % i,
    "nan_bracket_key": lambda t, i: b'{"a[0]": NaN, "seq": %d}' % i,
    "id_tricks": _id_trick,
    "oversize_17k": _oversize,
    "invalid_utf8": _invalid_utf8,
    "huge_numbers": _huge_numbers,
    "duplicate_keys": _duplicate_keys,
    "nul_bytes": lambda t, i: b"\x00" * (i % 64 + 1),
    "infinity": lambda t, i: _json(_reading(t, i, temp_c=float("inf"))),
}


def _old_reading(t: Target, i: int) -> bytes:
    return _json(_reading(t, i, ts=OLD_TS_MS + i * 1000))


#: Valid messages that must cost what fresh ones do: stored once, like any other.
STORED: Final[dict[str, Callable[[Target, int], bytes]]] = {
    "old_reading": _old_reading,
}


def edge_alert_storm(t: Target, i: int) -> bytes:
    """The ``i``-th of an alert storm: one edge alert raised and cleared in turn."""
    return _json(
        {
            "type": "edge_alert",
            "schema_version": 1,
            "device_id": t.device_id,
            "site": t.site,
            "sensor_id": t.sensor_id,
            "alert_id": "storm",
            "ts": t.now_ms + i,
            "kind": "threshold",
            "state": "raised" if i % 2 == 0 else "cleared",
            "severity": "critical" if i % 4 == 0 else "warning",
            "message": "<!channel> storm <https://evil.example|click> &amp;",
        }
    )


def huge_publish(size: int = 20 * 1024 * 1024) -> bytes:
    """A publish far above every packet limit (the broker must refuse it)."""
    return b"{" + b" " * (size - 2) + b"}"
