"""Generated multi-band Rubin + Euclid tiles: physics a scientist would check, and the .npz layout."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models.band_sampling import SURVEY_BANDS
from skybatch.sample.tiles import BAND_PSF_FWHM_ARCSEC, make_multiband_tiles, write_npz_tiles


@pytest.fixture(scope="module")
def tiles():
    return make_multiband_tiles(48, 32, seed=11)


def test_shapes_band_list_and_missing_bands(tiles):
    n, nb = 48, len(SURVEY_BANDS)
    assert tiles.image.shape == tiles.noise.shape == (n, nb, 32, 32)
    assert tiles.image.dtype == np.float32 and tiles.noise.dtype == np.float32
    assert tiles.bands == tuple(b.name for b in SURVEY_BANDS)
    assert tiles.band_present.shape == (n, nb)
    # missing planes are NaN, present planes are finite with positive noise
    miss = ~tiles.band_present
    assert miss.any(), "the generator should drop some bands"
    assert np.isnan(tiles.image[miss]).all() and np.isnan(tiles.noise[miss]).all()
    pres = tiles.image[tiles.band_present]
    assert np.isfinite(pres).all() and (tiles.noise[tiles.band_present] > 0).all()
    assert (tiles.band_present.sum(axis=1) >= 2).all()
    assert len(set(tiles.tile_id)) == n


def test_noise_map_is_the_pixel_rms(tiles):
    # where the noiseless model is ~0, (image - truth) / noise must be unit normal
    empty = np.abs(np.nan_to_num(tiles.truth)) < 1e-3 * np.nan_to_num(tiles.noise, nan=1.0)
    ok = tiles.band_present[:, :, None, None] & empty
    resid = ((tiles.image - tiles.truth) / tiles.noise)[ok]
    assert resid.size > 10_000
    assert abs(resid.mean()) < 0.03
    assert abs(resid.std() - 1.0) < 0.03


def test_psf_is_band_dependent_and_flux_conserved():
    # one bright star: its measured FWHM follows the band's PSF, its rendered flux the catalogue
    t = make_multiband_tiles(4, 32, seed=1, source_density=0.0, min_sources=1, star_fraction=1.0,
                             mag_range=(19.0, 19.0), p_missing_band=0.0, p_missing_instrument=0.0,
                             p_dropout=0.0, p_single_instrument=0.0, max_offset_px=0.0)
    yy, xx = np.mgrid[0:32, 0:32]
    fwhm = {}
    for b, band in enumerate(t.bands):
        m = t.truth[0, b]
        tot = m.sum()
        cx, cy = (m * xx).sum() / tot, (m * yy).sum() / tot
        var = (m * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / tot / 2.0  # per axis, px²
        fwhm[band] = 2.3548 * np.sqrt(var - 1.0 / 12.0) * t.pixel_scale_arcsec
        assert tot == pytest.approx(t.sources["flux"][0, b], rel=2e-3), band
    for band, expected in BAND_PSF_FWHM_ARCSEC.items():
        assert fwhm[band] == pytest.approx(expected, rel=0.1), band
    assert fwhm["euclid_vis"] < fwhm["euclid_h"] < fwhm["rubin_r"]


def test_source_colours_follow_their_sed(tiles):
    s = tiles.sources
    lam = tiles.wavelength_nm
    # cool stars are brighter in H than in u, hot stars the other way round (black bodies)
    star = s["kind"] == 0
    u, h = tiles.band_index("rubin_u"), tiles.band_index("euclid_h")
    ratio = s["flux"][star, h] / np.maximum(s["flux"][star, u], 1e-30)
    assert ratio.min() < 1.0 < ratio.max()
    # dropouts have no flux blueward of Lyman alpha and do have flux in the reddest band
    drop = s["dropout"]
    assert drop.any()
    blue = lam[None, :] < 121.6 * (1 + s["redshift"][drop, None])
    assert (s["flux"][drop][blue] == 0).all()
    assert (s["flux"][drop & ~s["single_instrument"], h] > 0).all()
    # single-instrument sources are absent from every band of the other instrument
    single = s["single_instrument"]
    assert single.any()
    inst = np.array(tiles.instruments)
    for k in np.flatnonzero(single):
        seen = s["flux"][k] > 0
        assert len(set(inst[seen])) == 1


def test_band_offsets_are_small_and_recorded(tiles):
    off = tiles.band_offset_px
    assert off.shape == (48, len(SURVEY_BANDS), 2)
    assert np.abs(off).max() <= 0.3
    assert np.std(off) > 0.05


def test_deterministic_given_seed():
    a = make_multiband_tiles(3, 16, seed=5)
    b = make_multiband_tiles(3, 16, seed=5)
    c = make_multiband_tiles(3, 16, seed=6)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(np.nan_to_num(a.image), np.nan_to_num(c.image))


def test_npz_tiles_per_instrument(tiles, tmp_path):
    from astropy.io import fits
    from astropy.wcs import WCS

    written = write_npz_tiles(tiles, tmp_path)
    assert set(written) == {"rubin", "euclid"}
    assert [p.stem for p in written["rubin"]] == [p.stem for p in written["euclid"]] == list(tiles.tile_id)
    t = 7
    with np.load(written["euclid"][t]) as z:
        assert z["image"].shape == z["rms"].shape == (4, 32, 32)
        assert list(z["band"]) == ["VIS", "Y", "J", "H"]
        assert str(z["tile_id"]) == tiles.tile_id[t]
        sel = [tiles.band_index(k) for k in z["band_key"]]
        np.testing.assert_array_equal(z["image"], tiles.image[t, sel])
        np.testing.assert_array_equal(z["rms"], tiles.noise[t, sel])
        np.testing.assert_array_equal(z["band_present"], tiles.band_present[t, sel])
        header = str(z["wcs"][0])
    with np.load(written["rubin"][t]) as z:
        assert list(z["band"]) == ["u", "g", "r", "i", "z", "y"]
        assert z["image"].shape == (6, 32, 32)
    # the WCS puts the tile centre at the recorded RA/Dec, shifted by the band's sub-pixel offset
    w = WCS(fits.Header.fromstring(header))
    dy, dx = tiles.band_offset_px[t, tiles.band_index("euclid_vis")]
    ra, dec = w.pixel_to_world_values(15.5 + dx, 15.5 + dy)
    np.testing.assert_allclose([ra, dec], tiles.center_radec[t], atol=1e-9)
