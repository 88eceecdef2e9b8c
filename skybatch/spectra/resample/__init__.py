"""Flux-conserving resampling of spectra onto a new wavelength grid.

Scheme
------
Each pixel is a bin whose edges are the midpoints between neighbouring centres
(outer edges half a spacing beyond the end centres; :func:`pixel_edges`). The
flux density is taken as constant inside each input bin. An output bin ``j``
with edges ``[e_j, e_j+1)`` and width ``Δ_j`` receives

    flux_out[j] = Σ_i p_ij · flux[i] / Δ_j ,     p_ij = |[E_i, E_i+1) ∩ [e_j, e_j+1)|

i.e. the exact average of the piecewise-constant input over the output bin
(Carnall 2017, arXiv:1705.05165, SpectRes; the scheme of specutils'
``FluxConservingResampler``). The integrated flux Σ flux·Δλ over any range
made of whole output bins is preserved.

Uncertainties
-------------
The map is linear, ``flux_out = R flux`` with ``R_ji = p_ij / Δ_j``, so the
*diagonal* of the output covariance is exact:

    var_out[j] = Σ_i R_ji² var_in[i] ,      ivar_out = 1 / var_out

What is **not** captured: the covariance between output pixels. Two output
pixels that overlap the same input pixel have correlated noise, and only the
diagonal is stored. Consequences for a χ² computed with ``ivar_out`` as if
pixels were independent:

- its expectation is still exact: E[χ²] = number of output pixels with
  ivar > 0, for the true model (each term has the right variance);
- its scatter is larger than that of a χ² with that many independent degrees
  of freedom: Var[χ²] = 2 tr((D C)²) ≥ 2 N (C the true covariance, D = diag(ivar_out)),
  i.e. the effective number of degrees of freedom is N² / tr((D C)²) < N;
- a signal spread over several pixels gets a Δχ² (a significance) that is
  too large, by up to the number of output pixels sharing an input pixel
  (×2 for a same-width grid shifted by half a pixel; → 1 when output pixels
  are much wider than input pixels). Fitted-parameter errors are then too small.

When every output bin is a union of whole input bins (e.g. merging input
pixels 2 by 2), no input pixel is shared, the covariance is exactly zero and
χ² has exactly the χ² distribution with N degrees of freedom.

Bad pixels, coverage and mask bits
----------------------------------
Input pixels with ivar <= 0 or non-finite flux/ivar are bad: they contribute
no flux and no variance. ``good fraction`` of an output pixel = the fraction of
its width covered by *good* input pixels. With the default
``min_good_fraction=1`` an output pixel is valid only when it lies wholly
inside the input grid and touches no bad input pixel; otherwise
``flux = ivar = 0`` and the :data:`~skybatch.spectra.mask.NOCOVERAGE` bit is
set. With ``min_good_fraction < 1`` the flux of a partly covered pixel is the
mean over its good part, ``flux = Σ_good p f / Σ_good p``, and
``ivar = (Σ_good p)² / Σ_good p² var``. Output mask bits are the OR over all
input pixels that overlap the output pixel, bad ones included (after
:func:`~skybatch.spectra.mask.mask_bad_pixels` those carry
:data:`~skybatch.spectra.mask.BADPIX`, so BADPIX on an output pixel means "an
overlapping input pixel was bad"). No NaN or inf ever reaches the output.

Speed
-----
Shared grid (1-D ``wave_in``): the overlap weights are computed once per
(input grid, output grid, dtype) and cached (:func:`resample_plan`). On NumPy
they are a scipy CSR matrix applied to blocks of 32 spectra (everything stays
in CPU cache; bad pixels are handled by giving them infinite variance, so an
output pixel touching one gets ``1/inf = 0``); on other namespaces (CuPy) they
are dense blocks along the band of ``R`` applied with one matrix product per
block. Mask bits: ``K`` column gathers (``K`` = most input pixels touching one
output pixel).

Per-spectrum grids (2-D ``wave_in``, e.g. the rest frame): the flux density
is integrated once per spectrum (float64 cumulative sums) and the integral is
read at every output edge, so outputs are differences of it; the variance uses
the two partial end pixels plus a cumulative sum of δ²·var for the whole
pixels between them; bad-pixel counts a cumulative count; mask bits a sparse
table of ORs. The bins holding each output edge come from one vectorised
search: arithmetic for grids uniform in λ or log λ whose rows are scaled
copies of one grid (rest frame), else a single ``searchsorted`` over all rows
offset into one sorted array. Cost O(n (n_in + n_out)), no loop over
spectra, exact to float64 rounding.
"""

from __future__ import annotations

from typing import Any

from skybatch.spectra.resample.per_spectrum import _resample_per_spectrum
from skybatch.spectra.resample.plan import (
    Resampled,
    ResamplePlan,
    _check_increasing,
    _quiet,
    pixel_edges,
    resample_plan,
)
from skybatch.spectra.resample.shared import _resample_shared
from skybatch.xp import get_namespace

__all__ = ["Resampled", "ResamplePlan", "pixel_edges", "resample_plan", "resample"]


def resample(
    flux: Any,
    ivar: Any,
    mask: Any | None,
    wave_in: Any,
    wave_out: Any,
    *,
    min_good_fraction: float = 1.0,
    plan: ResamplePlan | None = None,
) -> Resampled:
    """Resample spectra onto ``wave_out``, conserving flux (see module notes).

    Parameters
    ----------
    flux : array (n_spectrum, n_in) or (n_in,), float32/float64
        Flux density per unit wavelength (e.g. 1e-17 erg/s/cm²/Å).
    ivar : array, same shape
        Inverse variance of ``flux``; 0 (or negative, NaN, inf) = bad pixel.
    mask : integer array, same shape, or None
        Pixel bit field (0 = good), OR-propagated to the output.
    wave_in : array (n_in,) or (n_spectrum, n_in), Å
        Input pixel centres, increasing: shared by all spectra (1-D) or one
        grid per spectrum (2-D, e.g. rest-frame wavelengths).
    wave_out : array (n_out,), Å
        Output pixel centres, increasing, shared by all spectra.
    min_good_fraction : float in (0, 1]
        Smallest fraction of an output pixel's width that good input pixels
        must cover for it to get ivar > 0 (default 1: full coverage).
    plan : ResamplePlan, optional
        Precomputed weights for 1-D ``wave_in`` (default: cached lookup).

    Returns
    -------
    Resampled(flux, ivar, mask)
        flux/ivar of the input dtype and mask uint32, shape (n_spectrum, n_out)
        (or (n_out,) for 1-D input).
    """
    xp = get_namespace(flux, ivar, mask, wave_in, wave_out)
    if not 0.0 < float(min_good_fraction) <= 1.0:
        raise ValueError(f"resample: min_good_fraction must be in (0, 1], got {min_good_fraction!r}")
    single = flux.ndim == 1
    if single:
        flux, ivar = flux[None, :], ivar[None, :]
        mask = None if mask is None else mask[None, :]
        if wave_in.ndim == 2:
            raise ValueError("resample: a single 1-D spectrum needs a 1-D wave_in")
    if flux.ndim != 2 or tuple(ivar.shape) != tuple(flux.shape):
        raise ValueError(f"resample: flux {tuple(flux.shape)} and ivar {tuple(ivar.shape)} must be equal 2-D shapes")
    if mask is not None and tuple(mask.shape) != tuple(flux.shape):
        raise ValueError(f"resample: mask shape {tuple(mask.shape)} differs from flux shape {tuple(flux.shape)}")
    if wave_out.ndim != 1 or wave_out.shape[0] < 2:
        raise ValueError(f"resample: wave_out must be 1-D with >= 2 pixels, got shape {tuple(wave_out.shape)}")
    n, n_in = int(flux.shape[0]), int(flux.shape[1])
    if wave_in.shape[-1] != n_in or (wave_in.ndim == 2 and wave_in.shape[0] != n) or wave_in.ndim > 2:
        raise ValueError(
            f"resample: wave_in shape {tuple(wave_in.shape)} does not match flux {tuple(flux.shape)}; "
            "use (n_wave,) for a shared grid or (n_spectrum, n_wave) for one grid per spectrum"
        )
    if flux.dtype not in (xp.float32, xp.float64):
        flux = xp.astype(flux, xp.float32)
    if ivar.dtype != flux.dtype:
        ivar = xp.astype(ivar, flux.dtype)

    need_good = float(min_good_fraction) < 1.0
    with _quiet(xp):  # garbage inputs (1/denormal, inf flux) are handled, not warned about
        if wave_in.ndim == 1:
            out = _resample_shared(xp, flux, ivar, mask, wave_in, wave_out, float(min_good_fraction), need_good, plan)
        else:
            _check_increasing(xp, xp.astype(wave_out, xp.float64), "wave_out")
            _check_increasing(xp, xp.astype(wave_in, xp.float64), "wave_in")
            out = _resample_per_spectrum(
                xp, flux, ivar, mask, wave_in, wave_out, float(min_good_fraction), need_good
            )
    if single:
        return Resampled(out[0][0, :], out[1][0, :], out[2][0, :])
    return Resampled(*out)


