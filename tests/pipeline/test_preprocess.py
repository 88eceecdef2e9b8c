"""Preprocess a store into a model-ready store on the session cluster: same code as in memory, resumable."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import xarray as xr

from skybatch.pipeline.ingest import ingest
from skybatch.pipeline.preprocess import preprocess
from skybatch.spectra import PreprocessRecipe, preprocess_block
from skybatch.store.schema import check_spectra_store

from .test_ingest import coadds


@pytest.fixture(scope="module")
def desi_store(survey, dask_client, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("pp") / "desi.zarr")
    ingest(coadds(survey), store, chunk_spectra=64, client=dask_client, progress=False)
    return store


def test_preprocess_equals_in_memory_and_resumes(desi_store, dask_client, tmp_path):
    recipe = PreprocessRecipe(grid="loglam:3.45:3.95:2e-4", rest_frame=True, normalize="median",
                              normalize_window=(4200.0, 4800.0), bad_redshift="drop")
    out = str(tmp_path / "rest.zarr")
    rep = preprocess(desi_store, out, recipe, client=dask_client, progress=False)
    assert rep.exit_code == 0 and rep.chunks_written == rep.chunks_total
    ds_in, ds = xr.open_zarr(desi_store), xr.open_zarr(out)
    check_spectra_store(ds, out)
    assert ds.sizes["spectrum"] == ds_in.sizes["spectrum"]
    assert ds.attrs["wavelength_frame"] == "rest"
    assert ds.attrs["preprocessing"]["recipe"]["rest_frame"] is True
    np.testing.assert_allclose(np.log10(ds.wavelength.values[[0, -1]]), [3.45, 3.95], atol=1e-9)
    assert ds.flux.encoding["chunks"][0] == 64
    assert ds.targetid.values.tolist() == ds_in.targetid.values.tolist()
    # the pipeline writes what the pure function computes on the same arrays
    sl = slice(64, 128)
    ref = preprocess_block(ds_in.flux.values[sl], ds_in.ivar.values[sl], ds_in.mask.values[sl],
                           ds_in.wavelength.values, ds_in.z.values[sl], ds_in.zwarn.values[sl], recipe)
    np.testing.assert_array_equal(ds.flux.values[sl], ref.flux)
    np.testing.assert_array_equal(ds.ivar.values[sl], ref.ivar)
    np.testing.assert_array_equal(ds.norm_scale.values[sl], ref.scale)
    assert np.isfinite(ds.flux.values).all() and np.isfinite(ds.ivar.values).all()
    # spectra with a bad redshift were dropped (ivar = 0) by the stated rule
    bad = ds_in.zwarn.values != 0
    if bad.any():
        assert (ds.ivar.values[bad] == 0).all()
    # resumable: lose one chunk's record and its data, re-run rewrites just that chunk, same store
    before = ds.flux.values.copy()
    rec = sorted(glob.glob(out + ".manifest/stages/preprocess/chunk-000000001-*.parquet"))
    assert len(rec) == 1
    os.remove(rec[0])
    from skybatch.store.spectra_store import open_group

    open_group(out)["flux"][64:128] = np.zeros((64, ds.sizes["wavelength"]), np.float32)
    again = preprocess(desi_store, out, recipe, client=dask_client, progress=False)
    assert again.chunks_written == 1 and again.chunks_skipped == rep.chunks_total - 1
    np.testing.assert_array_equal(xr.open_zarr(out).flux.values, before)


def test_preprocess_refuses_other_recipe_into_same_out(desi_store, dask_client, tmp_path):
    out = str(tmp_path / "o.zarr")
    preprocess(desi_store, out, client=dask_client, progress=False, normalize="total")
    with pytest.raises(ValueError, match="another recipe"):
        preprocess(desi_store, out, client=dask_client, progress=False, normalize="median")
    with pytest.raises(ValueError, match="normalize"):
        preprocess(desi_store, str(tmp_path / "x.zarr"), client=dask_client, normalize="mode")
