"""Saving a model directory: weights and card, written atomically."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from .files import _json_default, _to_json_text, _write_atomic, sha256_file
from .kinds import _RESERVED, CARD_FILE, CARD_SCHEMA, WEIGHTS_FILE, ModelRegistryError, _skeleton, model_kind_and_arch


def _is_array_like(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _leaf_signature(tree: Any) -> tuple[Any, list[tuple[tuple[int, ...], str]]]:
    """Tree structure and (shape, dtype) of every array leaf (arrays or ShapeDtypeStructs)."""
    arrays = eqx.filter(tree, _is_array_like)
    leaves = jax.tree_util.tree_leaves(arrays)
    return jax.tree_util.tree_structure(arrays), [(tuple(x.shape), str(x.dtype)) for x in leaves]


def save(
    path: str | os.PathLike[str],
    model: eqx.Module,
    card: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` and its card into the directory ``path``.

    Parameters
    ----------
    path
        Model directory (created if missing). Holds ``weights.eqx`` and ``card.json``.
    model
        The Equinox module to save.
    card
        Extra card content (JSON-serialisable): ``training``, ``data`` (store, manifest, ...),
        ``metrics``, ... ``kind`` and ``arch`` default to the model's own
        (:func:`model_kind_and_arch`); give them for models that do not describe themselves.
    overwrite
        Replace an existing saved model in ``path``.

    Returns
    -------
    Path
        The model directory.

    Raises
    ------
    FileExistsError
        ``path`` already holds a saved model and ``overwrite`` is False.
    ModelRegistryError
        Unknown kind, or ``arch`` does not rebuild a skeleton with the model's leaf shapes.
    """
    out = Path(path)
    card_in = copy.deepcopy(dict(card or {}))
    if "kind" in card_in and "arch" in card_in:
        kind, arch = str(card_in["kind"]), dict(card_in["arch"])
    else:
        kind, arch = model_kind_and_arch(model)
        kind = str(card_in.get("kind", kind))
        arch = dict(card_in.get("arch", arch))
    # JSON round trip of arch first: the skeleton at load time is built from JSON values
    # (tuples become lists), so check with exactly what load() will see.
    arch = json.loads(json.dumps(arch, default=_json_default))
    skeleton = _skeleton(kind, arch, where=f"saving model to {out}")
    if _leaf_signature(skeleton) != _leaf_signature(model):
        raise ModelRegistryError(
            f"saving model to {out}: arch {arch!r} of kind {kind!r} rebuilds a model whose "
            f"array leaves differ from the model being saved ({type(model).__name__}); "
            "the card's arch must hold the arguments the model was built with"
        )
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / CARD_FILE
    if card_path.exists() and not overwrite:
        raise FileExistsError(
            f"{card_path} already exists: a model is saved there; pass overwrite=True or choose "
            "another directory"
        )
    weights_path = out / WEIGHTS_FILE
    _write_atomic(weights_path, writer=lambda f: eqx.tree_serialise_leaves(f, model))

    from skybatch import __version__

    for key in _RESERVED:
        card_in.pop(key, None)
    card_in.pop("kind", None)
    card_in.pop("arch", None)
    full: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "kind": kind,
        "arch": arch,
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": sha256_file(weights_path),
            "bytes": weights_path.stat().st_size,
        },
        "skybatch_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    full.update(card_in)
    _write_atomic(card_path, _to_json_text(full).encode("utf-8"))
    return out
