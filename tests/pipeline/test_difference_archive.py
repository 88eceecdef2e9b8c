"""Differencing files laid out the way archives ship them, end to end on the session Dask cluster.

The science image is scaled int16 (BSCALE/BZERO) with scattered BLANK pixels, gzipped
(``.fits.gz``); the reference is fpack'ed (RICE_1, the ``COMPRESSED_IMAGE`` extension) with NaN
pixels and a NaN border. The scattered bad pixels are holes (filled before ZOGY, kept out of
detection over about a FWHM): the transients among them are found, and nothing else is.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from skybatch.pipeline.difference import difference
from skybatch.sample.imaging import make_image_pair
from skybatch.store.difference_store import open_difference_store, read_candidates

SIZE = 256


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    pair = make_image_pair((SIZE, SIZE), seed=21, n_stars=400, n_transients=8, transient_snr=(12.0, 40.0),
                           n_saturated=0, new_fwhm=3.0, ref_fwhm=2.2)
    r = np.random.default_rng(5)
    h = pair.new_wcs.to_header()
    h.update(FILTER="r", GAIN=pair.new_gain, EXPTIME=60.0, MAGZP=27.0 + 2.5 * np.log10(pair.flux_ratio))
    bscale, bzero, blank = 0.5, 16000.0, -32768
    q = np.clip(np.round((pair.new - bzero) / bscale), -32767, 32767)
    holes = r.integers(0, SIZE * SIZE, 120)  # ~0.2 % BLANK pixels, as a bad-pixel mask would leave
    q.ravel()[holes] = blank
    sci = fits.PrimaryHDU(q.astype(">i2"), h)
    sci.header.update(BSCALE=bscale, BZERO=bzero, BLANK=blank)
    buf = io.BytesIO()
    sci.writeto(buf)
    (d / "sci").mkdir()
    (d / "sci" / "field_r.fits.gz").write_bytes(gzip.compress(buf.getvalue()))
    ref = pair.ref.astype(np.float32)
    ref.ravel()[r.integers(0, SIZE * SIZE, 120)] = np.nan
    ref[:, :10] = np.nan  # a NaN border: a wide bad region, kept a P_D width away
    hr = pair.ref_wcs.to_header()
    hr.update(FILTER="r", GAIN=pair.ref_gain, EXPTIME=60.0, MAGZP=27.0)
    (d / "ref").mkdir()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(ref, hr, compression_type="RICE_1")]).writeto(
        d / "ref" / "field_r.fits.fz")
    return d, pair


def test_archive_layouts_are_differenced_and_transients_found(files, dask_client):
    d, pair = files
    out = str(d / "diff.zarr")
    rep = difference([str(d / "sci")], [str(d / "ref")], out, client=dask_client, progress=False)
    assert rep.exit_code == 0 and rep.pairs_written == 1, rep.summary()
    (ds,) = open_difference_store(out).values()
    mask = ds.mask.values[0]
    # the BLANK pixels of the science image and the NaN pixels of the reference are bad, not numbers
    assert 200 <= int(((mask & 1) != 0)[:, 12:].sum()) <= 260
    cat = read_candidates(out)
    t = pair.transients
    tx, ty = np.asarray(t["x"]), np.asarray(t["y"])
    assert len(tx) >= 6
    dist = np.hypot(cat.x.to_numpy()[:, None] - tx[None], cat.y.to_numpy()[:, None] - ty[None])
    found = (dist < 2.0).any(axis=0)
    far_from_border = tx > 10 + 2 * 19  # beyond the NaN border's P_D-width margin
    assert found[far_from_border].all(), pd.DataFrame({"x": tx, "y": ty, "found": found})
    # every candidate is a transient: the holes leave no residual above the threshold
    assert (dist.min(axis=1) < 2.0).all(), cat[["x", "y", "S_corr"]]
    # the S/N on D is about the science image's own (the reference is deeper)
    snr = cat.snr.to_numpy()[dist.argmin(axis=0)[found]]
    ratio = np.median(snr / np.asarray(t["snr_new"])[found])
    assert 0.7 < ratio < 1.1, ratio
