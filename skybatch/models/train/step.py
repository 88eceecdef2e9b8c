"""The jitted functions of the trainer: initialisation, one optimiser step, evaluation and validation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import equinox as eqx
import jax
import optax
from jax.sharding import NamedSharding
from jaxtyping import PyTree

from skybatch.models.train.config import Objective, _optimizer_from_settings
from skybatch.models.train.device import _Placement, _prepare_batch


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


