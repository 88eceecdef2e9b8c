"""`skybatch run ingest`: FITS files (paths, globs, s3:// URLs) into a Zarr spectra store."""

from __future__ import annotations

import argparse

HELP = "ingest DESI / SDSS / sky-VAC FITS files into a chunked Zarr spectra store"


def CONFIGS():
    from skybatch.jobs.ingest import Config

    return (Config,)


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    from skybatch.jobs.ingest import Config

    return Config


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
    from skybatch.commands._flags import flag_values
    from skybatch.commands._show import open_hint
    from skybatch.jobs.ingest import Config, Report

    flags = flag_values(args, Config)
    config = build_config(Config, load_config(args.config), flags)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.ingest import ingest_flow

    report = Report(**run_flow(ingest_flow, flow_params(config)))
    print(report.summary())
    print(open_hint(config.store))
    return report.exit_code
