"""The tile store's views: which (instrument, grid) planes go to which child group, with
which band axis, and whether planes are sharded (rules in :mod:`skybatch.store.tile_store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.sources.tiles import INSTRUMENT_BANDS

SCHEMA_NAME = "skybatch.tiles"
SCHEMA_VERSION = 1
#: Planes at least this big (bytes of float32) are stored one per inner chunk in shards.
SHARD_PLANE_BYTES = 4 * 2**20
#: Cameras of instruments whose bands may come on different grids: instrument -> camera -> bands.
CAMERAS: dict[str, dict[str, tuple[str, ...]]] = {"euclid": {"vis": ("VIS",), "nisp": ("Y", "J", "H")}}

_PLANE_COORDS = "tile_id band_key instrument wcs present source"


@dataclass(frozen=True)
class ViewSpec:
    """One view: an instrument on one pixel grid.

    name: the Zarr child group (``"rubin"``, ``"euclid_vis"``...).
    instrument: ``"rubin"``, ``"euclid"``, ...
    bands: the band axis, fixed at creation.
    height, width: the pixel grid (y, x).
    shard_planes: store one (tile, band) plane per inner chunk inside shards.
    """

    name: str
    instrument: str
    bands: tuple[str, ...]
    height: int
    width: int
    shard_planes: bool = False

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.instrument, self.height, self.width)

    def to_attrs(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "bands": list(self.bands), "shape": [self.height, self.width],
                "shard_planes": bool(self.shard_planes)}

    @classmethod
    def from_attrs(cls, name: str, d: dict[str, Any]) -> ViewSpec:
        h, w = d["shape"]
        return cls(name, d["instrument"], tuple(d["bands"]), int(h), int(w), bool(d.get("shard_planes", False)))


def _auto_shard(height: int, width: int, shard_planes: bool | None) -> bool:
    return bool(shard_planes) if shard_planes is not None else height * width * 4 >= SHARD_PLANE_BYTES


def assign_views(
    existing: dict[str, ViewSpec],
    groups: dict[tuple[str, int, int], set[str]],
    shard_planes: bool | None = None,
) -> dict[tuple[str, int, int], ViewSpec]:
    """The view of every (instrument, height, width) group of planes (the rule in the module doc).

    existing: views already in the store, by name. groups: the bands seen per grid in this run.
    Returns group key -> ViewSpec (existing ones reused, new ones named and given band axes).
    """
    by_key = {v.key: v for v in existing.values()}
    taken = set(existing)
    out: dict[tuple[str, int, int], ViewSpec] = {}
    for key in sorted(groups):
        if key in by_key:
            out[key] = by_key[key]
    for key in sorted(groups):
        if key in out:
            continue
        inst, h, w = key
        seen = groups[key]
        canon = INSTRUMENT_BANDS.get(inst)
        full = tuple(canon) if canon else tuple(sorted(seen))
        grids = {k for k in groups if k[0] == inst} | {v.key for v in existing.values() if v.instrument == inst}
        name, bands = None, full
        if len(grids) == 1 and inst not in taken:
            name = inst
        else:
            for cam, cam_bands in CAMERAS.get(inst, {}).items():
                if seen <= set(cam_bands) and f"{inst}_{cam}" not in taken:
                    name, bands = f"{inst}_{cam}", cam_bands
                    break
        if name is None:
            name = f"{inst}_{h}x{w}"
        spec = ViewSpec(name, inst, bands, h, w, _auto_shard(h, w, shard_planes))
        taken.add(name)
        out[key] = spec
    return out
