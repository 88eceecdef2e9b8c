"""Sky-model data plumbing: the resumable batch stream and the metrics on known spectra."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models import sky_metrics as SM
from skybatch.pipeline.sky_data import TableBatches


def test_table_batches_resume_on_the_same_stream():
    t = TableBatches({"a": np.arange(10), "b": np.arange(10) * 2.0}, batch_size=4, seed=3)
    it = t.make_batches(0)
    first = [next(it) for _ in range(6)]
    resumed = t.make_batches(3)
    for k in range(3, 6):
        got = next(resumed)
        np.testing.assert_array_equal(got["a"], first[k]["a"])
        np.testing.assert_array_equal(got["b"], 2.0 * got["a"])
    # each epoch visits every row once
    flat = np.concatenate([b["a"] for b in first])[:10]
    assert sorted(flat.tolist()) == list(range(10))
    fixed = t.fixed_batches({"a": np.arange(5)})
    assert [b["weight"].tolist() for b in fixed] == [[1, 1, 1, 1], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="differ in length"):
        TableBatches({"a": np.arange(3), "b": np.arange(4)}, 2)


def test_sky_metrics_on_known_spectra():
    wave = 3600.0 + 0.8 * np.arange(7781)
    flux = np.ones((3, wave.size))
    for i, amp in enumerate((10.0, 20.0, 40.0)):
        flux[i] += amp * np.exp(-0.5 * ((wave - 5578.9) / 0.7) ** 2)
    lines = SM.airglow_lines(wave, flux)
    np.testing.assert_allclose(lines["OI5577"], np.array([10, 20, 40]) * 0.7 * np.sqrt(2 * np.pi), rtol=1e-3)
    np.testing.assert_allclose(SM.continua(wave, flux)["g"], 1.0)
    st = SM.ratio_stats(np.array([1.1, 0.9, 1.0, 1.2]), np.ones(4))
    assert st["median_rel_err"] == pytest.approx(0.1) and st["scatter"] > 0
    rng = np.random.default_rng(0)
    same = SM.c2st_auc(rng.normal(size=(200, 3)), rng.normal(size=(200, 3)))
    apart = SM.c2st_auc(rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 2.0)
    assert abs(same - 0.5) < 0.1 and apart > 0.95
    assert SM.trend_slope(np.arange(5.0), 10 ** (0.2 * np.arange(5.0))) == pytest.approx(0.2)
