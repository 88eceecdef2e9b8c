"""Cross-band JEPA training on generated Rubin + Euclid tiles: retrieval across bands, no collapse.

One short training run (64 tiles of 32x32 px in 10 bands, 100 steps, a small encoder) is shared
by the tests of this module; it takes ~20-40 s on 2 busy cores.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skybatch.models.band_sampling import make_pair_batches
from skybatch.models.tile_diagnostics import (
    TokenSimilarityTracker,
    band_similarity_matrix,
    collapse_stats,
    cross_band_retrieval,
    embed_tiles,
    model_card_metrics,
    per_band_collapse,
    write_band_similarity_png,
    write_collapse_png,
    write_information_map_png,
    write_token_similarity_png,
)
from skybatch.models.tile_objective import TileJEPAObjective, vicreg_covariance, vicreg_variance
from skybatch.sample.tiles import make_multiband_tiles

pytestmark = pytest.mark.slow

ARCH = dict(image_size=32, patch=4, width=32, depth=2, heads=4, stem_hidden=32, readout_reduce=8,
            predictor_width=32, predictor_depth=1)
STEPS = 100
BATCH = 32


def _train(objective, model, state, make_batches, steps, *, lr=2e-3, seed=1, record=None):
    """A minimal optax loop with the trainer's contract (update_state after each step)."""
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 20, steps, lr / 20), weight_decay=1e-4)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt_state, batch, key, i):
        (loss, metrics), grads = eqx.filter_value_and_grad(objective.loss, has_aux=True)(model, state, batch, key)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)
        return model, objective.update_state(model, state, i + 1), opt_state, loss, metrics

    history = []
    key = jax.random.PRNGKey(seed)
    batches = make_batches(0)
    for i in range(steps):
        batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
        model, state, opt_state, loss, metrics = step(
            model, state, opt_state, batch, jax.random.fold_in(key, i), jnp.int32(i)
        )
        if i % 25 == 0 or i == steps - 1:
            history.append({"step": i, "loss": float(loss), **{k: float(v) for k, v in metrics.items()}})
            if record is not None:
                record(i, model)
    return model, state, history


@pytest.fixture(scope="module")
def tiles():
    return make_multiband_tiles(64, 32, seed=0)


@pytest.fixture(scope="module")
def trained(tiles):
    objective = TileJEPAObjective(tiles.bands, **ARCH, ema_anneal_steps=STEPS)
    model = objective.init_model(jax.random.PRNGKey(0))
    state = objective.init_state(model)
    untrained = model.encoder
    make = make_pair_batches(tiles.image, tiles.noise, tiles.band_present, tiles.bands, batch_size=BATCH, seed=0)
    # token similarity of fixed validation pairs (Rubin g vs Euclid J) tracked over training
    g, j = tiles.band_index("rubin_g"), tiles.band_index("euclid_j")
    ok = tiles.band_present[:, g] & tiles.band_present[:, j]
    rows = np.flatnonzero(ok)[:32]
    rows = np.concatenate([rows, np.repeat(rows[-1:], 32 - rows.size)])
    tracker = TokenSimilarityTracker(
        tiles.image[rows, g], tiles.noise[rows, g], np.full(32, g),
        tiles.image[rows, j], tiles.noise[rows, j], np.full(32, j),
    )
    model, state, history = _train(
        objective, model, state, make, STEPS, record=lambda i, m: tracker.record(i, m.encoder)
    )
    glob, tokens = embed_tiles(model.encoder, tiles.image, tiles.noise, tiles.band_present, return_tokens=True)
    return {
        "objective": objective, "model": model, "state": state, "history": history, "tracker": tracker,
        "glob": glob, "tokens": tokens, "untrained": untrained,
    }


def test_training_reduces_the_losses(trained):
    h = trained["history"]
    assert np.isfinite([r["loss"] for r in h]).all()
    assert h[-1]["loss_jepa"] < 0.7 * h[0]["loss_jepa"]
    assert h[-1]["loss_invariance"] < h[0]["loss_invariance"]
    assert h[-1]["token_cosine"] > h[0]["token_cosine"] + 0.3


def test_same_tile_in_two_bands_is_its_own_nearest_neighbour(trained, tiles):
    acc, chance = cross_band_retrieval(trained["glob"], tiles.band_present)
    off = ~np.eye(tiles.n_bands, dtype=bool)
    assert np.nanmean(chance[off]) < 0.02
    assert np.nanmean(acc[off]) > 0.6  # chance ~1/60
    assert np.nanmin(acc[off]) > 10 * np.nanmax(chance[off])  # every band pair, incl. Rubin u vs Euclid H
    u, h = tiles.band_index("rubin_u"), tiles.band_index("euclid_h")
    assert acc[u, h] > 0.3 and acc[h, u] > 0.3
    # the untrained encoder does not do this: the skill is learned
    glob0, _ = embed_tiles(trained["untrained"], tiles.image, tiles.noise, tiles.band_present)
    acc0, _ = cross_band_retrieval(glob0, tiles.band_present)
    assert np.nanmean(acc[off]) > np.nanmean(acc0[off]) + 0.3


def test_same_tile_is_more_similar_across_bands_than_different_tiles(trained, tiles):
    g, present = trained["glob"], tiles.band_present
    sim = band_similarity_matrix(g, present)
    off = ~np.eye(tiles.n_bands, dtype=bool)
    # pair every tile's Rubin embeddings with the *next* tile's Euclid embeddings
    shifted = band_similarity_matrix(
        np.concatenate([g[:, :6], np.roll(g[:, 6:], 1, axis=0)], axis=1),
        np.concatenate([present[:, :6], np.roll(present[:, 6:], 1, axis=0)], axis=1),
    )
    same_tile = sim[:6, 6:].mean()  # Rubin band vs Euclid band, same tile
    other_tile = shifted[:6, 6:].mean()  # Rubin band vs Euclid band, different tiles
    assert same_tile > other_tile + 0.2
    assert np.nanmin(sim[off]) > 0.3


def test_embedding_does_not_collapse(trained, tiles):
    per_band = per_band_collapse(trained["glob"], tiles.band_present, tiles.bands)
    assert set(per_band) == set(tiles.bands)
    for band, s in per_band.items():
        assert s["min_var"] > 0.02, band  # every dimension is used
        assert s["effective_dim"] > 4.0, band  # well above 1 (32 dimensions)
        assert s["participation_ratio"] > 3.0, band


def test_collapse_stats_detect_a_collapsed_embedding():
    rng = np.random.default_rng(0)
    line = rng.normal(size=(200, 1)) * rng.normal(size=(1, 32))  # rank one
    s = collapse_stats(line + 1e-4 * rng.normal(size=(200, 32)))
    assert s["effective_dim"] < 1.1 and s["participation_ratio"] < 1.1
    iso = collapse_stats(rng.normal(size=(4000, 32)))
    assert iso["effective_dim"] > 30 and iso["participation_ratio"] > 29


def test_token_similarity_rises_over_training(trained):
    h = trained["tracker"].history
    assert len(h["step"]) >= 5
    assert h["contrast"][-1] > h["contrast"][0] + 0.05
    assert h["matched"][-1] > h["other_tile"][-1]


def test_ema_target_follows_the_online_encoder(trained):
    objective, model, state = trained["objective"], trained["model"], trained["state"]
    online = jax.tree.leaves(eqx.filter(model.encoder, eqx.is_array))
    target = jax.tree.leaves(eqx.filter(state, eqx.is_array))
    diffs = [float(jnp.max(jnp.abs(o - t))) for o, t in zip(online, target)]
    assert max(diffs) > 0  # a separate, lagging copy
    # one update moves the target by exactly (1 - decay) of the gap
    new = objective.update_state(model, state, jnp.int32(STEPS))
    d = float(objective.ema_decay(STEPS))
    assert d == pytest.approx(objective.ema_end)
    for o, t, n in zip(online, target, jax.tree.leaves(eqx.filter(new, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(n), d * np.asarray(t) + (1 - d) * np.asarray(o), rtol=1e-5, atol=1e-7)
    assert float(objective.ema_decay(0)) == pytest.approx(objective.ema_start)


def test_vicreg_terms():
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(512, 8)) * 2.0)
    assert float(vicreg_variance(z)) == pytest.approx(0.0, abs=1e-6)  # std 2 > target 1
    assert float(vicreg_variance(0.1 * z)) == pytest.approx(0.8, abs=0.02)
    assert float(vicreg_covariance(z)) < 0.2
    corr = jnp.concatenate([z[:, :1]] * 8, axis=1)
    assert float(vicreg_covariance(corr)) > 20


def test_diagnostic_figures_and_model_card_numbers(trained, tiles, tmp_path):
    card = model_card_metrics(trained["glob"], tiles.band_present, tiles.bands, tokens=trained["tokens"])
    json.dumps(card)  # plain JSON
    assert card["retrieval_top1_mean"] > 0.6 and card["effective_dim_min"] > 4
    assert card["token_contrast_mean"] > 0
    sim = band_similarity_matrix(trained["glob"], tiles.band_present)
    paths = [
        write_band_similarity_png(sim, tiles.bands, tmp_path / "band_similarity.png"),
        write_collapse_png(per_band_collapse(trained["glob"], tiles.band_present, tiles.bands),
                           tmp_path / "collapse.png"),
        write_information_map_png(tiles.image[0, 6], tiles.noise[0, 6], tmp_path / "info.png", patch=4),
        write_token_similarity_png(trained["tracker"].history, tmp_path / "tokens.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_missing_batch_arrays_are_reported(trained):
    objective, model, state = trained["objective"], trained["model"], trained["state"]
    with pytest.raises(KeyError, match="make_pair_batches"):
        objective.loss(model, state, {"image_a": jnp.zeros((2, 32, 32))}, jax.random.PRNGKey(0))
