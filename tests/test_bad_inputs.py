"""Bad input through the command line: one line naming the file and where, exit 2, nothing written.

Every file of the corpus in ``tests/data/bad/`` (written by ``tests/data/make_bad_inputs.py``)
goes through the commands a user would run it through: ``socmap stocks``, ``socmap run``
(with a config that points at the bad file and at the tiny valid world in ``base/`` for the
rest), ``socmap validate`` and ``socmap integrate``. Each must exit with status 2, print
exactly one line on stderr that names the file and the row, column or key, and leave the
folder it works in -- config, inputs and output folder, including a previous run's output --
byte for byte as it was.

The commands run in-process (``mapping.cli.main``) with the process's stderr captured at the
file-descriptor level, so GDAL's own messages would be seen too; a Python warning would
print a second line in a real run, so warnings are recorded and must not occur. A handful
of cases also run as separate ``python -m mapping.cli`` processes, which checks the real exit
status and that no traceback reaches the terminal.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mapping.cli import main
from mapping.config import load_config
from mapping.run import run_stages, stage_list

CORPUS = Path(__file__).parent / "data" / "bad"
BASE_CONFIG = (CORPUS / "base" / "run.yaml").read_text()

# file -> fragments the one-line message must contain (besides the file's name)
HORIZON_CASES: dict[str, list[str]] = {
    "horizons_overlapping.csv": ["profile 'P003' lines 8, 9", "overlapping horizons at 5-10 cm"],
    "horizons_top_ge_bottom.csv": ["profile 'P001' line 4", "top_cm 56 >= bottom_cm 56"],
    "horizons_negative_soc.csv": ["profile 'P002' line 5", "soc_pct -1.2 is negative"],
    "horizons_soc_over_100.csv": ["profile 'P001' line 3", "soc_pct 112 above 100 %"],
    "horizons_missing_column.csv": ["missing required column bottom_cm"],
    "horizons_text_in_numeric.csv": ["profile 'P001' line 4", "soc_pct is not a number ('n.d.')"],
    "horizons_duplicate_rows.csv": ["profile 'P001' lines 3, 4", "duplicate rows"],
    "horizons_empty.csv": ["file is empty"],
    "horizons_header_only.csv": ["header but no rows"],
    "horizons_latitude_out_of_range.csv": ["profile 'P001' line 2", "lat 95.5 outside [-90, 90]"],
}
# Valid as a horizon table; wrong only for a run on the base grid.
RUN_ONLY_HORIZON_CASES = {
    "horizons_outside_grid.csv": ["none of the 3 profiles lies on the grid", "EPSG:6931"],
}
# (file, line of base/run.yaml it replaces, fragments)
RASTER_CASES: dict[str, tuple[str, str, list[str]]] = {
    "covariate_truncated.tif": ("maat.tif", "maat", ["file is truncated"]),
    "covariate_other_crs.tif": (
        "maat.tif",
        "maat",
        ["EPSG:32633", "does not overlap", "EPSG:6931"],
    ),
    "covariate_all_nodata.tif": ("maat.tif", "maat", ["covariate 'maat' is all nodata"]),
    "zones_off_grid.gpkg": ("zones.gpkg", "zones", ["no zone polygon lies on the grid"]),
    "zones_off_grid.tif": ("zones.gpkg", "zones", ["no zone code falls on the grid"]),
}
# corpus config -> fragments (the config's own name is always required)
CONFIG_CASES: dict[str, list[str]] = {
    "config_unknown_key.yaml": ["model.n_tree: unknown key"],
    "config_wrong_type.yaml": ["prediction.chunks:", "'big'"],
    "config_missing_file.yaml": ["covariates.1.path: file not found", "maat_v2.tif"],
    "config_python_tag.yaml": ["invalid YAML at line 2"],
    "config_output_not_writable.yaml": [
        "output: cannot create",
        "not_a_folder",
        "is a file, not a folder",
    ],
}


# --------------------------------------------------------------------------- helpers
def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: relative name -> sha256 (or "dir")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def socmap(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit status, stdout and stderr."""
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # click exits by itself on success and usage errors
            code = int(exc.code or 0)
    shown = [
        w
        for w in caught
        if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)
    ]
    assert not shown, f"a warning would print on stderr: {shown[0].message}"
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, fragments: list[str]) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("socmap: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"


def config_text(**replace: str) -> str:
    """``base/run.yaml`` rewritten for a config in the corpus folder (output: ``out``)."""
    text = BASE_CONFIG.replace("output: ../out", "output: out")
    for name in ("profiles.csv", "elevation.tif", "maat.tif", "landcover.tif", "zones.gpkg"):
        text = text.replace(f"path: {name}", f"path: base/{name}")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def previous_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of a finished run of the tiny valid workflow."""
    root = tmp_path_factory.mktemp("previous")
    shutil.copytree(CORPUS, root / "corpus")
    cfg = load_config(root / "corpus" / "base" / "run.yaml")
    run_stages(cfg, stage_list(cfg), scheduler="synchronous", echo=lambda _: None)
    return cfg.output


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest


# --------------------------------------------------------------------------- the corpus itself
def test_corpus_matches_its_checksums() -> None:
    listed = {}
    for line in (CORPUS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((CORPUS / name).read_bytes()).hexdigest() == digest, name
    documented = (CORPUS / "README.md").read_text()
    cases = [*HORIZON_CASES, *RUN_ONLY_HORIZON_CASES, *RASTER_CASES, *CONFIG_CASES]
    assert all(f"`{c}`" in documented for c in cases)
    assert {p for p in present if "/" not in p and p not in ("README.md", "not_a_folder")} == set(
        cases
    )


def test_the_base_workflow_is_valid(previous_output: Path) -> None:
    # Every bad case differs from this finished run by one file or one key.
    assert (previous_output / "zones" / "storage.csv").exists()
    assert (previous_output / "maps" / "soc_0_30cm_mean.tif").exists()


# --------------------------------------------------------------------------- socmap stocks
@pytest.mark.parametrize("name", sorted(HORIZON_CASES))
def test_stocks(name: str, corpus: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = corpus / "stocks_out"
    before = snapshot(corpus)
    code, _, err = socmap(["stocks", str(corpus / name), "-o", str(out)], capfd)
    assert_one_line_error(code, err, [name, *HORIZON_CASES[name]])
    assert snapshot(corpus) == before
    assert not out.exists()


# --------------------------------------------------------------------------- socmap run / validate
def _run_cases() -> list[tuple[str, str, list[str]]]:
    """(case id, config text or corpus config name, fragments)."""
    cases = []
    for name, frags in {**HORIZON_CASES, **RUN_ONLY_HORIZON_CASES}.items():
        cases.append(
            (name, config_text(**{"path: base/profiles.csv": f"path: {name}"}), [name, *frags])
        )
    for name, (replaced, _, frags) in RASTER_CASES.items():
        text = config_text(**{f"path: base/{replaced}": f"path: {name}"})
        if name.endswith(".tif") and replaced == "zones.gpkg":
            text = text.replace("  field: zone_code\n", "")
        cases.append((name, text, [name, *frags]))
    for name, frags in CONFIG_CASES.items():
        cases.append((name, name, [name, *frags]))
    return cases


RUN_CASES = _run_cases()


def _config_path(corpus: Path, case: str, text: str) -> Path:
    if text.endswith(".yaml"):
        return corpus / text
    p = corpus / f"run_{Path(case).stem}.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("case", "text", "fragments"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_over_a_previous_run(
    case: str,
    text: str,
    fragments: list[str],
    corpus: Path,
    previous_output: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    cfg = _config_path(corpus, case, text)
    shutil.copytree(previous_output, corpus / "out")
    before = snapshot(corpus)
    code, _, err = socmap(["run", str(cfg), "--scheduler", "synchronous"], capfd)
    assert_one_line_error(code, err, fragments)
    assert snapshot(corpus) == before  # the previous run's files and manifest untouched
    assert not (corpus / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(("case", "text", "fragments"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_validate(
    case: str, text: str, fragments: list[str], corpus: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = _config_path(corpus, case, text)
    before = snapshot(corpus)
    code, _, err = socmap(["validate", str(cfg)], capfd)
    assert_one_line_error(code, err, fragments)
    assert snapshot(corpus) == before


@pytest.mark.parametrize(
    "case", ["horizons_overlapping.csv", "covariate_all_nodata.tif", "zones_off_grid.gpkg"]
)
def test_failed_first_run_creates_no_output_folder(
    case: str, corpus: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _, text, fragments = next(c for c in RUN_CASES if c[0] == case)
    cfg = _config_path(corpus, case, text)
    code, _, err = socmap(["run", str(cfg)], capfd)
    assert_one_line_error(code, err, fragments)
    assert not (corpus / "out").exists()


# --------------------------------------------------------------------------- socmap integrate
INTEGRATE_CASES = {
    "truncated density": (["covariate_truncated.tif", "--zones", "base/zones.gpkg", "--zone-field",
                           "zone_code", "--interval", "0-30", "-o", "out/t.csv"],
                          ["covariate_truncated.tif", "file is truncated"]),
    "polygons off the grid": (["base/soc_0_30cm_true.tif", "--zones", "zones_off_grid.gpkg",
                               "--zone-field", "zone_code", "-o", "out/t.csv"],
                              ["zones_off_grid.gpkg", "no zone falls on the grid"]),
    "raster zones off the grid": (["base/soc_0_30cm_true.tif", "--zones", "zones_off_grid.tif",
                                   "-o", "out/t.csv"],
                                  ["zones_off_grid.tif", "no zone falls on the grid"]),
    "empty polygon file": (["base/soc_0_30cm_true.tif", "--zones", "horizons_empty.csv",
                            "-o", "out/t.csv"], ["horizons_empty.csv"]),
    "output not writable": (["base/soc_0_30cm_true.tif", "--zones", "base/zones.gpkg",
                             "--zone-field", "zone_code", "-o", "not_a_folder/t.csv"],
                            ["not_a_folder"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INTEGRATE_CASES))
def test_integrate(case: str, corpus: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv, fragments = INTEGRATE_CASES[case]
    argv = [a if a.startswith("-") or a in ("zone_code", "0-30") else str(corpus / a) for a in argv]
    before = snapshot(corpus)
    code, _, err = socmap(["integrate", *argv], capfd)
    assert_one_line_error(code, err, fragments)
    assert snapshot(corpus) == before


# --------------------------------------------------------------------------- real processes
def test_console_exit_status_and_stderr(corpus: Path, previous_output: Path) -> None:
    """Separate processes: real exit status 2, one line on stderr, no traceback, nothing written."""
    shutil.copytree(previous_output, corpus / "out")
    zones_case = next(c for c in RUN_CASES if c[0] == "zones_off_grid.gpkg")
    cfg = _config_path(corpus, *zones_case[:2])
    commands = {
        "stocks": (
            ["stocks", "horizons_overlapping.csv", "-o", "s_out"],
            "horizons_overlapping.csv",
        ),
        "run": (["run", cfg.name, "--scheduler", "synchronous"], "zones_off_grid.gpkg"),
        "integrate": (
            [
                "integrate",
                "base/soc_0_30cm_true.tif",
                "--zones",
                "zones_off_grid.tif",
                "-o",
                "t.csv",
            ],
            "zones_off_grid.tif",
        ),
    }
    before = snapshot(corpus)
    procs = {
        k: subprocess.Popen(
            [sys.executable, "-m", "mapping.cli", *argv],
            cwd=corpus,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (argv, _) in commands.items()
    }
    for k, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (k, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, (k, err)
        assert commands[k][1] in lines[0], (k, err)
    assert snapshot(corpus) == before


# --------------------------------------------------------------------------- safe config
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("{n_tree: 20}", "unexpected keyword argument 'n_tree'"),
        ("{n_estimators: abc}", "'n_estimators' parameter"),
        ("{n_estimators: \"__import__('os').system('touch pwned')\"}", "'n_estimators' parameter"),
    ],
)
def test_model_params_are_values_never_code(
    params: str, fragment: str, corpus: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = corpus / "params.yaml"
    cfg.write_text(
        config_text(**{"params: {n_estimators: 20, min_samples_leaf: 3}": f"params: {params}"})
    )
    before = snapshot(corpus)
    code, _, err = socmap(["run", str(cfg)], capfd)
    assert_one_line_error(code, err, ["params.yaml", "model.params:", fragment])
    assert snapshot(corpus) == before
    assert not (corpus / "pwned").exists() and not Path("pwned").exists()


def test_validate_prints_every_path_resolved(
    corpus: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    link = corpus / "linked"
    link.symlink_to(corpus / "base", target_is_directory=True)
    cfg = corpus / "relative.yaml"
    cfg.write_text(
        config_text(
            **{
                "path: base/maat.tif": "path: ./linked/../base/maat.tif",
                "path: base/zones.gpkg": "path: linked/zones.gpkg",
            }
        )
    )
    code, out, _ = socmap(["validate", str(cfg)], capfd)
    assert code == 0
    base = (corpus / "base").resolve()
    paths = dict(line.split() for line in out.splitlines()[2:9])  # the "paths (resolved)" block
    assert paths == {
        "config": str(cfg.resolve()),
        "output": str((corpus / "out").resolve()),
        "profiles": str(base / "profiles.csv"),
        "covariates.elevation": str(base / "elevation.tif"),
        "covariates.maat": str(base / "maat.tif"),
        "covariates.landcover": str(base / "landcover.tif"),
        "zones": str(base / "zones.gpkg"),  # the symlink followed
    }
    assert "output: will be created" in out
    assert "60 valid (387 horizons), 60 on the grid" in out
    assert "0-30 cm: 58" in out
    assert "zones: 4 zone(s) on the grid from polygons, field 'zone_code'" in out
    assert not (corpus / "out").exists()


def test_manifest_records_resolved_paths(previous_output: Path) -> None:
    import json

    manifest = json.loads((previous_output / "manifest.json").read_text())
    base = (previous_output.parent / "base").resolve()
    assert manifest["config_file"] == str(base / "run.yaml")
    assert manifest["config"]["output"] == str(previous_output.resolve())
    assert manifest["config"]["profiles"]["path"] == str(base / "profiles.csv")
    assert [c["path"] for c in manifest["config"]["covariates"]] == [
        str(base / f) for f in ("elevation.tif", "maat.tif", "landcover.tif")
    ]
    assert manifest["config"]["zones"]["path"] == str(base / "zones.gpkg")
    assert set(manifest["inputs"]) == {
        str(base / f)
        for f in ("profiles.csv", "elevation.tif", "maat.tif", "landcover.tif", "zones.gpkg")
    }
