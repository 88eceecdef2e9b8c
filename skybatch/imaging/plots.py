"""Pictures of candidate cutout triplets (science, reference, difference) with matplotlib.

Uses matplotlib's object API on the Agg canvas (no pyplot, no display, thread-safe), so it
runs on a headless worker or driver. Inputs are host or device arrays; outputs are a
``matplotlib.figure.Figure`` or PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from skybatch.xp import to_numpy

Array = Any

__all__ = ["plot_triplets", "triplets_png"]

_KINDS = ("science", "reference", "difference")


def _limits(stamp: np.ndarray, symmetric: bool) -> tuple[float, float]:
    v = stamp[np.isfinite(stamp)]
    if v.size == 0:
        return -1.0, 1.0
    if symmetric:
        a = float(max(np.percentile(np.abs(v), 99.5), 5.0))  # difference D: unit variance, show at least +-5 sigma
        return -a, a
    lo, hi = np.percentile(v, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def plot_triplets(
    triplets: Array,
    titles: Sequence[str] | None = None,
    *,
    per_row: int = 2,
    panel_inches: float = 1.3,
):
    """A figure of cutout triplets, ``per_row`` triplets side by side per row.

    Parameters
    ----------
    triplets : (n, 3, s, s) stamps: [:, 0] science, [:, 1] reference (both in image units,
        shown with a 1-99.5 % stretch per stamp), [:, 2] the ZOGY difference D (unit
        variance, shown symmetric about 0 over at least +-5 sigma). NaN pixels are grey.
    titles : one label per triplet (e.g. ``"tile_0001/r #0 S=12.3"``).
    per_row : triplets per figure row.
    panel_inches : size of one stamp on the figure.

    Returns
    -------
    matplotlib.figure.Figure (Agg canvas attached).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(to_numpy(triplets), dtype=np.float32)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"triplets must be (n, 3, s, s) (science, reference, difference); got shape {t.shape}")
    n = t.shape[0]
    per_row = max(1, min(int(per_row), max(n, 1)))
    rows = max(1, -(-n // per_row))
    cols = 3 * per_row
    fig = Figure(figsize=(cols * panel_inches, rows * (panel_inches + 0.45)), dpi=100)
    FigureCanvasAgg(fig)
    if n == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no candidates", ha="center", va="center")
        ax.set_axis_off()
        return fig
    import matplotlib as mpl

    subs = np.atleast_2d(np.asarray(fig.subfigures(rows, per_row, wspace=0.04, hspace=0.02), dtype=object))
    for k in range(n):
        r, c0 = divmod(k, per_row)
        sf = subs[r, c0]
        if titles is not None and k < len(titles):
            sf.suptitle(str(titles[k]), fontsize=7, y=0.99)
        axes = sf.subplots(1, 3)
        for j, ax in enumerate(axes):
            stamp = t[k, j]
            lo, hi = _limits(stamp, symmetric=(j == 2))
            cmap = mpl.colormaps["RdBu_r" if j == 2 else "gray"].with_extremes(bad="0.6")
            ax.imshow(np.ma.masked_invalid(stamp), origin="lower", cmap=cmap, vmin=lo, vmax=hi,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(_KINDS[j], fontsize=6, labelpad=1)
        sf.subplots_adjust(left=0.02, right=0.98, bottom=0.1, top=0.86, wspace=0.05)
    for r in range(rows):  # empty slots of the last row
        for c0 in range(per_row):
            if r * per_row + c0 >= n:
                subs[r, c0].set_facecolor("none")
    return fig


def triplets_png(triplets: Array, titles: Sequence[str] | None = None, **kwargs: Any) -> bytes:
    """PNG bytes of :func:`plot_triplets` (same arguments)."""
    fig = plot_triplets(triplets, titles, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
