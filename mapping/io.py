"""All reading and writing of files.

Stages take and return in-memory objects; only this module opens files.
Every writer goes through :func:`atomic_path`: the data is written to a
temporary name in the destination folder and renamed into place, so a killed
run never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping.exceptions import InputError, OutputError

TABLE_SUFFIXES = {".csv", ".parquet", ".pq", ".gpkg"}


# --------------------------------------------------------------------------- atomic writes
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or folder) is removed and ``path`` is
    left exactly as it was.

    Parameters
    ----------
    path
        Final destination.
    is_dir
        Yield a temporary *directory* instead of a file name.
    """
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{parent}: output folder is not writable")
    prefix = f".{dest.name}."
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + dest.suffix, dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private (0600/0700) entries: give outputs the usual umask mode
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)
        if is_dir and dest.exists():
            _remove(dest)
        os.replace(tmp, dest)
    except BaseException as exc:
        _remove(tmp)
        if _disk_full(exc):
            raise OutputError(
                f"{dest}: disk full or file too large while writing ({_os_reason(exc)}); "
                "nothing was written under this name"
            ) from None
        raise


def _disk_full(exc: BaseException) -> bool:
    """Whether a write failed for want of space (ENOSPC, EDQUOT, EFBIG; GDAL says it in words)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc).lower()
    return isinstance(exc, OSError | RuntimeError) and (
        "no space left" in text or "disk space" in text or "file too large" in text
    )


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def remove_output(path: str | os.PathLike[str]) -> None:
    """Remove a file or folder an earlier run wrote (nothing happens if it is gone)."""
    _remove(Path(path))


def file_checksum(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Return ``"<algorithm>:<hexdigest>"`` of a file (or of every file under a folder)."""
    h = hashlib.new(algorithm)
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


# --------------------------------------------------------------------------- rasters out
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


def write_cogs(
    items: list[tuple[str | os.PathLike[str], Any, dict[str, Any] | None]],
    *,
    nodata: float = float("nan"),
    overviews: bool = True,
    blocksize: int = 512,
    compress: str = "DEFLATE",
    label: str = "writing rasters",
    on_block: Any = None,
) -> list[Path]:
    """Write several same-shape ``(path, DataArray, tags)`` as COGs in one pass.

    Lazy arrays that share work (the statistics of one prediction) are computed
    together, once, by :func:`mapping.cluster.store_blocks`; see :func:`write_cog`.
    ``on_block(k, (row_slice, col_slice), block)`` is called, in this process, after
    each block of item ``k`` is written (a resumable writer keeps finished chunks).
    """
    import dask.array as dsa
    import numpy as np
    import rasterio
    import rasterio.errors
    import rasterio.shutil
    from rasterio.windows import Window

    from mapping.cluster import store_blocks
    from mapping.exceptions import MissingCRSError
    from mapping.grid import Grid

    if not items:
        return []
    specs = []
    for path, arr, tags in items:
        p = Path(path)
        if arr.ndim != 2:
            raise OutputError(f"{p}: expected a 2-D (y, x) array, got dims {tuple(arr.dims)}")
        if arr.rio.crs is None:
            raise MissingCRSError(f"{p}: array has no CRS; set one with .rio.write_crs('EPSG:...')")
        dtype = np.dtype(arr.dtype)
        if np.isnan(nodata) and dtype.kind != "f":
            dtype = np.dtype("float32")
        specs.append((p, arr, dict(tags or {}), dtype, Grid.from_dataarray(arr).transform))
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
            for (_p, arr, tags, dtype, transform), stage in zip(specs, stages, strict=True):
                dst = opened.enter_context(
                    rasterio.open(
                        stage, "w", driver="GTiff", width=shape[1], height=shape[0], count=1,
                        dtype=dtype.name, crs=arr.rio.crs, transform=transform,
                        nodata=nodata, tiled=True, blockxsize=blocksize, blockysize=blocksize,
                        BIGTIFF="IF_SAFER",
                    )
                )  # fmt: skip
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
                if "statistic" in tags:
                    dst.set_band_description(1, str(tags["statistic"]))
                if "units" in tags:
                    dst.set_band_unit(1, str(tags["units"]))
                dsts.append(dst)

            def write(k: int, window: tuple[slice, slice], block: Any) -> None:
                dsts[k].write(block.astype(specs[k][3], copy=False), 1, window=Window.from_slices(*window))
                if on_block is not None:
                    on_block(k, window, block)

            if all(isinstance(s[1].data, dsa.Array) for s in specs):
                store_blocks([s[1].data for s in specs], write, label=label)
            else:  # in memory already: write it tile-row by tile-row
                for k, s in enumerate(specs):
                    data = np.asarray(s[1].data)
                    for r in range(0, shape[0], blocksize):
                        rows = slice(r, min(r + blocksize, shape[0]))
                        write(k, (rows, slice(0, shape[1])), data[rows])
        for (p, *_), stage in zip(specs, stages, strict=True):
            # GDAL's block cache defaults to 5 % of RAM and fills up while the COG
            # driver builds overviews; 256 MB costs no speed and bounds the client.
            with atomic_path(p) as tmp, rasterio.Env(GDAL_CACHEMAX=256):
                rasterio.shutil.copy(
                    stage, tmp, driver="COG", COMPRESS=compress, PREDICTOR="YES",
                    BLOCKSIZE=blocksize, BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
                    OVERVIEWS="AUTO" if overviews else "NONE", OVERVIEW_RESAMPLING="AVERAGE",
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


def write_zarr(ds: Any, path: str | os.PathLike[str], *, label: str | None = None) -> Path:
    """Write an ``xr.Dataset`` (Dask-backed or not) to a Zarr store, atomically.

    The store is written into a temporary folder next to ``path`` and renamed into
    place; Dask chunks become Zarr chunks, so every block is written by the task that
    computes it (a distributed cluster needs ``path`` on a file system its workers share).
    """
    from mapping.cluster import compute_with_progress

    p = Path(path)
    ds = ds.copy()
    for v in ds.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    with atomic_path(p, is_dir=True) as tmp:
        delayed = ds.to_zarr(tmp, mode="w", compute=False, consolidated=False)
        compute_with_progress(delayed, label=label or f"writing {p.name}")
    return p


# --------------------------------------------------------------------------- tables
def read_table(
    path: str | os.PathLike[str], *, layer: str | None = None, max_rows: int | None = None
) -> pd.DataFrame:
    """Read a CSV, Parquet or GeoPackage table into a DataFrame.

    GeoPackage point layers get ``lon``/``lat`` columns from their geometry when
    the table has none. Errors name the file. With ``max_rows``, a longer table is
    refused before it is read whole (CSV: at most ``max_rows + 1`` rows are parsed;
    Parquet and GeoPackage: the count in the file's metadata), so memory stays bounded.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a table file")
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{p}: unsupported table format {suffix!r}; use .csv, .parquet or .gpkg")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")

    def too_long(n: int) -> InputError:
        return InputError(
            f"{p}: {'more than ' if suffix == '.csv' else ''}{n - 1 if suffix == '.csv' else n} "
            f"rows, above the limit of {max_rows} (profiles.max_rows in the config)"
        )

    try:
        if suffix == ".csv":
            df = pd.read_csv(p, nrows=None if max_rows is None else max_rows + 1)
            if max_rows is not None and len(df) > max_rows:
                raise too_long(len(df))
        elif suffix in {".parquet", ".pq"}:
            if max_rows is not None:
                import pyarrow.parquet as pq

                n = pq.ParquetFile(p).metadata.num_rows
                if n > max_rows:
                    raise too_long(n)
            df = pd.read_parquet(p)
        else:
            if max_rows is not None:
                import pyogrio

                n = int(pyogrio.read_info(p, layer=layer).get("features") or 0)
                if n > max_rows:
                    raise too_long(n)
            df = _read_gpkg_points(p, layer)
    except pd.errors.EmptyDataError:
        raise InputError(f"{p}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{p}: cannot parse table ({str(exc).splitlines()[0]})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read table ({str(exc).splitlines()[0]})") from None
    if len(df) == 0:
        raise InputError(f"{p}: table has a header but no rows")
    return df


def _read_gpkg_points(p: Path, layer: str | None) -> pd.DataFrame:
    import pyogrio

    gdf = pyogrio.read_dataframe(p, layer=layer)
    if "geometry" in gdf and gdf.geometry.notna().any():
        if gdf.crs is not None and not gdf.crs.is_geographic:
            gdf = gdf.to_crs("EPSG:4326")
        if "lon" not in gdf.columns:
            gdf["lon"] = gdf.geometry.x
        if "lat" not in gdf.columns:
            gdf["lat"] = gdf.geometry.y
    return pd.DataFrame(gdf.drop(columns="geometry", errors="ignore"))


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame atomically as CSV or Parquet (by suffix)."""
    p = Path(path)
    suffix = p.suffix.lower()
    with atomic_path(p) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix in {".parquet", ".pq"}:
            df.to_parquet(tmp, index=False)
        elif suffix == ".json":
            tmp.write_text(df.to_json(orient="records", indent=1))
        else:
            raise OutputError(f"{p}: unsupported table format {suffix!r}")
    return p


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write a JSON document atomically (sorted keys, numpy scalars converted)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    return p


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a text file atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(text)
    return p


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write bytes (a PNG, ...) atomically."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_bytes(data)
    return p


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole (small) file as bytes; a missing file is an :class:`InputError`."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror})") from None


def read_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: invalid JSON at line {exc.lineno}") from None


# --------------------------------------------------------------------------- zones
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}


def read_zones_vector(path: str | os.PathLike[str], layer: str | None = None) -> Any:
    """Read zone polygons (GeoPackage, Shapefile, GeoParquet, ...) into a GeoDataFrame.

    Errors name the file: missing, unreadable, no features, or not polygons.
    """
    import geopandas as gpd
    import pyogrio

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        if p.suffix.lower() in _PARQUET_SUFFIXES:
            gdf = gpd.read_parquet(p)
        else:
            gdf = pyogrio.read_dataframe(p, layer=layer)
    except (OSError, ValueError, RuntimeError, pyogrio.errors.DataSourceError) as exc:
        raise InputError(f"{p}: cannot read polygons ({str(exc).splitlines()[0]})") from None
    if len(gdf) == 0:
        raise InputError(f"{p}: layer has no features")
    kinds = set(gdf.geom_type.dropna())
    if not kinds or not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"{p}: expected polygons, found {', '.join(sorted(kinds)) or 'no geometry'}")
    return gdf


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
    from mapping.grid import Grid

    if Grid(info.crs, info.transform, info.shape) == grid:
        arr = rioxarray.open_rasterio(p, chunks={"band": 1, "y": chunks, "x": chunks}, masked=False)
        return arr.sel(band=info.band, drop=True)
    nodata = info.nodata
    if nodata is None:
        dtype = np.dtype(info.dtype)
        nodata = float("nan") if dtype.kind == "f" else np.iinfo(dtype).max
    try:
        src = rasterio.open(info.source)
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

    @property
    def resolution(self) -> tuple[float, float]:
        t = self.transform
        return (float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e)))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        ny, nx = self.shape
        xs, ys = zip(*(self.transform @ (c, r) for c in (0, nx) for r in (0, ny)), strict=True)
        return (min(xs), min(ys), max(xs), max(ys))


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


def raster_info(path: str | os.PathLike[str], *, band: int = 1, variable: str | None = None) -> RasterInfo:
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

    from mapping.exceptions import MissingCRSError

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
                units = src.units[band - 1] or src.tags(band).get("units") or None
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
                )
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _raster_error(p, exc) from None
    return info


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

    from mapping.exceptions import MissingCRSError

    p = Path(path)
    info = raster_info(p, band=band, variable=variable)  # clear errors before anything lazy
    cy, cx = (chunks, chunks) if isinstance(chunks, int) else (chunks or (None, None))
    kind = RASTER_CONTAINER_SUFFIXES.get(p.suffix.lower())
    try:
        if kind is None:
            arr = rioxarray.open_rasterio(
                p, chunks={"band": 1, "y": cy or -1, "x": cx or -1} if chunks else None, masked=True
            )
            arr = arr.sel(band=band, drop=True)
        else:
            engine = "zarr" if kind == "ZARR" else None
            ds = xr.open_dataset(p, engine=engine, decode_coords="all", chunks={})
            names = [variable] if variable else [v for v in ds.data_vars if ds[v].ndim >= 2]
            if len(names) != 1 or names[0] not in ds:
                raise InputError(f"{p}: name one variable with 'variable:' (found {list(ds.data_vars)})")
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


def read_warped(
    info: RasterInfo,
    *,
    crs: Any,
    transform: Any,
    shape: tuple[int, int],
    resampling: str,
    dtype: str,
    nodata: float,
    scale: tuple[float, float] | None = None,
) -> Any:
    """Read one band warped onto a target window (CRS, transform, shape) as a NumPy array.

    Only the part of the source under the target window is read. Coordinates are
    transformed exactly (PROJ at every cell), so a window gets the same values as the same
    cells of a warp of the whole grid: results do not depend on chunking.

    * ``nearest``, ``mode``, ``average``: GDAL's warper through a WarpedVRT whose
      coordinate approximation is reduced to 1e-6 pixel (GDAL's default, 1/8 pixel, is
      applied per processing window and flips nearest-neighbour codes between chunkings);
    * ``bilinear``: interpolation between the four source pixel centres around each target
      cell centre (:func:`_bilinear`), nodata neighbours left out and the weights
      renormalised, as GDAL does; unlike GDAL, the kernel is not widened when the target
      is coarser than the source (use ``average`` for that);
    * ``cubic``: GDAL (:func:`rasterio.warp.reproject`) on the source window, with the
      kernel footprint fixed by ``scale`` (GDAL's ``XSCALE``/``YSCALE``); GDAL's 1/8-pixel
      approximation remains, so chunks agree with a whole-grid warp to that precision.

    Cells outside the source or on its nodata get ``nodata``.
    """
    import rasterio
    import rasterio.errors
    from rasterio._err import CPLE_BaseError  # GDAL errors that are not RasterioError

    out = np.full(shape, nodata, dtype=dtype)
    src_nodata = info.nodata
    if src_nodata is None and np.dtype(info.dtype).kind == "f":
        src_nodata = float("nan")
    try:
        if _same_pixels(info, crs, transform):
            return _direct(info, transform, shape, out, src_nodata)
        if resampling == "bilinear":
            return _bilinear(info, crs, transform, shape, out, src_nodata)
        if resampling in ("nearest", "mode", "average"):
            return _warped_vrt(info, crs, transform, shape, resampling, out, src_nodata)
        return _gdal_reproject(info, crs, transform, shape, resampling, out, src_nodata, scale)
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        raise _raster_error(info.path, exc, "cannot read raster data") from None


def _same_pixels(info: RasterInfo, crs: Any, transform: Any) -> bool:
    """True when the target cells are source pixels (same CRS, size, orientation, whole offset)."""
    import pyproj

    t = info.transform
    if t.b or t.d or not (np.isclose(t.a, transform.a, rtol=1e-9) and np.isclose(t.e, transform.e, rtol=1e-9)):
        return False
    dc = (transform.c - t.c) / t.a
    dr = (transform.f - t.f) / t.e
    if abs(dc - round(dc)) > 1e-6 or abs(dr - round(dr)) > 1e-6:
        return False
    return bool(info.crs == pyproj.CRS.from_user_input(crs))


def _direct(
    info: RasterInfo, transform: Any, shape: tuple[int, int], out: Any, src_nodata: float | None
) -> Any:
    """A plain window read, for a target window made of the source's own pixels."""
    import rasterio
    from rasterio.windows import Window

    t = info.transform
    c_off = round((transform.c - t.c) / t.a)
    r_off = round((transform.f - t.f) / t.e)
    ny, nx = shape
    src_ny, src_nx = info.shape
    c0, c1 = max(0, c_off), min(src_nx, c_off + nx)
    r0, r1 = max(0, r_off), min(src_ny, r_off + ny)
    if c1 <= c0 or r1 <= r0:
        return out
    with rasterio.open(info.source) as src:
        data = src.read(info.band, window=Window(c0, r0, c1 - c0, r1 - r0))
    bad = np.isnan(data) if data.dtype.kind == "f" else np.zeros(data.shape, dtype=bool)
    if src_nodata is not None and not np.isnan(src_nodata):
        bad |= data == src_nodata
    block = np.where(bad, out.flat[0], data).astype(out.dtype)
    out[r0 - r_off : r1 - r_off, c0 - c_off : c1 - c_off] = block
    return out


_EXACT = 1e-6  # source pixels: coordinate approximation of the warper (0 is refused by rasterio)


def _warped_vrt(
    info: RasterInfo, crs: Any, transform: Any, shape: tuple[int, int], resampling: str,
    out: Any, src_nodata: float | None,
) -> Any:  # fmt: skip
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    ny, nx = shape
    if _source_window(info, crs, transform, shape, 2) is None:
        return out
    with rasterio.open(info.source) as src:
        with WarpedVRT(src, src_nodata=src_nodata, crs=crs, transform=transform, width=nx,
                       height=ny, resampling=Resampling[resampling], nodata=out.flat[0],
                       dtype=out.dtype.name, tolerance=_EXACT) as vrt:  # fmt: skip
            return vrt.read(info.band)


def _gdal_reproject(
    info: RasterInfo, crs: Any, transform: Any, shape: tuple[int, int], resampling: str,
    out: Any, src_nodata: float | None, scale: tuple[float, float] | None,
) -> Any:  # fmt: skip
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    smallest = min(scale) if scale else 1.0
    pad = 3 + math.ceil(2.0 / min(1.0, max(smallest, 1e-6)))
    window = _source_window(info, crs, transform, shape, pad)
    if window is None:
        return out
    extras: dict[str, Any] = {}
    if scale is not None:
        extras = {"XSCALE": repr(float(scale[0])), "YSCALE": repr(float(scale[1]))}
    with rasterio.open(info.source) as src:
        data = src.read(info.band, window=window)
        src_transform = src.window_transform(window)
    reproject(data, out, src_transform=src_transform, src_crs=info.crs.to_wkt(),
              src_nodata=src_nodata, dst_transform=transform, dst_crs=crs,
              dst_nodata=out.flat[0], resampling=Resampling[resampling], **extras)  # fmt: skip
    return out


def _bilinear(
    info: RasterInfo, crs: Any, transform: Any, shape: tuple[int, int], out: Any,
    src_nodata: float | None,
) -> Any:  # fmt: skip
    """Bilinear interpolation at the exact source position of every target cell centre."""
    import pyproj
    import rasterio
    from rasterio.windows import Window

    ny, nx = shape
    cols, rows = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)
    x, y = transform @ (cols, rows)
    to_src = pyproj.Transformer.from_crs(pyproj.CRS.from_user_input(crs), info.crs, always_xy=True)
    sx, sy = to_src.transform(x, y, errcheck=False)
    sx, sy = np.asarray(sx, dtype="float64"), np.asarray(sy, dtype="float64")
    src_ny, src_nx = info.shape
    t = info.transform
    wraps = bool(info.crs.is_geographic and abs(abs(t.a) * src_nx - 360.0) < 1e-6 * 360)
    if info.crs.is_geographic:  # longitudes into the source's own 360-degree range
        left = min(t.c, t.c + t.a * src_nx)
        sx = (sx - left) % 360.0 + left
    pc, pr = ~t @ (sx, sy)
    inside = np.isfinite(pc) & np.isfinite(pr) & (pr >= 0) & (pr <= src_ny)
    inside &= (pc >= 0) & (pc <= src_nx) if not wraps else np.isfinite(pc)
    if not inside.any():
        return out
    # Fractional positions relative to source pixel centres; the four neighbours.
    fc, fr = pc[inside] - 0.5, pr[inside] - 0.5
    c_lo, r_lo = np.floor(fc).astype("int64"), np.floor(fr).astype("int64")
    wx, wy = fc - c_lo, fr - r_lo
    r0 = max(0, int(r_lo.min()))
    r1 = min(src_ny, int(r_lo.max()) + 2)
    if wraps:
        c0, c1 = 0, src_nx
    else:
        c0 = max(0, int(c_lo.min()))
        c1 = min(src_nx, int(c_lo.max()) + 2)
    with rasterio.open(info.source) as src:
        data = src.read(info.band, window=Window(c0, r0, c1 - c0, r1 - r0)).astype("float64")
    valid = ~np.isnan(data)
    if src_nodata is not None and not np.isnan(src_nodata):
        valid &= data != src_nodata
    total = np.zeros(fc.shape)
    weight = np.zeros(fc.shape)
    for dr, dc, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                      (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):  # fmt: skip
        rr = r_lo + dr - r0
        cc = c_lo + dc
        cc = cc % src_nx - c0 if wraps else cc - c0
        ok = (rr >= 0) & (rr < data.shape[0]) & (cc >= 0) & (cc < data.shape[1])
        rr, cc = np.where(ok, rr, 0), np.where(ok, cc, 0)
        good = ok & valid[rr, cc] & (w > 0)
        total += np.where(good, w * np.where(good, data[rr, cc], 0.0), 0.0)
        weight += np.where(good, w, 0.0)
    has = weight > 0
    vals = out[inside]
    vals[has] = (total[has] / weight[has]).astype(out.dtype)
    out[inside] = vals
    return out


def _source_window(
    info: RasterInfo, crs: Any, transform: Any, shape: tuple[int, int], pad: int
) -> Any:
    import pyproj
    from rasterio.windows import Window

    ny, nx = shape
    dst_crs = pyproj.CRS.from_user_input(crs)
    cols, rows = np.meshgrid(np.linspace(0, nx, 17), np.linspace(0, ny, 17))
    x, y = transform @ (cols.ravel(), rows.ravel())
    to_src = pyproj.Transformer.from_crs(dst_crs, info.crs, always_xy=True)
    sx, sy = to_src.transform(x, y, errcheck=False)
    sx, sy = np.asarray(sx, dtype="float64"), np.asarray(sy, dtype="float64")
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.any():
        return None
    sx, sy = sx[ok], sy[ok]
    if info.crs.is_geographic:
        # A target window around a pole reaches it between the lattice points.
        to_dst = pyproj.Transformer.from_crs(info.crs, dst_crs, always_xy=True)
        for lat in (90.0, -90.0):
            px, py = to_dst.transform(0.0, lat, errcheck=False)
            if np.isfinite(px) and np.isfinite(py):
                c, r = ~transform @ (px, py)
                if 0 <= c <= nx and 0 <= r <= ny:
                    sx = np.append(sx, [-180.0, 180.0])
                    sy = np.append(sy, [lat, lat])
    pc, pr = ~info.transform @ (sx, sy)
    src_ny, src_nx = info.shape
    c0 = max(0, math.floor(pc.min()) - pad)
    c1 = min(src_nx, math.ceil(pc.max()) + pad)
    r0 = max(0, math.floor(pr.min()) - pad)
    r1 = min(src_ny, math.ceil(pr.max()) + pad)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_decimated(info: RasterInfo, *, max_size: int = 1024) -> tuple[Any, Any, bool]:
    """Read one band at reduced resolution (at most ``max_size`` pixels a side), unmasked.

    GDAL answers a decimated read from the band's overviews when it has them; otherwise it
    subsamples the full-resolution blocks by nearest neighbour, holding only the small
    output in memory. Returns ``(array, transform, from_overview)``.
    """
    import math

    import rasterio
    import rasterio.errors
    from rasterio.enums import Resampling

    ny, nx = info.shape
    f = max(1, math.ceil(max(ny, nx) / max_size))
    oy, ox = math.ceil(ny / f), math.ceil(nx / f)
    try:
        with rasterio.open(info.source) as src:
            data = src.read(info.band, out_shape=(oy, ox), resampling=Resampling.nearest)
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise _raster_error(info.path, exc, "cannot read raster data") from None
    from affine import Affine

    transform = info.transform @ Affine.scale(nx / ox, ny / oy)
    return data, transform, bool(info.overviews) and f >= min(info.overviews)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
