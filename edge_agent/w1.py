"""The DS18B20's ``w1_slave`` text, parsed and judged (pure, no I/O).

The kernel's w1-therm driver prints two lines per read: the scratchpad bytes
with the CRC verdict (``crc=xx YES|NO``), then the raw value in millidegrees
(``t=23125``). The ``temperature`` file is not used: it skips the CRC check.
:func:`judge` decides whether a raw value is a temperature at all, and
:class:`StuckCheck` notices a value that no longer moves.

>>> text = ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\\n"
...         "72 01 4b 46 7f ff 0e 10 57 t=23125\\n")
>>> parse_w1_slave(text)
(True, 23125)
>>> judge(True, 23125, None, -55.0, 125.0)
(<Quality.OK: 'ok'>, 23.125)
>>> judge(False, 23125, None, -55.0, 125.0)[0]
<Quality.CRC_ERROR: 'crc_error'>
>>> judge(True, 85000, 4.0, -55.0, 125.0)[0]
<Quality.POWER_ON_RESET: 'power_on_reset'>
"""

from __future__ import annotations

import re

from telemetry_contract import Quality

__all__ = [
    "POWER_ON_RESET_MILLIC",
    "RESET_BELIEVABLE_WITHIN_C",
    "StuckCheck",
    "ds18b20_millic",
    "judge",
    "parse_w1_bytes",
    "parse_w1_slave",
]

#: What the DS18B20 scratchpad holds after power-on, before any conversion:
#: +85.000 °C. A probe that browns out mid-conversion returns it too, so 85.000
#: read out of the blue is a fault, not a temperature.
POWER_ON_RESET_MILLIC = 85000
#: An 85.000 °C reading is believed only right after readings this close to it
#: (an oven really at 85 °C passes through 84.x first).
RESET_BELIEVABLE_WITHIN_C = 2.0

_CRC = re.compile(r"crc=([0-9a-fA-F]{2})\s+(YES|NO)\s*$")
_T = re.compile(r"t=(-?\d+)\s*$")


def parse_w1_slave(text: str) -> tuple[bool, int]:
    """``(crc_ok, millidegrees)`` from the two lines of a ``w1_slave`` file.

    >>> parse_w1_slave("50 05 4b : crc=1c NO\\n50 05 4b t=85000")
    (False, 85000)
    >>> parse_w1_slave("ff ff : crc=00 YES\\nff ff t=-1250\\n")
    (True, -1250)
    >>> parse_w1_slave("00 00 00 : crc=00 YES\\n00 00 00 t=0\\n")  # nobody answered
    (False, 0)
    >>> parse_w1_slave("")
    Traceback (most recent call last):
    ...
    ValueError: w1_slave: expected 2 lines ('... crc=xx YES|NO', '... t=<millidegrees>'), got 0
    """
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(
            "w1_slave: expected 2 lines ('... crc=xx YES|NO', '... t=<millidegrees>'), "
            f"got {len(lines)}"
        )
    crc = _CRC.search(lines[0])
    if crc is None:
        raise ValueError(f"w1_slave: no 'crc=xx YES|NO' in first line {lines[0][:80]!r}")
    t = _T.search(lines[1])
    if t is None:
        raise ValueError(f"w1_slave: no 't=<millidegrees>' in second line {lines[1][:80]!r}")
    # An all-zero scratchpad has a valid CRC (0) but means no probe answered
    # (shorted or missing data line): treat it as a failed CRC check.
    pad = lines[0].split(":", 1)[0].split()
    all_zero = bool(pad) and all(b == "00" for b in pad)
    return crc.group(2) == "YES" and not all_zero, int(t.group(1))


#: Bytes of a well-formed ``w1_slave`` file: printable ASCII and ``\n``. Within
#: them, only ``\n`` breaks a line and only the space is whitespace.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_w1_bytes(raw: bytes) -> tuple[bool, int]:
    """:func:`parse_w1_slave` on the raw bytes of the file, same results, same errors.

    The usual file (``... : crc=xx YES|NO`` / ``... t=<millidegrees>``) is parsed
    without decoding or regular expressions; anything else goes to
    :func:`parse_w1_slave`.

    >>> parse_w1_bytes(b"72 01 4b 7f : crc=57 YES\\n72 01 4b 7f t=23125\\n")
    (True, 23125)
    >>> parse_w1_bytes(b"50 05 4b : crc=1c NO\\n50 05 4b t=-85000")
    (False, -85000)
    >>> parse_w1_bytes(b"00 00 00 : crc=00 YES\\n00 00 00 t=0\\n")
    (False, 0)
    >>> parse_w1_bytes(b"ff : crc=00  YES \\nff t= 12\\n")
    Traceback (most recent call last):
    ...
    ValueError: w1_slave: no 't=<millidegrees>' in second line 'ff t= 12'
    """
    parts = raw.split(b"\n", 2)
    if len(parts) >= 2 and not raw.translate(None, _PLAIN):
        line0, line1 = parts[0], parts[1]
        if line0.endswith(b" YES"):
            crc_ok, head = True, line0[:-4]
        elif line0.endswith(b" NO"):
            crc_ok, head = False, line0[:-3]
        else:
            head = b""
        t = line1.rfind(b"t=")
        if head[-6:-2] == b"crc=" and _HEX.issuperset(head[-2:]) and t >= 0:
            digits = line1[t + 2 :]
            if (digits[1:] if digits[:1] == b"-" else digits).isdigit():
                pad = line0.split(b":", 1)[0].split()
                return crc_ok and not (pad and pad.count(b"00") == len(pad)), int(digits)
    return parse_w1_slave(raw.decode("ascii", "replace"))


def ds18b20_millic(temp_c: float) -> int:
    """The ``t=`` value the kernel prints for a 12-bit DS18B20 at ``temp_c`` (in range).

    The probe rounds to 1/16 °C (0.0625 °C, datasheet, 12-bit resolution); the
    w1-therm driver prints ``raw * 1000 / 16`` as an integer, cut towards zero.

    >>> ds18b20_millic(4.07), ds18b20_millic(-18.03), ds18b20_millic(85.0)
    (4062, -18000, 85000)
    """
    return int(round(temp_c * 16) * 1000 / 16)


def judge(
    crc_ok: bool,
    millic: int,
    last_ok_c: float | None,
    min_c: float,
    max_c: float,
) -> tuple[Quality, float | None]:
    """The quality verdict on one raw DS18B20 value, and the temperature if it is usable.

    ``last_ok_c`` is the previous good value from the same probe; 85.000 °C is
    believed only when that was already close to 85.

    >>> judge(True, 85000, 84.5, -55.0, 125.0)
    (<Quality.OK: 'ok'>, 85.0)
    >>> judge(True, 85000, None, -55.0, 125.0)[0]
    <Quality.POWER_ON_RESET: 'power_on_reset'>
    >>> judge(True, 127937, None, -55.0, 125.0)
    (<Quality.OUT_OF_RANGE: 'out_of_range'>, None)
    """
    if not crc_ok:
        return Quality.CRC_ERROR, None
    if millic == POWER_ON_RESET_MILLIC and (
        last_ok_c is None or abs(last_ok_c - 85.0) > RESET_BELIEVABLE_WITHIN_C
    ):
        return Quality.POWER_ON_RESET, None
    temp = millic / 1000.0
    if not min_c <= temp <= max_c:
        return Quality.OUT_OF_RANGE, None
    return Quality.OK, temp


class StuckCheck:
    """Flags a DS18B20 whose raw value has not moved by one LSB for too long.

    A real probe in a live room jitters by at least one LSB (0.0625 °C at 12
    bits) every few readings; a value frozen for ``after`` consecutive
    readings means a stuck probe or bus (a kernel cache, a broken conversion),
    so the readings are reported ``stuck``. ``after = 0`` disables the check.
    Raw millidegrees are compared, so any change of the ``t=`` value counts;
    readings that were not ok (CRC error, reset) neither count nor break a run.

    >>> chk = StuckCheck(after=3)
    >>> [chk.stuck(v) for v in (4062, 4062, 4062, 4062, 4062, 4125, 4125)]
    [False, False, False, True, True, False, False]
    >>> chk.repeats   # 4125 repeated once
    1
    >>> StuckCheck(after=0).stuck(4062), StuckCheck(after=0).stuck(4062)
    (False, False)
    """

    __slots__ = ("_last", "after", "repeats")

    def __init__(self, after: int) -> None:
        self.after = after
        self._last: int | None = None
        self.repeats = 0  # consecutive readings equal to the one before them

    def restore(self, last: int, repeats: int) -> None:
        """Continue a run saved before a restart (see :attr:`Sample.raw`).

        >>> chk = StuckCheck(after=3)
        >>> chk.restore(4062, 2)
        >>> chk.stuck(4062), chk.repeats
        (True, 3)
        """
        self._last, self.repeats = last, max(0, repeats)

    def stuck(self, millic: int) -> bool:
        """Record one ok raw value; True when it is (still) frozen."""
        if millic == self._last:
            self.repeats += 1
        else:
            self._last = millic
            self.repeats = 0
        return 0 < self.after <= self.repeats
