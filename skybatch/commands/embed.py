"""`skybatch run embed`: write embedding (spectrum, dim): the VAE latent mean."""

from __future__ import annotations

import argparse

from skybatch.commands import _apply

HELP = "write embedding (spectrum, dim): the VAE latent mean"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _apply.add_arguments(p, top=False)


def run(args: argparse.Namespace) -> int:
    return _apply.run("embed", args)
