"""The ZOGY difference itself (D, S, S_corr, F_psf and errors) for registered images.

See :mod:`skybatch.imaging.zogy` for the notation and equations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from skybatch.imaging import _fft
from skybatch.imaging._util import as_image, as_images, is_scalar_like, median, scalar_value
from skybatch.imaging.zogy._blocks import _row_blocks, _row_ranges
from skybatch.imaging.zogy.plan import ZogyPlan

Array = Any

__all__ = ["MAP_NAMES", "ZogyMaps", "ZogyResult", "zogy"]


@dataclass(frozen=True)
class ZogyMaps:
    """The ZOGY output maps, each (ny, nx) in the input's array namespace, and the PSF of ``D``: what
    :func:`zogy` returns for one image pair and :func:`~skybatch.imaging.subtiles.zogy_subtiles` stitches.

    Attributes
    ----------
    D : difference image, white noise of unit variance (dimensionless) [eq. 13].
    S : matched-filter score ``F_D D (x) flip(P_D)`` [eq. 17], reference-flux units.
    S_corr : ``S`` over its standard deviation including source and astrometric noise
        [eq. 25] and PSF errors (``psf_accuracy``); N(0, 1) on empty sky. Threshold this for detection.
    F_psf : point-source flux at each pixel in **new-image counts** (``flux_ratio * S / F_S``).
    F_psf_err : 1-sigma error of ``F_psf`` from background and source noise (no astrometric term).
    P_D : PSF of ``D`` as an odd stamp, unit sum, centred [eq. 14].
    """

    D: Array
    S: Array
    S_corr: Array
    F_psf: Array
    F_psf_err: Array
    P_D: Array


#: The (ny, nx) maps of :class:`ZogyMaps` (all but the ``P_D`` stamp).
MAP_NAMES = ("D", "S", "S_corr", "F_psf", "F_psf_err")


@dataclass(frozen=True)
class ZogyResult(ZogyMaps):
    """Outputs of :func:`zogy`: the :class:`ZogyMaps` (D, S, S_corr, F_psf, F_psf_err, P_D) and these.

    Attributes
    ----------
    F_D : flux zero point of ``D`` [eq. 15].
    F_S : flux normalisation of ``S`` [eq. 41] (also the variance of ``S`` on empty sky).
    flux_ratio : ``beta = F_n / F_r`` used.
    flux_ratio_err : its uncertainty when it was fitted, else 0.
    flux_ratio_method : "given", or the :class:`~skybatch.imaging.flux_ratio.FluxRatio`
        method when it was fitted ("stars", "least-squares", "default").
    new_sigma, ref_sigma : the scalar background noise used in the filters (median of a map).
    bad : boolean map of pixels that were non-finite in either image or variance and set to
        zero before the transforms, or ``None`` when there were none. Mask them (dilated) when
        detecting.
    """

    F_D: float
    F_S: float
    flux_ratio: float
    flux_ratio_err: float = 0.0
    flux_ratio_method: str = "given"
    new_sigma: float = float("nan")
    ref_sigma: float = float("nan")
    bad: Array | None = None


def _noise_level(xp: ModuleType, sigma: Any, shape: tuple[int, int], dtype: Any, name: str):
    """(scalar sigma for the filters, sigma map or None)."""
    if sigma is None:
        raise ValueError(f"{name} is required (background noise: a scalar sigma or an (ny, nx) map)")
    if is_scalar_like(xp, sigma):
        return scalar_value(xp, sigma), None
    m = as_image(xp, sigma, dtype, name)
    if tuple(m.shape) != shape:
        raise ValueError(f"{name} map has shape {tuple(m.shape)}; the images have shape {shape}")
    finite = xp.isfinite(m) & (m > 0)
    if not bool(xp.any(finite)):
        raise ValueError(f"{name} map has no positive finite value")
    return median(xp, m[finite]), m


def _grad_sq_rows(xp: ModuleType, a: Array, r0: int, r1: int, wx: float, wy: float) -> Array:
    """``wx (da/dx)^2 + wy (da/dy)^2`` for rows r0:r1 of ``a`` (ny, nx): central differences,
    one-sided at the image borders; reads one halo row on each side of the block."""
    ny, nx = a.shape
    blk = a[r0:r1, :]
    gx = xp.empty_like(blk)
    gx[:, 1:-1] = blk[:, 2:] - blk[:, :-2]
    gx[:, 1:-1] *= 0.5
    gx[:, 0] = blk[:, 1] - blk[:, 0]
    gx[:, -1] = blk[:, -1] - blk[:, -2]
    gy = xp.empty_like(blk)
    i0, i1 = max(r0, 1), min(r1, ny - 1)  # rows with a neighbour on both sides
    if i1 > i0:
        gy[i0 - r0 : i1 - r0, :] = a[i0 + 1 : i1 + 1, :] - a[i0 - 1 : i1 - 1, :]
        gy[i0 - r0 : i1 - r0, :] *= 0.5
    if r0 == 0:
        gy[0, :] = a[1, :] - a[0, :]
    if r1 == ny:
        gy[ny - 1 - r0, :] = a[ny - 1, :] - a[ny - 2, :]
    gx *= gx
    gx *= wx
    gy *= gy
    gy *= wy
    gx += gy
    return gx


# ------------------------------------------------------------------------- zogy
def zogy(
    new: Array,
    ref: Array,
    new_psf: Array,
    ref_psf: Array,
    new_sigma: float | Array,
    ref_sigma: float | Array,
    flux_ratio: float | None = None,
    *,
    flux_ratio_guess: float | None = None,
    new_var: Array | None = None,
    ref_var: Array | None = None,
    new_gain: float | None = None,
    ref_gain: float | None = None,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    psf_accuracy: float = 0.0,
    mask: Array | None = None,
    plan: ZogyPlan | None = None,
    dtype: Any = "float32",
    fft_workers: int | None = None,
) -> ZogyResult:
    """ZOGY difference of two registered, background-subtracted images.

    Parameters
    ----------
    new, ref : (ny, nx) images on the same pixel grid, background subtracted, in their own
        counts (ADU). NumPy, CuPy or any array-API namespace; outputs use the same one.
    new_psf, ref_psf : odd (m, m') PSF stamps centred on the middle pixel (normalised to
        unit sum here). Ignored when ``plan`` is given (the plan's PSFs are used).
    new_sigma, ref_sigma : background noise, ADU: a scalar or an (ny, nx) map. The filters
        use the scalar (the map's median); a map enters the variance terms V(S_N), V(S_R).
    flux_ratio : ``F_n / F_r`` (new counts per reference count of the same source). ``None``
        fits it from stars with :func:`skybatch.imaging.flux_ratio.fit_flux_ratio`.
    flux_ratio_guess : used (method ``"header"``) instead of the fit's fallbacks
        (least squares, 1.0) when there are too few stars to fit; e.g. from zero points.
    new_var, ref_var : (ny, nx) variance maps, ADU^2, *including* source noise, used for
        the source-noise terms [eqs. 26-27]. When not given the variance is
        ``sigma^2 + image / gain`` if a gain is given (the unclipped image is an unbiased
        estimate of the Poisson variance and keeps this free of extra FFTs), else ``sigma^2``.
    new_gain, ref_gain : e-/ADU, only to build the default variance (see above).
    astrometric_sigma : (sigma_x, sigma_y) registration noise in pixels [eqs. 30-31];
        (0, 0) skips the term.
    psf_accuracy : fractional accuracy ``eps`` of the PSF stamps. A PSF wrong by a fraction
        ``eps`` of its profile leaves a residual of about ``eps * S_I`` in each image's
        matched-filter score, so ``V_psf = eps^2 (S_N^2 + S_R^2)`` joins the variance of S
        (like the astrometric term, it is large only on bright static sources, where it
        keeps their residuals from being detected); 0 skips the term.
    mask : optional boolean (ny, nx), True = bad pixel in either image (e.g. saturated);
        used only when fitting ``flux_ratio``. Non-finite pixels are always zeroed.
    plan : a :class:`ZogyPlan` for this shape and PSF pair, to reuse PSF transforms.
    dtype : "float32" (default) or "float64" for all computation and outputs.
    fft_workers : scipy.fft threads on the NumPy path (None = 1).

    Returns
    -------
    ZogyResult
    """
    xp, dt, (N, R) = as_images(dtype, new=new, ref=ref)
    shape = (int(N.shape[0]), int(N.shape[1]))
    if plan is None:
        plan = ZogyPlan(shape, new_psf, ref_psf, dtype=dtype, workers=fft_workers)
    elif plan.shape != shape:
        raise ValueError(f"plan was built for shape {plan.shape}; the images have shape {shape}")
    workers = plan.workers if fft_workers is None else fft_workers

    # Non-finite pixels -> 0 (the background) so they do not poison the transforms.
    bad = ~xp.isfinite(N) | ~xp.isfinite(R)
    vn_map = None if new_var is None else as_image(xp, new_var, dt, "new_var")
    vr_map = None if ref_var is None else as_image(xp, ref_var, dt, "ref_var")
    for name, v in (("new_var", vn_map), ("ref_var", vr_map)):
        if v is not None:
            if tuple(v.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(v.shape)}; the images have shape {shape}")
            bad = bad | ~xp.isfinite(v)
    any_bad = bool(xp.any(bad))
    if any_bad:
        N = xp.where(bad, 0.0, N)
        R = xp.where(bad, 0.0, R)

    sn, sn_map = _noise_level(xp, new_sigma, shape, dt, "new_sigma")
    sr, sr_map = _noise_level(xp, ref_sigma, shape, dt, "ref_sigma")

    N_hat = _fft.rfft2(xp, N, workers)
    R_hat = _fft.rfft2(xp, R, workers)
    flux_ratio_err, flux_ratio_method = 0.0, "given"
    if flux_ratio is None:
        from skybatch.imaging.flux_ratio import _fit_from_spectra

        fit_mask = bad if mask is None else (xp.asarray(mask) | bad)
        fit = _fit_from_spectra(
            xp, N_hat, R_hat, plan.Pn_hat, plan.Pr_hat, plan.new_psf, plan.ref_psf,
            sn, sr, shape, fit_mask, snr_min=20.0, min_stars=3, clip=3.0, workers=workers,
            new_gain=new_gain, ref_gain=ref_gain,
        )
        flux_ratio, flux_ratio_err, flux_ratio_method = fit.value, fit.error, fit.method
        if fit.method != "stars" and flux_ratio_guess is not None and flux_ratio_guess > 0:
            flux_ratio, flux_ratio_err, flux_ratio_method = float(flux_ratio_guess), 0.0, "header"
    beta = float(flux_ratio)
    f = plan.filters(sn, sr, beta)

    # Variance of S [eqs. 26-27]: V_I = const_I + map_I, V(S_I) = const_I sum(k_I^2) +
    # (map_I (x) k_I^2). The map part's spectrum is alpha_I I^ (source term, alpha = 1/gain:
    # no extra FFT) plus rfft2 of a variance or sigma^2 map when one is given.
    vn_const = vr_const = 0.0
    maps: dict[str, Any] = {}
    for which, v_map, s, s_map, gain in (
        ("new", vn_map, sn, sn_map, new_gain),
        ("ref", vr_map, sr, sr_map, ref_gain),
    ):
        const, w_hat, alpha = 0.0, None, 0.0
        if v_map is not None:
            w_hat = _fft.rfft2(xp, xp.where(bad, float(s * s), v_map) if any_bad else v_map, workers)
        else:
            if s_map is not None:
                sm = xp.where(bad | ~xp.isfinite(s_map), float(s), s_map)
                w_hat = _fft.rfft2(xp, sm * sm, workers)
            else:
                const = s * s
            if gain is not None:
                if not gain > 0:
                    raise ValueError(f"{which}_gain must be positive (e-/ADU); got {gain}")
                alpha = 1.0 / float(gain)
        if which == "new":
            vn_const = const
        else:
            vr_const = const
        maps[which] = (alpha, w_hat)
    need_v = any(a != 0.0 or w_hat is not None for a, w_hat in maps.values())
    V_S_const = vn_const * f.sum_kn2 + vr_const * f.sum_kr2

    sx, sy = (float(astrometric_sigma[0]), float(astrometric_sigma[1]))
    if sx < 0 or sy < 0:
        raise ValueError(f"astrometric_sigma must be >= 0 pixels; got {astrometric_sigma}")
    eps = float(psf_accuracy)
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"psf_accuracy must be a fraction >= 0; got {psf_accuracy}")
    # S_N and S_R separately: for the astrometric term (their gradients) and the PSF-error term
    need_ast = sx > 0 or sy > 0 or eps > 0
    kn2_hat, kr2_hat = plan.source_noise_kernels(f) if need_v else (None, None)

    # One cache-blocked pass over the spectra. D^ overwrites N^, V^ overwrites R^ (both
    # consumed by then); S^ (or S_N^ and S_R^) are the only new full-size spectra.
    S_hat = xp.empty(N_hat.shape, dtype=N_hat.dtype)
    SR_hat = xp.empty(N_hat.shape, dtype=N_hat.dtype) if need_ast else None
    (an_alpha, wn_hat), (ar_alpha, wr_hat) = maps["new"], maps["ref"]
    for b in _row_blocks(xp, N_hat.shape):
        n_b, r_b = N_hat[b], R_hat[b]
        x_n = n_b * f.a_n[b]  # P_r^ N^ / sqrt(den)
        x_r = r_b * f.a_r[b]  # beta P_n^ R^ / sqrt(den)
        if need_v:
            v_b = None
            for alpha, w_hat, img_b, k2 in ((an_alpha, wn_hat, n_b, kn2_hat), (ar_alpha, wr_hat, r_b, kr2_hat)):
                if alpha == 0.0 and w_hat is None:
                    continue
                src = img_b * alpha if alpha != 0.0 else None
                if w_hat is not None:
                    src = w_hat[b] if src is None else src + w_hat[b]
                assert k2 is not None  # the source-noise kernels exist whenever need_v
                term = src * k2[b]
                v_b = term if v_b is None else v_b + term
        if need_ast:
            assert SR_hat is not None  # allocated above whenever need_ast
            S_hat[b] = x_n * f.c_s[b]  # S_N^
            SR_hat[b] = x_r * f.c_s[b]  # S_R^
            N_hat[b] = x_n - x_r
        else:
            d_b = x_n - x_r
            S_hat[b] = d_b * f.c_s[b]
            N_hat[b] = d_b
        if need_v:
            R_hat[b] = v_b
    del wn_hat, wr_hat, maps
    D = _fft.irfft2(xp, N_hat, shape, workers, overwrite=True)
    del N_hat
    V_S = _fft.irfft2(xp, R_hat, shape, workers, overwrite=True) if need_v else None
    del R_hat
    if need_ast:
        S_N = _fft.irfft2(xp, S_hat, shape, workers, overwrite=True)
        del S_hat
        S_R = _fft.irfft2(xp, SR_hat, shape, workers, overwrite=True)
        del SR_hat
        S = xp.empty(shape, dtype=dt)
    else:
        S = _fft.irfft2(xp, S_hat, shape, workers, overwrite=True)
        del S_hat

    # Real-space tail, blocked: S = S_N - S_R and V_ast [eqs. 30-31] (from halo rows),
    # S_corr [eq. 25], F_psf and its error [eqs. 42-43].
    scale = beta / f.F_S
    # A variance estimate must stay positive (an unclipped source term can dip where the
    # image is negative noise): floor at 1% of the background-only level.
    floor = 0.01 * (sn * sn * f.sum_kn2 + sr * sr * f.sum_kr2)
    S_corr = xp.empty(shape, dtype=dt)
    F_psf = xp.empty(shape, dtype=dt)
    if V_S is None:
        F_psf_err = xp.full(shape, math.sqrt(V_S_const) * scale, dtype=dt)
    else:
        F_psf_err = V_S  # filled in place, block by block
    inv_sd_const = 1.0 / math.sqrt(V_S_const) if V_S_const > 0 else 0.0
    wx, wy, eps2 = sx * sx, sy * sy, eps * eps
    for r0, r1 in _row_ranges(xp, shape):
        b = (slice(r0, r1), ...)
        if need_ast:
            s_b = S_N[b] - S_R[b]
            S[b] = s_b
            if wx > 0 or wy > 0:
                v_ast = _grad_sq_rows(xp, S_N, r0, r1, wx, wy)
                v_ast += _grad_sq_rows(xp, S_R, r0, r1, wx, wy)
            else:
                v_ast = xp.zeros(s_b.shape, dtype=dt)
            if eps2 > 0:  # V_psf = eps^2 (S_N^2 + S_R^2)
                v_ast += eps2 * (S_N[b] * S_N[b] + S_R[b] * S_R[b])
        else:
            s_b = S[b]
            v_ast = None
        F_psf[b] = s_b * scale
        if V_S is None:
            if v_ast is None:
                S_corr[b] = s_b * inv_sd_const
            else:
                v_ast += V_S_const
                S_corr[b] = s_b / xp.sqrt(v_ast)
        else:
            v_b = xp.maximum(V_S[b] + V_S_const, floor)
            if v_ast is None:
                sd = xp.sqrt(v_b)
                S_corr[b] = s_b / sd
            else:
                v_ast += v_b
                S_corr[b] = s_b / xp.sqrt(v_ast)
                sd = xp.sqrt(v_b)
            sd *= scale
            F_psf_err[b] = sd
    if need_ast:
        del S_N, S_R
    del V_S

    return ZogyResult(
        D=D,
        S=S,
        S_corr=S_corr,
        F_psf=F_psf,
        F_psf_err=F_psf_err,
        P_D=plan.psf_of_difference(f),
        F_D=f.F_D,
        F_S=f.F_S,
        flux_ratio=beta,
        flux_ratio_err=float(flux_ratio_err),
        flux_ratio_method=flux_ratio_method,
        new_sigma=sn,
        ref_sigma=sr,
        bad=bad if any_bad else None,
    )
