"""Time and size of one map COG by codec and compression level (GDAL's COG driver).

Run: ``python benchmarks/bench_cog_level.py [N]`` (default a 4096 x 4096 float32 map on
EASE-Grid 2.0 North, a third of it nodata, smooth with a little noise, like a density map).
Copies one tiled GeoTIFF to a COG with overviews, one thread, as ``mapping.io`` does for
every map, and prints seconds, megacells per second, the file size and whether the values
read back are the same bits. The map COGs use DEFLATE at :data:`mapping.io.rasters.COG_LEVELS`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from mapping.cluster import PeakRSS

CODECS = [
    {"COMPRESS": "DEFLATE"},  # GDAL's default level (6)
    {"COMPRESS": "DEFLATE", "LEVEL": "1"},
    {"COMPRESS": "DEFLATE", "LEVEL": "3"},
    {"COMPRESS": "ZSTD", "LEVEL": "1"},
]


def main(n: int = 4096) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n] / n
    a = (8 + 4 * np.sin(9 * xx) * np.cos(7 * yy) + rng.normal(0, 0.02, (n, n))).astype("float32")
    a[:, : n // 3] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src.tif", Path(tmp) / "map.tif"
        prof = {
            "driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "float32",
            "crs": "EPSG:6931", "transform": from_origin(0, 0, 1000, 1000), "nodata": np.nan,
            "tiled": True, "blockxsize": 512, "blockysize": 512,
        }  # fmt: skip
        with rasterio.open(src, "w", **prof) as f:
            f.write(a, 1)
        print(f"{n} x {n} float32 map ({n * n / 1e6:.1f} M cells), COG with overviews, 1 thread")
        for codec in CODECS:
            with PeakRSS() as peak:
                t0 = time.perf_counter()
                rasterio.shutil.copy(
                    src, dst, driver="COG", PREDICTOR="YES", BLOCKSIZE=512, NUM_THREADS="1",
                    OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", **codec,
                )  # fmt: skip
                dt = time.perf_counter() - t0
            with rasterio.open(dst) as f:
                same = np.array_equal(f.read(1), a, equal_nan=True)
            name = " ".join(f"{k}={v}" for k, v in codec.items())
            print(
                f"{name:<28} {dt:5.2f} s  {n * n / dt / 1e6:5.1f} Mcells/s  "
                f"{os.path.getsize(dst) / 2**20:6.1f} MiB  peak {peak.peak / 2**20:5.0f} MiB  "
                f"same values: {same}"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4096)
