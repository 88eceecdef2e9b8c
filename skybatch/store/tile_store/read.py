"""Opening a tile store with xarray, each view checked against ``schemas/tile_store.json``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from skybatch.store.schema import StoreSchemaError, dataset_problems, load_schema, raise_problems
from skybatch.store.zarr_group import storage_kwargs

from .write import open_tile_group


def check_tile_view(ds: xr.Dataset, where: str = "view") -> None:
    """Check one opened view against ``tile_store.json``; StoreSchemaError lists every problem."""
    problems = dataset_problems(ds, load_schema("tile_store"), "view")
    raise_problems(problems, f"{where} does not follow the tile store schema")


def check_tile_store(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, xr.Dataset]:
    """Check a whole tile store (root attrs, every view, one shared tile axis); returns the views."""
    return open_tile_store(url, storage_options, check=True)


def open_tile_store(
    url: str, storage_options: dict[str, Any] | None = None, *, check: bool = True
) -> dict[str, xr.Dataset]:
    """Every view of a tile store as a lazy ``xarray.Dataset``, by view name.

    Each is ``xr.open_zarr(url, group=name)``. With ``check`` the root attributes and every
    view are checked against the schema, and all views must share one tile axis
    (StoreSchemaError naming what is wrong).
    """
    try:
        g = open_tile_group(url, storage_options, mode="r", consolidated=True)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreSchemaError(
            f"{url}: no Zarr store here ({e}); create one with `skybatch run ingest-tiles`"
        ) from None
    root = dict(g.attrs)
    if check:
        schema = load_schema("tile_store")
        if root.get("skybatch_schema") != schema["schema"]:
            raise StoreSchemaError(f"{url} is not a skybatch tile store (skybatch_schema is "
                                   f"{root.get('skybatch_schema')!r}, expected {schema['schema']!r})")
        missing = [k for k in schema["root_attrs"]["required"] if k not in root]
        if missing:
            raise StoreSchemaError(f"{url} does not follow the tile store schema: missing root attributes {missing}")
    views = {}
    for name in root.get("views", {}):
        ds = xr.open_zarr(url, group=name, **storage_kwargs(url, storage_options))
        if check:
            check_tile_view(ds, f"{url} view {name!r}")
        views[name] = ds
    if check and views:
        ref_name, ref = next(iter(views.items()))
        ids = ref["tile_id"].values
        for name, ds in views.items():
            if ds.sizes["tile"] != ref.sizes["tile"] or not np.array_equal(ds["tile_id"].values, ids):
                raise StoreSchemaError(f"{url}: views {ref_name!r} and {name!r} do not share one tile axis; "
                                       "re-run the ingest to finish it")
    return views


def open_tile_tree(url: str, storage_options: dict[str, Any] | None = None) -> xr.DataTree:
    """The whole store as an ``xarray.DataTree`` (one child node per view)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_datatree(url, engine="zarr", **storage_kwargs(url, storage_options))
