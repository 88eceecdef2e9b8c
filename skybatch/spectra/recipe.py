"""The preprocessing recipe and the one function the pipeline maps over chunks.

:func:`preprocess_block` runs, in this order, on one chunk of spectra:

1. :func:`~skybatch.spectra.mask_bad_pixels` with ``recipe.mask_bits``;
2. sky-line masking (observed frame) if ``recipe.sky_lines``;
3. rest frame (per-spectrum λ/(1+z)) if ``recipe.rest_frame``, with the
   bad-redshift rule ``recipe.bad_redshift``;
4. flux-conserving resampling onto ``recipe.grid`` (skipped for ``native``);
5. normalisation (``recipe.normalize`` in ``recipe.normalize_window``);
6. continuum division if ``recipe.continuum != "none"``.

``PreprocessedBlock.scale`` undoes step 5 only (``flux * scale``,
``ivar / scale²``); continuum division is not undone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from skybatch.spectra.continuum import divide_continuum
from skybatch.spectra.flags import NO_GOOD_PIXELS
from skybatch.spectra.grids import GridSpec
from skybatch.spectra.mask import mask_bad_pixels, parse_mask_bits
from skybatch.spectra.normalize import NORMALIZE_METHODS, normalize
from skybatch.spectra.redshift import to_rest_frame
from skybatch.spectra.resample import resample
from skybatch.spectra.skylines import mask_sky_lines
from skybatch.xp import get_namespace

__all__ = ["RECIPE_VERSION", "PreprocessRecipe", "PreprocessedBlock", "target_wavelength", "preprocess_block"]

#: Version of the :meth:`PreprocessRecipe.to_dict` layout (bump on incompatible change).
RECIPE_VERSION = 1

_BAD_REDSHIFT = ("drop", "observed")
_CONTINUUM = ("none", "smooth")
_ON_FAILURE = ("keep", "drop")


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"PreprocessRecipe.{name} = {value!r} is not allowed; {allowed}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, value, "use true or false")


@dataclass(frozen=True)
class PreprocessRecipe:
    """How to preprocess spectra; checked at construction, recorded in store attrs.

    Every field maps one-to-one onto a CLI flag / YAML key of the same name.
    Bad values raise ``ValueError`` naming the field and the allowed values.
    """

    grid: GridSpec | str = "native"
    """Target wavelength grid: ``"native"`` (keep the input grid), a preset
    (``"desi"``, ``"sdss"``, ``"desi-loglam"``), ``"linear:START:STOP:STEP"`` (Å),
    ``"loglam:START:STOP:STEP"`` (log10 Å), ``...:n=N``, or a :class:`GridSpec`.
    In the rest frame the grid is in rest-frame Å."""

    rest_frame: bool = False
    """Shift each spectrum to its rest frame (λ/(1+z)) before resampling; needs a
    grid other than ``native``."""

    bad_redshift: Literal["drop", "observed"] = "drop"
    """Rest frame only. Spectra whose redshift is unusable (NaN, <= -1 or zwarn != 0):
    ``"drop"`` = kept in place with ivar = 0 everywhere (flags BAD_REDSHIFT, DROPPED);
    ``"observed"`` = kept in the observed frame (flags BAD_REDSHIFT, OBSERVED_FRAME)."""

    trust_unknown_zwarn: bool = False
    """Rest frame only: treat ``zwarn == -1`` (unknown) as good instead of unusable."""

    scale_flux_density: bool = False
    """Rest frame only: multiply flux by (1+z) (ivar by (1+z)⁻²) so ∫ f dλ_rest is the
    observed integrated flux. Off: flux values stay in observed-frame units."""

    mask_bits: str | int = "desi"
    """Survey mask bits that make a pixel bad, besides ivar <= 0 and NaN/inf:
    ``"desi"``, ``"sdss"``, ``"none"``, ``"desi:COSMIC,NODATA"``, ``"desi+sdss"``
    or an integer bit mask (see :func:`skybatch.spectra.parse_mask_bits`)."""

    sky_lines: bool = False
    """Mask pixels within ±``sky_line_halfwidth`` Å of strong sky lines (observed frame)."""

    sky_line_halfwidth: float = 3.0
    """Half width of the sky-line mask, Å (observed frame), > 0."""

    min_good_fraction: float = 1.0
    """Smallest fraction of a resampled pixel covered by good input pixels for it to
    keep ivar > 0, in (0, 1]; 1 = full coverage required."""

    normalize: Literal["median", "mean", "total", "none"] = "median"
    """Per-spectrum normalisation: median or mean flux density, total (integrated) flux,
    or none. Good pixels (ivar > 0) inside ``normalize_window`` only."""

    normalize_window: tuple[float, float] | None = None
    """(lo, hi) Å on the target grid (rest-frame Å in the rest frame); None = whole spectrum."""

    normalize_on_failure: Literal["keep", "drop"] = "keep"
    """Spectra with no good pixel in the window (or a non-positive scale): ``"keep"`` =
    scale 1, flag NORM_FAILED; ``"drop"`` = also ivar = 0 (flag DROPPED)."""

    continuum: Literal["none", "smooth"] = "none"
    """Divide by a smooth continuum (masked running mean with σ-clipping) after
    normalisation: ``"none"`` or ``"smooth"``."""

    continuum_width: int = 151
    """Continuum boxcar width in target-grid pixels: odd integer >= 3."""

    _grid: GridSpec = field(init=False, repr=False, compare=False)
    _bad_bits: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            grid = self.grid if isinstance(self.grid, GridSpec) else GridSpec.parse(self.grid)
        except ValueError as err:
            raise ValueError(f"PreprocessRecipe.grid: {err}") from None
        object.__setattr__(self, "_grid", grid)
        for name in ("rest_frame", "trust_unknown_zwarn", "scale_flux_density", "sky_lines"):
            _check_bool(name, getattr(self, name))
        if self.rest_frame and grid.kind == "native":
            _fail("grid", "native", "the rest frame needs a common target grid, e.g. grid='loglam:3.0:3.95:1e-4'")
        if self.bad_redshift not in _BAD_REDSHIFT:
            _fail("bad_redshift", self.bad_redshift, f"allowed: {_BAD_REDSHIFT}")
        try:
            bits = parse_mask_bits(self.mask_bits)
        except ValueError as err:
            raise ValueError(f"PreprocessRecipe.mask_bits: {err}") from None
        object.__setattr__(self, "_bad_bits", bits)
        hw = self.sky_line_halfwidth
        if isinstance(hw, bool) or not isinstance(hw, (int, float)) or not math.isfinite(hw) or hw <= 0:
            _fail("sky_line_halfwidth", hw, "give a positive number of Å, e.g. 3.0")
        mg = self.min_good_fraction
        if isinstance(mg, bool) or not isinstance(mg, (int, float)) or not 0 < mg <= 1:
            _fail("min_good_fraction", mg, "give a number in (0, 1]")
        if self.normalize not in NORMALIZE_METHODS:
            _fail("normalize", self.normalize, f"allowed: {NORMALIZE_METHODS}")
        win = self.normalize_window
        if win is not None:
            try:
                lo, hi = (float(v) for v in win)
            except (TypeError, ValueError):
                _fail("normalize_window", win, "give (lo, hi) in Å or None")
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo > 0):
                _fail("normalize_window", win, "give (lo, hi) in Å with 0 < lo < hi")
            object.__setattr__(self, "normalize_window", (lo, hi))
        if self.normalize_on_failure not in _ON_FAILURE:
            _fail("normalize_on_failure", self.normalize_on_failure, f"allowed: {_ON_FAILURE}")
        if self.continuum not in _CONTINUUM:
            _fail("continuum", self.continuum, f"allowed: {_CONTINUUM}")
        cw = self.continuum_width
        if isinstance(cw, bool) or not isinstance(cw, int) or cw < 3 or cw % 2 == 0:
            _fail("continuum_width", cw, "give an odd integer number of pixels >= 3")

    # -- derived -------------------------------------------------------------------
    @property
    def grid_spec(self) -> GridSpec:
        """The parsed target grid."""
        return self._grid

    @property
    def bad_bits(self) -> int:
        """``mask_bits`` as an integer bit mask."""
        return self._bad_bits

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for store attrs); :meth:`from_dict` rebuilds the recipe."""
        out: dict[str, Any] = {"recipe_version": RECIPE_VERSION}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if f.name == "grid":
                g = self._grid
                value = g.to_dict() if g.kind == "explicit" else str(g)
            elif f.name == "normalize_window" and value is not None:
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessRecipe:
        """Rebuild from :meth:`to_dict` output (or a YAML/CLI mapping of field names).

        Raises ValueError for unknown keys (listing the allowed ones) or a
        newer ``recipe_version``.
        """
        data = dict(d)
        version = data.pop("recipe_version", RECIPE_VERSION)
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise ValueError(
                f"PreprocessRecipe.from_dict: recipe_version {version!r} is newer than this skybatch "
                f"understands ({RECIPE_VERSION}); upgrade skybatch"
            )
        allowed = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"PreprocessRecipe.from_dict: unknown field(s) {unknown}; allowed: {allowed}")
        grid = data.get("grid")
        if isinstance(grid, dict):
            data["grid"] = GridSpec.from_dict(grid)
        if isinstance(data.get("normalize_window"), list):
            data["normalize_window"] = tuple(data["normalize_window"])
        return cls(**data)


@dataclass
class PreprocessedBlock:
    """Output of :func:`preprocess_block` for one chunk."""

    flux: Any
    """(n_spectrum, n_target) flux density on the target grid (normalised); 0 where ivar is 0."""
    ivar: Any
    """(n_spectrum, n_target) inverse variance (diagonal; see skybatch.spectra.resample)."""
    mask: Any
    """(n_spectrum, n_target) uint32: survey bits OR-propagated, plus skybatch bits
    BADPIX / NOCOVERAGE / SKYLINE (skybatch.spectra.mask)."""
    scale: Any
    """(n_spectrum,) float64 normalisation scale: input = flux * scale, ivar / scale²."""
    flags: Any
    """(n_spectrum,) int32 spectrum flags (skybatch.spectra.flags)."""
    wavelength: Any
    """(n_target,) float64 target-grid pixel centres, Å (rest frame if recipe.rest_frame)."""


def target_wavelength(recipe: PreprocessRecipe, wavelength: Any) -> Any:
    """Target grid (n_target,) float64 Å, in the namespace of ``wavelength``.

    ``native`` returns the input grid itself (which must then be 1-D).
    """
    xp = get_namespace(wavelength)
    spec = recipe.grid_spec
    if spec.kind == "native":
        if wavelength.ndim != 1:
            raise ValueError("grid 'native' needs one wavelength grid shared by the chunk (1-D)")
        return xp.astype(wavelength, xp.float64)
    return spec.wavelength(xp=xp)


def preprocess_block(
    flux: Any,
    ivar: Any,
    mask: Any | None,
    wavelength: Any,
    z: Any | None,
    zwarn: Any | None,
    recipe: PreprocessRecipe,
) -> PreprocessedBlock:
    """Preprocess one chunk of spectra (pure: arrays in, arrays out; NumPy or CuPy).

    Parameters
    ----------
    flux, ivar : arrays (n_spectrum, n_wave) float32
        Observed-frame flux density (1e-17 erg/s/cm²/Å) and inverse variance.
    mask : integer array (n_spectrum, n_wave) or None
        Survey pixel bits (0 = good).
    wavelength : array (n_wave,) float64, Å, vacuum, observed frame (or (n_spectrum, n_wave))
    z : array (n_spectrum,) float64 or None
        Redshift (NaN = missing); needed when ``recipe.rest_frame``.
    zwarn : int64 array (n_spectrum,) or None
        0 = good, -1 = unknown.
    recipe : PreprocessRecipe

    Returns
    -------
    PreprocessedBlock
    """
    xp = get_namespace(flux, ivar, mask, wavelength, z, zwarn)
    if flux.ndim != 2:
        raise ValueError(f"preprocess_block: flux must be 2-D (n_spectrum, n_wave), got shape {tuple(flux.shape)}")
    n = int(flux.shape[0])
    if wavelength.shape[-1] != flux.shape[1]:
        raise ValueError(
            f"preprocess_block: wavelength has {wavelength.shape[-1]} pixels but flux has {flux.shape[1]}"
        )
    if flux.dtype not in (xp.float32, xp.float64):
        flux = xp.astype(flux, xp.float32)
    if ivar.dtype != flux.dtype:
        ivar = xp.astype(ivar, flux.dtype)
    flags = xp.zeros((n,), dtype=xp.int32)

    flux, ivar, mask = mask_bad_pixels(flux, ivar, mask, bad_bits=recipe.bad_bits)
    if recipe.sky_lines:
        flux, ivar, mask = mask_sky_lines(flux, ivar, mask, wavelength, halfwidth=recipe.sky_line_halfwidth)

    wave_in = wavelength
    if recipe.rest_frame:
        if z is None:
            raise ValueError("preprocess_block: recipe.rest_frame is on but no redshifts (z) were given")
        rf = to_rest_frame(
            flux,
            ivar,
            mask,
            wavelength,
            z,
            zwarn,
            bad_redshift=recipe.bad_redshift,
            trust_unknown_zwarn=recipe.trust_unknown_zwarn,
            scale_flux_density=recipe.scale_flux_density,
        )
        flux, ivar, mask, wave_in = rf.flux, rf.ivar, rf.mask, rf.wavelength
        flags = flags | rf.flags

    target = target_wavelength(recipe, wavelength)
    if recipe.grid_spec.kind != "native":
        flux, ivar, mask = resample(
            flux, ivar, mask, wave_in, target, min_good_fraction=recipe.min_good_fraction
        )

    norm = normalize(
        flux,
        ivar,
        target,
        method=recipe.normalize,
        window=recipe.normalize_window,
        on_failure=recipe.normalize_on_failure,
    )
    flux, ivar, scale = norm.flux, norm.ivar, norm.scale
    flags = flags | norm.flags

    if recipe.continuum == "smooth":
        cd = divide_continuum(flux, ivar, mask, width=recipe.continuum_width)
        flux, ivar, mask = cd.flux, cd.ivar, cd.mask
        flags = flags | cd.flags

    no_good = ~xp.any(ivar > 0, axis=1)
    flags = flags | xp.where(no_good, xp.asarray(NO_GOOD_PIXELS, dtype=xp.int32), xp.asarray(0, dtype=xp.int32))
    return PreprocessedBlock(flux=flux, ivar=ivar, mask=mask, scale=scale, flags=flags, wavelength=target)
