"""The band-agnostic tile encoder: shapes, band dispatch, scale freedom, new-band stems, registry."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skybatch.models.registry import load, save
from skybatch.models.tile_encoder import TileEncoder, embed_batch, stem_only_filter
from skybatch.sample.tiles import make_multiband_tiles

SMALL = dict(image_size=16, patch=4, width=16, depth=1, heads=2, stem_hidden=16, readout_reduce=4)


@pytest.fixture(scope="module")
def tiles():
    return make_multiband_tiles(16, 16, seed=2, p_missing_band=0.0, p_missing_instrument=0.0)


@pytest.fixture(scope="module")
def encoder(tiles):
    return TileEncoder(tiles.bands, **SMALL, key=jax.random.PRNGKey(0))


def test_shapes(encoder, tiles):
    tok, glob = encoder.embed(jnp.asarray(tiles.image[0, 3]), jnp.asarray(tiles.noise[0, 3]), "rubin_i")
    assert tok.shape == (4, 4, 16) and glob.shape == (16,)
    tok, glob = embed_batch(encoder, tiles.image[:, 3], tiles.noise[:, 3], "rubin_i")
    assert tok.shape == (16, 4, 4, 16) and glob.shape == (16, 16)
    assert encoder.grid == (4, 4)


def test_per_sample_band_index_matches_per_band_stems(encoder, tiles):
    # a mixed-band batch (stems selected per sample inside jit) equals one call per band
    bands = np.tile([0, 6, 9], 6)[:16]  # rubin_u, euclid_vis, euclid_h interleaved
    img = tiles.image[np.arange(16), bands]
    nz = tiles.noise[np.arange(16), bands]
    tok_mixed, glob_mixed = embed_batch(encoder, img, nz, bands)
    for b in np.unique(bands):
        rows = bands == b
        tok, glob = embed_batch(encoder, img, nz, tiles.bands[b])  # whole batch through one stem
        np.testing.assert_allclose(np.asarray(glob_mixed)[rows], np.asarray(glob)[rows], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(tok_mixed)[rows], np.asarray(tok)[rows], rtol=1e-4, atol=1e-5)
        # and a different stem gives a different embedding (the selection really happens)
        assert not np.allclose(np.asarray(glob_mixed)[~rows], np.asarray(glob)[~rows], atol=1e-3)


def test_trunk_is_band_agnostic(encoder, tiles):
    # a new band whose stem is a copy of rubin_r's gives exactly rubin_r's embedding: nothing
    # after the stem knows the band
    twin = encoder.add_band("rubin_r_twin", init_from="rubin_r")
    img, nz = tiles.image[:4, 2], tiles.noise[:4, 2]
    _, g_r = embed_batch(twin, img, nz, "rubin_r")
    _, g_twin = embed_batch(twin, img, nz, "rubin_r_twin")
    np.testing.assert_array_equal(np.asarray(g_r), np.asarray(g_twin))
    # trunk parameters do not depend on the number of bands
    three = TileEncoder(tiles.bands[:3], **SMALL, key=jax.random.PRNGKey(0))
    shapes = lambda m: [x.shape for x in jax.tree.leaves(eqx.filter(m.trunk, eqx.is_array))]  # noqa: E731
    assert shapes(three) == shapes(encoder)


def test_inputs_are_scale_free_and_missing_pixels_are_safe(encoder, tiles):
    img, nz = tiles.image[:4, 6], tiles.noise[:4, 6]
    _, g1 = embed_batch(encoder, img, nz, "euclid_vis")
    _, g2 = embed_batch(encoder, 37.5 * img, 37.5 * nz, "euclid_vis")  # another flux unit / zero point
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4, atol=1e-4)
    holed = img.copy()
    holed[:, :5, :5] = np.nan
    tok, glob = embed_batch(encoder, holed, nz, "euclid_vis")
    assert np.isfinite(np.asarray(tok)).all() and np.isfinite(np.asarray(glob)).all()


def test_training_only_a_new_band_stem_leaves_the_trunk_bit_identical(tiles):
    # base encoder knows 9 bands; Euclid H arrives later and gets its own stem, trained to map
    # H images onto the frozen representation the encoder gives their Euclid J images
    base = TileEncoder(tiles.bands[:-1], **SMALL, key=jax.random.PRNGKey(1))
    enc = base.add_band("euclid_h", key=jax.random.PRNGKey(2))
    spec = stem_only_filter(enc, "euclid_h")
    trainable, frozen = eqx.partition(enc, spec)
    n_train = sum(x.size for x in jax.tree.leaves(trainable))
    assert n_train == sum(x.size for x in jax.tree.leaves(eqx.filter(enc.stems["euclid_h"], eqx.is_array)))

    j, h = tiles.band_index("euclid_j"), tiles.band_index("euclid_h")
    img_h, nz_h = jnp.asarray(tiles.image[:, h]), jnp.asarray(tiles.noise[:, h])
    _, target = embed_batch(enc, tiles.image[:, j], tiles.noise[:, j], "euclid_j")

    def loss(tr, fr):
        model = eqx.combine(tr, fr)
        glob = jax.vmap(lambda a, b: model.embed(a, b, "euclid_h"))(img_h, nz_h)[1]
        return jnp.mean((glob - target) ** 2)

    opt = optax.adamw(3e-3, weight_decay=0.1)  # weight decay would move frozen arrays if they were optimised
    opt_state = opt.init(trainable)

    @eqx.filter_jit
    def step(tr, fr, opt_state):
        value, grads = eqx.filter_value_and_grad(loss)(tr, fr)
        updates, opt_state = opt.update(grads, opt_state, tr)
        return eqx.apply_updates(tr, updates), opt_state, value

    losses = []
    for _ in range(30):
        trainable, opt_state, value = step(trainable, frozen, opt_state)
        losses.append(float(value))
    new = eqx.combine(trainable, frozen)
    assert losses[-1] < 0.7 * losses[0]
    leaves = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_array))  # noqa: E731
    for a, b in zip(leaves(enc.trunk), leaves(new.trunk)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(leaves(enc.pool), leaves(new.pool)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for band in base.bands:
        for a, b in zip(leaves(enc.stems[band]), leaves(new.stems[band])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(leaves(enc.stems["euclid_h"]), leaves(new.stems["euclid_h"]))
    )


def test_registry_round_trip(encoder, tiles, tmp_path):
    path = save(tmp_path / "enc", encoder, {"training": {"note": "untrained test encoder"}})
    loaded, card = load(path)
    assert card["kind"] == "tile_encoder" and card["arch"]["bands"] == list(tiles.bands)
    _, g1 = embed_batch(encoder, tiles.image[:4, 0], tiles.noise[:4, 0], "rubin_u")
    _, g2 = embed_batch(loaded, tiles.image[:4, 0], tiles.noise[:4, 0], "rubin_u")
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))


def test_user_errors_name_the_problem(encoder, tiles):
    with pytest.raises(KeyError, match="add one with TileEncoder.add_band"):
        encoder.embed(jnp.zeros((16, 16)), jnp.ones((16, 16)), "rubin_w")
    with pytest.raises(ValueError, match="16x16 px"):
        encoder.embed(jnp.zeros((32, 32)), jnp.ones((32, 32)), "rubin_u")
    with pytest.raises(ValueError, match="already has a stem"):
        encoder.add_band("rubin_u", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="not a multiple of patch"):
        TileEncoder(["a"], image_size=30, patch=4, key=jax.random.PRNGKey(0))
