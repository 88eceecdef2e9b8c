"""Write SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` lite files with known content.

Layout as in DR16/DR17 (``formats.md`` §5): PRIMARY header (TELESCOP,
PLATEID, MJD, FIBERID, RUN2D, VERS2D, COEFF0, COEFF1 = 1e-4, PLUG_RA,
PLUG_DEC, THING_ID, BUNIT, EXPIDnnn, VACUUM), COADD (one row per pixel,
lower-case columns flux/loglam/ivar/and_mask/or_mask/wdisp/sky/model,
32 B/row), SPALL (one row; a subset of the 236 spAll columns that readers
use: PLATE, MJD, FIBERID, CLASS, SUBCLASS, Z, Z_ERR, ZWARNING, RCHI2, DOF,
SN_MEDIAN (5), SN_MEDIAN_ALL, SPECOBJID as uint64 via TZERO = 2**63,
THING_ID, PLUG_RA/DEC, SURVEY, PROGRAMNAME, SPECPRIMARY, ...; the HDU can
be named SPECOBJ as in older files) and SPZLINE (32 rows × 19 columns).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .render import render_spectra
from .sky_noise import add_noise, noise_sigma, sky_spectrum

__all__ = ["specobjid", "sdss_spec_path", "write_sdss_spec", "write_sdss_sample", "SdssSampleFiles", "SPZLINE_NAMES"]

SPZLINE_NAMES = (
    "Ly_alpha", "N_V 1240", "C_IV 1549", "He_II 1640", "C_III] 1908", "Mg_II 2799", "[O_II] 3725", "[O_II] 3727",
    "[Ne_III] 3868", "H_epsilon", "[Ne_III] 3970", "H_delta", "H_gamma", "[O_III] 4363", "He_II 4685", "H_beta",
    "[O_III] 4959", "[O_III] 5007", "He_II 5411", "[O_I] 5577", "[O_I] 6300", "[S_III] 6312", "[O_I] 6363",
    "[N_II] 6548", "H_alpha", "[N_II] 6583", "[S_II] 6716", "[S_II] 6730", "[Ar_III] 7135", "Pa_epsilon",
    "Pa_delta", "Pa_gamma",
)
_SPZ_WAVE = np.array([
    1215.67, 1240.81, 1549.48, 1640.42, 1908.734, 2799.49, 3727.09, 3729.88, 3869.86, 3971.19, 3968.59, 4102.89,
    4341.68, 4364.44, 4687.02, 4862.68, 4960.30, 5008.24, 5413.02, 5578.89, 6302.05, 6313.8, 6365.54, 6549.86,
    6564.61, 6585.27, 6718.29, 6732.67, 7137.8, 9548.6, 10052.1, 10941.1,
])


def specobjid(plate: int, fiber: int, mjd: int, run2d: str = "v5_13_2") -> np.uint64:
    """SDSS SPECOBJID: plate << 50 | fiber << 38 | (mjd - 50000) << 24 | run2d << 10 (uint64).

    run2d 'vN_M_P' is encoded as (N - 5) * 10000 + M * 100 + P.
    """
    n, m, p = (int(x) for x in run2d.lstrip("v").split("_"))
    code = (n - 5) * 10000 + m * 100 + p
    return np.uint64((int(plate) << 50) | (int(fiber) << 38) | ((int(mjd) - 50000) << 24) | (code << 10))


def sdss_spec_path(root: str | os.PathLike, plate: int, mjd: int, fiber: int) -> Path:
    """``root/spectra/lite/PLATE4/spec-PLATE4-MJD-FIBER4.fits`` (zero-padded as the SAS does)."""
    return Path(root) / "spectra" / "lite" / f"{plate:04d}" / f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"


def write_sdss_spec(
    path: str | os.PathLike,
    *,
    plate: int,
    mjd: int,
    fiber: int,
    coeff0: float,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray,
    ra: float,
    dec: float,
    spectype: str = "GALAXY",
    subclass: str = "",
    z: float = 0.0,
    z_err: float = 1e-4,
    zwarning: int = 0,
    thing_id: int = -1,
    survey: str = "boss",
    programname: str = "boss",
    model: np.ndarray | None = None,
    sky: np.ndarray | None = None,
    coeff1: float = 1e-4,
    spall_extname: str = "SPALL",
    run2d: str = "v5_13_2",
    with_specobjid: bool = True,
) -> Path:
    """Write one lite spec file. flux/ivar/and_mask: (npix,), pixel i at log10 λ = coeff0 + i·coeff1."""
    from astropy.io import fits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    npix = len(flux)
    loglam = (coeff0 + coeff1 * np.arange(npix)).astype(np.float32)
    model = np.zeros(npix, np.float32) if model is None else model
    sky = np.zeros(npix, np.float32) if sky is None else sky
    h = fits.Header()
    h["TELESCOP"] = "SDSS 2.5-M"
    h["PLATEID"] = int(plate)
    h["MJD"] = int(mjd)
    h["FIBERID"] = int(fiber)
    h["RUN2D"] = run2d
    h["VERS2D"] = run2d
    h["COEFF0"] = float(coeff0)
    h["COEFF1"] = float(coeff1)
    h["PLUG_RA"] = float(ra)
    h["PLUG_DEC"] = float(dec)
    h["THING_ID"] = int(thing_id)
    h["BUNIT"] = "1E-17 erg/cm^2/s/Ang"
    h["VACUUM"] = True
    h["NEXP"] = 4
    for k in range(4):
        h[f"EXPID{k + 1:03d}"] = f"b1-{150000 + k:08d}-{150000 + k:08d}-{150000 + k:08d}"
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=np.asarray(flux, np.float32)),
        fits.Column("loglam", "E", array=loglam),
        fits.Column("ivar", "E", array=np.asarray(ivar, np.float32)),
        fits.Column("and_mask", "J", array=np.asarray(and_mask).astype(np.int64).astype(np.int32)),
        fits.Column("or_mask", "J", array=np.asarray(and_mask).astype(np.int64).astype(np.int32)),
        fits.Column("wdisp", "E", array=np.full(npix, 1.1, np.float32)),
        fits.Column("sky", "E", array=np.asarray(sky, np.float32)),
        fits.Column("model", "E", array=np.asarray(model, np.float32)),
    ], name="COADD")
    good = ivar > 0
    snr = float(np.median((flux * np.sqrt(ivar))[good])) if good.any() else 0.0
    cols = [
        fits.Column("PROGRAMNAME", "16A", array=np.array([programname])),
        fits.Column("CHUNK", "16A", array=np.array([f"{survey}1"])),
        fits.Column("PLATEQUALITY", "8A", array=np.array(["good"])),
        fits.Column("PLATE", "J", array=np.array([plate])),
        fits.Column("TILE", "J", array=np.array([plate])),
        fits.Column("MJD", "J", array=np.array([mjd])),
        fits.Column("FIBERID", "J", array=np.array([fiber])),
        fits.Column("RUN2D", "7A", array=np.array([run2d])),
        fits.Column("OBJTYPE", "16A", array=np.array(["GALAXY" if spectype == "GALAXY" else spectype])),
        fits.Column("PLUG_RA", "D", array=np.array([ra])),
        fits.Column("PLUG_DEC", "D", array=np.array([dec])),
        fits.Column("CLASS", "6A", array=np.array([spectype])),
        fits.Column("SUBCLASS", "21A", array=np.array([subclass])),
        fits.Column("Z", "E", array=np.array([z], np.float32)),
        fits.Column("Z_ERR", "E", array=np.array([z_err], np.float32)),
        fits.Column("RCHI2", "E", array=np.array([1.05], np.float32)),
        fits.Column("DOF", "J", array=np.array([npix - 10])),
        fits.Column("RCHI2DIFF", "E", array=np.array([0.2], np.float32)),
        fits.Column("TFILE", "24A", array=np.array(["spEigenGal-55740.fits"])),
        fits.Column("VDISP", "E", array=np.array([150.0], np.float32)),
        fits.Column("ZWARNING", "J", array=np.array([zwarning])),
        fits.Column("SN_MEDIAN", "5E", array=np.full((1, 5), snr, np.float32)),
        fits.Column("SN_MEDIAN_ALL", "E", array=np.array([snr], np.float32)),
        fits.Column("Z_NOQSO", "E", array=np.array([z], np.float32)),
        fits.Column("CLASS_NOQSO", "6A", array=np.array([spectype])),
        fits.Column("SPECPRIMARY", "B", array=np.array([1], np.uint8)),
        fits.Column("THING_ID", "J", array=np.array([thing_id])),
        fits.Column("SURVEY", "16A", array=np.array([survey])),
        fits.Column("PROFMEAN_NMGY", "75E", dim="(15,5)", array=np.zeros((1, 5, 15), np.float32)),
    ]
    if with_specobjid:
        cols.insert(26, fits.Column("SPECOBJID", "K", bzero=2**63, array=np.array([specobjid(plate, fiber, mjd, run2d)], dtype=np.uint64)))
    spall = fits.BinTableHDU.from_columns(cols, name=spall_extname)
    nl = len(SPZLINE_NAMES)
    zl = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=np.full(nl, plate)),
        fits.Column("MJD", "J", array=np.full(nl, mjd)),
        fits.Column("FIBERID", "J", array=np.full(nl, fiber)),
        fits.Column("LINENAME", "13A", array=np.array(SPZLINE_NAMES)),
        fits.Column("LINEWAVE", "D", array=_SPZ_WAVE),
        *[fits.Column(c, "E", array=np.zeros(nl, np.float32)) for c in (
            "LINEZ", "LINEZ_ERR", "LINESIGMA", "LINESIGMA_ERR", "LINEAREA", "LINEAREA_ERR", "LINEEW", "LINEEW_ERR",
            "LINECONTLEVEL", "LINECONTLEVEL_ERR")],
        fits.Column("LINENPIXLEFT", "J", array=np.zeros(nl, np.int32)),
        fits.Column("LINENPIXRIGHT", "J", array=np.zeros(nl, np.int32)),
        fits.Column("LINEDOF", "E", array=np.zeros(nl, np.float32)),
        fits.Column("LINECHI2", "E", array=np.zeros(nl, np.float32)),
    ], name="SPZLINE")
    zl.data["LINEZ"] = z
    fits.HDUList([fits.PrimaryHDU(header=h), coadd, spall, zl]).writeto(path, overwrite=True, checksum=True)
    return path


@dataclass
class SdssSampleFiles:
    """What :func:`write_sdss_sample` wrote: one path per object and the truth columns."""

    paths: list[Path]
    truth: dict[str, np.ndarray]


def write_sdss_sample(
    root: str | os.PathLike,
    population: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    sigma0_range: tuple[float, float] = (0.3, 0.8),
) -> SdssSampleFiles:
    """One lite file per object of ``population`` under ``root/spectra/lite/``.

    Half of the plates are >= 8192 so their SPECOBJID does not fit in int64.
    Each spectrum starts at a random pixel of the 1e-4 log-λ lattice
    (COEFF0 = 3.5500–3.5620) and has 4400–4700 pixels, always inside the
    4700-pixel store grid. Pixels near bright sky lines get BRIGHTSKY (bit 23);
    about 0.1 % get FULLREJECT (bit 18) with ivar = 0.

    Truth (per object, population order): targetid (SPECOBJID bits as int64),
    specobjid (uint64), plate, mjd, fiber, coeff0, offset (store pixel of
    the first file pixel), npix, ra, dec, healpix, spectype, subtype, z_true,
    z, zerr, zwarn, mag_r, is_anomaly, anomaly_kind, source (path).
    """
    from skybatch.sources._common import healpix_nest64

    n = population["z_true"].size
    plates = np.where(np.arange(n) % 2 == 0, rng.integers(3586, 8000, n), rng.integers(9000, 12500, n))
    mjds = rng.integers(55200, 59000, n)
    fibers = rng.integers(1, 1001, n)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10)), np.sin(np.radians(70)), n)))
    offs = rng.integers(0, 121, n)
    npix = np.array([rng.integers(4400, 4700 - o + 1) for o in offs])
    coeff0 = np.round(3.55 + offs * 1e-4, 4)
    sigma0 = rng.uniform(*sigma0_range, n)
    paths, sids = [], []
    for i in range(n):
        wave = 10.0 ** (coeff0[i] + 1e-4 * np.arange(npix[i]))
        sub = {k: v[i : i + 1] for k, v in population.items()}
        model = render_spectra(wave, sub, lsf_velocity=65.0)
        sky = sky_spectrum(wave, lsf_sigma=1.5)[0]
        sig = noise_sigma(wave, sigma0[i : i + 1], arm_edges=(wave[0], wave[-1]), sky=sky)
        flux, ivar, mask = add_noise(model, sig, rng, mask_bit=18)
        bright = sky > 6.0 * np.median(sky)
        mask[0, bright] |= np.uint32(1 << 23)
        p = sdss_spec_path(root, int(plates[i]), int(mjds[i]), int(fibers[i]))
        st = str(population["spectype"][i])
        write_sdss_spec(
            p, plate=int(plates[i]), mjd=int(mjds[i]), fiber=int(fibers[i]), coeff0=float(coeff0[i]),
            flux=flux[0], ivar=ivar[0], and_mask=mask[0], ra=float(ra[i]), dec=float(dec[i]), spectype=st,
            subclass=str(population["subtype"][i]), z=float(population["z"][i]), z_err=float(population["zerr"][i]),
            zwarning=int(population["zwarn"][i]), thing_id=int(rng.integers(1, 2**31 - 1)),
            survey="eboss" if st == "QSO" else "boss", programname="eboss" if st == "QSO" else "boss",
            model=model[0], sky=sky.astype(np.float32),
        )
        paths.append(p)
        sids.append(specobjid(int(plates[i]), int(fibers[i]), int(mjds[i])))
    sid = np.array(sids, dtype=np.uint64)
    truth = {
        "targetid": sid.view(np.int64),
        "specobjid": sid,
        "plate": plates.astype(np.int64), "mjd": mjds.astype(np.int64), "fiber": fibers.astype(np.int64),
        "coeff0": coeff0, "offset": offs.astype(np.int64), "npix": npix.astype(np.int64),
        "ra": ra, "dec": dec, "healpix": healpix_nest64(ra, dec),
        "spectype": population["spectype"], "subtype": population["subtype"], "z_true": population["z_true"],
        "z": population["z"], "zerr": population["zerr"], "zwarn": population["zwarn"], "mag_r": population["mag_r"],
        "is_anomaly": population["is_anomaly"], "anomaly_kind": population["anomaly_kind"],
        "source": np.array([str(p) for p in paths], dtype=object),
    }
    return SdssSampleFiles(paths=paths, truth=truth)
