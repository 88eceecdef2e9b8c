"""The imaging core is written against the array API: array_api_strict runs it, CuPy on GPU."""

from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

from skybatch.imaging import (
    classic_subtract,
    cutout_triplets,
    detect_candidates,
    fit_flux_ratio,
    inject_point_sources,
    zogy,
    zogy_subtiles,
)
from skybatch.sample.imaging import make_image_pair
from skybatch.xp import gpu_available, to_numpy


@pytest.fixture(scope="module")
def small_pair():
    return make_image_pair((256, 256), seed=1, n_stars=150, n_transients=10, transient_snr=(10, 30))


def _strict(*arrays):
    return [xs.asarray(a) for a in arrays]


@pytest.mark.parametrize(
    "kw", [{}, {"gain": True}, {"gain": True, "astrometric_sigma": (0.05, 0.05)}, {"var": True}]
)
def test_zogy_same_result_with_array_api_strict(small_pair, kw):
    p = small_pair
    N, R = p.new_subtracted(), p.ref_subtracted()
    extra = {}
    if kw.get("gain"):
        extra.update(new_gain=p.new_gain, ref_gain=p.ref_gain)
    if "astrometric_sigma" in kw:
        extra["astrometric_sigma"] = kw["astrometric_sigma"]
    ref_np = zogy(N, R, p.new_psf, p.ref_psf, p.new_sigma, p.ref_sigma, p.flux_ratio,
                  new_var=p.new_var if kw.get("var") else None, ref_var=p.ref_var if kw.get("var") else None,
                  **extra)
    sN, sR, spn, spr = _strict(N, R, p.new_psf, p.ref_psf)
    res = zogy(sN, sR, spn, spr, p.new_sigma, p.ref_sigma, p.flux_ratio,
               new_var=xs.asarray(p.new_var) if kw.get("var") else None,
               ref_var=xs.asarray(p.ref_var) if kw.get("var") else None, **extra)
    for k in ("D", "S", "S_corr", "F_psf", "F_psf_err", "P_D"):
        got = getattr(res, k)
        assert isinstance(got, type(sN)), k  # the output stays in the input's namespace
        want = getattr(ref_np, k)
        np.testing.assert_allclose(to_numpy(got), want, atol=2e-5 * np.abs(want).max() + 5e-3, err_msg=k)


def test_pipeline_pieces_with_array_api_strict(small_pair):
    p = small_pair
    sN, sR, spn, spr = _strict(p.new_subtracted(), p.ref_subtracted(), p.new_psf, p.ref_psf)
    sat = xs.asarray(p.new_saturated | p.ref_saturated)
    fr = fit_flux_ratio(sN, sR, spn, spr, p.new_sigma, p.ref_sigma, mask=sat)
    assert fr.method == "stars" and fr.value == pytest.approx(p.flux_ratio, rel=0.03)
    res = zogy(sN, sR, spn, spr, p.new_sigma, p.ref_sigma, None, mask=sat)
    assert res.flux_ratio == pytest.approx(fr.value)
    det = detect_candidates(res, 5.0, saturated=sat)
    assert len(det) >= 8  # the 10 bright transients (some S/N drops with the reference noise)
    cut = cutout_triplets(sN, sR, res.D, det.x, det.y, 15)
    assert isinstance(cut, type(sN)) and cut.shape == (len(det), 3, 15, 15)
    cl = classic_subtract(sN, sR, spn, spr, p.new_sigma, p.ref_sigma, p.flux_ratio)
    assert isinstance(cl.difference, type(sN))
    injected = inject_point_sources(xs.zeros((64, 64), dtype=xs.float32), spn, [30.3], [20.7], [1000.0])
    assert float(xs.sum(injected)) == pytest.approx(1000.0, rel=1e-5)
    tiled = zogy_subtiles(sN, sR, lambda t: (spn, spr), p.new_sigma, p.ref_sigma, p.flux_ratio,
                          tile=128, overlap=32)
    assert isinstance(tiled.S_corr, type(sN))


@pytest.mark.gpu
def test_zogy_on_cupy_matches_numpy(small_pair):
    if not gpu_available():
        pytest.skip("no CUDA device")
    import cupy as cp

    p = small_pair
    N, R = p.new_subtracted(), p.ref_subtracted()
    want = zogy(N, R, p.new_psf, p.ref_psf, p.new_sigma, p.ref_sigma, p.flux_ratio,
                new_gain=p.new_gain, ref_gain=p.ref_gain)
    got = zogy(cp.asarray(N), cp.asarray(R), cp.asarray(p.new_psf), cp.asarray(p.ref_psf), p.new_sigma,
               p.ref_sigma, p.flux_ratio, new_gain=p.new_gain, ref_gain=p.ref_gain)
    assert isinstance(got.S_corr, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got.S_corr), want.S_corr, atol=5e-3)
    np.testing.assert_allclose(cp.asnumpy(got.F_psf), want.F_psf, atol=1e-4 * np.abs(want.F_psf).max())
