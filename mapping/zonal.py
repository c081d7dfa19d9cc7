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

Zone membership is a :class:`mapping.zones.ZoneLayout`, prepared once per grid from a zone
raster on the grid or from polygons (exact coverage fractions); see :mod:`mapping.zones`.

Cells whose density is nodata (NaN or non-finite) are left out of the mean density and the
storage; their area is reported separately as ``area_nodata_km2``. The mean density of a zone is
``storage / (area - area_nodata)``, i.e. area-weighted over cells with data.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping import io
from mapping._exact_kernel import add_halves, exponent_range
from mapping.exceptions import GridMismatchError, InputError
from mapping.grid import Grid
from mapping.units import ALL_ZONES, STORAGE_UNITS, format_interval, parse_interval
from mapping.zones import (
    DEFAULT_CHUNKS,
    VECTOR_SUFFIXES,
    Partial,
    ZoneCoverage,
    ZoneLayout,
    load_zone_layout,
    prepare_zones,
    squeeze_band,
)

if TYPE_CHECKING:
    import dask.array
    import xarray as xr


# ZoneCoverage, ZoneLayout and prepare_zones (mapping.zones) stay importable from here too.
__all__ = [
    "ALL_ZONES",
    "SUM_FIELDS",
    "UNITS",
    "ExactZoneSums",
    "density_unit_factor",
    "exact_to_float",
    "integrate_files",
    "interval_from_attrs",
    "interval_from_name",
    "zone_sums",
    "zone_sums_block",
    "zone_totals",
]

#: Columns of the last axis returned by :func:`zone_sums_block` / :func:`zone_sums`:
#: zone area (m²), area of cells with valid density (m²), storage (kg C).
SUM_FIELDS = ("area_m2", "valid_area_m2", "storage_kg")

#: Storage units and their size in kg.
UNITS = STORAGE_UNITS


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
    integer mantissa, whose per-(bin, exponent) sums are added exactly in float64 (a
    compiled pass, :mod:`mapping._exact_kernel`); the halves are then shifted into place
    as Python ints.

    Returns
    -------
    numpy.ndarray
        Object array of ``n_bins`` Python ints; :func:`exact_to_float` rounds them.
    """
    out = np.zeros(n_bins, dtype=object)
    out[:] = 0
    idx = np.ascontiguousarray(idx, dtype="int64").ravel()
    w = np.ascontiguousarray(weights, dtype="float64").ravel()
    for start in range(0, len(w), _EXACT_SLICE):
        bits = w[start : start + _EXACT_SLICE].view(np.int64)
        ix = idx[start : start + _EXACT_SLICE]
        if not len(bits):
            continue
        e0, e1, finite = exponent_range(bits)
        if not finite:
            raise ValueError("exact_bincount: weights must be finite")
        hs = np.zeros((n_bins, e1 - e0 + 1))
        ls = np.zeros((n_bins, e1 - e0 + 1))
        add_halves(ix, bits, e0, hs, ls)
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
    out = ExactZoneSums(cell_area, zone_index, n_zones, partial)(d)
    out = out.reshape((*lead, n_zones, 3))
    return out if exact else exact_to_float(out)


class ExactZoneSums:
    """Exact per-zone sums of many density rows over one block's cells.

    What :func:`zone_sums_block` computes, with what does not change between rows worked
    out once: the bins, the zone areas, and the valid area while the rows' nodata stays
    the same (realizations of one map share it). Call it on ``(n, cells)`` densities;
    returns the ``(n, n_zones, 3)`` object array of exact sums (:func:`exact_bincount`).
    """

    def __init__(
        self,
        cell_area: np.ndarray,
        zone_index: np.ndarray,
        n_zones: int,
        partial: Partial | None = None,
    ) -> None:
        area = np.asarray(cell_area, dtype="float64").ravel()
        # cells outside every zone go to an extra bin, dropped at the end: no compaction copies
        idx = np.asarray(zone_index).ravel()
        self.idx = np.where(idx < 0, n_zones, idx)
        # A cell without an area lies off the globe (a world map's rim, the gaps of an
        # interrupted projection): no land, so no area in any zone that a reprojected
        # polygon stretched over it; a density there would be carbon nowhere (refused below).
        lost = ~np.isfinite(area)
        self.lost = lost if lost.any() else None
        area = np.where(lost, 0.0, area)
        self.area = area
        self.n_zones = n_zones
        self.has_partial = partial is not None and len(partial[0]) > 0
        if self.has_partial:
            # whole cells and edge pieces in one exact sum: bins n_zones + 1 + zone for pieces
            p_cell, p_zone, p_frac = partial  # type: ignore[misc]
            self.p_cell = p_cell
            self.p_area = p_frac * area[p_cell]
            self.all_idx = np.concatenate([self.idx, np.asarray(p_zone) + n_zones + 1])
        self.n_bins = 2 * n_zones + 1 if self.has_partial else n_zones + 1
        self.zone_area = self._sums(area, self.p_area if self.has_partial else None)
        self._last_ok: np.ndarray | None = None  # the valid cells of the last row summed
        self._last_valid: np.ndarray | None = None

    def _sums(self, weights: np.ndarray, pieces: np.ndarray | None = None) -> np.ndarray:
        n = self.n_zones
        if self.has_partial:
            bins = exact_bincount(self.all_idx, np.concatenate([weights, pieces]), self.n_bins)
            return bins[:n] + bins[n + 1 :]
        return exact_bincount(self.idx, weights, self.n_bins)[:n]

    def __call__(self, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype="float64").reshape(-1, self.area.size)
        area = self.area
        out = np.empty((d.shape[0], self.n_zones, 3), dtype=object)
        for r in range(d.shape[0]):
            ok = np.isfinite(d[r])
            if self.lost is not None and (ok & self.lost).any():
                raise InputError(
                    f"{int((ok & self.lost).sum())} cells with a density have no area: the "
                    "grid's CRS cannot place them on the globe (a map reprojected beyond it?)"
                )
            out[r, :, 0] = self.zone_area
            kg = area * d[r]
            kg[~ok] = 0.0
            # realizations of one map share their nodata: the valid area is summed once
            same = self._last_ok is not None and np.array_equal(ok, self._last_ok)
            if self.has_partial:
                pv = d[r, self.p_cell]
                pok = np.isfinite(pv)
                if not same:
                    valid_area = np.where(ok, area, 0.0)
                    self._last_valid = self._sums(valid_area, np.where(pok, self.p_area, 0.0))
                pieces = np.where(pok, self.p_area * np.where(pok, pv, 0.0), 0.0)
                out[r, :, 2] = self._sums(kg, pieces)
            else:
                if not same:
                    self._last_valid = self._sums(np.where(ok, area, 0.0))
                out[r, :, 2] = self._sums(kg)
            out[r, :, 1] = self._last_valid
            self._last_ok = ok
        return out


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
    occupied = zones.occupied(row_chunks, col_chunks)
    if not occupied.any():  # nothing to skip to: one block stands for the (zero) sums
        occupied[0, 0] = True
    per_lead = []
    for k, nk in enumerate(lead_chunks):
        parts = []
        for i in range(len(row_chunks)):
            for j in range(len(col_chunks)):
                if not occupied[i, j]:  # outside every zone: adds nothing, never read
                    continue
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
        arr = squeeze_band(arr, f"density {format_interval(top, bottom) if top == top else ''}")
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


# A density unit is a mass, an optional carbon mark ("C") and an area to the power -1,
# parsed as tokens so that "kg cm-2" (per square centimetre) is not "kg C m-2".
_MASS_KG = {"kg": 1.0, "g": 1e-3, "t": 1e3, "mg": 1e3}  # lower-cased; "mg" passes only as Mg
_PER_AREA = {"m": (2, 1.0), "cm": (2, 1e4), "km": (2, 1e-6), "ha": (1, 1e-4)}  # power, 1/m²
_MASS_WORD = re.compile(r"(kg|g|t|mg)(c?)", re.IGNORECASE)
_UNIT_TOKEN = re.compile(r"\s*(?:([A-Za-z]+)(?:\^|\*\*)?([-+]?\d+)?|([/*.·]))")
_SUPERSCRIPTS = str.maketrans({"⁻": "-", "⁺": "+", "¹": "1", "²": "2", "³": "3"})


def _unit_factors(units: str) -> list[tuple[str, int]] | None:
    # "kg C m-2", "kgC/m^2", "t ha⁻¹" -> [(word, power), ...]; a "/" negates the power of
    # the one factor after it. None when the text is not such a product.
    text = units.translate(_SUPERSCRIPTS).strip()
    factors: list[tuple[str, int]] = []
    pos, divided, pending = 0, False, False
    while pos < len(text):
        m = _UNIT_TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return None
        pos = m.end()
        word, power, op = m.groups()
        if op == "/":
            if divided or not factors:
                return None
            divided = pending = True
        elif word:
            p = int(power) if power else 1
            factors.append((word, -p if pending else p))
            pending = False
    return None if pending else factors


def density_unit_factor(units: str | None) -> float:
    """Factor turning a density raster's ``units`` tag into kg C m⁻² (missing tag: 1).

    The tag is read as tokens: a mass (``kg``, ``g``, ``t``, ``Mg``; case aside), an
    optional carbon mark ``C`` (also joined: ``kgC``), and an area (``m``, ``cm``, ``km``
    squared, or ``ha``) written ``m-2``, ``m^-2``, ``m**-2``, ``m⁻²`` or ``/m2``. So
    ``kg C m-2`` is 1, ``kg cm-2`` (per square centimetre) is 1e4 and ``t C ha-1`` 0.1.

    Raises
    ------
    ValueError
        The unit is not an areal carbon density this module knows, or is in ``mg``
        (milligrams: refused rather than guessed to mean Mg).

    Examples
    --------
    >>> density_unit_factor("kg C m-2"), density_unit_factor("g cm-2")
    (1.0, 10.0)
    """
    if units is None or not str(units).strip():
        return 1.0
    bad = ValueError(f"units {units!r} is not a carbon density (use kg C m-2, g m-2 or t/ha)")
    factors = _unit_factors(str(units))
    if not factors:
        raise bad
    (word, power), *rest = factors
    mass = _MASS_WORD.fullmatch(word)
    if mass is None or power != 1:
        raise bad
    if mass.group(1) == "mg":
        raise ValueError(f"units {units!r}: mg is milligrams; write Mg (megagrams) or t")
    if not mass.group(2) and rest and rest[0][0] in ("C", "c") and rest[0][1] == 1:
        rest = rest[1:]  # the carbon mark
    if len(rest) != 1 or rest[0][0].lower() not in _PER_AREA:
        raise bad
    area_power, per_m2 = _PER_AREA[rest[0][0].lower()]
    if rest[0][1] != -area_power:
        raise bad
    return _MASS_KG[mass.group(1).lower()] * per_m2


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
        info = io.raster_info(p) if band is None else None  # band 1's header
        if info is not None and info.count > 1:
            n = info.count
            raise InputError(f"{p}: has {n} bands; choose the density band with --band (1 to {n})")
        arr = io.open_raster(p, band=band or 1, chunks=chunks)
        loose = (info or io.raster_info(p, band=band or 1)).loose_scale
        if loose is not None:
            warnings.warn(
                f"{p}: tagged scale_factor={loose[0]:g}, add_offset={loose[1]:g}, but the band "
                "has no scale or offset of its own (GDAL's), so its values are read unscaled; "
                f"set them with gdal_edit.py -scale {loose[0]:g} -offset {loose[1]:g} FILE",
                UserWarning,
                stacklevel=2,
            )
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
    _warn_implausible_density(out, source_of)
    out["_total"] = out["zone"].eq(ALL_ZONES) & out["zone_code"].isna()
    out = out.sort_values(["top_cm", "bottom_cm", "_total"], kind="stable").drop(columns="_total")
    out.attrs["storage_unit"] = unit
    return out.reset_index(drop=True)


_QUANTILE_STATISTICS = re.compile(
    r"(lower|upper|median|min|max|minimum|maximum|quantile|percentile|[pq]\d+(\.\d+)?"
    r"|\d+(st|nd|rd|th)_?percentile|(quantile|percentile)_?[\d.]+)"
)
_SPREAD_STATISTICS = frozenset(
    {"std", "sd", "stdev", "stddev", "standard_deviation", "variance", "var", "se", "cv",
     "uncertainty", "relative_uncertainty", "iqr", "range"}
)  # fmt: skip
_MASK_STATISTICS = frozenset({"aoa", "di", "dissimilarity"})


def _statistic_kind(stat: str) -> str | None:
    """Why a map of statistic ``stat`` (lower case, words joined by ``_``) does not sum to
    a zone total, or ``None`` for a mean (or a realization, a truth, an unknown word)."""
    if _QUANTILE_STATISTICS.fullmatch(stat):
        return ("the sum of a quantile map is not that quantile of the total (pixel errors "
                "are not perfectly correlated; the Monte Carlo ranges are)")  # fmt: skip
    if stat in _SPREAD_STATISTICS:
        return "a sum of standard deviations is not the uncertainty of the total"
    if stat in _MASK_STATISTICS:
        return "it is an area-of-applicability map, not a density"
    return None


def _check_statistic(path: Path, attrs: Mapping[str, Any], allow: bool) -> None:
    """Refuse a map tagged or named as a quantile, spread or AOA statistic (unless
    ``allow``).

    A mean map (and a realization or a known truth) sums to a zone total; the sum of a
    95 % quantile map is not the 95 % bound of the total. The tag ``statistic`` (any case)
    decides; without it, a word of the file name does (``soc_0_30cm_upper.tif``,
    ``ocs_0-30cm_Q0.95.tif``, ``..._std.tif``).
    """
    if allow:
        return
    tag = next((v for k, v in attrs.items() if str(k).lower() == "statistic"), "")
    stat = re.sub(r"[\s-]+", "_", str(tag).strip().lower())
    if stat:
        why, said = _statistic_kind(stat), f"is tagged statistic={tag}"
    else:  # the name's words: soc, 0, 30cm, upper; q0.95 stays one word
        words = re.split(r"[_\-\s]+", path.stem.lower())
        found = [(w, _statistic_kind(w)) for w in words]
        stat, why = next(((w, k) for w, k in found if k), ("", None))
        said = f"is named as a '{stat}' map"
    if why is None:
        return
    raise InputError(
        f"{path}: map {said}, not a mean density: {why}; integrate the mean map, or pass "
        "--allow-statistic to sum it anyway"
    )


#: A zone's mean density above this many kg C m⁻² per cm of the interval is twice what pure
#: peat holds (about 50 % C at 0.1 g cm⁻³: 0.5): the map is in another unit (Mg ha⁻¹ is 10
#: times kg m⁻², g m⁻² 1000 times).
DENSITY_PER_CM_MAX = 1.0


def _warn_implausible_density(table: pd.DataFrame, source_of: Mapping[Any, Path]) -> None:
    """Warn where the zones' mean density is more than any soil holds over the interval."""
    every = table[table["zone"] == ALL_ZONES]
    for r in every.itertuples():
        thick = float(r.bottom_cm) - float(r.top_cm)
        density = float(r.mean_density_kg_m2)
        if thick > 0 and density / thick > DENSITY_PER_CM_MAX:
            path = source_of.get((float(r.top_cm), float(r.bottom_cm)), "")
            warnings.warn(
                f"{path}: the zones' mean density is {density:,.4g} kg C m-2 over "
                f"{format_interval(r.top_cm, r.bottom_cm)} cm, {density / thick:.3g} per cm: "
                f"twice what pure peat holds (~0.5); is the map in another "
                "unit (g m-2, Mg ha-1)? Tag its units (e.g. gdal_edit.py -mo units='Mg C ha-1')",
                UserWarning,
                stacklevel=3,
            )
