"""Temperature scaling and calibration metrics on synthetic classifiers with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    plot_reliability_diagram,
    reliability_diagram,
    softmax,
)


def _overconfident(n: int, factor: float, seed: int):
    """Labels drawn from softmax(z) (so z is calibrated); the model reports factor * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, 3))
    p = softmax(z)
    u = rng.random(n)[:, None]
    labels = (u > np.cumsum(p, axis=1)).sum(1)
    return factor * z, labels, p


def test_temperature_scaling_fixes_an_overconfident_model():
    logits, labels, _ = _overconfident(40_000, 3.0, seed=0)
    ece_before = expected_calibration_error(softmax(logits), labels)
    assert ece_before > 0.08
    t = fit_temperature(logits[:20_000], labels[:20_000])  # fit on "validation" ...
    assert t == pytest.approx(3.0, rel=0.05)
    ece_after = expected_calibration_error(apply_temperature(logits[20_000:], t), labels[20_000:])  # ... test on the rest
    assert ece_after <= 0.02
    assert negative_log_likelihood(logits, labels, t) < negative_log_likelihood(logits, labels)
    # Temperature never changes the predicted class.
    np.testing.assert_array_equal(softmax(logits).argmax(1), apply_temperature(logits, t).argmax(1))


def test_calibrated_model_keeps_t_near_one_and_ignores_unlabelled():
    logits, labels, _ = _overconfident(30_000, 1.0, seed=1)
    labels = labels.copy()
    labels[:1000] = -1
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(1.0, abs=0.05)
    assert expected_calibration_error(softmax(logits), labels) < 0.02


def test_reliability_diagram_numbers_and_png(tmp_path):
    # Hand-made case: 4 rows at confidence 0.9 (3 right), 2 rows at 0.6 (both wrong).
    probs = np.array([[0.9, 0.05, 0.05]] * 4 + [[0.6, 0.4, 0.0]] * 2)
    labels = np.array([0, 0, 0, 1, 1, 2])
    d = reliability_diagram(probs, labels, n_bins=10)
    assert d.count.sum() == 6 and d.count[9] == 4 and d.count[6] == 2
    assert d.accuracy[9] == pytest.approx(0.75) and d.confidence[9] == pytest.approx(0.9)
    assert d.accuracy[6] == pytest.approx(0.0) and d.confidence[6] == pytest.approx(0.6)
    assert d.ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.6)
    assert np.isnan(d.accuracy[0]) and d.to_dict()["accuracy"][0] is None
    logits, lab, _ = _overconfident(5000, 3.0, seed=2)
    t = fit_temperature(logits, lab)
    out = plot_reliability_diagram(
        {"before": reliability_diagram(softmax(logits), lab), f"T={t:.2f}": reliability_diagram(softmax(logits, t), lab)},
        tmp_path / "rel.png",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="no labelled rows"):
        fit_temperature(np.zeros((3, 3)), np.array([-1, -1, -1]))
    with pytest.raises(ValueError, match="labels must have shape"):
        expected_calibration_error(np.full((3, 3), 1 / 3), np.array([0, 1]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(np.zeros((2, 3)), 0.0)


def test_same_numbers_through_the_array_api_namespace():
    xp = pytest.importorskip("array_api_strict")
    logits, labels, _ = _overconfident(2000, 2.0, seed=3)
    labels[:10] = -1
    p_np = softmax(logits, 1.7)
    p_xp = softmax(xp.asarray(logits), 1.7)
    np.testing.assert_allclose(np.asarray(p_xp), p_np, rtol=1e-12)
    assert expected_calibration_error(p_xp, xp.asarray(labels)) == pytest.approx(expected_calibration_error(p_np, labels))
    assert negative_log_likelihood(xp.asarray(logits), xp.asarray(labels), 1.7) == pytest.approx(
        negative_log_likelihood(logits, labels, 1.7))
