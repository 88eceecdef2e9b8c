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

from .files import read_card, sha256_file
from .fingerprint import model_fingerprint
from .kinds import (
    BUILTIN_KINDS,
    CARD_FILE,
    CARD_SCHEMA,
    MODEL_KINDS,
    WEIGHTS_FILE,
    ModelRegistryError,
    UnknownModelKindError,
    WeightsChecksumError,
    model_kind_and_arch,
    register_model_kind,
)
from .loading import load
from .saving import save

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
