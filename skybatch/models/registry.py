"""The model registry: a saved model is a directory with its weights and a JSON card.

Layout of a saved model directory::

    MODEL_DIR/
      weights.eqx   the array leaves, written by ``equinox.tree_serialise_leaves``
      card.json     a self-describing card (see below)

The card (``card.json``, UTF-8 JSON, schema ``skybatch.model_card/1``) holds:

``schema``            card schema name and version
``kind``              registered model kind (a key of :data:`MODEL_KINDS`)
``arch``              keyword arguments that rebuild the model skeleton: ``MODEL_KINDS[kind](**arch, key=...)``
``weights``           ``{"file": "weights.eqx", "sha256": HEX, "bytes": N}``
``skybatch_version``  version of skybatch that wrote the card
``created``           UTC time of writing, ISO 8601
...                   anything the caller passed in ``card``: ``training`` settings, ``data``
                      provenance (store, manifest, ...), ``metrics``, ``calibration``,
                      ``anomaly`` reference statistics, ...

:func:`load` verifies the weights file's sha256 against the card before anything else, rebuilds
the skeleton from the registered builder (shapes only, no weight initialisation) and reads the
leaves into it. Nothing is ever unpickled: the card is JSON and the weights are raw arrays.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

__all__ = [
    "CARD_FILE",
    "BUILTIN_KINDS",
    "CARD_SCHEMA",
    "MODEL_KINDS",
    "WEIGHTS_FILE",
    "ModelRegistryError",
    "UnknownModelKindError",
    "WeightsChecksumError",
    "load",
    "model_fingerprint",
    "model_kind_and_arch",
    "read_card",
    "register_model_kind",
    "save",
    "sha256_file",
]

CARD_SCHEMA = "skybatch.model_card/1"
"""Schema name and version written into every card."""
WEIGHTS_FILE = "weights.eqx"
"""File name of the serialised leaves inside a model directory."""
CARD_FILE = "card.json"
"""File name of the JSON card inside a model directory."""

MODEL_KINDS: dict[str, Callable[..., eqx.Module]] = {}
"""Registered model kinds: kind name -> builder ``builder(**arch, key=PRNGKey) -> eqx.Module``."""

BUILTIN_KINDS: dict[str, str] = {
    "spectrum_vae": "skybatch.models.vae",
    "spectrum_classifier": "skybatch.models.classifier",
    "tile_encoder": "skybatch.models.tile_encoder",
    "tile_jepa": "skybatch.models.tile_objective",
    "sky_broadband": "skybatch.models.sky_broadband",
    "sky_latent_unet": "skybatch.models.sky_diffusion",
    "sky_ldm": "skybatch.models.sky_diffusion",
}
"""Built-in model kinds and the module that registers each (imported on first use by
:func:`load`/:func:`save`, so a fresh process knows every built-in kind without importing it first)."""

# Card keys the registry fills in itself; a caller's values for these are overwritten.
_RESERVED = ("schema", "weights", "skybatch_version", "created")


class ModelRegistryError(ValueError):
    """A model directory cannot be saved or loaded (bad card, missing file, wrong arch...)."""


class UnknownModelKindError(ModelRegistryError):
    """The card names a model kind that has not been registered with :func:`register_model_kind`."""


class WeightsChecksumError(ModelRegistryError):
    """The weights file's sha256 differs from the one recorded in the card (tampered or corrupt)."""


def register_model_kind(
    name: str, builder: Callable[..., eqx.Module], *, replace: bool = False
) -> None:
    """Register a model kind so :func:`load` can rebuild it.

    Parameters
    ----------
    name
        Kind name stored in cards (e.g. ``"spectrum_vae"``, ``"tile_encoder"``).
    builder
        Callable ``builder(**arch, key=PRNGKey) -> eqx.Module`` (a model class works). Given the
        same ``arch`` it must always build the same tree structure with the same leaf shapes.
    replace
        Allow replacing a different builder already registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is empty, or already registered with another builder and ``replace`` is False.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model kind name must be a non-empty string, got {name!r}")
    if not callable(builder):
        raise ValueError(f"builder for model kind {name!r} must be callable, got {builder!r}")
    old = MODEL_KINDS.get(name)
    if old is not None and old is not builder and not replace:
        raise ValueError(
            f"model kind {name!r} is already registered (builder {old!r}); "
            "pass replace=True to register a different builder under this name"
        )
    MODEL_KINDS[name] = builder


def model_kind_and_arch(model: eqx.Module) -> tuple[str, dict[str, Any]]:
    """Return ``(kind, arch)`` of a model that describes itself.

    A self-describing model class has a class attribute ``registry_kind: str`` and a method
    ``architecture() -> dict`` returning the keyword arguments that rebuild it (all built-in
    skybatch models do).

    Raises
    ------
    ModelRegistryError
        If the model does not describe itself; pass ``kind`` and ``arch`` in the card instead.
    """
    kind = getattr(type(model), "registry_kind", None)
    arch_fn = getattr(model, "architecture", None)
    if not isinstance(kind, str) or not callable(arch_fn):
        raise ModelRegistryError(
            f"{type(model).__name__} does not describe itself (no `registry_kind` class attribute "
            "and `architecture()` method): pass card={'kind': ..., 'arch': {...}} to save()"
        )
    return kind, dict(arch_fn())


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


def _get_builder(kind: str, where: str) -> Callable[..., eqx.Module]:
    if kind not in MODEL_KINDS and kind in BUILTIN_KINDS:
        import importlib

        importlib.import_module(BUILTIN_KINDS[kind])  # registers the kind as a side effect
    try:
        return MODEL_KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(set(MODEL_KINDS) | set(BUILTIN_KINDS))) or "(none)"
        raise UnknownModelKindError(
            f"{where}: unknown model kind {kind!r}; registered kinds: {known}. "
            "Import the module that defines it, or call "
            "skybatch.models.register_model_kind(name, builder) first."
        ) from None


def _skeleton(kind: str, arch: Mapping[str, Any], where: str) -> eqx.Module:
    """Build the model's shape-only skeleton (no weights computed) from its card arguments."""
    builder = _get_builder(kind, where)
    try:
        return eqx.filter_eval_shape(builder, **dict(arch), key=jax.random.PRNGKey(0))
    except TypeError as err:
        raise ModelRegistryError(
            f"{where}: cannot rebuild model kind {kind!r} from arch {dict(arch)!r}: {err}"
        ) from err


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
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    full.update(card_in)
    _write_atomic(card_path, _to_json_text(full).encode("utf-8"))
    return out


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


def load(path: str | os.PathLike[str]) -> tuple[eqx.Module, dict[str, Any]]:
    """Load a model saved by :func:`save`.

    Order of checks: the card is read and validated, the weights file's sha256 is compared with
    the card's, the kind is looked up in :data:`MODEL_KINDS`, the skeleton is rebuilt from
    ``arch`` (shapes only) and the leaves are read into it.

    Parameters
    ----------
    path
        The model directory (or its ``card.json``).

    Returns
    -------
    (model, card)
        The model with its saved weights, and the card as a dict.

    Raises
    ------
    FileNotFoundError
        Card or weights file missing.
    WeightsChecksumError
        The weights file does not match the card's sha256 (names file, expected and actual digest).
    UnknownModelKindError
        The card's kind is not registered.
    ModelRegistryError
        Malformed card, or weights that do not fit the skeleton.
    """
    card = read_card(path)
    p = Path(path)
    model_dir = p if p.is_dir() else p.parent
    weights_path = model_dir / card["weights"]["file"]
    if not weights_path.exists():
        raise FileNotFoundError(
            f"weights file {weights_path} named in {model_dir / CARD_FILE} is missing"
        )
    expected = card["weights"]["sha256"].lower()
    actual = sha256_file(weights_path)
    if actual != expected:
        raise WeightsChecksumError(
            f"weights file {weights_path} does not match its card: sha256 expected {expected}, "
            f"actual {actual}. The file was modified or corrupted; restore it or re-save the model."
        )
    skeleton = _skeleton(str(card["kind"]), card["arch"], where=f"loading {model_dir}")
    try:
        model = eqx.tree_deserialise_leaves(weights_path, skeleton)
    except Exception as err:  # shape/dtype mismatch, truncated payload
        raise ModelRegistryError(
            f"loading {weights_path}: the weights do not fit a {card['kind']!r} model built from "
            f"arch {card['arch']!r}: {err}"
        ) from err
    return model, card


def _feed(h: Any, obj: Any, seen: set[int], depth: int = 0) -> None:
    """Feed a stable description of ``obj`` into hash ``h`` (see :func:`model_fingerprint`)."""
    if depth > 64:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        h.update(f"array{a.shape}{a.dtype.str};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return
    t = type(obj)
    name = f"{t.__module__}.{t.__qualname__}"
    if isinstance(obj, (list, tuple)):
        h.update(f"{name}[{len(obj)}](".encode())
        for x in obj:
            _feed(h, x, seen, depth + 1)
        h.update(b")")
        return
    if isinstance(obj, dict):
        h.update(f"{name}{{{len(obj)}}}(".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k, seen, depth + 1)
            _feed(h, obj[k], seen, depth + 1)
        h.update(b")")
        return
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    import dataclasses
    import enum

    if isinstance(obj, enum.Enum):
        h.update(f"{name}.{obj.name};".encode())
        return
    if dataclasses.is_dataclass(obj):  # every eqx.Module is a dataclass
        seen.add(id(obj))
        h.update(f"{name}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(obj, f.name, None), seen, depth + 1)
        h.update(b")")
        return
    if callable(obj):  # functions, jax.custom_jvp (jax.nn.relu), PjitFunction, partials: by name, never repr
        import functools

        if isinstance(obj, functools.partial):
            h.update(b"partial(")
            _feed(h, obj.func, seen, depth + 1)
            _feed(h, obj.args, seen, depth + 1)
            _feed(h, obj.keywords, seen, depth + 1)
            h.update(b")")
            return
        fn_name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or t.__qualname__
        h.update(f"fn:{getattr(obj, '__module__', t.__module__)}.{fn_name};".encode())
        return
    h.update(f"obj:{name};".encode())  # an opaque static value: its type only (never its address)


def model_fingerprint(model: Any) -> str:
    """A stable identity (16 hex of sha256) of a model: same weights and structure, same string.

    Hashes every array leaf (shape, dtype, bytes), every class's module-qualified name,
    every field name and static value, and functions by module + qualified name. Never
    uses ``repr`` of functions or objects (which hold memory addresses), so the value is
    the same in every process and on every machine.
    """
    import hashlib

    h = hashlib.sha256(b"skybatch-model/1;")
    _feed(h, model, set())
    return h.hexdigest()[:16]
