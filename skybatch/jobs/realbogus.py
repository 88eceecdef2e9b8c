"""The real/bogus jobs: train the classifier on generated cutout triplets, and score the candidates of a
difference store with it (``skybatch run train --model realbogus``, ``skybatch run classify --store DIFF
--model M``; ``skybatch run realbogus`` is the older spelling of both).

Both run in this process (small CNN, a few thousand stamps): they take no Dask client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from skybatch.checks import check_positive_ints
from skybatch.jobs._core import ResultReport

__all__ = ["TrainConfig", "TrainReport", "ClassifyConfig", "ClassifyReport", "train", "classify",
           "Config", "Report", "run", "run_with_client"]

COMMAND = "train"


@dataclass
class TrainConfig:
    """Settings of `skybatch run train --model realbogus`.

    out: the model directory to write (new or empty).
    store: a difference store the model is meant for (optional): its cutout size is checked against
        ``stamp`` (store cutouts are cropped to the stamp) and it is named in the model card.
    examples: generated training triplets.
    epochs: passes over the training triplets.
    stamp: training stamp size in px (odd).
    completeness: completeness of real sources the threshold is chosen for.
    seed: seed of the generated set and the initial weights.
    """

    out: str
    store: str | None = None
    examples: int = 12000
    epochs: int = 12
    stamp: int = 21
    completeness: float = 0.98
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out: give --out MODEL_DIR to train into")
        check_positive_ints(self, ("examples", "epochs", "stamp"))
        if self.stamp % 2 == 0:
            raise ValueError(f"stamp: must be odd (a centred stamp), got {self.stamp}")
        if not 0.0 < self.completeness < 1.0:
            raise ValueError(f"completeness: must be in (0, 1), got {self.completeness}")


@dataclass
class TrainReport(ResultReport):
    """Outcome of real/bogus training: ``model`` is the model directory; ``details`` holds
    ``temperature``, ``threshold``, ``completeness`` and the held-out ``held_out_ece``,
    ``held_out_fn``, ``held_out_fp`` on a fresh generated set."""

    def summary(self) -> str:
        d = self.details
        return (f"model: {self.model} (temperature {d['temperature']:.3f}, threshold {d['threshold']:.4f} for "
                f"{d['completeness']:.0%} completeness)\nheld-out generated triplets: ECE {d['held_out_ece']:.4f}, "
                f"false negatives {d['held_out_fn']:.4f}, false positives {d['held_out_fp']:.4f}")


@dataclass
class ClassifyConfig:
    """Settings of `skybatch run classify` with a real/bogus model.

    store: the difference store whose candidates to score.
    model: a real/bogus model directory.
    storage_options: fsspec options of the store.
    """

    store: str
    model: str
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassifyReport(ResultReport):
    """Outcome of real/bogus scoring: ``details`` holds ``n_candidates``, ``n_real``, ``threshold``,
    ``completeness`` and ``catalogue``."""

    def summary(self) -> str:
        d = self.details
        return (f"scored {d['n_candidates']} candidates: {d['n_real']} real at threshold {d['threshold']:.4f} "
                f"({d['completeness']:.0%} completeness); columns realbogus_score, realbogus_real in "
                f"{d['catalogue']}" + (f" and variables {', '.join(d['store_variables'])} in the store's candidates "
                                       "group" if d.get("store_variables") else ""))


def _store_stamp(store: str) -> int:
    """The cutout side (px) of a difference store's candidates; ValueError naming the store otherwise."""
    from skybatch.store.difference_store import open_candidates

    try:
        cut = open_candidates(store, None)["cutouts"]
    except Exception as e:  # noqa: BLE001 - any failure to read means: not a usable difference store
        raise ValueError(f"store: {store} is not a difference store with candidate cutouts "
                         f"(make one with `skybatch run difference`): {e}") from None
    return int(cut.shape[-1])


def train(cfg: TrainConfig) -> TrainReport:
    """Train a real/bogus model into ``cfg.out`` and measure it on a fresh generated set."""
    import numpy as np

    from skybatch.models.calibration import expected_calibration_error
    from skybatch.models.realbogus import train_realbogus, triplet_features
    from skybatch.sample.realbogus import TRAIN_KINDS, make_realbogus_set, training_weights

    if os.path.exists(cfg.out) and os.listdir(cfg.out):
        raise ValueError(f"out: {cfg.out} is not empty; choose a new directory for the model")
    data: dict[str, Any] = {"generated": cfg.examples, "stamp": cfg.stamp, "seed": cfg.seed}
    if cfg.store:
        side = _store_stamp(cfg.store)
        if side < cfg.stamp:
            raise ValueError(f"stamp: {cfg.stamp} px is larger than the cutouts of {cfg.store} ({side} px); "
                             f"give --stamp {side} or less")
        data["difference_store"] = cfg.store
    tr = make_realbogus_set(cfg.examples, size=cfg.stamp, seed=cfg.seed, kinds=TRAIN_KINDS)
    model = train_realbogus(tr.triplets, tr.label, epochs=cfg.epochs, seed=cfg.seed, completeness=cfg.completeness,
                            weights=training_weights(tr.kind, tr.snr))
    te = make_realbogus_set(max(2000, cfg.examples // 4), size=cfg.stamp, seed=cfg.seed + 1)
    p = model.score(te.triplets, triplet_features(te.triplets))
    y = te.label
    ece = float(expected_calibration_error(np.stack([1 - p, p], 1), y))
    fn, fp = float(np.mean(p[y == 1] < model.threshold)), float(np.mean(p[y == 0] >= model.threshold))
    metrics = {"held_out_ece": ece, "held_out_fn": fn, "held_out_fp": fp}
    model.save(cfg.out, {"data": data, "metrics": metrics})
    return TrainReport(store=cfg.store, model=cfg.out, details={
        "temperature": float(model.temperature), "threshold": float(model.threshold),
        "completeness": float(model.completeness), **metrics})


def classify(cfg: ClassifyConfig) -> ClassifyReport:
    """Write ``realbogus_score`` / ``realbogus_real`` into ``cfg.store``'s candidate catalogue."""
    from skybatch.pipeline.difference.realbogus import classify_difference_store

    r = classify_difference_store(cfg.store, cfg.model, cfg.storage_options or None)
    return ClassifyReport(store=cfg.store, model=cfg.model, details=dict(r))


#: the job protocol (``Config`` / ``run`` / ``run_with_client``) for the training side
Config = TrainConfig
Report = TrainReport


def run_with_client(cfg: TrainConfig, client: Any = None) -> TrainReport:
    """Train (the client is not used: training runs in this process)."""
    return train(cfg)


def run(cfg: TrainConfig, client: Any = None) -> TrainReport:
    """Train in this process (no cluster is started)."""
    return train(cfg)
