"""The ONE table of model kinds: what ``skybatch run train --model KIND`` trains, on which store, with
which job, and which apply jobs (score / classify / embed) a trained model of that kind serves.

A model directory says its kind in ``card.json`` (``kind``: the registry kind of the saved module);
:func:`kind_of_model` maps it back to a row of :data:`KINDS`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelKind", "KINDS", "kind", "card_kind", "kind_of_model", "train_job"]


@dataclass(frozen=True)
class ModelKind:
    """One ``--model`` value.

    name: the value of ``--model``.
    store: what ``--store`` must be: ``spectra`` (preprocessed), ``sky`` (an ingested sky VAC),
        ``tiles`` (a tile store) or ``difference`` (a difference store).
    train_job: module in :mod:`skybatch.jobs` whose ``Config`` / ``run`` train this kind.
    card_kinds: registry kinds found in the ``card.json`` of a trained model of this kind.
    applies: the apply jobs (``score``, ``classify``, ``embed``) that accept such a model.
    help: one line for ``--help``.
    """

    name: str
    store: str
    train_job: str
    card_kinds: tuple[str, ...]
    applies: tuple[str, ...]
    help: str


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("vae", "spectra", "train", ("spectrum_vae",), ("score", "embed"),
              "spectral VAE: anomaly scores and embeddings"),
    ModelKind("classifier", "spectra", "train", ("spectrum_classifier",), ("classify",),
              "calibrated spectral classifier (--label)"),
    ModelKind("tile-encoder", "tiles", "tile_train", ("tile_jepa", "tile_encoder"), ("embed",),
              "band-agnostic Rubin/Euclid tile encoder"),
    ModelKind("sky-broadband", "sky", "sky_train", ("sky_broadband",), ("score",),
              "sky brightness per band from observing conditions"),
    ModelKind("sky-ldm", "sky", "sky_train", ("sky_ldm",), (),
              "sky-spectrum latent diffusion model (--vae, --selection)"),
    ModelKind("realbogus", "difference", "realbogus", ("realbogus",), ("classify",),
              "real/bogus classifier of difference-image candidates (generated training triplets)"),
)}


def kind(name: str) -> ModelKind:
    """The row of ``--model name``; ValueError naming the valid kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"model: {name!r} is not one of {' | '.join(KINDS)} (--model)") from None


def train_job(name: str) -> Any:
    """The job module that trains ``--model name`` (``Config``, ``run``, ``run_with_client``)."""
    return importlib.import_module(f"skybatch.jobs.{kind(name).train_job}")


def card_kind(model_dir: str) -> str:
    """The registry kind in a model directory's card (``""`` when there is no readable card: the job
    that opens the model then reports what is missing)."""
    from skybatch.models import read_card

    path = model_dir if os.path.exists(os.path.join(model_dir, "card.json")) else os.path.join(model_dir, "model")
    try:
        return str(read_card(path).get("kind", ""))
    except Exception:  # noqa: BLE001 - let the job itself report a missing or broken model
        return ""


def kind_of_model(model_dir: str) -> ModelKind | None:
    """The row whose ``card_kinds`` hold the model directory's card kind (``None`` when unknown)."""
    ck = card_kind(model_dir)
    for k in KINDS.values():
        if ck in k.card_kinds or (k.name == "tile-encoder" and ck.startswith("tile")):
            return k
    return None
