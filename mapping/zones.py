"""Zone layouts on a Grid: which cells (or fractions of cells) belong to which zone.

A zone layout is prepared once per grid and then summed over by :mod:`mapping.zonal`, once
for the mean map and once per Monte Carlo realization:

* :class:`ZoneLayout` -- zone codes, names and, per block of the grid, each cell's zone
  index (from a zone raster) or a :class:`ZoneCoverage` (from polygons);
* :func:`prepare_zones` -- a zone raster on the grid, or a coverage, into a layout;
* :func:`zone_coverage_from_polygons` -- exact cell fractions of zone polygons
  (``exactextract``), kept sparse: row runs of whole cells plus the edge cells;
* :func:`zone_coverage_from_raster` -- the same from a zone raster finer than the grid;
* :func:`rasterize_zones` -- polygons burnt into a code raster (centre of each cell);
* :func:`to_grid_crs` -- polygons in the grid's CRS; on a lon/lat grid, rings across ±180°
  or round a pole mended and copies 360° apart placed wherever they cover the grid;
* :func:`load_zone_layout` -- a zone file (raster or polygons) prepared on a grid.
"""

from __future__ import annotations

import itertools
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyproj

from mapping import io
from mapping.exceptions import (
    ConfigError,
    GridMismatchError,
    InputError,
    MappingError,
    MissingCRSError,
)
from mapping.grid import Grid, _angular_factor, _central_meridian, _ellipsoid, _linear_factor

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr


__all__ = [
    "DEFAULT_CHUNKS",
    "VECTOR_SUFFIXES",
    "Partial",
    "ZoneCoverage",
    "ZoneLayout",
    "check_zone_names",
    "load_zone_layout",
    "parse_zone_names",
    "prepare_zones",
    "rasterize_zones",
    "squeeze_band",
    "to_grid_crs",
    "zone_coverage_from_polygons",
    "zone_coverage_from_raster",
    "zone_resampling",
]

DEFAULT_CHUNKS = 1024

# (flat cell index within the block, zone index, coverage fraction)
Partial = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class ZoneCoverage:
    """Fractional cover of grid cells by zones (sparse), e.g. from polygons.

    Cells wholly inside one zone are stored as row runs ``(row, col_start, col_stop, zone)``;
    cells covered by a fraction of a zone (polygon edges), or by more than one zone, as
    ``(flat cell index, zone, fraction)`` triples sorted by cell. Memory grows with the
    zones' perimeter, not their area.

    Attributes
    ----------
    grid
        The grid the fractions refer to.
    codes
        Zone codes, int64, one per zone; zone *index* ``i`` is ``codes[i]``.
    names
        Zone name by code, where known.
    overlap_cells
        Number of cells whose fractions over all zones add up to more than 1 (overlapping
        polygons of different zones); such cells count in each zone.
    """

    grid: Grid
    codes: np.ndarray
    names: dict[int, str]
    run_row: np.ndarray
    run_col0: np.ndarray
    run_col1: np.ndarray
    run_zone: np.ndarray
    part_cell: np.ndarray
    part_zone: np.ndarray
    part_frac: np.ndarray
    overlap_cells: int = 0
    _token: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("socmap.ZoneCoverage", self._token)

    @property
    def n_zones(self) -> int:
        return len(self.codes)

    def block(self, rows: slice, cols: slice) -> tuple[np.ndarray, Partial]:
        """Zone index and partial cells of the block ``[rows, cols]`` (see :func:`mapping.zonal.zone_sums_block`)."""
        nx = self.grid.shape[1]
        r0, r1 = rows.start, rows.stop
        c0, c1 = cols.start, cols.stop
        ty, tx = r1 - r0, c1 - c0
        index = np.full((ty, tx), -1, dtype="int32")

        # Whole cells: clip the runs to the block and expand them to flat indices.
        sel = (
            (self.run_row >= r0) & (self.run_row < r1) & (self.run_col1 > c0) & (self.run_col0 < c1)
        )
        a = np.maximum(self.run_col0[sel], c0) - c0
        b = np.minimum(self.run_col1[sel], c1) - c0
        lengths = b - a
        starts = (self.run_row[sel] - r0) * tx + a
        offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - offsets)
        zone = np.repeat(self.run_zone[sel], lengths)
        extra_cell = np.empty(0, dtype="int64")
        extra_zone = np.empty(0, dtype="int32")
        if len(flat):
            _, first = np.unique(flat, return_index=True)
            index.ravel()[flat[first]] = zone[first]
            if len(first) < len(flat):  # a cell wholly inside two zones: the second is "partial"
                dup = np.ones(len(flat), dtype=bool)
                dup[first] = False
                extra_cell, extra_zone = flat[dup], zone[dup]

        # Partial cells: the sorted flat indices of rows r0..r1 form one contiguous range.
        lo, hi = np.searchsorted(self.part_cell, [r0 * nx, r1 * nx])
        cell = self.part_cell[lo:hi]
        prow, pcol = np.divmod(cell, nx)
        keep = (pcol >= c0) & (pcol < c1)
        p_cell = np.concatenate([(prow[keep] - r0) * tx + (pcol[keep] - c0), extra_cell])
        p_zone = np.concatenate([self.part_zone[lo:hi][keep], extra_zone]).astype("int64")
        p_frac = np.concatenate([self.part_frac[lo:hi][keep], np.ones(len(extra_cell))])
        return index, (p_cell.astype("int64"), p_zone, p_frac)

    def to_dense(self) -> np.ndarray:
        """Fractions as a dense ``(n_zones, ny, nx)`` float64 array (small grids only)."""
        ny, nx = self.grid.shape
        out = np.zeros((self.n_zones, ny * nx))
        index, (p_cell, p_zone, p_frac) = self.block(slice(0, ny), slice(0, nx))
        flat = index.ravel()
        inside = np.flatnonzero(flat >= 0)
        out[flat[inside], inside] = 1.0
        np.add.at(out, (p_zone, p_cell), p_frac)
        return out.reshape(self.n_zones, ny, nx)


@dataclass(frozen=True, eq=False)
class ZoneLayout:
    """Zones prepared for summation on one grid: codes, names and per-block membership.

    Built by :func:`prepare_zones`. ``source`` is either a lazy integer array of zone
    *indices* on the grid (``-1`` outside every zone; from a zone raster) or a
    :class:`ZoneCoverage` (from polygons).
    """

    grid: Grid
    codes: tuple[int, ...]
    names: tuple[str, ...]
    source: Any  # dask.array.Array of int32 indices | ZoneCoverage
    # blocks of a zone raster that hold a zone cell: (row edges, column edges, mask),
    # found by prepare_zones's one pass; None when unknown (every block may hold one)
    found: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def n_zones(self) -> int:
        return len(self.codes)

    def occupied(self, row_chunks: Sequence[int], col_chunks: Sequence[int]) -> np.ndarray:
        """Which chunks of ``(row_chunks, col_chunks)`` may hold a zone cell (bool array).

        Chunks outside every zone contribute nothing to a zone total, so the sums skip
        them: their maps are never read. Conservative: a chunk is ``True`` whenever it
        overlaps a block of the zone raster (or a run or partial cell of the coverage)
        that holds a zone cell.
        """
        rows = np.asarray(_offsets(row_chunks))
        cols = np.asarray(_offsets(col_chunks))
        shape = (len(rows) - 1, len(cols) - 1)
        if isinstance(self.source, ZoneCoverage):
            cov = self.source
            nx = self.grid.shape[1]
            out = np.zeros(shape, dtype=bool)
            # a run covers columns col0..col1-1 of its row: every chunk column in between
            i = np.searchsorted(rows, cov.run_row, side="right") - 1
            j0 = np.searchsorted(cols, cov.run_col0, side="right") - 1
            j1 = np.searchsorted(cols, cov.run_col1 - 1, side="right") - 1
            spans = np.unique(np.stack([i, j0, j1], axis=1), axis=0)  # one per row and columns
            for r, a, b in spans:
                out[r, a : b + 1] = True
            prow, pcol = np.divmod(cov.part_cell, nx)
            out[
                np.searchsorted(rows, prow, side="right") - 1,
                np.searchsorted(cols, pcol, side="right") - 1,
            ] = True
            return out
        if self.found is None:
            return np.ones(shape, dtype=bool)
        r_edges, c_edges, mask = self.found
        # chunk [a, b) overlaps the known blocks whose start < b and whose end > a
        r_lo = np.searchsorted(r_edges, rows[:-1], side="right") - 1
        r_hi = np.searchsorted(r_edges, rows[1:], side="left")
        c_lo = np.searchsorted(c_edges, cols[:-1], side="right") - 1
        c_hi = np.searchsorted(c_edges, cols[1:], side="left")
        cum = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype="int64")
        cum[1:, 1:] = mask.cumsum(0).cumsum(1)
        hits = (
            cum[r_hi[:, None], c_hi[None, :]]
            - cum[r_lo[:, None], c_hi[None, :]]
            - cum[r_hi[:, None], c_lo[None, :]]
            + cum[r_lo[:, None], c_lo[None, :]]
        )
        return hits > 0

    def zone_at(self, rows: Any, cols: Any) -> np.ndarray:
        """Zone index (``-1``: no zone, or off the grid) of the cells ``(rows, cols)``.

        A cell shared by zones (a polygon edge) is given to the zone that covers most of it.
        """
        r = np.asarray(rows, dtype="int64").ravel()
        c = np.asarray(cols, dtype="int64").ravel()
        ny, nx = self.grid.shape
        out = np.full(r.shape, -1, dtype="int64")
        inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        if not inside.any():
            return out
        ri, ci = r[inside], c[inside]
        if not isinstance(self.source, ZoneCoverage):
            out[inside] = np.asarray(self.source.vindex[ri, ci].compute(), dtype="int64")
            return out
        cov = self.source
        found = np.full(ri.shape, -1, dtype="int64")
        # whole cells: the run of the cell's row that starts at or before its column
        key = cov.run_row.astype("int64") * nx + cov.run_col0
        order = np.argsort(key, kind="stable")
        at = np.searchsorted(key[order], ri * nx + ci, side="right") - 1
        run = order[np.maximum(at, 0)]
        whole = (at >= 0) & (cov.run_row[run] == ri) & (cov.run_col1[run] > ci)
        found[whole] = cov.run_zone[run[whole]]
        # partial cells: the zone with the largest fraction of the cell
        cell = ri * nx + ci
        pick = np.lexsort((-cov.part_frac, cov.part_cell))  # by cell, largest share first
        first = np.searchsorted(cov.part_cell[pick], cell, side="left")
        hit = first < len(pick)
        first = np.minimum(first, max(len(pick) - 1, 0))
        if len(pick):
            hit &= cov.part_cell[pick][first] == cell
            part = hit & ~whole
            found[part] = cov.part_zone[pick][first[part]]
        out[inside] = found
        return out

    def blocks(self, row_chunks: Sequence[int], col_chunks: Sequence[int]) -> np.ndarray:
        """Delayed zone blocks (``index`` or ``(index, partial)``), one per chunk, as an object array."""
        import dask

        if isinstance(self.source, ZoneCoverage):
            # one graph key holding the coverage, shared by every block
            cov = dask.delayed(self.source, pure=True, traverse=False)
            rows, cols = _offsets(row_chunks), _offsets(col_chunks)
            out = np.empty((len(rows) - 1, len(cols) - 1), dtype=object)
            for i in range(len(rows) - 1):
                for j in range(len(cols) - 1):
                    out[i, j] = dask.delayed(_coverage_block, pure=True)(
                        cov, rows[i], rows[i + 1], cols[j], cols[j + 1]
                    )
            return out
        index = self.source.rechunk((tuple(row_chunks), tuple(col_chunks)))
        return index.to_delayed(optimize_graph=False)


def _coverage_block(cov: ZoneCoverage, r0: int, r1: int, c0: int, c1: int) -> tuple[Any, Any]:
    return cov.block(slice(r0, r1), slice(c0, c1))


def _offsets(chunks: Sequence[int]) -> list[int]:
    return [0, *np.cumsum(chunks).tolist()]


def _nodata_values(zones: xr.DataArray, extra: Sequence[float] = ()) -> list[float]:
    vals = [*extra]
    nodata = zones.attrs.get("_FillValue", zones.attrs.get("nodata"))
    try:
        rio_nodata = zones.rio.nodata
    except Exception:  # no rioxarray accessor data
        rio_nodata = None
    for v in (nodata, rio_nodata):
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            vals.append(v)
    return vals


def _valid_codes_block(block: np.ndarray, nodata: Sequence[float]) -> np.ndarray:
    b = np.asarray(block)
    valid = np.isfinite(b) if b.dtype.kind == "f" else np.ones(b.shape, dtype=bool)
    for v in nodata:
        valid &= b != v
    if b.dtype.kind == "f":
        bad = valid & (b != np.floor(np.where(valid, b, 0)))
        if bad.any():
            raise InputError(
                f"zone raster holds non-integer values (e.g. {b[bad][0]!r}); zones must be "
                "integer codes"
            )
    return np.unique(b[valid]).astype("int64")


def _index_block(block: np.ndarray, codes: np.ndarray, nodata: Sequence[float]) -> np.ndarray:
    b = np.asarray(block)
    if b.dtype.kind in "iu" and b.dtype.itemsize <= 2:
        # small integer codes: a lookup table over the whole dtype range
        info = np.iinfo(b.dtype)
        lut = np.full(int(info.max) - int(info.min) + 1, -1, dtype="int32")
        skip = {int(v) for v in nodata if np.isfinite(v) and float(v).is_integer()}
        for i, c in enumerate(codes.tolist()):
            if info.min <= c <= info.max and c not in skip:
                lut[c - int(info.min)] = i
        return lut[b.astype("int64") - int(info.min)] if info.min else lut[b]
    valid = np.isfinite(b) if b.dtype.kind == "f" else np.ones(b.shape, dtype=bool)
    for v in nodata:
        valid &= b != v
    ib = np.where(valid, b, 0).astype("int64")
    if len(codes) == 0:
        return np.full(b.shape, -1, dtype="int32")
    order = np.argsort(codes, kind="stable")  # codes are in table order, not sorted
    pos = np.searchsorted(codes[order], ib).clip(0, len(codes) - 1)
    hit = valid & (codes[order][pos] == ib)
    return np.where(hit, order[pos], -1).astype("int32")


def prepare_zones(
    zones: xr.DataArray | ZoneCoverage,
    grid: Grid,
    names: Mapping[int, str] | None = None,
    *,
    chunks: int | tuple[int, int] = DEFAULT_CHUNKS,
    zone_nodata: Sequence[int] = (),
) -> ZoneLayout:
    """Prepare zones on ``grid`` for :func:`mapping.zonal.zone_sums`.

    Parameters
    ----------
    zones
        Either integer zone codes on ``grid`` (a DataArray, lazy or not; the raster's nodata,
        NaN and the codes in ``zone_nodata`` mean "no zone"), or a :class:`ZoneCoverage`.
        A zone raster costs one pass over its chunks here, to find the codes present.
    grid
        The density grid.
    names
        Zone name by code. Named codes come first, in this order, and are kept even where
        they cover nothing (zero area); other codes follow in ascending order, named by
        their code.
    chunks
        Chunking of an in-memory zone raster.
    zone_nodata
        Further codes that mean "no zone" (e.g. a background 0 the file does not declare).

    Returns
    -------
    ZoneLayout

    Raises
    ------
    GridMismatchError
        The zones are not on ``grid``.
    InputError
        No zone covers any cell of the grid.
    """
    import dask
    import dask.array as da

    names = dict(names or {})
    if isinstance(zones, ZoneCoverage):
        if zones.grid != grid:
            raise GridMismatchError(f"zone coverage is on {zones.grid}, density is on {grid}")
        present = [int(c) for c in zones.codes]
        merged = {**zones.names, **names}
        codes, labels = _order_codes(present, merged, names)
        # Zone indices in the coverage refer to ``zones.codes``; remap when the order differs.
        cov = zones if list(codes) == present else _reorder_coverage(zones, codes)
        return ZoneLayout(grid, codes, labels, cov)

    zgrid = Grid.from_dataarray(zones)
    if zgrid != grid:
        raise GridMismatchError(f"zones are on {zgrid}, density is on {grid}; align them first")
    data = squeeze_band(zones, "zones").data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=chunks)
    nodata = _nodata_values(zones, zone_nodata)
    # One pass over the zone raster: the codes present, block by block.
    blocks = data.to_delayed(optimize_graph=False).ravel()
    found = dask.compute(*[dask.delayed(_valid_codes_block)(b, nodata) for b in blocks])
    present = np.unique(np.concatenate(found)).tolist()
    if not present:
        raise InputError("no zone code falls on the grid")
    codes, labels = _order_codes(present, names, names)
    index = da.map_blocks(
        _index_block, data, np.asarray(codes, dtype="int64"), nodata, dtype="int32"
    )
    mask = np.array([len(f) > 0 for f in found]).reshape(data.numblocks)
    edges = (np.asarray(_offsets(data.chunks[0])), np.asarray(_offsets(data.chunks[1])))
    return ZoneLayout(grid, codes, labels, index, found=(*edges, mask))


def _order_codes(
    present: Sequence[int], names: Mapping[int, str], order: Mapping[int, str]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    named = [int(c) for c in order]
    rest = sorted(set(int(c) for c in present) - set(named))
    codes = tuple(named + rest)
    labels = tuple(str(names.get(c, c)) for c in codes)
    return codes, labels


def _reorder_coverage(cov: ZoneCoverage, codes: Sequence[int]) -> ZoneCoverage:
    pos = {c: i for i, c in enumerate(codes)}
    remap = np.array([pos[int(c)] for c in cov.codes], dtype="int32")
    return ZoneCoverage(
        grid=cov.grid,
        codes=np.asarray(codes, dtype="int64"),
        names=cov.names,
        run_row=cov.run_row,
        run_col0=cov.run_col0,
        run_col1=cov.run_col1,
        run_zone=remap[cov.run_zone] if len(cov.run_zone) else cov.run_zone,
        part_cell=cov.part_cell,
        part_zone=remap[cov.part_zone] if len(cov.part_zone) else cov.part_zone,
        part_frac=cov.part_frac,
        overlap_cells=cov.overlap_cells,
    )


def squeeze_band(arr: xr.DataArray, what: str) -> xr.DataArray:
    for dim in list(arr.dims[:-2]):
        if arr.sizes[dim] != 1:
            raise InputError(f"{what}: expected one band, got {arr.sizes[dim]} along {dim!r}")
        arr = arr.isel({dim: 0}, drop=True)
    return arr


# =============================================================================== polygons
def _zone_codes_from_field(
    values: pd.Series, field_name: str, names: Mapping[int, str] | None
) -> tuple[pd.Series, dict[int, str]]:
    """Integer code per feature and names by code, from a code or a name attribute."""
    names = dict(names or {})
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        v = values.astype("float64")
        if not np.all(v == np.floor(v)):
            raise InputError(f"zone field {field_name!r} holds non-integer codes")
        return v.astype("int64"), names
    text = values.astype(str).str.strip()
    number = pd.to_numeric(text, errors="coerce")
    if number.notna().all() and np.all(number == np.floor(number)):
        return number.astype("int64"), names  # codes stored as text ("1", "2.0")
    if names:
        by_name = {str(n).casefold(): int(c) for c, n in names.items()}
        unknown = sorted(set(t for t in text if t.casefold() not in by_name))
        if unknown:
            raise InputError(
                f"zone field {field_name!r}: value {unknown[0]!r} is not among the zone names "
                f"({', '.join(map(str, names.values()))})"
            )
        return text.map(lambda t: by_name[t.casefold()]).astype("int64"), names
    # names without codes: numbered 1, 2, ... in order of first appearance (the file's
    # order: continuous, discontinuous, ... rather than the alphabet's)
    labels = list(dict.fromkeys(text))
    code_of = {t: i + 1 for i, t in enumerate(labels)}
    return text.map(code_of).astype("int64"), {i + 1: t for i, t in enumerate(labels)}


def _affine(geoms: Any, inv: Any) -> Any:
    import shapely

    coeffs = [inv.a, inv.b, -inv.d, -inv.e, inv.c, -inv.f]
    return np.array([shapely.affinity.affine_transform(g, coeffs) for g in geoms], dtype=object)


def to_grid_crs(gdf: gpd.GeoDataFrame, grid: Grid) -> gpd.GeoDataFrame:
    """Reproject to the grid's CRS, densifying edges first so they bend as they should.

    On a longitude/latitude grid the polygons are also made to land on every part of the
    grid they cover:

    * a ring of a projected layer that goes round a pole (a permafrost zone in a polar
      CRS) becomes the cap it encloses, closed along the pole's latitude;
    * a ring of a projected layer that crosses the antimeridian stays in one piece, its
      longitudes running past ±180°;
    * a polygon is copied by whole turns (±360°) wherever that puts it over the grid:
      ``box(-180, 0, -170, 2)`` on a grid spanning 170..190, or the part of
      ``box(170, 0, 190, 2)`` past 180° on a grid spanning -180..180.

    Geometries that need none of this come out exactly as a plain reprojection gives them.
    """
    import geopandas as gpd
    from pyproj import CRS

    src = CRS.from_user_input(gdf.crs)
    if not src.equals(grid.crs):
        if src.is_geographic and not grid.is_geographic:
            # PROJ folds a longitude past ±180° back by a turn, so a ring from 170° to 190°
            # would come out round the rest of the globe: cut it at the antimeridian first
            geoms = _into_one_turn(gdf.geometry.to_numpy(), src, grid.crs)
            if geoms is not None:
                gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
        step = _segment_length(src, grid)
        if np.isfinite(step) and step > 0:
            gdf = gdf.set_geometry(gdf.geometry.segmentize(step))
        out = gdf.to_crs(grid.crs)
        if grid.is_geographic and not src.is_geographic:
            geoms = _unwrap_lonlat(gdf.geometry.to_numpy(), out.geometry.to_numpy(), src, grid)
            if geoms is not None:
                out = out.set_geometry(gpd.GeoSeries(geoms, index=out.index, crs=out.crs))
        gdf = out
    if grid.is_geographic:
        geoms = _turn_copies(gdf.geometry.to_numpy(), grid)
        if geoms is not None:
            gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    return gdf


def _into_one_turn(geoms: np.ndarray, crs: Any, target: Any) -> Any:
    """Lon/lat geometries cut at the seam of the ``target`` projection (its central
    meridian ``lon_0`` plus half a turn) and moved by whole turns into
    the turn around ``lon_0`` (``box(170, 60, 190, 70)`` becomes 170..180 and -180..-170
    for ``lon_0 = 0``), and cut at the interruptions of an interrupted Goode Homolosine.

    Returns ``None`` when no geometry crosses a seam or an interruption.
    """
    import shapely

    per_degree = 1.0 / _angular_factor(crs)  # the layer's units per degree
    turn = 360.0 * per_degree
    half = turn / 2
    lon0_deg, cuts_deg = _seams(target)
    lon0, cuts = lon0_deg * per_degree, [c * per_degree for c in cuts_deg]
    west, east = lon0 - half, lon0 + half
    bounds = shapely.bounds(geoms)
    finite = np.isfinite(bounds[:, 0])
    outside = finite & ((bounds[:, 0] < west) | (bounds[:, 2] > east))
    across = np.zeros(len(geoms), bool)
    for c in cuts:
        across |= finite & (bounds[:, 0] < c) & (bounds[:, 2] > c)
    if not (outside | across).any():
        return None
    edges = [west, *sorted(c for c in cuts if west < c < east), east]
    # a hair inside the seam: PROJ reads a longitude exactly on it as either side's
    eps = 1e-9 * turn
    out = geoms.copy()
    for i in np.flatnonzero(outside | across):
        x0, y0, x1, y1 = bounds[i]
        pieces = []
        for k in range(int(np.floor((x0 - west) / turn)), int(np.floor((x1 - west) / turn)) + 1):
            for a, b in itertools.pairwise(edges):
                a_in = a + eps if a == west else a
                b_in = b - eps if b == east else b
                window = shapely.box(a_in + k * turn, y0 - 1.0, b_in + k * turn, y1 + 1.0)
                piece = shapely.intersection(geoms[i], window)
                if not piece.is_empty:
                    pieces.append(shapely.affinity.translate(piece, -k * turn))
        out[i] = (
            shapely.union_all(pieces)
            if not cuts
            else shapely.MultiPolygon(
                [
                    q
                    for piece in pieces
                    for q in shapely.get_parts(piece)
                    if q.geom_type == "Polygon"
                ]
            )
        )
    return out


#: Interruptions of PROJ's interrupted Goode Homolosine (``igh``), east of ``lon_0``.
_IGH_CUTS = (-100.0, -40.0, -20.0, 80.0)


def _seams(target: Any) -> tuple[float, list[float]]:
    """``(lon_0, interruptions)`` of a projected CRS, in degrees (no interruptions but an
    interrupted Goode Homolosine's)."""
    crs = pyproj.CRS.from_user_input(target)
    lon0 = _central_meridian(crs)
    op = crs.coordinate_operation
    interrupted = "interrupted goode" in (op.method_name if op is not None else "").lower()
    return lon0, [lon0 + c for c in _IGH_CUTS] if interrupted else []


def _segment_length(src: Any, grid: Grid) -> float:
    """Edge length for densifying before reprojection: about one grid cell, in ``src`` units."""
    from pyproj import Transformer

    left, bottom, right, top = grid.bounds
    try:
        t = Transformer.from_crs(grid.crs, src, always_xy=True)
        x0, y0, x1, y1 = t.transform_bounds(left, bottom, right, top, densify_pts=21)
        ny, nx = grid.shape
        step = min(abs(x1 - x0) / nx, abs(y1 - y0) / ny)
    except Exception:
        step = np.inf
    if grid.is_geographic and not src.is_geographic:
        # The bounds of a lon/lat grid reaching a pole are degenerate in a polar CRS (0 or
        # 1e23 wide for the globe); then use one cell of latitude instead.
        cell = grid.cell_spacing_m()[0] / _linear_factor(src)
        if not cell / 10 <= step <= cell * 10:
            step = cell
    elif src.is_geographic and not grid.is_geographic:
        # Likewise the bounds of a world-wide projected grid in lon/lat (PROJ can give
        # -180 to -179.95 for the whole globe, a step of 1e-5 degrees and millions of
        # vertices); then one cell's size in degrees of a great circle.
        a, _ = _ellipsoid(src)
        cell = min(grid.cell_spacing_m()) / (a * np.radians(_angular_factor(src)))
        if not cell / 10 <= step <= cell * 10:
            step = cell
    return float(step)


def _unwrap_lonlat(src_geoms: np.ndarray, geoms: np.ndarray, src: Any, grid: Grid) -> Any:
    """Lon/lat polygons of a projected layer, with rings across ±180° or round a pole mended.

    ``geoms`` are ``src_geoms`` reprojected to the grid's CRS (same structure, densified),
    whose longitudes jump by about a turn where a ring crosses the antimeridian. Such a
    ring is unwrapped; if it then ends a whole turn from where it began, it goes round a
    pole -- the one it encloses in ``src`` -- and is closed along that pole's latitude.
    Returns ``None`` when no ring jumps (the geometries are right as they are).
    """
    import shapely
    from pyproj import Transformer

    turn = 360.0 / _angular_factor(grid.crs)
    # rings with a jump of more than half a turn between neighbouring vertices, by geometry
    parts, of_geom = shapely.get_parts(geoms, return_index=True)
    rings, of_part = shapely.get_rings(parts, return_index=True)
    xy, of_ring = shapely.get_coordinates(rings, return_index=True)
    jump = (np.abs(np.diff(xy[:, 0])) > turn / 2) & (of_ring[1:] == of_ring[:-1])
    broken = np.unique(of_geom[of_part[of_ring[1:][jump]]])
    if len(broken) == 0:
        return None
    to_src = Transformer.from_crs(grid.crs, src, always_xy=True)
    px, py = to_src.transform([0.0, 0.0], [turn / 4, -turn / 4])  # north, south pole
    out = geoms.copy()
    for i in broken:
        g = geoms[i]
        polys = []
        for part, part_src in zip(
            shapely.get_parts(g), shapely.get_parts(src_geoms[i]), strict=True
        ):
            if shapely.get_type_id(part) != 3:  # polygons only
                continue
            caps = [
                _ring_lonlat(r, r_src, px, py, turn)
                for r, r_src in zip(
                    shapely.get_rings(part), shapely.get_rings(part_src), strict=True
                )
            ]
            shell, holes = caps[0], caps[1:]
            if holes:
                # a hole is taken out in every copy a turn apart: it may lie a turn from its shell
                shifts = [
                    shapely.affinity.translate(h, k * turn) for h in holes for k in (-1, 0, 1)
                ]
                shell = shapely.difference(shell, shapely.union_all(shifts))
            polys.append(shell)
        out[i] = shapely.union_all(polys)
    return out


def _ring_lonlat(ring: Any, ring_src: Any, px: Any, py: Any, turn: float) -> Any:
    """The lon/lat polygon one reprojected ring bounds: unwrapped, closed at a pole if needed."""
    import shapely

    xy = shapely.get_coordinates(ring)
    x = np.unwrap(xy[:, 0], period=turn)
    y = xy[:, 1]
    if round((x[-1] - x[0]) / turn) != 0:  # goes round a pole
        inside = shapely.contains_xy(shapely.Polygon(ring_src), px, py)
        if inside.any():
            pole = turn / 4 if inside[0] else -turn / 4
        else:  # the pole is off the source CRS's plane: take the nearer one
            pole = turn / 4 if y.mean() >= 0 else -turn / 4
        x = np.concatenate([x, [x[-1], x[0]]])
        y = np.concatenate([y, [pole, pole]])
    return shapely.make_valid(shapely.Polygon(np.column_stack([x, y])))


def _turn_copies(geoms: np.ndarray, grid: Grid) -> Any:
    """Each geometry with its copies whole turns apart that overlap the grid's longitudes.

    Returns ``None`` when every geometry lies over the grid as it is (or nowhere near it).
    """
    import shapely

    turn = 360.0 / _angular_factor(grid.crs)
    left, _, right, _ = grid.bounds
    west, east = min(left, right), max(left, right)
    bounds = shapely.bounds(geoms)
    out = geoms.copy()
    changed = False
    for i, (x0, _, x1, _) in enumerate(bounds):
        if not (np.isfinite(x0) and np.isfinite(x1)):
            continue
        first, last = int(np.floor((west - x1) / turn)), int(np.ceil((east - x0) / turn))
        ks = [k for k in range(first, last + 1) if x0 + k * turn < east and x1 + k * turn > west]
        if ks in ([], [0]):
            continue
        copies = [shapely.affinity.translate(geoms[i], k * turn) for k in ks]
        out[i] = shapely.union_all(shapely.make_valid(np.array(copies, dtype=object)))
        changed = True
    return out if changed else None


def zone_coverage_from_polygons(
    gdf: gpd.GeoDataFrame,
    grid: Grid,
    field: str,
    names: Mapping[int, str] | None = None,
    *,
    zone_nodata: Sequence[int | str] = (),
) -> ZoneCoverage:
    """Exact fraction of every grid cell covered by each zone of a polygon layer.

    Polygons of the same zone are dissolved first (so overlapping features of one zone do
    not count twice), reprojected to the grid's CRS by :func:`to_grid_crs` (edges densified
    to about one cell; on a lon/lat grid, zones across ±180° or round a pole whole) and
    mapped into pixel space, where ``exactextract`` computes the covered fraction of each
    cell. Fractions are of the cell in the grid's CRS; storage multiplies them by the
    cell's true area, so on a geographic grid the area of a partial cell is
    ``fraction × ellipsoidal cell area``.

    Parameters
    ----------
    gdf
        Polygons with a CRS.
    grid
        The density grid.
    field
        Attribute holding the zone code (integer) or name (text). Text values are
        matched to ``names`` (case-insensitive) when given, else numbered 1, 2, ... in
        order of first appearance; a text field holding only whole numbers ("1", "2.0")
        is read as codes. Features with an
        empty geometry are skipped, and so are features with an empty field, with a
        warning (their area is in no zone).
    names
        Zone name by code.
    zone_nodata
        Codes (or, for a text field, names) that mean "no zone" (e.g. a "no permafrost"
        class): their features are left out.

    Returns
    -------
    ZoneCoverage

    Raises
    ------
    InputError
        ``field`` is not an attribute, or no polygon covers any cell of the grid.
    MissingCRSError
        The layer has no CRS.
    """
    import shapely

    if field not in gdf.columns or field == gdf.geometry.name:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(f"no zone field {field!r}; fields are: {', '.join(map(str, fields))}")
    if gdf.crs is None:
        raise MissingCRSError("zone polygons have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:4326)")
    shaped = gdf.geometry.notna() & ~gdf.geometry.is_empty
    blank = shaped & gdf[field].isna()
    if blank.any():
        warnings.warn(
            f"{int(blank.sum())} zone polygon(s) have no {field!r} value; their area is in no zone",
            stacklevel=2,
        )
    gdf = gdf.loc[shaped & ~blank]
    # "no zone" classes: text ones by name (case-insensitive), codes once coded
    texts = {str(c).strip().casefold() for c in zone_nodata if isinstance(c, str)}
    if texts:
        gdf = gdf.loc[~gdf[field].astype(str).str.strip().str.casefold().isin(texts)]
    codes_s, labels = _zone_codes_from_field(gdf[field], field, names)
    numbers = [int(c) for c in zone_nodata if not isinstance(c, str)]
    if numbers:
        kept = ~codes_s.isin(numbers)
        gdf, codes_s = gdf.loc[kept], codes_s.loc[kept]
    gdf = to_grid_crs(gdf, grid)

    ny, nx = grid.shape
    frame = shapely.box(0, -ny, nx, 0)
    geoms = gdf.geometry.to_numpy()
    present: list[int] = []
    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # cell, zone, fraction
    for code in sorted(set(codes_s.tolist())):
        g = shapely.make_valid(_affine(geoms[(codes_s == code).to_numpy()], ~grid.transform))
        g = shapely.intersection(shapely.union_all(g), frame)
        g = shapely.get_parts(g)
        g = g[[shapely.get_type_id(p) in (3, 6) for p in g]]  # polygons only (no slivers)
        if len(g) == 0:
            continue
        poly = shapely.union_all(g)
        if poly.is_empty or poly.area == 0:
            continue
        zi = len(present)
        found = False
        for cell, frac in _band_coverage(poly, grid):
            found = True
            pieces.append((cell, np.full(len(cell), zi, dtype="int32"), frac))
        if found:
            present.append(code)
    if not present:
        raise InputError(f"no zone polygon (field {field!r}) covers any cell of {grid}")

    cell, zone, frac = (np.concatenate(x) for x in zip(*pieces, strict=True))
    cov = _coverage(
        grid, np.asarray(present, dtype="int64"), cell, zone, frac,
        names={c: labels[c] for c in present if c in labels},
    )  # fmt: skip
    n_over = _count_overlaps(cov)
    if n_over:
        warnings.warn(
            f"zone polygons of different zones overlap in {n_over} cells; the overlap counts "
            "in each zone and twice in the all-zones total",
            stacklevel=2,
        )
        object.__setattr__(cov, "overlap_cells", n_over)
    return cov


def _band_coverage(poly: Any, grid: Grid, max_cells: int = 1 << 22) -> Any:
    """Yield ``(flat cell index, fraction)`` of a pixel-space polygon, one band of rows at a time.

    Bands of whole rows keep ``exactextract``'s memory to about ``max_cells`` cells and its
    cell ids contiguous with the grid's; clipping at cell edges leaves every cell's fraction
    as it was. Fractions come from exactextract in single precision (about 1e-7).
    """
    import exactextract
    import geopandas as gpd
    import shapely
    from exactextract.raster import NumPyRasterSource

    ny, nx = grid.shape
    band = max(1, max_cells // nx)
    wkt = grid.crs.to_wkt()
    _, ymin, _, ymax = poly.bounds  # pixel space: y = -row
    first = max(0, int(np.floor(-ymax)))
    last = min(ny, int(np.ceil(-ymin)))
    for r0 in range(first, last, band):
        r1 = min(r0 + band, last)
        piece = shapely.clip_by_rect(poly, 0, -r1, nx, -r0)
        if piece.is_empty or piece.area == 0:
            continue
        raster = NumPyRasterSource(
            np.broadcast_to(np.zeros((), dtype="uint8"), (r1 - r0, nx)),
            0,
            -r1,
            nx,
            -r0,
            srs_wkt=wkt,
        )
        res = exactextract.exact_extract(
            raster,
            gpd.GeoDataFrame(geometry=[piece], crs=wkt),
            ["cell_id", "coverage"],
            output="pandas",
        )
        cell = np.asarray(res["cell_id"].iloc[0], dtype="int64") + r0 * nx
        frac = np.asarray(res["coverage"].iloc[0], dtype="float64")
        keep = frac > 0
        if keep.any():
            yield cell[keep], frac[keep]


def _runs(cells: np.ndarray, nx: int, zone: int) -> tuple[np.ndarray, ...]:
    """Row runs ``(row, col0, col1, zone)`` of sorted flat cell indices."""
    cells = np.sort(cells)
    if len(cells) == 0:
        e = np.empty(0, dtype="int64")
        return e, e, e, np.empty(0, dtype="int32")
    row, col = np.divmod(cells, nx)
    brk = np.flatnonzero((np.diff(cells) != 1) | (np.diff(row) != 0)) + 1
    start = np.concatenate([[0], brk])
    stop = np.concatenate([brk, [len(cells)]])
    return (
        row[start],
        col[start],
        col[stop - 1] + 1,
        np.full(len(start), zone, dtype="int32"),
    )


def _count_overlaps(cov: ZoneCoverage, tol: float = 1e-6) -> int:
    """Cells whose fractions over all zones add up to more than 1 (memory ~ runs + partials)."""
    nx = cov.grid.shape[1]
    n = 0
    row, c0, c1 = cov.run_row, cov.run_col0, cov.run_col1
    order = np.lexsort((c0, row))
    row, c0, c1 = row[order], c0[order], c1[order]
    # furthest run end so far within each row: a running max of a key that rises row by row
    reach = np.maximum.accumulate(row * (nx + 1) + c1) - row * (nx + 1) if len(row) else c1
    before = np.concatenate([[0], reach[:-1]])
    before[np.concatenate([[True], row[1:] != row[:-1]])] = 0
    n += int(np.clip(np.minimum(c1, before) - c0, 0, None).sum())  # whole cells of two zones
    if len(cov.part_cell):
        cells, start = np.unique(cov.part_cell, return_index=True)
        total = np.add.reduceat(cov.part_frac, start)
        prow, pcol = np.divmod(cells, nx)
        # is the cell also inside a whole-cell run (of another zone)?
        i = np.searchsorted(row * (nx + 1) + c0, prow * (nx + 1) + pcol, side="right") - 1
        ok = i >= 0
        inside = np.zeros(len(cells), dtype=bool)
        inside[ok] = (row[i[ok]] == prow[ok]) & (reach[i[ok]] > pcol[ok])
        n += int((total + inside > 1 + tol).sum())
    return n


def rasterize_zones(
    gdf: gpd.GeoDataFrame,
    grid: Grid,
    field: str,
    names: Mapping[int, str] | None = None,
    *,
    chunks: int | tuple[int, int] | None = None,
    nodata: int = 0,
) -> xr.DataArray:
    """Burn zone polygons onto ``grid`` by cell centre: an integer zone-code raster.

    For maps and outlines; totals use :func:`zone_coverage_from_polygons`, which keeps the
    fractions of edge cells. Each tile is rasterized on its own when ``chunks`` is given
    (lazy), so the whole raster never sits in memory.

    Parameters
    ----------
    gdf, grid, field, names
        As for :func:`zone_coverage_from_polygons`.
    chunks
        ``None`` for a NumPy-backed result, else tile size for a lazy Dask-backed one.
    nodata
        Code of cells outside every polygon (written as the raster's nodata).

    Returns
    -------
    xarray.DataArray
        int32 codes on ``grid``; ``attrs["zone_names"]`` maps codes to names.
    """
    import dask.array as da
    from rasterio import features

    if field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InputError(f"no zone field {field!r}; fields are: {', '.join(map(str, fields))}")
    if gdf.crs is None:
        raise MissingCRSError("zone polygons have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:4326)")
    gdf = gdf.loc[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[field].notna()]
    codes, labels = _zone_codes_from_field(gdf[field], field, names)
    gdf = to_grid_crs(gdf, grid)
    if (codes == nodata).any():
        raise InputError(f"zone field {field!r} uses the nodata code {nodata}; choose another")
    shapes = list(zip(gdf.geometry.to_numpy(), codes.to_numpy().tolist(), strict=True))

    def burn(g: Grid) -> np.ndarray:
        if not shapes:
            return np.full(g.shape, nodata, dtype="int32")
        return features.rasterize(
            shapes, out_shape=g.shape, transform=g.transform, fill=nodata, dtype="int32"
        )

    if chunks is None:
        data: Any = burn(grid)
    else:
        rows, cols = grid.chunk_sizes(chunks)

        def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
            (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
            return burn(grid.window(slice(r0, r1), slice(c0, c1)))

        data = da.map_blocks(block, chunks=(rows, cols), dtype="int32")
    out = grid.wrap(data, name="zone", attrs={"zone_names": dict(labels)})
    return out.rio.write_nodata(nodata)


def parse_zone_names(text: str | None) -> dict[int, str]:
    """Parse ``"1=continuous,2=discontinuous"`` into ``{1: "continuous", 2: "discontinuous"}``."""

    if not text:
        return {}
    out: dict[int, str] = {}
    for item in text.split(","):
        code, sep, name = item.partition("=")
        try:
            c = int(code.strip())
        except ValueError:
            c = None
        if not sep or c is None or not name.strip():
            raise ConfigError(
                f"--zone-names: {item.strip()!r} is not CODE=NAME (e.g. 1=continuous,2=sporadic)"
            )
        if c in out:
            raise ConfigError(f"--zone-names: code {c} is named twice")
        out[c] = name.strip()
    return out


VECTOR_SUFFIXES = {".gpkg", ".shp", ".parquet", ".geoparquet", ".pq", ".geojson", ".json", ".fgb"}


def load_zone_layout(
    zones_path: str | Path,
    grid: Grid,
    names: Mapping[int, str] | None = None,
    *,
    zone_field: str | None = None,
    zone_layer: str | None = None,
    gdf: Any = None,
    chunks: int = DEFAULT_CHUNKS,
    zone_nodata: Sequence[int | str] = (),
    what: str = "the grid",
    named_only: bool = False,
) -> ZoneLayout:
    """Zones from a file (code raster or polygons) prepared on ``grid``.

    Polygons become exact cell fractions, and so does a zone raster finer than the grid
    (:func:`zone_coverage_from_raster`); another zone raster is aligned with ``nearest``.
    Errors name ``zones_path``. With ``named_only`` (a run whose config names its zones)
    a code on the grid that ``names`` lacks is an error (:func:`check_zone_names`).
    """

    zones_path = Path(zones_path)
    codes = [int(c) for c in zone_nodata if not isinstance(c, str)]  # a raster's
    try:
        if zones_path.suffix.lower() in VECTOR_SUFFIXES:
            if gdf is None:
                gdf = io.read_zones_vector(zones_path, layer=zone_layer)
            if zone_field is None:
                raise InputError("give the polygon attribute holding the zone code (zone field)")
            zones: Any = zone_coverage_from_polygons(
                gdf, grid, zone_field, names, zone_nodata=zone_nodata
            )
        else:
            resampling, scale = zone_resampling(zones_path, grid)
            if resampling == "mode":  # a finer raster: each zone's share of every cell
                zones = zone_coverage_from_raster(zones_path, grid, zone_nodata=codes)
            else:
                zones = io.open_raster_on_grid(
                    zones_path, grid, resampling=resampling, chunks=chunks, scale=scale
                )
        layout = prepare_zones(zones, grid, names, chunks=chunks, zone_nodata=codes)
        if named_only and names:
            check_zone_names(layout.codes, names)
        return layout
    except MappingError as exc:
        msg = str(exc)
        if "covers any cell" in msg or "falls on the grid" in msg:
            raise InputError(f"{zones_path}: no zone falls on {what}") from None
        if msg.startswith(str(zones_path)):
            raise
        raise type(exc)(f"{zones_path}: {msg}") from None


def check_zone_names(codes: Sequence[int], names: Mapping[int, str]) -> None:
    """Raise unless every zone code found is named.

    A code the names lack becomes a zone of its own and counts in the all-zones total: a
    raster's background (0) that the file does not declare as nodata, or a "no
    permafrost" class of the polygons, would add its land to the permafrost region.

    Raises
    ------
    InputError
        One line naming the unnamed codes and the two ways out.
    """
    extra = sorted(set(int(c) for c in codes) - set(int(c) for c in names))
    if extra:
        shown = ", ".join(map(str, extra[:8])) + (", ..." if len(extra) > 8 else "")
        raise InputError(
            f"zone code(s) {shown} on the grid are not among the zone names "
            f"({', '.join(map(str, names))}): each would be a zone of its own in the "
            "all-zones total; name them in zones.names, or list them in zones.nodata if "
            "they mark no zone"
        )


def zone_coverage_from_raster(
    path: str | Path,
    grid: Grid,
    *,
    zone_nodata: Sequence[int] = (),
    max_pixels: int = 1 << 22,
) -> ZoneCoverage:
    """The fraction of every grid cell that each zone of a zone raster covers.

    For a zone raster finer than the grid: a cell holds each zone in proportion to the
    zone's pixels in it (:func:`mapping.io.read_zone_fractions`, GDAL's ``average`` of the
    zone's 0/1 indicator, with nodata and the area outside the raster counted as no zone).
    A majority code per cell (``mode``) would give a whole cell to a zone of one pixel.

    Parameters
    ----------
    path
        Integer zone codes; the raster's nodata and ``zone_nodata`` mean "no zone".
    grid
        The density grid.
    zone_nodata
        Further codes that mean "no zone".
    max_pixels
        About the most source pixels read at once (the grid is read in tiles of that size).

    Returns
    -------
    ZoneCoverage

    Raises
    ------
    InputError
        Non-integer codes, or no zone falls on the grid.
    """
    import dask

    info = io.raster_info(path)
    nx = grid.shape[1]
    scale = zone_resampling(Path(path), grid)[1] or (1.0, 1.0)
    pixels_per_cell = 1.0 / max(scale[0] * scale[1], 1e-12)
    tile = int(np.clip(np.sqrt(max_pixels / pixels_per_cell), 16, 2048))
    rows, cols = (np.asarray(_offsets(c)) for c in grid.chunk_sizes(tile))
    skip = tuple(float(v) for v in zone_nodata)

    def one(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, ...]:
        window = grid.window(slice(r0, r1), slice(c0, c1))
        codes, frac = io.read_zone_fractions(
            info, crs=grid.crs.to_wkt(), transform=window.transform, shape=window.shape, skip=skip
        )
        z, rr, cc = np.nonzero(frac > 0)
        return codes[z], (rr + r0) * nx + (cc + c0), frac[z, rr, cc].astype("float64")

    tasks = [dask.delayed(one)(rows[i], rows[i + 1], cols[j], cols[j + 1])
             for i in range(len(rows) - 1) for j in range(len(cols) - 1)]  # fmt: skip
    code, cell, frac = (np.concatenate(x) for x in zip(*dask.compute(*tasks), strict=True))
    if not len(code):
        raise InputError("no zone code falls on the grid")
    bad = code != np.floor(code)
    if bad.any():
        raise InputError(
            f"zone raster holds non-integer values (e.g. {code[bad][0]!r}); zones must be "
            "integer codes"
        )
    present, zone = np.unique(code.astype("int64"), return_inverse=True)
    frac = np.where(frac > 1 - 1e-6, 1.0, frac)  # a whole cell (float32 averages)
    return _coverage(grid, present, cell, zone.astype("int32"), frac)


def _coverage(
    grid: Grid,
    codes: np.ndarray,
    cell: np.ndarray,
    zone: np.ndarray,
    frac: np.ndarray,
    names: dict[int, str] | None = None,
) -> ZoneCoverage:
    """A :class:`ZoneCoverage` from ``(flat cell, zone index, fraction)`` triples: each
    zone's whole cells as row runs, the other cells as parts ordered by cell (stable, so
    one cell's zones stay in the order given)."""
    nx = grid.shape[1]
    full = frac == 1.0
    runs = [_runs(cell[full & (zone == i)], nx, i) for i in range(len(codes))]
    run_row, run_col0, run_col1, run_zone = (np.concatenate(x) for x in zip(*runs, strict=True))
    order = np.argsort(cell[~full], kind="stable")
    return ZoneCoverage(
        grid=grid,
        codes=codes,
        names=names or {},
        run_row=run_row,
        run_col0=run_col0,
        run_col1=run_col1,
        run_zone=run_zone,
        part_cell=cell[~full][order],
        part_zone=zone[~full][order].astype("int32"),
        part_frac=frac[~full][order],
    )


def zone_resampling(path: Path, grid: Grid) -> tuple[str, tuple[float, float] | None]:
    """Resampling of a zone raster onto ``grid``: ``mode`` when the raster is finer, else
    ``nearest``; with the scale (grid cells per source cell) that fixes the mode footprint."""
    from rasterio.warp import calculate_default_transform

    src = io.raster_grid(path)
    if src == grid:
        return "nearest", None
    ny, nx = src.shape
    transform, _, _ = calculate_default_transform(src.crs, grid.crs, nx, ny, *src.bounds)
    sx, sy = abs(transform.a), abs(transform.e)  # source cell size in the grid's units
    gx, gy = grid.resolution
    if min(sx, sy) < 0.75 * min(gx, gy):
        return "mode", (sx / gx, sy / gy)
    return "nearest", None
