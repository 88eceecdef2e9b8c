"""Labelled (science, reference, difference) stamp triplets for real/bogus training and benchmarks.

Each example is rendered the way difference imaging produces it: a science and a reference
stamp with their own Gaussian PSFs (FWHM 2.2-4 px), noise and flux scale; both are
convolved to a common PSF (the sharper one with the Gaussian kernel that matches the wider
one, a *matching kernel* whose width carries a small error, as an estimated PSF does); the
difference ``D = N' - beta R'`` is divided by its noise. Stamps are ``size`` px (odd),
centred on the candidate.

Real (label 1):
    ``real``: a point source in the science image only (S/N 5-60 in D), on empty sky or
    ``real-galaxy``: on a galaxy present in both images (nuclear and off-nuclear).
Bogus (label 0), the artefacts difference imaging makes:
    ``dipole``: a star in both, misregistered by 0.3-1.5 px;
    ``saturated``: a star above saturation in both (clipped cores, residual wings) with a
    bleed column in one;
    ``cosmic-ray``: a sharp hit (1-4 px, or a short track) in the science image;
    ``hot-pixel``: a single hot pixel or a hot column segment in the science image;
    ``psf-ring``: a bright star whose matching kernel is 10-25 % off (a ring or a core/halo);
    ``edge``: the stamp at a chip edge (part of it no data) with a background step.

:func:`make_realbogus_set` returns a :class:`RealBogusSet`: ``triplets`` float32
(n, 3, size, size) = (science, reference, difference / its sigma) with NaN where no data,
``label`` (n,) int, ``kind`` (n,) str, ``snr`` (n,) the D peak S/N of the candidate.
Pure NumPy; 10 000 examples of 21 px take a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["REAL_KINDS", "BOGUS_KINDS", "TRAIN_KINDS", "RealBogusSet", "make_realbogus_set", "training_weights",
           "training_groups", "SNR_EDGES"]

REAL_KINDS = ("real", "real-galaxy")
BOGUS_KINDS = ("dipole", "saturated", "cosmic-ray", "hot-pixel", "psf-ring", "edge")
#: the training mix (``kinds=`` of :func:`make_realbogus_set`): half real, and the bogus kinds
#: that look most like a faint point source (cosmic rays, hot pixels) twice as often as the others
TRAIN_KINDS = REAL_KINDS * 4 + BOGUS_KINDS + ("cosmic-ray", "hot-pixel")
#: the real S/N bins (D peak S/N) the benchmark and :func:`training_groups` report
SNR_EDGES = (5.0, 8.0, 12.0, 20.0, 40.0)
_S2F = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class RealBogusSet:
    """Labelled triplets (see the module docstring)."""

    triplets: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    snr: np.ndarray


def _gauss(size: int, x: float, y: float, sigma: float, sy: float | None = None) -> np.ndarray:
    h = size // 2
    ax = np.arange(-h, h + 1, dtype=np.float64)
    sy = sigma if sy is None else sy
    g = np.exp(-0.5 * (((ax[None, :] - x) / sigma) ** 2 + ((ax[:, None] - y) / sy) ** 2))
    return g / (2.0 * math.pi * sigma * sy)


def _convolve(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return img
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest")


def _one(rng: np.random.Generator, kind: str, size: int, pad: int) -> tuple[np.ndarray, float]:
    big = size + 2 * pad
    sn, sr = rng.uniform(2.2, 4.0) / _S2F, rng.uniform(2.0, 3.5) / _S2F
    noise_n, noise_r = 1.0, rng.uniform(0.3, 0.8)
    beta = rng.uniform(0.7, 1.5)
    N = np.zeros((big, big))
    R = np.zeros((big, big))
    sat = np.inf
    kernel_error = rng.normal(0.0, 0.02)
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    sigma_d = math.hypot(sn, sr)  # width of a point source in D (the common PSF)
    # matched-filter flux that gives peak S/N `s` in D, for a source of the new image
    def flux_for(s: float) -> float:
        var = noise_n**2 + (beta * noise_r) ** 2
        return s * math.sqrt(var * 4.0 * math.pi) * sigma_d

    snr = 0.0
    if kind in ("real", "real-galaxy"):
        snr = float(np.exp(rng.uniform(math.log(5.0), math.log(60.0))))
        if kind == "real-galaxy":
            gs = rng.uniform(1.5, 5.0)
            gf = flux_for(rng.uniform(10.0, 200.0))
            ox, oy = rng.normal(0.0, 1.5, 2)
            q = rng.uniform(0.4, 1.0)
            N += gf * _gauss(big, cx + ox, cy + oy, math.hypot(gs, sn), math.hypot(gs * q, sn))
            R += gf / beta * _gauss(big, cx + ox, cy + oy, math.hypot(gs, sr), math.hypot(gs * q, sr))
        N += flux_for(snr) * _gauss(big, cx, cy, sn)
    elif kind in ("dipole", "psf-ring", "saturated"):
        f = flux_for(float(np.exp(rng.uniform(math.log(20.0), math.log(2000.0)))))
        dx, dy = (0.0, 0.0)
        if kind == "dipole":
            r, th = rng.uniform(0.3, 1.5), rng.uniform(0, 2 * math.pi)
            dx, dy = r * math.cos(th), r * math.sin(th)
        if kind == "psf-ring":
            kernel_error = rng.choice([-1.0, 1.0]) * rng.uniform(0.10, 0.25)
        N += f * _gauss(big, cx, cy, sn)
        R += f / beta * _gauss(big, cx + dx, cy + dy, sr)
        if kind == "saturated":
            sat = f * rng.uniform(0.02, 0.2) / (2 * math.pi * sn * sn)
    elif kind == "cosmic-ray":
        amp = rng.uniform(8.0, 200.0) * noise_n
        if rng.random() < 0.6:
            n_px = rng.integers(1, 5)
            for _ in range(n_px):
                N[big // 2 + rng.integers(-1, 2), big // 2 + rng.integers(-1, 2)] += amp * rng.uniform(0.3, 1.0)
        else:
            L, th = rng.uniform(3, 10), rng.uniform(0, math.pi)
            for t in np.linspace(-L / 2, L / 2, int(L * 2)):
                N[int(round(big // 2 + t * math.sin(th))), int(round(big // 2 + t * math.cos(th)))] += amp / 2
    elif kind == "hot-pixel":
        amp = rng.uniform(8.0, 300.0) * noise_n
        if rng.random() < 0.6:
            N[big // 2, big // 2] += amp
        else:
            y0 = big // 2 - rng.integers(3, big // 2)
            N[y0 : big // 2 + rng.integers(1, big // 2), big // 2] += amp / 4
    elif kind == "edge":
        f = flux_for(rng.uniform(3.0, 30.0))
        N += f * _gauss(big, cx + rng.normal(0, 3), cy + rng.normal(0, 3), sn) * (rng.random() < 0.5)
    # noise, saturation and bleeds (raw images)
    N = N + rng.standard_normal((big, big)) * noise_n
    R = R + rng.standard_normal((big, big)) * noise_r
    bad = np.zeros((big, big), bool)
    if np.isfinite(sat):
        for img, s in ((N, sat), (R, sat / beta)):
            over = img >= s
            img[over] = s
            bad |= over
        cols = np.nonzero(bad.any(axis=0))[0]
        if cols.size:
            L = int(rng.integers(3, pad + size // 2))
            c0 = big // 2
            target = N if rng.random() < 0.5 else R
            lvl = sat if target is N else sat / beta
            for c in cols:
                target[max(0, c0 - L) : c0 + L, c] = lvl
    # common PSF: the sharper image convolved with the matching kernel (with its error)
    if sn >= sr:
        k = math.sqrt(max(sn * sn - sr * sr, 0.0)) * (1.0 + kernel_error)
        Nc, Rc = N, _convolve(R, k)
        var_r = noise_r**2 / (1.0 + 4.0 * math.pi * k * k) if k > 0.05 else noise_r**2
        var = noise_n**2 + beta**2 * var_r
    else:
        k = math.sqrt(max(sr * sr - sn * sn, 0.0)) * (1.0 + kernel_error)
        Nc, Rc = _convolve(N, k), R
        var_n = noise_n**2 / (1.0 + 4.0 * math.pi * k * k) if k > 0.05 else noise_n**2
        var = var_n + beta**2 * noise_r**2
    D = (Nc - beta * Rc) / math.sqrt(var)
    if kind == "edge":
        side = rng.integers(4)
        cut = big // 2 + rng.integers(-size // 3, size // 3)
        m = np.zeros((big, big), bool)
        if side == 0:
            m[:, cut:] = True
        elif side == 1:
            m[:, :cut] = True
        elif side == 2:
            m[cut:, :] = True
        else:
            m[:cut, :] = True
        D = D + np.where(~m, rng.uniform(-6, 6), 0.0) * (np.arange(big)[None, :] * 0 + 1)
        for a in (N, R, D):
            a[m] = np.nan
    sl = slice(pad, pad + size)
    out = np.stack([N[sl, sl], R[sl, sl], D[sl, sl]]).astype(np.float32)
    if kind not in ("real", "real-galaxy"):
        h = size // 2
        core = np.nan_to_num(out[2, h - 1 : h + 2, h - 1 : h + 2])
        snr = float(np.max(np.abs(core)))
    return out, snr


def make_realbogus_set(n: int, *, size: int = 21, real_fraction: float = 0.5, seed: int = 0,
                       kinds: tuple[str, ...] | None = None) -> RealBogusSet:
    """``n`` labelled triplets: ``real_fraction`` real (half on galaxies), the rest spread evenly
    over the bogus kinds (or over ``kinds``, any of :data:`REAL_KINDS` + :data:`BOGUS_KINDS`)."""
    if size < 9 or size % 2 == 0:
        raise ValueError(f"size={size}: stamps must be odd and at least 9 px")
    rng = np.random.default_rng(seed)
    if kinds is None:
        n_real = int(round(n * real_fraction))
        names = [REAL_KINDS[i % 2] for i in range(n_real)]
        names += [BOGUS_KINDS[i % len(BOGUS_KINDS)] for i in range(n - n_real)]
    else:
        bad = [k for k in kinds if k not in REAL_KINDS + BOGUS_KINDS]
        if bad:
            raise ValueError(f"kinds: {bad} are not among {REAL_KINDS + BOGUS_KINDS}")
        names = [kinds[i % len(kinds)] for i in range(n)]
    names = list(rng.permutation(names))
    pad = 8
    trip = np.empty((n, 3, size, size), np.float32)
    snr = np.empty(n)
    for i, k in enumerate(names):
        trip[i], snr[i] = _one(rng, k, size, pad)
    kind = np.asarray(names)
    return RealBogusSet(trip, np.isin(kind, REAL_KINDS).astype(np.int64), kind, snr)


def training_weights(kind: np.ndarray, snr: np.ndarray, *, hard: tuple[str, ...] = ("cosmic-ray", "hot-pixel"),
                     hard_weight: float = 2.0, low_snr: float = 12.0, low_snr_weight: float = 2.0) -> np.ndarray:
    """(n,) loss weights for :func:`skybatch.models.realbogus.train_realbogus` so that one threshold
    holds for every kind and S/N bin: ``hard_weight`` on the ``hard`` bogus kinds, ``low_snr_weight``
    on real ones below ``low_snr`` (D peak S/N), then each class rescaled to its own count (the
    class balance, and so the calibration, is unchanged)."""
    kind = np.asarray(kind)
    real = np.isin(kind, REAL_KINDS)
    w = np.ones(len(kind))
    w[np.isin(kind, hard)] = hard_weight
    w[real & (np.asarray(snr) < low_snr)] = low_snr_weight
    for m in (real, ~real):
        if m.any():
            w[m] *= m.sum() / w[m].sum()
    return w


def training_groups(kind: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """(n,) group names: each bogus kind its own, real ones by D peak S/N bin (:data:`SNR_EDGES`,
    the last open-ended) — ``groups=`` of :func:`skybatch.models.realbogus.train_realbogus`."""
    kind = np.asarray(kind).astype(object)
    b = np.clip(np.searchsorted(SNR_EDGES, np.asarray(snr), side="right") - 1, 0, len(SNR_EDGES) - 1)
    names = np.array([f"real S/N >= {e:g}" for e in SNR_EDGES], dtype=object)
    return np.where(np.isin(kind, REAL_KINDS), names[b], kind).astype(str)
