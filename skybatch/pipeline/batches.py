"""Training batches streamed from a store: shuffled chunks read ahead in threads, split by HEALPix.

The dataset never has to fit in memory: the training process holds the chunk being
gathered from plus ``prefetch`` chunks being read meanwhile (whole chunks or shards, into
reused buffers, by :class:`~skybatch.pipeline.chunk_reader.ChunkReader`). The reads run
in this process, next to the model, so no chunk is serialised between processes.

The row stream is deterministic given the seed: epoch ``e`` visits the
training chunks in a permutation drawn from ``(seed, e)`` and the training rows
of each chunk in a permutation drawn from ``(seed, e, chunk)``; batch ``i`` is
rows ``[i*B, (i+1)*B)`` of the concatenated epochs. ``make_batches(start_step)``
therefore jumps straight to the batch of any step without reading what came
before, which is what resuming a killed training run needs.

Validation is split by HEALPix pixel (nested, ``split_nside``), so neighbouring
spectra never straddle train and validation: a pixel is in validation when a
hash of its number falls below ``val_fraction``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.pipeline.chunk_reader import ChunkReader
from skybatch.pipeline.hostbuf import aligned_empty
from skybatch.pipeline.prefetch import BackgroundIterator, BufferPool, Prefetcher
from skybatch.store.spectra_store import open_group

__all__ = ["StoreBatches", "healpix_split", "split_pixels"]


def split_pixels(healpix: np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean (n,): True where a spectrum's HEALPix pixel belongs to the validation split.

    The choice depends only on the pixel number and ``seed`` (a hash), so it is
    stable across runs, machines and store growth.
    """
    pix = np.asarray(healpix, np.int64)
    uniq, inv = np.unique(pix, return_inverse=True)
    u = np.array(
        [int.from_bytes(hashlib.sha256(f"{seed}:{int(p)}".encode()).digest()[:8], "little") / 2**64 for p in uniq]
    )
    return (u < val_fraction)[inv]


def healpix_split(ra: np.ndarray, dec: np.ndarray, healpix: np.ndarray, nside: int, val_fraction: float,
                  seed: int = 0) -> np.ndarray:
    """Validation mask from HEALPix pixels at ``nside``: the stored nside-64 pixel when nside == 64,
    else pixels computed from ra/dec (nested). Rows with no position fall back to the stored pixel."""
    if nside == 64:
        return split_pixels(healpix, val_fraction, seed)
    from astropy import units as u
    from astropy_healpix import HEALPix

    pix = np.asarray(healpix, np.int64).copy()
    ok = np.isfinite(ra) & np.isfinite(dec)
    if ok.any():
        hp = HEALPix(nside=nside, order="nested")
        pix[ok] = hp.lonlat_to_healpix(np.asarray(ra)[ok] * u.deg, np.asarray(dec)[ok] * u.deg) + 10**12
    return split_pixels(pix, val_fraction, seed)


def _label_codes(values: np.ndarray, label_map: dict[str, int] | None) -> np.ndarray:
    """int32 class index per row: ``label_map`` of the stripped upper-cased string (unknown -> -1),
    or the values themselves when there is no map."""
    if label_map is None:
        return np.asarray(values).astype(np.int32)
    uniq, inv = np.unique(np.asarray(values), return_inverse=True)
    codes = np.array([label_map.get(str(v).strip().upper(), -1) for v in uniq], np.int32)
    return codes[inv.reshape(-1)]


@dataclass
class StoreBatches:
    """Fixed-size, shuffled, prefetched batches from a spectra store.

    store: the store (path or URL); storage_options for remote stores.
    inputs: variables put in each batch (e.g. ``("flux", "ivar")``), float as float32.
    batch_size: rows per batch (every batch is full).
    label: a per-spectrum variable turned into an int ``label`` (e.g. ``"spectype"``);
        label_map maps its (upper-cased) strings to class indices, unknown -> -1.
    val_fraction: fraction of HEALPix pixels held out for validation.
    split_nside: HEALPix nside of the split (64 = the stored ``healpix`` column).
    seed: shuffling and split seed.
    prefetch: chunks read ahead (and batches kept ready) while the current one is consumed.
    client: accepted for compatibility; chunks are read in this process's threads either way.
    """

    store: str
    inputs: tuple[str, ...] = ("flux", "ivar")
    batch_size: int = 256
    label: str | None = None
    label_map: dict[str, int] | None = None
    val_fraction: float = 0.2
    split_nside: int = 64
    seed: int = 0
    prefetch: int = 2
    client: Any = None
    storage_options: dict[str, Any] | None = None
    _chunks: list[tuple[int, int, np.ndarray]] = field(init=False, repr=False)
    _val_rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        g = open_group(self.store, self.storage_options, mode="r")
        n = g["flux"].shape[0]
        chunk = int(g.attrs.get("chunk_spectra", g["flux"].chunks[0]))
        healpix = np.asarray(g["healpix"][:])
        ra = np.asarray(g["ra"][:], np.float64)
        dec = np.asarray(g["dec"][:], np.float64)
        val = healpix_split(ra, dec, healpix, self.split_nside, self.val_fraction, self.seed)
        usable = np.ones(n, bool)
        if self.label is not None and self.label_map is not None:
            values = np.asarray(g[self.label][:])
            usable = np.array([str(v).strip().upper() in self.label_map for v in values])
        train = ~val & usable
        self._chunks = []
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            rows = np.flatnonzero(train[a:b]) + a
            if len(rows):
                self._chunks.append((a, b, rows))
        self._val_rows = np.flatnonzero(val & usable)
        self.n_train = int(train.sum())
        self.n_val = len(self._val_rows)
        if self.n_train < self.batch_size:
            raise ValueError(
                f"{self.store}: only {self.n_train} training spectra for batch_size {self.batch_size}; "
                "lower --batch-size or --val-fraction, or ingest more spectra"
            )

    # -- reading ---------------------------------------------------------------------------
    def _reader(self) -> ChunkReader:
        return ChunkReader(self.store, self.storage_options, tuple(self.inputs))

    def _labels(self, group: Any, a: int, b: int) -> np.ndarray:
        return _label_codes(np.asarray(group[self.label][a:b]), self.label_map)

    def _pieces(self, start_row: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(chunk start, stop, rows) pieces of the infinite row stream from ``start_row`` on."""
        return shuffled_pieces(self._chunks, self.n_train, self.seed, start_row)

    def make_batches(self, start_step: int = 0) -> BackgroundIterator[dict[str, np.ndarray]]:
        """Batches from step ``start_step`` on (the n-th item is the batch of step start_step + n).

        Whole store chunks are read ``prefetch`` ahead on a thread pool into reused buffers; a
        gather thread copies each batch's rows out of them (one copy per row, no concatenation)
        into new 64-byte aligned arrays, which JAX on CPU then uses in place (no device copy),
        and keeps ``prefetch`` batches ready. Close the iterator (``close()``) to stop the threads
        before it is exhausted (:func:`skybatch.models.fit` does).
        """
        return BackgroundIterator(lambda: self._gather(start_step), depth=max(1, self.prefetch),
                                  name="skybatch-batches")

    def _gather(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        reader = self._reader()
        depth = max(1, self.prefetch)
        # at most `depth` reads in flight plus the chunk being gathered from: the pool never runs dry
        pool: BufferPool[dict[str, np.ndarray]] = BufferPool(reader.new_buffers, depth + 2)
        group = open_group(self.store, self.storage_options, mode="r") if self.label is not None else None

        def load(piece: tuple[int, int, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
            a, b, rows = piece
            buf = pool.acquire()
            try:
                data = dict(reader.read(a, b, out=buf))
                if group is not None:
                    data["label"] = self._labels(group, a, b)
            except BaseException:
                pool.release(buf)
                raise
            return buf, data, np.asarray(rows, np.int64) - a

        shapes = {k: ((self.batch_size,) + reader.row_shapes[k], reader.dtypes[k]) for k in self.inputs}
        if self.label is not None:
            shapes["label"] = ((self.batch_size,), np.dtype(np.int32))
        B = self.batch_size
        # one reader thread: reads stay ahead, and at most one thread competes with the model for the cores
        with Prefetcher(load, self._pieces(start_step * B), depth=depth, workers=1) as chunks:
            cur: tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray] | None = None
            pos = 0
            while True:
                # fresh 64-byte aligned arrays: the device copy of fit() aliases them on CPU (hostbuf)
                batch = {k: aligned_empty(shape, dt) for k, (shape, dt) in shapes.items()}
                at = 0
                while at < B:
                    if cur is None or pos == len(cur[2]):
                        if cur is not None:
                            pool.release(cur[0])
                            cur = None
                        cur = next(chunks)
                        pos = 0
                    _, data, local = cur
                    m = min(B - at, len(local) - pos)
                    idx = local[pos : pos + m]
                    for k, out in batch.items():
                        np.take(data[k], idx, axis=0, out=out[at : at + m])
                    at += m
                    pos += m
                yield batch

    def val_batches(self, max_rows: int | None = None) -> list[dict[str, np.ndarray]]:
        """The validation rows (first ``max_rows``) in fixed-size batches (last one padded by
        repeating rows; a ``weight`` array marks real rows with 1)."""
        rows = self._val_rows if max_rows is None else self._val_rows[:max_rows]
        if not len(rows):
            return []
        data = self.read(rows)
        out = []
        for at in range(0, len(rows), self.batch_size):
            part = {k: v[at : at + self.batch_size] for k, v in data.items()}
            m = len(next(iter(part.values())))
            w = np.ones(self.batch_size, np.float32)
            if m < self.batch_size:
                idx = np.arange(self.batch_size) % m
                part = {k: v[idx] for k, v in part.items()}
                w[m:] = 0
            part["weight"] = w
            out.append(part)
        return out

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Read arbitrary rows (sorted internally, returned in the given order): whole chunks, rows picked in memory."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        reader = self._reader()
        group = open_group(self.store, self.storage_options, mode="r") if self.label is not None else None
        buf = reader.new_buffers()
        parts = []
        for c in np.unique(srt // reader.chunk_rows):
            a, b = reader.chunk_bounds(int(c) * reader.chunk_rows)
            local = srt[(srt >= a) & (srt < b)] - a
            data = reader.read(a, b, out=buf)
            part = {k: v[local] for k, v in data.items()}
            if group is not None:
                part["label"] = self._labels(group, a, b)[local]
            parts.append(part)
        data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        return {k: v[inv] for k, v in data.items()}

    @property
    def val_rows(self) -> np.ndarray:
        """Absolute store rows of the validation split."""
        return self._val_rows

    def train_rows(self) -> np.ndarray:
        """Absolute store rows of the training split."""
        return np.concatenate([r for _, _, r in self._chunks]) if self._chunks else np.zeros(0, np.int64)


def shuffled_pieces(chunks: Sequence[tuple[int, int, np.ndarray]], n_rows: int, seed: int,
                    start_row: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(chunk start, stop, rows) pieces of an endless, reproducible shuffled row stream from ``start_row`` on.

    chunks: (start, stop, training rows) per store chunk; n_rows: their total rows. Each epoch visits the
    chunks in an order drawn from (seed, epoch) and each chunk's rows in an order drawn from (seed, epoch,
    chunk), so any step can be replayed after a restart.
    """
    epoch, offset = divmod(start_row, n_rows)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
        for k in order:
            a, b, rows = chunks[k]
            if offset >= len(rows):
                offset -= len(rows)
                continue
            yield a, b, np.random.default_rng([seed, epoch, int(k)]).permutation(rows)[offset:]
            offset = 0
        epoch += 1
