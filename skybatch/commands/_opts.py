"""Storage options from the CLI to the flows: S3 timeouts filled in, credentials kept out of Prefect."""

from __future__ import annotations

from typing import Any

from skybatch.commands._config import with_s3_defaults
from skybatch.secrets import redact, stash


def storage_options_param(options: dict[str, Any] | None, urls: list[str]) -> dict[str, Any] | str:
    """What to pass as a flow's ``*_options`` parameter.

    For ``s3://`` URLs, botocore timeouts that name an unreachable endpoint within seconds are added
    (:func:`skybatch.commands._config.s3_client_defaults`). Options holding credentials are passed as
    a reference to this process's memory (:func:`skybatch.secrets.stash`), so that Prefect never stores
    them as flow-run parameters.
    """
    opts = dict(options or {})
    if any("://" in u and not u.startswith("file://") for u in urls):
        opts = with_s3_defaults(opts)
    return stash(opts) if redact(opts) != opts else opts
