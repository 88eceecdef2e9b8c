"""`skybatch run ingest-tiles`: image tiles (.npz / FITS; paths, globs, s3:// URLs) into a Zarr tile store."""

from __future__ import annotations

import argparse

HELP = "ingest Rubin / Euclid image tiles (.npz or FITS) into a chunked Zarr tile store"



def CONFIGS():
    from skybatch.jobs.tile_ingest import Config

    return (Config,)


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    from skybatch.jobs.tile_ingest import Config

    return Config


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
    from skybatch.commands._config import build_config, load_config
    from skybatch.commands._flags import flag_values
    from skybatch.jobs.tile_ingest import Config, Report

    flags = flag_values(args, Config)
    config = build_config(Config, load_config(getattr(args, "config", None)), flags)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.tile_ingest import tile_ingest_flow

    report = Report(**run_flow(tile_ingest_flow, flow_params(config)))
    print(report.summary())
    from skybatch.commands._show import open_hint

    views = list(report.views)
    print(open_hint(config.store, views[0]) if views else open_hint(config.store))
    return report.exit_code
