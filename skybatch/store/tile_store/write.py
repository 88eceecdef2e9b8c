"""Creating and writing a tile store: the root group, one child group per view, the tile axis,
and whole write units (``chunk_tiles`` tiles x all bands) of pixels and coordinates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from skybatch.sources.tiles import band_key
from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.schema import load_schema
from skybatch.store.zarr_group import holds_schema, open_root_group

from .views import _PLANE_COORDS, SCHEMA_NAME, SCHEMA_VERSION, ViewSpec


def open_tile_group(
    url: str, storage_options: dict[str, Any] | None = None, mode: str = "r+", *, consolidated: bool = False
) -> zarr.Group:
    """The tile store's root Zarr group (:func:`skybatch.store.zarr_group.open_root_group`)."""
    return open_root_group(url, storage_options, mode, consolidated=consolidated)


def tile_store_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` holds a skybatch tile store."""
    return holds_schema(open_tile_group, url, storage_options, SCHEMA_NAME)


def create_tile_store(
    url: str, chunk_tiles: int, attrs: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """Create an empty tile store (no views yet) with a fresh ``store_uuid``.

    chunk_tiles: tiles per write unit (chunk or shard). attrs: provenance and settings.
    """
    from skybatch.store.identity import IDENTITY_ATTR, new_identity

    g = open_tile_group(url, storage_options, mode="w-")  # never over anything already there
    ident = new_identity("tiles")
    g.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "store_uuid": ident["uuid"],
        IDENTITY_ATTR: ident,
        "chunk_tiles": int(chunk_tiles),
        "views": {},
        "n_tiles": 0,
        **attrs,
    })
    return g


def ensure_view(g: zarr.Group, spec: ViewSpec, chunk_tiles: int, n_tiles: int, attrs: dict[str, Any]) -> zarr.Group:
    """The view's group, created (empty, ``n_tiles`` long) if it is not there yet.

    attrs: view attributes to set (skybatch_version, manifest...). The band axis is fixed here.
    """
    if spec.name in g:
        return g[spec.name]
    schema = load_schema("tile_store")["view"]
    v = g.create_group(spec.name)
    nb, h, w = len(spec.bands), spec.height, spec.width
    unit_chunk = (chunk_tiles, nb, h, w)
    kw = {"chunks": (1, 1, h, w), "shards": unit_chunk} if spec.shard_planes else {"chunks": unit_chunk}
    dims4 = ["tile", "band", "y", "x"]
    for name, dtype, fill in (("image", "float32", np.nan), ("noise", "float32", np.inf), ("mask", "uint32", 0)):
        codec = {"compressors": PIXEL_CODEC} if dtype == "float32" else {}
        v.create_array(
            name, shape=(n_tiles, nb, h, w), dtype=dtype, fill_value=fill, dimension_names=dims4,
            attributes={"long_name": schema["variables"][name]["long_name"], "coordinates": _PLANE_COORDS},
            **kw, **codec,
        )
    coord_specs: list[tuple[str, Any, Any]] = [("wcs", str, ""), ("present", "bool", False), ("source", str, "")]
    for name, dtype, fill in coord_specs:
        v.create_array(
            name, shape=(n_tiles, nb), chunks=(chunk_tiles, nb), dtype=dtype, fill_value=fill,
            dimension_names=["tile", "band"], attributes={"long_name": schema["coords"][name]["long_name"]},
        )
    v.create_array("tile_id", shape=(n_tiles,), chunks=(chunk_tiles,), dtype=str, fill_value="",
                   dimension_names=["tile"], attributes={"long_name": schema["coords"]["tile_id"]["long_name"]})
    for name, values in (
        ("band", list(spec.bands)),
        ("band_key", [band_key(spec.instrument, b) for b in spec.bands]),
        ("instrument", [spec.instrument] * nb),
    ):
        a = v.create_array(name, shape=(nb,), chunks=(nb,), dtype=str, fill_value="", dimension_names=["band"],
                           attributes={"long_name": schema["coords"][name]["long_name"]})
        a[:] = np.asarray(values, dtype=object)
    v.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "view": spec.name,
        **spec.to_attrs(),
        "chunk_tiles": int(chunk_tiles),
        "band_units": {},
        "mask_bits": {},
        "provenance": {},
        **attrs,
    })
    return v


def resize_tiles(g: zarr.Group, n_tiles: int) -> None:
    """Set the length of the ``tile`` axis of every array of every view (idempotent)."""
    for _name, v in g.groups():
        for _aname, arr in v.arrays():
            dims = arr.metadata.dimension_names or ()
            if dims and dims[0] == "tile" and arr.shape[0] != n_tiles:
                arr.resize((n_tiles,) + tuple(arr.shape[1:]))


def write_tile_ids(v: zarr.Group, start: int, tile_ids: list[str]) -> None:
    """Write ``tile_id[start : start + len(tile_ids)]`` of one view."""
    if tile_ids:
        v["tile_id"][start : start + len(tile_ids)] = np.asarray([str(t) for t in tile_ids], dtype=object)


def write_tile_chunk(v: zarr.Group, start: int, data: dict[str, np.ndarray]) -> None:
    """Write tiles ``start : start + n`` of the named arrays of one view.

    data: ``image``/``noise`` float32 and ``mask`` uint32 (n, bands, H, W); ``present`` bool,
    ``wcs`` / ``source`` str (n, bands). The caller guarantees the range is a whole write unit
    (or the store's tail), so no other task writes the same chunk or shard.

    Every chunk of the unit is stored (``write_empty_chunks``: no all-fill test per chunk, ~10 %
    of a task; a unit of absent planes reads back the same fill values), whole units of the
    unsharded layout encoded in this thread (:func:`skybatch.store.shardwrite.write_region`).
    """
    from skybatch.store.shardwrite import write_region

    arrays = {}
    for name in data:
        arr = v[name]
        try:
            arr = arr.with_config({"write_empty_chunks": True})
        except (AttributeError, TypeError):  # another zarr: keep its default
            pass
        arrays[name] = arr
    write_region(arrays, start, data)
