"""Normalisation: correct scales, exact undo, NaN-safe failures."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import DROPPED, NORM_FAILED, normalize, pixel_edges, undo_normalize


def _data(rng, n=5, nw=300):
    wave = 4000.0 + np.arange(nw) * 2.0
    level = rng.uniform(1, 50, n)
    flux = (level[:, None] * (1 + 0.1 * rng.normal(size=(n, nw)))).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (n, nw)).astype(np.float32)
    return wave, flux, ivar


@pytest.mark.parametrize("method", ["median", "mean", "total", "none"])
def test_undo_gives_back_the_input(method):
    rng = np.random.default_rng(0)
    wave, flux, ivar = _data(rng)
    out = normalize(flux, ivar, wave, method=method, window=(4100, 4400))
    f, iv = undo_normalize(out.flux, out.ivar, out.scale)
    np.testing.assert_allclose(f, flux, rtol=2e-7)
    np.testing.assert_allclose(iv, ivar, rtol=4e-7)
    assert (out.flags == 0).all()


def test_scales_are_what_they_claim():
    rng = np.random.default_rng(1)
    wave, flux, ivar = _data(rng)
    ivar[0, :150] = 0
    flux[0, :150] = 1e6  # bad pixels must not count
    win = (4200.0, 4500.0)
    sel = (wave >= win[0]) & (wave <= win[1])
    med = normalize(flux, ivar, wave, method="median", window=win)
    good0 = sel & (ivar[0] > 0)
    assert med.scale[0] == pytest.approx(np.median(flux[0, good0]), rel=1e-6)
    assert med.scale[1] == pytest.approx(np.median(flux[1, sel]), rel=1e-6)
    mean = normalize(flux, ivar, wave, method="mean", window=win)
    assert mean.scale[2] == pytest.approx(flux[2, sel].astype(np.float64).mean(), rel=1e-6)
    tot = normalize(flux, ivar, wave, method="total")
    d = np.diff(pixel_edges(wave))
    np.testing.assert_allclose((tot.flux[1:].astype(np.float64) * d).sum(1), 1.0, rtol=1e-5)


def test_2d_wavelengths_select_the_window_per_spectrum():
    rng = np.random.default_rng(2)
    wave, flux, ivar = _data(rng, n=3)
    waves = np.stack([wave, wave / 1.1, wave / 1.3])
    out = normalize(flux, ivar, waves, method="median", window=(3500, 3900))
    for i in range(3):
        sel = (waves[i] >= 3500) & (waves[i] <= 3900)
        if sel.any():
            assert out.scale[i] == pytest.approx(np.median(flux[i, sel]), rel=1e-6)
    assert out.flags[0] == NORM_FAILED and out.scale[0] == 1.0  # 4000+ Å: no pixel in the window


def test_failures_are_nan_safe():
    rng = np.random.default_rng(3)
    wave, flux, ivar = _data(rng, n=4)
    ivar[0] = 0  # no good pixel at all
    flux[1] = -np.abs(flux[1])  # negative median
    flux[2, 10] = np.nan  # one NaN among good pixels is ignored
    with np.errstate(all="raise"):
        out = normalize(flux, ivar, wave, method="median")
    assert np.isfinite(out.flux[[0, 1, 3]]).all() and np.isfinite(out.scale).all()
    assert out.flags.tolist()[:2] == [NORM_FAILED, NORM_FAILED] and out.flags[3] == 0
    assert out.scale[0] == 1.0 and out.scale[1] == 1.0
    assert out.scale[2] == pytest.approx(np.nanmedian(flux[2]), rel=1e-6)
    np.testing.assert_array_equal(out.flux[1], flux[1])  # left as it was
    dropped = normalize(flux, ivar, wave, method="median", on_failure="drop")
    assert (dropped.ivar[:2] == 0).all() and (dropped.flux[:2] == 0).all()
    assert dropped.flags[1] == NORM_FAILED | DROPPED
    with pytest.raises(ValueError, match="method"):
        normalize(flux, ivar, wave, method="max")
    with pytest.raises(ValueError, match="window"):
        normalize(flux, ivar, wave, window=(5000, 4000))
