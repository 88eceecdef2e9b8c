"""Fast weight initialisation of Equinox models from a single random draw.

Why: with jax 0.10 on CPU (``jax_threefry_partitionable`` on, the default), compiling one
``jax.random.uniform`` for a 3-D shape such as a ``Conv1d`` weight (32, 16, 9) took 4-6 s on the
project machine, a 2-D one 0.7 s (1-D: 0.3-0.5 s). Equinox draws every layer separately, so
building a small CNN cost 10-17 s before the first training step. Here the model skeleton is
built shape-only (``eqx.filter_eval_shape``) and all ``Linear``/``Conv`` weights and biases are
then cut from ONE flat uniform draw, in one jitted call.

The distribution is Equinox's (and PyTorch's) default: ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``
for weights and biases, ``fan_in`` being the product of the weight's non-output dimensions
(``in_features``, or ``in_channels/groups * prod(kernel_size)``).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

__all__ = ["fan_in_uniform"]

T = TypeVar("T")
_LAYERS = (eqx.nn.Linear, eqx.nn.Conv)


def _layers(tree: Any) -> list[Any]:
    is_layer = lambda x: isinstance(x, _LAYERS)  # noqa: E731
    return [x for x in jax.tree_util.tree_leaves(tree, is_leaf=is_layer) if is_layer(x)]


def _params(tree: Any) -> list[Any]:
    out = []
    for layer in _layers(tree):
        out.append(layer.weight)
        if layer.bias is not None:
            out.append(layer.bias)
    return out


@eqx.filter_jit
def _fill(skeleton: T, key: PRNGKeyArray) -> T:
    entries = []
    for layer in _layers(skeleton):
        fan_in = max(1, math.prod(layer.weight.shape[1:]))
        entries.append((layer.weight.shape, layer.weight.dtype, fan_in))
        if layer.bias is not None:
            entries.append((layer.bias.shape, layer.bias.dtype, fan_in))
    if not entries:
        return skeleton
    total = sum(math.prod(shape) for shape, _, _ in entries)
    u = jax.random.uniform(key, (total,), jnp.float32, minval=-1.0, maxval=1.0)
    values, offset = [], 0
    for shape, dtype, fan_in in entries:
        n = math.prod(shape)
        values.append((u[offset : offset + n].reshape(shape) / math.sqrt(fan_in)).astype(dtype))
        offset += n
    return eqx.tree_at(_params, skeleton, values)


def fan_in_uniform(skeleton: T, key: PRNGKeyArray) -> T:
    """Fill every ``eqx.nn.Linear`` / ``eqx.nn.Conv*`` weight and bias of ``skeleton``.

    **Arguments:** `skeleton` a pytree of modules, typically built shape-only with
    ``eqx.filter_eval_shape(eqx.nn.MLP, ..., key=key)`` (its array leaves may be
    ``jax.ShapeDtypeStruct``); `key` a PRNG key.

    **Returns:** the same pytree with those leaves drawn from ``U(+-1/sqrt(fan_in))``. Other
    array leaves (e.g. norm scales) are left as they are, so build them for real or fill them
    yourself. Works eagerly (one compilation per skeleton structure), under ``jax.jit`` and under
    ``eqx.filter_eval_shape``.
    """
    return _fill(skeleton, key)
