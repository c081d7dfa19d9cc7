"""Time and peak memory of the inventory report (``mapping.report``) on large maps.

Run: ``python benchmarks/bench_report.py [N]`` (default an 8000 x 8000 grid of 1 km cells on
EASE-Grid 2.0 North around the pole, 256 MB per float32 map). Writes an output folder with
one depth interval -- mean, lower and upper maps as COGs (with overviews) and a zone raster
-- plus a zone-totals table, then times

1. one decimated read of a map (``read_view``: at most 1000 x 1000 cells, from overviews);
2. the same read of a tiled GeoTIFF *without* overviews (GDAL subsamples the blocks);
3. ``build_report`` on the folder (maps, zone outlines from the raster, graticule, tables,
   HTML).

Peak memory is the process's resident set size sampled every 20 ms, above what the process
held before the step: the point is that it stays far below the size of one map.

``python benchmarks/bench_report.py --config CONFIG`` times ``build_report`` on the output
folder of a finished run instead (e.g. the hemisphere world's, ``DIR/hemisphere.yaml``);
it rewrites that folder's ``report/``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import psutil
import rasterio

from mapping import io
from mapping.cluster import PeakRSS
from mapping.grid import Grid
from mapping.report import build_report
from mapping.report.figures import read_view


def measure(label: str, fn: Callable[[], Any]) -> Any:
    base = psutil.Process().memory_info().rss
    with PeakRSS(interval=0.02) as rss:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    print(f"{label:<52} {dt:8.2f} s  peak +{(rss.peak_main - base) / 2**20:7.0f} MiB")
    return out


def _field(grid: Grid, chunks: int, scale: float, block_info: Any = None) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    y, x = grid.coords()
    xx, yy = np.meshgrid(x[c0:c1], y[r0:r1])
    r = np.hypot(xx, yy) / 1e6
    out = scale * (20 + 10 * np.sin(3 * r) + 5 * np.cos(np.arctan2(yy, xx) * 4))
    return np.where(r < grid.bounds[2] / 1e6, out, np.nan).astype("float32")


def _zones(grid: Grid, block_info: Any = None) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    y, x = grid.coords()
    xx, yy = np.meshgrid(x[c0:c1], y[r0:r1])
    r = np.hypot(xx, yy) / (grid.bounds[2] - grid.bounds[0]) * 2
    return np.digitize(r, [0.2, 0.5, 0.7, 0.85, 1.0]).astype("uint8") % 5


def write_folder(out: Path, grid: Grid, chunks: int = 2048) -> None:
    shape = grid.shape

    def lazy(fn: Callable[..., np.ndarray], dtype: str) -> Any:
        return da.map_blocks(fn, dtype=dtype, chunks=da.empty(shape, chunks=chunks).chunks)

    for stat, scale in (("mean", 1.0), ("lower", 0.7), ("upper", 1.4)):
        arr = lazy(lambda block_info=None, s=scale: _field(grid, chunks, s, block_info), "float32")
        tags = {"units": "kg C m-2", "statistic": stat, "interval": "0-100"}
        io.write_cog(grid.wrap(arr), out / "maps" / f"soc_0_100cm_{stat}.tif", tags=tags)
    zones = lazy(lambda block_info=None: _zones(grid, block_info), "uint8")
    io.write_cog(grid.wrap(zones), out / "zones.tif", nodata=0)
    names = ["continuous", "discontinuous", "sporadic", "isolated", "all zones"]
    storage = pd.DataFrame(
        {"zone": names, "zone_code": [1, 2, 3, 4, None], "interval": "0-100", "top_cm": 0.0,
         "bottom_cm": 100.0, "area_km2": [4e6, 3e6, 2e6, 1e6, 1e7], "area_nodata_km2": 0.0,
         "mean_density_kg_m2": [30.0, 28.0, 25.0, 20.0, 27.6], "storage_pg": [120, 84, 50, 20, 274]}
    )  # fmt: skip
    io.write_table(storage, out / "zones" / "storage.csv")


def main(n: int = 8000) -> None:
    half = n * 500.0
    grid = Grid.from_bounds((-half, -half, half, half), 1000.0, "EPSG:6931")
    print(f"grid {grid}, {n * n / 1e6:.0f} M cells, {n * n * 4 / 2**20:.0f} MiB per float32 map")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        write_folder(out, grid)
        print(f"folder written in {time.perf_counter() - t0:.1f} s")
        mean = out / "maps" / "soc_0_100cm_mean.tif"
        view = measure("decimated read of one COG (overviews)", lambda: read_view(mean))
        print(f"  view {view.shape}, 1/{view.decimation:g} of the grid")
        plain = Path(tmp) / "plain.tif"
        with rasterio.open(mean) as src:
            profile = src.profile | {"driver": "GTiff", "tiled": True, "blockxsize": 512,
                                     "blockysize": 512}  # fmt: skip
            with rasterio.open(plain, "w", **profile) as dst:
                for _, window in src.block_windows(1):
                    dst.write(src.read(1, window=window), 1, window=window)
        measure("decimated read of a tiled GeoTIFF (no overviews)", lambda: read_view(plain))
        files = measure(
            "build_report (1 interval, zone raster outlines)",
            lambda: build_report(out, zones_path=out / "zones.tif"),
        )
        size = sum(p.stat().st_size for p in files.values())
        print(f"  {len(files)} files, {size / 2**20:.1f} MiB; index.html "
              f"{files['index.html'].stat().st_size / 2**20:.1f} MiB")  # fmt: skip


def on_run(config: str) -> None:
    """Time the report of a finished run's output folder."""
    from mapping.config import load_config

    cfg = load_config(config)
    zones = cfg.zones
    t0 = time.perf_counter()
    build_report(
        cfg.output,
        config=cfg,
        zones_path=zones.path if zones is not None else None,
        zone_field=zones.field if zones is not None else None,
    )
    print(f"report of {cfg.output}: {time.perf_counter() - t0:.1f} s wall")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--config"]:
        on_run(sys.argv[2])
    else:
        main(*(int(a) for a in sys.argv[1:2]))
