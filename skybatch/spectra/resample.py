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

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from skybatch.spectra.mask import NOCOVERAGE
from skybatch.xp import get_namespace, is_numpy_namespace, to_numpy

__all__ = ["Resampled", "ResamplePlan", "pixel_edges", "resample_plan", "resample"]

_COVERAGE_TOL = 1e-6  # an output pixel counts as fully covered at coverage >= 1 - this
_TOUCH_EPS = 1e-9  # per-spectrum grids: overlaps below this fraction of an output pixel are rounding noise
_MAX_BATCH_ELEMENTS = 1 << 18  # per-spectrum path: rows per batch ≈ this / (n_in + n_out)


class Resampled(NamedTuple):
    """Result of :func:`resample`: arrays of shape (n_spectrum, n_out) (or (n_out,))."""

    flux: Any
    """Flux density on the output grid (same unit and dtype as the input); 0 where ivar is 0."""
    ivar: Any
    """Inverse variance (diagonal only; see the module notes); 0 = no information."""
    mask: Any
    """uint32 bit field: OR of the input bits over overlapping pixels, plus NOCOVERAGE."""


def pixel_edges(wavelength: Any) -> Any:
    """Pixel edges from pixel centres, float64.

    Interior edges are midpoints of neighbouring centres; the two outer edges
    lie half a spacing beyond the first and last centres.

    Parameters
    ----------
    wavelength : array (..., n), increasing along the last axis, Å

    Returns
    -------
    array (..., n + 1) float64
    """
    xp = get_namespace(wavelength)
    w = xp.astype(wavelength, xp.float64)
    if w.shape[-1] < 2:
        raise ValueError(f"pixel_edges: need at least 2 wavelengths, got shape {tuple(w.shape)}")
    mid = 0.5 * (w[..., 1:] + w[..., :-1])
    first = w[..., :1] - 0.5 * (w[..., 1:2] - w[..., :1])
    last = w[..., -1:] + 0.5 * (w[..., -1:] - w[..., -2:-1])
    return xp.concat([first, mid, last], axis=-1)


def _quiet(xp: Any):
    """NumPy: silence floating-point warnings for values the code masks out anyway."""
    if is_numpy_namespace(xp):
        import numpy as np

        return np.errstate(divide="ignore", invalid="ignore", over="ignore")
    return contextlib.nullcontext()


def _check_increasing(xp: Any, w: Any, name: str) -> None:
    d = w[..., 1:] - w[..., :-1]
    if not bool(xp.all(d > 0)):
        raise ValueError(
            f"resample: {name} must be finite and strictly increasing along the wavelength axis "
            "(sort the grid, or drop NaN wavelengths)"
        )


# --------------------------------------------------------------------------------------
# Plans for a shared (1-D) input grid
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ResamplePlan:
    """Precomputed overlap weights for one (input grid, output grid, dtype).

    Built by :func:`resample_plan` (cached); pass it to :func:`resample` as
    ``plan=`` to skip even the cache lookup. Holds arrays of the data's namespace.
    """

    n_in: int
    """Number of input pixels."""
    n_out: int
    """Number of output pixels."""
    col_lo: int
    """First output pixel that overlaps the input grid at all."""
    col_hi: int
    """One past the last output pixel that overlaps the input grid."""
    blocks: tuple[tuple[int, int, int, int], ...]
    """(j0, j1, i0, i1): output columns [j0, j1) take input pixels [i0, i1)."""
    weights: tuple[Any, ...]
    """Per block, R restricted to the block, shape (i1-i0, j1-j0): p_ij / Δ_j."""
    weights_sq: tuple[Any, ...]
    """Per block, element-wise squares of ``weights`` (variance propagation)."""
    gather: Any
    """(K, col_hi-col_lo) input-pixel indices overlapping each output pixel (repeats allowed)."""
    full: Any
    """(n_out,) bool: output pixel lies wholly inside the input grid."""
    identity: bool
    """Input and output grids are the same: resampling is a copy."""
    full_lo: int = 0
    """First output pixel wholly inside the input grid (full pixels are [full_lo, full_hi))."""
    full_hi: int = 0
    """One past the last output pixel wholly inside the input grid."""
    csr_t: Any = None
    """NumPy only: R as a scipy CSR matrix of shape (n_out, n_in), for the fast path."""
    csr2_t: Any = None
    """NumPy only: R squared element-wise, CSR (n_out, n_in)."""


def _digest(xp: Any, w: Any) -> bytes:
    import numpy as np

    arr = np.ascontiguousarray(to_numpy(w), dtype=np.float64)
    return hashlib.blake2b(arr.tobytes(), digest_size=16).digest() + str(arr.shape).encode()


_PLAN_CACHE: OrderedDict[tuple, ResamplePlan] = OrderedDict()
_PLAN_LOCK = threading.Lock()
_PLAN_CACHE_SIZE = 16


def resample_plan(wave_in: Any, wave_out: Any, *, dtype: Any = None) -> ResamplePlan:
    """Overlap weights for resampling from ``wave_in`` to ``wave_out`` (both 1-D, Å).

    Cached on the grids' contents, namespace and ``dtype`` (LRU, 16 entries),
    so calling it per chunk costs one hash of each grid.

    Parameters
    ----------
    wave_in : array (n_in,) increasing
        Input pixel centres.
    wave_out : array (n_out,) increasing
        Output pixel centres (same namespace as ``wave_in``).
    dtype : dtype, optional
        Dtype of the data the plan will be applied to (default float32).
    """
    xp = get_namespace(wave_in, wave_out)
    dtype = xp.float32 if dtype is None else dtype
    key = (getattr(xp, "__name__", str(xp)), str(dtype), _digest(xp, wave_in), _digest(xp, wave_out))
    with _PLAN_LOCK:
        plan = _PLAN_CACHE.get(key)
        if plan is not None:
            _PLAN_CACHE.move_to_end(key)
            return plan
    plan = _build_plan(xp, wave_in, wave_out, dtype)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = plan
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    return plan


def _bin_index(xp: Any, E: Any, e: Any) -> tuple[Any, Any]:
    """For output edges e (n_out+1,) and input edges E (n_in+1,): index of the input
    pixel holding each output pixel's left edge (a) and right edge approached from
    the left (b). Values may be -1 or n_in (outside the input grid)."""
    a = xp.searchsorted(E, e[:-1], side="right") - 1
    b = xp.searchsorted(E, e[1:], side="left") - 1
    return a, b


def _build_plan(xp: Any, wave_in: Any, wave_out: Any, dtype: Any) -> ResamplePlan:
    if wave_in.ndim != 1 or wave_out.ndim != 1:
        raise ValueError("resample_plan: wave_in and wave_out must be 1-D")
    _check_increasing(xp, xp.astype(wave_in, xp.float64), "wave_in")
    _check_increasing(xp, xp.astype(wave_out, xp.float64), "wave_out")
    n_in, n_out = int(wave_in.shape[0]), int(wave_out.shape[0])
    E = pixel_edges(wave_in)
    e = pixel_edges(wave_out)
    width = e[1:] - e[:-1]
    lo_in, hi_in = E[0], E[-1]
    full = (e[:-1] >= lo_in) & (e[1:] <= hi_in)

    identity = n_in == n_out and bool(
        xp.all(xp.abs(xp.astype(wave_in, xp.float64) - xp.astype(wave_out, xp.float64)) <= 1e-12 * xp.abs(e[-1]))
    )

    a, b = _bin_index(xp, E, e)
    overlaps = (e[1:] > lo_in) & (e[:-1] < hi_in)
    cols = xp.nonzero(overlaps)[0]
    full_cols = xp.nonzero(full)[0]
    full_lo = int(full_cols[0]) if full_cols.shape[0] else 0
    full_hi = int(full_cols[-1]) + 1 if full_cols.shape[0] else 0
    if cols.shape[0] == 0:
        empty = xp.zeros((1, 0), dtype=xp.int64)
        return ResamplePlan(n_in, n_out, 0, 0, (), (), (), empty, full, False, full_lo, full_hi)
    col_lo, col_hi = int(cols[0]), int(cols[-1]) + 1
    a_c = xp.clip(a[col_lo:col_hi], 0, n_in - 1)
    b_c = xp.clip(b[col_lo:col_hi], 0, n_in - 1)
    K = int(xp.max(b_c - a_c)) + 1

    # Indices for the mask OR: a_j, a_j+1, ..., b_j, then b_j repeated (OR is idempotent).
    gather = xp.stack([xp.minimum(a_c + k, b_c) for k in range(K)], axis=0)

    # Dense blocks along the band. Block width: keep each block's input span
    # near 256 pixels (a good size for BLAS and for GPU matmul alike).
    ratio = max(n_in / max(col_hi - col_lo, 1), 1.0)
    B = int(min(256, max(16, round(256 / ratio))))
    blocks, weights, weights_sq = [], [], []
    a_host = to_numpy(a_c)
    b_host = to_numpy(b_c)
    for j0 in range(col_lo, col_hi, B):
        j1 = min(j0 + B, col_hi)
        i0 = int(a_host[j0 - col_lo:j1 - col_lo].min())
        i1 = int(b_host[j0 - col_lo:j1 - col_lo].max()) + 1
        Ei = E[i0:i1 + 1]
        left = xp.maximum(Ei[:-1, None], e[None, j0:j1])
        right = xp.minimum(Ei[1:, None], e[None, j0 + 1:j1 + 1])
        p = xp.clip(right - left, 0.0, None)
        w = p / width[None, j0:j1]
        blocks.append((j0, j1, i0, i1))
        weights.append(xp.astype(w, dtype))
        weights_sq.append(xp.astype(w * w, dtype))
    csr_t = csr2_t = None
    if is_numpy_namespace(xp):
        csr_t, csr2_t = _csr_from_blocks(blocks, weights, n_in, n_out)
    return ResamplePlan(
        n_in, n_out, col_lo, col_hi, tuple(blocks), tuple(weights), tuple(weights_sq), gather, full, identity,
        full_lo, full_hi, csr_t, csr2_t,
    )


def _csr_from_blocks(blocks, weights, n_in: int, n_out: int):
    """NumPy fast path: R and R² as scipy CSR matrices of shape (n_out, n_in)."""
    import numpy as np
    import scipy.sparse as sp

    rows, cols, vals = [], [], []
    for (j0, _j1, i0, _i1), w in zip(blocks, weights):
        r, c = np.nonzero(w)
        rows.append(c + j0)
        cols.append(r + i0)
        vals.append(w[r, c])
    R = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, n_in)
    )
    R.eliminate_zeros()
    R.sort_indices()
    R2 = R.multiply(R).tocsr()
    return R, R2


# --------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------
def _prepare(xp: Any, flux: Any, ivar: Any, mask: Any | None, need_good: bool):
    """Zero bad pixels and turn ivar into variance.

    Returns (flux with bad pixels zeroed, variance with bad pixels zeroed,
    uint32 mask or None, indicator) where the indicator is the *good* fraction
    (1/0, float) when ``need_good`` and the *bad* indicator (1/0, float)
    otherwise: both are pushed through the same weights as the flux.
    """
    zero = xp.asarray(0, dtype=flux.dtype)
    one = xp.asarray(1, dtype=flux.dtype)
    positive = (ivar > 0) & (ivar < float("inf"))
    inv = one / xp.where(positive, ivar, one)
    # A denormal ivar has an infinite variance: bad too (as in the NumPy fast path).
    good = positive & (inv < float("inf")) & xp.isfinite(flux)
    gflux = xp.where(good, flux, zero)
    var = xp.where(good, inv, zero)
    m = None
    if mask is not None:
        m = mask if mask.dtype == xp.uint32 else xp.astype(mask, xp.uint32)
    indicator = xp.astype(good if need_good else ~good, flux.dtype)
    return gflux, var, m, indicator


def _finish(xp: Any, num: Any, vs: Any, ind: Any, mask_out: Any, full_ok: Any, min_good: float, need_good: bool):
    """Turn weighted sums into flux, ivar and mask with the coverage rule.

    ``ind`` is the weighted bad indicator (min_good_fraction = 1: the output is
    valid only if it is exactly 0 and the pixel is fully inside the input grid)
    or the weighted good fraction (min_good_fraction < 1).
    """
    dt = num.dtype
    zero = xp.asarray(0, dtype=dt)
    one = xp.asarray(1, dtype=dt)
    if not need_good:
        ok = full_ok & (ind == 0) & (vs > 0) & xp.isfinite(num)
        flux = xp.where(ok, num, zero)
        ivar = xp.where(ok, one / xp.where(ok, vs, one), zero)
    else:
        ok = (ind >= min_good - _COVERAGE_TOL) & (ind > 0) & (vs > 0) & xp.isfinite(num)
        safe = xp.where(ok, ind, one)
        flux = xp.where(ok, num / safe, zero)
        ivar = xp.where(ok, safe * safe / xp.where(ok, vs, one), zero)
    # float32 overflow for absurd ivar (var ~ 1e-45): never let inf out.
    ivar = xp.where(ivar < float("inf"), ivar, zero)
    ok = ivar > 0
    flux = xp.where(ok, flux, zero)
    mask_out = mask_out | xp.where(ok, xp.asarray(0, dtype=xp.uint32), xp.asarray(NOCOVERAGE, dtype=xp.uint32))
    return flux, ivar, mask_out


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


def _resample_shared(xp, flux, ivar, mask, wave_in, wave_out, min_good, need_good, plan):
    if plan is None:
        plan = resample_plan(wave_in, wave_out, dtype=flux.dtype)
    if plan.n_in != flux.shape[1] or plan.n_out != wave_out.shape[0]:
        raise ValueError(
            f"resample: plan is for {plan.n_in} → {plan.n_out} pixels, "
            f"data has {flux.shape[1]} → {wave_out.shape[0]}"
        )
    if is_numpy_namespace(xp) and not need_good and not plan.identity and plan.csr_t is not None:
        return _resample_shared_numpy(flux, ivar, mask, plan)
    gflux, var, m, ind = _prepare(xp, flux, ivar, mask, need_good)
    n = int(flux.shape[0])
    if plan.identity:
        num, vs, wind = gflux, var, ind
        mask_out = m if m is not None else xp.zeros((n, plan.n_out), dtype=xp.uint32)
    else:
        shape = (n, plan.n_out)
        num = xp.zeros(shape, dtype=flux.dtype)
        vs = xp.zeros(shape, dtype=flux.dtype)
        wind = xp.zeros(shape, dtype=flux.dtype)
        for (j0, j1, i0, i1), w, w2 in zip(plan.blocks, plan.weights, plan.weights_sq):
            if w.dtype != flux.dtype:
                w, w2 = xp.astype(w, flux.dtype), xp.astype(w2, flux.dtype)
            num[:, j0:j1] = gflux[:, i0:i1] @ w
            vs[:, j0:j1] = var[:, i0:i1] @ w2
            wind[:, j0:j1] = ind[:, i0:i1] @ w
        mask_out = xp.zeros(shape, dtype=xp.uint32)
        if m is not None and plan.col_hi > plan.col_lo:
            acc = xp.take(m, plan.gather[0, :], axis=1)
            for k in range(1, plan.gather.shape[0]):
                acc = acc | xp.take(m, plan.gather[k, :], axis=1)
            mask_out[:, plan.col_lo:plan.col_hi] = acc
    f_out, i_out, m_out = _finish(xp, num, vs, wind, mask_out, plan.full[None, :], min_good, need_good)
    if plan.identity:  # give back ivar itself, not 1/(1/ivar) (exact identity)
        i_out = xp.where(i_out > 0, ivar, xp.asarray(0, dtype=ivar.dtype))
    return f_out, i_out, m_out


_NUMPY_ROWS = 32  # rows per block in the NumPy fast path: every temporary stays in cache


def _resample_shared_numpy(flux, ivar, mask, plan: ResamplePlan):
    """NumPy fast path (min_good_fraction = 1), same results as the generic path.

    Works on blocks of 32 spectra so all temporaries stay in CPU cache. Bad
    pixels are handled through the variance: ``var = 1/ivar`` is set to +inf
    wherever it is not a positive finite number, so any output pixel touching
    a bad input pixel gets ``var_out = inf`` and ``ivar_out = 1/inf = 0``;
    NaN/inf flux is caught on the output (non-finite sums). The sparse products
    only visit the non-zero weights, so an inf never meets a zero weight.
    """
    import numpy as np

    n, n_out = int(flux.shape[0]), plan.n_out
    dt = flux.dtype
    f_out = np.empty((n, n_out), dtype=dt)
    i_out = np.empty((n, n_out), dtype=dt)
    m_out = np.zeros((n, n_out), dtype=np.uint32)
    R, R2 = plan.csr_t, plan.csr2_t
    if R.dtype != dt:
        R, R2 = R.astype(dt), R2.astype(dt)
    gather = plan.gather
    lo, hi = plan.col_lo, plan.col_hi
    one, inf = dt.type(1), dt.type(np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for r0 in range(0, n, _NUMPY_ROWS):
            r1 = min(n, r0 + _NUMPY_ROWS)
            var = np.divide(one, ivar[r0:r1], dtype=dt)
            var = np.where(var > 0, var, inf)  # ivar <= 0, NaN or +inf → bad
            num_t = R @ flux[r0:r1].T  # (n_out, rows), C order
            iv_t = np.divide(one, R2 @ var.T)
            iv_t[:plan.full_lo] = 0
            iv_t[plan.full_hi:] = 0
            ok_t = (iv_t > 0) & (iv_t < inf) & np.isfinite(num_t)
            np.copyto(iv_t, 0, where=~ok_t)
            np.copyto(num_t, 0, where=~ok_t)
            f_out[r0:r1] = num_t.T
            i_out[r0:r1] = iv_t.T
            if mask is not None and hi > lo:
                m = mask[r0:r1]
                if m.dtype != np.uint32:
                    m = m.astype(np.uint32)
                # Only output columns that touch a non-zero input column need the OR.
                cols = np.flatnonzero(np.any(m, axis=0)[gather].any(axis=0))
                if cols.size * 2 > hi - lo:
                    acc = np.take(m, gather[0], axis=1)
                    for k in range(1, gather.shape[0]):
                        np.bitwise_or(acc, np.take(m, gather[k], axis=1), out=acc)
                    m_out[r0:r1, lo:hi] = acc
                elif cols.size:
                    g = gather[:, cols]
                    acc = np.take(m, g[0], axis=1)
                    for k in range(1, g.shape[0]):
                        np.bitwise_or(acc, np.take(m, g[k], axis=1), out=acc)
                    m_out[r0:r1, lo + cols] = acc
            np.bitwise_or(m_out[r0:r1], np.uint32(NOCOVERAGE), out=m_out[r0:r1], where=~ok_t.T)
    return f_out, i_out, m_out


def _searchsorted_rows(xp: Any, E: Any, q: Any, side: str) -> Any:
    """Row-wise searchsorted: E (n, m) rows increasing, q (q_len,) shared by all rows.

    All rows are shifted by ``row * span`` so that one sorted 1-D array holds
    them, then a single searchsorted answers every query. Exact ties are kept
    (equal values get equal shifts); values closer than ~1e-9 of the span may
    land one pixel off, which the overlap arithmetic absorbs (zero-width overlap).
    """
    n, m = int(E.shape[0]), int(E.shape[1])
    base = xp.minimum(xp.min(E), xp.min(q))
    top = xp.maximum(xp.max(E), xp.max(q))
    span = (top - base) * 1.0625 + 1.0
    off = xp.astype(xp.arange(n), xp.float64)[:, None] * span
    flatE = xp.reshape((E - base) + off, (-1,))
    flatq = xp.reshape((q[None, :] - base) + off, (-1,))
    idx = xp.reshape(xp.searchsorted(flatE, flatq, side=side), (n, int(q.shape[0])))
    return idx - xp.arange(n, dtype=idx.dtype)[:, None] * m


def _row_scales(xp: Any, wave_in: Any) -> Any | None:
    """If every row of ``wave_in`` is ``scale[r] * wave_in[0]`` (to 1e-12), return scale.

    That is the rest-frame case (λ_obs / (1+z) per spectrum) and lets the
    per-spectrum path search one shared grid instead of one grid per row.
    """
    w = xp.astype(wave_in, xp.float64)
    ref = w[0, :]
    scale = w[:, 0] / ref[0]
    dev = xp.max(xp.abs(w - scale[:, None] * ref[None, :]) / xp.abs(w))
    return scale if bool(dev <= 1e-12) else None


def _flat_take(xp: Any, x: Any, flat_idx: Any, shape: tuple[int, ...]) -> Any:
    """Gather ``x`` (2-D) at flat indices and reshape (faster than take_along_axis)."""
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), flat_idx), shape)


def _cumsum0(xp: Any, x: Any) -> Any:
    """Cumulative sum along axis 1 with a leading 0 column: shape (n, m + 1)."""
    if hasattr(xp, "cumulative_sum"):
        return xp.cumulative_sum(x, axis=1, include_initial=True)
    c = xp.cumsum(x, axis=1)  # pragma: no cover - namespaces predating array API 2023.12
    return xp.concat([xp.zeros((x.shape[0], 1), dtype=c.dtype), c], axis=1)


def _or_table(xp: Any, m: Any, levels: int) -> Any:
    """Sparse table for range-OR queries: level p holds OR of m[:, i : i + 2**p].

    Returned flattened, levels stacked: entry (p, row, i) at p*size + row*n_in + i.
    """
    n_in = int(m.shape[1])
    tables = [m]
    cur = m
    for p in range(levels - 1):
        step = 1 << p
        if step >= n_in:
            nxt = cur
        else:
            nxt = xp.concat([cur[:, :-step] | cur[:, step:], cur[:, n_in - step:]], axis=1)
        tables.append(nxt)
        cur = nxt
    return xp.concat([xp.reshape(t, (-1,)) for t in tables], axis=0)


def _uniform_lookup(xp: Any, E: Any):
    """For edges E (m+1,) that are uniform in λ or in log λ (to 1% of a step), a
    function q -> pixel index (side='right' - 1, clipped to [0, m-1]) computed by
    arithmetic plus one exact correction step; None for other grids."""
    m = int(E.shape[0]) - 1
    i = xp.astype(xp.arange(m + 1), xp.float64)
    e0, e1 = float(E[0]), float(E[-1])
    h = (e1 - e0) / m
    if float(xp.max(xp.abs(E - (e0 + i * h)))) <= 0.01 * h:

        def guess(q):
            return xp.floor((q - e0) / h)

    else:
        logE = xp.log(E)
        lh = (float(logE[-1]) - float(logE[0])) / m
        if not float(xp.max(xp.abs(logE - (float(logE[0]) + i * lh)))) <= 0.01 * lh:
            return None
        l0 = float(logE[0])

        def guess(q):
            return xp.floor((xp.log(q) - l0) / lh)

    def lookup(q):
        g = xp.astype(xp.clip(guess(q), 0.0, float(m - 1)), xp.int64)
        shape = g.shape
        flat = xp.reshape(g, (-1,))
        qf = xp.reshape(q, (-1,))
        flat = flat - xp.astype(xp.take(E, flat) > qf, xp.int64)
        flat = xp.clip(flat, 0, m - 1)
        flat = flat + xp.astype(xp.take(E, flat + 1) <= qf, xp.int64)
        return xp.reshape(xp.clip(flat, 0, m - 1), shape)

    return lookup


def _resample_per_spectrum(xp, flux, ivar, mask, wave_in, wave_out, min_good, need_good):
    """Per-spectrum input grids, exact and without a loop over spectra or over K.

    The piecewise-constant flux density is integrated once per row (a float64
    cumulative sum), the integral is read at every output edge, and output
    fluxes are differences of it. The variance Σ p² var splits into the two end
    pixels (partial overlaps, squared) plus the whole pixels in between (a
    cumulative sum of δ² var). Bad-pixel counts use a cumulative count and the
    mask OR uses a sparse table of ORs over 2**p pixels (two lookups per pixel).
    Rounding: cumulative sums are float64, so the relative error of an output
    pixel is ~1e-16 × (row total / that pixel's value): far below float32
    precision unless one spectrum mixes values ~1e8 apart.
    """
    n, n_in = int(flux.shape[0]), int(flux.shape[1])
    n_out = int(wave_out.shape[0])
    e = pixel_edges(wave_out)
    width = e[1:] - e[:-1]
    e_l, e_r = e[None, :-1], e[None, 1:]
    tiny = _TOUCH_EPS * width[None, :]
    gflux, var, m, ind = _prepare(xp, flux, ivar, mask, need_good)
    dt = flux.dtype
    f64 = xp.float64
    scale = _row_scales(xp, wave_in)
    E_ref = lookup = d_ref = None
    if scale is not None:
        E_ref = pixel_edges(wave_in[0, :])
        d_ref = E_ref[1:] - E_ref[:-1]
        lookup = _uniform_lookup(xp, E_ref)
    rows = max(1, _MAX_BATCH_ELEMENTS // max(n_out + n_in, 1))
    f_parts, i_parts, m_parts = [], [], []
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        nr = r1 - r0
        eshape = (nr, n_out + 1)
        oshape = (nr, n_out)
        row = xp.arange(nr, dtype=xp.int64)[:, None]
        # c: input pixel holding each output edge, clipped to [0, n_in - 1].
        if scale is not None:
            s_r = scale[r0:r1][:, None]
            q = e[None, :] / s_r
            if lookup is not None:
                c = lookup(q)
            else:
                c = xp.clip(xp.searchsorted(E_ref, q, side="right") - 1, 0, n_in - 1)
            E_c = xp.reshape(xp.take(E_ref, xp.reshape(c, (-1,))), eshape) * s_r
            E_c1 = xp.reshape(xp.take(E_ref, xp.reshape(c, (-1,)) + 1), eshape) * s_r
            delta = d_ref[None, :] * s_r
            E_first, E_last = E_ref[0] * s_r, E_ref[-1] * s_r
        else:
            E = pixel_edges(wave_in[r0:r1, :])
            c = xp.clip(_searchsorted_rows(xp, E, e, "right") - 1, 0, n_in - 1)
            flat_e = xp.reshape(c + row * (n_in + 1), (-1,))
            E_c = _flat_take(xp, E, flat_e, eshape)
            E_c1 = _flat_take(xp, E, flat_e + 1, eshape)
            delta = E[:, 1:] - E[:, :-1]
            E_first, E_last = E[:, :1], E[:, n_in:]
        flat_c = xp.reshape(c + row * n_in, (-1,))  # into (nr, n_in) arrays
        flat_c0 = xp.reshape(c + row * (n_in + 1), (-1,))  # into (nr, n_in + 1) cumulative arrays

        # Flux: integral of the piecewise-constant density up to each output edge.
        fb = xp.astype(gflux[r0:r1, :], f64)
        Cf = _cumsum0(xp, fb * delta)
        x_off = xp.clip(e[None, :], E_c, E_c1) - E_c  # position of the edge inside its pixel
        I = _flat_take(xp, Cf, flat_c0, eshape) + x_off * _flat_take(xp, fb, flat_c, eshape)
        num = (I[:, 1:] - I[:, :-1]) / width[None, :]

        # Variance Σ p² var: first and last touched pixels (a = c_j, b = c_j+1) with their
        # partial overlaps, plus the whole pixels a+1 .. b-1 from a cumulative sum.
        vb = xp.astype(var[r0:r1, :], f64)
        Cv = _cumsum0(xp, vb * delta * delta)
        v_c = _flat_take(xp, vb, flat_c, eshape)
        p_first = xp.clip(xp.minimum(E_c1[:, :-1], e_r) - xp.maximum(E_c[:, :-1], e_l), 0.0, None)
        p_last = xp.clip(xp.minimum(E_c1[:, 1:], e_r) - xp.maximum(E_c[:, 1:], e_l), 0.0, None)
        a, b = c[:, :-1], c[:, 1:]
        several = b > a
        inner = _flat_take(xp, Cv, flat_c0, eshape)[:, 1:] - _flat_take(xp, Cv, flat_c0 + 1, eshape)[:, :-1]
        vsum = p_first * p_first * v_c[:, :-1] + xp.where(
            several, p_last * p_last * v_c[:, 1:] + xp.clip(inner, 0.0, None), 0.0
        )
        vs = vsum / (width[None, :] * width[None, :])

        # Touched input pixels [lo, hi]: overlaps below _TOUCH_EPS are rounding noise.
        lo = a + xp.astype((E_c1[:, :-1] - e_l) <= tiny, xp.int64)
        hi = b - xp.astype((e_r - E_c[:, 1:]) <= tiny, xp.int64)
        touched = (hi >= lo) & (e_r > E_first) & (e_l < E_last)
        lo_c = xp.clip(lo, 0, n_in - 1)
        hi_c = xp.clip(hi, lo_c, n_in - 1)
        full_ok = (e_l >= E_first) & (e_r <= E_last)

        # Bad pixels (count, min_good_fraction = 1) or good coverage (< 1).
        ib = xp.astype(ind[r0:r1, :], f64)
        if need_good:
            Cg = _cumsum0(xp, ib * delta)
            G = _flat_take(xp, Cg, flat_c0, eshape) + x_off * _flat_take(xp, ib, flat_c, eshape)
            wind = (G[:, 1:] - G[:, :-1]) / width[None, :]
        else:
            Cb = _cumsum0(xp, ib)
            r_edge = row * (n_in + 1)
            nbad = _flat_take(xp, Cb, xp.reshape(hi_c + 1 + r_edge, (-1,)), oshape) - _flat_take(
                xp, Cb, xp.reshape(lo_c + r_edge, (-1,)), oshape
            )
            wind = xp.where(touched, nbad, 0.0)

        # Mask: OR over [lo, hi] with two sparse-table lookups.
        mout = xp.zeros(oshape, dtype=xp.uint32)
        if m is not None:
            span = xp.where(touched, hi_c - lo_c + 1, 1)
            levels = max(1, int(xp.max(span)).bit_length())
            table = _or_table(xp, m[r0:r1, :], levels)
            lvl = xp.zeros(oshape, dtype=xp.int64)
            for p in range(1, levels):
                lvl = lvl + xp.astype(span >= (1 << p), xp.int64)
            base = lvl * (nr * n_in) + row * n_in
            first = xp.reshape(base + lo_c, (-1,))
            second = xp.reshape(base + hi_c + 1 - xp.bitwise_left_shift(xp.ones_like(lvl), lvl), (-1,))
            got = xp.reshape(xp.take(table, first) | xp.take(table, second), oshape)
            mout = xp.where(touched, got, xp.asarray(0, dtype=xp.uint32))

        fo, io, mo = _finish(
            xp, xp.astype(num, dt), xp.astype(vs, dt), xp.astype(wind, dt), mout, full_ok, min_good, need_good
        )
        f_parts.append(fo)
        i_parts.append(io)
        m_parts.append(mo)
    if len(f_parts) == 1:
        return f_parts[0], i_parts[0], m_parts[0]
    return xp.concat(f_parts, axis=0), xp.concat(i_parts, axis=0), xp.concat(m_parts, axis=0)
