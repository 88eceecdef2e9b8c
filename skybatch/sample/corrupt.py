"""Make damaged copies of FITS files, for testing how readers and ingest cope.

Every helper writes a new file ``dst`` (the source is never modified) and
returns its path. Byte-level helpers patch the copy without re-encoding,
so everything else in the file stays exactly as it was (stale CHECKSUMs
included, like real bit rot).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
import shutil
from pathlib import Path

import numpy as np

__all__ = [
    "truncate",
    "garble_header",
    "drop_hdu",
    "inject_nonfinite",
    "drop_table_rows",
    "write_image_fits",
    "write_text_file",
    "hdu_offsets",
]


def hdu_offsets(path: str | os.PathLike) -> dict[str, tuple[int, int, int]]:
    """EXTNAME -> (header offset, data offset, data bytes) of every HDU of a FITS file."""
    import fsspec

    from skybatch.sources import _fits

    fs = fsspec.filesystem("file")
    size = os.path.getsize(path)
    with fs.open(str(path), "rb") as f:
        lay = _fits.scan_fits(f, str(path), size)
    return {e.name: (e.header_offset, e.data_offset, e.data_size) for e in lay.entries}


def truncate(src: str | os.PathLike, dst: str | os.PathLike, *, keep_fraction: float | None = 0.5, keep_bytes: int | None = None) -> Path:
    """Copy the first ``keep_bytes`` (or ``keep_fraction`` of the) bytes of ``src``."""
    data = Path(src).read_bytes()
    if keep_bytes is None and keep_fraction is None:
        raise ValueError("truncate: give keep_fraction or keep_bytes")
    n = keep_bytes if keep_bytes is not None else int(len(data) * float(keep_fraction or 0.0))
    Path(dst).write_bytes(data[:n])
    return Path(dst)


def garble_header(src: str | os.PathLike, dst: str | os.PathLike, *, hdu: str = "FIBERMAP", nbytes: int = 400, seed: int = 0) -> Path:
    """Overwrite ``nbytes`` of HDU ``hdu``'s header (after its first card) with random binary garbage."""
    shutil.copyfile(src, dst)
    h0, _, _ = hdu_offsets(dst)[hdu.upper()]
    rng = np.random.default_rng(seed)
    garbage = rng.integers(128, 256, nbytes, dtype=np.uint8).tobytes()
    with open(dst, "r+b") as f:
        f.seek(h0 + 80)
        f.write(garbage)
    return Path(dst)


def drop_hdu(src: str | os.PathLike, dst: str | os.PathLike, extname: str) -> Path:
    """Copy ``src`` without the HDU called ``extname``."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        keep = [h for h in hdul if h.name.upper() != extname.upper()]
        if len(keep) == len(hdul):
            raise KeyError(f"{src} has no HDU {extname!r}")
        fits.HDUList([h.copy() if i else fits.PrimaryHDU(header=h.header) for i, h in enumerate(keep)]).writeto(dst, overwrite=True)
    return Path(dst)


def inject_nonfinite(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    hdu: str = "B_FLUX",
    pixels: Sequence[tuple[int, int]] = ((0, 100),),
    value: float = float("nan"),
) -> Path:
    """Write ``value`` (NaN or ±inf) into (row, column) ``pixels`` of a float32 image HDU, in place in the copy."""
    shutil.copyfile(src, dst)
    from astropy.io import fits

    with fits.open(dst) as hdul:
        h = hdul[hdu].header
        if h["BITPIX"] != -32 or h["NAXIS"] != 2:
            raise ValueError(f"HDU {hdu} is not a 2-D float32 image")
        ncol = h["NAXIS1"]
    _, d0, _ = hdu_offsets(dst)[hdu.upper()]
    raw = np.array([value], dtype=">f4").tobytes()
    with open(dst, "r+b") as f:
        for r, c in pixels:
            f.seek(d0 + (int(r) * ncol + int(c)) * 4)
            f.write(raw)
    return Path(dst)


def drop_table_rows(src: str | os.PathLike, dst: str | os.PathLike, *, hdu: str = "FIBERMAP", n_drop: int = 1) -> Path:
    """Copy ``src`` with the last ``n_drop`` rows of table ``hdu`` removed (row-count mismatch)."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        out = []
        for i, h in enumerate(hdul):
            if h.name.upper() == hdu.upper():
                out.append(fits.BinTableHDU(h.data[: len(h.data) - n_drop], header=h.header, name=h.name))
            else:
                out.append(h.copy() if i else fits.PrimaryHDU(header=h.header))
        fits.HDUList(out).writeto(dst, overwrite=True)
    return Path(dst)


def write_image_fits(dst: str | os.PathLike, shape: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """A valid FITS file that is not a spectra file: a primary image plus an IMAGE extension."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    img = rng.normal(0, 1, shape).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(img * 0.1, name="VARIANCE")]).writeto(dst, overwrite=True)
    return Path(dst)


def write_text_file(dst: str | os.PathLike) -> Path:
    """A plain text file with a .fits name."""
    Path(dst).write_text("TARGETID,Z\n39627640566453451,0.5\nthis is not a FITS file\n")
    return Path(dst)
