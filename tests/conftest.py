"""Fixtures and helpers shared by the test modules.

Helpers are plain functions, imported where they are used (``from conftest import run_cli``:
pytest puts this folder on ``sys.path``); fixtures are found by pytest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mapping.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WORKFLOW = ROOT / "workflows" / "sample.yaml"  # the main job: one layered depth model
PER_INTERVAL_WORKFLOW = ROOT / "workflows" / "sample_per_interval.yaml"
GSTAT = Path(__file__).parent / "data" / "gstat"


def sample_config(output: Path, workflow: Path = SAMPLE_WORKFLOW) -> dict[str, Any]:
    """A sample workflow's config (default: the main one, ``workflows/sample.yaml``) with
    its input paths made absolute, writing to ``output``."""

    def absolute(path: str) -> str:
        return str((workflow.parent / path).resolve())

    cfg = yaml.safe_load(workflow.read_text())
    cfg["output"] = str(output)
    cfg["profiles"]["path"] = absolute(cfg["profiles"]["path"])
    for cov in cfg["covariates"]:
        cov["path"] = absolute(cov["path"])
    cfg["zones"]["path"] = absolute(cfg["zones"]["path"])
    if "path" in (cfg.get("active_layer") or {}):
        cfg["active_layer"]["path"] = absolute(cfg["active_layer"]["path"])
    return cfg


def run_cli(argv: list[str]) -> int:
    """Exit status of ``socmap ARGV`` (typer/click raise ``SystemExit`` by themselves on
    success and on usage errors)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def run_cli_output(argv: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit status, standard output and standard error of ``socmap ARGV``."""
    code = run_cli([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def stage_status(out: Path) -> dict[str, str]:
    """Status of every stage in the manifest of the output folder ``out``."""
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {k: v["status"] for k, v in stages.items()}


def xy_of(df: pd.DataFrame) -> np.ndarray:
    """The ``x, y`` columns as an ``(n, 2)`` array."""
    return df[["x", "y"]].to_numpy()


@pytest.fixture(scope="session")
def gstat_data() -> pd.DataFrame:
    """The points of the gstat reference cases (``tests/data/gstat/make_reference.R``)."""
    return pd.read_csv(GSTAT / "data.csv")
