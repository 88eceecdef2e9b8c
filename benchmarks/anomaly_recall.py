"""Anomaly recall benchmark: the README's CLI path on several generated surveys, against baselines.

For each survey (its own seed, class mixture, S/N range and anomaly strengths; anomalies drawn at
the same magnitudes as normal objects) this script

1. writes a DESI-layout survey (healpix coadds + redrock files + truth.parquet) with the anomaly
   kinds of an external check: QSOs with weak lines, strong lines, BAL troughs; Seyfert-2-like
   emission-line galaxies; star + galaxy composites; extreme line ratios; background [O II] in an
   LRG; an unexpected narrow line;
2. runs, each in a fresh process, exactly the README's commands::

       skybatch run ingest --source DIR --store S.zarr
       skybatch run preprocess --store S.zarr --out R.zarr --grid loglam:3.0:3.95:1e-4 --rest-frame --normalize median
       skybatch run train --store R.zarr --model vae --out VAE --steps N
       skybatch run score --store R.zarr --model VAE --top 30 --method population

3. measures in the same run, on the same preprocessed store, three baselines: a weighted PCA in the
   rest frame of all spectra (reconstruction chi^2 per pixel), a robust weighted PCA per SPECTYPE
   (chi^2 per pixel against the object's class model, its worst 3-sigma misfits set aside), and the
   plain VAE reconstruction chi^2 per pixel (``recon_chi2_per_pixel`` written by ``score``);
4. prints recall@1 % and @3 % (fraction of the injected anomalies among the top 1 % / 3 % of the
   ranking) per anomaly kind and overall, per survey and averaged.

    python benchmarks/anomaly_recall.py              (6 surveys of 3000 spectra, 600 VAE steps)
    python benchmarks/anomaly_recall.py --quick      (2 surveys of 1200 spectra, 300 VAE steps)
    python benchmarks/anomaly_recall.py --keep DIR   (keep surveys, stores and models under DIR)
    python benchmarks/anomaly_recall.py --report DIR/survey0 DIR/survey1   (re-measure kept, scored surveys)
    python benchmarks/anomaly_recall.py --rescore DIR/survey0 --method population  (score again, then measure)

The population score's choices were made on surveys 0-2 (seeds 101-303); surveys 3-5 are held out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

KINDS = ("qso_weak_lines", "qso_strong_lines", "bal", "seyfert2", "star_galaxy", "extreme_line_ratio",
         "background_oii", "narrow_line")
QSO_KINDS = ("qso_weak_lines", "qso_strong_lines", "bal")
GRID = "loglam:3.0:3.95:1e-4"

#: (seed, class fractions GALAXY/QSO/STAR, DESI noise sigma0 range, anomaly strength range)
SURVEYS = (
    (101, (0.55, 0.27, 0.18), (0.10, 0.30), (0.7, 1.3)),
    (202, (0.45, 0.40, 0.15), (0.05, 0.20), (0.6, 1.2)),
    (303, (0.65, 0.20, 0.15), (0.20, 0.50), (0.8, 1.5)),
    (404, (0.50, 0.30, 0.20), (0.10, 0.40), (0.5, 1.0)),
    (505, (0.40, 0.35, 0.25), (0.15, 0.35), (0.7, 1.4)),
    (606, (0.60, 0.25, 0.15), (0.30, 0.70), (0.6, 1.1)),
)


def _cli(*args: str, log: str, attempts: int = 3) -> None:
    """Run ``skybatch ARGS`` in a fresh process; re-run (every job resumes) if it fails, e.g. when the
    temporary Prefect server does not come up in time on a loaded machine."""
    exe = os.path.join(os.path.dirname(sys.executable), "skybatch")
    for _ in range(attempts):
        with open(log, "a") as fh:
            fh.write(f"$ skybatch {' '.join(args)}\n")
            fh.flush()
            r = subprocess.run([exe, *args], stdout=fh, stderr=subprocess.STDOUT)
        if r.returncode in (0, 3):
            return
    raise RuntimeError(f"skybatch {' '.join(args)} exited with {r.returncode} {attempts} times; see {log}")


def baselines(store: str) -> dict[str, np.ndarray]:
    """Baseline scores of every spectrum of a scored, preprocessed store (higher = odder)."""
    import zarr

    from skybatch.models.anomaly_pca import fit_weighted_pca, residual_statistics

    g = zarr.open_group(store, mode="r")
    flux = np.asarray(g["flux"][:], np.float64)
    ivar = np.asarray(g["ivar"][:], np.float64)
    st = np.asarray(g["spectype"][:].astype(object), dtype=str)
    out = {"vae_chi2": np.asarray(g["recon_chi2_per_pixel"][:], np.float64)}
    glob = fit_weighted_pca(flux, ivar, 8, clip_sigma=0.0)
    out["pca_restframe"] = residual_statistics(glob, flux, ivar)["log_chi2pp"]
    per = np.full(st.size, np.nan)
    for c in np.unique(st):
        rows = np.flatnonzero(st == c)
        pca = fit_weighted_pca(flux[rows], ivar[rows], 8, clip_sigma=3.0)
        per[rows] = residual_statistics(pca, flux[rows], ivar[rows])["log_chi2pp"]
    out["robust_pca_per_spectype"] = per
    return out


def recall(score: np.ndarray, is_anom: np.ndarray, frac: float, sel: np.ndarray | None = None) -> tuple[int, int]:
    """(found, total) anomalies (restricted to ``sel``) in the top ``frac`` of ``score``."""
    k = int(np.ceil(frac * score.size))
    top = np.zeros(score.size, bool)
    top[np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:k]] = True
    want = is_anom if sel is None else is_anom & sel
    return int((top & want).sum()), int(want.sum())


def run_survey(i: int, spec: tuple, root: str, n_spectra: int, steps: int, log: str,
               method: str = "population") -> dict:
    from skybatch.sample.survey import generate_sample_survey

    seed, fractions, sigma0, strength = spec
    d = os.path.join(root, f"survey{i}")
    t0 = time.perf_counter()
    generate_sample_survey(d, n_healpix=max(1, n_spectra // 200), spectra_per_file=200, n_sdss=0, seed=seed,
                           class_fractions=fractions, sigma0_range=sigma0, anomaly_strength=strength,
                           anomaly_kinds=KINDS, anomaly_fraction=28 / 3000, anomaly_mag_fraction=1.0)
    raw, rest, vae = d + ".zarr", d + "-rest.zarr", d + "-vae"
    _cli("run", "ingest", "--source", os.path.join(d, "desi"), "--store", raw, "--cluster", "local", log=log)
    _cli("run", "preprocess", "--store", raw, "--out", rest, "--grid", GRID, "--rest-frame", "--normalize",
         "median", "--cluster", "local", log=log)
    t1 = time.perf_counter()
    _cli("run", "train", "--store", rest, "--model", "vae", "--out", vae, "--steps", str(steps), "--no-progress",
         "--cluster", "local", log=log)
    t2 = time.perf_counter()
    _cli("run", "score", "--store", rest, "--model", vae, "--top", "30", "--no-progress", "--cluster", "local",
         "--method", method, log=log)
    t3 = time.perf_counter()
    out = measure(d)
    out["seconds"] = {"ingest+preprocess": t1 - t0, "train": t2 - t1, "score": t3 - t2, **out["seconds"]}
    return out


def measure(d: str) -> dict:
    """Truth, skybatch's scores and the baselines of a scored survey directory ``d`` (``d-rest.zarr``)."""
    import pandas as pd
    import zarr

    rest = d + "-rest.zarr"
    g = zarr.open_group(rest, mode="r")
    tid = np.asarray(g["targetid"][:])
    truth = pd.read_parquet(os.path.join(d, "truth.parquet")).set_index("targetid").loc[tid]
    scores = {"skybatch": np.asarray(g["anomaly_score"][:], np.float64)}
    tb = time.perf_counter()
    scores.update(baselines(rest))
    return {"truth": truth, "scores": scores, "seconds": {"baselines": time.perf_counter() - tb}}


def report(results: list[dict]) -> None:
    methods = list(results[0]["scores"])
    for i, r in enumerate(results):
        truth = r["truth"]
        anom = truth["is_anomaly"].to_numpy(bool)
        kind = truth["anomaly_kind"].to_numpy(str)
        st = truth["spectype"].to_numpy(str)
        print(f"\n== survey {i}: {len(truth)} spectra, {anom.sum()} anomalies; seconds "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()))
        rows = [("overall", None), ("QSO anomalies", np.isin(kind, QSO_KINDS))]
        rows += [(k, kind == k) for k in KINDS if (kind == k).any()]
        print(f"{'':22s}" + "".join(f"{m:>26s}" for m in methods))
        for name, sel in rows:
            cells = []
            for m in methods:
                a1, n = recall(r["scores"][m], anom, 0.01, sel)
                a3, _ = recall(r["scores"][m], anom, 0.03, sel)
                cells.append(f"{a1:>3d}/{n:<3d}{a1 / max(n, 1):5.2f} | {a3 / max(n, 1):4.2f}")
            print(f"{name:22s}" + "".join(f"{c:>26s}" for c in cells))
        s = r["scores"]["skybatch"]
        top = np.argsort(-np.nan_to_num(s, nan=-np.inf))[:30]
        print("top 30 of skybatch: " + ", ".join(f"{c} {int(((st[top] == c) & ~anom[top]).sum())}"
                                               for c in ("GALAXY", "QSO", "STAR")) + " ordinary objects")
    print("\n== summary: recall@1% (recall@3%) per survey")
    for m in methods:
        r1 = [recall(r["scores"][m], r["truth"]["is_anomaly"].to_numpy(bool), 0.01) for r in results]
        r3 = [recall(r["scores"][m], r["truth"]["is_anomaly"].to_numpy(bool), 0.03) for r in results]
        q = [recall(r["scores"][m], r["truth"]["is_anomaly"].to_numpy(bool), 0.01,
                    np.isin(r["truth"]["anomaly_kind"].to_numpy(str), QSO_KINDS)) for r in results]
        v1 = np.array([a / max(n, 1) for a, n in r1])
        v3 = np.array([a / max(n, 1) for a, n in r3])
        qv = sum(a for a, _ in q) / max(1, sum(n for _, n in q))
        print(f"{m:26s} mean {v1.mean():.3f} min {v1.min():.3f} ({v3.mean():.3f})  per survey "
              + " ".join(f"{a:.2f}" for a in v1) + f"  QSO anomalies@1% {qv:.2f}")
    sky = [recall(r["scores"]["skybatch"], r["truth"]["is_anomaly"].to_numpy(bool), 0.01)[0] for r in results]
    for m in methods[1:]:
        other = [recall(r["scores"][m], r["truth"]["is_anomaly"].to_numpy(bool), 0.01)[0] for r in results]
        wins = sum(a > b for a, b in zip(sky, other))
        ties = sum(a == b for a, b in zip(sky, other))
        print(f"skybatch vs {m}: better on {wins}, equal on {ties} of {len(results)} surveys (recall@1%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 surveys of 1200 spectra, 300 VAE steps")
    ap.add_argument("--surveys", type=int, default=None, help="how many of the survey settings to run")
    ap.add_argument("--first", type=int, default=0, help="index of the first survey setting to run")
    ap.add_argument("--spectra", type=int, default=None, help="spectra per survey (default 3000)")
    ap.add_argument("--steps", type=int, default=None, help="VAE training steps (default 600)")
    ap.add_argument("--method", choices=("vae", "population"), default="population",
                    help="the score's --method (default population)")
    ap.add_argument("--keep", default=None, help="directory to keep the surveys, stores and models in")
    ap.add_argument("--report", nargs="+", default=None, metavar="SURVEY_DIR",
                    help="only measure and print already scored surveys (DIR/surveyN of a --keep run)")
    ap.add_argument("--rescore", nargs="+", default=None, metavar="SURVEY_DIR",
                    help="re-run only `skybatch run score` (with --method) on kept surveys, then measure them")
    args = ap.parse_args()
    if args.rescore:  # the score command again (after a change to it) on kept surveys, then the report
        for d in args.rescore:
            d = d.rstrip("/")
            _cli("run", "score", "--store", d + "-rest.zarr", "--model", d + "-vae", "--top", "30", "--no-progress",
                 "--cluster", "local", "--method", args.method, log=os.path.join(os.path.dirname(d), "cli.log"))
        args.report = args.rescore
    if args.report:
        report([measure(d.rstrip("/")) for d in args.report])
        return
    n_surveys = args.surveys or (2 if args.quick else len(SURVEYS))
    n_spectra = args.spectra or (1200 if args.quick else 3000)
    steps = args.steps or (300 if args.quick else 600)
    root = args.keep or tempfile.mkdtemp(prefix="skybatch-anomaly-recall-")
    os.makedirs(root, exist_ok=True)
    log = os.path.join(root, "cli.log")
    print(f"{n_surveys} surveys x {n_spectra} spectra, VAE {steps} steps; work dir {root} (CLI output in {log})")
    results = []
    for i, spec in list(enumerate(SURVEYS))[args.first:args.first + n_surveys]:
        results.append(run_survey(i, spec, root, n_spectra, steps, log, args.method))
        print(f"survey {i} done: " + ", ".join(f"{k} {v:.0f} s" for k, v in results[-1]["seconds"].items()),
              flush=True)
        report(results[-1:])
    report(results)


if __name__ == "__main__":
    main()
