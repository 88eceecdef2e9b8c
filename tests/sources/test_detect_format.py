"""Format detection from HDU names (not file names) and the reader registry."""

from __future__ import annotations

import shutil

import pytest

from skybatch.sample import corrupt
from skybatch.sources import READERS, SourceError, detect_format, get_reader


def test_each_format_is_recognised_from_its_content(fs, tmp_path, desi_small, sdss_sample, skyvac):
    # misleading names: the content decides
    for src, fmt in ((desi_small.coadd, "desi"), (sdss_sample.paths[0], "sdss"), (skyvac.path, "skyvac")):
        dst = tmp_path / f"renamed-{fmt}.dat"
        shutil.copyfile(src, dst)
        assert detect_format(fs, str(dst)) == fmt
        assert get_reader(fmt).format == fmt


def test_truncated_spectra_file_is_still_recognised(fs, tmp_path, desi_small):
    # the format is clear from the first headers; inspect then reports the truncation
    p = corrupt.truncate(desi_small.coadd, tmp_path / "coadd-cut.fits", keep_fraction=0.3)
    assert detect_format(fs, str(p)) == "desi"


@pytest.mark.parametrize("kind", ["text", "image", "redrock", "missing", "header-cut"])
def test_unknown_and_unreadable(fs, tmp_path, desi_small, kind):
    if kind == "text":
        p, reason = corrupt.write_text_file(tmp_path / "x.fits"), "unknown-format"
    elif kind == "image":
        p, reason = corrupt.write_image_fits(tmp_path / "x.fits"), "unknown-format"
    elif kind == "redrock":
        p, reason = shutil.copyfile(desi_small.redrock, tmp_path / "x.fits"), "unknown-format"
    elif kind == "missing":
        p, reason = tmp_path / "x.fits", "unreachable"
    else:
        p, reason = corrupt.truncate(desi_small.coadd, tmp_path / "x.fits", keep_bytes=2000), "truncated"
    with pytest.raises(SourceError) as ei:
        detect_format(fs, str(p))
    assert ei.value.reason == reason and "x.fits" in str(ei.value)
    if kind == "redrock":
        assert "coadd" in str(ei.value)


def test_registry():
    assert set(READERS) == {"desi", "sdss", "skyvac"}
    assert get_reader("DESI") is READERS["desi"]
    assert READERS["desi"].grid.n == 7781 and READERS["skyvac"].grid == READERS["desi"].grid
    assert READERS["sdss"].grid.kind == "loglam" and READERS["sdss"].grid.n == 4700
    with pytest.raises(ValueError, match="known formats"):
        get_reader("hdf5")
