"""The GPU path is the same code: run everything on array_api_strict (and CuPy when present)."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import PreprocessRecipe, preprocess_block, resample
from skybatch.xp import gpu_available, to_numpy
from tests.spectra.spectra_synth import DESI_WAVE, random_grid, smooth_spectra


def _inputs(rng, n=6):
    w = DESI_WAVE[:3000]
    flux = smooth_spectra(rng, w, n).astype(np.float32)
    flux += rng.normal(0, 0.2, flux.shape).astype(np.float32)
    ivar = rng.uniform(10, 30, flux.shape).astype(np.float32)
    ivar[rng.random(flux.shape) < 0.02] = 0
    flux[0, 50] = np.nan
    mask = (rng.random(flux.shape) < 0.05).astype(np.int32) << 2
    z = rng.uniform(0, 0.3, n)
    z[1] = np.nan
    zwarn = np.zeros(n, np.int64)
    return flux, ivar, mask, w, z, zwarn


RECIPES = [
    PreprocessRecipe(grid="loglam:3.45:3.78:1e-4", rest_frame=True, sky_lines=True, continuum="smooth",
                     normalize_window=(4000, 5000)),
    PreprocessRecipe(grid="linear:3650:5950:1.3", normalize="total", min_good_fraction=0.6),
    PreprocessRecipe(normalize="mean", mask_bits="desi:COSMIC"),
]


def _compare(xp_out, np_out):
    for name in ("flux", "ivar", "mask", "scale", "flags", "wavelength"):
        got = to_numpy(getattr(xp_out, name))
        want = getattr(np_out, name)
        if name in ("mask", "flags"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("recipe", RECIPES, ids=["rest", "linear", "native"])
def test_preprocess_block_runs_on_array_api_strict(recipe):
    xps = pytest.importorskip("array_api_strict")
    flux, ivar, mask, w, z, zwarn = _inputs(np.random.default_rng(0))
    ref = preprocess_block(flux, ivar, mask, w, z, zwarn, recipe)
    got = preprocess_block(*(xps.asarray(a) for a in (flux, ivar, mask, w, z, zwarn)), recipe)
    assert type(got.flux).__module__.startswith("array_api_strict")
    _compare(got, ref)


def test_resample_general_2d_grid_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(1)
    grids = np.stack([random_grid(rng, 4000.0 + 7 * i, 200, 0.5, 1.5) for i in range(4)])
    w_out = np.linspace(3990, 4250, 150)
    flux = rng.normal(5, 1, (4, 200)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, flux.shape).astype(np.float32)
    mask = rng.integers(0, 4, flux.shape).astype(np.uint32)
    ref = resample(flux, ivar, mask, grids, w_out)
    got = resample(*(xps.asarray(a) for a in (flux, ivar, mask, grids, w_out)))
    np.testing.assert_allclose(to_numpy(got.flux), ref.flux, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(got.ivar), ref.ivar, rtol=1e-5)
    np.testing.assert_array_equal(to_numpy(got.mask), ref.mask)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("recipe", RECIPES, ids=["rest", "linear", "native"])
def test_preprocess_block_runs_on_cupy(recipe):
    cp = pytest.importorskip("cupy")
    flux, ivar, mask, w, z, zwarn = _inputs(np.random.default_rng(0))
    ref = preprocess_block(flux, ivar, mask, w, z, zwarn, recipe)
    got = preprocess_block(*(cp.asarray(a) for a in (flux, ivar, mask, w, z, zwarn)), recipe)
    assert isinstance(got.flux, cp.ndarray)
    _compare(got, ref)
