"""Prefect flow: ZOGY difference imaging of science/reference pairs (wraps skybatch.pipeline.difference).

Coarse tasks only (plan, difference, report); the Dask work (one task per pair or sub-tile,
then the catalogue and cutouts) runs inside them on the cluster's client, and Dask workers
never talk to Prefect.
"""

from __future__ import annotations

from flows._common import retry_on_transient, set_default_env

set_default_env()

from dataclasses import asdict  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from skybatch.cluster import cluster_client  # noqa: E402
from skybatch.pipeline import difference as job  # noqa: E402


@task(name="plan", retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def plan(config: job.DifferenceConfig, client) -> job.DifferencePlan:
    return job.plan_difference(config, client)


@task(name="difference", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_on_transient,
      cache_policy=NO_CACHE)
def difference(p: job.DifferencePlan, client) -> job.DifferenceReport:
    return job.execute_difference(p, client)


@task(name="report", cache_policy=NO_CACHE)
def report(r: job.DifferenceReport) -> job.DifferenceReport:
    log = get_run_logger()
    log.info(r.summary())
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact("```\n" + r.summary() + "\n```", key="difference-report",
                                 description="skybatch ZOGY difference imaging")
    except Exception as e:  # artifacts are a courtesy; never fail the run for one
        log.warning(f"could not create the report artifact: {e}")
    return r


@flow(name="skybatch-difference", log_prints=True)
def difference_flow(
    science: list[str],
    reference: list[str],
    out: str,
    science_view: str | None = None,
    reference_view: str | None = None,
    bands: list[str] | None = None,
    tile_pattern: str | None = None,
    instrument: str | None = None,
    hdu: str | None = None,
    threshold: float = 5.0,
    sign: str = "both",
    cutout_size: int = 31,
    max_candidates: int = 500,
    subtile: int = 0,
    subtile_overlap: int = 64,
    psf: str = "estimate",
    psf_size: int | None = None,
    default_fwhm: float = 3.0,
    flux_ratio: float | None = None,
    noise: str = "map",
    gain: float | None = None,
    saturation: float | None = None,
    mask_bits: int | None = None,
    background_box: int = 64,
    astrometric_sigma: float = 0.0,
    inject: int = 0,
    inject_snr: tuple[float, float] = (3.0, 30.0),
    inject_seed: int = 0,
    plot_top: int = 16,
    chunk_candidates: int = 256,
    cluster: str = "auto",
    endpoint_url: str | None = None,
    anon: bool | None = None,
    retries: int = 2,
    progress: bool = True,
) -> dict:
    """Difference science images against references (FITS / .npz files or tile stores) with ZOGY into a
    Zarr difference store, with a Parquet candidate catalogue, cutout triplets and (with inject > 0)
    an injection-recovery report."""
    config = job.DifferenceConfig(
        science=science, reference=reference, out=out, science_view=science_view, reference_view=reference_view,
        bands=bands, tile_pattern=tile_pattern, instrument=instrument, hdu=hdu, threshold=threshold, sign=sign,
        cutout_size=cutout_size, max_candidates=max_candidates, subtile=subtile, subtile_overlap=subtile_overlap,
        psf=psf, psf_size=psf_size, default_fwhm=default_fwhm, flux_ratio=flux_ratio, noise=noise, gain=gain,
        saturation=saturation, mask_bits=mask_bits, background_box=background_box,
        astrometric_sigma=astrometric_sigma, inject=inject, inject_snr=tuple(inject_snr), inject_seed=inject_seed,
        plot_top=plot_top, chunk_candidates=chunk_candidates, cluster=cluster, endpoint_url=endpoint_url, anon=anon,
        retries=retries, progress=progress,
    )
    with cluster_client(config.cluster) as client:
        p = plan(config, client)
        r = difference(p, client)
    report(r)
    return asdict(r)
