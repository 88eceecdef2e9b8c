"""`skybatch run realbogus`: train the real/bogus classifier on generated triplets, or score a difference store."""

from __future__ import annotations

import argparse

HELP = ("real/bogus: --train --out M trains on generated triplets; --store DIFF --model M writes realbogus_score "
        "into DIFF's candidate catalogue")


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


def run(args: argparse.Namespace) -> int:
    import os

    from skybatch.commands._config import ConfigError

    if args.train:
        if not args.out:
            raise ConfigError("out: give --out MODEL_DIR to train into")
        if os.path.exists(args.out) and os.listdir(args.out):
            raise ConfigError(f"out: {args.out} is not empty; choose a new directory for the model")
        import numpy as np

        from skybatch.models.calibration import expected_calibration_error
        from skybatch.models.realbogus import train_realbogus, triplet_features
        from skybatch.sample.realbogus import make_realbogus_set

        tr = make_realbogus_set(args.examples, size=args.stamp, seed=args.seed)
        model = train_realbogus(tr.triplets, tr.label, epochs=args.epochs, seed=args.seed,
                                completeness=args.completeness)
        te = make_realbogus_set(max(2000, args.examples // 4), size=args.stamp, seed=args.seed + 1)
        p = model.score(te.triplets, triplet_features(te.triplets))
        y = te.label
        ece = expected_calibration_error(np.stack([1 - p, p], 1), y)
        fn, fp = float(np.mean(p[y == 1] < model.threshold)), float(np.mean(p[y == 0] >= model.threshold))
        model.save(args.out, {"data": {"generated": args.examples, "stamp": args.stamp, "seed": args.seed},
                              "metrics": {"held_out_ece": ece, "held_out_fn": fn, "held_out_fp": fp}})
        print(f"model: {args.out} (temperature {model.temperature:.3f}, threshold {model.threshold:.4f} for "
              f"{model.completeness:.0%} completeness)")
        print(f"held-out generated triplets: ECE {ece:.4f}, false negatives {fn:.4f}, false positives {fp:.4f}")
        return 0
    if not (args.store and args.model):
        raise ConfigError("give --train --out MODEL_DIR, or --store DIFF_STORE --model MODEL_DIR")
    from skybatch.pipeline.difference.realbogus import classify_difference_store

    try:
        r = classify_difference_store(args.store, args.model)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(f"scored {r['n_candidates']} candidates: {r['n_real']} real at threshold {r['threshold']:.4f} "
          f"({r['completeness']:.0%} completeness); columns realbogus_score, realbogus_real in {r['catalogue']}")
    return 0
