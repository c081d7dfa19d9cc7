"""Covariate stack: lazy alignment onto a Grid, checked against an eager warp; socmap validate."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject
from scipy.interpolate import RegularGridInterpolator

from mapping.cli import main
from mapping.covariates import (
    CATEGORICAL_NODATA,
    build_stack,
    stack_mask,
    summarize_stack,
    target_grid,
    warp_scale,
)
from mapping.exceptions import ConfigError, InputError, MissingCRSError
from mapping.extract import extract_at_points
from mapping.grid import Grid
from mapping.io import open_raster, raster_grid, raster_info
from mapping.testing import raise_if_dask_computes
from mapping.zonal import zone_totals

# Target: EASE-Grid 2.0 North, 25 km, 6000 km square around the pole (north of ~63 N).
GRID = Grid.from_bounds((-3e6, -3e6, 3e6, 3e6), 25_000, "EPSG:6931")
GEO = from_origin(-180, 90, 0.25, 0.25)  # 0.25 degree, 90..45 N
LON = np.arange(-180, 180, 0.25) + 0.125
LAT = 90 - np.arange(0, 45, 0.25) - 0.125
NODATA_BOX = (0.0, 63.0, 30.0, 70.0)  # lon0, lat0, lon1, lat1 of a nodata patch


def _temperature() -> np.ndarray:
    v = 50 + 30 * np.sin(np.radians(LON))[None, :] * np.cos(np.radians(LAT))[:, None]
    lon0, lat0, lon1, lat1 = NODATA_BOX
    box = (
        (LAT[:, None] > lat0)
        & (LAT[:, None] < lat1)
        & (LON[None, :] > lon0)
        & (LON[None, :] < lon1)
    )
    return np.where(box, -9999.0, v).astype("float32")


def _classes() -> np.ndarray:
    return ((np.arange(LON.size) // 40) % 4 + 1)[None, :].repeat(LAT.size, 0).astype("uint8")


def _write(path: Path, data: np.ndarray, crs: str | None, transform, nodata=None, **kw) -> Path:
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                   dtype=data.dtype.name, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=256, blockysize=256)  # fmt: skip
    if crs is not None:
        profile["crs"] = crs
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(1, units="degC") if data.dtype.kind == "f" else None
    return path


def _cov(name: str, path: Path, kind: str = "continuous", resampling: str | None = None):
    return SimpleNamespace(
        name=name, path=path, kind=kind, resampling=resampling, band=1, variable=None
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("world")
    stereo = np.add.outer(np.arange(300) * 0.0, np.arange(300) * 0.1).astype("float32")
    return {
        "temp": _write(d / "temp.tif", _temperature(), "EPSG:4326", GEO, nodata=-9999.0),
        "lc": _write(d / "lc.tif", _classes(), "EPSG:4326", GEO, nodata=255),
        # another CRS, resolution and a smaller extent: 10 km polar stereographic
        "stereo": _write(d / "stereo.tif", stereo, "EPSG:3413", from_origin(-1.5e6, 1.5e6, 1e4, 1e4), nodata=-1.0),
    }  # fmt: skip


def _reference(
    path: Path, resampling: str, dtype: str, nodata: float, grid: Grid = GRID
) -> np.ndarray:
    """Eager warp of the whole raster onto the whole grid (the same GDAL options)."""
    info = raster_info(path)
    with rasterio.open(path) as src:
        data = src.read(1)
    out = np.full(grid.shape, nodata, dtype=dtype)
    scale = warp_scale(info, grid)
    reproject(data, out, src_transform=info.transform, src_crs=info.crs.to_wkt(),
              src_nodata=info.nodata, dst_transform=grid.transform, dst_crs=grid.crs.to_wkt(),
              dst_nodata=nodata, resampling=Resampling[resampling],
              XSCALE=repr(scale[0]), YSCALE=repr(scale[1]))  # fmt: skip
    return out


# ---------------------------------------------------------------------- laziness and values
def test_building_the_stack_and_mask_computes_nothing(world: dict[str, Path]) -> None:
    covs = [_cov("temp", world["temp"]), _cov("lc", world["lc"], "categorical"),
            _cov("stereo", world["stereo"], resampling="average")]  # fmt: skip
    with raise_if_dask_computes():
        ds = build_stack(covs, GRID, chunks=64)
        mask = stack_mask(ds)
    assert ds.grid == GRID and mask.grid == GRID
    assert ds["temp"].dtype == np.float32 and ds["lc"].dtype == np.int32
    assert ds["temp"].data.chunksize == (64, 64)
    assert ds["temp"].attrs["kind"] == "continuous" and ds["temp"].attrs["resampling"] == "bilinear"
    assert ds["temp"].attrs["units"] == "degC"
    assert ds["temp"].attrs["source"] == str(world["temp"])
    assert ds["temp"].attrs["source_crs"] == "EPSG:4326"
    assert ds["lc"].attrs["kind"] == "categorical" and ds["lc"].attrs["resampling"] == "nearest"
    assert ds["lc"].attrs["nodata"] == CATEGORICAL_NODATA
    assert ds["stereo"].attrs["resampling"] == "average"
    assert ds["stereo"].attrs["source_resolution"] == [1e4, 1e4]


def _cell_lonlat(grid: Grid = GRID) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(grid.coords()[1], grid.coords()[0])
    return pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)


def test_a_bilinear_chunk_equals_an_eager_interpolation_of_the_whole_raster(world) -> None:
    ds = build_stack([_cov("temp", world["temp"])], GRID, chunks=64)
    chunk = ds["temp"].data.blocks[1, 2].compute()  # EPSG:4326 input on an EPSG:6931 grid
    # Eager reference: SciPy's linear interpolation of the whole raster at the cell centres.
    data = _temperature().astype("float64")
    data[data == -9999] = np.nan
    interp = RegularGridInterpolator((LAT[::-1], LON), data[::-1], bounds_error=False)
    lon, lat = _cell_lonlat()
    ref = interp((lat, lon))[64:128, 128:192]
    both = np.isfinite(ref) & np.isfinite(chunk)
    assert both.sum() > 0.9 * chunk.size
    np.testing.assert_allclose(chunk[both], ref[both], rtol=0, atol=1e-4)
    # where the reference has a value so do we (we also fill next to nodata, as GDAL does)
    assert np.isfinite(chunk[np.isfinite(ref)]).all()
    # chunking does not change a single value
    whole = build_stack([_cov("temp", world["temp"])], GRID, chunks=240)["temp"].values
    np.testing.assert_array_equal(ds["temp"].values, whole)
    # and the interpolated field is the analytic one to within interpolation error
    truth = 50 + 30 * np.sin(np.radians(lon)) * np.cos(np.radians(lat))
    ok = np.isfinite(whole)
    assert np.abs(whole[ok] - truth[ok]).max() < 0.1  # amplitude 30; worst next to nodata


def test_nearest_and_average_chunks_equal_a_whole_grid_gdal_warp(world) -> None:
    for name, kind, method, dtype, nodata in (
        ("lc", "categorical", "nearest", "int32", CATEGORICAL_NODATA),
        ("stereo", "continuous", "average", "float32", np.nan),  # another CRS, 10 km, smaller
    ):
        ds = build_stack([_cov(name, world[name], kind, method)], GRID, chunks=48)
        got = ds[name].values
        with rasterio.open(world[name]) as src, WarpedVRT(
            src, crs=GRID.crs.to_wkt(), transform=GRID.transform, width=GRID.shape[1],
            height=GRID.shape[0], resampling=Resampling[method], nodata=nodata, dtype=dtype,
            tolerance=1e-6,
        ) as vrt:  # fmt: skip
            eager = vrt.read(1)
        np.testing.assert_array_equal(got, eager)
        # rasterio.warp.reproject of the whole raster approximates coordinates to 1/8 pixel
        ref = _reference(world[name], method, dtype, nodata)
        if kind == "categorical":
            assert (got == ref).mean() > 0.97
        else:
            assert np.array_equal(np.isnan(got), np.isnan(ref))
            np.testing.assert_allclose(got, ref, atol=0.01, equal_nan=True)  # values 0..30
    assert np.isnan(got[0, 0]) and np.isfinite(got[120, 120])  # outside the 3000 km source


def test_categorical_layer_keeps_codes_and_nodata_propagates(world: dict[str, Path]) -> None:
    covs = [_cov("temp", world["temp"]), _cov("lc", world["lc"], "categorical")]
    ds = build_stack(covs, GRID, chunks=64)
    lc = ds["lc"].values
    assert set(np.unique(lc)) <= {1, 2, 3, 4}  # nearest: no invented classes
    temp = ds["temp"].values
    mask = stack_mask(ds).values
    assert np.isnan(temp).any()  # the nodata patch
    np.testing.assert_array_equal(mask, np.isfinite(temp) & (lc != CATEGORICAL_NODATA))


def test_netcdf_source_gives_the_geotiff_values(world: dict[str, Path], tmp_path: Path) -> None:
    data = _temperature()
    ds = xr.Dataset(
        {"temp": (("lat", "lon"), np.where(data == -9999, np.nan, data))},
        coords={"lat": ("lat", LAT, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", LON, {"units": "degrees_east", "standard_name": "longitude"})},
    )  # fmt: skip
    ds = ds.rio.set_spatial_dims("lon", "lat").rio.write_crs("EPSG:4326")
    nc = tmp_path / "temp.nc"
    ds.to_netcdf(nc, engine="scipy")
    cov = SimpleNamespace(
        name="temp", path=nc, kind="continuous", resampling=None, band=1, variable="temp"
    )
    from_nc = build_stack([cov], GRID, chunks=64)["temp"].data.blocks[1, 1].compute()
    from_tif = (
        build_stack([_cov("temp", world["temp"])], GRID, chunks=64)["temp"]
        .data.blocks[1, 1]
        .compute()
    )
    np.testing.assert_allclose(from_nc, from_tif, atol=1e-4, equal_nan=True)
    # Zarr (format 2) through GDAL's driver, and the lazy reader of io
    zarr = tmp_path / "temp.zarr"
    ds.to_zarr(zarr, zarr_format=2, consolidated=False)
    cov = SimpleNamespace(
        name="temp", path=zarr, kind="continuous", resampling=None, band=1, variable="temp"
    )
    from_zarr = build_stack([cov], GRID, chunks=64)["temp"].data.blocks[1, 1].compute()
    np.testing.assert_allclose(from_zarr, from_tif, atol=1e-4, equal_nan=True)
    for path in (nc, world["temp"]):
        with raise_if_dask_computes():
            arr = open_raster(path, variable="temp" if path == nc else None, chunks=64)
        assert arr.chunks is not None and arr.rio.crs.to_epsg() == 4326
        assert Grid.from_dataarray(arr) == raster_grid(world["temp"])
        assert np.isnan(arr.values).sum() == (data == -9999).sum()  # nodata -> NaN


# ---------------------------------------------------------------------- target grid
def test_target_grid_from_config(world: dict[str, Path]) -> None:
    covs = [_cov("stereo", world["stereo"]), _cov("temp", world["temp"])]
    first = target_grid(
        SimpleNamespace(like="first_covariate", crs=None, resolution=None, bounds=None), covs
    )
    assert first == raster_grid(world["stereo"])
    like = target_grid(
        SimpleNamespace(like=world["temp"], crs=None, resolution=None, bounds=None), covs
    )
    assert like == raster_grid(world["temp"])
    explicit = target_grid(SimpleNamespace(like="first_covariate", crs="EPSG:6931", resolution=25_000,
                                           bounds=(-3e6, -3e6, 3e6, 3e6)), covs)  # fmt: skip
    assert explicit == GRID
    # crs + resolution without bounds: cover the first covariate, snapped to whole cells
    cover = target_grid(
        SimpleNamespace(like=None, crs="EPSG:3413", resolution=20_000, bounds=None), covs
    )
    assert cover.bounds == pytest.approx((-1.5e6, -1.5e6, 1.5e6, 1.5e6))
    with pytest.raises(ConfigError, match="first_covariate needs at least one covariate"):
        target_grid(
            SimpleNamespace(like="first_covariate", crs=None, resolution=None, bounds=None), []
        )
    with pytest.raises(ConfigError, match="crs and resolution"):
        target_grid(SimpleNamespace(like=None, crs="EPSG:3413", resolution=None, bounds=None), covs)


def test_a_grid_wider_than_the_globe_is_refused(tmp_path: Path) -> None:
    """A 1° lat/lon raster of 361 columns (the wrap-around column repeated), or bounds of
    -190 to 190: the land past 360° was mapped again and its storage counted twice (+42 % on
    a -190..190 run of the sample world rotated over the antimeridian)."""
    path = tmp_path / "wrapped.tif"
    profile = dict(driver="GTiff", width=361, height=10, count=1, dtype="float32",
                   crs="EPSG:4326", transform=from_origin(-180.5, 80, 1.0, 1.0))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 10, 361), dtype="float32"))
    with pytest.raises(ConfigError, match=r"wrapped.tif\): 361 degrees of longitude, more than"):
        target_grid(SimpleNamespace(like="first_covariate", crs=None, resolution=None,
                                    bounds=None), [_cov("t", path)])  # fmt: skip
    with pytest.raises(ConfigError, match=r"grid.bounds: 380 degrees of longitude"):
        target_grid(SimpleNamespace(like=None, crs="EPSG:4326", resolution=0.25,
                                    bounds=(-190, 60, 190, 72)), [])  # fmt: skip
    whole = target_grid(SimpleNamespace(like=None, crs="EPSG:4326", resolution=0.25,
                                        bounds=(-180, 60, 180, 72)), [])  # fmt: skip
    assert whole.shape == (48, 1440)  # one turn exactly is the globe


def test_custom_proj_string_grid_goes_through_alignment_extraction_and_zone_totals(
    tmp_path: Path,
) -> None:
    # A north-polar LAEA grid given as a PROJ string, 4 x 4 cells of 100 km: the stack
    # built on it (through rioxarray, which renames the CRS's parts) is on the same grid.
    crs = "+proj=laea +lat_0=90 +lon_0=0 +datum=WGS84 +units=m +no_defs"
    values = np.arange(16, dtype="float32").reshape(4, 4)
    path = _write(tmp_path / "custom.tif", values, crs, from_origin(1e6, 1.4e6, 1e5, 1e5), -9999.0)
    cfg = SimpleNamespace(like=None, crs=crs, resolution=1e5, bounds=(1e6, 1e6, 1.4e6, 1.4e6))
    grid = target_grid(cfg, [_cov("a", path)])
    stack = build_stack([_cov("a", path)], grid, chunks=2)
    assert Grid.from_dataarray(stack) == grid
    np.testing.assert_array_equal(stack["a"].values, values)
    # the centre of cell (row 1, col 2) is x = 1.25e6, y = 1.25e6: value 1 * 4 + 2 = 6
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        1.25e6, 1.25e6
    )
    pts = pd.DataFrame({"profile_id": ["p"], "lon": [lon], "lat": [lat]})
    row = extract_at_points(stack, grid, pts).table.iloc[0]
    assert (row["row"], row["col"], row["a"]) == (1, 2, 6.0)
    # LAEA is equal-area: 16 cells of 1e10 m² at 1 kg C m-2 are 1.6e5 km² and 0.16 Pg
    density = stack["a"] * 0 + 1
    density.attrs["interval"] = "0-30"
    zones = grid.wrap(np.ones(grid.shape, "int32"))
    total = zone_totals(density, zones, grid).set_index("zone").loc["all zones"]
    assert total["area_km2"] == pytest.approx(1.6e5, rel=1e-9)
    assert total["storage_pg"] == pytest.approx(0.16, rel=1e-9)


def test_reserved_names_are_refused(world: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="covariate name 'x' is reserved"):
        build_stack([_cov("x", world["temp"])], GRID)


def test_unsuitable_resampling_is_refused(world: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="does not suit a categorical layer"):
        build_stack([_cov("lc", world["lc"], "categorical", resampling="bilinear")], GRID)


# ---------------------------------------------------------------------- bad input
def test_truncated_geotiff_is_one_line_input_error(world: dict[str, Path], tmp_path: Path) -> None:
    blob = world["temp"].read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError) as info:
        build_stack([_cov("temp", bad)], GRID)
    assert "truncated.tif" in str(info.value) and "\n" not in str(info.value)


def test_raster_without_crs_is_missing_crs_error(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "nocrs.tif", np.ones((20, 30), "float32"), None, from_origin(0, 60, 0.1, 0.1)
    )
    with pytest.raises(MissingCRSError, match=r"nocrs\.tif: raster has no CRS"):
        build_stack([_cov("cov", p)], GRID)


def test_covariate_with_no_overlap_is_input_error(tmp_path: Path) -> None:
    # UTM 33 S, south of the equator: nowhere near an Arctic grid
    p = _write(tmp_path / "south.tif", np.ones((50, 50), "float32"), "EPSG:32733",
               from_origin(300_000, 7_000_000, 1000, 1000))  # fmt: skip
    with pytest.raises(
        InputError, match=r"south\.tif: covariate 'cov' .* does not overlap the target grid"
    ):
        build_stack([_cov("cov", p)], GRID)


def test_all_nodata_covariate_is_reported(tmp_path: Path) -> None:
    p = _write(tmp_path / "empty.tif", np.full(_temperature().shape, -9999, "float32"), "EPSG:4326",
               GEO, nodata=-9999.0)  # fmt: skip
    with raise_if_dask_computes():
        ds = build_stack([_cov("cov", p)], GRID)  # lazy: nothing to see yet
    with pytest.raises(InputError, match=r"empty\.tif: covariate 'cov' is all nodata"):
        summarize_stack(ds)


@pytest.mark.parametrize(
    ("dtype", "code", "declared"),
    [("float32", -9999.0, None), ("int16", -32768, None), ("float32", -3.4028234663852886e38, None),
     ("float32", -9999.0, -32768.0)],
    ids=["float-9999", "int16-32768", "float32-lowest", "another-declared"],
)  # fmt: skip
def test_an_undeclared_nodata_code_is_reported(
    tmp_path: Path, dtype: str, code: float, declared: float | None
) -> None:
    # the western third of the raster is nodata, coded but not declared (or another code
    # declared): read as values it is -9999 of temperature beside -20 ... 5
    base = _temperature()
    data = np.where(base == -9999.0, 0.0, base).astype(dtype)  # no other code in it
    data[:, : data.shape[1] // 3] = code
    p = _write(tmp_path / "coded.tif", data, "EPSG:4326", GEO, nodata=declared)
    with pytest.raises(InputError) as info:
        summarize_stack(build_stack([_cov("cov", p)], GRID))
    msg = str(info.value)
    assert msg.startswith(f"{p}: covariate 'cov': ") and "\n" not in msg
    assert f"hold {code:g}, a nodata code the file does not declare" in msg
    # declared, the same file is read right
    p = _write(tmp_path / "declared.tif", data, "EPSG:4326", GEO, nodata=code)
    assert summarize_stack(build_stack([_cov("cov", p)], GRID)).layers[0].nodata_share > 0.2


def test_nodata_codes_masked_or_off_the_grid_are_accepted(tmp_path: Path) -> None:
    base = _temperature()
    data = np.where(base == -9999.0, 0.0, base).astype("float32")
    # -9999 under an internal mask band (no nodata tag): masked, as the lazy reads do
    coded = data.copy()
    coded[:, :400] = -9999.0
    masked = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(masked, "w", driver="GTiff", width=coded.shape[1],
                           height=coded.shape[0], count=1, dtype="float32", crs="EPSG:4326",
                           transform=GEO) as dst:  # fmt: skip
            dst.write(coded, 1)
            dst.write_mask(np.where(coded == -9999.0, 0, 255).astype("uint8"))
    summary = summarize_stack(build_stack([_cov("cov", masked)], GRID))
    assert 0.2 < summary.layers[0].nodata_share < 0.5  # the masked third of the longitudes
    # -9999 only south of 49 N, which the grid (north of about 52 N) never reaches
    south = data.copy()
    south[LAT < 49.0, :] = -9999.0
    p = _write(tmp_path / "south.tif", south, "EPSG:4326", GEO)
    assert summarize_stack(build_stack([_cov("cov", p)], GRID)).layers[0].nodata_share < 0.05


def test_class_codes_read_as_continuous_are_warned_of(tmp_path: Path) -> None:
    classes = _write(tmp_path / "lc.tif", _classes(), "EPSG:4326", GEO, nodata=0)
    with pytest.warns(UserWarning, match=r"lc\.tif: covariate 'lc' holds 4 integer codes "
                      r"\(1, 2, 3, 4\) and is read as continuous \(bilinear"):  # fmt: skip
        summarize_stack(build_stack([_cov("lc", classes)], GRID))
    # declared categorical, or integers with many values (elevation in m): no word
    elevation = (_temperature().clip(0) * 40).astype("int16")
    heights = _write(tmp_path / "dem.tif", elevation, "EPSG:4326", GEO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize_stack(build_stack([_cov("lc", classes, kind="categorical")], GRID))
        summarize_stack(build_stack([_cov("dem", heights)], GRID))


def test_the_grid_s_own_pixels_in_another_crs_are_warned_of(tmp_path: Path) -> None:
    values = np.arange(GRID.shape[0] * GRID.shape[1], dtype="float32").reshape(GRID.shape)
    right = _write(tmp_path / "right.tif", values, "EPSG:6931", GRID.transform)
    wrong = _write(tmp_path / "wrong.tif", values, "EPSG:3408", GRID.transform)
    with pytest.warns(UserWarning, match=r"wrong\.tif: covariate 'w' has the target grid's "
                      r"pixels .* \(EPSG:3408 against EPSG:6931\).*a wrong CRS tag\?"):  # fmt: skip
        summarize_stack(build_stack([_cov("w", wrong)], GRID))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize_stack(build_stack([_cov("r", right)], GRID))


# ---------------------------------------------------------------------- socmap validate
def _socmap(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:  # typer exits by itself on success
        return int(exc.code or 0)


def _config(tmp_path: Path, covariates: list[str]) -> Path:
    # enough profiles through 0-300 cm on the grid for a run (validate refuses what run does)
    rows = [f"p{i},{5 * i},{65 + i % 5},0,300,2" for i in range(12)]
    (tmp_path / "profiles.csv").write_text(
        "profile_id,lon,lat,top_cm,bottom_cm,soc_pct\n" + "\n".join(rows) + "\n"
    )
    cfg = tmp_path / "cfg.yaml"
    lines = [
        "output: out",
        "profiles: {path: profiles.csv}",
        'grid: {crs: "EPSG:6931", resolution: 25000, bounds: [-3000000, -3000000, 3000000, 3000000], chunks: 64}',
        "covariates:",
        *(f"  - {c}" for c in covariates),
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_validate_reports_the_aligned_stack(world: dict[str, Path], tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path, [f"{{name: temp, path: {world['temp']}}}",
                             f"{{name: lc, path: {world['lc']}, kind: categorical}}"])  # fmt: skip
    with raise_if_dask_computes():  # the report reads samples through GDAL, not the stack
        assert _socmap("validate", str(cfg)) == 0
    out = capsys.readouterr().out
    assert "EPSG:6931" in out and "240 x 240 cells" in out and "resolution 25000 x 25000" in out
    assert "bounds (-3e+06, -3e+06, 3e+06, 3e+06)" in out
    assert (
        "temp: continuous, bilinear (source not finer than the grid); source EPSG:4326 at "
        "0.25 x 0.25, units degC" in out
    )
    assert (
        "lc: categorical, nearest (source not finer than the grid); source EPSG:4326 at "
        "0.25 x 0.25, categories [1, 2, 3, 4]" in out
    )
    # the nodata patch's share of the grid, from the cell centres' coordinates
    lon, lat = pyproj.Transformer.from_crs(GRID.crs, "EPSG:4326", always_xy=True).transform(
        *np.meshgrid(GRID.coords()[1], GRID.coords()[0])
    )
    lon0, lat0, lon1, lat1 = NODATA_BOX
    share = ((lon > lon0) & (lon < lon1) & (lat > lat0) & (lat < lat1)).mean()
    line = next(x for x in out.splitlines() if "temp:" in x)
    reported = float(line.rsplit("nodata", 1)[1].strip(" %"))
    assert reported == pytest.approx(100 * share, abs=0.5)
    valid_line = next(x for x in out.splitlines() if "all layers valid" in x)
    assert float(valid_line.split(":")[1].split("%")[0]) == pytest.approx(
        100 * (1 - share), abs=0.5
    )


@pytest.mark.parametrize("case", ["truncated", "nocrs", "nooverlap", "allnodata"])
def test_validate_bad_covariates_exit_2_with_one_line(case: str, tmp_path: Path, capsys) -> None:
    if case == "truncated":
        good = _write(tmp_path / "good.tif", _temperature(), "EPSG:4326", GEO, nodata=-9999.0)
        p = tmp_path / "bad.tif"
        p.write_bytes(good.read_bytes()[:5000])
    elif case == "nocrs":
        p = _write(
            tmp_path / "bad.tif", np.ones((20, 30), "float32"), None, from_origin(0, 60, 0.1, 0.1)
        )
    elif case == "nooverlap":
        p = _write(tmp_path / "bad.tif", np.ones((50, 50), "float32"), "EPSG:32733",
                   from_origin(300_000, 7_000_000, 1000, 1000))  # fmt: skip
    else:
        p = _write(tmp_path / "bad.tif", np.full((180, 1440), -9999, "float32"), "EPSG:4326", GEO,
                   nodata=-9999.0)  # fmt: skip
    cfg = _config(tmp_path, [f"{{name: cov, path: {p}}}"])
    assert _socmap("validate", str(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.tif" in err and err.startswith("socmap: error:")


# ---------------------------------------------------------------------- longitudes wrapped
def _lon_world(tmp_path: Path, left: float) -> dict[str, Path]:
    """1° lon/lat rasters from ``left`` eastward over 360°, each pixel holding its centre's
    longitude in -180..180 (and a class: its whole degree of longitude modulo 7, plus 1),
    and a 0.25° one for averages."""
    lon = (np.arange(360) + left + 0.5 + 180) % 360 - 180
    lon_fine = (np.arange(1440) * 0.25 + left + 0.125 + 180) % 360 - 180
    return {
        "v": _write(tmp_path / f"v{left:g}.tif", np.tile(lon, (180, 1)).astype("float32"),
                    "EPSG:4326", from_origin(left, 90, 1, 1), nodata=-9999.0),
        "fine": _write(tmp_path / f"f{left:g}.tif", np.tile(lon_fine, (720, 1)).astype("float32"),
                       "EPSG:4326", from_origin(left, 90, 0.25, 0.25), nodata=-9999.0),
        "cls": _write(tmp_path / f"c{left:g}.tif",
                      np.tile(np.floor(lon) % 7 + 1, (180, 1)).astype("uint8"), "EPSG:4326",
                      from_origin(left, 90, 1, 1), nodata=0),
    }  # fmt: skip


def _every_resampling(src: dict[str, Path], grid: Grid) -> dict[str, np.ndarray]:
    layers = [_cov("bilinear", src["v"], resampling="bilinear"),
              _cov("nearest", src["v"], resampling="nearest"),
              _cov("average", src["fine"], resampling="average"),
              _cov("cubic", src["v"], resampling="cubic"),
              _cov("classes", src["cls"], "categorical", "nearest"),
              _cov("majority", src["cls"], "categorical", "mode")]  # fmt: skip
    ds = build_stack(layers, grid, chunks=7)
    return {name: ds[name].values for name in ds.data_vars}


@pytest.mark.parametrize("res", [1.0, 0.5])  # the source's own pixels; GDAL's warper
@pytest.mark.parametrize("left", [-180.0, 0.0])
def test_a_lonlat_grid_past_180_finds_every_longitude_whatever_the_resampling(
    tmp_path: Path, left: float, res: float
) -> None:
    # cells from 170 to 190 °E: east of 180 they are at -180 ... -170
    grid = Grid.from_bounds((170, 0, 190, 2), res, "EPSG:4326")
    lon = (np.arange(170, 190, res) + res / 2 + 180) % 360 - 180
    got = _every_resampling(_lon_world(tmp_path, left), grid)
    rows = grid.shape[0]
    pixel = np.tile(np.floor(lon) + 0.5, (rows, 1))  # the 1° pixel holding the cell centre
    np.testing.assert_array_equal(got["nearest"], pixel)
    np.testing.assert_allclose(got["average"], np.tile(lon, (rows, 1)), atol=1e-4)
    away = np.abs(lon) < 178  # kernels across the seam mix values near -180 and 180
    for name in ("bilinear", "cubic"):
        np.testing.assert_allclose(got[name][:, away], np.tile(lon[away], (rows, 1)), atol=1e-4)
        assert np.isfinite(got[name]).all()
    for name in ("classes", "majority"):
        np.testing.assert_array_equal(got[name], np.floor(pixel) % 7 + 1, name)


def test_a_0_360_source_covers_the_western_hemisphere(tmp_path: Path) -> None:
    src = _lon_world(tmp_path, 0.0)
    # a lon/lat grid at 100..90 °W: no false "does not overlap"
    grid = Grid.from_bounds((-100, 0, -90, 2), 1.0, "EPSG:4326")
    lon = np.arange(-100, -90) + 0.5
    got = _every_resampling(src, grid)
    for name in ("bilinear", "nearest", "average", "cubic"):
        np.testing.assert_allclose(got[name], np.tile(lon, (2, 1)), atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(got["classes"], np.tile(np.floor(lon) % 7 + 1, (2, 1)))
    # a polar grid over the Bering Strait, cells on both sides of 180°: all found, on the
    # pixel holding each cell centre's longitude
    polar = Grid.from_bounds((-1.5e6, 0, 0.5e6, 2e5), 2e5, "EPSG:3413")
    y, x = polar.coords()
    to_lonlat = pyproj.Transformer.from_crs(polar.crs, 4326, always_xy=True)
    lon, _ = to_lonlat.transform(x, np.full_like(x, y[0]))
    got = _every_resampling(src, polar)
    np.testing.assert_allclose(got["nearest"][0], np.floor(lon) + 0.5)
    np.testing.assert_allclose(got["bilinear"][0], lon, atol=1e-3)
    np.testing.assert_array_equal(got["classes"][0], np.floor(lon) % 7 + 1)
    assert np.isfinite(got["average"]).all()


def test_a_0_360_source_equals_its_minus_180_180_twin_on_a_polar_grid(world, tmp_path) -> None:
    with rasterio.open(world["lc"]) as src:
        classes = src.read(1)
    with rasterio.open(world["temp"]) as src:
        temp = src.read(1)
    half = classes.shape[1] // 2  # the same pixels, stored from 0° eastward
    shifted = from_origin(0, 90, 0.25, 0.25)
    lc = _write(tmp_path / "lc360.tif", np.roll(classes, -half, 1), "EPSG:4326", shifted,
                nodata=255)  # fmt: skip
    t = _write(tmp_path / "t360.tif", np.roll(temp, -half, 1), "EPSG:4326", shifted,
               nodata=-9999.0)  # fmt: skip
    for name, kind, method in (("lc", "categorical", "nearest"), ("lc", "categorical", "mode"),
                               ("temp", "continuous", "average"), ("temp", "continuous", "cubic"),
                               ("temp", "continuous", "bilinear")):  # fmt: skip
        twin = {"lc": lc, "temp": t}[name]
        a = build_stack([_cov("v", world[name], kind, method)], GRID, chunks=48)["v"].values
        b = build_stack([_cov("v", twin, kind, method)], GRID, chunks=48)["v"].values
        np.testing.assert_array_equal(a, b, err_msg=method)
