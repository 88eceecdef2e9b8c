"""`skybatch run ingest`: FITS files (paths, globs, s3:// URLs) into a Zarr spectra store."""

from __future__ import annotations

import argparse

from skybatch.commands._job import config_class, run_job

HELP = "ingest DESI / SDSS / sky-VAC FITS files into a chunked Zarr spectra store"


def CONFIGS():
    return (config_class("ingest"),)


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    return config_class("ingest")


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
    from skybatch.commands._show import open_hint

    config, report = run_job(args, "ingest")
    print(open_hint(config.store))
    return report.exit_code
