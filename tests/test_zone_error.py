"""``uncertainty.zone_error: cv``: the error of a zone's mean from its own profiles' CV errors.

Checked by hand (the standard errors, the fallback spread of a zone with few profiles,
one value per zone over the intervals), on a large Monte Carlo (the scaling of the draws
keeps the mean, has the asked spread, is one factor for every interval of a zone, and
moves the all-zones total by the zones' changes exactly) and on the grid (a profile's
zone from a zone raster and from polygons).
"""

from __future__ import annotations

import itertools

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from rasterio.transform import from_origin
from shapely.geometry import box

from mapping.exceptions import InputError
from mapping.grid import Grid
from mapping.zonal import ALL_ZONES
from mapping.zone_error import add_zone_errors, zone_error_sd
from mapping.zones import prepare_zones, zone_coverage_from_polygons


def test_zone_error_sd_by_hand() -> None:
    rng = np.random.default_rng(1)
    e30 = rng.normal(0, 0.4, 60)
    z30 = np.repeat([0, 1, 2, -1], [30, 25, 3, 2])
    e100 = rng.normal(0, 0.5, 40)
    e100[5] = np.nan  # no usable error: not counted
    z100 = np.repeat([0, 1, 2, -1], [20, 12, 6, 2])
    t = zone_error_sd(
        {"0-30": e30, "0-100": e100}, {"0-30": z30, "0-100": z100}, ["a", "b", "c", "d"]
    )
    assert list(t["zone"]) == ["a", "b", "c", "d"]

    def se(e, n):
        return np.std(e, ddof=1) ** 2 / n

    # zone a: its own spread in both intervals (30 and 19 profiles)
    a30, a100 = e30[:30], e100[:20][np.isfinite(e100[:20])]
    assert t["sd"][0] == pytest.approx(np.sqrt((se(a30, 30) + se(a100, 19)) / 2))
    # zone c: 3 and 6 profiles, fewer than 10: the spread of all the interval's errors
    all100 = e100[np.isfinite(e100)]
    expect_c = np.sqrt((se(e30, 3) + se(all100, 6)) / 2)
    assert t["sd"][2] == pytest.approx(expect_c)
    assert list(t["n_profiles"]) == [30, 25, 6, 0]
    # zone d has no profile: no term
    assert t["sd"][3] == 0.0
    # zone b: 25 then 12 profiles, its own spread in both
    b = zone_error_sd({"0-30": e30[30:55]}, {"0-30": np.zeros(25, int)}, ["b"])
    assert b["sd"][0] == pytest.approx(np.std(e30[30:55], ddof=1) / 5)
    with pytest.raises(InputError, match="0-30: 60 errors but 3 zone indices"):
        zone_error_sd({"0-30": e30}, {"0-30": z30[:3]}, ["a"])
    with pytest.raises(InputError, match="intervals"):
        zone_error_sd({"0-30": e30}, {"0-100": z30}, ["a"])


def test_zone_error_sd_weighted_to_the_area_by_hand() -> None:
    # ten profiles of one zone: eight crowded in an accessible corner (weight 0.25 each,
    # errors near 0) and two standing for the rest of the zone (weight 4, errors +-0.5)
    e = np.array([0.02, -0.02, 0.01, -0.01, 0.03, -0.03, 0.0, 0.0, 0.5, -0.5])
    w = np.array([0.25] * 8 + [4.0, 4.0])
    t = zone_error_sd({"0-30": e}, {"0-30": np.zeros(10, int)}, ["a"], weights={"0-30": w})
    # by hand: V1 = sum w = 10, V2 = sum w^2 = 8 x 0.0625 + 2 x 16 = 32.5, the weighted mean
    # 0; sum w e^2 = 0.25 x 0.0028 + 4 x 0.5 = 2.0007; the variance with reliability weights
    # 2.0007 / (V1 - V2 / V1) = 2.0007 / 6.75 = 0.29640, over Kish's size V1^2 / V2 = 3.08
    assert t["sd"][0] == pytest.approx(np.sqrt(2.0007 / 6.75 * 32.5 / 100), rel=1e-12)
    # unweighted the crowd hides the zone's spread: s / sqrt(10) = 0.0747 against 0.310
    plain = zone_error_sd({"0-30": e}, {"0-30": np.zeros(10, int)}, ["a"])["sd"][0]
    assert plain == pytest.approx(np.std(e, ddof=1) / np.sqrt(10), rel=1e-12)
    assert t["sd"][0] > 4 * plain
    # equal weights give the unweighted term; a zone of few profiles takes the interval's
    # spread over Kish's effective size
    same = zone_error_sd({"0-30": e}, {"0-30": np.zeros(10, int)}, ["a"],
                         weights={"0-30": np.full(10, 3.0)})  # fmt: skip
    assert same["sd"][0] == pytest.approx(plain, rel=1e-12)
    z = np.array([0] * 7 + [1] * 3)
    few = zone_error_sd({"0-30": e}, {"0-30": z}, ["a", "b"], weights={"0-30": w})
    kish = (0.25 + 4 + 4) ** 2 / (0.0625 + 16 + 16)
    assert few["sd"][1] == pytest.approx(np.std(e, ddof=1) / np.sqrt(kish), rel=1e-12)
    with pytest.raises(InputError, match="0-30: 10 errors but 3 weights"):
        zone_error_sd({"0-30": e}, {"0-30": z}, ["a", "b"], weights={"0-30": w[:3]})


def test_one_profile_standing_for_most_of_a_zone_leaves_it_most_of_the_spread() -> None:
    # the weighted mean's sandwich variance sum w^2 (e - mean)^2 / (sum w)^2 falls to 0 as
    # one profile's weight grows (its own error becomes the mean); this one rises towards
    # the errors' spread, monotonely
    e = np.random.default_rng(0).normal(0.0, 0.3, 12)
    sds = []
    for big in (1.0, 4.0, 20.0, 100.0, 1000.0, 1e6):
        w = np.ones(12)
        w[0] = big
        t = zone_error_sd({"k": e}, {"k": np.zeros(12, int)}, ["a"], weights={"k": w})
        sds.append(float(t["sd"][0]))
    assert sds[0] == pytest.approx(np.std(e, ddof=1) / np.sqrt(12), rel=1e-12)
    assert all(b > a for a, b in itertools.pairwise(sds))
    assert sds[-1] > 2 * sds[0] and sds[-1] < np.std(e, ddof=1)


def _draws(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for k, scale in (("0-30", 1.0), ("0-100", 2.5)):
        zones = {
            "north": scale * rng.lognormal(1.0, 0.1, n),
            "south": scale * rng.lognormal(0.5, 0.1, n),
        }
        for zone, v in zones.items():
            rows.append(
                pd.DataFrame(
                    {"realization": np.arange(n), "zone": zone, "interval": k, "storage_pg": v}
                )
            )
        rows.append(
            pd.DataFrame(
                {
                    "realization": np.arange(n),
                    "zone": ALL_ZONES,
                    "interval": k,
                    "storage_pg": zones["north"] + zones["south"],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_zone_errors_scale_each_zone_alike_at_every_depth() -> None:
    n = 20_000
    before = _draws(n)
    after = add_zone_errors(before, {"north": 0.2, "south": 0.0}, seed=7)
    assert after.shape == before.shape and list(after.columns) == list(before.columns)
    key = ["zone", "interval", "realization"]
    b, a = (t.set_index(key)["storage_pg"] for t in (before, after))
    ratio = (a / b).unstack("interval")
    north = ratio.loc["north"]
    # one factor per realization for every interval of the zone: depths stay ordered
    np.testing.assert_allclose(north["0-30"], north["0-100"], rtol=1e-12)
    g = np.log(north["0-30"].to_numpy()) + 0.5 * 0.2**2
    assert g.std() == pytest.approx(0.2, rel=0.03)  # the asked spread (ln)
    assert north["0-30"].mean() == pytest.approx(1.0, abs=0.01)  # the mean stays
    np.testing.assert_allclose(ratio.loc["south"].to_numpy(), 1.0)  # sd 0: untouched
    # all zones: the sum of the zones, realization by realization
    zones = (
        after[after["zone"] != ALL_ZONES].groupby(["interval", "realization"])["storage_pg"].sum()
    )
    total = after[after["zone"] == ALL_ZONES].set_index(["interval", "realization"])["storage_pg"]
    np.testing.assert_allclose(total.loc[zones.index], zones, rtol=1e-12)
    # seeded: the same normals again, other normals with another seed
    np.testing.assert_array_equal(
        add_zone_errors(before, {"north": 0.2}, seed=7)["storage_pg"], after["storage_pg"]
    )
    assert not np.allclose(
        add_zone_errors(before, {"north": 0.2}, seed=8)["storage_pg"], after["storage_pg"]
    )
    # normal draws: 1 + sd g, clipped at 0
    lin = add_zone_errors(before, {"north": 0.2}, seed=7, distribution="normal").set_index(key)[
        "storage_pg"
    ]
    f = (lin / b).loc["north"].unstack("interval")["0-30"].to_numpy()
    assert (f >= 0).all() and (f - 1).std() == pytest.approx(0.2, rel=0.03)


def test_zone_of_a_cell_from_a_raster_and_from_polygons() -> None:
    grid = Grid(crs="EPSG:3413", transform=from_origin(0, 100, 10, 10), shape=(10, 10))
    codes = np.full((10, 10), 0, dtype="int32")
    codes[:, 4:] = 7
    codes[6:, :] = 3
    layout = prepare_zones(grid.wrap(codes).rio.write_nodata(0), grid, {3: "c", 7: "a"}, chunks=4)
    idx = {3: layout.codes.index(3), 7: layout.codes.index(7)}
    rows = np.array([0, 0, 7, 9, -1, 3])
    cols = np.array([0, 5, 2, 9, 0, 12])
    got = layout.zone_at(rows, cols)
    assert list(got) == [-1, idx[7], idx[3], idx[3], -1, -1]
    # polygons: a cell cut by an edge goes to the zone that covers most of it
    polys = gpd.GeoDataFrame(
        {"code": [1, 2]},
        geometry=[box(0, 0, 43, 100), box(43, 0, 100, 100)],  # the edge at x = 43: 30 % / 70 %
        crs="EPSG:3413",
    )
    names = {1: "west", 2: "east"}
    cover = prepare_zones(zone_coverage_from_polygons(polys, grid, "code", names), grid, names)
    west, east = cover.codes.index(1), cover.codes.index(2)
    got = cover.zone_at(np.array([2, 2, 2, 5]), np.array([0, 4, 5, 3]))
    assert list(got) == [west, east, east, west]
