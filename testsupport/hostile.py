"""Hostile inputs for the parsers of untrusted bytes (issue 14), from a seeded ``random.Random``.

One generator serves the property tests (``tests/unit``: hypothesis hands in
its own ``Random`` through ``st.randoms()``, so a failure replays and
shrinks) and the long fuzz run (``benchmarks/fuzz``: one ``Random(seed)``).
Every input class the issue names has one method, picked by name:

* ``random_bytes`` -- any bytes, mostly short, sometimes up to 20 KB;
* ``mutated_golden`` -- a golden fixture (``tests/fixtures/messages``) with
  bytes flipped, inserted, deleted, duplicated or spliced from another one;
* ``deep_nesting`` -- arrays/objects nested up to 9,000 levels, alone or as
  a field of a golden message, balanced or not, with a NaN at the bottom;
* ``huge_numbers`` -- integers of up to 5,000 digits, ``1e999``, ``2**64``;
* ``non_finite`` -- ``NaN``/``Infinity`` under any key (also ``a.b``, ``a[0]``);
* ``duplicate_keys`` -- a key repeated with another value (``type`` too);
* ``unicode_ids`` -- ids and texts with ``/``, ``+``, ``#``, NUL, newlines,
  RTL marks, BOMs, lone surrogates (escaped and as raw bytes), 10k characters;
* ``far_timestamps`` -- event times far past and future (year 10000, 2**63);
* ``oversized`` -- valid-looking messages just under, at and over 16 KiB.

:func:`hostile_text` gives the same tricks as a Python ``str`` (for topics,
details, gateway ids), lone surrogates included.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CLASSES",
    "FIXTURES",
    "Hostile",
    "golden_payloads",
    "hostile_text",
    "pairs_json",
]

FIXTURES: Final = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "messages"
#: The input classes, in the order of the issue.
CLASSES: Final = (
    "random_bytes",
    "mutated_golden",
    "deep_nesting",
    "huge_numbers",
    "non_finite",
    "duplicate_keys",
    "unicode_ids",
    "far_timestamps",
    "oversized",
)
#: Fields that carry ids (topic levels, keywords) and texts in some message.
_ID_FIELDS: Final = ("device_id", "site", "sensor_id", "alert_id", "detector", "rule")
_TEXT_FIELDS: Final = ("message", "reason", "agent_version", "detail", "clear_reason")
_NUMBER_FIELDS: Final = (
    "seq",
    "ts",
    "temp_c",
    "version",
    "first_seq",
    "last_seq",
    "anomaly_score",
    "config_version",
    "opened_at",
    "updated_at",
    "@timestamp",
    "received_ts",
    "sampling_interval_s",
    "value",
)
_TS_FIELDS: Final = ("ts", "opened_at", "updated_at", "@timestamp", "received_ts", "resolved_at")
_TRICKS: Final = (
    "/",
    "+",
    "#",
    "\x00",
    "\n",
    "\r\n",
    "\t",
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero width space
    "\ufeff",  # byte order mark
    "\u2028",  # line separator
    "\ud800",  # lone surrogates
    "\udfff",
    "\U0001f525",
    "e\u0301",  # combining accent
    "\uff21",  # full-width A
    "`",
    '"',
    "\\",
    ".",
    "[0]",
    "$",
    " - at `$.x`",
)
#: Ids the contract accepts, at its edges (length, first character, punctuation).
_ODD_BUT_VALID: Final = ("", "a" * 63, "0", "A.b_c-9", "-x", ".", "28-0316a2791aff:1")
_TIMES: Final = (
    1_577_836_800_000,  # 2020-01-01: the earliest accepted (an old reading)
    1_600_000_000_000,
    1_767_225_900_000,  # 2026-01-01 + 5 min: the latest accepted at the fuzz run's clock
    1_767_225_900_001,
    0,
    -1,
    1,
    1_577_836_799_999,
    -(2**63),
    253_402_300_800_000,  # year 10000
    253_402_300_799_999,
    2**53 - 1,
    2**53,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(10**30),
    1.767225600000e12,
    1e300,
)


def golden_payloads(root: Path = FIXTURES, *, valid_only: bool = False) -> list[bytes]:
    """Every fixture payload and alert change (or only the valid ones), as bytes."""
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    groups = ("valid", "alert_change") if valid_only else tuple(manifest)
    files = [e["file"] for group in groups for e in manifest.get(group, ())]
    if not valid_only:
        files += [str(p.relative_to(root)) for p in sorted((root / "alert_change").glob("*.json"))]
    return [(root / f).read_bytes() for f in dict.fromkeys(files)]


def hostile_text(rng: random.Random, *, max_len: int = 10_000) -> str:
    """A ``str`` mixing ordinary characters with the tricks (lone surrogates too)."""
    pick = rng.random()
    if pick < 0.1:
        return rng.choice(_TRICKS) * rng.randint(1, max_len // 2)
    if pick < 0.2:
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 64)))
    parts = []
    for _ in range(rng.randint(0, 8)):
        parts.append(rng.choice(_TRICKS) if rng.random() < 0.5 else rng.choice(("s1-d01", "h")))
    text = "".join(parts)
    if rng.random() < 0.05:
        text += "x" * rng.randint(0, max_len)
    return text[:max_len]


def pairs_json(pairs: Sequence[tuple[str, Any]], *, ascii_only: bool = True) -> bytes:
    """A JSON object from key/value pairs, keys repeated as given; NaN/Infinity
    written as such; lone surrogates as raw (invalid UTF-8) bytes unless ``ascii_only``."""
    body = ",".join(
        f"{json.dumps(k, ensure_ascii=ascii_only)}:{_value_json(v, ascii_only)}" for k, v in pairs
    )
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


def _value_json(value: Any, ascii_only: bool) -> str:
    if isinstance(value, _Raw):
        return value.text
    return json.dumps(value, ensure_ascii=ascii_only)


class _Raw:
    """JSON text written as it is (numbers beyond what ``json.dumps`` writes, nesting)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Hostile:
    """Makes hostile payloads of each class in :data:`CLASSES` from ``rng``.

    ``golden``: what ``mutated_golden`` mutates, and the messages the
    field-level classes start from (default: the fixtures; then only the valid
    ones are started from); ``types``: start only from messages of these types.
    """

    def __init__(
        self,
        rng: random.Random,
        golden: Sequence[bytes] | None = None,
        *,
        types: Sequence[str] = (),
    ) -> None:
        self.rng = rng
        self.golden = list(golden) if golden is not None else golden_payloads()
        docs = []
        # Field-level classes start from a valid message: one change, one reason.
        for raw in self.golden if golden is not None else golden_payloads(valid_only=True):
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict) and (not types or doc.get("type") in types):
                docs.append(doc)
        self.docs: list[dict[str, Any]] = docs

    def make(self, kind: str | None = None) -> bytes:
        """One payload of class ``kind`` (None: any class)."""
        name = kind or self.rng.choice(CLASSES)
        out: bytes = getattr(self, name)()
        return out

    # -- helpers ----------------------------------------------------------------

    def _pairs(self) -> list[tuple[str, Any]]:
        return list(self.rng.choice(self.docs).items())

    def _set(self, pairs: list[tuple[str, Any]], key: str, value: Any) -> list[tuple[str, Any]]:
        for i, (k, _) in enumerate(pairs):
            if k == key:
                pairs[i] = (key, value)
                return pairs
        pairs.insert(self.rng.randint(0, len(pairs)), (key, value))
        return pairs

    def _field(self, pairs: list[tuple[str, Any]], candidates: Sequence[str]) -> str:
        present = [k for k, _ in pairs if k in candidates]
        return (
            self.rng.choice(present)
            if present and self.rng.random() < 0.8
            else (self.rng.choice(candidates))
        )

    # -- the classes ----------------------------------------------------------

    def random_bytes(self) -> bytes:
        rng = self.rng
        size = rng.choice(
            (0, 1, 2, rng.randint(0, 64), rng.randint(0, 1024), rng.randint(0, 20_000))
        )
        if rng.random() < 0.3:  # mostly JSON punctuation: reaches deeper into parsers
            return bytes(rng.choice(b'{}[]":,0123456789.-eEtrufalsnNI \\u') for _ in range(size))
        return rng.randbytes(size)

    def mutated_golden(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.golden))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            pos = rng.randint(0, len(data))
            if op == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 16)]
            elif op == 3:
                data[pos:pos] = data[pos : pos + rng.randint(1, 64)] * rng.randint(1, 4)
            elif op == 4:
                other = rng.choice(self.golden)
                cut = rng.randint(0, len(other))
                data = data[:pos] + bytearray(other[cut:])
            else:
                token = rng.choice(
                    (
                        b"NaN",
                        b"-Infinity",
                        b"1e999",
                        b'"\\ud800"',
                        b"[" * 200,
                        b"null",
                        b"\xed\xa0\x80",
                    )
                )
                data[pos:pos] = token
        return bytes(data)

    def deep_nesting(self) -> bytes:
        rng = self.rng
        depth = rng.choice((63, 64, 65, 128, 999, 1000, 1001, rng.randint(1, 9000)))
        open_, close = rng.choice(((b"[", b"]"), (b'{"a":', b"}"), (b'{"a.b":[', b"]}")))
        bottom = rng.choice((b"1", b"NaN", b'"x"', b"", b"[]"))
        nested = open_ * depth + bottom + close * (depth if rng.random() < 0.8 else depth // 2)
        if rng.random() < 0.5:
            return nested
        pairs = self._pairs()
        key = self._field(pairs, (*_NUMBER_FIELDS, *_ID_FIELDS, "x"))
        return pairs_json(self._set(pairs, key, _Raw(nested.decode("latin-1"))))

    def huge_numbers(self) -> bytes:
        rng = self.rng
        digits = rng.choice((19, 20, 300, 309, 4300, 4301, rng.randint(1, 5000)))
        number = rng.choice(
            (
                "9" * digits,
                "-" + "9" * digits,
                "1e999",
                "-1e999",
                "1e-999",
                "0." + "0" * digits + "1",
                str(2**64),
                str(-(2**63) - 1),
                "1" + "0" * digits + ".5",
                "-0.0",
            )
        )
        pairs = self._pairs()
        key = self._field(pairs, _NUMBER_FIELDS)
        return pairs_json(self._set(pairs, key, _Raw(number)))

    def non_finite(self) -> bytes:
        rng = self.rng
        value = _Raw(rng.choice(("NaN", "Infinity", "-Infinity", "[NaN]", '{"k": Infinity}')))
        pairs = self._pairs()
        if rng.random() < 0.5:
            key = self._field(pairs, _NUMBER_FIELDS)
        else:
            key = rng.choice(("a.b", "a[0]", "\ud800", "", "x" * 300, "detector_params", "$"))
        if key == "detector_params" and rng.random() < 0.5:
            value = _Raw('{"threshold": NaN}')
        return pairs_json(self._set(pairs, key, value), ascii_only=rng.random() < 0.7)

    def duplicate_keys(self) -> bytes:
        rng = self.rng
        pairs = self._pairs()
        for _ in range(rng.randint(1, 3)):
            key, value = rng.choice(pairs)
            other = rng.choice(
                (None, 1, "x", "reading", "gap", "device_config", "s1-d02", [], {}, value)
            )
            if key == "type" or rng.random() < 0.3:
                key = "type"
            pairs.insert(rng.randint(0, len(pairs)), (key, other))
        return pairs_json(pairs)

    def unicode_ids(self) -> bytes:
        rng = self.rng
        pairs = self._pairs()
        for _ in range(rng.randint(1, 3)):
            key = self._field(pairs, (*_ID_FIELDS, *_TEXT_FIELDS))
            base = rng.choice(("s1-d01", "host", "h", ""))
            trick = hostile_text(rng) if rng.random() < 0.8 else rng.choice(_ODD_BUT_VALID)
            value = rng.choice((base + trick, trick + base, trick))
            if rng.random() < 0.1:  # a trick in a key instead
                pairs.append((value, 1))
            else:
                self._set(pairs, key, value)
        return pairs_json(pairs, ascii_only=rng.random() < 0.5)

    def far_timestamps(self) -> bytes:
        rng = self.rng
        pairs = self._pairs()
        key = self._field(pairs, _TS_FIELDS)
        value = rng.choice(_TIMES)
        return pairs_json(self._set(pairs, key, value))

    def oversized(self) -> bytes:
        rng = self.rng
        pairs = self._pairs()
        target = rng.choice((16_383, 16_384, 16_385, 65_536, rng.randint(1, 262_144)))
        base = len(pairs_json(pairs))
        filler = rng.choice(("x", "é", "\x01", "\\", "\U0001f525"))
        key = self._field(pairs, (*_TEXT_FIELDS, "payload"))
        unit = len(json.dumps(filler).encode()) - 2
        text = filler * max(0, (target - base - len(key) - 6) // max(1, unit))
        return pairs_json(self._set(pairs, key, text), ascii_only=False)
