"""Ingest benchmark: skybatch ingest against the honest limit, measured in the same run.

Prints, all measured in this run on the same DESI coadd files (page cache warm for all):

- **bare read**: a plain astropy loop reading each file's FIBERMAP and B/R/Z FLUX/IVAR/MASK into
  native NumPy arrays (nothing else);
- **read + combine + write**: the same loop, keeping the science rows, combining the arms onto the
  7781-pixel brz grid with the same arithmetic as skybatch (:func:`skybatch.spectra.camera_coadd.
  coadd_cameras`, NaN cleaning first) and writing flux/ivar/mask + targetid to a Zarr store with the
  same codec, chunks and shards as skybatch's, one write per array per shard;
- **skybatch ingest** on one worker process x one thread, and on two workers x one thread;
- spectra/s, MB/s (FITS bytes of the b/r/z images read) and the ratios to both baselines;
- the worker's peak RSS growth at N files and at 10 x N files (flat: memory holds a few chunks).

``--profile``: timing spans (wall, CPU, page faults per chunk task) of every chunk task of an ingest of
the large set, taken inside its Dask worker (one process x one thread: FITS reads, checksum sums, arm
combination, NaN cleaning, per-spectrum columns, re-inspection, store write with compression, chunk
markers, manifest records), plus the driver's planning / chunk / finishing phases and the Dask
overhead per task (see ``_ingest_profile.py``).

The larger set reuses the generated files under new names (symlinks), so the disk cost stays small.

    python benchmarks/ingest.py [--quick] [--profile] [--files N] [--spectra-per-file M] [--chunk-spectra C]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


def _worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def make_sets(base_dir: str, out: str, n_small: int, factor: int) -> tuple[list[str], list[str]]:
    """Two sets of coadd files (n_small and factor*n_small) made of symlinks to the generated ones."""
    import glob

    coadds = sorted(glob.glob(os.path.join(base_dir, "desi", "**", "coadd-*.fits"), recursive=True))
    sets = []
    for name, n in (("small", n_small), ("large", n_small * factor)):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        files = []
        for i in range(n):
            src = coadds[i % len(coadds)]
            dst = os.path.join(d, f"coadd-main-dark-{10000 + i}.fits")
            os.symlink(src, dst)
            os.symlink(src.replace("coadd-", "redrock-"), dst.replace("coadd-", "redrock-"))
            files.append(dst)
        sets.append(files)
    return sets[0], sets[1]


def _native(a):
    return a.astype(a.dtype.newbyteorder("="))


def bare_read(files: list[str]) -> tuple[int, int, float, float]:
    """Read FIBERMAP and the b/r/z flux, ivar, mask images of each file fully.

    Returns (spectra, bytes, seconds, CPU seconds of this process).
    """
    from astropy.io import fits

    c0 = time.process_time()
    t0 = time.perf_counter()
    n = nbytes = 0
    for f in files:
        with fits.open(f, memmap=False) as hdul:
            n += len(hdul["FIBERMAP"].data)
            for arm in "BRZ":
                for kind in ("FLUX", "IVAR", "MASK"):
                    a = _native(hdul[f"{arm}_{kind}"].data)
                    nbytes += a.nbytes
    return n, nbytes, time.perf_counter() - t0, time.process_time() - c0


def loop_ingest(files: list[str], store: str, chunk: int) -> tuple[int, float, float]:
    """The per-file loop a DESI script would write: read, combine arms, write Zarr (same codec/layout).

    Returns (spectra written, seconds, CPU seconds of this process: all its threads, zarr's included).
    """
    import numpy as np
    import zarr
    from astropy.io import fits

    from skybatch.sources._common import DESI_BRZ_GRID, clean_nonfinite
    from skybatch.spectra.camera_coadd import coadd_cameras
    from skybatch.store.codecs import PIXEL_CODEC
    from skybatch.store.spectra_store import pixel_layout

    c0 = time.process_time()
    t0 = time.perf_counter()
    nw = DESI_BRZ_GRID.n
    shard, inner = pixel_layout(chunk, nw)
    root = zarr.open_group(store, mode="w-")
    kw = {"chunks": (inner, nw), **({"shards": (shard, nw)} if inner != shard else {})}
    arrs = {
        "flux": root.create_array("flux", shape=(0, nw), dtype="float32", compressors=PIXEL_CODEC, **kw),
        "ivar": root.create_array("ivar", shape=(0, nw), dtype="float32", compressors=PIXEL_CODEC, **kw),
        "mask": root.create_array("mask", shape=(0, nw), dtype="uint32", **kw),
        "targetid": root.create_array("targetid", shape=(0,), chunks=(shard,), dtype="int64"),
    }
    buf: dict[str, list] = {k: [] for k in arrs}
    n_buf = n_done = 0

    def flush(final: bool) -> None:
        nonlocal n_buf, n_done
        while n_buf >= shard or (final and n_buf):
            m = min(shard, n_buf)
            for k, a in arrs.items():
                block = np.concatenate(buf[k])
                a.resize((n_done + m,) + a.shape[1:])
                a[n_done : n_done + m] = block[:m]
                buf[k] = [block[m:]]
            n_done += m
            n_buf -= m

    for f in files:
        with fits.open(f, memmap=False) as hdul:
            fm = hdul["FIBERMAP"].data
            tid = _native(fm["TARGETID"]).astype(np.int64)
            objtype = np.char.strip(fm["OBJTYPE"].astype(str))
            keep = (tid >= 0) & (objtype == "TGT") & (((tid >> 59) & 1) == 0)
            fl, iv, mk, off = [], [], [], []
            for arm in "BRZ":
                w = _native(hdul[f"{arm}_WAVELENGTH"].data)
                f_ = np.ascontiguousarray(_native(hdul[f"{arm}_FLUX"].data)[keep], np.float32)
                i_ = np.ascontiguousarray(_native(hdul[f"{arm}_IVAR"].data)[keep], np.float32)
                m_ = np.ascontiguousarray(_native(hdul[f"{arm}_MASK"].data)[keep]).view(np.uint32)
                clean_nonfinite(f_, i_, m_, 8)
                fl.append(f_)
                iv.append(i_)
                mk.append(m_)
                off.append(int(round((w[0] - DESI_BRZ_GRID.start) / DESI_BRZ_GRID.step)))
        flux, ivar, mask = coadd_cameras(fl, iv, mk, off, nw, nodata_bit=8)
        for k, v in (("flux", flux), ("ivar", ivar), ("mask", mask), ("targetid", tid[keep])):
            buf[k].append(v)
        n_buf += len(flux)
        flush(False)
    flush(True)
    return n_done, time.perf_counter() - t0, time.process_time() - c0


def run_ingest(files: list[str], store: str, chunk: int, workers: int = 1) -> dict:
    from distributed import Client, LocalCluster

    import skybatch

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="8GiB") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("skybatch.pipeline.ingest"))  # imports are not what we time
        skybatch.ingest  # noqa: B018 - nor the driver's lazy import of the entry points
        rss0 = max(client.run(_worker_rss_mb).values())
        w0 = sum(client.run(time.process_time).values())
        c0 = time.process_time()
        t0 = time.perf_counter()
        rep = skybatch.ingest(files, store, chunk_spectra=chunk, client=client, progress=False,
                              dedupe_files=False)  # the large set reuses files under new names on purpose
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0 + sum(client.run(time.process_time).values()) - w0
        peak = max(client.run(_worker_peak_rss_mb).values())
    assert rep.exit_code == 0, rep.summary()
    return {"n": rep.n_spectra, "seconds": dt, "cpu": cpu, "rss0": rss0, "peak": peak, "growth": peak - rss0,
            "execute": rep.seconds}


def profile_run(files: list[str], store: str, chunk: int) -> None:
    """Timing spans of every chunk task of one ingest, taken inside its Dask worker (one process x one thread).

    The worker is a real nanny-started worker (Dask's worker environment included); the driver times
    planning, the chunk phase and the finishing steps around it.
    """
    from distributed import Client, LocalCluster

    import _ingest_profile as spans

    import skybatch
    import skybatch.pipeline.ingest.execute as ex

    driver: dict[str, float] = {}

    def timed(label: str, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                driver[label] = driver.get(label, 0.0) + time.perf_counter() - t0
        return run

    names = {"plan_locked": "plan", "run_chunks": "chunk tasks", "_provenance": "  provenance",
             "consolidate": "  consolidate", "duplicate_targets": "  duplicate targets"}
    saved = {k: getattr(ex, k) for k in names}
    for k, label in names.items():
        setattr(ex, k, timed(label, saved[k]))
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", memory_limit="8GiB") as cluster, Client(cluster) as client:
            client.run(lambda: __import__("skybatch.pipeline.ingest"))
            client.run(spans.install)
            skybatch.ingest  # noqa: B018 - the driver's lazy import of the entry points is not what we time
            t0 = time.perf_counter()
            rep = skybatch.ingest(files, store, chunk_spectra=chunk, client=client, progress=False, dedupe_files=False)
            total = time.perf_counter() - t0
            totals = next(iter(client.run(spans.collect).values()))
    finally:
        for k, fn in saved.items():
            setattr(ex, k, fn)
    assert rep.exit_code == 0, rep.summary()
    finish = {k: driver.pop(k) for k in list(driver) if k.startswith("  ")}
    driver["finish"] = total - driver.get("plan", 0.0) - driver.get("chunk tasks", 0.0)
    driver.update(finish)
    driver["total"] = total
    spans.print_spans(totals, rep.chunks_written, rep.n_spectra, driver)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--profile", action="store_true", help="only profile the chunk tasks of the large set (timing spans in the worker)")
    p.add_argument("--files", type=int, default=None, help="files in the small set (the large set has 10x)")
    p.add_argument("--spectra-per-file", type=int, default=None)
    p.add_argument("--chunk-spectra", type=int, default=256)
    p.add_argument("--no-scaling", action="store_true", help="skip the 2-worker run")
    a = p.parse_args(argv)
    n_files = a.files or (2 if a.quick else 4)
    per_file = a.spectra_per_file or (60 if a.quick else 250)

    from skybatch.sample.survey import generate_sample_survey

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-ingest-")
    try:
        base = os.path.join(tmp, "base")
        generate_sample_survey(base, n_healpix=min(n_files, 4), spectra_per_file=per_file, n_sdss=1, seed=0)
        small, large = make_sets(base, os.path.join(tmp, "sets"), n_files, 10)
        if a.profile:
            profile_run(large, os.path.join(tmp, "profile.zarr"), a.chunk_spectra)
            return 0

        load0 = os.getloadavg()[0]
        bare_read(small[:1])  # warm the page cache and astropy
        n_b, bytes_b, t_b, _ = bare_read(small)
        n_bl, bytes_bl, t_bl, c_bl = bare_read(large)
        n_l, t_l, c_l = loop_ingest(large, os.path.join(tmp, "loop.zarr"), a.chunk_spectra)
        small_run = run_ingest(small, os.path.join(tmp, "small.zarr"), a.chunk_spectra)
        large_run = run_ingest(large, os.path.join(tmp, "large.zarr"), a.chunk_spectra)
        two = None if a.no_scaling else run_ingest(large, os.path.join(tmp, "large2.zarr"), a.chunk_spectra, workers=2)

        print(f"ingest benchmark: {n_files} and {10 * n_files} DESI coadd files x {per_file} spectra, "
              f"chunk {a.chunk_spectra}; load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
              f"on {os.cpu_count()} cores")
        print(f"{'':34s}{'spectra/s':>10s}{'MB/s':>8s}{'/bare':>7s}{'/loop':>7s}")
        bare_rate, loop_rate = n_bl / t_bl, n_l / t_l

        def row(label: str, n: int, t: float, bts: int, loop: bool = True) -> None:
            r = n / t
            print(f"{label:34s}{r:10.0f}{bts / 2**20 / t:8.1f}{r / bare_rate:7.2f}"
                  + (f"{r / loop_rate:7.2f}" if loop else f"{'':>7s}"))

        row("bare read (small)", n_b, t_b, bytes_b, loop=False)
        row("skybatch ingest (small, 1x1)", small_run["n"], small_run["seconds"], bytes_b, loop=False)
        row("bare read (large)", n_bl, t_bl, bytes_bl)
        row("read + combine + write loop (large)", n_l, t_l, bytes_bl)
        row("skybatch ingest (large, 1x1)", large_run["n"], large_run["seconds"], bytes_bl)
        if two is not None:
            row("skybatch ingest (large, 2 workers)", two["n"], two["seconds"], bytes_bl)
            print(f"2 workers / 1 worker: {large_run['seconds'] / two['seconds']:.2f}x end to end "
                  f"({large_run['seconds']:.2f} s / {two['seconds']:.2f} s; goal >= 1.7x); chunk tasks + finishing "
                  f"alone (without planning): {large_run['execute'] / two['execute']:.2f}x "
                  f"({large_run['execute']:.2f} s / {two['execute']:.2f} s)")
        print("(ratios: /bare = to the bare read of the large set, /loop = to the read + combine + write loop; "
              f"MB = b/r/z image bytes read from FITS: {bytes_bl / 2**20:.0f} MB in the large set)")
        print("CPU seconds (all threads of the driver and the workers; less sensitive to a busy machine than wall time):")
        print(f"{'':34s}{'CPU-s':>10s}{'spec/CPU-s':>11s}{'/bare':>7s}{'/loop':>7s}")
        cpu_rows = [("bare read (large)", n_bl, c_bl), ("read + combine + write loop (large)", n_l, c_l),
                    ("skybatch ingest (large, 1x1)", large_run["n"], large_run["cpu"])]
        if two is not None:
            cpu_rows.append(("skybatch ingest (large, 2 workers)", two["n"], two["cpu"]))
        for label, n, c in cpu_rows:
            print(f"{label:34s}{c:10.2f}{n / c:11.0f}{(n / c) / (n_bl / c_bl):7.2f}{(n / c) / (n_l / c_l):7.2f}")
        print(f"worker peak RSS growth: small {small_run['growth']:.0f} MB ({small_run['n']} spectra), "
              f"large {large_run['growth']:.0f} MB ({large_run['n']} spectra); "
              f"ratio large/small = {large_run['growth'] / max(small_run['growth'], 1.0):.2f} "
              f"for {large_run['n'] / small_run['n']:.0f}x the data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
