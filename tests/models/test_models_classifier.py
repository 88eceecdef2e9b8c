"""SpectrumClassifier: shapes, label mapping, and learning separable synthetic classes."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skybatch.models import (
    CLASS_NAMES,
    ClassifierObjective,
    SpectrumClassifier,
    TrainConfig,
    class_index,
    fit,
    predict_logits,
    predict_proba,
)
from tests.models.models_synth import batch_stream, three_classes

NWAVE = 256


def test_class_index_maps_redrock_and_sdss_strings():
    labels = np.array(["GALAXY", "QSO   ", "STAR", "galaxy", "", "UNKNOWN"], dtype="U6")
    np.testing.assert_array_equal(class_index(labels), [0, 1, 2, 0, -1, -1])
    # FITS bytes columns (space padded) and None
    np.testing.assert_array_equal(class_index([b"QSO   ", b"STAR  ", None]), [1, 2, -1])
    assert class_index(["STAR"], class_names=("STAR", "QSO")).tolist() == [0]
    assert CLASS_NAMES == ("GALAXY", "QSO", "STAR")


def test_shapes_and_probabilities():
    clf = SpectrumClassifier(NWAVE, channels=(8, 16), key=jax.random.PRNGKey(0))
    b = three_classes(np.random.default_rng(0), 6, NWAVE)
    one = eqx.filter_jit(lambda m, f, i: m(f, i))(clf, b["flux"][0], b["ivar"][0])
    assert one.shape == (3,)
    logits = predict_logits(clf, b["flux"], b["ivar"])
    assert logits.shape == (6, 3) and np.all(np.isfinite(np.asarray(logits)))
    np.testing.assert_allclose(np.asarray(logits[0]), np.asarray(one), rtol=1e-5, atol=1e-6)
    p1 = np.asarray(predict_proba(clf, b["flux"], b["ivar"]))
    p2 = np.asarray(predict_proba(clf, b["flux"], b["ivar"], temperature=3.0))
    np.testing.assert_allclose(p1.sum(1), 1.0, rtol=1e-5)
    # Higher temperature flattens the distribution but keeps the predicted class.
    assert np.all(p2.max(1) <= p1.max(1) + 1e-6)
    np.testing.assert_array_equal(p1.argmax(1), p2.argmax(1))
    assert clf.class_names == CLASS_NAMES
    with pytest.raises(ValueError, match="vmap"):
        clf(jnp.asarray(b["flux"]), jnp.asarray(b["ivar"]))
    with pytest.raises(ValueError, match="class_names"):
        SpectrumClassifier(NWAVE, class_names=("A", "A"), key=jax.random.PRNGKey(0))


def test_learns_separable_classes_well_above_chance(tmp_path):
    val = three_classes(np.random.default_rng(999), 384, NWAVE)
    val["label"][:20] = -1  # unlabelled rows are excluded, not counted as errors
    cfg = TrainConfig(steps=150, batch_size=32, learning_rate=3e-3, checkpoint_every=150, log_every=50)
    res = fit(ClassifierObjective(NWAVE, channels=(16, 32)), batch_stream("classes", 32, NWAVE), cfg,
              tmp_path, val_batches=lambda: [val])
    pred = np.asarray(predict_logits(res.model, val["flux"], val["ivar"])).argmax(1)
    keep = val["label"] >= 0
    accuracy = np.mean(pred[keep] == val["label"][keep])
    assert accuracy > 0.85  # chance is 1/3
    assert res.history["val"]["accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)
    assert res.history["val"]["labelled"][-1] == pytest.approx(keep.mean(), abs=1e-6)
    # every class is recognised, not just the majority
    for c in range(3):
        assert np.mean(pred[val["label"] == c] == c) > 0.7
