"""Window warps: a covariate read onto the target grid, chunk by chunk, equal to a warp of
the whole grid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mapping.io.rasters import RasterInfo, _raster_error, wrap_longitudes


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

    Cells outside the source or on its nodata get ``nodata``. A lon/lat source that spans
    the globe or passes ±180° is wrapped (:func:`~mapping.io.rasters.wrap_longitudes`), so
    any longitude finds its pixel whatever the resampling.
    """
    import pyproj
    import rasterio
    import rasterio.errors
    from rasterio._err import CPLE_BaseError  # GDAL errors that are not RasterioError

    out = np.full(shape, nodata, dtype=dtype)
    src_nodata = info.nodata
    if src_nodata is None and np.dtype(info.dtype).kind == "f":
        src_nodata = float("nan")
    # GDAL does not wrap longitudes (_bilinear wraps them itself); seen from a projected
    # CRS they are in -180..180, where one turn laid out as -180..180 suits GDAL's warper
    # (which finds the source window of a target window across ±180° by sampling)
    geographic = pyproj.CRS.from_user_input(crs).is_geographic
    wide = wrap_longitudes(info, (-540.0, 540.0) if geographic else (-180.0, 180.0)) or info
    try:
        if _same_pixels(wide, crs, transform):
            out = _direct(wide, transform, shape, out, src_nodata)
        elif resampling == "bilinear":
            out = _bilinear(info, crs, transform, shape, out, src_nodata)
        elif resampling in ("nearest", "mode", "average"):
            out = _warped_vrt(wide, crs, transform, shape, resampling, out, src_nodata)
        else:
            out = _gdal_reproject(wide, crs, transform, shape, resampling, out, src_nodata, scale)
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        raise _raster_error(info.path, exc, "cannot read raster data") from None
    if info.scaled and out.dtype.kind == "f":
        # scale and offset are affine, so they commute with every (weighted-mean) resampling
        out = info.unpack(out).astype(out.dtype, copy=False)
    return out


def _same_pixels(info: RasterInfo, crs: Any, transform: Any) -> bool:
    """True when the target cells are source pixels (same CRS, size, orientation, whole offset)."""
    import pyproj

    t = info.transform
    if (
        t.b
        or t.d
        or not (np.isclose(t.a, transform.a, rtol=1e-9) and np.isclose(t.e, transform.e, rtol=1e-9))
    ):
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
        window = Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(info.band, window=window)
        # GDAL's mask: nodata, a per-dataset mask or an alpha band
        bad = src.read_masks(info.band, window=window) == 0 if info.masked else None
    if bad is None:
        bad = np.zeros(data.shape, dtype=bool)
    if data.dtype.kind == "f":
        bad |= np.isnan(data)
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
        if info.masked and info.nodata is None:
            src_nodata = None  # GDAL's warper then honours the mask band
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
        window = Window(c0, r0, c1 - c0, r1 - r0)
        data = src.read(info.band, window=window).astype("float64")
        valid = ~np.isnan(data)
        if info.masked:  # a per-dataset mask or an alpha band, beyond nodata
            valid &= src.read_masks(info.band, window=window) != 0
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
    info: RasterInfo, crs: Any, transform: Any, shape: tuple[int, int], pad: int,
    clip: bool = True,
) -> Any:  # fmt: skip
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
    c0, c1 = math.floor(pc.min()) - pad, math.ceil(pc.max()) + pad
    r0, r1 = math.floor(pr.min()) - pad, math.ceil(pr.max()) + pad
    if clip:
        c0, c1, r0, r1 = max(0, c0), min(src_nx, c1), max(0, r0), min(src_ny, r1)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def read_zone_fractions(
    info: RasterInfo,
    *,
    crs: Any,
    transform: Any,
    shape: tuple[int, int],
    skip: tuple[float, ...] = (),
    bands: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """The fraction of each target cell that each code of a (finer) zone raster covers.

    GDAL's ``average`` of each code's 0/1 indicator: source pixels weighted by the part of
    the cell they cover (exact pixel counts when the source pixels nest in the cells).
    Nodata, masked pixels, the codes in ``skip`` and the area outside the source count
    as 0, so a cell's fractions are of the whole cell, not of its valid pixels (GDAL's
    ``mode`` gives a cell to one code however few pixels hold one).

    Returns
    -------
    codes
        The codes found under the window (float64, ascending).
    fractions
        ``(len(codes), *shape)`` float32.
    """
    import pyproj
    import rasterio
    import rasterio.errors
    from rasterio._err import CPLE_BaseError
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    geographic = pyproj.CRS.from_user_input(crs).is_geographic
    wide = wrap_longitudes(info, (-540.0, 540.0) if geographic else (-180.0, 180.0)) or info
    empty = (np.empty(0), np.zeros((0, *shape), dtype="float32"))
    # the window under the target, unclipped, with room for GDAL's footprints at its edge
    win = _source_window(wide, crs, transform, shape, 2, clip=False)
    if win is None:
        return empty
    c0, r0, w, h = int(win.col_off), int(win.row_off), int(win.width), int(win.height)
    src_ny, src_nx = wide.shape
    a0, a1 = max(0, c0), min(src_nx, c0 + w)
    b0, b1 = max(0, r0), min(src_ny, r0 + h)
    if a1 <= a0 or b1 <= b0:
        return empty
    codes = np.zeros((h, w), dtype=wide.dtype)
    valid = np.zeros((h, w), dtype=bool)
    try:
        with rasterio.open(wide.source) as src:
            part = Window(a0, b0, a1 - a0, b1 - b0)
            data = src.read(wide.band, window=part)
            ok = src.read_masks(wide.band, window=part) != 0
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        raise _raster_error(info.path, exc, "cannot read raster data") from None
    if data.dtype.kind == "f":
        ok &= np.isfinite(data)
    for v in (*skip, *(() if info.nodata is None else (info.nodata,))):
        ok &= data != v
    codes[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = data
    valid[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = ok
    found = np.unique(codes[valid])
    if not len(found):
        return empty
    fractions = np.zeros((len(found), *shape), dtype="float32")
    src_transform = wide.transform * wide.transform.translation(c0, r0)
    for i in range(0, len(found), bands):  # a few codes at a time: one warp of several bands
        batch = found[i : i + bands]
        indicator = (valid[None] & (codes[None] == batch[:, None, None])).astype("float32")
        out = np.zeros((len(batch), *shape), dtype="float32")
        reproject(indicator, out, src_transform=src_transform, src_crs=wide.crs.to_wkt(),
                  dst_transform=transform, dst_crs=crs, resampling=Resampling.average,
                  src_nodata=None, dst_nodata=None, init_dest_nodata=False,
                  tolerance=_EXACT)  # fmt: skip
        fractions[i : i + len(batch)] = out
    return found.astype("float64"), fractions
