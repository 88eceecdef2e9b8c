"""Difference pipeline throughput against the bare per-pair science cost measured in the same run.

Baseline ("serial"): in this process, one pair after another, the science a pair task does
with none of the plumbing: load the two ``.npz`` files with NumPy, ``difference_pair`` (noise
maps, PSFs from stars, flux-ratio fit, ZOGY), ``detect_candidates`` and ``cutout_triplets``.

Measured:
  pipeline/whole     ``difference()`` on a LocalCluster (W process workers x 1 thread, warmed
                     up on one pair first): plan (inspect headers on the cluster), one task per
                     pair (read through skybatch.sources.tiles, masks, Zarr writes, staged parts,
                     manifest record), catalogue, cutouts, PNG.
  pipeline/subtiles  the same with ``subtile = size / 2`` (4 sub-tiles + prepare + stitch per pair).
  rerun              the same command again (everything already done: plan + skip).
Figures: seconds per pair, and ``ratio = wall / (serial / W)``, the pipeline's wall time over
the ideal parallel time of the baseline (1.0 = no overhead; the shared machine adds noise, so
read ratios, not seconds).

Usage:  python benchmarks/difference_pipeline.py [--quick] [--pairs N] [--size PX] [--workers W]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

SATURATION = 60000.0  # make_image_pair's default clipping level


def write_pairs(root: str, n: int, size: int) -> None:
    from skybatch.sample.imaging import make_image_pair

    for side in ("sci", "ref"):
        os.makedirs(os.path.join(root, side), exist_ok=True)
    for i in range(n):
        p = make_image_pair((size, size), seed=100 + i, n_stars=int(250 * (size / 384) ** 2), n_transients=10,
                            transient_snr=(8.0, 40.0), shift=(0.3, -0.2) if i % 2 else (0.0, 0.0))
        for side, img, var, wcs in (("sci", p.new, p.new_var, p.new_wcs), ("ref", p.ref, p.ref_var, p.ref_wcs)):
            np.savez(os.path.join(root, side, f"tile_{i:04d}.npz"), image=img, variance=var, band=np.array(["r"]),
                     instrument=np.array("rubin"), tile_id=np.array(f"tile_{i:04d}"),
                     wcs=np.array([wcs.to_header().tostring(endcard=False, padding=False)]))


def serial_baseline(root: str, n: int) -> float:
    from astropy.io import fits
    from astropy.wcs import WCS

    from skybatch.imaging import align_to_grid, cutout_triplets, detect_candidates, difference_pair

    t0 = time.perf_counter()
    for i in range(n):
        s = np.load(os.path.join(root, "sci", f"tile_{i:04d}.npz"))
        r = np.load(os.path.join(root, "ref", f"tile_{i:04d}.npz"))
        sw, rw = (WCS(fits.Header.fromstring(str(f["wcs"][0]))) for f in (s, r))
        ref_noise = np.sqrt(align_to_grid(r["variance"], rw, sw, s["image"].shape).image)
        ref_noise = np.where(np.isfinite(ref_noise), ref_noise, np.nanmedian(ref_noise))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = difference_pair(s["image"], r["image"], new_sigma=np.sqrt(s["variance"]), ref_sigma=ref_noise,
                                  new_wcs=sw, ref_wcs=rw, new_saturation=SATURATION, ref_saturation=SATURATION,
                                  fft_workers=1)
        det = detect_candidates(out.zogy, 5.0, mask=out.bad, saturated=out.saturated, wcs=sw)
        cutout_triplets(out.new, out.ref, out.zogy.D, det.x.to_numpy(), det.y.to_numpy(), 31)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 pairs of 384^2")
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    n = a.pairs or (4 if a.quick else 8)
    size = a.size or (384 if a.quick else 1024)
    from distributed import Client, LocalCluster

    from skybatch.pipeline.difference import difference

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-diff-")
    try:
        root = os.path.join(tmp, "data")
        write_pairs(root, n, size)
        warm = os.path.join(tmp, "warm")
        write_pairs(warm, 2 * a.workers, 160)  # every worker imports and warms up before timing
        print(f"{n} pairs of {size}^2 px, {a.workers} workers x 1 thread; load average {os.getloadavg()[0]:.1f}")
        serial = serial_baseline(root, n)
        print(f"serial baseline: {serial / n:.2f} s/pair")
        with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", local_directory=tmp) as cluster, Client(cluster) as client:
            difference(f"{warm}/sci", f"{warm}/ref", os.path.join(tmp, "warm.zarr"), client=client, progress=False,
                       saturation=SATURATION)
            ideal = serial / a.workers
            variants = (("pipeline/whole", {}), ("pipeline/subtiles", {"subtile": size // 2, "subtile_overlap": 48}))
            for label, kw in variants:
                out = os.path.join(tmp, label.replace("/", "-") + ".zarr")
                t0 = time.perf_counter()
                rep = difference(f"{root}/sci", f"{root}/ref", out, client=client, progress=False,
                                 saturation=SATURATION, **kw)
                wall = time.perf_counter() - t0
                assert rep.exit_code == 0 and rep.pairs_written == n, rep.summary()
                print(f"{label:18s} {wall / n:6.2f} s/pair  ratio {wall / ideal:5.2f}  ({rep.n_candidates} candidates)")
                if not kw:
                    t0 = time.perf_counter()
                    again = difference(f"{root}/sci", f"{root}/ref", out, client=client, progress=False,
                                       saturation=SATURATION)
                    re_wall = time.perf_counter() - t0
                    assert again.pairs_written == 0
                    print(f"{'rerun (all done)':18s} {re_wall:6.2f} s total  ratio to first run {re_wall / wall:5.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
