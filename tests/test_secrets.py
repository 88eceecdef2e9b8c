"""redact() at any depth; stash()/unstash() keep credentials out of Prefect parameters."""

from __future__ import annotations

import json

import pytest

from skybatch.secrets import REDACTED, redact, stash, unstash


def test_redact_nested_options():
    opts = {"endpoint_url": "http://127.0.0.1:9000", "anon": False, "key": "AKIA123", "secret": "s3cr3t",
            "client_kwargs": {"aws_secret_access_key": "deep", "region_name": "us-east-1",
                              "headers": [{"Authorization": "Bearer abc"}]},
            "config_kwargs": {"connect_timeout": 3, "proxies": {"https": "http://user:pw@proxy:3128"}},
            "Session-Token": "tok-9z", "db_password": "pw", "band_key": "rubin_r", "token": None}
    out = redact(opts)
    text = json.dumps(out)
    for secret in ("AKIA123", "s3cr3t", "deep", "Bearer abc", "tok-9z", ":pw@"):
        assert secret not in text, secret
    assert out["endpoint_url"] == "http://127.0.0.1:9000" and out["anon"] is False
    assert out["client_kwargs"]["region_name"] == "us-east-1"
    assert out["client_kwargs"]["aws_secret_access_key"] == REDACTED
    assert out["client_kwargs"]["headers"][0]["Authorization"] == REDACTED
    assert out["config_kwargs"]["proxies"]["https"] == f"http://user:{REDACTED}@proxy:3128"
    assert out["band_key"] == "rubin_r"  # not every *_key is a credential
    assert out["token"] is None  # nothing to hide
    assert opts["key"] == "AKIA123"  # the input is left as it was


def test_stash_round_trip_and_foreign_reference():
    opts = {"key": "AKIAXYZ", "secret": "hush-77"}
    ref = stash(opts)
    assert "AKIAXYZ" not in ref and "hush-77" not in ref and unstash(ref) == opts
    assert unstash({"anon": True}) == {"anon": True}
    with pytest.raises(ValueError, match="another process"):
        unstash("skybatch-secret://" + "0" * 32)


def test_cli_options_with_credentials_are_passed_by_reference():
    from skybatch.commands._opts import storage_options_param

    plain = storage_options_param({"anon": True}, ["s3://bucket/a.fits"])
    assert plain["config_kwargs"]["connect_timeout"] <= 5  # an unreachable endpoint is named within seconds
    assert storage_options_param({}, ["/local/a.fits"]) == {}
    ref = storage_options_param({"client_kwargs": {"aws_secret_access_key": "x"}}, ["s3://b/k"])
    assert isinstance(ref, str) and unstash(ref)["client_kwargs"]["aws_secret_access_key"] == "x"


def test_public_options_redacts_nested_credentials():
    """What provenance attrs and manifests record of the storage options (store/fsutil.public_options)."""
    from skybatch.store.fsutil import public_options

    out = public_options({"key": "AKIAXYZ", "anon": False,
                          "client_kwargs": {"aws_secret_access_key": "deep-1", "region_name": "x"}})
    assert "key" not in out and out["client_kwargs"] == {"aws_secret_access_key": REDACTED, "region_name": "x"}
