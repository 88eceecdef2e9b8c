"""Information maps: sources outweigh empty sky; same numbers on NumPy and JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skybatch.models.info_map import (
    detection_significance,
    information_map,
    normalise_weights,
    pool_to_tokens,
    token_weights,
)
from skybatch.sample.tiles import make_multiband_tiles


@pytest.fixture(scope="module")
def tiles():
    return make_multiband_tiles(32, 32, seed=3)


def test_significance_is_unit_normal_on_pure_sky():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.5, 2.0, (8, 64, 64)).astype(np.float32)  # spatially varying rms
    image = (noise * rng.standard_normal(noise.shape)).astype(np.float32)
    s = detection_significance(image, noise)[:, 1:-1, 1:-1]  # interior: full 3x3 apertures
    assert abs(float(s.mean())) < 0.03
    assert float(s.std()) == pytest.approx(1.0, abs=0.03)
    info = information_map(image, noise)
    assert float(np.mean(info > 0.5)) < 0.03  # pure sky carries (almost) no information


def test_information_is_higher_on_sources_than_on_sky(tiles):
    info = information_map(tiles.image, tiles.noise)
    present = tiles.band_present[:, :, None, None]
    snr_true = np.nan_to_num(tiles.truth / tiles.noise)
    on_source = present & (snr_true > 3.0)
    sky = present & (snr_true < 0.01)
    assert on_source.sum() > 1000 and sky.sum() > 10_000
    assert info[on_source].mean() > 10 * info[sky].mean()
    # and per band, not only on average
    for b in range(tiles.n_bands):
        assert info[:, b][on_source[:, b]].mean() > 5 * info[:, b][sky[:, b]].mean(), tiles.bands[b]


def test_token_weights_mean_one_and_dominated_by_sources(tiles):
    w = token_weights(tiles.image, tiles.noise, 4, floor=0.1)
    assert w.shape == (32, tiles.n_bands, 8, 8)
    np.testing.assert_allclose(w.mean(axis=(-2, -1)), 1.0, rtol=1e-5)
    src_tokens = pool_to_tokens(np.nan_to_num(tiles.truth / tiles.noise), 4) > 2.0
    sky_tokens = pool_to_tokens(np.nan_to_num(tiles.truth / tiles.noise), 4) < 0.01
    present = tiles.band_present[:, :, None, None]
    assert w[src_tokens & present].mean() > 3 * w[sky_tokens & present].mean()
    # source tokens hold most of the loss weight although they are a minority of tokens
    frac_tokens = (src_tokens & present).sum() / np.broadcast_to(present, w.shape).sum()
    frac_weight = w[src_tokens & present].sum() / w[np.broadcast_to(present, w.shape)].sum()
    assert frac_tokens < 0.4 and frac_weight > 0.6


def test_empty_tile_gets_uniform_weights_and_missing_pixels_count_as_nothing():
    rng = np.random.default_rng(1)
    noise = np.ones((2, 16, 16), np.float32)
    image = (0.01 * rng.standard_normal((2, 16, 16))).astype(np.float32)  # far below the noise
    w = token_weights(image, noise, 4)
    np.testing.assert_allclose(w, 1.0, atol=0.01)
    image[1, :8] = np.nan  # missing half
    info = information_map(image, noise)
    assert np.isfinite(info).all() and (info[1, :8] == 0).all()
    assert np.isfinite(token_weights(image, noise, 4)).all()


def test_numpy_and_jax_agree_under_jit(tiles):
    img, nz = tiles.image[:, 0], tiles.noise[:, 0]
    ref = token_weights(img, nz, 4)
    got = jax.jit(lambda a, b: token_weights(a, b, 4))(jnp.asarray(img), jnp.asarray(nz))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_reported():
    with pytest.raises(ValueError, match="multiple of the encoder's patch"):
        pool_to_tokens(np.zeros((30, 30)), 4)
    with pytest.raises(ValueError, match="floor"):
        normalise_weights(np.zeros((4, 4)), floor=0.0)
