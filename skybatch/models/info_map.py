"""Information maps: where in a tile the pixels carry information about sources.

Most of a survey tile is empty sky. A loss averaged uniformly over pixels or tokens is
dominated by that sky noise, which carries no information about the scene. The information
map weights each pixel by how much source signal it holds:

1. **Detection significance** ``s``: the S/N of a 3×3 aperture around each pixel,
   ``s = Σ image / sqrt(Σ noise²)`` (pure sky gives ``s ~ N(0, 1)``).
2. **Structure**: the gradient magnitude ``|∇s|`` (central differences, per pixel), which marks
   source edges, cores and shapes rather than flat plateaus.
3. ``info = log1p(relu(s − threshold) + gradient_weight · |∇s| · sigmoid(s − threshold))``: zero
   on empty sky (below threshold, the gradient term is gated off), growing with S/N and
   structure, log-compressed so that one bright star does not take all the weight.

:func:`token_weights` pools the map onto the encoder's token grid and normalises each map to
mean 1 with an additive ``floor`` (so an empty tile gets uniform weights and sky keeps a small
weight everywhere).

Written once against the array namespace of the inputs (NumPy, CuPy or ``jax.numpy``, also
under ``jax.jit``/``vmap``): see :mod:`skybatch.xp`. Pixels with non-finite image or noise,
or noise ≤ 0, count as no data (zero information).
"""

from __future__ import annotations

from typing import Any

from skybatch.xp import get_namespace

__all__ = [
    "detection_significance",
    "information_map",
    "pool_to_tokens",
    "normalise_weights",
    "token_weights",
]


def _concat(xp: Any, arrays: list[Any], axis: int) -> Any:
    fn = getattr(xp, "concat", None) or xp.concatenate
    return fn(arrays, axis=axis)


def _shift(xp: Any, x: Any, step: int, axis: int) -> Any:
    """``x`` moved by ``step`` (±1) along ``axis`` (−1 or −2), zero-filled at the edge."""
    if axis == -1:
        zero = xp.zeros_like(x[..., :1])
        return _concat(xp, [zero, x[..., :-1]], -1) if step > 0 else _concat(xp, [x[..., 1:], zero], -1)
    zero = xp.zeros_like(x[..., :1, :])
    return _concat(xp, [zero, x[..., :-1, :]], -2) if step > 0 else _concat(xp, [x[..., 1:, :], zero], -2)


def _box3(xp: Any, x: Any) -> Any:
    """3×3 box sum over the last two axes (zero outside the image)."""
    rows = x + _shift(xp, x, 1, -2) + _shift(xp, x, -1, -2)
    return rows + _shift(xp, rows, 1, -1) + _shift(xp, rows, -1, -1)


def detection_significance(image: Any, noise: Any) -> Any:
    """S/N of the 3×3 aperture sum around each pixel.

    Parameters
    ----------
    image:
        (..., H, W) background-subtracted flux (any unit).
    noise:
        (..., H, W) 1σ noise per pixel in the same unit.

    Returns
    -------
    (..., H, W) float, ``Σ_3×3 image / sqrt(Σ_3×3 noise²)``; 0 where there is no valid pixel.
    On pure Gaussian sky it is ~N(0, 1).
    """
    xp = get_namespace(image, noise)
    valid = xp.isfinite(image) & xp.isfinite(noise) & (noise > 0)
    img = xp.where(valid, image, xp.zeros_like(image))
    var = xp.where(valid, noise * noise, xp.zeros_like(noise))
    num = _box3(xp, img)
    den = _box3(xp, var)
    ok = den > 0
    return xp.where(ok, num / xp.sqrt(xp.where(ok, den, xp.ones_like(den))), xp.zeros_like(num))


def information_map(
    image: Any,
    noise: Any,
    *,
    threshold: float = 2.0,
    gradient_weight: float = 1.0,
) -> Any:
    """Per-pixel information map from S/N and gradient magnitude.

    Parameters
    ----------
    image, noise:
        (..., H, W) flux and 1σ noise per pixel.
    threshold:
        Detection significance (σ) below which a pixel counts as sky.
    gradient_weight:
        Weight of the gradient-magnitude term relative to the significance excess.

    Returns
    -------
    (..., H, W) float ≥ 0, unnormalised: ``log1p(relu(s − t) + g·|∇s|·sigmoid(s − t))``; 0 on
    pixels without data.
    """
    xp = get_namespace(image, noise)
    s = detection_significance(image, noise)
    gy = 0.5 * (_shift(xp, s, -1, -2) - _shift(xp, s, 1, -2))
    gx = 0.5 * (_shift(xp, s, -1, -1) - _shift(xp, s, 1, -1))
    grad = xp.sqrt(gx * gx + gy * gy)
    excess = s - threshold
    gate = 1.0 / (1.0 + xp.exp(-excess))
    raw = xp.maximum(excess, xp.zeros_like(excess)) + gradient_weight * grad * gate
    valid = xp.isfinite(image) & xp.isfinite(noise) & (noise > 0)
    return xp.where(valid, xp.log1p(raw), xp.zeros_like(raw))


def pool_to_tokens(x: Any, patch: int) -> Any:
    """Mean-pool the last two axes in ``patch`` × ``patch`` blocks.

    ``x``: (..., H, W) with H and W multiples of ``patch``. Returns (..., H/patch, W/patch).
    """
    xp = get_namespace(x)
    h, w = x.shape[-2], x.shape[-1]
    if h % patch or w % patch:
        raise ValueError(
            f"image of {h}x{w} px does not split into {patch}x{patch} px tokens; "
            "crop or pad the tiles to a multiple of the encoder's patch size"
        )
    lead = tuple(x.shape[:-2])
    blocks = xp.reshape(x, lead + (h // patch, patch, w // patch, patch))
    return xp.mean(blocks, axis=(-3, -1))


def normalise_weights(info: Any, *, floor: float = 0.1) -> Any:
    """Turn an information map into weights with mean 1 over the last two axes.

    ``w = (info + floor) / mean(info + floor)``: an empty map gives uniform weights, and sky
    keeps a weight of about ``floor / mean(info + floor)``. ``info`` is (..., h, w) ≥ 0.
    """
    if floor <= 0:
        raise ValueError(f"floor must be > 0 (got {floor}); it keeps empty tiles well defined")
    xp = get_namespace(info)
    v = info + floor
    return v / xp.mean(v, axis=(-2, -1), keepdims=True)


def token_weights(
    image: Any,
    noise: Any,
    patch: int,
    *,
    floor: float = 0.1,
    threshold: float = 2.0,
    gradient_weight: float = 1.0,
) -> Any:
    """Loss weights per token: the information map pooled to the token grid, mean 1 per image.

    ``image``, ``noise``: (..., H, W). Returns (..., H/patch, W/patch).
    """
    info = information_map(image, noise, threshold=threshold, gradient_weight=gradient_weight)
    return normalise_weights(pool_to_tokens(info, patch), floor=floor)
