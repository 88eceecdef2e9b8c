"""Whole-file FITS DATASUM / CHECKSUM verification on real files written by astropy: a clean file passes,
a changed data byte fails DATASUM, a changed header byte fails CHECKSUM; each names the HDU."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from skybatch.sources import _fits, _fitssum
from skybatch.sources.base import SourceError


def _write(path) -> None:
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(600, dtype=">f4").reshape(20, 30), name="FLUX"),
                         fits.BinTableHDU.from_columns([fits.Column("X", "E", array=np.ones(7))], name="TAB")])
    hdus[0].header["OBSERVER"] = "someone"
    hdus.writeto(path, checksum=True)


def _verify(path) -> int:
    size = path.stat().st_size
    with open(path, "rb") as f:
        return _fitssum.verify_checksums(f, _fits.scan_fits(f, str(path), size), str(path))


def _patch(path, at: int, new: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(new)


def test_clean_file_passes_and_counts_its_hdus(tmp_path):
    p = tmp_path / "ok.fits"
    _write(p)
    assert _verify(p) == 3


def test_changed_data_byte_fails_datasum(tmp_path):
    p = tmp_path / "data.fits"
    _write(p)
    with open(p, "rb") as f:
        flux = _fits.scan_fits(f, str(p), p.stat().st_size).entries[1]
    _patch(p, flux.data_offset + 100, b"\x7f")
    with pytest.raises(SourceError, match=r"HDU 1 \(FLUX\) fails its DATASUM check") as e:
        _verify(p)
    assert e.value.reason == "checksum"


def test_changed_header_byte_fails_checksum(tmp_path):
    p = tmp_path / "header.fits"
    _write(p)
    raw = p.read_bytes()
    at = raw.index(b"someone")
    _patch(p, at, b"S")  # still a valid header, different bytes
    with pytest.raises(SourceError, match=r"HDU 0 \(PRIMARY\) fails its CHECKSUM check"):
        _verify(p)
