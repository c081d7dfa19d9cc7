"""``socmap stocks``: outputs, every bad-input case, and the skip path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapping.cli import main

HEADER = "profile_id,lon,lat,top_cm,bottom_cm,soc_pct,bulk_density_g_cm3,coarse_fraction_pct,horizon_area_pct"
GOOD = [
    "P1,150.5,68.2,0,10,35,0.15,0,100",
    "P1,150.5,68.2,10,20,8,,5,100",
    "P1,150.5,68.2,20,50,6,1.1,10,60",
    "P1,150.5,68.2,20,50,1,1.5,10,40",
    "P1,150.5,68.2,50,120,0.8,1.6,20,100",
    "P2,151.0,68.0,0,30,2,1.2,10,100",
    "P2,151.0,68.0,30,100,1,1.4,0,100",
]


def write(
    tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "horizons.csv"
) -> Path:
    p = tmp_path / name
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # click exits by itself on success and usage errors
        return int(exc.code or 0)


def test_stocks_writes_tables_and_prints_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert run(["stocks", str(src), "-o", str(out), "--method", "linear"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["interval_counts.csv", "stocks.csv"]
    stocks = pd.read_csv(out / "stocks.csv")
    counts = pd.read_csv(out / "interval_counts.csv")
    assert counts["interval"].tolist() == ["0-30", "0-100", "0-200", "0-300"]
    assert counts["n_profiles"].tolist() == [2, 2, 0, 0]
    p2 = stocks[stocks.profile_id == "P2"].set_index("bottom_cm")["soc_stock_kg_m2"]
    assert p2[30] == pytest.approx(20 * 1.2 * 30 * 0.9 / 100)  # 6.48
    assert p2[100] == pytest.approx(6.48 + 10 * 1.4 * 70 / 100)
    p1 = stocks[stocks.profile_id == "P1"].set_index("bottom_cm")
    assert p1.loc[30, "bd_imputed"] == 1
    assert (stocks["method"] == "linear").all()
    printed = capsys.readouterr().out
    assert "0-100" in printed and "profiles per interval" in printed


def test_layered_depths_column_mapping_and_ptf(tmp_path: Path) -> None:
    header = "site,x,y,top_cm,bottom_cm,OC,BD"
    src = write(tmp_path, ["S1,10,60,0,10,30,", "S1,10,60,10,40,2,1.3"], header=header)
    out = tmp_path / "out"
    argv = [
        "stocks",
        str(src),
        "-o",
        str(out),
        "--depths",
        "0-5,5-15,15-30",
        "--method",
        "linear",
        "--ptf",
        "hossain2015_combined",
    ]
    for c in ("profile_id=site", "lon=x", "lat=y", "soc_pct=OC", "bulk_density_g_cm3=BD"):
        argv += ["--column", c]
    assert run(argv) == 0
    s = pd.read_csv(out / "stocks.csv")
    assert s["bottom_cm"].tolist() == [5, 15, 30]
    assert s["profile_id"].tolist() == ["S1"] * 3
    total = s["soc_stock_kg_m2"].sum()
    bd0 = 0.071 + 1.322 * np.exp(-0.071 * 30)
    assert total == pytest.approx(300 * bd0 * 10 / 100 + 20 * 1.3 * 20 / 100, rel=1e-9)


def test_config_supplies_defaults_and_options_override(tmp_path: Path) -> None:
    src = write(tmp_path, GOOD)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "output: o\nprofiles: {path: horizons.csv}\n"
        "stocks: {depths: ['0-20', '0-50'], method: linear, on_invalid: skip}\n"
    )
    out = tmp_path / "out"
    assert (
        run(["stocks", str(src), "-o", str(out), "--config", str(cfg), "--method", "spline"]) == 0
    )
    s = pd.read_csv(out / "stocks.csv")
    assert sorted(set(s["bottom_cm"])) == [20, 50]
    assert (s["method"] == "spline").all()


def test_skip_writes_invalid_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = ["P3,10,60,0,10,-2,1.2,0,100", "P4,10,60,0,10,2,1.2,0,100", "P4,10,60,20,30,2,1.2,0,100"]
    src = write(tmp_path, GOOD + bad)
    out = tmp_path / "out"
    assert run(["stocks", str(src), "-o", str(out), "--on-invalid", "skip"]) == 0
    inv = pd.read_csv(out / "invalid_profiles.csv")
    assert inv["profile_id"].tolist() == ["P3", "P4"]
    assert inv["lines"].astype(str).tolist() == ["9", "10;11"]
    assert list(inv.columns) == ["profile_id", "lines", "reason"]
    s = pd.read_csv(out / "stocks.csv")
    assert set(s["profile_id"]) == {"P1", "P2"}
    assert "2 invalid profiles skipped" in capsys.readouterr().out


def test_parquet_and_geopackage_inputs(tmp_path: Path) -> None:
    import geopandas as gpd

    df = pd.read_csv(write(tmp_path, GOOD))
    df.to_parquet(tmp_path / "h.parquet")
    gdf = gpd.GeoDataFrame(
        df.drop(columns=["lon", "lat"]),
        geometry=gpd.points_from_xy(df.lon, df.lat),
        crs="EPSG:4326",
    )
    gdf.to_file(tmp_path / "h.gpkg")
    results = []
    for name in ("horizons.csv", "h.parquet", "h.gpkg"):
        out = tmp_path / f"out_{name.replace('.', '_')}"
        assert run(["stocks", str(tmp_path / name), "-o", str(out)]) == 0
        results.append(pd.read_csv(out / "stocks.csv"))
    pd.testing.assert_frame_equal(results[0], results[1])
    pd.testing.assert_frame_equal(results[0], results[2], check_exact=False)


# Every kind of bad input: (rows after the header, fragments the one-line message must contain).
# The good profile Z comes after the bad rows, which therefore start on line 2.
BAD = {
    "top_ge_bottom": (
        ["A,10,60,0,10,2,1.2,0,100", "A,10,60,10,5,2,1.2,0,100"],
        ["'A' line 3", "top_cm 10 >= bottom_cm 5"],
    ),
    "gap": (
        ["A,10,60,0,10,2,1.2,0,100", "A,10,60,15,30,2,1.2,0,100"],
        ["'A' lines 2, 3", "gap between 10 and 15 cm"],
    ),
    "overlap": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,10,30,2,1.2,0,100"],
        ["'A' lines 2, 3", "overlapping"],
    ),
    "area_shares": (
        ["A,10,60,0,20,2,1.2,0,60", "A,10,60,0,20,3,1.2,0,30"],
        ["'A' lines 2, 3", "sum to 90 %"],
    ),
    "negative_soc": (["A,10,60,0,20,-1,1.2,0,100"], ["'A' line 2", "soc_pct -1 is negative"]),
    "soc_above_100": (["A,10,60,0,20,150,1.2,0,100"], ["'A' line 2", "above 100 %"]),
    "bd_range": (
        ["A,10,60,0,20,2,3.1,0,100"],
        ["'A' line 2", "bulk_density_g_cm3 3.1 outside 0.05-2.65"],
    ),
    "cf_range": (
        ["A,10,60,0,20,2,1.2,101,100"],
        ["'A' line 2", "coarse_fraction_pct 101 outside 0-100"],
    ),
    "lat_range": (["A,10,-91,0,20,2,1.2,0,100"], ["'A' line 2", "lat -91 outside"]),
    "lon_range": (["A,400,60,0,20,2,1.2,0,100"], ["'A' line 2", "lon 400 outside"]),
    "duplicate": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,0,20,2,1.2,0,100"],
        ["'A' lines 2, 3", "duplicate rows"],
    ),
    "conflicting": (
        ["A,10,60,0,20,2,1.2,0,100", "A,10,60,0,20,5,1.0,0,100"],
        ["'A' lines 2, 3", "conflicting rows"],
    ),
    "text": (
        ["A,10,60,0,20,2,about 1.2,0,100"],
        ["'A' line 2", "bulk_density_g_cm3 is not a number"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exit_2_one_line_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    rows, fragments = BAD[case]
    src = write(tmp_path, [*rows, "Z,10,60,0,30,2,1.2,0,100"])
    out = tmp_path / "out"
    assert run(["stocks", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"socmap: error: {src}: ")
    for frag in fragments:
        assert frag in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["horizons.csv"]  # no temporary left over


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "file is empty"),
        (HEADER + "\n", "header but no rows"),
        ("profile_id,lon,lat,top_cm,bottom_cm\nA,10,60,0,30\n", "missing required column soc_pct"),
        ("profile_id,lat,top_cm,bottom_cm,soc_pct\nA,60,0,30,2\n", "missing required column lon"),
    ],
)
def test_bad_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    src = tmp_path / "horizons.csv"
    src.write_text(text)
    out = tmp_path / "out"
    assert run(["stocks", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and str(src) in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--depths", "0-30,abc"], "--depths"),
        (["--method", "cubic"], "method 'cubic'"),
        (["--ptf", "nope"], "PTF 'nope'"),
        (["--column", "carbon=soc_pct"], "unknown canonical column 'carbon'"),
        (["--column", "soc_pct"], "CANONICAL=NAME"),
        (["--on-invalid", "ignore"], "on_invalid"),
        (["--lambda", "0"], "lambda"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    src = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert run(["stocks", str(src), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_output_folder_with_foreign_files_is_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path, GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    assert run(["stocks", str(src), "-o", str(out)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert (out / "thesis.docx").read_text() == "precious"
    # a previous stocks folder is replaced whole
    prev = tmp_path / "prev"
    assert run(["stocks", str(src), "-o", str(prev), "--on-invalid", "skip"]) == 0
    (prev / "invalid_profiles.csv").write_text("stale")
    assert run(["stocks", str(src), "-o", str(prev)]) == 0
    assert sorted(p.name for p in prev.iterdir()) == ["interval_counts.csv", "stocks.csv"]


def test_console_script_exit_status_and_stderr(tmp_path: Path) -> None:
    src = write(tmp_path, ["A,10,60,0,20,-1,1.2,0,100"])
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mapping.cli import main; sys.exit(main())",
            "stocks",
            str(src),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"socmap: error: {src}: invalid horizons: profile 'A' line 2: soc_pct -1 is negative; "
        "fix the table or drop these profiles with --on-invalid skip"
    ]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
