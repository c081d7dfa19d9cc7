"""Throughput of cell areas and of the lazy covariate stack (no timing assertions: a report).

    python benchmarks/bench_grid_stack.py

Prints cells per second for ``Grid.cell_area`` on a geographic, an equal-area and a conformal
(polar stereographic) grid, and for warping chunks of a geographic raster onto an EASE-Grid 2.0
North grid, with the peak resident memory of the process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import rasterio
from rasterio.transform import from_origin

from mapping.covariates import build_stack
from mapping.grid import Grid


def _rate(label: str, cells: int, seconds: float, cpu: float) -> None:
    # CPU seconds as well as wall time: the machine may be shared.
    rss = psutil.Process().memory_info().rss / 2**20
    print(
        f"{label:<48} {cells / cpu / 1e6:8.2f} M cells/CPU-s  "
        f"(wall {seconds:6.2f} s, CPU {cpu:6.2f} s, RSS {rss:6.0f} MiB)"
    )


def areas() -> None:
    for label, grid in (
        (
            "cell_area geographic 0.05 deg, 3600 x 7200",
            Grid.from_bounds((-180, -90, 180, 90), 0.05, "EPSG:4326"),
        ),
        (
            "cell_area EASE-Grid 2.0 North 1 km, 4000^2",
            Grid.from_bounds((-2e6, -2e6, 2e6, 2e6), 1000, "EPSG:6931"),
        ),
        (
            "cell_area polar stereographic 5 km, 1200^2",
            Grid.from_bounds((-3e6, -3e6, 3e6, 3e6), 5000, "EPSG:3413"),
        ),
    ):
        t, c = time.perf_counter(), time.process_time()
        a = grid.cell_area()
        _rate(label, a.size, time.perf_counter() - t, time.process_time() - c)


def stack(tmp: Path) -> None:
    # 0.05 degree source north of 45 N (7200 x 900), onto a 5 km EASE-Grid 2.0 North grid.
    src = tmp / "src.tif"
    lon = np.arange(-180, 180, 0.05) + 0.025
    lat = 90 - np.arange(0, 45, 0.05) - 0.025
    data = (np.sin(np.radians(lon))[None, :] * np.cos(np.radians(lat))[:, None]).astype("float32")
    with rasterio.open(src, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="float32", crs="EPSG:4326", transform=from_origin(-180, 90, 0.05, 0.05),
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as dst:  # fmt: skip
        dst.write(data, 1)
    grid = Grid.from_bounds((-4.5e6, -4.5e6, 4.5e6, 4.5e6), 5000, "EPSG:6931")
    cov = SimpleNamespace(
        name="v", path=src, kind="continuous", resampling=None, band=1, variable=None
    )
    t = time.perf_counter()
    ds = build_stack([cov], grid, chunks=512)
    print(f"build_stack {grid.shape} (lazy): {1e3 * (time.perf_counter() - t):.1f} ms")
    blocks = [ds["v"].data.blocks[i, j] for i, j in ((0, 0), (1, 1), (1, 2), (2, 2))]
    t, c = time.perf_counter(), time.process_time()
    for b in blocks:
        b.compute(scheduler="synchronous")
    _rate("warp 4 chunks of 512^2 (bilinear, 4326 -> 6931)", 4 * 512 * 512,
          time.perf_counter() - t, time.process_time() - c)  # fmt: skip


if __name__ == "__main__":
    areas()
    with tempfile.TemporaryDirectory() as d:
        stack(Path(d))
