"""Guard rails that read the source of ``mapping/`` (``docs/architecture.md``).

* no import cycles between ``mapping`` modules;
* imports of ``mapping`` modules sit at the top of files: a function-level one only for a
  heavy dependency, with a comment on its line saying so (``cli.py`` is the exception: it
  loads a command's modules when that command runs, so ``socmap --help`` stays instant);
* only ``mapping/io/`` opens or writes files;
* the workflow config is imported only by ``config.py``, ``run/`` and ``cli.py``; the CLI
  by nobody.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mapping

MAPPING = Path(mapping.__file__).parent
SOURCES = sorted(MAPPING.rglob("*.py"))


def _module(path: Path) -> str:
    parts = list(path.relative_to(MAPPING.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module(p): p for p in SOURCES}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool, bool]]:
    """``(node, imported module, inside a function, under TYPE_CHECKING)`` for every
    import of a ``mapping`` module in ``path``."""
    found: list[tuple[ast.stmt, str, bool, bool]] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module.split(".")[0] == "mapping":
                    for alias in child.names:
                        sub = f"{child.module}.{alias.name}"
                        target = sub if sub in MODULES else child.module
                        found.append((child, target, in_function, type_checking))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "mapping":
                        found.append((child, alias.name, in_function, type_checking))
            visit(
                child,
                in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef),
                type_checking or _is_type_checking(child),
            )

    visit(ast.parse(path.read_text()), False, False)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the ``mapping`` modules it imports when it runs (TYPE_CHECKING left out)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {t for _, t, _, tc in _imports(path) if not tc and t != name}
    return graph


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    assert "mapping.io.files" in graph["mapping.io"]
    assert "mapping.validation" in graph["mapping.run.stages"]


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_mapping_imports_are_at_the_top_of_files() -> None:
    bad = []
    for path in SOURCES:
        if path.name == "cli.py":
            continue
        lines = path.read_text().splitlines()
        for node, target, in_function, _ in _imports(path):
            if in_function and "heavy" not in lines[node.lineno - 1]:
                bad.append(f"{path.relative_to(MAPPING)}:{node.lineno}: {target}")
    assert not bad, "function-level imports of mapping modules: " + ", ".join(bad)


def test_config_and_cli_are_imported_only_from_above() -> None:
    bad = []
    for path in SOURCES:
        rel = path.relative_to(MAPPING).as_posix()
        for node, target, _, _ in _imports(path):
            if target == "mapping.config" and not (
                rel in ("config.py", "cli.py") or rel.startswith("run/")
            ):
                bad.append(f"{rel}:{node.lineno} imports mapping.config")
            if target == "mapping.cli" and rel != "cli.py":
                bad.append(f"{rel}:{node.lineno} imports mapping.cli")
    assert not bad, "; ".join(bad)


# Calls that open a file for reading or writing. Method names count on any receiver except
# a module imported from mapping.io; function names when called bare or on these modules.
_OPENING_METHODS = {
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "to_csv",
    "to_parquet",
    "to_file",
    "to_zarr",
    "to_netcdf",
    "to_raster",
    "savefig",
}
_OPENING_FUNCTIONS = {
    ("", "open"),
    ("np", "save"),
    ("np", "savez"),
    ("np", "load"),
    ("joblib", "dump"),
    ("joblib", "load"),
    ("pickle", "dump"),
    ("pickle", "load"),
    ("json", "dump"),
    ("json", "load"),
    ("pd", "read_csv"),
    ("pd", "read_parquet"),
    ("gpd", "read_file"),
    ("pyogrio", "read_dataframe"),
    ("rasterio", "open"),
    ("rioxarray", "open_rasterio"),
    ("xr", "open_dataset"),
    ("xr", "open_zarr"),
}
# In-memory destinations, with the reason.
_IN_MEMORY = {("charts.py", "buf")}


def _receiver(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else ""


def test_only_mapping_io_opens_files() -> None:
    bad = []
    for path in SOURCES:
        rel = path.relative_to(MAPPING).as_posix()
        if rel.startswith("io/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            if isinstance(fn, ast.Name):
                hit = ("", fn.id) in _OPENING_FUNCTIONS
            elif isinstance(fn, ast.Attribute):
                owner = _receiver(fn.value)
                hit = (owner, fn.attr) in _OPENING_FUNCTIONS or (
                    fn.attr in _OPENING_METHODS
                    and owner != "io"
                    and (path.name, _receiver(node.args[0]) if node.args else "") not in _IN_MEMORY
                )
            else:
                hit = False
            if hit:
                bad.append(f"{rel}:{node.lineno}: {ast.unparse(fn)}(...)")
    assert not bad, "files opened outside mapping/io: " + ", ".join(bad)
