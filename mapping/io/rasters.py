"""Rasters: headers, lazy reads on a grid, decimated reads, COG and Zarr writers."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mapping.cluster import WORKER_GDAL_CACHE_MB, compute_with_progress, store_blocks
from mapping.exceptions import InputError, MissingCRSError, OutputError
from mapping.grid import Grid
from mapping.io.files import _disk_full, _os_reason, _remove, atomic_path

# --------------------------------------------------------------------------- rasters out
# GDAL 3.10 reads the sources of a VRT in several threads. Where a resampled read (a
# decimated view, a warp onto a coarser grid) takes an output pixel from two sources at a
# tile edge, the thread that finishes last wins: the same read of a VRT of tiles differs
# from run to run (measured: 200-460 of 86,000 pixels of a nearest-neighbour read of an
# 8 x 8 tile VRT; 20 pixels of the hemisphere's zone raster). One thread per read keeps
# every map, outline and total reproducible; socmap's parallelism is in its chunks.
os.environ.setdefault("VRT_NUM_THREADS", "1")

# GDAL's block cache is one per process. It is bounded here (WORKER_GDAL_CACHE_MB, as in a
# local cluster's workers), through the environment GDAL reads when it first sets the cache
# up, and never around a write: rasterio takes Env(GDAL_CACHEMAX=256) as 256 *bytes* and
# sets it for the whole process from whichever thread enters it.
os.environ.setdefault("GDAL_CACHEMAX", str(WORKER_GDAL_CACHE_MB))

COG_LEVELS = {"DEFLATE": "1", "ZSTD": "1"}
"""Compression level of the map COGs per codec. DEFLATE level 1 writes a COG in about half
the time of GDAL's default level 6, 1-2 % larger (``benchmarks/bench_cog_level.py``); the
values are the same bits either way."""


def cog_codec(compress: str) -> dict[str, str]:
    """The COG driver's compression options for ``compress`` (with its level, if it has one)."""
    level = COG_LEVELS.get(compress.upper())
    return {"COMPRESS": compress} | ({"LEVEL": level} if level else {})


def write_cog(
    da: Any,
    path: str | os.PathLike[str],
    *,
    nodata: float = float("nan"),
    tags: dict[str, Any] | None = None,
    overviews: bool = True,
    blocksize: int = 512,
    compress: str = "DEFLATE",
    label: str | None = None,
) -> Path:
    """Write a 2-D ``(y, x)`` DataArray (NumPy or Dask) as a Cloud-Optimized GeoTIFF.

    Window by window: blocks go into a tiled temporary GeoTIFF as they are computed
    (never the whole grid in memory), which GDAL's COG driver then copies -- tiled
    ``blocksize``, ``compress`` with the floating-point predictor, ``average``
    overviews, nodata, CRS, ``tags`` (units, interval, statistic, run id, ...) -- to a
    temporary name renamed onto ``path``.

    Raises
    ------
    MissingCRSError
        The array has no CRS.
    """
    return write_cogs(
        [(path, da, tags)],
        nodata=nodata,
        overviews=overviews,
        blocksize=blocksize,
        compress=compress,
        label=label or f"writing {Path(path).name}",
    )[0]


def layer_format(path: str | os.PathLike[str], arr: Any, nodata: float) -> tuple[Path, Any, Any]:
    """``(path, dtype, nodata)`` a 2-D map is written with: integer layers with a nodata
    (flags) keep their dtype and nodata; other non-float layers become float32 when the
    nodata is NaN.

    Raises
    ------
    OutputError
        The array is not 2-D.
    MissingCRSError
        The array has no CRS.
    """
    import numpy as np

    p = Path(path)
    if arr.ndim != 2:
        raise OutputError(f"{p}: expected a 2-D (y, x) array, got dims {tuple(arr.dims)}")
    if arr.rio.crs is None:
        raise MissingCRSError(f"{p}: array has no CRS; set one with .rio.write_crs('EPSG:...')")
    dtype = np.dtype(arr.dtype)
    fill: Any = nodata
    if dtype.kind in "iu" and arr.rio.nodata is not None:
        fill = arr.rio.nodata  # an integer layer (flags) keeps its dtype and nodata
    elif np.isnan(nodata) and dtype.kind != "f":
        dtype = np.dtype("float32")
    return p, dtype, fill


def write_cogs(
    items: list[tuple[str | os.PathLike[str], Any, dict[str, Any] | None]],
    *,
    nodata: float = float("nan"),
    overviews: bool = True,
    blocksize: int = 512,
    compress: str = "DEFLATE",
    label: str = "writing rasters",
    on_block: Any = None,
    also: Sequence[Any] = (),
) -> list[Path]:
    """Write several same-shape ``(path, DataArray, tags)`` as COGs in one pass.

    Lazy arrays that share work (the statistics of one prediction) are computed
    together, once, by :func:`mapping.cluster.store_blocks`; see :func:`write_cog`.
    ``on_block(k, (row_slice, col_slice), block)`` is called, in this process, after
    each block of item ``k`` is written (a resumable writer keeps finished chunks).
    ``also``: more 2-D arrays of the same shape, computed in the same pass but not
    written; their blocks go only to ``on_block``, as items ``len(items), ...``.
    """
    import rasterio
    import rasterio.errors
    import rasterio.shutil
    from rasterio.windows import Window

    if not items:
        return []
    specs = []
    for path, arr, tags in items:
        p, dtype, fill = layer_format(path, arr, nodata)
        specs.append((p, arr, dict(tags or {}), dtype, Grid.from_dataarray(arr).transform, fill))
    shape = specs[0][1].shape
    if any(s[1].shape != shape for s in specs):
        raise OutputError(f"{specs[0][0]}: rasters written together must share one shape")
    for p, *_ in specs:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{p.parent}: cannot create output folder ({exc.strerror})") from None
    stages = [p.parent / f".{p.name}.stage.tmp.tif" for p, *_ in specs]
    out: list[Path] = []
    try:
        with contextlib.ExitStack() as opened:
            dsts = []
            for (_p, arr, tags, dtype, transform, fill), stage in zip(specs, stages, strict=True):
                dst = opened.enter_context(
                    rasterio.open(
                        stage, "w", driver="GTiff", width=shape[1], height=shape[0], count=1,
                        dtype=dtype.name, crs=arr.rio.crs, transform=transform,
                        nodata=fill, tiled=True, blockxsize=blocksize, blockysize=blocksize,
                        BIGTIFF="IF_SAFER",
                    )
                )  # fmt: skip
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
                if "long_name" in tags or "statistic" in tags:
                    dst.set_band_description(1, str(tags.get("long_name", tags.get("statistic"))))
                if "units" in tags:
                    dst.set_band_unit(1, str(tags["units"]))
                dsts.append(dst)

            def write(k: int, window: tuple[slice, slice], block: Any) -> None:
                if k < len(dsts):
                    dsts[k].write(
                        block.astype(specs[k][3], copy=False),
                        1,
                        window=Window.from_slices(*window),
                    )
                if on_block is not None:
                    on_block(k, window, block)

            arrays = [s[1].data for s in specs] + [getattr(a, "data", a) for a in also]
            if any(a.shape != shape for a in arrays):
                raise OutputError(f"{specs[0][0]}: arrays computed together must share one shape")
            _compute_blocks(arrays, write, blocksize, label)
        for (p, _a, _t, dtype, *_), stage in zip(specs, stages, strict=True):
            # flags (integer layers) are not averaged: their overviews take the most common value
            resampling = "MODE" if dtype.kind in "iu" else "AVERAGE"
            with atomic_path(p) as tmp:
                rasterio.shutil.copy(
                    stage, tmp, driver="COG", **cog_codec(compress), PREDICTOR="YES",
                    BLOCKSIZE=blocksize, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
                    OVERVIEWS="AUTO" if overviews else "NONE", OVERVIEW_RESAMPLING=resampling,
                )  # fmt: skip
            out.append(p)
    except rasterio.errors.RasterioError as exc:
        where = specs[min(len(out), len(specs) - 1)][0]
        if _disk_full(exc):
            raise OutputError(
                f"{where}: disk full while writing ({_os_reason(exc)}); nothing was written "
                "under this name"
            ) from None
        raise OutputError(f"{where}: cannot write raster ({_os_reason(exc)})") from None
    finally:
        for stage in stages:
            _remove(stage)
    return out


def _compute_blocks(arrays: list[Any], write: Any, blocksize: int, label: str) -> None:
    """Hand every block of ``arrays`` to ``write(k, window, block)``: Dask arrays computed
    together by :func:`mapping.cluster.store_blocks`, in-memory ones tile-row by tile-row."""
    import dask.array as dsa

    if all(isinstance(a, dsa.Array) for a in arrays):
        store_blocks(arrays, write, label=label)
        return
    for k, a in enumerate(arrays):
        data = np.asarray(a)
        for r in range(0, data.shape[0], blocksize):
            rows = slice(r, min(r + blocksize, data.shape[0]))
            write(k, (rows, slice(0, data.shape[1])), data[rows])


def write_zarr(ds: Any, path: str | os.PathLike[str], *, label: str | None = None) -> Path:
    """Write an ``xr.Dataset`` (Dask-backed or not) to a Zarr store, atomically.

    The store is written into a temporary folder next to ``path`` and renamed into
    place; Dask chunks become Zarr chunks, so every block is written by the task that
    computes it (a distributed cluster needs ``path`` on a file system its workers share).
    """
    return write_zarr_with(ds, path, (), label=label)[0]


def write_zarr_with(
    ds: Any, path: str | os.PathLike[str], also: Sequence[Any], *, label: str | None = None
) -> tuple[Path, tuple[Any, ...]]:
    """:func:`write_zarr`, computing the Dask collections ``also`` in the same pass.

    Returns the store's path and the computed values of ``also`` (work they share with
    the dataset, such as the prediction of each chunk, is done once).
    """
    p = Path(path)
    ds = ds.copy()
    for v in ds.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    with atomic_path(p, is_dir=True) as tmp:
        delayed = ds.to_zarr(tmp, mode="w", compute=False, consolidated=False)
        _, *values = compute_with_progress(delayed, *also, label=label or f"writing {p.name}")
    return p, tuple(values)


def open_raster_on_grid(
    path: str | os.PathLike[str],
    grid: Any,
    *,
    resampling: str = "nearest",
    chunks: int = 1024,
    scale: tuple[float, float] | None = None,
) -> Any:
    """Band 1 of a raster as seen on ``grid`` (lazy), warped through a GDAL WarpedVRT if needed.

    Meant for categorical rasters such as zone codes (``resampling="nearest"`` or
    ``"mode"``). Values keep their dtype and nodata is declared as ``rio.nodata``; cells
    outside the source get it (the dtype's largest value, or NaN for floats, when the source
    declares none). The exact transformer is used and ``scale`` (destination pixels per
    source pixel, x and y) fixes the resampling footprint, so chunks read the same values as
    a warp of the whole grid.
    """
    import rasterio
    import rioxarray
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    p = Path(path)
    info = raster_info(p)  # missing, unreadable, no CRS: clear errors first

    nodata = info.nodata
    if nodata is None:
        dtype = np.dtype(info.dtype)
        nodata = float("nan") if dtype.kind == "f" else np.iinfo(dtype).max
    if Grid(info.crs, info.transform, info.shape) == grid:
        arr = rioxarray.open_rasterio(p, chunks={"band": 1, "y": chunks, "x": chunks}, masked=False)
        arr = arr.sel(band=info.band, drop=True)
        if info.masked:  # cells off the band's mask (a per-dataset mask, alpha) are no zone
            arr = (
                arr.where(_mask_band(info, arr), nodata).astype(info.dtype).rio.write_nodata(nodata)
            )
        return arr
    # GDAL does not wrap longitudes: a lon/lat source past ±180° is seen as the grid needs
    wide = wrap_longitudes(info, (-540.0, 540.0) if grid.crs.is_geographic else (-180.0, 180.0))
    try:
        src = rasterio.open((wide or info).source)
    except rasterio.errors.RasterioError as exc:
        raise _raster_error(p, exc) from None
    ny, nx = grid.shape
    vrt = WarpedVRT(
        src,
        crs=grid.crs.to_wkt(),
        transform=grid.transform,
        width=nx,
        height=ny,
        resampling=Resampling[resampling],
        nodata=nodata,
        tolerance=1e-9,  # (near) exact transformer; 0.0 fails in rasterio 1.4 when CRSs are equal
        warp_extras={"XSCALE": repr(scale[0]), "YSCALE": repr(scale[1])} if scale else {},
    )
    arr = rioxarray.open_rasterio(vrt, chunks={"band": 1, "y": chunks, "x": chunks}, masked=False)
    arr = arr.squeeze("band", drop=True)
    return arr.rio.write_nodata(nodata)


# --------------------------------------------------------------------------- rasters in
RASTER_CONTAINER_SUFFIXES = {".nc": "NETCDF", ".nc4": "NETCDF", ".zarr": "ZARR"}


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """Header of one band of a raster, read without touching its pixels."""

    path: Path
    source: str
    """The GDAL dataset name opened (``NETCDF:"f.nc":var``, ``ZARR:"d.zarr":/var`` or the path)."""
    band: int
    crs: Any
    transform: Any
    shape: tuple[int, int]
    dtype: str
    nodata: float | None
    units: str | None
    overviews: tuple[int, ...]
    """Decimation factors of the band's overviews (empty when it has none)."""
    driver: str
    scale: float = 1.0
    """Scale factor of the band (GDAL's ``scale``/CF ``scale_factor``): value = raw × scale + offset."""
    offset: float = 0.0
    """Offset of the band (GDAL's ``offset``/CF ``add_offset``)."""
    count: int = 1
    """Number of bands of the dataset."""
    masked: bool = False
    """The band has a mask of its own (a per-dataset mask or an alpha band), beyond nodata."""
    loose_scale: tuple[float, float] | None = None
    """``(scale_factor, add_offset)`` of plain metadata tags that GDAL's band scale and
    offset do not hold (so the values are read unscaled), when they change values."""

    @property
    def scaled(self) -> bool:
        """True when raw values need ``scale``/``offset`` to become physical values."""
        return self.scale != 1.0 or self.offset != 0.0

    def unpack(self, values: Any) -> Any:
        """Physical values from raw ones (float arrays; NaN stays NaN)."""
        return values * self.scale + self.offset if self.scaled else values

    @property
    def resolution(self) -> tuple[float, float]:
        t = self.transform
        return (float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e)))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        ny, nx = self.shape
        xs, ys = zip(*(self.transform @ (c, r) for c in (0, nx) for r in (0, ny)), strict=True)
        return (min(xs), min(ys), max(xs), max(ys))


def raster_grid(
    path: str | os.PathLike[str], *, band: int = 1, variable: str | None = None
) -> Grid:
    """The grid of a raster file, reading only its header.

    Raises
    ------
    InputError
        Missing or unreadable file.
    MissingCRSError
        The raster has no CRS.
    """
    info = raster_info(path, band=band, variable=variable)
    return Grid(info.crs, info.transform, info.shape)


def gdal_name(path: str | os.PathLike[str], variable: str | None = None) -> str:
    """The GDAL dataset name of a raster file, a NetCDF variable or a Zarr array."""
    p = Path(path)
    kind = RASTER_CONTAINER_SUFFIXES.get(p.suffix.lower())
    if kind is None or variable is None:
        return str(p)
    if kind == "NETCDF":
        return f'NETCDF:"{p}":{variable}'
    return f'ZARR:"{p}":/{variable}'


def _raster_error(p: Path, exc: BaseException, what: str = "cannot read raster") -> InputError:
    msg = " ".join(str(exc).split())  # one line
    return InputError(f"{p}: {what} ({msg[:200]})" if msg else f"{p}: {what}")


def raster_info(
    path: str | os.PathLike[str], *, band: int = 1, variable: str | None = None
) -> RasterInfo:
    """Read a raster's header (CRS, transform, shape, dtype, nodata, units, overviews).

    GeoTIFF/COG, VRT and anything else GDAL opens; NetCDF and Zarr through GDAL's
    drivers (give ``variable`` for a file with several). Only the header is read, plus
    the offsets of the first and last blocks of a GeoTIFF to catch a truncated file.

    Raises
    ------
    InputError
        Missing, unreadable, truncated or corrupt file; no such band.
    MissingCRSError
        The raster has no CRS (or no georeferencing at all).
    """
    import rasterio
    import rasterio.errors
    from rasterio.enums import MaskFlags

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    name = gdal_name(p, variable)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(name) as src:
                if src.subdatasets and src.count == 0:
                    raise InputError(
                        f"{p}: holds several variables; name one with 'variable:' "
                        f"({', '.join(s.rsplit(':', 1)[-1] for s in src.subdatasets[:6])})"
                    )
                if not 1 <= band <= src.count:
                    raise InputError(f"{p}: has {src.count} band(s); band {band} does not exist")
                _check_not_truncated(src, p, band)
                if src.crs is None:
                    raise MissingCRSError(
                        f"{p}: raster has no CRS; set one, e.g. gdal_edit.py -a_srs EPSG:XXXX {p}"
                    )
                if src.transform.is_identity and src.driver in {"netCDF", "Zarr", "GTiff"}:
                    raise MissingCRSError(
                        f"{p}: raster has no georeferencing (identity transform); give x/y "
                        "coordinate variables CF attributes or set a geotransform"
                    )
                units = src.units[band - 1] or _units_tag(src.tags(band), src.tags()) or None
                flags = src.mask_flag_enums[band - 1]
                info = RasterInfo(
                    path=p,
                    source=name,
                    band=band,
                    crs=pyproj_crs(src.crs),
                    transform=src.transform,
                    shape=(src.height, src.width),
                    dtype=src.dtypes[band - 1],
                    nodata=None if src.nodata is None else float(src.nodata),
                    units=units,
                    overviews=tuple(src.overviews(band)),
                    driver=src.driver,
                    scale=_or(src.scales[band - 1], 1.0),
                    offset=_or(src.offsets[band - 1], 0.0),
                    count=int(src.count),
                    masked=MaskFlags.per_dataset in flags or MaskFlags.alpha in flags,
                    loose_scale=_loose_scale(src, band),
                )
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _raster_error(p, exc) from None
    return info


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64"}  # fmt: skip


def wrap_longitudes(
    info: RasterInfo, span: tuple[float, float] = (-540.0, 540.0)
) -> RasterInfo | None:
    """A lon/lat band that spans the globe or passes ±180° (e.g. stored as 0..360), seen
    over the longitudes ``span``: copies of it shifted by multiples of 360° side by side.

    GDAL's warper does not wrap longitudes: a grid east of 180° finds nothing in a
    -180..180 source, nor does a western-hemisphere cell in a 0..360 one. The copies (a
    VRT, opened by its XML text, its edges on source pixel edges) make every longitude of
    ``span`` fall on its pixel. Seen from a projected CRS, longitudes are in -180..180:
    ``span=(-180, 180)`` then gives one turn, laid out as GDAL expects of a global raster.
    Returns ``None`` when no wrapping is needed or the pixels cannot tile 360°.
    """
    from xml.sax.saxutils import escape, quoteattr

    t = info.transform
    ny, nx = info.shape
    if not info.crs.is_geographic or t.b or t.d or t.a <= 0:
        return None
    left, right = t.c, t.c + t.a * nx
    tol = 1e-6 * t.a
    if right - left < 360.0 - tol and left >= -180.0 - tol and right <= 180.0 + tol:
        return None
    if left <= span[0] + tol and right >= span[1] - tol:
        return None  # the band covers the span as it is
    n360 = 360.0 / t.a
    if abs(n360 - round(n360)) > 1e-6 or info.dtype not in _GDAL_TYPES:
        return None
    n360 = round(n360)
    first = math.floor((span[0] - left) / t.a + 1e-6)  # source column of the VRT's first
    width = math.ceil((span[1] - left) / t.a - 1e-6) - first
    offsets = [k * n360 - first for k in range(-3, 4)]
    offsets = [o for o in offsets if o < width and o + nx > 0]
    src = escape(info.source)

    def copies(band: str) -> str:
        return "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{nx}" ySize="{ny}"/>'
            f'<DstRect xOff="{o}" yOff="0" xSize="{nx}" ySize="{ny}"/></SimpleSource>'
            for o in offsets
        )

    fill = info.nodata
    if fill is None and np.dtype(info.dtype).kind == "f":
        fill = float("nan")  # what the readers take a float source's nodata to be
    nodata = "" if fill is None else f"<NoDataValue>{fill!r}</NoDataValue>"
    # integers with no nodata value: a mask marks the gaps between copies (0 = no data)
    masked = info.masked or fill is None
    mask = (
        f'<MaskBand><VRTRasterBand dataType="Byte">{copies(f"mask,{info.band}")}'
        "</VRTRasterBand></MaskBand>"
        if masked
        else ""
    )
    west = left + first * t.a
    xml = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{ny}">'
        f"<SRS>{escape(info.crs.to_wkt())}</SRS>"
        f"<GeoTransform>{west!r}, {t.a!r}, 0, {t.f!r}, 0, {t.e!r}</GeoTransform>"
        f'<VRTRasterBand dataType={quoteattr(_GDAL_TYPES[info.dtype])} band="1">'
        f"{nodata}{copies(str(info.band))}</VRTRasterBand>{mask}</VRTDataset>"
    )
    transform = type(t)(t.a, 0.0, west, 0.0, t.e, t.f)
    return dataclasses.replace(
        info, source=xml, band=1, transform=transform, shape=(ny, width), masked=masked,
        count=1, overviews=(),
    )  # fmt: skip


def raster_tags(path: str | os.PathLike[str], band: int = 1) -> dict[str, str]:
    """The metadata tags of a raster: the dataset's, then the band's (band wins).

    Raises
    ------
    InputError
        Missing or unreadable file.
    """
    import rasterio
    import rasterio.errors

    p = Path(path)
    try:
        with rasterio.open(p) as src:
            return {**src.tags(), **src.tags(band)}
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _raster_error(p, exc) from None


def _or(value: Any, default: float) -> float:
    return default if value is None else float(value)


def pyproj_crs(crs: Any) -> Any:
    """A :class:`pyproj.CRS` from a rasterio CRS (or anything pyproj understands)."""
    import pyproj

    if hasattr(crs, "to_wkt"):
        out = pyproj.CRS.from_wkt(crs.to_wkt())
    else:
        out = pyproj.CRS.from_user_input(crs)
    auth = out.to_authority(min_confidence=100)
    if auth is not None:  # the registry's definition carries the area of use
        out = pyproj.CRS.from_authority(*auth)
    return out


def _check_not_truncated(src: Any, p: Path, band: int) -> None:
    # A truncated GeoTIFF often opens fine (its header is at the start) and fails only
    # when a missing block is read, deep inside a computation. The first and last blocks'
    # offsets and sizes, read from the TIFF tags, tell it at once.
    if src.driver not in {"GTiff", "COG"}:
        return
    try:
        size = p.stat().st_size
        bh, bw = src.block_shapes[band - 1]
        last = ((src.width - 1) // bw, (src.height - 1) // bh)
        for bx, by in ((0, 0), last):
            off = src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=band)
            n = src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=band)
            if off is not None and n is not None and int(off) + int(n) > size:
                raise InputError(
                    f"{p}: file is truncated (block {bx},{by} ends at byte {int(off) + int(n)}, "
                    f"file has {size}); copy it again"
                )
    except (ValueError, TypeError):
        return


def open_raster(
    path: str | os.PathLike[str],
    band: int = 1,
    variable: str | None = None,
    chunks: int | tuple[int, int] | None = 512,
) -> Any:
    """One band of a raster as a lazy ``(y, x)`` DataArray; nodata becomes NaN.

    GeoTIFF/COG/VRT through :func:`rioxarray.open_rasterio`; NetCDF and Zarr through
    :func:`xarray.open_dataset` (CRS from the CF grid mapping). Nothing is read but the
    header; the pixels are read chunk by chunk when computed.

    Raises
    ------
    InputError
        Missing, unreadable, truncated or corrupt file, unknown band or variable.
    MissingCRSError
        The raster has no CRS.
    """
    import rasterio.errors
    import rioxarray
    import xarray as xr

    p = Path(path)
    info = raster_info(p, band=band, variable=variable)  # clear errors before anything lazy
    cy, cx = (chunks, chunks) if isinstance(chunks, int) else (chunks or (None, None))
    kind = RASTER_CONTAINER_SUFFIXES.get(p.suffix.lower())
    try:
        if kind in (None, "NETCDF"):
            # GDAL reads NetCDF (classic and NetCDF-4/HDF5) itself, with the CF grid mapping;
            # mask_and_scale: nodata becomes NaN and scale/offset give physical values.
            arr = rioxarray.open_rasterio(
                info.source,
                chunks={"band": 1, "y": cy or -1, "x": cx or -1} if chunks else None,
                mask_and_scale=True,
            )
            arr = arr.sel(band=band, drop=True)
            if info.masked:  # a per-dataset mask or an alpha band, beyond nodata
                arr = arr.where(_mask_band(info, arr))
        else:
            engine = "zarr" if kind == "ZARR" else None
            ds = xr.open_dataset(p, engine=engine, decode_coords="all", chunks={})
            names = [variable] if variable else [v for v in ds.data_vars if ds[v].ndim >= 2]
            if len(names) != 1 or names[0] not in ds:
                raise InputError(
                    f"{p}: name one variable with 'variable:' (found {list(ds.data_vars)})"
                )
            arr = ds[names[0]]
            if arr.ndim == 3:
                arr = arr.isel({arr.dims[0]: band - 1}, drop=True)
            if chunks:
                arr = arr.chunk({arr.rio.y_dim: cy, arr.rio.x_dim: cx})
    except (rasterio.errors.RasterioError, OSError, ValueError, KeyError) as exc:
        raise _raster_error(p, exc) from None
    if arr.rio.crs is None:
        arr = arr.rio.write_crs(info.crs.to_wkt())
    if arr.rio.crs is None:  # pragma: no cover - raster_info raised already
        raise MissingCRSError(f"{p}: raster has no CRS")
    if info.units:
        arr.attrs.setdefault("units", info.units)
    arr.attrs["source"] = str(p)
    return arr


def _mask_band(info: RasterInfo, like: Any) -> Any:
    """GDAL's mask of one band as a lazy boolean DataArray shaped like ``like``."""
    import dask.array as da
    import rasterio
    from rasterio.windows import Window

    def block(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        (r0, r1), (c0, c1) = block_info[None]["array-location"]  # type: ignore[index]
        with rasterio.open(info.source) as src:
            m = src.read_masks(info.band, window=Window(c0, r0, c1 - c0, r1 - r0))
        return m != 0

    chunks = like.chunks if like.chunks is not None else tuple((n,) for n in like.shape)
    mask = da.map_blocks(block, chunks=chunks, dtype=bool, meta=np.empty((0, 0), dtype=bool))
    return like.copy(data=mask)


def _loose_scale(src: Any, band: int) -> tuple[float, float] | None:
    """CF-style ``scale_factor``/``add_offset`` tags of a band without GDAL's scale."""
    if _or(src.scales[band - 1], 1.0) != 1.0 or _or(src.offsets[band - 1], 0.0) != 0.0:
        return None
    tags = {k.strip().lower(): v for t in (src.tags(), src.tags(band)) for k, v in t.items()}
    try:
        scale = float(tags.get("scale_factor", 1.0))
        offset = float(tags.get("add_offset", 0.0))
    except ValueError:
        return None
    return (scale, offset) if (scale, offset) != (1.0, 0.0) else None


def _units_tag(*tags: dict[str, str]) -> str | None:
    """A units tag under any common key ("units", "unit", "UNITS"), band tags first."""
    for t in tags:
        for key, value in t.items():
            if key.strip().lower() in {"units", "unit"} and str(value).strip():
                return str(value).strip()
    return None


def decimation(shape: tuple[int, int], max_size: int) -> tuple[int, tuple[int, int]]:
    """``(factor, (ny, nx))`` of a decimated read of a ``shape`` raster: the smallest whole
    factor that brings its longer side to at most ``max_size``, and the read's shape."""
    ny, nx = shape
    f = max(1, math.ceil(max(ny, nx) / max_size))
    return f, (math.ceil(ny / f), math.ceil(nx / f))


def read_decimated(
    info: RasterInfo, *, max_size: int = 1024, masked: bool = False
) -> tuple[Any, Any, bool]:
    """Read one band at reduced resolution (at most ``max_size`` pixels a side).

    GDAL answers a decimated read from the band's overviews when it has them; otherwise it
    subsamples the full-resolution blocks by nearest neighbour, holding only the small
    output in memory. Returns ``(array, transform, from_overview)``; with ``masked`` the
    array is a masked array honouring the file's nodata and mask bands (as the lazy reads
    on a grid do), else plain.
    """

    import rasterio
    import rasterio.errors
    from rasterio.enums import Resampling

    ny, nx = info.shape
    f, (oy, ox) = decimation(info.shape, max_size)
    try:
        with rasterio.open(info.source) as src:
            data = src.read(
                info.band, out_shape=(oy, ox), resampling=Resampling.nearest, masked=masked
            )
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _raster_error(info.path, exc, "cannot read raster data") from None
    from affine import Affine

    transform = info.transform @ Affine.scale(nx / ox, ny / oy)
    return data, transform, bool(info.overviews) and f >= min(info.overviews)
