"""Anomaly scores judged within each object's population: class (SPECTYPE) and redshift bin.

A score normalised over a whole survey ranks every ordinary quasar as odd (quasars are rarer and
more varied than galaxies) and treats a z = 3 quasar, whose spectrum shows 900-2450 A rest, like
one at z = 1. Here every object is judged against its own population:

1. **Per-class models.** For each SPECTYPE a weighted PCA with missing pixels is fitted in the rest
   frame (:func:`skybatch.models.anomaly_pca.fit_weighted_pca`: coverage holes have ``ivar = 0``; a
   5 % model error; the class's own worst misfits set aside and the basis refitted). For quasars,
   rest wavelengths below ``lya_mask`` (1216 A, the Lyman-alpha forest: random absorbers, the
   largest variance of normal quasars) are masked.
2. **Terms.** Against its class model each spectrum gets ``pca_misfit`` (log chi^2 per pixel),
   ``pca_local`` (the strongest windowed residual against the members' own window scatter, a
   matched filter for one odd line, trough or step) and ``pca_coef`` (the largest robust |z| of
   its coefficients within its (class, z-bin) cell, :func:`cell_coefficient_rarity`: a quasar with
   unusually weak or strong lines is *fitted* by the basis but far out along a component). Optional extra
   terms (the VAE's misfit and latent rarity) are passed in by the caller.
3. **Calibration per class and redshift bin.** Each term becomes a robust z-score against the
   members of its (class, z-bin) cell: ``(t - median) / scale``, with the scale the larger of
   ``1.4826 MAD`` and ``(q95 - median) / 1.645`` (as in :mod:`skybatch.models.anomaly`), clipped at
   0. Bins are redshift quantiles of the class with at least ``min_bin`` members each.
4. **Combination.** ``combined = sqrt(sum_t z_t^2)``: one strongly odd term is enough, several
   mildly odd terms add up. The combined value is calibrated once more per cell (the same robust
   z), so a score of 5 is as rare among z = 2.5 quasars as among low-z galaxies.

Region residuals (:func:`region_residuals`) name which lines of a quasar are odd: the mean
normalised residual over each line's rest-frame window, in sigmas.

Pure NumPy on the host: the fits use subsamples of at most ``max_fit`` spectra per class; scoring
runs on any block of rows (the pipeline streams chunks through :meth:`PopulationModel.terms`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.models.anomaly_narrow import known_line_mask
from skybatch.models.anomaly_pca import WeightedPCA, fit_weighted_pca, residual_statistics

__all__ = ["PopulationModel", "QSO_REGIONS", "calibrate_terms", "cell_coefficient_rarity", "combine", "fit_population_model",
           "redshift_bins", "region_residuals", "robust_center_scale"]

_MAD_TO_SIGMA = 1.4826
_TAIL_QUANTILE, _TAIL_SIGMA = 0.95, 1.6448536269514722

#: rest-frame windows (A) of quasar emission lines, for the per-region residuals
QSO_REGIONS: dict[str, tuple[float, float]] = {
    "Lya": (1190.0, 1260.0), "NV": (1230.0, 1260.0), "SiIV": (1360.0, 1430.0), "CIV": (1500.0, 1600.0),
    "CIV_blue": (1420.0, 1530.0), "HeII": (1620.0, 1660.0), "CIII]": (1860.0, 1960.0), "MgII": (2700.0, 2900.0),
    "[NeV]": (3410.0, 3440.0), "[OII]": (3715.0, 3740.0), "Hbeta": (4780.0, 4940.0), "[OIII]": (4990.0, 5025.0),
    "Halpha": (6450.0, 6680.0), "continuum_blue": (1260.0, 1360.0), "continuum_red": (2000.0, 2600.0),
}


def _as_str(a: Any) -> np.ndarray:
    """Class labels as a fixed-width str array (accepts NumPy StringDType / object arrays)."""
    a = np.asarray(a)
    return np.asarray(a.astype(object) if a.dtype.kind not in "U" else a, dtype=str)


def robust_center_scale(x: np.ndarray) -> tuple[float, float]:
    """Median and sigma-equivalent scale ``max(1.4826 MAD, (q95 - median) / 1.645)`` of finite ``x``."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (float(x[0]) if x.size else 0.0), 1.0
    med = float(np.median(x))
    scale = max(_MAD_TO_SIGMA * float(np.median(np.abs(x - med))),
                (float(np.quantile(x, _TAIL_QUANTILE)) - med) / _TAIL_SIGMA)
    return med, (scale if scale > 0 else (float(np.std(x)) or 1.0))


def redshift_bins(z: np.ndarray, min_bin: int = 150, max_bins: int = 6) -> np.ndarray:
    """Inner edges of redshift-quantile bins with >= ``min_bin`` members each, (n_bins - 1,)."""
    z = np.asarray(z, np.float64)
    z = z[np.isfinite(z)]
    nb = int(np.clip(z.size // max(1, min_bin), 1, max_bins))
    if nb <= 1:
        return np.zeros(0)
    return np.unique(np.quantile(z, np.linspace(0, 1, nb + 1)[1:-1]))


@dataclass
class PopulationModel:
    """Per-class weighted PCAs and the rest-frame grid they were fitted on.

    ``classes`` maps SPECTYPE -> :class:`WeightedPCA`; ``pixel_mask`` maps SPECTYPE -> (P,) bool of
    pixels left out for that class (the Ly-alpha forest for QSOs); ``fallback`` is fitted on all
    spectra and serves classes with too few members.
    """

    wavelength: np.ndarray
    classes: dict[str, WeightedPCA]
    pixel_mask: dict[str, np.ndarray]
    fallback: WeightedPCA | None
    info: dict[str, Any] = field(default_factory=dict)
    #: SPECTYPE -> (P,) bool of pixels left out of the windowed local residual (the class's known lines)
    local_mask: dict[str, np.ndarray] = field(default_factory=dict)
    #: good pixels at each end of a spectrum's coverage left out of the windowed local residual
    local_edge: int = 0

    def model_for(self, cls: str) -> tuple[WeightedPCA, np.ndarray | None]:
        """The class's PCA and pixel mask (the fallback for an unknown class)."""
        if cls in self.classes:
            return self.classes[cls], self.pixel_mask.get(cls)
        if self.fallback is None:  # every class seen at fit time has its own model
            big = max(self.classes, key=lambda c: self.classes[c].n_members)
            return self.classes[big], self.pixel_mask.get(big)
        return self.fallback, None

    def terms(self, flux: np.ndarray, ivar: np.ndarray, spectype: np.ndarray) -> dict[str, np.ndarray]:
        """Raw terms of a block of spectra (N, P) with their classes (N,): see the module docstring.

        **Returns** (N,) arrays ``pca_misfit``, ``pca_local``, ``pca_coef``, ``local_wavelength``
        (rest A of the strongest windowed residual) and (N, R) ``regions`` (:data:`QSO_REGIONS`).
        """
        n = flux.shape[0]
        out = {k: np.full(n, np.nan) for k in ("pca_misfit", "pca_local", "pca_coef", "local_wavelength")}
        out["regions"] = np.full((n, len(QSO_REGIONS)), np.nan)
        kmax = max([m.basis.shape[0] for m in self.classes.values()]
                   + ([self.fallback.basis.shape[0]] if self.fallback is not None else []))
        out["coef"] = np.full((n, kmax), np.nan)
        spectype = _as_str(spectype)
        for cls in np.unique(spectype):
            rows = np.flatnonzero(spectype == cls)
            pca, pmask = self.model_for(cls)
            iv = np.asarray(ivar[rows], np.float32)
            if pmask is not None:
                iv = np.where(pmask[None, :], 0.0, iv)
            st = residual_statistics(pca, np.asarray(flux[rows], np.float32), iv, self.local_mask.get(cls),
                                     self.local_edge)
            out["pca_misfit"][rows] = st["log_chi2pp"]
            out["pca_local"][rows] = st["local"]
            out["pca_coef"][rows] = st["coef_rarity"]
            out["local_wavelength"][rows] = self.wavelength[np.clip(st["local_at"], 0, self.wavelength.size - 1)]
            out["regions"][rows] = region_residuals(self.wavelength, st["r"], iv > 0)
            out["coef"][rows, : st["coef"].shape[1]] = st["coef"]
        return out


def region_residuals(wavelength: np.ndarray, r: np.ndarray, good: np.ndarray,
                     regions: dict[str, tuple[float, float]] = QSO_REGIONS) -> np.ndarray:
    """``sum r / sqrt(n)`` of the normalised residual over each region's good pixels, (N, R); NaN if uncovered.

    Positive: more flux than the population model (a line stronger than usual); negative: less
    (a weak line, an absorption trough).
    """
    out = np.full((r.shape[0], len(regions)), np.nan)
    for j, (lo, hi) in enumerate(regions.values()):
        sel = (wavelength >= lo) & (wavelength <= hi)
        if not sel.any():
            continue
        g = good[:, sel]
        m = g.sum(1)
        s = np.where(g, r[:, sel], 0.0).sum(1)
        out[:, j] = np.where(m >= max(3, sel.sum() // 3), s / np.sqrt(np.maximum(m, 1)), np.nan)
    return out


def fit_population_model(
    wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, spectype: np.ndarray, *,
    n_components: int = 8, model_error: float = 0.05, lya_mask: float = 1216.0, min_class: int = 40,
    seed: int = 0, line_masked: tuple[str, ...] = ("GALAXY",), local_edge: int = 50,
) -> PopulationModel:
    """Fit one weighted PCA per SPECTYPE (and a fallback on everything) on rest-frame spectra.

    **Arguments:** `wavelength` (P,) rest-frame A; `flux`, `ivar` (N, P) normalised; `spectype`
    (N,); `n_components` per class; `model_error` eps; `lya_mask` rest A below which QSO pixels
    are masked (0 keeps them); classes with fewer than `min_class` spectra use the fallback;
    `line_masked` classes get their known emission lines (:func:`known_line_mask`) left out of the
    windowed local residual: normal galaxies' nebular line strengths vary by factors of ten, so the
    largest local residual of an ordinary strong-line galaxy sits on [O III] or [O II], while the
    line features (ratios, unexpected lines, narrow lines) judge the lines themselves; the first and
    last `local_edge` good pixels of every spectrum (the ends of its coverage and the cut at the
    Lyman-alpha forest, which halves the Lyman-alpha line) are left out of it too.
    """
    wl = np.asarray(wavelength, np.float64)
    spectype = _as_str(spectype)
    classes, masks, info = {}, {}, {}
    labels, counts = np.unique(spectype, return_counts=True)
    fallback = None
    if np.any(counts < min_class) or labels.size == 0:
        fallback = fit_weighted_pca(flux, ivar, n_components, model_error=model_error, seed=seed)
    for cls in map(str, np.unique(spectype)):
        rows = np.flatnonzero(spectype == cls)
        pmask = (wl < lya_mask) if (cls == "QSO" and lya_mask > 0) else np.zeros(wl.size, bool)
        if rows.size < min_class:
            info[cls] = {"n": int(rows.size), "model": "fallback (too few members)"}
            continue
        iv = np.where(pmask[None, :], 0.0, np.asarray(ivar[rows], np.float32))
        pca = fit_weighted_pca(np.asarray(flux[rows], np.float32), iv, n_components, model_error=model_error,
                               seed=seed)
        classes[cls], masks[cls] = pca, pmask
        info[cls] = {"n": int(rows.size), "n_components": int(pca.basis.shape[0]), "n_rejected": pca.n_rejected}
    local = {cls: known_line_mask(wl, cls) for cls in line_masked}
    return PopulationModel(wavelength=wl, classes=classes, pixel_mask=masks, fallback=fallback, info=info,
                           local_mask=local, local_edge=local_edge)


def calibrate_terms(
    terms: dict[str, np.ndarray], spectype: np.ndarray, z: np.ndarray, *, reference: np.ndarray | None = None,
    min_bin: int = 150, max_bins: int = 6,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """Robust z-scores of each term per (class, redshift bin), clipped at 0.

    **Arguments:** `terms` name -> (N,) raw values (higher = odder); `spectype`, `z` (N,);
    `reference` (N,) bool of the rows whose medians and scales define each cell (default all).

    **Returns** ``(z_terms, cell, table)``: name -> (N,) clipped z; (N,) integer cell index; and
    a JSON-ready description of the cells (class, z range, size, median and scale per term).
    """
    spectype = _as_str(spectype)
    z = np.asarray(z, np.float64)
    n = spectype.size
    ref = np.ones(n, bool) if reference is None else np.asarray(reference, bool)
    zt = {k: np.full(n, np.nan) for k in terms}
    cell = np.full(n, -1, np.int64)
    table: dict[str, Any] = {"cells": []}
    for cls in map(str, np.unique(spectype)):
        in_cls = spectype == cls
        edges = redshift_bins(z[in_cls & ref], min_bin, max_bins)
        b = np.searchsorted(edges, np.nan_to_num(z, nan=0.0), side="right")
        for j in range(edges.size + 1):
            rows = in_cls & (b == j)
            if not rows.any():
                continue
            cell[rows] = len(table["cells"])
            lo = -np.inf if j == 0 else float(edges[j - 1])
            hi = np.inf if j == edges.size else float(edges[j])
            entry: dict[str, Any] = {"spectype": cls, "z_lo": lo, "z_hi": hi, "n": int(rows.sum()), "terms": {}}
            refrows = rows & ref if (rows & ref).sum() >= 2 else rows
            for k, v in terms.items():
                med, scale = robust_center_scale(v[refrows])
                zt[k][rows] = np.clip((v[rows] - med) / scale, 0.0, None)
                entry["terms"][k] = [med, scale]
            table["cells"].append(entry)
    return zt, cell, table


def cell_coefficient_rarity(coef: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Largest robust |z| of a spectrum's PCA coefficients (N, K) against its (class, z-bin) cell, (N,).

    Within a cell the spectra cover the same rest-frame range, so their coefficients share one
    distribution; a quasar with unusually weak or strong lines is fitted by the basis but lies
    far out along a component. Each side of a component's distribution has its own scale
    (``(median - q05) / 1.645`` and ``(q95 - median) / 1.645``). NaN coefficients (a class with
    fewer components) are ignored.
    """
    out = np.full(coef.shape[0], np.nan)
    for c in np.unique(cell):
        rows = cell == c
        x = coef[rows]
        if x.shape[0] < 5 or not x.shape[1]:
            continue
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN components of a smaller basis
            q05, med, q95 = np.nanquantile(x, [0.05, 0.5, 0.95], axis=0)
            # one scale per side: line strengths are skewed (log-normal), so a quasar with lines five
            # times weaker than usual is far out on the short side of its distribution
            lo = np.maximum((med - q05) / _TAIL_SIGMA, 1e-12)
            hi = np.maximum((q95 - med) / _TAIL_SIGMA, 1e-12)
            zc = np.where(x < med, (med - x) / lo, (x - med) / hi)
            out[rows] = np.nanmax(zc, axis=1)
    return out


def combine(z_terms: dict[str, np.ndarray], cell: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
    """``sqrt(sum_t z_t^2)`` calibrated once more per cell (robust z, not clipped); NaN stays NaN."""
    stack = np.stack([np.asarray(v, np.float64) for v in z_terms.values()])
    rss = np.sqrt(np.sum(np.where(np.isfinite(stack), stack, 0.0) ** 2, axis=0))
    rss = np.where(np.all(np.isnan(stack), axis=0), np.nan, rss)
    ref = np.ones(rss.size, bool) if reference is None else np.asarray(reference, bool)
    out = np.full(rss.size, np.nan)
    for c in np.unique(cell):
        rows = cell == c
        refrows = rows & ref if (rows & ref).sum() >= 2 else rows
        med, scale = robust_center_scale(rss[refrows])
        out[rows] = (rss[rows] - med) / scale
    return out
