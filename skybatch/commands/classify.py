"""`skybatch run classify`: write calibrated class_prob (spectrum, class) and class_pred."""

from __future__ import annotations

import argparse

from skybatch.commands import _apply

HELP = "write calibrated class_prob (spectrum, class) and class_pred"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _apply.add_arguments(p, top=False)


def run(args: argparse.Namespace) -> int:
    return _apply.run("classify", args)
