"""The small header parser gives astropy's values for every keyword card of real sample files."""

from __future__ import annotations

import glob

import pytest
from astropy.io import fits

from skybatch.sources import _fits
from skybatch.sources._fitsheader import parse_header


def _files(desi_pair, desi_edr_shuffled, sdss_sample, skyvac, tmp_path) -> list[str]:
    out = [desi_pair.coadd, desi_pair.redrock, desi_edr_shuffled.coadd, desi_edr_shuffled.redrock]
    sdss = sorted(glob.glob(str(tmp_path.parent.parent / "**" / "spec-*.fits"), recursive=True))[:2]
    vac = sorted(glob.glob(str(tmp_path.parent.parent / "**" / "sky_spectra_vac_v1.fits"), recursive=True))[:1]
    return out + sdss + vac


def test_fast_headers_equal_astropy(fs, desi_pair, desi_edr_shuffled, sdss_sample, skyvac, tmp_path):
    files = _files(desi_pair, desi_edr_shuffled, sdss_sample, skyvac, tmp_path)
    # cards astropy accepts that plain files rarely have: quotes, D exponents, comments, long keywords
    odd = str(tmp_path / "odd.fits")
    h = fits.Header()
    h["QUOTED"] = ("it's here  ", "a comment / with a slash")
    h["EMPTY"] = ""
    h["NEG"] = -12
    h["BIGINT"] = 2**40
    h["REAL"] = 1.5e-300
    h["LOGIC"] = False
    h.add_comment("commentary")
    h.add_history("history")
    fits.PrimaryHDU(header=h).writeto(odd)
    with open(odd, "r+b") as f:  # a D exponent, as older writers give
        raw = f.read()
        i = raw.index(b"REAL    = ")
        card = raw[i : i + 80].decode()
        new = ("REAL    = " + "1.5D-300".rjust(20)).ljust(80).encode()
        f.seek(i)
        f.write(new)
        assert len(card) == 80
    files.append(odd)
    assert len(files) >= 7  # DESI coadd + redrock (iron and EDR), SDSS spec files, the sky VAC, the odd one
    n_checked = 0
    for path in files:
        size, _ = _fits.file_size(fs, path)
        with _fits.open_source(fs, path, size) as f:
            slow = _fits.scan_fits(f, path, size)
            fast = _fits.scan_fits(f, path, size, fast_headers=True)
        assert [(e.name, e.data_offset, e.data_size, e.header_sum) for e in slow.entries] == \
            [(e.name, e.data_offset, e.data_size, e.header_sum) for e in fast.entries]
        for es, ef in zip(slow.entries, fast.entries):
            for key in es.header:
                if key in ("COMMENT", "HISTORY", "") or key.startswith("HIERARCH"):
                    continue
                want = es.header[key]
                got = ef.header[key]
                assert got == want and type(got) is type(want), (path, es.name, key, got, want)
                n_checked += 1
    assert n_checked > 100


@pytest.mark.parametrize("text,value", [("'O''Hara '", "O'Hara"), ("T", True), ("  42 / n", 42),
                                        ("-1.0E+05", -1.0e5), ("3.D2", 300.0), ("''", "")])
def test_values(text, value):
    card = ("KEY     = " + text).ljust(80) + "END".ljust(80)
    got = parse_header(card)["KEY"]
    assert got == value and type(got) is type(value)
