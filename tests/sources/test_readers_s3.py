"""The readers on a real S3 endpoint (moto): same values as from disk, redrock found next to the coadd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skybatch.sources import detect_format, get_reader

pytestmark = pytest.mark.s3


def test_desi_and_sdss_from_s3_equal_local(fs, s3_options, s3_bucket, desi_small, sdss_sample):
    import s3fs

    s3 = s3fs.S3FileSystem(**s3_options)
    key = f"{s3_bucket}/dr1/healpix/main/dark/273/27345"
    for p in (desi_small.coadd, desi_small.redrock):
        s3.put_file(p, f"{key}/{Path(p).name}")
    spec = sdss_sample.paths[0]
    s3.put_file(str(spec), f"{s3_bucket}/sdss/{spec.name}")
    cases = [("desi", desi_small.coadd, f"s3://{key}/{Path(desi_small.coadd).name}"),
             ("sdss", str(spec), f"s3://{s3_bucket}/sdss/{spec.name}")]
    for fmt, local, url in cases:
        assert detect_format(s3, url) == fmt
        r = get_reader(fmt)
        info_s3, info_local = r.inspect(s3, url), r.inspect(fs, local)
        assert info_s3.n_rows == info_local.n_rows and info_s3.size == info_local.size
        assert info_s3.checksum.split("/")[0] == info_local.checksum.split("/")[0]  # FITS CHECKSUMs, not mtimes
        a, b = r.read(s3, info_s3, 0, info_s3.n_rows), r.read(fs, info_local, 0, info_local.n_rows)
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.mask, b.mask)
        for k in b.meta:
            assert a.meta[k].tolist() == b.meta[k].tolist() or np.allclose(a.meta[k], b.meta[k], equal_nan=True), k
    # the redrock file was found on S3: redshifts are there
    blk = get_reader("desi").read(s3, get_reader("desi").inspect(s3, cases[0][2]), 0, 2)
    assert np.isfinite(blk.meta["z"]).all() and set(blk.meta["spectype"]) <= {"GALAXY", "QSO", "STAR"}
