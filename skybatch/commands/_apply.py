"""Shared CLI plumbing of `skybatch run score | classify | embed` (configs: :mod:`skybatch.jobs.score`,
:mod:`~skybatch.jobs.classify`, :mod:`~skybatch.jobs.embed`)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def add_arguments(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--store", required=True, help="the (preprocessed) spectra store")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a model directory from `skybatch run train`")
    p.add_argument("--batch-size", type=int, default=1024, help="spectra per model call")
    if top:
        p.add_argument("--top", type=int, default=100, help="size of the top-anomaly catalogue and plot")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bar")


def config(kind: str, args: argparse.Namespace):
    """The job config of ``skybatch run KIND`` from its flags (and ``--config`` file)."""
    from skybatch.commands._config import build_config, load_config

    job = importlib.import_module(f"skybatch.jobs.{kind}")
    flags: dict[str, Any] = {k: getattr(args, k, None) for k in ("store", "model", "batch_size", "top", "select", "method", "progress",
                                                 "cluster")}
    if flags.get("select"):
        flags["select"] = list(flags["select"])
    return build_config(job.Config, load_config(getattr(args, "config", None)), flags)


def run(kind: str, args: argparse.Namespace) -> int:
    cfg = config(kind, args)
    from skybatch.jobs.kinds import kind_of_model

    mk = kind_of_model(cfg.model)
    if kind == "classify" and mk is not None and mk.name == "realbogus":  # in this process: no cluster, no flow
        from skybatch.commands.realbogus import run_classify

        return run_classify(cfg.store, cfg.model)
    from skybatch.orchestrate import flow_for, run_flow
    from skybatch.orchestrate._common import flow_params

    out = run_flow(flow_for(kind), flow_params(cfg))
    if "map_model" not in out:  # tile embeddings
        print(f"store: {out['store']}\nmodel: {out['model']}\nwrote: embeddings/embedding (tile, band_key, "
              f"embedding_dim) for {out['n_tiles']} tiles; open with xr.open_zarr(store, group='embeddings')")
        for c in out["failed_chunks"]:
            print(f"FAILED chunk {c['chunk']}: {c['error']} -- re-run to retry")
        return int(out["exit_code"])
    rep = out["map_model"]
    wrote = {k: tuple(v) for k, v in rep["outputs"].items()}
    if kind == "score":  # written from the mapped terms after the map
        wrote.update({k: ("spectrum",) for k in ("anomaly_score", "anomaly_misfit_z", "anomaly_rarity_z")})
    print(f"store: {out['store']}\nmodel: {out['model']}\nwrote: " + ", ".join(f"{k}{v}" for k, v in wrote.items()))
    if kind == "score":
        if out.get("n_scored") is not None:
            print(f"scored: {out['n_scored']} spectra{' selected by ' + out['select'] if out.get('select') else ''}")
        print(f"top anomalies: {out['top_parquet']}\nplot: {out['top_png']}"
              + (f"\none PNG per top spectrum: {out['spectrum_pngs']}/" if out.get("spectrum_pngs") else ""))
    if kind == "classify":
        print("class_pred holds the index of the most probable class in the `class` coordinate: "
              "ds['class'].values[ds.class_pred.values] gives the names")
    for c in rep["failed_chunks"]:
        print(f"FAILED chunk {c['chunk']}: {c['error']} -- re-run to retry")
    return int(out["exit_code"])
