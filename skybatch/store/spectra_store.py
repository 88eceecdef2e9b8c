"""The spectra store: a Zarr v3 group that ``xarray.open_zarr`` reads.

Layout and units are the contract in ``schemas/spectra_store.json``
(:mod:`skybatch.store.schema`). Arrays are created with zarr directly, with
``dimension_names`` and a ``coordinates`` attribute so xarray sees dims
``spectrum`` / ``wavelength``, data variables ``flux``, ``ivar``, ``mask`` and
per-spectrum coordinates. Each stored object (a Zarr v3 *shard* of the pixel
arrays, a chunk of the columns) holds ``chunk_spectra`` whole spectra; pixel shards
are split into ~4 MiB inner chunks for compression and partial reads. Ingest tasks
write whole shards only (:func:`write_rows`), so no two tasks ever touch one object. Metadata is consolidated after every change of shape or
variables so a plain ``xr.open_zarr(store)`` is fast and current.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
import zarr

from skybatch.sources.base import META_COLUMNS, Grid
from skybatch.store.codecs import CHUNK_BYTES, PIXEL_CODEC
from skybatch.store.identity import IDENTITY_ATTR, new_identity
from skybatch.store.schema import SCHEMA_NAME, SCHEMA_VERSION, StoreSchemaError, check_spectra_store, load_schema
from skybatch.store.zarr_group import holds_schema

__all__ = [
    "open_group",
    "create_spectra_store",
    "resize_spectra_store",
    "write_rows",
    "consolidate",
    "open_store",
    "store_exists",
    "zarr_store",
    "PER_SPECTRUM_COLUMNS",
    "CREATING_ATTR",
    "pixel_layout",
    "unfinished_creation",
    "missing_creation_attrs",
]

#: Per-spectrum coordinates of every spectra store (name -> dtype), in order.
PER_SPECTRUM_COLUMNS: dict[str, str] = {**META_COLUMNS, "source": "object"}


def _zarr_dtype(dtype: str):
    return str if dtype in ("object", "str") else np.dtype(dtype)


def _fill(dtype: str):
    if dtype in ("object", "str"):
        return ""
    d = np.dtype(dtype)
    if d.kind == "f":
        return np.nan if dtype == "float64" else 0.0
    return -1 if d.kind == "i" else 0


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, read_only: bool = False):
    """A zarr store object for ``url``: the path itself locally, an async FsspecStore for remote URLs."""
    if "://" in url and not url.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)
    return url


def open_group(url: str, storage_options: dict[str, Any] | None = None, mode: str = "r+") -> zarr.Group:
    """Open the store's Zarr group (``storage_options`` apply to remote URLs only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return zarr.open_group(zarr_store(url, storage_options, read_only=(mode == "r")), mode=mode)


def store_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` holds a skybatch spectra store."""
    return holds_schema(open_group, url, storage_options, SCHEMA_NAME)


def consolidate(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Rewrite the consolidated metadata (after shape or variable changes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr_store(url, storage_options))


#: Root attr of a store whose creation has begun but not finished (arrays may exist, attrs not yet):
#: ``{"kind": "spectra", "identity": {...}}``. The final attrs write replaces it (one write).
CREATING_ATTR = "skybatch_creating"
#: Root attrs a finished spectra store always has (written in one attrs write, identity included).
CREATION_ATTRS = ("skybatch_schema", "skybatch_schema_version", "grid", "chunk_spectra", "per_spectrum_columns",
                  "shard_spectra", "inner_chunk_spectra", IDENTITY_ATTR)


def _chunk_bytes() -> int:
    """Target uncompressed bytes of an inner pixel chunk: ``$SKYBATCH_CHUNK_BYTES`` or 4 MiB."""
    raw = os.environ.get("SKYBATCH_CHUNK_BYTES", "")
    if not raw:
        return CHUNK_BYTES
    try:
        v = int(float(raw))
    except ValueError:
        raise ValueError(f"SKYBATCH_CHUNK_BYTES={raw!r} is not a number of bytes (e.g. 4194304); unset it "
                         "or give an integer") from None
    if v < 1:
        raise ValueError(f"SKYBATCH_CHUNK_BYTES={raw!r} must be >= 1 byte")
    return v


def pixel_layout(chunk_spectra: int, n_wavelength: int, dtype="float32") -> tuple[int, int]:
    """(shard rows, inner chunk rows) of the (spectrum, wavelength) arrays of a store.

    A shard (one stored object, one task's write) holds ``chunk_spectra`` whole spectra; inside
    it, inner chunks (the unit of compression and of partial reads) hold the largest power of two
    of spectra (else the largest divisor) dividing ``chunk_spectra`` whose bytes stay <= ``$SKYBATCH_CHUNK_BYTES`` (4 MiB):
    DESI's 7781 px float32 rows (31 kB) give 128 spectra (3.8 MiB) per inner chunk.
    """
    shard = int(chunk_spectra)
    row_bytes = max(1, int(np.dtype(dtype).itemsize) * int(n_wavelength))
    most = max(1, _chunk_bytes() // row_bytes)
    if shard <= most:
        return shard, shard
    pow2 = 1 << int(math.floor(math.log2(most)))
    if shard % pow2 == 0:
        return shard, pow2
    best = 1  # the largest divisor of the shard rows that fits (shards must hold whole inner chunks)
    for d in range(1, math.isqrt(shard) + 1):
        if shard % d == 0:
            for c in (d, shard // d):
                if c <= most:
                    best = max(best, c)
    return shard, best


def _create_array(g: zarr.Group, name: str, **kw: Any):
    """Create array ``name``, or keep the one an interrupted creation left if it matches (else raise)."""
    if name in g:
        arr = g[name]
        want_chunks = kw["chunks"]
        want_shards = kw.get("shards")
        have = (tuple(arr.shape), tuple(arr.chunks), tuple(arr.shards) if arr.shards else None)
        if have != (tuple(kw["shape"]), tuple(want_chunks), tuple(want_shards) if want_shards else None):
            raise FileExistsError(f"array {name!r} left by an interrupted creation has shape/chunks {have}, "
                                  f"not {(kw['shape'], want_chunks, want_shards)}")
        return arr
    return g.create_array(name, **kw)


def create_spectra_store(
    url: str,
    grid: Grid,
    chunk_spectra: int,
    attrs: dict[str, Any],
    extra_columns: dict[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
    n_spectra: int = 0,
    wavelength: np.ndarray | None = None,
    identity: dict[str, Any] | None = None,
) -> zarr.Group:
    """Create an empty spectra store on ``grid`` (no spectrum rows yet, unless ``n_spectra``).

    chunk_spectra: spectra per shard (one stored object per variable, the unit a task writes;
        the whole wavelength axis is in it); pixel arrays are split inside a shard into inner
        chunks of ~4 MiB (:func:`pixel_layout`, attrs ``shard_spectra`` / ``inner_chunk_spectra``).
    attrs: store attributes (provenance, settings); schema name/version, grid and
        units are added here.
    extra_columns: format-specific per-spectrum columns (name -> dtype), e.g. the
        sky VAC's observing conditions.
    wavelength: the exact pixel centres (Angstrom, shape (grid.n,)) when they are
        not ``grid.wavelength()`` (e.g. an explicit grid from preprocessing).
    identity: the store's ``skybatch_store`` attr (uuid + kind); a new one by default.

    Crash-safe: the group is created (mode ``w-``) carrying only :data:`CREATING_ATTR`, then the
    arrays, then every store attr *and the identity* in one final attrs write. A target holding
    anything else raises ``FileExistsError`` and is left untouched; a target left by a creation
    that was killed before its final write (it carries :data:`CREATING_ATTR` of kind ``spectra``
    and no identity) is completed: arrays already there are kept if they match, the rest made.
    """
    schema = load_schema()
    identity = identity or new_identity("spectra")
    try:
        g = open_group(url, storage_options, mode="w-")
        g.attrs.put({CREATING_ATTR: {"kind": "spectra", "identity": identity}})
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError):
        pending = unfinished_creation(url, storage_options)
        if pending is None:
            raise FileExistsError(f"{url} already holds something; nothing was written") from None
        g = open_group(url, storage_options, mode="r+")
        identity = dict(pending["identity"])
    columns = {**PER_SPECTRUM_COLUMNS, **(extra_columns or {})}
    coord_names = " ".join(columns)
    nw = grid.n
    wl = _create_array(
        g, "wavelength", shape=(nw,), chunks=(nw,), dtype="float64", fill_value=np.nan,
        dimension_names=["wavelength"],
        attributes={"units": "Angstrom", "long_name": "vacuum wavelength", "grid": grid.to_attrs()},
    )
    wl[:] = grid.wavelength() if wavelength is None else np.asarray(wavelength, np.float64)
    shard_rows, inner_rows = pixel_layout(chunk_spectra, nw)
    pixel_kw: dict[str, Any] = {"chunks": (inner_rows, nw)}
    if inner_rows != shard_rows:
        pixel_kw["shards"] = (shard_rows, nw)
    for name in ("flux", "ivar", "mask"):
        spec = schema["variables"][name]
        _create_array(
            g, name, shape=(n_spectra, nw), dtype=spec["dtype"], **pixel_kw,
            fill_value=0, dimension_names=["spectrum", "wavelength"],
            **({"compressors": PIXEL_CODEC} if spec["dtype"] == "float32" else {}),
            attributes={"units": spec["units"], "long_name": spec["long_name"], "coordinates": coord_names},
        )
    for name, dtype in columns.items():
        spec = schema["coords"].get(name, {})
        _create_array(
            g, name, shape=(n_spectra,), chunks=(chunk_spectra,), dtype=_zarr_dtype(dtype),
            fill_value=_fill(dtype), dimension_names=["spectrum"],
            attributes={k: v for k, v in spec.items() if k in ("units", "long_name")},
        )
    g.attrs.put(  # one write: everything, identity included, replacing the "creating" marker
        {
            "skybatch_schema": SCHEMA_NAME,
            "skybatch_schema_version": SCHEMA_VERSION,
            "grid": grid.to_attrs(),
            "wavelength_frame": "observed",
            "chunk_spectra": int(chunk_spectra),
            "shard_spectra": int(shard_rows),
            "inner_chunk_spectra": int(inner_rows),
            "per_spectrum_columns": columns,
            **attrs,
            IDENTITY_ATTR: identity,
        }
    )
    return g


def unfinished_creation(url: str, storage_options: dict[str, Any] | None = None,
                        kind: str = "spectra") -> dict[str, Any] | None:
    """The :data:`CREATING_ATTR` record of a ``kind`` store whose creation was interrupted, else None.

    Such a store has the marker and no identity: no job has written rows into it yet.
    """
    try:
        g = open_group(url, storage_options, mode="r")
    except Exception:  # noqa: BLE001 - nothing there, or not a Zarr group
        return None
    attrs = dict(g.attrs)
    rec = attrs.get(CREATING_ATTR)
    if IDENTITY_ATTR in attrs or not isinstance(rec, dict) or rec.get("kind") != kind:
        return None
    if not isinstance(rec.get("identity"), dict) or not rec["identity"].get("uuid"):
        return None
    return rec


def missing_creation_attrs(attrs: dict[str, Any]) -> list[str]:
    """Creation attrs a store of ours lacks (empty: its creation finished).

    ``shard_spectra`` / ``inner_chunk_spectra`` are not required of stores made before sharding.
    """
    return [k for k in CREATION_ATTRS if k not in attrs and k not in ("shard_spectra", "inner_chunk_spectra")]


def resize_spectra_store(g: zarr.Group, n_spectra: int) -> None:
    """Set the length of the ``spectrum`` dimension of every array on it (idempotent)."""
    for _name, arr in g.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "spectrum" and arr.shape[0] != n_spectra:
            arr.resize((n_spectra,) + tuple(arr.shape[1:]))


def write_rows(g: zarr.Group | Mapping[str, zarr.Array], start: int, data: dict[str, np.ndarray]) -> None:
    """Write rows ``start : start + len`` of the named per-spectrum arrays, all arrays at once.

    g: the store's group, or a mapping of its arrays by name (opened once, e.g. per run).
    The caller guarantees the range covers whole shards (or the store's tail), so no other
    task writes the same stored object. Whole shards of sharded pixel arrays written with
    ``write_empty_chunks`` on are encoded in the calling thread (:mod:`skybatch.store.shardwrite`:
    the bytes zarr would store, without its partial-shard copies); the rest goes through zarr.
    All stores are then issued together on zarr's event loop (one round trip).
    """
    from skybatch.store.shardwrite import write_region

    write_region(g, start, data)


def open_store(url: str, storage_options: dict[str, Any] | None = None, *, check: bool = True) -> xr.Dataset:
    """Open a spectra store as a lazy ``xarray.Dataset`` and check it against the schema.

    Equivalent to ``xr.open_zarr(url)`` plus the schema check; raises
    :class:`~skybatch.store.schema.StoreSchemaError` naming what is wrong.
    """
    kw: dict[str, Any] = {}
    if "://" in url and not url.startswith("file://"):
        kw["storage_options"] = storage_options or {}
    try:
        ds = xr.open_zarr(url, **kw)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreSchemaError(f"{url}: no Zarr store here ({e}); create one with `skybatch run ingest`") from None
    if check:
        check_spectra_store(ds, url)
    from skybatch.store.text import plain_text

    return plain_text(ds)
