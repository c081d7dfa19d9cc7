"""The covariate stack: rasters of any CRS, resolution and extent, aligned lazily onto one Grid.

Each covariate becomes one variable of an :class:`xarray.Dataset` on the target
:class:`~mapping.grid.Grid`. Nothing but raster headers is read when the stack is built:
every chunk is a Dask task that opens the source and reads only the window it needs
(:func:`mapping.io.read_warped`), so a hemisphere-wide stack costs nothing until
prediction computes a chunk. Coordinates are transformed exactly for every cell, so a
chunk holds the same values whatever the chunking (``nearest``, ``mode`` and ``average``
through GDAL's warper, ``bilinear`` as a plain four-neighbour interpolation; see
``docs/conventions.md``). rioxarray's ``rio.reproject`` loads its whole input into memory,
and odc-geo's dask-aware warp is not needed for a per-chunk read of files, hence the
per-task read.

Conventions of the stack:

* continuous layers are ``float32`` with NaN for nodata (and outside the source);
* categorical layers keep integer codes (``int32``), with ``attrs["nodata"]`` =
  :data:`CATEGORICAL_NODATA` marking nodata, and ``attrs["kind"] = "categorical"``;
* every layer has ``attrs`` ``kind``, ``resampling``, ``source``, ``band``, ``source_crs``,
  ``source_resolution`` and ``units`` when the file declares them;
* the stack carries the grid's CRS and transform: ``Grid.from_dataarray(stack) == grid``
  (also ``stack.grid`` once :mod:`mapping.grid` is imported);
* :func:`stack_mask` is the lazy mask of cells where every layer is valid.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import xarray as xr
from affine import Affine

from mapping.exceptions import ConfigError, InputError
from mapping.grid import Grid, _angular_factor
from mapping.io import RasterInfo, raster_info, read_decimated, read_warped, wrap_longitudes

__all__ = [
    "CATEGORICAL_NODATA",
    "LayerSummary",
    "StackSummary",
    "build_stack",
    "layer_source",
    "stack_mask",
    "summarize_stack",
    "target_grid",
]

CATEGORICAL_NODATA = int(np.iinfo("int32").min)
"""Code of a nodata cell in a categorical layer (``int32``)."""

RESERVED_NAMES = frozenset({"x", "y", "row", "col", "spatial_ref", "band", "valid"})
"""Names a covariate cannot take: stack coordinates and columns of the extraction table."""

_CONTINUOUS = ("nearest", "bilinear", "cubic", "average")
_CATEGORICAL = ("nearest", "mode")


# ---------------------------------------------------------------------- target grid
def target_grid(grid_config: Any, covariates: Sequence[Any]) -> Grid:
    """The target grid named by a config's ``grid:`` section.

    * ``crs`` + ``resolution`` (+ ``bounds``): a north-up grid; without ``bounds`` it
      covers the first covariate's extent (transformed into ``crs``, snapped outwards to
      whole cells from the origin);
    * otherwise ``like: first_covariate`` (the default) or ``like: PATH``: the grid of that
      raster, read from its header.

    Raises
    ------
    ConfigError
        Incomplete grid definition, or no covariate to take the grid from.
    """
    crs = getattr(grid_config, "crs", None)
    res = getattr(grid_config, "resolution", None)
    bounds = getattr(grid_config, "bounds", None)
    like = getattr(grid_config, "like", "first_covariate")
    if crs is not None or res is not None or bounds is not None:
        if crs is None or res is None:
            raise ConfigError("grid: give both crs and resolution (and optionally bounds)")
        if bounds is None:
            if not covariates:
                raise ConfigError("grid.bounds: required when there are no covariates")
            first = _info(covariates[0])
            to = pyproj.Transformer.from_crs(
                first.crs, pyproj.CRS.from_user_input(crs), always_xy=True
            )
            left, bottom, right, top = to.transform_bounds(*first.bounds, densify_pts=21)
            if not all(math.isfinite(v) for v in (left, bottom, right, top)):
                raise ConfigError(
                    f"grid.bounds: the extent of {first.path} cannot be expressed in {crs}; give bounds"
                )
            xres, yres = (res, res) if np.isscalar(res) else res
            bounds = (
                math.floor(left / xres) * xres,
                math.floor(bottom / yres) * yres,
                math.ceil(right / xres) * xres,
                math.ceil(top / yres) * yres,
            )
        return _one_globe(Grid.from_bounds(tuple(bounds), res, crs), "grid.bounds")
    if like in (None, "first_covariate"):
        if not covariates:
            raise ConfigError(
                "grid.like: first_covariate needs at least one covariate; "
                "or give grid.crs, grid.resolution and grid.bounds"
            )
        info = _info(covariates[0])
    else:
        info = raster_info(like)
    return _one_globe(Grid(info.crs, info.transform, info.shape), f"grid.like ({info.path})")


def _angle_unit(crs: Any) -> str:
    """``degrees``, ``grads``, ...: the CRS's angular unit, plural."""
    info = crs.axis_info[0] if crs.axis_info else None
    return f"{info.unit_name}s" if info is not None and info.unit_name else "degrees"


def _one_globe(grid: Grid, source: str) -> Grid:
    """``grid``, unless it is geographic and wider than 360° of longitude: its cells past
    the first turn would be the same land again, mapped and counted twice in every total."""
    if grid.is_geographic:
        left, _, right, _ = grid.bounds
        width = right - left
        turn = 360.0 / _angular_factor(grid.crs)  # 400 in grads
        if width > turn + 1e-6 * abs(grid.transform.a):
            raise ConfigError(
                f"{source}: {width:g} {_angle_unit(grid.crs)} of longitude, more than the "
                f"globe's {turn:.6g}: the cells past "
                "the first turn are the same land again and would count twice in every total; "
                "crop the grid to one turn (e.g. drop a repeated wrap-around column)"
            )
    return grid


def _info(cov: Any) -> RasterInfo:
    return raster_info(
        cov.path, band=getattr(cov, "band", 1), variable=getattr(cov, "variable", None)
    )


# ---------------------------------------------------------------------- the stack
def build_stack(
    covariates: Sequence[Any], grid: Grid | None = None, chunks: int = 512
) -> xr.Dataset:
    """Align covariate rasters lazily onto ``grid``: one Dask-backed variable per covariate.

    Parameters
    ----------
    covariates
        :class:`~mapping.config.CovariateConfig` objects (or anything with ``name``,
        ``path``, ``kind`` and optionally ``resampling``/``resampling_method``, ``band``,
        ``variable``).
    grid
        Target grid; default: the first covariate's grid.
    chunks
        Chunk edge in cells (square chunks, as :meth:`Grid.tiles`).

    Returns
    -------
    xarray.Dataset
        Variables ``(y, x)`` on ``grid``; continuous ``float32`` with NaN for nodata,
        categorical ``int32`` codes with ``attrs["nodata"]``. Only headers have been read.

    Raises
    ------
    InputError
        A raster is missing, unreadable or truncated, a resampling does not suit the
        layer's kind, or a raster does not overlap the grid.
    MissingCRSError
        A raster has no CRS.
    """
    import dask.array as da
    from dask.base import tokenize

    if not covariates:
        raise ConfigError("covariates: at least one covariate is needed to build a stack")
    if grid is None:
        grid = target_grid(None, covariates)
    first = _info(covariates[0])
    if len(covariates) > 1 and Grid(first.crs, first.transform, first.shape) == grid:
        # the first covariate defines the grid: when no other covariate overlaps it, that
        # file (its CRS or georeferencing) is the odd one out, not the next one checked
        misses = []
        for cov in covariates[1:]:
            try:
                _check_overlap(cov.name, _info(cov), grid)
            except InputError:
                misses.append(cov)
            else:
                break
        if len(misses) == len(covariates) - 1:
            other = _info(misses[0])
            raise InputError(
                f"{first.path}: covariate {covariates[0].name!r} defines the grid "
                f"(grid.like: first_covariate; {_crs_name(first.crs)}, bounds "
                f"{_fmt_bounds(first.bounds)}) but no other covariate overlaps it (e.g. "
                f"{misses[0].name!r}: {_crs_name(other.crs)}, bounds "
                f"{_fmt_bounds(other.bounds)}); check this file's CRS, or set grid.crs, "
                "grid.resolution and grid.bounds"
            )
    rows, cols = grid.chunk_sizes(chunks)
    if len(rows) * len(cols) > 1_000_000:
        # a graph of millions of tasks per layer fills memory before any pixel is read
        where = f"{first.path}: " if Grid(first.crs, first.transform, first.shape) == grid else ""
        raise InputError(
            f"{where}the grid is {grid.shape[0]} x {grid.shape[1]} cells, "
            f"{len(rows) * len(cols)} chunks of {chunks} (limit 1000000); check the grid's "
            "source, or raise prediction.chunks or the grid's resolution"
        )
    layers: dict[str, xr.DataArray] = {}
    for cov in covariates:
        if cov.name in RESERVED_NAMES:
            raise ConfigError(
                f"covariate name {cov.name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))}); rename it"
            )
        info = _info(cov)
        kind = getattr(cov, "kind", "continuous")
        scale = warp_scale(info, grid)
        method, reason = _resampling(cov, kind, scale)
        _check_overlap(cov.name, info, grid)
        if kind == "categorical":
            if np.dtype(info.dtype).kind == "f":
                raise InputError(
                    f"{info.path}: covariate {cov.name!r} is categorical but stored as "
                    f"{info.dtype}; store integer class codes"
                )
            if info.scaled:
                raise InputError(
                    f"{info.path}: covariate {cov.name!r} is categorical but has a scale "
                    f"({info.scale:g}) or offset ({info.offset:g}); class codes are not scaled"
                )
            dtype, nodata = "int32", CATEGORICAL_NODATA
        else:
            dtype, nodata = "float32", float("nan")
        stat = info.path.stat() if info.path.exists() else None
        token = tokenize(info.source, info.band, stat and (stat.st_size, stat.st_mtime_ns), grid,
                         method, dtype, scale, rows, cols)  # fmt: skip
        arr = da.map_blocks(
            _warp_block,
            chunks=(rows, cols),
            dtype=dtype,
            meta=np.empty((0, 0), dtype=dtype),
            name=f"warp-{cov.name}-{token}",
            info=info,
            grid=grid,
            resampling=method,
            out_dtype=dtype,
            nodata=nodata,
            scale=scale,
        )
        attrs: dict[str, Any] = {
            "kind": kind,
            "resampling": method,
            "resampling_reason": reason,
            "source": str(info.path),
            "band": info.band,
            "source_crs": _crs_name(info.crs),
            "source_resolution": [float(v) for v in info.resolution],
            "source_shape": [int(v) for v in info.shape],
        }
        if getattr(cov, "variable", None):
            attrs["variable"] = cov.variable
        if info.units:
            attrs["units"] = info.units
        if kind == "categorical":
            attrs["nodata"] = CATEGORICAL_NODATA
        layers[cov.name] = grid.wrap(arr, name=cov.name, attrs=attrs)
    ds = xr.Dataset(layers)
    return grid.attach(ds)


def _warp_block(
    *,
    info: RasterInfo,
    grid: Grid,
    resampling: str,
    out_dtype: str,
    nodata: float,
    scale: tuple[float, float] | None,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
    tile = grid.window(slice(r0, r1), slice(c0, c1))
    return read_warped(
        info,
        crs=tile.crs.to_wkt(),
        transform=tile.transform,
        shape=tile.shape,
        resampling=resampling,
        dtype=out_dtype,
        nodata=nodata,
        scale=scale,
    )


FINER = 0.75
"""A source is finer than the grid when a grid cell spans more than 1/0.75 source pixels
along both axes (:func:`warp_scale` below this); then its pixels are aggregated."""


def default_resampling(kind: str, scale: tuple[float, float] | None) -> tuple[str, str]:
    """Resampling by direction, and why: a source finer than the grid is aggregated (the
    area mean, ``average``; the majority class, ``mode``), a coarser or equal one is
    interpolated (``bilinear``; ``nearest`` for classes)."""
    finer = scale is not None and max(scale) < FINER
    if kind == "categorical":
        return ("mode", "source finer than the grid") if finer else (
            "nearest", "source not finer than the grid")  # fmt: skip
    if finer:
        return "average", "source finer than the grid"
    return "bilinear", "source not finer than the grid"


def _resampling(cov: Any, kind: str, scale: tuple[float, float] | None = None) -> tuple[str, str]:
    """The resampling of one layer and why: the config's, else by direction."""
    if hasattr(cov, "resampling"):  # a config: its property resampling_method is a fixed default
        method = cov.resampling
    else:
        method = getattr(cov, "resampling_method", None)
    reason = "set in the config"
    if method is None:
        method, reason = default_resampling(kind, scale)
    allowed = _CATEGORICAL if kind == "categorical" else _CONTINUOUS
    if kind not in ("continuous", "categorical"):
        raise ConfigError(f"covariate {cov.name!r}: kind must be continuous or categorical")
    if method not in allowed:
        raise ConfigError(
            f"covariate {cov.name!r}: resampling {method!r} does not suit a {kind} layer "
            f"(use {' or '.join(allowed)})"
        )
    return method, reason


def _crs_name(crs: pyproj.CRS) -> str:
    auth = crs.to_authority(min_confidence=100)
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def _check_overlap(name: str, info: RasterInfo, grid: Grid) -> None:
    """Raise when a source raster and the grid share no area (both ways tried)."""
    box = _transformed_bounds(grid.crs, info.crs, grid.bounds)
    if box is not None:
        # a lon/lat source that passes ±180° covers its longitudes ±360° too, as it is read
        if _intersects(box, (wrap_longitudes(info) or info).bounds):
            return
    else:
        back = _transformed_bounds(info.crs, grid.crs, info.bounds)
        if back is None or _intersects(back, grid.bounds):
            return  # cannot tell: let the warp decide
    raise InputError(
        f"{info.path}: covariate {name!r} ({_crs_name(info.crs)}, bounds "
        f"{_fmt_bounds(info.bounds)}) does not overlap the target grid ({_crs_name(grid.crs)}, "
        f"bounds {_fmt_bounds(grid.bounds)})"
    )


def _transformed_bounds(
    src: pyproj.CRS, dst: pyproj.CRS, bounds: tuple[float, float, float, float]
) -> tuple[float, float, float, float] | None:
    if src == dst:
        return bounds
    try:
        to = pyproj.Transformer.from_crs(src, dst, always_xy=True)
        out = to.transform_bounds(*bounds, densify_pts=21)
    except pyproj.exceptions.ProjError:
        return None
    if not all(math.isfinite(v) for v in out):
        return None
    left, bottom, right, top = out
    if dst.is_geographic and left > right:  # crosses the antimeridian: keep the whole width
        left, right = -180.0, 180.0
    return (left, bottom, right, top)


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fmt_bounds(b: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def warp_scale(info: RasterInfo, grid: Grid) -> tuple[float, float] | None:
    """Destination pixels per source pixel (x, y), GDAL's ``XSCALE``/``YSCALE`` for the warp.

    GDAL derives the footprint of its resampling kernels (``cubic`` here) from the ratio of
    each processing window's size to its source window's size, so the same cell can get a
    different value when warped in a different chunk. Fixing the ratio once per layer, from
    the median over a lattice of cells of the bounding box of a target cell mapped into
    source pixels, takes that dependence away. ``None`` when it cannot be estimated (the
    warp then falls back on GDAL's own ratio).
    """
    ny, nx = grid.shape
    rows = np.linspace(0, ny - 1, min(ny, 9))
    cols = np.linspace(0, nx - 1, min(nx, 9))
    rr, cc = (v.ravel() for v in np.meshgrid(rows, cols, indexing="ij"))
    to = pyproj.Transformer.from_crs(grid.crs, info.crs, always_xy=True)
    inv = ~info.transform
    pts = []
    for dc, dr in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
        x, y = grid.transform @ (cc + 0.5 + dc, rr + 0.5 + dr)
        sx, sy = to.transform(x, y, errcheck=False)
        pts.append(inv @ (np.asarray(sx), np.asarray(sy)))
    (c0, r0), (c1, r1), (c2, r2) = pts
    with np.errstate(invalid="ignore"):
        span_x = np.abs(c1 - c0) + np.abs(c2 - c0)
        span_y = np.abs(r1 - r0) + np.abs(r2 - r0)
    if info.crs.is_geographic:  # a step across the antimeridian is not a 360° footprint
        span_x = np.where(span_x * abs(info.transform.a) > 180.0, np.nan, span_x)
    ok = np.isfinite(span_x) & np.isfinite(span_y) & (span_x > 0) & (span_y > 0)
    if not ok.any():
        return None
    return (float(1.0 / np.median(span_x[ok])), float(1.0 / np.median(span_y[ok])))


# ---------------------------------------------------------------------- the mask
def layer_valid(layer: xr.DataArray) -> xr.DataArray:
    """Lazy boolean: where one stack layer has data."""
    if layer.attrs.get("kind") == "categorical" or layer.dtype.kind in "iu":
        return layer != layer.attrs.get("nodata", CATEGORICAL_NODATA)
    return layer.notnull()


def stack_mask(ds: xr.Dataset) -> xr.DataArray:
    """Lazy boolean ``(y, x)`` mask: True where *every* layer of the stack has data."""
    if not ds.data_vars:
        raise InputError("the covariate stack has no layers")
    valid = functools.reduce(lambda a, b: a & b, (layer_valid(ds[name]) for name in ds.data_vars))
    valid.name = "valid"
    valid.attrs = {"long_name": "all covariates have data", "units": "1"}
    return valid


def layer_source(layer: xr.DataArray) -> Path:
    """The file a stack layer was read from."""
    return Path(layer.attrs["source"])


# ---------------------------------------------------------------------- report
@dataclass(frozen=True)
class LayerSummary:
    """One layer of a :class:`StackSummary`."""

    name: str
    kind: str
    resampling: str
    source: str
    source_crs: str
    source_resolution: tuple[float, float]
    units: str | None
    nodata_share: float
    categories: tuple[int, ...] | None = None
    resampling_reason: str = ""


@dataclass(frozen=True)
class StackSummary:
    """What ``socmap validate`` reports of an aligned stack, from a sample of its cells."""

    grid: Grid
    layers: list[LayerSummary]
    nodata_share: float
    """Share of grid cells where at least one layer has no data."""
    sample_shape: tuple[int, int]
    overviews_used: dict[str, bool] = field(default_factory=dict)
    valid_sample: np.ndarray | None = None
    """The sample itself: ``True`` where every layer has data (``sample_shape``); each
    sampled cell stands for ``sample_factor`` x ``sample_factor`` grid cells."""
    sample_factor: int = 1

    def data_chunk_share(self, chunks: int) -> float:
        """Share of the grid's cells in chunks of ``chunks`` x ``chunks`` cells that hold
        data in at least one sampled cell (a run writes no file for the others)."""
        if self.valid_sample is None:
            return 1.0
        # a sampled cell stands for the grid cell at its centre (nearest-neighbour warp)
        return self.grid.chunk_cover(self.valid_sample, self.sample_factor, chunks, at=0.5)

    def lines(self) -> list[str]:
        g = self.grid
        ny, nx = g.shape
        xr_, yr_ = g.resolution
        lines = [
            f"grid:       {_crs_name(g.crs)} ({g.crs.name}), {ny} x {nx} cells (ny x nx), "
            f"resolution {xr_:g} x {yr_:g}, bounds {_fmt_bounds(g.bounds)}",
            f"covariates: {len(self.layers)} layer(s); nodata share estimated from "
            f"{self.sample_shape[0]} x {self.sample_shape[1]} sampled cells",
        ]
        for layer in self.layers:
            sx, sy = layer.source_resolution
            extra = f", units {layer.units}" if layer.units else ""
            if layer.categories is not None:
                shown = ", ".join(str(c) for c in layer.categories[:12])
                more = ", ..." if len(layer.categories) > 12 else ""
                extra += f", categories [{shown}{more}]"
            why = f" ({layer.resampling_reason})" if layer.resampling_reason else ""
            lines.append(
                f"  {layer.name}: {layer.kind}, {layer.resampling}{why}; source {layer.source_crs} "
                f"at {sx:g} x {sy:g}{extra}; nodata {100 * layer.nodata_share:.1f} %"
            )
        lines.append(f"  all layers valid: {100 * (1 - self.nodata_share):.1f} % of cells")
        return lines


#: Codes that rasters use for "no data": read as values where the file does not declare
#: them, they are covariate values far beyond any profile's (-9999 m of elevation).
NODATA_CODES = (-9999.0, -99999.0, -32768.0, -32767.0, float(np.finfo("float32").min))


#: A continuous layer of integers with at most this many distinct values (in the sample)
#: looks like class codes.
MAX_CLASS_CODES = 32


def _warn_codes_read_as_values(
    values: np.ndarray, info: RasterInfo, name: Hashable, resampling: Any
) -> None:
    """Warn where a layer read as continuous holds a few integer codes (land cover left
    at ``kind: continuous``): interpolated, codes 1 and 3 make a 2 that is no class."""
    if values.dtype.kind not in "iu" or values.size == 0:
        return
    codes = np.unique(values)
    if 2 <= codes.size <= MAX_CLASS_CODES:
        shown = ", ".join(str(int(c)) for c in codes[:8]) + (", ..." if codes.size > 8 else "")
        warnings.warn(
            f"{info.path}: covariate {name!r} holds {codes.size} integer codes ({shown}) and "
            f"is read as continuous ({resampling or 'bilinear'} resampling averages them); if "
            "they are classes, set kind: categorical",
            UserWarning,
            stacklevel=3,
        )


def _check_undeclared_nodata(
    data: np.ndarray,
    valid: np.ndarray,
    source: tuple[Any, Any],
    coarse: Grid,
    path: Any,
    name: Hashable,
) -> None:
    """Raise where a layer's valid values hold a common nodata code on the grid.

    ``data`` and ``valid`` are the decimated read of the source and where it has data,
    ``source`` its ``(transform, crs)``; only the codes that land on the ``coarse`` grid
    count (a global file may hold -9999 far from the grid)."""
    if data.dtype.kind not in "fiu":
        return
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    as_float = data.astype("float64")  # every code and float32 value exactly
    for code in NODATA_CODES:
        hit = valid & (as_float == code)
        if not hit.any():
            continue
        on_grid = np.zeros(coarse.shape, dtype="uint8")
        reproject(hit.astype("uint8"), on_grid, src_transform=source[0],
                  src_crs=source[1].to_wkt(), dst_transform=coarse.transform,
                  dst_crs=coarse.crs.to_wkt(), src_nodata=None, dst_nodata=0,
                  resampling=Resampling.nearest)  # fmt: skip
        if on_grid.any():
            raise InputError(
                f"{path}: covariate {name!r}: {int(on_grid.sum())} of {on_grid.size} sampled "
                f"cells of the grid hold {code:g}, a nodata code the file does not declare; "
                f"they would be read as values (declare it, e.g. gdal_edit.py -a_nodata "
                f"{code:g} FILE)"
            )


def summarize_stack(stack: xr.Dataset, *, sample: int = 256) -> StackSummary:
    """Summarise a stack without computing it: grid, layers and nodata shares.

    The nodata share of each layer is *estimated* on a systematic sample of the grid: a
    coarse grid of at most ``sample x sample`` cells covering the same extent. Each
    source is read decimated (GDAL serves that from overviews when the file has them,
    otherwise it subsamples the full-resolution blocks, never holding more than about
    ``4 * sample`` squared pixels) and warped onto the coarse grid by nearest neighbour, so
    the share is that of the coarse cells' centres; its sampling error is about
    ``1 / sample`` for a compact nodata region.

    Raises
    ------
    InputError
        A layer is all nodata, or has no data anywhere on the grid.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    grid = Grid.from_dataarray(stack)
    ny, nx = grid.shape
    f = max(1, math.ceil(max(ny, nx) / sample))
    coarse = Grid(
        grid.crs,
        grid.transform @ Affine.scale(f, f),
        (math.ceil(ny / f), math.ceil(nx / f)),
    )
    all_valid = np.ones(coarse.shape, dtype=bool)
    layers: list[LayerSummary] = []
    used: dict[str, bool] = {}
    for name in stack.data_vars:
        layer = stack[name]
        a = layer.attrs
        info = raster_info(a["source"], band=int(a.get("band", 1)), variable=a.get("variable"))
        read, transform, from_overview = read_decimated(info, max_size=4 * sample, masked=True)
        used[name] = from_overview
        data = np.asarray(read.data)
        src_valid = ~np.ma.getmaskarray(read)  # the file's nodata and mask bands
        if data.dtype.kind == "f":
            src_valid &= ~np.isnan(data)
        if not src_valid.any():
            raise InputError(f"{info.path}: covariate {name!r} is all nodata")
        valid_src = src_valid.astype("uint8")
        dst = np.zeros(coarse.shape, dtype="uint8")
        reproject(
            valid_src,
            dst,
            src_transform=transform,
            src_crs=info.crs.to_wkt(),
            dst_transform=coarse.transform,
            dst_crs=coarse.crs.to_wkt(),
            src_nodata=None,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
        valid = dst.astype(bool)
        _check_undeclared_nodata(data, src_valid, (transform, info.crs), coarse, info.path, name)
        if not valid.any():
            raise InputError(
                f"{info.path}: covariate {name!r} has no data on the target grid "
                f"({_crs_name(grid.crs)}, bounds {_fmt_bounds(grid.bounds)})"
            )
        all_valid &= valid
        if a.get("kind") != "categorical":
            _warn_codes_read_as_values(data[src_valid], info, name, a.get("resampling"))
        if info.shape == grid.shape and info.transform == grid.transform and info.crs != grid.crs:
            warnings.warn(
                f"{info.path}: covariate {name!r} has the target grid's pixels (shape and "
                f"transform) in another CRS ({_crs_name(info.crs)} against "
                f"{_crs_name(grid.crs)}); it is reprojected as tagged: a wrong CRS tag?",
                UserWarning,
                stacklevel=2,
            )
        categories = None
        if a.get("kind") == "categorical":
            codes = np.zeros(coarse.shape, dtype="float64")
            reproject(
                np.where(src_valid, data, np.nan).astype("float64"),
                codes,
                src_transform=transform,
                src_crs=info.crs.to_wkt(),
                dst_transform=coarse.transform,
                dst_crs=coarse.crs.to_wkt(),
                src_nodata=np.nan,
                dst_nodata=np.nan,
                resampling=Resampling.nearest,
            )
            found = np.unique(codes[np.isfinite(codes)])
            categories = tuple(int(c) for c in found)
        layers.append(
            LayerSummary(
                name=str(name),
                kind=a.get("kind", "continuous"),
                resampling=a.get("resampling", "?"),
                source=a["source"],
                source_crs=a.get("source_crs", _crs_name(info.crs)),
                source_resolution=tuple(a.get("source_resolution", info.resolution)),  # type: ignore[arg-type]
                units=a.get("units"),
                nodata_share=float(1.0 - valid.mean()),
                categories=categories,
                resampling_reason=a.get("resampling_reason", ""),
            )
        )
    return StackSummary(
        grid=grid,
        layers=layers,
        nodata_share=float(1.0 - all_valid.mean()),
        sample_shape=coarse.shape,
        overviews_used=used,
        valid_sample=all_valid,
        sample_factor=f,
    )
