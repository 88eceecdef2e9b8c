"""`skybatch run score`: anomaly_score for every spectrum; top-K Parquet + PNGs."""

from __future__ import annotations

import argparse

from skybatch.commands import _apply

HELP = ("write anomaly_score (default --method population: per-SPECTYPE PCA, line and composite features "
        "calibrated per class and redshift bin; --method vae: VAE misfit + latent rarity) and a top-K catalogue + "
        "PNGs; --select spectype=QSO ranks quasars only")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _apply.add_arguments(p, top=True)
    p.add_argument("--select", action="append", default=None, metavar="COL=VALUE",
                   help="rank only the matching spectra, with population models fitted on them alone: "
                        "spectype=QSO, z>2, spectype=GALAXY,QSO (repeat to combine); implies --method population")
    p.add_argument("--method", choices=("vae", "population"), default="population",
                   help="population (default): judged within each object's SPECTYPE and redshift bin, with "
                        "per-class PCA, line and composite features (recall: benchmarks/anomaly_recall.py); vae: "
                        "robust z of the VAE's misfit and latent rarity over the store")


def run(args: argparse.Namespace) -> int:
    return _apply.run("score", args)
