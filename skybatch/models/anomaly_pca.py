"""Weighted PCA of spectra with missing pixels, and the residual statistics anomaly scores use.

Rest-frame spectra of a population (one redrock SPECTYPE) cover different wavelength ranges (a
quasar at z = 3 shows 900-2450 A, one at z = 0.8 shows 2000-5400 A), so their matrix has holes
(``ivar = 0``). :func:`fit_weighted_pca` fits ``x_i ~ mean + V c_i`` by alternating weighted least
squares (each spectrum's coefficients, then each pixel's mean and basis row), the approach of
"heteroscedastic matrix factorisation" (Tsalmantza & Hogg 2012): a pixel counts with weight
``w = 1 / (1/ivar + (eps * model)^2)``, the photon noise plus a fractional model error ``eps``, as
in the VAE's likelihood. Coefficients are fitted with a Gaussian prior (the population's own
coefficient variance), so a spectrum that covers little of the grid gets a shrunk, not a wild, fit.

Robustness: each pixel is fitted on values winsorized to the 1st-99th percentile of the spectra
covering it, and after a first fit, the members whose reconstruction misfit lies beyond a robust
3-sigma of the population's are set aside and the basis is fitted again without them (the
population's own anomalies must not become principal components).

:func:`residual_statistics` turns a fit into the per-spectrum quantities an anomaly score needs:
the log chi^2 per good pixel, the strongest *local* residual (the largest ``|sum r| / sqrt(n)`` of
the normalised residual ``r = (x - model) sqrt(w)`` over windows of 3 to 300 pixels, a matched
filter for a line, trough or step that a global chi^2 dilutes over thousands of pixels), and the
coefficients.

Pure NumPy on the host (float64): fits run on subsamples of at most a few thousand spectra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WeightedPCA", "fit_weighted_pca", "pixel_weights", "residual_statistics", "window_residuals", "winsorize",
           "intrinsic_scatter", "window_scatter"]

#: widths (pixels) of the windows of the local-residual statistic
WINDOWS = (3, 12, 48, 200)
_F = np.float32  # the (N, P) arrays: float32 halves the memory traffic; small systems are solved in float64


def pixel_weights(ivar: np.ndarray, model: np.ndarray, model_error: float, scatter: np.ndarray | float = 0.0
                  ) -> np.ndarray:
    """``1 / (1/ivar + (eps model)^2 + scatter)`` where ``ivar > 0``, else 0; (N, P) float32.

    ``scatter`` (P,) is the population's intrinsic variance per pixel beyond noise and model error.
    """
    iv = np.asarray(ivar, _F)
    extra = np.square(_F(model_error) * np.asarray(model, _F)) + np.asarray(scatter, _F)
    extra = extra * iv
    extra += _F(1.0)
    return np.divide(iv, extra, out=extra)


@dataclass(frozen=True)
class WeightedPCA:
    """``x ~ mean + coef @ basis``: mean (P,), basis (K, P), coefficient prior variance (K,).

    ``window_scatter`` holds the same for window means of :data:`WINDOWS` widths. ``scatter``
    (P,) is the members' intrinsic residual variance per pixel (beyond noise and model error): pixels where normal members differ from the model in ways K components do not capture
    (emission-line ratios, the forest's edge) count less. ``coef_center``, ``coef_scale`` (K,) are
    robust centre and sigma of the members' coefficients; ``n_members`` the members used,
    ``n_rejected`` those set aside as outliers.
    """

    mean: np.ndarray
    basis: np.ndarray
    coef_var: np.ndarray
    scatter: np.ndarray
    window_scatter: tuple[np.ndarray, ...]
    coef_center: np.ndarray
    coef_scale: np.ndarray
    model_error: float
    n_members: int
    n_rejected: int

    def coefficients(self, flux: np.ndarray, ivar: np.ndarray, n_iter: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """MAP coefficients (N, K) and the model (N, P) of spectra ``flux``, ``ivar`` (N, P)."""
        iv = np.asarray(ivar, _F)
        x = np.where(iv > 0, np.nan_to_num(np.asarray(flux, _F)), _F(0))
        r0 = np.where(iv > 0, x - self.mean.astype(_F), _F(0))
        model = np.broadcast_to(self.mean.astype(_F), x.shape)
        for _ in range(n_iter):  # the model-error weight depends on the model: two passes suffice
            w = pixel_weights(iv, np.abs(model), self.model_error, self.scatter)
            coef = _solve_coefficients(r0, w, self.basis, self.coef_var)
            model = self.mean.astype(_F) + (coef @ self.basis).astype(_F)
        return coef, model


def _solve_coefficients(resid: np.ndarray, w: np.ndarray, basis: np.ndarray, prior_var: np.ndarray) -> np.ndarray:
    k, p = basis.shape
    b32 = basis.astype(_F)
    outer = (b32[:, None, :] * b32[None, :, :]).reshape(k * k, p)
    a = (w @ outer.T).astype(np.float64).reshape(-1, k, k) + np.diag(1.0 / np.maximum(prior_var, 1e-12))[None]
    b = ((w * resid) @ b32.T).astype(np.float64)
    return np.linalg.solve(a, b[..., None])[..., 0]


def _fit_once(x: np.ndarray, ivar: np.ndarray, k: int, n_iter: int, eps: float, seed: int, start=None):
    n, p = x.shape
    good = ivar > 0
    cover = good.sum(0)
    if start is None:
        mean = np.where(cover > 0, (ivar * x).sum(0, dtype=np.float64) / np.maximum(ivar.sum(0, dtype=np.float64),
                                                                                    1e-30), 0.0)
        # start: a randomised range finder on the mean-subtracted, hole-filled matrix
        r = np.where(good, x - mean.astype(_F), _F(0))
        rng = np.random.default_rng(seed)
        y = (r.T @ (r @ (r.T @ rng.standard_normal((n, k)).astype(_F)))).astype(np.float64)
        basis = np.linalg.qr(y)[0].T  # (K, P)
        coef_var = np.ones(k)
    else:
        mean, basis, coef_var = start
    for _ in range(n_iter):
        w = pixel_weights(ivar, np.abs(mean)[None, :], eps)
        coef = _solve_coefficients(np.where(good, x - mean.astype(_F), _F(0)), w, basis, coef_var)
        w = pixel_weights(ivar, np.abs(mean + coef @ basis), eps)
        # each pixel: weighted least squares of [mean_p, basis_p] on the design [1, coef_i]
        d = np.concatenate([np.ones((n, 1)), coef], axis=1)  # (N, K+1)
        dd = (d[:, :, None] * d[:, None, :]).reshape(n, -1).astype(_F)  # (N, (K+1)^2)
        a = (w.T @ dd).astype(np.float64).reshape(p, k + 1, k + 1)
        ridge = 1e-6 * np.maximum(np.trace(a, axis1=1, axis2=2), 1e-12) / (k + 1)
        a = a + ridge[:, None, None] * np.eye(k + 1)[None]
        w *= x
        b = (w.T @ d.astype(_F)).astype(np.float64)  # (P, K+1)
        sol = np.linalg.solve(a, b[..., None])[..., 0]
        sol[cover == 0] = 0.0
        mean, basis_raw = sol[:, 0], sol[:, 1:].T
        q, rr = np.linalg.qr(basis_raw.T)  # orthonormal rows, coefficients carried along
        basis = q.T
        coef = coef @ rr.T
        coef_var = np.maximum(coef.var(0), 1e-8)
    coef = _solve_coefficients(np.where(good, x - mean.astype(_F), _F(0)),
                               pixel_weights(ivar, np.abs(mean + coef @ basis), eps), basis, coef_var)
    return mean, basis, coef_var, coef


def fit_weighted_pca(
    flux: np.ndarray, ivar: np.ndarray, n_components: int = 8, *, model_error: float = 0.05, n_iter: int = 5,
    clip_sigma: float = 3.0, clip_quantile: float = 0.01, seed: int = 0,
) -> WeightedPCA:
    """Fit a weighted PCA (see the module docstring) to spectra ``flux``, ``ivar`` of shape (N, P).

    ``n_components`` K basis vectors (capped at N // 4); ``model_error`` eps; ``n_iter`` alternating
    least-squares rounds; members whose log chi^2 per pixel exceeds the median by ``clip_sigma``
    robust sigmas are set aside and the fit repeated (0 disables the cleaning); every pixel is fitted
    on values winsorized to its ``clip_quantile`` and ``1 - clip_quantile`` quantiles over the
    spectra covering it (:func:`winsorize`), so a few spectra with an odd line or trough cannot
    turn it into a principal component (0 disables it). Finally the intrinsic scatter per pixel
    and the robust spread of the coefficients are measured on the kept members.
    """
    x = np.asarray(flux, _F)
    iv = np.asarray(ivar, _F)
    if x.ndim != 2 or x.shape != iv.shape:
        raise ValueError(f"flux and ivar must both be (N, P); got {x.shape} and {iv.shape}")
    iv = np.where(np.isfinite(x) & np.isfinite(iv) & (iv > 0), iv, _F(0))
    x = np.where(iv > 0, x, _F(0))
    has = (iv > 0).any(1)
    x, iv = x[has], iv[has]
    n = x.shape[0]
    if n < 8:
        raise ValueError(f"need at least 8 spectra with good pixels to fit a weighted PCA, got {n}")
    k = max(1, min(int(n_components), n // 4))
    x_fit = winsorize(x, iv > 0, clip_quantile) if clip_quantile > 0 else x
    mean, basis, cv, coef = _fit_once(x_fit, iv, k, n_iter, model_error, seed)
    keep = np.ones(n, bool)
    if clip_sigma > 0:
        misfit = _log_chi2pp(x, iv, mean + coef @ basis, model_error)
        med = np.median(misfit)
        sig = 1.4826 * np.median(np.abs(misfit - med)) or 1.0
        keep = misfit <= med + clip_sigma * sig
        if 8 <= keep.sum() < n:
            mean, basis, cv, coef = _fit_once(x_fit[keep], iv[keep], k, max(2, n_iter // 2), model_error, seed,
                                              start=(mean, basis, cv))
        else:
            keep = np.ones(n, bool)
    xk, ivk = x[keep], iv[keep]
    model = (mean + coef @ basis).astype(_F)
    good = ivk > 0
    scatter = intrinsic_scatter(np.where(good, xk - model, _F(0)), good,
                                np.where(good, 1.0 / np.maximum(ivk, 1e-30) + (model_error * model) ** 2, 1.0))
    wk = pixel_weights(ivk, np.abs(model), model_error)
    wsc = window_scatter(np.where(good, xk - model, _F(0)), wk, good)
    pca = WeightedPCA(mean=mean, basis=basis, coef_var=cv, scatter=scatter.astype(np.float64), window_scatter=wsc,
                      coef_center=np.zeros(k), coef_scale=np.ones(k), model_error=float(model_error),
                      n_members=int(keep.sum()), n_rejected=int(n - keep.sum()))
    c, _ = pca.coefficients(xk, ivk)
    center = np.median(c, 0)
    scale = np.maximum(1.4826 * np.median(np.abs(c - center), 0), 1e-12)
    return WeightedPCA(**{**pca.__dict__, "coef_center": center, "coef_scale": scale})


def intrinsic_scatter(resid: np.ndarray, good: np.ndarray, noise_var: np.ndarray, n_iter: int = 4,
                      clip: float = 5.0) -> np.ndarray:
    """Per-pixel variance ``tau^2`` (P,) of residuals (N, P) beyond their noise variance, >= 0.

    The weighted moment equation ``sum_i (r_i^2 - n_i - tau^2) / (n_i + tau^2)^2 = 0``, solved by
    fixed-point steps: bright spectra (small ``n_i``), which show what the model misses, count
    most; faint ones, whose residual is noise, barely. Residuals beyond ``clip`` sigma (outliers)
    are left out.
    """
    r2 = np.square(resid, dtype=np.float64)
    nv = np.asarray(noise_var, np.float64)
    tau2 = np.zeros(resid.shape[1])
    for _ in range(n_iter):
        tot = nv + tau2
        use = good & (r2 < clip**2 * tot)
        w = np.where(use, 1.0 / tot**2, 0.0)
        num = (w * (r2 - nv)).sum(0)
        den = w.sum(0)
        tau2 = np.maximum(np.where(den > 0, num / np.maximum(den, 1e-300), 0.0), 0.0)
    return tau2


def winsorize(x: np.ndarray, good: np.ndarray, q: float) -> np.ndarray:
    """``x`` (N, P) clipped per pixel to the ``q`` and ``1 - q`` quantiles of its good values."""
    srt = np.sort(np.where(good, x, np.inf), axis=0)  # good values first, in order
    m = good.sum(0)
    cols = np.arange(x.shape[1])
    lo = srt[np.clip(np.floor(q * (m - 1)).astype(int), 0, None), cols]
    hi = srt[np.clip(np.ceil((1 - q) * (m - 1)).astype(int), 0, None), cols]
    lo = np.where(m > 0, lo, -np.inf)
    hi = np.where(m > 0, hi, np.inf)
    return np.where(good, np.clip(x, lo, hi), x).astype(x.dtype)


def _log_chi2pp(x, iv, model, eps):
    w = pixel_weights(iv, np.abs(model), eps)
    n = (iv > 0).sum(1)
    chi2 = (w * (x - model) ** 2).sum(1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.log(np.maximum(chi2, 1e-30) / np.maximum(n, 1)), np.nan)


def window_residuals(resid: np.ndarray, w: np.ndarray, good: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean residual over every window of ``width`` pixels and its noise variance.

    ``resid = x - model`` and weights ``w`` (noise and model error), (N, P). Returns
    ``(R, var)`` of shape (N, P - width + 1): ``R = sum w resid / sum w`` in flux units, and
    ``var = 1 / sum w``; windows with fewer than half their pixels good get ``var = inf``.
    """
    n, p = resid.shape
    cs = np.zeros((n, p + 1))
    np.cumsum(w * resid, axis=1, dtype=np.float64, out=cs[:, 1:])
    cw = np.zeros((n, p + 1))
    np.cumsum(w, axis=1, dtype=np.float64, out=cw[:, 1:])
    cn = np.zeros((n, p + 1), np.int32)
    np.cumsum(good, axis=1, dtype=np.int32, out=cn[:, 1:])
    sw = cw[:, width:] - cw[:, :-width]
    ok = ((cn[:, width:] - cn[:, :-width]) >= width / 2) & (sw > 0)
    sw = np.where(ok, sw, 1.0)
    return np.where(ok, (cs[:, width:] - cs[:, :-width]) / sw, 0.0), np.where(ok, 1.0 / sw, np.inf)


def window_scatter(resid: np.ndarray, w: np.ndarray, good: np.ndarray, windows: tuple[int, ...] = WINDOWS
                   ) -> tuple[np.ndarray, ...]:
    """Intrinsic variance of the members' window-mean residuals, one (P - width + 1,) array per width.

    Model shortfalls are coherent over many pixels (a broad line a little wider than the basis
    allows), so a window's residual of a bright spectrum is not ``sqrt(n)`` times a pixel's: each
    window position gets its own population variance (:func:`intrinsic_scatter`).
    """
    out = []
    for width in windows:
        if width > resid.shape[1]:
            out.append(np.zeros(0))
            continue
        rr, var = window_residuals(resid, w, good, width)
        ok = np.isfinite(var)
        out.append(intrinsic_scatter(rr, ok, np.where(ok, var, 1.0)))
    return tuple(out)


def residual_statistics(pca: WeightedPCA, flux: np.ndarray, ivar: np.ndarray, local_mask: np.ndarray | None = None,
                        local_edge: int = 0) -> dict[str, np.ndarray]:
    """Per-spectrum residual statistics of spectra (N, P) against ``pca``.

    ``local_mask`` (P,) bool leaves pixels out of the windowed ``local`` search only (e.g. a galaxy's
    known emission lines, whose strengths vary widely among normal galaxies and which dedicated line
    features judge), and ``local_edge`` the first and last that many good pixels of each spectrum
    (the ends of its coverage: the spectrograph's blue and red ends, where throughput falls and the
    flux calibration is least certain, or the cut at a masked region such as the Lyman-alpha forest);
    the fit, ``log_chi2pp`` and ``r`` still use every pixel.

    **Returns** (N,) arrays: ``log_chi2pp`` (NaN without good pixels), ``local`` (the largest
    ``|window sum of r| / sqrt(n)`` over all windows), ``local_at`` (its centre pixel),
    ``coef_rarity`` (the largest robust |z| of a coefficient against the members': an object far
    out along one principal direction, e.g. a quasar with unusually weak lines), and ``coef``
    (N, K), ``model`` (N, P), ``r`` (N, P) the residual normalised by noise, model error and the
    population's intrinsic scatter.
    """
    iv = np.asarray(ivar, _F)
    x = np.asarray(flux, _F)
    iv = np.where(np.isfinite(x) & (iv > 0), iv, _F(0))
    x = np.where(iv > 0, x, _F(0))
    coef, model = pca.coefficients(x, iv)
    w = pixel_weights(iv, np.abs(model), pca.model_error, pca.scatter)
    r = (x - model) * np.sqrt(w)
    good = iv > 0
    n = good.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_chi2pp = np.where(n > 0, np.log(np.maximum((r.astype(np.float64) ** 2).sum(1), 1e-30)
                                            / np.maximum(n, 1)), np.nan)
    best = np.zeros(x.shape[0])
    at = np.zeros(x.shape[0], np.int64)
    w0 = pixel_weights(iv, np.abs(model), pca.model_error)
    good_local = good
    if local_edge > 0:
        idx = np.arange(x.shape[1])[None, :]
        first = np.argmax(good, axis=1)[:, None]
        last = (x.shape[1] - 1 - np.argmax(good[:, ::-1], axis=1))[:, None]
        good_local = good & (idx >= first + local_edge) & (idx <= last - local_edge)
    if local_mask is not None:
        lm = np.asarray(local_mask, bool)[None, :]
        good_local = good_local & ~lm
    for width, tau2 in zip(WINDOWS, pca.window_scatter):
        if width > x.shape[1]:
            continue
        rr, var = window_residuals(x - model, np.where(good_local, w0, _F(0)), good_local, width)
        s = np.abs(rr) / np.sqrt(var + tau2[None, :])
        j = np.argmax(s, axis=1)
        v = s[np.arange(x.shape[0]), j]
        up = v > best
        best = np.where(up, v, best)
        at = np.where(up, j + width // 2, at)
    zc = np.abs(coef - pca.coef_center) / pca.coef_scale
    return {"log_chi2pp": log_chi2pp, "local": np.where(n > 0, best, np.nan), "local_at": at,
            "coef_rarity": np.where(n > 0, zc.max(1), np.nan), "coef": coef, "model": model, "r": r}
