"""Noise-free model spectra of a population (:func:`~skybatch.sample.spectra.draw_population`): galaxy,
quasar (with a Lyα forest) and star models, their anomalies, convolved with the line-spread function and
scaled to each object's r-band magnitude. Pure NumPy; nothing here does I/O."""

from __future__ import annotations

import numpy as np

from skybatch.sample.spectra import (
    C_KMS,
    _BALMER,
    _GAL_ABSORPTION,
    _GAL_EMISSION,
    _LYA,
    _QSO_BROAD,
    _QSO_NARROW,
    _REF_WAVE,
    _STAR_METAL,
    _TIO_HEADS,
    mag_to_flux_level,
)

__all__ = ["render_spectra"]


def _add_gaussians(
    out: np.ndarray, wave: np.ndarray, centre: np.ndarray, sigma: np.ndarray, amp: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """out[rows[k]] += amp[k] * exp(-0.5 ((wave - centre[k]) / sigma[k])^2), within ±6σ only.

    rows: target row of each Gaussian (default: Gaussian k goes to row k).
    """
    rows = np.arange(centre.size) if rows is None else np.asarray(rows)
    ok = (amp != 0) & np.isfinite(centre) & (sigma > 0) & (centre + 6 * sigma > wave[0]) & (centre - 6 * sigma < wave[-1])
    if not ok.any():
        return
    rows = rows[ok]
    c, s, a = centre[ok], sigma[ok], amp[ok]
    dw = np.diff(wave)
    ci = np.clip(np.searchsorted(wave, c), 1, wave.size - 1)
    half = int(np.ceil(np.max(6 * s / dw[ci - 1]))) + 1
    half = min(half, wave.size)
    offs = np.arange(-half, half + 1)
    idx = ci[:, None] + offs[None, :]
    valid = (idx >= 0) & (idx < wave.size)
    idxc = np.clip(idx, 0, wave.size - 1)
    x = (wave[idxc] - c[:, None]) / s[:, None]
    vals = np.where(valid, a[:, None] * np.exp(-0.5 * x * x), 0.0)
    np.add.at(out, (np.broadcast_to(rows[:, None], idx.shape), idxc), vals)


def _galaxy(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    rest = wave[None, :] / (1 + z[:, None])
    beta, brk, young = p["g_beta"][:, None], p["g_break"][:, None], p["g_young"][:, None]
    old = (rest / 5500.0) ** beta * (1.0 - brk / (1.0 + np.exp((rest - 4000.0) / 35.0)))
    yng = (rest / 5500.0) ** -2.0 * (1.0 - 0.15 / (1.0 + np.exp((rest - 3650.0) / 30.0)))
    cont = (1 - young) * old + young * yng * 0.8
    # stellar absorption
    absorb = np.zeros((n, wave.size))
    sig_star = p["g_sigma_star"]
    for w0, depth in _GAL_ABSORPTION:
        c = w0 * (1 + z)
        s = np.hypot(c * sig_star / C_KMS, lsf)
        _add_gaussians(absorb, wave, c, s, 0.35 * depth * (1 - p["g_young"] * 0.7))
    flux = cont * np.clip(1.0 - absorb, 0.0, None)
    # emission: flux of each line relative to the continuum level at Hβ
    ew_hb = p["g_ew_hb"]
    if np.any(ew_hb > 0):
        c_hb = (1 - p["g_young"]) * (4862.68 / 5500.0) ** p["g_beta"] + p["g_young"] * (4862.68 / 5500.0) ** -2.0 * 0.8
        f_hb = ew_hb * c_hb
        ha = p["g_ha_hb"]
        ratios = {
            "OII3726": p["g_oii_hb"] * 0.45, "OII3729": p["g_oii_hb"] * 0.55, "HDELTA": 0.26 * np.ones(n),
            "HGAMMA": 0.47 * np.ones(n), "HBETA": np.ones(n), "OIII4959": p["g_oiii_hb"] / 2.98, "OIII5007": p["g_oiii_hb"],
            "NII6548": ha * p["g_nii_ha"] / 3.0, "HALPHA": ha, "NII6584": ha * p["g_nii_ha"],
            "SII6716": ha * p["g_sii_ha"], "SII6731": ha * p["g_sii_ha"] * 0.75,
        }
        emis = np.zeros((n, wave.size))
        for name, w0 in _GAL_EMISSION.items():
            c = w0 * (1 + z)
            s_rest = w0 * p["g_sigma_gas"] / C_KMS
            s = np.hypot(s_rest * (1 + z), lsf)
            total = f_hb * ratios[name] * (1 + z)  # line flux scales with (1+z) in observed Å
            _add_gaussians(emis, wave, c, s, total / (np.sqrt(2 * np.pi) * s))
        flux = flux + emis
    return flux


def _qso(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    rest = wave[None, :] / (1 + z[:, None])
    alpha = p["q_alpha"][:, None]
    cont = (rest / 2000.0) ** alpha
    lines = np.zeros((n, wave.size))
    sig_v = p["q_fwhm"] / 2.3548
    for w0, ew, fw in _QSO_BROAD:
        c = w0 * (1 + z)
        s = np.hypot(w0 * sig_v * fw / C_KMS * (1 + z), lsf)
        cont_at = (w0 / 2000.0) ** p["q_alpha"]
        total = ew * p["q_ew_scale"] * cont_at * (1 + z)
        _add_gaussians(lines, wave, c, s, total / (np.sqrt(2 * np.pi) * s))
    for w0, ew in _QSO_NARROW:
        c = w0 * (1 + z)
        s = np.hypot(w0 * 300.0 / C_KMS * (1 + z), lsf)
        cont_at = (w0 / 2000.0) ** p["q_alpha"]
        _add_gaussians(lines, wave, c, s, ew * cont_at * (1 + z) / (np.sqrt(2 * np.pi) * s))
    flux = cont + lines
    # Lyman limit and Lyα forest (only where 1215.67 (1+z) is inside the grid)
    flux = np.where(rest < 912.0, flux * 0.15, flux)
    for i in np.flatnonzero(_LYA * (1 + z) > wave[0] + 5):
        flux[i] *= _forest_transmission(wave, float(z[i]), int(p["q_forest_seed"][i]), float(lsf[i]))
    return flux


def _forest_transmission(wave: np.ndarray, z: float, seed: int, lsf: float) -> np.ndarray:
    """Lyα-forest transmission: random absorbers with density rising as (1+z_abs)^2.5."""
    rng = np.random.default_rng(seed)
    # absorbers depend on (z, seed) only, never on the grid
    lo, hi = max(3000.0, 912.0 * (1 + z)), _LYA * (1 + z)
    if hi <= lo:
        return np.ones(wave.size)
    n_abs = int(rng.poisson(0.12 * (hi - lo) * ((1 + z) / 3.0) ** 2.5))
    if n_abs == 0:
        return np.ones(wave.size)
    centres = rng.uniform(lo, hi, n_abs)
    tau0 = np.minimum(rng.lognormal(-0.7, 1.0, n_abs), 6.0)
    sig = np.hypot(rng.uniform(0.25, 0.6, n_abs), lsf)
    tau = np.zeros((1, wave.size))
    _add_gaussians(tau, wave, centres, sig, tau0, rows=np.zeros(n_abs, dtype=np.int64))
    return np.exp(-tau[0])


def _star(wave: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    n = z.size
    teff = p["s_teff"][:, None]
    rest = wave[None, :] / (1 + z[:, None])
    lam_cm = rest * 1e-8
    x = np.minimum(1.4388 / (lam_cm * teff), 700.0)
    planck = 1.0 / (lam_cm**5 * np.expm1(x))
    ref_cm = 5500e-8  # scale by the value at 5500 Å: grid-independent
    planck /= 1.0 / (ref_cm**5 * np.expm1(1.4388 / (ref_cm * teff)))
    absorb = np.zeros((n, wave.size))
    t = p["s_teff"]
    balmer = 0.55 * np.exp(-(((t - 9500.0) / 2600.0) ** 2))
    metal = 0.5 * np.clip((7200.0 - t) / 3000.0, 0.05, 1.0)
    for k, w0 in enumerate(_BALMER):
        c = w0 * (1 + z)
        s = np.hypot(np.full(n, 6.0 if k < 3 else 4.0) * (1 + 0.5 * (t > 7000)), lsf)
        _add_gaussians(absorb, wave, c, s, balmer * (1.0 if k < 4 else 0.7))
    for w0, d in _STAR_METAL:
        c = w0 * (1 + z)
        s = np.hypot(np.full(n, 2.5), lsf)
        _add_gaussians(absorb, wave, c, s, metal * d * 0.6)
    flux = planck * np.clip(1.0 - absorb, 0.02, None)
    tio = np.clip((4200.0 - t) / 900.0, 0.0, 0.75)[:, None]
    if np.any(tio > 0):
        for head in _TIO_HEADS:
            d = rest - head
            trough = np.exp(-np.clip(d, 0.0, None) / 120.0) * np.exp(np.clip(d, None, 0.0) / 4.0)
            flux = flux * (1.0 - tio * trough)
    return flux


def _apply_anomalies(wave: np.ndarray, flux: np.ndarray, p: dict[str, np.ndarray], z: np.ndarray, lsf: np.ndarray) -> np.ndarray:
    kinds = p["anomaly_kind"]
    rest = wave[None, :] / (1 + z[:, None])
    bal = kinds == "bal"
    if bal.any():
        trans = np.ones((bal.sum(), wave.size))
        r = rest[bal]
        vmin, vmax, depth = p["bal_vmin"][bal, None], p["bal_vmax"][bal, None], p["bal_depth"][bal, None]
        lines = [1549.06, 1399.8, 1240.14, _LYA]
        for j, w0 in enumerate(lines + [1857.4, 2799.49]):
            v = (1.0 - r / w0) * C_KMS  # outflow velocity of absorbing gas
            edge = 1.0 / (1.0 + np.exp(np.clip(-(v - vmin) / 400.0, -60, 60))) / (1.0 + np.exp(np.clip((v - vmax) / 400.0, -60, 60)))
            use = np.ones_like(depth) if j < len(lines) else p["bal_lobal"][bal, None].astype(float)
            trans *= 1.0 - depth * edge * use * (0.8 if w0 != 1549.06 else 1.0)
        flux[bal] = flux[bal] * np.clip(trans, 0.02, 1.0)
    se = kinds == "strong_emission"
    if se.any():
        level = np.ones(se.sum())  # the flux is normalised to ~1 in 6000-6400 Å here
        add = np.zeros((se.sum(), wave.size))
        for k in ("x_wave1", "x_wave2", "x_wave3"):
            c = p[k][se] * (1 + z[se])
            s = np.hypot(np.full(c.size, 2.5), lsf[se])
            _add_gaussians(add, wave, c, s, p["x_amp"][se] * level)
        flux[se] = flux[se] + add
    oc = kinds == "odd_continuum"
    if oc.any():
        rows = np.flatnonzero(oc)
        for i in rows:
            if p["odd_variant"][i] == 0:
                flux[i] = flux[i] * (1.0 + 0.7 * np.sin(2 * np.pi * wave / p["odd_ripple_period"][i]))
            else:
                flux[i] = flux[i] * np.where(wave > p["odd_step_wave"][i], 5.0, 1.0)
    if "sg_frac" in p:
        from skybatch.sample.anomalies import apply_extra_anomalies

        flux = apply_extra_anomalies(wave, flux, p, z, lsf)
    return flux


def _unnormalised(wave: np.ndarray, p: dict[str, np.ndarray], lsf: np.ndarray) -> np.ndarray:
    """Class models of normal objects (no anomaly applied), arbitrary scale."""
    n = p["z_true"].size
    out = np.zeros((n, wave.size))
    z = p["z_true"]
    for name, fn in (("GALAXY", _galaxy), ("QSO", _qso), ("STAR", _star)):
        sel = p["spectype"] == name
        if sel.any():
            sub = {k: v[sel] for k, v in p.items()}
            out[sel] = fn(wave, sub, z[sel], lsf[sel])
    return out


def render_spectra(
    wave: np.ndarray,
    population: dict[str, np.ndarray],
    *,
    lsf_sigma: float | np.ndarray = 0.7,
    lsf_velocity: float | None = None,
    batch: int = 256,
) -> np.ndarray:
    """Noise-free flux of every object on the observed wavelength grid ``wave``.

    Parameters
    ----------
    wave: observed vacuum wavelengths, Angstrom, increasing, shape (nwave,).
    population: from :func:`draw_population`.
    lsf_sigma: instrumental Gaussian sigma in Angstrom (DESI ≈ 0.7 Å).
    lsf_velocity: if given, the instrumental sigma in km/s instead
        (SDSS/BOSS ≈ 69 km/s); evaluated at 6000 Å.
    batch: objects rendered at a time (bounds memory to ~batch × nwave × 8 B × 4).

    Returns
    -------
    float32 (n, nwave) in 1e-17 erg/s/cm²/Å, scaled so that the mean over
    6000–6400 Å of the *normal* spectrum equals the flux of the object's
    ``mag_r``; anomalies are applied after that scaling.
    """
    wave = np.asarray(wave, dtype=np.float64)
    n = population["z_true"].size
    lsf = float(6000.0 * lsf_velocity / C_KMS) if lsf_velocity is not None else lsf_sigma
    lsf_arr = np.broadcast_to(np.asarray(lsf, dtype=np.float64), (n,))
    out = np.empty((n, wave.size), dtype=np.float32)
    level = mag_to_flux_level(population["mag_r"])
    for a in range(0, n, batch):
        b = min(n, a + batch)
        sub = {k: v[a:b] for k, v in population.items()}
        model = _unnormalised(wave, sub, lsf_arr[a:b])
        ref = _unnormalised(_REF_WAVE, sub, lsf_arr[a:b])
        norm = np.mean(ref, axis=1)
        norm = np.where(np.abs(norm) > 1e-30, norm, 1.0)
        model = _apply_anomalies(wave, model / norm[:, None], sub, sub["z_true"], lsf_arr[a:b])
        out[a:b] = (model * level[a:b, None]).astype(np.float32)
    return out
