"""PreprocessRecipe validation and serialisation; preprocess_block end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skybatch.spectra import (
    BADPIX,
    DESI_SPECMASK,
    NO_GOOD_PIXELS,
    GridSpec,
    NOCOVERAGE,
    PreprocessRecipe,
    preprocess_block,
    resample,
    target_wavelength,
    undo_normalize,
)
from tests.spectra.spectra_synth import DESI_WAVE, smooth_spectra


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"grid": "loglam:3.55:nope:1e-4"}, "grid"),
        ({"rest_frame": True}, "grid"),  # rest frame with the native grid
        ({"rest_frame": "yes"}, "rest_frame"),
        ({"bad_redshift": "ignore"}, "bad_redshift"),
        ({"mask_bits": "desi:NOTABIT"}, "mask_bits"),
        ({"sky_line_halfwidth": -1}, "sky_line_halfwidth"),
        ({"min_good_fraction": 0}, "min_good_fraction"),
        ({"normalize": "max"}, "normalize"),
        ({"normalize_window": (5000, 4000)}, "normalize_window"),
        ({"normalize_window": "4000-5000"}, "normalize_window"),
        ({"normalize_on_failure": "nan"}, "normalize_on_failure"),
        ({"continuum": "spline"}, "continuum"),
        ({"continuum_width": 100}, "continuum_width"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"PreprocessRecipe.{field}"):
        PreprocessRecipe(**kwargs)


def test_round_trip_through_json_attrs():
    r = PreprocessRecipe(
        grid="loglam:3.5:3.9:1e-4",
        rest_frame=True,
        mask_bits="desi:COSMIC,NODATA",
        sky_lines=True,
        normalize="total",
        normalize_window=[4000, 5000],
        continuum="smooth",
        continuum_width=101,
    )
    d = json.loads(json.dumps(r.to_dict()))
    r2 = PreprocessRecipe.from_dict(d)
    assert r2.to_dict() == r.to_dict()
    assert r2.bad_bits == (1 << 2) | (1 << 8)
    assert r2.normalize_window == (4000.0, 5000.0)
    with pytest.raises(ValueError, match="unknown field.*'colour'"):
        PreprocessRecipe.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match="newer"):
        PreprocessRecipe.from_dict({**d, "recipe_version": 99})
    explicit = PreprocessRecipe(grid=GridSpec.from_values([4000.0, 4001.0, 4002.5]))
    assert PreprocessRecipe.from_dict(json.loads(json.dumps(explicit.to_dict()))).grid_spec == explicit.grid_spec


def _chunk(rng, n=12):
    flux = smooth_spectra(rng, DESI_WAVE, n).astype(np.float32)
    ivar = np.full_like(flux, 25.0)
    flux += rng.normal(0, 0.2, flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.int32)
    return flux, ivar, mask


def test_preprocess_block_never_leaks_nan_and_keeps_rows():
    rng = np.random.default_rng(0)
    flux, ivar, mask = _chunk(rng)
    flux[0, 100:110] = np.nan
    ivar[1, 500] = np.inf
    ivar[2] = 0  # an empty spectrum
    mask[3, 2000:2003] = 1 << DESI_SPECMASK["COSMIC"]
    z = rng.uniform(0.0, 0.5, flux.shape[0])
    z[4] = np.nan
    zwarn = np.zeros(flux.shape[0], np.int64)
    zwarn[5] = 4
    recipe = PreprocessRecipe(grid="loglam:3.45:3.99:1e-4", rest_frame=True, sky_lines=True, continuum="smooth")
    with np.errstate(all="raise"):
        out = preprocess_block(flux, ivar, mask, DESI_WAVE, z, zwarn, recipe)
    n_target = target_wavelength(recipe, DESI_WAVE).size
    assert out.flux.shape == (12, n_target) and out.wavelength.shape == (n_target,)
    for a in (out.flux, out.ivar, out.scale):
        assert np.isfinite(a).all()
    assert (out.ivar >= 0).all() and (out.flux[out.ivar == 0] == 0).all()
    assert out.flags[2] & NO_GOOD_PIXELS and out.flags[4] & NO_GOOD_PIXELS and out.flags[5] & NO_GOOD_PIXELS
    assert (out.flags[6:] & NO_GOOD_PIXELS == 0).all()
    assert ((out.mask[3] & (1 << DESI_SPECMASK["COSMIC"])) != 0).any()
    assert ((out.mask[0] & BADPIX) != 0).any()
    assert ((out.mask[out.ivar == 0] & NOCOVERAGE) != 0).all()


def test_undoing_the_scale_gives_the_unnormalised_resampled_spectra():
    rng = np.random.default_rng(1)
    flux, ivar, mask = _chunk(rng, n=5)
    grid = "loglam:3.56:3.99:1e-4"
    plain = preprocess_block(flux, ivar, mask, DESI_WAVE, None, None, PreprocessRecipe(grid=grid, normalize="none"))
    med = preprocess_block(flux, ivar, mask, DESI_WAVE, None, None, PreprocessRecipe(grid=grid, normalize="median"))
    f, iv = undo_normalize(med.flux, med.ivar, med.scale)
    np.testing.assert_allclose(f, plain.flux, rtol=2e-7, atol=1e-6)
    np.testing.assert_allclose(iv, plain.ivar, rtol=4e-7)
    np.testing.assert_allclose(np.median(med.flux, axis=1), 1.0, rtol=1e-6)
    direct = resample(flux, ivar, mask, DESI_WAVE, target_wavelength(PreprocessRecipe(grid=grid), DESI_WAVE))
    np.testing.assert_array_equal(plain.flux, direct.flux)


def test_native_grid_only_masks_and_normalises():
    rng = np.random.default_rng(2)
    flux, ivar, mask = _chunk(rng, n=3)
    ivar[0, 10] = 0
    out = preprocess_block(flux, ivar, mask, DESI_WAVE, None, None, PreprocessRecipe(normalize="none"))
    np.testing.assert_array_equal(out.wavelength, DESI_WAVE)
    expect = flux.copy()
    expect[0, 10] = 0
    np.testing.assert_array_equal(out.flux, expect)
    assert out.mask[0, 10] == BADPIX
