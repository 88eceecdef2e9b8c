"""Model kinds: the registered builders, the built-in kinds (imported on first use), the
registry's errors, and rebuilding a model skeleton from a card's ``kind`` and ``arch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax

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
