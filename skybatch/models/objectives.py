"""Training objectives for the spectral models, implementing :class:`skybatch.models.train.Objective`.

Batches are dicts of arrays with a leading batch axis B:

- :class:`VAEObjective`: ``flux``, ``ivar`` float32 (B, nwave).
- :class:`ClassifierObjective`: ``flux``, ``ivar`` float32 (B, nwave) and ``label`` int (B,),
  class indices from :func:`skybatch.models.classifier.class_index`; rows labelled -1 are
  left out of the loss and metrics.

Other keys in a batch (e.g. ``healpix``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from skybatch.models.classifier import CLASS_NAMES, SpectrumClassifier
from skybatch.models.vae import SpectrumVAE, infovae_loss

__all__ = ["ClassifierObjective", "VAEObjective"]


def _need(batch: dict[str, Any], keys: tuple[str, ...], who: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{who} needs batch arrays {list(keys)}; missing {missing} (got {sorted(batch)})")


@dataclass(frozen=True)
class VAEObjective:
    """Train a :class:`SpectrumVAE` with the InfoVAE-MMD loss (:func:`infovae_loss`).

    Parameters
    ----------
    nwave : wavelength pixels of the spectra
    latent_dim, width, depth : VAE architecture (see :class:`SpectrumVAE`)
    model_error : fractional model error of the decoder in the chi^2 (see :class:`SpectrumVAE`);
        5 %: bright normal spectra are then fitted to ~chi^2 1 per pixel instead of hundreds
    lam : weight of the MMD term
    beta : weight of the KL term (0 disables it)
    robust_scale : per-spectrum robust loss scale ``c``, in units of the batch's median chi^2 per
        pixel (see :func:`infovae_loss`; 0 disables it); 5 keeps normal spectra near full weight
        and the training set's anomalies (tens of times the median) from being memorised
    """

    nwave: int
    latent_dim: int = 8
    width: int = 256
    depth: int = 2
    model_error: float = 0.05
    lam: float = 1.0
    beta: float = 1e-3
    robust_scale: float = 5.0

    name = "spectrum_vae"

    def __post_init__(self) -> None:
        if self.lam < 0 or self.beta < 0:
            raise ValueError(f"VAEObjective: lam and beta must be >= 0, got lam={self.lam}, beta={self.beta}")
        if not (self.model_error >= 0 and self.robust_scale >= 0):
            raise ValueError(f"VAEObjective: model_error and robust_scale must be >= 0, got "
                             f"model_error={self.model_error}, robust_scale={self.robust_scale}")

    def init_model(self, key: PRNGKeyArray) -> SpectrumVAE:
        """A new :class:`SpectrumVAE`."""
        return SpectrumVAE(self.nwave, self.latent_dim, self.width, self.depth, self.model_error, key=key)

    def init_state(self, model: SpectrumVAE) -> None:
        """No non-trainable state."""
        return None

    def loss(
        self, model: SpectrumVAE, state: None, batch: dict[str, jax.Array], key: PRNGKeyArray
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """InfoVAE-MMD loss; metrics ``chi2`` (per good pixel), ``mmd``, ``kl``."""
        _need(batch, ("flux", "ivar"), "VAEObjective")
        return infovae_loss(model, batch["flux"], batch["ivar"], key, lam=self.lam, beta=self.beta,
                            robust_scale=self.robust_scale)

    def update_state(self, model: SpectrumVAE, state: None, step: Any) -> None:
        """Stateless."""
        return state


@dataclass(frozen=True)
class ClassifierObjective:
    """Train a :class:`SpectrumClassifier` with (optionally class-weighted) cross-entropy.

    Parameters
    ----------
    nwave : wavelength pixels of the spectra
    class_names, channels, kernel_size, stride : classifier architecture
    class_weights : per-class loss weights (e.g. inverse class frequencies), None = equal
    label_smoothing : mix this much of the uniform distribution into the targets (0 <= x < 1)
    """

    nwave: int
    class_names: tuple[str, ...] = CLASS_NAMES
    channels: tuple[int, ...] = (16, 32, 64)
    kernel_size: int = 9
    stride: int = 4
    class_weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0

    name = "spectrum_classifier"

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
            if len(self.class_weights) != len(self.class_names) or min(self.class_weights) < 0:
                raise ValueError(
                    f"ClassifierObjective: class_weights needs {len(self.class_names)} values >= 0 "
                    f"(one per class of {self.class_names}), got {self.class_weights}"
                )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"ClassifierObjective: label_smoothing must lie in [0, 1), got {self.label_smoothing}")

    def init_model(self, key: PRNGKeyArray) -> SpectrumClassifier:
        """A new :class:`SpectrumClassifier`."""
        return SpectrumClassifier(
            self.nwave, self.class_names, self.channels, self.kernel_size, self.stride, key=key
        )

    def init_state(self, model: SpectrumClassifier) -> None:
        """No non-trainable state."""
        return None

    def loss(
        self, model: SpectrumClassifier, state: None, batch: dict[str, jax.Array], key: PRNGKeyArray
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean cross-entropy over labelled rows; metrics ``accuracy`` and ``labelled`` (fraction)."""
        _need(batch, ("flux", "ivar", "label"), "ClassifierObjective")
        logits = jax.vmap(model)(batch["flux"], batch["ivar"])
        label = batch["label"].astype(jnp.int32)
        n_classes = logits.shape[-1]
        keep = (label >= 0) & (label < n_classes)
        safe = jnp.where(keep, label, 0)
        target = jax.nn.one_hot(safe, n_classes, dtype=logits.dtype)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / n_classes
        nll = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
        w = keep.astype(logits.dtype)
        if self.class_weights is not None:
            w = w * jnp.asarray(self.class_weights, logits.dtype)[safe]
        loss = jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)
        n_keep = jnp.maximum(jnp.sum(keep), 1)
        accuracy = jnp.sum(keep & (jnp.argmax(logits, axis=-1) == safe)) / n_keep
        return loss, {"accuracy": accuracy, "labelled": jnp.mean(keep.astype(logits.dtype))}

    def update_state(self, model: SpectrumClassifier, state: None, step: Any) -> None:
        """Stateless."""
        return state
