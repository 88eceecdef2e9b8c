"""Benchmark: resampling a DESI-like chunk onto a log-λ grid.

Compares, in one run on the same data (ratios are what to read on a shared machine):

- skybatch ``resample`` (flux + ivar + mask, flux-conserving, vectorised over the chunk);
- a bare ``numpy.interp`` loop over spectra (flux only: the cheapest thing one could
  call "resampling"; a second line interpolates flux and ivar);
- specutils' ``FluxConservingResampler`` (timed on a few spectra and scaled, it is slow);
- for information: the whole ``preprocess_block`` (mask + resample + median
  normalisation), and the rest-frame variant (one grid per spectrum).

Run:  python benchmarks/preprocess.py            (2048 spectra × 7781 px)
      python benchmarks/preprocess.py --quick    (256 spectra, a smoke run)
      add --clock wall for wall-clock instead of process CPU time
Goals: skybatch >= 100x specutils and >= 0.5x the bare numpy.interp loop.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def desi_like_chunk(n: int, seed: int = 0):
    """(flux, ivar, mask, wave, z): smooth continua + lines + noise on the DESI brz grid."""
    from skybatch.spectra import DESI_SPECMASK, GridSpec

    rng = np.random.default_rng(seed)
    wave = GridSpec.parse("desi").wavelength()
    x = (wave - wave.mean()) / np.ptp(wave)
    cont = 5 + rng.normal(0, 2, (n, 1)) * x + rng.normal(0, 1, (n, 1)) * x**2
    centres = rng.uniform(3700, 9700, (n, 4))
    sig = rng.uniform(2, 20, (n, 4))
    amp = rng.uniform(1, 20, (n, 4))
    flux = cont.copy()
    for k in range(4):
        flux += amp[:, k : k + 1] * np.exp(-0.5 * ((wave - centres[:, k : k + 1]) / sig[:, k : k + 1]) ** 2)
    sigma = rng.uniform(0.2, 1.0, (n, 1)) * (1 + 0.5 * np.abs(x))
    flux = (flux + rng.normal(size=flux.shape) * sigma).astype(np.float32)
    ivar = np.broadcast_to(1 / sigma**2, flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.uint32)
    ivar[:, :3] = 0  # unexposed ends
    ivar[:, -3:] = 0
    cosmic = rng.random(flux.shape) < 0.002
    mask[cosmic] |= np.uint32(1 << DESI_SPECMASK["COSMIC"])
    ivar[cosmic] = 0
    z = rng.uniform(0.0, 1.5, n)
    return flux, ivar, mask, wave, z


CLOCK = time.process_time  # set by --clock


def best_of(fn, repeat: int) -> float:
    """Best of ``repeat`` runs on CLOCK (CPU time of this process by default: every
    contender is single-threaded, and on a shared machine wall time mostly measures
    the neighbours)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="spectra in the chunk (default 2048)")
    ap.add_argument("--grid", default="desi-loglam", help="target grid spec (default desi-loglam, 1e-4 dex)")
    ap.add_argument("--specutils-n", type=int, default=8, help="spectra timed with specutils (scaled up)")
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--quick", action="store_true", help="small smoke run (256 spectra, 2 for specutils)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or wall time")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.quick:
        args.n, args.specutils_n, args.repeat = 256, 2, 2

    from skybatch.spectra import GridSpec, PreprocessRecipe, preprocess_block, resample, resample_plan

    flux, ivar, mask, wave, z = desi_like_chunk(args.n)
    target = GridSpec.parse(args.grid).wavelength()
    n = args.n
    print(f"chunk: {n} spectra x {wave.size} px (DESI brz grid) -> {target.size} px ({args.grid})")
    load = os.getloadavg()[0]
    print(f"clock: {args.clock} time, best of {args.repeat}; load average {load:.1f} on {os.cpu_count()} cores")

    t0 = CLOCK()
    resample_plan(wave, target, dtype=np.float32)
    t_plan = CLOCK() - t0

    def run_skybatch():
        resample(flux, ivar, mask, wave, target)

    def run_interp():
        out = np.empty((n, target.size), np.float32)
        for i in range(n):
            out[i] = np.interp(target, wave, flux[i])

    def run_interp2():
        out = np.empty((n, target.size), np.float32)
        out2 = np.empty((n, target.size), np.float32)
        for i in range(n):
            out[i] = np.interp(target, wave, flux[i])
            out2[i] = np.interp(target, wave, ivar[i])

    # Interleave the contenders so that load changes hit them alike.
    times = {"skybatch": [], "interp": [], "interp2": []}
    for _ in range(args.repeat):
        times["skybatch"].append(best_of(run_skybatch, 1))
        times["interp"].append(best_of(run_interp, 1))
        times["interp2"].append(best_of(run_interp2, 1))
    t_sky, t_interp, t_interp2 = (min(times[k]) for k in ("skybatch", "interp", "interp2"))

    import astropy.units as u
    from astropy.nddata import InverseVariance
    from specutils import Spectrum
    from specutils.manipulation import FluxConservingResampler

    k = max(1, min(args.specutils_n, n))
    fcr = FluxConservingResampler(extrapolation_treatment="zero_fill")
    grid_q = target * u.AA

    def run_specutils():
        warnings.simplefilter("ignore", RuntimeWarning)  # astropy: 1/ivar at ivar = 0
        for i in range(k):
            spec = Spectrum(
                flux=flux[i].astype(np.float64) * u.Unit("1e-17 erg / (s cm2 Angstrom)"),
                spectral_axis=wave * u.AA,
                uncertainty=InverseVariance(ivar[i].astype(np.float64)),
            )
            fcr(spec, grid_q)

    t_spec = best_of(run_specutils, 1 if k > 2 else args.repeat) * n / k

    recipe = PreprocessRecipe(grid=args.grid, normalize="median")
    t_block = best_of(lambda: preprocess_block(flux, ivar, mask, wave, None, None, recipe), args.repeat)
    rest = PreprocessRecipe(grid="loglam:3.2:3.99:1e-4", rest_frame=True, normalize="median")
    zwarn = np.zeros(n, np.int64)
    t_rest = best_of(lambda: preprocess_block(flux, ivar, mask, wave, z, zwarn, rest), max(1, args.repeat - 1))

    def line(name, t, note=""):
        print(f"  {name:46s} {t:8.3f} s  {n / t:12,.0f} spectra/s  {note}")

    print(f"plan (once per grid pair, cached): {t_plan * 1e3:.1f} ms")
    line("skybatch resample (flux+ivar+mask)", t_sky)
    line("numpy.interp loop (flux only)", t_interp)
    line("numpy.interp loop (flux and ivar)", t_interp2)
    line(f"specutils FluxConservingResampler (x{n // k} from {k})", t_spec)
    line("skybatch preprocess_block (mask+resample+median)", t_block)
    line("skybatch preprocess_block, rest frame (per-spectrum)", t_rest, "grid loglam:3.2:3.99:1e-4")
    r_spec = t_spec / t_sky
    r_interp = t_interp / t_sky
    print("ratios (skybatch resample speed / baseline speed):")
    print(f"  vs specutils:                 {r_spec:10.1f}x   (goal >= 100x: {'met' if r_spec >= 100 else 'NOT met'})")
    met = "met" if r_interp >= 0.5 else "NOT met"
    print(f"  vs numpy.interp (flux only):  {r_interp:10.2f}x   (goal >= 0.5x: {met})")
    print(f"  vs numpy.interp (flux+ivar):  {t_interp2 / t_sky:10.2f}x")


if __name__ == "__main__":
    main()
