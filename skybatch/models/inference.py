"""Run a jitted batch function over many rows in fixed-size batches (one compilation per shape).

Model-mapping code (e.g. the pipeline's ``map_model`` over store chunks) calls
:func:`apply_in_batches` with a module-level jitted function such as
:func:`skybatch.models.vae.reconstruct_batch` or :func:`skybatch.models.classifier.predict_logits`.
The last partial batch is padded with copies of its last row (so padded rows are valid
spectra) and the padding is cut from the outputs, so the function only ever sees one shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

__all__ = ["apply_in_batches"]


def apply_in_batches(
    fn: Callable[..., Any],
    model: Any,
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    **kwargs: Any,
) -> Any:
    """Apply ``fn(model, **batch, **kwargs)`` to ``arrays`` in batches of ``batch_size`` rows.

    **Arguments:** `fn` a jitted batch function; `model` its first argument; `arrays` keyword
    arrays sharing a leading axis of N rows (e.g. ``{"flux": ..., "ivar": ...}``); `batch_size`
    rows per call (every call gets exactly this many; the tail is padded); `kwargs` passed as is.

    **Returns:** ``fn``'s output pytree with NumPy leaves concatenated along the first axis and
    cut to N rows (every output leaf must have a leading batch axis).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    arrs = {k: np.asarray(v) for k, v in arrays.items()}
    if not arrs:
        raise ValueError("apply_in_batches needs at least one input array")
    sizes = {k: a.shape[0] for k, a in arrs.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ValueError(f"input arrays must share their first axis; got row counts {sizes}")
    if n == 0:
        raise ValueError("apply_in_batches got 0 rows")
    outputs = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {}
        for k, a in arrs.items():
            part = a[start:stop]
            if stop - start < batch_size:
                pad = np.repeat(part[-1:], batch_size - (stop - start), axis=0)
                part = np.concatenate([part, pad], axis=0)
            batch[k] = part
        out = fn(model, **batch, **kwargs)
        outputs.append(jax.tree_util.tree_map(lambda x, m=stop - start: np.asarray(x)[:m], out))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=0), *outputs)
