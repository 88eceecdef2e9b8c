"""Loading a model directory: card checked, weights verified by sha256, skeleton rebuilt, leaves read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import equinox as eqx

from .files import read_card, sha256_file
from .kinds import CARD_FILE, ModelRegistryError, WeightsChecksumError, _skeleton


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
