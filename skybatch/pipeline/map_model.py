"""Map a JAX / Equinox model over every spectrum of a store, writing outputs back into it.

``map_model(store, model, outputs=("latent",))`` calls ``model`` (or
``getattr(model, method)``) on fixed-size batches of the store's ``inputs``
and writes each output as a new variable on the ``spectrum`` dimension, so one
``xarray.open_zarr`` shows a spectrum with everything computed about it.

How it scales:

- one task per store chunk through the job core (:mod:`skybatch.pipeline.jobcore`):
  the store's writer lock is held, and chunks whose manifest record and in-store
  marker both carry this model's fingerprint are skipped, so a killed run resumes;
  the fingerprint (:func:`skybatch.models.registry.model_fingerprint`) hashes the
  weights, class names and static values, so it is the same in every process;
- where the JAX work runs: on the Dask workers when the model's classes can be
  imported there; a model whose class is defined in ``__main__``, a notebook or a
  function body (which cloudpickle + Equinox cannot rebuild in another process,
  equinox issue 231) runs in this process on a small thread pool instead (JAX
  uses every core from one process). ``executor="local"`` / ``"dask"`` forces it;
- the model is scattered to every worker once and passed to the tasks as an
  argument (never closed over), and the jitted function is defined at module
  level, so each worker compiles once per batch shape;
- every batch has exactly ``batch_size`` rows (the last one is padded), so no
  shape is ever compiled twice.

The model acts on ONE spectrum (e.g. ``flux`` of shape ``(n_wavelength,)``)
and is vmapped here, exactly like ``jax.vmap(model)(flux)`` in memory.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skybatch.models.registry import model_fingerprint
from skybatch.pipeline.chunk_reader import ChunkReader
from skybatch.pipeline.chunkrun import chunk_ranges, keep_arrays_on_heap, keep_heap_top, sum_timings
from skybatch.pipeline.jobcore import Chunk, StoreJob, reset_markers, run_chunks
from skybatch.store.manifest import chunk_fingerprint
from skybatch.store.schema import SCHEMA_NAME
from skybatch.store.spectra_store import consolidate, open_group

__all__ = ["MapModelReport", "apply_batched", "map_model", "model_fingerprint", "runs_on_workers"]


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
    executor: str = "dask"
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds summed over the chunks written: ``read`` (store -> memory), ``wait`` (for the worker's
    other chunk to finish computing), ``compute`` (the jitted model), ``write`` (outputs)."""

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


def _module_importable(mod: str) -> bool:
    if mod in ("__main__", "__mp_main__") or mod.startswith(("__ipython", "ipykernel")):
        return False
    try:
        importlib.import_module(mod)
        return True
    except Exception:  # noqa: BLE001
        return False


def runs_on_workers(model: Any) -> bool:
    """True when every class in ``model`` can be imported by name in another process.

    False for classes defined in ``__main__`` / a notebook / a function body: such a
    model is mapped in this process (threads) instead of on Dask process workers.
    """
    import dataclasses

    seen: set[int] = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        t = type(obj)
        if (dataclasses.is_dataclass(obj) or callable(obj)) and (
                "<locals>" in t.__qualname__ or not _module_importable(t.__module__)):
            return False
        if dataclasses.is_dataclass(obj):
            stack.extend(getattr(obj, f.name, None) for f in dataclasses.fields(obj))
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return True


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


# One chunk computes at a time in a worker process: JAX already spreads one call over every core, so a
# second chunk task in the same process reads (I/O + decompression, outside the GIL) meanwhile
# instead of competing for the cores and caches; the reads of chunk k+1 overlap the compute of k.
_COMPUTE = threading.Lock()
# Each task thread reads its chunks into the same aligned buffers (no 64 MB allocation, page faults
# and trim per chunk). Safe to reuse: apply_batched returns only once every call that used the
# previous chunk (aliasing its buffer on CPU, see pipeline.hostbuf) has delivered its outputs.
_BUFFERS = threading.local()


def _chunk_buffers(reader: ChunkReader) -> dict[str, np.ndarray]:
    """This thread's reusable chunk buffers for ``reader``'s variables (new ones when the layout changed)."""
    key = (reader.chunk_rows, tuple((v, reader.row_shapes[v], reader.dtypes[v].str) for v in reader.variables))
    if getattr(_BUFFERS, "key", None) != key:
        _BUFFERS.key, _BUFFERS.bufs = key, reader.new_buffers()
    bufs: dict[str, np.ndarray] = _BUFFERS.bufs
    return bufs


def _map_chunk(task: Chunk, store, store_options, model, method, inputs, outputs, batch_size, run_id):
    k, a, b, fp = task.chunk, task.start, task.stop, task.fingerprint
    keep_arrays_on_heap()  # see chunkrun.keep_arrays_on_heap: Dask workers' malloc settings
    keep_heap_top()  # and keep XLA's per-call temporaries from being trimmed and faulted in again
    t0 = time.perf_counter()
    reader = ChunkReader(store, store_options, tuple(inputs))
    # whole chunk (shard) per input, float as float32, into this thread's aligned buffers
    xs = list(reader.read(a, b, out=_chunk_buffers(reader)).values())
    t1 = time.perf_counter()
    with _COMPUTE:
        t_wait = time.perf_counter()
        results = apply_batched(model, method, xs, batch_size)
    t2 = time.perf_counter()
    if len(results) != len(outputs):
        raise ValueError(f"the model returned {len(results)} outputs but outputs={outputs} names {len(outputs)}")
    g = open_group(store, store_options)
    for name, r in zip(outputs, results, strict=True):
        g[name][a:b] = r  # whole chunk: one write per output
    t3 = time.perf_counter()
    return {"chunk": k, "start": a, "stop": b, "fingerprint": fp, "run_id": run_id,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": {"read": t1 - t0, "wait": t_wait - t1, "compute": t2 - t_wait, "write": t3 - t2}}


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
    executor: str = "auto",
    wait_lock: float | None = None,
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
    client: a ``distributed.Client``; ``None``: the current Dask client if there is one, else a
        cluster started from ``cluster`` (unless the work runs in this process, see ``executor``).
    overwrite: recompute outputs written earlier by a different model (else an error).
    executor: ``auto`` (Dask workers when the model's classes are importable there, else
        this process), ``dask`` or ``local`` (this process, a thread pool).
    wait_lock: seconds to wait for another writer of the store (None: ``$SKYBATCH_WAIT_LOCK``).
    """
    if executor not in ("auto", "dask", "local"):
        raise ValueError(f"executor: {executor!r} is not one of ('auto', 'dask', 'local')")
    local = executor == "local" or (executor == "auto" and not runs_on_workers(model))
    if client is None and not local:
        from skybatch.cluster import client_for

        with client_for(None, cluster) as c:
            return map_model(store, model, method, inputs, outputs, batch_size, c, output_dims=output_dims,
                             output_attrs=output_attrs, storage_options=storage_options, overwrite=overwrite,
                             progress=progress, executor=executor, wait_lock=wait_lock)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    t0 = time.perf_counter()
    inputs, outputs = tuple(inputs), tuple(outputs)
    stage = "map-" + "-".join(outputs)
    with StoreJob(store, storage_options, kind="spectra", stage=stage, job=stage, adopt_schema=SCHEMA_NAME,
                  wait_lock=wait_lock) as job:
        if job.identity is None:
            raise ValueError(f"{store}: no spectra store here; create it with `skybatch run ingest`")
        g = open_group(store, storage_options)
        n = g["flux"].shape[0] if "flux" in g else g[inputs[0]].shape[0]
        chunk = int(g.attrs.get("chunk_spectra", g[inputs[0]].chunks[0]))
        specs = _output_specs(model, method, g, inputs, outputs, batch_size, output_dims)
        mfp = model_fingerprint(model)
        recipe = {"model": f"{type(model).__module__}.{type(model).__qualname__}", "model_sha": mfp,
                  "method": method, "inputs": list(inputs)}
        ranges = chunk_ranges(n, chunk)
        fresh = False
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
                fresh = True
                attrs = {"skybatch_map_model": recipe, **((output_attrs or {}).get(name, {}))}
                g.create_array(name, shape=(n,) + extra, chunks=(chunk,) + extra, dtype=dtype,
                               fill_value=np.nan if dtype.kind == "f" else 0, dimension_names=list(dims),
                               attributes=attrs)
        # new output arrays hold nothing yet: forget every mark of this stage
        reset_markers(store, storage_options, stage, len(ranges), clear=fresh)
        consolidate(store, storage_options)

        tasks = [Chunk(k, a, b, chunk_fingerprint([(mfp, method or "", ",".join(inputs))], a, b))
                 for k, a, b in ranges]
        todo = job.todo(tasks, len(ranges))
        run_id = time.strftime("%Y%m%dT%H%M%S")
        if local or not todo:
            run_client, model_arg = None, model
        else:
            run_client, model_arg = client, client.scatter(model, broadcast=True, hash=False)
        out = run_chunks(
            run_client, todo, _map_chunk, store, storage_options, model_arg, method, inputs, outputs, batch_size,
            run_id, store=store, storage_options=storage_options, stage=stage, key_prefix=f"{stage}-{run_id}",
            progress=progress, total_rows=n, desc=stage,
        )
    return MapModelReport(
        store=store, outputs={k: v[2] for k, v in specs.items()}, chunks_written=len(todo) - len(out.failed),
        chunks_skipped=len(ranges) - len(todo), chunks_total=len(ranges),
        failed_chunks=out.failed, seconds=time.perf_counter() - t0, spectra_written=out.rows_done,
        executor="local" if local else "dask", timings=sum_timings(out.records),
    )
