"""A user's own Equinox model for benchmarks/map_model.py: the desisky sky-VAE encoder shape.

It lives in its own module so Dask workers import it by reference (``client.upload_file``),
as a user's model package would be installed on the workers.
"""

from __future__ import annotations

import equinox as eqx
import jax

NWAVE = 7781


class SkyEncoder(eqx.Module):
    """The desisky sky-VAE encoder shape (a user's own model, not one of skybatch's)."""

    layers: list

    def __init__(self, nwave: int = NWAVE, widths=(1000, 800, 600, 500, 300), latent: int = 8, *, key):
        sizes = (nwave, *widths, latent)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]

    def __call__(self, flux):
        x = flux
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)
