"""Packaging: the version, the dependency lists and the project files that describe them.

The runtime dependencies in ``pyproject.toml`` must be exactly the distributions whose modules
``mapping/`` imports, plus the engines pandas and xarray load by name; what only the tests and
benchmarks import belongs to the ``test`` extra; ``environment.yml`` lists the same packages.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
import yaml

from mapping.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Loaded by name by pandas or xarray, never imported by mapping/: the engine, and a piece of
# mapping/ source that shows it is used (so an engine no longer used fails the test).
ENGINES = {
    "pyarrow": ("io/files.py", "pd.read_parquet("),  # Parquet tables
    "zarr": ("io/rasters.py", ".to_zarr("),  # prediction.format: zarr
    "h5netcdf": ("io/rasters.py", "xr.open_dataset("),  # NetCDF covariates
    "h5py": ("io/rasters.py", "xr.open_dataset("),  # h5netcdf's HDF5 backend (NetCDF-4)
}

# pyproject name -> conda-forge names in environment.yml, where they differ.
CONDA_NAMES = {"dask[distributed]": ["dask", "distributed"], "matplotlib": ["matplotlib-base"]}

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?\s*(.*)$")


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(req: str) -> tuple[str, list[str], str]:
    m = _REQ.match(req)
    assert m, req
    extras = [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]
    return _norm(m.group(1)), extras, m.group(3).strip()


def _declared(reqs: list[str]) -> set[str]:
    """Distributions a requirement list installs directly, extras resolved from metadata."""
    out: set[str] = set()
    for req in reqs:
        name, extras, _ = _split(req)
        out.add(name)
        for extra in extras:
            for dep in requires(name) or []:
                if f'extra == "{extra}"' in dep or f"extra == '{extra}'" in dep:
                    out.add(_split(dep.split(";")[0])[0])
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _guards_import_error(node: ast.Try) -> bool:
    names = []
    for h in node.handlers:
        if isinstance(h.type, ast.Name):
            names.append(h.type.id)
        elif isinstance(h.type, ast.Tuple):
            names += [e.id for e in h.type.elts if isinstance(e, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


def _imports(tree: ast.AST, *, optional: bool) -> set[str]:
    """Top-level names of absolute imports run at run time (not under ``TYPE_CHECKING``).

    ``optional=False`` also skips modules imported anywhere inside ``try: ... except
    ImportError`` (a script that tries an optional package and uses it only when present);
    ``pytest.importorskip("x")`` counts as an import of ``x``.
    """
    found: set[str] = set()
    guarded: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Try) and not optional and _guards_import_error(node):
            guarded.update(_imports(ast.Module(body=node.body, type_ignores=[]), optional=True))
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value).split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found - guarded


def _third_party(folders: list[str], *, optional: bool) -> dict[str, set[str]]:
    """Distribution -> files importing it, for the third-party imports under ``folders``."""
    files = [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]
    local = {"mapping"} | {p.stem for p in files}
    dists = packages_distributions()
    out: dict[str, set[str]] = {}
    for p in files:
        for mod in _imports(ast.parse(p.read_text(), filename=str(p)), optional=optional):
            if mod in sys.stdlib_module_names or mod in local:
                continue
            assert mod in dists, (
                f"{p.relative_to(ROOT)} imports {mod!r}, which no installed distribution provides"
            )
            # a distribution named as the module wins over others that list it (pystac's
            # wheel records its extension sub-distributions under the same top level)
            owners = [d for d in dists[mod] if _norm(d) == _norm(mod)] or dists[mod]
            for dist in owners:
                out.setdefault(_norm(dist), set()).add(str(p.relative_to(ROOT)))
    return out


def test_version_option_prints_the_project_version(capsys: pytest.CaptureFixture[str]) -> None:
    import mapping

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"socmap {PROJECT['version']}\n"
    assert mapping.__version__ == PROJECT["version"]


def test_import_scan_sees_lazy_imports_and_skips_type_checking() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import onlytyping\n"
        "def f():\n    import lazy.sub\n    from other import x\n"
        "try:\n    import maybe\nexcept ImportError:\n    pass\n"
        "from . import relative\n"
        "pytest.importorskip('skipped.mod')\n"
        "def g():\n    import maybe\n"
    )
    assert _imports(tree, optional=True) == {"typing", "lazy", "other", "maybe", "skipped"}
    assert _imports(tree, optional=False) == {"typing", "lazy", "other", "skipped"}


def test_runtime_dependencies_are_what_mapping_imports() -> None:
    imported = _third_party(["mapping"], optional=True)
    for engine, (module, marker) in ENGINES.items():
        assert marker in (ROOT / "mapping" / module).read_text(), (
            f"{engine}: no longer used by mapping/{module}"
        )
    needed = set(imported) | set(ENGINES)
    declared = _declared(PROJECT["dependencies"])
    missing = {d: sorted(imported.get(d, ()))[:3] for d in needed - declared}
    assert not missing, f"imported by mapping/ but not in [project.dependencies]: {missing}"
    assert not declared - needed, (
        f"in [project.dependencies] but not imported by mapping/: {sorted(declared - needed)}"
    )
    assert {"pykrige", "gstools"}.isdisjoint(declared)


def test_tests_and_benchmarks_import_only_runtime_or_test_extra() -> None:
    imported = _third_party(["tests", "benchmarks", "workflows"], optional=False)
    extras = PROJECT["optional-dependencies"]
    available = _declared(PROJECT["dependencies"]) | _declared(extras["test"])
    missing = {d: sorted(files)[:3] for d, files in imported.items() if d not in available}
    assert not missing, (
        f"imported by tests or benchmarks but in neither runtime nor test extra: {missing}"
    )
    assert {"pykrige", "gstools"} <= set(imported)  # the reference implementations are still used


def test_environment_yml_lists_the_same_packages_and_bounds() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        name, _, spec = _split(dep)
        conda[name] = spec
    extras = PROJECT["optional-dependencies"]
    reqs = (
        PROJECT["dependencies"]
        + extras["test"]
        + [r for r in extras["dev"] if not r.startswith("socmap")]
    )
    expected = {}
    for req in reqs:
        name, extras_, spec = _split(req)
        key = f"{name}[{','.join(extras_)}]" if extras_ else name
        for conda_name in CONDA_NAMES.get(key, [name]):
            expected[conda_name] = spec
    assert {k: v for k, v in conda.items() if k not in {"python", "pip"}} == expected
    assert conda["python"] == PROJECT["requires-python"]


def test_license_and_citation_match_pyproject() -> None:
    assert PROJECT["license"]["text"] == "BSD-3-Clause"
    text = (ROOT / "LICENSE").read_text()
    assert "Copyright (c)" in text and "socmap developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == PROJECT["version"]
    assert cff["license"] == "BSD-3-Clause"
    assert cff["type"] == "software"
    assert cff["message"] and cff["title"] and cff["authors"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{PROJECT['version']}]" in changelog
