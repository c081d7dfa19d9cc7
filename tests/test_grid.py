"""Grid: identity, geometry, tiling and exact cell areas."""

from __future__ import annotations

import pickle
import warnings

import dask
import numpy as np
import pyproj
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from mapping.exceptions import InputError, MissingCRSError
from mapping.grid import (
    Grid,
    _projected_cell_area,
    authalic_q,
    equal_area_kind,
    is_equal_area,
)
from mapping.testing import raise_if_dask_computes

WGS84_SURFACE_KM2 = 510_065_621.7  # 4 pi R_authalic^2 of the WGS84 ellipsoid
GEOD = pyproj.Geod(ellps="WGS84")


def _geodesic_cell_areas(grid: Grid, n: int = 400) -> np.ndarray:
    """Area of each cell's outline densified to ``n`` points per edge, by pyproj.Geod."""
    to_geo = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    s = np.linspace(0, 1, n, endpoint=False)
    out = np.empty(grid.shape)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            px = np.concatenate([j + s, np.full(n, j + 1.0), j + 1 - s, np.full(n, float(j))])
            py = np.concatenate([np.full(n, float(i)), i + s, np.full(n, i + 1.0), i + 1 - s])
            lon, lat = to_geo.transform(*(grid.transform @ (px, py)))
            out[i, j] = abs(GEOD.polygon_area_perimeter(lon, lat)[0])
    return out


# ---------------------------------------------------------------------- identity
def test_equality_hash_token_and_pickle_ignore_crs_spelling() -> None:
    g = Grid.from_bounds((-180, -90, 180, 90), 1.0, "EPSG:4326")
    same = Grid(pyproj.CRS.from_wkt(pyproj.CRS.from_epsg(4326).to_wkt()), g.transform, g.shape)
    assert g == same and hash(g) == hash(same)
    assert dask.base.tokenize(g) == dask.base.tokenize(same)
    assert pickle.loads(pickle.dumps(g)) == g
    assert g != Grid.from_bounds((-180, -90, 180, 90), 0.5, "EPSG:4326")
    assert g != Grid("EPSG:4258", g.transform, g.shape)  # another datum
    assert g != Grid(g.crs, g.transform, (179, 360))


def test_float_noise_in_the_transform_does_not_break_equality() -> None:
    g = Grid.from_bounds((0, 0, 30, 30), 0.1, "EPSG:4326")
    noisy = Grid(g.crs, Affine(0.1 + 1e-15, 0, 1e-13, 0, -0.1, 30 - 1e-13), g.shape)
    assert noisy == g and hash(noisy) == hash(g)
    assert Grid(g.crs, Affine(0.1, 0, 0.01, 0, -0.1, 30), g.shape) != g  # a tenth of a cell


def test_rotated_or_sheared_transform_is_rejected() -> None:
    with pytest.raises(InputError, match="rotation or shear"):
        Grid("EPSG:3413", Affine(1000, 5, 0, 0, -1000, 0), (10, 10))
    with pytest.raises(MissingCRSError):
        Grid(None, Affine(1, 0, 0, 0, -1, 0), (1, 1))


def test_bounds_resolution_and_coords() -> None:
    g = Grid.from_bounds((100.0, 50.0, 110.0, 55.0), (0.5, 0.25), "EPSG:4326")
    assert g.shape == (20, 20)
    assert g.bounds == pytest.approx((100.0, 50.0, 110.0, 55.0), abs=1e-12)
    assert g.resolution == (0.5, 0.25)
    y, x = g.coords()
    assert x[0] == 100.25 and y[0] == 54.875 and y[-1] == 50.125  # cell centres, north first
    # bounds that are not a whole number of cells grow right and down
    assert Grid.from_bounds((0, 0, 10.5, 10), 1, "EPSG:3413").shape == (10, 11)


def test_south_up_grid_is_accepted_and_its_bounds_are_ordered() -> None:
    g = Grid("EPSG:4326", Affine(1, 0, 0, 0, 1, -10), (20, 30))  # rows run south to north
    assert g.bounds == (0, -10, 30, 10)
    y, _ = g.coords()
    assert y[0] == -9.5 and y[-1] == 9.5
    north_up = Grid.from_bounds(g.bounds, 1, "EPSG:4326")
    np.testing.assert_allclose(g.cell_area(), north_up.cell_area()[::-1], rtol=1e-14)


def test_tiles_cover_the_grid_once_with_matching_subgrids() -> None:
    g = Grid.from_bounds((0, 0, 1000, 700), 10, "EPSG:3035")
    tiles = g.tiles((32, 48))
    cover = np.zeros(g.shape, dtype=int)
    y, x = g.coords()
    for t in tiles:
        cover[t.row_slice, t.col_slice] += 1
        ty, tx = t.grid.coords()
        np.testing.assert_array_equal(ty, y[t.row_slice])
        np.testing.assert_array_equal(tx, x[t.col_slice])
    assert (cover == 1).all()
    assert tiles[1].col_slice == slice(48, 96) and tiles[1].row_slice == slice(0, 32)  # row-major
    assert g.chunk_sizes((32, 48)) == ((32, 32, 6), (48, 48, 4))


def test_wrap_and_from_dataarray_round_trip() -> None:
    g = Grid.from_bounds((-2e6, -1e6, 2e6, 1e6), 25_000, "EPSG:6931")
    da = g.wrap(np.zeros(g.shape, dtype="float32"), name="z", attrs={"units": "1"})
    assert da.dims == ("y", "x") and da.attrs["units"] == "1"
    assert Grid.from_dataarray(da) == g
    assert da.grid == g  # accessor
    sub = da.isel(y=slice(3, 4), x=slice(10, 20))  # one row: falls back on the stored transform
    assert Grid.from_dataarray(sub) == g.window(slice(3, 4), slice(10, 20))
    with pytest.raises(MissingCRSError):
        Grid.from_dataarray(da.drop_vars("spatial_ref"))


LAEA_NORTH = "+proj=laea +lat_0=90 +lon_0=0 +datum=WGS84 +units=m +no_defs"


@pytest.mark.parametrize(
    "crs",
    [
        LAEA_NORTH,
        "+proj=aea +lat_1=50 +lat_2=70 +lat_0=60 +lon_0=100 +datum=WGS84 +units=m",
        "+proj=ortho +lat_0=90 +lon_0=0 +datum=WGS84",
    ],
)
def test_custom_crs_grid_equals_itself_after_an_xarray_round_trip(crs: str) -> None:
    # rioxarray writes the WKT back with other names ("unnamed", "easting"): same CRS
    g = Grid.from_bounds((-3e5, -3e5, 3e5, 3e5), 1e5, crs)
    back = Grid.from_dataarray(g.wrap(np.ones(g.shape)))
    assert back.crs.to_wkt() != g.crs.to_wkt()
    assert back == g and hash(back) == hash(g) and len({g, back}) == 1
    assert pickle.loads(pickle.dumps(g)) == g


def test_grids_on_different_crss_differ_and_print_differently() -> None:
    a = Grid.from_bounds((0, 0, 2e5, 2e5), 1e5, LAEA_NORTH)
    b = Grid.from_bounds((0, 0, 2e5, 2e5), 1e5, LAEA_NORTH.replace("+lon_0=0", "+lon_0=10"))
    assert a != b and repr(a) != repr(b) and "+lon_0=10" in repr(b)
    assert Grid.from_bounds((0, 0, 2e5, 2e5), 1e5, "EPSG:3035") != Grid.from_bounds(
        (0, 0, 2e5, 2e5), 1e5, "EPSG:3034"
    )
    # axis order aside (the transform is always x, y), EPSG:4326 is OGC:CRS84
    geo = Grid.from_bounds((0, 0, 1, 1), 0.5, "EPSG:4326")
    assert geo == Grid.from_bounds((0, 0, 1, 1), 0.5, "OGC:CRS84")
    assert geo != Grid.from_bounds((0, 0, 1, 1), 0.5, "EPSG:4277")  # another datum


@settings(max_examples=60, deadline=None)
@given(
    x0=st.floats(-1e7, 1e7),
    y0=st.floats(-1e7, 1e7),
    xres=st.floats(0.001, 1e5),
    yres=st.floats(0.001, 1e5),
    north_up=st.booleans(),
    rows=st.lists(st.integers(0, 999), min_size=1, max_size=20),
    cols=st.lists(st.integers(0, 1999), min_size=1, max_size=20),
)
def test_pixel_world_round_trip(x0, y0, xres, yres, north_up, rows, cols) -> None:
    n = min(len(rows), len(cols))
    r, c = np.array(rows[:n]), np.array(cols[:n])
    e = -yres if north_up else yres
    g = Grid("EPSG:3413", Affine(xres, 0, x0, 0, e, y0), (1000, 2000))
    x, y = g.xy(r, c)
    rr, cc = g.rowcol(x, y)
    np.testing.assert_array_equal(rr, r)
    np.testing.assert_array_equal(cc, c)
    assert g.contains(rr, cc).all()
    # a point a third of a cell from the centre stays in the same cell
    rr, cc = g.rowcol(x + xres / 3, y - e / 3)
    np.testing.assert_array_equal(rr, r)
    np.testing.assert_array_equal(cc, c)


def test_rowcol_outside_and_non_finite() -> None:
    g = Grid.from_bounds((0, 0, 10, 10), 1, "EPSG:3035")
    r, c = g.rowcol([-0.5, 10.5, np.nan, 5], [5, 5, 5, 10.5])
    assert not g.contains(r, c).any()
    assert r[2] == -1 and c[2] == -1


def test_rowcol_wraps_longitudes_into_a_geographic_grid() -> None:
    # 1° cells from 170°E to 190°E (= -170°): -175 is 185, 15 cells east of 170
    g = Grid.from_bounds((170, 0, 190, 2), 1.0, "EPSG:4326")
    r, c = g.rowcol([-175.0, 175.0, 185.0, 189.5, -170.0, 160.0], [1.5] * 6)
    np.testing.assert_array_equal(c, [15, 5, 15, 19, 20, 350])
    np.testing.assert_array_equal(g.contains(r, c), [True] * 4 + [False] * 2)
    # global grid: 200 is -160 (col 20), 180 is -180 (col 0), 359.5 is -0.5 (col 179)
    world = Grid.from_bounds((-180, -90, 180, 90), 1.0, "EPSG:4326")
    _, c = world.rowcol([200.0, 180.0, -180.0, 359.5, -540.0], [0.0] * 5)
    np.testing.assert_array_equal(c, [20, 0, 0, 179, 0])
    # a projected grid is never wrapped
    _, c = Grid.from_bounds((0, 0, 10, 10), 1, "EPSG:3035").rowcol([-355.5], [5])
    assert c[0] == -356


def test_rowcol_points_on_edges_of_a_tenth_degree_grid_go_to_the_larger_index() -> None:
    # edges k * 0.1 written as decimals, and as 0.1 * k (0.30000000000000004): both are
    # edge k (columns from the west, rows from the top at 1.0)
    g = Grid.from_bounds((0, 0, 1, 1), 0.1, "EPSG:4326")
    k = np.arange(10)
    for x in (np.array([float(f"0.{i}") for i in k]), 0.1 * k):
        r, c = g.rowcol(x, 1.0 - x)
        np.testing.assert_array_equal(c, k)
        np.testing.assert_array_equal(r, k)
    # just off an edge (well above 1e-9 of a cell) stays in the cell it is in
    _, c = g.rowcol([0.3 - 1e-9, 0.3 + 1e-9], [0.5, 0.5])
    np.testing.assert_array_equal(c, [2, 3])


# ---------------------------------------------------------------------- areas
def test_global_quarter_degree_grid_sums_to_the_wgs84_surface() -> None:
    g = Grid.from_bounds((-180, -90, 180, 90), 0.25, "EPSG:4326")
    area = g.cell_area()
    assert area.shape == (720, 1440) and area.dtype == np.float64
    total_km2 = area.sum() / 1e6
    assert abs(total_km2 / WGS84_SURFACE_KM2 - 1) < 1e-5
    # and every row of a band is the same
    assert np.ptp(area[100]) == 0


def test_geographic_cell_matches_a_geodesic_polygon() -> None:
    # A 1 x 1 degree cell at 70 N, outline densified so geodesic edges follow the parallels.
    g = Grid.from_bounds((20, 69, 21, 70), 1.0, "EPSG:4326")
    n = 2000
    s = np.linspace(0, 1, n, endpoint=False)
    lon = np.concatenate([20 + s, np.full(n, 21.0), 21 - s, np.full(n, 20.0)])
    lat = np.concatenate([np.full(n, 70.0), 70 - s, np.full(n, 69.0), 69 + s])
    geodesic = abs(GEOD.polygon_area_perimeter(lon, lat)[0])
    assert g.cell_area()[0, 0] == pytest.approx(geodesic, rel=1e-6)


def test_authalic_q_limits() -> None:
    assert authalic_q(np.pi / 2, 0.0) == pytest.approx(2.0)
    a, f = 6378137.0, 1 / 298.257223563  # WGS84
    e2 = f * (2 - f)
    # whole ellipsoid: 2 pi a^2 q_p == 4 pi R_q^2 with the authalic radius 6371007.181 m
    assert 2 * np.pi * a * a * authalic_q(np.pi / 2, e2) == pytest.approx(
        4 * np.pi * 6371007.1809**2, rel=1e-10
    )


def test_naive_and_spherical_areas_are_wrong_by_the_expected_amounts() -> None:
    # The northern band 45-90 N on a 0.25 degree grid.
    g = Grid.from_bounds((-180, 45, 180, 90), 0.25, "EPSG:4326")
    exact = g.cell_area().sum()
    # "0.25 degree x 111 km" squares: 1440 x 180 cells of 27.75 km -> 199.6e6 km2, against
    # 2 pi R^2 (1 - sin 45) ~ 74.7e6 km2 on a sphere: about 2.66 times too much.
    naive = g.shape[0] * g.shape[1] * (0.25 * 111e3) ** 2
    assert naive / exact == pytest.approx(2.658, abs=0.005)
    # Spherical cos(latitude) areas with the mean radius miss by ~0.5 % here, ~0.6 % for
    # 50-90 N: the ellipsoid's high latitudes are farther from its centre than a sphere's.
    y, _ = g.coords()
    r = 6371.0088e3
    spherical = (r * r * np.radians(0.25) ** 2 * np.cos(np.radians(y))).sum() * g.shape[1]
    assert spherical / exact - 1 == pytest.approx(-0.00538, abs=0.0001)
    g50 = Grid.from_bounds((-180, 50, 180, 90), 0.25, "EPSG:4326")
    y50, _ = g50.coords()
    sph50 = (r * r * np.radians(0.25) ** 2 * np.cos(np.radians(y50))).sum() * g50.shape[1]
    assert sph50 / g50.cell_area().sum() - 1 == pytest.approx(-0.0060, abs=0.0001)


def test_ease_grid_north_cell_equals_resolution_squared() -> None:
    g = Grid.from_bounds((-9e6, -9e6, 9e6, 9e6), 25_000, "EPSG:6931")
    assert is_equal_area(g.crs, g.bounds)
    assert (g.cell_area() == 25_000.0**2).all()
    # Computed, not assumed: the general method gives the same on a block of cells.
    block = g.window(slice(300, 340), slice(350, 390))  # around the pole
    np.testing.assert_allclose(_projected_cell_area(block), 25_000.0**2, rtol=1e-8)


def test_equal_area_recognition() -> None:
    assert is_equal_area("EPSG:3035")  # LAEA Europe
    assert is_equal_area("EPSG:6933")  # EASE-Grid 2.0 global (cylindrical equal area)
    assert is_equal_area("EPSG:8857")  # Equal Earth
    assert not is_equal_area("EPSG:3413")  # polar stereographic: conformal
    assert not is_equal_area("EPSG:3857")
    assert not is_equal_area("EPSG:4326")


@pytest.mark.parametrize("crs", ["ESRI:54009", "ESRI:54012", "ESRI:54010", "ESRI:54052"])
def test_spherical_equal_area_projections_on_wgs84_get_the_ellipsoids_areas(crs: str) -> None:
    """Mollweide, Eckert IV/VI and Goode Homolosine on WGS84: PROJ maps them on the sphere
    of radius a, so a cell of the map is +0.67 % of its ellipsoidal area at the equator and
    -0.5 % at 70° (they were taken as exactly equal-area); now each cell is the geodesic
    area of its outline to 1e-7."""
    assert equal_area_kind(crs) == "sphere" and not is_equal_area(crs)
    to = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    for lat in (0.5, 45.0, 70.0):
        x, y = to.transform(10.0, lat)
        g = Grid.from_bounds((x - 50_000, y - 50_000, x + 50_000, y + 50_000), 25_000, crs)
        np.testing.assert_allclose(g.cell_area(), _geodesic_cell_areas(g, n=50), rtol=1e-7)
    assert equal_area_kind("EPSG:8857") == "ellipsoid"  # Equal Earth: ellipsoidal in PROJ
    assert equal_area_kind("ESRI:54008") == "ellipsoid"  # so is sinusoidal


@pytest.mark.parametrize("crs", ["ESRI:54009", "ESRI:54052"])
def test_a_world_map_has_the_globes_area_whatever_its_chunks(crs: str) -> None:
    """A world grid in Mollweide or interrupted Goode Homolosine at 100 km: cells whose
    centre is off the globe (the rim, the interruptions, where PROJ's inverse still
    answers) have no area; the rest add up to the WGS84 ellipsoid's 510.07 million km²
    (to the rim's partial cells), and chunks do not change a cell (a chunk wholly off the
    globe made its neighbours NaN: 384,134 to 790,150 NaN cells by chunk size at 5 km)."""
    g = Grid.from_bounds((-20.1e6, -9.1e6, 20.1e6, 9.1e6), 100_000, crs)
    whole = g.cell_area()
    assert np.nansum(whole) / 1e12 == pytest.approx(510.066, rel=2e-3)
    assert 0.2 < np.isnan(whole).mean() < 0.4  # the corners beyond the ellipse
    for chunks in (16, 37, 64):
        part = np.asarray(g.cell_area(chunks=chunks))
        np.testing.assert_array_equal(np.isnan(part), np.isnan(whole))
        np.testing.assert_allclose(part, whole, rtol=1e-13)  # NumPy's SIMD sin: 1 ulp


def test_a_robinson_world_maps_rim_cells_centred_on_the_globe_have_an_area() -> None:
    """Robinson (not equal-area): a rim cell whose outline leaves the globe had no area
    though GDAL, warping by centres, gives it a value (651 such cells at 50 km failed the
    sums); it now has its map area over PROJ's areal scale at its centre, and only cells
    centred off the globe have none."""
    g = Grid.from_bounds((-17.1e6, -8.7e6, 17.1e6, 8.7e6), 100_000, "ESRI:54030")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.asarray(g.cell_area())
    t = g.transform
    xx, yy = np.meshgrid(t.c + t.a * (np.arange(g.shape[1]) + 0.5),
                         t.f + t.e * (np.arange(g.shape[0]) + 0.5))  # fmt: skip
    lon, lat = pyproj.Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(
        xx, yy, errcheck=False
    )
    bx, by = pyproj.Transformer.from_crs("EPSG:4326", g.crs, always_xy=True).transform(
        lon, lat, errcheck=False
    )
    centred_on = np.isfinite(lon) & (np.abs(bx - xx) < 1.0) & (np.abs(by - yy) < 1.0)
    np.testing.assert_array_equal(np.isfinite(a), centred_on)
    assert np.nansum(a) / 1e12 == pytest.approx(510.066, rel=5e-3)


def test_polar_stereographic_areas_match_geodesic_polygons() -> None:
    # 100 km cells from the pole (a corner of four cells) to ~25 degrees from it.
    g = Grid.from_bounds((-300_000, -3_000_000, 300_000, 300_000), 100_000, "EPSG:3413")
    ours = g.cell_area()
    geodesic = _geodesic_cell_areas(g, n=400)
    np.testing.assert_allclose(ours, geodesic, rtol=1e-8)
    # the scale factor of the projection varies by ~1 % over the block: areas are not constant
    assert ours.max() / ours.min() > 1.01


def test_utm_areas_match_geodesic_polygons() -> None:
    g = Grid.from_bounds((200_000, 7_000_000, 800_000, 7_400_000), 100_000, "EPSG:32633")
    np.testing.assert_allclose(g.cell_area(), _geodesic_cell_areas(g, n=400), rtol=1e-8)


def test_lazy_cell_area_is_lazy_and_equals_numpy() -> None:
    g = Grid.from_bounds((-1e6, -1e6, 1e6, 1e6), 50_000, "EPSG:3413")
    with raise_if_dask_computes():
        lazy = g.cell_area(chunks=16)
    assert lazy.chunks == g.chunk_sizes(16)
    np.testing.assert_allclose(lazy.compute(), g.cell_area(), rtol=1e-12)


def test_cells_on_an_orthographic_disk_keep_their_area_when_a_corner_is_off_it() -> None:
    """The tile's first corner (-7000 km, 1000 km) lies off the orthographic disk: only
    the cells that reach off it have no area; the others match geodesic polygons."""
    crs = pyproj.CRS("+proj=ortho +lat_0=90 +lon_0=0 +datum=WGS84")
    g = Grid.from_bounds((-7e6, -1e6, 1e6, 1e6), 1e6, crs)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.asarray(g.cell_area())
    assert np.isnan(a[:, 0]).all() and np.isfinite(a[:, 1:]).all()
    geod = pyproj.Geod(ellps="WGS84")
    to_ll = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    s = np.linspace(0.0, 1e6, 200)
    x = np.r_[s, np.full_like(s, 1e6), s[::-1], np.zeros_like(s)]
    y = np.r_[np.zeros_like(s), s, np.full_like(s, 1e6), s[::-1]]
    lon, lat = to_ll.transform(x, y)
    expected = abs(geod.polygon_area_perimeter(lon, lat)[0])
    assert a[0, 7] == pytest.approx(expected, rel=1e-6)  # the cell 0..1000 km, 0..1000 km
