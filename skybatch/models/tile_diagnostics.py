"""Diagnostics for the band-agnostic tile encoder: is it band-invariant, is it collapsed?

Numbers (plain floats / NumPy arrays, ready for a model card) and PNG figures:

- :func:`embed_tiles`: global embeddings (and optionally token grids) of every tile in every band.
- :func:`band_similarity_matrix`: mean cosine similarity of the same tile seen in band i and band j.
- :func:`cross_band_retrieval`: top-1 accuracy of finding a tile's band-j embedding from its band-i
  embedding among all tiles (chance = 1 / number of tiles).
- :func:`collapse_stats` / :func:`per_band_collapse`: variance per embedding dimension and the
  effective dimension (``exp`` of the entropy of the normalised covariance eigenvalues) and
  participation ratio (``(Σλ)² / Σλ²``); a collapsed embedding has effective dimension ≈ 1.
- :func:`token_similarity` and :class:`TokenSimilarityTracker`: cosine similarity of matching
  tokens (same tile, same position, two bands) against non-matching ones, tracked over training.
- :func:`model_card_metrics`: the above summarised into a flat dict.
- ``write_*_png``: figures with matplotlib's object API (no pyplot, no global backend change).

Model code runs in JAX; the statistics are NumPy on host arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "embed_tiles",
    "band_similarity_matrix",
    "retrieval_top1",
    "cross_band_retrieval",
    "collapse_stats",
    "per_band_collapse",
    "token_similarity",
    "TokenSimilarityTracker",
    "model_card_metrics",
    "write_band_similarity_png",
    "write_information_map_png",
    "write_collapse_png",
    "write_token_similarity_png",
]


def embed_tiles(
    encoder: Any,
    image: np.ndarray,
    noise: np.ndarray,
    band_present: np.ndarray,
    *,
    batch_size: int = 64,
    return_tokens: bool = False,
    geometry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed every tile in every band with ``encoder`` (a :class:`TileEncoder`).

    Parameters
    ----------
    image, noise:
        (n, B, H, W), bands in ``encoder.bands`` order.
    band_present:
        (n, B) bool; missing bands are not run and come back as NaN.
    batch_size:
        Tiles per jitted call (the last batch is padded, so there is one compilation in all).
    return_tokens:
        Also return the token grids.
    geometry:
        (n, B, 3) band geometry on the sky grid (:func:`skybatch.models.tile_geometry.band_geometry`)
        or None.

    Returns
    -------
    global (n, B, D) float32 and tokens (n, B, Ht, Wt, D) float32 or None.
    """
    from skybatch.models.tile_encoder import embed_batch

    image = np.asarray(image)
    noise = np.asarray(noise)
    present = np.asarray(band_present, dtype=bool)
    n, n_b = image.shape[:2]
    if n_b != len(encoder.bands):
        raise ValueError(
            f"image has {n_b} bands but the encoder has {len(encoder.bands)} ({list(encoder.bands)}); "
            "pass the tile arrays in the encoder's band order"
        )
    d = encoder.width
    ht, wt = encoder.grid
    glob = np.full((n, n_b, d), np.nan, dtype=np.float32)
    toks = np.full((n, n_b, ht, wt, d), np.nan, dtype=np.float32) if return_tokens else None
    for b in range(n_b):
        rows = np.flatnonzero(present[:, b])
        for s in range(0, rows.size, batch_size):
            sel = rows[s : s + batch_size]
            pad = batch_size - sel.size
            idx = np.concatenate([sel, np.repeat(sel[-1:], pad)])
            # a band index array, not the band key: one compilation serves every band
            geo = None if geometry is None else geometry[idx, b]
            t, g = embed_batch(encoder, image[idx, b], noise[idx, b], np.full(batch_size, b, np.int32), geo)
            glob[sel, b] = np.asarray(g)[: sel.size]
            if toks is not None:
                toks[sel, b] = np.asarray(t)[: sel.size]
    return glob, toks


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def band_similarity_matrix(glob: np.ndarray, band_present: np.ndarray) -> np.ndarray:
    """(B, B) mean cosine similarity between a tile's band-i and band-j global embeddings.

    ``glob`` (n, B, D), ``band_present`` (n, B). Averaged over tiles having both bands; NaN
    where no tile has both. The diagonal is 1.
    """
    present = np.asarray(band_present, dtype=bool)
    u = _unit(np.nan_to_num(glob))
    n_b = glob.shape[1]
    out = np.full((n_b, n_b), np.nan)
    for i in range(n_b):
        for j in range(n_b):
            ok = present[:, i] & present[:, j]
            if ok.any():
                out[i, j] = float(np.mean(np.sum(u[ok, i] * u[ok, j], axis=-1)))
    return out


def retrieval_top1(query: np.ndarray, keys: np.ndarray) -> float:
    """Fraction of rows ``k`` whose most cosine-similar key is key ``k`` (chance = 1/n).

    ``query``, ``keys``: (n, D) (or (n, ...) flattened), row k of each is the same object.
    """
    q = _unit(np.asarray(query, dtype=np.float64).reshape(len(query), -1))
    k = _unit(np.asarray(keys, dtype=np.float64).reshape(len(keys), -1))
    if q.shape != k.shape or q.shape[0] == 0:
        raise ValueError(f"query and keys must have the same non-empty shape, got {q.shape} and {k.shape}")
    return float(np.mean(np.argmax(q @ k.T, axis=1) == np.arange(q.shape[0])))


def cross_band_retrieval(emb: np.ndarray, band_present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 retrieval accuracy for every (query band i, key band j) pair.

    ``emb`` (n, B, ...) embeddings (global or token grids), ``band_present`` (n, B).

    Returns
    -------
    accuracy (B, B) with NaN on the diagonal and where fewer than 2 tiles share the bands, and
    chance (B, B) = 1 / number of tiles with both bands.
    """
    present = np.asarray(band_present, dtype=bool)
    n_b = emb.shape[1]
    acc = np.full((n_b, n_b), np.nan)
    chance = np.full((n_b, n_b), np.nan)
    for i in range(n_b):
        for j in range(n_b):
            ok = present[:, i] & present[:, j]
            if i == j or ok.sum() < 2:
                continue
            acc[i, j] = retrieval_top1(emb[ok, i], emb[ok, j])
            chance[i, j] = 1.0 / ok.sum()
    return acc, chance


def collapse_stats(z: np.ndarray) -> dict[str, Any]:
    """Collapse checks of a set of embeddings ``z`` (n, D).

    Returns
    -------
    dict with ``var_per_dim`` (D,), ``min_var``, ``mean_var``, ``eigenvalues`` (D, descending,
    of the covariance), ``effective_dim`` (exp of the entropy of the normalised eigenvalues,
    1 … D) and ``participation_ratio`` ((Σλ)²/Σλ², 1 … D).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"collapse_stats needs (n >= 2, D) embeddings, got shape {z.shape}")
    var = z.var(axis=0)
    ev = np.clip(np.linalg.eigvalsh(np.cov(z, rowvar=False)), 0.0, None)[::-1]
    tot = ev.sum()
    if tot > 0:
        p = ev / tot
        nz = p[p > 0]
        eff = float(np.exp(-np.sum(nz * np.log(nz))))
        pr = float(tot**2 / np.sum(ev**2))
    else:
        eff = pr = 0.0
    return {
        "var_per_dim": var,
        "min_var": float(var.min()),
        "mean_var": float(var.mean()),
        "eigenvalues": ev,
        "effective_dim": eff,
        "participation_ratio": pr,
    }


def per_band_collapse(glob: np.ndarray, band_present: np.ndarray, bands: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`collapse_stats` of each band's global embeddings (tiles present in that band)."""
    present = np.asarray(band_present, dtype=bool)
    return {
        str(band): collapse_stats(glob[present[:, b], b])
        for b, band in enumerate(bands)
        if present[:, b].sum() >= 2
    }


def token_similarity(tokens_a: np.ndarray, tokens_b: np.ndarray) -> dict[str, float]:
    """Cosine similarity of matching tokens across two bands, against non-matching tokens.

    ``tokens_a``, ``tokens_b``: (n, ..., D) token grids of the same n tiles in two bands.

    Returns
    -------
    ``matched``: mean cosine of the same tile and position; ``other_tile``: same position, a
    different tile (tile order rolled by one); ``contrast`` = matched − other_tile.
    """
    a = _unit(np.asarray(tokens_a, dtype=np.float64).reshape(len(tokens_a), -1, tokens_a.shape[-1]))
    b = _unit(np.asarray(tokens_b, dtype=np.float64).reshape(len(tokens_b), -1, tokens_b.shape[-1]))
    matched = float(np.mean(np.sum(a * b, axis=-1)))
    other = float(np.mean(np.sum(a * np.roll(b, 1, axis=0), axis=-1))) if len(a) > 1 else float("nan")
    return {"matched": matched, "other_tile": other, "contrast": matched - other}


@dataclass
class TokenSimilarityTracker:
    """Record :func:`token_similarity` of a fixed validation pair set over training.

    Give it the two views (image, noise, band index arrays) of a fixed set of tiles; call
    :meth:`record(step, encoder)` every so often (e.g. from the trainer's ``on_step`` with the
    current model, or between training chunks). ``history`` holds ``step``, ``matched``,
    ``other_tile`` and ``contrast`` lists.
    """

    image_a: np.ndarray
    noise_a: np.ndarray
    band_a: np.ndarray
    image_b: np.ndarray
    noise_b: np.ndarray
    band_b: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)

    def record(self, step: int, encoder: Any) -> dict[str, float]:
        """Embed both views with ``encoder`` and append the similarities at ``step``."""
        from skybatch.models.tile_encoder import embed_batch

        ta, _ = embed_batch(encoder, self.image_a, self.noise_a, np.asarray(self.band_a))
        tb, _ = embed_batch(encoder, self.image_b, self.noise_b, np.asarray(self.band_b))
        sim = token_similarity(np.asarray(ta), np.asarray(tb))
        self.history.setdefault("step", []).append(float(step))
        for k, v in sim.items():
            self.history.setdefault(k, []).append(v)
        return sim


def model_card_metrics(
    glob: np.ndarray,
    band_present: np.ndarray,
    bands: Sequence[str],
    *,
    tokens: np.ndarray | None = None,
) -> dict[str, Any]:
    """Flat, JSON-ready summary for a model card.

    ``glob`` (n, B, D) and optional ``tokens`` (n, B, Ht, Wt, D) from :func:`embed_tiles`.
    Keys: ``n_tiles``, ``retrieval_top1_mean``/``_min`` (over band pairs), ``retrieval_chance``,
    ``band_similarity_offdiag_mean``/``_min``, ``effective_dim`` and ``min_var_per_dim`` per band
    (dicts), ``effective_dim_min``, and with tokens ``token_retrieval_top1_mean`` and
    ``token_contrast_mean``.
    """
    present = np.asarray(band_present, dtype=bool)
    acc, chance = cross_band_retrieval(glob, present)
    sim = band_similarity_matrix(glob, present)
    off = sim[~np.eye(len(bands), dtype=bool)]
    coll = per_band_collapse(glob, present, bands)
    out: dict[str, Any] = {
        "n_tiles": int(glob.shape[0]),
        "retrieval_top1_mean": float(np.nanmean(acc)),
        "retrieval_top1_min": float(np.nanmin(acc)),
        "retrieval_chance": float(np.nanmean(chance)),
        "band_similarity_offdiag_mean": float(np.nanmean(off)),
        "band_similarity_offdiag_min": float(np.nanmin(off)),
        "effective_dim": {b: round(s["effective_dim"], 3) for b, s in coll.items()},
        "min_var_per_dim": {b: s["min_var"] for b, s in coll.items()},
        "effective_dim_min": float(min(s["effective_dim"] for s in coll.values())),
    }
    if tokens is not None:
        tacc, _ = cross_band_retrieval(tokens, present)
        contrasts = []
        for i in range(len(bands)):
            for j in range(i + 1, len(bands)):
                ok = present[:, i] & present[:, j]
                if ok.sum() >= 2:
                    contrasts.append(token_similarity(tokens[ok, i], tokens[ok, j])["contrast"])
        out["token_retrieval_top1_mean"] = float(np.nanmean(tacc))
        out["token_contrast_mean"] = float(np.mean(contrasts))
    return out


# ------------------------------------------------------------------------------------ figures


def _figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    return p


def _short(bands: Sequence[str]) -> list[str]:
    return [b.replace("rubin_", "R:").replace("euclid_", "E:") for b in bands]


def write_band_similarity_png(
    matrix: np.ndarray, bands: Sequence[str], path: str | Path, *, title: str = "band × band similarity"
) -> Path:
    """Heat map of a (B, B) matrix (similarity or retrieval accuracy) with values printed."""
    fig = _figure((6.4, 5.4))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, vmin=min(0.0, float(np.nanmin(matrix))), vmax=1.0, cmap="viridis")
    labels = _short(bands)
    ax.set_xticks(range(len(bands)), labels, rotation=60)
    ax.set_yticks(range(len(bands)), labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def write_information_map_png(
    image: np.ndarray, noise: np.ndarray, path: str | Path, *, patch: int | None = None, title: str = ""
) -> Path:
    """Three panels for one band image (H, W): S/N, information map, and token weights (if ``patch``)."""
    from skybatch.models.info_map import information_map, token_weights

    image = np.asarray(image)
    noise = np.asarray(noise)
    panels = [
        ("S/N (asinh)", np.arcsinh(np.nan_to_num(image / noise))),
        ("information map", information_map(image, noise)),
    ]
    if patch:
        panels.append((f"token weights ({patch}px)", token_weights(image, noise, patch)))
    fig = _figure((3.2 * len(panels), 3.3))
    for k, (name, arr) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        im = ax.imshow(arr, origin="lower", cmap="magma")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.75)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def write_collapse_png(per_band: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Eigenvalue spectra (log) and sorted per-dimension variances of each band's embeddings."""
    fig = _figure((9.0, 3.6))
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    for band, s in per_band.items():
        ev = np.asarray(s["eigenvalues"])
        label = f"{_short([band])[0]} ({s['effective_dim']:.1f})"
        ax1.semilogy(np.arange(1, ev.size + 1), np.maximum(ev, 1e-12), label=label)
        ax2.plot(np.sort(np.asarray(s["var_per_dim"]))[::-1], lw=1)
    ax1.set_xlabel("eigenvalue rank")
    ax1.set_ylabel("covariance eigenvalue")
    ax1.set_title("spectrum (effective dim)")
    ax1.legend(fontsize=6, ncol=2)
    ax2.set_xlabel("dimension (sorted)")
    ax2.set_ylabel("variance")
    ax2.set_title("variance per dimension")
    return _save(fig, path)


def write_token_similarity_png(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Matched vs other-tile token similarity over training (from :class:`TokenSimilarityTracker`)."""
    fig = _figure((5.4, 3.6))
    ax = fig.add_subplot()
    steps = history.get("step", [])
    ax.plot(steps, history.get("matched", []), "o-", label="same tile, two bands")
    ax.plot(steps, history.get("other_tile", []), "s--", label="different tiles")
    ax.set_xlabel("step")
    ax.set_ylabel("token cosine similarity")
    ax.legend()
    return _save(fig, path)
