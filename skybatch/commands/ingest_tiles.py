"""`skybatch run ingest-tiles`: image tiles (.npz / FITS; paths, globs, s3:// URLs) into a Zarr tile store."""

from __future__ import annotations

import argparse

from skybatch.commands._job import config_class, run_job

HELP = "ingest Rubin / Euclid image tiles (.npz or FITS) into a chunked Zarr tile store"


def CONFIGS():
    return (config_class("tile_ingest"),)


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    return config_class("tile_ingest")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", dest="sources", metavar="URL_OR_GLOB",
                   help="a path, glob, directory or s3:// URL/prefix of .npz / FITS tiles; repeat for more")
    p.add_argument("--store", help="the Zarr tile store: a local path or s3:// URL")
    p.add_argument("--chunk-tiles", type=int, default=None, metavar="N",
                   help="tiles per chunk and per task (default 4)")
    p.add_argument("--instrument", default=None, help="force the instrument of every file (rubin, euclid, ...)")
    p.add_argument("--tile-pattern", default=None, metavar="REGEX",
                   help="regular expression with a (?P<tile>...) group taking the tile id from each path")
    p.add_argument("--shard-planes", dest="shard_planes", action="store_true", default=None,
                   help="one inner chunk per (tile, band) plane inside shards (default: for planes >= 1024^2 px)")
    p.add_argument("--no-shard-planes", dest="shard_planes", action="store_false")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for sources and store")
    p.add_argument("--anon", action="store_true", default=None, help="anonymous S3 access (public buckets)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._show import open_hint

    config, report = run_job(args, "tile_ingest")
    views = list(report.views)
    print(open_hint(config.store, views[0]) if views else open_hint(config.store))
    return report.exit_code
