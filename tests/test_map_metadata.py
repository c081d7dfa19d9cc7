"""Map metadata: CF attributes read back by rasterio and rioxarray; uint8 AOA; relative uncertainty."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr

from mapping.grid import Grid
from mapping.map_metadata import map_attributes, percentile_text
from mapping.predict import write_prediction
from mapping.run.checkpoint import write_resumable

GRID = Grid.from_bounds(
    (-400_000, 300_000, -400_000 + 300 * 250, 300_000 + 200 * 250), 250.0, "EPSG:6931"
)


def _prediction() -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    median = rng.uniform(0.0, 20.0, GRID.shape).astype("float32")
    median[:5, :5] = 0.0  # relative uncertainty undefined there
    median[50:60, 100:120] = np.nan  # no prediction
    lower = (median * 0.5).astype("float32")
    upper = (median * 1.7 + 0.25).astype("float32")
    aoa = (rng.uniform(size=GRID.shape) > 0.3).astype("float32")
    aoa[np.isnan(median)] = np.nan
    arrays = {"mean": median + 0.1, "median": median, "lower": lower, "upper": upper, "aoa": aoa}
    ds = xr.Dataset(
        {k: (("y", "x"), da.from_array(v, chunks=128)) for k, v in arrays.items()},
        coords=dict(zip(("y", "x"), GRID.coords(), strict=True)),
        attrs={"quantiles": [0.05, 0.95]},
    )
    return GRID.attach(ds), arrays


@pytest.mark.parametrize("resumable", [False, True])
def test_maps_carry_cf_attributes(tmp_path: Path, resumable: bool) -> None:
    ds, arrays = _prediction()
    write = write_prediction
    extra: dict[str, object] = {}
    if resumable:  # the checkpointed writer of the predict stage
        write, extra = write_resumable, {"partial": tmp_path / ".partial", "key": "k"}
    with dask.config.set(scheduler="threads"):
        paths = write(
            ds, tmp_path / "maps", (0, 30), overviews=False, model="random_forest", **extra
        )
    assert set(paths) == {"mean", "median", "lower", "upper", "relative_uncertainty", "aoa"}

    # rasterio: tags, band description and unit (what gdalinfo prints)
    with rasterio.open(paths["upper"]) as src:
        tags = src.tags()
        assert src.descriptions[0] == "SOC stock 0-30 cm, 95th percentile"
        assert src.units[0] == "kg m-2"
        # pixel values are the prediction's, bit for bit
        np.testing.assert_array_equal(src.read(1), arrays["upper"])
        assert src.dtypes[0] == "float32"
    assert tags["long_name"] == "SOC stock 0-30 cm, 95th percentile"
    assert tags["units"] == "kg m-2" and "organic carbon" in tags["comment"]
    assert tags["quantile"] == "0.95" and tags["statistic"] == "upper"
    assert tags["interval"] == "0-30" and tags["model"] == "random_forest"
    assert tags["software"].startswith("socmap ")

    # rioxarray: the same attributes on the DataArray
    mean = rioxarray.open_rasterio(paths["mean"], masked=True).squeeze("band")
    assert mean.attrs["long_name"] == "SOC stock 0-30 cm, mean"
    assert mean.attrs["units"] == "kg m-2"
    np.testing.assert_array_equal(mean.values, arrays["mean"])

    # AOA: uint8 flags, 255 where nothing was predicted
    with rasterio.open(paths["aoa"]) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        flags = src.read(1)
        t = src.tags()
    want = np.where(np.isnan(arrays["aoa"]), 255, arrays["aoa"]).astype("uint8")
    np.testing.assert_array_equal(flags, want)
    assert t["flag_values"] == "0 1"
    assert t["flag_meanings"].split() == [
        "outside_area_of_applicability",
        "inside_area_of_applicability",
    ]
    aoa = rioxarray.open_rasterio(paths["aoa"]).squeeze("band")
    assert aoa.dtype == np.uint8 and aoa.attrs["flag_values"] == "0 1"

    # relative uncertainty: (upper - lower) / median, by hand
    with rasterio.open(paths["relative_uncertainty"]) as src:
        rel = src.read(1)
        assert src.tags()["units"] == "1"
    m, lo, hi = arrays["median"], arrays["lower"], arrays["upper"]
    with np.errstate(divide="ignore", invalid="ignore"):
        expect = np.where(m > 0, (hi - lo) / m, np.nan).astype("float32")
    np.testing.assert_allclose(rel, expect, rtol=1e-6)
    assert np.isnan(rel[:5, :5]).all() and np.isnan(rel[50:60, 100:120]).all()
    # away from the offset, (1.7 m + 0.25 - 0.5 m) / m = 1.2 + 0.25 / m
    i, j = 150, 250
    assert rel[i, j] == pytest.approx(1.2 + 0.25 / m[i, j], rel=1e-5)


def test_long_names_and_percentiles() -> None:
    assert percentile_text(0.05) == "5th percentile"
    assert percentile_text(0.01) == "1st percentile"
    assert percentile_text(0.11) == "11th percentile"
    assert percentile_text(0.025) == "2.5th percentile"
    assert map_attributes("median", 30, 100)["long_name"] == "SOC stock 30-100 cm, median"
    assert map_attributes("std", 0, 30)["long_name"] == "SOC stock 0-30 cm, standard deviation"
    low = map_attributes("lower", 0, 30, quantiles=(0.1, 0.9))
    assert low["long_name"] == "SOC stock 0-30 cm, 10th percentile" and low["quantile"] == "0.1"
