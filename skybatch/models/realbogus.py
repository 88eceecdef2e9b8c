"""Real/bogus classification of difference-image candidates: an Equinox CNN over (science,
reference, difference) cutout triplets plus measured features, temperature-calibrated.

Inputs per candidate: the triplet (3, m, m) as the difference store's cutouts hold it
(science, reference, D) and the features of :func:`triplet_features` (D-stamp moments FWHM and
elongation, dipole score, masked fraction, central S/N, the reference's central brightness, the
sharpness of the science and D stamps at the peak).
Each triplet plane is scaled by a robust per-stamp sigma (MAD of the stamp's outer ring) and
``asinh``-squashed, NaN (no data) -> 0 with a fourth "valid" channel, so the network sees
shapes and significance, not survey units.

Model (:class:`RealBogusNet`): two 3x3 conv blocks (16, 32 channels, ReLU, 2x2 max-pool), a
global average, concatenated with the standardised features, an MLP to one logit. Training
(:func:`train_realbogus`): Adam, binary cross-entropy, a held-out calibration split on which
one temperature is fitted (:func:`skybatch.models.calibration.fit_temperature`), and a score
threshold chosen for a stated completeness. :func:`realbogus_score` gives calibrated
P(real). Save / load with :mod:`skybatch.models.registry` (kind ``realbogus``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import expit
from scipy.special import logit as logit_

__all__ = ["FEATURES", "RealBogusNet", "RealBogusModel", "FeatureBaseline", "triplet_features", "prepare_triplets",
           "train_realbogus", "realbogus_score", "minimax_threshold"]

FEATURES = ("fwhm", "elongation", "dipole", "masked_fraction", "centre_snr", "ref_centre", "sci_sharp", "d_sharp")


def _sharpness(planes: np.ndarray) -> np.ndarray:
    """(n, m, m) sigma-scaled planes -> (n,) sharpness at the brightest pixel of the central 3x3:
    (peak - mean of its 8 neighbours) / (|peak| + 1). A PSF-sampled point source (sigma >= ~0.9 px)
    gives ~0.5; a cosmic ray or hot pixel (sharper than any PSF) ~1; a column ~0.75."""
    n, m, _ = planes.shape
    h = m // 2
    z = np.nan_to_num(planes)
    core = z[:, h - 1 : h + 2, h - 1 : h + 2].reshape(n, 9)
    k = np.argmax(core, axis=1)
    py, px = h - 1 + k // 3, h - 1 + k % 3
    idx = np.arange(n)
    peak = z[idx, py, px]
    nb = sum(z[idx, py + dy, px + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx) / 8.0
    return np.clip((peak - nb) / (np.abs(peak) + 1.0), -1.0, 2.0)


def _robust_sigma(stamps: np.ndarray) -> np.ndarray:
    """(n, c) robust sigma of each plane from its outer ring (MAD), >= a tiny floor."""
    n, c, m, _ = stamps.shape
    ring = np.ones((m, m), bool)
    ring[2:-2, 2:-2] = False
    v = stamps[:, :, ring]
    med = np.nanmedian(v, axis=2, keepdims=True)
    s = 1.4826 * np.nanmedian(np.abs(v - med), axis=2)
    return np.where(np.isfinite(s) & (s > 1e-6), s, 1.0)


def prepare_triplets(triplets: np.ndarray) -> np.ndarray:
    """(n, 3, m, m) raw triplets -> (n, 4, m, m) float32 network input (see the module docstring)."""
    t = np.asarray(triplets, np.float32)
    valid = np.isfinite(t).all(axis=1, keepdims=True)
    s = _robust_sigma(t)
    sci_ref = s[:, :2].max(axis=1, keepdims=True)  # science and reference on one scale: the same stars
    scale = np.concatenate([sci_ref, sci_ref, s[:, 2:3]], axis=1)[:, :, None, None]
    z = np.nan_to_num(t / scale, nan=0.0, posinf=0.0, neginf=0.0)
    return np.concatenate([np.arcsinh(z / 3.0), valid.astype(np.float32)], axis=1).astype(np.float32)


def triplet_features(triplets: np.ndarray, psf_fwhm: float | np.ndarray = 3.0) -> np.ndarray:
    """(n, len(FEATURES)) float32 features measured on the triplets (D normalised by its sigma).

    ``sci_sharp`` / ``d_sharp``: :func:`_sharpness` of the science stamp and of D (a cosmic ray or
    hot pixel is sharper than the PSF)."""
    from skybatch.imaging.properties import candidate_properties

    t = np.asarray(triplets, np.float64)
    n, _, m, _ = t.shape
    h = m // 2
    s = _robust_sigma(t.astype(np.float32))
    out = np.zeros((n, len(FEATURES)), np.float32)
    fw = np.broadcast_to(np.asarray(psf_fwhm, float), (n,))
    for i in range(n):
        d = t[i, 2] / s[i, 2]
        c = np.nan_to_num(d[h - 1 : h + 2, h - 1 : h + 2])
        sign = 1.0 if c.sum() >= 0 else -1.0
        p = candidate_properties(d, d, np.array([h], float), np.array([h], float), np.array([sign]),
                                 psf_fwhm=float(fw[i]), masked=~np.isfinite(t[i]).all(axis=0), stamp=m)
        ref_c = np.nan_to_num(t[i, 1, h - 1 : h + 2, h - 1 : h + 2]).mean() / max(s[i, :2].max(), 1e-6)
        out[i, :6] = [p["fwhm"][0], p["elongation"][0], p["dipole"][0], p["masked_fraction"][0],
                      float(np.abs(c).max()), ref_c]
    if n:
        out[:, 6] = _sharpness(t[:, 0] / s[:, :1, None])
        out[:, 7] = _sharpness(t[:, 2] / s[:, 2:3, None])
    out = np.nan_to_num(out, nan=0.0, posinf=20.0, neginf=-20.0)
    out[:, 0] = np.clip(out[:, 0], 0, 30)
    out[:, 1] = np.clip(out[:, 1], 0, 20)
    out[:, 4] = np.arcsinh(out[:, 4] / 3.0)
    out[:, 5] = np.arcsinh(out[:, 5] / 3.0)
    return out


class RealBogusNet(eqx.Module):
    """CNN over (4, m, m) prepared triplets + an MLP over standardised features -> one logit."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.MLP
    feat_mean: jax.Array
    feat_std: jax.Array
    n_features: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    registry_kind: ClassVar[str] = "realbogus"

    def __init__(self, n_features: int = len(FEATURES), width: int = 16, *, key: jax.Array,
                 feat_mean: Any = None, feat_std: Any = None):
        self.n_features, self.width = int(n_features), int(width)
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(4, width, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, padding=1, key=k2)
        self.head = eqx.nn.MLP(2 * width + n_features, 1, 32, 2, activation=jax.nn.relu, key=k3)
        self.feat_mean = jnp.zeros(n_features) if feat_mean is None else jnp.asarray(feat_mean)
        self.feat_std = jnp.ones(n_features) if feat_std is None else jnp.asarray(feat_std)

    def __call__(self, x: jax.Array, f: jax.Array) -> jax.Array:
        """x: (4, m, m) one prepared triplet; f: (n_features,) -> scalar logit of 'real'."""
        pool = eqx.nn.MaxPool2d(2, 2)
        h = pool(jax.nn.relu(self.conv1(x)))
        h = pool(jax.nn.relu(self.conv2(h)))
        h = jnp.mean(h, axis=(1, 2))
        z = (f - self.feat_mean) / self.feat_std
        return self.head(jnp.concatenate([h, z]))[0]

    def architecture(self) -> dict[str, int]:
        return {"n_features": self.n_features, "width": self.width}


@eqx.filter_jit
def _batch_logits(net: RealBogusNet, x: jax.Array, f: jax.Array) -> jax.Array:
    return jax.vmap(net)(x, f)


@dataclass
class RealBogusModel:
    """A trained classifier: the network, its temperature, and the threshold for ``completeness``."""

    net: RealBogusNet
    temperature: float = 1.0
    threshold: float = 0.5
    completeness: float = 0.98
    history: dict[str, list[float]] = field(default_factory=dict)
    stamp: int = 21

    def logits(self, x: np.ndarray, f: np.ndarray, batch: int = 512) -> np.ndarray:
        out = [np.asarray(_batch_logits(self.net, jnp.asarray(x[i : i + batch]), jnp.asarray(f[i : i + batch])))
               for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0)

    def save(self, path: str, card: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
        """Save with :func:`skybatch.models.registry.save` (temperature, threshold in the card)."""
        from skybatch.models import registry

        c = {"calibration": {"temperature": self.temperature, "threshold": self.threshold,
                             "completeness": self.completeness}, "history": self.history, "stamp": self.stamp,
             **(card or {})}
        return registry.save(path, self.net, c, overwrite=overwrite)

    @classmethod
    def load(cls, path: str) -> RealBogusModel:
        from skybatch.models import registry

        net, card = registry.load(path)
        if not isinstance(net, RealBogusNet):
            raise ValueError(f"{path} holds a {card.get('kind')!r} model ({type(net).__name__}), not a real/bogus "
                             "classifier; give the directory written by the real/bogus training")
        cal = card.get("calibration", {})
        return cls(net, float(cal.get("temperature", 1.0)), float(cal.get("threshold", 0.5)),
                   float(cal.get("completeness", 0.98)), dict(card.get("history", {})), int(card.get("stamp", 21)))

    def score(self, triplets: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Calibrated P(real) of raw triplets (n, 3, m, m); larger stamps are cropped to the training size."""
        m = triplets.shape[-1]
        if m > self.stamp:
            a = (m - self.stamp) // 2
            triplets = triplets[..., a : a + self.stamp, a : a + self.stamp]
            features = None
        f = triplet_features(triplets) if features is None else features
        f = f[:, : self.net.n_features]  # a model saved before the sharpness features were added
        z = self.logits(prepare_triplets(triplets), f) / self.temperature
        return expit(z)


def minimax_threshold(p: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """One score threshold for every group: the ``t`` that minimises the worst group error rate
    (a real group's fraction below ``t``, a bogus group's fraction at or above it); ties are broken
    by the mean group error, and within the interval of equally good thresholds the middle (in logit) is
taken. p, labels, groups: (n,). Returns (t, worst error rate at t)."""
    p, labels, groups = np.asarray(p, float), np.asarray(labels), np.asarray(groups)
    cand = np.unique(np.concatenate([p, [np.inf]]))
    errs = []
    for g in np.unique(groups):
        m = groups == g
        lab = np.unique(labels[m])
        if len(lab) != 1:
            raise ValueError(f"groups: {g!r} mixes real and bogus examples; give one group per class")
        q = np.sort(p[m])
        below = np.searchsorted(q, cand, side="left") / len(q)  # fraction < t
        errs.append(below if lab[0] == 1 else 1.0 - below)
    e = np.stack(errs)
    worst, mean = e.max(axis=0), e.mean(axis=0)
    best = np.flatnonzero(worst <= worst.min() + 1e-12)
    best = best[mean[best] <= mean[best].min() + 1e-12]
    i, j = best[0], best[-1]
    # every t in (cand[i-1], cand[j]] gives these errors: take the middle (in logit) of that gap, not its edge
    lo, hi = np.clip([cand[max(i - 1, 0)], cand[j]], 1e-7, 1 - 1e-7)
    mid = 0.5 * (logit_(lo) + logit_(hi))
    t = float(expit(mid)) if lo < hi else float(min(cand[i], 1.0))
    return t, float(worst[i])


def _binary_logits(z: np.ndarray) -> np.ndarray:
    return np.stack([np.zeros_like(z), z], axis=1)


def train_realbogus(triplets: np.ndarray, labels: np.ndarray, *, features: np.ndarray | None = None,
                    epochs: int = 12, batch: int = 128, lr: float = 3e-3, width: int = 16, seed: int = 0,
                    calibration_fraction: float = 0.2, completeness: float = 0.98,
                    weights: np.ndarray | None = None, groups: np.ndarray | None = None) -> RealBogusModel:
    """Train on labelled triplets (1 = real); returns the calibrated model.

    ``weights`` (n,): per-example loss weights (e.g.
    :func:`skybatch.sample.realbogus.training_weights`: more weight on the kinds and S/N bins
    that are hardest to hold at one threshold); normalised to mean 1 over the training split.
    ``groups`` (n,): a group per example (each bogus kind, each real S/N bin: e.g.
    :func:`skybatch.sample.realbogus.training_groups`); when given, ``threshold`` is instead the
    :func:`minimax_threshold` on the calibration split (one threshold, the worst group's error
    smallest) and ``completeness`` the overall completeness it gives there.

    The last ``calibration_fraction`` of a seeded shuffle is held out to fit the temperature and
    choose ``threshold`` as the score that keeps ``completeness`` of the real ones.
    """
    from skybatch.models.calibration import fit_temperature

    labels = np.asarray(labels, np.int64)
    f = triplet_features(triplets) if features is None else np.asarray(features, np.float32)
    x = prepare_triplets(triplets)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_cal = max(50, int(len(x) * calibration_fraction))
    tr, cal = idx[:-n_cal], idx[-n_cal:]
    w = np.ones(len(x), np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (len(x),) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights: need {len(x)} finite non-negative values, got shape {w.shape}")
    w = w / max(float(w[tr].mean()), 1e-12)
    mu, sd = f[tr].mean(axis=0), f[tr].std(axis=0) + 1e-3
    net = RealBogusNet(f.shape[1], width, key=jax.random.PRNGKey(seed), feat_mean=mu, feat_std=sd)
    opt = optax.adam(lr)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    # the feature scaling is fixed, not trained
    frozen = jax.tree_util.tree_map(lambda _: False, params)
    frozen = eqx.tree_at(lambda p: (p.feat_mean, p.feat_std), frozen, replace=(False, False))
    trainable = jax.tree_util.tree_map(lambda p: p is not None, params)
    trainable = eqx.tree_at(lambda p: (p.feat_mean, p.feat_std), trainable, replace=(False, False))
    del frozen
    state = opt.init(eqx.filter(params, trainable))

    @eqx.filter_jit
    def step(params, state, xb, fb, yb, wb):
        def loss_fn(p_tr, p_fixed):
            model = eqx.combine(p_tr, p_fixed, static)
            z = jax.vmap(model)(xb, fb)
            return jnp.mean(wb * optax.sigmoid_binary_cross_entropy(z, yb))

        p_tr, p_fixed = eqx.partition(params, trainable)
        loss, g = eqx.filter_value_and_grad(loss_fn)(p_tr, p_fixed)
        upd, state = opt.update(g, state, p_tr)
        p_tr = eqx.apply_updates(p_tr, upd)
        return eqx.combine(p_tr, p_fixed), state, loss

    history: dict[str, list[float]] = {"loss": []}
    for _ep in range(epochs):
        order = rng.permutation(tr)
        losses = []
        for i in range(0, len(order) - batch + 1, batch):
            b = order[i : i + batch]
            params, state, loss = step(params, state, jnp.asarray(x[b]), jnp.asarray(f[b]),
                                       jnp.asarray(labels[b], jnp.float32), jnp.asarray(w[b]))
            losses.append(float(loss))
        history["loss"].append(float(np.mean(losses)) if losses else math.nan)
    model = RealBogusModel(eqx.combine(params, static), history=history, completeness=completeness,
                           stamp=int(np.shape(triplets)[-1]))
    z = model.logits(x[cal], f[cal])
    try:
        model.temperature = float(fit_temperature(_binary_logits(z), labels[cal]))
    except ValueError as e:  # a calibration split the model separates perfectly: no temperature to fit
        import warnings

        warnings.warn(f"temperature not fitted, kept 1.0 ({e}); use more training examples", stacklevel=2)
        model.temperature = 1.0
    p = expit(z / model.temperature)
    real = np.sort(p[labels[cal] == 1])
    model.threshold = float(real[int(math.floor((1.0 - completeness) * len(real)))]) if len(real) else 0.5
    if groups is not None:
        g = np.asarray(groups)[cal]
        model.threshold, _ = minimax_threshold(p, labels[cal], g)
        model.completeness = float(np.mean(real >= model.threshold)) if len(real) else completeness
    return model


def realbogus_score(model: RealBogusModel, triplets: np.ndarray) -> np.ndarray:
    """Calibrated P(real) per triplet (n, 3, m, m)."""
    return model.score(triplets)


def _register() -> None:
    from skybatch.models.registry import MODEL_KINDS, register_model_kind

    if RealBogusNet.registry_kind not in MODEL_KINDS:
        register_model_kind(RealBogusNet.registry_kind, RealBogusNet)


_register()


@dataclass
class FeatureBaseline:
    """Feature-only baseline: quadratic logistic regression on the standardised :data:`FEATURES`
    (all squares and pairwise products), L2-regularised, temperature 1 (it is fitted by likelihood)."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray

    @staticmethod
    def _expand(z: np.ndarray) -> np.ndarray:
        n, k = z.shape
        iu = np.triu_indices(k)
        quad = (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]
        return np.concatenate([np.ones((n, 1)), z, quad], axis=1)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> FeatureBaseline:
        from scipy.optimize import minimize

        f = np.asarray(features, np.float64)
        mu, sd = f.mean(axis=0), f.std(axis=0) + 1e-3
        X = cls._expand((f - mu) / sd)
        y = np.asarray(labels, np.float64)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = X @ w
            p = expit(z)
            nll = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.sum(w[1:] ** 2)
            g = X.T @ (p - y) / len(y)
            g[1:] += l2 * w[1:]
            return float(nll), g

        w = minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
        return cls(mu, sd, w)

    def score(self, features: np.ndarray) -> np.ndarray:
        z = self._expand((np.asarray(features, np.float64) - self.mean) / self.std) @ self.coef
        return expit(z)
