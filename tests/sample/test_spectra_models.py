"""The synthetic spectra are physically sensible, class-dependent and carry honest anomalies."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from skybatch.sample.render import _forest_transmission, render_spectra
from skybatch.sample.sky_noise import add_noise, noise_sigma
from skybatch.sample.spectra import ANOMALY_KINDS, C_KMS, draw_population, mag_to_flux_level

BRZ = 3600.0 + 0.8 * np.arange(7781)


def band_mean(wave, flux, lo, hi):
    sel = (wave >= lo) & (wave <= hi)
    return flux[..., sel].mean(axis=-1)


def test_flux_scale_follows_the_magnitude():
    rng = np.random.default_rng(0)
    p = draw_population(60, rng, anomaly_fraction=0)
    m = render_spectra(BRZ, p)
    assert m.dtype == np.float32 and np.isfinite(m).all()
    np.testing.assert_allclose(band_mean(BRZ, m, 6000, 6399.3), mag_to_flux_level(p["mag_r"]), rtol=1e-4)
    # r = 21 AB is about 1.1e-17 erg/s/cm2/A near 6200 A
    assert mag_to_flux_level(np.array([21.0]))[0] == pytest.approx(1.13, rel=0.01)


def test_rendering_does_not_depend_on_the_grid():
    rng = np.random.default_rng(1)
    p = draw_population(40, rng, anomaly_fraction=0.1)
    fine = render_spectra(BRZ, p)
    coarse = render_spectra(BRZ[1::3], p)
    np.testing.assert_allclose(coarse, fine[:, 1::3], rtol=2e-5, atol=1e-6)
    red = render_spectra(BRZ[4000:], p)
    sel = BRZ[4000:] < 9700  # away from the grid edge, where line windows are cut
    np.testing.assert_allclose(red[:, sel], fine[:, 4000:][:, sel], rtol=2e-5, atol=1e-6)


def test_galaxies_have_a_4000A_break_and_redshifted_emission_lines():
    rng = np.random.default_rng(2)
    p = draw_population(200, rng, class_fractions=(1, 0, 0), anomaly_fraction=0)
    z = p["z_true"]
    m = render_spectra(BRZ, p)
    rest = BRZ[None, :] / (1 + z[:, None])
    red = np.where((rest > 4050) & (rest < 4250), m, np.nan)
    blue = np.where((rest > 3750) & (rest < 3950), m, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # galaxies whose break is off the grid give NaN
        d4000 = np.nanmean(red, axis=1) / np.nanmean(blue, axis=1)
    old, young = p["g_young"] < 0.15, p["g_young"] > 0.85
    assert old.sum() > 5 and young.sum() > 5
    assert np.nanmedian(d4000[old]) > 1.3 and np.nanmedian(d4000[old]) > np.nanmedian(d4000[young]) + 0.2
    # [OIII] 5007 sits at 5008.24 (1+z): the model peaks there above its neighbourhood
    strong = (p["g_ew_hb"] * p["g_oiii_hb"] > 10) & (5008.24 * (1 + z) < 9700)
    assert strong.sum() > 5
    for i in np.flatnonzero(strong):
        c = 5008.24 * (1 + z[i])
        k = int(np.argmin(np.abs(BRZ - c)))
        window = m[i, k - 60 : k + 60]
        assert np.argmax(window) in range(55, 66), f"[OIII] of galaxy {i} at z={z[i]:.3f} not at {c:.1f} A"
        assert m[i, k] > 1.5 * np.median(window)


def test_qsos_have_broad_lines_and_a_lyman_alpha_forest():
    rng = np.random.default_rng(3)
    p = draw_population(120, rng, class_fractions=(0, 1, 0), anomaly_fraction=0)
    z = p["z_true"]
    m = render_spectra(BRZ, p)
    for line, lo, hi in ((1549.06, 1450, 1700), (2799.49, 2650, 2950)):
        ok = (lo * (1 + z) > 3650) & (hi * (1 + z) < 9800)
        assert ok.sum() > 10
        for i in np.flatnonzero(ok):
            peak = band_mean(BRZ, m[i], line * (1 + z[i]) - 4, line * (1 + z[i]) + 4)
            side = min(band_mean(BRZ, m[i], lo * (1 + z[i]), (lo + 30) * (1 + z[i])),
                       band_mean(BRZ, m[i], (hi - 30) * (1 + z[i]), hi * (1 + z[i])))
            assert peak > 1.3 * side, f"line {line} missing in QSO {i} at z={z[i]:.2f}"
    # mean forest transmission follows the observed tau_eff = 0.0018 (1+z)^3.92
    for zq in (2.2, 2.6, 3.0):
        t = np.mean([_forest_transmission(BRZ, zq, s, 0.7)[(BRZ > 1070 * (1 + zq)) & (BRZ < 1170 * (1 + zq))].mean() for s in range(8)])
        z_abs = 1120 * (1 + zq) / 1215.67 - 1
        assert t == pytest.approx(np.exp(-0.0018 * (1 + z_abs) ** 3.92), abs=0.05)


def test_stars_follow_temperature():
    rng = np.random.default_rng(4)
    p = draw_population(80, rng, class_fractions=(0, 0, 1), anomaly_fraction=0)
    m = render_spectra(BRZ, p)
    colour = band_mean(BRZ, m, 4400, 4600) / band_mean(BRZ, m, 7400, 7600)
    teff = p["s_teff"]
    rank = np.argsort(np.argsort(teff)), np.argsort(np.argsort(colour))
    assert np.corrcoef(*rank)[0, 1] > 0.95  # hotter = bluer
    hot = (teff > 8000) & (teff < 11000)
    hb = band_mean(BRZ, m[hot], 4858, 4866) / band_mean(BRZ, m[hot], 4790, 4810)
    assert hot.sum() > 3 and np.all(hb < 0.8)  # Balmer absorption in A stars
    assert np.all(np.abs(p["z_true"]) < 300 / C_KMS * 5)


def test_noise_is_what_ivar_says():
    rng = np.random.default_rng(5)
    p = draw_population(30, rng, anomaly_fraction=0)
    m = render_spectra(BRZ, p)
    sig = noise_sigma(BRZ, rng.uniform(0.3, 0.7, 30))
    flux, ivar, mask = add_noise(m, sig, rng)
    good = ivar > 0
    chi = ((flux - m) * np.sqrt(ivar))[good]
    assert abs(chi.mean()) < 0.01 and abs(chi.std() - 1) < 0.01
    frac = 1 - good.mean()
    assert 0.0005 < frac < 0.006
    assert np.all(mask[~good] == 4) and np.all(mask[good] == 0)
    # noise rises at the blue end and on bright sky lines
    assert sig[:, :50].mean() > 1.5 * sig[:, 3000:3050].mean()
    k5577 = int(np.argmin(np.abs(BRZ - 5578.9)))
    assert np.all(sig[:, k5577] > 1.5 * sig[:, k5577 - 20])


def test_anomalies_are_strong_and_normal_spectra_untouched():
    rng = np.random.default_rng(6)
    p = draw_population(160, rng, anomaly_fraction=0.25)
    kinds = p["anomaly_kind"]
    assert {k: int((kinds == k).sum()) for k in ANOMALY_KINDS} == dict.fromkeys(ANOMALY_KINDS, 10)
    anom = render_spectra(BRZ, p)
    plain = dict(p)
    plain["anomaly_kind"] = np.full(kinds.size, "", dtype=object)
    normal = render_spectra(BRZ, plain)
    np.testing.assert_array_equal(anom[kinds == ""], normal[kinds == ""])
    np.testing.assert_array_equal(anom[kinds == "wrong_z"], normal[kinds == "wrong_z"])
    level = mag_to_flux_level(p["mag_r"])
    z = p["z_true"]
    for i in np.flatnonzero(kinds != ""):
        k, ratio = kinds[i], anom[i] / np.where(normal[i] != 0, normal[i], 1)
        if k == "bal":
            assert p["spectype"][i] == "QSO"
            v = (1 - BRZ / (1549.06 * (1 + z[i]))) * C_KMS
            trough = (v > p["bal_vmin"][i] + 1500) & (v < p["bal_vmax"][i] - 1500)
            assert trough.sum() > 20 and np.median(ratio[trough]) < 0.35
            untouched = (BRZ > 1560 * (1 + z[i])) & (BRZ < 1640 * (1 + z[i]))
            np.testing.assert_allclose(ratio[untouched], 1.0, atol=2e-3)
        elif k == "strong_emission":
            for w in (p["x_wave1"][i], p["x_wave2"][i], p["x_wave3"][i]):
                c = int(np.argmin(np.abs(BRZ - w * (1 + z[i]))))
                assert anom[i, c] - normal[i, c] > 10 * level[i]
        elif k == "wrong_z":
            assert p["spectype"][i] in ("GALAXY", "QSO") and abs(p["z"][i] - z[i]) >= 0.35
        elif k == "odd_continuum":
            if p["odd_variant"][i] == 1:
                step = BRZ > p["odd_step_wave"][i]
                np.testing.assert_allclose(ratio[step], 5.0, rtol=1e-4)
                np.testing.assert_allclose(ratio[~step], 1.0, rtol=1e-4)
            else:
                assert ratio.max() > 1.6 and ratio.min() < 0.4
    # normal objects keep their catalogue redshift up to redrock-like errors
    ok = kinds == ""
    assert np.all(np.abs(p["z"][ok] - z[ok]) < 10 * p["zerr"][ok])


def test_catalogue_flags():
    rng = np.random.default_rng(7)
    p = draw_population(3000, rng, anomaly_fraction=0.01)
    warn = p["zwarn"] != 0
    assert 0.015 < warn.mean() < 0.05 and set(np.unique(p["zwarn"])) == {0, 4}
    assert np.all(p["deltachi2"][warn] < 9) and np.all(p["deltachi2"][~warn] >= 9)
    assert set(p["subtype"][p["spectype"] == "QSO"]) == {"LOZ", "HIZ"}
    assert p["is_anomaly"].sum() == 30


def test_classes_can_be_told_apart():
    """Shift-invariant features (band powers of the log-λ spectrum, so redshift drops out) and a
    linear classifier separate the three classes at full resolution, as a 1-D CNN would."""
    rng = np.random.default_rng(9)
    n, npix = 360, 8192
    p = draw_population(n, rng, class_fractions=(1, 1, 1), anomaly_fraction=0)
    wave = 10 ** np.linspace(np.log10(3600), np.log10(9824), npix)
    m = render_spectra(wave, p)
    flux, _, _ = add_noise(m, noise_sigma(wave, rng.uniform(0.3, 0.7, n)), rng, masked_fraction=0)
    x = flux / np.median(np.abs(flux), axis=1, keepdims=True)
    x = x - x.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(x * np.hanning(npix), axis=1)) ** 2
    edges = np.unique(np.round(np.logspace(0, np.log10(npix // 2), 40)).astype(int))
    feat = np.log(np.add.reduceat(power[:, 1:], edges[:-1] - 1, axis=1) + 1e-6)
    y = np.unique(p["spectype"].astype(str), return_inverse=True)[1]
    tr, te = np.arange(240), np.arange(240, n)
    feat = (feat - feat[tr].mean(0)) / (feat[tr].std(0) + 1e-9)
    a = np.c_[feat, np.ones(n)]
    w = np.linalg.lstsq(a[tr], np.eye(3)[y[tr]], rcond=None)[0]
    accuracy = (np.argmax(a[te] @ w, axis=1) == y[te]).mean()
    assert accuracy > 0.88
    # the same classifier on shuffled labels is at chance: the features carry the class
    w_null = np.linalg.lstsq(a[tr], np.eye(3)[rng.permutation(y[tr])], rcond=None)[0]
    assert (np.argmax(a[te] @ w_null, axis=1) == y[te]).mean() < 0.6
