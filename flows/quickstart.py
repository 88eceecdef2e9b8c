"""Prefect flow: the quick start. Generate a small sample survey in the surveys' real FITS layouts
(with ground truth), ingest it into Zarr stores on a local Dask cluster, and say how to open them."""

from __future__ import annotations

from flows._common import set_default_env

set_default_env()

import os  # noqa: E402
from dataclasses import asdict  # noqa: E402

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.ingest import plan, report, write  # noqa: E402
from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.pipeline import ingest as job  # noqa: E402


@task(name="generate-sample-survey", cache_policy=NO_CACHE)
def generate(out_dir: str, n_healpix: int, spectra_per_file: int, n_sdss: int, seed: int) -> str:
    from skybatch.sample.survey import generate_sample_survey

    data = os.path.join(out_dir, "data")
    if not os.path.exists(os.path.join(data, "truth.parquet")):
        generate_sample_survey(data, n_healpix=n_healpix, spectra_per_file=spectra_per_file, n_sdss=n_sdss, seed=seed)
    return data


@flow(name="skybatch-quickstart", log_prints=True)
def quickstart_flow(
    out_dir: str = "skybatch-quickstart",
    cluster: str = "auto",
    n_healpix: int = 4,
    spectra_per_file: int = 250,
    n_sdss: int = 60,
    chunk_spectra: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Generate sample DESI + SDSS files, ingest each survey into its own store, return both reports."""
    out_dir = os.path.abspath(out_dir)
    data = generate(out_dir, n_healpix, spectra_per_file, n_sdss, seed)
    reports = {}
    with cluster_client(cluster) as client:
        for survey, pattern in (("desi", "desi/**/coadd-*.fits"), ("sdss", "sdss/**/spec-*.fits")):
            config = job.IngestConfig(
                sources=[os.path.join(data, pattern)], store=os.path.join(out_dir, f"spectra-{survey}.zarr"),
                format=survey, chunk_spectra=chunk_spectra, cluster=cluster, progress=progress,
            )
            r = write(plan(config, client), client)
            report(r)
            reports[survey] = asdict(r)
    reports["data"] = data
    return reports
