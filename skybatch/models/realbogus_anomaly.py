"""Anomaly ranking of difference-image candidates: an autoencoder over their cutout triplets.

The reverse use of the real/bogus triplets: instead of asking "is this real?", ask "is this
unlike the others?". An Equinox autoencoder (MLP: input -> ``hidden`` -> ``latent`` ->
``hidden`` -> input, GELU) learns the ordinary candidates; the **anomaly score** of a
candidate is its reconstruction error, as a robust z-score against the training set
(median and 1.4826 MAD of the training errors), so a few unusual transients (extended,
very elongated, offset from their host's nucleus, ...) rank at the top, like the spectra
anomalies of :mod:`skybatch.models.anomaly`.

Input per candidate (from the (science, reference, difference) triplet, NaN = no data):
the difference stamp and the reference stamp, each in units of its own robust noise and then
scaled to unit norm, so the autoencoder sees *shapes* (of the transient, and of the host it
sits on) rather than brightness; from the squared error of each shape the part its own noise
leaves (pixels / norm^2) is taken off, so a faint noisy candidate is not an anomaly either.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from skybatch.models.realbogus import _robust_sigma

__all__ = ["triplet_anomaly", "triplet_shapes"]


def triplet_shapes(triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, m, m) triplets -> ((n, 2 m m) float32 unit-norm shapes, (n, 2) their norms).

    The difference and the reference stamps in units of their own robust noise (NaN -> 0),
    each scaled to unit norm; the norms (in sigma) say how far above the noise each shape is.
    """
    t = np.asarray(triplets, np.float32)
    s = _robust_sigma(t)
    parts, norms = [], []
    for c in (2, 1):  # D, then the reference (the host)
        z = np.nan_to_num(t[:, c] / s[:, c, None, None], nan=0.0, posinf=0.0, neginf=0.0)
        p = z.reshape(len(t), -1).astype(np.float64)
        nrm = np.sqrt((p * p).sum(axis=1, keepdims=True))
        parts.append(p / np.where(nrm > 0, nrm, 1.0))
        norms.append(nrm[:, 0])
    return np.concatenate(parts, axis=1).astype(np.float32), np.stack(norms, axis=1)


class _AutoEncoder(eqx.Module):
    enc: eqx.nn.MLP
    dec: eqx.nn.MLP

    def __init__(self, dim: int, hidden: int, latent: int, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.enc = eqx.nn.MLP(dim, latent, hidden, 1, activation=jax.nn.gelu, key=k1)
        self.dec = eqx.nn.MLP(latent, dim, hidden, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dec(self.enc(x))


def triplet_anomaly(
    triplets: np.ndarray,
    *,
    train: np.ndarray | None = None,
    latent: int = 6,
    hidden: int = 128,
    steps: int = 800,
    batch: int = 256,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> np.ndarray:
    """Anomaly score of each candidate triplet (higher = more unusual).

    Parameters
    ----------
    triplets : (n, 3, m, m) float (science, reference, difference), NaN where no data.
    train : (k, 3, m, m) triplets of ordinary candidates to learn from; default ``triplets``
        themselves (fine when the unusual ones are a small minority, as anomalies are).
    latent, hidden : autoencoder bottleneck and hidden widths.
    steps, batch, learning_rate, seed : Adam training (mean squared reconstruction error).

    Returns
    -------
    (n,) float64: reconstruction error as a robust z-score against the training set.
    """
    t = np.asarray(triplets, np.float32)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"triplets must be (n, 3, m, m) (science, reference, difference); got {t.shape}")
    if len(t) == 0:
        return np.zeros(0)
    x, nx = triplet_shapes(t)
    xt, nt = (x, nx) if train is None else triplet_shapes(np.asarray(train, np.float32))
    if len(xt) < 2:
        return np.zeros(len(x))
    dim = x.shape[1]
    key = jax.random.PRNGKey(seed)
    model = _AutoEncoder(dim, hidden, max(1, min(latent, len(xt) - 1)), key)
    opt = optax.adam(learning_rate)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, xb):
        def loss(m):
            return jnp.mean((jax.vmap(m)(xb) - xb) ** 2)

        val, grads = eqx.filter_value_and_grad(loss)(model)
        upd, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, upd), state, val

    rng = np.random.default_rng(seed)
    xtj = jnp.asarray(xt)
    for _ in range(int(steps)):
        idx = rng.choice(len(xt), size=min(batch, len(xt)), replace=False)
        model, state, _ = step(model, state, xtj[idx])

    half = dim // 2

    @eqx.filter_jit
    def errors(model, xb):
        r = (jax.vmap(model)(xb) - xb) ** 2
        return jnp.stack([jnp.sum(r[:, :half], axis=1), jnp.sum(r[:, half:], axis=1)], axis=1)

    def err(a: np.ndarray, norms: np.ndarray) -> np.ndarray:
        r = np.concatenate([np.asarray(errors(model, jnp.asarray(a[i : i + 4096])))
                            for i in range(0, len(a), 4096)]).astype(np.float64)
        # minus what the stamp's own noise alone leaves (its pixels / norm^2 of a unit-norm
        # shape): a faint ordinary candidate's noise does not look unusual
        return (r - half / np.maximum(norms, 1.0) ** 2).sum(axis=1)

    e_train = err(xt, nt)
    e = err(x, nx)
    med = float(np.median(e_train))
    mad = 1.4826 * float(np.median(np.abs(e_train - med)))
    return (e - med) / max(mad, 1e-12 * max(med, 1e-30))
