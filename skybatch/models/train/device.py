"""Where arrays live during training: one device or a 1-D ``batch`` mesh; host batches checked and moved there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from skybatch.background import BackgroundIterator
from skybatch.models.train.config import TrainConfig


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




class DeviceFeed(BackgroundIterator[dict[str, jax.Array]]):
    """The training batches, checked and already on the devices: a thread runs ``depth`` batches ahead.

    batches: the host iterator (``make_batches(start_step)``), one dict of arrays per step.
    placement: where batches go (:meth:`_Placement.put_batch`); batch_size: the leading size every
    batch must have; start_step: the step of the first batch (named in error messages).

    While step ``n`` computes, the thread takes batch ``n + 1`` from ``batches``, checks it and calls
    ``jax.device_put``, so reading, gathering and the host-to-device copy overlap the compute. An
    error raised for a batch (bad shape, keys, dtype, or by the data side) is raised by ``next`` at
    that batch's step; the end of ``batches`` ends this iterator. :meth:`close` stops the thread and
    closes ``batches`` (from the thread that iterates it).
    """

    def __init__(self, batches: Iterator[Any], placement: _Placement, batch_size: int, start_step: int,
                 depth: int = 1):
        def placed() -> Iterator[dict[str, jax.Array]]:
            keys: tuple[str, ...] | None = None
            step = start_step
            try:
                for raw in batches:
                    batch = _prepare_batch(raw, batch_size, keys, where=f"batch of step {step}")
                    keys = tuple(sorted(batch))
                    yield placement.put_batch(batch)
                    step += 1
            finally:  # also when the feed is closed: the thread closes the host iterator
                close = getattr(batches, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()

        super().__init__(placed, depth=max(1, depth), name="skybatch-device-feed")

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread (it closes ``batches``) and wait for it at most ``timeout`` seconds."""
        super().close(timeout)
