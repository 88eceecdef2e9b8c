"""What a tile source holds (:class:`TilePlaneInfo`, :class:`TileSourceInfo`, :class:`TilePlane`)
and the pixel clean-up every reader applies (bad pixels, noise kinds, masks, WCS strings).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _fits
from ..base import SourceError


@dataclass(frozen=True)
class TilePlaneInfo:
    """One (tile, band) image in a source, as planning sees it (no pixels).

    tile_id: the tile's name (matched across instruments).
    instrument: ``"rubin"``, ``"euclid"`` or another lower-case name.
    band: normalised band name (``"r"``, ``"VIS"``...).
    height, width: image shape in pixels (y, x).
    locator: where the plane is in its file: npz ``"npz:<band index>"``; FITS
        ``"fits:<image ext>|<noise ext>|<noise kind>|<mask ext or ''>"``.
    unit: the image unit (``BUNIT`` / npz ``unit``), ``""`` when unknown.
    meta: JSON of header numbers (saturate, gain, read_noise, zero_point, exptime;
        :func:`skybatch.sources._plain.header_meta`), ``""`` when none.
    """

    tile_id: str
    instrument: str
    band: str
    height: int
    width: int
    locator: str
    unit: str = ""
    meta: str = ""


@dataclass
class TileSourceInfo:
    """What planning learns about one tile source without reading its pixels.

    url: the source as given. format: ``"npz"`` or ``"fits"``.
    size: bytes. checksum: a cheap content identity (FITS CHECKSUM, ETag or mtime, and size).
    planes: every present plane, in file order.
    tile_ids: every tile the source names (also tiles whose planes are all absent).
    mask_bits: mask plane name -> bit, from LSST ``MP_*`` header keywords (else empty).
    n_absent: planes the file marks as absent (npz ``band_present`` False), not planned.
    """

    url: str
    format: str
    size: int
    checksum: str
    planes: list[TilePlaneInfo]
    tile_ids: list[str]
    mask_bits: dict[str, int] = field(default_factory=dict)
    n_absent: int = 0


@dataclass
class TilePlane:
    """The pixels of one (tile, band) plane.

    image: float32 (H, W), the source's unit, native byte order; 0 at bad pixels, NaN if absent.
    noise: float32 (H, W), 1-sigma RMS in the image's unit; inf = no information.
    mask: uint32 (H, W), the survey's bit mask as stored (0 where the file has none).
    wcs: FITS header string (80-character cards, no END) of the plane's WCS; ``""`` if none.
    present: False when the plane holds no finite pixel.
    n_bad_pixels: bad pixels found and neutralised (image 0, noise inf).
    """

    image: np.ndarray
    noise: np.ndarray
    mask: np.ndarray
    wcs: str
    present: bool
    n_bad_pixels: int = 0


def _identity(fs: Any, url: str) -> tuple[int, dict[str, Any]]:
    return _fits.file_size(fs, url)


def clean_plane(image: np.ndarray, noise: np.ndarray, finite: np.ndarray | None = None) -> int:
    """Neutralise bad pixels of one plane in place; returns how many there were.

    Bad: image NaN/inf, or noise NaN/inf/<= 0. They get image = 0 and noise = inf.
    image, noise: float32 (H, W); finite: ``np.isfinite(image)`` if already computed.
    """
    good = np.isfinite(image) if finite is None else finite.copy()
    good &= noise > 0
    good &= noise < np.inf
    n = int(good.size - np.count_nonzero(good))
    if n:
        bad = ~good
        image[bad] = 0.0
        noise[bad] = np.inf
    return n


def _finish_plane(image: np.ndarray, noise: np.ndarray, mask: np.ndarray | None, wcs: str) -> TilePlane:
    """A TilePlane from raw arrays: float32 copies we own, bad pixels neutralised, absent if no finite pixel."""
    image = np.array(image, dtype=np.float32, copy=None)
    noise = np.array(noise, dtype=np.float32, copy=None)
    finite = np.isfinite(image)
    if not finite.any():
        return TilePlane(
            image=np.full(image.shape, np.nan, np.float32), noise=np.full(image.shape, np.inf, np.float32),
            mask=np.zeros(image.shape, np.uint32), wcs=wcs, present=False, n_bad_pixels=0,
        )
    if image.base is not None or not image.flags.writeable:
        image = image.copy()
    if noise.base is not None or not noise.flags.writeable:
        noise = noise.copy()
    n_bad = clean_plane(image, noise, finite)
    mask = np.zeros(image.shape, np.uint32) if mask is None else _as_uint32(mask)
    return TilePlane(image=image, noise=noise, mask=mask, wcs=wcs, present=True, n_bad_pixels=n_bad)


def _as_uint32(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype.kind == "f":
        m = np.nan_to_num(m, nan=0.0).astype(np.int64)
    if m.dtype.kind == "b":
        m = m.astype(np.uint32)
    if m.dtype.byteorder not in ("=", "|"):
        m = m.astype(m.dtype.newbyteorder("="))
    if m.dtype.kind in "iu" and m.dtype.itemsize == 4:
        return np.ascontiguousarray(m).view(np.uint32)
    return (m.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _noise_from(kind: str, values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "variance":
            return np.sqrt(v)
        if kind == "ivar":
            return np.where(v > 0, 1.0 / np.sqrt(v), np.inf).astype(np.float32)
    return v


def wcs_header_string(header: Any) -> str:
    """The celestial WCS of a FITS header as a header string (cards, no END); ``""`` if none."""
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(header, naxis=2)
            if not w.has_celestial:
                return ""
            hdr = w.to_header(relax=True)
    except Exception:  # a broken WCS is not a reason to lose the pixels
        return ""
    return "".join(card.image for card in hdr.cards)


def _check_unchanged(url: str, planes: list[TilePlaneInfo], want: list[TilePlaneInfo]) -> None:
    have = {(p.tile_id, p.band, p.locator): p for p in planes}
    for w in want:
        p = have.get((w.tile_id, w.band, w.locator))
        if p is None or (p.height, p.width) != (w.height, w.width):
            raise SourceError(
                url, "changed",
                f"changed since it was planned (plane {w.tile_id}/{w.band} {w.height}x{w.width} is no longer "
                "there); restore the original file, or ingest the new version into a new store",
            )
