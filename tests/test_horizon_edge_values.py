"""Horizon tables that used to give a plausible but wrong stock without a word.

Stocks are hand calculations: SOC g/kg × bulk density g/cm³ (= kg C m⁻³) × thickness (m)
× area share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapping.config import load_config
from mapping.covariates import target_grid
from mapping.depths import compute_stocks
from mapping.exceptions import HorizonTableError
from mapping.profiles import _lines_text, read_horizons, served_depth
from mapping.run.preflight import _on_grid


def _h(rows: list[tuple], **extra) -> pd.DataFrame:
    cols = ["profile_id", "top_cm", "bottom_cm", "soc_pct", "bulk_density_g_cm3"]
    d = pd.DataFrame(rows, columns=cols).assign(lon=150.0, lat=68.0)
    return d.assign(**extra)


def test_nitrogen_missing_in_one_pocket_of_a_cryoturbated_layer_is_unknown() -> None:
    """Two side-by-side horizons (60 / 40 % of the face) at 20-50 cm, nitrogen known in
    one only: the profile's nitrogen stocks are unknown, as with any horizon missing
    nitrogen (docs/stocks.md), not the 60 % pocket's share alone; carbon is unaffected.
    A profile whose pockets both have nitrogen keeps it."""
    h = _h([("a", 0, 20, 2, 1.2), ("a", 20, 50, 1, 1.4), ("a", 20, 50, 3, 1.0)],
           horizon_area_pct=[100, 60, 40], n_pct=[0.1, 0.05, np.nan])  # fmt: skip
    s = compute_stocks(h, [(0, 20), (0, 50), (20, 50)]).stocks.set_index("bottom_cm")
    soc_20_50 = (0.6 * 10 * 1.4 + 0.4 * 30 * 1.0) * 0.30
    assert s.loc[50.0, "soc_stock_kg_m2"].tolist() == pytest.approx(
        [20 * 1.2 * 0.2 + soc_20_50, soc_20_50]
    )
    assert s["tn_stock_kg_m2"].isna().all()
    assert s["cn_ratio"].isna().all()
    known = compute_stocks(h.assign(n_pct=[0.1, 0.05, 0.2]), [(20, 50)]).stocks
    tn = (0.6 * 0.5 * 1.4 + 0.4 * 2.0 * 1.0) * 0.30
    assert known["tn_stock_kg_m2"].iloc[0] == pytest.approx(tn)


def test_a_thin_horizon_covering_part_of_the_face_is_not_stretched_to_all_of_it() -> None:
    """A 2-cm O horizon on 30 % of the face (400 g/kg, 0.15 g/cm³) over an A horizon, with
    a 2-cm tolerance: the uncovered 70 % holds no carbon (nothing is extrapolated), so
    0-2 cm is 400 x 0.15 x 0.02 x 0.30 = 0.36 kg m⁻², not 1.20; without the tolerance
    the shares are an error."""
    h = _h([("a", 0, 2, 40, 0.15), ("a", 2, 30, 2, 1.2)], horizon_area_pct=[30, 100])
    s = compute_stocks(h, [(0, 2), (0, 30)], tolerance_cm=2, method="linear").stocks
    o = 400 * 0.15 * 0.02 * 0.30
    assert s["soc_stock_kg_m2"].tolist() == pytest.approx([o, o + 20 * 1.2 * 0.28])
    with pytest.raises(HorizonTableError, match="area shares at 0-2 cm sum to 30 %"):
        compute_stocks(h, [(0, 30)])


def test_the_tolerance_excuses_thin_mismatches_not_conflicting_or_long_overlaps() -> None:
    """A 1-cm overlap of consecutive horizons is within a 2-cm tolerance (its layer gets
    the horizons' mean density); two different rows for the same 2-cm range, or a second
    series of 1-cm samples over a 30-cm horizon (a 30-cm overlap made of thin layers),
    are not."""
    ok = _h([("a", 0, 31, 2, 1.2), ("a", 30, 60, 1, 1.2)])
    s = compute_stocks(ok, [(0, 60)], tolerance_cm=2, method="linear").stocks
    expect = 20 * 1.2 * 0.30 + (20 + 10) / 2 * 1.2 * 0.01 + 10 * 1.2 * 0.29
    assert s["soc_stock_kg_m2"].iloc[0] == pytest.approx(expect)
    same = _h([("a", 0, 2, 40, 0.15), ("a", 0, 2, 10, 0.5), ("a", 2, 30, 2, 1.2)])
    with pytest.raises(HorizonTableError, match="conflicting rows for the same depth range"):
        compute_stocks(same, [(0, 30)], tolerance_cm=2)
    series = _h([("a", 0, 30, 2, 1.2)] + [("a", i, i + 1, 2, 1.2) for i in range(30)])
    with pytest.raises(HorizonTableError, match=r"rows 1-31: overlapping horizons at 0-30 cm"):
        compute_stocks(series, [(0, 30)], tolerance_cm=2)


def test_a_tolerance_as_thick_as_the_interval_serves_no_empty_interval() -> None:
    """A profile starting at 5 cm does not serve 0-5 cm with a 5-cm tolerance, and one
    ending at 100 cm does not serve 100-105 cm (their stocks would be a measured-looking
    0); a profile on rock above an interval still serves it with 0."""
    h = _h([("a", 5, 30, 2, 1.2), ("b", 0, 100, 2, 1.2), ("r", 0, 25, 2, 1.2)],
           lithic_contact_cm=[np.nan, np.nan, 25.0])  # fmt: skip
    s = compute_stocks(h, [(0, 5), (100, 105), (0, 30), (30, 60)], tolerance_cm=5).stocks
    served = {(r.profile_id, r.top_cm, r.bottom_cm): r.soc_stock_kg_m2 for r in s.itertuples()}
    assert ("a", 0.0, 5.0) not in served
    assert ("b", 100.0, 105.0) not in served
    assert served[("b", 0.0, 5.0)] == pytest.approx(20 * 1.2 * 0.05)
    assert served[("r", 30.0, 60.0)] == 0.0
    assert served[("a", 0.0, 30.0)] == pytest.approx(20 * 1.2 * 0.25)  # integrated from 5 cm


def test_horizons_below_the_lithic_contact_are_invalid() -> None:
    h = _h([("a", 0, 10, 2, 1.2), ("a", 10, 40, 1, 1.3)], lithic_contact_cm=25.0)
    with pytest.raises(HorizonTableError, match="reach 40 cm, below the lithic contact at 25 cm"):
        compute_stocks(h, [(0, 30)])


def test_profile_ids_that_read_as_the_same_number_are_refused(tmp_path: Path) -> None:
    """``01`` and ``1`` in a CSV would both become profile 1 and merge two profiles."""
    p = tmp_path / "h.csv"
    p.write_text("profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n01,0,60,0,30,2\n1,0,60,30,60,1\n")
    with pytest.raises(HorizonTableError, match=r"h.csv: column profile_id: .*'01' and '1'"):
        read_horizons(p)
    p.write_text("profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n1,0,60,0,30,2\n2,0,60,30,60,1\n")
    assert read_horizons(p)["profile_id"].tolist() == [1, 2]


def test_row_lists_join_runs() -> None:
    assert _lines_text([3], "row") == "row 3"
    assert _lines_text([3, 4], "row") == "rows 3, 4"
    assert _lines_text([1, 2, 3, 5, 7, 8, 9, 10], "line") == "lines 1-3, 5, 7-10"


def test_a_lookalike_column_and_coarse_fractions_are_warned_of() -> None:
    """``coarse_fraction`` is not ``coarse_fraction_pct``: ignored, the stock would be
    computed without coarse fragments, so the user is told; values all at most 1 in the
    percent column look like fractions. Stocks are computed as given either way."""
    h = _h([(p, 0, 30, 2, 1.2) for p in "abcdef"], coarse_fraction=[0.1, 0.2, 0.3, 0.35, 0.2, 0.1])
    with pytest.warns(UserWarning, match="'coarse_fraction' is not used.*coarse_fraction_pct"):
        s = compute_stocks(h, [(0, 30)]).stocks
    assert s["soc_stock_kg_m2"].iloc[0] == pytest.approx(20 * 1.2 * 0.3)
    pct = h.rename(columns={"coarse_fraction": "coarse_fraction_pct"})
    with pytest.warns(UserWarning, match="at most 1 .largest 0.35.; the column is in percent"):
        s = compute_stocks(pct, [(0, 30)]).stocks
    assert s["soc_stock_kg_m2"].iloc[0] == pytest.approx(20 * 1.2 * 0.3 * (1 - 0.001))


def test_profiles_on_their_rock_count_for_every_deeper_interval_before_a_run() -> None:
    """The preflight counts, per interval, the profiles on the grid that serve it as the
    stocks stage does: one that ends on its rock at 25 cm serves 0-100 cm, one that ends
    at 25 cm without rock (or above a deeper contact) does not."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "workflows" / "sample.yaml")
    grid = target_grid(cfg.grid, cfg.covariates)
    h = _h([("rock", 0, 25, 2, 1.2), ("none", 0, 25, 2, 1.2), ("deep", 0, 25, 2, 1.2)],
           lithic_contact_cm=[25.0, np.nan, 60.0]).assign(lon=120.894683, lat=68.567471)  # fmt: skip
    depth = served_depth(h)
    assert depth.to_dict() == {"deep": 25.0, "none": 25.0, "rock": np.inf}
    on, counts = _on_grid(cfg, h, grid)
    assert on == 3
    assert counts["0-30"] == 1 and counts["0-100"] == 1
