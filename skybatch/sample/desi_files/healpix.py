"""Rendering a population (:mod:`skybatch.sample.spectra`) into one healpix coadd/redrock pair."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..render import render_spectra
from ..sky_noise import add_noise, noise_sigma, sky_spectrum
from .layout import ARMS, _arm_slice, arm_wavelength, brz_wavelength, targetid_from_parts
from .tables import make_exp_fibermap, make_fibermap, make_redshifts, make_scores, make_tsnr2, points_in_healpix
from .write import resolution_data, write_desi_coadd, write_redrock


@dataclass
class DesiHealpixFiles:
    """What :func:`write_desi_healpix` wrote.

    coadd, redrock: file paths (redrock None when not written).
    truth: per science row, dict of arrays (see :func:`write_desi_healpix`).
    science_rows / nonscience_rows: FIBERMAP row indices.
    targetid: TARGETID of every FIBERMAP row, file order.
    """

    coadd: Path
    redrock: Path | None
    truth: dict[str, np.ndarray]
    science_rows: np.ndarray
    nonscience_rows: np.ndarray
    targetid: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def write_desi_healpix(
    directory: str | os.PathLike,
    healpix: int,
    population: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    survey: str = "main",
    program: str = "dark",
    n_sky: int = 2,
    n_unassigned: int = 1,
    mask_dtype: str = "int32",
    redrock: bool = True,
    redrock_order: str = "fibermap",
    sigma0_range: tuple[float, float] = (0.3, 0.7),
) -> DesiHealpixFiles:
    """Render ``population`` into ``coadd-`` and ``redrock-{survey}-{program}-{healpix}.fits``.

    The science targets get random positions inside ``healpix`` (nside 64,
    NESTED) and DESI-encoded TARGETIDs (> 2**53); ``n_sky`` SKY fibres
    (TARGETID bit 59, sky-subtracted noise) and ``n_unassigned`` unassigned
    fibres (negative TARGETID, OBJTYPE 'NON', all-zero flux/ivar/resolution)
    are inserted at random rows. Each arm gets its own noise realisation
    (arm-edge throughput and sky lines shape the noise); about 0.1 % of pixels
    are masked (ivar = 0, COSMIC bit).

    redrock_order: ``"fibermap"`` (REDSHIFTS row-matched to FIBERMAP, as in
        real files) or ``"shuffled"`` (a random row order, for join tests).

    Returns DesiHealpixFiles whose ``truth`` has, per science row (file
    order): targetid, source_row, ra, dec, healpix, spectype, subtype,
    z_true, z (catalogue), zerr, zwarn, deltachi2, mag_r, is_anomaly,
    anomaly_kind.
    """
    directory = Path(directory)
    n_sci = population["z_true"].size
    n = n_sci + n_sky + n_unassigned
    kinds = np.array(["TGT"] * n_sci + ["SKY"] * n_sky + ["NON"] * n_unassigned, dtype=object)
    perm = rng.permutation(n)
    objtype = kinds[perm]  # objtype[row]
    src = np.empty(n, dtype=np.int64)  # row -> index into [science..., sky..., non...]
    src[:] = perm
    sci_rows = np.flatnonzero(objtype == "TGT")
    sci_idx = src[sci_rows]  # population index per science row, in row order
    order = np.argsort(sci_idx)
    sci_rows = sci_rows[order]  # science row of population object k
    non_rows = np.flatnonzero(objtype != "TGT")

    ra, dec = points_in_healpix(healpix, n, rng)
    release = rng.choice(np.array([9010, 9011]), n)
    brickid = rng.integers(1, 600000, n)
    objid = rng.permutation(2**20)[:n]
    targetid = targetid_from_parts(objid, brickid, release, sky=(objtype == "SKY"))
    unassigned = objtype == "NON"
    targetid[unassigned] = -(rng.permutation(np.arange(1, 5000))[: unassigned.sum()] + 10000 * rng.integers(0, 10))
    spectype_rows = np.full(n, "", dtype=object)
    spectype_rows[sci_rows] = population["spectype"]
    mag_rows = np.full(n, 25.0)
    mag_rows[sci_rows] = population["mag_r"]
    fm = make_fibermap(targetid, ra, dec, objtype, rng, spectype=spectype_rows, mag_r=mag_rows)

    wave = brz_wavelength()
    model_sci = render_spectra(wave, population, lsf_sigma=0.7)
    model = np.zeros((n, wave.size), dtype=np.float32)
    model[sci_rows] = model_sci
    sigma0 = rng.uniform(*sigma0_range, n)
    sky = sky_spectrum(wave)[0]
    flux, ivar, mask = {}, {}, {}
    for a in "brz":
        sl = _arm_slice(a)
        w = wave[sl]
        sig = noise_sigma(w, sigma0, arm_edges=ARMS[a], sky=sky[sl])
        f, iv, m = add_noise(model[:, sl], sig, rng)
        f[unassigned] = 0.0
        iv[unassigned] = 0.0
        m[unassigned] = 0
        flux[a], ivar[a], mask[a] = f, iv, m
    resolution = {}
    for a in "brz":
        r = np.array(resolution_data(arm_wavelength(a), n))
        r[unassigned] = 0.0
        resolution[a] = r
    efm = make_exp_fibermap(fm, rng)
    scores = make_scores(targetid, flux, ivar)
    name = f"{survey}-{program}-{healpix}.fits"
    coadd_path = write_desi_coadd(
        directory / f"coadd-{name}", healpix=healpix, survey=survey, program=program, fibermap=fm, exp_fibermap=efm,
        scores=scores, flux=flux, ivar=ivar, mask=mask, resolution=resolution, mask_dtype=mask_dtype,
    )
    del resolution

    z_rows = np.zeros(n)
    zerr_rows = np.zeros(n)
    zwarn_rows = np.zeros(n, dtype=np.int64)
    dchi2_rows = np.zeros(n)
    st_rows = np.full(n, "GALAXY", dtype=object)
    sub_rows = np.full(n, "", dtype=object)
    z_rows[sci_rows] = population["z"]
    zerr_rows[sci_rows] = population["zerr"]
    zwarn_rows[sci_rows] = population["zwarn"]
    dchi2_rows[sci_rows] = population["deltachi2"]
    st_rows[sci_rows] = population["spectype"]
    sub_rows[sci_rows] = population["subtype"]
    zwarn_rows[objtype == "SKY"] = 1  # SKY
    zwarn_rows[unassigned] = 512  # NODATA: SPECTYPE GALAXY, Z = 0
    rr_path = None
    if redrock:
        if redrock_order not in ("fibermap", "shuffled"):
            raise ValueError("redrock_order must be 'fibermap' or 'shuffled'")
        rr_order = np.arange(n) if redrock_order == "fibermap" else rng.permutation(n)
        red = make_redshifts(targetid, z_rows, zerr_rows, zwarn_rows, st_rows, sub_rows, dchi2_rows, rng)[rr_order]
        rr_path = write_redrock(
            directory / f"redrock-{name}", healpix=healpix, survey=survey, program=program, redshifts=red,
            fibermap=fm[rr_order], exp_fibermap=efm, tsnr2=make_tsnr2(scores)[rr_order],
        )

    rows_in_order = np.sort(sci_rows)
    k_of_row = np.empty(n, dtype=np.int64)
    k_of_row[sci_rows] = np.arange(n_sci)
    k = k_of_row[rows_in_order]
    truth = {
        "targetid": targetid[rows_in_order],
        "source_row": rows_in_order.astype(np.int64),
        "ra": ra[rows_in_order],
        "dec": dec[rows_in_order],
        "healpix": np.full(rows_in_order.size, healpix, dtype=np.int64),
        "spectype": population["spectype"][k],
        "subtype": population["subtype"][k],
        "z_true": population["z_true"][k],
        "z": population["z"][k],
        "zerr": population["zerr"][k],
        "zwarn": population["zwarn"][k],
        "deltachi2": population["deltachi2"][k],
        "mag_r": population["mag_r"][k],
        "is_anomaly": population["is_anomaly"][k],
        "anomaly_kind": population["anomaly_kind"][k],
        "anomaly_strength": population.get("anomaly_strength", np.zeros(n_sci))[k],
    }
    return DesiHealpixFiles(
        coadd=coadd_path, redrock=rr_path, truth=truth, science_rows=rows_in_order,
        nonscience_rows=non_rows, targetid=targetid,
    )
