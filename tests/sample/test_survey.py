"""The generated sample survey: real layouts on disk, a truth table the readers agree with."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
from astropy.io import fits

from skybatch.sample.survey import generate_sample_survey
from skybatch.sources import get_reader

COADD_HDUS = ["PRIMARY", "FIBERMAP", "EXP_FIBERMAP"] + [
    f"{a}_{k}" for a in "BRZ" for k in ("WAVELENGTH", "FLUX", "IVAR", "MASK", "RESOLUTION")
] + ["SCORES"]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return generate_sample_survey(
        tmp_path_factory.mktemp("survey"), n_healpix=2, spectra_per_file=20, n_sdss=5, skyvac_rows=10,
        anomaly_fraction=0.1, seed=4,
    )


def test_layout_on_disk(survey):
    root = survey.out_dir
    assert len(survey.desi_coadds) == 2 and len(survey.sdss_files) == 5 and survey.skyvac is not None
    for hpx, c, r in zip(survey.healpix, survey.desi_coadds, survey.desi_redrocks):
        assert c == root / "desi/healpix/main/dark" / str(hpx // 100) / str(hpx) / f"coadd-main-dark-{hpx}.fits"
        assert r == c.parent / f"redrock-main-dark-{hpx}.fits" and r.exists()
    for p in survey.sdss_files:
        m = re.fullmatch(r"spec-(\d{4,5})-(\d{5})-(\d{4})\.fits", p.name)
        assert m and p.parent.name == m.group(1) and p.parent.parent == root / "sdss/spectra/lite"
    assert survey.sources() == survey.desi_coadds + survey.sdss_files + [survey.skyvac]


def test_truth_table_agrees_with_the_readers(survey):
    truth = survey.truth()
    assert len(truth) == 2 * 20 + 5 and truth["targetid"].is_unique
    assert truth["targetid"].dtype == np.int64 and truth["is_anomaly"].dtype == bool
    assert set(truth["anomaly_kind"]) == {"", "bal", "strong_emission", "wrong_z", "odd_continuum"}
    assert set(truth["spectype"]) <= {"GALAXY", "QSO", "STAR"}
    fs = fsspec.filesystem("file")
    seen = 0
    for path in survey.desi_coadds + survey.sdss_files:
        fmt = "desi" if path.name.startswith("coadd") else "sdss"
        r = get_reader(fmt)
        info = r.inspect(fs, str(path))
        blk = r.read(fs, info, 0, info.n_rows)
        t = truth[truth["source"] == path.relative_to(survey.out_dir).as_posix()]
        assert (t["format"] == fmt).all() and len(t) == info.n_rows
        assert blk.meta["targetid"].tolist() == t["targetid"].tolist()
        assert blk.meta["source_row"].tolist() == t["source_row"].tolist()
        assert blk.meta["spectype"].tolist() == t["spectype"].tolist()
        assert blk.meta["healpix"].tolist() == t["healpix"].tolist()
        np.testing.assert_allclose(blk.meta["z"], t["z"], rtol=1e-6)
        np.testing.assert_array_equal(blk.meta["zwarn"], t["zwarn"])
        seen += len(t)
    assert seen == len(truth)


def test_same_seed_same_survey(tmp_path):
    a = generate_sample_survey(tmp_path / "a", n_healpix=1, spectra_per_file=4, n_sdss=1, seed=9)
    b = generate_sample_survey(tmp_path / "b", n_healpix=1, spectra_per_file=4, n_sdss=1, seed=9)
    c = generate_sample_survey(tmp_path / "c", n_healpix=1, spectra_per_file=4, n_sdss=1, seed=10)
    ta, tb = a.truth(), b.truth()
    assert ta.equals(tb)
    assert not ta["targetid"].equals(c.truth()["targetid"])
    np.testing.assert_array_equal(fits.getdata(a.desi_coadds[0], "R_FLUX"), fits.getdata(b.desi_coadds[0], "R_FLUX"))


def test_desi_files_have_the_iron_layout(survey):
    coadd, redrock = survey.desi_coadds[0], survey.desi_redrocks[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad CHECKSUM/DATASUM would warn
        hdul = fits.open(coadd, checksum=True)
        rr = fits.open(redrock, checksum=True)
        hdul.readall()
        rr.readall()
    with hdul, rr:
        assert [h.name for h in hdul] == COADD_HDUS
        assert all("CHECKSUM" in h.header and "DATASUM" in h.header for h in hdul)
        p = hdul[0].header
        hpx = survey.healpix[0]
        assert p["SPGRP"] == "healpix" and p["SPGRPVAL"] == p["HPXPIXEL"] == hpx and p["HPXNSIDE"] == 64
        assert p["HPXNEST"] == "True" and isinstance(p["HPXNEST"], str) and p["FIBERMIN"] < 0
        assert (p["SURVEY"], p["PROGRAM"]) == ("main", "dark")
        fm, efm, sc = hdul["FIBERMAP"], hdul["EXP_FIBERMAP"], hdul["SCORES"]
        assert (fm.header["TFIELDS"], fm.header["NAXIS1"]) == (67, 317)
        assert (efm.header["TFIELDS"], efm.header["NAXIS1"]) == (26, 162)
        assert (sc.header["TFIELDS"], sc.header["NAXIS1"]) == (42, 172)
        assert fm.columns["OBJTYPE"].format == "3A" and fm.columns["TARGETID"].format == "K"
        nspec = fm.header["NAXIS2"]
        assert nspec == 20 + 2 + 1
        for a, nwave, w0 in (("B", 2751, 3600.0), ("R", 2326, 5760.0), ("Z", 2881, 7520.0)):
            w = hdul[f"{a}_WAVELENGTH"].data
            assert w.dtype == np.dtype(">f8") and w.size == nwave and w[0] == w0
            np.testing.assert_array_equal(w, np.arange(w0, w0 + (nwave - 1) * 0.8 + 0.4, 0.8))
            assert hdul[f"{a}_FLUX"].data.dtype == np.dtype(">f4") and hdul[f"{a}_FLUX"].shape == (nspec, nwave)
            assert hdul[f"{a}_FLUX"].header["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
            mh = hdul[f"{a}_MASK"].header
            assert mh["BITPIX"] == 32 and "BZERO" not in mh  # iron int32
            res = hdul[f"{a}_RESOLUTION"].data
            assert res.shape == (nspec, 11, nwave)
            live = hdul["FIBERMAP"].data["COADD_NUMEXP"] > 0
            np.testing.assert_allclose(res[live][:, :, 100:-100].sum(axis=1), 1.0, atol=1e-5)
            assert np.all(res[~live] == 0)
        # EXP_FIBERMAP: exposure-ordered, one row per target x exposure, counts = COADD_NUMEXP
        e = efm.data
        order = np.lexsort((e["FIBER"], e["EXPID"]))
        np.testing.assert_array_equal(order, np.arange(len(e)))
        counts = {t: n for t, n in zip(*np.unique(e["TARGETID"], return_counts=True))}
        for t, n in zip(fm.data["TARGETID"], fm.data["COADD_NUMEXP"]):
            assert counts[t] == max(n, 1)
        assert [h.name for h in rr] == ["PRIMARY", "REDSHIFTS", "FIBERMAP", "EXP_FIBERMAP", "TSNR2"]
        assert rr["REDSHIFTS"].header["NAXIS1"] == 170 and rr["TSNR2"].header["TFIELDS"] == 33
        assert rr[0].header["RRVER"] and rr[0].header["TEMNAM00"] == "GALAXY"
        np.testing.assert_array_equal(rr["FIBERMAP"].data["TARGETID"], rr["REDSHIFTS"].data["TARGETID"])
    # on disk the pixels are big-endian: the first B_FLUX value, decoded by hand
    raw = Path(coadd).read_bytes()
    from skybatch.sample.corrupt import hdu_offsets

    _, d0, _ = hdu_offsets(coadd)["B_FLUX"]
    assert np.frombuffer(raw[d0 : d0 + 4], ">f4")[0] == fits.getdata(coadd, "B_FLUX")[0, 0]


def test_sdss_files_have_the_lite_layout(survey):
    with fits.open(survey.sdss_files[0]) as h:
        assert [x.name for x in h] == ["PRIMARY", "COADD", "SPALL", "SPZLINE"]
        p = h[0].header
        assert p["TELESCOP"] == "SDSS 2.5-M" and p["VERS2D"].startswith("v5") and p["COEFF1"] == 1e-4
        assert p["FIBERID"] > 0 and p["PLUG_RA"] == h["SPALL"].data["PLUG_RA"][0]
        c = h["COADD"]
        assert c.columns.names == ["flux", "loglam", "ivar", "and_mask", "or_mask", "wdisp", "sky", "model"]
        assert c.header["NAXIS1"] == 32
        np.testing.assert_allclose(c.data["loglam"], p["COEFF0"] + 1e-4 * np.arange(c.header["NAXIS2"]), atol=1e-6)
        k = h["SPALL"].columns.names.index("SPECOBJID") + 1
        assert h["SPALL"].header[f"TZERO{k}"] == 2**63 and h["SPALL"].data["SPECOBJID"].dtype == np.uint64
        assert h["SPZLINE"].header["NAXIS2"] == 32 and h["SPZLINE"].header["TFIELDS"] == 19
