"""Benchmark: peak memory of tile-encoder training from 10^3 to 10^4 tiles (streaming vs all in memory).

Writes two tile stores of small generated tiles in the real pixel grids (Rubin 16 px at 0.2″/px,
VIS 32 px at 0.1″/px, NISP 11 px at 0.3″/px; 3.2″ on a side) with ``N`` and ``10 N`` tiles, and
for each runs, in a fresh process:

- **streaming** (what ``skybatch run train --model tile-encoder`` does): a few training steps
  over :class:`skybatch.pipeline.tile_batches.TileSkyBatches` (shuffled chunks, prefetch);
- **all in memory** (the baseline; what training did before: every tile's sky cube read into
  the driver first, :func:`skybatch.pipeline.tile_model.read_sky_sample` over all tiles).

It prints the peak resident memory of each process and the ratio 10N / N (flat = 1.0).

Run: ``python benchmarks/tile_train_memory.py`` (N = 1000; ``--quick``: N = 300).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_store(url: str, n_tiles: int, seed: int = 0, chunk_tiles: int = 250) -> None:
    """A tile store of ``n_tiles`` generated tiles in the three real grids, written chunk by chunk."""
    from skybatch.sample.tiles import _wcs_header, make_survey_views
    from skybatch.store.tile_store import (
        ViewSpec, consolidate, create_tile_store, ensure_view, open_tile_group, resize_tiles, write_tile_chunk,
        write_tile_ids,
    )

    import skybatch

    specs = {"rubin": ViewSpec("rubin", "rubin", ("u", "g", "r", "i", "z", "y"), 16, 16),
             "euclid_vis": ViewSpec("euclid_vis", "euclid", ("VIS",), 32, 32),
             "euclid_nisp": ViewSpec("euclid_nisp", "euclid", ("Y", "J", "H"), 11, 11)}
    attrs = {"skybatch_version": skybatch.__version__, "formats": ["npz"], "provenance": {}, "manifest": ""}
    g = create_tile_store(url, chunk_tiles, attrs)
    for s in specs.values():
        ensure_view(g, s, chunk_tiles, n_tiles, attrs)
    g.update_attributes({"views": {n: s.to_attrs() for n, s in specs.items()}, "n_tiles": n_tiles})
    resize_tiles(g, n_tiles)
    for a in range(0, n_tiles, chunk_tiles):
        m = min(chunk_tiles, n_tiles - a)
        sv = make_survey_views(m, 3.2, seed=seed + a, keep_truth=False)
        for name, v in sv.views.items():
            size = v.image.shape[-1]
            ids = [f"tile_{a + i:06d}" for i in range(m)]
            wcs = np.array([[_wcs_header(*v.center_radec[t] + [a * 1e-3, 0], size, v.pixel_scale_arcsec,
                                         *v.band_offset_px[t, b]) for b in range(len(v.bands))] for t in range(m)],
                           dtype=object)
            view = g[name]
            write_tile_ids(view, a, ids)
            write_tile_chunk(view, a, {
                "image": np.nan_to_num(v.image), "noise": np.where(np.isfinite(v.noise), v.noise, np.inf),
                "mask": np.zeros(v.image.shape, np.uint32), "present": v.band_present, "wcs": wcs,
                "source": np.full(v.band_present.shape, "generated", dtype=object)})
    del g
    consolidate(url)
    open_tile_group(url, mode="r")


_CHILD = r"""
import json, resource, sys, time
from distributed import Client
mode, store, out = sys.argv[1:4]
t = time.perf_counter()
with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
    if mode == "streaming":
        from skybatch.pipeline.tile_model import TileTrainConfig, train_tile_encoder
        cfg = TileTrainConfig(store=store, out=out, region_arcsec=3.0, image_size=16, patch=4, width=16, depth=1,
                              heads=2, steps=6, batch_size=16, checkpoint_every=6, progress=False,
                              diagnostic_tiles=64)
        train_tile_encoder(cfg, c)
    else:
        from skybatch.pipeline.tile_model import read_sky_sample, store_bands
        cube = read_sky_sample(store, store_bands(store), 3.0, 16, max_tiles=10**9)
        assert cube["image"].shape[0] > 0
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.perf_counter() - t}))
"""


def measure(mode: str, store: str, out: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, store, out], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{mode} on {store} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 300 (and 3000)")
    p.add_argument("--tiles", type=int, default=None, help="N (the second store has 10 N)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    n = args.tiles or (300 if args.quick else 1000)
    out = args.out or tempfile.mkdtemp(prefix="tile_memory_")
    res: dict[str, dict[int, dict]] = {"streaming": {}, "in-memory": {}}
    for m in (n, 10 * n):
        store = os.path.join(out, f"tiles_{m}.zarr")
        t = time.perf_counter()
        write_store(store, m)
        print(f"store of {m} tiles written in {time.perf_counter() - t:.0f} s")
        for mode in res:
            res[mode][m] = measure(mode, store, os.path.join(out, f"model_{m}"))
    print(f"\n{'mode':<14}{'peak MB @' + str(n):>16}{'peak MB @' + str(10 * n):>18}{'ratio':>8}")
    for mode, r in res.items():
        print(f"{mode:<14}{r[n]['peak_mb']:>16.0f}{r[10 * n]['peak_mb']:>18.0f}{r[10 * n]['peak_mb'] / r[n]['peak_mb']:>8.2f}")
    return res


if __name__ == "__main__":
    main()
