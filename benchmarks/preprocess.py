"""Benchmark: resampling a DESI-like chunk onto a log-λ grid.

Compares, in one run on the same data (ratios are what to read on a shared machine):

- skybatch ``resample`` (flux + ivar + mask, flux-conserving, vectorised over the chunk);
- a bare ``numpy.interp`` loop over spectra (flux only: the cheapest thing one could
  call "resampling"; a second line interpolates flux and ivar);
- specutils' ``FluxConservingResampler`` (timed on a few spectra and scaled, it is slow);
- for information: the whole ``preprocess_block`` (mask + resample + median
  normalisation), and the rest-frame variant (one grid per spectrum).

Then the whole job over a store (issue 17 item 3), against its honest limit measured in the same run:

- ``skybatch preprocess`` of a store of ``--store-n`` DESI-like spectra (one Dask worker, one thread);
- the plain loop: for each store chunk, read flux/ivar/mask/z/zwarn with Zarr, the same arithmetic
  (``preprocess_block``), write the results and the per-spectrum columns to a store with the same codec
  and chunks (no Dask, no job bookkeeping). The ratio skybatch / plain loop is what the job's machinery
  costs; ``--profile`` splits the plain loop into read / compute / write and profiles one skybatch run
  in this process.

Run:  python benchmarks/preprocess.py            (2048 spectra × 7781 px; store of 8192 spectra)
      python benchmarks/preprocess.py --quick    (256 spectra, a smoke run; store of 2048)
      add --clock wall for wall-clock instead of process CPU time (the store part is always wall time)
Goals: skybatch >= 100x specutils and >= 0.5x the bare numpy.interp loop; the store job close to its
plain loop.
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


def make_store(path: str, n: int, chunk: int) -> None:
    """A spectra store of ``n`` DESI-like spectra (chunks of ``chunk``) with z, zwarn and ids."""
    from skybatch.sources.base import Grid
    from skybatch.store.spectra_store import (
        consolidate,
        create_spectra_store,
        resize_spectra_store,
        write_rows,
    )

    flux, ivar, mask, wave, z = desi_like_chunk(chunk, seed=1)
    g = create_spectra_store(path, Grid("linear", float(wave[0]), float(wave[1] - wave[0]), wave.size, "desi-brz"),
                             chunk, {"skybatch_version": "bench", "formats": ["bench"], "manifest": "",
                                     "provenance": {}})
    resize_spectra_store(g, n)
    rng = np.random.default_rng(2)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        m = b - a
        roll = int(rng.integers(0, chunk))
        write_rows(g, a, {"flux": np.roll(flux, roll, axis=0)[:m], "ivar": np.roll(ivar, roll, axis=0)[:m],
                          "mask": np.roll(mask, roll, axis=0)[:m], "z": np.roll(z, roll)[:m],
                          "zwarn": np.zeros(m, np.int64), "targetid": np.arange(a, b, dtype=np.int64),
                          "healpix": rng.integers(0, 64, m).astype(np.int64),
                          "spectype": np.array(["GALAXY"] * m, dtype=object)})
    consolidate(path)


def plain_loop(store: str, out: str, recipe, timings: dict[str, float] | None = None) -> None:
    """The honest limit: read each chunk, ``preprocess_block``, write the same arrays, nothing else."""
    from skybatch.sources.base import Grid
    from skybatch.spectra import preprocess_block, target_wavelength
    from skybatch.store.spectra_store import (
        create_spectra_store,
        open_group,
        resize_spectra_store,
        write_rows,
    )

    gin = open_group(store, mode="r")
    n, chunk = gin["flux"].shape[0], int(gin.attrs["chunk_spectra"])
    wl = np.asarray(gin["wavelength"][:], np.float64)
    wl_out = np.asarray(target_wavelength(recipe, wl), np.float64)
    columns = dict(gin.attrs["per_spectrum_columns"])
    extra = {"norm_scale": "float64", "preprocess_flags": "int32"}
    gout = create_spectra_store(out, Grid("explicit", float(wl_out[0]), 0.0, wl_out.size, "explicit"), chunk,
                                {"skybatch_version": "bench", "formats": [], "manifest": "", "provenance": {}},
                                extra_columns=extra, wavelength=wl_out)
    resize_spectra_store(gout, n)
    t = timings if timings is not None else {}
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        t0 = time.perf_counter()
        flux = np.asarray(gin["flux"][a:b], np.float32)
        ivar = np.asarray(gin["ivar"][a:b], np.float32)
        mask = np.asarray(gin["mask"][a:b], np.uint32)
        z = np.asarray(gin["z"][a:b], np.float64)
        zwarn = np.asarray(gin["zwarn"][a:b], np.int64)
        cols = {k: np.asarray(gin[k][a:b]) for k in columns if k not in ("z", "zwarn")}
        t1 = time.perf_counter()
        res = preprocess_block(flux, ivar, mask, wl, z, zwarn, recipe)
        t2 = time.perf_counter()
        write_rows(gout, a, {"flux": res.flux, "ivar": res.ivar, "mask": res.mask, "norm_scale": res.scale,
                             "preprocess_flags": res.flags, "z": z, "zwarn": zwarn, **cols})
        t3 = time.perf_counter()
        for k, v in (("read", t1 - t0), ("compute", t2 - t1), ("write", t3 - t2)):
            t[k] = t.get(k, 0.0) + v


def bench_store(n: int, chunk: int, grid: str, repeat: int, profile: bool) -> None:
    """skybatch preprocess of a store against the plain read + compute + write loop (wall time)."""
    import shutil
    import tempfile

    from distributed import Client, LocalCluster

    from skybatch.pipeline.preprocess import (
        PreprocessConfig,
        preprocess,
        run_with_client,
    )
    from skybatch.spectra import PreprocessRecipe

    recipe = PreprocessRecipe(grid=grid, normalize="median")
    tmp = tempfile.mkdtemp(prefix="skybatch-bench-pre-")
    try:
        store = os.path.join(tmp, "in.zarr")
        make_store(store, n, chunk)
        load0 = os.getloadavg()[0]
        t_sky, t_plain, parts, sky_parts = [], [], {}, {}
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cl, Client(cl) as client:
            preprocess(store, os.path.join(tmp, "warm.zarr"), recipe, client=client, progress=False)
            for r in range(repeat):  # interleaved, so that load changes hit both alike
                t0 = time.perf_counter()
                rep = preprocess(store, os.path.join(tmp, f"sky{r}.zarr"), recipe, client=client, progress=False)
                t_sky.append(time.perf_counter() - t0)
                assert rep.exit_code == 0, rep.summary()
                if t_sky[-1] == min(t_sky):
                    sky_parts = dict(rep.timings)
                timings: dict[str, float] = {}
                t0 = time.perf_counter()
                plain_loop(store, os.path.join(tmp, f"plain{r}.zarr"), recipe, timings)
                t_plain.append(time.perf_counter() - t0)
                if t_plain[-1] == min(t_plain):
                    parts = timings
        ts, tp = min(t_sky), min(t_plain)
        print(f"store job: {n} spectra in chunks of {chunk}, grid {grid}, wall time best of {repeat}, one worker "
              f"thread; load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        print(f"  plain loop (read + preprocess_block + write)  {tp:8.2f} s  {n / tp:10,.0f} spectra/s")
        print(f"  skybatch preprocess                           {ts:8.2f} s  {n / ts:10,.0f} spectra/s")
        print(f"  ratio skybatch / plain loop (throughput):     {tp / ts:8.2f}")
        if profile:
            total = sum(parts.values()) or 1.0
            print("  plain loop split:          " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)"
                                                             for k, v in parts.items()))
            total = sum(sky_parts.values()) or 1.0
            print("  skybatch chunk tasks split: " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f} %)"
                                                             for k, v in sky_parts.items())
                  + f"; the rest of its {ts:.2f} s is the job around the tasks")
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            out = os.path.join(tmp, "profile.zarr")
            cfg = PreprocessConfig(store=store, out=out, recipe=recipe, progress=False)
            t0 = time.perf_counter()
            prof.enable()
            run_with_client(cfg, None)  # chunk tasks on local threads: the profile sees the job's own work
            prof.disable()
            t_job = time.perf_counter() - t0
            # ...and then each chunk task once more, serially in this thread (compute, write, marker, record)
            from skybatch.pipeline import preprocess as P
            from skybatch.pipeline.jobcore import Chunk, _run_one

            gin = P.open_group(store, None, mode="r")
            columns = list({**dict(gin.attrs["per_spectrum_columns"]), **P._OUT_COLUMNS})
            t0 = time.perf_counter()
            prof.enable()
            for k, a in enumerate(range(0, n, chunk)):
                task = Chunk(k, a, min(a + chunk, n), "f" * 16)
                _run_one(task, P._preprocess_chunk, out, None, "preprocess",
                         (store, out, None, recipe.to_dict(), columns, "cpu", "profile"), {})
            prof.disable()
            t_tasks = time.perf_counter() - t0
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(18)
            lines = buf.getvalue().splitlines()
            start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
            print(f"  skybatch preprocess in this process: job {t_job:.2f} s (2 local threads), then its chunk "
                  f"tasks serially {t_tasks:.2f} s; cProfile by own time:")
            print("\n".join("    " + line for line in lines[start:] if line.strip()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="spectra in the chunk (default 2048)")
    ap.add_argument("--grid", default="desi-loglam", help="target grid spec (default desi-loglam, 1e-4 dex)")
    ap.add_argument("--specutils-n", type=int, default=8, help="spectra timed with specutils (scaled up)")
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--quick", action="store_true", help="small smoke run (256 spectra, 2 for specutils)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or wall time")
    ap.add_argument("--store-n", type=int, default=None, help="spectra in the store job part (default 8192; 0 skips)")
    ap.add_argument("--chunk", type=int, default=1024, help="store chunk (spectra) of the store job part")
    ap.add_argument("--profile", action="store_true", help="where the store job's time goes")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.quick:
        args.n, args.specutils_n, args.repeat = 256, 2, 2
    store_n = args.store_n if args.store_n is not None else (2048 if args.quick else 8192)

    from skybatch.spectra import (
        GridSpec,
        PreprocessRecipe,
        preprocess_block,
        resample,
        resample_plan,
    )

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
    if store_n:
        bench_store(store_n, min(args.chunk, store_n), args.grid, args.repeat, args.profile)


if __name__ == "__main__":
    main()
