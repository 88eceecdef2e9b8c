"""Checkpoint files of a training run: atomic writes, sha256-checked reads, pruning.

Layout: ``out_dir/checkpoints/step_000000100/{state.eqx, history.npz, meta.json}``; a checkpoint is
written into a temporary directory and renamed into place, so a killed run never leaves a half one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import PyTree

from skybatch.models import registry
from skybatch.models.train.config import CHECKPOINT_FORMAT, TrainConfig


def _sha256(path: Path) -> str:
    return registry.sha256_file(path)


def _history_to_npz(history: dict[str, dict[str, list[float]]], path: Path) -> None:
    arrays = {
        f"{split}/{name}": np.asarray(values, dtype=np.int64 if name == "step" else np.float64)
        for split, d in history.items()
        for name, values in d.items()
    }
    with open(path, "wb") as f:
        # numpy's stub lets **arrays bind its allow_pickle: bool; the keys here are split/name, never that
        np.savez(f, **arrays)  # type: ignore[arg-type]
        f.flush()
        os.fsync(f.fileno())


def _history_from_npz(path: Path) -> dict[str, dict[str, list[float]]]:
    history: dict[str, dict[str, list[float]]] = {"train": {}, "val": {}}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            split, name = key.split("/", 1)
            history.setdefault(split, {})[name] = z[key].tolist()
    return history


def _checkpoint_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    found = []
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.is_dir() and p.name.startswith("step_"):
                try:
                    found.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(found)


def _read_valid_meta(path: Path) -> dict[str, Any] | None:
    """meta.json of a checkpoint whose files match their recorded sha256, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            return None
        for fname, key in (("state.eqx", "state_sha256"), ("history.npz", "history_sha256")):
            if _sha256(path / fname) != meta[key]:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def find_checkpoint(out_dir: str | os.PathLike[str]) -> tuple[int, Path] | None:
    """Newest valid checkpoint ``(step, directory)`` under ``out_dir/checkpoints``, or None.

    Invalid ones (missing files, sha256 mismatch, unreadable meta) are skipped with a warning.
    """
    for step, path in reversed(_checkpoint_dirs(Path(out_dir) / "checkpoints")):
        if _read_valid_meta(path) is not None:
            return step, path
        warnings.warn(f"skipping invalid or incomplete checkpoint {path}", stacklevel=2)
    return None


def _write_checkpoint(
    ckpt_root: Path,
    step: int,
    tree: PyTree,
    history: dict[str, dict[str, list[float]]],
    config: TrainConfig,
    objective_name: str,
    n_devices: int,
) -> Path:
    final = ckpt_root / f"step_{step:09d}"
    if final.exists():
        return final
    tmp = ckpt_root / f".tmp-step_{step:09d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with open(tmp / "state.eqx", "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
        f.flush()
        os.fsync(f.fileno())
    _history_to_npz(history, tmp / "history.npz")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "objective": objective_name,
        "config": config.to_dict(),
        "n_devices": n_devices,
        "state_sha256": _sha256(tmp / "state.eqx"),
        "history_sha256": _sha256(tmp / "history.npz"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, final)
    try:  # make the rename itself durable
        fd = os.open(ckpt_root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return final


def _prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    dirs = _checkpoint_dirs(ckpt_root)
    for _, path in dirs[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _clean_tmp(ckpt_root: Path) -> None:
    if ckpt_root.is_dir():
        for p in ckpt_root.iterdir():
            if p.name.startswith(".tmp-step_"):
                shutil.rmtree(p, ignore_errors=True)


