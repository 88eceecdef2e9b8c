"""Synthetic spectra with known ground truth for the model tests (no files, no network).

Spectra live on a unit-normalised grid of ``nwave`` pixels (x in [0, 1]); noise is Gaussian with
the stated ``ivar``; a few pixels per spectrum are masked (ivar = 0, flux = NaN) like bad CCD
columns. Every generator takes a NumPy ``Generator`` so tests are reproducible.
"""

from __future__ import annotations

import numpy as np

SIGMA = 0.05  # per-pixel noise of a unit-continuum spectrum -> S/N 20


def _gauss(x: np.ndarray, centre: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x[None, :] - centre[:, None]) / np.asarray(width).reshape(-1, 1)) ** 2)


def _noisy(rng: np.random.Generator, truth: np.ndarray, mask_frac: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    ivar = np.full(truth.shape, 1.0 / SIGMA**2, dtype=np.float32)
    flux = truth + rng.normal(0.0, SIGMA, truth.shape)
    bad = rng.random(truth.shape) < mask_frac
    ivar[bad] = 0.0
    flux[bad] = np.nan
    return flux.astype(np.float32), ivar


def smooth_family(rng: np.random.Generator, n: int, nwave: int = 256) -> dict[str, np.ndarray]:
    """Spectra from a 3-parameter family: a sloped continuum and two emission lines of varying strength.

    Returns ``flux``, ``ivar`` (n, nwave) and the noiseless ``truth``.
    """
    x = np.linspace(0.0, 1.0, nwave)
    slope = rng.normal(0.0, 0.3, n)
    a1 = rng.uniform(0.0, 1.0, n)
    a2 = rng.uniform(0.0, 1.0, n)
    truth = 1.0 + slope[:, None] * (x[None, :] - 0.5)
    truth += a1[:, None] * _gauss(x, np.full(n, 0.3), 0.03) + a2[:, None] * _gauss(x, np.full(n, 0.7), 0.04)
    flux, ivar = _noisy(rng, truth)
    return {"flux": flux, "ivar": ivar, "truth": truth.astype(np.float32)}


def three_classes(rng: np.random.Generator, n: int, nwave: int = 256) -> dict[str, np.ndarray]:
    """GALAXY / QSO / STAR look-alikes with randomly placed features (labels 0 / 1 / 2).

    GALAXY: a continuum break (step of 20-40 %) plus narrow emission lines; QSO: a blue power law
    with broad emission lines; STAR: a curved red continuum with several narrow absorption lines.
    """
    x = np.linspace(0.0, 1.0, nwave)
    label = rng.integers(0, 3, n)
    truth = np.ones((n, nwave))
    for i in range(n):
        c = rng.uniform(0.15, 0.85, 3)
        if label[i] == 0:
            step = rng.uniform(0.2, 0.4)
            truth[i] = 1.0 - step * (x < c[0]) + 0.8 * _gauss(x, c[1:], 0.006).sum(0)
        elif label[i] == 1:
            truth[i] = (1.0 + x) ** -rng.uniform(0.5, 1.0) * 1.4 + 1.0 * _gauss(x, c[:2], 0.03).sum(0)
        else:
            cs = rng.uniform(0.1, 0.9, 5)
            truth[i] = 1.0 + 0.4 * (x - 0.5) - 0.8 * (x - 0.5) ** 2 - 0.5 * _gauss(x, cs, 0.005).sum(0)
    flux, ivar = _noisy(rng, truth)
    return {"flux": flux, "ivar": ivar, "label": label.astype(np.int32)}


def batch_stream(kind: str, batch_size: int, nwave: int = 256, seed: int = 0):
    """``make_batches`` for :func:`skybatch.models.fit`: the batch of step s depends only on (seed, s)."""
    gen = {"smooth": smooth_family, "classes": three_classes}[kind]

    def make_batches(start_step: int):
        step = start_step
        while True:
            b = gen(np.random.default_rng([seed, step]), batch_size, nwave)
            b.pop("truth", None)
            yield b
            step += 1

    return make_batches


# One VAE set-up shared by the VAE, trainer and anomaly tests: the trainer's jitted step is cached
# per (objective, optimiser settings), so equal settings compile once per test process.
VAE_KW = {"nwave": 256, "latent_dim": 4, "width": 64}
VAE_TRAIN_KW = {"batch_size": 32, "learning_rate": 1e-2}
