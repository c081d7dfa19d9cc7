"""Geographic grids: distances in the working plane, kriging at 70° N, Monte Carlo spacing,
config distances with units (docs/kriging.md, docs/uncertainty.md, docs/config.md)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pyproj
import pytest
import rasterio
import yaml

from mapping.cli import main
from mapping.config import load_config
from mapping.exceptions import ConfigError
from mapping.grid import Grid
from mapping.models import Variogram
from mapping.models.kriging import krige_residuals
from mapping.run import run_stages, stage_list
from mapping.run.stages import grid_and_stack, prediction_covariates, prediction_sample

ROOT = Path(__file__).resolve().parents[1]
GEOD = pyproj.Geod(ellps="WGS84")


# ------------------------------------------------------------------ the working plane
def test_projected_grid_works_in_its_own_crs():
    grid = Grid.from_bounds((0, 0, 10_000, 10_000), 1000.0, "EPSG:6931")
    x, y = np.array([500.0, 1500.0]), np.array([9500.0, 8500.0])
    assert grid.working_crs == grid.crs
    wx, wy = grid.to_working(x, y)
    assert wx is x and wy is y  # unchanged, not recomputed
    assert grid.cell_spacing_m() == (1000.0, 1000.0)


@pytest.mark.parametrize("far_km", [100, 500, 1000])
def test_working_distances_match_the_ellipsoid_at_70n(far_km):
    # 20°E..40°E, 65°N..75°N: the plane is centred at 30°E 70°N
    grid = Grid.from_bounds((20, 65, 40, 75), 0.1, "EPSG:4326")
    rng = np.random.default_rng(3)
    az = rng.uniform(0, 360, 20)
    lon, lat, _ = GEOD.fwd(np.full(20, 30.0), np.full(20, 70.0), az, np.full(20, far_km * 1e3))
    lon2, lat2, _ = GEOD.fwd(lon, lat, rng.uniform(0, 360, 20), np.full(20, 50e3))
    x, y = grid.to_working(np.r_[lon, lon2], np.r_[lat, lat2])
    planar = np.hypot(x[:20] - x[20:], y[:20] - y[20:])
    # 50 km between points up to far_km from the centre: LAEA scale k = 1/cos(c/2) and 1/k
    c = far_km * 1e3 / 6_371_000
    tol = 1 / np.cos(c / 2) - 1 + 1e-4
    assert np.all(np.abs(planar / 50e3 - 1) <= tol)
    if far_km == 1000:
        assert tol < 0.004  # the bound stated in Grid.working_crs


def _ok_weights(d_train: np.ndarray, d_target: np.ndarray, v: Variogram) -> np.ndarray:
    n = len(d_target)
    a = np.ones((n + 1, n + 1))
    a[:n, :n] = v.covariance(d_train)
    a[n, n] = 0.0
    b = np.r_[v.covariance(d_target), 1.0]
    return np.linalg.solve(a, b)[:n]


def test_kriging_at_70n_uses_true_distances_not_degrees():
    # One residual 1° east (~38 km at 70° N), one 1° north (~111 km) of the target: in
    # degrees they are equally far and kriging averages them; on the ground the eastern one
    # is three times closer and dominates.
    grid = Grid.from_bounds((20, 65, 40, 75), 0.1, "EPSG:4326")
    lon, lat = np.array([31.0, 30.0]), np.array([70.0, 71.0])
    z = np.array([0.0, 10.0])
    v = Variogram("exponential", psill=1.0, range=40_000.0, nugget=0.0)

    # hand calculation with geodesic distances on the WGS 84 ellipsoid
    _, _, d_ab = GEOD.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, d_t = GEOD.inv([30.0, 30.0], [70.0, 70.0], lon, lat)
    assert 37e3 < d_t[0] < 39e3 and 111e3 < d_t[1] < 112.5e3
    w = _ok_weights(np.array([[0.0, d_ab], [d_ab, 0.0]]), np.asarray(d_t), v)
    expected = float(w @ z)

    wx, wy = grid.to_working(lon, lat)
    tx, ty = grid.to_working(np.array([30.0]), np.array([70.0]))
    pred, _ = krige_residuals(np.c_[wx, wy], z, v, np.c_[tx, ty], n_neighbors=None)
    assert pred[0] == pytest.approx(expected, abs=0.01)
    assert pred[0] < 3.5  # the near eastern residual dominates (hand: 3.29)

    # the same kriging in degrees (range scaled to degrees of latitude) averages them
    v_deg = Variogram("exponential", psill=1.0, range=40_000.0 / 111_000.0, nugget=0.0)
    deg, _ = krige_residuals(np.c_[lon, lat], z, v_deg, np.array([[30.0, 70.0]]), n_neighbors=None)
    assert deg[0] == pytest.approx(5.0, abs=1e-9)
    assert abs(deg[0] - pred[0]) > 1.5


def test_cell_spacing_at_the_centre_latitude():
    grid = Grid.from_bounds((20, 68, 40, 72), 0.5, "EPSG:4326")
    dy, dx = grid.cell_spacing_m()
    # authalic radius of WGS 84: 6371007.2 m
    r = 6_371_007.2
    assert dy == pytest.approx(r * np.radians(0.5), rel=1e-6)
    assert dx == pytest.approx(r * np.cos(np.radians(70.0)) * np.radians(0.5), rel=1e-6)


# ------------------------------------------------------------------ config distances
def _write(tmp: Path, variogram: dict, extra: dict | None = None) -> Path:
    cfg = {
        "output": str(tmp / "out"),
        "profiles": {"path": str(ROOT / "sample_rasters" / "profiles.csv"), "crs": "EPSG:4326"},
        "stocks": {"depths": ["0-30"]},
        "grid": {"like": str(ROOT / "sample_rasters" / "precipitation.tif")},  # EPSG:4326
        "covariates": [
            {"name": "precipitation", "path": str(ROOT / "sample_rasters" / "precipitation.tif")}
        ],
        "model": {"variogram": variogram},
        **(extra or {}),
    }
    path = tmp / "geo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("written", "metres"),
    [("300 km", 300_000.0), ("300000 m", 300_000.0), ("2.5km", 2500.0), (300000, 300_000.0)],
)
def test_distances_with_units(tmp_path, written, metres):
    cfg = load_config(
        _write(tmp_path, {"cutoff": written}, {"cv": {"method": "block", "block_size": written}})
    )
    assert cfg.model.variogram.cutoff == metres
    assert cfg.cv.block_size == metres


def test_a_distance_with_an_unknown_unit_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.variogram\.cutoff: distance '300 miles' must"):
        load_config(_write(tmp_path, {"cutoff": "300 miles"}))


def test_bare_numbers_are_metres_on_projected_grids_only(tmp_path):
    cfg = load_config(_write(tmp_path, {"cutoff": 300000}))
    cfg.check_distances(geographic=False)
    with pytest.raises(ConfigError, match=r"model\.variogram\.cutoff: .* e\.g\. cutoff: 300 km$"):
        cfg.check_distances(geographic=True)
    load_config(_write(tmp_path, {"cutoff": "300 km"})).check_distances(geographic=True)


def test_validate_refuses_a_bare_distance_on_a_geographic_grid(tmp_path, capfd):
    path = _write(tmp_path, {"cutoff": 300000})
    capfd.readouterr()
    try:
        code = main(["validate", str(path)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capfd.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "model.variogram.cutoff" in err and "cutoff: 300 km" in err


def test_a_circumpolar_grid_is_measured_on_a_polar_plane():
    grid = Grid.from_bounds((-180, 45, 180, 90), 1.0, "EPSG:4326")
    # across the pole: 0°E 80°N to 180°E 80°N, ~2230 km on the ellipsoid
    x, y = grid.to_working(np.array([0.0, 180.0]), np.array([80.0, 80.0]))
    _, _, d = GEOD.inv(0.0, 80.0, 180.0, 80.0)
    assert np.hypot(x[1] - x[0], y[1] - y[0]) == pytest.approx(d, rel=0.01)


# ------------------------------------------------------------------ the fit's cell sample
def test_feature_space_cells_on_a_geographic_grid(tmp_path):
    # The cells kNNDM and the error model learn the prediction area from: located in the
    # grid's own CRS (degrees), carried in the working plane (metres) like the profiles.
    config = load_config(_write(tmp_path, {"cutoff": "300 km"}))
    ctx = run_stages(config, stage_list(config), until="training", echo=lambda _: None)
    grid, _ = grid_and_stack(ctx)
    assert grid.crs.is_geographic
    cells = prediction_covariates(ctx, n=500)
    assert len(cells) == 500
    with rasterio.open(ROOT / "sample_rasters" / "precipitation.tif") as src:
        values = src.read(1)
        back = pyproj.Transformer.from_crs(grid.working_crs, grid.crs, always_xy=True)
        lon, lat = back.transform(cells["x"].to_numpy(), cells["y"].to_numpy())
        cols, rows = ~src.transform @ (lon, lat)
    rows, cols = np.floor(rows).astype(int), np.floor(cols).astype(int)
    np.testing.assert_allclose(cells["precipitation"], values[rows, cols], rtol=1e-6)
    # the same cells as the geographic-space sample, in metres
    np.testing.assert_allclose(cells[["x", "y"]].to_numpy(), prediction_sample(ctx, n=500))


# ------------------------------------------------------------------ the layered model
def test_layered_model_runs_on_a_geographic_grid(tmp_path):
    # The layered model's profiles and cells are located in the working plane (metres),
    # like the per-interval models': recorded so, its maps predict on a lon/lat grid.
    extra = {"stocks": {"depths": ["0-30", "0-100"]}, "scheduler": "threads"}
    path = _write(tmp_path, {"cutoff": "300 km"}, extra)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"].update(
        depth="layered", layers=[0, 30, 100], params={"n_estimators": 20}, log_transform=True
    )
    cfg["covariates"].append(
        {"name": "elevation", "path": str(ROOT / "sample_rasters" / "elevation.tif")}
    )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    config = load_config(path)
    ctx = run_stages(config, stage_list(config), until="predict", echo=lambda _: None)
    grid, _ = grid_and_stack(ctx)
    assert grid.crs.is_geographic
    maps = {}
    for label in ("0_30", "0_100"):
        with rasterio.open(tmp_path / "out" / "maps" / f"soc_{label}cm_mean.tif") as src:
            assert src.crs.to_epsg() == 4326
            maps[label] = src.read(1, masked=True)
    ok = ~np.ma.getmaskarray(maps["0_30"])
    assert ok.sum() > 1000 and np.all(np.isfinite(maps["0_100"][ok]))
    # the model's x, y are metres of the working plane, not the grid's degrees
    model = joblib.load(tmp_path / "out" / "models" / "layered_model.joblib")
    assert pyproj.CRS(model.coordinate_crs_) == grid.working_crs
    assert not pyproj.CRS(model.coordinate_crs_).is_geographic


def test_working_coordinates_map_back_to_the_grid_cells() -> None:
    """``Grid.from_working`` inverts ``to_working``: a profile's working-plane coordinates
    (what the training table holds) find its cell again on a lon/lat grid (the zone of a
    profile, ``uncertainty.zone_error``), and pass through unchanged on a projected one."""
    geo = Grid.from_bounds((20.0, 60.0, 60.0, 80.0), 0.25, "EPSG:4326")
    rng = np.random.default_rng(5)
    lon, lat = rng.uniform(20, 60, 200), rng.uniform(60, 80, 200)
    wx, wy = geo.to_working(lon, lat)
    assert np.abs(wx).max() > 1e5  # metres on the plane, not degrees
    bx, by = geo.from_working(wx, wy)
    np.testing.assert_allclose(bx, lon, atol=1e-9)
    np.testing.assert_allclose(by, lat, atol=1e-9)
    rows, cols = geo.rowcol(bx, by)
    np.testing.assert_array_equal(rows, np.floor((80.0 - lat) / 0.25))
    np.testing.assert_array_equal(cols, np.floor((lon - 20.0) / 0.25))
    proj = Grid.from_bounds((0.0, 0.0, 1000.0, 1000.0), 10.0, "EPSG:6931")
    x = np.array([5.0, 995.0])
    np.testing.assert_array_equal(proj.from_working(x, x)[0], x)


def test_a_grid_too_tall_for_the_monte_carlo_fails_before_the_first_stage(tmp_path, capfd):
    # the sample's precipitation grid (EPSG:4326, 48-80 N): one cell width at 64 N is 60 %
    # off at 80 N; the uncertainty stage refused it after the fit, now the checks do
    path = _write(tmp_path, {"cutoff": "300 km"})
    cfg = yaml.safe_load(path.read_text())
    cfg["zones"] = {"path": str(ROOT / "sample_rasters" / "permafrost_zones.gpkg"),
                    "field": "zone_code"}  # fmt: skip
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    capfd.readouterr()
    for command in (["validate"], ["run"]):
        try:
            code = main([*command, str(path)])
        except SystemExit as exc:
            code = int(exc.code or 0)
        err = capfd.readouterr().err.strip()
        assert code == 2, err
        (line,) = err.splitlines()
        assert f"{path}: grid: EPSG:4326" in line
        assert "off by up to 60 % (at most 50 %)" in line and line.endswith(
            "(the uncertainty stage)"
        )
    assert not (tmp_path / "out").exists()
    # a run that stops before the uncertainty stage does not need it
    config = load_config(path)
    run_stages(config, stage_list(config), until="stocks", echo=lambda _: None)
    assert (tmp_path / "out" / "stocks").is_dir()
