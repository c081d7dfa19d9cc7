"""Raster semantics wherever a raster is read: scale and offset, nodata and masks, band choice,
map statistics, the CRS of a model's coordinates and resampling by direction.

Every expected number is a hand calculation on an equal-area grid (EASE-Grid 2.0 North,
10 km cells: 100 km² each).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine
from conftest import run_cli_output
from sklearn.linear_model import LinearRegression

from mapping.covariates import build_stack, summarize_stack
from mapping.exceptions import GridMismatchError
from mapping.grid import Grid
from mapping.predict import predict_grid

GRID = Grid.from_bounds((-400_000, -2_000_000, -200_000, -1_900_000), 10_000, "EPSG:6931")  # 10x20
CELL_M2 = 1e8


def _write(
    path: Path,
    bands: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None = None,
    scale: float | None = None,
    offset: float | None = None,
    tags: dict[str, str] | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    bands = bands if bands.ndim == 3 else bands[None]
    with rasterio.open(
        path, "w", driver="GTiff", width=grid.shape[1], height=grid.shape[0],
        count=bands.shape[0], dtype=bands.dtype.name, crs=grid.crs.to_wkt(),
        transform=grid.transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(bands)
        if scale is not None:
            dst.scales = (scale,) * bands.shape[0]
        if offset is not None:
            dst.offsets = (offset,) * bands.shape[0]
        if tags:
            dst.update_tags(**tags)
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype("uint8"))
    return path


def _zones(tmp_path: Path) -> Path:
    z = np.ones(GRID.shape, dtype="uint8")
    z[:, GRID.shape[1] // 2 :] = 2
    return _write(tmp_path / "zones.tif", z, GRID)


def _total(table: Path) -> float:
    t = pd.read_csv(table)
    return float(t.loc[t["zone"] == "all zones", "storage_pg"].iloc[0])


# ----------------------------------------------------------------------- integrate
def test_integrate_applies_the_scale_factor_of_an_int16_density_raster(tmp_path, capsys):
    raw = np.full(GRID.shape, 2516, dtype="int16")  # 251.6 kg m-2 if read raw, 25.16 scaled
    raw[0, :5] = -32768  # nodata
    d = _write(tmp_path / "soc_0_30cm_mean.tif", raw, GRID, nodata=-32768, scale=0.01)
    code, _, err = run_cli_output(
        ["integrate", d, "--zones", _zones(tmp_path), "-o", tmp_path / "t.csv"], capsys
    )
    assert code == 0, err
    valid_cells = GRID.shape[0] * GRID.shape[1] - 5
    expected = 25.16 * CELL_M2 * valid_cells / 1e12  # kg -> Pg
    assert _total(tmp_path / "t.csv") == pytest.approx(expected, rel=1e-6)


def test_integrate_applies_an_offset_too(tmp_path, capsys):
    raw = np.full(GRID.shape, 100, dtype="uint8")
    d = _write(tmp_path / "soc_0_30cm_mean.tif", raw, GRID, scale=0.5, offset=2.0)  # 52 kg m-2
    code, _, err = run_cli_output(
        ["integrate", d, "--zones", _zones(tmp_path), "-o", tmp_path / "t.csv"], capsys
    )
    assert code == 0, err
    assert _total(tmp_path / "t.csv") == pytest.approx(52.0 * CELL_M2 * 200 / 1e12, rel=1e-6)


def test_integrate_honours_a_per_dataset_mask(tmp_path, capsys):
    data = np.full(GRID.shape, 10.0, dtype="float32")
    keep = np.ones(GRID.shape, dtype=bool)
    keep[:, :4] = False  # 40 cells masked by the file's mask band, no nodata value
    d = _write(tmp_path / "soc_0_30cm_mean.tif", data, GRID, mask=keep)
    code, _, err = run_cli_output(
        ["integrate", d, "--zones", _zones(tmp_path), "-o", tmp_path / "t.csv"], capsys
    )
    assert code == 0, err
    assert _total(tmp_path / "t.csv") == pytest.approx(10.0 * CELL_M2 * 160 / 1e12, rel=1e-6)


@pytest.mark.parametrize("stat", ["upper", "lower", "std", "aoa", "median", "p95"])
def test_integrate_refuses_a_map_tagged_as_another_statistic(tmp_path, capsys, stat):
    data = np.full(GRID.shape, 30.0, dtype="float32")
    d = _write(tmp_path / "soc_0_30cm_x.tif", data, GRID, tags={"statistic": stat})
    out = tmp_path / "t.csv"
    code, _, err = run_cli_output(["integrate", d, "--zones", _zones(tmp_path), "-o", out], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"statistic={stat}" in err and "--allow-statistic" in err
    assert not out.exists()
    code, _, err = run_cli_output(
        ["integrate", d, "--zones", _zones(tmp_path), "-o", out, "--allow-statistic"], capsys
    )
    assert code == 0, err
    assert _total(out) == pytest.approx(30.0 * CELL_M2 * 200 / 1e12, rel=1e-6)


@pytest.mark.parametrize("stat", ["mean", "truth", "realization"])
def test_integrate_sums_mean_truth_and_realization_maps(tmp_path, capsys, stat):
    data = np.full(GRID.shape, 30.0, dtype="float32")
    d = _write(tmp_path / "soc_0_30cm_x.tif", data, GRID, tags={"statistic": stat})
    out = tmp_path / "t.csv"
    code, _, err = run_cli_output(["integrate", d, "--zones", _zones(tmp_path), "-o", out], capsys)
    assert code == 0, err
    assert _total(out) == pytest.approx(30.0 * CELL_M2 * 200 / 1e12, rel=1e-6)


def test_integrate_asks_for_the_band_of_a_multiband_raster(tmp_path, capsys):
    bands = np.stack([np.full(GRID.shape, 5.0), np.full(GRID.shape, 7.0)]).astype("float32")
    d = _write(tmp_path / "soc_0_30cm_mean.tif", bands, GRID)
    out = tmp_path / "t.csv"
    code, _, err = run_cli_output(["integrate", d, "--zones", _zones(tmp_path), "-o", out], capsys)
    assert code == 2 and "has 2 bands" in err and "--band" in err and err.count("\n") == 1
    code, _, err = run_cli_output(
        ["integrate", d, "--zones", _zones(tmp_path), "-o", out, "--band", "2"], capsys
    )
    assert code == 0, err
    assert _total(out) == pytest.approx(7.0 * CELL_M2 * 200 / 1e12, rel=1e-6)


# ----------------------------------------------------------------------- covariates
def _cov(name: str, path: Path, **kw: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, path=path, kind=kw.pop("kind", "continuous"), band=1,
                           variable=None, resampling=kw.pop("resampling", None))  # fmt: skip


def test_covariates_are_unpacked_with_scale_offset_and_nodata(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.integers(-2000, 2000, size=GRID.shape).astype("int16")
    raw[2, 3] = -32768
    p = _write(tmp_path / "t.tif", raw, GRID, nodata=-32768, scale=0.01, offset=-5.0)
    stack = build_stack([_cov("temp", p)], GRID, chunks=8).compute()
    expected = raw * 0.01 - 5.0
    got = stack["temp"].values
    assert np.isnan(got[2, 3])
    ok = np.ones(GRID.shape, bool)
    ok[2, 3] = False
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-5, atol=1e-5)


def test_covariates_on_another_grid_are_unpacked_after_resampling(tmp_path):
    # A source twice as fine as GRID: averaged by default, then scaled (scale commutes with
    # a weighted mean, so this is the mean of the scaled values).
    fine = Grid(
        GRID.crs, GRID.transform @ Affine.scale(0.5), (GRID.shape[0] * 2, GRID.shape[1] * 2)
    )
    raw = np.arange(fine.shape[0] * fine.shape[1], dtype="int16").reshape(fine.shape)
    p = _write(tmp_path / "fine.tif", raw, fine, scale=0.1, offset=1.0)
    stack = build_stack([_cov("v", p)], GRID, chunks=8)
    assert stack["v"].attrs["resampling"] == "average"
    ny, nx = GRID.shape
    blocks = (raw * 0.1 + 1.0).reshape(ny, 2, nx, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(stack["v"].values, blocks, rtol=1e-5)


def test_covariate_mask_band_becomes_nodata(tmp_path):
    data = np.full(GRID.shape, 3.0, dtype="float32")
    keep = np.ones(GRID.shape, dtype=bool)
    keep[5:, 10:] = False
    p = _write(tmp_path / "m.tif", data, GRID, mask=keep)
    got = build_stack([_cov("m", p)], GRID, chunks=8)["m"].values
    assert np.isnan(got[~keep]).all() and (got[keep] == 3.0).all()


def test_resampling_follows_the_direction_of_the_change(tmp_path):
    ny, nx = GRID.shape
    fine = Grid(GRID.crs, GRID.transform @ Affine.scale(0.25), (ny * 4, nx * 4))
    coarse = Grid(GRID.crs, GRID.transform @ Affine.scale(2.0), (ny // 2, nx // 2))
    rng = np.random.default_rng(5)
    fine_v = rng.normal(size=fine.shape).astype("float32")
    # classes on the fine grid: each 4x4 block holds 7 cells of class 9, 6 of 2 and 3 of 7
    cls = np.full(fine.shape, 2, dtype="uint8")
    cls[::4, ::4] = cls[1::4, 1::4] = cls[2::4, 2::4] = 7
    cls[::4, 1::4] = 9
    cls[1::4, ::4] = 9
    cls[3::4, 3::4] = 9
    cls[2::4, 3::4] = 9
    cls[3::4, 2::4] = 9
    cls[::4, 2::4] = 9
    cls[2::4, ::4] = 9  # the mode is 9; a nearest pick at the block centre would give 7
    coarse_v = rng.normal(size=coarse.shape).astype("float32")
    covs = [
        _cov("f", _write(tmp_path / "f.tif", fine_v, fine)),
        _cov("c", _write(tmp_path / "c.tif", coarse_v, coarse)),
        _cov("k", _write(tmp_path / "k.tif", cls, fine), kind="categorical"),
        _cov("e", _write(tmp_path / "e.tif", fine_v, fine), resampling="bilinear"),
    ]
    stack = build_stack(covs, GRID, chunks=8)
    method = {n: stack[n].attrs["resampling"] for n in stack.data_vars}
    assert method == {"f": "average", "c": "bilinear", "k": "mode", "e": "bilinear"}
    np.testing.assert_allclose(
        stack["f"].values, fine_v.reshape(ny, 4, nx, 4).mean(axis=(1, 3)), rtol=1e-5, atol=1e-6
    )
    assert (stack["k"].values == 9).all()
    lines = "\n".join(summarize_stack(stack).lines())
    assert "f: continuous, average (source finer than the grid)" in lines
    assert "c: continuous, bilinear (source not finer than the grid)" in lines
    assert "k: categorical, mode (source finer than the grid)" in lines
    assert "e: continuous, bilinear (set in the config)" in lines


# ----------------------------------------------------------------------- model CRS
def _fitted_model() -> LinearRegression:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"v": rng.normal(size=50), "x": rng.normal(size=50), "y": rng.normal(size=50)})
    return LinearRegression().fit(X, 2 * X["v"] + 1e-6 * X["x"])


def _stack_on(grid: Grid) -> xr.Dataset:
    return grid.attach(xr.Dataset({"v": grid.wrap(np.ones(grid.shape, "float32"), name="v")}))


def test_predict_grid_refuses_a_grid_in_another_crs_than_the_models_coordinates():
    from mapping.predict import record_coordinate_crs  # new API: imported here on purpose

    model = record_coordinate_crs(_fitted_model(), "EPSG:6931")
    other = Grid.from_bounds((-400_000, -2_000_000, -200_000, -1_900_000), 10_000, "EPSG:3413")
    with pytest.raises(GridMismatchError, match=r"fitted on x, y in EPSG:6931.*EPSG:3413"):
        predict_grid(model, _stack_on(other), other, statistics=("mean",))
    # on a grid in the model's CRS it predicts (2 * v = 2 everywhere, up to the x term)
    pred = predict_grid(model, _stack_on(GRID), GRID, statistics=("mean",))
    np.testing.assert_allclose(pred["mean"].values, 2.0 + model.intercept_, atol=1.0)


def test_predict_grid_warns_when_the_model_does_not_know_its_crs():
    with pytest.warns(UserWarning, match="does not record the CRS"):
        predict_grid(_fitted_model(), _stack_on(GRID), GRID, statistics=("mean",))


def test_zone_raster_mask_band_means_no_zone(tmp_path, capsys):
    codes = np.ones(GRID.shape, dtype="uint8")
    keep = np.ones(GRID.shape, dtype=bool)
    keep[:, :5] = False  # 50 cells off the mask: code 1 underneath, but no zone
    z = _write(tmp_path / "zones.tif", codes, GRID, mask=keep)
    d = _write(tmp_path / "soc_0_30cm_mean.tif", np.full(GRID.shape, 4.0, "float32"), GRID)
    code, _, err = run_cli_output(["integrate", d, "--zones", z, "-o", tmp_path / "t.csv"], capsys)
    assert code == 0, err
    t = pd.read_csv(tmp_path / "t.csv")
    row = t[t["zone"] == "all zones"].iloc[0]
    assert row["area_km2"] == pytest.approx(150 * 100.0)
    assert row["storage_pg"] == pytest.approx(4.0 * CELL_M2 * 150 / 1e12, rel=1e-6)


def test_decimated_reads_of_a_vrt_of_tiles_are_reproducible(tmp_path: Path) -> None:
    """GDAL 3.10 reads a VRT's sources in threads; a nearest-neighbour decimated read then
    took edge pixels from whichever tile finished last (200-460 of 86,000 pixels differed
    between reads of this VRT). mapping.io keeps one thread per read."""
    import os

    import rasterio
    from rasterio.transform import from_origin

    from mapping import io

    assert os.environ.get("VRT_NUM_THREADS") == "1"  # set by mapping.io unless the user did
    rng = np.random.default_rng(0)
    side, n = 256, 8
    sources = []
    for r in range(n):
        for c in range(n):
            name = f"t_{r}_{c}.tif"
            profile = {"driver": "GTiff", "width": side, "height": side, "count": 1,
                       "dtype": "uint8", "nodata": 0, "crs": "EPSG:3857",
                       "transform": from_origin(c * side * 1e3, -r * side * 1e3, 1e3, 1e3)}  # fmt: skip
            with rasterio.open(tmp_path / name, "w", **profile) as dst:
                dst.write(rng.integers(1, 5, (side, side)).astype("uint8"), 1)
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="1">{name}</SourceFilename>'
                f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{side}" '
                f'ySize="{side}"/><DstRect xOff="{c * side}" yOff="{r * side}" '
                f'xSize="{side}" ySize="{side}"/></SimpleSource>'
            )
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{n * side}" rasterYSize="{n * side}"><SRS>EPSG:3857</SRS>'
        "<GeoTransform>0, 1000, 0, 0, 0, -1000</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><NoDataValue>0</NoDataValue>'
        + "".join(sources)
        + "</VRTRasterBand></VRTDataset>"
    )
    info = io.raster_info(vrt)
    first, _, _ = io.read_decimated(info, max_size=300)
    assert first.shape == (293, 293) and set(np.unique(first)) <= {1, 2, 3, 4}
    for _ in range(8):
        again, _, _ = io.read_decimated(info, max_size=300)
        assert np.array_equal(again, first)
