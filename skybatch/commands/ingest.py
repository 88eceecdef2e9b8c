"""`skybatch run ingest`: FITS files (paths, globs, s3:// URLs) into a Zarr spectra store."""

from __future__ import annotations

import argparse

HELP = "ingest DESI / SDSS / sky-VAC FITS files into a chunked Zarr spectra store"


def CONFIGS():
    from skybatch.pipeline.ingest import IngestConfig

    return (IngestConfig,)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", dest="sources", metavar="URL_OR_GLOB",
                   help="a path, glob, directory or s3:// URL/prefix; repeat for more (required)")
    p.add_argument("--store", help="the Zarr store: a local path or s3:// URL (required)")
    p.add_argument("--format", choices=["auto", "desi", "sdss", "skyvac"], default=None, help="file format")
    p.add_argument("--chunk-spectra", type=int, default=None, metavar="N", help="spectra per chunk")
    p.add_argument("--keep-nonscience", action="store_true", default=None, help="keep sky fibres / negative TARGETIDs")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for sources and store "
                                                       "(default: $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--anon", action="store_true", default=None,
                   help="anonymous S3 access (default: anonymous when no AWS credentials are configured)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import build_config, load_config
    from skybatch.commands._opts import storage_options_param
    from skybatch.commands._show import open_hint
    from skybatch.pipeline.ingest import IngestConfig, IngestReport

    flags = {k: getattr(args, k, None) for k in
             ("sources", "store", "format", "chunk_spectra", "keep_nonscience", "endpoint_url", "anon", "progress", "cluster")}
    config = build_config(IngestConfig, load_config(args.config), flags)
    from flows.ingest import ingest_flow

    from skybatch.commands._runflow import run_flow

    rep = run_flow(
        ingest_flow, sources=config.sources, store=config.store, format=config.format, chunk_spectra=config.chunk_spectra,
        keep_nonscience=config.keep_nonscience, cluster=config.cluster, endpoint_url=config.endpoint_url,
        anon=config.anon, progress=config.progress, retries=config.retries,
        source_options=storage_options_param(config.source_options, config.sources),
        store_options=storage_options_param(config.store_options, [config.store]),
    )
    report = IngestReport(**rep)
    print(report.summary())
    print(open_hint(config.store))
    return report.exit_code
