"""Training settings: the :class:`Objective` protocol, :class:`TrainConfig` and the optax optimiser it describes."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray, PyTree

CHECKPOINT_FORMAT = "skybatch.train_checkpoint/1"
"""Format name written into every checkpoint's ``meta.json``."""

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine")
# Settings a resumed run must share with the checkpoint (they shape the optimiser state or the
# random stream); everything else (steps, learning rate, intervals...) may change on resume.
_RESUME_MUST_MATCH = ("batch_size", "optimizer", "seed")


#: The model type an :class:`Objective` trains (any Equinox module).
ModelT = TypeVar("ModelT", bound=eqx.Module)


@runtime_checkable
class Objective(Protocol[ModelT]):
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

    @property
    def name(self) -> str: ...

    def init_model(self, key: PRNGKeyArray) -> ModelT: ...

    def init_state(self, model: ModelT) -> PyTree: ...

    def loss(
        self, model: ModelT, state: PyTree, batch: dict[str, jax.Array], key: PRNGKeyArray
    ) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def update_state(self, model: ModelT, state: PyTree, step: Any) -> PyTree: ...


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


