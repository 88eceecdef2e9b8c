"""Band-pair sampling for cross-band (multi-view) training on Rubin + Euclid tiles.

Each band of a sky patch is one *view* of the same sky. A training pair is two
bands of the same tile. Pairs that are far apart in wavelength, or that come
from different instruments, are the informative ones (a source's look changes
most between Rubin u and Euclid H; Rubin r and i are nearly the same image), so
the sampler draws them more often. Wide-gap weighting alone would starve the
middle bands (r, i, VIS), so it also tracks how often each band has been used and
boosts the weights of under-used bands. Bands missing from a tile are never
drawn for that tile.

NumPy only (this is data-side code; it runs in the batch iterator, not in JAX).
Deterministic given a seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BandInfo",
    "SURVEY_BANDS",
    "RUBIN_BANDS",
    "EUCLID_BANDS",
    "band_table",
    "pair_weights",
    "BandPairSampler",
    "make_pair_batches",
]


@dataclass(frozen=True)
class BandInfo:
    """One photometric band.

    Attributes
    ----------
    name:
        Unique band key used throughout skybatch, ``"<instrument>_<filter>"`` in
        lower case, e.g. ``"rubin_u"``, ``"euclid_vis"``.
    instrument:
        ``"rubin"`` or ``"euclid"`` (or another instrument name for a new band).
    filter:
        The filter name as the instrument spells it (``"u"``, ``"VIS"``, ``"Y"``).
    wavelength_nm:
        Effective (pivot) wavelength in nm.
    """

    name: str
    instrument: str
    filter: str
    wavelength_nm: float


#: Rubin LSST u g r i z y (effective wavelengths, nm).
RUBIN_BANDS: tuple[BandInfo, ...] = (
    BandInfo("rubin_u", "rubin", "u", 367.0),
    BandInfo("rubin_g", "rubin", "g", 483.0),
    BandInfo("rubin_r", "rubin", "r", 622.0),
    BandInfo("rubin_i", "rubin", "i", 755.0),
    BandInfo("rubin_z", "rubin", "z", 869.0),
    BandInfo("rubin_y", "rubin", "y", 971.0),
)
#: Euclid VIS and NISP Y J H (effective wavelengths, nm).
EUCLID_BANDS: tuple[BandInfo, ...] = (
    BandInfo("euclid_vis", "euclid", "VIS", 715.0),
    BandInfo("euclid_y", "euclid", "Y", 1081.0),
    BandInfo("euclid_j", "euclid", "J", 1366.0),
    BandInfo("euclid_h", "euclid", "H", 1773.0),
)
#: All ten bands in the canonical skybatch order (Rubin then Euclid).
SURVEY_BANDS: tuple[BandInfo, ...] = RUBIN_BANDS + EUCLID_BANDS


def band_table(bands: Sequence[str | BandInfo]) -> tuple[BandInfo, ...]:
    """Resolve band names (or pass through :class:`BandInfo`) to ``BandInfo`` records.

    Raises
    ------
    KeyError
        For a name not in :data:`SURVEY_BANDS`; pass a ``BandInfo`` with its
        wavelength for a band skybatch does not know.
    """
    known = {b.name: b for b in SURVEY_BANDS}
    out = []
    for b in bands:
        if isinstance(b, BandInfo):
            out.append(b)
        elif b in known:
            out.append(known[b])
        else:
            raise KeyError(
                f"unknown band {b!r}; known bands are {sorted(known)}. For a new band pass "
                "BandInfo(name, instrument, filter, wavelength_nm) instead of a name."
            )
    return tuple(out)


def pair_weights(
    bands: Sequence[str | BandInfo],
    *,
    cross_instrument_boost: float = 2.0,
    gap_floor: float = 0.1,
    gap_power: float = 1.0,
) -> np.ndarray:
    """Prior weight of every band pair, favouring wide wavelength gaps and cross-instrument pairs.

    ``w_ij = (gap_floor + |ln(λ_i / λ_j)|) ** gap_power × (cross_instrument_boost if the
    instruments differ else 1)``, with ``w_ii = 0``.

    Parameters
    ----------
    bands:
        ``B`` band names or ``BandInfo`` records.
    cross_instrument_boost:
        Factor (≥ 1) for pairs from different instruments.
    gap_floor:
        Added to the log-wavelength gap so that neighbouring bands (e.g. Rubin i and
        Euclid VIS, gap 0.05) keep a non-zero weight.
    gap_power:
        Exponent on the gap term; larger favours wide gaps more strongly.

    Returns
    -------
    (B, B) float64, symmetric, zero diagonal.
    """
    if cross_instrument_boost < 1.0 or gap_floor <= 0.0 or gap_power < 0.0:
        raise ValueError(
            "pair_weights needs cross_instrument_boost >= 1, gap_floor > 0 and gap_power >= 0 "
            f"(got {cross_instrument_boost}, {gap_floor}, {gap_power})"
        )
    info = band_table(bands)
    lam = np.array([b.wavelength_nm for b in info], dtype=np.float64)
    inst = np.array([b.instrument for b in info])
    gap = np.abs(np.log(lam[:, None] / lam[None, :]))
    w = (gap_floor + gap) ** gap_power
    w = w * np.where(inst[:, None] != inst[None, :], cross_instrument_boost, 1.0)
    np.fill_diagonal(w, 0.0)
    return w


class BandPairSampler:
    """Draw one ordered band pair ``(a, b)`` per tile, skipping missing bands, balancing usage.

    The probability of pair ``{i, j}`` for a tile is proportional to
    ``pair_weights[i, j] × (β_i β_j) ** balance_strength × boost_i × boost_j`` over the bands
    present in that tile. The order (which band is view A) is a fair coin.

    - ``β`` balances the prior: the symmetric scaling (Sinkhorn–Knopp) that gives every band the
      same expected usage when all bands are present. Pairs keep their relative preference for
      wide gaps; only each band's total is equalised.
    - ``boost_k = clip((1/B) / share_k, 1/max_balance_boost, max_balance_boost) ** balance_strength``
      is feedback from the usage so far (``share_k``: band k's share of all drawn views,
      add-one smoothed). It corrects what the prior cannot know, e.g. a band missing from many
      tiles.

    Parameters
    ----------
    bands:
        The ``B`` bands, in the order of the band axis of the tile arrays.
    seed:
        Seed of the sampler's own ``numpy.random.Generator``; same seed and same calls give
        the same pairs.
    cross_instrument_boost, gap_floor, gap_power:
        See :func:`pair_weights`.
    balance_strength:
        Exponent on both balancing factors (β and the usage feedback): 0 switches balancing
        off (pure wide-gap / cross-instrument preference), 1 equalises band usage.
    max_balance_boost:
        Cap on a band's boost (and on its damping, as the inverse).
    """

    def __init__(
        self,
        bands: Sequence[str | BandInfo],
        *,
        seed: int = 0,
        cross_instrument_boost: float = 2.0,
        gap_floor: float = 0.1,
        gap_power: float = 1.0,
        balance_strength: float = 1.0,
        max_balance_boost: float = 4.0,
    ) -> None:
        self.bands = band_table(bands)
        if len(self.bands) < 2:
            raise ValueError("BandPairSampler needs at least 2 bands to form pairs")
        if balance_strength < 0 or max_balance_boost < 1:
            raise ValueError("balance_strength must be >= 0 and max_balance_boost >= 1")
        self.weights = pair_weights(
            self.bands,
            cross_instrument_boost=cross_instrument_boost,
            gap_floor=gap_floor,
            gap_power=gap_power,
        )
        self.balance_strength = float(balance_strength)
        self.prior_scaling = _symmetric_balance(self.weights)
        self.max_balance_boost = float(max_balance_boost)
        self._rng = np.random.default_rng(seed)
        self.usage = np.zeros(len(self.bands), dtype=np.int64)
        self._iu = np.triu_indices(len(self.bands), k=1)

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    def usage_share(self) -> np.ndarray:
        """(B,) fraction of all drawn views that used each band (zeros before any draw)."""
        total = self.usage.sum()
        return self.usage / total if total else np.zeros(self.n_bands)

    def balance_boost(self) -> np.ndarray:
        """(B,) current multiplicative boost per band from usage balancing."""
        if self.balance_strength == 0:
            return np.ones(self.n_bands)
        share = (self.usage + 1.0) / (self.usage.sum() + self.n_bands)
        boost = np.clip((1.0 / self.n_bands) / share, 1 / self.max_balance_boost, self.max_balance_boost)
        return boost**self.balance_strength

    def pair_probabilities(self, band_present: np.ndarray) -> np.ndarray:
        """(n, B, B) probability of each unordered pair (upper triangle) for each tile.

        ``band_present`` is (n, B) bool. Rows with fewer than two bands present are all zero.
        """
        present = self._check_present(band_present)
        beta = self.prior_scaling**self.balance_strength * self.balance_boost()
        w = self.weights * beta[:, None] * beta[None, :]
        p = w[None] * present[:, :, None] * present[:, None, :]
        p = np.triu(p, k=1)
        tot = p.sum(axis=(1, 2), keepdims=True)
        return np.divide(p, tot, out=np.zeros_like(p), where=tot > 0)

    def sample(self, band_present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draw a band pair for each tile.

        Parameters
        ----------
        band_present:
            (n, B) bool, True where the tile has data in that band.

        Returns
        -------
        band_a, band_b:
            (n,) int64 band indices, ``band_a != band_b``, both present in the tile. A tile
            with fewer than two bands present gets ``-1`` in both (no error: the caller
            drops it). Usage counts are updated after the draw.
        """
        present = self._check_present(band_present)
        n = present.shape[0]
        p_full = np.asarray(self.pair_probabilities(present))
        p = p_full[:, self._iu[0], self._iu[1]]  # (n, n_pairs)
        cum = np.cumsum(p, axis=1)
        u = self._rng.random((n,))
        flip = self._rng.random((n,)) < 0.5
        ok = cum[:, -1] > 0
        k = np.minimum((cum < u[:, None] * cum[:, -1:]).sum(axis=1), p.shape[1] - 1)
        i, j = self._iu[0][k], self._iu[1][k]
        a = np.where(flip, j, i).astype(np.int64)
        b = np.where(flip, i, j).astype(np.int64)
        a[~ok] = -1
        b[~ok] = -1
        np.add.at(self.usage, a[ok], 1)
        np.add.at(self.usage, b[ok], 1)
        return a, b

    def _check_present(self, band_present: np.ndarray) -> np.ndarray:
        present = np.asarray(band_present, dtype=bool)
        if present.ndim != 2 or present.shape[1] != self.n_bands:
            raise ValueError(
                f"band_present must be (n_tiles, {self.n_bands}) bool for bands "
                f"{[b.name for b in self.bands]}; got shape {present.shape}"
            )
        return present


def _symmetric_balance(w: np.ndarray, iters: int = 500) -> np.ndarray:
    """β > 0 with ``β_k Σ_j w_kj β_j`` equal for every k (symmetric Sinkhorn–Knopp), max β = 1."""
    beta = np.ones(w.shape[0])
    for _ in range(iters):
        r = beta * (w @ beta)
        if np.allclose(r, r.mean(), rtol=1e-9):
            break
        beta = beta * np.sqrt(r.mean() / r)
    return beta / beta.max()


def _augment(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` × 90° and optionally flip x (same for every view)."""
    x = np.rot90(x, k, axes=(-2, -1))
    return x[..., ::-1] if flip else x


def make_pair_batches(
    image: np.ndarray,
    noise: np.ndarray,
    band_present: np.ndarray,
    bands: Sequence[str | BandInfo],
    *,
    batch_size: int,
    seed: int = 0,
    augment: bool = True,
    sampler_options: dict | None = None,
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
    """Build ``make_batches(start_step)`` for the trainer: endless two-band pair batches.

    Each batch holds ``batch_size`` distinct tiles (drawn without replacement within the
    batch) and, per tile, two different bands chosen by a :class:`BandPairSampler`. With
    ``augment`` a random rotation by a multiple of 90° and a flip is applied, the same to
    both views of a tile (they are the same sky). Batches depend only on ``seed`` and the
    step number: ``make_batches(s)`` replays the sampler's usage history up to step ``s``
    (cheap: indices only), so a resumed run sees exactly the batches it would have seen.

    Parameters
    ----------
    image, noise:
        (n_tiles, B, H, W) float32 flux and 1σ noise per pixel; missing bands may hold NaN.
    band_present:
        (n_tiles, B) bool.
    bands:
        The ``B`` band names in axis order; batch band indices refer to this order.
    batch_size:
        Tiles per batch; must not exceed the number of tiles with at least two bands.
    sampler_options:
        Keyword arguments for :class:`BandPairSampler` (except ``bands`` and ``seed``).

    Returns
    -------
    Callable ``start_step -> iterator`` of dicts with ``image_a``, ``noise_a``, ``image_b``,
    ``noise_b`` (batch, H, W) float32, ``band_a``, ``band_b`` (batch,) int32 and ``tile``
    (batch,) int32 (tile row in the input arrays).
    """
    image = np.asarray(image)
    noise = np.asarray(noise)
    present = np.asarray(band_present, dtype=bool)
    if image.shape != noise.shape or image.ndim != 4 or present.shape != image.shape[:2]:
        raise ValueError(
            "make_pair_batches needs image and noise of shape (n_tiles, B, H, W) and band_present "
            f"(n_tiles, B); got {image.shape}, {noise.shape}, {present.shape}"
        )
    eligible = np.flatnonzero(present.sum(axis=1) >= 2)
    if batch_size < 1 or batch_size > eligible.size:
        raise ValueError(
            f"batch_size={batch_size} but only {eligible.size} tiles have at least two bands; "
            "lower batch_size or add tiles"
        )
    options = dict(sampler_options or {})

    def pick(step: int) -> tuple[np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([seed, step])
        return rng.choice(eligible, size=batch_size, replace=False), rng

    def make_batches(start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        sampler = BandPairSampler(bands, seed=seed, **options)
        for s in range(start_step):  # replay usage history (indices only)
            tiles, _ = pick(s)
            sampler.sample(present[tiles])
        step = start_step
        while True:
            tiles, rng = pick(step)
            a, b = sampler.sample(present[tiles])
            ia = image[tiles, a]
            na = noise[tiles, a]
            ib = image[tiles, b]
            nb = noise[tiles, b]
            if augment:
                ks = rng.integers(0, 4, size=batch_size)
                flips = rng.random(batch_size) < 0.5
                per_tile = [np.stack([ia[n], na[n], ib[n], nb[n]]) for n in range(batch_size)]
                views = np.stack([_augment(v, k, f) for v, k, f in zip(per_tile, ks, flips)])
                ia, na, ib, nb = (np.ascontiguousarray(views[:, c]) for c in range(4))
            yield {
                "image_a": ia.astype(np.float32, copy=False),
                "noise_a": na.astype(np.float32, copy=False),
                "band_a": a.astype(np.int32),
                "image_b": ib.astype(np.float32, copy=False),
                "noise_b": nb.astype(np.float32, copy=False),
                "band_b": b.astype(np.int32),
                "tile": tiles.astype(np.int32),
            }
            step += 1

    return make_batches
