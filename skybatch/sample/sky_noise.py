"""The observing conditions of the sample spectra: a sky spectrum (continuum, OH lines, moon and twilight)
and per-pixel noise (sky, read noise, source photons) added to noise-free models. Pure NumPy."""

from __future__ import annotations

import numpy as np

from skybatch.sample.render import _add_gaussians

__all__ = ["sky_spectrum", "noise_sigma", "add_noise"]


def _oh_lines() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240601)
    w = np.concatenate([rng.uniform(6200, 7000, 25), rng.uniform(7000, 9900, 160)])
    a = rng.lognormal(np.log(6.0), 0.9, w.size) * np.where(w > 8000, 1.6, 1.0)
    fixed_w = np.array([5578.9, 6302.0, 6365.5, 5891.6, 5897.6, 4359.6, 5462.3, 8400.0, 8430.0])
    fixed_a = np.array([60.0, 25.0, 8.0, 10.0, 8.0, 3.0, 4.0, 12.0, 12.0])
    return np.concatenate([w, fixed_w]), np.concatenate([a, fixed_a])


_OH_W, _OH_A = _oh_lines()


def sky_spectrum(
    wave: np.ndarray,
    *,
    moonfrac: np.ndarray | float = 0.0,
    moonalt: np.ndarray | float = -30.0,
    moonsep: np.ndarray | float = 90.0,
    sunalt: np.ndarray | float = -40.0,
    airmass: np.ndarray | float = 1.2,
    lsf_sigma: float = 0.7,
) -> np.ndarray:
    """Night-sky surface brightness, 1e-17 erg/s/cm²/Å/arcsec², shape (n, nwave).

    Airglow continuum (~1 at 6200 Å) and emission lines ([OI] 5577/6300/6364,
    Na D, Hg, OH bands in the red), scaled by airmass; plus scattered moonlight
    (a 5800 K solar spectrum reddened less than Rayleigh-blue, brighter with
    MOONFRAC, higher MOONALT and smaller MOONSEP) and twilight (blue scattered
    sunlight rising steeply for SUNALT > -20°). Angles in degrees; the
    condition arguments broadcast to (n,).
    """
    wave = np.asarray(wave, dtype=np.float64)
    mf, ma, ms, sa, am = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (moonfrac, moonalt, moonsep, sunalt, airmass)))
    n = mf.size
    cont = 0.35 + 0.65 * (wave / 6200.0) ** 1.5
    acc = np.zeros((1, wave.size))
    _add_gaussians(acc, wave, _OH_W, np.full(_OH_W.size, lsf_sigma), _OH_A, rows=np.zeros(_OH_W.size, dtype=np.int64))
    lines = acc[0]
    airglow = (cont + lines)[None, :] * (0.8 + 0.25 * am[:, None])
    lam_cm = wave * 1e-8
    solar = 1.0 / (lam_cm**5 * np.expm1(1.4388 / (lam_cm * 5800.0)))
    solar = solar / np.interp(6200.0, wave, solar) if wave[0] <= 6200.0 <= wave[-1] else solar / solar.mean()
    moon_amp = np.where(ma > 0, 8.0 * mf**2 * np.sin(np.radians(np.clip(ma, 0, 90))) * (1.0 + 40.0 / np.maximum(ms, 5.0)), 0.0)
    moon = moon_amp[:, None] * solar[None, :] * (wave[None, :] / 6200.0) ** -1.0
    twi_amp = np.where(sa > -20.0, 10.0 ** ((sa + 20.0) * 0.3), 0.0)
    twi = twi_amp[:, None] * solar[None, :] * (wave[None, :] / 6200.0) ** -4.0
    assert airglow.shape[0] == n
    return airglow + moon + twi


def noise_sigma(
    wave: np.ndarray,
    sigma0: np.ndarray,
    *,
    arm_edges: tuple[float, float] | None = None,
    sky: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel flux noise (1e-17 erg/s/cm²/Å), shape (n, nwave).

    sigma0: base noise of each spectrum near 6000 Å, shape (n,).
    arm_edges: (λ_lo, λ_hi) of the spectrograph arm: throughput falls near
        the edges, so the noise rises there (×3 at the very edge).
    sky: sky brightness (nwave,) or (n, nwave); noise grows as sqrt(1 + sky/median).
    Below 4000 Å the noise rises further (blue throughput).
    """
    wave = np.asarray(wave, dtype=np.float64)
    shape = 1.0 + 1.5 * np.exp(-(wave - 3600.0) / 250.0)
    if arm_edges is not None:
        lo, hi = arm_edges
        shape = shape * (1.0 + 2.0 * np.exp(-(wave - lo) / 40.0) + 2.0 * np.exp(-(hi - wave) / 40.0))
    if sky is None:
        sky = sky_spectrum(wave)[0]
    sky = np.asarray(sky, dtype=np.float64)
    med = np.median(sky, axis=-1, keepdims=True)
    skyf = np.sqrt(1.0 + np.clip(sky / med - 1.0, 0.0, None))
    return (np.asarray(sigma0, dtype=np.float64)[:, None] * shape[None, :] * skyf).astype(np.float32)


def add_noise(
    model: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    *,
    masked_fraction: float = 0.001,
    mask_bit: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw observed flux from a noise-free model.

    model, sigma: (n, nwave). Returns (flux float32, ivar float32 = 1/sigma²,
    mask uint32). About ``masked_fraction`` of pixels (cosmic-ray hits, in
    short runs of 1–3 pixels) get ivar = 0 and mask bit ``mask_bit``
    (DESI SPECMASK COSMIC = 2); their flux is left as drawn.
    """
    flux = (model + sigma * rng.standard_normal(model.shape, dtype=np.float32)).astype(np.float32)
    ivar = (1.0 / np.square(sigma.astype(np.float64))).astype(np.float32)
    mask = np.zeros(model.shape, dtype=np.uint32)
    n_hits = rng.poisson(masked_fraction * model.shape[1], model.shape[0])
    for i in np.flatnonzero(n_hits):
        starts = rng.integers(0, model.shape[1], n_hits[i])
        for s in starts:
            w = int(rng.integers(1, 4))
            ivar[i, s : s + w] = 0.0
            mask[i, s : s + w] |= np.uint32(1 << mask_bit)
    return flux, ivar, mask
