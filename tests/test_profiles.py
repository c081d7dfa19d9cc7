"""Horizon tables: reading, column mapping, validity rules, bulk-density PTFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapping.bulk_density import PTFS, get_ptf, impute_bulk_density
from mapping.exceptions import ConfigError, HorizonTableError
from mapping.profiles import check_horizons, parse_column_options, read_horizons

HEADER = "profile_id,lon,lat,top_cm,bottom_cm,soc_pct,bulk_density_g_cm3,coarse_fraction_pct,horizon_area_pct"
GOOD = [
    "P1,150.5,68.2,0,10,35,0.15,0,100",
    "P1,150.5,68.2,10,20,8,,5,100",
    "P1,150.5,68.2,20,50,6,1.1,10,60",
    "P1,150.5,68.2,20,50,1,1.5,10,40",
    "P2,151.0,68.0,0,30,2,1.2,10,100",
]


def write_csv(tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "h.csv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def frame(lines: list[str], header: str = HEADER, tmp_path: Path | None = None) -> pd.DataFrame:
    import io

    df = pd.read_csv(io.StringIO("\n".join([header, *lines]) + "\n"))
    df["_line"] = np.arange(len(df)) + 2
    df.attrs["line_label"] = "line"
    return df


# --------------------------------------------------------------------------- reading
def test_read_csv_keeps_lines_and_extra_columns(tmp_path: Path) -> None:
    p = write_csv(tmp_path, [*[g + ",x" for g in GOOD]], header=HEADER + ",horizon_name")
    df = read_horizons(p)
    assert df["_line"].tolist() == [2, 3, 4, 5, 6]
    assert df.attrs["line_label"] == "line"
    assert "horizon_name" in df.columns
    valid, invalid = check_horizons(df, str(p))
    assert len(valid) == 5
    assert len(invalid) == 0
    assert "horizon_name" in valid.columns


def test_column_mapping(tmp_path: Path) -> None:
    header = "site,x,y,depth_top,depth_bottom,OC_g_kg,BD"
    p = write_csv(tmp_path, ["A,10,60,0,30,20,1.2"], header=header)
    cols = {
        "profile_id": "site",
        "lon": "x",
        "lat": "y",
        "top_cm": "depth_top",
        "bottom_cm": "depth_bottom",
        "soc_g_kg": "OC_g_kg",
        "bulk_density_g_cm3": "BD",
    }
    valid, _ = check_horizons(read_horizons(p, columns=cols), str(p))
    assert valid["soc_pct"].tolist() == [2.0]
    assert valid["coarse_fraction_pct"].tolist() == [0.0]  # optional columns default
    assert valid["horizon_area_pct"].tolist() == [100.0]
    assert parse_column_options(["soc_pct=OC", " lon = x "]) == {"soc_pct": "OC", "lon": "x"}
    with pytest.raises(ConfigError, match="CANONICAL=NAME"):
        parse_column_options(["soc_pct"])


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"soc": "OC"}, "unknown canonical column 'soc'"),
        ({"soc_pct": "OC"}, "column 'OC' \\(mapped to soc_pct\\) not found"),
        ({"soc_pct": "bulk_density_g_cm3"}, "both 'soc_pct' and 'bulk_density_g_cm3'"),
    ],
)
def test_column_mapping_errors(tmp_path: Path, columns: dict, match: str) -> None:
    p = write_csv(tmp_path, GOOD)
    with pytest.raises(HorizonTableError, match=match) as info:
        read_horizons(p, columns=columns)
    assert "h.csv" in str(info.value)


def test_read_parquet_and_geopackage(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    df = frame(GOOD).drop(columns="_line")
    pq = tmp_path / "h.parquet"
    df.to_parquet(pq)
    got = read_horizons(pq)
    assert got.attrs["line_label"] == "row"
    assert got["_line"].tolist() == [1, 2, 3, 4, 5]
    pd.testing.assert_frame_equal(got.drop(columns="_line"), df)

    gdf = gpd.GeoDataFrame(
        df.drop(columns=["lon", "lat"]),
        geometry=[Point(x, y) for x, y in zip(df.lon, df.lat, strict=True)],
        crs="EPSG:4326",
    )
    gp = tmp_path / "h.gpkg"
    gdf.to_file(gp, layer="horizons")
    got = read_horizons(gp, layer="horizons")
    np.testing.assert_allclose(got["lon"], df["lon"])
    np.testing.assert_allclose(got["lat"], df["lat"])
    valid, _ = check_horizons(got, str(gp))
    assert len(valid) == 5


def _projected_gpkg(tmp_path: Path, crs: str = "EPSG:6931") -> Path:
    # P1 at x = 1e6 m, y = 0 (towards 90°E from the pole), P2 at (2.05e6, 2.05e6)
    import geopandas as gpd
    from shapely.geometry import Point

    df = frame(GOOD).drop(columns=["_line", "lon", "lat"])
    at = {"P1": Point(1e6, 0.0), "P2": Point(2.05e6, 2.05e6)}
    gdf = gpd.GeoDataFrame(df, geometry=[at[p] for p in df["profile_id"]], crs=crs)
    gp = tmp_path / "h.gpkg"
    gdf.to_file(gp, layer="horizons")
    return gp


def test_projected_geopackage_points_become_longitude_latitude(tmp_path: Path) -> None:
    from scipy.optimize import brentq

    from mapping.grid import authalic_q

    got = read_horizons(_projected_gpkg(tmp_path)).groupby("profile_id").first()
    # hand check of P1 on the north-polar LAEA of WGS84 (Snyder 1987, polar aspect):
    # rho = a sqrt(q_p - q(lat)) = 1e6 m, lon = atan2(x, -y) = 90°
    a, e2 = 6378137.0, 0.0066943799901413165
    qp = authalic_q(np.pi / 2, e2)
    lat = np.degrees(brentq(lambda f: a * np.sqrt(qp - authalic_q(f, e2)) - 1e6, 1.0, 1.5707))
    assert got.loc["P1", "lon"] == pytest.approx(90.0, abs=1e-9)
    assert got.loc["P1", "lat"] == pytest.approx(lat, abs=1e-9)
    assert got.loc["P2", "lon"] == pytest.approx(135.0, abs=1e-9)  # atan2(2.05e6, -2.05e6)
    # profiles.crs naming EPSG:4326 explicitly is the same as leaving it out
    again = read_horizons(_projected_gpkg(tmp_path), crs="EPSG:4326").groupby("profile_id").first()
    pd.testing.assert_frame_equal(again, got)


def test_projected_geopackage_with_profiles_crs_of_the_file_keeps_its_metres(
    tmp_path: Path,
) -> None:
    from mapping.grid import Grid

    got = read_horizons(_projected_gpkg(tmp_path), crs="EPSG:6931")
    got = got.groupby("profile_id").first()
    assert (got.loc["P2", "lon"], got.loc["P2", "lat"]) == (2.05e6, 2.05e6)
    # read in profiles.crs: P2 in row (7e6 - 2.05e6) // 1e5, col (7e6 + 2.05e6) // 1e5;
    # P1 on the edges of row 70 and col 80 (edges go to the larger index)
    grid = Grid.from_bounds((-7e6, -7e6, 7e6, 7e6), 1e5, "EPSG:6931")
    rows, cols = grid.rowcol(got["lon"].to_numpy(), got["lat"].to_numpy())
    assert (rows[1], cols[1]) == (49, 90) and (rows[0], cols[0]) == (70, 80)


def test_geopackage_in_another_crs_than_profiles_crs_is_an_error(tmp_path: Path) -> None:
    gp = _projected_gpkg(tmp_path)
    with pytest.raises(
        HorizonTableError, match=r"h\.gpkg: the points are in EPSG:6931, not in EPSG:3413"
    ):
        read_horizons(gp, crs="EPSG:3413")


def test_geographic_geopackage_on_another_datum_is_converted_to_wgs84(tmp_path: Path) -> None:
    import geopandas as gpd
    import pyproj
    from shapely.geometry import Point

    df = frame(GOOD).drop(columns=["_line", "lon", "lat"])
    gp = tmp_path / "osgb36.gpkg"  # OSGB36 longitude/latitude
    gpd.GeoDataFrame(df, geometry=[Point(-1.5, 52.0)] * len(df), crs="EPSG:4277").to_file(gp)
    got = read_horizons(gp)
    lon, lat = pyproj.Transformer.from_crs(4277, 4326, always_xy=True).transform(-1.5, 52.0)
    assert abs(lon + 1.5) > 1e-4  # the datum shift is ~100 m
    np.testing.assert_allclose(got["lon"], lon, atol=1e-12)
    np.testing.assert_allclose(got["lat"], lat, atol=1e-12)
    # named as profiles.crs, the file's own geographic CRS is kept
    np.testing.assert_array_equal(read_horizons(gp, crs="EPSG:4277")["lon"], -1.5)


# --------------------------------------------------------------------------- validity rules
def test_legitimate_cryoturbation_and_missing_bd_are_not_errors() -> None:
    valid, invalid = check_horizons(frame(GOOD), "h.csv")
    assert len(valid) == 5 and len(invalid) == 0
    assert valid["bulk_density_g_cm3"].isna().sum() == 1
    assert valid["soc_g_kg"].tolist() == [350, 80, 60, 10, 20]


def test_area_shares_within_one_percentage_point_are_accepted() -> None:
    lines = ["P1,10,60,0,20,2,1.2,0,33", "P1,10,60,0,20,3,1.2,0,33", "P1,10,60,0,20,4,1.2,0,33"]
    valid, _ = check_horizons(frame(lines), "h.csv")
    assert len(valid) == 3


# (rows, expected fragments of the message); data rows start on line 2
BAD = {
    "top_ge_bottom": (
        ["A,10,60,0,10,2,1.2,0,100", "A,10,60,10,10,2,1.2,0,100"],
        ["'A'", "line 3", "top_cm 10 >= bottom_cm 10"],
    ),
    "negative_depth": (["A,10,60,-5,10,2,1.2,0,100"], ["line 2", "negative"]),
    "gap": (
        ["A,10,60,0,10,2,1.2,0,100", "A,10,60,15,30,2,1.2,0,100"],
        ["lines 2, 3", "gap between 10 and 15 cm"],
    ),
    "overlap": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,10,30,2,1.2,0,100"],
        ["lines 2, 3", "overlapping horizons at 10-20 cm"],
    ),
    "area_sum": (
        ["A,10,60,0,20,2,1.2,0,60", "A,10,60,0,20,3,1.2,0,30"],
        ["lines 2, 3", "area shares at 0-20 cm sum to 90 %"],
    ),
    "area_alone": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,20,40,2,1.2,0,70"],
        ["line 3", "sum to 70 %"],
    ),
    "area_zero": (["A,10,60,0,20,2,1.2,0,0"], ["line 2", "horizon_area_pct 0 outside (0, 100]"]),
    "soc_negative": (["A,10,60,0,20,-1,1.2,0,100"], ["line 2", "soc_pct -1 is negative"]),
    "soc_above_100": (["A,10,60,0,20,101,1.2,0,100"], ["line 2", "soc_pct 101 above 100 %"]),
    "bd_low": (
        ["A,10,60,0,20,2,0.01,0,100"],
        ["line 2", "bulk_density_g_cm3 0.01 outside 0.05-2.65"],
    ),
    "bd_high": (["A,10,60,0,20,2,2.9,0,100"], ["bulk_density_g_cm3 2.9 outside"]),
    "cf_negative": (["A,10,60,0,20,2,1.2,-3,100"], ["coarse_fraction_pct -3 outside 0-100"]),
    "cf_above": (["A,10,60,0,20,2,1.2,120,100"], ["coarse_fraction_pct 120 outside 0-100"]),
    "lat": (["A,10,95,0,20,2,1.2,0,100"], ["line 2", "lat 95 outside [-90, 90]"]),
    "lon_high": (["A,360,60,0,20,2,1.2,0,100"], ["lon 360 outside [-180, 360)"]),
    "lon_low": (["A,-181,60,0,20,2,1.2,0,100"], ["lon -181 outside"]),
    "duplicate": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,0,20,2,1.2,0,100"],
        ["lines 2, 3", "duplicate rows"],
    ),
    "conflicting": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,0,20,3,1.2,0,100"],
        ["lines 2, 3", "conflicting rows"],
    ),
    "coords": (
        ["A,10,60,0,20,2,1.2,0,100", "A,11,60,20,40,2,1.2,0,100"],
        ["conflicting coordinates"],
    ),
    "text": (["A,10,60,0,20,n.d.,1.2,0,100"], ["line 2", "soc_pct is not a number ('n.d.')"]),
    "text_depth": (["A,10,60,0,2O,2,1.2,0,100"], ["bottom_cm is not a number ('2O')"]),
    "missing_soc": (["A,10,60,0,20,,1.2,0,100"], ["line 2", "soc_pct is missing"]),
    "missing_id": (
        [",10,60,0,20,2,1.2,0,100"],
        ["row without profile_id", "line 2", "profile_id is missing"],
    ),
    "infinite": (["A,10,60,0,20,inf,1.2,0,100"], ["line 2: soc_pct is not finite; fix"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_horizons_raise_one_line_naming_profile_and_line(case: str) -> None:
    lines, fragments = BAD[case]
    good = ["Z,10,60,0,30,2,1.2,0,100"]  # after the bad rows, which start on line 2
    with pytest.raises(HorizonTableError) as info:
        check_horizons(frame(lines + good), "tables/h.csv")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("tables/h.csv: ")
    for frag in fragments:
        assert frag in msg, msg
    assert "'Z'" not in msg  # the good profile is not blamed
    valid, invalid = check_horizons(frame(lines + good), "tables/h.csv", on_invalid="skip")
    assert valid["profile_id"].unique().tolist() == ["Z"]
    assert len(invalid) == 1


def test_line_numbers_count_the_header(tmp_path: Path) -> None:
    lines = [*GOOD, "P3,10,60,0,20,2,7.5,0,100"]  # sixth data row = line 7
    p = write_csv(tmp_path, lines)
    with pytest.raises(HorizonTableError, match=r"profile 'P3' line 7: bulk_density_g_cm3 7.5"):
        check_horizons(read_horizons(p), str(p))


def test_missing_required_column(tmp_path: Path) -> None:
    p = write_csv(tmp_path, ["A,10,0,30,2"], header="profile_id,lon,top_cm,bottom_cm,soc_pct")
    with pytest.raises(HorizonTableError, match="missing required column lat"):
        check_horizons(read_horizons(p), str(p))
    p = write_csv(tmp_path, ["A,10,60,0,30"], header="profile_id,lon,lat,top_cm,bottom_cm")
    with pytest.raises(HorizonTableError, match=r"missing required column soc_pct \(or soc_g_kg\)"):
        check_horizons(read_horizons(p), str(p))


@pytest.mark.parametrize(
    ("text", "match"), [("", "file is empty"), (HEADER + "\n", "header but no rows")]
)
def test_empty_and_header_only_files(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "h.csv"
    p.write_text(text)
    with pytest.raises(HorizonTableError, match=match):
        read_horizons(p)


def test_soc_in_both_units_must_agree() -> None:
    header = "profile_id,lon,lat,top_cm,bottom_cm,soc_pct,soc_g_kg"
    valid, _ = check_horizons(frame(["A,10,60,0,30,2,20", "A,10,60,30,60,,15"], header), "h.csv")
    assert valid["soc_g_kg"].tolist() == [20, 15]
    with pytest.raises(HorizonTableError, match="soc_pct 2 and soc_g_kg 25 disagree"):
        check_horizons(frame(["A,10,60,0,30,2,25"], header), "h.csv")
    with pytest.raises(HorizonTableError, match="soc_g_kg 1200 above 100 %"):
        check_horizons(
            frame(["A,10,60,0,30,1200"], "profile_id,lon,lat,top_cm,bottom_cm,soc_g_kg"), "h.csv"
        )


def test_tolerance_accepts_small_gaps_and_overlaps() -> None:
    lines = [
        "A,10,60,0,10,2,1.2,0,100",
        "A,10,60,10.5,20,2,1.2,0,100",
        "A,10,60,19.8,30,2,1.2,0,100",
    ]
    with pytest.raises(HorizonTableError):
        check_horizons(frame(lines), "h.csv")
    valid, _ = check_horizons(frame(lines), "h.csv", tolerance_cm=1.0)
    assert len(valid) == 3


def test_skip_drops_invalid_profiles_and_reports_them() -> None:
    lines = [
        *GOOD,
        "P3,10,60,0,10,-2,1.2,0,100",
        "P3,10,60,10,20,2,1.2,0,100",
        "P4,10,60,0,10,2,1.2,0,100",
        "P4,10,60,20,30,2,1.2,0,100",
    ]
    valid, invalid = check_horizons(frame(lines), "h.csv", on_invalid="skip")
    assert sorted(valid["profile_id"].unique()) == ["P1", "P2"]
    assert invalid["profile_id"].tolist() == ["P3", "P4"]
    assert invalid["lines"].tolist() == ["7", "9;10"]
    assert "soc_pct -2 is negative" in invalid["reason"].iloc[0]
    assert "gap between 10 and 20 cm" in invalid["reason"].iloc[1]


def test_skip_with_nothing_left_is_an_error() -> None:
    with pytest.raises(HorizonTableError, match="no valid profile left"):
        check_horizons(frame(["A,10,60,0,10,-2,1.2,0,100"]), "h.csv", on_invalid="skip")


def test_many_problems_stay_on_one_line() -> None:
    lines = [f"P{i},10,60,0,10,-{i + 1},1.2,0,100" for i in range(50)]
    with pytest.raises(HorizonTableError) as info:
        check_horizons(frame(lines), "h.csv")
    msg = str(info.value)
    assert "\n" not in msg
    assert "(+47 more invalid profiles)" in msg
    assert "--on-invalid skip" in msg


def test_a_profile_breaking_a_rule_on_every_line_is_named_briefly() -> None:
    lines = [f"P1,2041337,1221457,{10 * i},{10 * i + 10},2,1.2,0,100" for i in range(12)]
    with pytest.raises(HorizonTableError) as info:
        check_horizons(frame(lines), "h.csv")
    msg = str(info.value)
    # 24 problems (lon and lat on 12 lines): the first three, and how many more
    assert msg.count("outside") == 3 and "(+21 more)" in msg
    assert "profile 'P1' line 2: lon 2.04134e+06 outside [-180, 360); line 3: lon" in msg
    _, report = check_horizons(frame([*lines, *GOOD]), "h.csv", on_invalid="skip")
    assert report.loc[0, "reason"].count("outside") == 24  # the report keeps every one


# --------------------------------------------------------------------------- bulk density
def test_hossain_2015_ptf_values() -> None:
    f = get_ptf("default")
    assert f is PTFS["hossain2015"]
    # mineral below 17 % SOC, organic from 17 %
    assert float(f(2.0)) == pytest.approx(0.701 + 0.952 * np.exp(-0.29 * 2.0))  # 1.234
    assert float(f(16.9)) == pytest.approx(0.701 + 0.952 * np.exp(-0.29 * 16.9))
    assert float(f(17.0)) == pytest.approx(0.074 + 2.632 * np.exp(-0.076 * 17.0))
    assert float(f(45.0)) == pytest.approx(0.16, abs=0.005)  # peat
    assert f.is_organic(np.array([16.9, 17.0])).tolist() == [False, True]
    comb = get_ptf("hossain2015_combined")
    assert float(comb(0.0)) == pytest.approx(0.071 + 1.322)
    # monotone decreasing in SOC within each branch
    soc = np.linspace(0, 16.9, 50)
    assert (np.diff(f(soc)) < 0).all()


def test_impute_only_fills_missing_values() -> None:
    bd, flag = impute_bulk_density(np.array([2.0, 30.0, 5.0]), np.array([1.1, np.nan, np.nan]))
    assert flag.tolist() == [False, True, True]
    assert bd[0] == 1.1
    assert bd[1] == pytest.approx(0.074 + 2.632 * np.exp(-0.076 * 30))
    assert bd[2] == pytest.approx(0.701 + 0.952 * np.exp(-0.29 * 5))


def test_unknown_ptf() -> None:
    with pytest.raises(ConfigError, match=r"unknown bulk-density PTF 'adams'.*hossain2015"):
        get_ptf("adams")
