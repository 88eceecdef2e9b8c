"""`skybatch run realbogus` (the older spelling of `skybatch run train --model realbogus` and `skybatch run
classify --store DIFF --model M`): train the real/bogus classifier on generated triplets, or score a
difference store's candidates (:mod:`skybatch.jobs.realbogus`)."""

from __future__ import annotations

import argparse
from typing import Any

HELP = ("real/bogus: --train --out M trains on generated triplets; --store DIFF --model M writes realbogus_score "
        "into DIFF's candidate catalogue (also: run train --model realbogus, run classify)")

#: realbogus training settings that are flags of `skybatch run train` too
TRAIN_SETTINGS = ("examples", "epochs", "stamp", "completeness")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The real/bogus flags of `skybatch run train --model realbogus` (--out, --store, --seed are shared)."""
    p.add_argument("--examples", type=int, default=None, metavar="N", help="realbogus: generated training triplets "
                   "(12000)")
    p.add_argument("--epochs", type=int, default=None, help="realbogus: passes over the training triplets (12)")
    p.add_argument("--stamp", type=int, default=None, metavar="PX", help="realbogus: training stamp size (21; store "
                   "cutouts are cropped to it)")
    p.add_argument("--completeness", type=float, default=None,
                   help="realbogus: completeness the threshold is chosen for (0.98)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", action="store_true", help="train a model into --out")
    p.add_argument("--out", default=None, help="model directory to write (with --train)")
    p.add_argument("--store", default=None, help="difference store whose candidates to score")
    p.add_argument("--model", default=None, help="model directory (from --train)")
    p.add_argument("--examples", type=int, default=12000, metavar="N", help="generated training triplets (12000)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--stamp", type=int, default=21, metavar="PX", help="training stamp size (21; store cutouts are "
                   "cropped to it)")
    p.add_argument("--completeness", type=float, default=0.98, help="completeness the threshold is chosen for (0.98)")
    p.add_argument("--seed", type=int, default=0)


def run_train(args: argparse.Namespace, settings: dict[str, Any] | None = None) -> int:
    """Train from flags (and ``--config`` settings) into ``--out``; prints the held-out figures."""
    from skybatch.commands._config import ConfigError, build_config
    from skybatch.jobs import realbogus

    flags = {k: getattr(args, k, None) for k in ("out", "store", "seed", *TRAIN_SETTINGS)}
    cfg = build_config(realbogus.TrainConfig, settings or {}, flags)
    try:
        rep = realbogus.train(cfg)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(rep.summary())
    return rep.exit_code


def run_classify(store: str, model: str) -> int:
    """Score ``store``'s candidates with ``model``; prints the counts."""
    from skybatch.commands._config import ConfigError
    from skybatch.jobs import realbogus

    try:
        rep = realbogus.classify(realbogus.ClassifyConfig(store=store, model=model))
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(rep.summary())
    return rep.exit_code


def run(args: argparse.Namespace) -> int:
    from skybatch.commands._config import ConfigError

    if args.train:
        if not args.out:
            raise ConfigError("out: give --out MODEL_DIR to train into")
        return run_train(argparse.Namespace(**{**vars(args), "store": None}))  # --store is what --train ignores
    if not (args.store and args.model):
        raise ConfigError("give --train --out MODEL_DIR, or --store DIFF_STORE --model MODEL_DIR")
    return run_classify(args.store, args.model)
