"""Zone totals: kernel, zone coverage from polygons, Dask wrapper and the totals table."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine

from mapping.exceptions import GridMismatchError, InputError
from mapping.grid import Grid, ellipsoid_band_area
from mapping.testing import raise_if_dask_computes
from mapping.zonal import (
    density_unit_factor,
    integrate_files,
    interval_from_attrs,
    interval_from_name,
    zone_sums,
    zone_sums_block,
    zone_totals,
)
from mapping.zones import (
    ZoneCoverage,
    _band_coverage,
    load_zone_layout,
    parse_zone_names,
    prepare_zones,
    rasterize_zones,
    to_grid_crs,
    zone_coverage_from_polygons,
)

# The seed's Tables 1 and 2 (mean density and storage per permafrost zone), shared with the
# stocks tests.
SEED = pd.read_csv(Path(__file__).parent / "data" / "seed_permafrost_soc_tables.csv").set_index(
    "zone"
)
INTERVALS = ["0-30", "0-100", "0-200", "0-300"]
ZONES = ["continuous", "discontinuous", "sporadic", "isolated"]
WGS84_A, WGS84_E2 = 6378137.0, 0.0066943799901413165


def _polygons_of(codes: np.ndarray, grid: Grid, nodata: int = 0) -> gpd.GeoDataFrame:
    """Polygonise a zone-code raster (one feature per connected patch)."""
    feats = [
        (shapely.geometry.shape(geom), int(v))
        for geom, v in rasterio.features.shapes(
            codes.astype("int32"), mask=codes != nodata, transform=grid.transform
        )
    ]
    geoms, vals = zip(*feats, strict=True)
    return gpd.GeoDataFrame({"code": vals}, geometry=list(geoms), crs=grid.crs)


def _blocky_zones(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Zone codes 1..4 in irregular patches, 0 (no zone) around the edge."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 5, size=(shape[0] // 4 + 1, shape[1] // 4 + 1))
    z = np.kron(coarse, np.ones((4, 4), dtype=int))[: shape[0], : shape[1]]
    z[0, :] = 0
    return z


# ------------------------------------------------------------------------------ kernel
def test_kernel_hand_example_with_nodata_and_partial_cells() -> None:
    d = np.array([[1.0, 2.0], [np.nan, 4.0]])
    a = np.array([[10.0, 20.0], [30.0, 40.0]])
    z = np.array([[0, 0], [0, -1]])
    # cell (1, 1) is 1/4 in zone 1; cell (0, 1) also 1/2 in zone 1 (overlap)
    partial = (np.array([3, 1]), np.array([1, 1]), np.array([0.25, 0.5]))
    out = zone_sums_block(d, a, z, 2, partial)
    # zone 0: area 10+20+30, valid 10+20, storage 1*10 + 2*20
    # zone 1: area 0.25*40 + 0.5*20, valid the same, storage 0.25*40*4 + 0.5*20*2
    np.testing.assert_allclose(out, [[60, 30, 50], [20, 20, 60]])


def test_cells_off_the_globe_have_no_area_in_a_zone_and_hold_no_carbon() -> None:
    """A cell without an area (NaN: its centre is off the globe, e.g. a reprojected zone
    polygon stretched over an interruption of Goode Homolosine) counts for nothing in the
    zone's area (it failed the exact sum: a traceback from ``socmap integrate``); a density
    on such a cell is refused, not dropped."""
    a = np.array([[10.0, np.nan], [30.0, np.nan]])
    z = np.array([[0, 0], [0, -1]])
    partial = (np.array([1]), np.array([1]), np.array([0.5]))
    d = np.array([[1.0, np.nan], [2.0, np.nan]])
    np.testing.assert_allclose(zone_sums_block(d, a, z, 2, partial), [[40, 40, 70], [0, 0, 0]])
    d[0, 1] = 3.0
    with pytest.raises(InputError, match="1 cells with a density have no area"):
        zone_sums_block(d, a, z, 2, partial)


def test_kernel_leading_axis_equals_one_call_per_realization() -> None:
    rng = np.random.default_rng(1)
    d = rng.gamma(2.0, 10.0, size=(5, 13, 17))
    d[rng.random(d.shape) < 0.1] = np.nan
    a = rng.uniform(1, 2, size=(13, 17))
    z = rng.integers(-1, 3, size=(13, 17))
    part = (np.array([0, 5, 200]), np.array([2, 0, 1]), np.array([0.3, 0.7, 0.1]))
    stacked = zone_sums_block(d, a, z, 3, part)
    assert stacked.shape == (5, 3, 3)
    for r in range(5):
        np.testing.assert_array_equal(stacked[r], zone_sums_block(d[r], a, z, 3, part))


# ------------------------------------------------------------------------------ seed tables
def _seed_world() -> tuple[Grid, np.ndarray, dict[int, str]]:
    """EPSG:6931 grid of 10 km cells holding exactly the seed's zone areas (km²)."""
    grid = Grid.from_bounds((0, 0, 5_200_000, 4_000_000), 10_000, "EPSG:6931")  # 400 x 520
    names = {i + 1: z for i, z in enumerate(ZONES)}
    counts = [round(SEED.loc[z, "area_km2"] / 100) for z in ZONES]
    assert sum(counts) == grid.shape[0] * grid.shape[1] == 208_000
    codes = np.repeat(np.arange(1, 5), counts).reshape(grid.shape)
    return grid, codes, names


def test_seed_table2_is_reproduced_from_table1_densities() -> None:
    grid, codes, names = _seed_world()
    assert np.all(grid.cell_area() == 1e8)
    density = {}
    for iv in INTERVALS:
        col = "density_" + iv.replace("-", "_")
        per_zone = np.array([np.nan] + [SEED.loc[z, col] for z in ZONES])
        density[iv] = grid.wrap(da.from_array(per_zone[codes], chunks=128))
    table = zone_totals(density, grid.wrap(codes), grid, names)

    assert list(table["interval"].unique()) == INTERVALS  # sorted by depth
    for iv in INTERVALS:
        rows = table[table["interval"] == iv].set_index("zone")
        suffix = iv.replace("-", "_")
        for zone in ZONES:
            row, seed = rows.loc[zone], SEED.loc[zone]
            assert row["area_km2"] == pytest.approx(seed["area_km2"], rel=1e-12)
            assert row["mean_density_kg_m2"] == pytest.approx(seed[f"density_{suffix}"], rel=1e-12)
            expected = seed[f"density_{suffix}"] * seed["area_km2"] * 1e6 / 1e12  # Pg
            assert row["storage_pg"] == pytest.approx(expected, rel=1e-12)
            published = seed[f"storage_pg_{suffix}"]
            if iv == "0-200":  # the published column is not Table 1 x area
                assert abs(row["storage_pg"] / published - 1) > 0.004
            else:  # Table 2 to rounding (areas are given to 0.1e6 km2)
                assert abs(row["storage_pg"] / published - 1) < 0.001
        total = rows.loc["all zones"]
        zone_rows = rows.drop(index="all zones")
        assert total["area_km2"] == pytest.approx(20.8e6, rel=1e-12)
        assert total["storage_pg"] == pytest.approx(zone_rows["storage_pg"].sum(), rel=1e-12)
        assert total["mean_density_kg_m2"] == pytest.approx(
            zone_rows["storage_pg"].sum() / 20.8, rel=1e-12
        )
    cont = table[(table["zone"] == "continuous") & (table["interval"] == "0-300")]
    assert float(cont["storage_pg"].iloc[0]) == pytest.approx(521.3, abs=0.15)
    total_030 = table[(table["zone"] == "all zones") & (table["interval"] == "0-30")]
    assert float(total_030["storage_pg"].iloc[0]) == pytest.approx(
        SEED.loc["total", "storage_pg_0_30"], rel=1e-3
    )


# ------------------------------------------------------------------------------ geographic grid
def test_uniform_density_over_the_globe_gives_the_ellipsoid_surface() -> None:
    grid = Grid.from_bounds((-180, -90, 180, 90), 1.0, "EPSG:4326")
    density = grid.wrap(da.ones(grid.shape, chunks=(50, 70)), attrs={"interval": "0-30"})
    raster = zone_totals(density, grid.wrap(np.ones(grid.shape, dtype="uint8")), grid)
    globe = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(-180, -90, 180, 90)], crs=4326)
    polys = zone_totals(density, zone_coverage_from_polygons(globe, grid, "z"), grid)
    for table in (raster, polys):
        total = table.set_index("zone").loc["all zones"]
        assert round(total["storage_pg"], 2) == 510.07
        assert total["area_km2"] == pytest.approx(510.0656e6, rel=1e-6)


def test_half_cell_polygon_on_geographic_grid_uses_the_ellipsoidal_cell_area() -> None:
    grid = Grid.from_bounds((10, 60, 15, 65), 1.0, "EPSG:4326")  # rows run 65N -> 60N
    # lon 11.5..13, lat 61..62.5; row 2 is 62-63N, row 3 is 61-62N
    gdf = gpd.GeoDataFrame({"z": [7]}, geometry=[shapely.box(11.5, 61, 13, 62.5)], crs=4326)
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    frac = cov.to_dense()[0]
    expected = np.zeros(grid.shape)
    expected[2, 1], expected[2, 2], expected[3, 1], expected[3, 2] = 0.25, 0.5, 0.5, 1.0
    np.testing.assert_allclose(frac, expected, atol=1e-12)
    cell = grid.cell_area()
    density = grid.wrap(np.full(grid.shape, 2.0), attrs={"interval": "0-30"})
    row = zone_totals(density, cov, grid, unit="Tg").iloc[0]
    hand = cell[2, 1] / 4 + cell[2, 2] / 2 + cell[3, 1] / 2 + cell[3, 2]  # m2
    assert row["area_km2"] == pytest.approx(hand / 1e6, rel=1e-12)
    assert row["storage_tg"] == pytest.approx(2.0 * hand / 1e9, rel=1e-12)
    # a cut along a meridian halves the ellipsoidal area exactly
    assert cell[3, 1] / 2 == pytest.approx(
        ellipsoid_band_area(61.0, 62.0, 0.5, WGS84_A, WGS84_E2), rel=1e-12
    )
    # a cut along a parallel does not (fractions are planar in lon/lat): with 1-degree cells
    # at 62N the polygon's area comes out 0.27 % low; the error shrinks with the cell size
    exact = ellipsoid_band_area(61.0, 62.5, 1.5, WGS84_A, WGS84_E2)
    assert -0.004 < hand / exact - 1 < -0.002


def test_half_cell_polygon_on_projected_grid_hand_check() -> None:
    grid = Grid.from_bounds((0, 0, 10_000, 10_000), 1_000, "EPSG:6931")
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(2_500, 0, 5_000, 10_000)], crs=6931)
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    frac = cov.to_dense()[0]
    assert np.all(frac[:, 2] == 0.5) and np.all(frac[:, 3:5] == 1.0)
    assert frac.sum() == 25.0
    cols = np.arange(10, dtype=float)
    density = grid.wrap(np.tile(cols, (10, 1)))  # density = column index
    row = zone_totals(density, cov, grid).iloc[0]
    assert row["area_km2"] == pytest.approx(25.0)
    # 10 rows x (0.5 km2 x 2 + 1 km2 x 3 + 1 km2 x 4) = 80 km2 kg m-2 = 80e6 kg
    assert row["storage_pg"] == pytest.approx(80e6 / 1e12)
    assert row["mean_density_kg_m2"] == pytest.approx(80 / 25)


# ------------------------------------------------------------------------------ polygons = raster
@pytest.mark.parametrize(
    "grid",
    [
        Grid.from_bounds((-300_000, 100_000, 500_000, 700_000), 10_000, "EPSG:6931"),
        Grid.from_bounds((20, 55, 60, 75), 0.5, "EPSG:4326"),
    ],
    ids=["ease2-north", "geographic"],
)
def test_polygon_and_raster_zones_give_the_same_totals(grid: Grid) -> None:
    codes = _blocky_zones(grid.shape)
    rng = np.random.default_rng(2)
    values = rng.gamma(3.0, 8.0, size=grid.shape)
    values[rng.random(grid.shape) < 0.05] = np.nan
    density = {"0-30": grid.wrap(values), "0-100": grid.wrap(values * 2.5)}
    names = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
    from_raster = zone_totals(density, grid.wrap(codes).rio.write_nodata(0), grid, names)
    gdf = _polygons_of(codes, grid)
    assert len(gdf) > 10
    from_polys = zone_totals(density, zone_coverage_from_polygons(gdf, grid, "code"), grid, names)
    assert list(from_raster["zone"]) == list(from_polys["zone"])
    for col in ("area_km2", "area_nodata_km2", "mean_density_kg_m2", "storage_pg"):
        np.testing.assert_allclose(from_polys[col], from_raster[col], rtol=1e-9, atol=1e-9)
    assert (from_raster["area_nodata_km2"] > 0).all()


def test_polygons_of_one_zone_are_dissolved_and_overlaps_between_zones_warned() -> None:
    grid = Grid.from_bounds((0, 0, 10_000, 10_000), 1_000, "EPSG:6931")
    a = shapely.box(0, 0, 4_000, 10_000)
    gdf = gpd.GeoDataFrame(
        {"zone": ["wet", "wet", "dry"]},
        geometry=[a, shapely.box(2_000, 0, 6_000, 10_000), shapely.box(5_500, 0, 10_000, 10_000)],
        crs=6931,
    )
    with pytest.warns(UserWarning, match="overlap in 10 cells"):
        cov = zone_coverage_from_polygons(gdf, grid, "zone")
    assert cov.names == {1: "wet", 2: "dry"}
    t = zone_totals(grid.wrap(np.ones(grid.shape)), cov, grid).set_index("zone")
    assert t.loc["wet", "area_km2"] == pytest.approx(60.0)  # not 80: the union of a and b
    assert t.loc["dry", "area_km2"] == pytest.approx(45.0)
    assert t.loc["all zones", "area_km2"] == pytest.approx(105.0)  # overlap counted twice


def test_reprojected_polygon_keeps_its_ellipsoidal_area() -> None:
    grid = Grid.from_bounds((-100_000, -3_400_000, 2_200_000, -1_600_000), 25_000, "EPSG:6931")
    lonlat = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(0, 60, 40, 70)], crs=4326)
    cov = zone_coverage_from_polygons(lonlat, grid, "z")
    row = zone_totals(grid.wrap(np.ones(grid.shape)), cov, grid).iloc[0]
    exact = ellipsoid_band_area(60.0, 70.0, 40.0, WGS84_A, WGS84_E2) / 1e6
    # equal-area grid: fractions x cell area are exact; the error left is the chords of the
    # densified parallels (about one cell long)
    assert row["area_km2"] == pytest.approx(exact, rel=1e-4)


def test_coverage_in_row_bands_equals_one_pass() -> None:
    grid = Grid.from_bounds((0, 0, 40, 30), 1.0, "EPSG:3857")
    poly = shapely.Point(20, -15).buffer(12.3)  # pixel space: (col, -row)
    one = list(_band_coverage(poly, grid))
    assert len(one) == 1
    bands = list(_band_coverage(poly, grid, max_cells=grid.shape[1] * 4))
    assert len(bands) == 7  # rows 2..27 in bands of 4
    cell = np.concatenate([c for c, _ in bands])
    frac = np.concatenate([f for _, f in bands])
    np.testing.assert_array_equal(cell, one[0][0])
    np.testing.assert_array_equal(frac, one[0][1])
    assert frac.sum() == pytest.approx(poly.area, rel=1e-6)  # single-precision fractions


# ------------------------------------------------------------------------------ dask = numpy
@pytest.mark.parametrize("chunks", [7, (16, 33), 50, (64, 128)])
def test_chunked_sums_equal_one_eager_numpy_call(chunks: int | tuple[int, int]) -> None:
    grid = Grid.from_bounds((-10, 40, 22, 64), 0.25, "EPSG:4326")  # 96 x 128
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 5.0, size=(3, *grid.shape))
    values[rng.random(values.shape) < 0.1] = np.nan
    codes = _blocky_zones(grid.shape, seed=4)
    area = grid.cell_area()

    layout = prepare_zones(grid.wrap(codes).rio.write_nodata(0), grid)
    idx = np.searchsorted(np.array(layout.codes), codes)
    idx[codes == 0] = -1
    eager = zone_sums_block(values, area, idx, layout.n_zones)
    dens = da.from_array(values, chunks=(2, *np.broadcast_to(chunks, 2)))
    lazy = zone_sums(dens, grid.cell_area(chunks=chunks), layout)
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)

    gdf = gpd.GeoDataFrame(
        {"z": [1, 2]},
        geometry=[shapely.Point(0, 50).buffer(6.3), shapely.Point(12, 55).buffer(4.1)],
        crs=4326,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the two discs overlap
        cov = zone_coverage_from_polygons(gdf, grid, "z")
    ny, nx = grid.shape
    index, partial = cov.block(slice(0, ny), slice(0, nx))
    assert len(partial[0]) > 50
    eager = zone_sums_block(values, area, index, 2, partial)
    lazy = zone_sums(dens, grid.cell_area(chunks=chunks), prepare_zones(cov, grid))
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)
    # and the per-block zone membership reassembles the dense fractions
    dense = np.zeros((2, ny, nx))
    for t in grid.tiles(chunks):
        i, (pc, pz, pf) = cov.block(t.row_slice, t.col_slice)
        sub = dense[:, t.row_slice, t.col_slice].reshape(2, -1)
        inside = np.flatnonzero(i.ravel() >= 0)
        sub[i.ravel()[inside], inside] += 1
        np.add.at(sub, (pz, pc), pf)
        dense[:, t.row_slice, t.col_slice] = sub.reshape(2, *i.shape)
    np.testing.assert_allclose(dense, cov.to_dense(), atol=1e-15)


def test_zone_sums_builds_without_computing() -> None:
    grid = Grid.from_bounds((0, 0, 100, 80), 1.0, "EPSG:3857")
    codes = _blocky_zones(grid.shape)
    layout = prepare_zones(grid.wrap(da.from_array(codes, chunks=30)).rio.write_nodata(0), grid)
    dens = da.random.default_rng(0).random((4, *grid.shape), chunks=(2, 30, 30))
    with raise_if_dask_computes():
        sums = zone_sums(dens, grid.cell_area(chunks=30), layout)
    assert sums.shape == (4, layout.n_zones, 3)
    out = sums.compute()
    assert np.all(out[..., 0] == out[0, :, 0])  # zone areas do not depend on the realization


# ------------------------------------------------------------------------------ table details
def test_nodata_cells_are_reported_apart_and_kept_out_of_the_mean() -> None:
    grid = Grid.from_bounds((2_000_000, 0, 2_004_000, 1_000), 1_000, "EPSG:6931")
    density = grid.wrap(
        np.array([[10.0, np.nan, 30.0, 5.0]]), attrs={"top_cm": 0, "bottom_cm": 100}
    )
    zones = grid.wrap(np.array([[1, 1, 1, 2]]))
    t = zone_totals(density, zones, grid, names={2: "b", 1: "a", 9: "absent"}, unit="Tg")
    assert list(t["zone"]) == ["b", "a", "absent", "all zones"]
    assert list(t["zone_code"].astype("object").fillna(-1)) == [2, 1, 9, -1]
    a = t.set_index("zone").loc["a"]
    assert a["area_km2"] == 3.0 and a["area_nodata_km2"] == 1.0
    assert a["mean_density_kg_m2"] == pytest.approx(20.0)  # (10 + 30) / 2, not / 3
    assert a["storage_tg"] == pytest.approx(40e6 / 1e9)
    absent = t.set_index("zone").loc["absent"]
    assert absent["area_km2"] == 0 and np.isnan(absent["mean_density_kg_m2"])
    total = t.set_index("zone").loc["all zones"]
    assert total["area_nodata_km2"] == 1.0
    assert total["mean_density_kg_m2"] == pytest.approx(45.0 / 3)
    assert (t["top_cm"] == 0).all() and (t["bottom_cm"] == 100).all()


def test_mismatched_grids_and_empty_zones_are_user_errors() -> None:
    grid = Grid.from_bounds((2_000_000, 0, 2_004_000, 1_000), 1_000, "EPSG:6931")
    other = Grid.from_bounds((2_000_000, 0, 2_004_000, 1_000), 500, "EPSG:6931")
    dens = grid.wrap(np.ones(grid.shape))
    with pytest.raises(GridMismatchError, match="zones are on"):
        zone_totals(dens, other.wrap(np.ones(other.shape, dtype=int)), grid)
    with pytest.raises(InputError, match="no zone code"):
        zone_totals(dens, grid.wrap(np.zeros(grid.shape, dtype="uint8")).rio.write_nodata(0), grid)
    far = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(1e6, 1e6, 2e6, 2e6)], crs=6931)
    with pytest.raises(InputError, match="covers any cell"):
        zone_coverage_from_polygons(far, grid, "z")
    with pytest.raises(InputError, match="no zone field 'zone'; fields are: z"):
        zone_coverage_from_polygons(far, grid, "zone")


def test_rasterize_zones_lazy_equals_eager_and_uses_cell_centres() -> None:
    grid = Grid.from_bounds((0, 0, 10_000, 10_000), 1_000, "EPSG:6931")
    gdf = gpd.GeoDataFrame(
        {"name": ["a", "b"]},
        geometry=[shapely.box(0, 0, 4_600, 10_000), shapely.box(4_600, 0, 10_000, 3_400)],
        crs=6931,
    )
    eager = rasterize_zones(gdf, grid, "name")
    with raise_if_dask_computes():
        lazy = rasterize_zones(gdf, grid, "name", chunks=3)
    np.testing.assert_array_equal(eager.values, lazy.values)
    assert eager.attrs["zone_names"] == {1: "a", 2: "b"}
    z = eager.values
    assert (z[:, :5] == 1).all()  # centres at 4.5 km < 4.6 km
    assert (z[7:, 5:] == 2).all() and (z[:7, 5:] == 0).all()  # rows from the top: y < 3.4 km


# ------------------------------------------------------------------------------ small parsers
def test_intervals_names_and_units() -> None:
    assert interval_from_attrs({"interval": "0-30"}) == (0.0, 30.0)
    assert interval_from_attrs({"top_cm": "30", "bottom_cm": 100}) == (30.0, 100.0)
    assert interval_from_attrs({"interval": "30-0"}) is None
    assert interval_from_name("maps/soc_0_30cm_mean.tif") == (0.0, 30.0)
    assert interval_from_name("density_100-200cm.tif") == (100.0, 200.0)
    assert interval_from_name("soc_2024_mean.tif") is None
    assert parse_zone_names("1=continuous, 2 = discontinuous") == {
        1: "continuous",
        2: "discontinuous",
    }
    with pytest.raises(Exception, match="--zone-names: 'x' is not CODE=NAME"):
        parse_zone_names("1=a,x")
    assert density_unit_factor("kg C m-2") == 1.0
    assert density_unit_factor("t C ha-1") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not a carbon density"):
        density_unit_factor("%")


@pytest.mark.parametrize(
    ("units", "factor"),
    [
        # 1 kg per cm² = 1 kg / 1e-4 m² = 1e4 kg m-2; 1 g per cm² = 1e-3 kg / 1e-4 m² = 10
        ("kg cm-2", 1e4),
        ("g cm-2", 10.0),
        ("kg km-2", 1e-6),
        # the carbon mark "C" is not centi: these stay kg, g or t per m² or ha
        ("kg C m-2", 1.0),
        ("kgC m-2", 1.0),
        ("kg m**-2", 1.0),
        ("kg/m²", 1.0),
        ("g C/m2", 1e-3),
        ("gC m^-2", 1e-3),
        ("Mg/ha", 0.1),  # 1e3 kg / 1e4 m²
        ("MgC ha-1", 0.1),
        ("t ha⁻¹", 0.1),
    ],
)
def test_density_units_are_read_as_tokens(units: str, factor: float) -> None:
    assert density_unit_factor(units) == pytest.approx(factor, rel=1e-15)


@pytest.mark.parametrize("units", ["kgcm-2", "kg m-3", "kg ha-2", "kg/m2/ha", "kg C C m-2"])
def test_ambiguous_or_non_density_units_are_refused(units: str) -> None:
    with pytest.raises(ValueError, match="not a carbon density"):
        density_unit_factor(units)


def test_milligrams_are_refused_not_read_as_megagrams() -> None:
    with pytest.raises(ValueError, match="mg is milligrams"):
        density_unit_factor("mg/ha")


def test_integrate_converts_grams_per_square_centimetre(tmp_path: Path) -> None:
    # 0.5 g cm-2 = 5 kg m-2 on four 1 km² cells of an equal-area grid: 2e7 kg = 2e-5 Pg
    grid = Grid.from_bounds((0, 0, 2_000, 2_000), 1_000, "EPSG:6931")
    dens = tmp_path / "soc_0_30cm_mean.tif"
    zones = tmp_path / "zones.tif"
    for path, arr in ((dens, np.full((2, 2), 0.5, "float32")), (zones, np.ones((2, 2), "uint8"))):
        with rasterio.open(
            path, "w", driver="GTiff", width=2, height=2, count=1, dtype=arr.dtype,
            crs="EPSG:6931", transform=grid.transform,
        ) as dst:  # fmt: skip
            dst.write(arr, 1)
            if path == dens:
                dst.set_band_unit(1, "g cm-2")
    t = integrate_files([dens], zones).set_index("zone")
    assert t.loc["all zones", "mean_density_kg_m2"] == pytest.approx(5.0, rel=1e-12)
    assert t.loc["all zones", "storage_pg"] == pytest.approx(2e-5, rel=1e-9)


def test_zone_coverage_reorders_to_the_names_given() -> None:
    grid = Grid.from_bounds((0, 0, 3_000, 1_000), 1_000, "EPSG:6931")
    gdf = gpd.GeoDataFrame(
        {"code": [1, 2, 3]},
        geometry=[shapely.box(i * 1_000, 0, (i + 1) * 1_000, 1_000) for i in range(3)],
        crs=6931,
    )
    cov = zone_coverage_from_polygons(gdf, grid, "code")
    assert isinstance(cov, ZoneCoverage) and list(cov.codes) == [1, 2, 3]
    dens = grid.wrap(np.array([[1.0, 2.0, 3.0]]))
    t = zone_totals(dens, cov, grid, names={3: "c", 1: "a"})
    assert list(t["zone"]) == ["c", "a", "2", "all zones"]
    np.testing.assert_allclose(t["storage_pg"] * 1e12 / 1e6, [3, 1, 2, 6])
    assert pd.isna(t["zone_code"].iloc[-1])


def test_zone_sums_of_realizations_with_different_nodata_are_summed_each():
    # the valid area is summed once for realizations sharing their nodata, and again
    # whenever a realization's nodata differs (with and without partial cells)
    rng = np.random.default_rng(3)
    area = rng.uniform(0.5, 2.0, (6, 7))
    index = rng.integers(-1, 3, (6, 7))
    d = rng.uniform(0.0, 5.0, (5, 6, 7))
    d[2, 1, 1] = np.nan  # realization 2 alone lacks a cell
    d[3:, 4, 2] = np.nan  # realizations 3 and 4 share a gap
    partial = (np.array([0, 8, 20]), np.array([1, 2, 0]), np.array([0.5, 0.25, 1.0]))
    d[4, 1, 1] = np.nan  # cell 8: a partial cell too
    for part in (None, partial):
        got = zone_sums_block(d, area, index, 3, part)
        for r in range(5):
            np.testing.assert_array_equal(got[r], zone_sums_block(d[r], area, index, 3, part))
        ok = np.isfinite(d[2])
        by_hand = [area[(index == z) & ok].sum() for z in range(3)]
        if part is None:
            np.testing.assert_allclose(got[2, :, 1], by_hand, rtol=1e-14)


# ------------------------------------------------------------------------------ sparse zones
def _brute_occupied(
    cov_or_index: object, grid: Grid, rows: list[int], cols: list[int]
) -> np.ndarray:
    r = np.cumsum([0, *rows])
    c = np.cumsum([0, *cols])
    out = np.zeros((len(rows), len(cols)), dtype=bool)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if isinstance(cov_or_index, ZoneCoverage):
                idx, (pc, _, _) = cov_or_index.block(slice(r[i], r[i + 1]), slice(c[j], c[j + 1]))
                out[i, j] = bool((idx >= 0).any() or len(pc))
            else:
                out[i, j] = bool((cov_or_index[r[i] : r[i + 1], c[j] : c[j + 1]] > 0).any())
    return out


@pytest.mark.parametrize(
    "read_chunks,sum_chunks", [(16, (10, 10)), ((25, 40), (33, 17)), (64, (7, 50))]
)
def test_chunks_outside_every_zone_are_skipped_and_never_read(read_chunks, sum_chunks) -> None:
    grid = Grid.from_bounds((0, 0, 120, 90), 1.0, "EPSG:3857")  # 90 x 120
    codes = np.zeros(grid.shape, dtype="int32")
    codes[5:23, 70:101] = 1  # two small zones in a grid that is mostly "no zone"
    codes[60:62, 3:9] = 2
    codes[88, 119] = 2
    layout = prepare_zones(
        grid.wrap(da.from_array(codes, chunks=read_chunks)).rio.write_nodata(0), grid
    )
    rows, cols = grid.chunk_sizes(sum_chunks)
    occ = layout.occupied(rows, cols)
    # conservative by the zone raster's own blocks: a chunk counts when it overlaps a read
    # block that holds a zone cell (found by prepare_zones's one pass, no second read)
    rr, cc = grid.chunk_sizes(read_chunks)
    block_has = np.zeros(grid.shape, dtype="int32")
    for i, r0 in enumerate(np.cumsum([0, *rr[:-1]])):
        for j, c0 in enumerate(np.cumsum([0, *cc[:-1]])):
            sl = np.s_[r0 : r0 + rr[i], c0 : c0 + cc[j]]
            block_has[sl] = (codes[sl] > 0).any()
    np.testing.assert_array_equal(occ, _brute_occupied(block_has, grid, list(rows), list(cols)))
    assert occ[_brute_occupied(codes, grid, list(rows), list(cols))].all()
    assert 0 < occ.sum() < occ.size

    # the same for polygons (runs of whole cells and partial edge cells)
    gdf = gpd.GeoDataFrame(
        {"z": [1, 2]},
        geometry=[shapely.box(70.3, 67.2, 100.6, 85.0), shapely.Point(6, 29).buffer(2.2)],
        crs=grid.crs,
    )
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    occ_cov = prepare_zones(cov, grid).occupied(rows, cols)
    np.testing.assert_array_equal(occ_cov, _brute_occupied(cov, grid, list(rows), list(cols)))

    # sums with skipping equal the dense sums, and the skipped chunks' maps are never read
    rng = np.random.default_rng(5)
    values = rng.gamma(2.0, 5.0, size=grid.shape)
    idx = np.where(codes > 0, codes - 1, -1)
    eager = zone_sums_block(values, grid.cell_area(), idx, 2)
    seen: list[tuple[int, int]] = []

    def record(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info is not None:
            seen.append(tuple(block_info[0]["chunk-location"]))
        return block

    dens = da.from_array(values, chunks=(rows, cols)).map_blocks(record, dtype="float64")
    lazy = zone_sums(dens, grid.cell_area(chunks=sum_chunks), layout).compute()
    np.testing.assert_allclose(lazy, eager, rtol=1e-12)
    assert set(seen) == {tuple(ij) for ij in np.argwhere(occ)}


def _write_zones(path: Path, codes: np.ndarray, crs: str, transform: Any) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0],
                       count=1, dtype=codes.dtype.name, crs=crs, transform=transform,
                       nodata=0) as dst:  # fmt: skip
        dst.write(codes, 1)
    return path


@pytest.mark.parametrize("left", [-180.0, 0.0])
def test_a_global_zone_raster_covers_a_lonlat_grid_across_180(tmp_path: Path, left: float) -> None:
    # zone 1 west of 0°, zone 2 east of it: on 170..190 °E, zone 2 then zone 1, half each
    lon = (np.arange(360) + left + 0.5 + 180) % 360 - 180
    codes = np.tile(np.where(lon < 0, 1, 2), (180, 1)).astype("uint8")
    path = _write_zones(tmp_path / "zones.tif", codes, "EPSG:4326", Affine(1, 0, left, 0, -1, 90))
    grid = Grid.from_bounds((170, 0, 190, 2), 1.0, "EPSG:4326")
    density = grid.wrap(np.ones(grid.shape), attrs={"interval": "0-30"})
    table = zone_totals(density, load_zone_layout(path, grid), grid).set_index("zone")
    half = grid.cell_area()[:, :10].sum() / 1e6  # the two halves are mirror images
    assert table.loc["1", "area_km2"] == pytest.approx(half, rel=1e-12)
    assert table.loc["2", "area_km2"] == pytest.approx(half, rel=1e-12)


# --------------------------------------------------------------- zone rasters finer than the grid
def _ones_on(grid: Grid) -> Any:
    """1 kg m-2 on every cell of the globe (none off it: a world map's rim has no land)."""
    ones = np.where(np.isfinite(grid.cell_area()), 1.0, np.nan)
    return grid.wrap(ones, attrs={"interval": "0-30"})


def test_a_finer_zone_raster_gives_each_zone_its_pixels_share_of_a_cell(tmp_path: Path) -> None:
    # 1 km zones on a 10 km equal-area grid: a lone zone-1 pixel is 1 km², not a whole cell
    codes = np.zeros((20, 20), "uint8")
    codes[0, 0] = 1
    codes[10:, 10:] = 2
    codes[10, 10] = 0  # nodata: 99 pixels of zone 2 in the last cell
    path = _write_zones(tmp_path / "z.tif", codes, "EPSG:6931", Affine(1000, 0, 0, 0, -1000, 2e4))
    grid = Grid("EPSG:6931", Affine(10_000, 0, 0, 0, -10_000, 2e4), (2, 2))
    area = grid.cell_area()[0, 0] / 100  # 1 km² on the ellipsoid, as every cell (equal area)
    table = zone_totals(_ones_on(grid), load_zone_layout(path, grid), grid).set_index("zone")
    assert table.loc["1", "area_km2"] == pytest.approx(area / 1e6, rel=1e-6)
    assert table.loc["2", "area_km2"] == pytest.approx(99 * area / 1e6, rel=1e-6)
    assert table.loc["2", "storage_pg"] == pytest.approx(99 * area / 1e12, rel=1e-6)
    # a code said to mean "no zone" counts as none
    layout = load_zone_layout(path, grid, zone_nodata=[2])
    assert layout.codes == (1,)


def test_a_finer_zone_raster_on_a_coast_counts_its_pixels(tmp_path: Path) -> None:
    # a wavy diagonal coast, the sea as nodata: the land's area is its pixel count
    r, c = np.mgrid[0:100, 0:100]
    land = (c > r + 5 * np.sin(r / 3)).astype("uint8")
    path = _write_zones(
        tmp_path / "coast.tif", land, "EPSG:6931", Affine(1000, 0, 0, 0, -1000, 1e5)
    )
    grid = Grid("EPSG:6931", Affine(10_000, 0, 0, 0, -10_000, 1e5), (10, 10))
    layout = load_zone_layout(path, grid, chunks=4)
    table = zone_totals(_ones_on(grid), layout, grid).set_index("zone")
    pixel = grid.cell_area()[0, 0] / 100
    assert table.loc["1", "area_km2"] == pytest.approx(land.sum() * pixel / 1e6, rel=1e-6)
    # cell by cell: the share of its 100 pixels
    share = land.reshape(10, 10, 10, 10).mean(axis=(1, 3))
    np.testing.assert_allclose(layout.source.to_dense()[0], share, atol=1e-6)


def test_a_finer_zone_raster_in_another_crs_gives_the_pixels_share(tmp_path: Path) -> None:
    # 0.05° zones on a 20 km LAEA Europe grid: zone 3 everywhere, a patch of zone 4; the
    # shares add up to whole cells, and zone 4's follow the exact cover of its patch
    codes = np.full((200, 400), 3, "uint8")
    codes[60:100, 100:180] = 4  # 62..60 °N, 10..14 °E
    path = _write_zones(tmp_path / "geo.tif", codes, "EPSG:4326",
                        Affine(0.05, 0, 5, 0, -0.05, 65))  # fmt: skip
    grid = Grid.from_bounds((4.4e6, 3.8e6, 4.8e6, 4.2e6), 2e4, "EPSG:3035")
    dense = load_zone_layout(path, grid).source.to_dense()
    np.testing.assert_allclose(dense.sum(axis=0), 1.0, atol=1e-5)
    patch = gpd.GeoDataFrame({"z": [4]}, geometry=[shapely.box(10, 60, 14, 62)], crs=4326)
    exact = zone_coverage_from_polygons(patch, grid, "z").to_dense()[0]
    np.testing.assert_allclose(dense[1], exact, atol=0.05)  # pixel edges against straight ones
    assert dense[1].sum() == pytest.approx(exact.sum(), rel=0.01)


# ------------------------------------------------ polygons across 180° and round the poles
GEOD = pyproj.Geod(ellps="WGS84")


def _geodetic_area(lonlat: Any) -> float:
    """Ellipsoidal area (m²) of a lon/lat polygon whose edges follow meridians and parallels."""
    return abs(GEOD.geometry_area_perimeter(shapely.segmentize(lonlat, 0.01))[0])


def _zone_area_m2(gdf: gpd.GeoDataFrame, grid: Grid) -> float:
    table = zone_totals(_ones_on(grid), zone_coverage_from_polygons(gdf, grid, "z"), grid)
    return float(table.set_index("zone").loc["all zones", "area_km2"]) * 1e6


@pytest.mark.parametrize(
    ("bounds", "box"),
    [
        ((170, 0, 190, 2), (-180, 0, -170, 2)),  # east of 180° given as -180..-170
        ((-180, 0, 180, 2), (170, 0, 190, 2)),  # past 180° on a -180..180 grid
        ((0, 0, 360, 2), (-10, 0, 10, 2)),
    ],
)
def test_lonlat_polygons_across_180_land_on_every_part_of_the_grid(bounds, box) -> None:
    grid = Grid.from_bounds(bounds, 1.0, "EPSG:4326")
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(*box)], crs=4326)
    # whole cells only: fractions x ellipsoidal cell areas are exact
    assert _zone_area_m2(gdf, grid) == pytest.approx(_geodetic_area(shapely.box(*box)), rel=1e-6)
    burnt = rasterize_zones(gdf, grid, "z").values
    assert (burnt == 1).sum() == 2 * (box[2] - box[0])  # 2 rows of 1° cells


def test_a_projected_polygon_across_180_is_kept_whole() -> None:
    merc = pyproj.Transformer.from_crs(4326, "EPSG:3832", always_xy=True)  # centred on 150°E
    (x0, x1), (y0, y1) = merc.transform([175, 185], [-20, -10])
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(x0, y0, x1, y1)], crs="EPSG:3832")
    exact = _geodetic_area(shapely.box(175, -20, 185, -10))
    for bounds in [(-180, -30, 180, 0), (160, -30, 200, 0)]:
        grid = Grid.from_bounds(bounds, 1.0, "EPSG:4326")
        assert _zone_area_m2(gdf, grid) == pytest.approx(exact, rel=1e-6)


_CIRCLE = shapely.Point(0, 0).buffer(1e6, 256)
_OFF_CENTRE = shapely.Point(3e5, 0).buffer(1e6, 256)
_RING = shapely.Point(0, 0).buffer(2e6, 256).difference(shapely.Point(1e5, 0).buffer(1e6, 256))
_SQUARE = shapely.box(-1.5e6, -1.5e6, 1.5e6, 1.2e6)


@pytest.mark.parametrize(
    ("geom", "crs", "equal_area", "bounds"),
    [
        (_CIRCLE, "EPSG:6931", "EPSG:6931", (-180, 60, 180, 90)),
        (_OFF_CENTRE, "EPSG:6931", "EPSG:6931", (-180, 60, 180, 90)),
        (_OFF_CENTRE, "EPSG:6931", "EPSG:6931", (0, 60, 360, 90)),
        (_OFF_CENTRE, "EPSG:6931", "EPSG:6931", (-180, -90, 180, 90)),
        (_OFF_CENTRE, "EPSG:6932", "EPSG:6932", (170, -90, 530, -50)),
        (_RING, "EPSG:6931", "EPSG:6931", (-180, 50, 180, 90)),
        (_SQUARE, "EPSG:3413", "EPSG:6931", (-180, 50, 180, 90)),
        (_SQUARE, "EPSG:3413", "EPSG:6931", (-180, -90, 180, 90)),
        (_SQUARE, "EPSG:3031", "EPSG:6932", (-180, -90, 180, -50)),
    ],
)
def test_a_zone_round_a_pole_in_a_polar_crs_keeps_its_area_on_a_lonlat_grid(
    geom: Any, crs: str, equal_area: str, bounds: tuple[float, ...]
) -> None:
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[geom], crs=crs)
    exact = float(gdf.geometry.segmentize(1000).to_crs(equal_area).area.iloc[0])
    grid = Grid.from_bounds(bounds, 1.0, "EPSG:4326")
    # The lon/lat polygon is right to 1e-5; what is left is the fraction of a partial cell
    # taken of its lon/lat rectangle while the cell's area per degree of latitude varies
    # with cos(lat) (8 % across a 1° cell at 78°): measured 0.01-0.23 % at 1°, 0.01 % at 0.25°.
    assert _zone_area_m2(gdf, grid) == pytest.approx(exact, rel=5e-3)
    burnt = rasterize_zones(gdf, grid, "z").values == 1  # by cell centre: within 0.35 %
    assert float((grid.cell_area() * burnt).sum()) == pytest.approx(exact, rel=1e-2)


@pytest.mark.parametrize(
    "geom",
    [
        shapely.box(170, 60, 190, 70),  # past 180°: PROJ folded 190 to -170 and the ring
        shapely.box(-190, 60, -170, 70),  # went round the other 340° (17.8 million km²)
        shapely.MultiPolygon([shapely.box(170, 60, 180, 70), shapely.box(-180, 60, -170, 70)]),
    ],
)
def test_lonlat_zones_across_180_keep_their_area_on_a_world_wide_projected_grid(
    geom: Any,
) -> None:
    """EASE-Grid 2.0 Global (EPSG:6933, equal area on the ellipsoid, cut at 180°) over
    55-75° N at 25 km: the zone's area is the geodesic area of the 60-70° N band 20° wide,
    and densifying the polygon took a step from PROJ's bounds of the grid in lon/lat
    (-180 to -179.95 for the whole globe): 7e-6° at 5 km cells, millions of vertices."""
    to = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True)
    x0, _ = to.transform(-180, 0)
    x1, _ = to.transform(180, 0)
    _, y0 = to.transform(0, 55)
    _, y1 = to.transform(0, 75)
    grid = Grid.from_bounds((x0, y0, x1, y1), 25_000, "EPSG:6933")
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[geom], crs="EPSG:4326")
    lons = np.linspace(170, 190, 2001)
    exact, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(
        np.r_[lons, lons[::-1]], np.r_[np.full(2001, 60.0), np.full(2001, 70.0)]
    )
    assert _zone_area_m2(gdf, grid) == pytest.approx(abs(exact), rel=1e-6)
    assert shapely.get_num_coordinates(to_grid_crs(gdf, grid).geometry.iloc[0]) < 20_000


@pytest.mark.parametrize(
    ("crs", "box", "rel"),
    [
        ("+proj=moll +lon_0=150 +ellps=WGS84", (-40, 0, -20, 10), 5e-3),  # across its seam, -30°
        ("+proj=moll +lon_0=150 +ellps=WGS84", (320, 0, 340, 10), 5e-3),  # the same, a turn on
        ("ESRI:54052", (-50, 10, -30, 20), 1e-3),  # across Goode's interruption at -40° N
        ("ESRI:54052", (-120, -30, -80, -10), 1e-3),  # and at -100° S
    ],
)
def test_lonlat_zones_across_a_projections_seam_or_interruption_keep_their_area(
    crs: str, box: tuple[float, ...], rel: float
) -> None:
    """A world map whose seam is not at 180° (``lon_0 = 150``), or an interrupted one: a
    zone across the seam or an interruption came out 41.9 million km² for 2.45, or 2.96
    for 2.38; now within the rim cells' share (whole cells in or out by their centre)."""
    grid = Grid.from_bounds((-20.1e6, -9.1e6, 20.1e6, 9.1e6), 25_000, crs)
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[shapely.box(*box)], crs="EPSG:4326")
    lons = np.linspace(box[0], box[2], 2001)
    exact, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(
        np.r_[lons, lons[::-1]], np.r_[np.full(2001, box[1]), np.full(2001, box[3])]
    )
    assert _zone_area_m2(gdf, grid) == pytest.approx(abs(exact), rel=rel)


def _plain_reprojection(gdf: gpd.GeoDataFrame, grid: Grid) -> gpd.GeoDataFrame:
    """Densify to about one cell and reproject, as zone polygons always were."""
    t = pyproj.Transformer.from_crs(grid.crs, gdf.crs, always_xy=True)
    x0, y0, x1, y1 = t.transform_bounds(*grid.bounds, densify_pts=21)
    step = min(abs(x1 - x0) / grid.shape[1], abs(y1 - y0) / grid.shape[0])
    return gdf.set_geometry(gdf.geometry.segmentize(step)).to_crs(grid.crs)


@pytest.mark.parametrize(
    ("geom", "crs", "bounds", "grid_crs", "res"),
    [
        (shapely.Point(500_000, 6.8e6).buffer(50_000), "EPSG:32633", (12, 60, 18, 63), 4326, 0.05),
        (shapely.Point(1.5e6, 0).buffer(4e5), "EPSG:6931", (-180, 50, 180, 90), 4326, 0.5),
        (shapely.box(0, 60, 40, 70), "EPSG:4326", (-1e5, -3.4e6, 2.2e6, -1.6e6), 6931, 25_000),
        (shapely.box(-180, -90, 180, 90), "EPSG:4326", (-180, -90, 180, 90), 4269, 1.0),
    ],
)
def test_polygons_off_180_and_the_poles_are_covered_as_a_plain_reprojection_gives(
    geom: Any, crs: str, bounds: tuple[float, ...], grid_crs: int, res: float
) -> None:
    grid = Grid.from_bounds(bounds, res, f"EPSG:{grid_crs}")
    gdf = gpd.GeoDataFrame({"z": [1]}, geometry=[geom], crs=crs)
    new = zone_coverage_from_polygons(gdf, grid, "z")
    plain = zone_coverage_from_polygons(_plain_reprojection(gdf, grid), grid, "z")
    for name in ["run_row", "run_col0", "run_col1", "run_zone", "part_cell", "part_frac"]:
        np.testing.assert_array_equal(getattr(new, name), getattr(plain, name))
    assert len(new.part_cell) > 0 or len(new.run_row) > 0
