"""`skybatch run score`: write anomaly_score (reconstruction chi2 + latent density) and a top-K catalogue + PNG."""

from __future__ import annotations

import argparse

from skybatch.commands import _apply

HELP = "write anomaly_score (reconstruction chi2 + latent density) and a top-K catalogue + PNG"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _apply.add_arguments(p, top=True)


def run(args: argparse.Namespace) -> int:
    return _apply.run("score", args)
