"""A small FITS header parser for the keywords readers look up (layout, scaling, table columns, ids).

astropy's ``Header.fromstring`` builds a ``Card`` per line and validates
every value through its configuration system: ~1 ms per header, most of the
cost of planning a DESI coadd (~20 HDUs, each scanned on the driver's
inspection and again on the worker that reads it). :func:`parse_header`
reads the 80-character cards once into an ordered, read-only mapping with
the same values astropy gives for the value types FITS defines for
keywords (strings with ``''`` escapes and trailing blanks dropped, logicals,
integers, reals with ``E`` or ``D`` exponents). Commentary cards
(``COMMENT``, ``HISTORY``, blank), ``CONTINUE`` and ``HIERARCH`` cards are
skipped; a keyword that appears twice keeps its first value, as astropy's
lookup does. A value of any other form is kept as its stripped text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["FitsHeader", "parse_header"]

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_SKIP = {"", "COMMENT", "HISTORY", "CONTINUE", "HIERARCH", "END"}


_STRING = re.compile(r"\s*'((?:[^']|'')*)'")


def _value(text: str) -> Any:
    if "'" in text:
        m = _STRING.match(text)
        if m is not None:
            return m.group(1).replace("''", "'").rstrip()
    s = text.split("/", 1)[0].strip()
    if s == "T":
        return True
    if s == "F":
        return False
    if _INT.match(s):
        return int(s)
    if _FLOAT.match(s):
        return float(s.replace("D", "E").replace("d", "e"))
    return s


class FitsHeader(Mapping):
    """The keyword -> value cards of one FITS header, in card order (see the module notes).

    Values are parsed from the card text on first access (a header has hundreds of cards; a
    reader looks at a dozen).
    """

    __slots__ = ("_raw", "_parsed")

    def __init__(self, raw: dict[str, str]):
        self._raw = raw
        self._parsed: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        k = key.upper()
        try:
            return self._parsed[k]
        except KeyError:
            v = self._parsed[k] = _value(self._raw[k])
            return v

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"FitsHeader({len(self._raw)} cards)"


def parse_header(raw: str) -> FitsHeader:
    """Split header text (whole 80-character cards, up to END) into a :class:`FitsHeader`."""
    cards: dict[str, str] = {}
    for i in range(0, len(raw) - len(raw) % 80, 80):
        key = raw[i : i + 8].rstrip()
        if key == "END":
            break
        if key in _SKIP or raw[i + 8 : i + 10] != "= " or key in cards:
            continue
        cards[key] = raw[i + 10 : i + 80]
    return FitsHeader(cards)
