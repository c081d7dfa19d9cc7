"""The committed sample data: grids, COG layout, shared mask, zones, profiles and the truth."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pyproj
import pytest
import rasterio
from rasterio.features import rasterize
from scipy.optimize import brentq

from mapping.config import load_config
from mapping.depth_model import thaw_split
from mapping.synthetic import (
    STANDARD_DEPTHS,
    ZONE_MAAT_THRESHOLDS,
    ZONE_NAMES,
    interval_stock,
    make_world,
    validate_horizons,
)
from mapping.synthetic.active_layer import active_layer_thickness
from mapping.units import DEFAULT_BREAKS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sample_rasters"
GENERATOR = ROOT / "workflows" / "make_sample_data.py"
ON_GRID = ["elevation", "maat", "ndvi", "twi", "landcover"]
TRUTH = [DATA / "truth" / f"soc_{a}_{b}cm.tif" for a, b in STANDARD_DEPTHS]
SEED_COUNTS = (3422, 2290, 1296, 720)  # profiles reaching 30/100/200/300 cm in the seed


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), src.profile


@pytest.fixture(scope="module")
def params() -> dict:
    return json.loads((DATA / "truth" / "parameters.json").read_text())


@pytest.fixture(scope="module")
def grid():
    with rasterio.open(DATA / "elevation.tif") as src:
        return src.crs, src.transform, src.shape


@pytest.fixture(scope="module")
def land() -> np.ndarray:
    a, prof = _read(DATA / "elevation.tif")
    return a != prof["nodata"]


@pytest.fixture(scope="module")
def profiles() -> pd.DataFrame:
    return pd.read_csv(DATA / "profiles.csv")


def _cells(df: pd.DataFrame, transform) -> tuple[np.ndarray, np.ndarray]:
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:6931", always_xy=True).transform(
        df["lon"].to_numpy(), df["lat"].to_numpy()
    )
    row = np.floor((y - transform.f) / transform.e).astype(int)
    col = np.floor((x - transform.c) / transform.a).astype(int)
    return row, col


# --------------------------------------------------------------------------- grids and files
def test_covariates_share_an_ease_grid_of_at_least_1500_km(grid) -> None:
    crs, transform, shape = grid
    assert crs.to_epsg() == 6931
    assert transform.b == transform.d == 0
    assert transform.a <= 5000 and -transform.e <= 5000
    ny, nx = shape
    assert nx * transform.a >= 1.5e6 and ny * -transform.e >= 1.5e6
    for path in [DATA / f"{n}.tif" for n in ON_GRID] + [DATA / "permafrost_zones.tif", *TRUTH]:
        with rasterio.open(path) as src:
            assert (src.crs, src.transform, src.shape) == grid, path.name
    # placed away from 0°E: the grid's up is far from geographic north
    lon_c, _ = pyproj.Transformer.from_crs("EPSG:6931", "EPSG:4326", always_xy=True).transform(
        transform.c + nx * transform.a / 2, transform.f + ny * transform.e / 2
    )
    assert 90 < lon_c < 170


def test_precipitation_is_on_another_larger_grid(grid) -> None:
    crs, transform, shape = grid
    with rasterio.open(DATA / "precipitation.tif") as src:
        assert src.crs.to_epsg() == 4326
        assert src.res == pytest.approx((0.1, 0.1))
        a = src.read(1)
        assert src.nodata is not None and not (a == src.nodata).any()  # values over the sea too
        west, south, east, north = src.bounds
    # it covers the whole covariate grid
    ny, nx = shape
    xs = transform.c + np.linspace(0, nx, 41) * transform.a
    ys = transform.f + np.linspace(0, ny, 33) * transform.e
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xx, yy)
    assert west < lon.min() and lon.max() < east and south < lat.min() and lat.max() < north
    assert 50 < a.min() and a.max() < 1500  # mm per year


def test_bilinear_precipitation_is_close_to_the_exact_grid_values(grid, land, params) -> None:
    from rasterio.warp import Resampling, reproject

    crs, transform, shape = grid
    exact, _ = _read(DATA / "truth" / "precipitation_5km.tif")
    with rasterio.open(DATA / "precipitation.tif") as src:
        out = np.full(shape, np.nan, dtype="float32")
        reproject(
            rasterio.band(src, 1),
            out,
            dst_transform=transform,
            dst_crs=crs,
            resampling=Resampling.bilinear,
        )
    err = np.abs(out - exact)[land]
    assert err.max() < 1.0  # mm; the generator records the same check
    assert err.max() == pytest.approx(
        params["precipitation"]["bilinear_to_grid_error"]["max_abs_mm"], abs=0.01
    )


def test_dtypes_and_nodata() -> None:
    for name in ["elevation", "maat", "ndvi", "twi"]:
        _, prof = _read(DATA / f"{name}.tif")
        assert prof["dtype"] == "float32" and prof["nodata"] == -9999
    for path in [DATA / "landcover.tif", DATA / "permafrost_zones.tif"]:
        _, prof = _read(path)
        assert prof["dtype"] == "uint8" and prof["nodata"] == 0
    for path in TRUTH:
        _, prof = _read(path)
        assert prof["dtype"] == "float32" and prof["nodata"] == -9999
        with rasterio.open(path) as src:
            assert src.tags()["units"] == "kg C m-2"


def test_nodata_mask_is_shared(land) -> None:
    assert 0.6 < land.mean() < 0.95  # a real sea, mostly land
    for path in [DATA / f"{n}.tif" for n in ON_GRID[1:]] + [*TRUTH]:
        a, prof = _read(path)
        np.testing.assert_array_equal(a != prof["nodata"], land, err_msg=path.name)
    zones, _ = _read(DATA / "permafrost_zones.tif")
    assert not zones[~land].any()


def test_covariate_values_are_plausible(land) -> None:
    ranges = {
        "elevation": (0, 4000),
        "maat": (-16.01, 2.01),
        "ndvi": (0, 1),
        "twi": (1, 25),
    }
    for name, (lo, hi) in ranges.items():
        a, _ = _read(DATA / f"{name}.tif")
        v = a[land]
        assert lo <= v.min() and v.max() <= hi, name
    maat, _ = _read(DATA / "maat.tif")
    assert maat[land].min() < -15 and maat[land].max() > 1.5
    lc, _ = _read(DATA / "landcover.tif")
    assert set(np.unique(lc[land])) == {1, 2, 3, 4}


def test_rasters_are_tiled_cogs_with_overviews() -> None:
    paths = sorted(DATA.glob("*.tif")) + sorted((DATA / "truth").glob("*.tif"))
    assert len(paths) == 13
    for path in paths:
        with rasterio.open(path) as src:
            assert src.profile["tiled"], path.name
            assert src.block_shapes[0] == (256, 256)
            assert src.overviews(1), path.name
            assert src.compression.name.lower() == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_gdalinfo_sees_cogs() -> None:
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo is not installed")
    out = subprocess.run(
        [gdalinfo, str(DATA / "maat.tif")], capture_output=True, text=True, check=True
    ).stdout
    assert "LAYOUT=COG" in out
    assert "Block=256x256" in out
    assert "Overviews: 200x160, 100x80" in out
    assert "NoData Value=-9999" in out
    assert 'ID["EPSG",6931]' in out


def test_committed_size_is_small() -> None:
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 8e6  # well under the 15 MB budget


def test_checksums_match_the_files() -> None:
    listed = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {
        p.relative_to(DATA).as_posix()
        for p in DATA.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    }
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


# --------------------------------------------------------------------------- zones
def test_zone_raster_has_all_four_zones_and_follows_maat(land) -> None:
    zones, _ = _read(DATA / "permafrost_zones.tif")
    maat, _ = _read(DATA / "maat.tif")
    assert set(np.unique(zones)) == {0, 1, 2, 3, 4}
    bounds = [-np.inf, *ZONE_MAAT_THRESHOLDS]
    for code in (1, 2, 3, 4):
        t = maat[zones == code]
        inside = (t > bounds[code - 1]) & (t <= bounds[code])
        assert inside.mean() > 0.85, ZONE_NAMES[code]  # zone maps are generalised MAAT maps
    warm = maat[land & (zones == 0)]
    assert (warm > ZONE_MAAT_THRESHOLDS[-1]).mean() > 0.85


def test_zone_polygons_agree_with_the_raster(grid) -> None:
    _crs, transform, shape = grid
    info = pyogrio.read_info(DATA / "permafrost_zones.gpkg")
    assert info["features"] == 4
    assert info["geometry_type"] == "MultiPolygon"
    assert pyproj.CRS(info["crs"]).to_epsg() == 6931
    gdf = pyogrio.read_dataframe(DATA / "permafrost_zones.gpkg")
    assert gdf["zone_code"].dtype.kind == "i"
    assert dict(zip(gdf["zone_code"], gdf["zone_name"], strict=True)) == ZONE_NAMES
    burned = rasterize(
        zip(gdf.geometry, gdf["zone_code"], strict=True),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="uint8",
    )
    zones, _ = _read(DATA / "permafrost_zones.tif")
    np.testing.assert_array_equal(burned, zones)
    counts = np.array([(zones == c).sum() for c in gdf["zone_code"]])
    np.testing.assert_allclose(gdf.geometry.area.to_numpy(), counts * 25e6, rtol=1e-12)


# --------------------------------------------------------------------------- profiles
def test_profile_table_is_valid(profiles) -> None:
    assert list(profiles.columns[:11]) == [
        "profile_id",
        "lon",
        "lat",
        "top_cm",
        "bottom_cm",
        "horizon",
        "soc_pct",
        "bulk_density_g_cm3",
        "coarse_fraction_pct",
        "horizon_area_pct",
        "n_pct",
    ]
    validate_horizons(profiles)
    assert 400 <= profiles["profile_id"].nunique() <= 600
    missing = profiles["bulk_density_g_cm3"].isna().mean()
    assert 0.10 <= missing <= 0.15
    cn = profiles["soc_pct"] / profiles["n_pct"]
    assert cn.between(14.9, 30.1).all()
    pairs = profiles[profiles["horizon_area_pct"] < 100]
    assert pairs["profile_id"].nunique() >= 10
    assert (pairs.groupby(["profile_id", "top_cm"])["horizon_area_pct"].sum() == 100).all()


def test_fewer_profiles_reach_deeper_intervals(profiles, params) -> None:
    bottom = profiles.groupby("profile_id")["bottom_cm"].max()
    counts = [int((bottom >= b).sum()) for _, b in STANDARD_DEPTHS]
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0
    np.testing.assert_allclose(
        np.array(counts) / counts[0], np.array(SEED_COUNTS) / SEED_COUNTS[0], atol=0.01
    )
    assert params["profiles"]["profiles_reaching"] == {
        f"0-{b}": n for (_, b), n in zip(STANDARD_DEPTHS, counts, strict=True)
    }


def test_profiles_lie_on_land_cells(profiles, grid, land) -> None:
    _, transform, shape = grid
    sites = profiles.drop_duplicates("profile_id")
    row, col = _cells(sites, transform)
    assert ((row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])).all()
    assert land[row, col].all()


def test_wetland_profiles_start_with_peat(profiles, grid) -> None:
    _, transform, _ = grid
    lc, _ = _read(DATA / "landcover.tif")
    top = profiles[profiles["top_cm"] == 0]
    row, col = _cells(top, transform)
    wet = lc[row, col] == 3
    # carbon-rich surface layers, organic (peat) where dense enough for organic material on
    # the PTF
    assert top.loc[wet, "soc_pct"].median() > 2 * top.loc[~wet, "soc_pct"].median()
    peat = top[wet & top["horizon"].str.startswith("O")]
    assert len(peat) > 50
    assert peat["soc_pct"].between(15, 65).all()
    assert peat["bulk_density_g_cm3"].dropna().between(0.05, 0.8).all()
    organic = profiles[profiles["horizon"].isin(["Oi", "Oe", "Oa"])]
    r, c = _cells(organic, transform)
    assert (lc[r, c] == 3).mean() > 0.9


def test_measured_bulk_density_follows_the_default_ptf(profiles, params) -> None:
    """Missing bulk densities are estimated by the default PTF: it must be unbiased here."""
    from mapping.bulk_density import get_ptf

    ptf = get_ptf("default")
    df = profiles.dropna(subset=["bulk_density_g_cm3"])
    ratio = df["bulk_density_g_cm3"].to_numpy() / ptf(df["soc_pct"].to_numpy())
    organic = ptf.is_organic(df["soc_pct"].to_numpy())
    for sel in (organic, ~organic):
        assert ratio[sel].mean() == pytest.approx(1.0, abs=0.05)
    # scatter 0.1 and laboratory error 0.05 on BD (and SOC, through the PTF)
    assert 0.09 < np.log(ratio).std() < 0.14
    gap = params["profiles"]["ptf_vs_measured_stock_pct"]
    assert set(gap) == {f"0-{b}" for _, b in STANDARD_DEPTHS}
    assert all(abs(v) < 2.5 for v in gap.values())
    assert params["truth"]["bulk_density"]["scatter_sd"] == 0.1


# --------------------------------------------------------------------------- truth
def test_truth_is_monotone_in_depth_and_realistic(land) -> None:
    stocks = [_read(p)[0] for p in TRUTH]
    for shallow, deep in itertools.pairwise(stocks):
        assert (deep[land] > shallow[land]).all()
    means = [s[land].mean() for s in stocks]
    assert 8 < means[0] < 13 and 24 < means[1] < 33 and 45 < means[3] < 60  # seed's Table 1 order


def test_truth_decomposes_into_the_published_trend_and_residual(land, grid, params) -> None:
    """ln S(0, d) - ln S_trend(0, d) is the same field at every depth, with the stated variogram."""
    cov = {n: _read(DATA / f"{n}.tif")[0].astype(float) for n in ON_GRID}
    cov["precipitation"] = _read(DATA / "truth" / "precipitation_5km.tif")[0].astype(float)
    c = params["truth"]["trend"]["coefficients"]
    k_c = params["truth"]["scale_depth"]["coefficients"]
    lc = cov["landcover"].astype(int)
    lc_b = np.vectorize(lambda v: c["landcover"].get(str(v), np.nan))(lc)
    lc_k = np.vectorize(lambda v: k_c["k_landcover"].get(str(v), np.nan))(lc)
    log_rho = (
        c["intercept"]
        + c["maat_sq"] * (cov["maat"] - c["maat_optimum"]) ** 2
        + c["ndvi"] * cov["ndvi"]
        + c["twi"] * cov["twi"]
        + c["elevation_km"] * cov["elevation"] / 1000
        + c["precipitation_m"] * cov["precipitation"] / 1000
        + lc_b
    )
    k = np.exp(k_c["k_intercept"] + k_c["k_maat"] * cov["maat"] + lc_k)
    residuals = []
    for (a, b), path in zip(STANDARD_DEPTHS, TRUTH, strict=True):
        truth = _read(path)[0].astype(float)
        residuals.append(np.log(truth) - np.log(interval_stock(a, b, np.exp(log_rho), k)))
    for r in residuals[1:]:
        # the covariates are float32 in the files: agreement to float32 precision
        np.testing.assert_allclose(r[land], residuals[0][land], atol=2e-5)
    eps = np.where(land, residuals[0], np.nan)
    vario = params["truth"]["residual"]
    assert vario["model"] == "exponential"
    assert np.nanvar(eps) == pytest.approx(vario["realized_on_land"]["variance"], abs=1e-3)
    assert np.nanvar(eps) == pytest.approx(vario["psill"], rel=0.35)
    assert abs(np.nanmean(eps)) < 0.15
    # correlation at one range (15 cells) along both axes is close to exp(-1)
    lag = round(vario["range"] / grid[1].a)
    e = np.nan_to_num(eps - np.nanmean(eps))
    w = land.astype(float)
    for axis in (0, 1):
        sl0 = [slice(None), slice(None)]
        sl1 = [slice(None), slice(None)]
        sl0[axis] = slice(0, -lag)
        sl1[axis] = slice(lag, None)
        cov_lag = (e[tuple(sl0)] * e[tuple(sl1)]).sum() / (w[tuple(sl0)] * w[tuple(sl1)]).sum()
        assert cov_lag / np.nanvar(eps) == pytest.approx(math.exp(-1), abs=0.12)


def test_profiles_scatter_around_the_truth(profiles, grid) -> None:
    _, transform, _ = grid
    df = profiles.copy()
    complete = df.groupby("profile_id")["bulk_density_g_cm3"].transform(lambda s: s.notna().all())
    df = df[complete]
    df["stock"] = (
        df["soc_pct"]
        * df["bulk_density_g_cm3"]
        * (1 - df["coarse_fraction_pct"] / 100)
        * (df["bottom_cm"] - df["top_cm"])
        / 10
        * df["horizon_area_pct"]
        / 100
    )
    prof = df.groupby("profile_id").agg(
        stock=("stock", "sum"), lon=("lon", "first"), lat=("lat", "first"), d=("bottom_cm", "max")
    )
    row, col = _cells(prof, transform)
    # truth to the profile's own bottom, from the 0-30 and 0-300 rasters and the depth law
    s30 = _read(TRUTH[0])[0][row, col].astype(float)
    s300 = _read(TRUTH[3])[0][row, col].astype(float)
    ratio = []
    for stock, d, a, b in zip(prof["stock"], prof["d"], s30, s300, strict=True):
        # S(0,d) = A (1 - exp(-d/k)): solve k from S(0,30)/S(0,300), then scale
        def shape_gap(k: float, r: float = a / b) -> float:
            return (1 - math.exp(-30 / k)) / (1 - math.exp(-300 / k)) - r

        k = brentq(shape_gap, 1, 1e4)
        truth = a * (1 - math.exp(-d / k)) / (1 - math.exp(-30 / k))
        ratio.append(stock / truth)
    ratio = np.array(ratio)
    assert len(ratio) > 300  # profiles with every bulk density measured
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)  # mean-unbiased noise
    assert 0.12 < np.log(ratio).std() < 0.22


def test_zone_totals_match_the_truth_rasters(land) -> None:
    zones, _ = _read(DATA / "permafrost_zones.tif")
    table = pd.read_csv(DATA / "truth" / "zone_totals.csv").set_index(["zone", "bottom_cm"])
    for (_, b), path in zip(STANDARD_DEPTHS, TRUTH, strict=True):
        s = _read(path)[0].astype(float)
        for code, name in ZONE_NAMES.items():
            sel = zones == code
            row = table.loc[(name, b)]
            assert row["area_km2"] == sel.sum() * 25
            assert row["storage_pg"] == pytest.approx(s[sel].sum() * 25e6 / 1e12, rel=1e-6)
        region = table.loc[("permafrost_region", b), "storage_pg"]
        assert region == pytest.approx(s[zones > 0].sum() * 25e6 / 1e12, rel=1e-6)


def test_active_layer_follows_the_zones(land) -> None:
    alt, prof = _read(DATA / "active_layer.tif")
    zones, _ = _read(DATA / "permafrost_zones.tif")
    assert prof["dtype"] == "float32" and prof["nodata"] == -9999
    assert np.array_equal(alt != -9999, land)
    assert np.all(alt[land] >= 20) and np.all(alt[land] <= 300)
    assert np.all(alt[land & (zones == 0)] == 300)  # no permafrost within 3 m
    medians = [np.median(alt[zones == c]) for c in (1, 2, 3, 4)]
    assert medians == sorted(medians) and medians[0] < 60 < 140 < medians[3]


def test_true_thaw_split_adds_up_and_matches_the_layer_integral(land, generator) -> None:
    # The truth's split is the analytic integral of rho0 exp(-z/k) above and below the
    # active-layer base; the production thaw_split on the truth's own layer stocks
    # (uniform density within each of the default layers) must agree to < 1 %.
    split = pd.read_csv(DATA / "truth" / "thaw_split.csv").set_index("zone")
    totals = pd.read_csv(DATA / "truth" / "zone_totals.csv").set_index(["zone", "bottom_cm"])
    for zone, row in split.iterrows():
        assert row["thawed_pg"] + row["frozen_pg"] == pytest.approx(row["total_pg"], rel=1e-6)
        assert row["total_pg"] == pytest.approx(totals.loc[(zone, 300), "storage_pg"], rel=1e-5)
    shares = split.loc[list(ZONE_NAMES.values()), "thawed_share"].to_numpy()
    assert np.all(np.diff(shares) > 0)  # warmer zones thaw deeper
    g = generator
    world = make_world(g.SEED, g.SHAPE, g.RESOLUTION, center_lonlat=g.CENTER)
    alt = active_layer_thickness(world, g.SEED)
    assert np.array_equal(
        _read(DATA / "active_layer.tif")[0], np.where(land, alt, -9999).astype("float32")
    )
    b = list(DEFAULT_BREAKS)
    layers = np.stack([world.true_stock(t, u) for t, u in itertools.pairwise(b)], axis=-1)
    thawed, _ = thaw_split(b, layers, alt)
    for code, zone in ZONE_NAMES.items():
        pg = np.nansum(thawed[world.zones == code]) * world.cell_area_m2 / 1e12
        assert pg == pytest.approx(split.loc[zone, "thawed_pg"], rel=0.01)


# --------------------------------------------------------------------------- config and generator
def test_sample_workflow_config_validates() -> None:
    cfg = load_config(ROOT / "workflows" / "sample.yaml")
    assert cfg.output == (ROOT / "out" / "sample").resolve()
    assert cfg.profiles.path == (DATA / "profiles.csv").resolve()
    assert [c.name for c in cfg.covariates] == [
        "elevation",
        "maat",
        "precipitation",
        "ndvi",
        "twi",
        "landcover",
    ]
    assert {c.name: c.kind for c in cfg.covariates}["landcover"] == "categorical"
    with rasterio.open(cfg.covariates[0].path) as src:
        assert src.crs.to_epsg() == 6931  # the grid is "like the first covariate"
    assert cfg.zones is not None
    assert cfg.zones.names == {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
    assert cfg.stocks.depths == ["0-30", "0-100", "0-200", "0-300"]


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_sample_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_generator(generator, out: Path, *extra: str) -> None:
    assert generator.main(["--out", str(out), "-q", *extra]) == 0


def test_generator_is_byte_identical_from_run_to_run(generator, tmp_path: Path) -> None:
    small = ("--shape", "40", "48", "--n-profiles", "60")
    _run_generator(generator, tmp_path / "a", *small)
    _run_generator(generator, tmp_path / "b", *small)
    sums = (tmp_path / "a" / "SHA256SUMS").read_text()
    assert sums == (tmp_path / "b" / "SHA256SUMS").read_text()
    assert len(sums.splitlines()) == 19
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


@pytest.mark.slow
def test_generator_reproduces_the_committed_data(generator, tmp_path: Path) -> None:
    out = tmp_path / "regen"
    _run_generator(generator, out)
    for path in sorted(DATA.rglob("*.tif")):
        new = out / path.relative_to(DATA)
        with rasterio.open(path) as a, rasterio.open(new) as b:
            assert (a.crs, a.transform, a.nodata) == (b.crs, b.transform, b.nodata)
            np.testing.assert_array_equal(a.read(1), b.read(1), err_msg=path.name)
    for name in ["profiles.csv", "truth/zone_totals.csv", "truth/parameters.json", "README.md"]:
        assert (out / name).read_text() == (DATA / name).read_text(), name
