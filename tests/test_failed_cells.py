"""Cells the model cannot predict (a kriging system that does not factorise) are counted,
warned about once and recorded in the run manifest; they are nodata in the maps, never the
"no neighbours" fallback (the trend with the residual's sill)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from sklearn.linear_model import LinearRegression

from mapping.config import load_config
from mapping.grid import Grid
from mapping.models import OrdinaryKriging, RegressionKriging, Variogram
from mapping.models.kriging import training_covariance
from mapping.predict import (
    FAILED,
    PredictionFailureWarning,
    predict_grid,
    record_coordinate_crs,
    write_prediction,
)
from mapping.run.checkpoint import write_resumable
from mapping.run.runner import Stage, run_stages
from mapping.run.stages import report_failures

ROOT = Path(__file__).resolve().parents[1]
GRID = Grid.from_bounds((0.0, 0.0, 40_000.0, 30_000.0), 1000.0, "EPSG:3413")


def _stack() -> xr.Dataset:
    y, x = GRID.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    elev = 100.0 + 0.002 * xx + 0.001 * yy
    elev[:3, :4] = np.nan  # nodata
    return GRID.attach(xr.Dataset({"elev": (("y", "x"), elev)}, coords={"y": y, "x": x}))


def _broken_model() -> tuple[RegressionKriging, np.ndarray]:
    """Regression kriging whose training covariance has one pair no jitter repairs.

    The covariance of the two training points nearest the grid's centre is set to twice
    the sill: every system holding both has the eigenvalue -sill, far beyond the jitter
    (1e-6 sill) that rescues duplicated points without a nugget. Returns the model and
    the two points.
    """
    rng = np.random.default_rng(3)
    n = 120
    X = pd.DataFrame(
        {"x": rng.uniform(0, 40_000, n), "y": rng.uniform(0, 30_000, n), "elev": rng.normal(size=n)}
    )
    X["elev"] = 100.0 + 0.002 * X.x + 0.001 * X.y
    z = 2.0 + 0.01 * X.elev + np.sin(X.x / 5000.0) + rng.normal(0, 0.1, n)
    v = Variogram("exponential", psill=0.5, range=8000.0, nugget=0.0)
    rk = RegressionKriging(
        trend=LinearRegression(), kriging=OrdinaryKriging(variogram=v, n_neighbors=8)
    ).fit(X, z)
    record_coordinate_crs(rk, GRID.crs)
    ok = rk.kriging_
    d = np.hypot(ok.xy_[:, 0] - 20_000.0, ok.xy_[:, 1] - 15_000.0)
    i, j = np.argsort(d)[:2]
    cov = training_covariance(ok.xy_, ok.variogram_)
    cov[i, j] = cov[j, i] = 2.0 * ok.variogram_.sill
    ok._cov_cache.matrix = cov
    return rk, ok.xy_[[i, j]]


def test_failed_cells_are_nodata_counted_and_warned_once(tmp_path: Path) -> None:
    rk, _ = _broken_model()
    stack = _stack()
    pred = predict_grid(rk, stack, GRID, chunks=16)
    values = pred.compute(scheduler="synchronous")
    flags = values[FAILED].values
    nodata = np.isnan(stack["elev"].values)
    assert np.array_equal(np.isnan(flags), nodata)  # the flag is nodata where inputs are
    failed = flags == 1
    n = int(failed.sum())
    assert 0 < n < (~nodata).sum()
    for stat in ("mean", "median", "lower", "upper", "std"):
        assert np.isnan(values[stat].values[failed]).all()  # not the trend fallback
        assert np.isfinite(values[stat].values[~failed & ~nodata]).all()
    # the same cells, asked of the kriging directly, report a failed factorisation
    from mapping.models.kriging import NOT_FACTORISED

    yy, xx = np.meshgrid(*GRID.coords(), indexing="ij")
    _, _, status = rk.kriging_.krige(np.c_[xx[failed], yy[failed]], return_status=True)
    assert (status == NOT_FACTORISED).all()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = write_prediction(pred, tmp_path / "maps", (0, 30), overviews=False)
    said = [w for w in caught if issubclass(w.category, PredictionFailureWarning)]
    assert len(said) == 1 and f"{n} cell(s)" in str(said[0].message)
    assert files.failed == n
    assert FAILED not in files and "mean" in files  # the flag is counted, not written
    assert not (tmp_path / "maps" / "soc_0_30cm_failed.tif").exists()


def test_a_resumed_map_keeps_its_failure_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mapping.io import tiles

    rk, _ = _broken_model()
    pred = predict_grid(rk, _stack(), GRID, chunks=16)
    with pytest.warns(PredictionFailureWarning):
        first = write_prediction(pred, tmp_path / "a", (0, 30), overviews=False)

    # a run killed once its first row of chunks was written: those chunk files are kept
    # with their failure counts (the run dies before assembling the maps; the files of
    # the second row are what it had not reached), and the resumed run counts the failed
    # cells of kept and computed chunks alike
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tiles, "_assemble", killed)
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        write_resumable(pred, tmp_path / "b", (0, 30), partial=partial, key="k", overviews=False)
    monkeypatch.undo()
    for p in (partial / "soc_0_30cm").glob("r1_c*.tif"):
        p.unlink()
    n_kept = len(list((partial / "soc_0_30cm").glob("r*_c*.tif")))
    assert n_kept == 3  # of 2 x 3 chunks
    flags = pred[FAILED].values
    assert np.nansum(flags[:16]) > 0 and np.nansum(flags[16:]) > 0  # in kept and in new chunks
    said: list[str] = []
    with pytest.warns(PredictionFailureWarning):
        again = write_resumable(
            pred, tmp_path / "c", (0, 30), partial=partial, key="k", overviews=False,
            echo=said.append,
        )  # fmt: skip
    assert said == [f"[predicting 0-30 cm] {n_kept} of 6 chunks kept from an interrupted run"]
    assert again.failed == first.failed > 0
    assert not (partial / "soc_0_30cm").exists()


def test_the_manifest_records_failed_cells_per_interval(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "workflows" / "sample.yaml").read_text())
    cfg["output"] = str(tmp_path / "out")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path, check_files=False)

    def run(ctx):  # a predict stage whose model failed on 7 cells of 0-30 cm
        report_failures(ctx, "predict", {"0-30": 7, "30-100": 0})
        return [], None

    stage = Stage("predict", run, lambda ctx: None, ("prediction",), lambda cfg: [])
    echoed: list[str] = []
    with pytest.warns(PredictionFailureWarning, match="7 cell") as caught:
        run_stages(config, [stage], check=False, echo=echoed.append)
    assert len([w for w in caught if issubclass(w.category, PredictionFailureWarning)]) == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stages"]["predict"]["failed_cells"] == {"0-30": 7, "30-100": 0}
    assert any("7 cell" in line for line in echoed)
