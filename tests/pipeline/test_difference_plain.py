"""Differencing plain FITS images (the commonest survey file), end to end on the session Dask cluster.

Inputs from :func:`skybatch.sample.images.write_sample_images`: one image in the primary HDU, a WCS and
CCD keywords (GAIN, RDNOISE, SATURATE, MAGZP, EXPTIME), no noise map. Science images have a PSF that
varies across the field, saturated stars with bleed trails, a sky gradient, a NaN region and
transients on empty sky and on galaxies; one reference is on another grid (pixel scale 0.25" vs
0.2", rotated 30 deg, shifted, larger) and aligned only through the WCSs; one pair is a null pair.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from skybatch.pipeline.difference import difference
from skybatch.sample.images import write_sample_images
from skybatch.store.difference_store import open_candidates, open_difference_store, read_candidates

SIZE = 320
THRESHOLD = 5.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_images(tmp_path_factory.mktemp("sample"), n_pairs=3, size=SIZE, layouts=("plain",),
                               n_tiles=0, seed=3)


@pytest.fixture(scope="module")
def run(sample, dask_client, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("diff") / "plain.zarr")
    rep = difference(sample.science["plain"], sample.reference["plain"], out, client=dask_client, progress=False,
                     inject=25, inject_snr=(4.0, 30.0), inject_seed=1, threshold=THRESHOLD)
    return rep


def _nearest(cat: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if not len(cat) or not len(x):
        return np.full(len(cat), np.inf)
    return np.hypot(cat.x.to_numpy()[:, None] - x[None], cat.y.to_numpy()[:, None] - y[None]).min(axis=1)


def test_plain_pairs_are_differenced(run, sample):
    assert run.exit_code == 0, run.summary()
    assert run.pairs_written == 3 and not run.set_aside
    ds = open_difference_store(run.out)[f"{SIZE}x{SIZE}"]
    assert ds.pair_id.values.tolist() == ["field_000/r", "field_001/r", "field_002/r"]
    # field_001's reference has another scale, orientation and size: resampled through the WCSs only
    assert ds.aligned.values.tolist() == [False, True, True]
    assert (ds.new_psf_method.values == "stack").all() and (ds.ref_psf_method.values == "stack").all()
    # the flux ratio from the stars agrees with the headers' zero points (1.3), resampled reference included
    # (with PSFs that vary across the field the ratio that best cancels the stars is off by up to ~10 %)
    np.testing.assert_allclose(ds.flux_ratio.values, 1.3, rtol=0.12)
    # the noise estimated from the images (no noise maps in the files) is the generator's
    np.testing.assert_allclose(ds.new_sigma.values, 8.0, rtol=0.05)


def test_completeness_and_false_positives(run, sample):
    """Completeness >= 0.9 of the ideal sum(Phi(S/N - threshold)); false positives near the pure-noise rate."""
    rec = pd.read_parquet(run.out + ".recovery.parquet")
    assert len(rec) >= 60
    ideal = norm.cdf(rec.snr.to_numpy() - THRESHOLD).sum()
    found = rec.recovered.sum()
    assert found >= 0.9 * ideal, (found, ideal)
    cat = read_candidates(run.out)
    truth = pd.read_parquet(sample.truth)
    n_false = 0
    for pid, g in cat.groupby("pair_id"):
        t = truth[truth.pair_id == pid]
        real = (_nearest(g, t.x.to_numpy(), t.y.to_numpy()) < 2.5) | g.injected.to_numpy()
        n_false += int((~real).sum())
    # the generated transients are found too (S/N 6-40 in the science image alone; on galaxies as well)
    for on_gal in (False, True):
        t = truth[truth.on_galaxy == on_gal]
        hit = sum(int((_nearest(cat[cat.pair_id == pid], np.r_[x], np.r_[y]) < 2.5).any())
                  for pid, x, y in zip(t.pair_id, t.x, t.y))
        assert hit >= 0.75 * len(t), (on_gal, hit, len(t))
    # bright and saturated stars are vetoed (flux-based discs, bit 4 of the mask map, counted per pair):
    # a small part of the field, and everywhere else only the pure-noise rate of a calibrated S_corr
    # (~0.4 peaks beyond 5 sigma per Mpix) plus one per 4 Mpix: 0.2 on these 0.3 Mpix, so none
    ds = open_difference_store(run.out)[f"{SIZE}x{SIZE}"]
    flags = ds.mask.values
    veto = ((flags & 4) != 0) | ((flags & 2) != 0)
    assert veto.mean() < 0.15, veto.mean()
    assert ds.mask.attrs["flag_meanings"].split() == ["bad", "saturated", "bright-veto", "margin"]
    assert list(ds.mask.attrs["flag_masks"]) == [1, 2, 4, 8]
    # detections in the veto are counted in the report (and its summary), not catalogued
    assert run.n_vetoed > 0 and f"vetoed: {run.n_vetoed} detections" in run.summary()
    area = 3 * SIZE * SIZE * (1.0 - veto.mean()) / 1e6
    allowed = 0.4 * area + area / 4
    assert n_false <= allowed, (n_false, allowed, cat[["pair_id", "x", "y", "S_corr"]])


def test_null_pair_has_no_candidate(run, sample):
    """Nothing changed: no candidate but the injected ones (bright-star residuals are vetoed and counted)."""
    cat = read_candidates(run.out)
    null = cat[(cat.pair_id == "field_002/r") & ~cat.injected]
    assert len(null) == 0, null[["x", "y", "S_corr"]]


def test_nothing_to_difference_says_why(sample, dask_client, tmp_path):
    """Every input set aside, no pair: each file with its reason, exit code 3, an empty but valid output."""
    junk = tmp_path / "refs"
    junk.mkdir()
    (junk / "broken_r.fits").write_bytes(b"not a fits file" * 200)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "none.zarr")
    rep = difference(sample.science["plain"], [str(junk), str(empty)], out, client=dask_client, progress=False)
    assert rep.exit_code == 3 and rep.n_pairs == 0 and rep.n_candidates == 0
    text = rep.summary()
    assert text.startswith("NOTHING TO DIFFERENCE")
    reasons = {s["url"].rsplit("/", 1)[-1]: s["reason"] for s in rep.set_aside}
    assert reasons == {"broken_r.fits": "corrupt", "empty": "empty-directory", "field_000_r.fits": "no-reference",
                       "field_001_r.fits": "no-reference", "field_002_r.fits": "no-reference"}, reasons
    for name in reasons:
        assert name in text
    cat = read_candidates(out)
    assert len(cat) == 0 and {"x", "y", "S_corr", "flux"} <= set(cat.columns)
    assert open_difference_store(out) == {}
    # a re-run says the same, and does not fail on its own empty store
    again = difference(sample.science["plain"], [str(junk), str(empty)], out, client=dask_client, progress=False)
    assert again.exit_code == 3 and again.n_pairs == 0


def test_candidates_carry_measured_properties(run, sample):
    """Shapes, dipole score, masked fraction and reference neighbours in the catalogue, sensible per kind."""
    cat = read_candidates(run.out)
    for col in ("fwhm", "elongation", "dipole", "masked_fraction", "ref_distance", "ref_flux", "flux", "flux_err"):
        assert col in cat.columns
    ds = open_difference_store(run.out)[f"{SIZE}x{SIZE}"]
    real = cat[cat.injected & (cat.snr > 10)]
    assert len(real) >= 20
    # injected point sources: D's PSF width, round, no dipole, unmasked
    assert 0.6 < real.fwhm.median() / np.median(ds.new_fwhm.values) < 1.6
    assert real.elongation.median() < 1.3 and (real.dipole < 0.2).mean() > 0.9
    assert (real.masked_fraction < 0.5).all() and (cat.masked_fraction.between(0, 1)).all()
    # transients put on galaxies sit on a reference source; injections mostly do not
    truth = pd.read_parquet(sample.truth)
    on_gal = truth[truth.on_galaxy]
    d_gal = []
    for pid, x, y in zip(on_gal.pair_id, on_gal.x, on_gal.y):
        g = cat[cat.pair_id == pid]
        dd = np.hypot(g.x - x, g.y - y)
        if len(g) and dd.min() < 2.5:
            d_gal.append(float(g.ref_distance.to_numpy()[int(np.argmin(dd.to_numpy()))]))
    assert len(d_gal) >= 3 and np.median(d_gal) < 3.0, d_gal
    assert real.ref_distance.median() > 5.0


def test_realbogus_scores_the_catalogue(run, sample, tmp_path):
    """A real/bogus model trained on generated triplets scores the pipeline's own candidates."""
    from skybatch.models.realbogus import train_realbogus
    from skybatch.pipeline.difference.realbogus import classify_difference_store
    from skybatch.sample.realbogus import make_realbogus_set

    ts = make_realbogus_set(1200, size=21, seed=7)
    model = train_realbogus(ts.triplets, ts.label, epochs=4, width=8)
    model.save(str(tmp_path / "rb"))
    before = read_candidates(run.out)
    res = classify_difference_store(run.out, str(tmp_path / "rb"))
    cat = read_candidates(run.out)
    assert res["n_candidates"] == len(cat) == len(before)
    assert cat.realbogus_score.between(0, 1).all() and cat.realbogus_real.dtype == bool
    assert (cat.drop(columns=["realbogus_score", "realbogus_real", "anomaly_score"]).equals(before))
    assert np.isfinite(cat.anomaly_score).all()
    real = cat[cat.injected & (cat.snr > 10)]
    assert real.realbogus_score.median() > 0.9 and real.realbogus_real.mean() > 0.8
    stars = pd.read_parquet(sample.truth.replace("transients", "stars"))
    truth = pd.read_parquet(sample.truth)
    rings = []
    for pid, g in cat[~cat.injected].groupby("pair_id"):
        t = truth[truth.pair_id == pid]
        s = stars[(stars.pair_id == pid) & (stars.snr_new > 300)]
        ring = (_nearest(g, s.x.to_numpy(), s.y.to_numpy()) < 10) & (_nearest(g, t.x.to_numpy(), t.y.to_numpy()) > 2.5)
        rings.append(g[ring])
    rings = pd.concat(rings)
    if len(rings):  # bright-star residual rings are bogus
        assert rings.realbogus_score.median() < 0.5, rings[["x", "y", "S_corr", "realbogus_score"]]
    # the same scores beside the cutouts in the store's candidates group (Zarr), row for row
    cand = open_candidates(run.out)
    np.testing.assert_allclose(cand.realbogus_score.values, cat.realbogus_score.to_numpy())
    assert cand.realbogus_real.values.tolist() == cat.realbogus_real.tolist()
    np.testing.assert_allclose(cand.anomaly_score.values, cat.anomaly_score.to_numpy())
    np.testing.assert_allclose(cand.x.values, cat.x.to_numpy())
    # a second classification, through the CLI as users run it, replaces the columns and the variables
    from skybatch import cli

    assert cli.main(["run", "classify", "--store", run.out, "--model", str(tmp_path / "rb")]) == 0
    assert list(read_candidates(run.out).columns) == list(cat.columns)
    again = open_candidates(run.out)
    assert sorted(again.data_vars) == ["anomaly_score", "cutouts", "realbogus_real", "realbogus_score"]
    np.testing.assert_allclose(again.realbogus_score.values, read_candidates(run.out).realbogus_score.to_numpy())
    open_difference_store(run.out)  # still follows its schema
