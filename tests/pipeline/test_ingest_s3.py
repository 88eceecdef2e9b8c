"""Ingest from a real S3 endpoint (moto's server on 127.0.0.1) equals ingest from disk."""

from __future__ import annotations

import os

import pytest
import s3fs
import xarray as xr

from skybatch.pipeline.ingest import ingest

from .test_ingest import assert_stores_equal, coadds

pytestmark = pytest.mark.s3


def _upload(survey, s3_options, bucket) -> str:
    fs = s3fs.S3FileSystem(**s3_options)
    for f in coadds(survey):
        rel = os.path.relpath(f, survey)
        fs.put(f, f"{bucket}/{rel}")
        fs.put(f.replace("coadd-", "redrock-"), f"{bucket}/{rel}".replace("coadd-", "redrock-"))
    return f"s3://{bucket}/desi"


def test_s3_source_and_store_equal_local(dask_client, survey, s3_options, s3_bucket, s3_endpoint, tmp_path):
    prefix = _upload(survey, s3_options, s3_bucket)
    local = str(tmp_path / "local.zarr")
    ingest(coadds(survey), local, chunk_spectra=45, client=dask_client, progress=False)

    # sources on S3 (a prefix, listed recursively), store on local disk
    from_s3 = str(tmp_path / "from_s3.zarr")
    rep = ingest([prefix], from_s3, chunk_spectra=45, client=dask_client, progress=False, endpoint_url=s3_endpoint)
    assert rep.exit_code == 0, rep.summary()
    assert_stores_equal(local, from_s3)
    ds = xr.open_zarr(from_s3)
    assert all(s.startswith(f"s3://{s3_bucket}/") for s in ds.source.values)
    assert "secret" not in str(ds.attrs) and "testing" not in str(ds.attrs["provenance"]["store_options"])

    # store on S3 too: plain xarray.open_zarr with storage options reads it
    store = f"s3://{s3_bucket}/stores/desi.zarr"
    rep = ingest([prefix + "/**/coadd-*.fits"], store, chunk_spectra=45, client=dask_client, progress=False,
                 endpoint_url=s3_endpoint)
    assert rep.exit_code == 0, rep.summary()
    assert_stores_equal(local, store, storage_options_b=s3_options)
    again = ingest([prefix], store, chunk_spectra=45, client=dask_client, progress=False, endpoint_url=s3_endpoint)
    assert again.chunks_written == 0


def test_unreachable_bucket_is_set_aside(dask_client, survey, s3_endpoint, tmp_path):
    store = str(tmp_path / "s.zarr")
    rep = ingest(["s3://no-such-bucket-here/desi/", coadds(survey)[0]], store, client=dask_client, progress=False,
                 endpoint_url=s3_endpoint)
    assert rep.exit_code == 3
    (s,) = rep.set_aside
    assert "no-such-bucket-here" in s["message"] and s["reason"] in ("unreachable", "not-found")
    assert xr.open_zarr(store).sizes["spectrum"] > 0  # the rest went on
