"""Report maps drawn north up: the display grid, the reprojection, the scale bar and PDF output."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
from affine import Affine

from mapping.report.charts import pdf_bytes
from mapping.report.maps import (
    MapView,
    _nice_length,
    _north_angle,
    display_grid,
    map_figure,
    to_display,
)

# EASE-Grid 2.0 North, 25 km, a box over north-east Siberia (the pole off to one side)
EASE = pyproj.CRS.from_epsg(6931)
T = Affine(25_000, 0, 0, 0, -25_000, -1_000_000)


def _view() -> MapView:
    ny, nx = 80, 100
    rows, cols = np.mgrid[0:ny, 0:nx]
    data = (rows * 1000 + cols).astype(float)  # every cell its own value
    data[:10, :10] = np.nan
    return MapView(data, T, EASE)


def test_ease_grid_is_not_north_up_but_the_display_grid_is() -> None:
    view = _view()
    tilt = _north_angle(view.crs, view.transform, 50, 40)
    assert tilt is not None and abs(tilt) > 20  # north is far from up on the polar grid
    shown = to_display(view, display_grid(view))
    ny, nx = shown.shape
    assert _north_angle(shown.crs, shown.transform, nx / 2, ny / 2) == pytest.approx(0, abs=0.5)


def test_display_keeps_values_and_area() -> None:
    view = _view()
    shown = to_display(view, display_grid(view))
    finite = shown.data[np.isfinite(shown.data)]
    # nearest neighbour: only values of the source map, none blended
    assert np.isin(finite, view.data[np.isfinite(view.data)]).all()
    # equal-area both ways: the mapped area agrees within the resampling of the edges
    src_area = np.isfinite(view.data).sum() * 25_000**2
    dst_area = finite.size * abs(shown.transform.a * shown.transform.e)
    assert dst_area == pytest.approx(src_area, rel=0.03)


def test_a_geographic_map_keeps_its_cell_count_north_up() -> None:
    # 0.25 degree cells over 82-104 E, 58-69 N: the display grid is in metres, so the
    # source's cell size (degrees) must not be taken as the display resolution
    ny, nx = 44, 88
    view = MapView(
        np.arange(ny * nx, dtype=float).reshape(ny, nx),
        Affine(0.25, 0, 82, 0, -0.25, 69),
        pyproj.CRS.from_epsg(4326),
    )
    grid = display_grid(view)
    assert 0.5 < grid.shape[0] * grid.shape[1] / (ny * nx) < 2.0
    cell_km = abs(grid.transform.a) / 1000
    assert 10 < cell_km < 30  # 0.25 degree is ~28 km of latitude, ~9-14 km of longitude here
    shown = to_display(view, grid)
    finite = shown.data[np.isfinite(shown.data)]
    assert np.isin(finite, view.data).all() and finite.size > 0.8 * ny * nx
    ny2, nx2 = shown.shape
    assert _north_angle(shown.crs, shown.transform, nx2 / 2, ny2 / 2) == pytest.approx(0, abs=0.5)


def test_scale_bar_lengths_are_round() -> None:
    assert _nice_length(2_500_000) == 500_000
    assert _nice_length(900_000) == 200_000
    assert _nice_length(45_000) == 10_000


def test_map_figure_writes_a_vector_pdf() -> None:
    view = _view()
    shown = to_display(view, display_grid(view))
    fig = map_figure(shown, title="t", label="SOC stock", zone_labels=[(10, 10, "continuous")])
    data = pdf_bytes(fig)
    assert data.startswith(b"%PDF-") and b"/Image" in data  # the map raster inside the vector page
    assert 6.0 <= fig.get_figwidth() <= 6.5  # fits the text width of an A4 page
