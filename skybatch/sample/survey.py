"""Generate a small survey of real-layout DESI / SDSS / sky-VAC files with ground truth.

    from skybatch.sample.survey import generate_sample_survey
    s = generate_sample_survey("/tmp/sample", n_healpix=4, spectra_per_file=200, n_sdss=40)
    s.truth()            # pandas DataFrame, also at s.truth_path (Parquet)
    s.sources()          # every spectra file to ingest (coadds, SDSS spec files, sky VAC)

Directory layout (mirrors the public releases)::

    out_dir/desi/healpix/main/dark/{hpx//100}/{hpx}/coadd-main-dark-{hpx}.fits
    out_dir/desi/healpix/main/dark/{hpx//100}/{hpx}/redrock-main-dark-{hpx}.fits
    out_dir/sdss/spectra/lite/{PLATE4}/spec-{PLATE4}-{MJD5}-{FIBER4}.fits
    out_dir/skyvac/sky_spectra_vac_v1.fits          (when skyvac_rows > 0)
    out_dir/truth.parquet

truth.parquet has one row per science spectrum (DESI science rows and SDSS
spectra; sky-VAC rows are described by the VAC's own METADATA and are not
in it). Columns: ``format`` (desi/sdss), ``source`` (path relative to
out_dir, POSIX), ``source_row``, ``targetid`` (int64, as the readers
return it), ``healpix`` (nside 64 NESTED), ``ra``, ``dec``, ``spectype``
(true class GALAXY/QSO/STAR, equal to the catalogue SPECTYPE/CLASS),
``subtype``, ``z_true`` (redshift the spectrum was rendered at), ``z``
(catalogue redshift in the redrock/SPALL table), ``zerr``, ``zwarn``,
``deltachi2`` (NaN for SDSS), ``mag_r``, ``is_anomaly``, ``anomaly_kind``
('' or bal / strong_emission / wrong_z / odd_continuum, or one of
:data:`~skybatch.sample.spectra.EXTRA_ANOMALY_KINDS` when asked for),
``anomaly_strength`` (0 for normal objects, 1 = nominal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np

from .desi_files import write_desi_healpix
from .sdss_files import write_sdss_sample
from .skyvac_file import write_skyvac
from .spectra import ANOMALY_KINDS, draw_population

__all__ = ["generate_sample_survey", "SampleSurvey", "desi_healpix_dir"]

_TRUTH_COLUMNS = (
    "format", "source", "source_row", "targetid", "healpix", "ra", "dec", "spectype", "subtype", "z_true", "z", "zerr",
    "zwarn", "deltachi2", "mag_r", "is_anomaly", "anomaly_kind", "anomaly_strength",
)


def desi_healpix_dir(root: str | os.PathLike, healpix: int, survey: str = "main", program: str = "dark") -> Path:
    """``root/desi/healpix/{survey}/{program}/{hpx//100}/{hpx}`` as in the DESI release tree."""
    return Path(root) / "desi" / "healpix" / survey / program / str(healpix // 100) / str(healpix)


@dataclass
class SampleSurvey:
    """Files written by :func:`generate_sample_survey`.

    out_dir: root directory. desi_coadds / desi_redrocks: one pair per
    healpix (same order as ``healpix``). sdss_files: one per SDSS spectrum.
    skyvac: the sky VAC file or None. truth_path: ``out_dir/truth.parquet``.
    """

    out_dir: Path
    healpix: list[int]
    desi_coadds: list[Path]
    desi_redrocks: list[Path]
    sdss_files: list[Path]
    skyvac: Path | None
    truth_path: Path
    n_spectra: dict[str, int] = field(default_factory=dict)

    def truth(self):
        """The truth table as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.truth_path)

    def sources(self, formats: tuple[str, ...] = ("desi", "sdss", "skyvac")) -> list[Path]:
        """Spectra files to ingest, by format (redrock files are found by the DESI reader itself)."""
        out: list[Path] = []
        if "desi" in formats:
            out += self.desi_coadds
        if "sdss" in formats:
            out += self.sdss_files
        if "skyvac" in formats and self.skyvac is not None:
            out.append(self.skyvac)
        return out


def generate_sample_survey(
    out_dir: str | os.PathLike,
    *,
    n_healpix: int = 4,
    spectra_per_file: int = 200,
    n_sdss: int = 40,
    skyvac_rows: int = 0,
    anomaly_fraction: float = 0.01,
    seed: int = 0,
    survey: str = "main",
    program: str = "dark",
    mask_dtype: str = "int32",
    n_sky: int = 2,
    n_unassigned: int = 1,
    class_fractions: tuple[float, float, float] = (0.55, 0.27, 0.18),
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS,
    anomaly_strength: tuple[float, float] = (1.0, 1.0),
    anomaly_mag_fraction: float = 0.6,
    sigma0_range: tuple[float, float] = (0.3, 0.7),
) -> SampleSurvey:
    """Write a sample survey under ``out_dir`` and return what was written.

    Parameters
    ----------
    n_healpix: number of DESI healpix coadd/redrock pairs (distinct nside-64
        NESTED pixels in the DESI footprint).
    spectra_per_file: science spectra per coadd (plus ``n_sky`` SKY fibres and
        ``n_unassigned`` negative-TARGETID rows). Each coadd is about
        0.45 MB per row, 79 % of it RESOLUTION.
    n_sdss: SDSS lite spec files (one spectrum each).
    skyvac_rows: spectra in the sky VAC (0 = no VAC file).
    anomaly_fraction: fraction of DESI and SDSS spectra made anomalous
        (at least one per population of 20 or more when > 0).
    seed: everything is reproducible from it.
    mask_dtype: ``"int32"`` (iron) or ``"uint32"`` (EDR) DESI masks.
    class_fractions: GALAXY / QSO / STAR mixture.
    anomaly_kinds, anomaly_strength, anomaly_mag_fraction: which anomalies,
        how strong, how bright (see :func:`~skybatch.sample.spectra.draw_population`;
        ``anomaly_mag_fraction=1`` matches anomalies to normal objects in brightness).
    sigma0_range: DESI per-spectrum base noise range (1e-17 erg/s/cm²/Å); larger = lower S/N.

    Returns
    -------
    SampleSurvey; the truth table is written to ``out_dir/truth.parquet``.
    """
    import pandas as pd

    if n_healpix < 0 or spectra_per_file < 1 or n_sdss < 0 or skyvac_rows < 0:
        raise ValueError("n_healpix, n_sdss and skyvac_rows must be >= 0 and spectra_per_file >= 1")
    if not 0.0 <= anomaly_fraction <= 0.5:
        raise ValueError(f"anomaly_fraction={anomaly_fraction} must be within [0, 0.5]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    draw_kw: dict[str, Any] = dict(anomaly_fraction=anomaly_fraction, class_fractions=tuple(class_fractions),
                   anomaly_kinds=tuple(anomaly_kinds), anomaly_strength=tuple(anomaly_strength),
                   anomaly_mag_fraction=anomaly_mag_fraction)
    # distinct nside-64 pixels with 0 < dec < 60 (Northern/Southern DESI footprint)
    hpx_pool = rng.permutation(np.arange(12 * 64 * 64))
    healpix: list[int] = []
    if n_healpix:
        from astropy import units as u
        from astropy_healpix import healpix_to_lonlat

        _, lat = healpix_to_lonlat(hpx_pool, 64, order="nested")
        dec = lat.to_value(u.deg)
        healpix = [int(h) for h in hpx_pool[(dec > 0) & (dec < 60)][:n_healpix]]

    frames = []
    coadds, redrocks = [], []
    seen_tid: set[int] = set()
    n_anom = 0  # keeps the anomaly kinds rotating across files
    for hpx in healpix:
        pop = draw_population(spectra_per_file, rng, first_kind=n_anom, **draw_kw)
        n_anom += int(pop["is_anomaly"].sum())
        files = write_desi_healpix(
            desi_healpix_dir(out_dir, hpx, survey, program), hpx, pop, rng, survey=survey, program=program,
            n_sky=n_sky, n_unassigned=n_unassigned, mask_dtype=mask_dtype, sigma0_range=(sigma0_range[0], sigma0_range[1]),
        )
        coadds.append(files.coadd)
        assert files.redrock is not None  # written: write_desi_healpix's redrock=True default
        redrocks.append(files.redrock)
        t = dict(files.truth)
        if seen_tid & set(int(x) for x in t["targetid"]):
            raise RuntimeError("duplicate TARGETID across sample files; use another seed")
        seen_tid |= set(int(x) for x in t["targetid"])
        t["format"] = np.full(len(t["targetid"]), "desi", dtype=object)
        t["source"] = np.full(len(t["targetid"]), files.coadd.relative_to(out_dir).as_posix(), dtype=object)
        frames.append(pd.DataFrame({k: t[k] for k in _TRUTH_COLUMNS}))

    sdss_paths: list[Path] = []
    if n_sdss:
        pop = draw_population(n_sdss, rng, first_kind=n_anom, **draw_kw)
        sd = write_sdss_sample(out_dir / "sdss", pop, rng)
        sdss_paths = sd.paths
        t = dict(sd.truth)
        t["format"] = np.full(n_sdss, "sdss", dtype=object)
        t["source"] = np.array([Path(p).relative_to(out_dir).as_posix() for p in sd.paths], dtype=object)
        t["source_row"] = np.zeros(n_sdss, dtype=np.int64)
        t["deltachi2"] = np.full(n_sdss, np.nan)
        t["anomaly_strength"] = pop["anomaly_strength"]
        frames.append(pd.DataFrame({k: t[k] for k in _TRUTH_COLUMNS}))

    skyvac = None
    if skyvac_rows:
        skyvac = write_skyvac(out_dir / "skyvac" / "sky_spectra_vac_v1.fits", skyvac_rows, rng).path

    if frames:
        truth = pd.concat(frames, ignore_index=True)
    else:
        truth = pd.DataFrame({k: [] for k in _TRUTH_COLUMNS})
    for c in ("format", "source", "spectype", "subtype", "anomaly_kind"):
        truth[c] = truth[c].astype(str)
    truth["is_anomaly"] = truth["is_anomaly"].astype(bool)
    for c in ("source_row", "targetid", "healpix", "zwarn"):
        truth[c] = truth[c].astype(np.int64)
    truth_path = out_dir / "truth.parquet"
    truth.to_parquet(truth_path, index=False)
    return SampleSurvey(
        out_dir=out_dir, healpix=healpix, desi_coadds=coadds, desi_redrocks=redrocks, sdss_files=sdss_paths,
        skyvac=skyvac, truth_path=truth_path,
        n_spectra={"desi": int((truth["format"] == "desi").sum()), "sdss": int((truth["format"] == "sdss").sum()), "skyvac": skyvac_rows},
    )
