"""Ingest benchmark: skybatch ingest vs a bare FITS read of the same files, and memory vs data size.

Prints, all measured in this run:
- spectra/s and MB/s of ``skybatch.ingest`` (one worker process, one thread) and of a bare
  astropy read of the same files' FIBERMAP + B/R/Z FLUX/IVAR/MASK into memory, and their ratio;
- the worker's peak RSS growth while ingesting N files and 10 x N files (ratio should be near 1:
  memory stays at a few chunks whatever the number of files).

The larger set reuses the generated files under new names (symlinks), so the disk cost stays small.

    python benchmarks/ingest.py [--quick] [--files N] [--spectra-per-file M] [--chunk-spectra C]
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


def bare_read(files: list[str]) -> tuple[int, int, float]:
    """Read FIBERMAP and the b/r/z flux, ivar, mask images of each file fully; (spectra, bytes, seconds)."""
    from astropy.io import fits

    t0 = time.perf_counter()
    n = nbytes = 0
    for f in files:
        with fits.open(f, memmap=False) as hdul:
            n += len(hdul["FIBERMAP"].data)
            for arm in "BRZ":
                for kind in ("FLUX", "IVAR", "MASK"):
                    a = hdul[f"{arm}_{kind}"].data.astype(hdul[f"{arm}_{kind}"].data.dtype.newbyteorder("="))
                    nbytes += a.nbytes
    return n, nbytes, time.perf_counter() - t0


def run_ingest(files: list[str], store: str, chunk: int) -> dict:
    from distributed import Client, LocalCluster

    import skybatch

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="8GiB") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("skybatch.pipeline.ingest"))  # imports are not what we time
        rss0 = list(client.run(_worker_rss_mb).values())[0]
        t0 = time.perf_counter()
        rep = skybatch.ingest(files, store, chunk_spectra=chunk, client=client, progress=False,
                              dedupe_files=False)  # the large set reuses files under new names on purpose
        dt = time.perf_counter() - t0
        peak = list(client.run(_worker_peak_rss_mb).values())[0]
    assert rep.exit_code == 0, rep.summary()
    return {"n": rep.n_spectra, "seconds": dt, "rss0": rss0, "peak": peak, "growth": peak - rss0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--files", type=int, default=None, help="files in the small set (the large set has 10x)")
    p.add_argument("--spectra-per-file", type=int, default=None)
    p.add_argument("--chunk-spectra", type=int, default=256)
    a = p.parse_args(argv)
    n_files = a.files or (2 if a.quick else 4)
    per_file = a.spectra_per_file or (60 if a.quick else 250)

    from skybatch.sample.survey import generate_sample_survey

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-ingest-")
    try:
        base = os.path.join(tmp, "base")
        generate_sample_survey(base, n_healpix=min(n_files, 4), spectra_per_file=per_file, n_sdss=1, seed=0)
        small, large = make_sets(base, os.path.join(tmp, "sets"), n_files, 10)

        bare_read(small[:1])  # warm the page cache and astropy
        n_b, bytes_b, t_b = bare_read(small)
        small_run = run_ingest(small, os.path.join(tmp, "small.zarr"), a.chunk_spectra)
        large_run = run_ingest(large, os.path.join(tmp, "large.zarr"), a.chunk_spectra)
        n_bl, bytes_bl, t_bl = bare_read(large)

        mb = bytes_b / 2**20
        print(f"ingest benchmark: {n_files} and {10 * n_files} DESI coadd files x {per_file} spectra, "
              f"chunk {a.chunk_spectra}, 1 worker process x 1 thread")
        print(f"{'':28s}{'spectra/s':>12s}{'MB/s':>10s}{'ratio':>8s}")
        for label, n, t, bts in (
            ("bare FITS read (small)", n_b, t_b, bytes_b),
            ("skybatch ingest (small)", small_run["n"], small_run["seconds"], bytes_b),
            ("bare FITS read (large)", n_bl, t_bl, bytes_bl),
            ("skybatch ingest (large)", large_run["n"], large_run["seconds"], bytes_bl),
        ):
            base_rate = (n_b / t_b) if "small" in label else (n_bl / t_bl)
            print(f"{label:28s}{n / t:12.0f}{bts / 2**20 / t:10.1f}{(n / t) / base_rate:8.2f}")
        print(f"(MB = flux+ivar+mask bytes of the b/r/z arms read from FITS: {mb:.0f} MB in the small set)")
        print(f"worker peak RSS growth: small {small_run['growth']:.0f} MB ({small_run['n']} spectra), "
              f"large {large_run['growth']:.0f} MB ({large_run['n']} spectra); "
              f"ratio large/small = {large_run['growth'] / max(small_run['growth'], 1.0):.2f} "
              f"for {large_run['n'] / small_run['n']:.0f}x the data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
