"""Execution: submit the pairs to Dask, then write the catalogue, cutouts, PNG and recovery files."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from skybatch.store.fsutil import atomic_write_bytes, filesystem, join
from skybatch.store.manifest import Manifest

from .config import STAGE, _PARTS
from .plan import DifferencePlan, PairTask, _table_bytes
from .prepare import _prepare
from .report import DifferenceReport, _recovery_summary
from .worker import _aligned_of, _difference_window, _finish, _injected_of, _pair_whole


# -- execution ---------------------------------------------------------------------------------


def _submit(client, task: PairTask, settings: dict[str, Any], ctx: dict[str, Any], retries: int):
    key = f"difference-{ctx['run_id']}-{task.pair}"
    if len(task.windows) == 1:
        return client.submit(_pair_whole, task, settings, ctx, key=key, retries=retries, pure=False)
    prep = client.submit(_prepare, task, settings, ctx, key=key + "-prepare", retries=retries, pure=False)
    wins = [client.submit(_difference_window, prep, w, settings, key=f"{key}-subtile-{i}", retries=retries, pure=False)
            for i, w in enumerate(task.windows)]
    inj = client.submit(_injected_of, prep, key=key + "-injected", pure=False)
    al = client.submit(_aligned_of, prep, key=key + "-aligned", pure=False)
    return client.submit(_finish, task, wins, inj, al, settings, ctx, key=key, retries=retries, pure=False)


def _read_parquet_files(paths: list[str], options: dict[str, Any]) -> pd.DataFrame:
    if not paths:
        return pd.DataFrame()
    fs = filesystem(paths[0], options)
    frames = []
    for p in paths:
        with fs.open(p, "rb") as f:
            frames.append(pq.read_table(f).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _gather_tables(client, paths: list[str], options: dict[str, Any], tag: str) -> pd.DataFrame:
    """Read many small Parquet files on the cluster, in batches, into one frame (in path order)."""
    if not paths:
        return pd.DataFrame()
    per = 64
    batches = [paths[i : i + per] for i in range(0, len(paths), per)]
    futs = client.map(_read_parquet_files, batches, options=options, pure=False,
                      key=[f"read-{tag}-{uuid.uuid4().hex[:8]}-{i}" for i in range(len(batches))])
    parts = [p for p in client.gather(futs) if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _write_cutout_chunk(spec: tuple[int, int, list[tuple[str, int, int, int]]], out: str, options: dict[str, Any],
                        size: int) -> int:
    """Fill cutouts[start:stop] from the staged per-pair arrays and write those whole chunks."""
    from skybatch.store import difference_store as ds

    start, stop, pieces = spec
    buf = np.full((stop - start, len(ds.CUTOUT_KINDS), size, size), np.nan, np.float32)
    fs = filesystem(out, options)
    for path, lo, hi, dst in pieces:
        with fs.open(path, "rb") as f:
            arr = np.load(io.BytesIO(f.read()))
        buf[dst - start : dst - start + (hi - lo)] = arr[lo:hi]
    c = ds.open_difference_group(out, options)[ds.CANDIDATES_GROUP]
    ds.write_cutout_rows(c, start, buf)
    return stop - start


_CATALOGUE_COLUMNS = [
    "candidate", "pair", "pair_id", "group", "pair_index", "tile_id", "band", "rank", "x", "y", "ra", "dec",
    "S_corr", "significance", "sign", "flux", "flux_err", "snr", "x_peak", "y_peak", "injected",
    "fwhm", "elongation", "theta", "dipole", "masked_fraction", "ref_distance", "ref_flux",
]  # fmt: skip


def _empty_catalogue() -> pd.DataFrame:
    types = {"candidate": "int64", "pair": "int64", "pair_index": "int64", "rank": "int64", "sign": "int64",
             "x_peak": "int64", "y_peak": "int64", "injected": "bool"}
    return pd.DataFrame({c: pd.Series([], dtype=types.get(c, object if c in ("pair_id", "group", "tile_id", "band")
                                                            else "float64")) for c in _CATALOGUE_COLUMNS})


def _finalize(plan: DifferencePlan, client) -> dict[str, Any]:
    """Per-pair coordinates, the catalogue, the cutouts array, the PNG and the recovery files.

    Skipped when the finished pairs are exactly those of the last finalisation.
    """
    from skybatch.store import difference_store as ds

    config = plan.config
    out, opts = config.out, config.store_storage_options()
    paths = ds.outputs(out)
    manifest = Manifest(out, opts, stage=STAGE)
    done = manifest.done_chunks()
    table = plan.table
    done_rows = table[np.asarray([fp in done.get(int(p), set()) for p, fp in zip(table["pair"], table["fingerprint"])],
                                 dtype=bool)]
    fs = filesystem(out, opts)
    g = ds.open_difference_group(out, opts)
    key = hashlib.sha256(json.dumps([done_rows[["pair", "fingerprint"]].values.tolist(), len(table),
                                     config.chunk_candidates, config.plot_top]).encode()).hexdigest()[:16]
    if g.attrs.get("finalized") == key and fs.exists(paths["catalogue"]):
        c = g[ds.CANDIDATES_GROUP]
        rj = paths["recovery_json"] if config.inject else None
        recovery = None
        if rj and fs.exists(rj):
            with fs.open(rj, "rb") as f:
                recovery = json.loads(f.read())
        return {"n_candidates": int(c.attrs["n_candidates"]), "n_dropped": int(c.attrs.get("n_dropped", 0)),
                "n_vetoed": int(c.attrs.get("n_vetoed", 0)), "n_margin": int(c.attrs.get("n_margin", 0)),
                "recovery": recovery, "changed": False}

    rec_paths = [manifest.chunk_path(int(p), fp) for p, fp in zip(done_rows["pair"], done_rows["fingerprint"])]
    records = _gather_tables(client, rec_paths, opts, "records")
    by_pair = {int(r["pair"]): r for r in records.to_dict("records")} if len(records) else {}

    # per-pair coordinates of every group
    for name in dict(g.attrs.get("groups", {})):
        sel = table[table["group"] == name].sort_values("pair_index")
        recs = [by_pair.get(int(p)) for p in sel["pair"]]

        def col(k: str, default: Any, recs=recs) -> np.ndarray:
            return np.asarray([default if r is None else r[k] for r in recs])

        ds.write_pair_coords(g[name], {
            "done": np.asarray([r is not None for r in recs]), "wcs": col("wcs", ""),
            "flux_ratio": col("flux_ratio", np.nan), "flux_ratio_err": col("flux_ratio_err", np.nan),
            "flux_ratio_method": col("flux_ratio_method", ""), "new_psf_method": col("new_psf_method", ""),
            "ref_psf_method": col("ref_psf_method", ""), "new_fwhm": col("new_fwhm", np.nan),
            "ref_fwhm": col("ref_fwhm", np.nan), "new_sigma": col("new_sigma", np.nan),
            "ref_sigma": col("ref_sigma", np.nan), "aligned": col("aligned", False),
            "n_subtiles": col("n_subtiles", 0), "n_candidates": col("n_candidates", 0),
            "n_injected": col("n_injected", 0),
        })

    # the catalogue: staged parts of finished pairs, in pair order
    part_dir = join(manifest.url, _PARTS)
    stems = [f"pair-{int(p):09d}-{fp}" for p, fp in zip(done_rows["pair"], done_rows["fingerprint"])]
    counts = [int(by_pair[int(p)]["n_candidates"]) for p in done_rows["pair"]]
    cand = _gather_tables(client, [join(part_dir, "candidates", s + ".parquet") for s, n in zip(stems, counts) if n],
                          opts, "candidates")
    if len(cand):
        meta = table.set_index("pair")
        rows = []
        for p, n in zip(done_rows["pair"], counts):
            rows += [int(p)] * n
        cand["pair"] = np.asarray(rows, dtype=np.int64)
        cand["pair_id"] = meta.loc[cand["pair"], "pair_id"].to_numpy()
        cand["group"] = meta.loc[cand["pair"], "group"].to_numpy()
        cand["pair_index"] = meta.loc[cand["pair"], "pair_index"].to_numpy().astype(np.int64)
        cand["tile_id"] = meta.loc[cand["pair"], "tile_id"].to_numpy()
        cand["band"] = meta.loc[cand["pair"], "band"].to_numpy()
        cand["candidate"] = np.arange(len(cand), dtype=np.int64)
        cand = cand.reindex(columns=_CATALOGUE_COLUMNS)  # parts staged by earlier versions lack newer properties
    else:
        cand = _empty_catalogue()
    if len(cand) != sum(counts):
        raise RuntimeError(f"{sum(counts)} candidates recorded but {len(cand)} staged in {part_dir}; the manifest is "
                           "damaged: delete the store and its manifest and run again")
    n = len(cand)

    # the cutouts: tasks owning whole chunks copy the staged per-pair arrays
    c = ds.create_candidates_group(g, n, config.cutout_size, config.chunk_candidates,
                                   {"catalogue": paths["catalogue"], "finalized": ""})
    ds.write_candidate_coords(c, cand)
    ch = int(c.attrs["chunk_candidates"])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    specs = []
    for start in range(0, n, ch):
        stop = min(start + ch, n)
        pieces = []
        for s, lo_pair, n_pair in zip(stems, offsets[:-1], counts):
            a, b = max(start, lo_pair), min(stop, lo_pair + n_pair)
            if a < b:
                pieces.append((join(part_dir, "cutouts", s + ".npy"), a - lo_pair, b - lo_pair, a))
        specs.append((start, stop, pieces))
    if specs:
        futs = client.map(_write_cutout_chunk, specs, out=out, options=opts, size=config.cutout_size, pure=False,
                          key=[f"cutouts-{plan.run_id}-{i}" for i in range(len(specs))])
        client.gather(futs)

    atomic_write_bytes(fs, paths["catalogue"], _table_bytes(cand))
    if config.plot_top:
        from skybatch.imaging.plots import triplets_png

        top = cand.sort_values("significance", ascending=False, kind="stable").head(config.plot_top)
        idx = top["candidate"].to_numpy()
        trip = np.stack([np.asarray(c["cutouts"][int(i)]) for i in idx]) if len(idx) else np.zeros(
            (0, 3, config.cutout_size, config.cutout_size), np.float32)
        titles = [f"{p} #{int(k)} S={s:+.1f}" for p, k, s in zip(top["pair_id"], top["candidate"], top["S_corr"])]
        atomic_write_bytes(fs, paths["png"], triplets_png(trip, titles))

    recovery = None
    if config.inject:
        inj = _gather_tables(client, [join(part_dir, "injections", s + ".parquet") for s in stems], opts, "injections")
        recovery = _recovery_summary(inj, cand, records, config)
        atomic_write_bytes(fs, paths["recovery_table"], _table_bytes(recovery.pop("_table")))
        text = json.dumps(recovery, indent=1)
        atomic_write_bytes(fs, paths["recovery_json"], text.encode())
        recovery = json.loads(text)
    n_dropped = int((records["n_detected"] - records["n_candidates"]).sum()) if len(records) else 0
    n_vetoed = int(records["n_vetoed"].fillna(0).sum()) if len(records) and "n_vetoed" in records else 0
    n_margin = int(records["n_margin"].fillna(0).sum()) if len(records) and "n_margin" in records else 0
    c.update_attributes({"finalized": key, "n_dropped": n_dropped, "n_vetoed": n_vetoed, "n_margin": n_margin})
    g.update_attributes({"finalized": key})
    ds.consolidate(out, opts)
    return {"n_candidates": n, "n_dropped": n_dropped, "n_vetoed": n_vetoed, "n_margin": n_margin,
            "recovery": recovery, "changed": True}

def execute_difference(plan: DifferencePlan, client) -> DifferenceReport:
    """Difference every pair the plan lists as to-do (one Dask task each, or one per sub-tile),
    then write the catalogue, cutouts, PNG and recovery files; returns the report."""
    from distributed import as_completed

    t0 = time.perf_counter()
    config = plan.config
    st_opts = config.store_storage_options()
    settings = config.science_settings()
    settings["inject_snr"] = tuple(settings["inject_snr"])
    ctx = {"out": config.out, "store_options": st_opts, "source_options": config.source_storage_options(),
           "instrument": config.instrument, "tile_pattern": config.tile_pattern, "run_id": plan.run_id,
           "hdu": config.hdu}
    futures = {_submit(client, t, settings, ctx, config.retries): t for t in plan.todo}
    bar = None
    if config.progress and plan.todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan.todo) + plan.n_done, initial=plan.n_done, unit="pairs", desc="difference",
                   dynamic_ncols=True)
    failed: list[dict[str, Any]] = []
    set_aside = list(plan.set_aside)
    written = 0
    for fut in as_completed(list(futures)):
        t = futures.pop(fut)
        try:
            r = fut.result()
            if r.get("status") == "set-aside":
                set_aside.append({"url": r["url"], "reason": r["reason"], "message": r["message"]})
            else:
                written += 1
        except Exception as e:  # noqa: BLE001 - reported per pair; the rest goes on
            failed.append({"pair": t.pair, "pair_id": t.pair_id, "error": f"{type(e).__name__}: {e}"})
        if bar is not None:
            bar.update(1)
        fut.release()
    if bar is not None:
        bar.close()
    t_pairs = time.perf_counter() - t0
    new_aside = set_aside[len(plan.set_aside):]
    if new_aside:
        Manifest(config.out, st_opts, stage=STAGE).add_quarantine(new_aside, plan.run_id + "-pairs")
    fin = _finalize(plan, client)
    from skybatch.store import difference_store as ds

    paths = ds.outputs(config.out)
    groups = plan.table.groupby("group").size().to_dict() if len(plan.table) else {}
    return DifferenceReport(
        out=config.out, manifest=paths["manifest"], n_pairs=int(len(plan.table)),
        groups={k: int(v) for k, v in sorted(groups.items())}, pairs_written=written,
        pairs_skipped=int(plan.n_done), failed=failed, set_aside=set_aside,
        unused_references=plan.unused_references, n_candidates=int(fin["n_candidates"]),
        n_dropped=int(fin["n_dropped"]), n_vetoed=int(fin.get("n_vetoed", 0)),
        n_margin=int(fin.get("n_margin", 0)), catalogue=paths["catalogue"],
        png=paths["png"] if config.plot_top else None,
        recovery_json=paths["recovery_json"] if config.inject else None, recovery=fin["recovery"],
        seconds=time.perf_counter() - t0, run_id=plan.run_id, plan_seconds=float(plan.seconds),
        pairs_seconds=t_pairs, catalogue_seconds=time.perf_counter() - t0 - t_pairs, notes=list(plan.notes),
    )
