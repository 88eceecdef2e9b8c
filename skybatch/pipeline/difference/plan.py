"""Planning a difference run: frames paired on (tile, band), the store laid out, the pairs still to do."""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import skybatch
from skybatch.store.fsutil import atomic_write_bytes, filesystem, join, public_options
from skybatch.store.manifest import Manifest
from skybatch.store.retry import RetriesExhausted, retry_call

from .config import DifferenceConfig, DifferenceSettingsError, STAGE, _PLAN_FILE, mismatch_message


@dataclass
class PairTask:
    """One pair to difference.

    pair: the pair's number in the store. pair_id: ``"<tile_id>/<band>"``. group, index: its
    pairs group (``"<ny>x<nx>"``) and index on that group's ``pair`` axis. shape: science (ny, nx).
    science, reference: the frames (url, kind file/store, locator, checksum, shape, mask bits...).
    windows: sub-tile windows (y0, y1, x0, x1) and interiors; one covering everything = whole image.
    fingerprint: hash of inputs, settings and store; a record with it means done.
    """

    pair: int
    pair_id: str
    group: str
    index: int
    shape: tuple[int, int]
    science: dict[str, Any]
    reference: dict[str, Any]
    windows: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]
    fingerprint: str


@dataclass
class DifferencePlan:
    """What :func:`execute_difference` will do; built by :func:`plan_difference`.

    table: every pair the store holds (this run's and earlier runs'), one row each.
    todo: pairs still to difference; n_done: this run's pairs already done.
    set_aside: inputs set aside while planning.
    unused_references: reference frames no science frame matched (url, pair_id).
    notes: NOTE lines for the summary (e.g. one science and one reference image paired although
    their names do not pair them).
    """

    config: DifferenceConfig
    run_id: str
    store_uuid: str
    table: pd.DataFrame
    todo: list[PairTask]
    n_done: int
    set_aside: list[dict[str, Any]]
    unused_references: list[dict[str, Any]]
    n_science: int
    n_reference: int
    seconds: float = 0.0  # wall time of planning
    notes: list[str] = field(default_factory=list)  # NOTE lines for the summary (e.g. how files were paired)

# -- frames ------------------------------------------------------------------------------------


def _is_tile_store(src: str, options: dict[str, Any]) -> bool:
    from skybatch.sources.tiles import TILE_SUFFIXES
    from skybatch.store.tile_store import tile_store_exists

    if any(c in src for c in "*?[") or src.lower().endswith(TILE_SUFFIXES):
        return False
    try:
        return tile_store_exists(src, options)
    except Exception:  # not a Zarr group at all (a file, a prefix of files...)
        return False


def _store_frames(url: str, view: str | None, options: dict[str, Any], side: str) -> list[dict[str, Any]]:
    """Every present (tile, band) plane of a tile store (optionally one view) as frames."""
    from skybatch.store.tile_store import open_tile_group

    g = open_tile_group(url, options, mode="r", consolidated=True)
    views = dict(g.attrs.get("views", {}))
    if view is not None and view not in views:
        raise DifferenceSettingsError(f"{side}_view: {view!r} is not a view of the tile store {url} (views: "
                                      f"{sorted(views)}) (--{side}-view)")
    uid = str(g.attrs.get("store_uuid", ""))
    out = []
    for name in sorted(views) if view is None else [view]:
        v = g[name]
        spec = views[name]
        h, w = (int(s) for s in spec["shape"])
        tile_ids = [str(t) for t in v["tile_id"][:]]
        bands = [str(b) for b in v["band"][:]]
        present = np.asarray(v["present"][:], dtype=bool)
        bits = json.dumps(dict(v.attrs.get("mask_bits", {})))
        units = dict(v.attrs.get("band_units", {}))
        for ti, bi in zip(*np.nonzero(present)):
            tid, band = tile_ids[ti], bands[bi]
            out.append({
                "url": url, "uri": f"{url}#{name}/{tid}/{band}", "kind": "store", "format": "zarr",
                "locator": f"{name}:{int(ti)}:{int(bi)}", "checksum": f"{uid}:{name}:{int(ti)}:{int(bi)}",
                "tile_id": tid, "band": band, "instrument": str(spec["instrument"]), "height": h, "width": w,
                "unit": str(units.get(band, "")), "mask_bits": bits, "meta": "",
            })
    return out


def _inspect_batch(urls: list[str], instrument: str | None, tile_pattern: str | None, options: dict[str, Any],
                   hdu: str | None = None) -> list:
    """Inspect tile files on a worker (headers only); unreadable ones come back as set-aside records.

    Transient storage errors are retried (:func:`skybatch.store.retry.retry_call`); when they persist,
    the record's reason is ``unreachable``."""
    from skybatch.sources.base import SourceError
    from skybatch.sources.tiles import inspect_tile_source

    def look(url: str) -> Any:
        fs = filesystem(url, options)
        if not fs.exists(url):
            return {"url": url, "reason": "not-found", "message": f"{url}: no such file; check the path or URL"}
        if fs.isdir(url):
            return {"url": url, "reason": "empty-directory",
                    "message": f"{url}: a directory with no image files (.fits, .fit, .fits.fz, .npz); check the path"}
        return inspect_tile_source(fs, url, instrument=instrument, tile_pattern=tile_pattern, hdu=hdu)

    out: list[Any] = []
    for url in urls:
        try:
            out.append(retry_call(look, url, what=f"inspect {url}", base_delay_s=0.5))
        except SourceError as e:
            out.append({"url": url, "reason": e.reason, "message": str(e)})
        except (FileNotFoundError, PermissionError, RetriesExhausted) as e:
            out.append({"url": url, "reason": "unreachable",
                        "message": f"{url}: cannot be read ({type(e).__name__}: {e})"})
        except Exception as e:  # a file nothing can parse
            out.append({"url": url, "reason": "corrupt", "message": f"{url}: cannot be read ({type(e).__name__}: {e})"})
    return out


def _file_frames(sources: list[str], config: DifferenceConfig, client, run_id: str, side: str):
    from skybatch.pipeline.tile_ingest import expand_tile_sources

    opts = config.source_storage_options()
    urls = expand_tile_sources(sources, opts)
    frames: list[dict[str, Any]] = []
    set_aside: list[dict[str, Any]] = []
    if not urls:
        return frames, set_aside
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    per = max(1, min(64, math.ceil(len(urls) / (4 * n_workers))))
    batches = [urls[i : i + per] for i in range(0, len(urls), per)]
    futures = client.map(_inspect_batch, batches, instrument=config.instrument, tile_pattern=config.tile_pattern,
                         options=opts, hdu=config.hdu, pure=False, key=[f"inspect-{side}-{run_id}-{i}" for i in range(len(batches))])
    for res in client.gather(futures):
        for r in res:
            if isinstance(r, dict):
                set_aside.append({**r, "message": f"{side}: {r['message']}"})
                continue
            bits = json.dumps(dict(r.mask_bits))
            for p in r.planes:
                frames.append({
                    "url": r.url, "uri": r.url, "kind": "file", "format": r.format, "locator": p.locator,
                    "checksum": r.checksum, "tile_id": p.tile_id, "band": p.band, "instrument": p.instrument,
                    "height": int(p.height), "width": int(p.width), "unit": p.unit, "mask_bits": bits,
                    "meta": p.meta,
                })
    return frames, set_aside


def _frames(side: str, config: DifferenceConfig, client, run_id: str):
    sources = getattr(config, side)
    view = getattr(config, f"{side}_view")
    opts = config.source_storage_options()
    if len(sources) == 1 and _is_tile_store(sources[0], opts):
        frames, set_aside = _store_frames(sources[0], view, opts, side), []
    else:
        if view is not None:
            raise DifferenceSettingsError(f"{side}_view: {view!r} given, but {side} is not a tile store ({sources}); "
                                          f"drop --{side}-view or point --{side} at a tile store")
        frames, set_aside = _file_frames(sources, config, client, run_id, side)
    if config.bands:
        want = set(config.bands)
        want_keys = {b.lower() for b in config.bands}
        frames = [f for f in frames if f["band"] in want or f"{f['instrument']}_{f['band'].lower()}" in want_keys]
    return frames, set_aside


# -- planning -----------------------------------------------------------------------------------


_FRAME_FIELDS = (
    "url", "uri", "kind", "format", "locator", "checksum", "instrument", "height", "width", "unit", "mask_bits",
    "meta",
)  # fmt: skip
_PLAN_COLUMNS = ["pair", "pair_id", "group", "pair_index", "tile_id", "band", "fingerprint", "run_id", "planned_at"] + [
    f"{side}_{k}" for side in ("science", "reference") for k in _FRAME_FIELDS
] + ["reference_tile_id", "reference_band"]  # the reference plane's own tile and band (a pair named by its science)


def _empty_plan() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c in ("pair", "pair_index") else object)
                         for c in _PLAN_COLUMNS})


def _read_plan(manifest: Manifest) -> pd.DataFrame:
    """The pair plan of a store (empty frame if none)."""
    path = join(manifest.url, _PLAN_FILE)
    fs = manifest.fs
    if not fs.exists(path):
        return _empty_plan()
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pandas()


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def _frame_of(row: Any, side: str) -> dict[str, Any]:
    def val(k: str) -> Any:
        v = row.get(f"{side}_{k}")
        if k in ("height", "width"):
            return int(v)
        return "" if k == "meta" and not isinstance(v, str) else v  # plans of earlier versions have no meta

    def own(k: str) -> Any:  # the reference plane's own tile/band when it was paired under other names
        v = row.get(f"{side}_{k}") if side == "reference" else None
        return v if isinstance(v, str) and v else row[k]

    return {k: val(k) for k in _FRAME_FIELDS} | {"tile_id": own("tile_id"), "band": own("band")}


def _fingerprint(identity: str, store_uuid: str, row: Any) -> str:
    parts = [identity, store_uuid, row["pair_id"], row["group"], int(row["pair_index"])]
    for side in ("science", "reference"):
        parts += [row[f"{side}_url"], row[f"{side}_locator"], row[f"{side}_checksum"]]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _windows(shape: tuple[int, int], subtile: int, overlap: int):
    from skybatch.imaging import plan_subtiles

    ny, nx = shape
    if subtile <= 0 or max(ny, nx) <= subtile:
        return [((0, ny, 0, nx), (0, ny, 0, nx))]
    return [(st.window, st.interior) for st in plan_subtiles((ny, nx), subtile, overlap)]


def plan_difference(config: DifferenceConfig, client) -> DifferencePlan:
    """Find the frames, pair them, create or resume the store and list the pairs still to do.

    Writes the store's layout (groups, pair axis, static per-pair coordinates), the pair plan
    (``OUT.manifest/pairs.parquet``) and the quarantine. Safe to repeat.
    """
    t_start = time.perf_counter()
    from skybatch.store import difference_store as ds

    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    st_opts = config.store_storage_options()
    manifest = Manifest(config.out, st_opts, stage=STAGE)
    identity = config.identity()
    from skybatch.store.identity import check_target

    # a target that is not a difference store skybatch made is refused before anything is written
    check_target(config.out, "difference", st_opts, adopt_schema=ds.SCHEMA_NAME)
    exists = ds.difference_store_exists(config.out, st_opts)
    if exists:
        g = ds.open_difference_group(config.out, st_opts)
        if g.attrs.get("identity") != identity:
            diff = config.settings_mismatch(dict(g.attrs.get("science_settings", {})))
            if diff:
                raise DifferenceSettingsError(mismatch_message(config.out, diff))
            identity = str(g.attrs["identity"])  # an older store whose new settings are at their defaults

    sci, set_aside = _frames("science", config, client, run_id)
    ref, ref_aside = _frames("reference", config, client, run_id)
    set_aside += ref_aside

    def by_key(frames: list[dict[str, Any]], side: str) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for f in sorted(frames, key=lambda f: (f["uri"], f["locator"])):
            key = (f["tile_id"], f["band"])
            if key in out:
                set_aside.append({"url": f["uri"], "reason": "duplicate",
                                  "message": f"{side} {f['uri']}: tile {key[0]} band {key[1]} is also in "
                                  f"{out[key]['uri']}; leave one of them out"})
                continue
            out[key] = f
        return out

    sci_by = by_key(sci, "science")
    ref_by = by_key(ref, "reference")
    notes: list[str] = []
    if len(sci) == 1 and len(ref) == 1 and set(sci_by) != set(ref_by):
        sci_by, ref_by, note = _pair_the_only_two(sci_by, ref_by)
        notes.append(note)
    for key, f in sorted(sci_by.items()):
        if key not in ref_by:
            set_aside.append({"url": f["uri"], "reason": "no-reference",
                              "message": f"science {f['uri']}: no reference for tile {key[0]} band {key[1]} "
                              f"({len(ref_by)} reference planes found); add it to --reference, or match names "
                              "with --tile-pattern"})
    unused = [{"url": f["uri"], "pair_id": f"{k[0]}/{k[1]}"} for k, f in sorted(ref_by.items()) if k not in sci_by]

    planned = _read_plan(manifest) if exists else _empty_plan()  # a manifest without its store: start over
    old = {r["pair_id"]: r for r in planned.to_dict("records")}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n_next = (int(planned["pair"].max()) + 1) if len(planned) else 0
    per_group = planned.groupby("group").size().to_dict() if len(planned) else {}
    rows: list[dict[str, Any]] = []
    current: set[str] = set()
    for key in sorted(set(sci_by) & set(ref_by)):
        s, r = sci_by[key], ref_by[key]
        pair_id = f"{key[0]}/{key[1]}"
        group = ds.group_name((s["height"], s["width"]))
        row: dict[str, Any] = {"pair_id": pair_id, "group": group, "tile_id": key[0], "band": key[1], "run_id": run_id,
               "planned_at": now}
        for side, f in (("science", s), ("reference", r)):
            for k in _FRAME_FIELDS:
                row[f"{side}_{k}"] = f[k]
        row["reference_tile_id"], row["reference_band"] = r["tile_id"], r["band"]
        prev = old.get(pair_id)
        if prev is not None:
            if prev["group"] != group:
                set_aside.append({"url": s["uri"], "reason": "shape-changed",
                                  "message": f"science {s['uri']}: pair {pair_id} was {prev['group']} px in this store "
                                  f"and is now {group}; difference it into a new --out"})
                continue
            row["pair"], row["pair_index"] = int(prev["pair"]), int(prev["pair_index"])
            same = ("url", "locator", "checksum")
            if all(prev[f"{sd}_{k}"] == row[f"{sd}_{k}"] for sd in ("science", "reference") for k in same):
                row["run_id"], row["planned_at"] = prev["run_id"], prev["planned_at"]
        else:
            row["pair"] = n_next
            n_next += 1
            row["pair_index"] = int(per_group.get(group, 0))
            per_group[group] = row["pair_index"] + 1
        rows.append(row)
        current.add(pair_id)
    keep_old = [r for pid, r in old.items() if pid not in current]
    table = pd.DataFrame(keep_old + rows, columns=[c for c in _PLAN_COLUMNS if c != "fingerprint"])
    table = table.sort_values("pair", kind="stable").reset_index(drop=True)
    for k in ("tile_id", "band"):  # plans written before these columns existed: the pair's own
        col = f"reference_{k}"
        table[col] = [v if isinstance(v, str) and v else t for v, t in zip(table[col], table[k])]

    # the store: create, add groups, grow the pair axes, write the static coordinates
    settings = config.public_dict()
    if not exists:
        ds.create_difference_store(config.out, {
            "skybatch_version": skybatch.__version__, "settings": settings, "identity": identity,
            "science_settings": config.science_settings(), "provenance": {}, "manifest": manifest.url,
            "catalogue": ds.outputs(config.out)["catalogue"], "finalized": "",
        }, st_opts)
    g = ds.open_difference_group(config.out, st_opts)
    store_uuid = str(g.attrs["store_uuid"])
    table["fingerprint"] = [_fingerprint(identity, store_uuid, r) for r in table.to_dict("records")]
    groups = table.groupby("group").size().to_dict() if len(table) else {}
    changed = len(table) != len(planned) or not table[["pair", "fingerprint"]].equals(
        planned.reindex(columns=["pair", "fingerprint"]).reset_index(drop=True))
    if changed or not exists:
        for name, n in groups.items():
            ny, nx = (int(v) for v in name.split("x"))
            v = ds.ensure_pair_group(g, (ny, nx), int(n), {"skybatch_version": skybatch.__version__})
            ds.resize_pairs(v, int(n))
            sel = table[table["group"] == name].sort_values("pair_index")
            if list(sel["pair_index"]) != list(range(int(n))):
                raise RuntimeError(f"pair plan of group {name} is not contiguous; the manifest {manifest.url} is "
                                   "damaged: delete the store and its manifest and run again")
            ds.write_pair_coords(v, {
                "pair_id": sel["pair_id"].to_numpy(), "pair_number": sel["pair"].to_numpy(),
                "tile_id": sel["tile_id"].to_numpy(), "band": sel["band"].to_numpy(),
                "instrument": sel["science_instrument"].to_numpy(), "science": sel["science_uri"].to_numpy(),
                "reference": sel["reference_uri"].to_numpy(),
            })
        g.update_attributes({
            "groups": {k: {"shape": [int(x) for x in k.split("x")], "n_pairs": int(n)} for k, n in groups.items()},
            "n_pairs": int(len(table)),
            "settings": settings,
            "provenance": {
                "science": config.science, "reference": config.reference,
                "science_view": config.science_view, "reference_view": config.reference_view,
                "pairs_table": f"{_PLAN_FILE} in the manifest (science/reference URI, locator, checksum per pair)",
                "skybatch_version": skybatch.__version__, "store_options": public_options(st_opts),
                "last_run_id": run_id, "updated_at": now,
            },
        })
        ds.consolidate(config.out, st_opts)
        atomic_write_bytes(manifest.fs, join(manifest.url, _PLAN_FILE), _table_bytes(table[_PLAN_COLUMNS]))
    if set_aside:
        manifest.add_quarantine(set_aside, run_id)

    done = manifest.done_chunks()
    todo = []
    n_done = 0
    for r in table.to_dict("records"):
        if r["pair_id"] not in current:
            continue
        if r["fingerprint"] in done.get(int(r["pair"]), set()):
            n_done += 1
            continue
        ny, nx = (int(x) for x in r["group"].split("x"))
        shape = (ny, nx)
        todo.append(PairTask(
            pair=int(r["pair"]), pair_id=r["pair_id"], group=r["group"], index=int(r["pair_index"]),
            shape=shape, science=_frame_of(r, "science"), reference=_frame_of(r, "reference"),
            windows=_windows(shape, config.subtile, config.subtile_overlap), fingerprint=r["fingerprint"],
        ))
    return DifferencePlan(
        config=config, run_id=run_id, store_uuid=store_uuid, table=table, todo=todo, n_done=n_done,
        set_aside=set_aside, unused_references=unused, n_science=len(sci), n_reference=len(ref),
        seconds=time.perf_counter() - t_start, notes=notes,
    )


def _pair_the_only_two(sci_by: dict[tuple[str, str], dict[str, Any]], ref_by: dict[tuple[str, str], dict[str, Any]]):
    """One science and one reference image whose names do not pair them (``<tile>_<band>``): pair them
    anyway, under the science image's tile and band, and say so (a NOTE for the summary)."""
    (skey, s), = sci_by.items()
    (rkey, r), = ref_by.items()
    note = (f"NOTE paired the only science image {s['uri']} (tile {skey[0]}, band {skey[1]}) with the only reference "
            f"{r['uri']} (tile {rkey[0]}, band {rkey[1]}): their names do not pair them (<tile>_<band>.fits, or "
            f"--tile-pattern); the pair is {skey[0]}/{skey[1]}")
    if "unknown" not in (skey[1], rkey[1]) and skey[1] != rkey[1]:
        note += f". Their bands differ ({skey[1]} vs {rkey[1]}): check that this is the reference you meant"
    return sci_by, {skey: r}, note
