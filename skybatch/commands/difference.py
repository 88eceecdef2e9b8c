"""`skybatch run difference`: ZOGY difference imaging of science/reference image pairs into a difference store."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

HELP = "difference science images against references with ZOGY: maps, candidates, cutouts (and injection-recovery)"


def CONFIG():
    """The job's config class: the CLI adds a flag for each of its settings not declared below."""
    from skybatch.jobs.difference import Config

    return Config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--science", action="append", default=None, metavar="URL_OR_STORE",
                   help="science images: a path, glob, directory or s3:// URL/prefix of FITS / .npz tiles, or a tile "
                        "store; repeat for more")
    p.add_argument("--reference", action="append", default=None, metavar="URL_OR_STORE",
                   help="reference images, in the same forms; paired with the science images on (tile id, band)")
    p.add_argument("--out", help="the difference store (local path or s3:// URL); new, or one to resume")
    p.add_argument("--science-view", default=None, metavar="VIEW", help="tile-store view (group) of the science images")
    p.add_argument("--reference-view", default=None, metavar="VIEW", help="tile-store view of the references")
    p.add_argument("--band", action="append", dest="bands", default=None, metavar="BAND",
                   help="only this band (r, VIS, rubin_r ...); repeat for more")
    p.add_argument("--tile-pattern", default=None, metavar="REGEX",
                   help="regular expression with a (?P<tile>...) group taking the tile id from each path")
    p.add_argument("--instrument", default=None, help="force the instrument of every file (rubin, euclid, ...)")
    p.add_argument("--hdu", default=None, metavar="EXTNAME_OR_NUMBER",
                   help="FITS: read this HDU as a plain image (default: IMAGE/VARIANCE or SCI/RMS layouts, else the "
                        "first 2-D image; noise from a VARIANCE/WEIGHT/RMS HDU or estimated from the image)")
    p.add_argument("--threshold", type=float, default=None, metavar="SIGMA", help="detection threshold on |S_corr| (5)")
    p.add_argument("--sign", choices=["both", "positive", "negative"], default=None)
    p.add_argument("--cutout-size", type=int, default=None, metavar="PX", help="odd side of the cutout triplets (31)")
    p.add_argument("--max-candidates", type=int, default=None, metavar="N",
                   help="per pair, most significant first (500)")
    p.add_argument("--subtile", type=int, default=None, metavar="PX",
                   help="difference images larger than this in overlapping sub-tiles with their own PSFs (0 = never)")
    p.add_argument("--subtile-overlap", type=int, default=None, metavar="PX")
    p.add_argument("--psf", choices=["estimate", "gaussian"], default=None)
    p.add_argument("--psf-size", type=int, default=None, metavar="PX")
    p.add_argument("--default-fwhm", type=float, default=None, metavar="PX")
    p.add_argument("--flux-ratio", type=float, default=None,
                   help="science/reference counts of a static source (default: fitted per pair)")
    p.add_argument("--noise", choices=["map", "background"], default=None,
                   help="map: the inputs' VARIANCE/RMS; background: a robust background RMS (+ --gain)")
    p.add_argument("--gain", type=float, default=None, help="e-/ADU of both images")
    p.add_argument("--saturation", type=float, default=None, help="raw saturation level (image unit); default each file's SATURATE keyword")
    p.add_argument("--mask-bits", type=lambda s: int(s, 0), default=None, metavar="BITS",
                   help="mask bits that make a pixel bad (default: BAD SAT CR NO_DATA EDGE SUSPECT planes)")
    p.add_argument("--astrometric-sigma", type=float, default=None, metavar="PX")
    p.add_argument("--psf-accuracy", type=float, default=None, metavar="FRACTION",
                   help="fractional accuracy of the PSF models (0.005): S_corr's PSF-error term and the bright-star "
                        "veto (mask bit 4)")
    p.add_argument("--inject", type=int, default=None, metavar="N",
                   help="inject N point sources per science image and report completeness and false positives")
    p.add_argument("--inject-snr", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--inject-seed", type=int, default=None)
    p.add_argument("--plot-top", type=int, default=None, metavar="N", help="triplets in the PNG (16; 0 = none)")
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for inputs and store")
    p.add_argument("--anon", action="store_true", default=None, help="anonymous S3 access (public buckets)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import build_config, load_config
    from skybatch.pipeline.difference import DifferenceConfig, DifferenceReport, DifferenceSettingsError

    names = [f.name for f in dataclasses.fields(DifferenceConfig)]
    flags: dict[str, Any] = {k: getattr(args, k, None) for k in names}
    if flags.get("inject_snr") is not None:
        flags["inject_snr"] = tuple(flags["inject_snr"])
    config = build_config(DifferenceConfig, load_config(getattr(args, "config", None)), flags)
    from skybatch.orchestrate import run_flow
    from skybatch.orchestrate._common import flow_params
    from skybatch.orchestrate.difference import difference_flow

    try:
        rep = DifferenceReport(**run_flow(difference_flow, flow_params(config)))
    except DifferenceSettingsError as e:  # names the setting: a usage error (exit code 2), not a crash
        from skybatch.commands._config import ConfigError

        raise ConfigError(str(e)) from None
    print(rep.summary())
    groups = list(rep.groups)
    if not groups:
        return rep.exit_code
    print(f"open it: import xarray as xr; ds = xr.open_zarr({config.out!r}, group={groups[0]!r}); "
          f"import pandas as pd; cat = pd.read_parquet({rep.catalogue!r})")
    return rep.exit_code
