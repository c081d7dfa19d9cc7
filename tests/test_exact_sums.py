"""Exact, order-independent totals: the same bits for any chunking and worker count.

Zone sums keep every chunk's partial sums exact (integers in units of 2**-1074) and round
once at the end, so:

* :func:`mapping.zonal.exact_bincount` equals ``math.fsum`` per bin (the correctly
  rounded exact sum) on values that defeat plain summation (cancellation, subnormals,
  magnitudes 1e-320 to 1e300);
* zone tables (raster and polygon zones) and Monte Carlo draws and summaries are
  byte-identical across chunk sizes that do not divide the grid, and on a two-process
  local cluster; the storage of each zone is ``fsum(A * d)`` over its cells.
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest

from mapping.grid import Grid
from mapping.models.variogram import Variogram
from mapping.residual_errors import LocalLevel
from mapping.uncertainty import independent_pixel_range, summarise_draws, zone_total_draws
from mapping.zonal import (
    exact_bincount,
    exact_to_float,
    zone_sums_block,
    zone_totals,
)
from mapping.zones import zone_coverage_from_polygons

NAMES = {1: "a", 2: "b", 3: "c"}
NY, NX = 37, 53  # primes: no chunk size below divides the grid


def _world() -> tuple[Grid, np.ndarray, np.ndarray, np.ndarray]:
    grid = Grid.from_bounds((1e6, 1e6, 1e6 + NX * 1000.0, 1e6 + NY * 1000.0), 1000.0, "EPSG:6931")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:NY, 0:NX] / max(NY, NX)
    # densities spread over many binades, so a different order of additions rounds differently
    mean = (8.0 + 4.0 * np.sin(3 * xx) + 3.0 * yy) * rng.lognormal(0.0, 2.0, (NY, NX))
    std = 0.15 * mean + 0.5 * xx
    zones = np.ones((NY, NX), dtype="int32")
    zones[:, NX // 2 :] = 2
    zones[NY // 2 :, NX // 3 :] = 3
    zones[:2, :3] = 0
    mean[5:7, 20:26] = np.nan
    return grid, mean, std, zones


def test_exact_bincount_is_fsum_per_bin() -> None:
    rng = np.random.default_rng(1)
    w = rng.lognormal(5.0, 6.0, 20_000) * rng.choice([-1.0, 1.0], 20_000)
    w[:12] = [1e300, -1e300, 1e-320, -5e-324, 2.2250738585072014e-308, 0.0, -0.0,
              1.0, 1e16, -1e16, 3.0, 1e-310]  # fmt: skip
    idx = rng.integers(0, 4, w.size)
    idx[:12] = 0
    got = exact_to_float(exact_bincount(idx, w, 4))
    want = np.array([math.fsum(w[idx == b]) for b in range(4)])
    assert got.tobytes() == want.tobytes()
    # plain summation gets at least one bin wrong here (the reason for all this)
    assert not np.array_equal(np.bincount(idx, w, minlength=4), want)
    # any order, any split: the same exact sums
    perm = rng.permutation(w.size)
    halves = exact_bincount(idx[perm][:7001], w[perm][:7001], 4) + exact_bincount(
        idx[perm][7001:], w[perm][7001:], 4
    )
    assert exact_to_float(halves).tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="finite"):
        exact_bincount(np.array([0]), np.array([np.inf]), 1)


def test_block_kernel_is_fsum_of_area_times_density() -> None:
    grid, mean, _, zones = _world()
    area = np.asarray(grid.cell_area())
    index = np.where(zones > 0, zones - 1, -1)
    got = zone_sums_block(mean, area, index, 3)
    ok = np.isfinite(mean)
    for z in range(3):
        cells = index == z
        assert got[z, 0] == math.fsum(area[cells])
        assert got[z, 1] == math.fsum(area[cells & ok])
        assert got[z, 2] == math.fsum((area * mean)[cells & ok])


def _table(grid: Grid, mean: np.ndarray, zones, chunks) -> pd.DataFrame:
    dens = grid.wrap(da.from_array(mean, chunks=chunks), attrs={"interval": "0-30"})
    return zone_totals(dens, zones, grid, names=NAMES)


def test_zone_tables_are_byte_identical_across_chunks_and_workers() -> None:
    from distributed import Client, LocalCluster

    grid, mean, _, zones = _world()
    zmap = grid.wrap(zones).rio.write_nodata(0)
    ref = _table(grid, mean, zmap, (NY, NX))  # one chunk
    area = np.asarray(grid.cell_area())
    ok = np.isfinite(mean)
    for code, name in NAMES.items():
        want = math.fsum((area * mean)[(zones == code) & ok]) / 1e12
        assert ref.loc[ref["zone"] == name, "storage_pg"].item() == want
    for chunks in (5, (7, 11), 16, (36, 52)):
        got = _table(grid, mean, zmap, chunks)
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        got = _table(grid, mean, zmap, (9, 13))
    pd.testing.assert_frame_equal(got, ref, check_exact=True)


def test_polygon_zone_tables_are_byte_identical_across_chunks() -> None:
    import geopandas as gpd
    import shapely

    grid, mean, _, _ = _world()
    left, bottom, _, top = grid.bounds
    gdf = gpd.GeoDataFrame(
        {"z": [1, 2]},
        geometry=[
            shapely.box(left + 2300, bottom + 1700, left + 20400, top - 3300),
            shapely.Point(left + 30000, bottom + 15000).buffer(9000),
        ],
        crs="EPSG:6931",
    )
    cov = zone_coverage_from_polygons(gdf, grid, "z")
    ref = _table(grid, mean, cov, (NY, NX))
    assert (ref["storage_pg"] > 0).sum() >= 3
    for chunks in (6, (10, 17), 23):
        pd.testing.assert_frame_equal(_table(grid, mean, cov, chunks), ref, check_exact=True)


def _draws(grid: Grid, mean: np.ndarray, std: np.ndarray, zones, chunks, **kw) -> pd.DataFrame:
    v = {
        "0-30": Variogram("exponential", 1.0, 3000.0, nugget=0.1),
        "0-100": Variogram("spherical", 0.8, 7000.0, nugget=0.2),
    }
    return zone_total_draws(
        {"0-30": grid.wrap(mean), "0-100": grid.wrap(mean * 2.6)},
        {"0-30": grid.wrap(std), "0-100": grid.wrap(std * 2.2)},
        zones, grid, v, n_realizations=12, seed=5, names=NAMES, chunks=chunks,
        common_sd={"0-30": 0.5, "0-100": 0.0}, **kw,
    )  # fmt: skip


def test_independent_pixel_ranges_are_byte_identical_across_chunks() -> None:
    grid, mean, std, zones = _world()
    zmap = grid.wrap(zones).rio.write_nodata(0)

    def ind(chunks: int | tuple[int, int]) -> pd.DataFrame:
        m, s = {"0-30": grid.wrap(mean)}, {"0-30": grid.wrap(std)}
        return independent_pixel_range(m, s, zmap, grid, names=NAMES, chunks=chunks)

    ref = ind(64)
    for chunks in (7, (10, 40), (36, 13)):
        pd.testing.assert_frame_equal(ind(chunks), ref, check_exact=True)


def test_monte_carlo_sums_are_byte_identical_across_workers_and_batches() -> None:
    grid, mean, std, zones = _world()
    zmap = grid.wrap(zones).rio.write_nodata(0)
    with dask.config.set(scheduler="synchronous"):
        ref = _draws(grid, mean, std, zmap, 11)
    with dask.config.set(scheduler="threads", num_workers=2):
        got = _draws(grid, mean, std, zmap, 11, batch=5)
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    pd.testing.assert_frame_equal(summarise_draws(got), summarise_draws(ref), check_exact=True)


def test_monte_carlo_draws_are_byte_identical_across_chunks() -> None:
    grid, mean, std, zones = _world()
    zmap = grid.wrap(zones).rio.write_nodata(0)
    ref = _draws(grid, mean, std, zmap, 64)
    for chunks in ((36, 13), (10, 17)):  # each chunk computes the whole tiles it touches
        got = _draws(grid, mean, std, zmap, chunks, batch=5)
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
        pd.testing.assert_frame_equal(summarise_draws(got), summarise_draws(ref), check_exact=True)
    # lognormal draws and a coarsened lattice (bilinear nodes, top-up noise) too
    for kw in ({"distribution": "lognormal"}, {"coarsen": 2}):
        want = _draws(grid, mean, std, zmap, 64, **kw)
        got = _draws(grid, mean, std, zmap, (10, 17), **kw)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert not np.array_equal(want["storage_pg"], ref["storage_pg"])
    # a grid of several tiles of the field, chunks across the seams
    big = Grid.from_bounds((1e6, 1e6, 1e6 + 261 * 1000.0, 1e6 + 301 * 1000.0), 1000.0, "EPSG:6931")
    yy, xx = np.mgrid[0:301, 0:261] / 301
    m, sd = big.wrap(5.0 + 3.0 * np.sin(4 * xx) + yy), big.wrap(1.0 + xx)
    zb = np.where(xx < 0.4, 1, 2).astype("int32")
    short = Variogram("exponential", 1.0, 1500.0, nugget=0.2)

    def tiled(chunks: int | tuple[int, int]) -> pd.DataFrame:
        return zone_total_draws(
            {"0-30": m}, {"0-30": sd}, big.wrap(zb), big, short, n_realizations=3, seed=2,
            chunks=chunks, names=NAMES,
        )  # fmt: skip

    want = tiled(97)
    assert want.attrs["chunks"] == (97, 97)
    pd.testing.assert_frame_equal(tiled((64, 150)), want, check_exact=True)
    # a local level: its weight maps, one task per chunk, shared by the batches and by the
    # two intervals with the same level
    rows, cols = np.nonzero(zones[::7, ::9] == 1)
    xy = np.column_stack(grid.working_xy(rows * 7, cols * 9))
    lev = LocalLevel(Variogram("exponential", 1.0, 4000.0, nugget=0.05), xy)
    local = {"0-30": lev, "0-100": LocalLevel(lev.variogram, xy)}
    lref = _draws(grid, mean, std, zmap, 64, local_level=local)
    assert not np.array_equal(lref["storage_pg"], ref["storage_pg"])
    assert "u" in vars(lev) and "u" not in vars(local["0-100"])  # one solve of K^-1 1
    got = _draws(grid, mean, std, zmap, (10, 17), local_level=local, batch=5)
    pd.testing.assert_frame_equal(got, lref, check_exact=True)
    # and on a two-process local cluster
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        got = _draws(grid, mean, std, zmap, (19, 27))
        lgot = _draws(grid, mean, std, zmap, (19, 27), local_level=local, batch=5)
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    pd.testing.assert_frame_equal(lgot, lref, check_exact=True)
