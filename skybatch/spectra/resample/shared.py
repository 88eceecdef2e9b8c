"""Resampling onto one output grid from one shared input grid (1-D ``wave_in``); the common prepare/finish steps."""

from __future__ import annotations

from typing import Any

from skybatch.spectra.mask import NOCOVERAGE
from skybatch.xp import is_numpy_namespace
from skybatch.spectra.resample.plan import _COVERAGE_TOL, ResamplePlan, resample_plan

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


