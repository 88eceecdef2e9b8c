"""Per-spectrum flux normalisation that can be undone.

Methods (``method=``), all computed on good pixels only (ivar > 0) inside the
wavelength window ``[lo, hi]`` Å (``window=None``: the whole spectrum):

- ``"median"``: scale = median flux density;
- ``"mean"``: scale = mean flux density (unweighted);
- ``"total"``: scale = Σ flux·Δλ over those pixels (Δλ = pixel width from
  :func:`~skybatch.spectra.pixel_edges`), so the normalised spectrum
  integrates to 1 over its good pixels in the window;
- ``"none"``: scale = 1.

Output: ``flux / scale`` and ``ivar * scale²``; :func:`undo_normalize` takes
them back (to float rounding).

Failure rule (NaN-safe)
-----------------------
When a spectrum has no good pixel in the window, or its scale is not a
positive finite number (e.g. a negative median for a noise-dominated
spectrum), its scale is set to **1** (the spectrum is left as it is, so undoing
is still exact) and the flag :data:`~skybatch.spectra.flags.NORM_FAILED` is
set. With ``on_failure="drop"`` such spectra also get ``flux = ivar = 0`` (flag
:data:`~skybatch.spectra.flags.DROPPED`). No NaN or inf is ever produced.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from skybatch.spectra.flags import DROPPED, NORM_FAILED
from skybatch.xp import get_namespace

__all__ = ["NORMALIZE_METHODS", "Normalized", "normalization_scale", "normalize", "undo_normalize"]

NormalizeMethod = Literal["median", "mean", "total", "none"]
#: Allowed values of ``method``.
NORMALIZE_METHODS = ("median", "mean", "total", "none")


class Normalized(NamedTuple):
    """Result of :func:`normalize`."""

    flux: Any
    """(n_spectrum, n_wave) flux / scale."""
    ivar: Any
    """(n_spectrum, n_wave) ivar * scale²."""
    scale: Any
    """(n_spectrum,) float64 scale (1 where normalisation failed)."""
    flags: Any
    """(n_spectrum,) int32: NORM_FAILED (and DROPPED with on_failure='drop')."""


def _window_selection(xp: Any, wavelength: Any, n_wave: int, window: tuple[float, float] | None):
    """Column slice (1-D grid) or boolean (n, n_wave) array for the window."""
    if window is None:
        return slice(0, n_wave), None
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"normalize: window {window!r} must be (lo, hi) with hi > lo, in Å")
    w = xp.astype(wavelength, xp.float64)
    if w.ndim == 1:
        i0 = int(xp.searchsorted(w, xp.asarray(lo, dtype=xp.float64), side="left"))
        i1 = int(xp.searchsorted(w, xp.asarray(hi, dtype=xp.float64), side="right"))
        return slice(i0, max(i0, i1)), None
    return slice(0, n_wave), (w >= lo) & (w <= hi)


def normalization_scale(
    flux: Any,
    ivar: Any,
    wavelength: Any,
    *,
    method: NormalizeMethod = "median",
    window: tuple[float, float] | None = None,
) -> tuple[Any, Any]:
    """Scale per spectrum and whether it is usable.

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å
    method, window : see the module docstring.

    Returns
    -------
    scale : (n_spectrum,) float64, 1 where not usable
    ok : (n_spectrum,) bool
    """
    if method not in NORMALIZE_METHODS:
        raise ValueError(f"normalize: method {method!r} is not one of {NORMALIZE_METHODS}")
    xp = get_namespace(flux, ivar, wavelength)
    n, n_wave = int(flux.shape[0]), int(flux.shape[1])
    if method == "none":
        return xp.ones((n,), dtype=xp.float64), xp.ones((n,), dtype=xp.bool)
    cols, inwin = _window_selection(xp, wavelength, n_wave, window)
    f = flux[:, cols]
    sel = (ivar[:, cols] > 0) & xp.isfinite(f)
    if inwin is not None:
        sel = sel & inwin
    count = xp.sum(xp.astype(sel, xp.int64), axis=1)
    has = count > 0
    zero = xp.asarray(0.0, dtype=xp.float64)
    if f.shape[1] == 0:
        scale = xp.zeros((n,), dtype=xp.float64)
    elif method == "median":  # sorted in the data's dtype: the median is one of its values
        vals = xp.sort(xp.where(sel, f, xp.asarray(float("inf"), dtype=f.dtype)), axis=1)
        k = xp.maximum(count, 1)
        lo_i = xp.reshape((k - 1) // 2, (n, 1))
        hi_i = xp.reshape(k // 2, (n, 1))
        lo_v = xp.astype(xp.take_along_axis(vals, lo_i, axis=1)[:, 0], xp.float64)
        hi_v = xp.astype(xp.take_along_axis(vals, hi_i, axis=1)[:, 0], xp.float64)
        scale = xp.where(has, 0.5 * (lo_v + hi_v), zero)
    elif method == "mean":
        total = xp.sum(xp.where(sel, xp.astype(f, xp.float64), zero), axis=1)
        scale = total / xp.astype(xp.maximum(count, 1), xp.float64)
    else:  # total
        from skybatch.spectra.resample import pixel_edges

        edges = pixel_edges(wavelength)
        dlam = (edges[..., 1:] - edges[..., :-1])[..., cols]
        if dlam.ndim == 1:
            dlam = dlam[None, :]
        scale = xp.sum(xp.where(sel, xp.astype(f, xp.float64) * dlam, zero), axis=1)
    ok = has & xp.isfinite(scale) & (scale > 0)
    return xp.where(ok, scale, xp.asarray(1.0, dtype=xp.float64)), ok


def normalize(
    flux: Any,
    ivar: Any,
    wavelength: Any,
    *,
    method: NormalizeMethod = "median",
    window: tuple[float, float] | None = None,
    on_failure: Literal["keep", "drop"] = "keep",
) -> Normalized:
    """Divide each spectrum by its scale (see module docstring for methods and failures).

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave), float
        Flux density and inverse variance; pixels with ivar <= 0 are ignored
        for the scale.
    wavelength : array (n_wave,) or (n_spectrum, n_wave), Å
        Pixel centres (for the window and, for "total", pixel widths).
    method : {"median", "mean", "total", "none"}
    window : (lo, hi) in Å, or None for the whole spectrum
    on_failure : {"keep", "drop"}
        Failed spectra keep scale 1 ("keep") or also get ivar = flux = 0 ("drop").

    Returns
    -------
    Normalized(flux, ivar, scale, flags)
    """
    if on_failure not in ("keep", "drop"):
        raise ValueError(f"normalize: on_failure must be 'keep' or 'drop', got {on_failure!r}")
    xp = get_namespace(flux, ivar, wavelength)
    scale, ok = normalization_scale(flux, ivar, wavelength, method=method, window=window)
    failed = xp.where(ok, xp.asarray(0, dtype=xp.int32), xp.asarray(NORM_FAILED, dtype=xp.int32))
    if method == "none":
        failed = xp.zeros(failed.shape, dtype=xp.int32)
    s = xp.astype(scale, flux.dtype)[:, None]
    out_flux = flux / s
    out_ivar = ivar * (s * s)
    out_ivar = xp.where(out_ivar < float("inf"), out_ivar, xp.asarray(0, dtype=ivar.dtype))
    if on_failure == "drop" and method != "none":
        keep = ok[:, None]
        out_flux = xp.where(keep, out_flux, xp.asarray(0, dtype=flux.dtype))
        out_ivar = xp.where(keep, out_ivar, xp.asarray(0, dtype=ivar.dtype))
        failed = failed | xp.where(ok, xp.asarray(0, dtype=xp.int32), xp.asarray(DROPPED, dtype=xp.int32))
    return Normalized(out_flux, out_ivar, scale, failed)


def undo_normalize(flux: Any, ivar: Any, scale: Any) -> tuple[Any, Any]:
    """Inverse of :func:`normalize`: ``flux * scale``, ``ivar / scale²``.

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
    scale : array (n_spectrum,), as returned by :func:`normalize`
    """
    xp = get_namespace(flux, ivar, scale)
    s = xp.astype(scale, flux.dtype)[:, None]
    return flux * s, ivar / (s * s)
