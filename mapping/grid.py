"""The Grid: an immutable raster geometry (CRS, affine transform, shape) that owns its cell areas.

Conventions (see ``docs/conventions.md``):

* arrays are ``(y, x)``; ``shape == (ny, nx)``;
* ``transform`` follows GDAL/rasterio: it maps *pixel corners* ``(col, row)`` to world
  ``(x, y)``; the centre of cell ``(row, col)`` is ``transform @ (col + 0.5, row + 0.5)``;
* ``bounds`` are in rasterio order ``(left, bottom, right, top)``;
* north is never assumed to be up: a positive ``transform.e`` (rows running south to north)
  is accepted, and on a projected grid "up" is whatever the projection says it is;
* rotated or sheared transforms are rejected with an :class:`~mapping.exceptions.InputError`:
  warp such rasters onto an axis-aligned grid (they can still be *sources* of the covariate
  stack, which warps them);
* cell areas are in m², exact on the ellipsoid of the CRS (see :meth:`Grid.cell_area`).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyproj
from affine import Affine

from mapping.exceptions import InputError, MissingCRSError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "Grid",
    "Tile",
    "authalic_q",
    "ellipsoid_band_area",
    "is_equal_area",
]


class Tile(NamedTuple):
    """One chunk of a grid: ``array[row_slice, col_slice]`` lies on ``grid``."""

    row_slice: slice
    col_slice: slice
    grid: Grid


def _crs_key(crs: pyproj.CRS) -> str:
    # An authority code when the CRS is exactly one, otherwise the full WKT: a stable,
    # spelled-out identity for dask tokens. Grid equality compares CRSs with pyproj.
    auth = crs.to_authority(min_confidence=100)
    if auth is not None:
        return f"{auth[0]}:{auth[1]}"
    return crs.to_wkt()


def _same_crs(a: pyproj.CRS, b: pyproj.CRS) -> bool:
    # Semantic equality: a custom CRS read back through GDAL or rioxarray gets other names
    # ("unknown" -> "unnamed", axis names) in its WKT but the same definition. Axis order
    # is ignored: grid transforms are always (x = easting/longitude, y = northing/latitude).
    return a is b or _crs_key(a) == _crs_key(b) or a.equals(b, ignore_axis_order=True)


def _crs_label(crs: pyproj.CRS) -> str:
    # Short name for messages: the authority code, else the CRS's name, else (for an
    # unnamed custom CRS) its PROJ string, so two different custom CRSs print differently.
    key = _crs_key(crs)
    if len(key) < 40:
        return key
    if crs.name and crs.name.lower() not in ("unknown", "unnamed"):
        return crs.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "lose projection information"
        proj = crs.to_proj4()
    return proj.replace(" +type=crs", "") if proj else crs.name


def _round_sig(value: float, step: float) -> float:
    # Round to ~1e-6 of a pixel so a transform rebuilt from float coordinates compares
    # equal to the one it came from.
    if step <= 0 or not math.isfinite(step):
        return value
    digits = 6 - math.floor(math.log10(step))
    return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Grid:
    """An axis-aligned raster grid: CRS, pixel-corner affine transform and ``(ny, nx)`` shape.

    Parameters
    ----------
    crs
        Anything :meth:`pyproj.CRS.from_user_input` accepts (``"EPSG:6931"``, WKT, a
        ``rasterio`` CRS, ...).
    transform
        GDAL/rasterio affine transform, pixel-corner based; no rotation or shear.
    shape
        ``(ny, nx)``.

    Examples
    --------
    >>> g = Grid.from_bounds((-180, -90, 180, 90), 1.0, "EPSG:4326")
    >>> g.shape, g.resolution
    ((180, 360), (1.0, 1.0))
    >>> float(round(g.cell_area().sum() / 1e12, 3))  # million km², WGS84 ellipsoid surface
    510.066
    """

    crs: pyproj.CRS
    transform: Affine
    shape: tuple[int, int]
    _key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        crs = self.crs
        if crs is None:
            raise MissingCRSError("grid has no CRS; give one, e.g. crs='EPSG:4326'")
        if not isinstance(crs, pyproj.CRS):
            try:
                crs = pyproj.CRS.from_user_input(crs)
            except pyproj.exceptions.CRSError as exc:
                raise InputError(f"grid CRS {self.crs!r} is not understood ({exc})") from None
        transform = self.transform
        if not isinstance(transform, Affine):
            transform = Affine(*tuple(transform)[:6])
        if transform.b != 0 or transform.d != 0:
            raise InputError(
                f"grid transform {tuple(transform)[:6]} has rotation or shear; only axis-aligned "
                "grids are supported (warp the raster first, e.g. gdalwarp)"
            )
        if transform.a == 0 or transform.e == 0:
            raise InputError(f"grid transform {tuple(transform)[:6]} has a zero pixel size")
        ny, nx = (int(v) for v in self.shape)
        if ny < 1 or nx < 1:
            raise InputError(f"grid shape {self.shape} must be at least (1, 1)")
        object.__setattr__(self, "crs", crs)
        object.__setattr__(self, "transform", transform)
        object.__setattr__(self, "shape", (ny, nx))
        ax, ay = abs(transform.a), abs(transform.e)
        tkey = (
            _round_sig(transform.a, ax),
            _round_sig(transform.c, ax),
            _round_sig(transform.e, ay),
            _round_sig(transform.f, ay),
        )
        object.__setattr__(self, "_key", (_crs_key(crs), tkey, (ny, nx)))

    # ------------------------------------------------------------------ identity
    # Equal grids: the same CRS (pyproj semantics, see _same_crs), shape and transform to
    # ~1e-6 of a cell. The hash leaves the CRS out so that equal grids hash equal whatever
    # the spelling of their CRS.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self._key[1:] == other._key[1:] and _same_crs(self.crs, other.crs)

    def __hash__(self) -> int:
        return hash(self._key[1:])

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("socmap.Grid", *self._key)

    def __repr__(self) -> str:
        t = self.transform
        return (
            f"Grid(crs={_crs_label(self.crs)!r}, "
            f"shape={self.shape}, resolution={self.resolution}, origin=({t.c!r}, {t.f!r}))"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Grid, (self.crs.to_wkt(), tuple(self.transform)[:6], self.shape))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_bounds(
        cls,
        bounds: tuple[float, float, float, float],
        resolution: float | tuple[float, float],
        crs: Any,
    ) -> Grid:
        """A north-up grid anchored at the top-left corner of ``bounds``.

        Parameters
        ----------
        bounds
            ``(left, bottom, right, top)`` in CRS units.
        resolution
            Cell size, one number or ``(xres, yres)``, positive.
        crs
            The grid's CRS.

        Notes
        -----
        When the extent is not a whole number of cells, the grid grows to the right and
        downwards to the next whole cell (a tolerance of 1e-6 cell absorbs float noise).
        """
        left, bottom, right, top = (float(v) for v in bounds)
        xres, yres = (resolution, resolution) if np.isscalar(resolution) else resolution
        xres, yres = float(xres), float(yres)
        if not (xres > 0 and yres > 0):
            raise InputError(f"grid resolution {resolution!r} must be positive")
        if not (right > left and top > bottom):
            raise InputError(f"grid bounds {bounds!r} must be (left, bottom, right, top)")
        nx = max(1, math.ceil((right - left) / xres - 1e-6))
        ny = max(1, math.ceil((top - bottom) / yres - 1e-6))
        return cls(crs, Affine(xres, 0.0, left, 0.0, -yres, top), (ny, nx))

    @classmethod
    def from_dataarray(cls, da: xr.DataArray | xr.Dataset) -> Grid:
        """The grid of a DataArray (or Dataset) with 1-D ``y``/``x`` coordinates and a CRS.

        The transform is rebuilt from the cell-centre coordinates; for a single row or
        column it falls back on the transform rioxarray stored with the CRS.
        """
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        crs = da.rio.crs
        if crs is None:
            raise MissingCRSError(
                "array has no CRS; set one with .rio.write_crs('EPSG:...') before using it as a grid"
            )
        xdim, ydim = da.rio.x_dim, da.rio.y_dim
        ny, nx = int(da.sizes[ydim]), int(da.sizes[xdim])
        if nx > 1 and ny > 1:
            x = np.asarray(da.coords[xdim].values, dtype="float64")
            y = np.asarray(da.coords[ydim].values, dtype="float64")
            xres = (x[-1] - x[0]) / (nx - 1)
            yres = (y[-1] - y[0]) / (ny - 1)
            transform = Affine(xres, 0.0, x[0] - xres / 2, 0.0, yres, y[0] - yres / 2)
        else:
            transform = da.rio.transform()
        return cls(pyproj.CRS.from_user_input(crs), transform, (ny, nx))

    # ------------------------------------------------------------------ geometry
    @property
    def is_geographic(self) -> bool:
        """True for a longitude/latitude grid."""
        return bool(self.crs.is_geographic)

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def resolution(self) -> tuple[float, float]:
        """``(xres, yres)``, positive, in CRS units."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` (rasterio order)."""
        ny, nx = self.shape
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (nx, ny)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """1-D cell-centre coordinates ``(y, x)``, in array order."""
        t = self.transform
        ny, nx = self.shape
        x = t.c + t.a * (np.arange(nx) + 0.5)
        y = t.f + t.e * (np.arange(ny) + 0.5)
        return y, x

    def xy(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """World ``(x, y)`` of the centres of cells ``(rows, cols)``."""
        t = self.transform
        r = np.asarray(rows, dtype="float64")
        c = np.asarray(cols, dtype="float64")
        return t.c + t.a * (c + 0.5), t.f + t.e * (r + 0.5)

    # ------------------------------------------------------------------ distances
    @property
    def working_crs(self) -> pyproj.CRS:
        """CRS in which distances between points of this grid are measured (metres).

        The grid's own CRS when it is projected. For a longitude/latitude grid: a
        Lambert azimuthal equal-area plane centred on the middle of the grid's extent,
        on the grid's own geodetic datum. Its scale along and across the radius from the
        centre is ``1/k`` and ``k``, ``k = 1/cos(c/2)`` at angular distance ``c`` from the
        centre, so a distance is within 0.4 % of the ellipsoidal one up to 1000 km from
        the centre and within 1.5 % up to 2000 km. An extent 180° of longitude wide or
        wider is centred on the nearer pole (8 % at 45° from the pole). Variograms, kriging neighbourhoods,
        kNNDM folds, the geographic part of the area of applicability and the model's
        ``x``, ``y`` use these coordinates; the maps stay on the grid.
        """
        if not self.is_geographic:
            return self.crs
        return _working_crs(self.crs.to_wkt(), *self._centre_lonlat())

    def _centre_lonlat(self) -> tuple[float, float]:
        left, bottom, right, top = self.bounds
        k = _angular_factor(self.crs)
        if abs(right - left) * k >= 180.0:  # circumpolar: the plane is centred on the pole
            return 0.0, 90.0 if bottom + top > 0 else -90.0
        return round((left + right) / 2 * k, 9), round((bottom + top) / 2 * k, 9)

    def to_working(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Grid-CRS coordinates ``(x, y)`` in :attr:`working_crs` (metres).

        On a projected grid the coordinates are returned unchanged.
        """
        if not self.is_geographic:
            return x, y
        to = pyproj.Transformer.from_crs(self.crs, self.working_crs, always_xy=True)
        wx, wy = to.transform(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
        return np.asarray(wx, dtype="float64"), np.asarray(wy, dtype="float64")

    def from_working(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`working_crs` coordinates ``(x, y)`` back in the grid's CRS (the inverse
        of :meth:`to_working`; unchanged on a projected grid)."""
        if not self.is_geographic:
            return np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
        to = pyproj.Transformer.from_crs(self.working_crs, self.crs, always_xy=True)
        gx, gy = to.transform(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"))
        return np.asarray(gx, dtype="float64"), np.asarray(gy, dtype="float64")

    def working_xy(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Centres of cells ``(rows, cols)`` in :attr:`working_crs` (metres)."""
        return self.to_working(*self.xy(rows, cols))

    def cell_spacing_m(self) -> tuple[float, float]:
        """Cell spacing ``(dy, dx)`` in metres.

        Projected grid: the resolution in the CRS's linear unit times its metres per unit.
        Geographic grid: the spacing at the centre latitude ``lat0`` on a sphere of the
        authalic radius ``R`` of the ellipsoid, ``dy = R dlat``, ``dx = R cos(lat0) dlon``;
        a cell at latitude ``lat`` is really ``cos(lat) / cos(lat0)`` times as wide.
        """
        xres, yres = self.resolution
        if not self.is_geographic:
            u = _linear_factor(self.crs)
            return abs(yres) * u, abs(xres) * u
        a, e2 = _ellipsoid(self.crs)
        r = authalic_radius(a, e2)
        k = np.radians(_angular_factor(self.crs))
        lat0 = np.radians(sum(self.latitude_span()) / 2)
        return float(r * abs(yres) * k), float(r * np.cos(lat0) * abs(xres) * k)

    def latitude_span(self) -> tuple[float, float]:
        """Smallest and largest latitude (degrees) of a geographic grid's extent."""
        _, bottom, _, top = self.bounds
        k = _angular_factor(self.crs)
        return min(bottom, top) * k, max(bottom, top) * k

    def rowcol(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Integer ``(rows, cols)`` of the cells that contain world points ``(x, y)``.

        Indices are *not* clipped: a point outside the grid gets an index below 0 or at
        or above the shape (non-finite coordinates give -1); use :meth:`contains` to test.
        On a longitude/latitude grid, longitudes are first wrapped by ±360° into
        ``[west, west + 360)``: -175 lies on a grid spanning 170..190, and 200 on one
        spanning -180..180 (a point off such a grid then gets a column at or above the
        width). A point on a cell edge belongs to the cell with the larger pixel index;
        within 1e-9 of a cell a point counts as on the edge, so that an edge computed in
        floating point (0.3 on a 0.1° grid) is one.
        """
        t = self.transform
        xa = np.asarray(x, dtype="float64")
        ya = np.asarray(y, dtype="float64")
        if self.is_geographic:
            xa = self._wrap_longitudes(xa)
        with np.errstate(invalid="ignore"):
            cf = _snapped_floor((xa - t.c) / t.a)
            rf = _snapped_floor((ya - t.f) / t.e)
        bad = ~(np.isfinite(cf) & np.isfinite(rf))
        cf = np.where(bad, -1, np.clip(cf, -(2**62), 2**62))
        rf = np.where(bad, -1, np.clip(rf, -(2**62), 2**62))
        return rf.astype("int64"), cf.astype("int64")

    def _wrap_longitudes(self, x: np.ndarray) -> np.ndarray:
        # Longitudes outside [west, west + 360°) moved by whole turns into it; the others
        # are kept bit for bit.
        turn = 360.0 / _angular_factor(self.crs)
        west = self.bounds[0]
        with np.errstate(invalid="ignore"):
            off = (x < west) | (x >= west + turn)
            return np.where(off, west + np.mod(x - west, turn), x)

    def contains(self, rows: Any, cols: Any) -> np.ndarray:
        """Boolean mask of indices that fall inside the grid."""
        ny, nx = self.shape
        r = np.asarray(rows)
        c = np.asarray(cols)
        return (r >= 0) & (r < ny) & (c >= 0) & (c < nx)

    def window(self, row_slice: slice, col_slice: slice) -> Grid:
        """The sub-grid ``array[row_slice, col_slice]`` (unit-step slices inside the grid)."""
        ny, nx = self.shape
        r0, r1, _ = row_slice.indices(ny)
        c0, c1, _ = col_slice.indices(nx)
        if r1 <= r0 or c1 <= c0:
            raise ValueError(f"empty window {row_slice}, {col_slice} of grid shape {self.shape}")
        return Grid(self.crs, self.transform @ Affine.translation(c0, r0), (r1 - r0, c1 - c0))

    # ------------------------------------------------------------------ tiling
    def chunk_sizes(self, chunks: int | tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask-style chunk sizes ``((rows...), (cols...))`` for square or ``(cy, cx)`` chunks."""
        cy, cx = (chunks, chunks) if isinstance(chunks, int | np.integer) else chunks
        cy, cx = int(cy), int(cx)
        if cy < 1 or cx < 1:
            raise ValueError(f"chunks {chunks!r} must be positive")
        ny, nx = self.shape

        def split(n: int, c: int) -> tuple[int, ...]:
            return tuple(min(c, n - i) for i in range(0, n, c))

        return split(ny, cy), split(nx, cx)

    def chunk_cover(self, sample: np.ndarray, factor: float, chunks: int, at: float = 0.0) -> float:
        """Share of the grid's cells in chunks of ``chunks`` x ``chunks`` cells that hold a
        ``True`` of ``sample``, a decimated sample of the grid.

        Sampled cell ``(r, c)`` stands for ``factor`` x ``factor`` grid cells from
        ``(r * factor, c * factor)``; it counts in the chunk that holds grid cell
        ``((r + at) * factor, (c + at) * factor)``: its first cell (``at=0``) or its centre
        (``at=0.5``).
        """
        rows, cols = self.chunk_sizes(chunks)
        r, c = np.nonzero(sample)
        i = np.minimum(((r + at) * factor // chunks).astype(int), len(rows) - 1)
        j = np.minimum(((c + at) * factor // chunks).astype(int), len(cols) - 1)
        hit = np.zeros((len(rows), len(cols)), dtype=bool)
        hit[i, j] = True
        ny, nx = self.shape
        return float((np.outer(rows, cols) * hit).sum() / (ny * nx))

    def tiles(self, chunks: int | tuple[int, int]) -> list[Tile]:
        """Split the grid into chunks, row-major; each :class:`Tile` carries its sub-grid."""
        rows, cols = self.chunk_sizes(chunks)
        out: list[Tile] = []
        r0 = 0
        for h in rows:
            c0 = 0
            for w in cols:
                rs, cs = slice(r0, r0 + h), slice(c0, c0 + w)
                out.append(Tile(rs, cs, self.window(rs, cs)))
                c0 += w
            r0 += h
        return out

    # ------------------------------------------------------------------ xarray
    def wrap(
        self, array: Any, name: str | None = None, attrs: dict[str, Any] | None = None
    ) -> xr.DataArray:
        """Wrap a ``(ny, nx)`` NumPy or Dask array as a DataArray on this grid (CRS written).

        Leading dimensions, if any, are named ``dim_0, dim_1, ...``.
        """
        import xarray as xr

        if tuple(array.shape[-2:]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not end in grid shape {self.shape}")
        y, x = self.coords()
        dims = (*tuple(f"dim_{i}" for i in range(array.ndim - 2)), "y", "x")
        da = xr.DataArray(array, dims=dims, coords={"y": y, "x": x}, name=name, attrs=attrs or {})
        return self.attach(da)

    def attach(self, obj: Any) -> Any:
        """Write this grid's CRS and transform onto a DataArray/Dataset that lies on it."""
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        obj = obj.rio.write_crs(self.crs.to_wkt())
        return obj.rio.write_transform(self.transform)

    # ------------------------------------------------------------------ areas
    def cell_area(self, chunks: int | tuple[int, int] | None = None) -> Any:
        """Area of every cell on the ellipsoid of the CRS, m², shape ``(ny, nx)``, float64.

        * geographic grid: closed form of the area of an ellipsoidal quadrangle bounded
          by two parallels and two meridians (authalic latitude, :func:`authalic_q`),
          exact to rounding;
        * equal-area projection (recognised by :func:`is_equal_area`): ``|xres * yres|``
          times the square of the linear unit, every cell the same;
        * any other projection: each cell's outline is mapped to (longitude,
          ``q(latitude)``) space, where the ellipsoid's area element is
          ``a²/2 dλ dq``, and integrated along the edges (8 and 16 sub-samples per edge,
          Richardson-extrapolated). Relative error below 1e-9 for cells up to ~100 km
          on conformal projections (checked against :class:`pyproj.Geod` polygons in the
          tests). Cells whose corners cannot be projected get NaN.

        Parameters
        ----------
        chunks
            ``None`` for a NumPy array; an int or ``(cy, cx)`` for a lazy Dask array chunked
            like :meth:`tiles`.
        """
        if chunks is None:
            return _cell_area_numpy(self)
        import dask.array as da
        from dask.base import tokenize

        rows, cols = self.chunk_sizes(chunks)
        grid = self

        def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
            (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
            return _cell_area_numpy(grid.window(slice(r0, r1), slice(c0, c1)))

        return da.map_blocks(
            block,
            chunks=(rows, cols),
            dtype="float64",
            meta=np.empty((0, 0), dtype="float64"),
            name=f"cell-area-{tokenize(grid, rows, cols)}",
        )


def _snapped_floor(f: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    # floor of fractional pixel indices, those within tol of an integer taken as it: a
    # point on a cell edge (up to rounding) goes to the larger index.
    n = np.round(f)
    return np.floor(np.where(np.abs(f - n) <= tol, n, f))


# ---------------------------------------------------------------------- area kernels
@functools.lru_cache(maxsize=32)
def _working_crs(wkt: str, lon0: float, lat0: float) -> pyproj.CRS:
    # Lambert azimuthal equal-area centred on (lon0, lat0) on the grid's geodetic datum.
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    geodetic = pyproj.CRS.from_wkt(wkt).geodetic_crs
    conversion = LambertAzimuthalEqualAreaConversion(
        latitude_natural_origin=lat0, longitude_natural_origin=lon0
    )
    return ProjectedCRS(
        conversion=conversion,
        geodetic_crs=geodetic,
        name=f"socmap working plane: LAEA at {lat0:g}N {lon0:g}E",
    )


def authalic_radius(a: float, e2: float) -> float:
    """Radius (m) of the sphere with the ellipsoid's surface area."""
    if e2 <= 0:
        return a
    e = math.sqrt(e2)
    return a * math.sqrt(0.5 * (1 + (1 - e2) / e * math.atanh(e)))


def _ellipsoid(crs: pyproj.CRS) -> tuple[float, float]:
    ell = crs.ellipsoid
    if ell is None:
        raise InputError(f"CRS {crs.name!r} has no ellipsoid; cell areas cannot be computed")
    a = float(ell.semi_major_metre)
    b = float(ell.semi_minor_metre)
    e2 = max(0.0, 1.0 - (b / a) ** 2)
    return a, e2


def authalic_q(phi: Any, e2: float) -> np.ndarray:
    """The function ``q(φ)`` of the authalic latitude (Snyder 1987, eq. 3-12).

    ``q(φ) = (1 - e²) [ sin φ / (1 - e² sin² φ) + atanh(e sin φ) / e ]``; the area of the
    ellipsoid between the equator and latitude ``φ`` over ``Δλ`` radians of longitude is
    ``a² Δλ q(φ) / 2``. On a sphere (``e = 0``) ``q = 2 sin φ``.

    Parameters
    ----------
    phi
        Geodetic latitude, radians.
    e2
        First eccentricity squared.
    """
    s = np.sin(np.asarray(phi, dtype="float64"))
    if e2 == 0.0:
        return 2.0 * s
    e = math.sqrt(e2)
    return (1.0 - e2) * (s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e)


def ellipsoid_band_area(lat1_deg: Any, lat2_deg: Any, dlon_deg: Any, a: float, e2: float) -> Any:
    """Area (m²) of the quadrangle between two parallels and two meridians ``dlon`` apart."""
    p1 = np.radians(np.clip(lat1_deg, -90.0, 90.0))
    p2 = np.radians(np.clip(lat2_deg, -90.0, 90.0))
    return (
        0.5 * a * a * np.radians(np.abs(dlon_deg)) * np.abs(authalic_q(p2, e2) - authalic_q(p1, e2))
    )


def _angular_factor(crs: pyproj.CRS) -> float:
    # Degrees per axis unit of a geographic CRS (grads and radians exist in the wild).
    info = crs.axis_info[0] if crs.axis_info else None
    if info is None or not info.unit_conversion_factor:
        return 1.0
    return float(np.degrees(info.unit_conversion_factor))


def _linear_factor(crs: pyproj.CRS) -> float:
    info = crs.axis_info[0] if crs.axis_info else None
    if info is None or not info.unit_conversion_factor:
        return 1.0
    return float(info.unit_conversion_factor)


def _cell_area_numpy(grid: Grid) -> np.ndarray:
    ny, nx = grid.shape
    t = grid.transform
    if grid.is_geographic:
        a, e2 = _ellipsoid(grid.crs)
        k = _angular_factor(grid.crs)
        lat_edges = (t.f + t.e * np.arange(ny + 1)) * k
        row_area = ellipsoid_band_area(lat_edges[:-1], lat_edges[1:], t.a * k, a, e2)
        return np.broadcast_to(row_area[:, None], (ny, nx)).astype("float64", copy=True)
    kind = equal_area_kind(grid.crs, grid.bounds)
    if kind == "ellipsoid":
        u = _linear_factor(grid.crs)
        return np.full((ny, nx), abs(t.a * t.e) * u * u, dtype="float64")
    if kind == "sphere":
        return _sphere_cell_area(grid)
    area = _projected_cell_area(grid)
    if np.isnan(area).any():
        _rim_cells(grid, area)
    return area


def _centred_on_globe(
    crs: pyproj.CRS, x: Any, y: Any, tol_x: float, tol_y: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lon, lat, on)`` of projected points: ``on`` where the point maps to the globe and
    back to itself within ``(tol_x, tol_y)`` (off a world map's rim, and off an interrupted
    map's gaps, where PROJ's inverse still answers but the point maps back elsewhere)."""
    inv = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    fwd = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    lon, lat = (np.asarray(v, dtype="float64") for v in inv.transform(x, y, errcheck=False))
    bx, by = (np.asarray(v, dtype="float64") for v in fwd.transform(lon, lat, errcheck=False))
    on = (
        np.isfinite(lon)
        & np.isfinite(lat)
        & (np.abs(bx - np.asarray(x)) <= tol_x)
        & (np.abs(by - np.asarray(y)) <= tol_y)
    )
    return lon, lat, on


def _sphere_cell_area(grid: Grid) -> np.ndarray:
    """Cell areas on the ellipsoid of a map equal-area on PROJ's sphere of radius ``a``
    (Mollweide, Eckert IV/VI, Goode Homolosine: pseudocylindrical, latitude a function of
    ``y``): a row's cells cover ``|xres| ∫ g(φ(y)) dy`` of the ellipsoid,
    ``g = (1 - e²)/(1 - e² sin² φ)²`` the ellipsoid's area element over the sphere's,
    integrated by 3-point Gauss-Legendre along the row's height (``φ(y)`` on the central
    meridian). A cell whose centre is off the globe (the rim, the interruptions, where
    PROJ's inverse still answers but the point maps back elsewhere) is no land: NaN, no
    area in any zone (:mod:`mapping.zonal`), as GDAL, warping by cell centres, gives it no
    value."""
    ny, nx = grid.shape
    t = grid.transform
    u = _linear_factor(grid.crs)
    _, e2 = _ellipsoid(grid.crs)
    tol = (1e-3 * abs(t.a), 1e-3 * abs(t.e))
    xx, yy = np.meshgrid(t.c + t.a * (np.arange(nx) + 0.5), t.f + t.e * (np.arange(ny) + 0.5))
    _, _, on = _centred_on_globe(grid.crs, xx, yy, *tol)
    # Each row's parallels are read on a meridian that reaches them: on the map's own grid
    # of candidates (its central meridian first, then every 30°, as an interrupted map's
    # lobes near a pole need), never on the chunk's cells, so no chunk changes a row.
    fwd = pyproj.Transformer.from_crs(grid.crs.geodetic_crs, grid.crs, always_xy=True)
    lon0 = _central_meridian(grid.crs)
    cand, _ = fwd.transform(lon0 + 30.0 * np.array([0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5, -6]),
                            np.zeros(12))  # fmt: skip
    nodes, weights = np.polynomial.legendre.leggauss(3)
    y = (t.f + t.e * (np.arange(ny)[:, None] + 0.5 + 0.5 * nodes[None, :])).ravel()  # (ny * 3,)
    lat = np.full(y.shape, np.nan)
    for xc in np.asarray(cand, dtype="float64"):
        todo = np.flatnonzero(np.isnan(lat))
        if not todo.size or not np.isfinite(xc):
            continue
        _, la, ok = _centred_on_globe(grid.crs, np.full(todo.size, xc), y[todo], *tol)
        lat[todo[ok]] = la[ok]
    with np.errstate(invalid="ignore"):
        g = (1.0 - e2) / (1.0 - e2 * np.sin(np.radians(lat.reshape(ny, 3))) ** 2) ** 2
    # term by term, not a matrix product: a cell's value must not depend on its chunk's rows
    row = (
        abs(t.a * t.e)
        * u
        * u
        * (g[:, 0] * weights[0] + g[:, 1] * weights[1] + g[:, 2] * weights[2])
        / 2.0
    )
    return np.where(on, row[:, None], np.nan)


def _central_meridian(crs: pyproj.CRS) -> float:
    """The projection's central meridian (``lon_0``; 0 when it has none), in degrees."""
    op = crs.coordinate_operation
    for p in getattr(op, "params", None) or []:
        if "longitude" in p.name.lower() and (
            "origin" in p.name.lower() or "central" in p.name.lower()
        ):
            return float(p.value)
    return 0.0


def _rim_cells(grid: Grid, area: np.ndarray) -> None:
    """Cells whose outline leaves the globe but whose centre is on it (a world map's rim,
    where GDAL, warping by cell centres, gives them a value) get the cell's map area over
    PROJ's areal scale at the centre, in place; cells centred off the globe stay NaN."""
    t = grid.transform
    rows, cols = np.nonzero(np.isnan(area))
    x = t.c + t.a * (cols + 0.5)
    y = t.f + t.e * (rows + 0.5)
    lon, lat, on = _centred_on_globe(grid.crs, x, y, 1e-3 * abs(t.a), 1e-3 * abs(t.e))
    if not on.any():
        return
    factors = pyproj.Proj(grid.crs).get_factors(lon[on], lat[on], errcheck=False)
    scale = np.asarray(factors.areal_scale, dtype="float64")
    u = _linear_factor(grid.crs)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(scale > 0, abs(t.a * t.e) * u * u / scale, np.nan)
    area[rows[on], cols[on]] = value


def _projected_cell_area(grid: Grid, tile: int = 256, rtol: float = 1e-9) -> np.ndarray:
    """Cell areas on any projection, from each cell's outline in an equal-area plane.

    Every (internal) tile of at most ``tile x tile`` cells is mapped to a Lambert
    azimuthal equal-area plane centred on the tile, on the grid's own geodetic datum.
    That plane preserves area exactly and is smooth everywhere but at the antipode, so a
    cell's area is the planar area of its mapped outline, ``∮ x dy``, summed edge by edge
    (each grid line is sampled once and shared by the cells on both sides). Edges are
    sampled with ``k = 1, 2, 4, ...`` sub-segments and successive trapezoid sums are
    Richardson-extrapolated. The ``k = 1, 2`` estimate is accepted when the next level
    changes it by less than ``rtol`` on three bands of cells (top, middle, bottom rows of
    the tile); otherwise ``k`` doubles over the whole tile until two extrapolations agree
    (or ``k`` reaches 64). Conformal projections pass at once (about six transformed
    points per cell); strongly distorted ones get more.
    """
    ny, nx = grid.shape
    out = np.empty((ny, nx), dtype="float64")
    for r0 in range(0, ny, tile):
        for c0 in range(0, nx, tile):
            sub = grid.window(slice(r0, r0 + tile), slice(c0, c0 + tile))
            to_plane = _equal_area_plane(sub)
            if to_plane is None:
                out[r0 : r0 + tile, c0 : c0 + tile] = np.nan
                continue
            out[r0 : r0 + tile, c0 : c0 + tile] = _tile_areas(sub, to_plane, rtol)
    return out


def _rel_change(new: np.ndarray, old: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(new - old) / np.abs(new)
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else 0.0


def _tile_areas(sub: Grid, to_plane: pyproj.Transformer, rtol: float) -> np.ndarray:
    a1 = _outline_areas(sub, to_plane, 1)
    a2 = _outline_areas(sub, to_plane, 2)
    extrap = (4.0 * a2 - a1) / 3.0
    ny = sub.shape[0]
    bands = sorted(
        {(0, min(2, ny)), (max(0, ny // 2 - 1), min(ny, ny // 2 + 1)), (max(0, ny - 2), ny)}
    )
    ok = True
    for b0, b1 in bands:
        band = sub.window(slice(b0, b1), slice(None))
        a4 = _outline_areas(band, to_plane, 4)
        if _rel_change((4.0 * a4 - a2[b0:b1]) / 3.0, extrap[b0:b1]) >= rtol:
            ok = False
            break
    if ok:
        return extrap
    prev_sum, prev_extrap, k = a2, extrap, 2
    while True:
        k *= 2
        cur = _outline_areas(sub, to_plane, k)
        extrap = (4.0 * cur - prev_sum) / 3.0
        if _rel_change(extrap, prev_extrap) < rtol or k >= 64:
            return extrap
        prev_sum, prev_extrap = cur, extrap


def _equal_area_plane(grid: Grid) -> pyproj.Transformer | None:
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

    geo = grid.crs.geodetic_crs
    if geo is None:
        raise InputError(
            f"CRS {grid.crs.name!r} has no geodetic CRS; cell areas cannot be computed"
        )
    ny, nx = grid.shape
    # Centre of the tile; fall back on its corners, then on a lattice over it, when the
    # centre cannot be projected (a tile on a world map's rim, partly off the globe).
    lattice = [(c * nx / 8, r * ny / 8) for r in range(9) for c in range(9)]
    for col, row in ((nx / 2, ny / 2), (0, 0), (nx, 0), (0, ny), (nx, ny), *lattice):
        cx, cy = grid.transform @ (col, row)
        lon, lat = pyproj.Transformer.from_crs(grid.crs, geo, always_xy=True).transform(
            cx, cy, errcheck=False
        )
        if np.isfinite(lon) and np.isfinite(lat):
            break
    else:
        return None
    deg = _angular_factor(geo)
    plane = ProjectedCRS(
        conversion=LambertAzimuthalEqualAreaConversion(
            latitude_natural_origin=float(lat) * deg, longitude_natural_origin=float(lon) * deg
        ),
        geodetic_crs=geo,
    )
    return pyproj.Transformer.from_crs(grid.crs, plane, always_xy=True)


def _outline_areas(grid: Grid, to_plane: pyproj.Transformer, k: int) -> np.ndarray:
    ny, nx = grid.shape
    t = grid.transform

    s = np.arange(nx * k + 1) / k
    ph = np.broadcast_to(s, (ny + 1, s.size))
    qh = np.broadcast_to(np.arange(ny + 1, dtype="float64")[:, None], ph.shape)
    s = np.arange(ny * k + 1) / k
    qv = np.broadcast_to(s, (nx + 1, s.size))
    pv = np.broadcast_to(np.arange(nx + 1, dtype="float64")[:, None], qv.shape)
    # One shared origin for both families of lines so their integrals add up; any point
    # will do (a constant shift adds nothing round a closed loop), so take a corner that
    # projects: the tile's first corner may not (off the disk of an orthographic CRS),
    # and a NaN origin would blank every cell of the tile
    pc = np.array([0.0, nx, 0.0, nx, nx / 2])
    pr = np.array([0.0, 0.0, ny, ny, ny / 2])
    cx, cy = to_plane.transform(
        t.c + t.a * pc + t.b * pr, t.f + t.d * pc + t.e * pr, errcheck=False
    )
    ok = np.isfinite(cx) & np.isfinite(cy)
    x0, y0 = (float(cx[ok][0]), float(cy[ok][0])) if ok.any() else (0.0, 0.0)

    def integrals(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        x, y = to_plane.transform(*(t @ (px, py)), errcheck=False)
        x = np.asarray(x) - x0
        y = np.asarray(y) - y0
        seg = 0.5 * (x[..., 1:] + x[..., :-1]) * np.diff(y, axis=-1)
        return seg.reshape(*seg.shape[:-1], seg.shape[-1] // k, k).sum(-1)

    ih = integrals(ph, qh)  # (ny + 1, nx): corner (i, j) -> (i, j + 1)
    iv = integrals(pv, qv).T  # (ny, nx + 1): corner (i, j) -> (i + 1, j)
    # Around cell (i, j): (i,j)->(i,j+1)->(i+1,j+1)->(i+1,j)->(i,j); Green: area = ∮ x dy.
    loop = ih[:-1, :] + iv[:, 1:] - ih[1:, :] - iv[:, :-1]
    return np.abs(loop)


# ---------------------------------------------------------------------- equal-area test
_EQUAL_AREA_METHODS = (
    "equal area",
    "equal earth",
    "mollweide",
    "sinusoidal",
    "eckert iv",
    "eckert vi",
    "goode homolosine",
    "interrupted goode homolosine",
)

_equal_area_cache: dict[str, str | None] = {}

#: A small square (m) whose geodesic area tells an equal-area projection of the ellipsoid
#: from one of the sphere of radius ``a`` that PROJ uses for spherical-only methods.
_PROBE_M = 100.0


def is_equal_area(crs: Any, bounds: tuple[float, float, float, float] | None = None) -> bool:
    """True when a projected CRS preserves area, so every cell of a grid has the same area.

    A CRS is recognised as equal-area when its projection method is one of the known
    equal-area methods (name contains "Equal Area", or is Equal Earth, Mollweide,
    Sinusoidal, Eckert IV/VI, Goode Homolosine), PROJ's areal scale factor
    (:meth:`pyproj.Proj.get_factors`) is 1 within 1e-6 at a 7x7 lattice of points over
    the CRS's area of use (``bounds`` is not used: a CRS is equal-area or not, whatever the
    window, so no chunk of a grid changes its areas) *and* a 100 m square at each of those
    points has the
    geodesic area of the ellipsoid it claims. The name alone is not trusted, and a
    projection that is not on the list is never assumed to be equal-area: its cell areas
    are computed. Mollweide, Eckert IV/VI and Goode Homolosine on an ellipsoid are equal
    area on PROJ's sphere of radius ``a`` only (0.67 % too large at the equator, 0.5 % too
    small at 70°): not equal-area here (:func:`equal_area_kind`).
    """
    return equal_area_kind(crs, bounds) == "ellipsoid"


def equal_area_kind(
    crs: Any, bounds: tuple[float, float, float, float] | None = None
) -> str | None:
    """``"ellipsoid"``: equal area on the CRS's ellipsoid (:func:`is_equal_area`);
    ``"sphere"``: equal area on the sphere of the ellipsoid's semi-major axis, as PROJ maps
    a spherical-only method on an ellipsoid (a cell of area ``A`` on the map then covers
    ``A (1 - e²) / (1 - e² sin² φ)²`` of the ellipsoid at latitude ``φ``); ``None``: not
    equal-area (or not recognised as such)."""
    crs = pyproj.CRS.from_user_input(crs)
    if not crs.is_projected:
        return None
    # A property of the CRS, decided once over its area of use: never per window, so the
    # chunks of a grid (a window on a world map's rim, a probe beside an interruption)
    # cannot change its cells' areas. ``bounds`` is kept for the callers' signature.
    key = crs.to_wkt()
    if key in _equal_area_cache:
        return _equal_area_cache[key]
    op = crs.coordinate_operation
    name = (op.method_name if op is not None else "").lower()
    result: str | None = None
    if any(m in name for m in _EQUAL_AREA_METHODS):
        lon, lat = _probe_points(crs)
        if _areal_scale_is_one(crs, lon, lat):
            result = _probe_kind(crs, lon, lat)
    if len(_equal_area_cache) > 4096:
        _equal_area_cache.clear()
    _equal_area_cache[key] = result
    return result


def _probe_points(crs: pyproj.CRS) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of a 7x7 lattice over the CRS's area of use."""
    aou = crs.area_of_use
    west, south, east, north = aou.bounds if aou is not None else (-180.0, -90.0, 180.0, 90.0)
    if east < west:  # area of use crossing the antimeridian
        east += 360.0
    # a margin inside the area of use: a probe square on a world map's rim would straddle it
    mx, my = 0.02 * (east - west), 0.02 * (north - south)
    west, east = west + mx, east - mx
    south, north = max(south + my, -85.0), min(north - my, 85.0)
    lon, lat = np.meshgrid(np.linspace(west, east, 7), np.linspace(south, north, 7))
    return ((lon + 180.0) % 360.0 - 180.0).ravel(), lat.ravel()


def _areal_scale_is_one(
    crs: pyproj.CRS, lon: np.ndarray, lat: np.ndarray, tol: float = 1e-6
) -> bool:
    if lon.size == 0:
        return False
    try:
        f = pyproj.Proj(crs).get_factors(lon, lat, errcheck=False)
    except pyproj.exceptions.ProjError:
        return False
    s = np.asarray(f.areal_scale)
    s = s[np.isfinite(s)]
    return bool(s.size > 0 and np.all(np.abs(s - 1.0) < tol))


def _probe_kind(crs: pyproj.CRS, lon: np.ndarray, lat: np.ndarray) -> str | None:
    """Which surface a 100 m square of the map at each point covers without distortion:
    the geodesic area of its outline (eight points, on the CRS's ellipsoid) against the
    square's area, and against that area times the sphere-to-ellipsoid factor."""
    a, e2 = _ellipsoid(crs)
    u = _linear_factor(crs)
    h = 0.5 * _PROBE_M / u
    fwd = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    geod = pyproj.Geod(a=a, es=e2)
    x, y = fwd.transform(lon, lat, errcheck=False)
    dx = np.array([-1, 0, 1, 1, 1, 0, -1, -1]) * h
    dy = np.array([-1, -1, -1, 0, 1, 1, 1, 0]) * h
    ratios, phis = [], []
    for xc, yc in zip(np.asarray(x), np.asarray(y), strict=True):
        if not (np.isfinite(xc) and np.isfinite(yc)):
            continue
        plon, plat, on = _centred_on_globe(crs, xc + dx, yc + dy, 1e-3 * h, 1e-3 * h)
        if not on.all():
            continue  # a square across an interruption or the rim: not a test of the area
        area, _ = geod.polygon_area_perimeter(plon, plat)
        ratios.append(abs(area) / _PROBE_M**2)
        phis.append(np.radians(np.mean(plat)))
    if not ratios:
        return None
    r = np.asarray(ratios)
    if np.all(np.abs(r - 1.0) < 1e-5):
        return "ellipsoid"
    sphere = (1.0 - e2) / (1.0 - e2 * np.sin(np.asarray(phis)) ** 2) ** 2
    if e2 > 0 and np.all(np.abs(r / sphere - 1.0) < 1e-5):
        return "sphere"
    return None


# ---------------------------------------------------------------------- xarray accessor
def _register_accessor() -> None:
    # ``stack.grid`` -> Grid.from_dataarray(stack), so "is this aligned?" reads
    # ``stack.grid == target``. xarray caches the result on the object.
    import warnings

    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re-import in a fresh interpreter re-registers
        xr.register_dataarray_accessor("grid")(Grid.from_dataarray)
        xr.register_dataset_accessor("grid")(Grid.from_dataarray)


_register_accessor()
