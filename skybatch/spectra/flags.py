"""Per-spectrum flags set by preprocessing (an int32 bit field, 0 = nothing to report).

Pixel-level bits live in :mod:`skybatch.spectra.mask`; these describe a whole spectrum.

======================  ===  ================================================================
name                    bit  meaning
======================  ===  ================================================================
``BAD_REDSHIFT``        0    z missing (NaN), z <= -1, or zwarn != 0 (see :func:`to_rest_frame`)
``OBSERVED_FRAME``      1    rest frame asked for but this spectrum was kept in the observed frame
``DROPPED``             2    all ivar set to 0 on purpose (e.g. bad redshift with rule "drop")
``NO_GOOD_PIXELS``      3    no pixel with ivar > 0 in the output
``NORM_FAILED``         4    normalisation impossible (no good pixel in the window, or a
                             non-positive / non-finite scale); scale set to 1
``CONTINUUM_FAILED``    5    continuum undefined on some good pixels (they were set to ivar 0)
======================  ===  ================================================================
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "SPECTRUM_FLAGS",
    "BAD_REDSHIFT",
    "OBSERVED_FRAME",
    "DROPPED",
    "NO_GOOD_PIXELS",
    "NORM_FAILED",
    "CONTINUUM_FAILED",
    "describe_flags",
]

#: Flag name → bit number.
SPECTRUM_FLAGS = MappingProxyType(
    {
        "BAD_REDSHIFT": 0,
        "OBSERVED_FRAME": 1,
        "DROPPED": 2,
        "NO_GOOD_PIXELS": 3,
        "NORM_FAILED": 4,
        "CONTINUUM_FAILED": 5,
    }
)
BAD_REDSHIFT: int = 1 << SPECTRUM_FLAGS["BAD_REDSHIFT"]
OBSERVED_FRAME: int = 1 << SPECTRUM_FLAGS["OBSERVED_FRAME"]
DROPPED: int = 1 << SPECTRUM_FLAGS["DROPPED"]
NO_GOOD_PIXELS: int = 1 << SPECTRUM_FLAGS["NO_GOOD_PIXELS"]
NORM_FAILED: int = 1 << SPECTRUM_FLAGS["NORM_FAILED"]
CONTINUUM_FAILED: int = 1 << SPECTRUM_FLAGS["CONTINUUM_FAILED"]


def describe_flags(value: int) -> list[str]:
    """Names of the flags set in ``value`` (e.g. for a notebook or a log line)."""
    return [name for name, bit in SPECTRUM_FLAGS.items() if int(value) >> bit & 1]
