"""The tile objective through the generic trainer: checkpoint, resume, registry, and a new band's stem."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import pytest

from skybatch.models.band_sampling import make_pair_batches
from skybatch.models.registry import load
from skybatch.models.tile_encoder import embed_batch
from skybatch.models.tile_objective import TileJEPAObjective
from skybatch.models.train import TrainConfig, fit
from skybatch.sample.tiles import make_multiband_tiles

pytestmark = pytest.mark.slow

SMALL = dict(image_size=16, patch=4, width=16, depth=1, heads=2, stem_hidden=16, readout_reduce=4,
             predictor_width=16, predictor_depth=1)


@pytest.fixture(scope="module")
def tiles():
    return make_multiband_tiles(24, 16, seed=4)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def test_fit_checkpoints_and_resumes_exactly(tiles, tmp_path):
    objective = TileJEPAObjective(tiles.bands, **SMALL, ema_anneal_steps=8)
    make = make_pair_batches(tiles.image, tiles.noise, tiles.band_present, tiles.bands, batch_size=8, seed=2)
    cfg = dict(batch_size=8, learning_rate=1e-3, checkpoint_every=2, log_every=2, seed=3)

    straight = fit(objective, make, TrainConfig(steps=8, **cfg), tmp_path / "straight")
    first = fit(objective, make, TrainConfig(steps=4, **cfg), tmp_path / "resumed")
    resumed = fit(objective, make, TrainConfig(steps=8, **cfg), tmp_path / "resumed")
    assert first.step == 4 and resumed.start_step == 4 and resumed.step == 8
    # the resumed run replays the same batches, keys and EMA updates: same model and target
    for a, b in zip(_leaves(straight.model), _leaves(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(_leaves(straight.state), _leaves(resumed.state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.isfinite(straight.history["train"]["loss"]).all()
    assert "loss_jepa" in straight.history["train"] and "token_cosine" in straight.history["train"]

    # the trained model is in the registry; its encoder embeds tiles
    model, card = load(straight.model_dir)
    assert card["kind"] == "tile_jepa" and card["training"]["objective"] == "tile_jepa"
    _, g1 = embed_batch(model.encoder, tiles.image[:8, 0], tiles.noise[:8, 0], "rubin_u")
    _, g2 = embed_batch(straight.model.encoder, tiles.image[:8, 0], tiles.noise[:8, 0], "rubin_u")
    np.testing.assert_array_equal(np.asarray(g1), np.asarray(g2))


def test_new_band_stem_through_fit_leaves_the_rest_bit_identical(tiles, tmp_path):
    # an encoder built without Euclid H (as if trained on 9 bands); H arrives later and only its
    # stem is trained (an untrained base keeps this test fast; freezing does not care)
    base_bands = tiles.bands[:-1]
    objective = TileJEPAObjective(base_bands, **SMALL, ema_anneal_steps=4)
    base_model = objective.init_model(jax.random.PRNGKey(0))
    base_state = objective.init_state(base_model)

    new_obj, model, state = objective.with_new_band(base_model, base_state, "euclid_h", init_from="euclid_j")
    assert new_obj.bands == tiles.bands and new_obj.train_only_band == "euclid_h"
    # weight_decay=0: frozen arrays get exactly zero gradients, so Adam leaves them bit-identical
    make_all = make_pair_batches(tiles.image, tiles.noise, tiles.band_present, tiles.bands, batch_size=8, seed=1)
    # fit builds the model with init_model; start it from the extended trained model instead
    warm = _WarmStart(new_obj, model, state)
    out = fit(warm, make_all, TrainConfig(steps=6, batch_size=8, learning_rate=3e-3, seed=1), tmp_path / "new_band")

    before, after = model, out.model
    for part in (lambda m: m.encoder.trunk, lambda m: m.encoder.pool, lambda m: m.predictor):
        for a, b in zip(_leaves(part(before)), _leaves(part(after))):
            np.testing.assert_array_equal(a, b)
    for band in base_bands:
        for a, b in zip(_leaves(before.encoder.stems[band]), _leaves(after.encoder.stems[band])):
            np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in
               zip(_leaves(before.encoder.stems["euclid_h"]), _leaves(after.encoder.stems["euclid_h"]))]
    assert any(changed)
    # the EMA target follows only the new stem as well
    for a, b in zip(_leaves(state.trunk), _leaves(out.state.trunk)):
        np.testing.assert_array_equal(a, b)


class _WarmStart:
    """Objective wrapper whose init_model/init_state return a given (already trained) model."""

    def __init__(self, objective, model, state):
        self._objective, self._model, self._state = objective, model, state
        self.name = objective.name + "_new_band"

    def init_model(self, key):
        return self._model

    def init_state(self, model):
        return self._state

    def loss(self, model, state, batch, key):
        return self._objective.loss(model, state, batch, key)

    def update_state(self, model, state, step):
        return self._objective.update_state(model, state, step)
