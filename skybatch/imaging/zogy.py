"""ZOGY image differencing (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) as pure array code.

Notation (paper's equation numbers in brackets). ``N``, ``R``: background-subtracted
new (science) and reference images on the same pixel grid; ``P_n``, ``P_r``: their
unit-sum PSFs; ``sigma_n``, ``sigma_r``: background noise; ``F_n``, ``F_r``: flux
zero points. Only the ratio matters, so ``F_r = 1`` and ``F_n = beta = flux_ratio``.
Hats are 2-D DFTs (unnormalised forward transform, as in ``numpy.fft``)::

    den     = sigma_n^2 |P_r^|^2 + beta^2 sigma_r^2 |P_n^|^2
    D^      = (P_r^ N^ - beta P_n^ R^) / sqrt(den)                      [13]
    F_D     = beta / sqrt(sigma_n^2 + beta^2 sigma_r^2)                 [15]
    P_D^    = beta P_r^ P_n^ / (F_D sqrt(den))                          [14]
    S^      = F_D D^ conj(P_D^) = k_n^ N^ - k_r^ R^                     [17]
    k_n^    = beta conj(P_n^) |P_r^|^2 / den                            [29]
    k_r^    = beta^2 conj(P_r^) |P_n^|^2 / den                          [28]
    V(S_N)  = V_N (x) k_n^2,  V(S_R) = V_R (x) k_r^2                    [26, 27]
    V_ast   = sum_{I=N,R} sigma_x^2 (dS_I/dx)^2 + sigma_y^2 (dS_I/dy)^2 [30, 31]
    S_corr  = S / sqrt(V(S_N) + V(S_R) + V_ast)                         [25]
    F_S     = sum_k beta^2 |P_n^|^2 |P_r^|^2 / den / (ny nx)            [41]
    alpha   = S / F_S,  its error sqrt(V(S_N) + V(S_R)) / F_S           [42, 43]

``x`` is the column axis (last), ``y`` the row axis. With background-only noise,
``V(S_N) + V(S_R) = F_S`` exactly, so S_corr has unit variance on empty sky with no
rescaling. ``alpha`` is a point-source flux in reference units (F_r = 1); the
result's ``F_psf`` is ``beta * alpha``: **flux in new-image counts** (the units a
source injected into the science image has). Divide by ``flux_ratio`` for
reference units.

Cost per call: 2 forward + 2 inverse full-size real FFTs (D, S); one more inverse
when the variance is not constant (a gain or a map), one more forward per variance
*map*, one more inverse with astrometric noise. The elementwise work is done in one
cache-blocked pass over the spectra and one over the real maps. The PSF-dependent
filters are computed by a :class:`ZogyPlan` once per (image shape, PSF pair) and
cached per (sigma_n, sigma_r, beta). ``P_n^``/``P_r^`` and the source-noise kernels
``FFT(k^2)`` come from small stamps through half-cost pruned transforms; the
kernels ``k`` themselves are built on a small grid (4x the stamp size) because they
are compact, and ``FFT(k^2)`` is renormalised to the exact full-grid sum of k^2.

Edges: the transforms are circular, so pixels within a kernel width of the image
border mix with the opposite border; exclude them (detection does) or use
overlapping sub-tiles (:mod:`skybatch.imaging.subtiles`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from skybatch.imaging import _fft
from skybatch.imaging._util import as_image, float_dtype, is_scalar_like, median, normalise_psf
from skybatch.xp import get_namespace, is_numpy_namespace

Array = Any

__all__ = ["ZogyPlan", "ZogyResult", "zogy"]


@dataclass(frozen=True)
class ZogyResult:
    """Outputs of :func:`zogy`; all maps are (ny, nx) arrays of the input namespace.

    Attributes
    ----------
    D : difference image, white noise of unit variance (dimensionless) [eq. 13].
    S : matched-filter score ``F_D D (x) flip(P_D)`` [eq. 17], reference-flux units.
    S_corr : ``S`` over its standard deviation including source and astrometric noise
        [eq. 25]; N(0, 1) on empty sky. Threshold this for detection.
    F_psf : point-source flux at each pixel in **new-image counts** (``flux_ratio * S / F_S``).
    F_psf_err : 1-sigma error of ``F_psf`` from background and source noise (no astrometric term).
    P_D : PSF of ``D`` as an odd stamp, unit sum, centred [eq. 14].
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

    D: Array
    S: Array
    S_corr: Array
    F_psf: Array
    F_psf_err: Array
    P_D: Array
    F_D: float
    F_S: float
    flux_ratio: float
    flux_ratio_err: float = 0.0
    flux_ratio_method: str = "given"
    new_sigma: float = float("nan")
    ref_sigma: float = float("nan")
    bad: Array | None = None


@dataclass
class _Filters:
    key: tuple[float, float, float]
    a_n: Array  # P_r^ / sqrt(den)            (applied to N^)
    a_r: Array  # beta P_n^ / sqrt(den)       (applied to R^)
    c_s: Array  # beta conj(P_r^ P_n^)/sqrt(den) = F_D conj(P_D^)
    F_S: float
    F_D: float
    sum_kn2: float  # sum_x k_n(x)^2
    sum_kr2: float
    kn2_hat: Array | None = None  # rfft2(k_n^2), full frame, lazily
    kr2_hat: Array | None = None
    P_D: Array | None = None


class ZogyPlan:
    """PSF transforms and ZOGY filters for one image shape and one (new, ref) PSF pair.

    Build it once and pass it to :func:`zogy` for every image (or sub-tile) of
    that shape sharing these PSFs: the PSF transforms are computed here, the
    filters on first use for a given (new_sigma, ref_sigma, flux_ratio) and the
    last set is kept. A plan holds about seven (ny, nx//2+1) complex arrays
    (~120 MB at 2048^2 in float32) once source-noise kernels are needed.

    Parameters
    ----------
    shape : (ny, nx) of the images.
    new_psf, ref_psf : odd-sized (m, m') stamps, centre on the middle pixel; normalised
        to unit sum here. Arrays of the namespace the images will use.
    dtype : "float32" (default) or "float64"; spectra are complex64 / complex128.
    workers : threads for scipy.fft on the NumPy path (None = 1). Keep 1 under Dask.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        new_psf: Array,
        ref_psf: Array,
        *,
        dtype: Any = "float32",
        workers: int | None = None,
    ) -> None:
        xp = get_namespace(new_psf, ref_psf)
        self.xp: ModuleType = xp
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = float_dtype(xp, dtype)
        self.workers = workers
        self.new_psf = normalise_psf(xp, new_psf, self.dtype, "new_psf")
        self.ref_psf = normalise_psf(xp, ref_psf, self.dtype, "ref_psf")
        ny, nx = self.shape
        for name, p in (("new_psf", self.new_psf), ("ref_psf", self.ref_psf)):
            if p.shape[0] > ny or p.shape[1] > nx:
                raise ValueError(
                    f"{name} stamp {tuple(p.shape)} is larger than the image {self.shape}: "
                    "crop the stamp (odd size) or use a bigger image / sub-tile"
                )
        # Full-frame PSF spectra (pruned transforms of the small stamps).
        self.Pn_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, self.new_psf), self.shape, workers)
        self.Pr_hat = _fft.wrapped_rfft2(xp, _fft.stamp_to_wrapped(xp, self.ref_psf), self.shape, workers)
        # Small grid for compact kernels (k_n, k_r, P_D): 4x the larger stamp, >= 64.
        m = max(self.new_psf.shape + self.ref_psf.shape)
        my = min(ny, _fft.next_fast_len(max(64, 4 * m)))
        mx = min(nx, _fft.next_fast_len(max(64, 4 * m)))
        self.small_shape = (my, mx)
        self.stamp_shape = (
            max(self.new_psf.shape[0], self.ref_psf.shape[0]),
            max(self.new_psf.shape[1], self.ref_psf.shape[1]),
        )
        self._filters: _Filters | None = None

    # ------------------------------------------------------------------ filters
    def filters(self, new_sigma: float, ref_sigma: float, flux_ratio: float) -> _Filters:
        """The frequency-space filters for scalar noise levels and flux ratio (cached)."""
        key = (float(new_sigma), float(ref_sigma), float(flux_ratio))
        if self._filters is not None and self._filters.key == key:
            return self._filters
        sn, sr, beta = key
        if not (sn > 0 and sr > 0 and math.isfinite(sn) and math.isfinite(sr)):
            raise ValueError(
                f"background noise must be positive and finite; got new_sigma={sn}, ref_sigma={sr}"
            )
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"flux_ratio must be positive and finite; got {beta}")
        xp = self.xp
        ny, nx = self.shape
        npix = ny * nx
        self._filters = None  # free the previous set before allocating a new one
        Pn, Pr = self.Pn_hat, self.Pr_hat
        a_n = xp.empty(Pn.shape, dtype=Pn.dtype)
        a_r = xp.empty(Pn.shape, dtype=Pn.dtype)
        c_s = xp.empty(Pn.shape, dtype=Pn.dtype)
        w = _fft.hermitian_weights(xp, nx, self.dtype)  # full-plane sums from the half plane
        tiny = 1e-30 * (sn * sn + beta * beta * sr * sr)
        F_S = sum_kn2 = sum_kr2 = 0.0
        for b in _row_blocks(xp, Pn.shape):
            pn, pr = Pn[b], Pr[b]
            pr2 = _fft.abs2(xp, pr)
            pn2 = _fft.abs2(xp, pn)
            den = xp.maximum(pr2 * (sn * sn) + pn2 * (beta * beta * sr * sr), tiny)
            isd = 1.0 / xp.sqrt(den)
            an = pr * isd
            a_n[b] = an
            a_r[b] = pn * (beta * isd)
            c_s[b] = xp.conj(an) * xp.conj(pn) * beta
            # |a_n|^2 = |P_r|^2/den, |a_r|^2 = beta^2 |P_n|^2/den, |c_s|^2 = beta^2 |P_n|^2 |a_n|^2;
            # |k_n^|^2 = |c_s|^2 |a_n|^2 and |k_r^|^2 = |c_s|^2 |a_r|^2  [eqs. 28-29]
            u = pr2 / den
            cs2 = pn2 * u * (beta * beta) * w
            F_S += float(xp.sum(cs2))
            sum_kn2 += float(xp.sum(cs2 * u))
            sum_kr2 += float(xp.sum(cs2 * pn2 / den)) * (beta * beta)
        F_S /= npix
        sum_kn2 /= npix
        sum_kr2 /= npix
        F_D = beta / math.sqrt(sn * sn + beta * beta * sr * sr)
        self._filters = _Filters(key, a_n, a_r, c_s, F_S, F_D, sum_kn2, sum_kr2)
        return self._filters

    def _small_spectra(self, new_sigma: float, ref_sigma: float, beta: float):
        xp = self.xp
        sn, sr = new_sigma, ref_sigma
        Pn = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, self.new_psf), self.small_shape))
        Pr = _fft.rfft2(xp, _fft.embed_wrapped(xp, _fft.stamp_to_wrapped(xp, self.ref_psf), self.small_shape))
        pr2, pn2 = _fft.abs2(xp, Pr), _fft.abs2(xp, Pn)
        den = (sn * sn) * pr2 + (beta * beta * sr * sr) * pn2
        tiny = 1e-30 * (sn * sn + beta * beta * sr * sr)
        den = xp.where(den > tiny, den, tiny)
        return Pn, Pr, pn2, pr2, den

    def psf_of_difference(self, f: _Filters) -> Array:
        """P_D as a centred unit-sum stamp (the larger of the two PSF stamp sizes)."""
        if f.P_D is None:
            xp = self.xp
            sn, sr, beta = f.key
            Pn, Pr, _, _, den = self._small_spectra(sn, sr, beta)
            PD_hat = Pr * Pn * (beta / f.F_D) / xp.sqrt(den)
            pd = _fft.irfft2(xp, PD_hat, self.small_shape)
            stamp = _fft.wrapped_to_stamp(xp, pd, self.stamp_shape)
            f.P_D = stamp / xp.sum(stamp)
        return f.P_D

    def source_noise_kernels(self, f: _Filters) -> tuple[Array, Array]:
        """Full-frame rfft2 of k_n^2 and k_r^2 (for V(S_N), V(S_R) with variance maps)."""
        if f.kn2_hat is None:
            xp = self.xp
            sn, sr, beta = f.key
            Pn, Pr, pn2, pr2, den = self._small_spectra(sn, sr, beta)
            kn_hat = xp.conj(Pn) * (beta * pr2 / den)
            kr_hat = xp.conj(Pr) * ((beta * beta) * pn2 / den)
            out = []
            for k_hat, exact in ((kn_hat, f.sum_kn2), (kr_hat, f.sum_kr2)):
                k = _fft.irfft2(xp, k_hat, self.small_shape)
                k2 = k * k
                # Renormalise so the zero frequency equals the exact full-grid sum of k^2
                # (guards against truncation of the kernel on the small grid).
                k2 = k2 * (exact / float(xp.sum(k2)))
                out.append(_fft.wrapped_rfft2(xp, k2, self.shape, self.workers))
            f.kn2_hat, f.kr2_hat = out
        return f.kn2_hat, f.kr2_hat


# ---------------------------------------------------------------------- helpers
_BLOCK_BYTES = 1 << 19  # ~0.5 MB of complex64 per row block: the temporaries stay in cache


def _row_ranges(xp: ModuleType, shape: tuple[int, ...]):
    """(r0, r1) row ranges for cache-blocked elementwise passes on NumPy; the whole
    array in one range elsewhere (GPU kernels want the whole array)."""
    ny = int(shape[0])
    if not is_numpy_namespace(xp):
        yield 0, ny
        return
    row_bytes = 8 * int(shape[-1])
    step = max(8, _BLOCK_BYTES // max(row_bytes, 1))
    for r0 in range(0, ny, step):
        yield r0, min(r0 + step, ny)


def _row_blocks(xp: ModuleType, shape: tuple[int, ...]):
    """Index tuples ``(slice(r0, r1), ...)`` for :func:`_row_ranges`."""
    for r0, r1 in _row_ranges(xp, shape):
        yield (slice(r0, r1), ...)


def _noise_level(xp: ModuleType, sigma: Any, shape: tuple[int, int], dtype: Any, name: str):
    """(scalar sigma for the filters, sigma map or None)."""
    if sigma is None:
        raise ValueError(f"{name} is required (background noise: a scalar sigma or an (ny, nx) map)")
    if is_scalar_like(xp, sigma):
        s = float(sigma if isinstance(sigma, (int, float)) else xp.reshape(xp.asarray(sigma), (-1,))[0])
        return s, None
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
    mask : optional boolean (ny, nx), True = bad pixel in either image (e.g. saturated);
        used only when fitting ``flux_ratio``. Non-finite pixels are always zeroed.
    plan : a :class:`ZogyPlan` for this shape and PSF pair, to reuse PSF transforms.
    dtype : "float32" (default) or "float64" for all computation and outputs.
    fft_workers : scipy.fft threads on the NumPy path (None = 1).

    Returns
    -------
    ZogyResult
    """
    xp = get_namespace(new, ref)
    dt = float_dtype(xp, dtype)
    N = as_image(xp, new, dt, "new")
    R = as_image(xp, ref, dt, "ref")
    shape = (int(N.shape[0]), int(N.shape[1]))
    if tuple(R.shape) != shape:
        raise ValueError(
            f"new {shape} and ref {tuple(R.shape)} differ in shape: put the reference on the "
            "science grid first (skybatch.imaging.align.align_to_grid)"
        )
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
    need_ast = sx > 0 or sy > 0
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
                term = src * k2[b]
                v_b = term if v_b is None else v_b + term
        if need_ast:
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
    wx, wy = sx * sx, sy * sy
    for r0, r1 in _row_ranges(xp, shape):
        b = (slice(r0, r1), ...)
        if need_ast:
            s_b = S_N[b] - S_R[b]
            S[b] = s_b
            v_ast = _grad_sq_rows(xp, S_N, r0, r1, wx, wy)
            v_ast += _grad_sq_rows(xp, S_R, r0, r1, wx, wy)
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
