"""Horizon tables in the wrong units or spellings: each passes every range check and would
give stocks wrong by a factor, so socmap says so (warnings naming the file and column), and
inputs that are right are read right (projected coordinates, ids with stray blanks)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest

from mapping.depths import compute_stocks
from mapping.exceptions import HorizonTableError
from mapping.profiles import check_horizons, read_horizons

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_rasters" / "profiles.csv"

# one profile; by hand (docs/stocks.md): 2 % x 1.2 x 10 cm x 0.9 = 2.16, 1 % x 1.4 x 20 cm
# = 2.80, 0.5 % x 1.5 x 70 cm x 0.8 = 4.20 kg C m-2, so 0-30 cm 4.96 and 0-100 cm 9.16
ROWS = [
    ("A", 120.5, 68.5, 0, 10, 2.0, 1.2, 10),
    ("A", 120.5, 68.5, 10, 30, 1.0, 1.4, 0),
    ("A", 120.5, 68.5, 30, 100, 0.5, 1.5, 20),
]
COLS = ["profile_id", "lon", "lat", "top_cm", "bottom_cm", "soc_pct"]
COLS += ["bulk_density_g_cm3", "coarse_fraction_pct"]


def _table(tmp_path: Path, df: pd.DataFrame, name: str = "h.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _stocks(path: Path, crs: str | None = None) -> pd.Series:
    horizons = read_horizons(path, crs=crs)
    out = compute_stocks(horizons, [(0, 30), (0, 100)], method="linear").stocks
    return out.set_index(["profile_id", "top_cm", "bottom_cm"])["soc_stock_kg_m2"]


def _messages(path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_horizons(read_horizons(path), str(path))
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _many(scale: dict[str, float], n: int = 6) -> pd.DataFrame:
    """``n`` copies of the profile at other places, columns scaled."""
    df = pd.DataFrame(ROWS * n, columns=COLS)
    df["profile_id"] = np.repeat([f"P{i}" for i in range(n)], len(ROWS))
    df["lon"] += np.repeat(np.arange(n) * 0.1, len(ROWS))
    for col, f in scale.items():
        df[col] = df[col] * f
    return df


def test_the_reference_profile_matches_the_hand_calculation(tmp_path: Path) -> None:
    path = _table(tmp_path, pd.DataFrame(ROWS, columns=COLS))
    got = _stocks(path)
    assert got.loc[("A", 0, 30)] == pytest.approx(4.96, abs=1e-9)
    assert got.loc[("A", 0, 100)] == pytest.approx(9.16, abs=1e-9)
    assert _messages(path) == []


def test_the_sample_table_raises_no_unit_warning() -> None:
    assert _messages(SAMPLE) == []


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ({"soc_pct": 0.01}, r"soc_pct: all 18 values are at most 1 % .*100 times too small"),
        ({"soc_pct": 10.0}, r"soc_pct x bulk_density_g_cm3: the median horizon holds 140 kg C"),
        ({"top_cm": 10.0, "bottom_cm": 10.0}, r"bottom_cm: the median profile ends at 1000 cm.*mm"),
        ({"top_cm": 0.01, "bottom_cm": 0.01}, r"bottom_cm: the median profile ends at 1 cm.*in m "),
    ],
    ids=["soc-as-fraction", "soc-in-g-per-kg", "depths-in-mm", "depths-in-m"],
)
def test_values_in_another_unit_are_warned_of(
    tmp_path: Path, scale: dict[str, float], expected: str
) -> None:
    path = _table(tmp_path, _many(scale))
    found = _messages(path)
    assert len(found) == 1, found
    assert str(path) in found[0]
    assert pd.Series(found).str.contains(expected).all(), found


def test_the_density_of_g_per_kg_read_as_percent_by_hand(tmp_path: Path) -> None:
    # SOC x 10 x BD kg m-3: 20 x 1.2 x 10 = 240, 10 x 1.4 x 10 = 140, 5 x 1.5 x 10 = 75; the
    # median 140 is above the densest peats (~100); in % the same horizons hold 24 / 14 / 7.5
    path = _table(tmp_path, _many({"soc_pct": 10.0}, n=2))
    (msg,) = _messages(path)
    assert "the median horizon holds 140 kg C" in msg
    assert _messages(_table(tmp_path, _many({}, n=2), "pct.csv")) == []


@pytest.mark.parametrize(
    ("column", "canonical"),
    [
        ("BD", "bulk_density_g_cm3"),
        ("bulk_dens", "bulk_density_g_cm3"),
        ("CF", "coarse_fraction_pct"),
        ("rock_fragments_pct", "coarse_fraction_pct"),
        ("Area share", "horizon_area_pct"),
    ],
)
def test_common_spellings_of_optional_columns_are_named(
    tmp_path: Path, column: str, canonical: str
) -> None:
    df = pd.DataFrame(ROWS, columns=COLS)
    if canonical in df:
        df = df.rename(columns={canonical: column})
    else:
        df[column] = 100.0
    path = _table(tmp_path, df)
    (msg,) = _messages(path)
    assert f"column {column!r} is not used; if it is {canonical}, map it" in msg
    # left unmapped it is ignored: bulk density estimated, no coarse fragments
    if canonical != "horizon_area_pct":
        assert _stocks(path).loc[("A", 0, 30)] != pytest.approx(4.96, abs=0.01)


def test_ids_with_stray_blanks_are_one_profile_and_blank_ids_none(tmp_path: Path) -> None:
    df = pd.DataFrame(ROWS, columns=COLS)
    df["profile_id"] = ["A", "A ", " A"]
    got = _stocks(_table(tmp_path, df))
    assert list(got.index.get_level_values("profile_id").unique()) == ["A"]
    assert got.loc[("A", 0, 100)] == pytest.approx(9.16, abs=1e-9)
    df["profile_id"] = ["A", "A", "  "]
    path = _table(tmp_path, df, "blank.csv")
    with pytest.raises(HorizonTableError, match=r"line 4: profile_id is missing"):
        check_horizons(read_horizons(path), str(path))


def test_profiles_in_a_projected_crs_keep_their_metres(tmp_path: Path) -> None:
    """``profiles.crs: EPSG:6931``: lon/lat hold easting and northing, which are no
    longitudes; the stocks are those of the same table in degrees."""
    horizons = pd.read_csv(SAMPLE).head(200)
    degrees = _table(tmp_path, horizons, "deg.csv")
    x, y = pyproj.Transformer.from_crs(4326, 6931, always_xy=True).transform(
        horizons["lon"].to_numpy(), horizons["lat"].to_numpy()
    )
    assert np.abs(x).max() > 1e5  # far outside any longitude
    metres = _table(tmp_path, horizons.assign(lon=x, lat=y), "m.csv")
    pd.testing.assert_series_equal(_stocks(metres, crs="EPSG:6931"), _stocks(degrees))
    valid, _ = check_horizons(read_horizons(metres, crs="EPSG:6931"), str(metres))
    np.testing.assert_array_equal(valid["lon"], x)
    # read as degrees (no profiles.crs, or a geographic one) the same table is refused
    for crs in (None, "EPSG:4326"):
        with pytest.raises(HorizonTableError, match=r"lon .* outside \[-180, 360\)"):
            check_horizons(read_horizons(metres, crs=crs), str(metres))


def test_coarse_fragments_as_fractions_in_some_profiles_are_warned_of(tmp_path: Path) -> None:
    # six copies of the reference profile; P1-P3 from a survey that gave fractions
    df = _many({}, n=6).astype({"coarse_fraction_pct": float})
    df.loc[df["profile_id"].isin(["P1", "P2", "P3"]), "coarse_fraction_pct"] /= 100
    path = _table(tmp_path, df)
    (msg,) = _messages(path)
    assert msg.startswith(f"{path}: coarse_fraction_pct: 3 profile(s) ('P1', 'P2', 'P3') give")
    assert "while 3 give percent up to 20;" in msg
    # what it costs, by hand: 2 % x 1.2 x 10 cm x 0.999 = 2.3976, 2.80, 0.5 % x 1.5 x 70 cm
    # x 0.998 = 5.2395 kg C m-2: 0-100 cm 10.437 against 9.16 (+14 %)
    got = _stocks(path)
    assert got.loc[("P1", 0, 100)] == pytest.approx(10.4371, abs=1e-4)
    assert got.loc[("P0", 0, 100)] == pytest.approx(9.16, abs=1e-9)


def test_trace_gravel_below_one_percent_is_not_taken_for_fractions(tmp_path: Path) -> None:
    # a percent table of 40 profiles, three with only trace gravel (0.5 %) on every horizon
    df = _many({}, n=40).astype({"coarse_fraction_pct": float})
    trace = df["profile_id"].isin(["P1", "P2", "P3"]) & (df["coarse_fraction_pct"] > 0)
    df.loc[trace, "coarse_fraction_pct"] = 0.5
    assert _messages(_table(tmp_path, df)) == []


def test_a_bottom_coded_999_is_warned_of_and_a_deep_core_is_not(tmp_path: Path) -> None:
    df = _many({}, n=6)
    df.loc[2, "bottom_cm"] = 999  # P0's last horizon, line 4 of the file
    (msg,) = _messages(_table(tmp_path, df))
    assert "bottom_cm: 1 horizon(s) end at 999 cm (first: profile 'P0' line 4)" in msg
    df.loc[2, "bottom_cm"] = 1000  # a permafrost core 10 m deep
    assert _messages(_table(tmp_path, df, "core.csv")) == []


def test_the_same_pedon_under_two_ids_is_warned_of(tmp_path: Path) -> None:
    # P1 entered again as "dup-P1" (two merged surveys): same place, same horizons
    df = _many({}, n=3)
    twin = df[df["profile_id"] == "P1"].assign(profile_id="dup-P1")
    path = _table(tmp_path, pd.concat([df, twin]))
    (msg,) = _messages(path)
    assert msg.startswith(f"{path}: 1 profile(s) repeat another's coordinates and horizons")
    assert "(e.g. 'P1' and 'dup-P1')" in msg
    # the same horizons at another place, or another horizon at the same place: no twin
    moved = twin.assign(lon=twin["lon"] + 0.01)
    assert _messages(_table(tmp_path, pd.concat([df, moved]), "moved.csv")) == []
    other = twin.assign(soc_pct=twin["soc_pct"] * 1.1)
    assert _messages(_table(tmp_path, pd.concat([df, other]), "other.csv")) == []
