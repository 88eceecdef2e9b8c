"""Training batches streamed from a tile store: shuffled chunks on one sky grid, prefetched by Dask.

The store never has to fit in memory: the driver holds the pieces being consumed plus the
``prefetch`` pieces Dask workers are reading meanwhile (each a chunk's selected tiles, every
band resampled onto the sky grid by :func:`skybatch.models.tile_sky.sky_cube`), so memory does
not grow with the number of tiles (only the per-tile ``present`` flags, one byte per band, are
read up front).

The row stream is deterministic given the seed, like :class:`skybatch.pipeline.batches.StoreBatches`:
epoch ``e`` visits the store's chunks in a permutation drawn from ``(seed, e)`` and the usable
tiles of each chunk (two or more bands present) in a permutation drawn from ``(seed, e, chunk)``;
batch ``i`` is tiles ``[i*B, (i+1)*B)`` of that stream. Each tile gets two different bands from
a :class:`skybatch.models.band_sampling.BandPairSampler` seeded by ``(seed, step)`` (wide gaps and
cross-instrument pairs favoured, band usage balanced by the prior) and the same random 90°
rotation and flip in both views. ``make_batches(start_step)`` jumps to any step without reading
what came before, which is what resuming a killed run needs. A tile whose planes fail the WCS
checks so that fewer than two bands remain keeps its slot filled by another tile of the batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.pipeline.batches import shuffled_pieces

__all__ = ["read_tile_views", "read_sky_rows", "TileSkyBatches"]


def _strs(a: Any) -> np.ndarray:
    """A Zarr string array (variable-width) as a NumPy object array of ``str``."""
    a = np.asarray(a)
    return np.array([str(x) for x in a.ravel()], dtype=object).reshape(a.shape)


def read_tile_views(store: str, options: dict | None, start: int, stop: int) -> dict[str, Any]:
    """Every view's planes of tiles ``[start, stop)`` as :class:`skybatch.models.tile_sky.ViewPlanes`."""
    from skybatch.models.tile_sky import ViewPlanes
    from skybatch.store.tile_store import open_tile_group

    g = open_tile_group(store, options, mode="r", consolidated=True)
    out = {}
    for name in dict(g.attrs).get("views", {}):
        v = g[name]
        out[name] = ViewPlanes(
            tile_id=_strs(v["tile_id"][start:stop]),
            band_key=[str(b) for b in np.asarray(v["band_key"][:])],
            present=np.asarray(v["present"][start:stop], bool),
            wcs=_strs(v["wcs"][start:stop]),
            image=np.asarray(v["image"][start:stop], np.float32),
            noise=np.asarray(v["noise"][start:stop], np.float32),
        )
    return out


def read_sky_rows(store: str, options: dict | None, start: int, stop: int, rows: np.ndarray | None,
                  bands: Sequence[str], region_arcsec: float, size: int,
                  max_centre_offset_arcsec: float = 1.0) -> dict[str, Any]:
    """The sky cube (:func:`skybatch.models.tile_sky.sky_cube`) of tiles ``rows`` (absolute indices in
    ``[start, stop)``; None = all) of one chunk; runs on a Dask worker."""
    from skybatch.models.tile_sky import sky_cube

    views = read_tile_views(store, options, start, stop)
    ref = next(iter(views.values()))
    local = np.arange(stop - start) if rows is None else np.asarray(rows, np.int64) - start
    ids = [str(t) for t in ref.tile_id[local]]
    return sky_cube(views, bands, region_arcsec, size, tile_ids=ids, max_centre_offset_arcsec=max_centre_offset_arcsec)


def _augment(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def _augment_geometry(g: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The sub-pixel phase (dy, dx) of :func:`_augment`'d images: each 90° turn maps (dy, dx) to (-dx, dy)."""
    g = g.copy()
    for _ in range(k % 4):
        g[1], g[2] = -g[2], g[1]
    if flip:
        g[2] = -g[2]
    return g


@dataclass
class TileSkyBatches:
    """Fixed-size, shuffled, prefetched two-band batches from a tile store (module doc).

    store: the tile store; bands: the encoder's band keys (batch band indices refer to them);
    region_arcsec, size: the sky region and grid; batch_size: tiles per batch; seed;
    prefetch: chunk reads in flight ahead of the one consumed (at least enough for one batch);
    client: a ``distributed.Client`` (None: a local thread pool); rows: restrict to these tile
    rows (e.g. a training split); augment: random 90° rotations and flips.
    """

    store: str
    bands: Sequence[str]
    region_arcsec: float
    size: int
    batch_size: int = 32
    seed: int = 0
    prefetch: int = 2
    client: Any = None
    storage_options: dict[str, Any] | None = None
    max_centre_offset_arcsec: float = 1.0
    augment: bool = True
    sampler_options: dict[str, Any] = field(default_factory=dict)
    set_aside: collections.Counter = field(default_factory=collections.Counter, init=False)

    def __post_init__(self) -> None:
        from skybatch.store.tile_store import open_tile_group

        g = open_tile_group(self.store, self.storage_options, mode="r", consolidated=True)
        attrs = dict(g.attrs)
        views = list(attrs.get("views", {}))
        if not views:
            raise ValueError(f"{self.store}: the tile store has no views; ingest tiles first (skybatch run ingest-tiles)")
        n = int(g[views[0]]["tile_id"].shape[0])
        self.chunk = max(1, int(attrs.get("chunk_tiles", n)))
        count = np.zeros(n, np.int64)
        want = set(self.bands)
        for name in views:
            keys = [str(b) for b in np.asarray(g[name]["band_key"][:])]
            cols = [j for j, k in enumerate(keys) if k in want]
            for a in range(0, n, max(self.chunk, 4096)):
                b = min(n, a + max(self.chunk, 4096))
                count[a:b] += np.asarray(g[name]["present"][a:b], bool)[:, cols].sum(axis=1)
        usable = count >= 2
        self.n_tiles = n
        self._chunks = []
        for a in range(0, n, self.chunk):
            b = min(a + self.chunk, n)
            rows = np.flatnonzero(usable[a:b]) + a
            if len(rows):
                self._chunks.append((a, b, rows))
        self.n_train = int(usable.sum())
        if self.n_train < self.batch_size:
            raise ValueError(f"{self.store}: only {self.n_train} tiles have two or more of the bands {list(self.bands)}; "
                             f"need at least batch_size={self.batch_size} (lower --batch-size or ingest more tiles)")
        self._in_flight = max(self.prefetch, math.ceil(self.prefetch * self.batch_size / self.chunk))

    # -- reading ---------------------------------------------------------------------------
    def _submit(self, a: int, b: int, rows: np.ndarray):
        args = (self.store, self.storage_options, a, b, rows, tuple(self.bands), self.region_arcsec, self.size,
                self.max_centre_offset_arcsec)
        if self.client is not None:
            return self.client.submit(read_sky_rows, *args, pure=False)
        if not hasattr(self, "_pool"):
            self._pool = concurrent.futures.ThreadPoolExecutor(max(1, self.prefetch))
        return self._pool.submit(read_sky_rows, *args)

    def _pieces(self, start_row: int) -> Iterator[tuple[int, int, np.ndarray]]:
        return shuffled_pieces(self._chunks, self.n_train, self.seed, start_row)

    def _cubes(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        """Sky cubes of exactly ``batch_size`` stream tiles per step, from ``start_step`` on."""
        pieces = self._pieces(start_step * self.batch_size)
        pending: collections.deque = collections.deque(self._submit(*next(pieces)) for _ in range(self._in_flight + 1))
        carry: dict[str, np.ndarray] | None = None
        keys = ("image", "noise", "present", "geometry")
        while True:
            fut = pending.popleft()
            pending.append(self._submit(*next(pieces)))
            got = fut.result()
            for _t, _band, reason in got["set_aside"]:
                self.set_aside[reason] += 1
            data = {k: got[k] for k in keys}
            if carry is not None:
                data = {k: np.concatenate([carry[k], data[k]]) for k in keys}
            at, m = 0, len(data["present"])
            while m - at >= self.batch_size:
                yield {k: v[at : at + self.batch_size] for k, v in data.items()}
                at += self.batch_size
            carry = {k: v[at:] for k, v in data.items()}

    def make_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Two-band batches from step ``start_step`` on (the n-th item is the batch of step start_step + n)."""
        from skybatch.models.band_sampling import BandPairSampler

        step = start_step
        empty = 0
        for cube in self._cubes(start_step):
            rng = np.random.default_rng([self.seed, step, 7])
            ok = cube["present"].sum(axis=1) >= 2
            slot = np.arange(self.batch_size)
            if not ok.all():  # planes set aside by the WCS checks: reuse other tiles of the batch
                good = np.flatnonzero(ok)
                if not good.size:
                    empty += 1
                    if empty >= 20:
                        raise ValueError(
                            f"{self.store}: 20 batches in a row without a tile that keeps two bands after the "
                            f"WCS checks (planes set aside so far: {dict(self.set_aside)}); check the sources' "
                            "WCS headers, or raise --max-centre-offset-arcsec")
                    continue
                slot = np.where(ok, slot, good[rng.integers(0, good.size, self.batch_size)])
            empty = 0
            sampler = BandPairSampler(self.bands, seed=int(rng.integers(2**31)), **self.sampler_options)
            a, b = sampler.sample(cube["present"][slot])
            ia, na, ga = cube["image"][slot, a], cube["noise"][slot, a], cube["geometry"][slot, a]
            ib, nb, gb = cube["image"][slot, b], cube["noise"][slot, b], cube["geometry"][slot, b]
            if self.augment:
                ks = rng.integers(0, 4, self.batch_size)
                flips = rng.random(self.batch_size) < 0.5
                v = np.stack([ia, na, ib, nb], axis=1)
                v = np.stack([_augment(v[i], k, f) for i, (k, f) in enumerate(zip(ks, flips))])
                ia, na, ib, nb = (np.ascontiguousarray(v[:, c]) for c in range(4))
                ga = np.stack([_augment_geometry(g, k, f) for g, k, f in zip(ga, ks, flips)])
                gb = np.stack([_augment_geometry(g, k, f) for g, k, f in zip(gb, ks, flips)])
            yield {"image_a": ia.astype(np.float32), "noise_a": na.astype(np.float32), "band_a": a.astype(np.int32),
                   "geom_a": ga.astype(np.float32), "image_b": ib.astype(np.float32),
                   "noise_b": nb.astype(np.float32), "band_b": b.astype(np.int32), "geom_b": gb.astype(np.float32)}
            step += 1
