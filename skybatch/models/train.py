"""A generic streaming trainer for Equinox models: one jitted step, checkpoints, resume, data parallel.

The trainer knows nothing about where batches come from. The caller gives

- an :class:`Objective` (model construction, loss, optional non-trainable state such as an EMA
  target), e.g. :class:`skybatch.models.objectives.VAEObjective`;
- ``make_batches(start_step)``: an iterator of fixed-size batches (dicts of NumPy arrays with a
  leading axis of ``config.batch_size``), the first one being the batch of step ``start_step``.
  The data side guarantees that the batch of step ``s`` depends only on the seed and ``s``, so a
  resumed run continues the very same stream;
- a :class:`TrainConfig`.

:func:`fit` builds the model, restores the newest valid checkpoint in ``out_dir`` (if any), runs
the remaining steps with one ``eqx.filter_jit``-compiled step function, checkpoints every
``checkpoint_every`` steps (atomically: a temporary directory renamed into place), validates every
``validate_every`` steps, and at the end writes ``loss_curve.png``, a final checkpoint and the
model with its card (:mod:`skybatch.models.registry`) in ``out_dir/model``.

Layout of ``out_dir``::

    checkpoints/step_000000100/  state.eqx (model, optimiser state, objective state, PRNG key)
                                 history.npz (per-step train metrics, validation metrics)
                                 meta.json (step, config, objective, sha256 of both files)
    loss_curve.png
    model/                       weights.eqx + card.json (when the model can be registered)

Randomness: the step key is ``fold_in(train_key, step)``, a pure function of ``seed`` and the
step number, so a killed and resumed run replays exactly the same computation.

Data parallelism: with more than one local device (``jax.local_devices()``, or the first
``config.devices`` of them) the batch is split along its first axis with a ``NamedSharding``
over a 1-D mesh named ``"batch"``, and the model, optimiser and objective state are replicated;
XLA inserts the gradient all-reduce. On one device the same step runs without any sharding.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PRNGKeyArray, PyTree

from skybatch.models import registry

__all__ = [
    "CHECKPOINT_FORMAT",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "find_checkpoint",
    "fit",
    "plot_loss_curves",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "skybatch.train_checkpoint/1"
"""Format name written into every checkpoint's ``meta.json``."""

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine")
# Settings a resumed run must share with the checkpoint (they shape the optimiser state or the
# random stream); everything else (steps, learning rate, intervals...) may change on resume.
_RESUME_MUST_MATCH = ("batch_size", "optimizer", "seed")


@runtime_checkable
class Objective(Protocol):
    """What the trainer needs to know about a model and its loss.

    Attributes and methods
    ----------------------
    name : str
        Identifies the objective in checkpoints; a checkpoint is only resumed by an objective
        of the same name.
    init_model(key) -> eqx.Module
        A freshly initialised model.
    init_state(model) -> PyTree
        Non-trainable state (e.g. an EMA copy of the model); ``None`` when there is none.
    loss(model, state, batch, key) -> (loss, metrics)
        Scalar loss to minimise and a dict of scalar metrics, from a batch dict of arrays with
        leading axis ``batch_size``. Traced under ``jax.jit``: use ``jnp`` operations only.
    update_state(model, state, step) -> PyTree
        New state after an optimiser step; ``step`` is the number of optimiser steps taken so far
        (1 after the first), a traced int32 scalar. Return ``state`` unchanged when stateless.
    """

    name: str

    def init_model(self, key: PRNGKeyArray) -> eqx.Module: ...

    def init_state(self, model: eqx.Module) -> PyTree: ...

    def loss(
        self, model: eqx.Module, state: PyTree, batch: dict[str, jax.Array], key: PRNGKeyArray
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def update_state(self, model: eqx.Module, state: PyTree, step: Any) -> PyTree: ...


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run; checked at construction.

    Parameters
    ----------
    steps
        Total number of optimiser steps (a resumed run continues up to this count).
    batch_size
        Rows per batch; every batch from ``make_batches`` must have exactly this leading size, and
        with several devices it must be a multiple of the device count.
    learning_rate
        Peak learning rate (> 0).
    optimizer
        ``"adamw"`` (default), ``"adam"`` or ``"sgd"`` (with momentum 0.9).
    weight_decay
        Decoupled weight decay for ``"adamw"`` (>= 0; ignored by the others).
    grad_clip
        Clip gradients to this global L2 norm; ``None`` disables clipping.
    lr_schedule
        ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``). Changing ``steps`` on resume
        changes a cosine schedule.
    warmup_steps
        Linear learning-rate warm-up over this many first steps (>= 0).
    checkpoint_every
        Write a checkpoint every this many steps (>= 1); one is always written at the end.
    keep_checkpoints
        Keep this many newest checkpoints (>= 1); older ones are deleted.
    validate_every
        Run the validation batches every this many steps; 0 = only at the end (if given).
    log_every
        Pull metrics from the device, call ``on_step`` and update the progress bar every this
        many steps (>= 1). Per-step metrics are recorded either way.
    seed
        Seed of the model initialisation and of all per-step randomness.
    devices
        Use the first this-many local devices; ``None`` = all of them.
    progress
        Show a progress bar on the terminal (tqdm).
    """

    steps: int
    batch_size: int
    learning_rate: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    log_every: int = 10
    seed: int = 0
    devices: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"TrainConfig: {msg}")

        for name in ("steps", "batch_size", "warmup_steps", "checkpoint_every", "keep_checkpoints",
                     "validate_every", "log_every", "seed"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an int, got {v!r}")
        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(math.isfinite(self.learning_rate) and self.learning_rate > 0,
             f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        need(self.optimizer in _OPTIMIZERS, f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
             f"grad_clip must be None or a number > 0, got {self.grad_clip}")
        need(self.lr_schedule in _SCHEDULES, f"lr_schedule must be one of {_SCHEDULES}, got {self.lr_schedule!r}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        need(self.validate_every >= 0, f"validate_every must be >= 0, got {self.validate_every}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.devices is None or (isinstance(self.devices, int) and self.devices >= 1),
             f"devices must be None or an int >= 1, got {self.devices!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the settings (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a YAML run config); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(d))


def build_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimiser described by ``config``: clip, then Adam/AdamW/SGD on a schedule.

    The chain always has the same structure (clipping at +inf when ``grad_clip`` is None, a
    schedule function even for a constant rate), so checkpoints stay loadable when those
    settings change between runs.
    """
    return _optimizer_from_settings(_opt_settings(config))


def _optimizer_from_settings(settings: tuple[Any, ...]) -> optax.GradientTransformation:
    name, lr, weight_decay, grad_clip, lr_schedule, warm, total = settings
    cosine = lr_schedule == "cosine"

    def schedule(count: jax.Array) -> jax.Array:
        c = jnp.asarray(count, jnp.float32)
        factor = jnp.minimum(1.0, (c + 1.0) / warm) if warm > 0 else jnp.float32(1.0)
        if cosine:
            progress = jnp.clip((c - warm) / max(total - warm, 1), 0.0, 1.0)
            factor = factor * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return lr * factor

    if name == "adam":
        opt = optax.adam(schedule)
    elif name == "adamw":
        opt = optax.adamw(schedule, weight_decay=weight_decay)
    else:
        opt = optax.sgd(schedule, momentum=0.9)
    clip = optax.clip_by_global_norm(grad_clip if grad_clip is not None else float("inf"))
    return optax.chain(clip, opt)


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model : the trained model (replicated on the devices used)
    state : the objective's non-trainable state
    step : optimiser steps completed (== config.steps unless the data ran out)
    start_step : step the run started from (0 = fresh, else the resumed checkpoint's step)
    history : ``{"train": {"step": [...], "loss": [...], <metric>: [...]}, "val": {...}}``,
        one train entry per optimiser step and one val entry per validation; ``step`` counts the
        optimiser steps done (the train loss under step k was computed in the k-th step, 1-based)
    out_dir, checkpoint, loss_curve, model_dir : paths written (``model_dir`` None when the
        model could not be registered)
    n_devices : devices the batch was split over
    seconds : wall time of this call
    card : the card written with the model (training settings, metrics, loss curves)
    """

    model: eqx.Module
    state: PyTree
    step: int
    start_step: int
    history: dict[str, dict[str, list[float]]]
    out_dir: Path
    checkpoint: Path | None
    loss_curve: Path | None
    model_dir: Path | None
    n_devices: int
    seconds: float
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def final_train_loss(self) -> float:
        """Mean train loss over the last ``min(10, steps)`` steps."""
        losses = self.history["train"].get("loss", [])
        return float(np.mean(losses[-10:])) if losses else float("nan")

    @property
    def final_val_loss(self) -> float | None:
        """Last validation loss, or None without validation."""
        losses = self.history["val"].get("loss", [])
        return float(losses[-1]) if losses else None


# ----------------------------------------------------------------------------- checkpoints


def _sha256(path: Path) -> str:
    return registry.sha256_file(path)


def _history_to_npz(history: dict[str, dict[str, list[float]]], path: Path) -> None:
    arrays = {
        f"{split}/{name}": np.asarray(values, dtype=np.int64 if name == "step" else np.float64)
        for split, d in history.items()
        for name, values in d.items()
    }
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _history_from_npz(path: Path) -> dict[str, dict[str, list[float]]]:
    history: dict[str, dict[str, list[float]]] = {"train": {}, "val": {}}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            split, name = key.split("/", 1)
            history.setdefault(split, {})[name] = z[key].tolist()
    return history


def _checkpoint_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    found = []
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.is_dir() and p.name.startswith("step_"):
                try:
                    found.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(found)


def _read_valid_meta(path: Path) -> dict[str, Any] | None:
    """meta.json of a checkpoint whose files match their recorded sha256, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            return None
        for fname, key in (("state.eqx", "state_sha256"), ("history.npz", "history_sha256")):
            if _sha256(path / fname) != meta[key]:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def find_checkpoint(out_dir: str | os.PathLike[str]) -> tuple[int, Path] | None:
    """Newest valid checkpoint ``(step, directory)`` under ``out_dir/checkpoints``, or None.

    Invalid ones (missing files, sha256 mismatch, unreadable meta) are skipped with a warning.
    """
    for step, path in reversed(_checkpoint_dirs(Path(out_dir) / "checkpoints")):
        if _read_valid_meta(path) is not None:
            return step, path
        warnings.warn(f"skipping invalid or incomplete checkpoint {path}", stacklevel=2)
    return None


def _write_checkpoint(
    ckpt_root: Path,
    step: int,
    tree: PyTree,
    history: dict[str, dict[str, list[float]]],
    config: TrainConfig,
    objective_name: str,
    n_devices: int,
) -> Path:
    final = ckpt_root / f"step_{step:09d}"
    if final.exists():
        return final
    tmp = ckpt_root / f".tmp-step_{step:09d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with open(tmp / "state.eqx", "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
        f.flush()
        os.fsync(f.fileno())
    _history_to_npz(history, tmp / "history.npz")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "objective": objective_name,
        "config": config.to_dict(),
        "n_devices": n_devices,
        "state_sha256": _sha256(tmp / "state.eqx"),
        "history_sha256": _sha256(tmp / "history.npz"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, final)
    try:  # make the rename itself durable
        fd = os.open(ckpt_root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return final


def _prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    dirs = _checkpoint_dirs(ckpt_root)
    for _, path in dirs[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _clean_tmp(ckpt_root: Path) -> None:
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.name.startswith(".tmp-step_"):
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- placement


@dataclass
class _Placement:
    """Where arrays live: one device (no sharding) or a 1-D ``batch`` mesh over several."""

    devices: list[Any]
    data: NamedSharding | None
    replicated: NamedSharding | None

    @classmethod
    def build(cls, config: TrainConfig) -> _Placement:
        local = jax.local_devices()
        n = len(local) if config.devices is None else config.devices
        if n > len(local):
            raise ValueError(
                f"TrainConfig.devices={config.devices} but only {len(local)} local device(s) exist: "
                f"{local}; lower devices or leave it None"
            )
        devs = list(local[:n])
        if n == 1:
            return cls(devs, None, None)
        if config.batch_size % n:
            raise ValueError(
                f"batch_size={config.batch_size} is not a multiple of the {n} devices used for data "
                f"parallelism; choose a batch_size divisible by {n} or set TrainConfig.devices"
            )
        mesh = Mesh(np.asarray(devs), ("batch",))
        return cls(devs, NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec()))

    @property
    def n(self) -> int:
        return len(self.devices)

    def put_replicated(self, tree: PyTree) -> PyTree:
        """Copy the array leaves of ``tree`` to every device used (or to the one device)."""
        return eqx.filter_shard(tree, self.replicated if self.replicated is not None else self.devices[0])

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Move a host batch to the devices, split along its first axis when sharded."""
        if self.data is None:
            return jax.device_put(batch, self.devices[0])
        rows = next(iter(batch.values())).shape[0]
        return jax.device_put(batch, self.data if rows % self.n == 0 else self.replicated)


def _prepare_batch(
    batch: Any, batch_size: int | None, keys: tuple[str, ...] | None, where: str
) -> dict[str, np.ndarray]:
    if not isinstance(batch, Mapping) or not batch:
        raise TypeError(f"{where}: a batch must be a non-empty dict of arrays, got {type(batch).__name__}")
    out: dict[str, np.ndarray] = {}
    rows = None
    for k, v in batch.items():
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise TypeError(
                f"{where}: batch array {k!r} has dtype {a.dtype}; only numeric arrays can be fed to "
                "the model, drop it from the batch"
            )
        if a.ndim == 0:
            raise ValueError(f"{where}: batch array {k!r} is a scalar; every entry needs a leading batch axis")
        rows = a.shape[0] if rows is None else rows
        expected = batch_size if batch_size is not None else rows
        if a.shape[0] != expected:
            raise ValueError(
                f"{where}: batch array {k!r} has shape {a.shape}, expected a leading axis of "
                f"{expected} (TrainConfig.batch_size); the data side must yield fixed-size batches "
                "(pad or drop the last one)"
            )
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        elif a.dtype.kind in "iu" and a.dtype.itemsize == 8:
            a = a.astype(np.int32)
        out[k] = a
    if keys is not None and tuple(sorted(out)) != keys:
        raise ValueError(
            f"{where}: batch keys {sorted(out)} differ from the first batch's {list(keys)}; every "
            "batch must carry the same arrays"
        )
    return out


# ----------------------------------------------------------------------------- steps


class _Static:
    """Hashable static context of the jitted functions: the objective, the optimiser settings and
    the replicated sharding. Equal contexts share one compilation across :func:`fit` calls in a
    process (e.g. a run resumed in the same notebook); an objective that cannot be hashed is
    compared by identity."""

    def __init__(self, objective: Objective, opt_settings: tuple[Any, ...], replicated: NamedSharding | None):
        self.objective = objective
        self.opt_settings = opt_settings
        self.replicated = replicated
        try:
            hash(objective)
            self._obj_key: Any = objective
        except TypeError:
            self._obj_key = ("id", id(objective))

    def _key(self) -> tuple[Any, ...]:
        return (type(self.objective), self._obj_key, self.opt_settings, self.replicated)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Static):
            return NotImplemented
        if isinstance(self._obj_key, tuple) and self._obj_key[:1] == ("id",):
            return self.objective is other.objective and self.opt_settings == other.opt_settings and self.replicated == other.replicated
        return self._key() == other._key()

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return _optimizer_from_settings(self.opt_settings)


def _opt_settings(config: TrainConfig) -> tuple[Any, ...]:
    """The settings the optimiser depends on (steps only matters for the cosine schedule)."""
    return (
        config.optimizer,
        float(config.learning_rate),
        float(config.weight_decay),
        None if config.grad_clip is None else float(config.grad_clip),
        config.lr_schedule,
        int(config.warmup_steps),
        int(config.steps) if config.lr_schedule == "cosine" else None,
    )


@eqx.filter_jit
def _init_all(static: _Static, key: jax.Array) -> tuple[Any, Any, Any]:
    # One compiled initialisation instead of one small compilation per layer shape.
    model = static.objective.init_model(key)
    opt_state = static.optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return model, static.objective.init_state(model), opt_state


@eqx.filter_jit
def _train_step(static: _Static, model, opt_state, obj_state, batch, step, key):
    objective = static.objective
    step_key = jax.random.fold_in(key, step)

    def loss_fn(m):
        return objective.loss(m, obj_state, batch, step_key)

    (loss, metrics), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = static.optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    obj_state = objective.update_state(model, obj_state, step + 1)
    if static.replicated is not None:
        model, opt_state, obj_state = eqx.filter_shard((model, opt_state, obj_state), static.replicated)
    out = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    out.update(metrics)
    return model, opt_state, obj_state, out


@eqx.filter_jit
def _eval_step(static: _Static, model, obj_state, batch, key):
    loss, metrics = static.objective.loss(model, obj_state, batch, key)
    out = {"loss": loss}
    out.update(metrics)
    return out


def _validate(
    eval_step: Callable[..., Any],
    model: eqx.Module,
    obj_state: PyTree,
    val_batches: Callable[[], Iterable[Mapping[str, Any]]],
    key: jax.Array,
    placement: _Placement,
    step: int,
) -> dict[str, float]:
    """Row-weighted mean of the objective's loss and metrics over the validation batches."""
    sums: dict[str, float] = {}
    total = 0
    keys = None
    for i, raw in enumerate(val_batches()):
        batch = _prepare_batch(raw, None, keys, where=f"validation batch {i} at step {step}")
        keys = tuple(sorted(batch))
        rows = next(iter(batch.values())).shape[0]
        out = jax.device_get(eval_step(model, obj_state, placement.put_batch(batch), jax.random.fold_in(key, i)))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v) * rows
        total += rows
    if total == 0:
        raise ValueError(f"val_batches() yielded no batches at step {step}; pass val_batches=None to skip validation")
    return {k: v / total for k, v in sums.items()}


# ----------------------------------------------------------------------------- plots & card


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
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def _downsample_curve(steps: list[float], values: list[float], max_points: int = 200) -> dict[str, list[float]]:
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.size > max_points:
        edges = np.linspace(0, s.size, max_points + 1).astype(int)
        s = np.asarray([s[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
        v = np.asarray([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    return {"step": [round(float(x), 2) for x in s], "loss": [float(x) for x in v]}


def _objective_settings(objective: Objective) -> dict[str, Any]:
    if dataclasses.is_dataclass(objective) and not isinstance(objective, type):
        return json.loads(json.dumps(dataclasses.asdict(objective), default=str))
    return {}


# ----------------------------------------------------------------------------- fit


def fit(
    objective: Objective,
    make_batches: Callable[[int], Iterator[Mapping[str, np.ndarray]]],
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    val_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None,
    resume: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    card: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``objective``'s model on the batches of ``make_batches``; checkpoint and resume.

    Parameters
    ----------
    objective
        The :class:`Objective` (model, loss, state).
    make_batches
        ``make_batches(start_step)`` returns an iterator whose n-th item is the batch of step
        ``start_step + n``: a dict of NumPy arrays, each with leading axis ``config.batch_size``
        (float64 is cast to float32, int64 to int32). Non-numeric arrays are refused.
    config
        The :class:`TrainConfig`.
    out_dir
        Directory for checkpoints, ``loss_curve.png`` and the final ``model/`` (created).
    val_batches
        ``val_batches()`` returns an iterable of validation batches (any leading size; give
        fixed sizes to avoid one compilation per size). Evaluated every
        ``config.validate_every`` steps and at the end.
    resume
        Continue from the newest valid checkpoint in ``out_dir``. With ``resume=False`` an
        ``out_dir`` that already holds checkpoints is refused (nothing is overwritten).
    on_step
        ``on_step(step, metrics)`` after every ``config.log_every`` steps, with the mean train
        metrics of those steps (``loss``, ``grad_norm``, the objective's) and, when validation ran
        at that step, ``val_<name>`` entries.
    card
        Extra model-card content (e.g. ``{"data": {"store": ..., "manifest": ...}}``) merged into
        the card saved with the model.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Bad batches (wrong size, keys, dtype), a checkpoint written with incompatible settings
        (batch_size, optimizer, seed) or by another objective, too few devices.
    FloatingPointError
        The loss became NaN/inf (the last good checkpoint is kept).
    FileExistsError
        ``resume=False`` and ``out_dir`` already holds checkpoints.

    If ``make_batches`` runs out before ``config.steps``, a warning is issued and the run ends
    there (final checkpoint, curves and model are still written).
    """
    t0 = time.perf_counter()
    if not isinstance(objective, Objective):
        raise TypeError(
            f"objective {objective!r} does not implement the Objective protocol "
            "(name, init_model, init_state, loss, update_state)"
        )
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    _clean_tmp(ckpt_root)
    placement = _Placement.build(config)

    found = find_checkpoint(out)
    if found is not None and not resume:
        raise FileExistsError(
            f"{ckpt_root} already holds checkpoints (newest: step {found[0]}); pass resume=True to "
            "continue that run, or use another out_dir (or delete the checkpoints) to start over"
        )
    if found is not None:  # check compatibility before building anything
        meta = json.loads((found[1] / "meta.json").read_text())
        if meta.get("objective") != objective.name:
            raise ValueError(
                f"checkpoint {found[1]} was written by objective {meta.get('objective')!r}, not "
                f"{objective.name!r}; use another out_dir"
            )
        for name in _RESUME_MUST_MATCH:
            old = meta["config"].get(name)
            if old != getattr(config, name):
                raise ValueError(
                    f"checkpoint {found[1]} was written with {name}={old!r} but the config has "
                    f"{name}={getattr(config, name)!r}; use the same {name} to resume, or another "
                    "out_dir to start over"
                )

    base_key = jax.random.PRNGKey(config.seed)
    init_key, train_key, val_key = jax.random.split(base_key, 3)
    static = _Static(objective, _opt_settings(config), placement.replicated)
    model, obj_state, opt_state = _init_all(static, init_key)
    history: dict[str, dict[str, list[float]]] = {"train": {}, "val": {}}
    start_step = 0
    if found is not None:
        step0, path = found
        skeleton = (model, opt_state, obj_state, train_key)
        try:
            model, opt_state, obj_state, train_key = eqx.tree_deserialise_leaves(path / "state.eqx", skeleton)
        except Exception as err:
            raise ValueError(
                f"checkpoint {path} does not fit the model built by objective {objective.name!r} "
                f"(architecture changed?): {err}"
            ) from err
        history = _history_from_npz(path / "history.npz")
        start_step = step0
        log.info("resuming %s from step %d (%s)", objective.name, step0, path)

    model, opt_state, obj_state, train_key = placement.put_replicated((model, opt_state, obj_state, train_key))
    train_step = partial(_train_step, static)
    eval_step = partial(_eval_step, static) if val_batches is not None else None

    step = start_step
    last_ckpt: Path | None = found[1] if found is not None else None
    last_val_step = history["val"]["step"][-1] if history["val"].get("step") else -1
    pending: list[tuple[int, Any]] = []
    batch_keys: tuple[str, ...] | None = None
    bar = None
    if config.progress and start_step < config.steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start_step, desc=f"train {objective.name}", unit="step")

    def flush() -> dict[str, float]:
        """Move pending per-step metrics to the host, append them to history; return their mean."""
        if not pending:
            return {}
        steps_done = [s for s, _ in pending]
        values = jax.device_get([m for _, m in pending])
        pending.clear()
        tr = history["train"]
        for s, m in zip(steps_done, values):
            loss = float(m["loss"])
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} at step {s}; the last good checkpoint is "
                    f"{last_ckpt}. Lower TrainConfig.learning_rate, set grad_clip, or check the "
                    "data for NaN/inf flux or ivar at pixels with ivar > 0"
                )
            tr.setdefault("step", []).append(s)
            for k, v in m.items():
                tr.setdefault(k, []).append(float(v))
        return {k: float(np.mean([float(m[k]) for m in values])) for k in values[0]}

    def checkpoint() -> Path:
        nonlocal last_ckpt
        flush()
        tree = (model, opt_state, obj_state, train_key)
        last_ckpt = _write_checkpoint(ckpt_root, step, tree, history, config, objective.name, placement.n)
        _prune_checkpoints(ckpt_root, config.keep_checkpoints)
        return last_ckpt

    def run_validation() -> dict[str, float]:
        nonlocal last_val_step
        flush()
        metrics = _validate(eval_step, model, obj_state, val_batches, val_key, placement, step)
        va = history["val"]
        va.setdefault("step", []).append(step)
        for k, v in metrics.items():
            va.setdefault(k, []).append(v)
        last_val_step = step
        return metrics

    try:
        if step < config.steps:
            batches = iter(make_batches(start_step))
            while step < config.steps:
                try:
                    raw = next(batches)
                except StopIteration:
                    warnings.warn(
                        f"make_batches({start_step}) ran out after step {step} of {config.steps}; "
                        "training stops here",
                        stacklevel=2,
                    )
                    break
                batch = _prepare_batch(raw, config.batch_size, batch_keys, where=f"batch of step {step}")
                batch_keys = tuple(sorted(batch))
                model, opt_state, obj_state, metrics = train_step(
                    model, opt_state, obj_state, placement.put_batch(batch), jnp.int32(step), train_key
                )
                pending.append((step + 1, metrics))  # recorded under the count of steps done
                step += 1
                do_val = eval_step is not None and config.validate_every and step % config.validate_every == 0
                if do_val or step % config.log_every == 0 or step == config.steps:
                    logged = flush()
                    if do_val:
                        logged.update({f"val_{k}": v for k, v in run_validation().items()})
                    if bar is not None:
                        bar.update(step - bar.n)
                        bar.set_postfix(loss=f"{logged.get('loss', float('nan')):.4g}")
                    if on_step is not None and logged:
                        on_step(step, logged)
                if step % config.checkpoint_every == 0:
                    checkpoint()
        if eval_step is not None and last_val_step != step:
            run_validation()
        checkpoint()
    except KeyboardInterrupt:
        if step > start_step:
            try:
                path = checkpoint()
                log.warning("interrupted: checkpoint of step %d written to %s", step, path)
            except FloatingPointError:
                pass
        raise
    finally:
        if bar is not None:
            bar.close()

    loss_curve = plot_loss_curves(history, out / "loss_curve.png", title=objective.name)
    full_card: dict[str, Any] = dict(card or {})
    training = dict(full_card.get("training", {}))
    training.update(
        {
            "objective": objective.name,
            "objective_settings": _objective_settings(objective),
            "config": config.to_dict(),
            "steps_done": step,
            "resumed_from": start_step,
            "n_devices": placement.n,
            "loss_curve": {
                "train": _downsample_curve(history["train"].get("step", []), history["train"].get("loss", [])),
                "val": {"step": history["val"].get("step", []), "loss": history["val"].get("loss", [])},
            },
        }
    )
    full_card["training"] = training
    metrics_card = dict(full_card.get("metrics", {}))
    tr_hist = history["train"]
    for k, v in tr_hist.items():
        if k != "step" and v:
            metrics_card[f"train_{k}"] = float(np.mean(v[-10:]))
    for k, v in history["val"].items():
        if k != "step" and v:
            metrics_card[f"val_{k}"] = float(v[-1])
    full_card["metrics"] = metrics_card

    model_dir: Path | None = out / "model"
    try:
        registry.save(model_dir, model, full_card, overwrite=True)
    except registry.ModelRegistryError as err:
        log.info("model not saved to the registry: %s", err)
        model_dir = None
    return TrainResult(
        model=model,
        state=obj_state,
        step=step,
        start_step=start_step,
        history=history,
        out_dir=out,
        checkpoint=last_ckpt,
        loss_curve=loss_curve,
        model_dir=model_dir,
        n_devices=placement.n,
        seconds=time.perf_counter() - t0,
        card=full_card,
    )
