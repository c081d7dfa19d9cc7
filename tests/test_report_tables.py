"""The report's Tables 1 and 2 agree: Table 2's headline is Table 1's density × area (the map
total), with the Monte Carlo range beside it and the Monte Carlo median's offset explained;
Table 1 says which profiles each interval left out."""

from __future__ import annotations

import pandas as pd
import pytest

from mapping.report import inventory_tables
from mapping.report.tables import display_tables

AREA_KM2 = 1.0e6  # 1e12 m2: a density of 100 kg m-2 stores 100 Pg


def _storage() -> pd.DataFrame:
    rows = []
    for iv, dens in (("0-30", 20.0), ("0-200", 107.8)):
        for zone in ("continuous", "all zones"):
            rows.append({"zone": zone, "interval": iv, "area_km2": AREA_KM2, "area_nodata_km2": 0.0,
                         "mean_density_kg_m2": dens, "storage_pg": dens * AREA_KM2 * 1e6 / 1e12})  # fmt: skip
    return pd.DataFrame(rows)


def _summary() -> pd.DataFrame:
    rows = []
    for iv, med, lo, hi in (("0-30", 20.0, 18.0, 22.0), ("0-200", 110.2, 95.0, 126.0)):
        for zone in ("continuous", "all zones"):
            rows.append({"zone": zone, "interval": iv, "storage_median_pg": med,
                         "storage_lower_pg": lo, "storage_upper_pg": hi})  # fmt: skip
    return pd.DataFrame(rows)


def _counts() -> pd.DataFrame:
    return pd.DataFrame({"interval": ["0-30", "0-200"], "top_cm": [0, 0], "bottom_cm": [30, 200],
                         "n_profiles": [485, 120], "n_start_below": [0, 0],
                         "n_end_above": [15, 380], "n_on_rock": [4, 9]})  # fmt: skip


def test_table2_headline_is_table1_density_times_area_with_the_monte_carlo_range():
    t = inventory_tables(_storage(), _summary(), _counts())
    t1, t2, _ = display_tables(t, "90 % range")
    total = next(r for r in t2.rows if r[0] == "total")
    # density x area: 107.8 kg m-2 x 1e12 m2 = 107.8 Pg, not the Monte Carlo median 110.2
    assert total[3].startswith("107.8 (95.0–126.0)")
    density = next(r for r in t1.rows if r[0] == "total")
    assert float(density[3]) * AREA_KM2 * 1e6 / 1e12 == pytest.approx(107.8)
    assert "total of the mean map" in t2.caption
    assert "differs from the map total by up to 2.2 %" in t2.foot
    assert "110.2" in t2.foot and "107.8" in t2.foot


def test_table1_lists_the_profiles_left_out_of_each_interval():
    t = inventory_tables(_storage(), _summary(), _counts())
    t1, _, _ = display_tables(t, "90 % range")
    assert "0–30 cm: 15 end above 30 cm" in t1.foot
    assert "0–200 cm: 380 end above 200 cm" in t1.foot
    assert "lithic contact" in t1.foot
