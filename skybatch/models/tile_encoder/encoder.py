"""The band-agnostic :class:`TileEncoder` (one stem per band, one shared trunk), registered as
kind ``"tile_encoder"``, and :func:`stem_only_filter` for training one new band's stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from skybatch.models.registry import register_model_kind

from .layers import BandStem, GridReadout, ViTTrunk, prepare_inputs


class TileEncoder(eqx.Module):
    """Band-agnostic tile encoder: per-band stems → shared ViT trunk → token grid + global embedding.

    Parameters
    ----------
    bands:
        Band keys, one stem per band (static; e.g. ``[b.name for b in SURVEY_BANDS]``). A band
        index in :meth:`embed` refers to this order.
    image_size:
        Side of the square input patches in pixels (a multiple of ``patch``).
    patch:
        Token size in pixels; the token grid is ``image_size/patch`` on a side.
    width:
        Token and embedding dimension ``D``.
    depth, heads, mlp_ratio:
        Trunk blocks, attention heads, MLP expansion.
    stem_hidden:
        Channels of each stem's patchify convolution.
    readout_reduce:
        Features per token kept by the global read-out (:class:`GridReadout`).
    key:
        PRNG key (keyword only).

    ``embed(image (H, W), noise (H, W), band) -> (tokens (Ht, Wt, D), global (D,))``; ``global``
    is a linear read-out of the token grid (:class:`GridReadout`, shared, band-agnostic).
    ``band`` is a band key (static stem), a Python int, or an integer
    JAX array (traced, e.g. per sample under ``vmap``: each sample's stem weights are then
    selected from all stems inside jit, so a mixed-band batch still costs one stem per sample).
    """

    stems: dict[str, BandStem]
    trunk: ViTTrunk
    pool: GridReadout
    bands: tuple[str, ...] = eqx.field(static=True)
    image_size: int = eqx.field(static=True)
    patch: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    mlp_ratio: int = eqx.field(static=True)
    stem_hidden: int = eqx.field(static=True)
    readout_reduce: int = eqx.field(static=True)

    registry_kind: ClassVar[str] = "tile_encoder"

    def __init__(
        self,
        bands: Sequence[str],
        *,
        image_size: int = 32,
        patch: int = 4,
        width: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: int = 2,
        stem_hidden: int = 64,
        readout_reduce: int = 8,
        key: PRNGKeyArray,
    ):
        bands = tuple(str(b) for b in bands)
        if not bands or len(set(bands)) != len(bands):
            raise ValueError(f"TileEncoder needs a non-empty list of distinct band keys, got {bands}")
        if image_size % patch:
            raise ValueError(f"image_size={image_size} is not a multiple of patch={patch}")
        if width % heads:
            raise ValueError(f"width={width} is not a multiple of heads={heads}")
        ks, kt, kp = jax.random.split(key, 3)
        stem_keys = jax.random.split(ks, len(bands))
        self.stems = {b: BandStem(stem_hidden, width, patch, key=k) for b, k in zip(bands, stem_keys)}
        n_tokens = (image_size // patch) ** 2
        self.trunk = ViTTrunk(n_tokens, width, depth, heads, mlp_ratio, key=kt)
        self.pool = GridReadout(n_tokens, width, readout_reduce, key=kp)
        self.bands = bands
        self.image_size = image_size
        self.patch = patch
        self.width = width
        self.depth = depth
        self.heads = heads
        self.mlp_ratio = mlp_ratio
        self.stem_hidden = stem_hidden
        self.readout_reduce = readout_reduce

    # registry -----------------------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this encoder's skeleton (for the model registry)."""
        return {
            "bands": list(self.bands),
            "image_size": self.image_size,
            "patch": self.patch,
            "width": self.width,
            "depth": self.depth,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "stem_hidden": self.stem_hidden,
            "readout_reduce": self.readout_reduce,
        }

    # geometry -----------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """Token grid shape (Ht, Wt)."""
        n = self.image_size // self.patch
        return (n, n)

    def band_index(self, band: str) -> int:
        """Index of ``band`` in :attr:`bands` (KeyError naming the known bands)."""
        try:
            return self.bands.index(band)
        except ValueError:
            raise KeyError(
                f"band {band!r} has no stem in this encoder (bands: {list(self.bands)}); "
                "add one with TileEncoder.add_band"
            ) from None

    # forward ------------------------------------------------------------------------------
    def stem_tokens(self, image: Float[Array, "H W"], noise: Float[Array, "H W"], band: Any,
                    geometry: Any = None) -> Float[Array, "N D"]:
        """Band-specific tokens before the trunk, (N, D); ``geometry`` (3,) or None (see :class:`BandStem`)."""
        if image.shape != (self.image_size, self.image_size) or noise.shape != image.shape:
            raise ValueError(
                f"TileEncoder expects image and noise of {self.image_size}x{self.image_size} px, got "
                f"{image.shape} and {noise.shape}; cut tiles to image_size or build the encoder with it"
            )
        x = prepare_inputs(image, noise)
        if isinstance(band, str):
            return self.stems[self.bands[self.band_index(band)]](x, geometry)
        if isinstance(band, int):
            if not 0 <= band < len(self.bands):
                raise IndexError(f"band index {band} out of range for bands {list(self.bands)}")
            return self.stems[self.bands[band]](x, geometry)
        return self._selected_stem(band)(x, geometry)

    def _selected_stem(self, band: Int[Array, ""]) -> BandStem:
        """The stem of a traced band index: stack all stems' arrays and select entry ``band``.

        An index outside ``[0, len(bands))`` selects all-zero weights (no error inside jit).
        """
        stems = [self.stems[b] for b in self.bands]
        if len(stems) == 1:
            return stems[0]
        arrays = [eqx.filter(s, eqx.is_array) for s in stems]
        static = eqx.filter(stems[0], eqx.is_array, inverse=True)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *arrays)
        # one-hot mixing rather than a gather: under vmap it is one matmul (n, B) @ (B, ...)
        # forward and backward, and it compiles faster than gather/scatter
        onehot = jax.nn.one_hot(jnp.asarray(band, dtype=jnp.int32), len(stems), dtype=jnp.float32)
        picked = jax.tree.map(lambda a: jnp.tensordot(onehot, a, axes=1), stacked)
        return eqx.combine(picked, static)

    def embed(
        self, image: Float[Array, "H W"], noise: Float[Array, "H W"], band: Any, geometry: Any = None
    ) -> tuple[Float[Array, "Ht Wt D"], Float[Array, " D"]]:
        """Encode one band image of a tile.

        Parameters
        ----------
        image:
            (H, W) background-subtracted flux (any unit; made scale-free inside).
        noise:
            (H, W) 1σ noise in the same unit; non-finite or ≤ 0 marks missing pixels.
        band:
            Band key, Python int, or integer JAX scalar (index into :attr:`bands`).
        geometry:
            (3,) band geometry on the sky grid (native/grid pixel-scale log ratio, sub-pixel
            phase dy, dx; :func:`skybatch.models.tile_geometry.band_geometry`), or None.

        Returns
        -------
        tokens:
            (Ht, Wt, D) token grid.
        global:
            (D,) linear read-out of the token grid (:class:`GridReadout`).
        """
        tok = self.trunk(self.stem_tokens(image, noise, band, geometry))
        ht, wt = self.grid
        return tok.reshape(ht, wt, self.width), self.pool(tok)

    __call__ = embed

    # new bands ----------------------------------------------------------------------------
    def add_band(self, band: str, *, key: PRNGKeyArray | None = None, init_from: str | None = None) -> TileEncoder:
        """Return a copy with a stem for ``band`` (trunk and other stems shared, unchanged).

        The new stem is a copy of ``init_from``'s stem (e.g. the nearest band in wavelength), or
        freshly initialised from ``key``. Train it alone with :func:`stem_only_filter`.
        """
        if band in self.bands:
            raise ValueError(f"band {band!r} already has a stem")
        if init_from is not None:
            stem = self.stems[self.bands[self.band_index(init_from)]]
        elif key is not None:
            stem = BandStem(self.stem_hidden, self.width, self.patch, key=key)
        else:
            raise ValueError("add_band needs key= (fresh stem) or init_from= (copy of a band's stem)")
        arch = self.architecture()
        arch["bands"] = list(self.bands) + [band]
        skeleton = TileEncoder(**arch, key=jax.random.PRNGKey(0))  # new static band list
        return eqx.tree_at(
            lambda m: (m.stems, m.trunk, m.pool), skeleton, ({**self.stems, band: stem}, self.trunk, self.pool)
        )


register_model_kind(TileEncoder.registry_kind, TileEncoder)


def stem_only_filter(model: eqx.Module, band: str) -> Any:
    """Filter spec (pytree of bools like ``model``) that is True only on ``band``'s stem arrays.

    Use with ``eqx.partition(model, stem_only_filter(model, band))`` to train one band's stem
    with everything else frozen. ``model`` is a :class:`TileEncoder` or any module with an
    ``encoder`` attribute holding one (e.g. the training model of
    :class:`skybatch.models.tile_objective.TileJEPAObjective`).
    """
    if isinstance(model, TileEncoder):
        spec = jax.tree.map(lambda _: False, model)
        model.band_index(band)  # KeyError naming the bands if absent
        stem_spec = jax.tree.map(eqx.is_array, model.stems[band])
        return eqx.tree_at(lambda m: m.stems[band], spec, stem_spec)
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, TileEncoder):
        raise TypeError(
            f"stem_only_filter needs a TileEncoder or a module with an `encoder` TileEncoder, got "
            f"{type(model).__name__}"
        )
    spec = jax.tree.map(lambda _: False, model)
    return eqx.tree_at(lambda m: m.encoder, spec, stem_only_filter(enc, band))
