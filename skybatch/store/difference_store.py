"""The difference store: ZOGY maps per image pair, candidates and their cutouts (Zarr v3, xarray).

Layout (the contract is ``schemas/difference_store.json``, checked by :func:`check_difference_store`)::

    STORE/                       root attrs: schema, store_uuid, groups, n_pairs, settings, identity, provenance
      512x512/                   one child group per science-image shape '<ny>x<nx>'
        D, S_corr, F_psf, F_psf_err   (pair, y, x) float32, one chunk per pair
        mask                          (pair, y, x) uint8: 1 bad, 2 saturated
        pair_id, pair_number, tile_id, band, instrument, science, reference, wcs,
        done, flux_ratio, flux_ratio_err, flux_ratio_method, new/ref_psf_method,
        new/ref_fwhm, new/ref_sigma, aligned, n_subtiles, n_candidates, n_injected   (pair)
      candidates/
        cutouts (candidate, kind, y, x) float32   kind = science, reference, difference
        kind (kind), pair_id, x, y, S_corr (candidate)
    STORE.candidates.parquet     the catalogue: row i = candidate i of candidates/cutouts
    STORE.triplets.png           the most significant triplets
    STORE.recovery.json/.parquet injection-recovery runs only
    STORE.manifest/              plan, per-pair records, staged parts, quarantine

**Why a group per shape.** Pairs of one survey usually share one grid, so usually there is
one group; when shapes differ (Rubin 4096^2 calexps beside Euclid 19200^2 mosaics), each
shape gets its own dense (pair, y, x) arrays instead of padding everything to the largest.
``xr.open_zarr(STORE, group="512x512")`` is a plain Dataset; :func:`open_difference_store`
returns every group and :func:`read_candidates` the catalogue.

**Who writes what.** Each pair's Dask task writes its own chunk of the maps (chunks are one
pair, so no two tasks share a chunk). The driver writes the small per-pair coordinates,
the catalogue and (through Dask tasks writing whole chunks) the cutouts when a run finishes.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from skybatch.store.codecs import PIXEL_CODEC
from skybatch.store.schema import StoreSchemaError, dataset_problems, load_schema, raise_problems
from skybatch.store.zarr_group import consolidate, holds_schema, open_root_group, storage_kwargs

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "MAP_VARIABLES",
    "MASK_BAD",
    "MASK_SATURATED",
    "MASK_BRIGHT_VETO",
    "MASK_MARGIN",
    "PAIR_COORDS",
    "CUTOUT_KINDS",
    "CANDIDATES_GROUP",
    "group_name",
    "outputs",
    "open_difference_group",
    "difference_store_exists",
    "create_difference_store",
    "ensure_pair_group",
    "resize_pairs",
    "write_pair_maps",
    "write_pair_coords",
    "create_candidates_group",
    "write_cutout_rows",
    "write_candidate_coords",
    "write_candidate_scores",
    "open_difference_store",
    "open_candidates",
    "read_candidates",
    "check_difference_store",
    "consolidate",
]

SCHEMA_NAME = "skybatch.difference"
SCHEMA_VERSION = 1
#: The (pair, y, x) float32 maps of every pairs group.
MAP_VARIABLES = ("D", "S_corr", "F_psf", "F_psf_err")
#: The (pair, y, x) uint8 pixel flags: bad in either image, saturated in either image.
MASK_BAD, MASK_SATURATED = 1, 2
#: pixels vetoed around bright and saturated stars (detections there are counted, not catalogued)
MASK_BRIGHT_VETO = 4
#: pixels detection keeps out of beside those: margins along wide bad regions (a P_D width where
#: their edge cuts a source) and filled holes whose fill may leave a residual in S_corr
MASK_MARGIN = 8
#: Per-pair coordinates and their dtypes (strings are Zarr variable-length strings).
PAIR_COORDS: dict[str, str] = {
    "pair_id": "str", "pair_number": "int64", "tile_id": "str", "band": "str", "instrument": "str",
    "science": "str", "reference": "str", "wcs": "str", "done": "bool", "flux_ratio": "float64",
    "flux_ratio_err": "float64", "flux_ratio_method": "str", "new_psf_method": "str", "ref_psf_method": "str",
    "new_fwhm": "float32", "ref_fwhm": "float32", "new_sigma": "float32", "ref_sigma": "float32",
    "aligned": "bool", "n_subtiles": "int32", "n_candidates": "int32", "n_injected": "int32",
}  # fmt: skip
CUTOUT_KINDS = ("science", "reference", "difference")
CANDIDATES_GROUP = "candidates"
_CANDIDATE_COORDS = {"pair_id": "str", "x": "float64", "y": "float64", "S_corr": "float32"}


def _fill(dtype: str) -> Any:
    return {"str": "", "bool": False}.get(dtype, np.nan if dtype.startswith("float") else -1)


def group_name(shape: tuple[int, int]) -> str:
    """The pairs group of a science-image shape (ny, nx): ``"<ny>x<nx>"``."""
    return f"{int(shape[0])}x{int(shape[1])}"


def outputs(url: str) -> dict[str, str]:
    """Where the files beside the store go: catalogue, png, recovery json/parquet, manifest."""
    base = url.rstrip("/")
    return {
        "store": base,
        "catalogue": base + ".candidates.parquet",
        "png": base + ".triplets.png",
        "recovery_json": base + ".recovery.json",
        "recovery_table": base + ".recovery.parquet",
        "manifest": base + ".manifest",
    }




def open_difference_group(
    url: str, storage_options: dict[str, Any] | None = None, mode: str = "r+", *, consolidated: bool = False
) -> zarr.Group:
    """The difference store's root Zarr group (:func:`skybatch.store.zarr_group.open_root_group`)."""
    return open_root_group(url, storage_options, mode, consolidated=consolidated)


def difference_store_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``url`` holds a skybatch difference store."""
    return holds_schema(open_difference_group, url, storage_options, SCHEMA_NAME)


def create_difference_store(
    url: str, attrs: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> zarr.Group:
    """Create an empty difference store (no groups yet) with a fresh ``store_uuid``.

    attrs: settings, identity, provenance, skybatch_version, manifest, catalogue...
    """
    from skybatch.store.identity import IDENTITY_ATTR, new_identity

    g = open_difference_group(url, storage_options, mode="w-")  # never over something that exists
    g.update_attributes({
        IDENTITY_ATTR: new_identity("difference"),
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "store_uuid": uuid.uuid4().hex,
        "groups": {},
        "n_pairs": 0,
        **attrs,
    })
    return g


def ensure_pair_group(g: zarr.Group, shape: tuple[int, int], n_pairs: int, attrs: dict[str, Any]) -> zarr.Group:
    """The pairs group of ``shape``, created empty (``n_pairs`` long, maps NaN) if it is not there.

    Maps are chunked one pair per chunk ``(1, ny, nx)``: a pair's task writes exactly its chunk.
    """
    name = group_name(shape)
    if name in g:
        return g[name]
    schema = load_schema("difference_store")["pairs_group"]
    ny, nx = int(shape[0]), int(shape[1])
    v = g.create_group(name)
    coords = " ".join(PAIR_COORDS)
    for var in MAP_VARIABLES:
        s = schema["variables"][var]
        v.create_array(
            var, shape=(n_pairs, ny, nx), chunks=(1, ny, nx), dtype="float32", fill_value=np.nan,
            dimension_names=["pair", "y", "x"], compressors=PIXEL_CODEC,
            attributes={"long_name": s["long_name"], "units": s["units"], "coordinates": coords},
        )
    s = schema["variables"]["mask"]
    v.create_array(
        "mask", shape=(n_pairs, ny, nx), chunks=(1, ny, nx), dtype="uint8", fill_value=255,
        dimension_names=["pair", "y", "x"],
        attributes={"long_name": s["long_name"], "units": s["units"], "coordinates": coords,
                    "flag_masks": [MASK_BAD, MASK_SATURATED, MASK_BRIGHT_VETO, MASK_MARGIN],
                    "flag_meanings": "bad saturated bright-veto margin"},
    )
    for cname, dtype in PAIR_COORDS.items():
        v.create_array(
            cname, shape=(n_pairs,), chunks=(max(n_pairs, 1),), dtype=str if dtype == "str" else dtype,
            fill_value=_fill(dtype), dimension_names=["pair"],
            attributes={"long_name": schema["coords"][cname]["long_name"]},
        )
    v.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "group": name,
        "shape": [ny, nx],
        **attrs,
    })
    return v


def resize_pairs(v: zarr.Group, n_pairs: int) -> None:
    """Set the length of the ``pair`` axis of every array of one pairs group (idempotent)."""
    for _name, arr in v.arrays():
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "pair" and arr.shape[0] != n_pairs:
            arr.resize((n_pairs,) + tuple(arr.shape[1:]))


def write_pair_maps(v: zarr.Group, index: int, maps: dict[str, np.ndarray]) -> None:
    """Write pair ``index`` of the (pair, y, x) maps named in ``maps`` (each (ny, nx); float32 maps and
    the uint8 ``mask``)."""
    for name, values in maps.items():
        v[name][index] = np.asarray(values, dtype=np.uint8 if name == "mask" else np.float32)


def write_pair_coords(v: zarr.Group, values: dict[str, np.ndarray]) -> None:
    """Write whole per-pair coordinate arrays (driver only; each (n_pairs,))."""
    for name, vals in values.items():
        arr = v[name]
        a = np.asarray(vals)
        if PAIR_COORDS.get(name) == "str":
            a = np.asarray([str(s) for s in a], dtype=object)
        else:
            a = a.astype(PAIR_COORDS.get(name, str(a.dtype)))
        if a.shape[0] != arr.shape[0]:
            raise ValueError(f"{name}: {a.shape[0]} values for {arr.shape[0]} pairs")
        if a.shape[0]:
            arr[:] = a


def create_candidates_group(
    g: zarr.Group, n_candidates: int, cutout_size: int, chunk_candidates: int, attrs: dict[str, Any]
) -> zarr.Group:
    """(Re)create the ``candidates`` group: ``cutouts`` (candidate, kind, y, x) and its coordinates.

    The cutouts are chunked ``chunk_candidates`` candidates x all kinds x the whole stamp, and
    written by tasks that each own whole chunks (:func:`write_cutout_rows`).
    """
    if CANDIDATES_GROUP in g:
        del g[CANDIDATES_GROUP]
    schema = load_schema("difference_store")["candidates_group"]
    c = g.create_group(CANDIDATES_GROUP)
    s = int(cutout_size)
    ch = max(1, min(int(chunk_candidates), max(n_candidates, 1)))
    c.create_array(
        "cutouts", shape=(n_candidates, len(CUTOUT_KINDS), s, s), chunks=(ch, len(CUTOUT_KINDS), s, s),
        dtype="float32", fill_value=np.nan, dimension_names=["candidate", "kind", "y", "x"], compressors=PIXEL_CODEC,
        attributes={"long_name": schema["variables"]["cutouts"]["long_name"],
                    "coordinates": " ".join(["kind", *_CANDIDATE_COORDS])},
    )
    k = c.create_array("kind", shape=(len(CUTOUT_KINDS),), chunks=(len(CUTOUT_KINDS),), dtype=str, fill_value="",
                       dimension_names=["kind"], attributes={"long_name": schema["coords"]["kind"]["long_name"]})
    k[:] = np.asarray(CUTOUT_KINDS, dtype=object)
    for name, dtype in _CANDIDATE_COORDS.items():
        c.create_array(name, shape=(n_candidates,), chunks=(max(n_candidates, 1),),
                       dtype=str if dtype == "str" else dtype, fill_value=_fill(dtype), dimension_names=["candidate"],
                       attributes={"long_name": schema["coords"][name]["long_name"]})
    c.update_attributes({
        "skybatch_schema": SCHEMA_NAME,
        "skybatch_schema_version": SCHEMA_VERSION,
        "cutout_size": s,
        "n_candidates": int(n_candidates),
        "chunk_candidates": ch,
        **attrs,
    })
    return c


def write_cutout_rows(c: zarr.Group, start: int, cutouts: np.ndarray) -> None:
    """Write ``cutouts[start : start + n]`` (n, kind, y, x); the caller owns those whole chunks."""
    if len(cutouts):
        c["cutouts"][start : start + len(cutouts)] = np.asarray(cutouts, dtype=np.float32)


def write_candidate_coords(c: zarr.Group, table: pd.DataFrame) -> None:
    """Write the per-candidate coordinates of the candidates group from the catalogue (driver)."""
    for name, dtype in _CANDIDATE_COORDS.items():
        if not len(table):
            continue
        vals = table[name].to_numpy()
        c[name][:] = np.asarray([str(v) for v in vals], dtype=object) if dtype == "str" else vals.astype(dtype)


def write_candidate_scores(url: str, columns: dict[str, tuple[np.ndarray, str]],
                           storage_options: dict[str, Any] | None = None) -> list[str]:
    """Write per-candidate values (e.g. ``realbogus_score``) as variables (candidate,) of the
    ``candidates`` group, replacing any of the same name, and re-consolidate the store's metadata.

    columns: name -> (values, long_name); each ``values`` has one entry per candidate (float or bool).
    Returns the names written (none when the store has no candidates group). Driver only.
    """
    g = open_difference_group(url, storage_options, mode="r+")
    if CANDIDATES_GROUP not in g:
        return []
    c = g[CANDIDATES_GROUP]
    n = int(c["cutouts"].shape[0])
    names = []
    for name, (values, long_name) in columns.items():
        if name in _CANDIDATE_COORDS or name in ("cutouts", "kind"):
            raise ValueError(f"{name}: a name the candidates group already uses for something else")
        a = np.asarray(values)
        if a.shape != (n,):
            raise ValueError(f"{name}: {a.shape} values for {n} candidates")
        dtype = "bool" if a.dtype == bool else "float64"
        if name in c:
            del c[name]
        arr = c.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=dtype,
                             fill_value=False if dtype == "bool" else np.nan, dimension_names=["candidate"],
                             attributes={"long_name": long_name})
        if n:
            arr[:] = a.astype(dtype)
        names.append(name)
    consolidate(url, storage_options)
    return names


# -- open / check --------------------------------------------------------------------------------


def _check_dataset(ds: xr.Dataset, part: str, where: str, problems: list[str]) -> None:
    problems += [f"{where}: {p}" for p in dataset_problems(ds, load_schema("difference_store"), part)]


def open_difference_store(
    url: str, storage_options: dict[str, Any] | None = None, *, check: bool = True
) -> dict[str, xr.Dataset]:
    """Every pairs group of a difference store as a lazy ``xarray.Dataset``, by group name.

    Each is ``xr.open_zarr(url, group=name)``. With ``check`` the store is checked against
    the schema first (StoreSchemaError listing every problem).
    """
    if check:
        check_difference_store(url, storage_options)
    g = open_difference_group(url, storage_options, mode="r", consolidated=True)
    kw = storage_kwargs(url, storage_options)
    return {name: xr.open_zarr(url, group=name, **kw) for name in g.attrs.get("groups", {})}


def open_candidates(url: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The ``candidates`` group (cutout triplets) as a lazy ``xarray.Dataset``."""
    return xr.open_zarr(url, group=CANDIDATES_GROUP, **storage_kwargs(url, storage_options))


def read_candidates(url: str, storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The candidate catalogue beside the store (``<url>.candidates.parquet``) as a DataFrame."""
    import pyarrow.parquet as pq

    from skybatch.store.fsutil import filesystem

    path = outputs(url)["catalogue"]
    fs = filesystem(path, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"{path}: no candidate catalogue; run `skybatch run difference` to finish {url}")
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def check_difference_store(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Check a whole difference store (root attrs, every pairs group, the candidates group and
    its agreement with the catalogue) against ``difference_store.json``."""
    schema = load_schema("difference_store")
    try:
        g = open_difference_group(url, storage_options, mode="r", consolidated=True)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreSchemaError(f"{url}: no Zarr store here ({e}); create one with `skybatch run difference`") from None
    root = dict(g.attrs)
    if root.get("skybatch_schema") != schema["schema"]:
        raise StoreSchemaError(f"{url} is not a skybatch difference store (skybatch_schema is "
                               f"{root.get('skybatch_schema')!r}, expected {schema['schema']!r})")
    problems = [f"root: missing attribute {k!r}" for k in schema["root_attrs"]["required"] if k not in root]
    for name in root.get("groups", {}):
        ds = xr.open_zarr(url, group=name, **storage_kwargs(url, storage_options))
        _check_dataset(ds, "pairs_group", f"group {name!r}", problems)
    if CANDIDATES_GROUP in g:
        ds = open_candidates(url, storage_options)
        _check_dataset(ds, "candidates_group", "group 'candidates'", problems)
        n = int(ds.attrs.get("n_candidates", -1))
        if ds.sizes.get("candidate") != n:
            problems.append(f"group 'candidates': {ds.sizes.get('candidate')} cutouts but n_candidates={n}")
    raise_problems(problems, f"{url} does not follow the difference store schema")
