"""Tile ingest benchmark: skybatch tile ingest vs a bare read of the same files, in the same run.

Prints tiles/s and MB/s (pixel bytes: image + noise [+ mask]) of
- a bare read: ``np.load`` of every ``.npz`` (image, rms, wcs), and astropy ``fits.open`` of every
  calexp-like FITS file (IMAGE, MASK, VARIANCE converted to native byte order);
- ``skybatch.pipeline.tile_ingest.ingest_tiles`` of the same files on one worker process with one
  thread (planning included, cluster start and imports excluded), into a local Zarr store;
and their ratio (ingest / bare read), plus the time of a re-run that has nothing to do.

The npz set is Rubin + Euclid (ten bands, two files per tile); the FITS set is Rubin only (one
file per tile and band, so 6 files per tile).

    python benchmarks/tile_ingest.py [--quick] [--tiles N] [--size PX] [--chunk-tiles C]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")


def write_fits_set(tiles, out: str) -> list[str]:
    """One calexp-like FITS file (IMAGE + MASK + VARIANCE, big-endian) per Rubin tile and present band."""
    import numpy as np
    from astropy.io import fits

    os.makedirs(out, exist_ok=True)
    paths = []
    for t, tid in enumerate(tiles.tile_id):
        for b, key in enumerate(tiles.bands):
            if not key.startswith("rubin_") or not tiles.band_present[t, b]:
                continue
            ph = fits.PrimaryHDU()
            ph.header["INSTRUME"] = "LSSTCam"
            ph.header["FILTER"] = tiles.filters[b]
            img = fits.ImageHDU(tiles.image[t, b].astype(">f4"), name="IMAGE")
            img.header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": float(tiles.center_radec[t, 0]),
                               "CRVAL2": float(tiles.center_radec[t, 1]), "CRPIX1": 1.0, "CRPIX2": 1.0,
                               "CDELT1": -5.5e-5, "CDELT2": 5.5e-5, "BUNIT": "nJy"})
            msk = fits.ImageHDU(np.zeros(tiles.image.shape[-2:], ">i4"), name="MASK")
            var = fits.ImageHDU((tiles.noise[t, b] ** 2).astype(">f4"), name="VARIANCE")
            path = os.path.join(out, f"{tid}_{tiles.filters[b]}.fits")
            fits.HDUList([ph, img, msk, var]).writeto(path)
            paths.append(path)
    return paths


def bare_npz(paths: list[str]) -> tuple[int, float]:
    """np.load every .npz and touch image, rms and wcs; (pixel bytes, seconds)."""
    import numpy as np

    t0 = time.perf_counter()
    nbytes = 0
    for p in paths:
        with np.load(p) as z:
            nbytes += z["image"].nbytes + z["rms"].nbytes
            _ = z["wcs"]
    return nbytes, time.perf_counter() - t0


def bare_fits(paths: list[str]) -> tuple[int, float]:
    """astropy-read IMAGE, MASK, VARIANCE of every FITS file into native arrays; (pixel bytes, seconds)."""
    from astropy.io import fits

    t0 = time.perf_counter()
    nbytes = 0
    for p in paths:
        with fits.open(p, memmap=False) as hdul:
            for name in ("IMAGE", "MASK", "VARIANCE"):
                a = hdul[name].data
                nbytes += a.astype(a.dtype.newbyteorder("=")).nbytes
    return nbytes, time.perf_counter() - t0


def run_ingest(client, sources: list[str], store: str, chunk: int) -> tuple[float, float, object]:
    from skybatch.pipeline.tile_ingest import ingest_tiles

    t0 = time.perf_counter()
    rep = ingest_tiles(sources, store, chunk_tiles=chunk, client=client, progress=False)
    dt = time.perf_counter() - t0
    assert rep.exit_code == 0, rep.summary()
    t1 = time.perf_counter()
    again = ingest_tiles(sources, store, chunk_tiles=chunk, client=client, progress=False)
    assert again.chunks_written == 0
    return dt, time.perf_counter() - t1, rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--tiles", type=int, default=None, help="number of tiles (default 48; 12 with --quick)")
    p.add_argument("--size", type=int, default=None, help="tile side in pixels (default 192; 64 with --quick)")
    p.add_argument("--chunk-tiles", type=int, default=4)
    a = p.parse_args(argv)
    n_tiles = a.tiles or (12 if a.quick else 48)
    size = a.size or (64 if a.quick else 192)

    from distributed import Client, LocalCluster

    from skybatch.sample.tiles import make_multiband_tiles, write_npz_tiles

    tmp = tempfile.mkdtemp(prefix="skybatch-bench-tiles-")
    try:
        tiles = make_multiband_tiles(n_tiles=n_tiles, size=size, seed=0, keep_truth=False)
        npz_dir = os.path.join(tmp, "npz")
        write_npz_tiles(tiles, npz_dir)
        npz_files = sorted(glob.glob(os.path.join(npz_dir, "**", "*.npz"), recursive=True))
        fits_files = write_fits_set(tiles, os.path.join(tmp, "fits"))

        bare_npz(npz_files[:2])  # warm the page cache and imports
        bare_fits(fits_files[:2])
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", memory_limit="4GiB") as cluster, Client(cluster) as client:
            client.run(lambda: __import__("skybatch.pipeline.tile_ingest"))  # imports are not what we time
            client.run(lambda: __import__("astropy.wcs"))
            rows = []
            for label, files, bare in (("npz", npz_files, bare_npz), ("FITS", fits_files, bare_fits)):
                nbytes, t_bare = bare(files)
                t_ing, t_again, rep = run_ingest(client, files, os.path.join(tmp, f"{label}.zarr"), a.chunk_tiles)
                nb2, t_bare2 = bare(files)  # bare read again after the ingest: the noisy machine gets two chances
                t_bare = min(t_bare, t_bare2)
                rows.append((label, len(files), nbytes, t_bare, t_ing, t_again, rep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"tile ingest benchmark: {n_tiles} tiles of {size}x{size} px, chunk {a.chunk_tiles} tiles, "
          "1 worker process x 1 thread")
    print(f"{'':30s}{'tiles/s':>10s}{'MB/s':>10s}{'ratio':>8s}")
    for label, n_files, nbytes, t_bare, t_ing, t_again, rep in rows:
        mb = nbytes / 2**20
        name = f"bare read ({label}, {n_files} files)"
        print(f"{name:30s}{n_tiles / t_bare:10.1f}{mb / t_bare:10.1f}{1.0:8.2f}")
        print(f"{'skybatch ingest (' + label + ')':30s}{n_tiles / t_ing:10.1f}{mb / t_ing:10.1f}{t_bare / t_ing:8.3f}")
        print(f"{'  re-run, nothing to do':30s}{'':10s}{'':10s}{'':8s}  {t_again:.2f} s "
              f"({rep.chunks_total} chunks, {rep.planes_written} planes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
