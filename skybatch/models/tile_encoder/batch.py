"""Jitted batched embedding with a :class:`~skybatch.models.tile_encoder.TileEncoder`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from skybatch.models.tile_geometry import GEOMETRY_FEATURES

from .encoder import TileEncoder


@eqx.filter_jit
def _embed_batch_jit(encoder: TileEncoder, image: Array, noise: Array, band: Array, geometry: Array) -> tuple[Array, Array]:
    return jax.vmap(encoder.embed)(image, noise, band, geometry)


def embed_batch(
    encoder: TileEncoder, image: Any, noise: Any, band: Any, geometry: Any = None
) -> tuple[Float[Array, "n Ht Wt D"], Float[Array, "n D"]]:
    """Jitted batched :meth:`TileEncoder.embed`.

    Parameters
    ----------
    image, noise:
        (n, H, W) arrays (NumPy or JAX).
    band:
        (n,) integer band indices, or one band key / int for the whole batch (then only that
        band's stem runs).

    Returns
    -------
    tokens (n, Ht, Wt, D) and global (n, D). One compile per (n, band key) combination: pad the
    last batch to keep ``n`` fixed. ``geometry``: (n, 3) band geometry, or None (zeros).
    """
    image = jnp.asarray(image, dtype=jnp.float32)
    noise = jnp.asarray(noise, dtype=jnp.float32)
    geo = (jnp.zeros((image.shape[0], GEOMETRY_FEATURES), jnp.float32) if geometry is None
           else jnp.asarray(geometry, dtype=jnp.float32))
    if isinstance(band, (str, int)):
        return _embed_batch_static(encoder, image, noise, band, geo)
    return _embed_batch_jit(encoder, image, noise, jnp.asarray(band, dtype=jnp.int32), geo)


@eqx.filter_jit
def _embed_batch_static(encoder: TileEncoder, image: Array, noise: Array, band: str | int,
                        geometry: Array) -> tuple[Array, Array]:
    return jax.vmap(lambda i, n, g: encoder.embed(i, n, band, g))(image, noise, geometry)
