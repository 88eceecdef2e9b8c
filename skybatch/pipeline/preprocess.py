"""Preprocess a spectra store into a model-ready store, chunk by chunk on Dask.

Each Dask task reads one chunk of the input store, runs
:func:`skybatch.spectra.preprocess_block` (the same pure array code on NumPy
or, on GPU workers, CuPy) and writes the same rows of the output store, whose
chunks line up with the input's. The output follows the spectra-store contract
(so it can be preprocessed or scored again), adds ``norm_scale`` and
``preprocess_flags`` per spectrum, and records the recipe in its attrs. It runs
through the job core (:mod:`skybatch.pipeline.jobcore`): the output store's
writer lock is held, a target that is not a skybatch spectra store is refused,
the manifest stage ``preprocess`` is trusted only for this store instance and
each chunk's record is checked against the marker in the store, so a killed run
resumes and a deleted output store is rebuilt, never reported done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import skybatch
from skybatch.pipeline.chunkrun import chunk_ranges, keep_arrays_on_heap, sum_timings
from skybatch.pipeline.jobcore import Chunk, StoreJob, exit_status, run_chunks
from skybatch.sources.base import Grid
from skybatch.spectra import PreprocessRecipe, preprocess_block, target_wavelength
from skybatch.store.fsutil import public_options, s3_options
from skybatch.store.identity import IDENTITY_ATTR, JobRefused
from skybatch.store.manifest import chunk_fingerprint
from skybatch.store.schema import SCHEMA_NAME, StoreSchemaError
from skybatch.store.spectra_store import (
    PER_SPECTRUM_COLUMNS,
    consolidate,
    create_spectra_store,
    open_group,
    resize_spectra_store,
    store_exists,
    write_rows,
)

__all__ = ["PreprocessConfig", "PreprocessReport", "preprocess", "run", "run_with_client"]

_OUT_COLUMNS = {"norm_scale": "float64", "preprocess_flags": "int32"}


@dataclass
class PreprocessConfig:
    """Settings of one preprocessing run (CLI flags / YAML keys / flow parameters).

    store: the input spectra store (path or URL).
    out: the output store (path or URL); created, or resumed if it holds the same recipe.
    recipe: the preprocessing recipe (grid, rest frame, normalisation, masks...).
    device: ``auto`` (CuPy on workers with a GPU, else NumPy), ``cpu`` or ``gpu``.
    cluster: a cluster profile name, YAML path or scheduler address.
    endpoint_url / anon: S3 settings for both stores (see IngestConfig).
    progress: show a progress bar.
    wait_lock: seconds to wait while another job writes ``out`` (None: ``$SKYBATCH_WAIT_LOCK`` or 0).
    """

    store: str
    out: str
    recipe: PreprocessRecipe = field(default_factory=PreprocessRecipe)
    device: str = "auto"
    cluster: str = "auto"
    endpoint_url: str | None = None
    anon: bool | None = None
    progress: bool = True
    wait_lock: float | None = None

    def __post_init__(self) -> None:
        if not self.store or not self.out:
            raise ValueError("store and out: give the input store (--store) and the output store (--out)")
        if self.store.rstrip("/") == self.out.rstrip("/"):
            raise ValueError("out: must differ from store (preprocessing writes a new store)")
        if isinstance(self.recipe, dict):
            self.recipe = PreprocessRecipe.from_dict(self.recipe)
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device: {self.device!r} is not one of ('auto', 'cpu', 'gpu')")

    def storage_options(self) -> dict[str, Any]:
        return s3_options(self.endpoint_url, self.anon)


@dataclass
class PreprocessReport:
    """Outcome of a preprocessing run (chunks written / skipped / failed, flag counts)."""

    store: str
    out: str
    n_spectra: int
    chunks_written: int
    chunks_skipped: int
    chunks_total: int
    failed_chunks: list[dict[str, Any]]
    flag_counts: dict[str, int]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds summed over the chunks written: ``read`` (input chunk), ``compute`` (preprocess_block),
    ``write`` (output arrays and the copied per-spectrum columns)."""

    @property
    def exit_code(self) -> int:
        return exit_status(self.failed_chunks)

    def summary(self) -> str:
        lines = [f"in: {self.store}", f"out: {self.out} ({self.n_spectra} spectra)",
                 f"chunks: {self.chunks_written} written, {self.chunks_skipped} already done, {self.chunks_total} total"]
        if self.flag_counts:
            lines.append("spectrum flags this run: " + ", ".join(f"{k}={v}" for k, v in self.flag_counts.items()))
        for c in self.failed_chunks:
            lines.append(f"FAILED chunk {c['chunk']}: {c['error']} -- re-run to retry")
        return "\n".join(lines)


def _out_grid(recipe: PreprocessRecipe, in_grid: Grid, wl: np.ndarray) -> Grid:
    spec = recipe.grid_spec
    n = int(wl.shape[0])
    if spec.kind == "native":
        return in_grid
    if spec.kind == "linear":
        return Grid("linear", float(wl[0]), float((wl[-1] - wl[0]) / (n - 1)), n, str(spec))
    if spec.kind == "loglam":
        lw = np.log10(wl)
        return Grid("loglam", float(lw[0]), float((lw[-1] - lw[0]) / (n - 1)), n, str(spec))
    return Grid("explicit", float(wl[0]), 0.0, n, "explicit")


_GPU_OK: list[bool] = []  # per process: is a CUDA device usable (probed once, not per chunk)


def _use_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    if not _GPU_OK:
        from skybatch.xp import gpu_available

        _GPU_OK.append(gpu_available())
    ok = _GPU_OK[0]
    if device == "gpu" and not ok:
        raise RuntimeError("device='gpu' but this worker has no usable CUDA GPU; use --device auto or cpu")
    return ok


def _preprocess_chunk(task: Chunk, store, out, options, recipe_dict, columns, device, run_id):
    k, a, b, fp = task.chunk, task.start, task.stop, task.fingerprint
    keep_arrays_on_heap()  # Dask workers' malloc settings make every large temporary page-fault (chunkrun.py)
    t0 = time.perf_counter()
    recipe = PreprocessRecipe.from_dict(recipe_dict)
    gin = open_group(store, options, mode="r")
    flux = np.asarray(gin["flux"][a:b], np.float32)
    ivar = np.asarray(gin["ivar"][a:b], np.float32)
    mask = np.asarray(gin["mask"][a:b], np.uint32)
    wl = np.asarray(gin["wavelength"][:], np.float64)
    z = np.asarray(gin["z"][a:b], np.float64)
    zwarn = np.asarray(gin["zwarn"][a:b], np.int64)
    t1 = time.perf_counter()
    if _use_gpu(device):  # the same pure code on CuPy arrays
        import cupy as cp  # type: ignore[import-not-found]

        res = preprocess_block(cp.asarray(flux), cp.asarray(ivar), cp.asarray(mask), cp.asarray(wl), cp.asarray(z),
                               cp.asarray(zwarn), recipe)
        res = type(res)(**{f.name: cp.asnumpy(getattr(res, f.name)) for f in dataclasses.fields(res)})
    else:
        res = preprocess_block(flux, ivar, mask, wl, z, zwarn, recipe)
    data: dict[str, np.ndarray] = {
        "flux": np.asarray(res.flux, np.float32), "ivar": np.asarray(res.ivar, np.float32),
        "mask": np.asarray(res.mask, np.uint32),
        "norm_scale": np.asarray(res.scale, np.float64), "preprocess_flags": np.asarray(res.flags, np.int32),
    }
    t2 = time.perf_counter()
    for name in columns:
        if name not in data:
            data[name] = np.asarray(gin[name][a:b])
    gout = open_group(out, options)
    write_rows(gout, a, data)
    flags = data["preprocess_flags"]
    t3 = time.perf_counter()
    return {"chunk": k, "start": a, "stop": b, "fingerprint": fp, "run_id": run_id,
            "flag_bits": [int(np.count_nonzero(flags & (1 << i))) for i in range(16)],
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": {"read": t1 - t0, "compute": t2 - t1, "write": t3 - t2}}


def run_with_client(config: PreprocessConfig, client) -> PreprocessReport:
    """Preprocess ``config.store`` into ``config.out`` on an existing Dask client."""
    from skybatch.spectra.flags import SPECTRUM_FLAGS

    t0 = time.perf_counter()
    opts = config.storage_options()
    if not store_exists(config.store, opts):
        raise StoreSchemaError(f"{config.store}: not a skybatch spectra store; create it with `skybatch run ingest`")
    gin = open_group(config.store, opts, mode="r")
    n = gin["flux"].shape[0]
    chunk = int(gin.attrs["chunk_spectra"])
    in_grid = Grid.from_attrs(dict(gin.attrs["grid"]))
    wl_in = np.asarray(gin["wavelength"][:], np.float64)
    recipe = config.recipe
    if recipe.rest_frame and gin.attrs.get("wavelength_frame") == "rest":
        raise ValueError(f"{config.store} is already in the rest frame; use rest_frame=False")
    wl_out = np.asarray(target_wavelength(recipe, wl_in), np.float64)
    recipe_dict = recipe.to_dict()
    in_columns = dict(gin.attrs["per_spectrum_columns"])
    columns = {**in_columns, **_OUT_COLUMNS}
    in_prov = dict(gin.attrs.get("provenance", {}))
    identity = hashlib.sha256(json.dumps([recipe_dict, in_prov.get("sources_sha256"), n], default=str).encode()).hexdigest()[:16]

    with StoreJob(config.out, opts, kind="spectra", stage="preprocess", job="preprocess", adopt_schema=SCHEMA_NAME,
                  wait_lock=config.wait_lock) as job:
        if job.identity is not None:
            gout = open_group(config.out, opts)
            if gout.attrs.get("preprocessing", {}).get("identity") != identity:
                raise JobRefused(
                    f"{config.out} already holds spectra preprocessed with another recipe or input; "
                    "choose another --out"
                )
        else:
            try:
                gout = create_spectra_store(
                    config.out, _out_grid(recipe, in_grid, wl_out), chunk,
                    attrs={
                        "skybatch_version": skybatch.__version__,
                        "formats": list(gin.attrs.get("formats", [])),
                        "manifest": config.out.rstrip("/") + ".manifest",
                        "provenance": {**in_prov, "input_store": config.store,
                                       "input_manifest": gin.attrs.get("manifest")},
                        "preprocessing": {"recipe": recipe_dict, "identity": identity, "input_store": config.store,
                                          "settings": {"device": config.device,
                                                       "store_options": public_options(opts)}},
                    },
                    extra_columns={k: v for k, v in columns.items() if k not in PER_SPECTRUM_COLUMNS},
                    storage_options=opts, wavelength=wl_out,
                )
            except FileExistsError as e:
                raise JobRefused(f"{config.out}: something appeared there while planning ({e}); choose another --out") from e
            job.created(dict(gout.attrs[IDENTITY_ATTR]))
            gout.attrs["wavelength_frame"] = "rest" if recipe.rest_frame else gin.attrs.get("wavelength_frame",
                                                                                            "observed")
        resize_spectra_store(gout, n)
        ranges = chunk_ranges(n, chunk)
        tasks = [Chunk(k, a, b, chunk_fingerprint([(identity, 0, 0)], a, b)) for k, a, b in ranges]
        todo = job.todo(tasks, len(ranges))
        consolidate(config.out, opts)
        run_id = time.strftime("%Y%m%dT%H%M%S")
        res = run_chunks(
            client, todo, _preprocess_chunk, config.store, config.out, opts, recipe_dict, list(columns),
            config.device, run_id, store=config.out, storage_options=opts, stage="preprocess",
            key_prefix=f"preprocess-{run_id}", progress=config.progress, total_rows=n, desc="preprocess",
        )
        tasks = todo
        consolidate(config.out, opts)
    counts = np.sum([r["flag_bits"] for r in res.records], axis=0) if res.records else np.zeros(16, int)
    # SPECTRUM_FLAGS maps each name to its bit *number*; counts[i] counts spectra with bit i set
    flag_counts = {name: int(counts[bit]) for name, bit in SPECTRUM_FLAGS.items() if bit < 16 and counts[bit]}
    return PreprocessReport(
        store=config.store, out=config.out, n_spectra=n, chunks_written=len(tasks) - len(res.failed),
        chunks_skipped=len(ranges) - len(tasks), chunks_total=len(ranges), failed_chunks=res.failed,
        flag_counts=flag_counts, seconds=time.perf_counter() - t0, timings=sum_timings(res.records),
    )


def run(config: PreprocessConfig) -> PreprocessReport:
    """Preprocess on the current Dask client if there is one, else on a cluster started from ``config.cluster``."""
    from skybatch.cluster import client_for

    with client_for(None, config.cluster) as client:
        return run_with_client(config, client)


def preprocess(store: str, out: str, recipe: PreprocessRecipe | dict | None = None, client=None,
               **settings: Any) -> PreprocessReport:
    """Preprocess a spectra store into a new store (see :class:`PreprocessConfig`).

    Recipe fields may be given as keyword arguments too, e.g.
    ``preprocess(s, o, grid="loglam:3.55:4.0:1e-4", rest_frame=True)``.
    """
    recipe_fields = {f.name for f in dataclasses.fields(PreprocessRecipe) if f.init}
    rfields = {k: settings.pop(k) for k in list(settings) if k in recipe_fields}
    if recipe is None:
        recipe = PreprocessRecipe(**rfields)
    elif isinstance(recipe, dict):
        recipe = PreprocessRecipe.from_dict({**recipe, **rfields})
    elif rfields:
        recipe = dataclasses.replace(recipe, **rfields)
    config = PreprocessConfig(store=store, out=out, recipe=recipe, **settings)
    return run(config) if client is None else run_with_client(config, client)
