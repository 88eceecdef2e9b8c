"""Tile names: instruments, bands, band keys, tile ids and the file format, from headers and paths.

The inference rules are the documented contract in :mod:`skybatch.sources.tiles`.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from ..base import SourceError

TILE_FORMATS = ("npz", "fits")
#: File name endings that tile ingest looks for in directories and prefixes.
TILE_SUFFIXES = (".npz", ".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")
#: Canonical band order of the known instruments.
INSTRUMENT_BANDS: dict[str, tuple[str, ...]] = {
    "rubin": ("u", "g", "r", "i", "z", "y"),
    "euclid": ("VIS", "Y", "J", "H"),
}
_RUBIN_ALIASES = ("lsst", "rubin", "comcam", "latiss")
_EUCLID_NAMES = ("vis", "nisp", "nir", "euclid_vis", "euclid_nisp")
_PATH_INSTRUMENT = {
    "rubin": "rubin", "lsst": "rubin", "lsstcam": "rubin", "lsstcomcam": "rubin", "comcam": "rubin",
    "euclid": "euclid", "nisp": "euclid",
}  # fmt: skip


def normalize_instrument(value: Any) -> str | None:
    """Canonical instrument name of a header or npz value (``"LSSTCam"`` -> ``"rubin"``); None if empty."""
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    low = s.lower()
    if "euclid" in low or low in _EUCLID_NAMES:
        return "euclid"
    if any(a in low for a in _RUBIN_ALIASES):
        return "rubin"
    return re.sub(r"[^a-z0-9]+", "_", low).strip("_") or None


def normalize_band(instrument: str | None, value: Any) -> str | None:
    """The canonical name of band ``value`` for ``instrument``; None if it is not a band of it.

    Rubin: ``u g r i z y`` (``"R"``, ``"r_sim_1.4"``, ``"LSST_R"`` -> ``"r"``). Euclid:
    ``VIS Y J H`` (``"nir_h"``, ``"NISP_Y"``, ``"euclid_vis"`` -> ``"H"``, ``"Y"``, ``"VIS"``).
    Other (or unknown) instruments: the stripped value itself.
    """
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    if instrument == "rubin":
        t = s.lower()
        t = re.sub(r"^(lsstcam|lsstcomcam|comcam|lsst|rubin)[_\-\s]", "", t)
        if t in INSTRUMENT_BANDS["rubin"]:
            return t
        head = re.split(r"[_\-\s.]", t)[0]
        return head if head in INSTRUMENT_BANDS["rubin"] else None
    if instrument == "euclid":
        t = s.upper()
        t = re.sub(r"^(EUCLID|NISP|NIR)[_\-\s]", "", t)
        t = re.sub(r"^(NISP|NIR)[_\-\s]", "", t)
        return t if t in INSTRUMENT_BANDS["euclid"] else None
    return s


def band_key(instrument: str, band: str) -> str:
    """skybatch's band key ``"<instrument>_<band lower case>"`` (``"rubin_r"``, ``"euclid_vis"``)."""
    return f"{instrument}_{band.lower()}"


def _instrument_from_path(url: str) -> str | None:
    parts = url.split("://", 1)[-1].split("/")[:-1]
    for p in reversed(parts):
        inst = _PATH_INSTRUMENT.get(p.strip().lower())
        if inst:
            return inst
    return None


def _instrument_from_bands(bands: list[str]) -> str | None:
    if bands and all(b in INSTRUMENT_BANDS["rubin"] for b in bands):
        return "rubin"
    if bands and all(b in INSTRUMENT_BANDS["euclid"] for b in bands):
        return "euclid"
    return None


def _stem(url: str) -> str:
    name = posixpath.basename(url.split("://", 1)[-1])
    for suf in (".fits.fz", ".fits.gz", ".fit.gz", ".fts.gz", ".npz", ".fits", ".fit", ".fts", ".fz"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name.rsplit(".", 1)[0] if "." in name else name


def _tile_from_pattern(url: str, tile_pattern: str | None) -> str | None:
    if not tile_pattern:
        return None
    m = re.search(tile_pattern, url)
    if m is None or not m.groupdict().get("tile"):
        raise SourceError(
            url, "no-tile-id",
            f"the tile pattern {tile_pattern!r} does not match this path (or its 'tile' group is empty); "
            "fix the pattern (--tile-pattern) or leave this file out",
        )
    return m.group("tile")


def tile_format(url: str) -> str:
    """``"npz"`` or ``"fits"`` from the file name; SourceError for anything else."""
    low = url.lower()
    if low.endswith(".npz"):
        return "npz"
    if low.endswith((".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz", ".fit.gz", ".fts.gz")):
        return "fits"  # whole-file gzip is decompressed in memory (tiles.fits._open_fits)
    raise SourceError(
        url, "unknown-format",
        "not a tile file skybatch reads (expected .npz with image + rms arrays, or FITS: a 2-D image in any "
        "HDU, IMAGE/VARIANCE or SCI/RMS extensions); leave it out of the sources",
    )
