"""A 1-D convolutional classifier of spectra into GALAXY / QSO / STAR.

The model sees two channels per wavelength pixel:

- the flux, with masked pixels (``ivar <= 0`` or non-finite flux) set to 0;
- a quality weight ``w = s / (1 + s)`` with ``s = sqrt(ivar)``: for a spectrum normalised to unit
  continuum ``s`` is the per-pixel S/N, so ``w`` runs from 0 (masked or noise-dominated) towards 1
  (high S/N). It tells the network which pixels to trust.

Architecture: a few strided ``Conv1d`` blocks (GELU), then global mean and max pooling over
wavelength, then a linear head to one logit per class. The model works on one spectrum; callers
vmap it (:func:`predict_logits`, :func:`predict_proba`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from skybatch.models.initializers import fan_in_uniform
from skybatch.models.registry import register_model_kind

__all__ = [
    "CLASS_NAMES",
    "SpectrumClassifier",
    "class_index",
    "predict_logits",
    "predict_proba",
]

CLASS_NAMES: tuple[str, ...] = ("GALAXY", "QSO", "STAR")
"""Default classes, in logit order: redrock SPECTYPE / SDSS CLASS values."""


def class_index(labels: Iterable[Any], class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Map class strings (redrock ``SPECTYPE``, SDSS ``CLASS``) to class indices.

    Matching ignores case and surrounding blanks (FITS pads strings with spaces); ``bytes`` are
    decoded as ASCII. Anything not in ``class_names`` (e.g. ``""``, ``"UNKNOWN"``, None) maps
    to -1, which training excludes.

    **Arguments:** `labels` an iterable (list, NumPy ``str``/``bytes``/object array, Arrow column
    converted with ``to_numpy``) of N labels; `class_names` the class order.

    **Returns:** int32 array of shape (N,), values in ``[-1, len(class_names) - 1]``.
    """
    lookup = {str(name).strip().upper(): i for i, name in enumerate(class_names)}
    out = []
    for lab in np.asarray(labels, dtype=object).ravel():
        if isinstance(lab, (bytes, np.bytes_)):
            lab = bytes(lab).decode("ascii", errors="replace")
        out.append(lookup.get(str(lab).strip().upper(), -1) if lab is not None else -1)
    return np.asarray(out, dtype=np.int32)


class SpectrumClassifier(eqx.Module):
    """1-D CNN: (flux, ivar) of shape ``(nwave,)`` -> logits of shape ``(n_classes,)``.

    Each block is ``Conv1d(kernel_size, stride, padding=kernel_size // 2)`` + GELU, so the length
    shrinks by ``stride`` per block (7781 px -> 1946 -> 487 -> 122 with the defaults). Global
    mean and max pooling make the head independent of the exact length.

    !!! example

        ```python
        clf = SpectrumClassifier(nwave=7781, key=jax.random.PRNGKey(0))
        logits = clf(flux, ivar)                       # (3,)
        probs = predict_proba(clf, fluxes, ivars)      # (B, 3)
        clf.class_names                                # ("GALAXY", "QSO", "STAR")
        ```
    """

    convs: tuple[eqx.nn.Conv1d, ...]
    head: eqx.nn.Linear
    nwave: int = eqx.field(static=True)
    class_names: tuple[str, ...] = eqx.field(static=True)
    channels: tuple[int, ...] = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    registry_kind: ClassVar[str] = "spectrum_classifier"

    def __init__(
        self,
        nwave: int,
        class_names: Sequence[str] = CLASS_NAMES,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 9,
        stride: int = 4,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `nwave`: number of wavelength pixels of the input spectra.
        - `class_names`: class names in logit order (default :data:`CLASS_NAMES`).
        - `channels`: output channels of each conv block; its length is the number of blocks.
        - `kernel_size`: conv kernel width in pixels (odd recommended).
        - `stride`: downsampling factor of each block.
        - `key`: PRNG key for the weight initialisation (keyword only).
        """
        class_names = tuple(str(c) for c in class_names)
        channels = tuple(int(c) for c in channels)
        nwave, kernel_size, stride = int(nwave), int(kernel_size), int(stride)
        if len(class_names) < 2 or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must hold at least 2 distinct names, got {class_names}")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
        if nwave < 1 or kernel_size < 1 or stride < 1:
            raise ValueError(
                f"nwave, kernel_size and stride must be >= 1; got {nwave}, {kernel_size}, {stride}"
            )
        # Shape-only skeletons, then one fast draw for all weights (see initializers.py).
        convs = []
        c_in = 2
        for c_out in channels:
            convs.append(
                eqx.filter_eval_shape(
                    eqx.nn.Conv1d, c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, key=key
                )
            )
            c_in = c_out
        head = eqx.filter_eval_shape(eqx.nn.Linear, 2 * c_in, len(class_names), key=key)
        self.convs, self.head = fan_in_uniform((tuple(convs), head), key)
        self.nwave = nwave
        self.class_names = class_names
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride

    def architecture(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model's skeleton (stored in the model card)."""
        return {
            "nwave": self.nwave,
            "class_names": list(self.class_names),
            "channels": list(self.channels),
            "kernel_size": self.kernel_size,
            "stride": self.stride,
        }

    @property
    def n_classes(self) -> int:
        """Number of classes (length of the logits)."""
        return len(self.class_names)

    def __call__(
        self,
        flux: Float[Array, " nwave"],
        ivar: Float[Array, " nwave"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " n_classes"]:
        """Class logits of one spectrum.

        **Arguments:** `flux`, `ivar` of shape (nwave,); `key` ignored (no dropout).

        **Returns:** logits of shape (n_classes,), in the order of ``class_names``.
        """
        if flux.shape != (self.nwave,) or ivar.shape != (self.nwave,):
            raise ValueError(
                f"SpectrumClassifier expects flux and ivar of shape ({self.nwave},), got "
                f"{flux.shape} and {ivar.shape}; vmap the model over a batch (e.g. predict_logits)"
            )
        good = (ivar > 0) & jnp.isfinite(flux)
        x = jnp.where(good, flux, 0.0)
        s = jnp.sqrt(jnp.where(good, ivar, 0.0))
        h = jnp.stack([x, s / (1.0 + s)])  # (2, nwave)
        for conv in self.convs:
            h = jax.nn.gelu(conv(h))
        pooled = jnp.concatenate([jnp.mean(h, axis=-1), jnp.max(h, axis=-1)])
        return self.head(pooled)


register_model_kind(SpectrumClassifier.registry_kind, SpectrumClassifier)


@eqx.filter_jit
def predict_logits(
    model: SpectrumClassifier, flux: Float[Array, "batch nwave"], ivar: Float[Array, "batch nwave"]
) -> Float[Array, "batch n_classes"]:
    """Logits of a batch, shape (batch, n_classes). Jitted once per input shape."""
    return jax.vmap(model)(flux, ivar)


@eqx.filter_jit
def _proba(model: SpectrumClassifier, flux: Array, ivar: Array, temperature: Array) -> Array:
    return jax.nn.softmax(jax.vmap(model)(flux, ivar) / temperature, axis=-1)


def predict_proba(
    model: SpectrumClassifier,
    flux: Float[Array, "batch nwave"],
    ivar: Float[Array, "batch nwave"],
    temperature: float | Array = 1.0,
) -> Float[Array, "batch n_classes"]:
    """Class probabilities ``softmax(logits / temperature)`` of a batch, (batch, n_classes).

    ``temperature`` comes from :func:`skybatch.models.calibration.fit_temperature` (stored in the
    card under ``calibration.temperature``); 1.0 means uncalibrated. Jitted once per input shape
    (the temperature is traced, so changing it does not recompile).
    """
    return _proba(model, flux, ivar, jnp.asarray(temperature, dtype=jnp.float32))
