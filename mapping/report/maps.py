"""Figures of the inventory report: maps of the prediction and the storage chart.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas
(no pyplot state, no display) and returned as PNG bytes; the report writes them to its
``figures/`` folder and embeds the same bytes in its HTML page.

Maps are drawn in the pixel space of the (decimated) raster, oriented so that the
raster's +x axis points right and its +y axis up, exactly as the grid lies in its CRS,
with an equal aspect. On a polar grid such as EASE-Grid 2.0 North, north is *not* up
(it points to the pole, which may be off to one side of the map), so the maps carry a
graticule of meridians and parallels computed with pyproj instead of a north arrow or a
single scale bar (the scale of an equal-area azimuthal map changes across it).
Zone outlines come either from polygons reprojected to the raster's CRS
(:func:`polygon_lines`) or from the cell edges between different codes of a zone raster
(:func:`zone_edges`). The charts live in :mod:`mapping.report.charts`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapping.report.charts import new_figure

__all__ = [
    "DisplayGrid",
    "GraticuleLine",
    "MapView",
    "display_grid",
    "graticule",
    "map_figure",
    "polygon_lines",
    "to_display",
    "zone_edges",
]

DENSITY_UNITS = "kg C m$^{-2}$"
_OUTLINE = "#1a1a1a"
_GRATICULE = "#333333"


@dataclass(frozen=True)
class MapView:
    """A raster read at display resolution.

    Attributes
    ----------
    data
        ``(y, x)`` float array, NaN where there is no data.
    transform
        Affine transform of ``data`` (pixel corners, in ``crs`` units).
    crs
        :class:`pyproj.CRS` of the raster.
    decimation
        Source cells per displayed cell along x (1 = full resolution).
    """

    data: np.ndarray
    transform: Any
    crs: Any
    decimation: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))


@dataclass(frozen=True)
class GraticuleLine:
    """One meridian or parallel in pixel coordinates (NaN breaks the line)."""

    kind: str  # "meridian" or "parallel"
    value: float  # degrees
    label: str
    cols: np.ndarray
    rows: np.ndarray


# --------------------------------------------------------------------------- geometry helpers
def to_pixels(transform: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates -> fractional ``(col, row)`` of ``transform`` (pixel corners)."""
    cols, rows = ~transform @ (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(cols, dtype=float), np.asarray(rows, dtype=float)


def outline_path(edges: np.ndarray | None, lines: Sequence[np.ndarray] | None) -> Any:
    """Zone edges (``(n, 2, 2)`` segments) and polylines as one compound matplotlib path.

    Drawn as one path, a map's outlines cost one draw call (and one halo) instead of one
    per cell edge: a hemisphere's zone raster has ~10^5 edges in a map view, and as a
    ``LineCollection`` with a halo they took about two minutes per interval to draw into
    PNG and PDF. Segments that continue one another (the same row or column of cell
    edges) are merged first. ``None`` when there is nothing to draw.
    """
    from matplotlib.path import Path as MplPath

    verts: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    if edges is not None and len(edges):
        for seg in _merge_runs(np.asarray(edges, dtype=float)):
            verts.append(seg)
            codes.append(np.array([MplPath.MOVETO, MplPath.LINETO], dtype=np.uint8))
    for line in lines or ():
        line = np.asarray(line, dtype=float)
        if len(line) < 2:
            continue
        verts.append(line)
        c = np.full(len(line), MplPath.LINETO, dtype=np.uint8)
        c[0] = MplPath.MOVETO
        codes.append(c)
    if not verts:
        return None
    return MplPath(np.concatenate(verts), np.concatenate(codes))


def _merge_runs(segs: np.ndarray) -> np.ndarray:
    """Axis-parallel unit segments merged where one ends where the next begins."""
    out = []
    vertical = segs[:, 0, 0] == segs[:, 1, 0]
    for is_v, sub in ((True, segs[vertical]), (False, segs[~vertical])):
        if not len(sub):
            continue
        # sort along the line: by the fixed coordinate, then by the start
        fixed, along = (0, 1) if is_v else (1, 0)
        lo = np.minimum(sub[:, 0, along], sub[:, 1, along])
        hi = np.maximum(sub[:, 0, along], sub[:, 1, along])
        key = sub[:, 0, fixed]
        order = np.lexsort((lo, key))
        key, lo, hi = key[order], lo[order], hi[order]
        new = np.ones(len(key), dtype=bool)
        new[1:] = (key[1:] != key[:-1]) | (lo[1:] != hi[:-1])
        start = np.flatnonzero(new)
        end = np.r_[start[1:], len(key)] - 1
        a, b, k = lo[start], hi[end], key[start]
        pts = np.empty((len(start), 2, 2))
        pts[:, 0, fixed] = pts[:, 1, fixed] = k
        pts[:, 0, along], pts[:, 1, along] = a, b
        out.append(pts)
    return np.concatenate(out) if out else np.zeros((0, 2, 2))


def zone_edges(codes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Cell edges between different zones of a zone raster, as line segments.

    Parameters
    ----------
    codes
        ``(y, x)`` zone codes.
    valid
        ``(y, x)`` mask of cells that belong to a zone; cells outside it count as one
        "no zone" code, so the outer boundary of the zones is drawn too.

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 2)`` segments ``[[col0, row0], [col1, row1]]`` in pixel-corner
        coordinates, one per cell edge with different codes on its two sides.

    Examples
    --------
    >>> zone_edges(np.array([[1, 2], [1, 2]])).tolist()
    [[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 2.0]]]
    """
    z = np.asarray(codes)
    if valid is not None:
        z = np.where(valid, z.astype("float64"), np.nan)
    z = z.astype("float64")
    key = np.where(np.isnan(z), -np.inf, z)  # "no zone" compares equal to itself
    segs = []
    r, c = np.nonzero(key[:, :-1] != key[:, 1:])  # vertical edge at x = c + 1
    if r.size:
        x = (c + 1).astype(float)
        segs.append(np.stack([np.stack([x, r], -1), np.stack([x, r + 1.0], -1)], 1))
    r, c = np.nonzero(key[:-1, :] != key[1:, :])  # horizontal edge at y = r + 1
    if r.size:
        y = (r + 1).astype(float)
        segs.append(np.stack([np.stack([c, y], -1), np.stack([c + 1.0, y], -1)], 1))
    if not segs:
        return np.zeros((0, 2, 2))
    return np.concatenate(segs).astype(float)


def polygon_lines(geoms: Sequence[Any], transform: Any, tolerance: float = 0.5) -> list[np.ndarray]:
    """Boundaries of polygons (already in the raster's CRS) in pixel coordinates.

    Rings are simplified to ``tolerance`` pixels, so a detailed hemisphere layer draws
    as fast as a coarse one.

    Returns
    -------
    list of numpy.ndarray
        One ``(n, 2)`` array of ``(col, row)`` per ring.
    """
    import shapely

    inv = ~transform
    coeffs = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
    out = []
    for g in geoms:
        if g is None or g.is_empty:
            continue
        g = shapely.affinity.affine_transform(g, coeffs)
        if tolerance > 0:
            g = shapely.simplify(g, tolerance, preserve_topology=True)
        for line in shapely.get_parts(shapely.boundary(g)):
            xy = shapely.get_coordinates(line)
            if len(xy) >= 2:
                out.append(xy)
    return out


def _nice_step(span: float, target: int, steps: Sequence[float]) -> float:
    for s in steps:
        if span / s <= target:
            return s
    return steps[-1]


def _lon_label(lon: float) -> str:
    lon = (lon + 180.0) % 360.0 - 180.0
    if np.isclose(abs(lon), 180.0):
        return "180°"
    if np.isclose(lon, 0.0):
        return "0°"
    return f"{abs(lon):g}°{'E' if lon > 0 else 'W'}"


def _lat_label(lat: float) -> str:
    if np.isclose(lat, 0.0):
        return "0°"
    return f"{abs(lat):g}°{'N' if lat > 0 else 'S'}"


def graticule(
    crs: Any, transform: Any, shape: tuple[int, int], *, target: int = 6
) -> list[GraticuleLine]:
    """Meridians and parallels over a raster's frame, in its pixel coordinates.

    The spacing is chosen from the longitude and latitude span of the frame (about
    ``target`` lines of each); when a pole lies inside the frame every meridian is drawn.
    Lines are sampled densely and projected with pyproj, so they curve as they should.

    Parameters
    ----------
    crs
        The raster's CRS (anything :meth:`pyproj.CRS.from_user_input` accepts).
    transform
        Its affine transform.
    shape
        ``(ny, nx)``.
    target
        Rough number of lines of each kind.
    """
    import pyproj

    crs = pyproj.CRS.from_user_input(crs)
    ny, nx = shape
    geo = crs.geodetic_crs or pyproj.CRS.from_epsg(4326)
    to_geo = pyproj.Transformer.from_crs(crs, geo, always_xy=True)
    to_map = pyproj.Transformer.from_crs(geo, crs, always_xy=True)

    cc, rr = np.meshgrid(np.linspace(0, nx, 41), np.linspace(0, ny, 41))
    x, y = transform @ (cc.ravel(), rr.ravel())
    lon, lat = to_geo.transform(x, y, errcheck=False)
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90)
    if not ok.any():
        return []
    lon, lat = lon[ok], lat[ok]

    def inside(lon0: float, lat0: float) -> bool:
        px, py = to_map.transform(lon0, lat0, errcheck=False)
        if not (np.isfinite(px) and np.isfinite(py)):
            return False
        c, r = to_pixels(transform, px, py)
        return bool(0 <= c <= nx and 0 <= r <= ny)

    north, south = inside(0.0, 90.0), inside(0.0, -90.0)
    lat_lo = -90.0 if south else float(lat.min())
    lat_hi = 90.0 if north else float(lat.max())
    if crs.is_geographic or north or south:
        lon_lo, lon_span = (
            (-180.0, 360.0) if (north or south) else (float(lon.min()), float(np.ptp(lon)))
        )
    else:  # the span on the circle: 360 minus the largest gap between longitudes
        s = np.sort(np.unique(np.round(lon % 360.0, 6)))
        gaps = np.diff(np.concatenate([s, [s[0] + 360.0]]))
        k = int(np.argmax(gaps))
        lon_lo = float(s[(k + 1) % len(s)])
        lon_span = 360.0 - float(gaps[k])
    lon_step = _nice_step(lon_span, target, (0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90))
    lat_step = _nice_step(
        max(lat_hi - lat_lo, 1e-9), target, (0.25, 0.5, 1, 2, 2.5, 5, 10, 15, 20, 30)
    )

    lines: list[GraticuleLine] = []
    pad_lat = lat_step
    lat_a, lat_b = max(-90.0, lat_lo - pad_lat), min(90.0, lat_hi + pad_lat)
    first = math.ceil(lon_lo / lon_step) * lon_step
    meridians = np.arange(first, lon_lo + lon_span + 1e-9, lon_step)
    if lon_span >= 360.0 - 1e-9:
        meridians = meridians[meridians < lon_lo + 360.0 - 1e-9]
    # Meridians stop one step short of a pole inside the frame: they all meet there.
    m_lo = lat_a if not south else -90.0 + lat_step
    m_hi = lat_b if not north else 90.0 - lat_step
    for lon0 in meridians:
        lats = np.linspace(m_lo, m_hi, 240)
        xs, ys = to_map.transform(np.full_like(lats, lon0), lats, errcheck=False)
        c, r = to_pixels(transform, xs, ys)
        lines.append(GraticuleLine("meridian", float(lon0), _lon_label(lon0), c, r))
    parallels = np.arange(math.ceil(lat_a / lat_step) * lat_step, lat_b + 1e-9, lat_step)
    parallels = parallels[np.abs(parallels) < 90.0 - 1e-9]
    pad_lon = min(lon_step, 360.0 - lon_span) if lon_span < 360 else 0.0
    for lat0 in parallels:
        lons = np.linspace(lon_lo - pad_lon, lon_lo + lon_span + pad_lon, 721)
        xs, ys = to_map.transform(lons, np.full_like(lons, lat0), errcheck=False)
        c, r = to_pixels(transform, xs, ys)
        lines.append(GraticuleLine("parallel", float(lat0), _lat_label(lat0), c, r))
    return lines


# --------------------------------------------------------------------------- display projection
@dataclass(frozen=True)
class DisplayGrid:
    """A north-up grid to draw maps on: a Lambert azimuthal equal-area centred on the data."""

    crs: Any
    transform: Any
    shape: tuple[int, int]


def display_grid(view: MapView) -> DisplayGrid:
    """The north-up display grid of a map: LAEA centred on its valid cells, same cell count.

    Equal-area (areas on the figure compare as on the ground) with north straight up at
    the centre; a polar grid such as EASE-Grid 2.0 North is turned so that its pole is
    at the top, as readers expect.
    """
    import pyproj
    from rasterio.warp import calculate_default_transform

    ny, nx = view.shape
    rows, cols = np.nonzero(np.isfinite(view.data))
    if rows.size == 0:
        rows, cols = np.array([ny / 2]), np.array([nx / 2])
    x, y = view.transform @ (cols.mean() + 0.5, rows.mean() + 0.5)
    src = pyproj.CRS.from_user_input(view.crs)
    lon, lat = pyproj.Transformer.from_crs(src, 4326, always_xy=True).transform(x, y)
    crs = pyproj.CRS.from_proj4(
        f"+proj=laea +lat_0={lat:.4f} +lon_0={lon:.4f} +datum=WGS84 +units=m +no_defs"
    )
    t = view.transform
    bounds = (t.c, t.f + t.e * ny, t.c + t.a * nx, t.f)
    left, right = min(bounds[0], bounds[2]), max(bounds[0], bounds[2])
    bottom, top = min(bounds[1], bounds[3]), max(bounds[1], bounds[3])
    # Same cell count: the source's cell size in metres on a projected grid; on a
    # geographic grid (cells in degrees) GDAL's suggested resolution, which keeps the count.
    resolution = None if src.is_geographic else abs(t.a)
    transform, width, height = calculate_default_transform(
        src.to_wkt(), crs.to_wkt(), nx, ny, left, bottom, right, top, resolution=resolution
    )
    return DisplayGrid(crs, transform, (int(height), int(width)))


def to_display(view: MapView, grid: DisplayGrid) -> MapView:
    """A map view reprojected (nearest neighbour: values are not blended) onto ``grid``."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    dst = np.full(grid.shape, np.nan)
    reproject(
        np.asarray(view.data, dtype="float64"), dst,
        src_transform=view.transform, src_crs=view.crs.to_wkt(), src_nodata=np.nan,
        dst_transform=grid.transform, dst_crs=grid.crs.to_wkt(), dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )  # fmt: skip
    # crop to the valid cells (plus a margin), so the map fills its frame
    rows, cols = np.nonzero(np.isfinite(dst))
    if rows.size:
        pad = max(2, int(0.03 * max(dst.shape)))
        r0, r1 = max(rows.min() - pad, 0), min(rows.max() + 1 + pad, dst.shape[0])
        c0, c1 = max(cols.min() - pad, 0), min(cols.max() + 1 + pad, dst.shape[1])
        dst = dst[r0:r1, c0:c1]
        transform = grid.transform @ grid.transform.translation(c0, r0)
    else:
        transform = grid.transform
    return MapView(dst, transform, grid.crs, view.decimation)


def _nice_length(span: float) -> float:
    """A round length (1, 2 or 5 x 10^k) of about a quarter of ``span``."""
    target = span / 4
    k = 10 ** math.floor(math.log10(target))
    return max(m * k for m in (1, 2, 5) if m * k <= target)


def _north_angle(crs: Any, transform: Any, col: float, row: float) -> float | None:
    """Direction of true north at a pixel, in degrees counter-clockwise from up."""
    import pyproj

    try:
        crs = pyproj.CRS.from_user_input(crs)
        x, y = transform @ (col, row)
        to_geo = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
        lon, lat = to_geo.transform(x, y)
        if not np.isfinite(lat) or lat > 89.9:
            return None
        x2, y2 = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat + 0.05)
    except pyproj.exceptions.ProjError:
        return None
    c2, r2 = to_pixels(transform, x2, y2)
    return math.degrees(math.atan2(float(c2 - col), float(row - r2))) * -1.0


def _limits(data: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float, str]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0, "neither"
    lo = float(np.percentile(finite, 1)) if vmin is None else float(vmin)
    hi = float(np.percentile(finite, 99)) if vmax is None else float(vmax)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    below, above = bool(finite.min() < lo), bool(finite.max() > hi)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )
    return lo, hi, extend


def _label_point(
    cols: np.ndarray, rows: np.ndarray, nx: int, ny: int
) -> tuple[float, float] | None:
    """Where a graticule line enters the frame (a small margin inside), for its label."""
    mx, my = 0.04 * nx, 0.04 * ny
    inside = (cols >= mx) & (cols <= nx - mx) & (rows >= my) & (rows <= ny - my)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return None
    k = idx[0]
    return float(cols[k]), float(rows[k])


def map_figure(
    view: MapView,
    *,
    title: str,
    label: str,
    units: str = DENSITY_UNITS,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    edges: np.ndarray | None = None,
    lines: Sequence[np.ndarray] = (),
    grid_lines: Sequence[GraticuleLine] | None = None,
    veil: np.ndarray | None = None,
    dpi: int = 150,
    zone_labels: Sequence[tuple[float, float, str]] = (),
    land_outline: bool = True,
    scale_bar: bool = True,
    width: float = 6.3,
) -> Any:
    """A map of one raster: colour bar with units, zone outlines and names, graticule,
    outline of the mapped land, scale bar and north arrow.

    Parameters
    ----------
    view
        The raster at display resolution.
    title, label
        Figure title and colour-bar label (``units`` is appended).
    cmap, vmin, vmax
        Colour map and limits (default: the 1st and 99th percentiles; the colour bar
        gets arrows where values fall outside).
    edges
        Zone outlines as ``(n, 2, 2)`` pixel segments (:func:`zone_edges`).
    lines
        Zone outlines as pixel polylines (:func:`polygon_lines`).
    grid_lines
        Graticule (default: computed with :func:`graticule`).
    veil
        Boolean ``(y, x)`` mask of cells to pale out (e.g. outside the area of
        applicability).
    dpi
        Resolution of the PNG.
    zone_labels
        ``(col, row, name)`` of each zone's label, in pixel coordinates.
    land_outline
        Draw the edge of the mapped cells (the land, from the map's own mask).
    scale_bar
        Draw a scale bar (true at the centre of the map; for projected CRSs in metres).
    width
        Figure width in inches (6.3 in = 160 mm, the text width of an A4 page).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import patheffects
    from matplotlib.patches import PathPatch

    data = np.asarray(view.data, dtype=float)
    ny, nx = view.shape
    t = view.transform
    aspect = abs(t.e) / abs(t.a)
    height = min(8.5, max(3.2, (width - 1.3) * ny * aspect / nx + 0.9))
    fig = new_figure(width, height, dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#e6e6e6")  # no data
    lo, hi, extend = _limits(data, vmin, vmax)
    im = ax.imshow(
        np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi, extent=(0, nx, ny, 0),
        origin="upper", interpolation="nearest", aspect=aspect,
    )  # fmt: skip
    if veil is not None and np.any(veil):
        rgba = np.zeros((ny, nx, 4))
        rgba[..., :3] = 1.0
        rgba[..., 3] = np.where(veil, 0.6, 0.0)
        ax.imshow(
            rgba, extent=(0, nx, ny, 0), origin="upper", interpolation="nearest", aspect=aspect
        )
    # +x right, +y up, as the grid lies in its CRS (a south-up raster is flipped back).
    ax.set_xlim((0, nx) if t.a > 0 else (nx, 0))
    ax.set_ylim((ny, 0) if t.e < 0 else (0, ny))
    halo = [patheffects.withStroke(linewidth=2.0, foreground="white", alpha=0.85)]
    if grid_lines is None:
        grid_lines = graticule(view.crs, t, (ny, nx))
    for gl in grid_lines:
        # a pale underlay keeps the dashes readable over dark and light colours alike
        ax.plot(gl.cols, gl.rows, color="white", lw=1.3, alpha=0.45, zorder=3)
        ax.plot(gl.cols, gl.rows, color=_GRATICULE, lw=0.6, ls=(0, (4, 3)), zorder=3)
        at = _label_point(gl.cols, gl.rows, nx, ny)
        if at is not None:
            ax.text(*at, gl.label, fontsize=7, color="#202020", ha="center", va="center",
                    zorder=5, path_effects=halo)  # fmt: skip
    outline = outline_path(edges, lines)
    if outline is not None:
        under = [patheffects.withStroke(linewidth=1.6, foreground="white", alpha=0.55)]
        # add_artist, not add_patch: the limits are set above, and add_patch's update of
        # the data limits walks every vertex of the outline in Python (0.3 s a map)
        ax.add_artist(
            PathPatch(outline, fill=False, edgecolor=_OUTLINE, linewidth=0.8, zorder=4,
                      path_effects=under, capstyle="butt", joinstyle="round")
        )  # fmt: skip
    if land_outline and np.isfinite(data).any() and min(ny, nx) > 2:
        land = np.pad(np.isfinite(data).astype(float), 1)
        ax.contour(np.arange(-0.5, nx + 1.5), np.arange(-0.5, ny + 1.5), land, levels=[0.5],
                   colors="#4d4d4d", linewidths=0.7, zorder=4)  # fmt: skip
    for col, row, name in zone_labels:
        ax.text(col, row, name, fontsize=7.5, fontweight="bold", color="#111111", ha="center",
                va="center", zorder=6, path_effects=halo)  # fmt: skip
    crs_units = _metres(view.crs)
    if scale_bar and crs_units:
        _draw_scale_bar(ax, t, nx, ny, halo)
    angle = _north_angle(view.crs, t, nx / 2, ny / 2)  # north at the centre of the map
    if angle is not None:
        _draw_north_arrow(ax, angle, halo)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02, extend=extend)
    cb.set_label(f"{label} ({units})", fontsize=9)
    cb.ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def _metres(crs: Any) -> bool:
    import pyproj

    c = pyproj.CRS.from_user_input(crs)
    return bool(c.is_projected and c.axis_info and c.axis_info[0].unit_name in ("metre", "meter"))


def _draw_scale_bar(ax: Any, t: Any, nx: int, ny: int, halo: Any) -> None:
    """A two-segment scale bar at the lower left, in km (true at the map's centre)."""
    from matplotlib.patches import Rectangle

    cell = abs(t.a)
    length = _nice_length(nx * cell)  # metres
    n = length / cell  # pixels
    x0 = 0.05 * nx if t.a > 0 else 0.95 * nx - n
    y0 = 0.94 * ny if t.e < 0 else 0.06 * ny
    h = 0.012 * ny
    for k, colour in enumerate(("#222222", "white")):
        ax.add_patch(Rectangle((x0 + k * n / 2, y0 - h), n / 2, h, facecolor=colour,
                               edgecolor="#222222", lw=0.6, zorder=7))  # fmt: skip
    km = length / 1000
    ax.text(x0 + n / 2, y0 - 1.9 * h, f"{km:g} km", ha="center", va="bottom", fontsize=7,
            zorder=7, path_effects=halo)  # fmt: skip


def _draw_north_arrow(ax: Any, angle: float, halo: Any) -> None:
    """An arrow pointing to true north at the upper right (angle from up, counter-clockwise)."""
    a = math.radians(angle)
    x0, y0 = 0.93, 0.80
    dx, dy = -0.07 * math.sin(a), 0.07 * math.cos(a)
    ax.annotate("", xy=(x0 + dx, y0 + dy), xytext=(x0, y0), xycoords="axes fraction",
                arrowprops={"arrowstyle": "-|>", "color": "#222222", "lw": 1.4}, zorder=7)  # fmt: skip
    ax.text(x0 + 1.35 * dx, y0 + 1.35 * dy, "N", transform=ax.transAxes, ha="center",
            va="center", fontsize=8, fontweight="bold", zorder=7, path_effects=halo)  # fmt: skip
