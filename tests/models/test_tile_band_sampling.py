"""Band-pair sampling: wide gaps and cross-instrument pairs favoured, usage balanced, missing bands skipped."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models.band_sampling import (
    SURVEY_BANDS,
    BandPairSampler,
    band_table,
    make_pair_batches,
    pair_weights,
)

LAM = np.array([b.wavelength_nm for b in SURVEY_BANDS])
INST = np.array([b.instrument for b in SURVEY_BANDS])
NB = len(SURVEY_BANDS)


def _draw(sampler: BandPairSampler, present: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = zip(*(sampler.sample(present) for _ in range(rounds)))
    return np.concatenate(a), np.concatenate(b)


def _uniform_pair_stats() -> tuple[float, float]:
    i, j = np.triu_indices(NB, 1)
    return float(np.mean(np.abs(np.log(LAM[i] / LAM[j])))), float(np.mean(INST[i] != INST[j]))


def test_band_table_has_the_survey_wavelengths():
    lam = {b.name: b.wavelength_nm for b in SURVEY_BANDS}
    assert lam["rubin_u"] == 367 and lam["rubin_y"] == 971
    assert lam["euclid_vis"] == 715 and lam["euclid_h"] == 1773
    with pytest.raises(KeyError, match="BandInfo"):
        band_table(["rubin_w"])


def test_weights_favour_wide_gaps_and_cross_instrument():
    w = pair_weights(SURVEY_BANDS)
    k = {b.name: i for i, b in enumerate(SURVEY_BANDS)}
    assert np.allclose(w, w.T) and np.all(np.diag(w) == 0)
    assert w[k["rubin_u"], k["euclid_h"]] > w[k["rubin_u"], k["rubin_y"]] > w[k["rubin_r"], k["rubin_i"]]
    # same gap size, different instrument -> larger weight
    assert w[k["rubin_i"], k["euclid_vis"]] > w[k["rubin_r"], k["rubin_i"]] * 0.5
    assert w[k["rubin_i"], k["euclid_vis"]] > (0.1 + abs(np.log(755 / 715)))


def test_sampler_favours_wide_gaps_and_cross_instrument_pairs():
    present = np.ones((512, NB), bool)
    sampler = BandPairSampler(SURVEY_BANDS, seed=0, balance_strength=0.0)
    a, b = _draw(sampler, present, 20)
    assert (a != b).all() and (a >= 0).all()
    gap = np.mean(np.abs(np.log(LAM[a] / LAM[b])))
    cross = np.mean(INST[a] != INST[b])
    gap_uniform, cross_uniform = _uniform_pair_stats()
    assert gap > 1.25 * gap_uniform
    assert cross > cross_uniform + 0.1
    # orientation is a fair coin
    assert abs(np.mean(a < b) - 0.5) < 0.02


def test_usage_balancing_keeps_every_band_in_use():
    present = np.ones((256, NB), bool)
    unbalanced = BandPairSampler(SURVEY_BANDS, seed=1, balance_strength=0.0)
    balanced = BandPairSampler(SURVEY_BANDS, seed=1, balance_strength=1.0)
    _draw(unbalanced, present, 60)
    _draw(balanced, present, 60)
    spread_unbalanced = unbalanced.usage.max() / unbalanced.usage.min()
    spread_balanced = balanced.usage.max() / balanced.usage.min()
    assert spread_unbalanced > 1.4  # wide-gap weighting alone starves the middle bands
    assert spread_balanced < 1.1
    np.testing.assert_allclose(balanced.usage_share(), 1 / NB, atol=0.01)
    # balancing does not undo the preference for wide gaps
    a, b = _draw(balanced, present, 10)
    assert np.mean(np.abs(np.log(LAM[a] / LAM[b]))) > 1.1 * _uniform_pair_stats()[0]


def test_under_used_band_is_boosted():
    s = BandPairSampler(SURVEY_BANDS, seed=2)
    s.usage[:] = 1000
    s.usage[3] = 10  # rubin_i hardly used so far
    boost = s.balance_boost()
    assert boost[3] == boost.max() and boost[3] > 2.0


def test_missing_bands_are_skipped_not_errors():
    rng = np.random.default_rng(3)
    present = rng.random((400, NB)) > 0.4
    present[0] = False
    present[0, 5] = True  # a tile with a single band: no pair possible
    present[1] = False  # a tile with no band at all
    s = BandPairSampler(SURVEY_BANDS, seed=4)
    a, b = s.sample(present)
    assert a[0] == b[0] == -1 and a[1] == b[1] == -1
    ok = present.sum(axis=1) >= 2
    assert (a[ok] >= 0).all() and (a[ok] != b[ok]).all()
    rows = np.flatnonzero(ok)
    assert present[rows, a[ok]].all() and present[rows, b[ok]].all()
    # usage counts only the drawn views
    assert s.usage.sum() == 2 * ok.sum()


def test_deterministic_given_seed():
    present = np.ones((64, NB), bool)
    r1 = _draw(BandPairSampler(SURVEY_BANDS, seed=9), present, 5)
    r2 = _draw(BandPairSampler(SURVEY_BANDS, seed=9), present, 5)
    r3 = _draw(BandPairSampler(SURVEY_BANDS, seed=10), present, 5)
    np.testing.assert_array_equal(r1[0], r2[0])
    np.testing.assert_array_equal(r1[1], r2[1])
    assert not np.array_equal(r1[0], r3[0])


def test_pair_batches_are_views_of_the_same_tile_and_resume_exactly():
    from skybatch.sample.tiles import make_multiband_tiles

    t = make_multiband_tiles(24, 16, seed=0)
    make = make_pair_batches(t.image, t.noise, t.band_present, t.bands, batch_size=8, seed=3, augment=False)
    it = make(0)
    first = [next(it) for _ in range(5)]
    for batch in first:
        assert batch["image_a"].shape == (8, 16, 16) and batch["band_a"].dtype == np.int32
        assert len(set(batch["tile"])) == 8
        assert (batch["band_a"] != batch["band_b"]).all()
        np.testing.assert_array_equal(batch["image_a"], t.image[batch["tile"], batch["band_a"]])
        np.testing.assert_array_equal(batch["noise_b"], t.noise[batch["tile"], batch["band_b"]])
        assert np.isfinite(batch["image_a"]).all() and np.isfinite(batch["image_b"]).all()
    resumed = next(make(3))  # the batch of step 3, usage history replayed
    for k in first[3]:
        np.testing.assert_array_equal(resumed[k], first[3][k])


def test_augmentation_is_the_same_for_both_views():
    from skybatch.sample.tiles import make_multiband_tiles

    t = make_multiband_tiles(16, 16, seed=1, max_offset_px=0.0)
    batch = next(make_pair_batches(t.truth, t.noise, t.band_present, t.bands, batch_size=16, seed=0)(0))
    # the brightest pixel of both (noiseless) views falls on the same place after augmentation
    pa = batch["image_a"].reshape(16, -1).argmax(1)
    pb = batch["image_b"].reshape(16, -1).argmax(1)
    assert np.mean(pa == pb) > 0.7


def test_batch_size_larger_than_usable_tiles_is_reported():
    present = np.zeros((4, NB), bool)
    present[:2, :2] = True
    img = np.zeros((4, NB, 8, 8), np.float32)
    with pytest.raises(ValueError, match="only 2 tiles have at least two bands"):
        make_pair_batches(img, img, present, [b.name for b in SURVEY_BANDS], batch_size=3)
