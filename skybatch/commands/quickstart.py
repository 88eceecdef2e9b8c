"""`skybatch run quickstart`: the main job end to end on a generated sample survey with ground truth.

sample survey (real DESI / SDSS file layouts, injected anomalies) -> ingest -> preprocess to the rest
frame -> train a small VAE -> anomaly scores -> the top anomalies as a PNG and a Parquet table, with
the injected anomalies' ranks. ``--only-ingest`` stops after the ingest.
"""

from __future__ import annotations

import argparse

HELP = ("generate a small sample survey (real DESI/SDSS file layouts, injected anomalies), ingest, preprocess, "
        "train a VAE and rank the anomalies")


def run_imaging(out_dir: str, cluster: str = "auto", *, pairs: int = 3, size: int = 512, progress: bool = True) -> int:
    """``--imaging``: sample image pairs (plain FITS, Rubin/Euclid layouts, truth, tiles) under
    ``OUT_DIR/images`` and a difference run of the plain pairs into ``OUT_DIR/images-diff.zarr``;
    prints the report and the next commands. Returns the difference run's exit code."""
    import os

    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.difference import difference_flow
    from skybatch.pipeline.difference import DifferenceConfig, DifferenceReport
    from skybatch.sample.images import write_sample_images

    s = write_sample_images(os.path.join(out_dir, "images"), n_pairs=pairs, size=size)
    out = os.path.join(out_dir, "images-diff.zarr")
    print(f"\n[sample images]\n{s.root}: plain, rubin, euclid pairs; truth {s.truth}")
    cfg = DifferenceConfig(science=[s.science["plain"]], reference=[s.reference["plain"]], out=out, cluster=cluster,
                           progress=progress)
    rep = DifferenceReport(**run_flow(difference_flow, flow_params(cfg)))
    print(f"\n[difference plain pairs]\n{rep.summary()}")
    print("\nnext: the real/bogus classifier on these candidates\n"
          f"    skybatch run train --model realbogus --out {os.path.join(out_dir, 'models', 'realbogus')}\n"
          f"    skybatch run classify --store {out} --model {os.path.join(out_dir, 'models', 'realbogus')}\n"
          f"open it: import pandas as pd; pd.read_parquet({rep.catalogue!r})")
    return rep.exit_code


#: ``--imaging`` (sample image pairs + a difference run): a callable(args, out_dir) -> exit code
IMAGING_HOOK = lambda args, out_dir: run_imaging(out_dir, args.cluster or "auto",  # noqa: E731
                                                 progress=args.progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="skybatch-quickstart", help="where data, stores and models go")
    p.add_argument("--n-healpix", type=int, default=4, help="DESI healpix coadd files to generate")
    p.add_argument("--spectra-per-file", type=int, default=200, help="science spectra per DESI coadd")
    p.add_argument("--n-sdss", type=int, default=20, help="SDSS spec files to generate (ingested, not scored)")
    p.add_argument("--anomaly-fraction", type=float, default=0.005,
                   help="fraction of spectra given an injected anomaly (at least one per file)")
    p.add_argument("--steps", type=int, default=600, help="VAE training steps")
    p.add_argument("--top", type=int, default=50, help="size of the top-anomaly table")
    p.add_argument("--seed", type=int, default=5, help="the sample survey's random seed")
    p.add_argument("--only-ingest", action="store_true", help="stop after the ingest (the short version)")
    p.add_argument("--imaging", action="store_true", help="also sample image pairs and tiles (plain FITS, Rubin/Euclid layouts) and a difference "
                   "run of the plain pairs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError

    for name in ("n_healpix", "spectra_per_file", "steps", "top"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1")
    from skybatch.orchestrate.quickstart import quickstart_flow
    from skybatch.pipeline.ingest import IngestReport

    out = quickstart_flow(
        out_dir=args.dir, cluster=args.cluster or "auto", n_healpix=args.n_healpix,
        spectra_per_file=args.spectra_per_file, n_sdss=args.n_sdss, anomaly_fraction=args.anomaly_fraction, steps=args.steps, top=args.top,
        seed=args.seed, only_ingest=args.only_ingest, progress=args.progress,
    )
    code = 0
    print(f"\nsample survey (FITS files + truth.parquet): {out['data']}")
    for survey in ("desi", "sdss"):
        if survey in out:
            r = IngestReport(**out[survey])
            print(f"\n[ingest {survey}]\n{r.summary()}")
            code = max(code, r.exit_code)
    desi = IngestReport(**out["desi"]).store
    if not args.only_ingest:
        from skybatch.pipeline.modeling import TrainJobReport
        from skybatch.pipeline.preprocess import PreprocessReport

        pre = PreprocessReport(**out["preprocess"])
        print(f"\n[preprocess]\n{pre.summary()}")
        tr = TrainJobReport(**out["train"])
        print(f"\n[train vae]\n{tr.summary()}")
        sc = out["score"]
        n = out["n_scored"]
        ranks = out["ranks"]
        top1 = max(1, round(0.01 * n))
        print(f"\n[score]\nanomaly_score written for {n} spectra in {sc['store']}\n"
              f"top anomalies: {sc['top_parquet']}\nplot: {sc['top_png']}")
        print(f"\ninjected anomalies ({len(ranks)}) ranked among {n} spectra (1 = most anomalous; top 1 % = "
              f"ranks 1-{top1}):")
        for r in ranks:
            print(f"  rank {r['rank']:>5}  {r['kind']:<16} targetid {r['targetid']}")
        hits = sum(r["rank"] <= max(top1, len(ranks)) for r in ranks)
        print(f"{hits} of {len(ranks)} in the top {max(top1, len(ranks))}")
        code = max(code, pre.exit_code, tr.exit_code, int(sc["exit_code"]))
        print("\nopen it in Python:\n"
              "    import skybatch, pandas as pd\n"
              f"    ds = skybatch.open_store({sc['store']!r})\n"
              "    ds.anomaly_score.to_series().nlargest(10)\n"
              f"    pd.read_parquet({sc['top_parquet']!r})")
    else:
        print("\nopen the stores in Python:\n"
              "    import skybatch\n"
              f"    ds = skybatch.open_store({desi!r})\n"
              "    ds.flux.sel(wavelength=slice(6500, 6600)).isel(spectrum=0).values")
    if args.imaging:
        code = max(code, IMAGING_HOOK(args, args.dir))
    return code
