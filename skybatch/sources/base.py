"""The contract every spectra source reader follows.

A reader turns one FITS file (local path or ``s3://`` URL, opened through
fsspec) into NumPy arrays on the store's wavelength grid plus per-spectrum
metadata columns. Ingest uses readers in two steps:

1. **plan**: :meth:`SpectraReader.inspect` reads headers and the small
   per-target tables only (never the flux images) and returns a
   :class:`SourceInfo`: which rows are science rows, the grid, the size.
   Anything wrong with the file (truncated, corrupt, missing HDU, off-grid)
   raises :class:`SourceError` here, so the file is set aside before any
   chunk is written.
2. **read**: :meth:`SpectraReader.read` reads a contiguous range of the kept
   rows and returns a :class:`SpectraBlock`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Grid", "SourceInfo", "SpectraBlock", "SourceError", "SpectraReader", "META_COLUMNS"]

#: Per-spectrum metadata columns every reader returns (name -> NumPy dtype).
#: Strings are Python ``str`` in object arrays. Missing values: z = NaN,
#: zwarn = -1, spectype/program/survey = "", healpix = -1.
META_COLUMNS: dict[str, str] = {
    "targetid": "int64",
    "ra": "float64",
    "dec": "float64",
    "z": "float64",
    "zwarn": "int64",
    "spectype": "object",
    "survey": "object",
    "program": "object",
    "healpix": "int64",
    "source_row": "int64",
}


class SourceError(Exception):
    """A source file that cannot be ingested; the message names file and fix.

    ``reason`` is a short machine-readable tag (``truncated``, ``corrupt``,
    ``missing-hdu``, ``unknown-format``, ``off-grid``, ``unreachable``,
    ``row-mismatch``) recorded in the manifest's quarantine table.
    """

    def __init__(self, source: str, reason: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Grid:
    """A wavelength grid of a store.

    kind: ``"linear"`` (wavelength = start + i*step, Angstrom) or
    ``"loglam"`` (log10 wavelength = start + i*step).
    start: first pixel (Angstrom for linear, log10 Angstrom for loglam).
    step: pixel step in the same unit.
    n: number of pixels.
    name: a label, e.g. ``"desi-brz"`` or ``"sdss-loglam"``.
    """

    kind: str
    start: float
    step: float
    n: int
    name: str = ""

    def wavelength(self) -> np.ndarray:
        """Vacuum wavelength of every pixel in Angstrom, float64, shape (n,)."""
        i = np.arange(self.n, dtype=np.float64)
        if self.kind == "linear":
            return self.start + i * self.step
        if self.kind == "loglam":
            return 10.0 ** (self.start + i * self.step)
        raise ValueError(f"unknown grid kind {self.kind!r}")

    def to_attrs(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "step": self.step, "n": self.n, "name": self.name}

    @classmethod
    def from_attrs(cls, d: dict[str, Any]) -> Grid:
        return cls(kind=d["kind"], start=float(d["start"]), step=float(d["step"]), n=int(d["n"]), name=d.get("name", ""))

    def same_as(self, other: Grid, rtol: float = 1e-9) -> bool:
        return (
            self.kind == other.kind
            and self.n == other.n
            and abs(self.start - other.start) <= rtol * max(1.0, abs(self.start))
            and abs(self.step - other.step) <= rtol * max(1.0, abs(self.step))
        )


@dataclass
class SourceInfo:
    """What planning learns about one source without reading its pixels.

    url: the source as given (normalised, e.g. ``s3://bucket/key``).
    format: ``"desi"``, ``"sdss"`` or ``"skyvac"``.
    n_rows: number of rows that ingest will write (science rows unless
        non-science rows are kept).
    rows: file row index of every kept row, int64, shape (n_rows,).
    grid: the store grid the reader maps this file onto.
    size: file size in bytes.
    checksum: a content identity cheaper than hashing the file: the FITS
        CHECKSUM/DATASUM keywords, S3 ETag or mtime, whichever exist.
    extra_columns: names and dtypes of format-specific metadata columns
        (e.g. every sky-VAC METADATA column) the reader adds to ``meta``.
    """

    url: str
    format: str
    n_rows: int
    rows: np.ndarray
    grid: Grid
    size: int
    checksum: str = ""
    extra_columns: dict[str, str] = field(default_factory=dict)


@dataclass
class SpectraBlock:
    """Spectra read from one source, already on the store grid.

    flux: float32 (n, grid.n), 1e-17 erg/s/cm^2/Angstrom, native byte order.
    ivar: float32 (n, grid.n), inverse variance of flux; 0 = no information.
    mask: uint32 (n, grid.n), survey bit mask (0 = good); pixels outside the
        file's coverage have ivar = 0 and the NODATA bit set.
    meta: dict of per-spectrum columns (see :data:`META_COLUMNS`, plus the
        reader's ``extra_columns``), each shape (n,).
    n_bad_pixels: number of NaN/inf flux or ivar values found and zeroed.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    meta: dict[str, np.ndarray]
    n_bad_pixels: int = 0

    def __len__(self) -> int:
        return int(self.flux.shape[0])


class SpectraReader(Protocol):
    """A survey format reader. ``fs`` is an fsspec filesystem for ``url``."""

    format: str
    grid: Grid

    def inspect(self, fs: Any, url: str, keep_nonscience: bool = False) -> SourceInfo:
        """Read headers and per-target tables; raise SourceError if unusable."""
        ...

    def read(self, fs: Any, info: SourceInfo, start: int, stop: int) -> SpectraBlock:
        """Read kept rows ``info.rows[start:stop]`` onto the store grid."""
        ...
