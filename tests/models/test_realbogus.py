"""Real/bogus CNN over cutout triplets + features: trained small on generated real and bogus kinds."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models.calibration import expected_calibration_error
from skybatch.models.realbogus import (FEATURES, FeatureBaseline, RealBogusModel, minimax_threshold, train_realbogus,
                                       triplet_features)
from skybatch.sample.realbogus import (BOGUS_KINDS, REAL_KINDS, TRAIN_KINDS, make_realbogus_set, training_groups,
                                       training_weights)


@pytest.fixture(scope="module")
def trained():
    tr = make_realbogus_set(1500, size=15, seed=3)
    te = make_realbogus_set(900, size=15, seed=4)
    f_tr, f_te = triplet_features(tr.triplets), triplet_features(te.triplets)
    model = train_realbogus(tr.triplets, tr.label, features=f_tr, epochs=5, width=8, seed=0,
                            weights=training_weights(tr.kind, tr.snr), groups=training_groups(tr.kind, tr.snr))
    return tr, te, f_tr, f_te, model


def test_generated_kinds():
    s = make_realbogus_set(80, size=15, seed=0)
    assert s.triplets.shape == (80, 3, 15, 15) and s.label.sum() == 40
    assert set(s.kind) == set(REAL_KINDS + BOGUS_KINDS)
    assert np.isnan(s.triplets[s.kind == "edge"]).any() and not np.isnan(s.triplets[s.kind == "real"]).any()
    with pytest.raises(ValueError, match="not among"):
        make_realbogus_set(4, kinds=("ghost",))


def test_sharpness_separates_cosmic_rays_and_hot_pixels_from_point_sources():
    s = make_realbogus_set(400, size=15, seed=7, kinds=("real", "real-galaxy", "cosmic-ray", "hot-pixel"))
    sharp = triplet_features(s.triplets)[:, FEATURES.index("sci_sharp")]
    real = sharp[s.label == 1]
    for k in ("cosmic-ray", "hot-pixel"):  # sharper than any PSF in the science stamp
        assert np.quantile(sharp[s.kind == k], 0.05) > np.quantile(real, 0.95), k


def test_training_mix_and_weights():
    s = make_realbogus_set(160, size=15, seed=0, kinds=TRAIN_KINDS)
    assert s.label.sum() == 80 and np.sum(s.kind == "cosmic-ray") == 2 * np.sum(s.kind == "dipole")
    w = training_weights(s.kind, s.snr)
    real = s.label == 1
    np.testing.assert_allclose([w[real].sum(), w[~real].sum()], [real.sum(), (~real).sum()])
    assert w[s.kind == "hot-pixel"].min() == pytest.approx(2 * w[s.kind == "edge"].max())
    low = real & (s.snr < 12)
    assert low.any() and w[low].min() == pytest.approx(2 * w[real & ~low].max())
    with pytest.raises(ValueError, match="weights"):
        train_realbogus(s.triplets, s.label, weights=np.ones(3), epochs=1)


def test_minimax_threshold_holds_every_group():
    rng = np.random.default_rng(0)
    # an easy bogus kind, a hard one (scores up to 0.6), faint reals (down to 0.5), bright reals
    p = np.concatenate([rng.uniform(0, 0.1, 500), rng.uniform(0, 0.6, 500), rng.uniform(0.5, 1, 500),
                        rng.uniform(0.9, 1, 500)])
    y = np.repeat([0, 0, 1, 1], 500)
    g = np.repeat(["easy", "hard", "faint", "bright"], 500)
    t, worst = minimax_threshold(p, y, g)
    assert 0.5 < t < 0.6 and worst < 0.1  # between the hard kind's top and the faint reals' bottom
    fp_hard, fn_faint = np.mean(p[g == "hard"] >= t), np.mean(p[g == "faint"] < t)
    assert max(fp_hard, fn_faint) == pytest.approx(worst)
    # a plain 98 %-of-all-reals threshold would let more of the hard kind through
    t98 = np.quantile(p[y == 1], 0.02)
    assert np.mean(p[g == "hard"] >= t98) > worst
    assert list(training_groups(np.array(["real", "dipole", "real-galaxy"]), np.array([6.0, 3.0, 70.0]))) == [
        "real S/N >= 5", "dipole", "real S/N >= 40"]
    with pytest.raises(ValueError, match="mixes"):
        minimax_threshold(p, y, np.zeros(len(p)))


def test_separates_real_from_every_bogus_kind_and_is_calibrated(trained, tmp_path):
    tr, te, f_tr, f_te, model = trained
    assert model.history["loss"][-1] < model.history["loss"][0]
    p = model.score(te.triplets, f_te)
    y = te.label
    fp_thr = np.quantile(p[y == 0], 0.95)
    assert np.mean(p[y == 1] <= fp_thr) < 0.08  # FN at 5 % FP, after a 5-epoch toy training
    assert expected_calibration_error(np.stack([1 - p, p], 1), y) < 0.06
    assert 0.0 < model.threshold < 1.0 and model.temperature > 0
    for k in BOGUS_KINDS:
        assert np.mean(p[te.kind == k] >= model.threshold) < 0.15, k
    assert np.mean(p[y == 1] >= model.threshold) > 0.9 and model.completeness > 0.9
    # the one (minimax) threshold: no real S/N bin loses much at it
    g = training_groups(te.kind, te.snr)
    for b in set(g[y == 1]):
        assert np.mean(p[g == b] < model.threshold) < 0.15, b
    # the feature-only baseline is a real competitor, not a strawman: better than chance
    b = FeatureBaseline.fit(f_tr, tr.label).score(f_te)
    assert np.mean(b[y == 1] > np.median(b[y == 0])) > 0.8
    # saved and loaded through the registry: same scores, crops larger stamps to its own size
    model.save(str(tmp_path / "rb"))
    again = RealBogusModel.load(str(tmp_path / "rb"))
    np.testing.assert_allclose(again.score(te.triplets[:50], f_te[:50]), p[:50], rtol=1e-5, atol=1e-6)
    assert (again.temperature, again.threshold, again.stamp) == (model.temperature, model.threshold, 15)
    big = np.pad(te.triplets[:5], ((0, 0), (0, 0), (3, 3), (3, 3)), constant_values=0.0)
    np.testing.assert_allclose(again.score(big), again.score(te.triplets[:5]), rtol=1e-5, atol=1e-6)


def test_triplet_anomaly_ranks_unusual_transients_at_the_top():
    """Extended and very elongated transients among ordinary real ones: the autoencoder ranks them first."""
    from skybatch.models.realbogus_anomaly import triplet_anomaly
    from skybatch.sample.realbogus import _gauss

    ts = make_realbogus_set(600, size=21, real_fraction=1.0, seed=3)
    t = ts.triplets.copy()
    rng = np.random.default_rng(0)
    odd = np.flatnonzero(ts.snr > 15)[:8]
    for k, j in enumerate(odd):
        g = _gauss(21, 0, 0, 4.5) if k % 2 == 0 else _gauss(21, 0, 0, 5.0, 0.9)
        t[j, 2] = g / g.max() * np.nanmax(t[j, 2]) + rng.standard_normal((21, 21))
    s = triplet_anomaly(t)
    assert s.shape == (600,) and np.isfinite(s).all()
    top = set(np.argsort(-s)[:16].tolist())
    assert len(top & set(odd.tolist())) >= 6, (sorted(top), odd, s[odd])
    # ordinary candidates sit near zero (a robust z-score against the training set)
    assert abs(np.median(np.delete(s, odd))) < 0.5
    # trained on ordinary candidates only, the same unusual ones stand out
    s2 = triplet_anomaly(t[odd], train=np.delete(t, odd, axis=0))
    assert np.median(s2) > np.percentile(s, 90)
    with pytest.raises(ValueError, match="triplets"):
        triplet_anomaly(t[:, :2])
