"""Issue #11's detection checks on the generated plain-FITS pairs, printed as measured.

Writes ``--pairs`` plain-FITS pairs with :func:`skybatch.sample.images.write_sample_images`
(PSF varying across the field, saturated stars with bleeds, a rotated + shifted reference
aligned only by the WCSs, sky gradients, NaN regions, transients on galaxies, the last pair a
null pair), runs ``difference()`` on a local Dask cluster with ``--inject`` point sources and
prints:

* completeness: injections recovered over the ideal sum of Phi(S/N - threshold) (goal >= 0.9),
  also per S/N bin;
* false positives: candidates matching neither an injection nor a generated transient, outside
  the bright-star veto, per Mpix, against the pure-noise rate of each pair's own S_corr
  (:func:`~skybatch.imaging.detect.expected_false_positives`, Euler characteristic) plus one per
  4 Mpix (the goal);
* the null pair's candidates other than injections (goal 0), and the detections vetoed or kept
  out by the margins (counted, not catalogued).

Usage:  python benchmarks/difference_checks.py [--pairs N] [--size PX] [--inject K] [--workers W]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
from scipy.stats import norm

THRESHOLD = 5.0


def _nearest(cat: pd.DataFrame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if not len(cat) or not len(x):
        return np.full(len(cat), np.inf)
    return np.hypot(cat.x.to_numpy()[:, None] - x[None], cat.y.to_numpy()[:, None] - y[None]).min(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6, help="plain pairs (the last is the null pair; default 6)")
    ap.add_argument("--size", type=int, default=768, help="science image size, px (default 768)")
    ap.add_argument("--inject", type=int, default=60, help="injections per pair (default 60)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from distributed import Client, LocalCluster

    from skybatch.imaging.detect import expected_false_positives
    from skybatch.pipeline.difference import difference
    from skybatch.sample.images import write_sample_images
    from skybatch.store.difference_store import open_difference_store, read_candidates

    with tempfile.TemporaryDirectory(prefix="skybatch-diffchecks-") as tmp:
        t0 = time.perf_counter()
        sample = write_sample_images(os.path.join(tmp, "sample"), n_pairs=a.pairs, size=a.size,
                                     layouts=("plain",), n_tiles=0, seed=11)
        t_gen = time.perf_counter() - t0
        out = os.path.join(tmp, "plain.zarr")
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            rep = difference(sample.science["plain"], sample.reference["plain"], out, client=client, progress=False,
                             inject=a.inject, inject_snr=(3.0, 30.0), inject_seed=2, threshold=THRESHOLD)
            t_run = time.perf_counter() - t0
        assert rep.exit_code == 0, rep.summary()
        rec = pd.read_parquet(out + ".recovery.parquet")
        cat = read_candidates(out)
        truth = pd.read_parquet(sample.truth)
        (ds,) = open_difference_store(out).values()
        flags = ds.mask.values
        print(f"difference checks: {a.pairs} plain pairs of {a.size}^2 (last = null pair), {a.inject} injections "
              f"each, threshold {THRESHOLD:g}; generated in {t_gen:.0f} s, differenced in {t_run:.0f} s")
        ideal = norm.cdf(rec.snr.to_numpy() - THRESHOLD)
        found = rec.recovered.to_numpy(bool)
        print(f"completeness: {found.sum()} recovered / ideal sum Phi(S/N - {THRESHOLD:g}) = {ideal.sum():.1f}: "
              f"{found.sum() / ideal.sum():.3f} (goal >= 0.9)")
        for lo, hi in ((3, 5), (5, 8), (8, 12), (12, 30), (30, np.inf)):
            b = (rec.snr >= lo) & (rec.snr < hi)
            if b.any():
                print(f"  S/N {lo:>2}-{hi:<3}: {found[b].sum():4d} / ideal {ideal[b].sum():6.1f} "
                      f"(n {int(b.sum())}) = {found[b].sum() / max(ideal[b].sum(), 1e-9):.3f}")
        n_false, area, noise_rate = 0, 0.0, 0.0
        null_id = ds.pair_id.values[-1]
        n_null = 0
        for k, pid in enumerate(ds.pair_id.values):
            g = cat[cat.pair_id == pid]
            t = truth[truth.pair_id == pid]
            real = (_nearest(g, t.x.to_numpy(), t.y.to_numpy()) < 2.5) | g.injected.to_numpy()
            n_false += int((~real).sum())
            looked = (flags[k] & (1 | 2 | 4 | 8)) == 0
            a_k = float(looked.sum())
            area += a_k
            s = ds.S_corr.values[k]
            noise_rate += expected_false_positives(np.nan_to_num(s), THRESHOLD, area=a_k)
            if pid == null_id:
                n_null = int((~g.injected.to_numpy()).sum())
        mp = area / 1e6
        allowed = noise_rate + mp / 4
        print(f"false positives: {n_false} on {mp:.2f} Mpix searched = {n_false / mp:.2f} per Mpix; pure-noise rate of "
              f"these S_corr maps {noise_rate:.2f} ({noise_rate / mp:.2f} per Mpix) + 1 per 4 Mpix = {allowed:.2f} allowed: "
              f"{'met' if n_false <= allowed else 'NOT met'}")
        print(f"null pair {null_id}: {n_null} candidates besides injections (goal 0)")
        print(f"counted, not catalogued: {rep.n_vetoed} detections in the bright-star veto, {rep.n_margin} in the "
              f"margins (mask bit 8: {float(((flags & 8) != 0).mean()):.3f} of the pixels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
