"""Continuum estimate and division, vectorised over a chunk.

Method ``"smooth"``: a masked running mean (boxcar of ``width`` pixels over
good pixels only, via cumulative sums), applied ``passes`` times so the kernel
approaches a Gaussian, with ``iterations`` rounds of σ-clipping that drop
pixels far from the current continuum (emission and absorption lines) before
re-smoothing. The clip threshold starts at a quarter of each spectrum's
largest residual and falls to ``clip_sigma`` standard deviations, so a strong
line is removed before it can drag the running mean (and the clip) across
its whole window. Good pixels are
those with ivar > 0. Cost: a few cumulative sums per pass, independent of
``width``.

Division: ``flux / continuum`` and ``ivar * continuum²``. Where the continuum
is undefined (no good pixel within the window) or not positive (noise-
dominated faint spectra), the pixel gets ``flux = ivar = 0``; if that hits a
pixel that had ivar > 0, the spectrum gets the flag
:data:`~skybatch.spectra.flags.CONTINUUM_FAILED` and the pixel the
:data:`~skybatch.spectra.mask.BADPIX` bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from skybatch.spectra.flags import CONTINUUM_FAILED
from skybatch.spectra.mask import BADPIX
from skybatch.xp import get_namespace

__all__ = ["ContinuumDivided", "fit_continuum", "divide_continuum"]


class ContinuumDivided(NamedTuple):
    """Result of :func:`divide_continuum`."""

    flux: Any
    """(n_spectrum, n_wave) flux / continuum (dimensionless)."""
    ivar: Any
    """(n_spectrum, n_wave) ivar · continuum²."""
    mask: Any
    """(n_spectrum, n_wave) uint32, BADPIX added where the continuum was unusable."""
    continuum: Any
    """(n_spectrum, n_wave) the continuum (0 where undefined)."""
    flags: Any
    """(n_spectrum,) int32: CONTINUUM_FAILED where good pixels were lost."""


def _boxcar(xp: Any, y: Any, half: int) -> Any:
    """Running sum over [i - half, i + half] (clipped at the ends), axis 1, float64."""
    n_wave = int(y.shape[1])
    c = xp.cumulative_sum(y, axis=1, include_initial=True) if hasattr(xp, "cumulative_sum") else None
    if c is None:  # pragma: no cover - namespaces predating array API 2023.12
        c0 = xp.cumsum(y, axis=1)
        c = xp.concat([xp.zeros((y.shape[0], 1), dtype=c0.dtype), c0], axis=1)
    idx = xp.arange(n_wave)
    upper = xp.minimum(idx + half + 1, n_wave)
    lower = xp.maximum(idx - half, 0)
    return xp.take(c, upper, axis=1) - xp.take(c, lower, axis=1)


def fit_continuum(
    flux: Any,
    ivar: Any,
    *,
    width: int = 151,
    passes: int = 3,
    iterations: int = 5,
    clip_sigma: float = 3.0,
) -> tuple[Any, Any]:
    """Smooth continuum of each spectrum.

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
    width : int, odd, >= 3
        Boxcar width in pixels (on the grid of ``flux``).
    passes : int >= 1
        Boxcar passes (3 ≈ Gaussian with σ ≈ width/2).
    iterations : int >= 0
        σ-clipping rounds (each costs ``passes`` boxcars).
    clip_sigma : float > 0
        Clip threshold in units of the pixel's σ = 1/sqrt(ivar).

    Returns
    -------
    continuum : (n_spectrum, n_wave) float64 (0 where undefined)
    defined : (n_spectrum, n_wave) bool
    """
    if int(width) != width or width < 3 or width % 2 == 0:
        raise ValueError(f"continuum width must be an odd integer >= 3 pixels, got {width!r}")
    if int(passes) != passes or passes < 1:
        raise ValueError(f"continuum passes must be an integer >= 1, got {passes!r}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"continuum iterations must be an integer >= 0, got {iterations!r}")
    if not clip_sigma > 0:
        raise ValueError(f"continuum clip_sigma must be > 0, got {clip_sigma!r}")
    xp = get_namespace(flux, ivar)
    half = int(width) // 2
    f = xp.astype(flux, xp.float64)
    iv = xp.astype(ivar, xp.float64)
    good = (iv > 0) & xp.isfinite(f) & (iv < float("inf"))
    zero = xp.asarray(0.0, dtype=xp.float64)
    use = good
    cont = xp.zeros(f.shape, dtype=xp.float64)
    defined = xp.zeros(f.shape, dtype=xp.bool)
    for it in range(int(iterations) + 1):
        wgt = xp.astype(use, xp.float64)
        num = _boxcar(xp, xp.where(use, f, zero), half)
        den = _boxcar(xp, wgt, half)
        defined = den > 0
        cont = xp.where(defined, num / xp.where(defined, den, 1.0), zero)
        for _ in range(int(passes) - 1):
            w2 = xp.astype(defined, xp.float64)
            num = _boxcar(xp, cont, half)
            den = _boxcar(xp, w2, half)
            ok = den > 0
            cont = xp.where(ok, num / xp.where(ok, den, 1.0), zero)
            defined = defined & ok
        if it < int(iterations):
            # Clip the worst outliers first: the threshold starts at a quarter of the
            # largest residual of each spectrum and only gets down to clip_sigma once
            # strong lines no longer pull the running mean around them.
            resid = xp.where(good & defined, xp.abs(f - cont) * xp.sqrt(xp.where(good, iv, zero)), zero)
            worst = xp.max(resid, axis=1, keepdims=True)
            thr = xp.maximum(0.25 * worst, xp.asarray(float(clip_sigma), dtype=xp.float64))
            use = good & defined & (resid <= thr)
    return cont, defined


def divide_continuum(
    flux: Any,
    ivar: Any,
    mask: Any | None = None,
    *,
    width: int = 151,
    passes: int = 3,
    iterations: int = 5,
    clip_sigma: float = 3.0,
) -> ContinuumDivided:
    """Divide each spectrum by its smooth continuum (see module docstring).

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave)
    mask : uint32 array or None
    width, passes, iterations, clip_sigma : see :func:`fit_continuum`
    """
    xp = get_namespace(flux, ivar, mask)
    cont, defined = fit_continuum(flux, ivar, width=width, passes=passes, iterations=iterations, clip_sigma=clip_sigma)
    usable = defined & (cont > 0) & xp.isfinite(cont)
    c = xp.astype(xp.where(usable, cont, 1.0), flux.dtype)
    out_flux = xp.where(usable, flux / c, xp.asarray(0, dtype=flux.dtype))
    out_ivar = xp.where(usable, ivar * (c * c), xp.asarray(0, dtype=ivar.dtype))
    out_ivar = xp.where(out_ivar < float("inf"), out_ivar, xp.asarray(0, dtype=ivar.dtype))
    out_flux = xp.where(out_ivar > 0, out_flux, xp.asarray(0, dtype=flux.dtype))
    lost = (ivar > 0) & ~usable
    if mask is None:
        mask = xp.zeros(flux.shape, dtype=xp.uint32)
    elif mask.dtype != xp.uint32:
        mask = xp.astype(mask, xp.uint32)
    mask = mask | xp.where(lost, xp.asarray(BADPIX, dtype=xp.uint32), xp.asarray(0, dtype=xp.uint32))
    any_lost = xp.any(lost, axis=1)
    flags = xp.where(any_lost, xp.asarray(CONTINUUM_FAILED, dtype=xp.int32), xp.asarray(0, dtype=xp.int32))
    return ContinuumDivided(out_flux, out_ivar, mask, xp.where(usable, cont, 0.0), flags)
