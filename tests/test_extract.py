"""Covariates at profiles: reprojection of the points, ids outside / on nodata, chunks read."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from dask.callbacks import Callback

from mapping.covariates import build_stack
from mapping.exceptions import GridMismatchError, InputError
from mapping.extract import extract_at_points
from mapping.grid import Grid

# 10 km polar stereographic grid of 40 x 60 cells, chunks of 16: 3 x 4 chunks.
GRID = Grid.from_bounds((-300_000, -1_000_000, 300_000, -600_000), 10_000, "EPSG:3413")
ROWS, COLS = np.mgrid[0:40, 0:60]
CODE = (ROWS * 1000 + COLS).astype("float32")  # the value says which cell was read
CLASSES = (COLS % 7 + 1).astype("uint8")
CLASSES[5, 7] = 0  # nodata


class KeyRecorder(Callback):
    """Records the names of the Dask tasks that ran."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    def _posttask(self, key, result, dsk, state, id) -> None:
        self.keys.append(key[0] if isinstance(key, tuple) else str(key))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("extract")
    paths = {}
    for name, data, nodata in (("code", CODE, -1.0), ("lc", CLASSES, 0)):
        p = d / f"{name}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=60, height=40, count=1, dtype=data.dtype.name,
                           crs="EPSG:3413", transform=GRID.transform, nodata=nodata) as dst:  # fmt: skip
            dst.write(data, 1)
        paths[name] = p
    covs = [
        SimpleNamespace(name="code", path=paths["code"], kind="continuous", resampling="nearest", band=1, variable=None),
        SimpleNamespace(name="lc", path=paths["lc"], kind="categorical", resampling=None, band=1, variable=None),
    ]  # fmt: skip
    return build_stack(covs, GRID, chunks=16)


def _points(cells: list[tuple[int, int]], crs: str = "EPSG:4326") -> pd.DataFrame:
    r = np.array([c[0] for c in cells])
    c = np.array([c[1] for c in cells])
    x, y = GRID.xy(r, c)
    x = x + 3000.0  # off-centre, still inside the cell
    y = y - 2000.0
    if crs != "EPSG:3413":
        x, y = pyproj.Transformer.from_crs("EPSG:3413", crs, always_xy=True).transform(x, y)
    return pd.DataFrame({"profile_id": [f"p{i}" for i in range(len(cells))], "lon": x, "lat": y,
                         "soc": np.arange(len(cells), dtype=float)})  # fmt: skip


def test_values_at_points_from_geographic_coordinates(stack) -> None:
    cells = [(0, 0), (3, 17), (39, 59), (20, 31), (20, 32)]
    pts = _points(cells)
    res = extract_at_points(stack, GRID, pts)
    t = res.table
    assert list(t["profile_id"]) == list(pts["profile_id"]) and list(t["soc"]) == list(pts["soc"])
    np.testing.assert_array_equal(t["code"], [r * 1000 + c for r, c in cells])
    np.testing.assert_array_equal(t["lc"].astype(int), [c % 7 + 1 for _, c in cells])
    assert str(t["lc"].dtype) == "Int64"
    # x, y are in the grid's CRS
    x, y = GRID.xy([c[0] for c in cells], [c[1] for c in cells])
    np.testing.assert_allclose(t["x"], x + 3000.0, atol=1e-6)
    np.testing.assert_allclose(t["y"], y - 2000.0, atol=1e-6)
    assert res.outside == [] and res.nodata == []


def test_points_in_another_crs_are_reprojected(stack) -> None:
    cells = [(1, 2), (30, 40)]
    geo = extract_at_points(stack, GRID, _points(cells))
    utm = extract_at_points(stack, GRID, _points(cells, "EPSG:32640"), crs="EPSG:32640")
    native = extract_at_points(stack, GRID, _points(cells, "EPSG:3413"), crs="EPSG:3413")
    for other in (utm, native):
        np.testing.assert_array_equal(other.table["code"], geo.table["code"])
        np.testing.assert_allclose(other.table["x"], geo.table["x"], atol=1e-3)


def test_outside_and_nodata_are_reported_by_id(stack) -> None:
    pts = _points([(2, 2), (5, 7), (10, 10)])
    pts.loc[2, ["lon", "lat"]] = [0.0, 0.0]  # equator: far outside
    extra = pd.DataFrame({"profile_id": ["nan"], "lon": [np.nan], "lat": [70.0], "soc": [9.0]})
    pts = pd.concat([pts, extra], ignore_index=True)
    res = extract_at_points(stack, GRID, pts)
    assert res.outside == ["p2", "nan"]
    assert res.nodata == ["p1"]  # classes nodata at (5, 7)
    t = res.table
    assert t.loc[1, "lc"] is pd.NA and t.loc[1, "code"] == 5007  # the other layer still read
    assert np.isnan(t.loc[2, "code"]) and t.loc[2, "lc"] is pd.NA and t.loc[2, "row"] == -1
    assert list(res.complete()["profile_id"]) == ["p0"]


def test_only_chunks_holding_points_are_read(stack) -> None:
    cells = [(0, 0), (1, 1), (20, 50)]  # chunks (0, 0) and (1, 3) of 3 x 4
    rec = KeyRecorder()
    with rec:
        extract_at_points(stack, GRID, _points(cells))
    warped = {k for k in rec.keys if k.startswith("warp-code")}
    assert len(warped) == 1  # one task name (the layer) ...
    blocks = [k for k in rec.keys if k.startswith("warp-code")]
    assert len(blocks) == 2  # ... run for two of its twelve chunks


def test_all_points_outside_is_an_input_error(stack) -> None:
    pts = pd.DataFrame({"profile_id": ["a", "b"], "lon": [10.0, 20.0], "lat": [0.0, 10.0]})
    with pytest.raises(InputError, match="all 2 points lie outside the grid"):
        extract_at_points(stack, GRID, pts)


def test_missing_column_and_wrong_grid(stack) -> None:
    with pytest.raises(InputError, match="column 'lat' is missing"):
        extract_at_points(stack, GRID, pd.DataFrame({"profile_id": [1], "lon": [0.0]}))
    other = Grid.from_bounds((-300_000, -1_000_000, 300_000, -600_000), 5_000, "EPSG:3413")
    with pytest.raises(GridMismatchError):
        extract_at_points(stack, other, _points([(1, 1)]))


def test_profiles_are_wrapped_into_a_grid_across_the_antimeridian() -> None:
    # 1° grid from 170.5 to 190.5 (east of the antimeridian as 180.5..190.5); each cell
    # holds its column. -175 = 185: col floor(185 - 170.5) = 14; 545 = 185 too.
    grid = Grid.from_bounds((170.5, 0, 190.5, 2), 1.0, "EPSG:4326")
    cols = np.broadcast_to(np.arange(20, dtype="float64"), grid.shape)
    stack = grid.wrap(cols, name="col_value").to_dataset().chunk(8)
    pts = pd.DataFrame({"profile_id": ["a", "b", "c", "d"], "lon": [175.0, -175.0, 545.0, 160.0],
                        "lat": [1.0] * 4})  # fmt: skip
    res = extract_at_points(stack, grid, pts)
    np.testing.assert_array_equal(res.table["col"], [4, 14, 14, -1])
    np.testing.assert_array_equal(res.table["col_value"].iloc[:3], [4.0, 14.0, 14.0])
    assert res.outside == ["d"]
    # lon 200 (profiles accept [-180, 360)) lies on a -180..180 grid at -160: col 20
    world = Grid.from_bounds((-180, -10, 180, 10), 1.0, "EPSG:4326")
    stack = (
        world.wrap(np.broadcast_to(np.arange(360.0), world.shape), name="c").to_dataset().chunk(90)
    )
    pts = pd.DataFrame({"profile_id": ["e"], "lon": [200.0], "lat": [0.5]})
    assert extract_at_points(stack, world, pts).table["c"].iloc[0] == 20.0
