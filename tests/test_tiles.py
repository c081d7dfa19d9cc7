"""Maps written by the tasks that compute them: chunk files, sparse, assembled into COGs.

* The chunk files of a grid with all-nodata chunks, assembled, equal the in-memory maps
  and the COGs the single-writer path (:func:`mapping.io.write_cogs`) makes, cell for
  cell, overviews included; the all-nodata chunks have no file.
* A prediction written by a two-worker local cluster (workers write their chunks and
  assemble the maps, also while the next prediction runs) equals the one-worker run and
  the client-written fallback.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from sklearn.linear_model import BayesianRidge

from mapping.cluster import dask_client
from mapping.exceptions import ModelError
from mapping.grid import Grid
from mapping.io import tiles, write_cogs, write_tiled_cogs
from mapping.predict import predict_grid, record_coordinate_crs, write_prediction

# 1300 x 1700 cells of 1 km in chunks of 256: 6 x 7 chunks, COG overviews at 2 and 4
GRID = Grid.from_bounds((0.0, 700_000.0, 1_700_000.0, 2_000_000.0), 1000.0, "EPSG:6931")


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """A float map and its uint8 flags (255 = nodata), with four all-nodata chunks."""
    rng = np.random.default_rng(0)
    z = rng.gamma(2.0, 3.0, GRID.shape).astype("float32")
    z[:512, :512] = np.nan  # chunks (0, 0), (0, 1), (1, 0), (1, 1)
    z[1000:, 1200:1250] = np.nan  # nodata inside chunks that keep data
    flags = np.where(np.isnan(z), 255, z > 6).astype("uint8")
    return z, flags


def _items(folder: Path, chunks: int = 256) -> list:
    z, flags = _maps()
    mean = GRID.wrap(da.from_array(z, chunks=chunks))
    aoa = GRID.wrap(da.from_array(flags, chunks=chunks)).rio.write_nodata(255)
    tags = {"statistic": "mean", "units": "kg m-2", "long_name": "mean SOC"}
    return [(folder / "mean.tif", mean, tags), (folder / "aoa.tif", aoa, {"statistic": "aoa"})]


def _same_cog(a: Path, b: Path) -> None:
    """Same pixels, nodata, CRS, transform, tiling, overviews and tags."""
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert (x.crs, x.transform, x.shape, x.dtypes) == (y.crs, y.transform, y.shape, y.dtypes)
        assert x.nodata == y.nodata or (np.isnan(x.nodata) and np.isnan(y.nodata))
        assert x.block_shapes == y.block_shapes and x.overviews(1) == y.overviews(1)
        assert x.tags() == y.tags() and (x.descriptions, x.units) == (y.descriptions, y.units)
        assert x.tags(ns="IMAGE_STRUCTURE") == y.tags(ns="IMAGE_STRUCTURE")
        for f in [1, *x.overviews(1)]:
            shape = (-(-x.height // f), -(-x.width // f))
            np.testing.assert_array_equal(x.read(1, out_shape=shape), y.read(1, out_shape=shape))


def test_chunk_files_assemble_to_the_in_memory_maps_and_all_nodata_chunks_have_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    z, flags = _maps()
    with dask.config.set(scheduler="threads"):
        single = write_cogs(_items(tmp_path / "single"))

        # stop before the maps are assembled, to look at the chunk files
        def stop(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(tiles, "_assemble", stop)
        with pytest.raises(KeyboardInterrupt):
            write_tiled_cogs(_items(tmp_path / "tiled"), tiles=tmp_path / "t", key="k")
        monkeypatch.undo()
        files = sorted(p.name for p in (tmp_path / "t").glob("r*_c*.tif"))
        empty = {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert files == sorted(
            f"r{i}_c{j}.tif" for i in range(6) for j in range(7) if (i, j) not in empty
        )
        with rasterio.open(tmp_path / "t" / "r5_c4.tif") as src:  # rows 1280-1300, cols 1024-1280
            assert src.count == 2 and src.shape == (20, 256)
            np.testing.assert_array_equal(src.read(1), z[1280:, 1024:1280])
            np.testing.assert_array_equal(src.read(2), flags[1280:, 1024:1280])
            assert src.transform == GRID.transform @ rasterio.Affine.translation(1024, 1280)

        done = write_tiled_cogs(_items(tmp_path / "tiled"), tiles=tmp_path / "t", key="k")
    assert (done.n_chunks, done.reused, done.empty) == (42, 38, 4)
    assert not (tmp_path / "t").exists()  # removed once the maps are in place
    for a, b in zip(single, done.paths, strict=True):
        _same_cog(a, b)
    with rasterio.open(done.paths[0]) as m, rasterio.open(done.paths[1]) as f:
        assert m.overviews(1) == [2, 4]
        np.testing.assert_array_equal(m.read(1), z)  # NaN where the chunks had no file
        np.testing.assert_array_equal(f.read(1), flags)  # 255 there
        assert f.dtypes[0] == "uint8" and f.nodata == 255


def test_a_numpy_map_is_cut_into_chunks_and_a_temporary_folder_leaves_nothing(
    tmp_path: Path,
) -> None:
    z, _ = _maps()
    arr = GRID.wrap(z)
    done = write_tiled_cogs([(tmp_path / "m.tif", arr, None)], blocksize=512)
    assert (done.n_chunks, done.empty) == (12, 1)  # 3 x 4 chunks of 512, one all nodata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]
    with rasterio.open(done.paths[0]) as src:
        np.testing.assert_array_equal(src.read(1), z)


# --------------------------------------------------------------------------- clusters
PGRID = Grid.from_bounds(
    (500_000, -1_000_000, 500_000 + 96_000, -1_000_000 + 80_000), 1000.0, "EPSG:6931"
)


def _stack() -> xr.Dataset:
    y, x = PGRID.coords()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    a = np.cos((xx - 500_000) / 20_000) + (yy + 1_000_000) / 70_000
    b = np.hypot(xx - 540_000, yy + 960_000) / 50_000
    a[:32, :64] = np.nan  # two all-nodata chunks
    a[40:45, 40:60] = np.nan
    ds = xr.Dataset({"a": (("y", "x"), a), "b": (("y", "x"), b)}, coords={"y": y, "x": x})
    return PGRID.attach(ds.chunk({"y": 32, "x": 32}))


def _model() -> BayesianRidge:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(0, 1, 120), "b": rng.uniform(0, 2, 120)})
    X["x"] = rng.uniform(500_000, 596_000, 120)
    X["y"] = rng.uniform(-1_000_000, -920_000, 120)
    t = 10 + 3 * X.a - 2 * X.b + 1e-5 * (X.x - 500_000) + rng.normal(0, 0.5, 120)
    return record_coordinate_crs(BayesianRidge().fit(X, t), PGRID.crs)


def test_two_workers_write_the_maps_of_one_worker(tmp_path: Path) -> None:
    from distributed import LocalCluster, get_task_stream

    pred = predict_grid(_model(), _stack(), PGRID, chunks=32)
    written = {}
    for n in (1, 2):
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            dask_client(cluster.scheduler_address, echo=lambda m: None) as client,
        ):
            with get_task_stream(client) as stream:
                # on 2 workers the maps' assembly goes on while the next call runs
                written[n] = write_prediction(
                    pred, tmp_path / f"w{n}", (0, 30), run_id="r", wait=n == 1
                )
                other = write_prediction(pred, tmp_path / f"v{n}", (0, 30), run_id="r")
                written[n].wait()
            if n == 2:
                client_written = write_prediction(
                    pred, tmp_path / "client", (0, 30), run_id="r", writer="client"
                )
        by = {}
        for t in stream.data:
            by.setdefault(str(t["key"]).split("-")[0], set()).add(t["worker"])
        assert len(by["write_chunk"]) == n and len(by["_assemble"]) == n  # every worker wrote
    assert set(written[1]) == {"mean", "median", "lower", "upper", "std", "relative_uncertainty"}
    for name in written[1]:
        _same_cog(written[1][name], written[2][name])
        _same_cog(written[1][name], other[name])
        _same_cog(written[1][name], client_written[name])
    with rasterio.open(written[2]["mean"]) as src:
        values = src.read(1)
    expected = pred["mean"].values
    np.testing.assert_array_equal(values, expected)
    assert np.isnan(values[:32, :64]).all() and np.isfinite(values[32:, 64:]).all()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no chunk folder left


def test_unknown_writer_is_refused(tmp_path: Path) -> None:
    pred = predict_grid(_model(), _stack(), PGRID, chunks=32)
    with pytest.raises(ModelError, match=r"prediction\.writer 'gpu'"):
        write_prediction(pred, tmp_path, (0, 30), writer="gpu")
