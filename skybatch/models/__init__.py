"""Equinox spectral models, the model registry, calibration, anomaly scores and the trainer.

Pure JAX/NumPy: nothing here imports Dask, Prefect, fsspec or Zarr. Importing this package
registers the built-in model kinds ``spectrum_vae`` and ``spectrum_classifier`` with the registry.
"""

from __future__ import annotations

from skybatch.models.registry import (
    CARD_FILE as CARD_FILE,
    CARD_SCHEMA as CARD_SCHEMA,
    MODEL_KINDS as MODEL_KINDS,
    WEIGHTS_FILE as WEIGHTS_FILE,
    ModelRegistryError as ModelRegistryError,
    UnknownModelKindError as UnknownModelKindError,
    WeightsChecksumError as WeightsChecksumError,
    load as load,
    model_kind_and_arch as model_kind_and_arch,
    read_card as read_card,
    register_model_kind as register_model_kind,
    save as save,
    sha256_file as sha256_file,
)
from skybatch.models.vae import (
    SpectrumVAE as SpectrumVAE,
    encode_batch as encode_batch,
    gaussian_kl as gaussian_kl,
    infovae_loss as infovae_loss,
    mmd_to_standard_normal as mmd_to_standard_normal,
    reconstruct_batch as reconstruct_batch,
    reconstruction_chi2 as reconstruction_chi2,
)
from skybatch.models.classifier import (
    CLASS_NAMES as CLASS_NAMES,
    SpectrumClassifier as SpectrumClassifier,
    class_index as class_index,
    predict_logits as predict_logits,
    predict_proba as predict_proba,
)
from skybatch.models.anomaly import (
    AnomalyReference as AnomalyReference,
    GaussianMixtureDensity as GaussianMixtureDensity,
    anomaly_score as anomaly_score,
    chi2_per_pixel as chi2_per_pixel,
    fit_anomaly_reference as fit_anomaly_reference,
    fit_latent_density as fit_latent_density,
    select_latent_density as select_latent_density,
    knn_distance as knn_distance,
    latent_density_bic as latent_density_bic,
    robust_z as robust_z,
)
from skybatch.models.calibration import (
    ReliabilityDiagram as ReliabilityDiagram,
    apply_temperature as apply_temperature,
    expected_calibration_error as expected_calibration_error,
    fit_temperature as fit_temperature,
    negative_log_likelihood as negative_log_likelihood,
    plot_reliability_diagram as plot_reliability_diagram,
    reliability_diagram as reliability_diagram,
    softmax as softmax,
)
from skybatch.models.train import (
    CHECKPOINT_FORMAT as CHECKPOINT_FORMAT,
    Objective as Objective,
    TrainConfig as TrainConfig,
    TrainResult as TrainResult,
    build_optimizer as build_optimizer,
    find_checkpoint as find_checkpoint,
    fit as fit,
    plot_loss_curves as plot_loss_curves,
)
from skybatch.models.objectives import (
    ClassifierObjective as ClassifierObjective,
    VAEObjective as VAEObjective,
)
from skybatch.models.inference import apply_in_batches as apply_in_batches

__all__ = [
    "CARD_FILE",
    "CARD_SCHEMA",
    "CHECKPOINT_FORMAT",
    "CLASS_NAMES",
    "MODEL_KINDS",
    "WEIGHTS_FILE",
    "AnomalyReference",
    "ClassifierObjective",
    "GaussianMixtureDensity",
    "ModelRegistryError",
    "Objective",
    "ReliabilityDiagram",
    "SpectrumClassifier",
    "SpectrumVAE",
    "TrainConfig",
    "TrainResult",
    "UnknownModelKindError",
    "VAEObjective",
    "WeightsChecksumError",
    "anomaly_score",
    "apply_in_batches",
    "apply_temperature",
    "build_optimizer",
    "chi2_per_pixel",
    "class_index",
    "encode_batch",
    "expected_calibration_error",
    "find_checkpoint",
    "fit",
    "fit_anomaly_reference",
    "fit_latent_density",
    "latent_density_bic",
    "select_latent_density",
    "fit_temperature",
    "gaussian_kl",
    "infovae_loss",
    "knn_distance",
    "load",
    "mmd_to_standard_normal",
    "model_kind_and_arch",
    "negative_log_likelihood",
    "plot_loss_curves",
    "plot_reliability_diagram",
    "predict_logits",
    "predict_proba",
    "read_card",
    "reconstruct_batch",
    "reconstruction_chi2",
    "register_model_kind",
    "reliability_diagram",
    "robust_z",
    "save",
    "sha256_file",
    "softmax",
]
