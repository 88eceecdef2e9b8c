"""Map a JAX / Equinox model over every spectrum of a store, writing outputs back into it.

``map_model(store, model, outputs=("latent",))`` calls ``model`` (or
``getattr(model, method)``) on fixed-size batches of the store's ``inputs``
and writes each output as a new variable on the ``spectrum`` dimension, so one
``xarray.open_zarr`` shows a spectrum with everything computed about it.

How it scales:

- one Dask task per store chunk; chunks already recorded in the stage's
  manifest (same model, same inputs) are skipped, so a killed run resumes;
- the model is scattered to every worker once and passed to the tasks as an
  argument (never closed over), and the jitted function is defined at module
  level, so each worker compiles once per batch shape;
- every batch has exactly ``batch_size`` rows (the last one is padded), so no
  shape is ever compiled twice.

The model acts on ONE spectrum (e.g. ``flux`` of shape ``(n_wavelength,)``)
and is vmapped here, exactly like ``jax.vmap(model)(flux)`` in memory.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from skybatch.pipeline.chunkrun import chunk_ranges, run_chunk_tasks
from skybatch.store.manifest import Manifest, chunk_fingerprint
from skybatch.store.spectra_store import consolidate, open_group

__all__ = ["map_model", "MapModelReport", "model_fingerprint", "apply_batched"]


@dataclass
class MapModelReport:
    """Outcome of :func:`map_model`: variables written, chunk counts, failures (re-run to retry)."""

    store: str
    outputs: dict[str, tuple[str, ...]]
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    failed_chunks: list[dict[str, Any]]
    seconds: float
    spectra_written: int

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_chunks else 0

    def summary(self) -> str:
        outs = ", ".join(f"{k}{v}" for k, v in self.outputs.items())
        s = (f"store: {self.store}\nwrote: {outs}\nchunks: {self.chunks_written} written, "
             f"{self.chunks_skipped} already done, {self.chunks_total} total ({self.seconds:.1f} s)")
        for c in self.failed_chunks:
            s += f"\nFAILED chunk {c['chunk']}: {c['error']} -- re-run to retry"
        return s


def model_fingerprint(model: Any) -> str:
    """sha256 (16 hex) of a model's structure and array leaves: identifies its outputs."""
    import equinox as eqx
    import jax

    h = hashlib.sha256()
    arrays, static = eqx.partition(model, eqx.is_array)
    h.update(str(jax.tree_util.tree_structure(arrays)).encode())
    h.update(repr(jax.tree_util.tree_leaves(static)).encode()[:100_000])
    for leaf in jax.tree_util.tree_leaves(arrays):
        a = np.asarray(leaf)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _call(model, method, *xs):
    import jax

    fn = model if method is None else getattr(model, method)
    return jax.vmap(fn)(*xs)


_JITTED = None


def _jitted():
    """The module-level jitted call (one compile cache per worker process)."""
    global _JITTED
    if _JITTED is None:
        import equinox as eqx

        _JITTED = eqx.filter_jit(_call)
    return _JITTED


def apply_batched(model: Any, method: str | None, xs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Run the vmapped model over rows of ``xs`` in fixed batches of ``batch_size`` (last one padded).

    xs: input arrays sharing their first axis (n rows). Returns one NumPy array
    per model output, each with n rows.
    """
    import jax

    n = xs[0].shape[0]
    fn = _jitted()
    # Keep one batch in flight while dispatching the next: JAX runs them asynchronously, so a
    # batch's padding, transfer and dispatch overlap the previous one's compute (two at most, so
    # memory stays flat however many rows are passed).
    outs: list[list[np.ndarray]] = []
    pending: list[tuple[int, list]] = []

    def collect(rows: int, leaves: list) -> None:
        if not outs:
            outs.extend([] for _ in leaves)
        for o, r in zip(outs, leaves):
            o.append(np.asarray(jax.device_get(r))[:rows])

    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        batch = []
        for x in xs:
            part = x[a:b]
            if b - a < batch_size:
                pad = np.zeros((batch_size - (b - a),) + x.shape[1:], x.dtype)
                part = np.concatenate([part, pad])
            batch.append(part)
        res = fn(model, method, *batch)
        pending.append((b - a, list(res) if isinstance(res, (tuple, list)) else [res]))
        if len(pending) > 1:
            collect(*pending.pop(0))
    for p in pending:
        collect(*p)
    return [np.concatenate(o) for o in outs]


def _map_chunk(task, store, store_options, model, method, inputs, outputs, batch_size, stage, run_id):
    k, a, b, fp = task
    g = open_group(store, store_options)
    xs = []
    for name in inputs:
        x = np.asarray(g[name][a:b])
        xs.append(x.astype(np.float32, copy=False) if x.dtype.kind == "f" else x)
    results = apply_batched(model, method, xs, batch_size)
    if len(results) != len(outputs):
        raise ValueError(f"the model returned {len(results)} outputs but outputs={outputs} names {len(outputs)}")
    for name, r in zip(outputs, results):
        g[name][a:b] = r
    rec = {"chunk": k, "start": a, "stop": b, "fingerprint": fp, "run_id": run_id,
           "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Manifest(store, store_options, stage=stage).mark_chunk_done(rec)
    return rec


def _output_specs(model, method, g, inputs, outputs, batch_size, output_dims):
    import equinox as eqx
    import jax

    shapes = []
    for name in inputs:
        if name not in g:
            raise KeyError(f"input {name!r} is not in the store; it has {sorted(g.array_keys())}")
        arr = g[name]
        dt = np.float32 if arr.dtype.kind == "f" else arr.dtype
        shapes.append(jax.ShapeDtypeStruct((batch_size,) + tuple(arr.shape[1:]), dt))
    out = eqx.filter_eval_shape(_call, model, method, *shapes)
    leaves = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(leaves) != len(outputs):
        raise ValueError(
            f"outputs={tuple(outputs)} names {len(outputs)} variable(s) but the model returns {len(leaves)}; "
            "give one name per returned array"
        )
    specs = {}
    for name, leaf in zip(outputs, leaves):
        extra = tuple(leaf.shape[1:])
        dims = tuple((output_dims or {}).get(name) or ())
        if not dims:
            dims = (f"{name}_dim",) if len(extra) == 1 else tuple(f"{name}_dim{i}" for i in range(len(extra)))
        if len(dims) != len(extra):
            raise ValueError(f"output_dims[{name!r}]={dims} but the output has {len(extra)} extra dims {extra}")
        specs[name] = (extra, np.dtype(leaf.dtype), ("spectrum",) + dims)
    return specs


def map_model(
    store: str,
    model: Any,
    method: str | None = None,
    inputs: tuple[str, ...] = ("flux",),
    outputs: tuple[str, ...] = ("latent",),
    batch_size: int = 1024,
    client=None,
    *,
    output_dims: dict[str, tuple[str, ...]] | None = None,
    output_attrs: dict[str, dict[str, Any]] | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    cluster: str = "auto",
    progress: bool = True,
) -> MapModelReport:
    """Map ``model`` over a store's spectra; write each output as a variable on ``spectrum``.

    store: a spectra store (local path or URL).
    model: an Equinox module or any JAX-traceable callable acting on ONE row of
        each input (e.g. flux of shape (n_wavelength,)); returns an array or a
        tuple of arrays, one per name in ``outputs``.
    method: call ``getattr(model, method)`` instead of ``model`` (e.g. ``"encode"``).
    inputs: store variables passed positionally (float inputs as float32).
    outputs: names of the new variables; their extra dims are named
        ``<name>_dim`` (or ``output_dims[name]``).
    batch_size: rows per model call; every call has exactly this many rows.
    client: a ``distributed.Client``; ``None`` starts one from ``cluster``.
    overwrite: recompute outputs written earlier by a different model (else an error).
    """
    if client is None:
        from skybatch.cluster import cluster_client

        with cluster_client(cluster) as c:
            return map_model(store, model, method, inputs, outputs, batch_size, c, output_dims=output_dims,
                             output_attrs=output_attrs, storage_options=storage_options, overwrite=overwrite,
                             progress=progress)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    t0 = time.perf_counter()
    inputs, outputs = tuple(inputs), tuple(outputs)
    g = open_group(store, storage_options)
    n = g["flux"].shape[0] if "flux" in g else g[inputs[0]].shape[0]
    chunk = int(g.attrs.get("chunk_spectra", g[inputs[0]].chunks[0]))
    specs = _output_specs(model, method, g, inputs, outputs, batch_size, output_dims)
    mfp = model_fingerprint(model)
    stage = "map-" + "-".join(outputs)
    manifest = Manifest(store, storage_options, stage=stage)
    recipe = {"model": type(model).__name__, "model_sha": mfp, "method": method, "inputs": list(inputs)}
    for name, (extra, dtype, dims) in specs.items():
        if name in g:
            prev = dict(g[name].attrs).get("skybatch_map_model", {})
            if prev.get("model_sha") != mfp or tuple(g[name].shape) != (n,) + extra:
                if not overwrite:
                    raise ValueError(
                        f"{store}: variable {name!r} was written by another model ({prev.get('model')} "
                        f"{prev.get('model_sha')}); pass overwrite=True (--overwrite) to replace it, or choose "
                        "another output name"
                    )
                del g[name]
        if name not in g:
            attrs = {"skybatch_map_model": recipe, **((output_attrs or {}).get(name, {}))}
            g.create_array(name, shape=(n,) + extra, chunks=(chunk,) + extra, dtype=dtype,
                           fill_value=np.nan if dtype.kind == "f" else 0, dimension_names=list(dims),
                           attributes=attrs)
    consolidate(store, storage_options)

    done = manifest.done_chunks()
    tasks = []
    for k, a, b in chunk_ranges(n, chunk):
        fp = chunk_fingerprint([(mfp, method or "", ",".join(inputs))], a, b)
        if fp not in done.get(k, set()):
            tasks.append((k, a, b, fp))
    run_id = time.strftime("%Y%m%dT%H%M%S")
    model_future = client.scatter(model, broadcast=True, hash=False) if tasks else None
    out = run_chunk_tasks(
        client, tasks, _map_chunk, store, storage_options, model_future, method, inputs, outputs, batch_size,
        stage, run_id, key_prefix=f"{stage}-{run_id}", rows=lambda t: (t[1], t[2]), index=lambda t: t[0],
        progress=progress, total_rows=n, desc=stage,
    )
    return MapModelReport(
        store=store, outputs={k: v[2] for k, v in specs.items()}, chunks_written=len(tasks) - len(out.failed),
        chunks_skipped=len(chunk_ranges(n, chunk)) - len(tasks), chunks_total=len(chunk_ranges(n, chunk)),
        failed_chunks=out.failed, seconds=time.perf_counter() - t0, spectra_written=out.rows_done,
    )
