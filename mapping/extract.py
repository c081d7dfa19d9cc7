"""Covariate values at profile locations.

Profiles are reprojected from their own CRS into the grid's CRS with pyproj
(``always_xy=True``: longitude/easting first), located in the grid's cells and read from
the lazy covariate stack. Only the chunks that hold at least one profile are computed:
the points are taken with Dask's vectorised point indexing (``vindex``), whose graph
depends on those chunks alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from mapping.covariates import layer_valid
from mapping.exceptions import GridMismatchError, InputError
from mapping.grid import Grid

__all__ = ["ExtractResult", "extract_at_points"]


@dataclass(frozen=True)
class ExtractResult:
    """Covariates at points.

    Attributes
    ----------
    table
        The input rows (same order and index) with ``x``, ``y`` in the grid's working CRS (metres, :attr:`Grid.working_crs`), ``row``
        and ``col`` of the cell (-1 outside the grid), and one column per covariate:
        ``float`` for continuous layers (NaN on nodata or outside), nullable ``Int64``
        codes for categorical ones (``<NA>`` on nodata or outside).
    outside
        Ids of points outside the grid (or with missing coordinates), in input order.
    nodata
        Ids of points inside the grid on a cell where at least one covariate has no data.
    """

    table: pd.DataFrame
    outside: list = field(default_factory=list)
    nodata: list = field(default_factory=list)

    def complete(self) -> pd.DataFrame:
        """Rows inside the grid whose covariates all have data."""
        mask = self.table["row"].ge(0).to_numpy().copy()
        for name in self.covariates:
            mask &= self.table[name].notna().to_numpy()
        return self.table.loc[mask]

    @property
    def covariates(self) -> list[str]:
        return list(self.table.attrs.get("covariates", []))


def extract_at_points(
    stack: xr.Dataset,
    grid: Grid,
    points: pd.DataFrame,
    lon: str = "lon",
    lat: str = "lat",
    crs: str | pyproj.CRS = "EPSG:4326",
    id_column: str = "profile_id",
) -> ExtractResult:
    """Read every covariate of ``stack`` at the cells that contain ``points``.

    Parameters
    ----------
    stack
        Covariate stack on ``grid`` (:func:`mapping.covariates.build_stack`).
    grid
        The stack's grid; checked against the stack's coordinates.
    points
        One row per point (e.g. a profile or a profile x depth interval).
    lon, lat
        Coordinate columns, in ``crs`` (easting/northing for a projected ``crs``). On a
        longitude/latitude grid, longitudes are wrapped by ±360° onto the grid
        (:meth:`Grid.rowcol`): -175 lies on a grid spanning 170..190.
    crs
        CRS of the coordinates.
    id_column
        Column naming each point in ``outside`` and ``nodata``.

    Returns
    -------
    ExtractResult

    Raises
    ------
    GridMismatchError
        The stack does not lie on ``grid``.
    InputError
        A coordinate or id column is missing, or every point lies outside the grid.
    """
    on = Grid.from_dataarray(stack)
    if on != grid:
        raise GridMismatchError(f"covariate stack is on {on}, expected {grid}")
    for col in (lon, lat, id_column):
        if col not in points.columns:
            raise InputError(
                f"points: column {col!r} is missing (have {', '.join(map(str, points.columns))})"
            )
    try:
        to_grid = pyproj.Transformer.from_crs(
            pyproj.CRS.from_user_input(crs), grid.crs, always_xy=True
        )
    except pyproj.exceptions.CRSError as exc:
        raise InputError(f"points: CRS {crs!r} is not understood ({exc})") from None
    px = pd.to_numeric(points[lon], errors="coerce").to_numpy(dtype="float64")
    py = pd.to_numeric(points[lat], errors="coerce").to_numpy(dtype="float64")
    x, y = to_grid.transform(px, py, errcheck=False)
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    rows, cols = grid.rowcol(x, y)
    inside = grid.contains(rows, cols) & np.isfinite(x) & np.isfinite(y)
    ids = points[id_column].to_numpy()
    if not inside.any():
        raise InputError(
            f"points: all {len(points)} points lie outside the grid "
            f"({grid.crs.name}, bounds {tuple(round(b, 6) for b in grid.bounds)}); "
            f"check the coordinate columns {lon!r}/{lat!r} and their CRS {crs!s}"
        )

    r_in, c_in = rows[inside], cols[inside]
    names = [str(n) for n in stack.data_vars]
    lazy = [stack[n].data.vindex[r_in, c_in] for n in names]
    lazy_valid = [layer_valid(stack[n]).data.vindex[r_in, c_in] for n in names]
    import dask

    values = dask.compute(*lazy, *lazy_valid)
    vals, valids = values[: len(names)], values[len(names) :]
    all_valid = np.logical_and.reduce([np.asarray(v, dtype=bool) for v in valids])

    table = points.copy()
    # x, y: metres of the grid's working CRS (the grid's CRS when projected), the plane in
    # which kriging, variograms, kNNDM and the area of applicability measure distances.
    table["x"], table["y"] = grid.to_working(x, y)
    table["row"] = np.where(inside, rows, -1)
    table["col"] = np.where(inside, cols, -1)
    for name, v, ok in zip(names, vals, valids, strict=True):
        layer = stack[name]
        ok = np.asarray(ok, dtype=bool)
        if layer.attrs.get("kind") == "categorical":
            full = np.zeros(len(points), dtype="int64")
            full[inside] = np.asarray(v, dtype="int64")
            good = np.zeros(len(points), dtype=bool)
            good[inside] = ok
            col = pd.array(full, dtype="Int64")
            col[~good] = pd.NA
            table[name] = col
        else:
            full = np.full(len(points), np.nan, dtype="float64")
            full[inside] = np.where(ok, np.asarray(v, dtype="float64"), np.nan)
            table[name] = full
    table.attrs["covariates"] = names
    outside_ids = list(dict.fromkeys(ids[~inside].tolist()))
    nodata_mask = np.zeros(len(points), dtype=bool)
    nodata_mask[inside] = ~all_valid
    nodata_ids = list(dict.fromkeys(ids[nodata_mask].tolist()))
    return ExtractResult(table=table, outside=outside_ids, nodata=nodata_ids)
