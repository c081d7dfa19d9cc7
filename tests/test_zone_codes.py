"""Zone codes a config does not name, codes as text and blank codes: each once gave a
zone total that was wrong without a word (a background 0 in the permafrost region, a
zone_code column pointing at another zone's total, a zone left out)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import yaml
from affine import Affine
from conftest import SAMPLE_WORKFLOW, run_cli_output, sample_config

from mapping.exceptions import InputError
from mapping.grid import Grid
from mapping.run.stages import _warn_unmapped_zone_area
from mapping.zonal import zone_totals
from mapping.zones import load_zone_layout, zone_coverage_from_polygons

ROOT = Path(__file__).resolve().parents[1]
NAMES = {1: "continuous", 2: "discontinuous"}
# a 4 x 6 grid of 10 km equal-area cells: zone 1 in the west, 2 in the east, and a
# background 0 in the bottom row
GRID = Grid("EPSG:6931", Affine(10_000, 0, 0, 0, -10_000, 4e4), (4, 6))
CODES = np.array([[1, 1, 1, 2, 2, 2]] * 3 + [[0] * 6], dtype="uint8")


def _raster(path: Path, nodata: int | None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=6, height=4, count=1, dtype="uint8",
                       crs="EPSG:6931", transform=GRID.transform, nodata=nodata) as dst:  # fmt: skip
        dst.write(CODES, 1)
    return path


def _ones() -> object:
    return GRID.wrap(np.ones(GRID.shape), attrs={"interval": "0-30"})


def test_an_undeclared_background_code_is_refused_when_the_zones_are_named(tmp_path: Path) -> None:
    declared = _raster(tmp_path / "declared.tif", nodata=0)
    bare = _raster(tmp_path / "bare.tif", nodata=None)
    want = zone_totals(_ones(), load_zone_layout(declared, GRID, NAMES, named_only=True), GRID)
    # by hand: 18 cells of 100 km2 (the cell areas of an equal-area grid) in the zones
    area = GRID.cell_area()[0, 0] / 1e6
    assert want.set_index("zone").loc["all zones", "area_km2"] == pytest.approx(18 * area)
    # the background read as a code: a zone of its own, 6 more cells in the all-zones total
    loose = zone_totals(_ones(), load_zone_layout(bare, GRID, NAMES), GRID).set_index("zone")
    assert loose.loc["all zones", "area_km2"] == pytest.approx(24 * area)
    with pytest.raises(InputError) as info:
        load_zone_layout(bare, GRID, NAMES, named_only=True)
    msg = str(info.value)
    assert msg.startswith(f"{bare}: zone code(s) 0 on the grid are not among the zone names (1, 2)")
    assert "list them in zones.nodata" in msg and "\n" not in msg
    # said to mean no zone, the totals are the declared file's
    got = zone_totals(
        _ones(), load_zone_layout(bare, GRID, NAMES, zone_nodata=[0], named_only=True), GRID
    )
    assert got["area_km2"].tolist() == pytest.approx(want["area_km2"].tolist(), rel=1e-12)


def _polygons(codes: list[object]) -> gpd.GeoDataFrame:
    """Three features on GRID's rows 0-2 (west, east) and row 3 (the rest)."""
    geoms = [shapely.box(0, 1e4, 3e4, 4e4), shapely.box(3e4, 1e4, 6e4, 4e4),
             shapely.box(0, 0, 6e4, 1e4)]  # fmt: skip
    return gpd.GeoDataFrame({"zone_code": codes}, geometry=geoms, crs="EPSG:6931")


def test_a_no_permafrost_class_among_the_polygons_is_refused_or_left_out() -> None:
    gdf = _polygons([1, 2, 0])
    with pytest.raises(InputError, match=r"zone code\(s\) 0 on the grid are not among"):
        load_zone_layout("z.gpkg", GRID, NAMES, zone_field="zone_code", gdf=gdf, named_only=True)
    layout = load_zone_layout("z.gpkg", GRID, NAMES, zone_field="zone_code", gdf=gdf,
                              zone_nodata=[0], named_only=True)  # fmt: skip
    assert layout.codes == (1, 2)
    table = zone_totals(_ones(), layout, GRID).set_index("zone")
    assert table.loc["all zones", "area_km2"] == pytest.approx(18 * GRID.cell_area()[0, 0] / 1e6)


def test_codes_stored_as_text_keep_their_numbers() -> None:
    # "2" first in the file (the west): the code is still 2 (first appearance made it 1)
    cov = zone_coverage_from_polygons(_polygons(["2", "1", "3"]), GRID, "zone_code")
    assert sorted(int(c) for c in cov.codes) == [1, 2, 3]
    west = cov.to_dense()[list(cov.codes).index(2)]
    assert west[0, :3].tolist() == [1.0, 1.0, 1.0] and west[0, 3:].tolist() == [0.0] * 3
    # names without codes: numbered in the file's order
    a = zone_coverage_from_polygons(_polygons(["tundra", "bog", "lake"]), GRID, "zone_code")
    assert a.names == {1: "tundra", 2: "bog", 3: "lake"}


def test_text_codes_with_names_and_a_text_no_zone_class() -> None:
    # codes as text with the config's names: matched by number, "2.0" as well
    gdf = _polygons(["1", "2.0", "0"])
    layout = load_zone_layout("z.gpkg", GRID, NAMES, zone_field="zone_code", gdf=gdf,
                              zone_nodata=[0], named_only=True)  # fmt: skip
    assert layout.codes == (1, 2) and layout.names == ("continuous", "discontinuous")
    # zone names with a "none" class: left out by name, whatever its case
    named = _polygons(["Continuous", "discontinuous", "None"])
    layout = load_zone_layout("z.gpkg", GRID, NAMES, zone_field="zone_code", gdf=named,
                              zone_nodata=["none"], named_only=True)  # fmt: skip
    table = zone_totals(_ones(), layout, GRID).set_index("zone")
    assert table.loc["all zones", "area_km2"] == pytest.approx(18 * GRID.cell_area()[0, 0] / 1e6)
    with pytest.raises(InputError, match="value 'None' is not among the zone names"):
        load_zone_layout("z.gpkg", GRID, NAMES, zone_field="zone_code", gdf=named)


def test_a_code_both_named_and_no_zone_is_a_config_error(tmp_path: Path, capsys) -> None:
    cfg = sample_config(tmp_path / "out", SAMPLE_WORKFLOW)
    cfg["zones"]["nodata"] = [4]  # 4 is the isolated zone
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, _, err = run_cli_output(["validate", config], capsys)
    assert code == 2 and err.strip().endswith(": zones: nodata: 4 is also in names"), err


def test_polygons_without_a_code_are_warned_of() -> None:
    gdf = _polygons([1, 2, None])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cov = zone_coverage_from_polygons(gdf, GRID, "zone_code")
    assert [str(w.message) for w in caught] == [
        "1 zone polygon(s) have no 'zone_code' value; their area is in no zone"
    ]
    assert sorted(int(c) for c in cov.codes) == [1, 2]


def test_validate_names_the_zone_file_and_takes_zones_nodata(tmp_path: Path, capsys) -> None:
    # the sample's zones plus a polygon of code 0 over the rest of the grid
    gdf = gpd.read_file(ROOT / "sample_rasters" / "permafrost_zones.gpkg")
    rest = shapely.box(*gdf.total_bounds).difference(gdf.union_all())
    extra = gpd.GeoDataFrame({"zone_code": [0]}, geometry=[rest], crs=gdf.crs)
    path = tmp_path / "zones.gpkg"
    gpd.pd.concat([gdf[["zone_code", "geometry"]], extra]).to_file(path)
    cfg = sample_config(tmp_path / "out", SAMPLE_WORKFLOW)
    cfg["zones"]["path"] = str(path)
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, _, err = run_cli_output(["validate", config], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert f"{path}: zone code(s) 0 on the grid are not among the zone names (1, 2, 3, 4)" in line
    cfg["zones"]["nodata"] = [0]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, out, _ = run_cli_output(["validate", config], capsys)
    assert code == 0 and "4 zone(s) on the grid from polygons" in out


def test_a_zone_without_predictions_over_part_of_it_is_named() -> None:
    # zone b's western 40 % lies where a covariate has no data: its storage covers the rest
    said: list[str] = []
    ctx = SimpleNamespace(echo=said.append)
    table = pd.DataFrame(
        {"zone": ["a", "b", "all zones"], "interval": ["0-30"] * 3,
         "area_km2": [100.0, 100.0, 200.0], "area_nodata_km2": [0.0, 40.0, 40.0]}
    )  # fmt: skip
    _warn_unmapped_zone_area(ctx, table)  # type: ignore[arg-type]
    assert said == [
        "[zones] warning: 40.0 % of b's area has no prediction (0-30 cm; 1 zone(s): b): its "
        "storage covers the mapped cells only (a covariate without data there?)"
    ]
    said.clear()
    table["area_nodata_km2"] = [0.0, 5e-15, 5e-15]  # rounding of the cells' areas: silent
    _warn_unmapped_zone_area(ctx, table)  # type: ignore[arg-type]
    assert said == []


def test_an_unnamed_zone_raster_with_a_background_0_is_warned_of(tmp_path: Path, capsys) -> None:
    with rasterio.open(ROOT / "sample_rasters" / "permafrost_zones.tif") as src:
        profile, codes = src.profile, src.read(1)
    profile["nodata"] = None  # the background 0 no longer declared
    path = tmp_path / "zones.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
    cfg = sample_config(tmp_path / "out", SAMPLE_WORKFLOW)
    cfg["zones"] = {"path": str(path)}
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, out, err = run_cli_output(["validate", config], capsys)
    assert code == 0 and "5 zone code(s) on the grid from a raster: 0, 1, 2, 3, 4" in out
    assert f"{path}: zone code 0 is a zone of its own, in the all-zones total" in out + err
    cfg["zones"]["nodata"] = [0]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, out, err = run_cli_output(["validate", config], capsys)
    assert code == 0 and "zone code 0" not in out + err
    assert "4 zone code(s) on the grid from a raster: 1, 2, 3, 4" in out


def test_a_run_checks_every_cell_of_the_zones_before_its_first_stage(
    tmp_path: Path, capsys
) -> None:
    # one row of code 0 (undeclared: the file's nodata is 255) across the sample's zones:
    # the preflight's decimated sample can step over it; the run checks every cell
    with rasterio.open(ROOT / "sample_rasters" / "permafrost_zones.tif") as src:
        profile, codes = src.profile, src.read(1)
    codes = np.where(codes == 0, 255, codes).astype("uint8")
    codes[161, :] = 0
    profile["nodata"] = 255
    path = tmp_path / "zones.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
    cfg = sample_config(tmp_path / "out", SAMPLE_WORKFLOW)
    cfg["zones"] = {"path": str(path), "names": cfg["zones"]["names"]}
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, _, err = run_cli_output(["run", config], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert f"{path}: zone code(s) 0 on the grid are not among the zone names (1, 2, 3, 4)" in line
    assert not (tmp_path / "out").exists()  # before the first stage: nothing written
