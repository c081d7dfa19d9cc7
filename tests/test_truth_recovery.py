"""The whole sample workflow recovers the known truth of the sample data.

``workflows/sample.yaml`` is run through the real pipeline (stocks, training table,
regression kriging with kNNDM cross-validation, prediction, zone totals) on the
committed ``sample_rasters/``, for 0-30 and 0-100 cm with 100 trees instead of 200 to
stay fast, and its outputs are compared with ``sample_rasters/truth/``.

Tolerances are what the workflow achieves on the sample (log-normal regression
kriging, the sample config's choice), with room for the smaller forest:

* profile stocks: mean stock of the profiles within 4 % of the mean true stock of
  their cells, also for profiles whose bulk density the PTF estimated (8 %);
* zone totals from the mean map: the permafrost region within 6 % of the truth
  (measured: +2.0 % at 0-30 cm, +5.1 % at 0-100 cm here; +1.9 / +4.8 % with 200
  trees; over four other profile draws of the same world between -4.0 % and
  +4.6 %), every zone
  within 20 % (the warm zones, with 3 % of the profiles on 12 % of the land, are
  over-predicted by 10-16 %: the forest cannot extrapolate the cooling trend);
* the pixel-level 90 % intervals cover 85-97 % of the true cells (measured 94.8 % at
  0-30 cm and 96.2 % at 0-100 cm with the calibrated error model, RMS z 0.80 / 0.72:
  wider than nominal on this world, because the error model is calibrated to
  observations, whose profile noise a cell's true value does not carry
  (``docs/calibration.md``, ``noise_var``); the model's own variance gave 89.1 and
  88.6 % here but 81-90 % over four other profile draws and 0.79-0.82 on the world
  suite, ``docs/validation.md``). The upper bound was 95 % before the calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from conftest import ROOT, sample_config

from mapping.config import load_config
from mapping.run import run_stages, stage_list

DATA = ROOT / "sample_rasters"
BOTTOMS = (30, 100)
ZONES = ["continuous", "discontinuous", "sporadic", "isolated"]
REGION_TOLERANCE = 0.06
ZONE_TOLERANCE = 0.20
COVERAGE = (0.85, 0.97)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample workflow, 0-30 and 0-100 cm, 100 trees and one CV partition, run into a
    temporary folder."""
    tmp = tmp_path_factory.mktemp("truth")
    cfg = sample_config(tmp / "out")
    cfg["stocks"]["depths"] = [f"0-{b}" for b in BOTTOMS]
    cfg["model"]["params"]["n_estimators"] = 100
    cfg["cv"]["repeats"] = 1  # the maps and their calibration, not the zone ranges
    assert cfg["model"]["log_transform"] is True  # the choice the tolerances are for
    path = tmp / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path)
    run_stages(config, stage_list(config), until="zones", scheduler="threads", echo=lambda _: None)
    return config.output


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        a = src.read(1).astype(float)
        a[a == src.nodata] = np.nan
        return a


@pytest.fixture(scope="module")
def zones() -> np.ndarray:
    with rasterio.open(DATA / "permafrost_zones.tif") as src:
        return src.read(1)


@pytest.fixture(scope="module")
def truth_totals() -> pd.DataFrame:
    t = pd.read_csv(DATA / "truth" / "zone_totals.csv")
    return t.replace({"zone": {"permafrost_region": "all zones"}}).set_index(["zone", "bottom_cm"])


def test_profile_stocks_match_the_truth_at_their_cells(run: Path) -> None:
    table = pd.read_parquet(run / "training" / "training.parquet")
    for b in BOTTOMS:
        rows = table[(table["top_cm"] == 0) & (table["bottom_cm"] == b)]
        with rasterio.open(DATA / "truth" / f"soc_0_{b}cm.tif") as src:
            r, c = rasterio.transform.rowcol(src.transform, rows["x"], rows["y"])
            truth = src.read(1)[np.asarray(r), np.asarray(c)].astype(float)
        stock = rows["soc_stock_kg_m2"].to_numpy()
        assert stock.mean() / truth.mean() == pytest.approx(1.0, abs=0.04), b
        imputed = rows["bd_imputed"].to_numpy() > 0
        assert imputed.sum() > 40  # the PTF is exercised
        ratio = stock[imputed].mean() / truth[imputed].mean()
        assert ratio == pytest.approx(1.0, abs=0.08), (b, ratio)


def test_zone_totals_recover_the_truth(run: Path, truth_totals: pd.DataFrame) -> None:
    storage = pd.read_csv(run / "zones" / "storage.csv").set_index(["zone", "bottom_cm"])
    for b in BOTTOMS:
        for zone in [*ZONES, "all zones"]:
            got = storage.loc[(zone, b), "storage_pg"]
            true = truth_totals.loc[(zone, b), "storage_pg"]
            assert storage.loc[(zone, b), "area_km2"] == truth_totals.loc[(zone, b), "area_km2"]
            tol = REGION_TOLERANCE if zone == "all zones" else ZONE_TOLERANCE
            assert got == pytest.approx(true, rel=tol), (zone, b, got / true - 1)


def test_zone_totals_come_from_the_mean_map(run: Path, zones: np.ndarray) -> None:
    """Storage is the posterior mean integrated over the zone, not the median."""
    storage = pd.read_csv(run / "zones" / "storage.csv").set_index(["zone", "bottom_cm"])
    cell_m2 = 25e6
    for b in BOTTOMS:
        mean = _read(run / "maps" / f"soc_0_{b}cm_mean.tif")
        median = _read(run / "maps" / f"soc_0_{b}cm_median.tif")
        region = zones > 0
        total = np.nansum(mean[region]) * cell_m2 / 1e12
        assert storage.loc[("all zones", b), "storage_pg"] == pytest.approx(total, rel=1e-5)
        # log-normal: the median is exp(mu), below the mean by exp(s2 / 2)
        assert np.nansum(median[region]) < 0.97 * np.nansum(mean[region])


def test_pixel_intervals_cover_the_true_cells(run: Path, zones: np.ndarray) -> None:
    region = zones > 0
    for b in BOTTOMS:
        truth = _read(DATA / "truth" / f"soc_0_{b}cm.tif")[region]
        lower = _read(run / "maps" / f"soc_0_{b}cm_lower.tif")[region]
        upper = _read(run / "maps" / f"soc_0_{b}cm_upper.tif")[region]
        assert np.isfinite(lower).all() and np.isfinite(upper).all()
        inside = (lower <= truth) & (truth <= upper)
        assert COVERAGE[0] <= inside.mean() <= COVERAGE[1], (b, inside.mean())
        # neither tail is badly off: at most 10 % of the cells on either side
        assert (truth < lower).mean() < 0.10 and (truth > upper).mean() < 0.10
