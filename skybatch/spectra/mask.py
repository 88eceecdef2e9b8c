"""Bad-pixel masking of spectra: survey mask bits, ivar and non-finite values.

A pixel is *bad* when any of these holds:

- ``ivar <= 0`` (``ivar == 0`` is the surveys' own "no information" flag, and
  a negative inverse variance is meaningless),
- ``flux`` or ``ivar`` is NaN or infinite,
- ``mask & bad_bits != 0`` for the chosen survey bits.

Bad pixels come out with ``flux = 0``, ``ivar = 0`` and the skybatch bit
:data:`BADPIX` set in ``mask``; every other pixel is left untouched. The
function never raises on bad *values* (only on inconsistent shapes).

Mask bits
---------
DESI ``SPECMASK`` (desispec.maskbits, 0-9) and SDSS ``SPPIXMASK`` (idlutils
sdssMaskbits.par, 0-28) are given as name → bit-number dicts. skybatch adds its
own pixel bits in the range neither survey uses (29-31), so one ``uint32``
bit field can carry survey bits and skybatch bits together:

=================  ===  =====================================================
name               bit  meaning
=================  ===  =====================================================
``BADPIX``         29   pixel judged bad (ivar<=0, NaN/inf, or a bad survey
                        bit); after resampling: an input pixel that overlaps
                        this output pixel was bad
``NOCOVERAGE``     30   resampled pixel not covered (or only partly covered)
                        by good input pixels; its ivar is 0
``SKYLINE``        31   pixel within ±Δλ of a strong sky line (masked)
=================  ===  =====================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from skybatch.xp import get_namespace

__all__ = [
    "BADPIX",
    "NOCOVERAGE",
    "SKYLINE",
    "SKYBATCH_PIXMASK",
    "DESI_SPECMASK",
    "DESI_BAD_BITS",
    "SDSS_SPPIXMASK",
    "SDSS_BAD_BITS",
    "MASK_PRESETS",
    "mask_bits_from_names",
    "parse_mask_bits",
    "describe_mask",
    "mask_bad_pixels",
]

#: skybatch pixel bits (bit numbers), in the range 29-31 that neither DESI nor SDSS uses.
SKYBATCH_PIXMASK: Mapping[str, int] = MappingProxyType({"BADPIX": 29, "NOCOVERAGE": 30, "SKYLINE": 31})
#: Pixel was bad on input (ivar<=0, NaN/inf or a bad survey bit); value ``1 << 29``.
BADPIX: int = 1 << SKYBATCH_PIXMASK["BADPIX"]
#: Resampled pixel without full good coverage (its ivar is 0); value ``1 << 30``.
NOCOVERAGE: int = 1 << SKYBATCH_PIXMASK["NOCOVERAGE"]
#: Pixel masked as lying on a strong sky line; value ``1 << 31``.
SKYLINE: int = 1 << SKYBATCH_PIXMASK["SKYLINE"]

#: DESI spectral pixel mask ``SPECMASK`` (desispec.maskbits): name → bit number.
DESI_SPECMASK: Mapping[str, int] = MappingProxyType(
    {
        "SOMEBADPIX": 0,  # some input pixels were masked or ivar=0 (informational)
        "ALLBADPIX": 1,  # all input pixels were masked or ivar=0
        "COSMIC": 2,  # input pixels included a masked cosmic
        "LOWFLAT": 3,  # fiber flat < 0.5
        "BADFIBERFLAT": 4,  # bad fiber flat solution
        "BRIGHTSKY": 5,  # bright sky level (noisy, not necessarily bad)
        "BADSKY": 6,  # bad sky model
        "BAD2DFIT": 7,  # bad fit of extraction 2D model to pixel data
        "NODATA": 8,  # no data exists
        "BADFIBER": 9,  # fibermask has a non-zero bit
    }
)

#: DESI bits treated as bad by default: all but the informational SOMEBADPIX and BRIGHTSKY.
DESI_BAD_BITS: int = sum(
    1 << DESI_SPECMASK[n]
    for n in ("ALLBADPIX", "COSMIC", "LOWFLAT", "BADFIBERFLAT", "BADSKY", "BAD2DFIT", "NODATA", "BADFIBER")
)

#: SDSS/BOSS pixel mask ``SPPIXMASK`` (and_mask / or_mask): name → bit number.
#: Bits 0-15 describe the fiber, 16-28 the pixel.
SDSS_SPPIXMASK: Mapping[str, int] = MappingProxyType(
    {
        "NOPLUG": 0,
        "BADTRACE": 1,
        "BADFLAT": 2,
        "BADARC": 3,
        "MANYBADCOLUMNS": 4,
        "MANYREJECTED": 5,
        "LARGESHIFT": 6,
        "BADSKYFIBER": 7,
        "NEARWHOPPER": 8,
        "WHOPPER": 9,
        "SMEARIMAGE": 10,
        "SMEARHIGHSN": 11,
        "SMEARMEDSN": 12,
        "NEARBADPIXEL": 16,
        "LOWFLAT": 17,
        "FULLREJECT": 18,
        "PARTIALREJECT": 19,
        "SCATTEREDLIGHT": 20,
        "CROSSTALK": 21,
        "NOSKY": 22,
        "BRIGHTSKY": 23,
        "NODATA": 24,
        "COMBINEREJ": 25,
        "BADFLUXFACTOR": 26,
        "BADSKYCHI": 27,
        "REDMONSTER": 28,
    }
)

#: SDSS ``and_mask`` bits treated as bad by default (skybatch formats.md §5).
SDSS_BAD_BITS: int = sum(
    1 << SDSS_SPPIXMASK[n] for n in ("FULLREJECT", "NOSKY", "BRIGHTSKY", "NODATA", "COMBINEREJ")
)

#: Preset names accepted by :func:`parse_mask_bits`.
MASK_PRESETS: Mapping[str, int] = MappingProxyType({"desi": DESI_BAD_BITS, "sdss": SDSS_BAD_BITS, "none": 0})

_SURVEY_BITS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {"desi": DESI_SPECMASK, "sdss": SDSS_SPPIXMASK, "skybatch": SKYBATCH_PIXMASK}
)


def mask_bits_from_names(survey: str, names: Iterable[str]) -> int:
    """Bit mask (an ``int``) from bit names of one survey.

    Parameters
    ----------
    survey : {"desi", "sdss", "skybatch"}
        Which bit table the names come from.
    names : iterable of str
        Bit names, case-insensitive, e.g. ``["COSMIC", "NODATA"]``.

    Raises
    ------
    ValueError
        Unknown survey or bit name; the message lists the allowed names.
    """
    key = survey.strip().lower()
    if key not in _SURVEY_BITS:
        raise ValueError(f"mask bits: unknown survey {survey!r}; use one of {sorted(_SURVEY_BITS)}")
    table = _SURVEY_BITS[key]
    value = 0
    for name in names:
        n = name.strip().upper()
        if n not in table:
            raise ValueError(f"mask bits: {name!r} is not a {key} bit name; allowed: {', '.join(table)}")
        value |= 1 << table[n]
    return value


def parse_mask_bits(spec: str | int) -> int:
    """Turn a mask-bit setting into an integer bit mask.

    Accepted forms:

    - an ``int`` in ``[0, 2**32)``: the bit mask itself;
    - a preset: ``"desi"`` (:data:`DESI_BAD_BITS`), ``"sdss"``
      (:data:`SDSS_BAD_BITS`) or ``"none"`` (0: only ivar and NaN/inf decide);
    - ``"SURVEY:NAME,NAME,..."``, e.g. ``"desi:COSMIC,NODATA"`` or
      ``"sdss:NOSKY,FULLREJECT"``;
    - presets and named sets joined with ``"+"``, e.g. ``"desi+sdss"``;
    - a number as text: ``"0x1000000"`` or ``"16777216"``.

    Raises
    ------
    ValueError
        The message names the part that could not be read and the allowed forms.
    """
    if isinstance(spec, bool):
        raise ValueError(
            f"mask_bits: {spec!r} is not a bit mask; give an int, a preset {sorted(MASK_PRESETS)} or 'desi:NAME,...'"
        )
    if isinstance(spec, int):
        if not 0 <= spec < 2**32:
            raise ValueError(f"mask_bits: {spec} is outside the uint32 range [0, 2**32)")
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"mask_bits: expected an int or a string, got {type(spec).__name__}")
    value = 0
    for part in spec.split("+"):
        p = part.strip()
        if not p:
            raise ValueError(f"mask_bits {spec!r}: empty part around '+'")
        low = p.lower()
        if low in MASK_PRESETS:
            value |= MASK_PRESETS[low]
        elif ":" in p:
            survey, _, names = p.partition(":")
            listed = [n for n in names.split(",") if n.strip()]
            if not listed:
                raise ValueError(f"mask_bits {spec!r}: no bit names after {survey}:")
            value |= mask_bits_from_names(survey, listed)
        else:
            try:
                number = int(p, 0)
            except ValueError:
                raise ValueError(
                    f"mask_bits {spec!r}: cannot read {p!r}; use a preset {sorted(MASK_PRESETS)}, "
                    "'desi:NAME,...', 'sdss:NAME,...' or an integer such as 0x1000000"
                ) from None
            value |= parse_mask_bits(number)
    return value


def describe_mask(value: int, survey: str = "desi") -> list[str]:
    """Names of the bits set in ``value``, from ``survey``'s table and skybatch's.

    Unknown bits come out as ``"BIT<n>"``. Useful for logs and notebooks.
    """
    table = dict(_SURVEY_BITS[survey.lower()])
    table.update(SKYBATCH_PIXMASK)
    by_bit = {b: n for n, b in table.items()}
    return [by_bit.get(b, f"BIT{b}") for b in range(32) if value >> b & 1]


def mask_bad_pixels(flux: Any, ivar: Any, mask: Any | None = None, *, bad_bits: int = DESI_BAD_BITS):
    """Zero out bad pixels and flag them with :data:`BADPIX`.

    Parameters
    ----------
    flux : array (n_spectrum, n_wave) or (n_wave,), float
        Flux density (any unit; DESI/SDSS use 1e-17 erg/s/cm²/Å).
    ivar : array, same shape as ``flux``
        Inverse variance of ``flux`` (unit⁻²); 0 means no information.
    mask : array of unsigned/signed int, same shape, or None
        Survey pixel bit field (0 = good). ``None`` means all zeros. DESI iron
        int32 masks are reinterpreted as uint32.
    bad_bits : int
        Bits of ``mask`` that make a pixel bad (see :func:`parse_mask_bits`).

    Returns
    -------
    flux, ivar : arrays, same shape and dtype as the inputs
        With ``flux = ivar = 0`` on bad pixels (no NaN/inf left anywhere).
    mask : uint32 array, same shape
        The input bits, plus :data:`BADPIX` on bad pixels.

    Notes
    -----
    Works on any array namespace (NumPy, CuPy, array_api_strict); never
    modifies its inputs and never raises on bad values.
    """
    xp = get_namespace(flux, ivar, mask)
    if tuple(flux.shape) != tuple(ivar.shape):
        raise ValueError(f"mask_bad_pixels: flux has shape {tuple(flux.shape)} but ivar has {tuple(ivar.shape)}")
    if mask is None:
        mask_u = xp.zeros(flux.shape, dtype=xp.uint32)
    else:
        if tuple(mask.shape) != tuple(flux.shape):
            raise ValueError(f"mask_bad_pixels: mask has shape {tuple(mask.shape)} but flux has {tuple(flux.shape)}")
        mask_u = mask if mask.dtype == xp.uint32 else xp.astype(mask, xp.uint32)
    bad_bits = parse_mask_bits(bad_bits)

    # ivar > 0 is False for NaN; ivar < inf excludes +inf.
    good = (ivar > 0) & (ivar < float("inf")) & xp.isfinite(flux)
    if bad_bits:
        good = good & ((mask_u & xp.asarray(bad_bits, dtype=xp.uint32)) == 0)
    zero = xp.asarray(0, dtype=flux.dtype)
    flux_out = xp.where(good, flux, zero)
    ivar_out = xp.where(good, ivar, xp.asarray(0, dtype=ivar.dtype))
    mask_out = mask_u | xp.where(good, xp.asarray(0, dtype=xp.uint32), xp.asarray(BADPIX, dtype=xp.uint32))
    return flux_out, ivar_out, mask_out
