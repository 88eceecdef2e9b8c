"""Rest-frame wavelengths per spectrum: λ_rest = λ_obs / (1 + z).

Rule for unusable redshifts
---------------------------
A redshift is *usable* when ``z`` is finite, ``z > -1`` and ``zwarn == 0``.
``zwarn == -1`` means "unknown" in skybatch stores (e.g. a source without a
warning column); it counts as unusable unless ``trust_unknown_zwarn=True``.
``zwarn=None`` means "no warnings known" and trusts every finite z.

A spectrum with an unusable redshift keeps its observed-frame wavelengths
(its grid stays finite and increasing, so resampling works) and gets the flag
:data:`~skybatch.spectra.flags.BAD_REDSHIFT`, plus, depending on ``bad_redshift``:

- ``"drop"`` (default): ``ivar = 0`` and ``flux = 0`` everywhere, flag
  :data:`~skybatch.spectra.flags.DROPPED`; it stays in the chunk (rows never
  move) but carries no information;
- ``"observed"``: data kept as they are, in the observed frame, flag
  :data:`~skybatch.spectra.flags.OBSERVED_FRAME`; a model then sees a
  wrongly-framed spectrum, so use it only when the flag is read downstream.

Flux density
------------
By default the flux density is **not** rescaled: values stay in observed-frame
units (erg/s/cm²/Å per *observed* Å) on the rest-frame grid. With
``scale_flux_density=True`` flux is multiplied by (1+z) (and ivar divided by
(1+z)²), so that ∫ f dλ_rest equals the observed integrated flux
(f_λ,rest = (1+z) f_λ,obs). After per-spectrum normalisation the two choices
give the same result, since the factor is a constant per spectrum.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from skybatch.spectra.flags import BAD_REDSHIFT, DROPPED, OBSERVED_FRAME
from skybatch.xp import get_namespace

__all__ = ["RestFrame", "usable_redshift", "rest_wavelength", "to_rest_frame"]

BadRedshiftRule = Literal["drop", "observed"]


class RestFrame(NamedTuple):
    """Result of :func:`to_rest_frame`."""

    flux: Any
    """(n_spectrum, n_wave) flux density (scaled by 1+z only if asked)."""
    ivar: Any
    """(n_spectrum, n_wave) inverse variance; 0 for dropped spectra."""
    mask: Any
    """(n_spectrum, n_wave) uint32 mask bits (unchanged)."""
    wavelength: Any
    """(n_spectrum, n_wave) float64 rest-frame (or kept observed-frame) wavelengths, Å."""
    usable: Any
    """(n_spectrum,) bool: the redshift was used."""
    flags: Any
    """(n_spectrum,) int32 spectrum flags (BAD_REDSHIFT, DROPPED, OBSERVED_FRAME)."""


def usable_redshift(z: Any, zwarn: Any | None = None, *, trust_unknown_zwarn: bool = False) -> Any:
    """Boolean (n_spectrum,): z finite, z > -1 and zwarn == 0 (see the module rule)."""
    xp = get_namespace(z, zwarn)
    zf = xp.astype(z, xp.float64)
    ok = xp.isfinite(zf) & (zf > -1.0)
    if zwarn is not None:
        if tuple(zwarn.shape) != tuple(z.shape):
            raise ValueError(f"zwarn shape {tuple(zwarn.shape)} differs from z shape {tuple(z.shape)}")
        good_warn = zwarn == 0
        if trust_unknown_zwarn:
            good_warn = good_warn | (zwarn == -1)
        ok = ok & good_warn
    return ok


def rest_wavelength(wavelength: Any, z: Any, usable: Any) -> Any:
    """(n_spectrum, n_wave) float64: λ/(1+z) for usable rows, λ unchanged otherwise.

    Parameters
    ----------
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å, observed frame
    z : array (n_spectrum,)
    usable : bool array (n_spectrum,)
    """
    xp = get_namespace(wavelength, z, usable)
    w = xp.astype(wavelength, xp.float64)
    zf = xp.where(usable, xp.astype(z, xp.float64), 0.0)
    factor = 1.0 / (1.0 + zf)
    if w.ndim == 1:
        return w[None, :] * factor[:, None]
    return w * factor[:, None]


def to_rest_frame(
    flux: Any,
    ivar: Any,
    mask: Any,
    wavelength: Any,
    z: Any,
    zwarn: Any | None = None,
    *,
    bad_redshift: BadRedshiftRule = "drop",
    trust_unknown_zwarn: bool = False,
    scale_flux_density: bool = False,
) -> RestFrame:
    """Move spectra to their rest frame (per-spectrum wavelengths; no resampling).

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
        Flux density and its inverse variance (observed frame).
    mask : uint32 array (n_spectrum, n_wave) or None
        Pixel bits (returned unchanged; zeros if None).
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å, observed frame
    z : array (n_spectrum,) float
        Redshift; NaN = missing.
    zwarn : int array (n_spectrum,) or None
        Redshift warning bits; 0 = good, -1 = unknown.
    bad_redshift : {"drop", "observed"}
        What to do with unusable redshifts (see module docstring).
    trust_unknown_zwarn : bool
        Accept ``zwarn == -1`` (unknown) as good.
    scale_flux_density : bool
        Multiply flux by (1+z) and divide ivar by (1+z)² (see module docstring).

    Returns
    -------
    RestFrame
        Feed ``.wavelength`` (2-D) to :func:`skybatch.spectra.resample` to put
        all spectra on one rest-frame grid.
    """
    if bad_redshift not in ("drop", "observed"):
        raise ValueError(f"bad_redshift must be 'drop' or 'observed', got {bad_redshift!r}")
    xp = get_namespace(flux, ivar, mask, wavelength, z, zwarn)
    n = int(flux.shape[0])
    if tuple(z.shape) != (n,):
        raise ValueError(f"to_rest_frame: z must have shape ({n},) like flux's first axis, got {tuple(z.shape)}")
    usable = usable_redshift(z, zwarn, trust_unknown_zwarn=trust_unknown_zwarn)
    wave = rest_wavelength(wavelength, z, usable)
    if mask is None:
        mask = xp.zeros(flux.shape, dtype=xp.uint32)
    bad_value = BAD_REDSHIFT | (DROPPED if bad_redshift == "drop" else OBSERVED_FRAME)
    flags = xp.where(usable, xp.asarray(0, dtype=xp.int32), xp.asarray(bad_value, dtype=xp.int32))
    if scale_flux_density:
        onepz = xp.astype(1.0 + xp.where(usable, xp.astype(z, xp.float64), 0.0), flux.dtype)[:, None]
        flux = flux * onepz
        ivar = ivar / (onepz * onepz)
    if bad_redshift == "drop":
        keep = usable[:, None]
        flux = xp.where(keep, flux, xp.asarray(0, dtype=flux.dtype))
        ivar = xp.where(keep, ivar, xp.asarray(0, dtype=ivar.dtype))
    return RestFrame(flux, ivar, mask, wave, usable, flags)
