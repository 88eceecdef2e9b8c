"""Loss curves of a training run: the PNG and the down-sampled curve kept in the model card."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def plot_loss_curves(history: Mapping[str, Mapping[str, list[float]]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write train (per step, with a running mean) and validation loss against step as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    tr = history.get("train", {})
    va = history.get("val", {})
    steps = np.asarray(tr.get("step", []))
    loss = np.asarray(tr.get("loss", []), dtype=float)
    positive = loss.size > 0 and bool(np.all(loss[np.isfinite(loss)] > 0))
    if loss.size:
        ax.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="train (per step)")
        w = max(1, min(50, loss.size // 20))
        if w > 1:
            run = np.convolve(loss, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1 :], run, color="C0", lw=1.5, label=f"train ({w}-step mean)")
    if va.get("loss"):
        vl = np.asarray(va["loss"], dtype=float)
        positive = positive and bool(np.all(vl > 0))
        ax.plot(va["step"], vl, "o-", color="C1", lw=1.5, ms=4, label="validation")
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    # fixed margins: tight_layout measures every text box and costs more than drawing the figure
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92 if title else 0.96)
    fig.savefig(out, dpi=100)
    return out


def _downsample_curve(steps: list[float], values: list[float], max_points: int = 200) -> dict[str, list[float]]:
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.size > max_points:
        edges = np.linspace(0, s.size, max_points + 1).astype(int)
        s = np.asarray([s[a:b].mean() for a, b in itertools.pairwise(edges)])
        v = np.asarray([v[a:b].mean() for a, b in itertools.pairwise(edges)])
    return {"step": [round(float(x), 2) for x in s], "loss": [float(x) for x in v]}


