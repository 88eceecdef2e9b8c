"""Model jobs on a generated survey with ground truth: anomalies on top, calibrated classes, embeddings."""

from __future__ import annotations

import glob
import os
import shutil

import equinox as eqx
import jax
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from skybatch.pipeline.batches import StoreBatches, split_pixels
from skybatch.pipeline.ingest import ingest
from skybatch.pipeline.modeling import TrainJobConfig, classify, embed, score, train
from skybatch.pipeline.preprocess import preprocess

pytestmark = pytest.mark.slow

# Rest frame 1230-10000 Å: what DESI's 3600-9824 Å covers for z = 0 (stars, galaxies) up to QSOs at
# z ~ 3, so BAL troughs blueward of CIV / SiIV and every galaxy's and star's lines are on the grid,
# while the Lyα forest (random absorbers in every z > 2 QSO) stays off it. No rest window is
# observed at every redshift, so each spectrum is divided by the median of all its good pixels.
RECIPE = dict(grid="loglam:3.09:4.0:5e-4", rest_frame=True, normalize="median", normalize_window=None)


@pytest.fixture(scope="module")
def model_store(dask_client, tmp_path_factory):
    from skybatch.sample.survey import generate_sample_survey

    d = tmp_path_factory.mktemp("models")
    generate_sample_survey(str(d / "data"), n_healpix=6, spectra_per_file=250, n_sdss=1, anomaly_fraction=0.01,
                           seed=5)
    ingest([str(d / "data" / "desi" / "**" / "coadd-*.fits")], str(d / "s.zarr"), chunk_spectra=256,
           client=dask_client, progress=False)
    preprocess(str(d / "s.zarr"), str(d / "p.zarr"), client=dask_client, progress=False, **RECIPE)
    truth = pd.read_parquet(d / "data" / "truth.parquet").set_index("targetid")
    return d, str(d / "p.zarr"), truth


def test_store_batches_deterministic_and_split_by_healpix(model_store):
    d, store, _ = model_store
    b = StoreBatches(store, batch_size=64, val_fraction=0.25, split_nside=256, seed=1)
    ds = xr.open_zarr(store)
    stream = b.make_batches(0)
    first = [next(stream) for _ in range(30)]
    resumed = b.make_batches(20)
    for i in range(20, 30):
        again = next(resumed)
        np.testing.assert_array_equal(again["flux"], first[i]["flux"])
    # validation and training never share a HEALPix pixel (nside 256)
    from astropy import units as u
    from astropy_healpix import HEALPix

    pix = HEALPix(nside=256, order="nested").lonlat_to_healpix(ds.ra.values * u.deg, ds.dec.values * u.deg)
    assert not set(pix[b.val_rows]) & set(pix[b.train_rows()])
    assert b.n_val > 0 and b.n_train > b.n_val
    assert split_pixels(np.array([5, 5, 9]), 0.5).tolist()[:2] in ([True, True], [False, False])


def test_vae_anomalies_ranked_on_top(model_store, dask_client):
    d, store, truth = model_store
    rep = train(TrainJobConfig(store=store, model="vae", out=str(d / "vae"), steps=1000, batch_size=128,
                               split_nside=256, progress=False), dask_client)
    assert rep.steps == 1000
    out = score(store, str(d / "vae"), top=30, client=dask_client, progress=False)
    ds = xr.open_zarr(store)
    is_anom = truth.loc[ds.targetid.values, "is_anomaly"].to_numpy()
    s = ds.anomaly_score.values
    k = max(int(round(0.01 * len(s))), int(is_anom.sum()))
    top = np.argsort(-s)[:k]
    recall = is_anom[top].sum() / is_anom.sum()
    assert recall >= 0.9, f"recall of injected anomalies in the top 1% ({k}): {recall:.2f}"
    cat = pd.read_parquet(out["top_parquet"])
    assert cat["targetid"].iloc[0] == ds.targetid.values[np.argmax(s)]
    assert (d / "vae" / "loss_curve.png").exists()
    # the table (scored block by block, the top rows chosen by partition) is the whole-array ranking
    want = np.argsort(-s, kind="stable")[:30]
    assert cat["spectrum"].tolist() == want.tolist()
    assert cat["targetid"].tolist() == ds.targetid.values[want].tolist()
    assert cat["source"].tolist() == ds.source.values[want].tolist()
    np.testing.assert_array_equal(cat["anomaly_score"], s[want])


def test_top_table_reads_only_the_top_rows(model_store, dask_client, tmp_path):
    """Every shard of ``source`` and ``spectype`` without a top row is made unreadable: the top table is
    still written, the same (a table that read the whole variables would fail)."""
    d, store, _ = model_store
    if not (d / "vae" / "loss_curve.png").exists():  # the model of test_vae_anomalies_ranked_on_top
        train(TrainJobConfig(store=store, model="vae", out=str(d / "vae"), steps=50, batch_size=128,
                             split_nside=256, progress=False), dask_client)
    copy = str(tmp_path / "p.zarr")
    shutil.copytree(store, copy)
    first = pd.read_parquet(score(copy, str(d / "vae"), top=5, client=dask_client, progress=False,
                                  out_dir=str(tmp_path / "a"))["top_parquet"])
    chunk = int(xr.open_zarr(copy).attrs["chunk_spectra"])
    keep = {int(r) // chunk for r in first["spectrum"]}
    broken = 0
    for var in ("source", "spectype"):
        for f in glob.glob(os.path.join(copy, var, "c", "*")):
            if int(os.path.basename(f)) not in keep:
                with open(f, "wb") as fh:
                    fh.write(b"not a shard")
                broken += 1
    assert broken >= 2
    with pytest.raises((RuntimeError, ValueError)):  # a corrupt chunk or shard
        np.asarray(zarr.open_group(copy, mode="r")["source"][:])
    again = pd.read_parquet(score(copy, str(d / "vae"), top=5, client=dask_client, progress=False,
                                  out_dir=str(tmp_path / "b"))["top_parquet"])
    pd.testing.assert_frame_equal(again, first)


def test_classifier_calibrated_on_held_out_pixels(model_store, dask_client):
    d, store, truth = model_store
    rep = train(TrainJobConfig(store=store, model="classifier", out=str(d / "clf"), steps=300, batch_size=128,
                               split_nside=256, progress=False), dask_client)
    assert rep.metrics["val_accuracy"] > 0.8  # chance is ~1/3
    assert rep.metrics["ece_after"] <= 0.02
    classify(store, str(d / "clf"), client=dask_client, progress=False)
    ds = xr.open_zarr(store)
    assert ds.class_prob.dims == ("spectrum", "class")
    assert list(ds["class"].values) == ["GALAXY", "QSO", "STAR"]
    np.testing.assert_allclose(ds.class_prob.values.sum(axis=1), 1.0, rtol=1e-5)
    pred = np.array(["GALAXY", "QSO", "STAR"])[ds.class_pred.values]
    true = truth.loc[ds.targetid.values, "spectype"].to_numpy()
    assert np.mean(pred == true) > 0.8


def test_embed_equals_encoder_in_memory(model_store, dask_client):
    d, store, _ = model_store
    if not (d / "vae" / "model").exists():
        train(TrainJobConfig(store=store, model="vae", out=str(d / "vae"), steps=50, batch_size=128,
                             split_nside=256, progress=False), dask_client)
    embed(store, str(d / "vae"), client=dask_client, progress=False)
    from skybatch.models import load

    vae, _ = load(str(d / "vae" / "model"))
    ds = xr.open_zarr(store)
    sl = slice(0, 200)
    mu = jax.vmap(lambda f, i: vae.encode(f, i)[0])(ds.flux.values[sl], ds.ivar.values[sl])
    np.testing.assert_allclose(ds.embedding.values[sl], np.asarray(mu), rtol=1e-4, atol=1e-5)
    assert isinstance(vae, eqx.Module)
