"""The spectra store: a Zarr v3 group that ``xarray.open_zarr`` reads.

Layout and units are the contract in ``schemas/spectra_store.json``
(:mod:`skybatch.store.schema`). Arrays are created with zarr directly, with
``dimension_names`` and a ``coordinates`` attribute so xarray sees dims
``spectrum`` / ``wavelength``, data variables ``flux``, ``ivar``, ``mask`` and
per-spectrum coordinates. Chunks hold ``chunk_spectra`` whole spectra; ingest
tasks write whole chunks only (:func:`write_rows`), so no two tasks ever touch
one Zarr chunk. Metadata is consolidated after every change of shape or
variables so a plain ``xr.open_zarr(store)`` is fast and current.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from skybatch.sources.base import META_COLUMNS, Grid
from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.identity import IDENTITY_ATTR, new_identity
from skybatch.store.schema import SCHEMA_NAME, SCHEMA_VERSION, StoreSchemaError, check_spectra_store, load_schema

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
    try:
        g = open_group(url, storage_options, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, zarr.errors.NodeTypeValidationError):
        return False
    return g.attrs.get("skybatch_schema") == SCHEMA_NAME


def consolidate(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Rewrite the consolidated metadata (after shape or variable changes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(zarr_store(url, storage_options))


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

    chunk_spectra: spectra per Zarr chunk (the whole wavelength axis is one chunk).
    attrs: store attributes (provenance, settings); schema name/version, grid and
        units are added here.
    extra_columns: format-specific per-spectrum columns (name -> dtype), e.g. the
        sky VAC's observing conditions.
    wavelength: the exact pixel centres (Angstrom, shape (grid.n,)) when they are
        not ``grid.wavelength()`` (e.g. an explicit grid from preprocessing).
    identity: the store's ``skybatch_store`` attr (uuid + kind); a new one by default.

    The group is created with mode ``w-``: a target that already holds anything
    raises ``FileExistsError`` and is left untouched.
    """
    schema = load_schema()
    g = open_group(url, storage_options, mode="w-")
    columns = {**PER_SPECTRUM_COLUMNS, **(extra_columns or {})}
    coord_names = " ".join(columns)
    nw = grid.n
    wl = g.create_array(
        "wavelength", shape=(nw,), chunks=(nw,), dtype="float64", fill_value=np.nan,
        dimension_names=["wavelength"],
        attributes={"units": "Angstrom", "long_name": "vacuum wavelength", "grid": grid.to_attrs()},
    )
    wl[:] = grid.wavelength() if wavelength is None else np.asarray(wavelength, np.float64)
    for name in ("flux", "ivar", "mask"):
        spec = schema["variables"][name]
        g.create_array(
            name, shape=(n_spectra, nw), chunks=(chunk_spectra, nw), dtype=spec["dtype"],
            fill_value=0, dimension_names=["spectrum", "wavelength"],
            **({"compressors": PIXEL_CODEC} if spec["dtype"] == "float32" else {}),
            attributes={"units": spec["units"], "long_name": spec["long_name"], "coordinates": coord_names},
        )
    for name, dtype in columns.items():
        spec = schema["coords"].get(name, {})
        g.create_array(
            name, shape=(n_spectra,), chunks=(chunk_spectra,), dtype=_zarr_dtype(dtype),
            fill_value=_fill(dtype), dimension_names=["spectrum"],
            attributes={k: v for k, v in spec.items() if k in ("units", "long_name")},
        )
    g.attrs.update(
        {
            "skybatch_schema": SCHEMA_NAME,
            "skybatch_schema_version": SCHEMA_VERSION,
            "grid": grid.to_attrs(),
            "wavelength_frame": "observed",
            "chunk_spectra": int(chunk_spectra),
            "per_spectrum_columns": columns,
            **attrs,
            IDENTITY_ATTR: identity or new_identity("spectra"),
        }
    )
    return g


def resize_spectra_store(g: zarr.Group, n_spectra: int) -> None:
    """Set the length of the ``spectrum`` dimension of every array on it (idempotent)."""
    for name, arr in g.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "spectrum" and arr.shape[0] != n_spectra:
            arr.resize((n_spectra,) + tuple(arr.shape[1:]))


def write_rows(g: zarr.Group, start: int, data: dict[str, np.ndarray]) -> None:
    """Write rows ``start : start + len`` of the named per-spectrum arrays.

    The caller guarantees the range covers whole chunks (or the store's tail),
    so no other task writes the same chunk.
    """
    for name, values in data.items():
        arr = g[name]
        stop = start + len(values)
        if arr.dtype.kind in ("O", "T", "U"):
            values = np.asarray([str(v) for v in values], dtype=object)
        arr[start:stop] = values


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
