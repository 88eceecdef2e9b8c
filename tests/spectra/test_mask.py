"""Bad-pixel masking and mask-bit settings."""

from __future__ import annotations

import numpy as np
import pytest

from skybatch.spectra import (
    BADPIX,
    DESI_BAD_BITS,
    DESI_SPECMASK,
    SDSS_BAD_BITS,
    SDSS_SPPIXMASK,
    describe_mask,
    mask_bad_pixels,
    mask_bits_from_names,
    parse_mask_bits,
)


def test_bad_values_are_zeroed_and_flagged_and_good_ones_untouched():
    rng = np.random.default_rng(0)
    flux = rng.normal(5, 1, (4, 50)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (4, 50)).astype(np.float32)
    mask = np.zeros((4, 50), np.int32)  # DESI iron masks are int32
    flux[0, 3] = np.nan
    flux[0, 4] = -np.inf
    ivar[1, 5] = np.nan
    ivar[1, 6] = np.inf
    ivar[2, 7] = 0
    ivar[2, 8] = -3
    mask[3, 9] = 1 << DESI_SPECMASK["COSMIC"]
    mask[3, 10] = 1 << DESI_SPECMASK["SOMEBADPIX"]  # informational: not bad by default
    bad = np.zeros((4, 50), bool)
    bad[0, 3] = bad[0, 4] = bad[1, 5] = bad[1, 6] = bad[2, 7] = bad[2, 8] = bad[3, 9] = True
    with np.errstate(all="raise"):
        f, iv, m = mask_bad_pixels(flux, ivar, mask)
    assert m.dtype == np.uint32
    assert np.isfinite(f).all() and np.isfinite(iv).all()
    np.testing.assert_array_equal(f[bad], 0)
    np.testing.assert_array_equal(iv[bad], 0)
    np.testing.assert_array_equal((m & BADPIX) != 0, bad)
    np.testing.assert_array_equal(f[~bad], flux[~bad])
    np.testing.assert_array_equal(iv[~bad], ivar[~bad])
    assert m[3, 10] == 1 << DESI_SPECMASK["SOMEBADPIX"]
    assert np.isnan(flux[0, 3])  # inputs are not modified


def test_mask_bits_setting_selects_which_survey_bits_are_bad():
    flux = np.ones((1, 3), np.float32)
    ivar = np.ones((1, 3), np.float32)
    mask = np.array([[1 << SDSS_SPPIXMASK["NOSKY"], 1 << SDSS_SPPIXMASK["NEARBADPIXEL"], 0]], np.uint32)
    _, iv_sdss, _ = mask_bad_pixels(flux, ivar, mask, bad_bits=parse_mask_bits("sdss"))
    np.testing.assert_array_equal(iv_sdss[0], [0, 1, 1])
    _, iv_none, m_none = mask_bad_pixels(flux, ivar, mask, bad_bits=0)
    np.testing.assert_array_equal(iv_none[0], [1, 1, 1])
    assert (m_none & BADPIX).sum() == 0
    _, iv_named, _ = mask_bad_pixels(flux, ivar, mask, bad_bits=parse_mask_bits("sdss:NEARBADPIXEL"))
    np.testing.assert_array_equal(iv_named[0], [1, 0, 1])


def test_parse_mask_bits_forms_and_errors():
    assert parse_mask_bits("desi") == DESI_BAD_BITS
    assert parse_mask_bits("SDSS") == SDSS_BAD_BITS
    assert parse_mask_bits("none") == 0
    assert parse_mask_bits("desi+sdss") == DESI_BAD_BITS | SDSS_BAD_BITS
    assert parse_mask_bits("desi:cosmic,NODATA") == (1 << 2) | (1 << 8)
    assert parse_mask_bits("0x10") == 16 == parse_mask_bits(16)
    assert mask_bits_from_names("sdss", ["NODATA"]) == 1 << 24
    assert DESI_BAD_BITS & (1 << DESI_SPECMASK["SOMEBADPIX"]) == 0
    assert SDSS_BAD_BITS == sum(1 << b for b in (18, 22, 23, 24, 25))
    with pytest.raises(ValueError, match="COSMICS.*allowed"):
        parse_mask_bits("desi:COSMICS")
    with pytest.raises(ValueError, match="unknown survey 'lsst'"):
        parse_mask_bits("lsst:FOO")
    with pytest.raises(ValueError, match="cannot read 'dsei'"):
        parse_mask_bits("dsei")
    with pytest.raises(ValueError, match="uint32"):
        parse_mask_bits(1 << 40)


def test_describe_mask_names_bits():
    assert describe_mask((1 << 2) | BADPIX, "desi") == ["COSMIC", "BADPIX"]
    assert describe_mask(1 << 24, "sdss") == ["NODATA"]


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="ivar has"):
        mask_bad_pixels(np.ones((2, 3)), np.ones((2, 4)))
