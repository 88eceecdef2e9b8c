"""What the sky models read from a sky store: condition columns, selections, measured magnitudes, batches.

- :func:`condition_table` reads per-spectrum condition columns (METADATA names such as ``SUNALT``;
  the store holds them lower-case, see :mod:`skybatch.sources.skyvac`) and names any missing one.
- :func:`selection_rows` applies desisky's dark / moon / twilight cuts
  (:func:`skybatch.sources.select_sky_conditions`).
- :func:`measure_magnitudes` measures V, g, r, z from the spectra by synthetic photometry, one
  Dask task per store chunk (only the magnitudes come back to the driver).
- :func:`heldout_mask` holds exposures out by HEALPix pixel of the tile centre (as the trainers do).
- :class:`TableBatches` serves fixed-size shuffled batches of in-memory rows whose batch of step
  ``s`` depends only on (seed, s), so a killed training run resumes on the same stream.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.pipeline.batches import split_pixels
from skybatch.pipeline.chunkrun import chunk_ranges
from skybatch.store.spectra_store import open_group

__all__ = ["condition_table", "selection_rows", "measure_magnitudes", "heldout_mask", "TableBatches",
           "read_rows"]


def condition_table(store: str, columns: Sequence[str], storage_options: dict | None = None,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """Condition columns as float64 (n, len(columns)) (all rows, or ``rows``).

    ECLLON, ECLLAT, GALLON, GALLAT missing from the store (the DR1 VAC's own METADATA lacks them;
    desisky adds them) are computed from TILERA/TILEDEC. Raises KeyError naming any other missing
    column, the store and what it does hold.
    """
    g = open_group(store, storage_options, mode="r")
    have = set(g.array_keys())
    missing = [c for c in columns if c.lower() not in have]
    derived: dict[str, np.ndarray] = {}
    if set(c.lower() for c in missing) <= set(_DERIVABLE) and missing and {"tilera", "tiledec"} <= have:
        derived = _sky_coordinates(np.asarray(g["tilera"][:], np.float64), np.asarray(g["tiledec"][:], np.float64))
        missing = []
    if missing:
        cols = sorted(k for k in have if k not in ("flux", "ivar", "mask", "wavelength"))
        raise KeyError(
            f"{store}: condition column(s) {missing} are not in the store (per-spectrum columns: {cols}); "
            "ingest a sky VAC whose METADATA has them (desisky enriches the DR1 VAC with SOLFLUX, ECLLON, "
            "ECLLAT, GALLON, GALLAT), or pass other --conditions columns"
        )
    out = [derived[c.lower()] if c.lower() in derived else np.asarray(g[c.lower()][:], np.float64) for c in columns]
    x = np.stack(out, axis=1) if out else np.zeros((g["flux"].shape[0], 0))
    return x if rows is None else x[np.asarray(rows, np.int64)]


_DERIVABLE = ("ecllon", "ecllat", "gallon", "gallat")


def _sky_coordinates(ra: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
    """Ecliptic (geocentric mean) and Galactic coordinates in degrees of the tile centres (astropy)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    ecl, gal = c.transform_to("geocentricmeanecliptic"), c.galactic
    return {"ecllon": ecl.lon.deg, "ecllat": ecl.lat.deg, "gallon": gal.l.deg, "gallat": gal.b.deg}


def selection_rows(store: str, selection: str | None, storage_options: dict | None = None) -> np.ndarray:
    """Store rows of a desisky sky selection (``dark``, ``moon``, ``twilight``; None or ``all``: every row)."""
    g = open_group(store, storage_options, mode="r")
    n = g["flux"].shape[0]
    if selection in (None, "", "all"):
        return np.arange(n, dtype=np.int64)
    from skybatch.sources.skyvac import SKY_CONDITIONS, select_sky_conditions

    if selection not in SKY_CONDITIONS:
        raise ValueError(f"selection {selection!r} is not one of {sorted(SKY_CONDITIONS)} (--selection)")
    need = {c.lower() for c, _, _ in SKY_CONDITIONS[selection]}
    missing = sorted(need - set(g.array_keys()))
    if missing:
        raise KeyError(f"{store}: selection {selection!r} needs columns {missing}; is this a sky VAC store?")
    meta = {c: np.asarray(g[c][:]) for c in need}
    return np.flatnonzero(select_sky_conditions(meta, selection)).astype(np.int64)


def heldout_mask(store: str, val_fraction: float, seed: int = 0, storage_options: dict | None = None) -> np.ndarray:
    """Boolean (n,): True for exposures held out (HEALPix pixel of the tile centre hashed below val_fraction)."""
    g = open_group(store, storage_options, mode="r")
    return split_pixels(np.asarray(g["healpix"][:]), val_fraction, seed)


def read_rows(store: str, names: Sequence[str], rows: np.ndarray, storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Rows ``rows`` (any order) of per-spectrum or (spectrum, wavelength) variables, read chunk by chunk."""
    g = open_group(store, storage_options, mode="r")
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    out = {}
    for name in names:
        arr = g[name]
        if len(srt) == 0:
            out[name] = np.zeros((0,) + tuple(arr.shape[1:]), arr.dtype)
            continue
        chunk = arr.chunks[0]
        parts = []
        for c in np.unique(srt // chunk):
            sel = srt[(srt // chunk) == c]
            a = int(c * chunk)
            block = np.asarray(arr[a:min(a + chunk, arr.shape[0])])
            parts.append(block[sel - a])
        data = np.concatenate(parts)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        out[name] = data[inv]
    return out


def _chunk_mags(task, store, options, bands):
    from skybatch.models.sky_photometry import band_weights, sky_magnitudes

    a, b = task
    g = open_group(store, options, mode="r")
    wave = np.asarray(g["wavelength"][:])
    return a, sky_magnitudes(np.asarray(g["flux"][a:b]), wave, np.asarray(g["ivar"][a:b]), bands,
                             weights=band_weights(wave, bands))


def measure_magnitudes(store: str, client=None, bands: tuple[str, ...] | None = None,
                       storage_options: dict | None = None) -> np.ndarray:
    """Synthetic AB magnitudes (n, nband) of every spectrum, one task per chunk on ``client`` (or here)."""
    from skybatch.models.sky_photometry import SKY_BANDS

    bands = tuple(bands or SKY_BANDS)
    g = open_group(store, storage_options, mode="r")
    n = g["flux"].shape[0]
    chunk = int(g.attrs.get("chunk_spectra", g["flux"].chunks[0]))
    tasks = [(a, b) for _, a, b in chunk_ranges(n, chunk)]
    out = np.full((n, len(bands)), np.nan)
    if client is None:
        results = [_chunk_mags(t, store, storage_options, bands) for t in tasks]
    else:
        futs = [client.submit(_chunk_mags, t, store, storage_options, bands, pure=False) for t in tasks]
        results = client.gather(futs)
    for a, m in results:
        out[a:a + len(m)] = m
    return out


@dataclass
class TableBatches:
    """Shuffled fixed-size batches over in-memory arrays sharing their first axis.

    ``make_batches(start_step)`` yields the batch of step ``start_step`` first; epoch ``e`` visits
    the rows in the permutation drawn from ``(seed, e)``, so the stream is a pure function of the
    seed and the step (what resuming needs).
    """

    arrays: dict[str, np.ndarray]
    batch_size: int
    seed: int = 0
    n: int = field(init=False)

    def __post_init__(self) -> None:
        lens = {k: len(v) for k, v in self.arrays.items()}
        if len(set(lens.values())) != 1:
            raise ValueError(f"TableBatches: arrays differ in length: {lens}")
        self.n = next(iter(lens.values()))
        if self.n < 1:
            raise ValueError("TableBatches: no rows to train on")

    def make_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        B = self.batch_size
        pos = start_step * B
        while True:
            idx = np.empty(B, np.int64)
            got = 0
            while got < B:
                epoch, off = divmod(pos, self.n)
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                take = min(B - got, self.n - off)
                idx[got:got + take] = perm[off:off + take]
                got += take
                pos += take
            yield {k: v[idx] for k, v in self.arrays.items()}

    def fixed_batches(self, arrays: dict[str, Any] | None = None) -> list[dict[str, np.ndarray]]:
        """All rows of ``arrays`` (default: this table) in batches of ``batch_size``, the last padded
        by repeating rows, with ``weight`` 1 on real rows and 0 on padding."""
        arrays = self.arrays if arrays is None else arrays
        n = len(next(iter(arrays.values())))
        out = []
        for a in range(0, n, self.batch_size):
            idx = np.arange(a, a + self.batch_size)
            w = (idx < n).astype(np.float32)
            idx = np.where(idx < n, idx, a + (idx - a) % max(1, n - a))
            out.append({**{k: v[idx] for k, v in arrays.items()}, "weight": w})
        return out
