"""The files of a saved model: the weights' sha256, atomic writes, and reading a card."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .kinds import CARD_FILE, CARD_SCHEMA, ModelRegistryError


def sha256_file(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks of ``chunk_bytes``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(
        f"model card value of type {type(obj).__name__} ({obj!r:.80}) is not JSON-serialisable; "
        "convert it to numbers, strings, lists or dicts before saving"
    )


def _to_json_text(card: Mapping[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n"


def _write_atomic(path: Path, data: bytes | None = None, writer: Callable[[Any], None] | None = None) -> None:
    """Write ``path`` via ``path.tmp-PID`` + fsync + rename, so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if writer is not None:
                writer(f)
            else:
                f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a model card without loading the weights.

    Parameters
    ----------
    path
        The model directory, or its ``card.json``.

    Raises
    ------
    FileNotFoundError
        No card at ``path``.
    ModelRegistryError
        The card is not valid JSON, or lacks ``schema``/``kind``/``arch``/``weights``.
    """
    p = Path(path)
    card_path = p / CARD_FILE if p.is_dir() or p.suffix != ".json" else p
    if not card_path.exists():
        raise FileNotFoundError(f"no model card at {card_path}: is {p} a saved model directory?")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelRegistryError(f"{card_path} is not valid JSON: {err}") from err
    if not isinstance(card, dict):
        raise ModelRegistryError(f"{card_path}: a model card must be a JSON object")
    schema = card.get("schema")
    if not isinstance(schema, str) or not schema.startswith("skybatch.model_card/"):
        raise ModelRegistryError(
            f"{card_path}: schema {schema!r} is not a skybatch model card (expected {CARD_SCHEMA!r})"
        )
    if schema != CARD_SCHEMA:
        raise ModelRegistryError(
            f"{card_path}: card schema {schema!r} is not supported by this skybatch "
            f"(reads {CARD_SCHEMA!r}); upgrade skybatch"
        )
    missing = [k for k in ("kind", "arch", "weights") if k not in card]
    if missing:
        raise ModelRegistryError(f"{card_path}: card lacks required field(s) {missing}")
    w = card["weights"]
    if not isinstance(w, dict) or not isinstance(w.get("file"), str) or not isinstance(w.get("sha256"), str):
        raise ModelRegistryError(f"{card_path}: card field 'weights' must hold 'file' and 'sha256'")
    name = w["file"]
    if Path(name).name != name or name in ("", ".", ".."):
        raise ModelRegistryError(
            f"{card_path}: weights file {name!r} must be a plain file name inside the model directory"
        )
    return card
