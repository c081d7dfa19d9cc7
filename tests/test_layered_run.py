"""``model.depth: layered`` in ``socmap run``: one depth model for every interval.

A small layered variant of the sample workflow runs end to end; its maps are checked
cell by cell against what the model promises (monotone in depth, any depth between its
neighbours, thawed + frozen = the 0-300 cm total), and the per-interval default is checked
to be the run of before (same stages, same config dump).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import geopandas as gpd
import joblib
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from conftest import PER_INTERVAL_WORKFLOW, SAMPLE_WORKFLOW, run_cli, run_cli_output, sample_config
from sklearn.linear_model import LinearRegression

from mapping import io
from mapping.aoa import AreaOfApplicability
from mapping.calibration import fit_error_model
from mapping.cli import main
from mapping.config import load_config
from mapping.depth_model import LayeredDepthModel
from mapping.exceptions import ConfigError
from mapping.residual_errors import (
    cv_error_variogram,
    regional_error_sd,
    residual_mean_sd,
    residual_variogram,
)
from mapping.run import stage_list
from mapping.run import stages as default
from mapping.run.layered import FIT_WEIGHT, aoa_weights, fit_weights
from mapping.run.runner import StageContext
from mapping.run.shared_error import shared_error
from mapping.run.stages import run_grid, zone_layout
from mapping.uncertainty import zone_total_draws
from mapping.validation import observed_variance
from mapping.zone_error import add_zone_errors

ROOT = Path(__file__).resolve().parents[1]
ALT_RASTER = ROOT / "sample_rasters" / "active_layer.tif"
TRUE_SPLIT = ROOT / "sample_rasters" / "truth" / "thaw_split.csv"


def _config(tmp: Path, **model: object) -> Path:
    """The per-interval sample workflow, with ``model`` settings (e.g. ``depth="layered"``)."""
    cfg = sample_config(tmp / "out", PER_INTERVAL_WORKFLOW)
    cfg["stocks"]["depths"] = ["0-30", "0-100", "0-300"]
    cfg["model"]["params"]["n_estimators"] = 30
    cfg["model"].update(model)
    cfg["uncertainty"] = {"n_realizations": 10, "range": [5.0, 95.0]}
    cfg["scheduler"] = "threads"
    if model.get("depth") == "layered":
        cfg["prediction"]["depths"] = ["0-50", "0-150"]
        cfg["active_layer"] = {"path": str(ALT_RASTER)}
    path = tmp / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def layered_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("layered")
    assert main(["run", str(_config(tmp, depth="layered"))]) == 0
    return tmp / "out"


def _map(out: Path, top: int, bottom: int, stat: str = "mean") -> np.ndarray:
    with rasterio.open(out / "maps" / f"soc_{top}_{bottom}cm_{stat}.tif") as src:
        return src.read(1).astype(float)


def test_every_stage_completes_with_the_per_interval_outputs(layered_run: Path) -> None:
    manifest = json.loads((layered_run / "manifest.json").read_text())
    names = ["stocks", "training", "fit", "predict", "zones", "uncertainty", "thaw", "report"]
    assert [n for n in names if manifest["stages"][n]["status"] == "complete"] == names
    assert (layered_run / "stocks" / "layers.csv").is_file()
    assert (layered_run / "models" / "layered_model.joblib").is_file()
    summary = pd.read_csv(layered_run / "models" / "cv_summary.csv")
    assert list(summary["interval"]) == ["0-30", "0-100", "0-300"]
    # cross-validated at held-out profiles: informative, not perfect
    assert summary["r2"].between(0.2, 0.99).all()
    for label in summary["interval"]:
        cv = pd.read_csv(layered_run / "models" / label / "cv_predictions.csv")
        assert cv["predicted"].notna().all() and (cv["lower"] <= cv["upper"]).all()


def test_maps_are_monotone_in_depth_in_every_cell(layered_run: Path) -> None:
    depths = [30, 50, 100, 150, 300]
    for stat in ("mean", "lower", "median", "upper", "std"):
        maps = [_map(layered_run, 0, d, stat) for d in depths]
        valid = np.isfinite(maps[0])
        assert valid.sum() > 1000
        for shallow, deep in itertools.pairwise(maps):
            assert np.array_equal(np.isfinite(deep), valid)
            assert np.all(deep[valid] >= shallow[valid] * (1 - 1e-6)), stat


def test_any_depth_lies_between_its_neighbours(layered_run: Path) -> None:
    m30, m50, m100 = (_map(layered_run, 0, d) for d in (30, 50, 100))
    ok = np.isfinite(m50)
    assert np.all((m50[ok] >= m30[ok] * (1 - 1e-6)) & (m50[ok] <= m100[ok] * (1 + 1e-6)))
    # strictly inside somewhere: a real 30-50 cm layer, not a copy of a neighbour
    assert np.mean(m50[ok] > m30[ok] * 1.01) > 0.9


def test_predict_depths_needs_no_refit(layered_run: Path, capsys) -> None:
    cfg = load_config(layered_run.parent / "sample.yaml")
    model_before = (layered_run / "models" / "layered_model.joblib").stat().st_mtime_ns
    assert main(["predict", str(layered_run.parent / "sample.yaml"), "--depths", "0-75,0-30"]) == 0
    said = capsys.readouterr().out
    assert "[predict] 0-30 cm is one of the run's intervals (stocks.depths)" in said
    assert (layered_run / "models" / "layered_model.joblib").stat().st_mtime_ns == model_before
    m50, m75, m100 = (_map(layered_run, 0, d) for d in (50, 75, 100))
    ok = np.isfinite(m75)
    assert np.all((m75[ok] >= m50[ok] * (1 - 1e-6)) & (m75[ok] <= m100[ok] * (1 + 1e-6)))
    assert cfg.model.depth == "layered"


def test_thawed_plus_frozen_is_the_0_300_total(layered_run: Path) -> None:
    split = pd.read_csv(layered_run / "zones" / "thaw_split.csv")
    storage = pd.read_csv(layered_run / "zones" / "storage.csv")
    total = storage[storage["interval"] == "0-300"].set_index("zone")["storage_pg"]
    for zone, rows in split.groupby("zone"):
        s = rows.set_index("state")["storage_pg"]
        assert s["thawed"] + s["frozen"] == pytest.approx(s["total 0-300 cm"], rel=1e-9)
        assert s["total 0-300 cm"] == pytest.approx(total[zone], rel=1e-4)
        r = rows.set_index("state")
        for state in ("thawed", "frozen"):
            assert r.loc[state, "storage_pg_lower"] < s[state] < r.loc[state, "storage_pg_upper"]


def test_thawed_share_recovers_the_sample_truth(layered_run: Path) -> None:
    # sample_rasters/active_layer.tif with its true split (mapping.synthetic.active_layer):
    # the share of each zone's 0-300 cm carbon above the active-layer base follows the
    # depth shape of the density, which the layered model learns from the profiles.
    truth = pd.read_csv(TRUE_SPLIT).set_index("zone")
    split = pd.read_csv(layered_run / "zones" / "thaw_split.csv")
    shares = {}
    for zone, rows in split.groupby("zone"):
        s = rows.set_index("state")["storage_pg"]
        shares[zone] = s["thawed"] / s["total 0-300 cm"]
    true_share = truth["thawed_share"]
    for zone in ("continuous", "discontinuous", "sporadic", "isolated"):
        assert shares[zone] == pytest.approx(true_share[zone], abs=0.05), (zone, shares)
    # colder zones: thinner active layer, a smaller thawed share (as in the truth)
    order = [shares[z] for z in ("continuous", "discontinuous", "sporadic", "isolated")]
    assert order == sorted(order)


def test_per_interval_default_is_unchanged(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    assert cfg.model.depth == "per_interval"
    assert stage_list(cfg) == default.stage_list(cfg)
    dumped = json.loads(cfg.model_dump_json())
    assert "active_layer" not in dumped
    assert not {"depth", "layers", "anchor_cm", "weighting", "weighting_power"} & set(
        dumped["model"]
    )
    assert "repeats" not in dumped["cv"]
    assert "depths" not in dumped["prediction"]
    # the error model's curve: the isotonic default leaves the dump (and the runs'
    # fingerprints) as before the key existed; another shape is kept
    assert "shape" not in dumped["prediction"]["calibration"]
    smooth = cfg.model_copy(
        update={
            "prediction": cfg.prediction.model_copy(
                update={
                    "calibration": cfg.prediction.calibration.model_copy(
                        update={"shape": "loglinear"}
                    )
                }
            )
        }
    )
    assert json.loads(smooth.model_dump_json())["prediction"]["calibration"]["shape"] == "loglinear"
    assert "shared_shape" not in dumped["prediction"]["calibration"]
    two = cfg.prediction.calibration.model_copy(update={"shared_shape": "loglinear"})
    assert two.model_dump()["shared_shape"] == "loglinear"
    # the shared extrapolation error's reference: the median default as before the key
    assert "reference" not in dumped["uncertainty"]
    ref = cfg.uncertainty.model_copy(update={"reference": "mean"})
    assert ref.model_dump()["reference"] == "mean"


def test_the_main_sample_workflow_is_the_layered_one_with_the_thaw_split() -> None:
    """``workflows/sample.yaml`` is ``sample_per_interval.yaml`` with one layered model,
    three CV partitions, the active layer and the zone totals' error structure of the
    layered model (the extrapolation error shared, from the error models' smooth curve; the
    CV errors' correlation; the local level and the error of each zone's mean): the same
    inputs and every other setting the same."""
    main_cfg = load_config(SAMPLE_WORKFLOW)
    per = load_config(PER_INTERVAL_WORKFLOW)
    assert main_cfg.model.depth == "layered" and per.model.depth == "per_interval"
    assert main_cfg.model.anchor_cm == 30
    assert main_cfg.active_layer is not None and per.active_layer is None
    assert default.stage_list(per) != stage_list(main_cfg)
    assert "thaw" in [s.name for s in stage_list(main_cfg)]
    a, b = json.loads(main_cfg.model_dump_json()), json.loads(per.model_dump_json())
    for key in ("model", "active_layer", "output", "source"):
        a.pop(key, None), b.pop(key, None)
    # cv.repeats needs the layered model (its further partitions refit the one depth model)
    assert a["cv"].pop("repeats") == 3 and b["cv"].pop("repeats", 1) == 1
    # measured with the layered model (docs/validation.md); the per-interval baseline keeps the defaults
    assert (
        a["uncertainty"].pop("shared") == "extrapolation"
        and b["uncertainty"].pop("shared") == "constant"
    )
    assert a["uncertainty"].pop("correlation") == "cv_errors"
    assert b["uncertainty"].pop("correlation") == "residuals"
    # the level falls where profiles are, and each zone carries the error of its own mean
    # (docs/design.md, "The error of a zone's mean"); both left at their defaults in b
    assert a["uncertainty"].pop("level") == "local"
    assert b["uncertainty"].pop("level", "constant") == "constant"
    assert a["uncertainty"].pop("zone_error") == "cv"
    assert b["uncertainty"].pop("zone_error", "none") == "none"
    # the shared excess from a smooth curve: it only matters with shared: extrapolation
    assert a["prediction"]["calibration"].pop("shared_shape") == "loglinear"
    assert "shared_shape" not in b["prediction"]["calibration"]
    assert a == b
    keep = ("type", "trend", "params", "variogram", "n_neighbors", "log_transform")
    assert {k: main_cfg.model.model_dump()[k] for k in keep} == {
        k: per.model.model_dump()[k] for k in keep
    }


def test_layered_config_is_checked(tmp_path: Path) -> None:
    path = _config(tmp_path, depth="layered", layers=[0, 30, 100, 200])
    with pytest.raises(ConfigError, match=r"stocks\.depths: 0-300 reaches below"):
        load_config(path)
    path = _config(tmp_path, depth="layered", anchor_cm=40)
    with pytest.raises(ConfigError, match="anchor_cm 40 is not one of the layer breaks"):
        load_config(path)
    path = _config(tmp_path, weighting="area")
    with pytest.raises(ConfigError, match="weighting: area needs depth: layered"):
        load_config(path)
    path = _config(tmp_path)
    text = yaml.safe_load(path.read_text())
    text["cv"]["repeats"] = 3
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(ConfigError, match=r"cv\.repeats above 1 needs model\.depth: layered"):
        load_config(path)
    path = _config(tmp_path)
    text = yaml.safe_load(path.read_text())
    text["active_layer"] = {"constant": 50}
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(ConfigError, match=r"active_layer needs model\.depth: layered"):
        load_config(path)


def test_report_has_the_thawed_and_frozen_table(layered_run: Path) -> None:
    split = pd.read_csv(layered_run / "zones" / "thaw_split.csv")
    md = (layered_run / "report" / "report.md").read_text()
    assert "Table 3. SOC storage (Pg) in the seasonally thawed active layer" in md
    row = next(line for line in md.splitlines() if line.startswith("| all zones |"))
    s = split[split["zone"] == "all zones"].set_index("state")
    cells = [c.strip() for c in row.strip("|").split("|")]
    thawed = float(cells[1].split(" ")[0])
    frozen = float(cells[2].split(" ")[0])
    assert thawed == pytest.approx(s.loc["thawed", "storage_pg"], abs=0.01)
    assert frozen == pytest.approx(s.loc["frozen", "storage_pg"], abs=0.01)
    lo, hi = (float(v) for v in cells[1].split("(")[1].rstrip(")").split("–"))
    assert lo == pytest.approx(s.loc["thawed", "storage_pg_lower"], abs=0.01)
    assert hi == pytest.approx(s.loc["thawed", "storage_pg_upper"], abs=0.01)
    share = s.loc["thawed", "storage_pg"] / s.loc["total 0-300 cm", "storage_pg"]
    assert cells[4] == f"{100 * share:.0f} %"


def test_land_without_an_active_layer_value_is_in_neither_state(
    layered_run: Path, tmp_path: Path, capfd
) -> None:
    # the sample's active layer with its western half nodata: those cells' stock was
    # counted as frozen (total minus a thawed map without them); now it is a state of its own
    with rasterio.open(ALT_RASTER) as src:
        profile, alt = src.profile, src.read(1)
    alt[:, : alt.shape[1] // 2] = profile["nodata"]
    holed = tmp_path / "alt_holed.tif"
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(alt, 1)
    cfg = yaml.safe_load((layered_run.parent / "sample.yaml").read_text())
    shutil.copytree(layered_run, tmp_path / "out")
    cfg["output"] = str(tmp_path / "out")
    cfg["active_layer"] = {"path": str(holed)}
    path = tmp_path / "holed.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    capfd.readouterr()
    assert main(["run", str(path)]) == 0  # only the thaw stage and the report rerun
    said = capfd.readouterr().out
    assert f"[thaw] warning: {holed}: " in said and "has no active-layer value" in said
    split = pd.read_csv(tmp_path / "out" / "zones" / "thaw_split.csv")
    before = pd.read_csv(layered_run / "zones" / "thaw_split.csv")
    for zone, rows in split.groupby("zone"):
        s = rows.set_index("state")["storage_pg"]
        whole = s["thawed"] + s["frozen"] + s["no active-layer value"]
        assert whole == pytest.approx(s["total 0-300 cm"], rel=1e-9)
        b = before[before["zone"] == zone].set_index("state")["storage_pg"]
        assert s["total 0-300 cm"] == pytest.approx(b["total 0-300 cm"], rel=1e-12)
        assert s["thawed"] < b["thawed"] and s["frozen"] < b["frozen"]
    # by hand: the 0-300 cm mean map over the holed zone cells x 25 km2 (EPSG:6931, 5 km
    # cells; zones from the raster twin of the polygons, so edge cells differ slightly)
    with rasterio.open(ROOT / "sample_rasters" / "permafrost_zones.tif") as src:
        zone = src.read(1)
    mean = _map(tmp_path / "out", 0, 300)
    hole = (alt == profile["nodata"]) & (zone > 0) & np.isfinite(mean)
    by_hand = float(np.sum(mean[hole]) * 25e6 / 1e12)
    s = split[split["zone"] == "all zones"].set_index("state")["storage_pg"]
    assert s["no active-layer value"] == pytest.approx(by_hand, rel=0.02)
    md = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "| Zone | Thawed (active layer) | Perennially frozen | No active-layer value |" in md


def test_an_active_layer_at_a_mapped_depth_has_that_depths_range(
    layered_run: Path, tmp_path: Path
) -> None:
    """The thawed realizations follow the realized totals of the intervals around each
    cell's active-layer base: with 100 cm everywhere, the thawed storage of every zone and
    its 5-95 % range are the 0-100 cm storage and its Monte Carlo range (before, the 0-300 cm
    realizations times the mean share: ranges of another width), the frozen range that of
    0-300 cm less 0-100 cm realization by realization."""
    cfg = yaml.safe_load((layered_run.parent / "sample.yaml").read_text())
    shutil.copytree(layered_run, tmp_path / "out")
    cfg["output"] = str(tmp_path / "out")
    cfg["active_layer"] = {"constant": 100}
    path = tmp_path / "alt100.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["run", str(path)]) == 0  # only the thaw stage and the report rerun
    split = pd.read_csv(tmp_path / "out" / "zones" / "thaw_split.csv")
    summary = pd.read_csv(tmp_path / "out" / "zones" / "storage_summary.csv")
    draws = pd.read_parquet(tmp_path / "out" / "zones" / "draws.parquet")
    storage = pd.read_csv(tmp_path / "out" / "zones" / "storage.csv")
    lo, hi = cfg["uncertainty"]["range"]
    assert split["zone"].nunique() == 5
    for zone, rows in split.groupby("zone"):
        r = rows.set_index("state")
        mc = summary[(summary["zone"] == zone) & (summary["interval"] == "0-100")].iloc[0]
        mean = storage[(storage["zone"] == zone) & (storage["interval"] == "0-100")].iloc[0]
        assert r.loc["thawed", "storage_pg"] == pytest.approx(mean["storage_pg"], rel=1e-6)
        assert r.loc["thawed", "storage_pg_lower"] == pytest.approx(mc["storage_lower_pg"])
        assert r.loc["thawed", "storage_pg_upper"] == pytest.approx(mc["storage_upper_pg"])
        d = draws[draws["zone"] == zone].pivot_table(
            index="realization", columns="interval", values="storage_pg"
        )
        frozen = d["0-300"] - d["0-100"]
        assert r.loc["frozen", "storage_pg_lower"] == pytest.approx(np.percentile(frozen, lo))
        assert r.loc["frozen", "storage_pg_upper"] == pytest.approx(np.percentile(frozen, hi))


def test_overlapping_zone_polygons_are_noted_in_the_manifest_and_report(
    layered_run: Path, tmp_path: Path
) -> None:
    # the isolated zone grown by 20 km over its neighbours: the overlap counts twice in the
    # all-zones total, which the console said and the report now says too
    zones = gpd.read_file(ROOT / "sample_rasters" / "permafrost_zones.gpkg")
    grown = zones.copy()
    grown.loc[grown["zone_code"] == 4, "geometry"] = grown.loc[
        grown["zone_code"] == 4, "geometry"
    ].buffer(20_000)
    path = tmp_path / "zones.gpkg"
    grown.to_file(path)
    cfg = yaml.safe_load((layered_run.parent / "sample.yaml").read_text())
    shutil.copytree(layered_run, tmp_path / "out")
    cfg["output"] = str(tmp_path / "out")
    cfg["zones"]["path"] = str(path)
    config = tmp_path / "grown.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["run", str(config)]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    overlap = manifest["stages"]["zones"]["overlap_cells"]
    assert overlap > 100
    md = (tmp_path / "out" / "report" / "report.md").read_text()
    assert f"Zone polygons of different zones overlap in {overlap:,} cells" in md
    # the sample's own zones do not overlap: no note
    before = json.loads((layered_run / "manifest.json").read_text())
    assert "overlap_cells" not in before["stages"]["zones"]


def test_an_unreadable_active_layer_fails_before_any_stage(tmp_path: Path, capfd) -> None:
    # the thaw stage reads it last; the preflight (and validate) read its header first
    bad = tmp_path / "alt.tif"
    bad.write_text("not a raster")
    path = _config(tmp_path, depth="layered")
    text = yaml.safe_load(path.read_text())
    text["active_layer"] = {"path": str(bad)}
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    capfd.readouterr()
    for command in ("validate", "run"):
        code, err = run_cli([command, str(path)]), capfd.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and str(bad) in err and "cannot read raster" in err
    assert not (tmp_path / "out").exists()


def _alt_config(tmp_path: Path, scale: float, fill: float | None = None) -> tuple[Path, Path]:
    """The layered workflow with the sample's active layer times ``scale``, its nodata
    cells (the sea) set to ``fill`` and the file's nodata tag dropped when ``fill`` is
    given (a nodata value the file does not declare)."""
    with rasterio.open(ALT_RASTER) as src:
        profile, alt = src.profile, src.read(1)
    hole = alt == profile["nodata"]
    alt = np.where(hole, alt, alt * scale).astype("float32")
    if fill is not None:
        alt[hole] = fill
        profile["nodata"] = None
    raster = tmp_path / "alt.tif"
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(alt, 1)
    path = _config(tmp_path, depth="layered")
    text = yaml.safe_load(path.read_text())
    text["active_layer"] = {"path": str(raster)}
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    return path, raster


def test_an_active_layer_in_metres_is_warned_of(tmp_path: Path, capsys) -> None:
    path, raster = _alt_config(tmp_path, 0.01)  # the sample's 20-300 cm as 0.2-3 m
    code, out, _ = run_cli_output(["validate", path], capsys)
    assert code == 0
    (line,) = [x for x in out.splitlines() if x.strip().startswith("warning:")]
    assert f"{raster}: the median active-layer thickness is 0.8" in line and "in m" in line
    # a constant: 0 is a choice (frozen to the surface), 0.8 a slip
    text = yaml.safe_load(path.read_text())
    for constant, warned in ((0.8, True), (0.0, False), (80.0, False)):
        text["active_layer"] = {"constant": constant}
        path.write_text(yaml.safe_dump(text, sort_keys=False))
        code, out, _ = run_cli_output(["validate", path], capsys)
        assert code == 0 and ("active_layer.constant: 0.8 cm" in out) == warned, out
    assert not (tmp_path / "out").exists()


def test_an_undeclared_nodata_in_the_active_layer_fails_before_any_stage(
    tmp_path: Path, capsys
) -> None:
    # -9999 read as a thickness would clip to 0: those cells all frozen, without a word
    path, raster = _alt_config(tmp_path, 1.0, fill=-9999.0)
    for command in ("validate", "run"):
        code, _, err = run_cli_output([command, path], capsys)
        assert code == 2, err
        (line,) = err.strip().splitlines()
        assert line.endswith("no thickness is below 0 (a nodata value the file does not declare?)")
        assert f"{raster}: active-layer thickness down to -9999 cm in " in line
    assert not (tmp_path / "out").exists()


def test_the_aoa_of_a_layered_model_with_a_linear_trend_weighs_covariates_equally():
    # a trend without feature importances (a linear model): equal weights, not a crash
    rng = np.random.default_rng(0)
    n = 60
    sites = pd.DataFrame(
        {"x": rng.uniform(0, 1e5, n), "y": rng.uniform(0, 1e5, n), "a": rng.normal(size=n)}
    )
    rows = pd.concat(
        [sites.assign(top_cm=t, bottom_cm=b, pid=np.arange(n)) for t, b in ((0, 30), (30, 100))]
    )
    stock = np.exp(1.0 + 0.3 * rows["a"].to_numpy()) * (rows["bottom_cm"] - rows["top_cm"]) / 30
    model = LayeredDepthModel(trend=LinearRegression(), breaks=(0, 30, 100), krige=False)
    model.fit(rows.drop(columns="pid"), stock, groups=rows["pid"])
    assert aoa_weights(model) is None
    area = AreaOfApplicability().fit(sites, weights=aoa_weights(model))
    assert area.feature_weights_ == {"a": 1.0}


def test_weighting_to_the_area_reaches_the_level_and_the_shape(
    layered_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``model.weighting: area``: each profile's weight (mean 1) reaches the level's forest
    (one row per profile) and the shape's (one row per layer, the profile's weight)."""
    path = _config(tmp_path, depth="layered", weighting="area")
    code, out, _ = run_cli_output(["fit", path], capsys)
    assert code == 0, out
    assert "[fit] profiles weighted to the mapped area (power 0.5)" in out
    model = joblib.load(tmp_path / "out" / "models" / "layered_model.joblib")
    level_w = np.asarray(model.level_.forest_.sample_weight_)
    shape_w = np.asarray(model.trend_.forest_.sample_weight_)
    assert np.all(level_w > 0) and level_w.std() > 0.1
    assert level_w.mean() == pytest.approx(1.0, rel=0.1)  # the profiles that cover 0-30 cm
    assert len(shape_w) > len(level_w)
    assert np.all(np.isin(np.unique(shape_w), level_w))
    plain = joblib.load(layered_run / "models" / "layered_model.joblib")  # not weighted
    assert plain.level_.forest_.sample_weight_ is None


def test_fit_weights_are_larger_where_the_profiles_are_sparse() -> None:
    """Profiles four times as dense in the warm half of a covariate as in the cold half, the
    land even over both: the cold profiles weigh more, by less than the true 4 (the
    classifier's leaves smooth the density ratio: 2.6 measured); mean 1."""
    rng = np.random.default_rng(3)
    maat = np.concatenate([rng.uniform(-15, -5, 100), rng.uniform(-5, 5, 400)])
    sites = pd.DataFrame(
        {"profile_id": [f"P{i}" for i in range(500)], "maat": maat, "twi": rng.normal(size=500)}
    )
    land = pd.DataFrame({"maat": rng.uniform(-15, 5, 4000), "twi": rng.normal(size=4000)})
    w = fit_weights(sites, land, ["maat", "twi"], [])
    assert w.name == FIT_WEIGHT and list(w.index) == list(sites["profile_id"])
    assert w.mean() == pytest.approx(1.0)
    ratio = w[maat < -6].median() / w[maat > -4].median()
    assert 2.0 < ratio < 4.5, ratio
    # model.weighting_power flattens them: the same ratio to that power
    half = fit_weights(sites, land, ["maat", "twi"], [], power=0.5)
    assert half.mean() == pytest.approx(1.0)
    assert half[maat < -6].median() / half[maat > -4].median() == pytest.approx(
        np.sqrt(ratio), rel=0.02
    )


def test_cv_repeats_feed_the_regional_error_and_the_error_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cv.repeats: 2`` with ``prediction.calibration.partitions: all`` and ``min_per_bin:
    100`` (one run for three checks: :func:`_check_regional_error`,
    :func:`_check_error_models`, :func:`_check_too_small_to_cross_fit`); read by a config
    without the repeats, the folder's second partition is not used."""
    path = _config(tmp_path, depth="layered")
    text = yaml.safe_load(path.read_text())
    text["cv"]["repeats"] = 2
    text["prediction"]["calibration"] = {
        "partitions": "all",
        "weighting": "area",
        "min_per_bin": 100,
    }
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    code, out, _ = run_cli_output(["run", path], capsys)
    assert code == 0, out
    run = tmp_path / "out"
    _check_regional_error(run, out)
    _check_error_models(run)
    _check_too_small_to_cross_fit(run, out)
    # the second partition counts only where the config asks for it: the same folder read
    # with cv.repeats: 1 (a later run of another config) pools the first partition alone
    config = load_config(path)
    labels = ["0-30", "0-100", "0-300"]
    models = {k: io.read_model(run / "models" / k / "model.joblib") for k in labels}
    said: dict[int, list[str]] = {1: [], 2: []}
    for repeats, lines in said.items():
        cfg = config.model_copy(update={"cv": config.cv.model_copy(update={"repeats": repeats})})
        shared = shared_error(StageContext(config=cfg, out=run, echo=lines.append), models, labels)
        assert shared is not None
    assert any("averaged over 2 partitions" in x for x in said[2])
    assert not any("averaged over" in x for x in said[1])
    assert said[1] != said[2]


def _check_regional_error(run: Path, out: str) -> None:
    """A second kNNDM partition's out-of-fold predictions are written per interval
    (``cv_repeats.csv``); the CV metrics pool both partitions' predictions, and the zone
    totals' regional error is the root of the mean of the two partitions' regional
    variances, each as ``regional_error_sd`` pools it."""
    assert "[uncertainty] regional CV error averaged over 2 partitions" in out
    labels = ["0-30", "0-100", "0-300"]
    first = {k: pd.read_csv(run / "models" / k / "cv_predictions.csv") for k in labels}
    second = {k: pd.read_csv(run / "models" / k / "cv_repeats.csv") for k in labels}
    for k in labels:
        rep = second[k]
        assert set(rep["repeat"]) == {1}
        assert list(rep["profile_id"]) == list(first[k]["profile_id"])
        assert np.isfinite(rep["predicted"]).all() and set(rep["fold"]) == set(range(5))
        # another partition: the held-out sites are grouped differently
        assert (rep["fold"].to_numpy() != first[k]["fold"].to_numpy()).any()
        # the CV metrics pool both partitions: every profile twice, n still the profiles
        metrics = pd.read_csv(run / "models" / k / "cv_metrics.csv").iloc[0]
        assert metrics["partitions"] == 2 and metrics["n"] == len(rep)
        err2 = [(t["predicted"] - t["observed"]).to_numpy() ** 2 for t in (first[k], rep)]
        w = first[k]["weight"].to_numpy()
        assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean(np.concatenate(err2))))
        area = [np.average(e, weights=w) for e in err2]
        assert metrics["rmse_area"] == pytest.approx(np.sqrt(np.mean(area)))
        single = np.sqrt(np.mean(err2[0]))
        assert abs(metrics["rmse"] - single) > 1e-6  # not the first partition's alone
        inside = [
            (t["observed"] >= t["lower"]) & (t["observed"] <= t["upper"]) for t in (first[k], rep)
        ]
        assert metrics["picp"] == pytest.approx(np.mean(np.concatenate(inside)))
        assert metrics["rmse_lower"] < metrics["rmse"] < metrics["rmse_upper"]

    def pooled(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
        errors, groups = {}, {}
        for k, t in tables.items():
            with np.errstate(divide="ignore", invalid="ignore"):
                e = np.log(t["predicted"].to_numpy(float)) - np.log(t["observed"].to_numpy(float))
            errors[k] = e
            groups[k] = np.where(np.isfinite(e), t["fold"].to_numpy(int), -1)
        return regional_error_sd(errors, groups)

    md = (run / "report" / "report.md").read_text()
    assert "Pooled over 2 partitions of the profiles into folds (cv.repeats)" in md
    a, b = pooled(first), pooled(second)
    for k in labels:
        expected = np.sqrt((a[k] ** 2 + b[k] ** 2) / 2)
        line = next(x for x in out.splitlines() if x.startswith(f"[uncertainty] {k} cm:"))
        reported = float(line.split("regional CV error ")[1].rstrip(")"))
        assert reported == pytest.approx(expected, rel=2e-3), (k, reported, a[k], b[k])


def _check_error_models(run: Path) -> None:
    """``prediction.calibration.partitions: all`` with ``cv.repeats: 2``: each interval's
    error model is the one :func:`fit_error_model` gives on both partitions' CV errors
    (``cv_predictions.csv`` then ``cv_repeats.csv``, whose rows carry their log moments and
    their DI to their own fold's training data), each profile with its weight to the area."""
    for k in ["0-30", "0-100", "0-300"]:
        first = pd.read_csv(run / "models" / k / "cv_predictions.csv")
        rep = pd.read_csv(run / "models" / k / "cv_repeats.csv")
        assert list(rep["profile_id"]) == list(first["profile_id"])
        # the second partition's DI is to the training profiles of its own fold
        assert np.isfinite(rep["di"]).all() and np.isfinite(rep["xd"]).all()
        assert not np.allclose(rep["di"], first["di"])
        cols = ["fold", "observed", "mu", "var", "di", "xd"]
        both = pd.concat([first[cols], rep[cols]], ignore_index=True)
        errors = np.where(
            both["fold"] >= 0, both["mu"] - np.log(both["observed"].to_numpy(float)), np.nan
        )
        em = joblib.load(run / "models" / k / "error_model.joblib")
        expect = fit_error_model(
            errors,
            both["var"],
            both["di"],
            xd=both["xd"],
            observed_var=observed_variance(both["observed"], log=True),
            range_slope=0.5 * em.range_linear,
            weights=np.tile(first["weight"].to_numpy(float), 2),
            min_per_bin=100,
        )
        assert em.n == expect.n == np.isfinite(errors).sum() > len(first)
        np.testing.assert_allclose(em.knots, expect.knots, rtol=1e-9)
        np.testing.assert_allclose(em.values, expect.values, rtol=1e-9)
        assert em.slope == pytest.approx(expect.slope, rel=1e-9, abs=1e-12)
        assert em.range_coef == pytest.approx(expect.range_coef, rel=1e-9, abs=1e-12)


def _check_too_small_to_cross_fit(run: Path, out: str) -> None:
    """0-300 cm has 102 profiles: with ``calibration.min_per_bin: 100`` its error model is
    fitted but no fold of the first partition (the one the reliability is cross-fitted
    on) leaves 100 points to cross-fit one, so the reliability tables of that interval are
    not written (they were written empty and the report stopped on them); the run
    completes and the shallower intervals keep theirs."""
    models = run / "models"
    assert len(pd.read_csv(models / "0-300" / "cv_predictions.csv")) == 102
    assert (models / "0-300" / "error_model.joblib").is_file()
    assert not (models / "0-300" / "reliability.csv").exists()
    assert not (models / "0-300" / "coverage_by_di.csv").exists()
    assert "[fit] 0-300 cm: too few CV points to cross-fit the error model" in out
    for k in ["0-30", "0-100"]:
        rel = pd.read_csv(models / k / "reliability.csv")
        assert rel["observed"].between(0, 1).all() and len(rel) == 6
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["report"]["status"] == "complete"
    assert "models/0-300/reliability.csv" not in manifest["stages"]["fit"]["outputs"]
    # the report's reliability figure is built from the intervals that have a table
    assert _reliability_caption_span(run, ["0-30", "0-100"]) in _caption(run)


def _caption(out: Path) -> str:
    """The report's sentence on the reliability figure."""
    md = (out / "report" / "report.md").read_text()
    assert (out / "report" / "figures" / "calibration.png").is_file()
    return next(line for line in md.splitlines() if "Reliability of the per-cell" in line)


def _reliability_caption_span(out: Path, labels: list[str]) -> str:
    """'held A-B % of the held-out profiles': the 90 % row of each interval's table."""
    held = []
    for k in labels:
        rel = pd.read_csv(out / "models" / k / "reliability.csv")
        held.append(
            round(100 * float(rel.loc[np.isclose(rel["nominal"], 0.9), "observed"].iloc[0]))
        )
    lo, hi = min(held), max(held)
    return f"held {lo} % " if lo == hi else f"held {lo}\u2013{hi} % "


def test_report_shows_the_cross_fitted_reliability(layered_run: Path) -> None:
    """Issue 11, item 6: the report's reliability figure, whose caption says what the interval
    means and how often the cross-fitted 90 % intervals held the held-out profiles, the
    figure the fit stage's reliability tables give for every interval."""
    caption = _caption(layered_run)
    assert "A 90% interval is meant to hold the true value of a cell 90% of the time" in caption
    assert _reliability_caption_span(layered_run, ["0-30", "0-100", "0-300"]) in caption
    for k in ["0-30", "0-100", "0-300"]:
        by_di = pd.read_csv(layered_run / "models" / k / "coverage_by_di.csv")
        assert len(by_di) == 10 and by_di["observed"].between(0, 1).all()
        assert (np.diff(by_di["di_low"]) >= 0).all()


def test_report_names_the_run_and_says_which_intervals_its_cv_table_scores(
    layered_run: Path,
) -> None:
    """The report names its run (a moved folder resumes with the report unchanged, which
    then named the old folder), its CV table says its PICP is of the model's own intervals
    where the maps' are calibrated, and the share of the map beyond the cross-validated
    DIs is not rounded to "0 %"."""
    md = (layered_run / "report" / "report.md").read_text()
    manifest = json.loads((layered_run / "manifest.json").read_text())
    assert md.splitlines()[2].startswith(f"Run {manifest['run_id']}, created ")
    assert str(layered_run) not in md.splitlines()[2]
    assert "(the model's own, before the calibration of the maps' intervals" in md
    shares = []
    for k in ["0-30", "0-100", "0-300"]:
        meta = json.loads((layered_run / "models" / k / "metadata.json").read_text())
        shares.append(100 * meta["calibration"]["share_beyond_di_max"])
    said = re.search(r"in the ([<\d.–]+) % of the map", md).group(1)
    if min(shares) >= 0.05:
        assert float(said.split("–")[0]) == pytest.approx(
            min(shares), abs=0.5 if min(shares) >= 1 else 0.05
        )


def test_the_extrapolation_error_shared_by_every_cell(
    layered_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``uncertainty.shared: extrapolation`` and ``correlation: cv_errors``: the run's draws
    are those of :func:`zone_total_draws` with the residual level as the constant shared
    error and, per interval, the ``ln``-scale calibrated error above the error model's at
    the training profiles' median DI, computed here by hand from the run's mean, median and
    std maps, the cells' own errors correlated as a variogram of the CV errors standardised
    by hand (every partition's), and each zone's totals scaled by one error of the zone's
    mean (``zone_error: cv``), the standard error of its profiles' mean CV error, found
    here by point in polygon."""
    out = tmp_path / "out"
    shutil.copytree(layered_run, out)
    cfg = yaml.safe_load((layered_run.parent / "sample.yaml").read_text())
    cfg["output"] = str(out)
    cfg["uncertainty"]["shared"] = "extrapolation"
    cfg["uncertainty"]["correlation"] = "cv_errors"
    cfg["uncertainty"]["zone_error"] = "cv"
    path = tmp_path / "extrapolation.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, text, _ = run_cli_output(["run", path], capsys)
    assert code == 0, text
    assert "[fit] running" not in text and "[predict] running" not in text  # only the totals
    labels = ["0-30", "0-100", "0-300"]
    config = load_config(path)
    ctx = StageContext(config=config, out=config.output, echo=lambda _m: None)
    run = ctx.folder
    means, stds, extra, level, variograms = {}, {}, {}, {}, {}
    training = io.read_table(run.training).drop_duplicates("profile_id")
    for k in labels:
        top, bottom = (int(v) for v in k.split("-"))
        m, med, s = (
            io.open_raster(run.map_file(top, bottom, stat), chunks=None)
            for stat in ("mean", "median", "std")
        )
        means[k], stds[k] = m, s
        em = joblib.load(run.error_model_file(k))
        di = joblib.load(run.aoa_file(k)).train_di_
        di_in = float(np.median(di[np.isfinite(di)]))
        mv, medv, sv = (np.asarray(a, dtype=float).squeeze() for a in (m, med, s))
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log(1.0 + (sv / mv) ** 2)
            s2 = np.maximum(2.0 * np.log(mv / medv), 0.0)
            x2 = v - em.variance(s2, np.full(s2.shape, di_in))
        x = np.where(np.isfinite(x2), np.sqrt(np.maximum(x2, 0.0)), 0.0)
        assert (x > 0).mean() > 0.3  # the term is there in much of the map
        extra[k] = m.copy(data=x.astype("float32"))
        model = io.read_model(run.model_file(k))
        level[k] = residual_mean_sd(model)
        assert f"[uncertainty] {k} cm: error shared by every cell: {level[k]:.3g}" in text
        # the CV errors over their calibrated sd, every partition (same profiles, same order)
        tables = [pd.read_csv(run.cv_predictions(k))]
        if run.cv_repeats(k).is_file() and config.cv.repeats > 1:
            more = pd.read_csv(run.cv_repeats(k))
            tables += [t.reset_index(drop=True) for _, t in more.groupby("repeat")]
        z = []
        for t in tables:
            with np.errstate(divide="ignore", invalid="ignore"):
                e = t["mu"].to_numpy() - np.log(t["observed"].to_numpy(float))
            sd = np.sqrt(em.variance(t["var"].to_numpy(), t["di"].to_numpy(), t["xd"].to_numpy()))
            z.append(np.where(t["fold"] >= 0, e / sd, np.nan))
        xy = training.set_index("profile_id").loc[tables[0]["profile_id"], ["x", "y"]]
        variograms[k] = cv_error_variogram(xy.to_numpy(float), z)
        assert variograms[k] != residual_variogram(model)
        share = variograms[k].psill / variograms[k].sill
        said = (
            f"structured share {share:.2f}, range {variograms[k].range / 1000:.3g} km"
            if share >= 0.005
            else "no spatial structure (a pure nugget)"
        )
        assert said in text
    grid = run_grid(ctx)
    expect = zone_total_draws(
        means, stds, zone_layout(ctx), grid, variograms,
        n_realizations=config.uncertainty.n_realizations, seed=config.seed,
        distribution="lognormal", unit=config.zones.unit, common_sd=level,
        extrapolation_sd=extra,
    )  # fmt: skip
    # each zone's error of its mean: the standard error of its profiles' mean CV error,
    # weighted to the mapped area as the CV is (cv.weighting: area), the zone of a profile
    # found here by point in polygon
    zones = gpd.read_file(config.zones.path)
    points = gpd.GeoDataFrame(
        training, geometry=gpd.points_from_xy(training["lon"], training["lat"]), crs="EPSG:4326"
    ).to_crs(zones.crs)
    code = gpd.sjoin(points, zones[["zone_code", "geometry"]], how="left").drop_duplicates(
        "profile_id"
    )
    zone_of = code.set_index("profile_id")["zone_code"]
    se2: dict[str, list[float]] = {}
    for k in labels:
        t = pd.read_csv(run.cv_predictions(k))
        e = t["mu"] - np.log(t["observed"])  # the ln-scale error (not the mean's)
        z = zone_of.loc[t["profile_id"]].to_numpy()
        w = t["weight"].to_numpy(float)
        for c, name in config.zones.names.items():
            held = (z == c) & (t["fold"].to_numpy() >= 0)
            mine, wz, n = e[held].to_numpy(), w[held], int(held.sum())
            if not n:
                continue
            v1, v2 = wz.sum(), np.sum(wz**2)
            if n >= 10:  # the variance with reliability weights
                dev = mine - np.average(mine, weights=wz)
                var = np.sum(wz * dev**2) / (v1 - v2 / v1)
            else:  # the interval's spread
                var = e[t["fold"] >= 0].std(ddof=1) ** 2
            se2.setdefault(name, []).append(var * v2 / v1**2)  # over Kish's effective size
    sd = {name: float(np.sqrt(np.mean(v))) for name, v in se2.items()}
    assert len(sd) == 4 and all(0.01 < v < 0.2 for v in sd.values()), sd
    for name, v in sd.items():
        said = float(text.split(f"[uncertainty] {name}: error of the zone's mean ")[1].split()[0])
        assert said == pytest.approx(v, rel=5e-3), name  # printed to 3 digits
    expect = add_zone_errors(expect, sd, seed=config.seed)
    got = io.read_table(run.draws)
    before = io.read_table(layered_run / "zones" / run.draws.name)
    col = "storage_pg"
    assert len(got) == len(expect)
    np.testing.assert_allclose(got[col], expect[col], rtol=1e-6)
    # not the constant shared error's draws: the deep totals' spread grows
    spread = {
        name: t[t["zone"] == "all zones"].groupby("interval")[col].std()
        for name, t in (("got", got), ("before", before))
    }
    assert not np.allclose(got[col], before[col])
    assert spread["got"]["0-300"] != pytest.approx(spread["before"]["0-300"], rel=1e-3)
