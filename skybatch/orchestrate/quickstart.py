"""Prefect flow: the quick start. Generate a small sample survey in the surveys' real FITS layouts (with
ground truth), ingest it, preprocess it to the rest frame, train a small VAE, score every spectrum and
rank the injected anomalies -- on a local Dask cluster, with nothing to download.

Each step is skipped when its output is complete (re-running resumes), and every path is made
absolute, so the flow runs the same from the CLI and from a deployment.
"""

from __future__ import annotations

from skybatch.orchestrate._common import set_default_env

set_default_env()

import os  # noqa: E402
from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.jobs import ingest as job  # noqa: E402
from skybatch.orchestrate.ingest import report, run_ingest  # noqa: E402

#: Rest frame 1230-10000 Å on a 5e-4 dex grid: what DESI covers for stars and galaxies at z ~ 0 up to
#: QSOs at z ~ 3 (BAL troughs blueward of C IV / Si IV, every galaxy and star line), with the Lyα
#: forest (random absorbers in every z > 2 QSO) left off. No rest window is observed at every
#: redshift, so each spectrum is divided by the median of its own good pixels.
QUICKSTART_RECIPE = {"grid": "loglam:3.09:4.0:5e-4", "rest_frame": True, "normalize": "median",
                     "normalize_window": None}


@task(name="generate-sample-survey", cache_policy=NO_CACHE)
def generate(out_dir: str, n_healpix: int, spectra_per_file: int, n_sdss: int, anomaly_fraction: float,
             seed: int) -> str:
    from skybatch.sample.survey import generate_sample_survey

    data = os.path.join(out_dir, "data")
    if not os.path.exists(os.path.join(data, "truth.parquet")):
        generate_sample_survey(data, n_healpix=n_healpix, spectra_per_file=spectra_per_file, n_sdss=n_sdss,
                               anomaly_fraction=anomaly_fraction, seed=seed)
    return data


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(store: str, out: str, client, progress: bool) -> dict:
    from skybatch.jobs.preprocess import Config, run_with_client
    from skybatch.spectra import PreprocessRecipe

    config = Config(store=store, out=out, recipe=PreprocessRecipe.from_dict(QUICKSTART_RECIPE),
                              progress=progress)
    return asdict(run_with_client(config, client))


@task(name="train-vae", cache_policy=NO_CACHE)
def train_task(store: str, out: str, steps: int, client, progress: bool) -> dict:
    from skybatch.jobs import train

    # split_nside 256: the sample's few healpix pixels still give a held-out validation split
    return asdict(train.run_with_client(train.Config(store=store, model="vae", out=out, steps=steps, batch_size=128,
                                                     split_nside=256, progress=progress), client))


@task(name="score", cache_policy=NO_CACHE)
def score_task(store: str, model: str, top: int, client, progress: bool) -> dict:
    from skybatch.jobs import score

    return score.run_with_client(score.Config(store=store, model=model, top=top, progress=progress,
                                                method="vae"), client).to_dict()


def anomaly_ranks(store: str, truth_path: str) -> list[dict]:
    """Rank (1 = most anomalous) of every injected anomaly in ``store``'s ``anomaly_score``."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    ds = xr.open_zarr(store)
    score = np.nan_to_num(ds["anomaly_score"].values.astype(np.float64), nan=-np.inf)
    rank = np.empty(len(score), np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(1, len(score) + 1)
    truth = pd.read_parquet(truth_path).set_index("targetid")
    tid = ds["targetid"].values
    known = np.isin(tid, truth.index.values)
    rows = np.flatnonzero(known)
    t = truth.loc[tid[rows]]
    anom = t["is_anomaly"].to_numpy(bool)
    return sorted(({"targetid": int(tid[r]), "rank": int(rank[r]), "kind": str(k), "score": float(score[r])}
                   for r, k in zip(rows[anom], t["anomaly_kind"].to_numpy()[anom])), key=lambda d: d["rank"])


@flow(name="skybatch-quickstart", log_prints=True)
def quickstart_flow(
    out_dir: str = "skybatch-quickstart",
    cluster: str = "auto",
    n_healpix: int = 4,
    spectra_per_file: int = 200,
    n_sdss: int = 20,
    anomaly_fraction: float = 0.005,
    chunk_spectra: int = 256,
    steps: int = 600,
    top: int = 50,
    only_ingest: bool = False,
    seed: int = 5,
    progress: bool = True,
) -> dict:
    """Sample survey -> ingest (DESI and SDSS stores) -> preprocess -> VAE -> anomaly scores and the injected
    anomalies' ranks. ``only_ingest`` stops after the ingest. ``out_dir`` is made absolute (a deployment
    resolves a relative one against the worker's working directory)."""
    out_dir = os.path.abspath(os.path.expanduser(out_dir))
    data = generate(out_dir, n_healpix, spectra_per_file, n_sdss, anomaly_fraction, seed)
    out: dict = {"data": data, "out_dir": out_dir}
    with cluster_client(cluster) as client:
        surveys = [("desi", "desi/**/coadd-*.fits")] + ([("sdss", "sdss/**/spec-*.fits")] if n_sdss else [])
        for survey, pattern in surveys:
            config = job.Config(
                sources=[os.path.join(data, pattern)], store=os.path.join(out_dir, f"spectra-{survey}.zarr"),
                format=survey, chunk_spectra=chunk_spectra, cluster=cluster, progress=progress,
            )
            r = run_ingest(config, client)
            report(r)
            out[survey] = asdict(r)
        if only_ingest:
            return out
        rest = os.path.join(out_dir, "desi-rest.zarr")
        out["preprocess"] = preprocess_task(out["desi"]["store"], rest, client, progress)
        model = os.path.join(out_dir, "models", "vae")
        out["train"] = train_task(rest, model, steps, client, progress)
        out["score"] = score_task(rest, model, top, client, progress)
    out["ranks"] = anomaly_ranks(rest, os.path.join(data, "truth.parquet"))
    out["n_scored"] = int(out["score"]["n_spectra"])
    get_run_logger().info("injected anomalies' ranks: %s", [r["rank"] for r in out["ranks"]])
    return out
