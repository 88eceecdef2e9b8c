"""Ingest through a flaky S3 endpoint (503s and connection resets on ~20 % of requests) equals the disk ingest."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from skybatch.pipeline.ingest import ingest
from skybatch.store.fsutil import filesystem

from ._util import make_survey
from .flaky_proxy import FlakyProxy, short_botocore_backoff

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def test_ingest_through_flaky_s3_equals_disk(dask_client, s3_endpoint, tmp_path):
    files = make_survey(tmp_path / "survey", n_healpix=2, per_file=20, seed=17)
    disk = str(tmp_path / "disk.zarr")
    assert ingest(files, disk, chunk_spectra=8, client=dask_client, progress=False).exit_code == 0
    direct = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing", "anon": False}
    fs = filesystem("s3://flaky-in", direct)
    for b in ("flaky-in", "flaky-out"):
        if not fs.exists(b):
            fs.mkdir(b)
    root = str(tmp_path / "survey")
    for f in files + [f.replace("coadd-", "redrock-") for f in files]:
        fs.put_file(f, "flaky-in/" + os.path.relpath(f, root))
    proxy = FlakyProxy(s3_endpoint, p_fail=0.2, seed=3).start()
    # botocore retries the faults (up to 10 tries) with waits of rand * 2**k s: ~140 retries slept ~75 s in all.
    # Scaled by 1/20 in this process and on the workers: the same faults injected and survived, ~4 s of sleep.
    try:
        opts = {"key": "testing", "secret": "testing", "anon": False,
                "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}}
        with short_botocore_backoff(dask_client, 0.05):
            rep = ingest(["s3://flaky-in/desi/"], "s3://flaky-out/s.zarr", chunk_spectra=8, client=dask_client,
                         progress=False, endpoint_url=proxy.url, source_options=opts, store_options=opts, retries=5)
    finally:
        proxy.stop()
    print(f"proxy: {proxy.counts}")
    print(rep.summary())
    assert rep.exit_code == 0, rep.summary()
    assert proxy.counts["503"] > 0 and proxy.counts["reset-after"] > 0
    s3 = xr.open_zarr("s3://flaky-out/s.zarr", storage_options=direct)
    local = xr.open_zarr(disk)
    assert s3.source.values.tolist() == [
        "s3://flaky-in/" + os.path.relpath(u, root) for u in local.source.values.tolist()]
    assert dict(s3.sizes) == dict(local.sizes)
    for name in [n for n in list(local.data_vars) + list(local.coords) if n != "source"]:
        a, b = s3[name].values, local[name].values
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert a.tolist() == b.tolist(), name
