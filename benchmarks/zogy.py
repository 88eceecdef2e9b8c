"""ZOGY speed and memory against the FFT floor measured in the same run.

For each image size the "FFT floor" is the minimal set of full-size real FFTs any
ZOGY with source-noise variance needs: rfft2 of N, R, V_N, V_R and irfft2 of D,
S, V(S) (4 forward + 3 inverse), timed with the same FFT backend and thread count
skybatch uses. Each variant is timed right after a floor measurement and the
median of the per-repeat ratios is reported, so load from other processes on this
shared machine cancels to first order; "best" is min(variant) / min(floor) over the
repeats (the least disturbed runs of each).

Variants (all cold: a new ZogyPlan per call, as for a new pair with its own PSFs):
  zogy/bkg-noise      true PSFs, scalar sigmas (V(S) constant: 5 FFTs + PSF spectra)
  zogy/+source-noise  + gains (V_N = sigma^2 + N/gain, eqs. 26-27)
  zogy/+astrometric   + astrometric_sigma (eqs. 30-31)
  zogy/var-maps       new_var/ref_var maps given (2 more forward FFTs)
  zogy/warm-plan      +source-noise with a reused plan (same PSFs, e.g. sub-tiles)
  pair/estimated      difference_pair: background, PSF estimation from stars,
                      flux-ratio fit, ZOGY with source noise
Memory: peak growth over the inputs during one call, by tracemalloc (NumPy
allocations) and by RSS sampling (every 2 ms).

Whole CLI: the same pair written as plain FITS (primary HDU, WCS, GAIN/SATURATE
keywords, no noise map: the noise is estimated from the images), then
``skybatch run difference`` in a fresh process (Prefect flow, local Dask cluster,
catalogue, cutouts, PNG) timed against the FFT floor and against pair/estimated
in this process, with the pipeline's own time (report seconds: plan excluded).

Usage:  python benchmarks/zogy.py [--quick] [--repeats N] [--workers W] [--no-cli]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np

from skybatch.imaging import ZogyPlan, _fft, difference_pair, zogy
from skybatch.sample.imaging import make_image_pair

GOAL_RATIO = 2.5
GOAL_MEM_MB = 512.0


def fft_floor(N: np.ndarray, R: np.ndarray, workers: int | None) -> float:
    t0 = time.perf_counter()
    a = _fft.rfft2(np, N, workers)
    b = _fft.rfft2(np, R, workers)
    c = _fft.rfft2(np, N, workers)
    d = _fft.rfft2(np, R, workers)
    _fft.irfft2(np, a, N.shape, workers, overwrite=True)
    _fft.irfft2(np, b, N.shape, workers, overwrite=True)
    _fft.irfft2(np, c, N.shape, workers, overwrite=True)
    del d
    return time.perf_counter() - t0


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_growth(fn) -> tuple[float, float]:
    """(tracemalloc peak MB, RSS peak growth MB) while ``fn()`` runs."""
    import gc

    gc.collect()
    base_rss = _rss_mb()
    peak = [base_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    th.start()
    try:
        out = fn()
        del out
    finally:
        stop.set()
        th.join()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return traced_peak / 2**20, peak[0] - base_rss


def cli_timing(p, floor_s: float, pair_s: float) -> None:
    """Write the pair as plain FITS and time ``skybatch run difference`` on it in a fresh process."""
    import re
    import subprocess
    import tempfile

    from skybatch.sample.images import write_plain_fits

    with tempfile.TemporaryDirectory(prefix="skybatch-zogy-cli-") as tmp:
        for side, img, wcs, gain in (("sci", p.new, p.new_wcs, p.new_gain), ("ref", p.ref, p.ref_wcs, p.ref_gain)):
            os.makedirs(os.path.join(tmp, side))
            write_plain_fits(os.path.join(tmp, side, "field_r.fits"), img, wcs, "r", GAIN=gain, SATURATE=p.saturation)
        exe = os.path.join(os.path.dirname(sys.executable), "skybatch")
        cmd = [exe, "run", "difference", "--science", os.path.join(tmp, "sci"), "--reference", os.path.join(tmp, "ref"),
               "--out", os.path.join(tmp, "out.zarr"), "--cluster", "local", "--no-progress"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        t = time.perf_counter() - t0
        m = re.search(r"candidates: (\d+)", res.stdout)
        tp = re.search(r"time: ([0-9.]+) s", res.stdout)
        inner = float(tp.group(1)) if tp else float("nan")

        def phase(name: str) -> float:
            g = re.search(name + r" ([0-9.]+) s", res.stdout)
            return float(g.group(1)) if g else float("nan")

        t_pairs, t_cat, t_plan = phase("pairs"), phase("catalogue"), phase("planning")
        t1 = time.perf_counter()
        subprocess.run([exe, "--help"], capture_output=True, text=True)
        t_start = time.perf_counter() - t1
        print(f"  whole CLI (plain FITS, noise from the images; fresh process, Prefect + local Dask): {t:.1f} s = "
              f"{t / floor_s:.0f}x FFT floor = {t / pair_s:.1f}x pair/estimated; exit code {res.returncode}, "
              f"{m.group(1) if m else '?'} candidates")
        print(f"    of which differencing + catalogue (report time): {inner:.1f} s = {inner / floor_s:.0f}x FFT floor = "
              f"{inner / pair_s:.1f}x pair/estimated (the rest: Prefect, cluster start, planning)")
        rest = t - inner - t_plan - t_start
        print(f"    where the time goes: process start + CLI imports {t_start:.1f} s (skybatch --help), planning "
              f"{t_plan:.1f} s, pairs {t_pairs:.1f} s, catalogue/cutouts/PNG {t_cat:.1f} s, and {rest:.1f} s of "
              "Prefect flow/task engine + local Dask cluster start/stop")
        if res.returncode not in (0, 3):
            print(res.stderr[-2000:])


def _variants(p, N, R, w: int) -> dict:
    """The timed calls on one image pair, each bound to this pair (not to the loop's variables)."""
    base = dict(new_sigma=p.new_sigma, ref_sigma=p.ref_sigma, flux_ratio=p.flux_ratio, fft_workers=w)
    gains = dict(new_gain=p.new_gain, ref_gain=p.ref_gain)
    warm_plan = ZogyPlan(N.shape, p.new_psf, p.ref_psf, workers=w)
    return {
        "zogy/bkg-noise": lambda: zogy(N, R, p.new_psf, p.ref_psf, **base),
        "zogy/+source-noise": lambda: zogy(N, R, p.new_psf, p.ref_psf, **base, **gains),
        "zogy/+astrometric": lambda: zogy(N, R, p.new_psf, p.ref_psf, **base, **gains,
                                          astrometric_sigma=(0.05, 0.05)),
        "zogy/var-maps": lambda: zogy(N, R, p.new_psf, p.ref_psf, **base, new_var=p.new_var,
                                      ref_var=p.ref_var),
        "zogy/warm-plan": lambda: zogy(N, R, None, None, **base, **gains, plan=warm_plan),
        "pair/estimated": lambda: difference_pair(
            p.new, p.ref, new_gain=p.new_gain, ref_gain=p.ref_gain, new_saturation=p.saturation,
            ref_saturation=p.saturation, fft_workers=w),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024^2 only, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5, quick 3)")
    ap.add_argument("--workers", type=int, default=1, help="scipy.fft threads (default 1, as under Dask)")
    ap.add_argument("--no-cli", dest="cli", action="store_false", help="skip timing the whole CLI on the largest pair")
    args = ap.parse_args(argv)
    sizes = [1024] if args.quick else [1024, 2048]
    repeats = args.repeats or (3 if args.quick else 5)
    w = args.workers
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"skybatch ZOGY benchmark  (fft workers={w}, repeats={repeats}, load avg {load:.1f}, "
          f"{os.cpu_count()} cpus)")
    warnings.simplefilter("ignore")
    make_image_pair((64, 64), seed=0, n_stars=5)  # imports (astropy.wcs) outside the timing
    ok = True
    for n in sizes:
        scale = (n / 1024) ** 2
        t0 = time.perf_counter()
        p = make_image_pair((n, n), seed=1, n_stars=int(1200 * scale), n_transients=int(50 * scale),
                            transient_snr=(5, 40))
        t_gen = time.perf_counter() - t0
        N, R = p.new_subtracted(), p.ref_subtracted()
        variants = _variants(p, N, R, w)
        # warm-up (imports, pocketfft twiddle caches)
        fft_floor(N, R, w)
        variants["zogy/+source-noise"]()
        variants["pair/estimated"]()
        floors = []
        print(f"\n{n}x{n}: pair generated in {t_gen:.2f} s ({len(p.stars['x'])} stars, "
              f"{len(p.transients['x'])} transients)")
        print(f"  {'variant':22s} {'median s':>8s} {'x floor':>8s} {'best s':>8s} {'x floor':>8s}")
        results = {}
        for name, fn in variants.items():
            ratios, times = [], []
            for _ in range(repeats):
                fl = fft_floor(N, R, w)
                floors.append(fl)
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
                times.append(t)
                ratios.append(t / fl)
            results[name] = (statistics.median(times), statistics.median(ratios), min(times))
        fl_med, fl_min = statistics.median(floors), min(floors)
        print(f"  {'FFT floor (4r + 3i)':22s} {fl_med:8.3f} {1.0:8.2f} {fl_min:8.3f} {1.0:8.2f}")
        for name, (t, r, tb) in results.items():
            flag = ""
            if n == 2048 and name.startswith("zogy/") and name != "zogy/warm-plan":
                flag = "  ok" if r <= GOAL_RATIO else f"  ABOVE GOAL {GOAL_RATIO}x"
                ok &= r <= GOAL_RATIO
            print(f"  {name:22s} {t:8.3f} {r:8.2f} {tb:8.3f} {tb / fl_min:8.2f}{flag}")
        print("  memory growth during one call (inputs excluded):")
        for name in ("zogy/+source-noise", "zogy/+astrometric", "pair/estimated"):
            traced, rss = memory_growth(variants[name])
            flag = ""
            if n == 2048 and name.startswith("zogy/"):
                flag = "  ok" if max(traced, rss) < GOAL_MEM_MB else f"  ABOVE GOAL {GOAL_MEM_MB:.0f} MB"
                ok &= max(traced, rss) < GOAL_MEM_MB
            print(f"  {name:22s} tracemalloc peak {traced:7.1f} MB   RSS peak growth {rss:7.1f} MB{flag}")
        print(f"  (one float32 image is {N.nbytes / 2**20:.0f} MB)")
        if args.cli and n == sizes[-1]:
            cli_timing(p, fl_med, results["pair/estimated"][0])
        if n == 1024:
            try:
                import properimage  # noqa: F401  (optional comparison; never installed by us)
            except ImportError:
                print("  properimage: not importable, comparison skipped")
            else:  # pragma: no cover - optional
                from properimage.operations import subtract

                t0 = time.perf_counter()
                subtract(N, R, smooth_psf=False, fitted_psf=True, iterative=False, beta=False, shift=False)
                print(f"  properimage subtract: {time.perf_counter() - t0:.2f} s")
    verdict = "met" if ok else "NOT met" if 2048 in sizes else "n/a (--quick)"
    print(f"\ngoals (2048^2, cold zogy variants): <= {GOAL_RATIO:.1f}x FFT floor, < {GOAL_MEM_MB:.0f} MB growth: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
