"""Zone totals: SOC storage per zone and depth interval from density maps and true cell areas.

Storage of a zone is ``sum(w * A * d)`` over the grid, where ``d`` is the SOC density
(kg C m⁻²) of a cell, ``A`` its true area (m², :meth:`mapping.grid.Grid.cell_area`: exact on
the ellipsoid for geographic grids) and ``w`` the fraction of the cell that lies in the zone
(1 or 0 for a zone raster; fractional at polygon edges for zone polygons).

The work is split in three layers, so the Monte Carlo stage can call the same code once per
realization, chunk by chunk:

* :func:`zone_sums_block` -- a pure NumPy kernel: one block of density (optionally with a
  leading realization axis), its cell areas and its zone membership -> per-zone
  ``(area, valid area, storage)``;
* :func:`zone_sums` -- a thin Dask wrapper: the kernel on every chunk, partial sums reduced
  as a tree; lazy;
* :func:`zone_totals` -- the table users read (km², kg C m⁻², Pg or Tg), one row per zone and
  interval plus an ``all zones`` row per interval.

Zone membership is a :class:`ZoneLayout`, prepared once per grid from a zone raster on the
grid (:func:`prepare_zones`) or from polygons (:func:`zone_coverage_from_polygons`, exact
coverage fractions from ``exactextract``).

Cells whose density is nodata (NaN or non-finite) are left out of the mean density and the
storage; their area is reported separately as ``area_nodata_km2``. The mean density of a zone is
``storage / (area - area_nodata)``, i.e. area-weighted over cells with data.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.exceptions import (
    ConfigError,
    GridMismatchError,
    InputError,
    MappingError,
    MissingCRSError,
)
from mapping.grid import Grid
from mapping.units import STORAGE_UNITS, format_interval, parse_interval

if TYPE_CHECKING:
    import dask.array
    import geopandas as gpd
    import xarray as xr


__all__ = [
    "SUM_FIELDS",
    "UNITS",
    "ZoneCoverage",
    "ZoneLayout",
    "density_unit_factor",
    "integrate_files",
    "interval_from_attrs",
    "interval_from_name",
    "parse_zone_names",
    "prepare_zones",
    "rasterize_zones",
    "zone_coverage_from_polygons",
    "zone_sums",
    "zone_sums_block",
    "zone_totals",
]

#: Columns of the last axis returned by :func:`zone_sums_block` / :func:`zone_sums`:
#: zone area (m²), area of cells with valid density (m²), storage (kg C).
SUM_FIELDS = ("area_m2", "valid_area_m2", "storage_kg")

#: Storage units and their size in kg.
UNITS = STORAGE_UNITS

ALL_ZONES = "all zones"
DEFAULT_CHUNKS = 1024

# (flat cell index within the block, zone index, coverage fraction)
Partial = tuple[np.ndarray, np.ndarray, np.ndarray]


# =============================================================================== exact sums
# A finite double is +-M * 2**(E - 1075) with an integer M < 2**53 and E >= 1 read from its
# bits (E = 1 and no hidden bit for subnormals): the sum of any set of doubles is an integer
# multiple of 2**-1074. Sums are kept as Python ints in that unit; adding them is exact and
# associative, so totals are the same for any chunking, worker count and order, and the
# one rounding to float64 at the end (int / int is correctly rounded) is the same too.
_EXACT_SHIFT = 1074
_EXACT_SLICE = 1 << 24  # values per bincount: sums of 27-bit halves stay below 2**53
_MANTISSA = (1 << 52) - 1
_HALF = (1 << 26) - 1


def exact_bincount(idx: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Exact per-bin sums of finite ``weights``, as Python ints in units of ``2**-1074``.

    The counterpart of ``np.bincount(idx, weights, minlength=n_bins)`` without rounding:
    each value is split (from its bits) into its exponent and two 26/27-bit halves of its
    integer mantissa, whose per-(bin, exponent) sums NumPy adds exactly in float64; the
    halves are then shifted into place as Python ints.

    Returns
    -------
    numpy.ndarray
        Object array of ``n_bins`` Python ints; :func:`exact_to_float` rounds them.
    """
    out = np.zeros(n_bins, dtype=object)
    out[:] = 0
    idx = np.asarray(idx).ravel()
    w = np.ascontiguousarray(weights, dtype="float64").ravel()
    if not np.isfinite(w).all():
        raise ValueError("exact_bincount: weights must be finite")
    for start in range(0, len(w), _EXACT_SLICE):
        bits = w[start : start + _EXACT_SLICE].view(np.int64)
        ix = idx[start : start + _EXACT_SLICE]
        if not len(bits):
            continue
        e = bits >> 52
        e &= 0x7FF
        m = bits & _MANTISSA
        e0, e1 = int(e.min()), int(e.max())
        if e0 == 0:  # zeros and subnormals: no hidden bit, exponent 1
            m |= (e > 0).view(np.int8).astype(np.int64) << 52
            np.maximum(e, 1, out=e)
            e0 = 1
        else:
            m |= 1 << 52  # the hidden bit of normal numbers
        if bits.min() < 0:
            np.negative(m, out=m, where=bits < 0)
        hi = (m >> 26).astype("float64")  # floor: hi * 2**26 + lo == m for either sign
        m &= _HALF
        lo = m.astype("float64")
        n_exp = max(e1, 1) - e0 + 1
        key = ix * n_exp
        e -= e0
        key += e
        size = n_bins * n_exp
        hs = np.bincount(key, hi, minlength=size).reshape(n_bins, n_exp)
        ls = np.bincount(key, lo, minlength=size).reshape(n_bins, n_exp)
        for b, k in zip(*np.nonzero((hs != 0) | (ls != 0)), strict=True):
            total = (int(hs[b, k]) << 26) + int(ls[b, k])
            out[b] += total << (e0 + int(k) - 1)  # 2**(E - 1075) in units of 2**-1074
    return out


def exact_to_float(sums: np.ndarray) -> np.ndarray:
    """Round exact sums from :func:`exact_bincount` (any shape) to float64, once."""
    a = np.asarray(sums, dtype=object)
    unit = 1 << _EXACT_SHIFT
    flat = [int(v) / unit for v in a.ravel()]
    return np.asarray(flat, dtype="float64").reshape(a.shape)


# =============================================================================== kernel
def zone_sums_block(
    density: np.ndarray,
    cell_area: np.ndarray,
    zone_index: np.ndarray,
    n_zones: int,
    partial: Partial | None = None,
    *,
    exact: bool = False,
) -> np.ndarray:
    """Per-zone area, valid area and storage of one block (pure NumPy).

    Parameters
    ----------
    density
        SOC density, kg C m⁻², shape ``(ny, nx)`` or ``(n, ny, nx)`` (e.g. ``n`` Monte Carlo
        realizations). NaN (any non-finite value) is nodata.
    cell_area
        True cell areas, m², shape ``(ny, nx)``.
    zone_index
        Zone *index* (``0 .. n_zones - 1``) of every cell lying wholly in one zone, ``-1``
        elsewhere; integer, shape ``(ny, nx)``.
    n_zones
        Number of zones.
    partial
        Cells covered by a fraction of a zone (polygon edges) or by a second zone:
        ``(flat cell index within the block, zone index, fraction)``; these add to what
        ``zone_index`` says.
    exact
        Return the exact sums (object array of Python ints in units of ``2**-1074``, see
        :func:`exact_bincount`) to be added across blocks and rounded once with
        :func:`exact_to_float`; default: rounded here.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_zones, 3)`` or ``(n, n_zones, 3)``; the last axis is
        :data:`SUM_FIELDS`: zone area (m²), area with valid density (m²), storage (kg C).
        Every value is the exact sum rounded once, so it does not depend on the order
        of the cells.

    Examples
    --------
    >>> d = np.array([[1.0, 2.0], [np.nan, 4.0]])
    >>> a = np.full((2, 2), 10.0)
    >>> z = np.array([[0, 0], [0, 1]])
    >>> zone_sums_block(d, a, z, 2)
    array([[30., 20., 30.],
           [10., 10., 40.]])
    """
    density = np.asarray(density, dtype="float64")
    shape = density.shape[-2:]
    if np.shape(cell_area) != shape or np.shape(zone_index) != shape:
        raise ValueError(
            f"block shapes differ: density {density.shape}, cell_area {np.shape(cell_area)}, "
            f"zone_index {np.shape(zone_index)}"
        )
    lead = density.shape[:-2]
    d = density.reshape(-1, shape[0] * shape[1])
    area = np.asarray(cell_area, dtype="float64").ravel()
    # cells outside every zone go to an extra bin, dropped at the end: no compaction copies
    idx = np.asarray(zone_index).ravel()
    idx = np.where(idx < 0, n_zones, idx)
    has_partial = partial is not None and len(partial[0]) > 0
    if has_partial:
        # whole cells and edge pieces in one exact sum: bins n_zones + 1 + zone for pieces
        p_cell, p_zone, p_frac = partial  # type: ignore[misc]
        p_area = p_frac * area[p_cell]
        p_idx = np.asarray(p_zone) + n_zones + 1
        all_idx = np.concatenate([idx, p_idx])
    n_bins = 2 * n_zones + 1 if has_partial else n_zones + 1

    def sums(weights: np.ndarray, pieces: np.ndarray | None = None) -> np.ndarray:
        if has_partial:
            bins = exact_bincount(all_idx, np.concatenate([weights, pieces]), n_bins)
            return bins[:n_zones] + bins[n_zones + 1 :]
        return exact_bincount(idx, weights, n_bins)[:n_zones]

    zone_area = sums(area, p_area if has_partial else None)
    out = np.empty((d.shape[0], n_zones, 3), dtype=object)
    for r in range(d.shape[0]):
        ok = np.isfinite(d[r])
        valid_area = np.where(ok, area, 0.0)
        out[r, :, 0] = zone_area
        kg = valid_area * np.where(ok, d[r], 0.0)
        if has_partial:
            pv = d[r, p_cell]
            pok = np.isfinite(pv)
            out[r, :, 1] = sums(valid_area, np.where(pok, p_area, 0.0))
            out[r, :, 2] = sums(kg, np.where(pok, p_area * np.where(pok, pv, 0.0), 0.0))
        else:
            out[r, :, 1] = sums(valid_area)
            out[r, :, 2] = sums(kg)
    out = out.reshape((*lead, n_zones, 3))
    return out if exact else exact_to_float(out)


# =============================================================================== zones
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
        """Zone index and partial cells of the block ``[rows, cols]`` (see :func:`zone_sums_block`)."""
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

    @property
    def n_zones(self) -> int:
        return len(self.codes)

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
    """Prepare zones on ``grid`` for :func:`zone_sums`.

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
    data = _squeeze_band(zones, "zones").data
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
    return ZoneLayout(grid, codes, labels, index)


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


def _squeeze_band(arr: xr.DataArray, what: str) -> xr.DataArray:
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
    if names:
        by_name = {str(n).casefold(): int(c) for c, n in names.items()}
        unknown = sorted(set(t for t in text if t.casefold() not in by_name))
        if unknown:
            raise InputError(
                f"zone field {field_name!r}: value {unknown[0]!r} is not among the zone names "
                f"({', '.join(map(str, names.values()))})"
            )
        return text.map(lambda t: by_name[t.casefold()]).astype("int64"), names
    labels = list(dict.fromkeys(text))  # first appearance fixes the code 1, 2, ...
    code_of = {t: i + 1 for i, t in enumerate(labels)}
    return text.map(code_of).astype("int64"), {i + 1: t for i, t in enumerate(labels)}


def _affine(geoms: Any, inv: Any) -> Any:
    import shapely

    coeffs = [inv.a, inv.b, -inv.d, -inv.e, inv.c, -inv.f]
    return np.array([shapely.affinity.affine_transform(g, coeffs) for g in geoms], dtype=object)


def _to_grid_crs(gdf: gpd.GeoDataFrame, grid: Grid) -> gpd.GeoDataFrame:
    """Reproject to the grid's CRS, densifying edges first so they bend as they should."""
    from pyproj import CRS, Transformer

    src = CRS.from_user_input(gdf.crs)
    if src.equals(grid.crs):
        return gdf
    # Segment length: about one grid cell, measured in the source CRS.
    left, bottom, right, top = grid.bounds
    try:
        t = Transformer.from_crs(grid.crs, src, always_xy=True)
        x0, y0, x1, y1 = t.transform_bounds(left, bottom, right, top, densify_pts=21)
        ny, nx = grid.shape
        step = min(abs(x1 - x0) / nx, abs(y1 - y0) / ny)
    except Exception:
        step = np.inf
    if np.isfinite(step) and step > 0:
        gdf = gdf.set_geometry(gdf.geometry.segmentize(step))
    return gdf.to_crs(grid.crs)


def zone_coverage_from_polygons(
    gdf: gpd.GeoDataFrame,
    grid: Grid,
    field: str,
    names: Mapping[int, str] | None = None,
) -> ZoneCoverage:
    """Exact fraction of every grid cell covered by each zone of a polygon layer.

    Polygons of the same zone are dissolved first (so overlapping features of one zone do
    not count twice), reprojected to the grid's CRS (edges densified to about one cell) and
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
        order of first appearance. Features with an empty field or geometry are skipped.
    names
        Zone name by code.

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
    keep = gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[field].notna()
    gdf = gdf.loc[keep]
    codes_s, labels = _zone_codes_from_field(gdf[field], field, names)
    gdf = _to_grid_crs(gdf, grid)

    ny, nx = grid.shape
    frame = shapely.box(0, -ny, nx, 0)
    geoms = gdf.geometry.to_numpy()
    present: list[int] = []
    runs: list[tuple[np.ndarray, ...]] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
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
            full = frac == 1.0
            runs.append(_runs(cell[full], nx, zi))
            parts.append((cell[~full], np.full((~full).sum(), zi, dtype="int32"), frac[~full]))
        if found:
            present.append(code)
    if not present:
        raise InputError(f"no zone polygon (field {field!r}) covers any cell of {grid}")

    run_row, run_col0, run_col1, run_zone = (np.concatenate(x) for x in zip(*runs, strict=True))
    p_cell, p_zone, p_frac = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.argsort(p_cell, kind="stable")
    cov = ZoneCoverage(
        grid=grid,
        codes=np.asarray(present, dtype="int64"),
        names={c: labels[c] for c in present if c in labels},
        run_row=run_row,
        run_col0=run_col0,
        run_col1=run_col1,
        run_zone=run_zone,
        part_cell=p_cell[order],
        part_zone=p_zone[order],
        part_frac=p_frac[order],
    )
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
    gdf = _to_grid_crs(gdf, grid)
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


# =============================================================================== dask wrapper
def zone_sums(
    density: Any,
    cell_area: Any,
    zones: ZoneLayout,
) -> dask.array.Array:
    """Per-zone sums of a density array, chunk by chunk (lazy).

    Parameters
    ----------
    density
        ``(ny, nx)`` or ``(n, ny, nx)`` NumPy or Dask array of kg C m⁻² on ``zones.grid``
        (NaN = nodata). A leading axis (e.g. Monte Carlo realizations) is kept.
    cell_area
        ``(ny, nx)`` true cell areas (m²), e.g. ``grid.cell_area(chunks=...)``; rechunked
        to the density's chunks when they differ.
    zones
        From :func:`prepare_zones`.

    Returns
    -------
    dask.array.Array
        float64, ``(n_zones, 3)`` or ``(n, n_zones, 3)``; last axis :data:`SUM_FIELDS`.
        Each chunk's exact partial sums come from :func:`zone_sums_block`; they are added
        exactly as a tree and rounded once, so the result is the same to the last bit for
        any chunking and any number of workers.
    """
    import dask
    import dask.array as da

    if not isinstance(density, da.Array):
        density = da.from_array(np.asarray(density), chunks=DEFAULT_CHUNKS)
    if density.ndim not in (2, 3) or tuple(density.shape[-2:]) != zones.grid.shape:
        raise ValueError(
            f"density shape {density.shape} does not end in the grid shape {zones.grid.shape}"
        )
    row_chunks, col_chunks = density.chunks[-2:]
    if not isinstance(cell_area, da.Array):
        cell_area = da.from_array(np.asarray(cell_area), chunks=(row_chunks, col_chunks))
    cell_area = cell_area.rechunk((row_chunks, col_chunks))
    d_blocks = density.to_delayed(optimize_graph=False)
    a_blocks = cell_area.to_delayed(optimize_graph=False)
    z_blocks = zones.blocks(row_chunks, col_chunks)
    n = zones.n_zones
    lead_chunks = density.chunks[0] if density.ndim == 3 else (None,)
    per_lead = []
    for k, nk in enumerate(lead_chunks):
        parts = []
        for i in range(len(row_chunks)):
            for j in range(len(col_chunks)):
                d = d_blocks[k, i, j] if density.ndim == 3 else d_blocks[i, j]
                task = dask.delayed(_tile_sums, pure=True)(d, a_blocks[i, j], z_blocks[i, j], n)
                shape = (n, 3) if nk is None else (nk, n, 3)
                parts.append(da.from_delayed(task, shape=shape, dtype=object))
        total = da.stack(parts).sum(axis=0, dtype=object)
        per_lead.append(total.map_blocks(exact_to_float, dtype="float64"))
    return per_lead[0] if density.ndim == 2 else da.concatenate(per_lead, axis=0)


def _tile_sums(density: np.ndarray, cell_area: np.ndarray, zone_block: Any, n: int) -> np.ndarray:
    if isinstance(zone_block, tuple):
        index, partial = zone_block
        return zone_sums_block(density, cell_area, index, n, partial, exact=True)
    return zone_sums_block(density, cell_area, zone_block, n, exact=True)


# =============================================================================== table
_INTERVAL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|_|to)\s*(\d+(?:\.\d+)?)\s*(?:cm)?", re.I)
_NAME_INTERVAL_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[_-](\d+(?:\.\d+)?)\s*cm", re.I)


def interval_from_attrs(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    """Depth interval from raster tags: ``interval`` (``"0-30"``) or ``top_cm``/``bottom_cm``."""
    if "top_cm" in attrs and "bottom_cm" in attrs:
        try:
            top, bottom = float(attrs["top_cm"]), float(attrs["bottom_cm"])
        except (TypeError, ValueError):
            return None
        return (top, bottom) if top < bottom else None
    text = attrs.get("interval")
    if text is None:
        return None
    m = _INTERVAL_RE.fullmatch(str(text).strip())
    if not m or not float(m.group(1)) < float(m.group(2)):
        return None
    return float(m.group(1)), float(m.group(2))


def interval_from_name(path: str | Path) -> tuple[float, float] | None:
    """Depth interval from a file name like ``soc_0_30cm_mean.tif`` or ``density_0-100cm.tif``."""
    m = _NAME_INTERVAL_RE.search(Path(path).name)
    if not m or not float(m.group(1)) < float(m.group(2)):
        return None
    return float(m.group(1)), float(m.group(2))


def _density_items(
    density: xr.DataArray | Mapping[str, xr.DataArray],
) -> list[tuple[float, float, xr.DataArray]]:
    if not isinstance(density, Mapping):
        found = interval_from_attrs(density.attrs) or (np.nan, np.nan)
        return [(found[0], found[1], density)]
    items = []
    for key, arr in density.items():
        try:
            top, bottom = parse_interval(key)
        except ValueError:
            iv = interval_from_attrs(arr.attrs)
            if iv is None:
                raise InputError(
                    f"density {key!r}: key is not a depth interval (e.g. '0-30') and the array "
                    "has no interval attrs"
                ) from None
            top, bottom = iv
        items.append((top, bottom, arr))
    seen: dict[tuple[float, float], int] = {}
    for top, bottom, _ in items:
        seen[(top, bottom)] = seen.get((top, bottom), 0) + 1
    dup = [k for k, v in seen.items() if v > 1]
    if dup:
        raise InputError(f"more than one density array for interval {format_interval(*dup[0])}")
    return sorted(items, key=lambda t: (t[0], t[1]))


def zone_totals(
    density: xr.DataArray | Mapping[str, xr.DataArray],
    zones: xr.DataArray | ZoneCoverage | ZoneLayout,
    grid: Grid,
    names: Mapping[int, str] | None = None,
    unit: str = "Pg",
    *,
    chunks: int | tuple[int, int] = DEFAULT_CHUNKS,
) -> pd.DataFrame:
    """Area, mean density and storage per zone and depth interval.

    Parameters
    ----------
    density
        SOC density (kg C m⁻², NaN = nodata) on ``grid``: one DataArray, or several keyed
        by interval (``{"0-30": da, "0-100": da}``). A single array takes its interval from
        its attrs (``interval`` or ``top_cm``/``bottom_cm``), else NaN. Dask-backed arrays
        are summed chunk by chunk in their own chunks; NumPy-backed ones are chunked with
        ``chunks``.
    zones
        Integer zone codes on ``grid`` (DataArray), a :class:`ZoneCoverage` from polygons, or
        a prepared :class:`ZoneLayout`.
    grid
        The grid of the densities; cell areas come from :meth:`Grid.cell_area`.
    names
        Zone name by code; unnamed zones are labelled by their code. Ignored when ``zones``
        is a prepared :class:`ZoneLayout` (it carries its names).
    unit
        ``"Pg"`` (default) or ``"Tg"``.
    chunks
        Chunk size for NumPy-backed inputs.

    Returns
    -------
    pandas.DataFrame
        One row per interval × zone, then an ``all zones`` row per interval; columns
        ``zone, zone_code, interval, top_cm, bottom_cm, area_km2, area_nodata_km2,
        mean_density_kg_m2, storage_pg`` (``storage_tg`` with ``unit="Tg"``).
        ``area_km2`` includes nodata cells; the mean density and storage exclude them.

    Examples
    --------
    >>> from mapping.grid import Grid
    >>> g = Grid.from_bounds((1e6, 0, 1.03e6, 1e4), 10_000, "EPSG:6931")  # 100 km2 cells
    >>> d = g.wrap(np.array([[10.0, 20.0, np.nan]]), attrs={"interval": "0-30"})
    >>> z = g.wrap(np.array([[1, 1, 2]]))
    >>> t = zone_totals(d, z, g, names={1: "a", 2: "b"}, unit="Tg")
    >>> t[["zone", "area_km2", "area_nodata_km2", "mean_density_kg_m2", "storage_tg"]]
            zone  area_km2  area_nodata_km2  mean_density_kg_m2  storage_tg
    0          a     200.0              0.0                15.0         3.0
    1          b     100.0            100.0                 NaN         0.0
    2  all zones     300.0            100.0                15.0         3.0
    """
    import dask
    import dask.array as da

    if unit not in UNITS:
        raise InputError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    items = _density_items(density)

    arrays = []
    for top, bottom, arr in items:
        arr = _squeeze_band(arr, f"density {format_interval(top, bottom) if top == top else ''}")
        g = Grid.from_dataarray(arr)
        if g != grid:
            raise GridMismatchError(f"density is on {g}, expected {grid}")
        data = arr.data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=chunks)
        arrays.append(data)
    layout = zones if isinstance(zones, ZoneLayout) else prepare_zones(zones, grid, names)
    if layout.grid != grid:
        raise GridMismatchError(f"zones are on {layout.grid}, density is on {grid}")
    areas: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}
    sums = []
    for data in arrays:
        key = data.chunks
        if key not in areas:
            areas[key] = grid.cell_area(chunks=(key[0][0], key[1][0])).rechunk(key)
        sums.append(zone_sums(data, areas[key], layout))
    results = dask.compute(*sums)
    return _format_table(items, results, layout, unit)


def _format_table(
    items: list[tuple[float, float, Any]],
    results: Sequence[np.ndarray],
    layout: ZoneLayout,
    unit: str,
) -> pd.DataFrame:
    scale = UNITS[unit]
    storage_col = f"storage_{unit.lower()}"
    rows = []
    for (top, bottom, _), s in zip(items, results, strict=True):
        label = format_interval(top, bottom) if np.isfinite(top) else ""
        block = np.vstack([s, s.sum(axis=0, keepdims=True)])
        zone_names = [*layout.names, ALL_ZONES]
        zone_codes: list[Any] = [*layout.codes, pd.NA]
        for name, code, (area, valid, storage) in zip(zone_names, zone_codes, block, strict=True):
            rows.append(
                {
                    "zone": name,
                    "zone_code": code,
                    "interval": label,
                    "top_cm": top,
                    "bottom_cm": bottom,
                    "area_km2": area / 1e6,
                    "area_nodata_km2": (area - valid) / 1e6,
                    "mean_density_kg_m2": storage / valid if valid > 0 else np.nan,
                    storage_col: storage / scale,
                }
            )
    df = pd.DataFrame(rows)
    df["zone_code"] = df["zone_code"].astype("Int64")
    df.attrs["storage_unit"] = unit
    return df


# =============================================================================== CLI stage
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


_UNIT_FACTORS = {
    "kgm-2": 1.0,
    "kgcm-2": 1.0,
    "kg/m2": 1.0,
    "kgc/m2": 1.0,
    "kg/m^2": 1.0,
    "kgm^-2": 1.0,
    "kgm**-2": 1.0,
    "kgcm**-2": 1.0,
    "gm-2": 1e-3,
    "gcm-2": 1e-3,
    "g/m2": 1e-3,
    "gc/m2": 1e-3,
    "t/ha": 0.1,
    "tc/ha": 0.1,
    "tha-1": 0.1,
    "tcha-1": 0.1,
    "mg/ha": 0.1,
    "mgc/ha": 0.1,
    "mgha-1": 0.1,
    "mgcha-1": 0.1,
}


def density_unit_factor(units: str | None) -> float:
    """Factor turning a density raster's ``units`` tag into kg C m⁻² (missing tag: 1).

    Raises
    ------
    ValueError
        The unit is not an areal carbon density this module knows.
    """
    if units is None or not str(units).strip():
        return 1.0
    key = re.sub(r"\s+", "", str(units)).lower().replace("⁻²", "-2").replace("²", "2")
    if key not in _UNIT_FACTORS:
        raise ValueError(f"units {units!r} is not a carbon density (use kg C m-2, g m-2 or t/ha)")
    return _UNIT_FACTORS[key]


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
    zone_nodata: Sequence[int] = (),
    what: str = "the grid",
) -> ZoneLayout:
    """Zones from a file (code raster or polygons) prepared on ``grid``.

    Polygons become exact cell fractions; a zone raster on another grid is aligned with
    ``mode`` (finer source) or ``nearest``. Errors name ``zones_path``.
    """

    zones_path = Path(zones_path)
    try:
        if zones_path.suffix.lower() in VECTOR_SUFFIXES:
            if gdf is None:
                gdf = io.read_zones_vector(zones_path, layer=zone_layer)
            if zone_field is None:
                raise InputError("give the polygon attribute holding the zone code (zone field)")
            zones: Any = zone_coverage_from_polygons(gdf, grid, zone_field, names)
        else:
            resampling, scale = _zone_resampling(zones_path, grid)
            zones = io.open_raster_on_grid(
                zones_path, grid, resampling=resampling, chunks=chunks, scale=scale
            )
        return prepare_zones(zones, grid, names, chunks=chunks, zone_nodata=list(zone_nodata))
    except MappingError as exc:
        msg = str(exc)
        if "covers any cell" in msg or "falls on the grid" in msg:
            raise InputError(f"{zones_path}: no zone falls on {what}") from None
        if msg.startswith(str(zones_path)):
            raise
        raise type(exc)(f"{zones_path}: {msg}") from None


def integrate_files(
    density_paths: Sequence[str | Path],
    zones_path: str | Path,
    *,
    zone_names: Mapping[int, str] | None = None,
    zone_field: str | None = None,
    zone_layer: str | None = None,
    zone_nodata: Sequence[int] = (),
    interval: tuple[float, float] | None = None,
    unit: str = "Pg",
    chunks: int = DEFAULT_CHUNKS,
    layout: ZoneLayout | None = None,
    band: int | None = None,
    allow_statistic: bool = False,
) -> pd.DataFrame:
    """The ``socmap integrate`` stage: read density rasters and zones, return the totals table.

    Each density raster's interval comes from its tags (``interval`` or ``top_cm``/
    ``bottom_cm``), else from its file name (``soc_0_30cm_mean.tif``), else from
    ``interval``. Raw values become densities through the band's scale and offset, its
    nodata and mask. A multi-band raster needs ``band``. A map tagged with a ``statistic``
    other than ``mean`` (a quantile, std or AOA map) is refused unless ``allow_statistic``:
    the sum of a 95 % quantile map is not the 95 % bound of the total. Zone rasters on
    another grid are aligned onto each density grid (mode resampling when the zone raster
    is finer, nearest otherwise); zone polygons are turned into exact cell fractions per
    density grid. All reading goes through :mod:`mapping.io`.
    ``layout``, the zones already prepared on one grid (from ``zones_path``), is used for
    the rasters on that grid instead of preparing the zones again.
    """

    if not density_paths:
        raise InputError("no density raster given")
    zones_path = Path(zones_path)
    if not zones_path.exists():
        raise InputError(f"{zones_path}: file not found")
    is_vector = zones_path.suffix.lower() in VECTOR_SUFFIXES
    if not is_vector and zone_field is not None:
        raise InputError(f"{zones_path}: --zone-field applies to polygon zones, this is a raster")

    # Open every density raster (lazy) and work out its interval and units.
    by_grid: dict[Grid, dict[str, xr.DataArray]] = {}
    source_of: dict[tuple[float, float], Path] = {}
    for p in map(Path, density_paths):
        if band is None and (n := io.raster_info(p).count) > 1:
            raise InputError(f"{p}: has {n} bands; choose the density band with --band (1 to {n})")
        arr = io.open_raster(p, band=band or 1, chunks=chunks)
        _check_statistic(p, arr.attrs, allow_statistic)
        iv = interval_from_attrs(arr.attrs) or interval_from_name(p) or interval
        if iv is None:
            raise InputError(
                f"{p}: no depth interval (no 'interval' or 'top_cm'/'bottom_cm' tag, no "
                "'<top>_<bottom>cm' in the name); give --interval TOP-BOTTOM"
            )
        if iv in source_of:
            raise InputError(
                f"{p}: interval {format_interval(*iv)} already comes from {source_of[iv]}"
            )
        source_of[iv] = p
        try:
            factor = density_unit_factor(arr.attrs.get("units"))
        except ValueError as exc:
            raise InputError(f"{p}: {exc}") from None
        if factor != 1.0:
            arr = arr * factor
        grid = Grid.from_dataarray(arr)
        by_grid.setdefault(grid, {})[format_interval(*iv)] = arr

    prepared = {layout.grid: layout} if layout is not None else {}
    need_gdf = is_vector and (zone_field is None or set(by_grid) - set(prepared))
    gdf = io.read_zones_vector(zones_path, layer=zone_layer) if need_gdf else None
    if gdf is not None and zone_field is None:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        if len(fields) != 1:
            raise InputError(
                f"{zones_path}: give --zone-field, one of: {', '.join(map(str, fields)) or '(none)'}"
            )
        zone_field = str(fields[0])

    tables = []
    for grid, dens in by_grid.items():
        first = source_of[next(iter(sorted(parse_interval(k) for k in dens)))]
        on_grid = prepared.get(grid) or load_zone_layout(
            zones_path,
            grid,
            zone_names,
            zone_field=zone_field,
            gdf=gdf,
            chunks=chunks,
            zone_nodata=zone_nodata,
            what=f"the grid of {first}",
        )
        tables.append(zone_totals(dens, on_grid, grid, zone_names, unit))
    out = pd.concat(tables, ignore_index=True)
    out["_total"] = out["zone"].eq(ALL_ZONES) & out["zone_code"].isna()
    out = out.sort_values(["top_cm", "bottom_cm", "_total"], kind="stable").drop(columns="_total")
    out.attrs["storage_unit"] = unit
    return out.reset_index(drop=True)


_QUANTILE_STATISTICS = re.compile(r"(lower|upper|median|quantile|percentile|[pq]\d+(\.\d+)?)")
_SPREAD_STATISTICS = frozenset({"std", "sd", "stdev", "variance", "var", "se", "cv"})
_MASK_STATISTICS = frozenset({"aoa", "di", "dissimilarity"})


def _check_statistic(path: Path, attrs: Mapping[str, Any], allow: bool) -> None:
    """Refuse a map tagged as a quantile, spread or AOA statistic (unless ``allow``).

    A mean map (and a realization or a known truth) sums to a zone total; the sum of a
    95 % quantile map is not the 95 % bound of the total.
    """
    stat = str(attrs.get("statistic", "")).strip().lower()
    if not stat or allow:
        return
    if _QUANTILE_STATISTICS.fullmatch(stat):
        why = ("the sum of a quantile map is not that quantile of the total (pixel errors are "
               "not perfectly correlated; the Monte Carlo ranges are)")  # fmt: skip
    elif stat in _SPREAD_STATISTICS:
        why = "a sum of standard deviations is not the uncertainty of the total"
    elif stat in _MASK_STATISTICS:
        why = "it is an area-of-applicability map, not a density"
    else:
        return
    raise InputError(
        f"{path}: map is tagged statistic={stat}, not a mean density: {why}; integrate the "
        "mean map, or pass --allow-statistic to sum it anyway"
    )


def _zone_resampling(path: Path, grid: Grid) -> tuple[str, tuple[float, float] | None]:
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
