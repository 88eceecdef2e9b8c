"""Model registry: save/load round trips, tamper detection, unknown kinds, user-registered kinds."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skybatch import __version__
from skybatch.models import (
    CARD_SCHEMA,
    MODEL_KINDS,
    ModelRegistryError,
    SpectrumClassifier,
    SpectrumVAE,
    UnknownModelKindError,
    WeightsChecksumError,
    load,
    predict_logits,
    read_card,
    reconstruct_batch,
    register_model_kind,
    save,
    sha256_file,
)
from tests.models.models_synth import three_classes

NWAVE = 128


@pytest.fixture(scope="module")
def batch():
    return three_classes(np.random.default_rng(0), 8, NWAVE)


def test_vae_round_trip_gives_identical_outputs(tmp_path, batch):
    vae = SpectrumVAE(NWAVE, latent_dim=6, width=32, depth=1, key=jax.random.PRNGKey(1))
    card_in = {"data": {"store": "s3://bucket/spectra.zarr", "manifest": "manifest.parquet"},
               "metrics": {"val_loss": 1.25}, "training": {"steps": 10}}
    path = save(tmp_path / "vae", vae, card_in)
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "weights.eqx"]
    loaded, card = load(path)
    assert isinstance(loaded, SpectrumVAE) and loaded.latent_dim == 6 and loaded.depth == 1
    a = reconstruct_batch(vae, batch["flux"], batch["ivar"])
    b = reconstruct_batch(loaded, batch["flux"], batch["ivar"])
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    # The card is self-describing and keeps what the caller gave.
    on_disk = json.loads((path / "card.json").read_text())
    assert on_disk == card
    assert card["schema"] == CARD_SCHEMA and card["kind"] == "spectrum_vae"
    assert card["arch"] == {"nwave": NWAVE, "latent_dim": 6, "width": 32, "depth": 1, "model_error": 0.0}
    assert card["weights"]["sha256"] == sha256_file(path / "weights.eqx")
    assert card["weights"]["bytes"] == (path / "weights.eqx").stat().st_size
    assert card["skybatch_version"] == __version__ and card["created"].endswith("+00:00")
    assert card["data"] == card_in["data"] and card["metrics"] == {"val_loss": 1.25}
    assert read_card(path / "card.json") == card


def test_classifier_round_trip_keeps_class_names(tmp_path, batch):
    clf = SpectrumClassifier(NWAVE, class_names=("STAR", "QSO", "GALAXY"), channels=(4, 8), key=jax.random.PRNGKey(2))
    loaded, card = load(save(tmp_path / "clf", clf))
    assert loaded.class_names == ("STAR", "QSO", "GALAXY") and loaded.channels == (4, 8)
    np.testing.assert_array_equal(
        np.asarray(predict_logits(clf, batch["flux"], batch["ivar"])),
        np.asarray(predict_logits(loaded, batch["flux"], batch["ivar"])),
    )


def test_tampered_weights_fail_with_both_digests(tmp_path):
    vae = SpectrumVAE(NWAVE, latent_dim=2, width=8, depth=1, key=jax.random.PRNGKey(3))
    path = save(tmp_path / "m", vae)
    expected = read_card(path)["weights"]["sha256"]
    w = path / "weights.eqx"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # flip one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError) as info:
        load(path)
    msg = str(info.value)
    assert str(w) in msg and expected in msg and sha256_file(w) in msg


def test_unknown_kind_and_bad_cards(tmp_path):
    vae = SpectrumVAE(NWAVE, latent_dim=2, width=8, depth=1, key=jax.random.PRNGKey(4))
    path = save(tmp_path / "m", vae)
    card = json.loads((path / "card.json").read_text())
    card["kind"] = "galaxy_zoo_net"
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(UnknownModelKindError, match="galaxy_zoo_net.*spectrum_vae.*register_model_kind"):
        load(path)
    card["kind"] = "spectrum_vae"
    card["weights"]["file"] = "../elsewhere.eqx"
    (path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelRegistryError, match="plain file name"):
        load(path)
    with pytest.raises(FileNotFoundError, match="no model card"):
        load(tmp_path / "nowhere")
    # Saving over an existing model needs overwrite=True.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(path, vae)
    save(path, vae, overwrite=True)
    assert load(path)[1]["kind"] == "spectrum_vae"


def test_arch_must_rebuild_the_saved_model(tmp_path):
    vae = SpectrumVAE(NWAVE, latent_dim=2, width=8, depth=1, key=jax.random.PRNGKey(5))
    with pytest.raises(ModelRegistryError, match="array leaves differ"):
        save(tmp_path / "m", vae, {"kind": "spectrum_vae", "arch": {"nwave": NWAVE, "latent_dim": 3, "width": 8, "depth": 1}})
    assert not (tmp_path / "m" / "card.json").exists()


class TinyHead(eqx.Module):
    """A user's own model that does not describe itself."""

    linear: eqx.nn.Linear

    def __init__(self, n_in: int, n_out: int, *, key):
        self.linear = eqx.nn.Linear(n_in, n_out, key=key)

    def __call__(self, x):
        return self.linear(x)


def test_user_registered_kind_round_trip(tmp_path):
    register_model_kind("tiny_head_test", TinyHead)
    assert MODEL_KINDS["tiny_head_test"] is TinyHead
    register_model_kind("tiny_head_test", TinyHead)  # same builder again: fine
    with pytest.raises(ValueError, match="replace=True"):
        register_model_kind("tiny_head_test", lambda **kw: None)
    model = TinyHead(5, 3, key=jax.random.PRNGKey(6))
    with pytest.raises(ModelRegistryError, match="does not describe itself"):
        save(tmp_path / "x", model)
    path = save(tmp_path / "tiny", model, {"kind": "tiny_head_test", "arch": {"n_in": 5, "n_out": 3}})
    loaded, card = load(path)
    x = jnp.arange(5.0)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert card["arch"] == {"n_in": 5, "n_out": 3}
