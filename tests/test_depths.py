"""Stock arithmetic, the equal-area spline and depth harmonisation (mapping.depths)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping.bulk_density import get_ptf
from mapping.depths import (
    build_pieces,
    clipped_quadratic_integral,
    compute_stocks,
    fit_ea_spline,
)
from mapping.exceptions import ConfigError

DATA = Path(__file__).parent / "data"
CUMULATIVE = [(0, 30), (0, 100), (0, 200), (0, 300)]


def profile(rows: list[tuple], pid: str = "P1", **extra: object) -> pd.DataFrame:
    """Horizons (top, bottom, soc_pct, bd[, cf[, area]]) of one profile."""
    recs = []
    for r in rows:
        top, bottom, soc, bd, *rest = r
        cf = rest[0] if len(rest) > 0 else 0.0
        area = rest[1] if len(rest) > 1 else 100.0
        recs.append(
            dict(
                profile_id=pid,
                lon=150.0,
                lat=68.0,
                top_cm=top,
                bottom_cm=bottom,
                soc_pct=soc,
                bulk_density_g_cm3=bd,
                coarse_fraction_pct=cf,
                horizon_area_pct=area,
                **extra,
            )
        )
    return pd.DataFrame(recs)


def stock(df: pd.DataFrame, top: float, bottom: float, pid: object = "P1") -> float:
    row = df[(df.profile_id == pid) & (df.top_cm == top) & (df.bottom_cm == bottom)]
    assert len(row) == 1, f"no single row for {pid} {top}-{bottom}"
    return float(row["soc_stock_kg_m2"].iloc[0])


# --------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("method", ["spline", "linear"])
def test_horizon_stock_matches_hand_calculation(method: str) -> None:
    # SOC 2 % = 20 g/kg, BD 1.2, 30 cm, CF 10 %: 20 * 1.2 * 30 * 0.9 / 100 = 6.48 kg C m-2
    h = profile([(0, 30, 2.0, 1.2, 10.0)])
    res = compute_stocks(h, [(0, 30)], method=method)
    assert stock(res.stocks, 0, 30) == pytest.approx(6.48, rel=1e-12)
    # the same horizon given in g/kg
    h2 = h.drop(columns="soc_pct").assign(soc_g_kg=20.0)
    assert stock(compute_stocks(h2, [(0, 30)], method=method).stocks, 0, 30) == pytest.approx(6.48)


def test_cryoturbated_pair_is_combined_by_area_share() -> None:
    # Ajj (60 %) and Bgjj (40 %) both 20-50 cm
    h = profile(
        [
            (0, 20, 5.0, 0.9),
            (20, 50, 6.0, 1.1, 10.0, 60.0),
            (20, 50, 1.0, 1.5, 10.0, 40.0),
        ]
    )
    res = compute_stocks(h, [(0, 20), (20, 50), (0, 50)], method="linear")
    top = 50 * 0.9 * 20 / 100  # 9.0
    ajj = 60 * 1.1 * 30 * 0.9 / 100 * 0.60
    bgjj = 10 * 1.5 * 30 * 0.9 / 100 * 0.40
    assert stock(res.stocks, 0, 20) == pytest.approx(top)
    assert stock(res.stocks, 20, 50) == pytest.approx(ajj + bgjj)  # 10.692 + 1.62
    assert stock(res.stocks, 0, 50) == pytest.approx(top + ajj + bgjj)
    assert res.stocks["n_horizons"].tolist() == [1, 2, 3]


def test_nested_pockets_combine_per_elementary_layer() -> None:
    # a 60 % tongue over 20-50 cm beside a 40 % pocket split at 40 cm
    h = profile(
        [
            (0, 20, 5.0, 0.9),
            (20, 50, 6.0, 1.0, 0.0, 60.0),
            (20, 40, 2.0, 1.0, 0.0, 40.0),
            (40, 50, 1.0, 1.0, 0.0, 40.0),
        ]
    )
    res = compute_stocks(h, [(20, 40), (40, 50)], method="linear")
    assert stock(res.stocks, 20, 40) == pytest.approx((0.6 * 60 + 0.4 * 20) * 20 / 100)
    assert stock(res.stocks, 40, 50) == pytest.approx((0.6 * 60 + 0.4 * 10) * 10 / 100)


def test_nitrogen_stock_and_cn_ratio() -> None:
    h = profile([(0, 10, 20.0, 0.3), (10, 40, 2.0, 1.2)])
    h["n_pct"] = [1.0, 0.2]
    res = compute_stocks(h, [(0, 10), (0, 40)], method="linear").stocks
    c0 = 200 * 0.3 * 10 / 100  # 6.0
    n0 = 10 * 0.3 * 10 / 100  # 0.3
    c1, n1 = 20 * 1.2 * 30 / 100, 2 * 1.2 * 30 / 100  # 7.2, 0.72
    assert res["tn_stock_kg_m2"].tolist() == pytest.approx([n0, n0 + n1])
    assert res["cn_ratio"].tolist() == pytest.approx([c0 / n0, (c0 + c1) / (n0 + n1)])
    assert res["cn_ratio"].iloc[0] == pytest.approx(20.0)


def test_missing_nitrogen_in_a_profile_gives_nan_not_zero() -> None:
    h = pd.concat([profile([(0, 30, 2.0, 1.2)], "A"), profile([(0, 30, 2.0, 1.2)], "B")])
    h["n_g_kg"] = [1.5, np.nan]
    res = compute_stocks(h, [(0, 30)]).stocks.set_index("profile_id")
    assert res.loc["A", "tn_stock_kg_m2"] == pytest.approx(15 * 1.2 * 30 / 1000 * 10 / 10)
    assert np.isnan(res.loc["B", "tn_stock_kg_m2"])
    assert np.isnan(res.loc["B", "cn_ratio"])


def test_missing_bulk_density_is_imputed_and_flagged() -> None:
    h = profile([(0, 10, 30.0, np.nan), (10, 30, 2.0, 1.3), (30, 60, 1.0, np.nan)])
    res = compute_stocks(h, [(0, 10), (0, 30), (30, 60), (0, 60)], method="linear").stocks
    bd_org = get_ptf("hossain2015")(30.0)
    assert float(bd_org) == pytest.approx(0.074 + 2.632 * np.exp(-0.076 * 30))
    assert stock(res, 0, 10) == pytest.approx(300 * bd_org * 10 / 100)
    assert res["bd_imputed"].tolist() == [1, 1, 1, 2]
    assert res["n_horizons"].tolist() == [1, 2, 1, 3]
    # another PTF gives another stock for the same horizon
    other = compute_stocks(h, [(0, 10)], bulk_density_ptf="hossain2015_combined").stocks
    assert stock(other, 0, 10) == pytest.approx(
        300 * (0.071 + 1.322 * np.exp(-0.071 * 30)) * 10 / 100
    )


# --------------------------------------------------------------------------- the seed's tables
def _seed() -> pd.DataFrame:
    return pd.read_csv(DATA / "seed_permafrost_soc_tables.csv")


def test_seed_table1_density_times_area_is_table2_storage() -> None:
    t = _seed().set_index("zone")
    # 10.7e6 km2 x 48.73 kg m-2 = 521.4 Pg (1 km2 = 1e6 m2, 1 Pg = 1e12 kg)
    assert t.loc["continuous", "area_km2"] * 1e6 * t.loc["continuous", "density_0_300"] / 1e12 == (
        pytest.approx(521.4, abs=0.05)
    )
    # every row, the total included (its density is a pooled mean, not the zones' area-weighted mean)
    for depth in ("0_30", "0_100", "0_300"):
        storage = t["area_km2"] * 1e6 * t[f"density_{depth}"] / 1e12
        np.testing.assert_allclose(storage, t[f"storage_pg_{depth}"], rtol=1e-3)
    # the zones' 0-200 cm storages in Table 2 are off by 0.5-2.4 % (seed READING.md)
    z = t.drop(index="total")
    off = z["area_km2"] * 1e6 * z["density_0_200"] / 1e12 / z["storage_pg_0_200"] - 1
    assert (off.abs() > 0.004).all()
    assert (off.abs() < 0.025).all()


@pytest.mark.parametrize("method", ["spline", "linear"])
def test_seed_tables_from_profiles(method: str) -> None:
    """Profiles built to the seed's zone densities give its storages back through compute_stocks."""
    t = _seed().set_index("zone")
    zones = t.drop(index="total")
    bounds = [0, 30, 100, 200, 300]
    frames = []
    for zone, r in zones.iterrows():
        cum = [0.0] + [r[f"density_0_{b}"] for b in bounds[1:]]
        rows = []
        for top, bottom, s0, s1 in zip(bounds[:-1], bounds[1:], cum[:-1], cum[1:], strict=True):
            bd = 1.0
            soc_g_kg = (s1 - s0) * 100 / ((bottom - top) * bd)  # stock = SOC * BD * thickness / 100
            rows.append((top, bottom, soc_g_kg / 10, bd))
        frames.append(profile(rows, pid=str(zone)))
    res = compute_stocks(pd.concat(frames), CUMULATIVE, method=method).stocks
    area = zones["area_km2"]
    for b in bounds[1:]:
        dens = res[res.bottom_cm == b].set_index("profile_id")["soc_stock_kg_m2"]
        np.testing.assert_allclose(dens[zones.index], zones[f"density_0_{b}"], rtol=1e-9)
        pg = dens[zones.index] * area * 1e6 / 1e12
        # Table 2's 0-200 cm column is not Table 1 x area (seed READING.md): test Table 1 x area there
        ref = (
            zones[f"storage_pg_0_{b}"] if b != 200 else zones[f"density_0_{b}"] * area * 1e6 / 1e12
        )
        np.testing.assert_allclose(pg, ref, rtol=1e-3)


# --------------------------------------------------------------------------- the spline
def test_spline_parameters_match_published_mpspline2_values() -> None:
    # mpspline2 tests/testthat/test_mpspline.R, mpspline_est1 with lam = 0.1
    f = fit_ea_spline(
        np.array([[0.0, 10, 20, 30]]),
        np.array([[10.0, 20, 30, 40]]),
        np.array([[5.4, 5.3, 5.6, 7.0]]),
        0.1,
    )
    assert f["s_bar"][0, 0] == pytest.approx(5.3938765799840498, rel=1e-12)
    assert f["b0"][0, 0] == 0
    assert f["b1"][0, 0] == pytest.approx(-0.015308550039877671, rel=1e-10)
    assert f["gamma"][0, 0] == pytest.approx(-0.00076542750199388358, rel=1e-10)
    assert f["alfa"][0, 0] == pytest.approx(5.4193908300505127, rel=1e-12)


def test_spline_two_horizons_by_hand() -> None:
    # n = 2, no gap: R = 2 (d1 + d2), Z = I + (12 lam / R) [[1, -1], [-1, 1]]
    lam, y = 0.1, np.array([10.0, 20.0])
    f = fit_ea_spline(np.array([[0.0, 10]]), np.array([[10.0, 20]]), y[None], lam)
    c = 12 * lam / 40
    diff = (y[0] - y[1]) / (1 + 2 * c)
    s1, s2 = (y.sum() + diff) / 2, (y.sum() - diff) / 2
    assert f["s_bar"][0] == pytest.approx([s1, s2])  # 10.2830, 19.7170
    slope = 6 / 40 * (s2 - s1)
    assert f["b1"][0] == pytest.approx([slope, 0])
    assert f["gamma"][0] == pytest.approx([slope / 20, -slope / 20])


def test_single_horizon_spline_is_constant() -> None:
    f = fit_ea_spline(np.array([[5.0]]), np.array([[45.0]]), np.array([[12.5]]), 0.1)
    assert f["alfa"][0, 0] == 12.5
    assert f["b0"][0, 0] == f["gamma"][0, 0] == 0


def test_spline_is_continuous_with_continuous_slope() -> None:
    rng = np.random.default_rng(3)
    u = np.array([[0.0, 8, 20, 45, 50, 90]])
    v = np.array([[8.0, 20, 40, 50, 80, 150]])  # gaps 40-45 and 80-90
    y = rng.uniform(1, 40, size=(1, 6))
    f = fit_ea_spline(u, v, y, 0.1)
    a, b0, g, b1 = f["alfa"][0], f["b0"][0], f["gamma"][0], f["b1"][0]
    th = v[0] - u[0]
    end_val = a + b0 * th + g * th**2
    end_slope = b0 + 2 * g * th
    np.testing.assert_allclose(end_slope, b1, atol=1e-12)
    for i in range(5):
        gap = u[0, i + 1] - v[0, i]
        # across the gap: linear with slope b1[i], reaching the next layer's top value
        np.testing.assert_allclose(end_val[i] + b1[i] * gap, a[i + 1], rtol=1e-10)
        np.testing.assert_allclose(b1[i], b0[i + 1], atol=1e-12)


def test_clipped_integral_matches_quadrature() -> None:
    rng = np.random.default_rng(7)
    c = rng.normal(size=(3, 200)) * np.array([[5.0], [1.0], [0.05]])
    c[2, :20] = 0  # some linear pieces
    t1 = rng.uniform(1, 40, 200)
    got = clipped_quadratic_integral(c[0], c[1], c[2], 0.0, t1)
    x = np.linspace(0, 1, 20_001)[:, None] * t1
    q = np.maximum(c[0] + c[1] * x + c[2] * x**2, 0)
    want = np.trapezoid(q, x, axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got >= 0).all()


def test_spline_preserves_each_horizon_stock() -> None:
    # organic over mineral: the raw spline with lam = 0.1 misses the thin layers' means
    top = np.array([0.0, 5, 12, 20, 45, 80])
    bottom = np.array([5.0, 12, 20, 45, 80, 140])
    dens = np.array([40.0, 32, 6, 12, 4, 3])  # kg C m-3
    pid = np.zeros(6, dtype=int)
    raw = build_pieces(pid, top, bottom, dens, "spline", 0.1, preserve_mass=False)
    fixed = build_pieces(pid, top, bottom, dens, "spline", 0.1)
    raw_err, fixed_err = [], []
    for a, b, d in zip(top, bottom, dens, strict=True):
        want = d * (b - a)
        raw_err.append(abs(raw.integrate(np.array([a]), np.array([b]), 1)[0, 0] / want - 1))
        fixed_err.append(abs(fixed.integrate(np.array([a]), np.array([b]), 1)[0, 0] / want - 1))
    assert max(raw_err) > 1e-3  # the correction is needed here ...
    assert max(fixed_err) < 1e-3  # ... and keeps every horizon's stock within 0.1 %
    z = np.linspace(0, 140, 1401)
    assert (fixed.evaluate(0, z) >= 0).all()


def test_spline_redistributes_within_an_interval_but_not_between_horizons() -> None:
    h = profile([(0, 10, 30.0, 0.2), (10, 30, 3.0, 1.1), (30, 100, 1.0, 1.4)])
    sp = compute_stocks(
        h, [(0, 10), (10, 30), (30, 100), (0, 20), (0, 100)], method="spline"
    ).stocks
    li = compute_stocks(
        h, [(0, 10), (10, 30), (30, 100), (0, 20), (0, 100)], method="linear"
    ).stocks
    for a, b in [(0, 10), (10, 30), (30, 100), (0, 100)]:
        assert stock(sp, a, b) == pytest.approx(stock(li, a, b), rel=1e-9)
    # 10-20 cm lies next to the carbon-rich top: the spline puts more there than a flat layer
    assert stock(sp, 0, 20) > stock(li, 0, 20)


# --------------------------------------------------------------------------- coverage
def test_profiles_count_only_for_intervals_they_reach() -> None:
    h = pd.concat(
        [
            profile([(0, 30, 2.0, 1.2), (30, 95, 1.0, 1.4)], "shallow"),
            profile([(0, 30, 2.0, 1.2), (30, 320, 1.0, 1.4)], "deep"),
            profile([(10, 40, 2.0, 1.2)], "starts_low"),
        ]
    )
    res = compute_stocks(h, CUMULATIVE, method="linear")
    assert res.counts["n_profiles"].tolist() == [2, 1, 1, 1]
    assert res.counts["interval"].tolist() == ["0-30", "0-100", "0-200", "0-300"]
    assert set(res.stocks.loc[res.stocks.bottom_cm == 100, "profile_id"]) == {"deep"}
    assert "starts_low" not in set(res.stocks.profile_id)
    # within a 5 cm tolerance the 95 cm profile serves 0-100, integrated to 95 cm only
    tol = compute_stocks(h, CUMULATIVE, method="linear", tolerance_cm=10).stocks
    row = tol[(tol.profile_id == "shallow") & (tol.bottom_cm == 100)].iloc[0]
    assert row["depth_reached_cm"] == 95
    assert row["soc_stock_kg_m2"] == pytest.approx(20 * 1.2 * 30 / 100 + 10 * 1.4 * 65 / 100)
    assert tol.loc[tol.profile_id == "starts_low", "top_cm"].tolist() == [0]
    assert tol.loc[tol.profile_id == "starts_low", "soc_stock_kg_m2"].iloc[0] == pytest.approx(
        20 * 1.2 * 20 / 100
    )


def test_gap_within_tolerance_is_bridged_linearly() -> None:
    h = profile([(0, 20, 2.0, 1.0), (22, 40, 4.0, 1.0)])
    res = compute_stocks(h, [(0, 40)], method="linear", tolerance_cm=2).stocks
    # 20 kg m-3 over 20 cm, 40 kg m-3 over 18 cm, a 2 cm ramp from 20 to 40 in between
    assert stock(res, 0, 40) == pytest.approx((20 * 20 + 2 * 30 + 40 * 18) / 100)
    sp = compute_stocks(h, [(0, 20), (22, 40), (0, 40)], method="spline", tolerance_cm=2).stocks
    assert stock(sp, 0, 20) == pytest.approx(4.0, rel=1e-9)
    assert stock(sp, 22, 40) == pytest.approx(7.2, rel=1e-9)
    assert 11.2 < stock(sp, 0, 40) < 11.2 + 2 * 40 / 100


def test_carried_profile_columns_reach_the_output() -> None:
    h = profile([(0, 10, 5.0, 0.8), (10, 30, 2.0, 1.2)], site="Kobresia meadow", year=2019)
    h["horizon_name"] = ["A", "B"]
    out = compute_stocks(h, [(0, 30)]).stocks
    assert out["site"].tolist() == ["Kobresia meadow"]
    assert out["year"].tolist() == [2019]
    assert "horizon_name" not in out.columns  # varies within the profile


def test_output_columns_and_order() -> None:
    h = pd.concat([profile([(0, 100, 2.0, 1.2)], "b"), profile([(0, 100, 2.0, 1.2)], "a")])
    out = compute_stocks(h, [(0, 30), (0, 100)]).stocks
    assert list(out.columns[:6]) == [
        "profile_id",
        "lon",
        "lat",
        "top_cm",
        "bottom_cm",
        "soc_stock_kg_m2",
    ]
    assert {"bd_imputed", "method", "depth_reached_cm"} <= set(out.columns)
    assert out["profile_id"].tolist() == ["b", "b", "a", "a"]  # input order, then interval order
    assert out["bottom_cm"].tolist() == [30, 100, 30, 100]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "cubic"}, "method"),
        ({"lam": 0.0}, "lambda"),
        ({"tolerance_cm": -1.0}, "tolerance"),
        ({"bulk_density_ptf": "nope"}, "PTF"),
        ({"intervals": [(30, 0)]}, "top < bottom"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    h = profile([(0, 30, 2.0, 1.2)])
    intervals = kwargs.pop("intervals", [(0, 30)])
    with pytest.raises(ConfigError, match=match):
        compute_stocks(h, intervals, **kwargs)


# --------------------------------------------------------------------------- properties
@st.composite
def random_profile(draw: st.DrawFn, max_horizons: int = 8) -> pd.DataFrame:
    n = draw(st.integers(1, max_horizons))
    thick = draw(st.lists(st.integers(1, 80), min_size=n, max_size=n))
    bounds = np.concatenate([[0], np.cumsum(thick)]).astype(float)
    soc = draw(st.lists(st.floats(0.0, 55.0), min_size=n, max_size=n))
    bd = draw(st.lists(st.one_of(st.just(np.nan), st.floats(0.05, 2.0)), min_size=n, max_size=n))
    cf = draw(st.lists(st.floats(0.0, 100.0), min_size=n, max_size=n))
    return profile([(bounds[i], bounds[i + 1], soc[i], bd[i], cf[i]) for i in range(n)])


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(random_profile(), st.sampled_from(["spline", "linear"]))
def test_property_stocks_non_negative_and_cumulative_monotone(h: pd.DataFrame, method: str) -> None:
    intervals = [(0, 5), (0, 15), (0, 30), (0, 60), (0, 100), (0, 200), (0, 300)]
    out = compute_stocks(h, intervals, method=method).stocks
    s = out["soc_stock_kg_m2"].to_numpy()
    assert len(s) == sum(b <= h["bottom_cm"].max() for _, b in intervals)
    assert (s >= 0).all()
    assert (np.diff(s) >= -1e-9 * max([1.0, *s])).all()
    assert (out["bottom_cm"] <= h["bottom_cm"].max()).all()  # never beyond the profile


@SETTINGS
@given(random_profile())
def test_property_horizon_aligned_intervals_are_exact(h: pd.DataFrame) -> None:
    intervals = [*zip(h["top_cm"], h["bottom_cm"], strict=True), (0.0, h["bottom_cm"].max())]
    ptf_bd = get_ptf("default")(h["soc_pct"])
    bd = np.where(h["bulk_density_g_cm3"].isna(), ptf_bd, h["bulk_density_g_cm3"])
    exact = (
        h["soc_pct"]
        * 10
        * bd
        * (h["bottom_cm"] - h["top_cm"])
        * (1 - h["coarse_fraction_pct"] / 100)
        / 100
    ).to_numpy()
    exact = np.append(exact, exact.sum())
    lin = compute_stocks(h, intervals, method="linear").stocks["soc_stock_kg_m2"].to_numpy()
    spl = compute_stocks(h, intervals, method="spline").stocks["soc_stock_kg_m2"].to_numpy()
    np.testing.assert_allclose(lin, exact, rtol=1e-9, atol=1e-12)
    # mass preservation of the spline: each horizon within 0.1 %
    np.testing.assert_allclose(spl, exact, rtol=1e-3, atol=1e-9)


@SETTINGS
@given(
    random_profile(max_horizons=1),
    st.lists(st.tuples(st.integers(0, 80), st.integers(1, 80)), min_size=1),
)
def test_property_methods_agree_on_single_horizon_profiles(h: pd.DataFrame, raw: list) -> None:
    intervals = [(a, a + d) for a, d in raw]
    lin = compute_stocks(h, intervals, method="linear").stocks
    spl = compute_stocks(h, intervals, method="spline").stocks
    pd.testing.assert_frame_equal(lin.drop(columns="method"), spl.drop(columns="method"), rtol=1e-9)
