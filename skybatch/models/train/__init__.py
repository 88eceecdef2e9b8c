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

from skybatch.models.train.checkpoint import find_checkpoint
from skybatch.models.train.config import (
    CHECKPOINT_FORMAT,
    Objective,
    TrainConfig,
    build_optimizer,
)
from skybatch.models.train.loop import TrainResult, fit
from skybatch.models.train.plots import plot_loss_curves

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
