"""Probability calibration of a classifier: temperature scaling, ECE, reliability diagrams.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on a held-out
validation set by minimising the negative log-likelihood; it leaves the predicted class unchanged
and only sharpens (T < 1) or softens (T > 1) the probabilities.

The expected calibration error (ECE) bins the predictions by confidence (the top-class
probability) into ``n_bins`` equal-width bins on [0, 1] and takes the count-weighted mean of
``|accuracy - mean confidence|`` over bins.

Labels are class indices; rows labelled -1 (unknown class, see
:func:`skybatch.models.classifier.class_index`) are left out everywhere. Array functions take
NumPy or CuPy arrays (one code path via :func:`skybatch.xp.get_namespace`); the temperature fit
runs on the host with SciPy.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skybatch.xp import get_namespace, to_numpy

__all__ = [
    "ReliabilityDiagram",
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "plot_reliability_diagram",
    "reliability_diagram",
    "softmax",
]


def softmax(logits: Any, temperature: float = 1.0) -> Any:
    """Row-wise ``softmax(logits / temperature)``; logits (N, K) -> probabilities (N, K)."""
    xp = get_namespace(logits)
    z = logits / temperature
    z = z - xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(z)
    return e / xp.sum(e, axis=-1, keepdims=True)


def apply_temperature(logits: Any, temperature: float) -> Any:
    """Calibrated probabilities ``softmax(logits / temperature)``, shape (N, K)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(logits, temperature)


def _labelled(logits_or_probs: Any, labels: Any, name: str) -> tuple[Any, Any]:
    xp = get_namespace(logits_or_probs, labels)
    if logits_or_probs.ndim != 2:
        raise ValueError(f"{name} must have shape (N, n_classes), got {logits_or_probs.shape}")
    if labels.shape != (logits_or_probs.shape[0],):
        raise ValueError(
            f"labels must have shape ({logits_or_probs.shape[0]},) to match {name}, got {labels.shape}"
        )
    keep = labels >= 0
    if int(xp.sum(xp.astype(keep, xp.int64))) == 0:
        raise ValueError("no labelled rows (every label is -1): nothing to calibrate against")
    n_classes = logits_or_probs.shape[1]
    if int(xp.max(labels)) >= n_classes:
        raise ValueError(f"labels must lie in [-1, {n_classes - 1}], got max {int(xp.max(labels))}")
    return logits_or_probs[keep], xp.astype(labels[keep], xp.int64)


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of the labelled rows at ``temperature``.

    **Arguments:** `logits` (N, K); `labels` (N,) class indices, -1 rows ignored.
    """
    lg, lab = _labelled(logits, labels, "logits")
    xp = get_namespace(lg)
    z = lg / temperature
    zmax = xp.max(z, axis=-1, keepdims=True)
    logz = xp.log(xp.sum(xp.exp(z - zmax), axis=-1)) + zmax[:, 0]
    onehot = lab[:, None] == xp.arange(lg.shape[1])[None, :]
    picked = xp.sum(xp.where(onehot, z, 0.0), axis=-1)
    return float(xp.mean(logz - picked))


def fit_temperature(
    logits: Any, labels: Any, *, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Fit the temperature ``T`` minimising the validation NLL of ``softmax(logits / T)``.

    **Arguments:** `logits` (N, K) validation logits; `labels` (N,) class indices, -1 ignored;
    `bounds` search range for ``T``.

    **Returns:** ``T`` (> 1 means the model was over-confident).

    The NLL is minimised over ``log T`` with SciPy's bounded Brent method on the host.
    """
    from scipy.optimize import minimize_scalar

    lg = np.asarray(to_numpy(logits), dtype=np.float64)
    lab = np.asarray(to_numpy(labels))
    lg, lab = _labelled(lg, lab, "logits")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    res = minimize_scalar(
        lambda log_t: negative_log_likelihood(lg, lab, math.exp(log_t)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    t = float(math.exp(res.x))
    if min(abs(t - lo), abs(t - hi)) < 1e-3 * t:
        raise ValueError(
            f"the fitted temperature {t:.4g} sits on the search bound {bounds}: the logits look "
            "degenerate (constant, or labels unrelated to them); check the validation set"
        )
    return t


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Reliability-diagram data (NumPy arrays, on the host).

    Attributes
    ----------
    bin_edges : (n_bins + 1,) confidence bin edges on [0, 1]
    confidence : (n_bins,) mean top-class probability in each bin (NaN where empty)
    accuracy : (n_bins,) fraction of correct top-class predictions in each bin (NaN where empty)
    count : (n_bins,) number of labelled rows in each bin
    ece : expected calibration error, ``sum_b count_b / N * |accuracy_b - confidence_b|``
    """

    bin_edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN bins become None)."""

        def clean(a: np.ndarray) -> list[Any]:
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {
            "bin_edges": [float(v) for v in self.bin_edges],
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
            "count": [int(v) for v in self.count],
            "ece": float(self.ece),
        }


def reliability_diagram(probs: Any, labels: Any, n_bins: int = 15) -> ReliabilityDiagram:
    """Bin labelled predictions by confidence; see :class:`ReliabilityDiagram`.

    **Arguments:** `probs` (N, K) class probabilities (rows sum to 1); `labels` (N,) class
    indices, -1 ignored; `n_bins` number of equal-width confidence bins (default 15).
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    n_bins = int(n_bins)
    p, lab = _labelled(probs, labels, "probs")
    xp = get_namespace(p)
    conf = xp.max(p, axis=-1)
    pred = xp.argmax(p, axis=-1)
    correct = xp.astype(pred == lab, p.dtype)
    idx = xp.clip(xp.astype(xp.floor(conf * n_bins), xp.int64), 0, n_bins - 1)
    member = xp.astype(idx[:, None] == xp.arange(n_bins)[None, :], p.dtype)  # (N, n_bins)
    count = xp.sum(member, axis=0)
    sum_conf = xp.sum(member * conf[:, None], axis=0)
    sum_acc = xp.sum(member * correct[:, None], axis=0)
    count_np = to_numpy(count).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count_np > 0, to_numpy(sum_conf) / count_np, np.nan)
        mean_acc = np.where(count_np > 0, to_numpy(sum_acc) / count_np, np.nan)
    total = count_np.sum()
    gap = np.where(count_np > 0, np.abs(mean_acc - mean_conf), 0.0)
    ece = float(np.sum(count_np / total * gap))
    return ReliabilityDiagram(
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1),
        confidence=mean_conf,
        accuracy=mean_acc,
        count=count_np.astype(np.int64),
        ece=ece,
    )


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error of class probabilities (N, K) against labels (N,); -1 ignored.

    0 means perfectly calibrated; equal-width confidence bins, ``n_bins`` (default 15).
    """
    return reliability_diagram(probs, labels, n_bins).ece


def plot_reliability_diagram(
    diagrams: ReliabilityDiagram | dict[str, ReliabilityDiagram],
    path: str | os.PathLike[str],
    *,
    title: str = "Reliability diagram",
) -> Path:
    """Write a reliability diagram PNG (accuracy vs confidence, with the count histogram).

    **Arguments:** `diagrams` one diagram or ``{label: diagram}`` (e.g. ``{"before": d0,
    "after T=1.8": d1}``); `path` output PNG; `title` figure title.

    **Returns:** the written path. Uses matplotlib's Agg canvas (no display, no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(diagrams, ReliabilityDiagram):
        diagrams = {"model": diagrams}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 6.0))
    FigureCanvasAgg(fig)
    ax, axh = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for label, d in diagrams.items():
        centres = 0.5 * (d.bin_edges[:-1] + d.bin_edges[1:])
        ok = d.count > 0
        ax.plot(d.confidence[ok], d.accuracy[ok], marker="o", lw=1.5, label=f"{label} (ECE {d.ece:.3f})")
        axh.step(centres, d.count, where="mid", label=label)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    axh.set_xlabel("confidence (top-class probability)")
    axh.set_ylabel("count")
    axh.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out
