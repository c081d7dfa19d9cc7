"""The synthetic world: analytic truth, determinism, layout, residual field and profiles."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pyproj
import pytest
from rasterio.features import rasterize
from scipy import integrate

from mapping.synthetic import (
    STANDARD_DEPTHS,
    ZONE_MAAT_THRESHOLDS,
    ResidualModel,
    density_profile,
    gaussian_random_field,
    interval_stock,
    make_world,
    permafrost_zones,
    sample_profiles,
    sample_sites,
    scale_depth,
    trend_log_density,
    validate_horizons,
    zone_polygons,
    zone_totals,
)


@pytest.fixture(scope="module")
def world():
    return make_world(seed=7, shape=(64, 80))


@pytest.fixture(scope="module")
def exact_profiles(world):
    return sample_profiles(world, 300, seed=3, noise=False)


@pytest.fixture(scope="module")
def noisy_profiles(world):
    return sample_profiles(world, 500, seed=3, noise=True)


def _horizon_stock(df: pd.DataFrame) -> pd.Series:
    """kg C m-2 per horizon: SOC[%] x BD x thickness[cm] x (1 - CF) / 10 x area share."""
    return (
        df["soc_pct"]
        * df["bulk_density_g_cm3"]
        * (1 - df["coarse_fraction_pct"] / 100)
        * (df["bottom_cm"] - df["top_cm"])
        / 10
        * df["horizon_area_pct"]
        / 100
    )


# --------------------------------------------------------------------------- analytic depth function
def test_interval_stock_hand_values() -> None:
    # 36 kg m-3 at the surface, e-folding depth 190 cm: 0-30 cm = 36 * 1.9 * (1 - exp(-30/190))
    assert float(interval_stock(0, 30, 36.0, 190.0)) == pytest.approx(9.99053, abs=1e-5)
    assert float(interval_stock(0, 30, 36.0, 190.0)) == pytest.approx(
        36.0 * 1.9 * (1 - math.exp(-30 / 190)), rel=1e-14
    )
    # the whole column holds rho0 * k
    assert float(interval_stock(0, 1e6, 20.0, 150.0)) == pytest.approx(20.0 * 1.5, rel=1e-12)
    # density at the e-folding depth is rho0 / e
    assert float(density_profile(150.0, 20.0, 150.0)) == pytest.approx(20.0 / math.e, rel=1e-14)


@pytest.mark.parametrize(("top", "bottom"), [(0, 30), (30, 100), (12.5, 13.0), (100, 300)])
def test_interval_stock_is_the_integral_of_the_density(top: float, bottom: float) -> None:
    rho0, k = 41.3, 173.0
    # density in kg m-3 integrated over depth in metres
    num, _ = integrate.quad(
        lambda z: float(density_profile(z * 100, rho0, k)), top / 100, bottom / 100
    )
    assert float(interval_stock(top, bottom, rho0, k)) == pytest.approx(num, rel=1e-12)


def test_interval_stock_is_additive() -> None:
    rho0 = np.array([10.0, 55.0])
    k = np.array([120.0, 260.0])
    parts = sum(interval_stock(a, b, rho0, k) for a, b in [(0, 5), (5, 15), (15, 30), (30, 100)])
    np.testing.assert_allclose(parts, interval_stock(0, 100, rho0, k), rtol=1e-14)


def test_permafrost_zone_thresholds() -> None:
    assert ZONE_MAAT_THRESHOLDS == (-8.0, -4.0, -1.0, 1.0)
    maat = np.array([-20, -8, -7.99, -4, -3.5, -1, 0, 1, 1.01, 5, np.nan])
    np.testing.assert_array_equal(permafrost_zones(maat), [1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 0])


# --------------------------------------------------------------------------- the world
def test_world_grid_and_layout(world) -> None:
    assert world.crs.to_epsg() == 6931
    assert world.shape == (64, 80)
    assert world.transform.a == 5000.0 and world.transform.e == -5000.0
    assert world.cell_area_m2 == 25e6
    land = world.mask
    assert 0.5 < land.mean() < 0.99  # sea towards the pole, mostly land
    for name, a in world.covariates.items():
        assert a.shape == world.shape
        if name == "landcover":
            assert a.dtype == np.uint8
            np.testing.assert_array_equal(a == 0, ~land)
        else:
            np.testing.assert_array_equal(np.isnan(a), ~land, err_msg=name)
    maat = world.covariates["maat"][land]
    assert maat.min() == pytest.approx(-16.0, abs=0.1) and maat.max() == pytest.approx(2.0, abs=0.1)
    assert set(np.unique(world.covariates["landcover"][land])) == {1, 2, 3, 4}
    assert set(np.unique(world.zones[land])) == {0, 1, 2, 3, 4}
    assert not world.zones[~land].any()
    # colder zones are colder on average
    means = [maat[world.zones[land] == z].mean() for z in (1, 2, 3, 4)]
    assert means == sorted(means)
    # grid north is not geographic north: the pole is beyond the lower-left corner
    lon, lat = world.lonlat
    assert lat[-1, 0] > max(lat[0, 0], lat[-1, -1], lat[0, -1] + 2)
    assert 120 < lon.mean() < 140


def test_world_grid_object(world) -> None:
    grid = world.grid
    assert grid.shape == world.shape
    assert grid.transform == world.transform
    assert grid.crs.to_epsg() == 6931
    np.testing.assert_allclose(grid.cell_area(), 25e6, rtol=1e-9)  # equal-area grid
    ds = world.to_xarray()
    assert type(grid).from_dataarray(ds) == grid
    np.testing.assert_array_equal(ds["maat"].values, world.covariates["maat"])
    assert ds["landcover"].dtype == np.uint8


def test_make_world_is_deterministic() -> None:
    a = make_world(seed=11, shape=(40, 48))
    b = make_world(seed=11, shape=(40, 48))
    c = make_world(seed=12, shape=(40, 48))
    for name in a.covariates:
        np.testing.assert_array_equal(a.covariates[name], b.covariates[name])
    for attr in ("mask", "zones", "residual", "surface_density", "scale_depth"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert not np.array_equal(a.residual, c.residual)
    assert not np.allclose(
        a.covariates["elevation"][a.mask & c.mask], c.covariates["elevation"][a.mask & c.mask]
    )


def test_make_world_is_fast_and_pure_for_small_worlds(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    w = make_world(seed=1, shape=(64, 64))
    sample_profiles(w, 50, seed=1)
    assert list(tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------- truth
def test_true_stock_is_monotone_in_depth(world) -> None:
    stocks = [world.true_stock(a, b) for a, b in STANDARD_DEPTHS]
    land = world.mask
    for s in stocks:
        np.testing.assert_array_equal(np.isnan(s), ~land)
        assert (s[land] > 0).all()
    for shallow, deep in itertools.pairwise(stocks):
        assert (deep[land] > shallow[land]).all()


def test_true_stock_integrates_the_density_on_the_grid(world) -> None:
    z = np.linspace(0, 100, 401)  # cm
    rho = np.stack([world.density(zi) for zi in z])  # kg m-3
    trapz = np.trapezoid(rho, z / 100, axis=0)
    land = world.mask
    np.testing.assert_allclose(trapz[land], world.true_stock(0, 100)[land], rtol=1e-6)


def test_truth_magnitudes_are_realistic() -> None:
    # the seed's Table 1: about 10 / 27 / 41 / 50 kg C m-2 over the permafrost region
    w = make_world(seed=20261124, shape=(96, 120), resolution=2000e3 / 120)
    t = zone_totals(w).set_index(["zone", "bottom_cm"])["mean_density_kg_m2"]
    region = [t[("permafrost_region", b)] for _, b in STANDARD_DEPTHS]
    assert 8 < region[0] < 13
    assert 23 < region[1] < 33
    assert 45 < region[3] < 62


def test_log_stock_residual_is_the_residual_field_at_every_depth(world) -> None:
    land = world.mask
    rho_trend = np.exp(trend_log_density(world.covariates, world.params))
    k = scale_depth(world.covariates, world.params)
    for a, b in STANDARD_DEPTHS:
        resid = np.log(world.true_stock(a, b)) - np.log(interval_stock(a, b, rho_trend, k))
        np.testing.assert_allclose(resid[land], world.residual[land], atol=1e-12)


def test_residual_field_has_the_model_covariance() -> None:
    res = 1000.0
    model = ResidualModel(psill=0.5, range=5 * res)  # exponential, 5 cells
    rng = np.random.default_rng(42)
    fields = [gaussian_random_field((128, 160), res, model, rng) for _ in range(6)]
    for lag in (0, 1, 3, 8):
        cx = np.mean([np.mean(f[:, : f.shape[1] - lag] * f[:, lag:]) for f in fields])
        cy = np.mean([np.mean(f[: f.shape[0] - lag] * f[lag:]) for f in fields])
        expected = 0.5 * math.exp(-lag / 5)
        assert cx == pytest.approx(expected, abs=0.06), f"x lag {lag}"
        assert cy == pytest.approx(expected, abs=0.06), f"y lag {lag}"
    assert abs(np.mean([f.mean() for f in fields])) < 0.15


def test_residual_field_nugget_adds_white_noise() -> None:
    rng = np.random.default_rng(0)
    f = gaussian_random_field((100, 100), 1.0, ResidualModel(psill=0.2, range=3.0, nugget=0.3), rng)
    assert np.var(f) == pytest.approx(0.5, abs=0.08)
    # neighbours share only the structured part: C(1) = 0.2 exp(-1/3)
    assert np.mean(f[:, :-1] * f[:, 1:]) == pytest.approx(0.2 * math.exp(-1 / 3), abs=0.05)


def test_precipitation_is_analytic_in_position(world) -> None:
    y, x = world.coords()
    xx, yy = np.meshgrid(x, y)
    exact = world.precipitation_at(xx, yy)
    land = world.mask
    np.testing.assert_array_equal(exact[land], world.covariates["precipitation"][land])
    # defined off the grid too, continuous, and smooth at the scale of a cell: the value
    # half-way between two cell centres is their mean to within 0.5 %
    np.testing.assert_allclose(world.precipitation_at(xx + 1.0, yy), exact, rtol=1e-4)
    mid = world.precipitation_at(xx[:, :-1] + 2500.0, yy[:, :-1])
    np.testing.assert_allclose(mid, (exact[:, :-1] + exact[:, 1:]) / 2, rtol=5e-3)


def test_truth_parameters_are_json_ready(world) -> None:
    d = json.loads(json.dumps(world.params.to_dict()))
    assert d["residual"]["model"] == "exponential"
    assert d["residual"]["psill"] == world.params.residual.psill
    assert d["residual"]["range"] == world.params.residual.range
    assert d["trend"]["coefficients"]["landcover"]["3"] == world.params.landcover[3]


# --------------------------------------------------------------------------- zones
def test_zone_polygons_rasterise_back_to_the_raster(world) -> None:
    polys = zone_polygons(world)
    assert list(polys["zone_code"]) == [1, 2, 3, 4]
    assert list(polys["zone_name"]) == ["continuous", "discontinuous", "sporadic", "isolated"]
    burned = rasterize(
        zip(polys.geometry, polys["zone_code"], strict=True),
        out_shape=world.shape,
        transform=world.transform,
        fill=0,
        dtype="uint8",
    )
    np.testing.assert_array_equal(burned, world.zones)
    counts = np.array([(world.zones == c).sum() for c in (1, 2, 3, 4)])
    np.testing.assert_allclose(polys.geometry.area.to_numpy(), counts * 25e6, rtol=1e-12)
    np.testing.assert_allclose(polys["area_km2"].to_numpy(), counts * 25.0)


def test_zone_totals_by_hand(world) -> None:
    t = zone_totals(world).set_index(["zone", "bottom_cm"])
    s = world.true_stock(0, 100)
    for code, name in [(1, "continuous"), (4, "isolated")]:
        sel = world.zones == code
        row = t.loc[(name, 100)]
        assert row["area_km2"] == sel.sum() * 25.0
        assert row["storage_pg"] == pytest.approx(s[sel].sum() * 25e6 / 1e12, rel=1e-12)
        assert row["mean_density_kg_m2"] == pytest.approx(s[sel].mean(), rel=1e-12)
    zones = ["continuous", "discontinuous", "sporadic", "isolated"]
    for _, b in STANDARD_DEPTHS:
        assert sum(t.loc[(z, b), "storage_pg"] for z in zones) == pytest.approx(
            t.loc[("permafrost_region", b), "storage_pg"], rel=1e-12
        )


# --------------------------------------------------------------------------- profiles
def test_profile_horizons_integrate_to_the_true_stock(world, exact_profiles) -> None:
    df = exact_profiles.assign(stock=_horizon_stock(exact_profiles))
    prof = df.groupby("profile_id", sort=False).agg(
        stock=("stock", "sum"),
        lon=("lon", "first"),
        lat=("lat", "first"),
        bottom=("bottom_cm", "max"),
    )
    # locate each profile independently of the generator: lon/lat -> EPSG:6931 -> cell
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:6931", always_xy=True).transform(
        prof["lon"].to_numpy(), prof["lat"].to_numpy()
    )
    t = world.transform
    row = np.floor((y - t.f) / t.e).astype(int)
    col = np.floor((x - t.c) / t.a).astype(int)
    truth = np.array(
        [world.true_stock(0, d)[r, c] for d, r, c in zip(prof["bottom"], row, col, strict=True)]
    )
    np.testing.assert_allclose(prof["stock"].to_numpy(), truth, rtol=1e-9)
    # and every standard interval a profile reaches, using the profile's own horizons
    for _, b in STANDARD_DEPTHS:
        within = df[df["bottom_cm"] <= b].groupby("profile_id", sort=False)["stock"].sum()
        deep = prof.index[prof["bottom"] >= b]
        if len(deep) == 0:
            continue
        ends = df[df["bottom_cm"] == b].groupby("profile_id")["bottom_cm"].first()
        ids = deep.intersection(ends.index)  # profiles with a horizon boundary at b
        i = prof.index.get_indexer(ids)
        expected = world.true_stock(0, b)[row[i], col[i]]
        np.testing.assert_allclose(within.loc[ids].to_numpy(), expected, rtol=1e-9)


def test_profiles_are_valid_and_realistic(noisy_profiles) -> None:
    df = noisy_profiles
    validate_horizons(df)  # raises on any broken rule
    assert df["profile_id"].nunique() == 500
    assert list(df.columns[:10]) == [
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
    ]
    missing = df["bulk_density_g_cm3"].isna().mean()
    assert 0.08 < missing < 0.17
    cn = df["soc_pct"] / df["n_pct"]
    assert cn.between(15, 30).all()
    organic = df[df["horizon"].isin(["Oi", "Oe", "Oa"])]
    assert len(organic) > 30
    assert organic["soc_pct"].min() > 15  # organic material (17 % before laboratory error)
    assert organic["soc_pct"].median() > 25 and organic["bulk_density_g_cm3"].median() < 0.3
    mineral = df[df["horizon"].isin(["A", "Bg", "Cf", "C"])]
    assert 0.9 < mineral["bulk_density_g_cm3"].median() < 1.6
    assert mineral["soc_pct"].median() < 5


def test_profiles_reach_fewer_depths_like_the_seed(noisy_profiles) -> None:
    bottom = noisy_profiles.groupby("profile_id")["bottom_cm"].max()
    counts = [(bottom >= b).sum() for _, b in STANDARD_DEPTHS]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 4
    # the seed: 3422 / 2290 / 1296 / 720
    shares = np.array(counts) / counts[0]
    np.testing.assert_allclose(shares, [1.0, 2290 / 3422, 1296 / 3422, 720 / 3422], atol=0.015)


def test_cryoturbated_pairs_share_a_depth_range(noisy_profiles) -> None:
    df = noisy_profiles
    pairs = df[df["horizon_area_pct"] < 100]
    assert pairs["profile_id"].nunique() >= 5
    for _, g in pairs.groupby(["profile_id", "top_cm", "bottom_cm"]):
        assert len(g) == 2
        assert g["horizon_area_pct"].sum() == 100
        assert set(g["horizon"]) in ({"Ojj", "Bgjj"}, {"Ajj", "Bgjj"})
        pocket = g[g["horizon"] != "Bgjj"].iloc[0]
        matrix = g[g["horizon"] == "Bgjj"].iloc[0]
        assert pocket["soc_pct"] > matrix["soc_pct"]
        assert (pocket["horizon"] == "Ojj") == (pocket["soc_pct"] > 15)
    assert (pairs["horizon"] == "Ojj").any()


def test_profiles_are_clustered(world) -> None:
    sites = sample_sites(world, 400, seed=5)
    xy = sites[["x", "y"]].to_numpy()
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    nn = d.min(axis=1).mean()
    area = world.mask.sum() * world.cell_area_m2
    clark_evans = nn / (0.5 * math.sqrt(area / len(xy)))  # 1 for a random pattern
    assert clark_evans < 0.75
    assert set(sites["survey"].str.split("_").str[0]) == {"corridor", "station", "scattered"}
    # every site lies on land, well inside its cell
    assert world.mask[sites["row"], sites["col"]].all()
    t = world.transform
    col = (sites["x"].to_numpy() - t.c) / t.a
    row = (sites["y"].to_numpy() - t.f) / t.e
    assert np.all((row - sites["row"] > 0.05) & (row - sites["row"] < 0.95))
    assert np.all((col - sites["col"] > 0.05) & (col - sites["col"] < 0.95))


def test_profile_noise_is_mean_unbiased(world, noisy_profiles) -> None:
    df = noisy_profiles
    complete = df.groupby("profile_id")["bulk_density_g_cm3"].transform(lambda s: s.notna().all())
    df = df[complete].assign(stock=_horizon_stock(df[complete]))
    prof = df.groupby("profile_id").agg(stock=("stock", "sum"), bottom=("bottom_cm", "max"))
    sites = sample_sites(world, 500, seed=3).set_index("profile_id").loc[prof.index]
    truth = np.array(
        [
            world.true_stock(0, d)[r, c]
            for d, r, c in zip(prof["bottom"], sites["row"], sites["col"], strict=True)
        ]
    )
    ratio = prof["stock"].to_numpy() / truth
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)
    # profile factor sd 0.15 plus lab errors averaged over horizons
    assert 0.12 < np.log(ratio).std() < 0.22


def test_bulk_density_scatters_around_the_default_ptf(world) -> None:
    """The PTF the stock stage uses for missing values is a mean-unbiased estimator here."""
    from mapping.bulk_density import get_ptf

    ptf = get_ptf("default")
    df = sample_profiles(world, 500, seed=3, noise=False)
    ratio = df["bulk_density_g_cm3"].to_numpy() / ptf(df["soc_pct"].to_numpy())
    # natural scatter exp(e), e ~ N(-sd^2/2, sd^2), sd = 0.1
    assert np.log(ratio).std() == pytest.approx(world.params.bd_scatter_sd, rel=0.15)
    organic = ptf.is_organic(df["soc_pct"].to_numpy())
    assert organic.sum() > 30 and (~organic).sum() > 1000
    for sel in (organic, ~organic):
        assert ratio[sel].mean() == pytest.approx(1.0, abs=0.05)
    # organic horizons are what the PTF calls organic, and nothing else is
    named = df["horizon"].str.startswith("O").to_numpy()
    np.testing.assert_array_equal(named, organic)
    assert df["soc_pct"].max() <= 60.0


def test_ptf_stocks_agree_with_measured_stocks(world) -> None:
    """Stocks with every bulk density from the PTF are within 3 % of the measured ones."""
    from mapping.depths import compute_stocks

    df = sample_profiles(world, 300, seed=4, missing_bd=0.0)
    cols = ["profile_id", "lon", "lat", "top_cm", "bottom_cm", "soc_pct",
            "bulk_density_g_cm3", "coarse_fraction_pct", "horizon_area_pct"]  # fmt: skip
    measured = compute_stocks(df[cols], list(STANDARD_DEPTHS)).stocks
    imputed = compute_stocks(df[cols].assign(bulk_density_g_cm3=np.nan), list(STANDARD_DEPTHS))
    assert (imputed.stocks["bd_imputed"] == imputed.stocks["n_horizons"]).all()
    key = ["top_cm", "bottom_cm"]
    gap = (
        imputed.stocks.groupby(key)["soc_stock_kg_m2"].mean()
        / measured.groupby(key)["soc_stock_kg_m2"].mean()
        - 1.0
    )
    assert len(gap) == 4
    assert (gap.abs() < 0.03).all(), gap


def test_profiles_are_deterministic(world) -> None:
    a = sample_profiles(world, 60, seed=9)
    pd.testing.assert_frame_equal(a, sample_profiles(world, 60, seed=9))
    assert not a.equals(sample_profiles(world, 60, seed=10))


@pytest.mark.parametrize(
    ("column", "row", "value", "message"),
    [
        ("bottom_cm", 0, 0.0, "top_cm >= bottom_cm"),
        ("soc_pct", 1, 120.0, "soc_pct"),
        ("bulk_density_g_cm3", 1, 2.9, "bulk_density"),
        ("coarse_fraction_pct", 1, -1.0, "coarse_fraction"),
        ("horizon_area_pct", 1, 60.0, "area shares"),
        ("top_cm", 2, 9999.0, None),
    ],
)
def test_validate_horizons_rejects_broken_rules(
    exact_profiles, column: str, row: int, value: float, message: str | None
) -> None:
    df = exact_profiles.copy()
    df.loc[row, column] = value
    with pytest.raises(ValueError, match=message):
        validate_horizons(df)
