"""Cost of the job core's safety checks, as ratios against the same ingest without them (same run).

Prints, all measured in this run on one threads-only worker:
- ingest with FITS CHECKSUM/DATASUM verification (reads every file once more at planning) vs without;
- the no-op re-run (plan + identity + lock + manifest records checked against the in-store markers)
  vs the first ingest;
- one lock acquire + release on local disk (seconds), and the duplicate-file check on N files of
  equal size (hashing) vs the plan without it.

    python benchmarks/safety.py [--quick] [--files N] [--spectra-per-file M]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


def _ingest(files, store, client, **kw):
    from skybatch.pipeline.ingest import ingest

    t0 = time.perf_counter()
    rep = ingest(files, store, chunk_spectra=256, client=client, progress=False, **kw)
    assert rep.exit_code == 0, rep.summary()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--files", type=int, default=None)
    p.add_argument("--spectra-per-file", type=int, default=None)
    a = p.parse_args(argv)
    n_files = a.files or (2 if a.quick else 4)
    per_file = a.spectra_per_file or (40 if a.quick else 200)

    import glob

    from distributed import Client, LocalCluster

    from skybatch.sample.survey import generate_sample_survey
    from skybatch.store.lock import StoreLock

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-safety-")
    try:
        generate_sample_survey(os.path.join(tmp, "d"), n_healpix=n_files, spectra_per_file=per_file, n_sdss=0, seed=0)
        files = sorted(glob.glob(os.path.join(tmp, "d", "desi", "**", "coadd-*.fits"), recursive=True))
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
                Client(cl) as client:
            _ingest(files[:1], os.path.join(tmp, "warm.zarr"), client)  # imports and caches are not timed
            t_off = _ingest(files, os.path.join(tmp, "off.zarr"), client, verify_checksums=False, dedupe_files=False)
            t_on = _ingest(files, os.path.join(tmp, "on.zarr"), client)
            t_again = _ingest(files, os.path.join(tmp, "on.zarr"), client)
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            with StoreLock(os.path.join(tmp, "lock.zarr"), job="bench"):
                pass
        t_lock = (time.perf_counter() - t0) / n
        mb = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"safety benchmark: {len(files)} DESI coadds x {per_file} spectra ({mb:.0f} MB), 1 thread")
        print(f"{'':48s}{'seconds':>9s}{'ratio':>8s}")
        print(f"{'ingest, no checksum / duplicate checks (baseline)':48s}{t_off:9.2f}{1.0:8.2f}")
        print(f"{'ingest with all checks':48s}{t_on:9.2f}{t_on / t_off:8.2f}")
        print(f"{'re-run of a finished ingest (nothing to do)':48s}{t_again:9.2f}{t_again / t_off:8.2f}")
        print(f"lock acquire + release on local disk: {t_lock * 1e3:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
