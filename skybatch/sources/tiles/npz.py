"""Reading ``.npz`` tiles: the ``.npy`` headers for planning, whole arrays for the pixels.

The keys are listed in :mod:`skybatch.sources.tiles`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _fits
from ..base import SourceError
from . import naming
from .planes import TilePlane, TilePlaneInfo, TileSourceInfo, _check_unchanged, _finish_plane, _identity, _noise_from

_NPZ_NOISE = (("rms", "rms"), ("noise", "rms"), ("sigma", "rms"), ("variance", "variance"), ("var", "variance"),
              ("ivar", "ivar"))  # fmt: skip
_NPZ_BANDS = ("band", "bands", "filter", "filters")


def _open_zip(fs: Any, url: str, *, ranged: bool = True):
    """(file, ZipFile) of an npz. ``ranged``: no read-ahead (planning reads headers only);
    otherwise fsspec's default buffering, for reading whole arrays."""
    if ranged:
        f = _fits.open_source(fs, url)
    else:
        try:
            f = fs.open(url, "rb")
        except (FileNotFoundError, PermissionError, OSError) as e:
            raise SourceError(url, "unreachable",
                              f"cannot open file ({e}); check the URL, credentials and network") from e
    try:
        head = f.read(4)
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            f.close()
            if head == b"PK\x03\x04":
                raise SourceError(url, "truncated", f"the .npz (zip) archive has no central directory ({e}): the file "
                                  "is truncated; re-download or re-write it") from None
            raise SourceError(url, "corrupt", f"not a readable .npz (zip) archive ({e}); re-write the file") from None
    except SourceError:
        raise
    except Exception as e:
        f.close()
        raise SourceError(url, "corrupt", f"cannot open as .npz ({type(e).__name__}: {e}); re-write the file") from None
    return f, zf


def _damaged(url: str, member: str, e: Exception) -> SourceError:
    return SourceError(url, "corrupt", f"array {member[:-4]!r} in the .npz is damaged ({e}); re-write the file")


def _npy_header(zf: zipfile.ZipFile, member: str, url: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with zf.open(member) as m:
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(m)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(m)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _damaged(url, member, e) from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npy_read(zf: zipfile.ZipFile, member: str, url: str) -> np.ndarray:
    try:
        with zf.open(member) as m:
            a = np.lib.format.read_array(m, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SourceError(url, "bad-metadata", f"array {member[:-4]!r} holds Python objects (pickled); store "
                              "strings as numpy str arrays") from None
        raise _damaged(url, member, e) from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _damaged(url, member, e) from None
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _strs(a: np.ndarray, strip: bool = True) -> list[str]:
    out = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(a).ravel()]
    return [s.strip() for s in out] if strip else out


@dataclass
class _NpzLayout:
    members: dict[str, str]
    n_bands: int
    shape: tuple[int, int]
    noise_key: str
    noise_kind: str
    two_d: bool
    small: dict[str, np.ndarray]


def _npz_layout(zf: zipfile.ZipFile, url: str) -> _NpzLayout:
    members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
    if "image" not in members:
        raise SourceError(url, "missing-array", f"no 'image' array in the .npz (arrays: {sorted(members)}); "
                          "write image (n_bands, H, W) and rms arrays")
    noise_key = next(((k, kind) for k, kind in _NPZ_NOISE if k in members), None)
    if noise_key is None:
        raise SourceError(url, "missing-array", f"no noise array in the .npz (arrays: {sorted(members)}); add "
                          "'rms' (1-sigma), 'variance' or 'ivar' with the image's shape")
    shape, dtype = _npy_header(zf, members["image"], url)
    nshape, ndtype = _npy_header(zf, members[noise_key[0]], url)
    if dtype.kind not in "fiu" or len(shape) not in (2, 3) or 0 in shape:
        raise SourceError(url, "not-an-image", f"'image' has shape {shape} and dtype {dtype}; expected a numeric "
                          "(n_bands, H, W) or (H, W) array")
    if ndtype.kind not in "fiu":
        raise SourceError(url, "not-an-image", f"noise array {noise_key[0]!r} has dtype {ndtype}; expected numbers")
    if nshape != shape:
        raise SourceError(url, "shape-mismatch", f"'image' has shape {shape} but {noise_key[0]!r} has shape "
                          f"{nshape}; write them with the same shape")
    if "mask" in members:
        mshape, _ = _npy_header(zf, members["mask"], url)
        if mshape != shape:
            raise SourceError(url, "shape-mismatch", f"'image' has shape {shape} but 'mask' has shape {mshape}")
    two_d = len(shape) == 2
    n_bands = 1 if two_d else shape[0]
    small_keys = ("instrument", "tile_id", "wcs", "band_present", "present", "band_key", "unit", "bunit") + _NPZ_BANDS
    small = {k: _npy_read(zf, members[k], url) for k in small_keys if k in members}
    return _NpzLayout(members, n_bands, (shape[-2], shape[-1]), noise_key[0], noise_key[1], two_d, small)


def _npz_planes(url: str, lay: _NpzLayout, instrument: str | None, tile_pattern: str | None):
    """(planes, tile_ids, n_absent) of an npz layout."""
    small = lay.small
    nb = lay.n_bands
    raw_bands = None
    for k in _NPZ_BANDS:
        if k in small:
            raw_bands = _strs(small[k])
            break
    keys = _strs(small["band_key"]) if "band_key" in small else None
    insts: list[str | None]
    if instrument:
        insts = [naming.normalize_instrument(instrument)] * nb
    elif "instrument" in small:
        v = _strs(small["instrument"])
        if len(v) not in (1, nb):
            raise SourceError(url, "bad-metadata", f"'instrument' has {len(v)} values for {nb} bands")
        insts = [naming.normalize_instrument(x) for x in (v * nb if len(v) == 1 else v)]
    elif keys is not None and len(keys) == nb and all("_" in k for k in keys):
        insts = [naming.normalize_instrument(k.split("_", 1)[0]) for k in keys]
    else:
        insts = [naming._instrument_from_path(url)] * nb
    if raw_bands is None and keys is not None and len(keys) == nb:
        raw_bands = [k.split("_", 1)[1] if "_" in k else k for k in keys]
    if raw_bands is not None and len(raw_bands) != nb:
        raise SourceError(url, "bad-metadata", f"{len(raw_bands)} band names for {nb} image planes; give one "
                          "name per plane")
    if any(i is None for i in insts):
        guess = naming._instrument_from_bands(raw_bands or [])
        insts = [i or guess for i in insts]
    if any(i is None for i in insts):
        raise SourceError(
            url, "unknown-instrument",
            "cannot tell the instrument: add an 'instrument' array to the .npz, put the file under a rubin/ or "
            "euclid/ directory, or set the instrument of the run (--instrument)",
        )
    known_insts = [i for i in insts if i is not None]  # all of them: None was refused just above
    bands: list[str] = []
    for j in range(nb):
        inst = known_insts[j]
        if raw_bands is None:
            canon = naming.INSTRUMENT_BANDS.get(inst, ())
            if len(canon) != nb:
                raise SourceError(url, "unknown-band", f"no band names in the .npz and {nb} planes do not make the "
                                  f"full {inst} band set; add a 'band' array of names")
            bands.append(canon[j])
            continue
        b = naming.normalize_band(inst, raw_bands[j])
        if b is None:
            raise SourceError(url, "unknown-band", f"band {raw_bands[j]!r} is not a {inst} band "
                              f"({list(naming.INSTRUMENT_BANDS.get(inst, ()))}); fix the 'band' array or the instrument")
        bands.append(b)
    tile = naming._tile_from_pattern(url, tile_pattern)
    if tile is None and "tile_id" in small:
        v = _strs(small["tile_id"])
        tile = v[0] if v and v[0] else None
    tile = tile or naming._stem(url)
    present = np.ones(nb, bool)
    for k in ("band_present", "present"):
        if k in small:
            p = np.atleast_1d(small[k]).astype(bool)
            if p.size != nb:
                raise SourceError(url, "bad-metadata", f"{k!r} has {p.size} values for {nb} bands")
            present = p
            break
    unit = ""
    for k in ("unit", "bunit"):
        if k in small:
            unit = _strs(small[k])[0]
    planes = [
        TilePlaneInfo(tile, known_insts[j], bands[j], lay.shape[0], lay.shape[1], f"npz:{j}", unit)
        for j in range(nb) if present[j]
    ]
    return planes, [tile], int(nb - present.sum())


def _inspect_npz(fs: Any, url: str, instrument: str | None, tile_pattern: str | None) -> TileSourceInfo:
    size, info = _identity(fs, url)
    f, zf = _open_zip(fs, url)
    with f, zf:
        lay = _npz_layout(zf, url)
    planes, tiles, n_absent = _npz_planes(url, lay, instrument, tile_pattern)
    return TileSourceInfo(url, "npz", size, _fits.file_identity(info, []), planes, tiles, {}, n_absent)


def _read_npz(fs: Any, url: str, want: list[TilePlaneInfo], instrument, tile_pattern) -> list[TilePlane]:
    f, zf = _open_zip(fs, url, ranged=False)
    with f, zf:
        lay = _npz_layout(zf, url)
        planes, _, _ = _npz_planes(url, lay, instrument, tile_pattern)
        _check_unchanged(url, planes, want)
        image = _npy_read(zf, lay.members["image"], url)
        noise = _noise_from(lay.noise_kind, _npy_read(zf, lay.members[lay.noise_key], url))
        mask = _npy_read(zf, lay.members["mask"], url) if "mask" in lay.members else None
    if lay.two_d:
        image, noise = image[None], noise[None]
        mask = mask[None] if mask is not None else None
    wcs = _strs(lay.small["wcs"], strip=False) if "wcs" in lay.small else [""]
    out = []
    for p in want:
        j = int(p.locator.split(":", 1)[1])
        w = wcs[j] if len(wcs) == lay.n_bands else wcs[0]
        out.append(_finish_plane(image[j], noise[j], None if mask is None else mask[j], w))
    return out
