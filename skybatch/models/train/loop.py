"""The training loop :func:`fit`: build or resume, step, log, validate, checkpoint, save the model."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from skybatch.models import registry
from skybatch.models.train.checkpoint import (
    _clean_tmp,
    _history_from_npz,
    _prune_checkpoints,
    _write_checkpoint,
    find_checkpoint,
)
from skybatch.models.train.config import (
    _RESUME_MUST_MATCH,
    ModelT,
    Objective,
    TrainConfig,
    _opt_settings,
)
from skybatch.models.train.device import DeviceFeed, _Placement
from skybatch.models.train.plots import _downsample_curve, plot_loss_curves
from skybatch.models.train.step import (
    _eval_step,
    _init_all,
    _Static,
    _train_step,
    _validate,
)

log = logging.getLogger("skybatch.models.train")

@dataclass
class TrainResult(Generic[ModelT]):
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

    model: ModelT
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


def _objective_settings(objective: Objective) -> dict[str, Any]:
    if dataclasses.is_dataclass(objective) and not isinstance(objective, type):
        return json.loads(json.dumps(dataclasses.asdict(objective), default=str))
    return {}




def fit(
    objective: Objective[ModelT],
    make_batches: Callable[[int], Iterator[Mapping[str, np.ndarray]]],
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    val_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None,
    resume: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    card: Mapping[str, Any] | None = None,
) -> TrainResult[ModelT]:
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

    start_step = found[0] if found is not None else 0
    feed: DeviceFeed | None = None
    if start_step < config.steps:
        # batches are checked and put on the devices one step ahead, in a thread (device.py); started
        # now, the first chunk reads overlap building (or restoring) the model
        feed = DeviceFeed(iter(make_batches(start_step)), placement, config.batch_size, start_step)
    try:
        base_key = jax.random.PRNGKey(config.seed)
        init_key, train_key, val_key = jax.random.split(base_key, 3)
        static = _Static(objective, _opt_settings(config), placement.replicated)
        model, obj_state, opt_state = _init_all(static, init_key)
        history: dict[str, dict[str, list[float]]] = {"train": {}, "val": {}}
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
            log.info("resuming %s from step %d (%s)", objective.name, step0, path)
        model, opt_state, obj_state, train_key = placement.put_replicated((model, opt_state, obj_state, train_key))
    except BaseException:
        if feed is not None:
            feed.close()
        raise
    train_step = partial(_train_step, static)
    eval_step = partial(_eval_step, static) if val_batches is not None else None

    step = start_step
    last_ckpt: Path | None = found[1] if found is not None else None
    last_val_step = history["val"]["step"][-1] if history["val"].get("step") else -1
    pending: list[tuple[int, Any]] = []
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
        assert eval_step is not None and val_batches is not None  # only called when val_batches was given
        flush()
        metrics = _validate(eval_step, model, obj_state, val_batches, val_key, placement, step)
        va = history["val"]
        va.setdefault("step", []).append(step)
        for k, v in metrics.items():
            va.setdefault(k, []).append(v)
        last_val_step = step
        return metrics

    try:
        if feed is not None:
            while step < config.steps:
                try:
                    batch = next(feed)
                except StopIteration:
                    warnings.warn(
                        f"make_batches({start_step}) ran out after step {step} of {config.steps}; "
                        "training stops here",
                        stacklevel=2,
                    )
                    break
                model, opt_state, obj_state, metrics = train_step(
                    model, opt_state, obj_state, batch, np.asarray(step, np.int32), train_key
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
        if feed is not None:
            feed.close()
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
        registry.save(out / "model", model, full_card, overwrite=True)
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
