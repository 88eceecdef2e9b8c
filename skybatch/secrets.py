"""Credentials out of everything skybatch writes or shows: :func:`redact` at any depth.

Settings reach store attrs, manifests, logs and Prefect (flow parameters, artifacts). Before any of
those, pass them through :func:`redact`: every value under a key that names a credential (``key``,
``secret``, ``token``, ``password``, ``aws_secret_access_key``, ``Authorization`` ...) is replaced by
``"<redacted>"``, in nested dicts and lists alike (``client_kwargs``, ``config_kwargs``,
``storage_options``); URLs with a password (``s3://user:pass@host``) keep the user only.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact", "redact_url", "stash", "unstash"]

REDACTED = "<redacted>"

#: Key names (lower case, ``-`` read as ``_``) that hold credentials wherever they appear.
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "passwd", "pwd", "credentials", "authorization", "auth",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "session_token", "access_key",
    "secret_key", "access_token", "refresh_token", "api_key", "apikey", "client_secret", "private_key",
    "sas_token", "account_key", "connection_string", "security_token",
})
#: Key name endings that hold credentials (``my_api_token``, ``db_password`` ...).
_SECRET_SUFFIXES = ("_secret", "_token", "_password", "_passwd", "_key_id", "_access_key", "_secret_key",
                    "_api_key", "_credentials")
# keys ending in "_key" that are not credentials
_NOT_SECRET = frozenset({"partition_key", "sort_key", "cache_key", "band_key", "group_key", "primary_key"})
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def is_secret_key(name: Any) -> bool:
    """True if a mapping key names a credential (case- and ``-``/``_``-insensitive)."""
    if not isinstance(name, str):
        return False
    k = name.lower().replace("-", "_")
    if k in _NOT_SECRET:
        return False
    return k in SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact_url(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:<redacted>@host`` (other text unchanged)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with credentials replaced by ``"<redacted>"`` at any depth.

    Mappings (any ``dict``), lists, tuples and sets are walked; values under a credential key are
    replaced whole (even when they are themselves mappings); strings have URL passwords removed;
    dataclass instances are redacted field by field into a dict. Other values are returned as they are.
    """
    import dataclasses

    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, (tuple, set, frozenset)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_url(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


_STASH: dict[str, Any] = {}
_STASH_PREFIX = "skybatch-secret://"


def stash(value: Any) -> str:
    """Keep ``value`` in this process's memory; returns a reference for :func:`unstash`.

    Used to hand options holding credentials from the CLI to a Prefect flow run in the same process
    without Prefect recording them as parameters (the reference means nothing to another process).
    """
    import uuid

    ref = f"{_STASH_PREFIX}{uuid.uuid4().hex}"
    _STASH[ref] = value
    return ref


def unstash(value: Any) -> Any:
    """The value a :func:`stash` reference stands for (any other value is returned as it is).

    Raises ValueError for a reference made in another process (e.g. a deployment's parameters).
    """
    if isinstance(value, str) and value.startswith(_STASH_PREFIX):
        try:
            return _STASH[value]
        except KeyError:
            raise ValueError("storage options were passed by reference from another process; give them in the "
                             "AWS environment or config of the process that runs the flow") from None
    return value
