"""Sky-VAC reader: every METADATA column carried, ivar rule, targetid rule, desisky selections."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from skybatch.sources import SourceError, get_reader, select_sky_conditions


def test_columns_flux_and_ivar_rule(fs, skyvac):
    r = get_reader("skyvac")
    info = r.inspect(fs, str(skyvac.path))
    assert info.n_rows == 80 and info.grid.name == "desi-brz"
    names = {k.lower() for k in skyvac.metadata} | {"sky_mag_g_spec", "sky_mag_r_spec", "sky_mag_z_spec"}
    # 'program' is a standard column, so the METADATA copy is prefixed
    assert set(info.extra_columns) == (names - {"program"}) | {"vac_program"}
    blk = r.read(fs, info, 0, info.n_rows)
    raw = fits.getdata(skyvac.path, "FLUX")
    for name, col in skyvac.metadata.items():
        key = "vac_program" if name == "PROGRAM" else name.lower()
        got = blk.meta[key]
        assert got.dtype == np.dtype(info.extra_columns[key])
        if col.dtype == object:
            assert got.tolist() == col.tolist()
        else:
            np.testing.assert_array_equal(got, col)
    bad = ~np.isfinite(raw)
    assert bad.sum() == blk.n_bad_pixels == 15  # 3 rows x 5 NaN pixels
    np.testing.assert_array_equal(blk.ivar, np.where(bad, 0.0, 1.0).astype(np.float32))
    np.testing.assert_array_equal(blk.flux, np.where(bad, 0.0, raw).astype(np.float32))
    assert np.all(blk.mask[bad] == 1 << 8) and np.all(blk.mask[~bad] == 0)
    # targetid = EXPID (unique in this file); ra/dec from the tile centre
    np.testing.assert_array_equal(blk.meta["targetid"], skyvac.metadata["EXPID"].astype(np.int64))
    np.testing.assert_array_equal(blk.meta["ra"], skyvac.metadata["TILERA"])
    assert blk.meta["program"].tolist() == skyvac.metadata["PROGRAM"].tolist()
    assert set(blk.meta["spectype"]) == {"SKY"} and np.all(np.isnan(blk.meta["z"]))
    part = r.read(fs, info, 10, 20)
    np.testing.assert_array_equal(part.flux, blk.flux[10:20])
    assert part.meta["expid"].tolist() == blk.meta["expid"][10:20].tolist()


def test_selections_match_generated_conditions(fs, skyvac):
    r = get_reader("skyvac")
    info = r.inspect(fs, str(skyvac.path))
    blk = r.read(fs, info, 0, info.n_rows)
    cond = skyvac.metadata["CONDITION"]
    for name in ("dark", "moon", "twilight"):
        sel = select_sky_conditions(blk.meta, name)
        assert sel.any()
        np.testing.assert_array_equal(sel, cond == name)
        np.testing.assert_array_equal(select_sky_conditions(skyvac.metadata, name), sel)  # upper-case names work too
    # moonlight makes moon spectra brighter in the blue than dark ones
    blue = slice(0, 1000)
    assert np.median(blk.flux[cond == "moon", blue]) > 2 * np.median(blk.flux[cond == "dark", blue])


def test_selection_cut_edges():
    meta = {
        "SUNALT": np.array([-20.0, -20.1, -25, -25, -19.0, -19.0, np.nan]),
        "MOONALT": np.array([-10, -10, 5.0, 5.1, -5.0, -5.0, -10]),
        "MOONFRAC": np.array([0, 0, 0.9, 0.9, 0, 0, 0]),
        "MOONSEP": np.array([50, 50, 50, 90.0, 50, 50, 50]),
        "SUNSEP": np.array([100, 100, 100, 100, 110.0, 110.1, 100]),
        "TRANSPARENCY_GFA": np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    }
    np.testing.assert_array_equal(select_sky_conditions(meta, "dark"), [False, True, False, False, False, False, False])
    np.testing.assert_array_equal(select_sky_conditions(meta, "moon"), [False, False, False, True, False, False, False])
    np.testing.assert_array_equal(select_sky_conditions(meta, "twilight"), [False, False, False, False, True, False, False])
    meta["TRANSPARENCY_GFA"][:] = 0.0
    assert not select_sky_conditions(meta, "dark").any()
    with pytest.raises(ValueError, match="dark"):
        select_sky_conditions(meta, "bright")
    with pytest.raises(KeyError, match="MOONFRAC"):
        select_sky_conditions({k: v for k, v in meta.items() if k != "MOONFRAC"}, "moon")


def test_duplicate_expids_fall_back_to_row_index(fs, skyvac, tmp_path):
    p = tmp_path / "vac-dup.fits"
    with fits.open(skyvac.path) as hdul:
        hdul["METADATA"].data["EXPID"][1] = hdul["METADATA"].data["EXPID"][0]
        hdul.writeto(p)
    r = get_reader("skyvac")
    info = r.inspect(fs, str(p))
    blk = r.read(fs, info, 0, info.n_rows)
    np.testing.assert_array_equal(blk.meta["targetid"], np.arange(80))


def test_off_grid_and_row_mismatch(fs, skyvac, tmp_path):
    shifted = tmp_path / "vac-shift.fits"
    with fits.open(skyvac.path) as hdul:
        hdul["WAVELENGTH"].data = hdul["WAVELENGTH"].data * 1.0001
        hdul.writeto(shifted)
    with pytest.raises(SourceError) as ei:
        get_reader("skyvac").inspect(fs, str(shifted))
    assert ei.value.reason == "off-grid" and "vac-shift.fits" in str(ei.value) and "WAVELENGTH" in str(ei.value)
    short = tmp_path / "vac-short.fits"
    from skybatch.sample import corrupt

    corrupt.drop_table_rows(skyvac.path, short, hdu="METADATA", n_drop=2)
    with pytest.raises(SourceError) as ei:
        get_reader("skyvac").inspect(fs, str(short))
    assert ei.value.reason == "row-mismatch" and "METADATA" in str(ei.value)
