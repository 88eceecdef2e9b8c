"""Sky geometry of the tile encoder: WCS from header strings, one sky region in every pixel grid."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.models.tile_geometry import band_geometry, parse_tan_header, plane_centre, resample_to_region, tan_header
from skybatch.models.tile_sky import ViewPlanes, auto_region_arcsec, sky_cube
from skybatch.sample.tiles import make_survey_views, write_npz_tiles


def test_tan_header_matches_astropy():
    from astropy.io import fits
    from astropy.wcs import WCS

    h = tan_header(150.1, 2.2, (16.7, 15.2), 0.3, rotation_deg=20.0)
    ours, theirs = parse_tan_header(h), WCS(fits.Header.fromstring(h))
    pix = np.array([[3.0, 7.0], [30.5, -2.0], [16.0, 15.0]])
    sky = theirs.all_pix2world(pix, 0)
    x, y = ours.sky_to_pixel(sky[:, 0], sky[:, 1])
    np.testing.assert_allclose(np.stack([x, y], 1), pix, atol=1e-6)
    ra, dec = ours.pixel_to_sky(pix[:, 0], pix[:, 1])
    np.testing.assert_allclose(np.stack([ra, dec], 1), sky, atol=1e-9)
    assert ours.pixel_scale_arcsec == pytest.approx(0.3)
    assert parse_tan_header("") is None
    with pytest.raises(ValueError, match="CRVAL"):
        parse_tan_header("CTYPE1  = 'RA---TAN'".ljust(80) + "CTYPE2  = 'DEC--TAN'".ljust(80))


@pytest.fixture(scope="module")
def one_star():
    # one star per tile, seen in every band on the three real grids (0.2, 0.1, 0.3 "/px)
    return make_survey_views(4, 9.6, seed=5, source_density_arcsec2=0.0, min_sources=1, star_fraction=1.0,
                             p_dropout=0.0, p_single_instrument=0.0, p_missing_band=0.0, p_missing_instrument=0.0)


def test_survey_views_have_the_real_grids(one_star, tmp_path):
    grids = {k: (v.image.shape[-1], v.pixel_scale_arcsec, len(v.bands)) for k, v in one_star.views.items()}
    assert grids == {"rubin": (48, 0.2, 6), "euclid_vis": (96, 0.1, 1), "euclid_nisp": (32, 0.3, 3)}
    written = write_npz_tiles(one_star, tmp_path)
    assert sorted(written) == ["euclid_nisp", "euclid_vis", "rubin"]
    z = np.load(written["euclid_nisp"][0])
    assert z["image"].shape == (3, 32, 32) and str(z["instrument"]) == "euclid"
    assert parse_tan_header(str(z["wcs"][0])).pixel_scale_arcsec == pytest.approx(0.3)


def _views(sv, truth=False):
    from skybatch.sample.tiles import _wcs_header

    out = {}
    for name, v in sv.views.items():
        n, nb = v.band_present.shape
        wcs = np.array([[_wcs_header(*v.center_radec[t], v.image.shape[-1], v.pixel_scale_arcsec,
                                     *v.band_offset_px[t, b]) for b in range(nb)] for t in range(n)], dtype=object)
        img = v.truth if truth else v.image
        out[name] = ViewPlanes(v.tile_id, v.bands, v.band_present, wcs, np.nan_to_num(img), np.nan_to_num(v.noise, nan=np.inf))
    return out


def test_the_same_star_lands_on_the_same_grid_pixel_in_every_band(one_star):
    bands = one_star.bands
    cube = sky_cube(_views(one_star, truth=True), bands, 8.0, 32)
    assert cube["present"].all() and not cube["set_aside"]
    yy, xx = np.mgrid[:32, :32]
    for t in range(4):
        v = one_star.views["rubin"]
        # the star's sky position on the grid (0.25"/px, north up, east left), from the truth catalogue
        sy = 15.5 + (v.sources["y"][t] - 23.5) * 0.2 / 0.25
        sx = 15.5 + (v.sources["x"][t] - 23.5) * 0.2 / 0.25
        if not (4 < sy < 27 and 4 < sx < 27):
            continue  # a star at the edge loses part of its PSF
        for b in range(len(bands)):
            img = cube["image"][t, b]
            assert (img * yy).sum() / img.sum() == pytest.approx(sy, abs=0.08), bands[b]
            assert (img * xx).sum() / img.sum() == pytest.approx(sx, abs=0.08), bands[b]
        # total flux is kept by the resampling (star well inside the region)
        vis = one_star.views["euclid_vis"]
        assert cube["image"][t, bands.index("euclid_vis")].sum() == pytest.approx(vis.truth[t, 0].sum(), rel=0.02)


def test_resampled_noise_follows_the_pixel_areas():
    w = parse_tan_header(tan_header(10.0, -5.0, (48.5, 48.5), 0.1))
    img, rms = resample_to_region(np.zeros((96, 96)), np.ones((96, 96)), w, plane_centre(w, (96, 96)), 16, 0.25)
    # 6.25 native pixels per grid pixel: flux x 6.25, independent noise adds in quadrature
    np.testing.assert_allclose(rms, 6.25 / 2.5, rtol=1e-5)
    g = band_geometry(w, plane_centre(w, (96, 96)), 0.25)
    assert g[0] == pytest.approx(np.log(0.1 / 0.25)) and abs(g[1]) <= 0.5 and abs(g[2]) <= 0.5


def test_views_join_on_tile_id_and_planes_are_checked_against_the_wcs(one_star):
    views = _views(one_star)
    ref = sky_cube(views, one_star.bands, 8.0, 16)
    # NISP rows in another order: joined on tile id, not row index
    nisp = views["euclid_nisp"]
    order = np.array([2, 0, 3, 1])
    views["euclid_nisp"] = ViewPlanes(nisp.tile_id[order], nisp.band_key, nisp.present[order], nisp.wcs[order],
                                      nisp.image[order], nisp.noise[order])
    again = sky_cube(views, one_star.bands, 8.0, 16)
    np.testing.assert_array_equal(again["image"], ref["image"])
    # a VIS plane whose WCS points 5" away is set aside with its reason; a plane without WCS too
    vis = views["euclid_vis"]
    bad = vis.wcs.copy()
    t0 = one_star.views["euclid_vis"]
    bad[1, 0] = tan_header(t0.center_radec[1, 0] + 5 / 3600, t0.center_radec[1, 1], (48.5, 48.5), 0.1)
    bad[2, 0] = ""
    views["euclid_vis"] = ViewPlanes(vis.tile_id, vis.band_key, vis.present, bad, vis.image, vis.noise)
    cube = sky_cube(views, one_star.bands, 8.0, 16)
    reasons = {(t, r) for t, _, r in cube["set_aside"]}
    assert reasons == {("tile_00001", "wcs-centre-mismatch"), ("tile_00002", "no-wcs")}
    vi = one_star.bands.index("euclid_vis")
    assert not cube["present"][1, vi] and not cube["present"][2, vi] and cube["present"][0, vi]
    assert auto_region_arcsec(_views(one_star)) == pytest.approx(9.4, abs=0.2)
