"""Two-template fits: how much a star at redshift 0 improves the fit of a galaxy's rest-frame spectrum.

A star + galaxy composite (a foreground star blended with a galaxy in the fibre) carries the star's
absorption lines and bands (Ca H & K, the Balmer series, Mg b, Na D, TiO) at their *observed*
wavelengths, i.e. at ``lambda / (1 + z)`` in the galaxy's rest frame, where no galaxy has them. A
galaxy PCA fits such a spectrum only partly, and its misfit is spread thinly over thousands of
pixels; the matched question is whether adding the star improves the fit.

:func:`star_templates` builds star archetypes from the STAR class itself (median spectra in
colour bins; stars sit at z ~ 0, so their rest frame is the observed frame) and
:func:`composite_gain` fits each galaxy as ``galaxy mean + galaxy basis c + a x star`` for every
archetype, shifted into the galaxy's rest frame, by weighted least squares (noise, the 5 % model
error and the galaxy population's intrinsic scatter; the galaxy coefficients keep their Gaussian
prior), and returns the best chi^2 improvement over the galaxy-only fit as a significance
``sqrt(chi2_gal - chi2_both)`` among archetypes entering with ``a > 0`` (a star only adds flux).

Pure NumPy on the host; one block of spectra at a time, (N, P) arrays on a log-lambda rest grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from skybatch.models.anomaly_pca import WeightedPCA, pixel_weights

__all__ = ["StarLineReference", "composite_gain", "star_line_gain", "star_templates"]


def star_templates(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, n_templates: int = 6,
                   min_members: int = 5) -> np.ndarray:
    """Star archetypes (T, P): median spectra of the stars (N, P) in ``n_templates`` colour bins.

    The colour is ``log`` of the mean flux at 6000-7000 A over 4000-5000 A (stars sit at z ~ 0, so
    their rest grid is the observed one); each bin's per-pixel median over the stars covering the
    pixel (0 where none does). Bins with fewer than ``min_members`` stars are dropped.
    """
    wl = np.asarray(wavelength, np.float64)
    good = (np.asarray(ivar) > 0) & np.isfinite(flux)
    x = np.where(good, np.asarray(flux, np.float64), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        red = np.nanmean(x[:, (wl >= 6000) & (wl <= 7000)], axis=1)
        blue = np.nanmean(x[:, (wl >= 4000) & (wl <= 5000)], axis=1)
        colour = np.log(red / blue)
    ok = np.isfinite(colour)
    if ok.sum() < min_members:
        return np.zeros((0, wl.size))
    edges = np.quantile(colour[ok], np.linspace(0, 1, int(n_templates) + 1)[1:-1])
    b = np.searchsorted(edges, colour)
    out = []
    for j in range(int(n_templates)):
        rows = ok & (b == j)
        if rows.sum() < min_members:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out.append(np.nan_to_num(np.nanmedian(x[rows], axis=0)))
    return np.array(out).reshape(-1, wl.size)


def _shifted(templates: np.ndarray, wavelength: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Templates (T, P) given on observed wavelengths, seen in the rest frame of objects at ``z`` (N,): (N, T, P)."""
    wl = np.asarray(wavelength, np.float64)
    out = np.zeros((z.size, templates.shape[0], wl.size))
    for i, zi in enumerate(np.nan_to_num(np.asarray(z, np.float64))):
        obs = wl * (1.0 + zi)  # the rest pixel's observed wavelength, where the star's flux sits
        for t in range(templates.shape[0]):
            out[i, t] = np.interp(obs, wl, templates[t], left=0.0, right=0.0)
    return out


def composite_gain(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, galaxy: WeightedPCA,
                   templates: np.ndarray, min_z: float = 0.02, block: int = 128) -> np.ndarray:
    """Significance (N,) of a star at z = 0 added to the galaxy PCA fit of rest-frame spectra (N, P).

    **Arguments:** `wavelength` (P,) rest A of the grid (also the star templates' observed grid);
    `flux`, `ivar` (N, P); `z` (N,) the galaxies' redshifts; `galaxy` the galaxy class PCA;
    `templates` (T, P) from :func:`star_templates`. Spectra below `min_z` (star and galaxy
    features at the same place) or without good pixels give NaN.
    """
    iv = np.asarray(ivar, np.float32)
    x = np.asarray(flux, np.float32)
    iv = np.where(np.isfinite(x) & (iv > 0), iv, np.float32(0))
    x = np.where(iv > 0, x, np.float32(0))
    n = x.shape[0]
    out = np.full(n, np.nan)
    z = np.asarray(z, np.float64)
    ok = (iv > 0).any(1) & np.isfinite(z) & (z >= min_z)
    if not ok.any():
        return out
    for start in range(0, int(ok.sum()), block):
        rows = np.flatnonzero(ok)[start:start + block]
        out[rows] = _gain(wavelength, x[rows], iv[rows], z[rows], galaxy, templates)
    return out


def _gain(wavelength, x, iv, z, galaxy: WeightedPCA, templates) -> np.ndarray:
    _, model0 = galaxy.coefficients(x, iv)
    w = pixel_weights(iv, np.abs(model0), galaxy.model_error, galaxy.scatter).astype(np.float64)
    r = np.where(iv > 0, x - galaxy.mean[None, :], 0.0).astype(np.float64)
    gb = np.asarray(galaxy.basis, np.float64)  # (K, P)
    a_gal = np.einsum("kp,np,lp->nkl", gb, w, gb, optimize=True) + np.diag(
        1.0 / np.maximum(np.asarray(galaxy.coef_var, np.float64), 1e-12))[None]
    b_gal = (w * r) @ gb.T  # (N, K)
    c_gal = np.linalg.solve(a_gal, b_gal[..., None])[..., 0]
    best = np.zeros(z.size)
    st = _shifted(templates, wavelength, z)  # (N, T, P)
    for j in range(st.shape[1]):
        tj = st[:, j]  # (N, P)
        wt = w * tj
        h = wt @ gb.T  # (N, K): template x galaxy basis
        u = np.linalg.solve(a_gal, h[..., None])[..., 0]
        schur = (wt * tj).sum(1) - (h * u).sum(1)  # the template's weight after the galaxy basis
        proj = (wt * r).sum(1) - (h * c_gal).sum(1)  # its correlation with the galaxy-only residual
        amp = np.where(schur > 0, proj / np.maximum(schur, 1e-30), 0.0)
        # the chi^2 gain of adding the template (a star only adds flux: amplitude > 0)
        best = np.maximum(best, np.where(amp > 0, proj**2 / np.maximum(schur, 1e-30), 0.0))
    return np.sqrt(best)


@dataclass
class StarLineReference:
    """The galaxy class's continuum-subtracted spectrum per rest pixel (median, intrinsic variance, known
    emission lines masked) and star archetypes' continuum-subtracted spectra (T, P) on observed wavelengths."""

    wavelength: np.ndarray
    median: np.ndarray
    tau2: np.ndarray
    masked: np.ndarray
    templates: np.ndarray

    @classmethod
    def fit(cls, wavelength: np.ndarray, gal_flux: np.ndarray, gal_ivar: np.ndarray, star_flux: np.ndarray,
            star_ivar: np.ndarray, n_templates: int = 8) -> StarLineReference | None:
        """From galaxies (N, P) and stars (M, P) on one rest grid; None without enough stars."""
        from skybatch.models.anomaly_narrow import continuum_subtracted, known_line_mask

        t = star_templates(wavelength, star_flux, star_ivar, n_templates=n_templates)
        if t.shape[0] == 0 or gal_flux.shape[0] < 10:
            return None
        t_hp, _ = continuum_subtracted(t, (t != 0).astype(np.float64))
        r, ok = continuum_subtracted(gal_flux, gal_ivar)
        masked = known_line_mask(wavelength, "GALAXY")
        x = np.where(ok & ~masked[None, :], r, np.nan)
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            p25, p50, p75 = np.nanpercentile(x, (25, 50, 75), axis=0)
            e2 = np.nanmedian(np.where(ok, 1.0 / np.asarray(gal_ivar, np.float64), np.nan), axis=0)
        tau2 = np.nan_to_num(np.maximum(((p75 - p25) / 1.349) ** 2 - e2, 0.0))
        return cls(np.asarray(wavelength, np.float64), np.nan_to_num(p50), tau2, masked, t_hp)


def star_line_gain(ref: StarLineReference, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray,
                   min_z: float = 0.02) -> np.ndarray:
    """Significance (N,) of a star's lines and bands at z = 0 in galaxies' rest-frame spectra (N, P).

    Continuum-free version of :func:`composite_gain`: the galaxy's continuum-subtracted flux minus
    the galaxy class's median (its own absorption lines), weighted by noise and the class's
    intrinsic scatter per pixel, known emission lines left out, is matched to each continuum-subtracted
    star archetype placed at ``lambda (1 + z)``; the largest positive amplitude in sigma over the
    archetypes. Continuum shapes, which galaxies vary in, do not enter. Below ``min_z`` NaN.
    """
    from skybatch.models.anomaly_narrow import continuum_subtracted

    iv = np.asarray(ivar, np.float64)
    r, ok = continuum_subtracted(flux, iv)
    ok &= ~ref.masked[None, :]
    r = np.where(ok, r - ref.median[None, :], 0.0)
    w = np.where(ok, iv / (1.0 + iv * ref.tau2[None, :]), 0.0)
    z = np.asarray(z, np.float64)
    out = np.full(r.shape[0], np.nan)
    use = np.flatnonzero(np.isfinite(z) & (z >= min_z) & ok.any(1))
    if use.size == 0:
        return out
    st = _shifted(ref.templates, ref.wavelength, z[use])  # (n, T, P)
    s = np.einsum("np,ntp->nt", w[use], st * st)
    p = np.einsum("np,ntp->nt", w[use] * r[use], st)
    sig = np.where(s > 0, p / np.sqrt(np.maximum(s, 1e-30)), 0.0)
    out[use] = np.maximum(sig.max(1), 0.0)
    return out
