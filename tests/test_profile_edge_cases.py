"""Profiles that end early: which intervals leave them out and why, and profiles that end on rock.

Stocks are hand calculations: SOC g/kg × bulk density g/cm³ (= kg C m⁻³) × thickness (m).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from mapping.depths import compute_stocks
from mapping.exceptions import HorizonTableError
from mapping.profiles import check_horizons, read_horizons

HEADER = "profile_id,lon,lat,top_cm,bottom_cm,soc_pct,bulk_density_g_cm3,lithic_contact_cm"
ROWS = [
    "R,150,68,0,10,2,1.2,",  # ends on rock at 25 cm
    "R,150,68,10,25,1,1.3,25",
    "S,150,68,0,10,2,1.2,",  # same horizons, no rock: the soil goes on below 25 cm
    "S,150,68,10,25,1,1.3,",
    "G,150,68,0,10,2,1.2,40",  # rock at 40 cm, but nothing is known from 25 to 40 cm
    "G,150,68,10,25,1,1.3,40",
    "D,150,68,0,50,1,1.0,",
    "D,150,68,50,100,0.5,1.0,",
]
# R: 0-10 cm 20 g/kg x 1.2 x 0.10 m = 2.40; 10-25 cm 10 x 1.3 x 0.15 = 1.95 -> 4.35 kg m-2
R_STOCK = 20 * 1.2 * 0.10 + 10 * 1.3 * 0.15
D_STOCK = {(0, 30): 10 * 1.0 * 0.3, (0, 100): 10 * 0.5 + 5 * 0.5, (30, 60): 10 * 0.2 + 5 * 0.1}
INTERVALS = [(0, 30), (0, 100), (30, 60)]


def _table(tmp_path: Path, rows: list[str] = ROWS) -> Path:
    p = tmp_path / "h.csv"
    p.write_text("\n".join([HEADER, *rows]) + "\n")
    return p


def test_a_profile_on_rock_counts_deeper_with_zero_stock_below_the_rock(tmp_path):
    res = compute_stocks(read_horizons(_table(tmp_path)), INTERVALS, method="linear")
    s = res.stocks.set_index(["profile_id", "top_cm", "bottom_cm"])["soc_stock_kg_m2"]
    assert s[("R", 0, 30)] == pytest.approx(R_STOCK)
    assert s[("R", 0, 100)] == pytest.approx(R_STOCK)
    assert s[("R", 30, 60)] == pytest.approx(0.0, abs=1e-12)  # all of it below the rock
    for iv, v in D_STOCK.items():
        assert s[("D", *iv)] == pytest.approx(v)
    # neither the shallow profile without rock nor the one with a gap above its rock
    assert not {"S", "G"} & set(res.stocks["profile_id"])


def test_the_spline_keeps_the_horizon_stocks_of_a_profile_on_rock(tmp_path):
    res = compute_stocks(read_horizons(_table(tmp_path)), INTERVALS, method="spline")
    r = res.stocks[res.stocks["profile_id"] == "R"].set_index(["top_cm", "bottom_cm"])
    assert r.loc[(0, 30), "soc_stock_kg_m2"] == pytest.approx(R_STOCK, rel=1e-9)  # mass-preserving
    assert r.loc[(0, 100), "soc_stock_kg_m2"] == pytest.approx(R_STOCK, rel=1e-9)


def test_counts_say_how_many_profiles_each_interval_leaves_out_and_why(tmp_path):
    res = compute_stocks(read_horizons(_table(tmp_path)), INTERVALS, method="linear")
    c = res.counts.set_index("interval")
    assert c.loc["0-30", ["n_profiles", "n_end_above", "n_start_below", "n_on_rock"]].tolist() == [
        2, 2, 0, 1,
    ]  # fmt: skip
    assert c.loc["0-100", ["n_profiles", "n_end_above", "n_on_rock"]].tolist() == [2, 2, 1]
    assert c.loc["30-60", ["n_profiles", "n_end_above", "n_on_rock"]].tolist() == [2, 2, 1]


def test_a_profile_starting_below_the_top_is_counted_as_such(tmp_path):
    rows = ["T,150,68,10,40,1,1.0,", "D,150,68,0,50,1,1.0,"]
    res = compute_stocks(read_horizons(_table(tmp_path, rows)), [(0, 30)], method="linear")
    assert res.counts[["n_profiles", "n_start_below", "n_end_above"]].iloc[0].tolist() == [1, 1, 0]


def test_stocks_cli_prints_the_profiles_left_out(tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli(["stocks", str(_table(tmp_path)), "-o", str(out), "--depths", "0-30,0-100",
                 "--method", "linear"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "0-30 cm: 2 end above 30 cm (left out of this interval)" in text
    assert "0-100 cm: 2 end above 100 cm (left out of this interval)" in text
    counts = pd.read_csv(out / "interval_counts.csv")
    assert counts["n_end_above"].tolist() == [2, 2] and counts["n_on_rock"].tolist() == [1, 1]


def test_contradicting_lithic_contacts_are_invalid(tmp_path):
    rows = ["R,150,68,0,10,2,1.2,25", "R,150,68,10,25,1,1.3,30"]
    h = read_horizons(_table(tmp_path, rows))
    with pytest.raises(HorizonTableError, match=r"lithic_contact_cm .* differs between horizons"):
        check_horizons(h, "h.csv")
