"""Real/bogus: the CNN over (science, reference, difference) triplets + features against two
feature-only baselines on the same measured features: gradient-boosted trees (scikit-learn's
HistGradientBoostingClassifier, when installed: the dev extra) and a quadratic logistic
regression; all trained on the same generated set and evaluated on a held-out one, in the same run.

Prints, for each: ECE, the false-negative rate at 2 % false positives (and the false-positive
rate at 2 % false negatives), the operating point of each model (the CNN's one threshold chosen
on its calibration split so that the worst bogus kind / real S/N bin is smallest,
:func:`skybatch.models.realbogus.minimax_threshold`; the baselines' for the same completeness on
the 20 % of the training set they were not fitted on), and per bogus kind / per real S/N bin the pass rates at that operating
point and the ECE of that subset. Goal (braai, Duev et al. 2019): <= 2 % FN at <= 2 % FP, ECE <= 0.03.

Data: :func:`skybatch.sample.realbogus.make_realbogus_set` (synthetic stamps; a model for real
survey data must be trained on that survey's injections and artefacts).

Usage:  python benchmarks/realbogus.py [--quick] [--train N] [--test N] [--epochs E]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np


def rates(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(FN rate at 2 % FP, FP rate at 2 % FN)."""
    t_fp = np.quantile(p[y == 0], 0.98)
    t_fn = np.quantile(p[y == 1], 0.02)
    return float(np.mean(p[y == 1] <= t_fp)), float(np.mean(p[y == 0] >= t_fn))


def main(argv: list[str] | None = None) -> int:
    from skybatch.models.calibration import expected_calibration_error
    from skybatch.models.realbogus import FeatureBaseline, train_realbogus, triplet_features
    from skybatch.sample.realbogus import BOGUS_KINDS, REAL_KINDS, TRAIN_KINDS, make_realbogus_set, training_groups
    from skybatch.sample.realbogus import training_weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3000 train / 2000 test, 6 epochs")
    ap.add_argument("--train", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    a = ap.parse_args(argv)
    n_tr = a.train or (3000 if a.quick else 12000)
    n_te = a.test or (2000 if a.quick else 6000)
    epochs = a.epochs or (6 if a.quick else 12)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    # training: the training mix (cosmic rays / hot pixels twice as often) and loss weights (those and
    # real S/N < 12 twice as heavy); held out: the plain mix (every bogus kind equally often)
    tr, te = make_realbogus_set(n_tr, seed=1, kinds=TRAIN_KINDS), make_realbogus_set(n_te, seed=2)
    f_tr, f_te = triplet_features(tr.triplets), triplet_features(te.triplets)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = train_realbogus(tr.triplets, tr.label, features=f_tr, epochs=epochs,
                            weights=training_weights(tr.kind, tr.snr), groups=training_groups(tr.kind, tr.snr))
    t_cnn = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the baselines fit on 80 % of the training set; their thresholds come from the other 20 %
    # (as the CNN's from its calibration split: trees score their own training set ~perfectly)
    cut = int(0.8 * len(f_tr))
    fit_f, fit_y, cal_f, cal_y = f_tr[:cut], tr.label[:cut], f_tr[cut:], tr.label[cut:]
    base = FeatureBaseline.fit(fit_f, fit_y)
    t_base = time.perf_counter() - t0
    scores = {"cnn+features": model.score(te.triplets, f_te)}
    train_scores = {}
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier

        t0 = time.perf_counter()
        gbt = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=0).fit(fit_f, fit_y)
        t_gbt = time.perf_counter() - t0
        scores["features-GBT"] = gbt.predict_proba(f_te)[:, 1]
        train_scores["features-GBT"] = gbt.predict_proba(cal_f)[:, 1]
    except ImportError:
        t_gbt = float("nan")
        print("(scikit-learn not installed: no gradient-boosted-trees baseline; pip install -e '.[dev]')")
    scores["features-quad"] = base.score(f_te)
    train_scores["features-quad"] = base.score(cal_f)
    y = te.label
    print(f"real/bogus benchmark: {n_tr} train / {n_te} held-out triplets ({tr.triplets.shape[-1]} px), "
          f"data {t_data:.1f} s, CNN {epochs} epochs {t_cnn:.1f} s, GBT {t_gbt:.1f} s, quadratic {t_base:.1f} s")

    def ece_of(p: np.ndarray, yy: np.ndarray) -> float:
        return float(expected_calibration_error(np.stack([1 - p, p], axis=1), yy))

    print(f"  {'model':16s} {'ECE':>7s} {'FN@2%FP':>8s} {'FP@2%FN':>8s}")
    res = {}
    for name, p in scores.items():
        ece = ece_of(p, y)
        fn, fp = rates(p, y)
        res[name] = (ece, fn, fp)
        print(f"  {name:16s} {ece:7.4f} {fn:8.4f} {fp:8.4f}")
    thr = {"cnn+features": model.threshold}
    for name, p in train_scores.items():  # the same completeness on the baseline's held-back 20 %
        thr[name] = float(np.quantile(p[cal_y == 1], 1 - model.completeness))
    print(f"  operating points (CNN: one threshold, the worst bogus kind / real S/N bin smallest on its calibration "
          f"split, {model.completeness:.1%} completeness there; baselines: that completeness on their held-back 20 %): " + ", ".join(f"{k} {v:.3f}" for k, v in thr.items()))
    names = list(scores)
    head = " ".join(f"{n[:12] + ' pass':>17s} {'ECE':>6s}" for n in names)
    print(f"  {'kind':14s} {'n':>5s} {head}   (real: pass ~1; bogus: pass ~0)")

    def row(label: str, m: np.ndarray) -> None:
        cells = " ".join(f"{np.mean(scores[n][m] >= thr[n]):17.4f} {ece_of(scores[n][m], y[m]):6.3f}" for n in names)
        print(f"  {label:14s} {int(m.sum()):5d} {cells}")

    for k in REAL_KINDS + BOGUS_KINDS:
        row(k, te.kind == k)
    print("  real by S/N in D:")
    edges = [5, 8, 12, 20, 40, 60]
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (y == 1) & (te.snr >= lo) & (te.snr < hi)
        if m.any():
            row(f"S/N {lo:>2d}-{hi:<2d}", m)
    p_cnn = scores["cnn+features"]
    thr = thr["cnn+features"]
    fn_op = float(np.mean(p_cnn[y == 1] < thr))
    fp_op = float(np.mean(p_cnn[y == 0] >= thr))
    ece, fn, fp = res["cnn+features"]
    ok = (fn <= 0.02) and ece <= 0.03
    print(f"  cnn at its threshold: FN {fn_op:.4f}, FP {fp_op:.4f}")
    # the goal's operating point: the threshold at 2 % false positives over all bogus kinds;
    # what each bogus kind passes and each S/N bin of the real ones loses there
    t2 = float(np.quantile(p_cnn[y == 0], 0.98))
    per_kind = {k: float(np.mean(p_cnn[te.kind == k] >= t2)) for k in BOGUS_KINDS}
    per_bin = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (y == 1) & (te.snr >= lo) & (te.snr < hi)
        if m.any():
            per_bin[f"{lo}-{hi}"] = float(np.mean(p_cnn[m] < t2))
    print(f"  cnn at 2% FP (threshold {t2:.3f}): FP per bogus kind "
          + ", ".join(f"{k} {v:.4f}" for k, v in per_kind.items())
          + "; FN per S/N bin " + ", ".join(f"{k} {v:.4f}" for k, v in per_bin.items()))
    worst_fp = max(float(np.mean(p_cnn[te.kind == k] >= thr)) for k in BOGUS_KINDS)
    worst_fn = max(float(np.mean(p_cnn[(y == 1) & (te.snr >= lo) & (te.snr < hi)] < thr))
                   for lo, hi in zip(edges[:-1], edges[1:]) if ((y == 1) & (te.snr >= lo) & (te.snr < hi)).any())
    print(f"  cnn at its threshold {thr:.3f}: worst bogus kind passes {worst_fp:.4f}, worst S/N bin loses {worst_fn:.4f}"
          f" ({'both' if max(worst_fp, worst_fn) <= 0.02 else 'not both'} <= 2 %)")
    print(f"goal (<= 2% FN at <= 2% FP, ECE <= 0.03) on these synthetic held-out triplets: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
