"""Checks of setting values that several job configs share; each raises ``ValueError`` naming the setting.

Pure Python: no array library, Dask or pipeline import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["check_positive_ints", "check_tile_pattern"]


def check_positive_ints(config: Any, names: Iterable[str]) -> None:
    """Raise ``ValueError("NAME: must be a positive integer, got V")`` for the first attribute of ``config``
    among ``names`` that is not an ``int`` >= 1."""
    for name in names:
        v = getattr(config, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")


def check_tile_pattern(pattern: str | None) -> None:
    """A ``tile_pattern`` setting must be a regular expression with a named group ``tile`` (the tile id in
    a file's URL); ``None`` or ``""`` (no pattern) passes."""
    if not pattern:
        return
    try:
        pat = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"tile_pattern: {pattern!r} is not a regular expression ({e}) (--tile-pattern)") from None
    if "tile" not in pat.groupindex:
        raise ValueError(f"tile_pattern: {pattern!r} needs a named group (?P<tile>...) (--tile-pattern)")
