"""Throughput and peak memory of zone totals (``mapping.zonal``) on a synthetic polar world.

Run: ``python benchmarks/bench_zonal.py [N] [CHUNKS]`` (default a 6000 x 6000 grid of 1 km
cells on EASE-Grid 2.0 North, chunks of 1024). Writes a density and a zone GeoTIFF to a
temporary folder, then times

1. ``socmap integrate`` on them (``integrate_files``: chunked read, per-block kernel);
2. the same sums with plain xarray (one masked sum per zone over the same Dask arrays;
   ``groupby`` over a chunked array needs ``flox``, not a dependency), the library route,
   to justify the hand-written block kernel;
3. exact polygon coverage (``zone_coverage_from_polygons``, exactextract) of the zones
   polygonised, and the totals with it;
4. 16 realizations of the density at once (the Monte Carlo use: ``zone_sums`` on an
   ``(n, y, x)`` array).

Peak memory is the process's resident set size sampled every 20 ms (it sees GDAL's and
NumPy's allocations alike), above what the process held before the step.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import psutil
import rasterio
import rasterio.features

from mapping.cluster import PeakRSS
from mapping.grid import Grid
from mapping.zonal import integrate_files, zone_sums
from mapping.zones import prepare_zones, zone_coverage_from_polygons


def measure(label: str, n_cells: int, fn: Callable[[], Any]) -> Any:
    base = psutil.Process().memory_info().rss
    with PeakRSS(interval=0.02) as rss:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    print(
        f"{label:<44} {dt:8.2f} s  {n_cells / dt / 1e6:8.1f} Mcells/s  "
        f"peak +{(rss.peak_main - base) / 2**20:7.0f} MiB"
    )
    return out


def zone_codes(grid: Grid, rows: slice, cols: slice) -> np.ndarray:
    """Four rings around the pole with wavy edges, 0 (no zone) beyond."""
    y, x = grid.coords()
    xx, yy = np.meshgrid(x[cols], y[rows])
    half = (grid.bounds[2] - grid.bounds[0]) / 2
    r = np.hypot(xx, yy) / half + 0.05 * np.sin(np.arctan2(yy, xx) * 7)
    return np.digitize(r, [0.13, 0.47, 0.67, 0.83, 1.0]).astype("uint8") % 5


def _sectors(grid: Grid, block_info: Any) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    y, x = grid.coords()
    xx, yy = np.meshgrid(x[c0:c1], y[r0:r1])
    return ((np.arctan2(yy, xx) + np.pi) / (2 * np.pi) * 10).astype("uint8").clip(0, 9)


def write_world(folder: Path, grid: Grid, chunks: int) -> tuple[Path, Path]:
    profile = dict(
        driver="GTiff",
        width=grid.shape[1],
        height=grid.shape[0],
        count=1,
        crs=grid.crs.to_wkt(),
        transform=grid.transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    zpath, dpath = folder / "zones.tif", folder / "soc_0_100cm_mean.tif"
    rng = np.random.default_rng(0)
    with (
        rasterio.open(zpath, "w", dtype="uint8", nodata=0, **profile) as z,
        rasterio.open(dpath, "w", dtype="float32", nodata=-9999, **profile) as d,
    ):
        for t in grid.tiles(chunks):
            rs, cs = t.row_slice, t.col_slice
            win = rasterio.windows.Window(
                cs.start, rs.start, cs.stop - cs.start, rs.stop - rs.start
            )
            codes = zone_codes(grid, rs, cs)
            z.write(codes, 1, window=win)
            dens = rng.gamma(4.0, 7.0, size=codes.shape).astype("float32")
            dens[rng.random(codes.shape) < 0.02] = -9999
            d.write(dens, 1, window=win)
    return dpath, zpath


def main(n: int = 6000, chunks: int = 1024) -> None:
    half = n * 500.0
    grid = Grid.from_bounds((-half, -half, half, half), 1000.0, "EPSG:6931")
    cells = n * n
    print(f"grid {grid}, {cells / 1e6:.0f} M cells, chunks {chunks}, {dask.system.CPU_COUNT} cores")
    with tempfile.TemporaryDirectory() as tmp:
        dpath, zpath = write_world(Path(tmp), grid, chunks)
        names = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
        table = measure(
            "integrate_files (raster zones, from disk)",
            cells,
            lambda: integrate_files([dpath], zpath, zone_names=names, chunks=chunks),
        )
        print(
            table[["zone", "area_km2", "mean_density_kg_m2", "storage_pg"]].to_string(index=False)
        )

        import rioxarray
        import xarray as xr

        dens = rioxarray.open_rasterio(dpath, chunks={"y": chunks, "x": chunks}, masked=True)[0]
        zones = rioxarray.open_rasterio(zpath, chunks={"y": chunks, "x": chunks})[0]
        area = xr.DataArray(grid.cell_area(chunks=chunks), dims=("y", "x"))

        def masked_sums(z: Any, codes: list[int]) -> Any:
            # Without flox, xarray cannot group lazily by a chunked array; one masked sum per
            # zone, all in one graph, is the plain xarray/Dask route.
            kg = dens * area.data
            sums = [kg.where(z == c).sum() for c in codes]
            return xr.concat(dask.compute(*sums), dim="zone").assign_coords(zone=codes)

        ref = measure(
            "xarray: one masked sum per zone, 4 zones",
            cells,
            lambda: masked_sums(zones, [1, 2, 3, 4]),
        )
        mine = table.set_index("zone_code")["storage_pg"].dropna()
        got = ref.to_series() / 1e12
        print(f"  max relative difference to integrate: {np.max(np.abs(got / mine - 1)):.1e}")
        layout4 = prepare_zones(zones.rio.write_nodata(0), grid, chunks=chunks)
        measure(
            "zone_sums kernel, 4 zones (prepared)",
            cells,
            lambda: zone_sums(dens.data, area.data, layout4).compute(),
        )
        # 40 zones: the rings cut into 10 sectors each
        sector = da.map_blocks(
            lambda block_info=None: _sectors(grid, block_info),
            dtype="uint8",
            chunks=zones.data.chunks,
        )
        z40 = zones.copy(data=da.where(zones.data > 0, (zones.data - 1) * 10 + sector + 1, 0))
        codes40 = list(range(1, 41))
        measure(
            "xarray: one masked sum per zone, 40 zones", cells, lambda: masked_sums(z40, codes40)
        )
        layout40 = prepare_zones(z40.rio.write_nodata(0), grid, chunks=chunks)
        measure(
            "zone_sums kernel, 40 zones (prepared)",
            cells,
            lambda: zone_sums(dens.data, area.data, layout40).compute(),
        )

        # polygons: polygonise a 5x coarser version of the zones (fewer, smoother shapes)
        coarse = Grid(grid.crs, grid.transform * rasterio.Affine.scale(5), (n // 5, n // 5))
        codes = zone_codes(coarse, slice(None), slice(None))
        import geopandas as gpd
        import shapely

        shapes = list(rasterio.features.shapes(codes, mask=codes > 0, transform=coarse.transform))
        gdf = gpd.GeoDataFrame(
            {"code": [int(v) for _, v in shapes]},
            geometry=[shapely.geometry.shape(g) for g, _ in shapes],
            crs=grid.crs,
        )
        gdf = gdf.set_geometry(gdf.geometry.simplify(7500.0))  # off the cell edges
        n_vertices = int(shapely.get_num_coordinates(gdf.geometry.values).sum())
        print(f"{len(gdf)} polygons, {n_vertices} vertices")
        cov = measure(
            "zone_coverage_from_polygons (exactextract)",
            cells,
            lambda: zone_coverage_from_polygons(gdf, grid, "code", names),
        )
        print(f"  {len(cov.run_row)} row runs, {len(cov.part_cell)} partial cells")
        layout = prepare_zones(cov, grid, names)
        measure(
            "zone_sums with polygon coverage",
            cells,
            lambda: zone_sums(dens.data, grid.cell_area(chunks=chunks), layout).compute(),
        )

        # Monte Carlo shape: 16 realizations in one pass
        n_real = 16
        real = da.random.default_rng(1).gamma(
            4.0, 7.0, size=(n_real, n, n), chunks=(n_real, chunks // 2, chunks // 2)
        )
        layout = prepare_zones(zones.rio.write_nodata(0), grid, names, chunks=chunks)
        measure(
            f"zone_sums, {n_real} realizations at once (generated)",
            cells * n_real,
            lambda: zone_sums(real, grid.cell_area(chunks=chunks // 2), layout).compute(),
        )
        measure(
            "  generating them alone (reference)",
            cells * n_real,
            lambda: real.sum(axis=(1, 2)).compute(),
        )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
