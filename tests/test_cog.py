"""Cloud-Optimized GeoTIFF and Zarr outputs, written window by window and atomically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import xarray as xr

from mapping.cluster import store_blocks
from mapping.exceptions import MissingCRSError
from mapping.grid import Grid
from mapping.io import write_cog, write_cogs, write_zarr
from mapping.predict import write_prediction

GRID = Grid.from_bounds(
    (-400_000, 300_000, -400_000 + 700 * 250, 300_000 + 600 * 250), 250.0, "EPSG:6931"
)


def _field(grid: Grid = GRID) -> np.ndarray:
    y, x = grid.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    z = (10 + 5 * np.sin(xx / 20_000) * np.cos(yy / 15_000)).astype("float32")
    z[100:140, 200:260] = np.nan
    return z


def _gdalinfo(path: Path) -> dict:
    """What ``gdalinfo -json`` reports, from the CLI when installed, else from GDAL via rasterio."""
    if shutil.which("gdalinfo"):
        out = subprocess.run(
            ["gdalinfo", "-json", str(path)], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)
    with rasterio.open(path) as src:
        bands = [
            {
                "block": list(src.block_shapes[i])[::-1],
                "overviews": src.overviews(i + 1),
                "noDataValue": "NaN" if np.isnan(src.nodatavals[i]) else src.nodatavals[i],
                "description": src.descriptions[i] or "",
                "unit": src.units[i] or "",
            }
            for i in range(src.count)
        ]
        meta = {"IMAGE_STRUCTURE": src.tags(ns="IMAGE_STRUCTURE"), "": src.tags()}
    return {"metadata": meta, "bands": bands}


def _check_cog(path: Path, expected: np.ndarray, tags: dict[str, str], blocksize: int) -> dict:
    info = _gdalinfo(path)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"
    band = info["bands"][0]
    assert band["block"] == [blocksize, blocksize]
    assert band["overviews"], "no overviews"
    assert band["noDataValue"] == "NaN"
    for k, v in tags.items():
        assert info["metadata"][""][k] == v
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 6931
        assert src.transform == GRID.transform
        assert src.block_shapes == [(blocksize, blocksize)] and src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), expected)
        # overviews average real cells and ignore nodata
        ov = src.read(1, out_shape=(300, 350))
        assert np.isfinite(ov).sum() > 0.9 * ov.size
    return info


def test_write_cog_from_numpy(tmp_path: Path) -> None:
    z = _field()
    tags = {"units": "kg C m-2", "interval": "0-30", "statistic": "mean", "run_id": "r1"}
    path = write_cog(GRID.wrap(z), tmp_path / "maps" / "a.tif", tags=tags, blocksize=256)
    info = _check_cog(path, z, tags, 256)
    assert info["bands"][0]["description"] == "mean"
    assert info["bands"][0]["unit"] == "kg C m-2"
    assert sorted(os.listdir(tmp_path / "maps")) == ["a.tif"]  # no temporary left behind


def test_write_cogs_computes_shared_work_once_block_by_block(tmp_path: Path) -> None:
    z = _field()
    base = da.from_array(z, chunks=(128, 160))
    executed: list[tuple] = []

    def expensive(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        executed.append(tuple(block_info[0]["chunk-location"]))
        return block * 2

    doubled = base.map_blocks(expensive, dtype="float32")
    items = [
        (tmp_path / "two.tif", GRID.wrap(doubled), {"statistic": "two"}),
        (tmp_path / "four.tif", GRID.wrap(doubled * 2), {"statistic": "four"}),
    ]
    with dask.config.set(scheduler="threads"):
        paths = write_cogs(items, blocksize=256)
    n_blocks = len(base.chunks[0]) * len(base.chunks[1])
    assert len(executed) == n_blocks  # shared upstream computed once for both files
    _check_cog(paths[0], z * 2, {"statistic": "two"}, 256)
    _check_cog(paths[1], z * 4, {"statistic": "four"}, 256)


def test_store_blocks_never_hands_over_more_than_a_chunk() -> None:
    z = _field()
    arr = da.from_array(z, chunks=(128, 160))
    seen: list[tuple[int, int, int]] = []
    canvas = np.full(z.shape, -1.0, dtype="float32")

    def write(k: int, window: tuple[slice, slice], block: np.ndarray) -> None:
        assert block.shape[0] <= 128 and block.shape[1] <= 160
        canvas[window] = block
        seen.append((k, window[0].start, window[1].start))

    with dask.config.set(scheduler="synchronous"):
        n = store_blocks([arr], write)
    assert n == 5 * 5 and len(seen) == 25 and len(set(seen)) == 25
    np.testing.assert_array_equal(canvas, z)


def test_failed_computation_leaves_nothing_behind(tmp_path: Path) -> None:
    z = _field()
    old = tmp_path / "m.tif"
    old.write_bytes(b"previous run")

    def boom(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info[0]["chunk-location"] == (2, 2):
            raise RuntimeError("worker died")
        return block

    bad = da.from_array(z, chunks=128).map_blocks(boom, dtype="float32")
    with pytest.raises(RuntimeError, match="worker died"), dask.config.set(scheduler="threads"):
        write_cog(GRID.wrap(bad), old)
    assert old.read_bytes() == b"previous run"
    assert sorted(os.listdir(tmp_path)) == ["m.tif"]


def test_missing_crs_is_a_user_error(tmp_path: Path) -> None:
    arr = xr.DataArray(_field(), dims=("y", "x"))
    with pytest.raises(MissingCRSError, match=r"a\.tif: array has no CRS"):
        write_cog(arr, tmp_path / "a.tif")


def test_write_prediction_names_and_tags(tmp_path: Path) -> None:
    z = _field()
    ds = GRID.attach(
        xr.Dataset(
            {
                "mean": (("y", "x"), da.from_array(z, chunks=256), {"units": "kg C m-2"}),
                "upper": (
                    ("y", "x"),
                    da.from_array(z + 1, chunks=256),
                    {"units": "kg C m-2", "quantile": 0.95},
                ),
            },
            coords=dict(zip(("y", "x"), GRID.coords(), strict=True)),
        )
    )
    with dask.config.set(scheduler="threads"):
        paths = write_prediction(ds, tmp_path, (0, 30), run_id="abc123", overviews=False)
    assert paths["upper"].name == "soc_0_30cm_upper.tif"
    with rasterio.open(paths["upper"]) as src:
        tags = src.tags()
        assert src.overviews(1) == []
        np.testing.assert_array_equal(src.read(1), z + 1)
    assert tags["statistic"] == "upper" and tags["quantile"] == "0.95"
    assert tags["interval"] == "0-30" and tags["run_id"] == "abc123" and tags["units"] == "kg m-2"


def test_zarr_round_trip_is_atomic(tmp_path: Path) -> None:
    z = _field()
    ds = GRID.attach(
        xr.Dataset(
            {"mean": (("y", "x"), da.from_array(z, chunks=200))},
            coords=dict(zip(("y", "x"), GRID.coords(), strict=True)),
        )
    )
    dest = tmp_path / "pred.zarr"
    with dask.config.set(scheduler="threads"):
        write_zarr(ds, dest)
        write_zarr(ds * 2, dest)  # replaces the store as a whole
    back = xr.open_zarr(dest, consolidated=False)
    np.testing.assert_array_equal(back["mean"].values, z * 2)
    assert back["mean"].encoding["chunks"] == (200, 200)
    assert sorted(os.listdir(tmp_path)) == ["pred.zarr"]


def test_write_prediction_as_zarr(tmp_path: Path) -> None:
    z = _field()
    coords = dict(zip(("y", "x"), GRID.coords(), strict=True))
    ds = GRID.attach(
        xr.Dataset(
            {
                "mean": (("y", "x"), da.from_array(z, chunks=256), {"units": "kg C m-2"}),
                "std": (("y", "x"), da.from_array(z / 10, chunks=256), {"units": "kg C m-2"}),
            },
            coords=coords,
        )
    )
    with dask.config.set(scheduler="threads"):
        paths = write_prediction(ds, tmp_path, (30, 100), run_id="r9", format="zarr")
    assert set(paths.values()) == {tmp_path / "soc_30_100cm.zarr"}
    back = xr.open_zarr(paths["std"], consolidated=False)
    np.testing.assert_array_equal(back["std"].values, z / 10)
    assert back.attrs["interval"] == "30-100" and back.attrs["run_id"] == "r9"
    assert back["mean"].attrs["units"] == "kg m-2"
    assert Grid.from_dataarray(back.rio.write_crs(back.spatial_ref.attrs["crs_wkt"])) == GRID


def _gdal_cache_max() -> Any:
    """GDAL's ``GDALGetCacheMax64`` of the libgdal this process has loaded (None if not found)."""
    import ctypes

    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "libgdal" in line}
    if not paths:
        return None
    lib = ctypes.CDLL(sorted(paths)[0])  # the loaded library: its state is this process's
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return lib.GDALGetCacheMax64


def test_writing_maps_leaves_gdal_block_cache_alone(tmp_path: Path) -> None:
    """The COG writers must not change GDAL's block cache, which is one per process.

    rasterio reads ``Env(GDAL_CACHEMAX=256)`` as 256 *bytes* and sets it process-wide (from
    any thread): while a map was assembled every other thread's reads and writes ran with a
    256-byte cache, each dirty block flushed at once by whichever thread needed room. The
    cache is bounded once, for the process, when :mod:`mapping.io` is imported.
    """
    write_cog(GRID.wrap(_field()), tmp_path / "warm.tif")  # GDAL loaded, its cache set up
    get = _gdal_cache_max()
    if get is None:
        pytest.skip("libgdal not found in /proc/self/maps")
    before = get()
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(get())  # a foreign call: the GIL is released meanwhile

    z = _field()
    ds = GRID.attach(
        xr.Dataset(
            {
                name: (("y", "x"), da.from_array(z + i, chunks=128))
                for i, name in enumerate(("lower", "median", "mean", "upper", "std"))
            },
            coords=dict(zip(("y", "x"), GRID.coords(), strict=True)),
        )
    )
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with dask.config.set(scheduler="threads"):
            for k in range(3):
                write_prediction(ds, tmp_path / f"w{k}", (0, 30), overviews=True)
    finally:
        done.set()
        watcher.join()
    assert seen == {before}
    # the process's cache is what the environment says, in MB (mapping.io: 256 unless set)
    setting = os.environ["GDAL_CACHEMAX"]
    if setting.isdigit() and int(setting) < 100_000:  # GDAL reads small numbers as MB
        assert before == int(setting) * 2**20
