"""Shared CLI plumbing of `skybatch run score | classify | embed`."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--store", required=True, help="the (preprocessed) spectra store")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="a model directory from `skybatch run train`")
    p.add_argument("--batch-size", type=int, default=1024, help="spectra per model call")
    if top:
        p.add_argument("--top", type=int, default=100, help="size of the top-anomaly catalogue and plot")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bar")


def run(kind: str, args: argparse.Namespace) -> int:
    from flows.models import apply_flow

    extra = {"select": args.select} if getattr(args, "select", None) else {}
    if getattr(args, "method", "vae") != "vae":
        extra["method"] = args.method
    out = apply_flow(kind=kind, store=args.store, model=args.model, cluster=args.cluster or "auto",
                     top=getattr(args, "top", 100), batch_size=args.batch_size, progress=args.progress, **extra)
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
