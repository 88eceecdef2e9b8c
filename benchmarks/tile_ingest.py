"""Tile ingest benchmark: skybatch tile ingest vs a bare read and vs the read + write loop, in the same run.

Prints tiles/s and MB/s (pixel bytes: image + noise [+ mask]) of
- a bare read: ``np.load`` of every ``.npz`` (image, rms, wcs), and astropy ``fits.open`` of every
  calexp-like FITS file (IMAGE, MASK, VARIANCE converted to native byte order);
- the honest limit, a plain loop: the same reads, the same pixel clean-up
  (:func:`skybatch.sources.tiles.planes.clean_plane`; FITS variance -> RMS), and writes of image,
  noise, mask, present and wcs to a Zarr store with the same codecs and chunks (or shards) as
  skybatch's views, one write per array per unit of ``chunk_tiles`` tiles;
- ``skybatch.pipeline.tile_ingest.ingest_tiles`` of the same files on one worker process with one
  thread (planning included, cluster start and imports excluded), into a local Zarr store;
and skybatch's ratios to both (``/bare``, ``/loop``), plus the time of a re-run that has nothing to do.

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


def bare_npz(paths: list[str]) -> tuple[int, float, float]:
    """np.load every .npz and touch image, rms and wcs; (pixel bytes, seconds, CPU seconds)."""
    import numpy as np

    t0, c0 = time.perf_counter(), time.process_time()
    nbytes = 0
    for p in paths:
        with np.load(p) as z:
            nbytes += z["image"].nbytes + z["rms"].nbytes
            _ = z["wcs"]
    return nbytes, time.perf_counter() - t0, time.process_time() - c0


def bare_fits(paths: list[str]) -> tuple[int, float, float]:
    """astropy-read IMAGE, MASK, VARIANCE of every FITS file into native arrays; (pixel bytes, seconds, CPU seconds)."""
    from astropy.io import fits

    t0, c0 = time.perf_counter(), time.process_time()
    nbytes = 0
    for p in paths:
        with fits.open(p, memmap=False) as hdul:
            for name in ("IMAGE", "MASK", "VARIANCE"):
                a = hdul[name].data
                nbytes += a.astype(a.dtype.newbyteorder("=")).nbytes
    return nbytes, time.perf_counter() - t0, time.process_time() - c0


def _unit_arrays(root, name: str, n: int, nb: int, h: int, w: int, chunk: int) -> dict:
    """Arrays of one view laid out as skybatch lays them out (:func:`skybatch.store.tile_store.ensure_view`)."""
    from skybatch.store.codecs import PIXEL_CODEC
    from skybatch.store.tile_store.views import SHARD_PLANE_BYTES

    v = root.create_group(name)
    unit = (chunk, nb, h, w)
    kw = {"chunks": (1, 1, h, w), "shards": unit} if h * w * 4 >= SHARD_PLANE_BYTES else {"chunks": unit}
    return {
        "image": v.create_array("image", shape=(n, nb, h, w), dtype="float32", fill_value=float("nan"),
                                compressors=PIXEL_CODEC, **kw),
        "noise": v.create_array("noise", shape=(n, nb, h, w), dtype="float32", fill_value=float("inf"),
                                compressors=PIXEL_CODEC, **kw),
        "mask": v.create_array("mask", shape=(n, nb, h, w), dtype="uint32", fill_value=0, **kw),
        "present": v.create_array("present", shape=(n, nb), chunks=(chunk, nb), dtype="bool", fill_value=False),
        "wcs": v.create_array("wcs", shape=(n, nb), chunks=(chunk, nb), dtype=str, fill_value=""),
    }


def loop_npz(paths: list[str], store: str, chunk: int) -> tuple[float, float]:
    """The plain loop over the npz set: per directory (one instrument, a view), units of ``chunk`` tiles
    read with np.load, bad pixels cleaned, each array written once per unit. Returns (seconds, CPU seconds)."""
    import numpy as np
    import zarr

    from skybatch.sources.tiles.planes import clean_plane

    t0, c0 = time.perf_counter(), time.process_time()
    root = zarr.open_group(store, mode="w-")
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        by_dir.setdefault(os.path.dirname(p), []).append(p)
    for d, files in sorted(by_dir.items()):
        with np.load(files[0]) as z:
            nb, h, w = z["image"].shape
        arrs = _unit_arrays(root, os.path.basename(d), len(files), nb, h, w, chunk)
        for a in range(0, len(files), chunk):
            unit = files[a : a + chunk]
            image = np.full((len(unit), nb, h, w), np.nan, np.float32)
            noise = np.full((len(unit), nb, h, w), np.inf, np.float32)
            present = np.zeros((len(unit), nb), bool)
            wcs = np.full((len(unit), nb), "", dtype=object)
            for i, f in enumerate(unit):
                with np.load(f) as z:
                    img, rms, here, hdr = z["image"], z["rms"], z["band_present"], z["wcs"]
                for b in range(nb):
                    wcs[i, b] = str(hdr[b])
                    if here[b] and np.isfinite(img[b]).any():
                        image[i, b], noise[i, b] = img[b], rms[b]
                        clean_plane(image[i, b], noise[i, b])
                        present[i, b] = True
            for k, v in (("image", image), ("noise", noise), ("mask", np.zeros(image.shape, np.uint32)),
                         ("present", present), ("wcs", wcs)):
                arrs[k][a : a + len(unit)] = v
    return time.perf_counter() - t0, time.process_time() - c0


def loop_fits(paths: list[str], store: str, chunk: int) -> tuple[float, float]:
    """The plain loop over the FITS set (one file per tile and band, ``{tile}_{band}.fits``): units of
    ``chunk`` tiles read with astropy (IMAGE, MASK, VARIANCE -> RMS), cleaned, each array written once
    per unit; wcs = the IMAGE header as a string. Returns (seconds, CPU seconds: zarr's threads included)."""
    import numpy as np
    import zarr
    from astropy.io import fits

    from skybatch.sources.tiles.planes import clean_plane

    t0, c0 = time.perf_counter(), time.process_time()
    root = zarr.open_group(store, mode="w-")
    tiles: dict[str, dict[str, str]] = {}
    for p in paths:
        tid, band = os.path.basename(p)[: -len(".fits")].rsplit("_", 1)
        tiles.setdefault(tid, {})[band] = p
    bands = [b for b in "ugrizy" if any(b in t for t in tiles.values())]
    tids = sorted(tiles)
    with fits.open(paths[0], memmap=False) as hdul:
        h, w = hdul["IMAGE"].data.shape
    nb = len(bands)
    arrs = _unit_arrays(root, "rubin", len(tids), nb, h, w, chunk)
    for a in range(0, len(tids), chunk):
        unit = tids[a : a + chunk]
        image = np.full((len(unit), nb, h, w), np.nan, np.float32)
        noise = np.full((len(unit), nb, h, w), np.inf, np.float32)
        mask = np.zeros((len(unit), nb, h, w), np.uint32)
        present = np.zeros((len(unit), nb), bool)
        wcs = np.full((len(unit), nb), "", dtype=object)
        for i, tid in enumerate(unit):
            for b, band in enumerate(bands):
                if band not in tiles[tid]:
                    continue
                with fits.open(tiles[tid][band], memmap=False) as hdul:
                    image[i, b] = hdul["IMAGE"].data
                    mask[i, b] = hdul["MASK"].data.view(">u4")
                    with np.errstate(invalid="ignore"):
                        noise[i, b] = np.sqrt(hdul["VARIANCE"].data)
                    wcs[i, b] = hdul["IMAGE"].header.tostring()
                clean_plane(image[i, b], noise[i, b])
                present[i, b] = True
        for k, v in (("image", image), ("noise", noise), ("mask", mask), ("present", present), ("wcs", wcs)):
            arrs[k][a : a + len(unit)] = v
    return time.perf_counter() - t0, time.process_time() - c0


def run_ingest(client, sources: list[str], store: str, chunk: int) -> tuple[float, float, float, object]:
    """(seconds, CPU seconds of the driver and the worker, seconds of a re-run with nothing to do, report)."""
    from skybatch.pipeline.tile_ingest import ingest_tiles

    w0 = sum(client.run(time.process_time).values())
    t0, c0 = time.perf_counter(), time.process_time()
    rep = ingest_tiles(sources, store, chunk_tiles=chunk, client=client, progress=False)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0 + sum(client.run(time.process_time).values()) - w0
    assert rep.exit_code == 0, rep.summary()
    t1 = time.perf_counter()
    again = ingest_tiles(sources, store, chunk_tiles=chunk, client=client, progress=False)
    assert again.chunks_written == 0
    return dt, cpu, time.perf_counter() - t1, rep


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
            for label, files, bare, loop in (("npz", npz_files, bare_npz, loop_npz),
                                             ("FITS", fits_files, bare_fits, loop_fits)):
                nbytes, t_bare, c_bare = bare(files)
                t_loop, c_loop = loop(files, os.path.join(tmp, f"{label}-loop.zarr"), a.chunk_tiles)
                t_ing, c_ing, t_again, rep = run_ingest(client, files, os.path.join(tmp, f"{label}.zarr"), a.chunk_tiles)
                _, t_bare2, c_bare2 = bare(files)  # bare read and loop again after the ingest: the noisy machine
                t_bare, c_bare = min(t_bare, t_bare2), min(c_bare, c_bare2)  # gets two chances at the limits
                t_loop2, c_loop2 = loop(files, os.path.join(tmp, f"{label}-loop2.zarr"), a.chunk_tiles)
                t_loop, c_loop = min(t_loop, t_loop2), min(c_loop, c_loop2)
                rows.append((label, len(files), nbytes, (t_bare, c_bare), (t_loop, c_loop), (t_ing, c_ing), t_again, rep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"tile ingest benchmark: {n_tiles} tiles of {size}x{size} px, chunk {a.chunk_tiles} tiles, "
          "1 worker process x 1 thread")
    print(f"{'':34s}{'tiles/s':>10s}{'MB/s':>8s}{'/bare':>7s}{'/loop':>7s}{'CPU-s':>8s}{'/bare':>7s}{'/loop':>7s}")
    for label, n_files, nbytes, bare, loop, ing, t_again, rep in rows:
        mb = nbytes / 2**20
        for name, (t, c) in ((f"bare read ({label}, {n_files} files)", bare), (f"read + clean + write loop ({label})", loop),
                             (f"skybatch ingest ({label})", ing)):
            print(f"{name:34s}{n_tiles / t:10.1f}{mb / t:8.1f}{bare[0] / t:7.3f}{loop[0] / t:7.3f}"
                  f"{c:8.2f}{bare[1] / c:7.3f}{loop[1] / c:7.3f}")
        print(f"{'  re-run, nothing to do':34s}  {t_again:.2f} s ({rep.chunks_total} chunks, {rep.planes_written} planes)")
    print("(/bare, /loop: speed relative to the bare read and to the read + clean + write loop, the honest limit, "
          "in wall time and in CPU seconds (driver + worker, all threads; steadier on a busy machine); same run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
