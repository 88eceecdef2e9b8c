"""``pip install .`` ships every skybatch package: each folder under ``skybatch/`` with an
``__init__.py`` is named in pyproject.toml's ``[tool.setuptools] packages`` list (setuptools
does not find sub-packages by itself when the list is explicit)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_skybatch_package_is_in_the_packages_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "skybatch").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = sorted(found - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
