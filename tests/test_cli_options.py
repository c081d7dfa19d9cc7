"""Options and configs a command can refuse before it works: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import PER_INTERVAL_WORKFLOW, ROOT, run_cli_output, sample_config


def _config(tmp: Path, workflow: Path | None = None, **changes: object) -> Path:
    cfg = sample_config(tmp / "out", workflow) if workflow else sample_config(tmp / "out")
    for key, value in changes.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(
    ("workflow", "depths", "expected"),
    [
        (None, "0-400", "depth 0-400: below the deepest layer of the model (300 cm)"),
        (PER_INTERVAL_WORKFLOW, "0-50", "any depth needs the layered model"),
    ],
)
def test_predict_refuses_depths_before_it_fits(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    workflow: Path | None,
    depths: str,
    expected: str,
) -> None:
    """Both were refused only after the fit and the maps of every interval (14.5 s on the
    sample, hours on a hemisphere)."""
    cfg = _config(tmp_path, workflow)
    code, _, err = run_cli_output(["predict", cfg, "--depths", depths], capsys)
    _one_line_error(code, err, expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--threads-per-worker", "0"], "--threads-per-worker: 0; give at least 1"),
        (["--threads-per-worker", "-1"], "--threads-per-worker: -1; give at least 1"),
        (["-n", "0"], "--workers: 0; give at least 1"),
        (["--sample-chunks", "0"], "--sample-chunks: 0; give at least 1"),
    ],
)
def test_plan_refuses_counts_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], expected: str
) -> None:
    """A ZeroDivisionError or IndexError traceback, or (-1 thread) a negative memory figure."""
    code, _, err = run_cli_output(["plan", _config(tmp_path), *option], capsys)
    _one_line_error(code, err, expected)


@pytest.mark.parametrize(
    ("option", "expected"),
    [(["--chunks", "0"], "--chunks: 0 cells"), (["--band", "0"], "--band: 0; bands are numbered")],
)
def test_integrate_refuses_chunks_and_bands_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], expected: str
) -> None:
    """``--chunks 0``: 93 lines of a Dask traceback; ``--band 0`` was read as band 1."""
    density = ROOT / "sample_rasters" / "truth" / "soc_0_30cm.tif"
    zones = ROOT / "sample_rasters" / "permafrost_zones.tif"
    argv = ["integrate", density, "--zones", zones, "-o", tmp_path / "t.csv", *option]
    code, _, err = run_cli_output(argv, capsys)
    _one_line_error(code, err, expected)
    assert not (tmp_path / "t.csv").exists()


def test_report_refuses_another_runs_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report printed the other config as this run's."""
    (tmp_path / "run").mkdir()
    other = _config(tmp_path)
    code, _, err = run_cli_output(["report", tmp_path / "run", "--config", other], capsys)
    _one_line_error(code, err, "its output is")


def test_validate_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cv.n_splits: 60`` needs 120 profiles in every interval; 102 reach 0-300 cm. ``run``
    refused it; ``validate`` said "config OK" with a warning."""
    cfg = _config(tmp_path, cv__n_splits=60)
    code, out, err = run_cli_output(["validate", cfg], capsys)
    _one_line_error(code, err, "0-300")
    assert "config OK" not in out


def test_stocks_refuses_an_empty_depth_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--depths ""`` silently gave the default intervals (``predict`` refused it)."""
    profiles = ROOT / "sample_rasters" / "profiles.csv"
    code, _, err = run_cli_output(
        ["stocks", profiles, "-o", tmp_path / "s", "--depths", ""], capsys
    )
    _one_line_error(code, err, "--depths: depth interval '' is not of the form TOP-BOTTOM")
    assert not (tmp_path / "s").exists()
