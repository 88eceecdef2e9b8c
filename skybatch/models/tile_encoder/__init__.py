"""A band-agnostic tile encoder: one small convolutional stem per band, one shared ViT trunk.

Each band of a sky patch (Rubin u g r i z y, Euclid VIS Y J H, or any band added later) enters
through its own stem, which maps the band image and its noise map to patch tokens. The stems
absorb what is band-specific (PSF, depth, pixel statistics); everything after them is shared:
a vision-transformer trunk with a learned position embedding and **no band embedding**, so the
trunk cannot tell which band it is looking at and the same sky must give the same
representation in every band.

Inputs are made scale-free before the stem (per image): with ``σ_ref`` the mean noise of the
valid pixels, channel 0 is ``asinh(image / σ_ref)`` (a compressed S/N image; a bright star
peaks near 6, sky is ~N(0, 1)) and channel 1 is ``log(noise / σ_ref)`` (the relative noise map,
which rises on bright sources and at tile edges). Non-finite pixels (missing data) enter as 0.

Adding a band = a new stem (:meth:`TileEncoder.add_band`); train it alone with the trunk frozen
through :func:`stem_only_filter` and ``eqx.partition``.

Registered with the model registry as kind ``"tile_encoder"``.
"""

from __future__ import annotations

from .batch import embed_batch
from .encoder import TileEncoder, stem_only_filter
from .layers import BandStem, GridReadout, TransformerBlock, ViTTrunk, prepare_inputs

__all__ = [
    "prepare_inputs",
    "BandStem",
    "TransformerBlock",
    "ViTTrunk",
    "GridReadout",
    "TileEncoder",
    "stem_only_filter",
    "embed_batch",
]
