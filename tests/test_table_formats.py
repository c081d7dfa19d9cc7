"""Tables and raster formats as users have them: spreadsheet CSV exports (``;`` and decimal
commas, Windows-1252/Latin-1 text) and NetCDF rasters wherever GeoTIFF works."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from conftest import run_cli

from mapping.covariates import build_stack
from mapping.grid import Grid
from mapping.io import csv_dialect, read_table
from mapping.profiles import read_horizons

ROWS = [
    ["P1", 150.5, 68.25, 0, 10, 3.5, 0.15, "Nördliche Tundra"],
    ["P1", 150.5, 68.25, 10, 30, 0.8, 1.25, "Nördliche Tundra"],
    ["P2", 151.0, 68.0, 0, 30, 2.0, 1.2, "Süd"],
]
COLUMNS = ["profile_id", "lon", "lat", "top_cm", "bottom_cm", "soc_pct", "bulk_density_g_cm3",
           "survey"]  # fmt: skip


def _write(path: Path, sep: str, decimal: str, encoding: str) -> Path:
    lines = [sep.join(COLUMNS)]
    for r in ROWS:
        lines.append(sep.join(str(v).replace(".", decimal) if isinstance(v, float) else str(v)
                              for v in r))  # fmt: skip
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def _expected() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLUMNS)


@pytest.mark.parametrize(
    ("sep", "decimal", "encoding"),
    [
        (";", ",", "utf-8"),
        (";", ",", "cp1252"),
        ("\t", ".", "latin-1"),
        (",", ".", "cp1252"),
        (";", ".", "utf-8-sig"),
    ],
)
def test_spreadsheet_csv_exports_are_read(tmp_path, sep, decimal, encoding):
    p = _write(tmp_path / "h.csv", sep, decimal, encoding)
    got = read_table(p)
    pd.testing.assert_frame_equal(got, _expected(), check_dtype=False)


def test_dialect_names_what_it_found(tmp_path):
    p = _write(tmp_path / "h.csv", ";", ",", "cp1252")
    assert csv_dialect(p) == {"encoding": "cp1252", "sep": ";", "decimal": ","}
    q = _write(tmp_path / "u.csv", ",", ".", "utf-8")
    assert csv_dialect(q) == {"encoding": "utf-8-sig", "sep": ","}


def test_a_latin1_byte_at_the_end_of_a_short_file_is_not_taken_for_a_cut_character(tmp_path):
    p = tmp_path / "short.csv"
    p.write_bytes("profile_id;site\n1;Hämeenlinna\n2;Jyväskylä".encode("cp1252"))
    assert csv_dialect(p)["encoding"] == "cp1252"
    assert read_table(p)["site"].tolist() == ["Hämeenlinna", "Jyväskylä"]


def test_stocks_from_a_semicolon_decimal_comma_export_equal_those_from_plain_csv(tmp_path):
    plain = _write(tmp_path / "plain.csv", ",", ".", "utf-8")
    excel = _write(tmp_path / "excel.csv", ";", ",", "cp1252")
    outs = []
    for src in (plain, excel):
        out = tmp_path / f"out_{src.stem}"
        code = run_cli(
            ["stocks", str(src), "-o", str(out), "--depths", "0-30", "--method", "linear"]
        )
        assert code == 0
        outs.append(pd.read_csv(out / "stocks.csv"))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    # hand: P1 35 g/kg x 0.15 x 0.10 + 8 x 1.25 x 0.20; P2 20 x 1.2 x 0.30
    assert outs[1]["soc_stock_kg_m2"].tolist() == pytest.approx([0.525 + 2.0, 7.2])
    assert outs[1]["survey"].tolist() == ["Nördliche Tundra", "Süd"]


def test_horizons_keep_their_line_numbers_in_a_semicolon_file(tmp_path):
    h = read_horizons(_write(tmp_path / "h.csv", ";", ",", "cp1252"))
    assert h["_line"].tolist() == [2, 3, 4]
    assert h["soc_pct"].tolist() == [3.5, 0.8, 2.0]


# ----------------------------------------------------------------------- NetCDF
GRID = Grid.from_bounds((-400_000, -2_000_000, -200_000, -1_900_000), 10_000, "EPSG:6931")


def _netcdf(path: Path, raw: np.ndarray, *, scale: float, fill: int, units: str) -> Path:
    """A CF NetCDF-4 file holding packed values: ``raw`` with ``scale_factor`` and ``_FillValue``."""
    y, x = GRID.coords()
    arr = xr.DataArray(raw, dims=("y", "x"), coords={"y": y, "x": x}, name="soc")
    arr = arr.rio.write_crs(GRID.crs.to_wkt()).rio.write_coordinate_system()
    arr.attrs.update(
        units=units, scale_factor=scale, add_offset=0.0, _FillValue=raw.dtype.type(fill)
    )
    arr.to_dataset().to_netcdf(
        path, encoding={"x": {"_FillValue": None}, "y": {"_FillValue": None}}
    )
    return path


def test_integrate_reads_a_packed_netcdf_density_map(tmp_path, capsys):
    raw = np.full(GRID.shape, 2516, dtype="int16")
    raw[3, :7] = -999
    d = _netcdf(tmp_path / "soc_0_30cm_mean.nc", raw, scale=0.01, fill=-999, units="kg C m-2")
    z = GRID.wrap(np.ones(GRID.shape, "uint8"), name="zone").rio.write_crs(GRID.crs.to_wkt())
    z.rio.to_raster(tmp_path / "zones.tif")
    out = tmp_path / "t.csv"
    code = run_cli(["integrate", str(d), "--zones", str(tmp_path / "zones.tif"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    t = pd.read_csv(out)
    total = float(t.loc[t["zone"] == "all zones", "storage_pg"].iloc[0])
    assert total == pytest.approx(25.16 * 1e8 * (200 - 7) / 1e12, rel=1e-6)


def test_a_packed_netcdf_covariate_is_unpacked(tmp_path):
    rng = np.random.default_rng(2)
    raw = rng.integers(-3000, 3000, size=GRID.shape).astype("int16")
    raw[0, 0] = -999
    p = _netcdf(tmp_path / "t.nc", raw, scale=0.01, fill=-999, units="degC")
    cov = SimpleNamespace(name="t", path=p, kind="continuous", band=1, variable=None,
                          resampling=None)  # fmt: skip
    got = build_stack([cov], GRID, chunks=8)["t"].values
    assert np.isnan(got[0, 0])
    ok = raw != -999
    np.testing.assert_allclose(got[ok], raw[ok] * 0.01, rtol=1e-5, atol=1e-5)
