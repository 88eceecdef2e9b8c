"""A reference with finer pixels than the science image (a 0.08"/px space-like reference for a
0.2"/px ground image, rotated 25 deg, aligned only through the WCSs), as plain FITS, end to end.

The reference is area-averaged onto the science grid (flux-conserving, variance with the squared
footprint weights): S_corr on empty sky has unit variance and injected transients are found. With
the old interpolation onto the coarser grid the reference noise was mis-described and S_corr's
spread was far from 1 (checked here too, through the alignment alone).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from skybatch.imaging import align_to_grid
from skybatch.pipeline.difference import difference
from skybatch.sample.images import make_rotated_pair, write_plain_fits
from skybatch.store.difference_store import open_difference_store

SIZE = 256
THRESHOLD = 5.0


@pytest.fixture(scope="module")
def pair():
    return make_rotated_pair((SIZE, SIZE), ref_scale=0.08, rotation_deg=25.0, seed=21, n_stars=150,
                             n_saturated=1, n_transients=0, ref_sigma=3.0)


@pytest.fixture(scope="module")
def run(pair, dask_client, tmp_path_factory):
    root = tmp_path_factory.mktemp("finer")
    (root / "sci").mkdir()
    (root / "ref").mkdir()
    kw = dict(GAIN=2.0, RDNOISE=3.0, SATURATE=pair.saturation)
    write_plain_fits(root / "sci" / "f_r.fits", pair.new, pair.new_wcs, "r", MAGZP=27.0 + 2.5 * np.log10(1.3),
                     EXPTIME=60.0, **kw)
    write_plain_fits(root / "ref" / "f_r.fits", pair.ref, pair.ref_wcs, "r", MAGZP=27.0, EXPTIME=300.0, **kw)
    out = str(root / "d.zarr")
    return difference(str(root / "sci"), str(root / "ref"), out, client=dask_client, progress=False,
                      inject=30, inject_snr=(5.0, 30.0), inject_seed=2, threshold=THRESHOLD)


def test_reference_is_area_averaged_with_its_noise(pair):
    """The resampled reference noise is what the propagated variance says (per pixel, sum w^2 var)."""
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(pair.ref.shape) * pair.ref_sigma).astype(np.float32)
    var = np.full(pair.ref.shape, pair.ref_sigma**2, np.float32)
    al = align_to_grid(noise, pair.ref_wcs, pair.new_wcs, (SIZE, SIZE), variance=var, flux_conserving=True)
    assert al.pixel_area_ratio == pytest.approx((0.2 / 0.08) ** 2, rel=1e-4)
    ok = al.footprint & np.isfinite(al.image)
    assert ok.mean() > 0.95
    z2 = np.square(al.image[ok]) / al.variance[ok]
    assert abs(z2.mean() - 1.0) < 0.05, z2.mean()
    # an interpolated reference would carry ~a^2/4 x the noise of the average it stands for
    interp = align_to_grid(noise, pair.ref_wcs, pair.new_wcs, (SIZE, SIZE), variance=var, flux_conserving=True,
                           method="interp")
    assert np.nanvar(interp.image[ok]) > 3 * np.nanvar(al.image[ok])


def test_empty_sky_s_corr_is_unit_variance(run, pair):
    assert run.exit_code == 0, run.summary()
    ds = open_difference_store(run.out)[f"{SIZE}x{SIZE}"]
    assert ds.aligned.values.tolist() == [True]
    s = ds.S_corr.values[0]
    flags = ds.mask.values[0]
    model = pair.new_model  # the static sky on the science grid (transients are only the injected ones)
    empty = (flags == 0) & np.isfinite(s) & (model < 0.02 * pair.new_sigma)
    m = 24
    empty[:m] = empty[-m:] = False
    empty[:, :m] = empty[:, -m:] = False
    assert empty.mean() > 0.3
    # injected sources are excluded by clipping at 5 sigma (there are only 30 of them)
    v = s[empty]
    v = v[np.abs(v) < 5]
    assert abs(np.std(v) - 1.0) < 0.1, np.std(v)
    assert abs(np.mean(v)) < 0.1, np.mean(v)


def test_injected_transients_are_recovered(run):
    rec = pd.read_parquet(run.out + ".recovery.parquet")
    assert len(rec) >= 20
    ideal = norm.cdf(rec.snr.to_numpy() - THRESHOLD).sum()
    assert rec.recovered.sum() >= 0.9 * ideal, (rec.recovered.sum(), ideal)
