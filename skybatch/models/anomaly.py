"""Anomaly scores for spectra from a trained VAE: reconstruction misfit plus latent rarity.

Two per-spectrum terms, each measured against the training set:

1. **Misfit**: ``log(chi2 / n_good)``, the log of the ivar-weighted reconstruction chi^2 per good
   pixel (from :func:`skybatch.models.vae.reconstruct_batch`). A spectrum the VAE cannot
   reproduce (unusual lines, troughs, artefacts) has a large value. The chi^2 includes the VAE's
   fractional model error (:class:`skybatch.models.vae.SpectrumVAE` ``model_error``), so normal
   spectra sit near 1 at any S/N instead of growing as S/N^2 with the decoder's last per cent of
   misfit; the log makes the term scale-free (an anomaly's excess grows multiplicatively with S/N).
2. **Rarity**: how far the latent mean ``mu`` lies from the training population, from its
   negative log-density (NLL) under a Gaussian mixture fitted on training latents
   (:func:`fit_latent_density`; :func:`select_latent_density` picks the number of components by
   BIC, since a mixed survey's latents are multi-modal): ``rarity = cbrt(2 * (NLL - NLL_floor))``,
   where ``NLL_floor`` is the mixture's lowest possible NLL. For one Gaussian
   ``2 * (NLL - NLL_floor)`` is the squared Mahalanobis distance, a chi^2 variable with ``d``
   degrees of freedom; its cube root (Wilson-Hilferty) is close to normal, so a robust z-score of
   it reads like Gaussian sigmas (a raw NLL has a long right tail that would flag ordinary tail
   objects). A spectrum the VAE reproduces well but maps far from the training population (rare
   but smooth) scores high.

Combination (documented contract of :func:`anomaly_score`)::

    z_misfit = max(0, (log_chi2pp - median_train) / scale_train)
    z_rarity = max(0, (rarity     - median_train) / scale_train)
    score    = z_misfit + z_rarity

i.e. the sum of robust z-scores, each clipped at 0 so that being unusually *typical* in one term
cannot hide an excess in the other. ``scale`` is the larger of the sigma-equivalent MAD
(``1.4826 * MAD``) and ``(q95 - median) / 1.645``: identical for a Gaussian term, but the latent
rarity of real spectra has a heavier tail than its core (a few per cent of normal spectra beyond
"3 sigma" by the MAD), and without the tail-matched scale those ordinary tail objects would
outrank genuine misfits in the sum. Medians and scales come from training (or a clean reference
set; spectra without good pixels are left out) and are stored with the VAE
(:class:`AnomalyReference`, JSON-ready for the model card). Spectra without good pixels get NaN.
Higher = more anomalous; rank by ``score``.

Everything here is a pure function of arrays. Scoring takes NumPy or CuPy arrays (one code path
via :func:`skybatch.xp.get_namespace`); the one-off fits run on the host in NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.xp import get_namespace, to_numpy

__all__ = [
    "AnomalyReference",
    "GaussianMixtureDensity",
    "anomaly_score",
    "chi2_per_pixel",
    "fit_anomaly_reference",
    "fit_latent_density",
    "knn_distance",
    "latent_density_bic",
    "robust_z",
    "select_latent_density",
]

_MAD_TO_SIGMA = 1.4826
_TAIL_QUANTILE, _TAIL_SIGMA = 0.95, 1.6448536269514722  # the 95th percentile of N(0, 1)


def chi2_per_pixel(chi2: Any, n_good: Any) -> Any:
    """Reconstruction chi^2 per good pixel, (N,); NaN where a spectrum has no good pixel."""
    xp = get_namespace(chi2, n_good)
    n = xp.astype(n_good, chi2.dtype)
    return xp.where(n > 0, chi2 / xp.where(n > 0, n, 1.0), xp.nan)


def robust_z(x: Any, median: float, scale: float) -> Any:
    """``(x - median) / scale`` where ``scale`` is a sigma-equivalent MAD (> 0)."""
    return (x - median) / scale


def _median_and_scale(x: np.ndarray, name: str) -> tuple[float, float]:
    """Median and sigma-equivalent scale of a training term (see the module docstring).

    The scale is the larger of ``1.4826 * MAD`` and ``(q95 - median) / 1.645``: the two agree for
    a Gaussian term, but a term with heavier tails than its core suggests (latent rarity of real
    spectra) gets the wider one, so that a z of 3 flags about as few normal spectra in either
    term. The 95th percentile stays clear of a training set's own anomalies (~1 %).
    """
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise ValueError(f"need at least 2 finite {name} values to fit the anomaly reference, got {x.size}")
    med = float(np.median(x))
    scale = max(_MAD_TO_SIGMA * float(np.median(np.abs(x - med))),
                (float(np.quantile(x, _TAIL_QUANTILE)) - med) / _TAIL_SIGMA)
    if not scale > 0:
        scale = float(np.std(x)) or 1.0
    return med, scale


@dataclass(frozen=True)
class GaussianMixtureDensity:
    """A full-covariance Gaussian mixture over latent vectors.

    Attributes
    ----------
    weights : (K,) mixture weights, summing to 1
    means : (K, d) component means
    precisions : (K, d, d) inverse covariances
    log_norm : (K,) ``log w_k - 0.5 * (d log 2 pi + log det C_k)``
    """

    weights: np.ndarray
    means: np.ndarray
    precisions: np.ndarray
    log_norm: np.ndarray

    @property
    def n_components(self) -> int:
        """Number of mixture components K."""
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        """Latent dimension d."""
        return int(self.means.shape[1])

    @property
    def nll_floor(self) -> float:
        """Lower bound of :meth:`neg_log_density`: ``-log sum_k w_k N_k(peak)`` (nats)."""
        top = float(np.max(self.log_norm))
        return -(top + math.log(float(np.sum(np.exp(self.log_norm - top)))))

    def rarity(self, mu: Any) -> Any:
        """``cbrt(2 * (NLL(mu) - nll_floor))`` for latents (N, d) -> (N,); see the module docstring."""
        xp = get_namespace(mu)
        x = xp.clip(2.0 * (self.neg_log_density(mu) - self.nll_floor), 0.0, None)
        return x ** (1.0 / 3.0)

    @classmethod
    def from_moments(cls, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> GaussianMixtureDensity:
        """Build from weights (K,), means (K, d) and covariances (K, d, d)."""
        weights = np.asarray(weights, np.float64)
        means = np.asarray(means, np.float64)
        cov = np.asarray(covariances, np.float64)
        d = means.shape[1]
        sign, logdet = np.linalg.slogdet(cov)
        if np.any(sign <= 0):
            raise ValueError("latent density covariances must be positive definite")
        prec = np.linalg.inv(cov)
        log_norm = np.log(weights) - 0.5 * (d * math.log(2 * math.pi) + logdet)
        return cls(weights=weights, means=means, precisions=prec, log_norm=log_norm)

    def neg_log_density(self, mu: Any) -> Any:
        """``-log p(mu)`` for latent vectors ``mu`` of shape (N, d); returns (N,) in nats."""
        xp = get_namespace(mu)
        if mu.ndim != 2 or mu.shape[1] != self.dim:
            raise ValueError(f"mu must have shape (N, {self.dim}), got {mu.shape}")
        dt = mu.dtype
        means = xp.asarray(self.means, dtype=dt)
        prec = xp.asarray(self.precisions, dtype=dt)
        log_norm = xp.asarray(self.log_norm, dtype=dt)
        diff = mu[None, :, :] - means[:, None, :]  # (K, N, d)
        maha = xp.sum(xp.matmul(diff, prec) * diff, axis=-1)  # (K, N)
        logp = log_norm[:, None] - 0.5 * maha
        top = xp.max(logp, axis=0)
        return -(top + xp.log(xp.sum(xp.exp(logp - top[None, :]), axis=0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (weights, means, covariances) for a model card."""
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covariances": np.linalg.inv(self.precisions).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GaussianMixtureDensity:
        """Inverse of :meth:`to_dict`."""
        return cls.from_moments(np.asarray(d["weights"]), np.asarray(d["means"]), np.asarray(d["covariances"]))


def fit_latent_density(
    mu: Any,
    n_components: int = 1,
    *,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-6,
    reg_covar: float = 1e-6,
) -> GaussianMixtureDensity:
    """Fit a Gaussian mixture to training latent means by expectation-maximisation (host NumPy).

    **Arguments:** `mu` (N, d) training latents; `n_components` K (1 = a single Gaussian, fitted
    in closed form); `seed` for the k-means++-style initial means; `max_iter`, `tol` (change of
    mean log-likelihood per point) stop EM; `reg_covar` (mixtures only) is added to each component's
    covariance diagonal, in units of the latents' variance along that dimension.

    K = 1 is the exact sample mean and covariance. For K > 1, against the singularities of
    maximum-likelihood mixtures, a component left with fewer than ``d + 1`` effective members
    (too few for a full covariance) is dropped during EM, so the result may have fewer than K
    components. Without that, a component collapses onto one or two outlying latents, which then
    look *typical* (and every other latent rare against the spike's peak).
    """
    x = np.asarray(to_numpy(mu), dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"mu must have shape (N, d), got {x.shape}")
    x = x[np.all(np.isfinite(x), axis=1)]
    n, d = x.shape
    k = int(n_components)
    if k < 1 or n < max(2, 2 * k):
        raise ValueError(f"need n_components >= 1 and at least 2 * n_components finite latents; got K={k}, N={n}")
    full_cov = np.cov(x, rowvar=False).reshape(d, d)
    if k == 1:
        cov = full_cov + 1e-6 * np.eye(d)
        return GaussianMixtureDensity.from_moments(np.ones(1), x.mean(0, keepdims=True), cov[None])
    floor = np.diag(reg_covar * np.maximum(np.diag(full_cov), 1e-12))

    rng = np.random.default_rng(seed)
    means = [x[rng.integers(n)]]
    for _ in range(k - 1):
        d2 = np.min(((x[:, None, :] - np.asarray(means)[None]) ** 2).sum(-1), axis=1)
        means.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
    means_a = np.asarray(means)
    covs = np.repeat((full_cov + floor)[None], k, axis=0)
    weights = np.full(k, 1.0 / k)
    prev = -np.inf
    for _ in range(max_iter):
        gm = GaussianMixtureDensity.from_moments(weights, means_a, covs)
        diff = x[None] - gm.means[:, None]
        logp = gm.log_norm[:, None] - 0.5 * np.einsum("kni,kij,knj->kn", diff, gm.precisions, diff)
        top = logp.max(0)
        ll = top + np.log(np.exp(logp - top).sum(0))
        resp = np.exp(logp - ll)  # (K, N)
        nk = resp.sum(1)
        alive = nk >= d + 1
        if not alive.any():  # cannot happen for n >= 2 (d + 1) but keep EM total
            alive = nk == nk.max()
        resp, nk = resp[alive], nk[alive]
        weights = nk / nk.sum()
        means_a = (resp @ x) / nk[:, None]
        diff = x[None] - means_a[:, None]
        covs = np.einsum("kn,kni,knj->kij", resp, diff, diff) / nk[:, None, None] + floor
        mean_ll = float(ll.mean())
        if abs(mean_ll - prev) < tol and alive.all():
            break
        prev = mean_ll
    return GaussianMixtureDensity.from_moments(weights, means_a, covs)


def latent_density_bic(g: GaussianMixtureDensity, x: np.ndarray) -> float:
    """``BIC = -2 log L + p log N`` of the mixture ``g`` on latents ``x`` (N, d), host NumPy, with
    ``p = K (d + d (d + 1) / 2) + K - 1`` free parameters for the K components ``g`` *has*: components
    that :func:`fit_latent_density` dropped during EM are not parameters of the fit."""
    n, d = x.shape
    per_component = d + d * (d + 1) // 2 + 1
    return 2.0 * float(np.sum(g.neg_log_density(x))) + (g.n_components * per_component - 1) * math.log(n)


def select_latent_density(
    mu: Any, max_components: int = 8, *, seed: int = 0
) -> GaussianMixtureDensity:
    """The Gaussian mixture with K in ``1..max_components`` of lowest BIC on training latents (host NumPy).

    BIC as :func:`latent_density_bic` (counting the components a fit kept, not the K it started with). The
    latents of a mixed survey (classes x redshift) lie on a curved, multi-modal manifold that one
    Gaussian describes badly: its outskirts hold ordinary objects, which would then look rare.
    K is capped so that every component has at least ``p / K`` latents on average.
    """
    x = np.asarray(to_numpy(mu), dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"mu must have shape (N, d), got {x.shape}")
    x = x[np.all(np.isfinite(x), axis=1)]
    n, d = x.shape
    per_component = d + d * (d + 1) // 2 + 1
    best, best_bic = None, np.inf
    for k in range(1, max(1, int(max_components)) + 1):
        if k > 1 and n < 2 * k * per_component:
            break
        g = fit_latent_density(x, k, seed=seed)
        bic = latent_density_bic(g, x)
        if bic < best_bic:
            best, best_bic = g, bic
    if best is None:
        raise ValueError(f"need at least 2 finite latents to fit a latent density, got {n}")
    return best


def knn_distance(mu: Any, reference: Any, k: int = 10) -> Any:
    """Distance from each latent in ``mu`` (N, d) to its k-th nearest neighbour in ``reference`` (M, d).

    An alternative rarity term for multi-modal latent spaces; costs O(N * M * d) per call, so keep
    ``reference`` to a subsample (e.g. 10,000 training latents). Returns (N,).
    """
    xp = get_namespace(mu, reference)
    if not 1 <= k <= reference.shape[0]:
        raise ValueError(f"k must lie in [1, {reference.shape[0]}] (reference size), got {k}")
    d2 = (
        xp.sum(mu**2, axis=1)[:, None]
        - 2.0 * xp.matmul(mu, reference.T)
        + xp.sum(reference**2, axis=1)[None, :]
    )
    d2 = xp.sort(xp.clip(d2, 0.0, None), axis=1)
    return xp.sqrt(d2[:, k - 1])


@dataclass(frozen=True)
class AnomalyReference:
    """Training-set statistics that turn misfit and rarity into robust z-scores.

    Attributes
    ----------
    density : latent density fitted on training latents
    misfit_median, misfit_scale : median and sigma-equivalent scale of ``log(chi2 per pixel)``
    rarity_median, rarity_scale : median and sigma-equivalent scale of the rarity
        ``cbrt(2 * (NLL - NLL_floor))`` of the training latents
    """

    density: GaussianMixtureDensity
    misfit_median: float
    misfit_scale: float
    rarity_median: float
    rarity_scale: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, stored in the VAE's card under ``anomaly``."""
        return {
            "method": "sum of robust z (clipped at 0, scale max(MAD, q95 tail)) of log chi2/pixel and "
                      "cbrt(2 (GMM NLL - floor))",
            "density": self.density.to_dict(),
            "misfit_median": self.misfit_median,
            "misfit_scale": self.misfit_scale,
            "rarity_median": self.rarity_median,
            "rarity_scale": self.rarity_scale,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnomalyReference:
        """Inverse of :meth:`to_dict`."""
        return cls(
            density=GaussianMixtureDensity.from_dict(d["density"]),
            misfit_median=float(d["misfit_median"]),
            misfit_scale=float(d["misfit_scale"]),
            rarity_median=float(d["rarity_median"]),
            rarity_scale=float(d["rarity_scale"]),
        )


def fit_anomaly_reference(
    chi2_pp: Any, mu: Any, *, n_components: int | str = "bic", max_components: int = 8, seed: int = 0
) -> AnomalyReference:
    """Fit the latent density and the robust statistics of both terms on training spectra.

    **Arguments:** `chi2_pp` (N,) reconstruction chi^2 per good pixel (:func:`chi2_per_pixel`);
    `mu` (N, d) latent means; `n_components` of the latent Gaussian mixture, or ``"bic"`` to pick
    it in ``1..max_components`` (:func:`select_latent_density`); `seed` for EM.

    Spectra without good pixels (NaN ``chi2_pp``) are left out: every encoder maps them to one
    and the same latent, a spike that a mixture component would collapse onto.
    """
    c = np.asarray(to_numpy(chi2_pp), dtype=np.float64)
    m = np.asarray(to_numpy(mu), dtype=np.float64)
    if c.shape != (m.shape[0],):
        raise ValueError(f"chi2_pp must have shape ({m.shape[0]},) to match mu {m.shape}, got {c.shape}")
    keep = np.isfinite(c) & np.all(np.isfinite(m), axis=1)
    c, m = c[keep], m[keep]
    if n_components == "bic":
        density = select_latent_density(m, max_components, seed=seed)
    elif isinstance(n_components, str):
        raise ValueError(f"n_components must be a positive integer or 'bic', got {n_components!r}")
    else:
        density = fit_latent_density(m, n_components, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        misfit = np.log(c)
    rarity = density.rarity(m)
    mm, ms = _median_and_scale(misfit, "log chi2 per pixel")
    rm, rs = _median_and_scale(rarity, "latent rarity")
    return AnomalyReference(density, mm, ms, rm, rs)


def anomaly_score(chi2_pp: Any, mu: Any, reference: AnomalyReference) -> dict[str, Any]:
    """Anomaly score of each spectrum (see the module docstring for the combination).

    **Arguments:** `chi2_pp` (N,) reconstruction chi^2 per good pixel; `mu` (N, d) latent means;
    `reference` from :func:`fit_anomaly_reference`.

    **Returns** a dict of (N,) arrays in the input namespace: ``score`` (higher = more anomalous,
    NaN without good pixels), ``z_misfit``, ``z_rarity`` (clipped robust z of each term) and
    ``latent_nll`` (nats).
    """
    xp = get_namespace(chi2_pp, mu)
    if mu.ndim != 2 or chi2_pp.shape != (mu.shape[0],):
        raise ValueError(f"expected chi2_pp (N,) and mu (N, d); got {chi2_pp.shape} and {mu.shape}")
    safe = xp.where(chi2_pp > 0, chi2_pp, 1e-30)
    misfit = xp.where(xp.isnan(chi2_pp), xp.nan, xp.log(safe))
    nll = reference.density.neg_log_density(mu)
    rarity = xp.clip(2.0 * (nll - reference.density.nll_floor), 0.0, None) ** (1.0 / 3.0)
    z_m = xp.clip(robust_z(misfit, reference.misfit_median, reference.misfit_scale), 0.0, None)
    z_r = xp.clip(robust_z(rarity, reference.rarity_median, reference.rarity_scale), 0.0, None)
    return {"score": z_m + z_r, "z_misfit": z_m, "z_rarity": z_r, "latent_nll": nll}
