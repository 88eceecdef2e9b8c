"""``pip install .`` ships every skybatch package and nothing else: each folder under ``skybatch/`` with an
``__init__.py`` is named in pyproject.toml's ``[tool.setuptools] packages`` list (setuptools
does not find sub-packages by itself when the list is explicit), ``skybatch`` is the only top-level
package, and the library imports no Prefect."""

from __future__ import annotations

import os
import subprocess
import sys
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


def _installed_tree(tmp_path: Path) -> tuple[list[str], Path]:
    """(top_level.txt names, build_py output) of the project as ``pip install .`` builds it, from a copy.

    setuptools' own ``egg_info`` + ``build_py`` (what a wheel build runs) on a copy of the source tree,
    so nothing is written into the checkout; the repository's folders other than tests come along, so a
    package wrongly listed in pyproject.toml (``flows``, ``scripts`` ...) is built and seen here.
    """
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "tests", "__pycache__", ".*_cache", "build", "*.egg-info", "*.zarr", "skybatch-quickstart"))
    egg, lib = tmp_path / "egg", tmp_path / "lib"
    egg.mkdir()
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", "from setuptools import setup; setup()", "-q",
                        "egg_info", "--egg-base", str(egg), "build_py", "--build-lib", str(lib)],
                       cwd=src, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    (top_level,) = egg.glob("*.egg-info/top_level.txt")
    return top_level.read_text().split(), lib


def test_install_ships_only_the_skybatch_top_level_package(tmp_path):
    top_level, lib = _installed_tree(tmp_path)
    assert top_level == ["skybatch"], f"pip install . would install top-level packages {top_level}"
    assert sorted(p.name for p in lib.iterdir()) == ["skybatch"]
    # what the flows/ folder holds (deployment entry points) is not shipped under skybatch either
    assert not list(lib.rglob("serve.py")) and not list(lib.rglob("prefect.yaml"))
    # the installed tree works on its own, without the checkout's top-level folders (no `import flows`)
    r = subprocess.run([sys.executable, "-c", "import skybatch.cli, skybatch.orchestrate, skybatch.jobs; "
                        "print(skybatch.cli.__file__)"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(lib)}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().startswith(str(lib)), r.stdout
    # typed (PEP 561): the marker and the stub of the lazy top-level names are shipped
    assert (lib / "skybatch" / "py.typed").exists() and (lib / "skybatch" / "__init__.pyi").exists()


def test_stub_names_every_lazy_top_level_name():
    """``skybatch/__init__.pyi`` imports each lazily loaded name from where ``skybatch.__getattr__`` finds it,
    and its ``__all__`` is the module's: what IDEs and type checkers see is what ``import skybatch`` has."""
    import ast

    import skybatch

    tree = ast.parse((ROOT / "skybatch" / "__init__.pyi").read_text())
    stubbed = {a.asname or a.name: f"{node.module}:{a.name}" for node in tree.body
               if isinstance(node, ast.ImportFrom) for a in node.names}
    assert stubbed == skybatch._LAZY
    (stub_all,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__all__"]
    assert ast.literal_eval(stub_all) == skybatch.__all__
    for name in skybatch.__all__:
        assert getattr(skybatch, name) is not None


_NO_PREFECT = """
import importlib, pkgutil, sys
import skybatch, skybatch.pipeline
loaded = {m.split(".")[0] for m in sys.modules}
assert "prefect" not in loaded, "import skybatch / skybatch.pipeline imported prefect"
for pkg in ("pipeline", "jobs", "store", "spectra", "imaging", "models", "sources"):
    p = importlib.import_module("skybatch." + pkg)
    for m in pkgutil.walk_packages(p.__path__, p.__name__ + "."):
        importlib.import_module(m.name)
        if "prefect" in sys.modules:
            raise SystemExit(f"importing {m.name} imported prefect")
print("ok", len(sys.modules))
"""


def test_library_imports_do_not_import_prefect(tmp_path):
    """``import skybatch`` and every module of the library's centre and jobs, in a fresh interpreter, leave
    Prefect unimported: orchestration stays at the edge (``skybatch.orchestrate``, the CLI)."""
    r = subprocess.run([sys.executable, "-c", _NO_PREFECT], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr[-3000:]
