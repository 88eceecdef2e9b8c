"""The sky-model training jobs (``skybatch run train --model sky-broadband | sky-ldm``).

``Config`` is :class:`skybatch.pipeline.sky_broadband.SkyBroadbandConfig` or
:class:`skybatch.pipeline.sky_ldm.SkyLDMConfig` (imported, not copied); :func:`config_class` picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skybatch.jobs._core import ResultReport, run_job

__all__ = ["config_class", "Report", "run", "run_with_client"]

COMMAND = "train"


def config_class(model: str) -> type:
    """The config class of ``--model sky-broadband`` or ``--model sky-ldm``."""
    if model == "sky-broadband":
        from skybatch.pipeline.sky_broadband import SkyBroadbandConfig

        return SkyBroadbandConfig
    if model == "sky-ldm":
        from skybatch.pipeline.sky_ldm import SkyLDMConfig

        return SkyLDMConfig
    raise ValueError(f"model: {model!r} is not a sky model (sky-broadband | sky-ldm)")


@dataclass
class Report(ResultReport):
    """Outcome of a sky-model training run: ``model`` is the model directory; ``details`` holds
    ``steps``, ``start_step``, ``n_train``, ``n_heldout``, ``loss_curve`` and the model's held-out figures."""

    def summary(self) -> str:
        d = self.details
        if "heldout_rms" in d:
            lines = [f"model: {self.model}", f"steps: {d['steps']} (resumed from {d['start_step']}); exposures: "
                     f"{d['n_train']} train, {d['n_heldout']} held out (by HEALPix pixel)"]
            lines += [f"  {b}: held-out RMS {r:.3f} mag (training-mean baseline {d['baseline_rms'][b]:.3f} mag)"
                      for b, r in d["heldout_rms"].items()]
            return "\n".join(lines + [f"residuals: {d['residuals_png']}\nloss curve: {d['loss_curve']}"])
        return (f"model: {self.model}\nselection: {d['selection']} ({d['n_train']} train, {d['n_heldout']} "
                f"held out); conditions: {', '.join(d['conditions'])}\nsteps: {d['steps']} (resumed from "
                f"{d['start_step']}); train loss {d['final_train_loss']:.4g}, val loss {d['final_val_loss']}\n"
                f"loss curve: {d['loss_curve']}")


def run_with_client(cfg: Any, client: Any) -> Report:
    """Train the sky model ``cfg`` describes (resumes from ``cfg.out``) on ``client``."""
    from skybatch.pipeline.sky_broadband import SkyBroadbandConfig

    if isinstance(cfg, SkyBroadbandConfig):
        from skybatch.pipeline.sky_broadband import train_broadband

        return Report.from_result(train_broadband(cfg, client))
    from skybatch.pipeline.sky_ldm import train_sky_ldm

    return Report.from_result(train_sky_ldm(cfg, client))


def run(cfg: Any, client: Any = None) -> Report:
    """Train on ``client``, else the current Dask client, else a cluster from ``cfg.cluster``."""
    return run_job(run_with_client, cfg, client)
