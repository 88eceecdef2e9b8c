"""ZOGY difference imaging at survey scale, end to end on the session Dask cluster.

Real inputs: generated science/reference pairs (known transients, PSFs, noise, WCS) written as
LSST calexp-like FITS files (IMAGE + MASK + VARIANCE, big-endian, WCS in the IMAGE header) and as
``.npz`` tiles; real outputs: the Zarr difference store, the Parquet catalogue, the cutouts, the PNG.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi
from astropy.io import fits

from skybatch.pipeline.difference import DifferenceConfig, difference, injection_recovery
from skybatch.sample.images import CALEXP_MASK_PLANES, calexp_headers
from skybatch.sample.imaging import make_image_pair
from skybatch.store.difference_store import (
    check_difference_store,
    open_candidates,
    open_difference_store,
    outputs,
    read_candidates,
)
from skybatch.store.manifest import Manifest

SATURATION = 60000.0
#: (tile, seed, shape, transients, reference grid shift, format)
FIELDS = [
    ("tile_0000", 1, (384, 384), 8, (0.3, -0.2), "fits"),  # reference on another grid: resampled
    ("tile_0001", 2, (384, 384), 8, (0.0, 0.0), "fits"),
    ("tile_0002", 3, (384, 384), 0, (0.0, 0.0), "fits"),  # null pair: no transient
    ("tile_0003", 4, (256, 256), 6, (0.0, 0.0), "npz"),
]


def write_calexp(path, image, variance, wcs, band="r", *, saturated=None, detected=None):
    """An LSST calexp-like file: primary (INSTRUME, FILTER) + IMAGE (WCS) + MASK (MP_* planes) + VARIANCE.

    Saturated pixels get the SAT plane, source pixels the DETECTED plane (which must not mask them).
    """
    ph, h, mh = calexp_headers(wcs.to_header() if wcs is not None else fits.Header(), band,
                               mask_planes={**CALEXP_MASK_PLANES, "DETECTED": 5})
    mask = np.zeros(image.shape, np.int32)
    if saturated is not None:
        mask[saturated] |= 1 << 1
    if detected is not None:
        mask[detected] |= 1 << 5
    fits.HDUList([
        ph, fits.ImageHDU(image.astype(">f4"), header=h), fits.ImageHDU(mask.astype(">i4"), header=mh),
        fits.ImageHDU(variance.astype(">f4"), name="VARIANCE"),
    ]).writeto(path, overwrite=True)


def write_npz(path, image, variance, wcs, band, tile):
    """A one-band ``.npz`` tile: image, variance, band, instrument, tile_id and the WCS header string."""
    hdr = "" if wcs is None else wcs.to_header().tostring(endcard=False, padding=False)
    np.savez(path, image=image.astype(np.float32), variance=variance.astype(np.float32), band=np.array([band]),
             instrument=np.array("rubin"), tile_id=np.array(tile), wcs=np.array([hdr]))


def write_pair(root, tile, p, fmt="fits", band="r"):
    """Science into ``root/sci``, reference into ``root/ref`` (same file names: paired on tile and band)."""
    for side in ("sci", "ref"):
        os.makedirs(os.path.join(root, side), exist_ok=True)
    if fmt == "fits":
        write_calexp(os.path.join(root, "sci", f"{tile}_{band}.fits"), p.new, p.new_var, p.new_wcs, band,
                     saturated=p.new_saturated, detected=p.new_model > 3 * p.new_sigma)
        write_calexp(os.path.join(root, "ref", f"{tile}_{band}.fits"), p.ref, p.ref_var, p.ref_wcs, band,
                     saturated=p.ref_saturated)
    else:
        write_npz(os.path.join(root, "sci", f"{tile}.npz"), p.new, p.new_var, p.new_wcs, band, tile)
        write_npz(os.path.join(root, "ref", f"{tile}.npz"), p.ref, p.ref_var, p.ref_wcs, band, tile)


def make_field(seed, shape, n_transients, shift):
    return make_image_pair(shape, seed=seed, n_stars=int(200 * shape[0] * shape[1] / 384**2), n_transients=n_transients,
                           transient_snr=(12.0, 40.0), shift=shift, n_saturated=2, saturation=SATURATION)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """The generated pairs (truth) and where their files are."""
    root = str(tmp_path_factory.mktemp("pairs"))
    truth = {}
    for tile, seed, shape, nt, shift, fmt in FIELDS:
        p = make_field(seed, shape, nt, shift)
        band = "r" if fmt == "fits" else "g"
        write_pair(root, tile, p, fmt, band)
        truth[f"{tile}/{band}"] = p
    return root, truth


@pytest.fixture(scope="module")
def main_run(fields, dask_client, tmp_path_factory):
    root, truth = fields
    out = str(tmp_path_factory.mktemp("diff") / "diff.zarr")
    rep = difference([f"{root}/sci"], [f"{root}/ref"], out, client=dask_client, progress=False, saturation=SATURATION)
    return out, rep


def match(cat: pd.DataFrame, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest candidate to each (x, y) and its distance (px)."""
    idx, dist = [], []
    for xi, yi in zip(x, y):
        d = np.hypot(cat["x"].to_numpy() - xi, cat["y"].to_numpy() - yi)
        j = int(np.argmin(d)) if len(d) else -1
        idx.append(j)
        dist.append(d[j] if j >= 0 else np.inf)
    return np.asarray(idx), np.asarray(dist)


def source_free(p, erode=6, edge=30):
    sf = ndi.binary_erosion(p.source_free(), iterations=erode)
    sf[:edge] = sf[-edge:] = False
    sf[:, :edge] = sf[:, -edge:] = False
    return sf


def test_pipeline_finds_the_transients(main_run, fields):
    out, rep = main_run
    _root, truth = fields
    assert rep.exit_code == 0, rep.summary()
    assert rep.n_pairs == 4 and rep.pairs_written == 4 and not rep.set_aside and not rep.failed
    assert rep.groups == {"256x256": 1, "384x384": 3}
    check_difference_store(out)
    cat = read_candidates(out)
    pulls = []
    n_false = 0
    for pid, p in truth.items():
        sel = cat[cat.pair_id == pid].reset_index(drop=True)
        t = p.transients
        j, dist = match(sel, t["x"], t["y"])
        # every transient (S/N 12-40 in the science image alone) is found above 5 sigma, within 1 px
        assert len(t["x"]) == 0 or (dist < 1.0).all(), (pid, dist)
        if len(t["x"]):
            hit = sel.loc[j]
            assert (hit.significance.to_numpy() >= 5.0).all() and (hit.sign.to_numpy() == 1).all()
            # fluxes agree with the injected fluxes within their errors
            pull = (hit.flux.to_numpy() - t["flux"]) / hit.flux_err.to_numpy()
            assert np.abs(pull).max() < 4.0, (pid, pull)
            pulls += list(pull)
            # sky positions from the science WCS
            sky = p.new_wcs.pixel_to_world(t["x"], t["y"])
            dra = (hit.ra.to_numpy() - sky.ra.deg) * np.cos(np.deg2rad(sky.dec.deg)) * 3600
            ddec = (hit.dec.to_numpy() - sky.dec.deg) * 3600
            assert np.hypot(dra, ddec).max() < 0.2  # arcsec (1 px = 0.2")
        n_false += len(sel) - len(set(j[dist < 1.0]))
    assert len(pulls) == 22 and abs(np.mean(pulls)) < 0.8
    # the null pair and the other fields: bright-star residuals are vetoed (counted, not catalogued), so the
    # false positives are at most the pure-noise rate of a calibrated S_corr (~0.4 beyond 5 sigma per Mpix)
    # plus one per 4 Mpix: 0.34 on these 0.52 Mpix, so none
    area = sum(p.new.size for p in truth.values()) / 1e6
    assert n_false <= 0.4 * area + area / 4, cat.to_string()
    assert rep.n_vetoed > 0
    assert len(cat[cat.pair_id == "tile_0002/r"]) == 0


def test_store_contents(main_run, fields):
    out, rep = main_run
    _root, truth = fields
    groups = open_difference_store(out)
    ds = groups["384x384"].load(scheduler="threads")
    assert list(ds.pair_id.values) == ["tile_0000/r", "tile_0001/r", "tile_0002/r"]
    assert ds.done.values.all()
    assert list(ds.aligned.values) == [True, False, False]  # only tile_0000's reference is on another grid
    np.testing.assert_allclose(ds.flux_ratio.values, 1.3, rtol=0.05)
    assert set(ds.new_psf_method.values) == {"stack"} and set(ds.flux_ratio_method.values) == {"stars"}
    np.testing.assert_allclose(ds.new_fwhm.values, 3.0, rtol=0.1)
    assert all(s.endswith(f"{t}_r.fits") for s, t in zip(ds.science.values, ds.tile_id.values))
    assert "tile_0000" in ds.reference.values[0] and "/ref/" in ds.reference.values[0]
    # S_corr is unit normal on empty sky of the null pair (estimated PSFs, flux ratio, background)
    null = truth["tile_0002/r"]
    s = ds.S_corr.values[2][source_free(null)]
    assert s.size > 5000
    assert 0.9 < float(s.std()) < 1.15 and abs(float(s.mean())) < 0.1
    assert np.isfinite(ds.D.values).all() and (ds.F_psf_err.values > 0).all()
    # pixel flags: the SAT plane and the saturation level flag saturated pixels; sources (DETECTED plane) are not bad
    p1 = truth["tile_0001/r"]
    m = ds["mask"].values[1]
    assert p1.new_saturated.any() and (m[p1.new_saturated | p1.ref_saturated] == 2).all()
    assert (m & 1).mean() < 1e-3 and (m[p1.new_model > 10 * p1.new_sigma] & 1).sum() == 0
    assert ((ds["mask"].values[0] & 1).mean()) < 0.01  # resampled reference: only the footprint's edge
    assert ds.attrs["shape"] == [384, 384]
    npz = groups["256x256"]
    assert npz.pair_id.values.tolist() == ["tile_0003/g"] and npz.science.values[0].endswith("tile_0003.npz")


def test_catalogue_and_cutouts_line_up(main_run):
    out, rep = main_run
    cat = read_candidates(out)
    assert rep.n_candidates == len(cat) and len(cat) >= 22
    assert cat.candidate.tolist() == list(range(len(cat)))
    assert not cat.duplicated(["pair", "rank"]).any()
    c = open_candidates(out).load(scheduler="threads")
    assert c.sizes["candidate"] == len(cat) and list(c.kind.values) == ["science", "reference", "difference"]
    assert [str(v) for v in c.pair_id.values] == cat.pair_id.tolist()
    np.testing.assert_allclose(c.x.values, cat.x.to_numpy())
    groups = {k: v.load(scheduler="threads") for k, v in open_difference_store(out).items()}
    h = c.sizes["y"] // 2
    for row in cat.itertuples():
        g = groups[row.group]
        assert g.pair_id.values[row.pair_index] == row.pair_id
        # the difference stamp is D around the candidate, whose peak holds the catalogued S_corr
        stamp = c.cutouts.values[row.candidate, 2]
        assert stamp[h, h] == g.D.values[row.pair_index, row.y_peak, row.x_peak]
        assert g.S_corr.values[row.pair_index, row.y_peak, row.x_peak] == pytest.approx(row.S_corr, rel=1e-6)
        # a brightening source is brighter in the science stamp centre than around it
        if row.sign > 0 and row.significance > 10:
            sci = c.cutouts.values[row.candidate, 0]
            assert sci[h, h] > np.nanmedian(sci)
    png = outputs(out)["png"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 20_000


def test_rerun_writes_nothing_new_and_resumes(main_run, fields, dask_client):
    out, _rep = main_run
    root, _truth = fields
    cat0 = read_candidates(out)
    man = Manifest(out, stage="difference")
    records = sorted(glob.glob(man.chunk_dir + "/*.parquet"))
    chunks = glob.glob(out + "/384x384/S_corr/c/**/*", recursive=True)
    maps = {p: os.path.getmtime(p) for p in chunks if os.path.isfile(p)}
    assert len(maps) == 3
    kw = dict(client=dask_client, progress=False, saturation=SATURATION)
    again = difference([f"{root}/sci"], [f"{root}/ref"], out, **kw)
    assert again.exit_code == 0 and again.pairs_written == 0 and again.pairs_skipped == 4
    assert sorted(glob.glob(man.chunk_dir + "/*.parquet")) == records
    assert {p: os.path.getmtime(p) for p in maps} == maps  # no map chunk rewritten
    pd.testing.assert_frame_equal(read_candidates(out), cat0)

    # a run killed after differencing two pairs but before recording the third one and finishing:
    # the re-run does the missing pair only and ends with the same catalogue (no duplicates)
    os.remove(records[1])
    os.remove(outputs(out)["catalogue"])
    resumed = difference([f"{root}/sci"], [f"{root}/ref"], out, **kw)
    assert resumed.pairs_written == 1 and resumed.pairs_skipped == 3
    pd.testing.assert_frame_equal(read_candidates(out), cat0)
    assert open_candidates(out).sizes["candidate"] == len(cat0)
    # other settings into the same store: refused, naming the setting, its flag and both values
    with pytest.raises(ValueError, match=r"threshold \(--threshold\): store 5.0, now 4.0.*--out"):
        difference([f"{root}/sci"], [f"{root}/ref"], out, threshold=4.0, **kw)
    with pytest.raises(ValueError, match=r"psf_accuracy \(--psf-accuracy\): store 0.005, now 0.02"):
        difference([f"{root}/sci"], [f"{root}/ref"], out, psf_accuracy=0.02, **kw)


def test_settings_mismatch_with_an_older_store():
    """A store made before a setting existed resumes when that setting is at its default, else names it."""
    cfg = DifferenceConfig(science=["s"], reference=["r"], out="o")
    old = {k: v for k, v in cfg.science_settings().items() if k != "psf_accuracy"}
    assert cfg.settings_mismatch(old) == {}
    assert cfg.settings_mismatch(cfg.science_settings()) == {}
    diff = DifferenceConfig(science=["s"], reference=["r"], out="o", psf_accuracy=0.01).settings_mismatch(old)
    assert list(diff) == ["psf_accuracy"] and diff["psf_accuracy"][1] == 0.01
    assert "not recorded" in str(diff["psf_accuracy"][0])
    with pytest.raises(ValueError, match="psf_accuracy.*--psf-accuracy"):
        DifferenceConfig(science=["s"], reference=["r"], out="o", psf_accuracy=-1)


def test_bad_inputs_are_set_aside(fields, dask_client, tmp_path):
    from skybatch.sample.corrupt import truncate

    root, truth = fields
    sci, ref = tmp_path / "sci", tmp_path / "ref"
    sci.mkdir()
    ref.mkdir()
    good = "tile_0001_r.fits"
    shutil.copy(f"{root}/sci/{good}", sci / good)
    shutil.copy(f"{root}/ref/{good}", ref / good)
    # a truncated science file (its reference is fine)
    truncate(f"{root}/sci/tile_0000_r.fits", sci / "tile_0000_r.fits", keep_fraction=0.6)
    shutil.copy(f"{root}/ref/tile_0000_r.fits", ref / "tile_0000_r.fits")
    # a science image without a reference
    shutil.copy(f"{root}/sci/tile_0002_r.fits", sci / "tile_0002_r.fits")
    # shapes differ and neither image has a WCS to resample with
    p = truth["tile_0003/g"]
    write_npz(sci / "tile_0009.npz", p.new, p.new_var, None, "g", "tile_0009")
    write_npz(ref / "tile_0009.npz", p.ref[:200, :200], p.ref_var[:200, :200], None, "g", "tile_0009")
    out = str(tmp_path / "diff.zarr")
    rep = difference([str(sci), str(tmp_path / "missing_r.fits")], [str(ref)], out, client=dask_client,
                     progress=False, saturation=SATURATION, max_candidates=5)
    reasons = {s["reason"]: s["message"] for s in rep.set_aside}
    assert rep.exit_code == 3, rep.summary()
    assert set(reasons) == {"truncated", "no-reference", "shape-mismatch", "not-found"}, reasons
    assert "tile_0000_r.fits" in reasons["truncated"]
    assert "tile_0002" in reasons["no-reference"] and "--tile-pattern" in reasons["no-reference"]
    assert "200x200" in reasons["shape-mismatch"] and "WCS" in reasons["shape-mismatch"]
    assert "missing_r.fits" in reasons["not-found"]
    # the rest went on: the good pair is differenced, its 5 most significant detections catalogued
    assert rep.pairs_written == 1 and rep.n_candidates == 5 and rep.n_dropped >= 3
    cat = read_candidates(out)
    assert cat.significance.min() > 10 and "beyond --max-candidates" in rep.summary()
    ds = open_difference_store(out)["384x384"]
    assert ds.done.values.tolist() == [True] and ds.pair_id.values.tolist() == ["tile_0001/r"]
    assert set(Manifest(out, stage="difference").quarantined().reason) >= {"truncated", "shape-mismatch"}
    assert "SET ASIDE [shape-mismatch]" in rep.summary()


def test_subtiles(fields, dask_client, tmp_path):
    root, truth = fields
    out = str(tmp_path / "sub.zarr")
    rep = difference([f"{root}/sci/tile_0000_r.fits", f"{root}/sci/tile_0002_r.fits"], [f"{root}/ref"], out,
                     client=dask_client, progress=False, saturation=SATURATION, subtile=192, subtile_overlap=48)
    assert rep.exit_code == 0 and rep.pairs_written == 2, rep.summary()
    assert [u["pair_id"] for u in rep.unused_references] == ["tile_0001/r", "tile_0003/g"]
    ds = open_difference_store(out)["384x384"].load(scheduler="threads")
    assert ds.n_subtiles.values.tolist() == [4, 4]
    cat = read_candidates(out)
    p = truth["tile_0000/r"]
    sel = cat[cat.pair_id == "tile_0000/r"].reset_index(drop=True)
    j, dist = match(sel, p.transients["x"], p.transients["y"])
    assert (dist < 1.0).all()
    pull = (sel.flux.to_numpy()[j] - p.transients["flux"]) / sel.flux_err.to_numpy()[j]
    assert np.abs(pull).max() < 4.0
    # no seams: S_corr of the stitched null pair is unit normal on empty sky, also along the cuts
    null = truth["tile_0002/r"]
    sf = source_free(null)
    s = ds.S_corr.values[1]
    assert 0.9 < float(s[sf].std()) < 1.15
    seam = np.zeros_like(sf)
    seam[186:198, :] = seam[:, 186:198] = True
    assert 0.85 < float(s[sf & seam].std()) < 1.2
    assert len(cat[cat.pair_id == "tile_0002/r"]) == 0  # the null pair, in sub-tiles too


def test_injection_recovery(fields, dask_client, tmp_path):
    import json

    root, _truth = fields
    out = str(tmp_path / "inj.zarr")
    rep = injection_recovery([f"{root}/sci/tile_0002_r.fits"], [f"{root}/ref/tile_0002_r.fits"], out, n=60,
                             snr=(2.0, 40.0), seed=3, client=dask_client, progress=False, saturation=SATURATION)
    assert rep.exit_code == 0, rep.summary()
    with open(outputs(out)["recovery_json"]) as f:
        summary = json.load(f)
    assert summary == rep.recovery
    tot = summary["totals"]
    assert tot["n_injected"] >= 45  # as many as fit a stamp apart away from edges and saturated stars
    bins = {b["snr_lo"]: b for b in summary["bins"]}
    bright = [b for lo, b in bins.items() if lo >= 8]
    assert sum(b["n_recovered"] for b in bright) >= 0.9 * sum(b["n_injected"] for b in bright) > 10
    faint = bins[0.0]
    assert faint["n_injected"] >= 3 and faint["completeness"] <= 0.5  # S/N < 3 stays below a 5 sigma threshold
    assert tot["false_per_mpix"] == pytest.approx(tot["n_false"] / (tot["area_pixels"] / 1e6))
    assert tot["n_false"] <= 0.4 * tot["area_pixels"] / 1e6 + tot["area_pixels"] / 4e6  # 0.1 here: none
    # fluxes unbiased with honest errors (a source injected onto a bright star's wing is an outlier: robust stats)
    pulls = summary["pulls_snr_ge_10"]
    assert pulls["n"] >= 20 and abs(pulls["median"]) < 0.4 and 0.6 < pulls["std_robust"] < 1.4
    assert summary["position_error_px_median"] < 0.5
    table = pd.read_parquet(outputs(out)["recovery_table"])
    cat = read_candidates(out)
    assert int(cat.injected.sum()) == tot["n_recovered"] == int(table.recovered.sum())
    hit = table[table.recovered]
    rows = cat.set_index("candidate").loc[hit.candidate]
    assert (np.hypot(rows.x.to_numpy() - hit.x.to_numpy(), rows.y.to_numpy() - hit.y.to_numpy()) < 2.0).all()
    assert "injection-recovery:" in rep.summary()


def test_tile_store_inputs(fields, dask_client, tmp_path):
    """Science and reference ingested into tile stores first, then differenced view by view."""
    from skybatch.pipeline.tile_ingest import ingest_tiles

    root, truth = fields
    stores = {}
    for side in ("sci", "ref"):
        stores[side] = str(tmp_path / f"{side}.zarr")
        r = ingest_tiles([f"{root}/{side}/tile_0003.npz"], stores[side], chunk_tiles=1, client=dask_client,
                         progress=False)
        assert r.exit_code == 0, r.summary()
    out = str(tmp_path / "diff.zarr")
    rep = difference(stores["sci"], stores["ref"], out, client=dask_client, progress=False, science_view="rubin",
                     reference_view="rubin", bands=["g"])
    assert rep.exit_code == 0 and rep.pairs_written == 1, rep.summary()
    ds = open_difference_store(out)["256x256"]
    assert ds.science.values[0] == f"{stores['sci']}#rubin/tile_0003/g"
    p = truth["tile_0003/g"]
    cat = read_candidates(out)
    _j, dist = match(cat, p.transients["x"], p.transients["y"])
    assert (dist < 1.0).all()
    with pytest.raises(ValueError, match="science_view"):
        difference(stores["sci"], stores["ref"], str(tmp_path / "x.zarr"), client=dask_client, science_view="euclid")


def test_config_errors_name_the_setting(tmp_path):
    base = dict(science=["a.fits"], reference=["b.fits"], out=str(tmp_path / "o.zarr"))
    for bad, flag in [({"threshold": -1}, "--threshold"), ({"cutout_size": 30}, "--cutout-size"),
                      ({"subtile": 10}, "--subtile"), ({"noise": "rms"}, "--noise"),
                      ({"inject_snr": (5, 2)}, "--inject-snr"), ({"tile_pattern": "tile_(\\d+)"}, "--tile-pattern"),
                      ({"out": "a.fits"}, "--out"), ({"science": []}, "--science")]:
        with pytest.raises(ValueError, match=flag):
            DifferenceConfig(**{**base, **bad})
    c = DifferenceConfig(**base, inject_snr=[3, 9])
    assert c.inject_snr == (3.0, 9.0) and c.identity() != DifferenceConfig(**base).identity()
    assert "secret" not in str(DifferenceConfig(**base, store_options={"secret": "x"}).public_dict())
