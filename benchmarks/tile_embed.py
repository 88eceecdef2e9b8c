"""Benchmark: embedding generation with the band-agnostic tile encoder (in-memory arrays).

Measures band-images per second through the jitted, vmapped :class:`TileEncoder` and prints the
figures as ratios against a baseline measured in the same run (one band image per call, jitted):

- ``per-band batches``: a batch holds one band (the band key is static, one stem runs);
- ``mixed-band batches``: every sample carries its own band index (the stems are selected per
  sample inside jit, as in training);
- ``batch 1`` (baseline): one jitted call per band image.

:func:`measure_embedding` takes any iterator of batches, so the same measurement runs on a
store-backed iterator (the tile store half is added by the lead).

Run: ``python benchmarks/tile_embed.py`` (``--quick`` for a small run).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class EmbedThroughput:
    """Result of :func:`measure_embedding`.

    Attributes
    ----------
    images:
        Band images embedded in the timed part (padding rows excluded).
    seconds:
        Wall time of the timed part.
    first_call_seconds:
        Wall time of the warm-up batches (trace + compile + run).
    embeddings:
        (images, D) global embeddings if kept, else None.
    """

    images: int
    seconds: float
    first_call_seconds: float
    embeddings: np.ndarray | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def measure_embedding(
    encoder: Any,
    batches: Iterable[dict[str, Any]],
    *,
    warmup_batches: int = 1,
    keep_embeddings: bool = False,
) -> EmbedThroughput:
    """Embed every batch of ``batches`` with ``encoder`` and time it.

    Parameters
    ----------
    encoder:
        A :class:`skybatch.models.tile_encoder.TileEncoder`.
    batches:
        Iterable of dicts with ``image``, ``noise`` (n, H, W) float32, ``band`` (a band key, an
        int, or an (n,) int array of band indices) and optionally ``n_valid`` (rows that are not
        padding; default n). Keep n fixed (pad the last batch) so that there is one compilation.
    warmup_batches:
        Leading batches run untimed (they carry the compilation).
    keep_embeddings:
        Collect the global embeddings of the valid rows.

    Returns
    -------
    :class:`EmbedThroughput`.
    """
    from skybatch.models.tile_encoder import embed_batch

    it: Iterator[dict[str, Any]] = iter(batches)
    kept: list[np.ndarray] = []
    t0 = time.perf_counter()
    for _ in range(warmup_batches):
        try:
            b = next(it)
        except StopIteration:
            break
        _, g = embed_batch(encoder, b["image"], b["noise"], b["band"])
        g.block_until_ready()
        if keep_embeddings:
            kept.append(np.asarray(g)[: b.get("n_valid", len(g))])
    first = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    pending = None
    for b in it:
        _, g = embed_batch(encoder, b["image"], b["noise"], b["band"])
        if keep_embeddings:
            kept.append(np.asarray(g)[: b.get("n_valid", len(g))])
        pending = g
        n += int(b.get("n_valid", b["image"].shape[0]))
    if pending is not None:
        pending.block_until_ready()
    seconds = time.perf_counter() - t0
    emb = np.concatenate(kept) if keep_embeddings and kept else None
    return EmbedThroughput(images=n, seconds=seconds, first_call_seconds=first, embeddings=emb)


def in_memory_batches(
    image: np.ndarray,
    noise: np.ndarray,
    band_present: np.ndarray,
    batch_size: int,
    *,
    mixed: bool = False,
    repeat: int = 1,
) -> Iterator[dict[str, Any]]:
    """Fixed-size batches of band images from (n, B, H, W) arrays, missing bands skipped.

    ``mixed=False``: one band per batch (band index as a Python int, one stem per call);
    ``mixed=True``: all present (tile, band) images in tile order, band index per sample. The
    last batch of each pass is padded with its last row (``n_valid`` says how many are real).
    ``repeat`` passes over the data.
    """
    present = np.asarray(band_present, dtype=bool)
    for _ in range(repeat):
        if mixed:
            groups = [np.nonzero(present)]  # (tile rows, band indices) of every present image
        else:
            groups = []
            for b in range(present.shape[1]):
                rows = np.flatnonzero(present[:, b])
                groups.append((rows, np.full(rows.size, b)))
        for rows, bands in groups:
            for s in range(0, rows.size, batch_size):
                r, bd = rows[s : s + batch_size], bands[s : s + batch_size]
                n_valid = r.size
                if n_valid < batch_size:
                    r = np.concatenate([r, np.repeat(r[-1:], batch_size - n_valid)])
                    bd = np.concatenate([bd, np.repeat(bd[-1:], batch_size - n_valid)])
                yield {
                    "image": image[r, bd],
                    "noise": noise[r, bd],
                    "band": bd.astype(np.int32) if mixed else int(bd[0]),
                    "n_valid": n_valid,
                }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (~20 s)")
    p.add_argument("--tiles", type=int, default=None, help="tiles (each in 10 bands)")
    p.add_argument("--size", type=int, default=32, help="tile side in px")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--repeat", type=int, default=None, help="timed passes over the tiles")
    args = p.parse_args(argv)
    n_tiles = args.tiles or (128 if args.quick else 512)
    repeat = args.repeat or (1 if args.quick else 2)

    import jax

    from skybatch.models.tile_encoder import TileEncoder
    from skybatch.sample.tiles import make_multiband_tiles

    t = time.perf_counter()
    tiles = make_multiband_tiles(n_tiles, args.size, seed=0)
    gen_s = time.perf_counter() - t
    enc = TileEncoder(tiles.bands, image_size=args.size, width=args.width, depth=args.depth, key=jax.random.PRNGKey(0))
    n_img = int(tiles.band_present.sum())
    print(f"tiles: {n_tiles} x {tiles.n_bands} bands x {args.size}^2 px = {n_img} band images "
          f"(generated in {gen_s:.2f} s); encoder width {args.width}, depth {args.depth}, "
          f"{(args.size // enc.patch) ** 2} tokens; jax {jax.__version__} on {jax.devices()[0].platform}")

    # baseline: one jitted call per band image (a fixed subset keeps it short)
    sub = np.zeros_like(tiles.band_present)
    sub[: max(2, min(n_tiles, 16))] = tiles.band_present[: max(2, min(n_tiles, 16))]
    base = measure_embedding(enc, in_memory_batches(tiles.image, tiles.noise, sub, 1, mixed=True), warmup_batches=1)
    per_pass = int(sum(-(-int(c) // args.batch_size) for c in tiles.band_present.sum(axis=0)))
    per_band = measure_embedding(
        enc,
        in_memory_batches(tiles.image, tiles.noise, tiles.band_present, args.batch_size, repeat=repeat + 1),
        warmup_batches=per_pass,  # the whole first pass: it compiles one program per band key
    )
    mixed = measure_embedding(
        enc,
        in_memory_batches(tiles.image, tiles.noise, tiles.band_present, args.batch_size, mixed=True, repeat=repeat + 1),
        warmup_batches=1,
    )
    rb = base.images_per_second
    print(f"{'mode':<28}{'band images/s':>15}{'tiles/s (10 bands)':>20}{'vs batch 1':>12}{'warm-up s':>14}")
    for name, r in (("batch 1 (baseline)", base), (f"per-band, batch {args.batch_size}", per_band),
                    (f"mixed-band, batch {args.batch_size}", mixed)):
        ips = r.images_per_second
        print(f"{name:<28}{ips:>15,.0f}{ips / tiles.n_bands:>20,.1f}{ips / rb:>12.1f}{r.first_call_seconds:>14.2f}")
    print(f"mixed / per-band: {mixed.images_per_second / per_band.images_per_second:.2f}")


if __name__ == "__main__":
    main()
