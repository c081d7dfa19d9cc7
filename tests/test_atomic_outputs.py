"""Nothing half-written: every writer goes through a temporary name, and a failed run says so.

* A static audit of ``mapping/``: every call that writes a file (``to_csv``, ``to_parquet``,
  ``to_zarr``, ``savefig``, ``numpy.save``, ``joblib.dump``, ``write_text``,
  ``rasterio.open(..., "w")``, ...) writes to a name bound by ``with atomic_path(...) as NAME`` (or to an in-memory
  buffer, or to the one documented staging file), never to a final path.
* Runs of the tiny workflow in ``tests/data/bad/base/`` interrupted by an exception injected
  mid-stage (our own functions are wrapped to raise after they have written something; no
  GDAL, Dask or file-system call is faked) leave no file under a final name that is not
  complete, a manifest that does not call the stage complete (and calls the stages after
  it outdated), and a next run that redoes the stage and ends byte-identical to a run that
  was never interrupted.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import stage_status

import mapping
from mapping.config import load_config
from mapping.io import tiles
from mapping.run import run_stages, stage_list, stages

CORPUS = Path(__file__).parent / "data" / "bad"
MAPPING = Path(mapping.__file__).parent

# Calls that write a file, and which argument is the destination ("self": the receiver).
WRITERS: dict[str, int | str] = {
    "to_csv": 0,
    "to_parquet": 0,
    "to_json": 0,
    "to_file": 0,
    "to_zarr": 0,
    "to_netcdf": 0,
    "to_raster": 0,
    "savefig": 0,
    "save": 0,  # numpy.save
    "savez": 0,
    "savez_compressed": 0,
    "write_dataframe": 1,
    "dump": 1,  # joblib.dump(obj, path), pickle.dump(obj, file)
    "copy": 1,  # rasterio.shutil.copy(src, dst), shutil.copy(src, dst)
    "write_text": "self",
    "write_bytes": "self",
}
# Destinations that are not final paths, with the reason.
ALLOWED = {
    ("charts.py", "buf"): "an in-memory BytesIO",
    (
        "rasters.py",
        "stage",
    ): "write_cogs' tiled staging file, a temporary name removed in `finally`",
}


def _root_name(node: ast.AST) -> str | None:
    """``tmp`` for ``tmp``, ``tmp / "a" / "b"``, ``tmp.parent`` ..."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.BinOp):
            node = node.left
        elif isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call) and node.args:
            node = node.args[0]
        else:
            return None


def _atomic_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                fn = getattr(call, "func", None)
                fname = getattr(fn, "attr", None) or getattr(fn, "id", None)
                if fname == "atomic_path" and isinstance(item.optional_vars, ast.Name):
                    names.add(item.optional_vars.id)
    return names


def _writes(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, call, destination root name) of every file-writing call."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        name = getattr(fn, "attr", None) or getattr(fn, "id", None)
        if name == "open":
            mode = node.args[1] if len(node.args) > 1 else None
            mode = mode or next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax"):
                found.append((node.lineno, "open", _root_name(node.args[0])))
            continue
        if name not in WRITERS:
            continue
        if isinstance(fn, ast.Attribute) and ast.unparse(fn.value) == "io":
            continue  # mapping.io's writers: atomic themselves (audited inside mapping/io)
        where = WRITERS[name]
        if name == "copy" and "shutil" not in ast.unparse(fn):
            continue  # dict.copy(), DataFrame.copy(): not writers
        if isinstance(where, int) and len(node.args) <= where:
            continue  # no destination: to_csv() and to_json() return text, Manifest.save()
        if where == "self" and len(node.args) >= 2:
            target: ast.AST | None = node.args[1]  # mapping.io.write_text(text, path)
        elif where == "self":
            target = fn.value if isinstance(fn, ast.Attribute) else None
        else:
            target = node.args[where] if len(node.args) > where else None
        if name == "dump" and "json" in ast.unparse(fn):
            continue  # json.dump to an open handle: caught as open(..., "w")
        found.append((node.lineno, name, _root_name(target) if target is not None else None))
    return found


def test_every_writer_in_mapping_writes_to_a_temporary_name() -> None:
    stragglers = []
    audited = 0
    for path in sorted(MAPPING.rglob("*.py")):
        tree = ast.parse(path.read_text())
        atomic = _atomic_names(tree)
        for line, call, dest in _writes(tree):
            audited += 1
            if dest in atomic or (path.name, dest) in ALLOWED:
                continue
            stragglers.append(f"{path.relative_to(MAPPING.parent)}:{line}: {call} -> {dest}")
    assert not stragglers, "writers that bypass atomic_path:\n" + "\n".join(stragglers)
    assert audited >= 10  # the audit sees the writers (io.py alone has more)


def test_the_audit_catches_a_direct_write() -> None:
    bad = ast.parse(
        "def f(df, out):\n"
        "    df.to_csv(out / 'x.csv')\n"
        "    with atomic_path(out / 'y.csv') as tmp:\n"
        "        df.to_csv(tmp)\n"
        "    with open(out / 'z.txt', 'w') as fh:\n"
        "        fh.write('z')\n"
    )
    atomic = _atomic_names(bad)
    direct = [(call, dest) for _, call, dest in _writes(bad) if dest not in atomic]
    assert direct == [("to_csv", "out"), ("open", "out")]


# --------------------------------------------------------------------------- interrupted runs
def _stages(cfg):  # the report stage adds nothing to what is tested here
    return [s for s in stage_list(cfg) if s.name != "report"]


def _run(folder: Path, **kwargs) -> list[str]:
    said: list[str] = []
    cfg = load_config(folder / "base" / "run.yaml")
    run_stages(cfg, _stages(cfg), scheduler="synchronous", echo=said.append, **kwargs)
    return said


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _files(folder: Path) -> dict[str, str]:
    """Checksums of the outputs, model pickles aside.

    The manifest holds timestamps. A pickled model is not byte-reproducible: scikit-learn's
    tree-node records and KD-tree node data carry uninitialised padding bytes (every field
    is equal from run to run); the maps made with the models are compared instead.
    """
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and p.suffix != ".joblib"
    }


def _checksums_hold(out: Path) -> None:
    from mapping.io import file_checksum

    for name, rec in _manifest(out)["stages"].items():
        assert rec["status"] == "complete", name
        for rel, checksum in rec["outputs"].items():
            assert file_checksum(out / rel) == checksum, rel


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of an uninterrupted run."""
    root = tmp_path_factory.mktemp("reference") / "corpus"
    shutil.copytree(CORPUS, root)
    _run(root)
    return root / "out"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    return tmp_path / "corpus"


def test_crash_while_writing_a_map(
    corpus: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tiles.write_chunk
    written: list[tuple[int, int]] = []

    def write_one_chunk_then_fail(block, i, j, *args):  # type: ignore[no-untyped-def]
        if written:
            raise RuntimeError("injected: worker lost mid-map")
        record = real(block, i, j, *args)  # one chunk really lands in its file
        written.append((i, j))
        return record

    monkeypatch.setattr(tiles, "write_chunk", write_one_chunk_then_fail)
    out = corpus / "out"
    with pytest.raises(RuntimeError, match="injected"):
        _run(corpus)
    assert written  # the failure came after a chunk was written
    # No map under a final name, and no temporary left behind either.
    assert sorted(p.name for p in (out / "maps").iterdir()) == [".partial"]
    # the resume store holds the finished chunk, complete, and nothing else
    i, j = written[0]
    kept = sorted(p.name for p in (out / "maps" / ".partial").rglob("r*_c*.tif"))
    assert kept == [f"r{i}_c{j}.tif"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert stage_status(out) == {"stocks": "complete", "training": "complete", "fit": "complete",
                            "predict": "failed"}  # fmt: skip

    monkeypatch.setattr(tiles, "write_chunk", real)
    said = _run(corpus)
    assert "[fit] unchanged, reusing" in " ".join(said)
    assert "[predict] running" in said and "[zones] running" in said
    _checksums_hold(out)
    assert _files(out) == _files(reference)  # byte-identical to the uninterrupted run


def test_interrupt_after_a_model_is_saved_over_a_previous_run(
    corpus: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = corpus / "out"
    shutil.copytree(reference, out)
    cfg = corpus / "base" / "run.yaml"
    cfg.write_text(cfg.read_text().replace("n_estimators: 20", "n_estimators: 25"))
    old_model = (out / "models" / "0-30" / "model.joblib").read_bytes()
    old_maps = _files(out / "maps")

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # Ctrl-C while the fit stage draws its plot

    monkeypatch.setattr(stages, "plot_observed_vs_predicted", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(corpus)
    # The new model file is in place (written atomically) but the stage is not complete,
    # and the previous run's maps and totals are marked outdated, not complete.
    assert (out / "models" / "0-30" / "model.joblib").read_bytes() != old_model
    assert stage_status(out) == {"stocks": "complete", "training": "complete", "fit": "interrupted",
                            "predict": "outdated", "zones": "outdated",
                            "uncertainty": "outdated"}  # fmt: skip
    assert _files(out / "maps") == old_maps
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]

    monkeypatch.undo()
    said = _run(corpus)
    assert "[stocks] unchanged, reusing" in " ".join(said)
    for stage in ("fit", "predict", "zones"):
        assert f"[{stage}] running" in said
    _checksums_hold(out)
    assert _files(out / "maps") != old_maps  # 25 trees, not 20


def test_outputs_a_stage_no_longer_writes_are_removed(corpus: Path) -> None:
    base = corpus / "base"
    cfg = base / "run.yaml"
    good = (base / "profiles.csv").read_text()
    lines = good.splitlines()
    pid = lines[1].split(",")[0]
    bad_line = lines[1].replace(f"{pid},", "BAD,", 1).replace(",0,", ",-5,", 1)  # negative top
    (base / "profiles.csv").write_text(good + bad_line + "\n")
    cfg.write_text(cfg.read_text().replace("method: linear}", "method: linear, on_invalid: skip}"))
    out = corpus / "out"
    _run(corpus, until="stocks")
    assert (out / "stocks" / "invalid_profiles.csv").exists()

    (base / "profiles.csv").write_text(good)
    _run(corpus, until="stocks")
    assert not (out / "stocks" / "invalid_profiles.csv").exists()
    assert sorted(_manifest(out)["stages"]["stocks"]["outputs"]) == [
        "stocks/interval_counts.csv",
        "stocks/stocks.csv",
    ]
