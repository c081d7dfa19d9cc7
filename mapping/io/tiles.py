"""Maps written by the tasks that compute them: one GeoTIFF per chunk, then a COG per map.

:func:`write_tiled_cogs` writes several same-shape lazy arrays (the maps of one
prediction) without a single writer:

1. every chunk is computed and written by one Dask task, on the worker that computed it,
   as a small tiled GeoTIFF ``r<i>_c<j>.tif`` in a tiles folder (one band per map,
   ZSTD, written to a temporary name and renamed). The task returns only a small
   record to the client (chunk, whether a file was written, the chunk's counts). A
   chunk in which every map is nodata gets no file at all (sparse);
2. each map is then assembled by a task of its own, in parallel on the workers: a VRT of
   the chunk files (chunks without a file are nodata) copied by GDAL's COG driver
   (overviews, tiling, compression) to a temporary name renamed onto the map's path.

The chunk files are the record of finished work: with a ``key`` (the identity of the
computation) the tiles folder is kept when a run fails or is killed, and the next run
with the same key computes only the chunks that have no file. The client never holds
more than the records, so its memory does not grow with the grid.

Workers write into the output folder, which must therefore be on a file system every
worker can reach (always true of a local cluster); :func:`write_tiled_cogs` checks that
each worker sees the tiles folder before it starts. ``on_workers=False`` is the
fallback for clusters without one: finished chunks are sent to the client, which writes
the same chunk files and assembles the maps itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mapping.cluster import (
    compute_with_progress,
    current_client,
    gather_with_progress,
    stream_results,
)
from mapping.exceptions import OutputError
from mapping.grid import Grid
from mapping.io.files import _disk_full, _os_reason, _remove, atomic_path, read_json, write_json
from mapping.io.rasters import cog_codec, layer_format

__all__ = ["ChunkRecord", "TiledMaps", "write_tiled_cogs"]

KEY_FILE = "key.json"
TILE_COMPRESSION = ({"COMPRESS": "ZSTD", "ZSTD_LEVEL": "1"}, {"COMPRESS": "DEFLATE", "ZLEVEL": "1"})
"""Chunk files are temporary: the fastest lossless codec (ZSTD level 1 writes 4x faster than
DEFLATE level 1, files as small; DEFLATE where GDAL lacks ZSTD); the COG driver compresses
the maps for good."""


@dataclass(frozen=True)
class _Layer:
    """One map: where it goes and how its COG is written."""

    path: Path
    dtype: str
    nodata: float
    tags: dict[str, str]


@dataclass(frozen=True)
class _Frame:
    """What every chunk task needs to know: georeferencing and the layers' dtypes."""

    crs: str
    transform: tuple[float, ...]
    dtype: str
    nodata: tuple[float, ...]
    n_counts: int


class ChunkRecord(NamedTuple):
    """What a chunk task returns to the client."""

    i: int
    j: int
    written: bool
    """False when every map of the chunk is nodata (no file)."""
    counts: tuple[int, ...]
    """Sums of the ``counts`` arrays over the chunk."""


@dataclass(frozen=True)
class TiledMaps:
    """Result of :func:`write_tiled_cogs`."""

    paths: list[Path]
    counts: tuple[int, ...]
    """Sums of each of the ``counts`` arrays over the grid."""
    n_chunks: int
    reused: int
    """Chunks whose file an earlier, interrupted run had written."""
    empty: int
    """Chunks with no data (no file written)."""
    chunk_seconds: float = 0.0
    """Wall time of computing and writing the chunks."""
    assemble_seconds: float = 0.0
    """Wall time of assembling the maps from the chunk files (0 while they are pending)."""
    pending: Callable[[], None] | None = dataclasses.field(default=None, repr=False)

    def wait(self) -> None:
        """Wait until the maps are in place (they already are unless
        ``write_tiled_cogs(wait=False)`` ran on a distributed cluster); raises what their
        assembly raised."""
        if self.pending is not None:
            self.pending()


def write_tiled_cogs(
    items: Sequence[tuple[str | os.PathLike[str], Any, dict[str, Any] | None]],
    *,
    tiles: str | os.PathLike[str] | None = None,
    key: str | None = None,
    counts: Sequence[Any] = (),
    nodata: float = float("nan"),
    overviews: bool = True,
    blocksize: int = 512,
    compress: str = "DEFLATE",
    label: str = "writing rasters",
    on_workers: bool = True,
    on_resume: Callable[[int, int], None] | None = None,
    wait: bool = True,
) -> TiledMaps:
    """Write same-shape ``(path, DataArray, tags)`` items as COGs, chunk files first.

    Parameters
    ----------
    items
        The maps: 2-D ``(y, x)`` DataArrays (Dask-backed: their chunks are the chunk
        files; NumPy-backed ones are cut in ``blocksize`` chunks) with a CRS, written
        with :func:`mapping.io.write_cogs`' conventions: float maps as float32 with
        ``nodata``, integer maps (flags) in their dtype with their ``rio.nodata``.
    tiles
        Folder of the chunk files. With ``key`` it is kept when writing fails, so a later
        call with the same key resumes; without, a temporary folder next to the first
        map is used and removed. Removed once every map is in place.
    key
        Identity of the computation (config, inputs, model). Chunk files kept under
        another key, or another chunk layout, are discarded.
    counts
        More lazy arrays of the same shape, computed in the same pass but not written:
        each chunk task sums them (NaN as zero) and the sums over the grid are returned
        (e.g. the cells the model failed on). Kept in the chunk files' tags, so a
        resumed run counts kept chunks too.
    nodata, overviews, blocksize, compress
        As :func:`mapping.io.write_cogs`.
    label
        Progress-bar label.
    on_workers
        True: each task writes its chunk file and the maps are assembled on the workers
        (a shared file system is checked for). False: chunks are sent to this process,
        which writes them and assembles the maps.
    on_resume
        ``on_resume(kept, n_chunks)`` is called before computing when chunk files of an
        interrupted run are reused.
    wait
        False: on a distributed cluster with ``on_workers``, return once the chunks are
        written, with the maps' assembly submitted and running; the caller goes on (say,
        with the next interval's chunks, which then share the workers with it) and calls
        :meth:`TiledMaps.wait` before using the maps.

    Raises
    ------
    OutputError
        Arrays of different shapes, a folder that cannot be written, a worker that cannot
        see the tiles folder, a full disk.
    MissingCRSError
        An array has no CRS.
    """
    import dask.array as dsa

    if not items:
        return TiledMaps([], (), 0, 0, 0)
    layers, arrays, crs, transform = _layers(items, nodata)
    shape = arrays[0].shape
    extra = [getattr(a, "data", a) for a in counts]
    if any(a.shape != shape for a in [*arrays, *extra]):
        raise OutputError(f"{layers[0].path}: arrays written together must share one shape")
    chunks = next((a.chunks for a in arrays if isinstance(a, dsa.Array)), None)
    if chunks is None:
        chunks = tuple(_cut(n, blocksize) for n in shape)
    parts = [
        (a if isinstance(a, dsa.Array) else dsa.from_array(np.asarray(a), chunks=chunks))
        for a in [*arrays, *extra]
    ]
    stacked = dsa.stack([p if p.chunks == chunks else p.rechunk(chunks) for p in parts])
    stacked = stacked.rechunk({0: -1})
    dtype = np.result_type(*[np.dtype(lay.dtype) for lay in layers]).name
    frame = _Frame(
        crs, tuple(transform)[:6], dtype, tuple(lay.nodata for lay in layers), len(extra)
    )

    folder, temporary = _tiles_folder(tiles, key, layers[0].path)
    offsets = [np.cumsum((0, *c)).tolist() for c in chunks]
    n_chunks = len(chunks[0]) * len(chunks[1])
    try:
        if key is not None:
            ident = {
                "key": key,
                "maps": [lay.path.name for lay in layers],
                "dtype": dtype,
                "counts": len(extra),
                "chunks": [list(c) for c in chunks],
            }
            _open_store(folder, ident)
        kept = _kept_chunks(folder, len(extra))
        if kept and on_resume is not None:
            on_resume(len(kept), n_chunks)
        client = current_client(stacked)
        if on_workers and client is not None:
            _check_shared(client, folder)
        blocks = stacked.to_delayed(optimize_graph=True)[0]
        todo = [
            (i, j)
            for i in range(len(chunks[0]))
            for j in range(len(chunks[1]))
            if (i, j) not in kept
        ]
        args = {(i, j): _chunk_args(folder, i, j, offsets) for i, j in todo}
        t0 = time.perf_counter()
        if on_workers or client is None:
            records = _write_on_workers(blocks, todo, args, frame, label)
        else:
            records = _write_in_client(client, blocks, todo, args, frame, label)
        t1 = time.perf_counter()
        records += list(kept.values())
        sums = tuple(int(sum(r.counts[c] for r in records)) for c in range(len(extra)))
        written = [r for r in records if r.written]
        windows = [(_tile_name(r.i, r.j), *_window(r.i, r.j, offsets)) for r in written]
        geo = (shape, crs, frame.transform)
        jobs = [
            (folder, lay, k, windows, geo, overviews, blocksize, compress)
            for k, lay in enumerate(layers)
        ]
        paths = [lay.path for lay in layers]
        if on_workers and client is not None:
            import dask

            tasks = [dask.delayed(_assemble, pure=False)(*job, threads=1) for job in jobs]
            futures = client.compute(tasks)  # one task per map, in parallel on the workers

            def finish() -> None:
                try:
                    gather_with_progress(client, futures, label=f"{label}: maps")
                except BaseException:
                    if temporary:
                        _remove(folder)
                    raise
                _remove(folder)

            if not wait:
                return TiledMaps(
                    paths, sums, n_chunks, len(kept), n_chunks - len(written), t1 - t0,
                    pending=_once(finish),
                )  # fmt: skip
            finish()
        elif client is None:  # an in-process scheduler: the maps in parallel threads
            import dask

            tasks = [dask.delayed(_assemble, pure=False)(*job, threads="ALL_CPUS") for job in jobs]
            compute_with_progress(*tasks, label=f"{label}: maps")
        else:
            for job in jobs:
                _assemble(*job, threads="ALL_CPUS")
        t2 = time.perf_counter()
    except BaseException:
        if temporary:
            _remove(folder)
        raise
    _remove(folder)
    return TiledMaps(paths, sums, n_chunks, len(kept), n_chunks - len(written), t1 - t0, t2 - t1)


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn``, run on the first call only."""
    done: list[bool] = []

    def call() -> None:
        if not done:
            fn()
            done.append(True)

    return call


# --------------------------------------------------------------------------- set-up
def _layers(
    items: Sequence[tuple[str | os.PathLike[str], Any, dict[str, Any] | None]], nodata: float
) -> tuple[list[_Layer], list[Any], str, Any]:
    """The layers of ``items`` (as :func:`mapping.io.write_cogs` writes them), their data,
    and the CRS (WKT) and transform they share."""
    layers, arrays = [], []
    crs, transform = None, None
    for path, arr, tags in items:
        p, dtype, fill = layer_format(path, arr, nodata)
        text = {k: str(v) for k, v in (tags or {}).items()}
        layers.append(_Layer(p, dtype.name, float(fill), text))
        arrays.append(arr.data)
        if crs is None:
            crs, transform = arr.rio.crs.to_wkt(), Grid.from_dataarray(arr).transform
    return layers, arrays, str(crs), transform


def _cut(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - s) for s in range(0, n, size))


def _tiles_folder(
    tiles: str | os.PathLike[str] | None, key: str | None, first: Path
) -> tuple[Path, bool]:
    """The tiles folder, and whether it is a temporary one (removed on failure too)."""
    if tiles is not None and key is not None:
        folder = Path(tiles)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{folder}: cannot create folder ({exc.strerror})") from None
        for leftover in folder.glob(".*.tmp*"):  # temporaries of a killed run
            _remove(leftover)
        return folder, False
    parent = Path(tiles).parent if tiles is not None else first.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        name = tempfile.mkdtemp(prefix=f".{first.stem}.", suffix=".tiles.tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"{parent}: cannot create output folder ({exc.strerror})") from None
    return Path(name), True


def _open_store(folder: Path, ident: dict[str, Any]) -> None:
    """Keep the chunk files of ``folder`` only if they belong to ``ident``."""
    try:
        kept = read_json(folder / KEY_FILE)
    except Exception:  # missing or unreadable: start afresh
        kept = None
    if kept != ident:
        for p in folder.iterdir():
            _remove(p)
        write_json(ident, folder / KEY_FILE)


def _tile_name(i: int, j: int) -> str:
    return f"r{i}_c{j}.tif"


def _window(i: int, j: int, offsets: list[list[int]]) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of chunk ``(i, j)``."""
    r0, r1 = offsets[0][i], offsets[0][i + 1]
    c0, c1 = offsets[1][j], offsets[1][j + 1]
    return int(r0), int(c0), int(r1 - r0), int(c1 - c0)


_ChunkArgs = tuple[int, int, str, tuple[int, ...]]  # write_chunk's i, j, path, window


def _chunk_args(folder: Path, i: int, j: int, offsets: list[list[int]]) -> _ChunkArgs:
    return (i, j, str(folder / _tile_name(i, j)), _window(i, j, offsets))


def _kept_chunks(folder: Path, n_counts: int) -> dict[tuple[int, int], ChunkRecord]:
    """Records of the chunk files an earlier run finished (a file is complete or absent)."""
    import rasterio
    import rasterio.errors

    kept = {}
    for p in folder.glob("r*_c*.tif"):
        try:
            i, j = (int(s[1:]) for s in p.stem.split("_"))
            with rasterio.open(p) as src:
                sums = json.loads(src.tags().get("socmap_counts", "[]"))
        except (ValueError, OSError, rasterio.errors.RasterioError):
            _remove(p)  # not one of ours, or unreadable: compute the chunk again
            continue
        if len(sums) != n_counts:
            _remove(p)
            continue
        kept[(i, j)] = ChunkRecord(i, j, True, tuple(int(s) for s in sums))
    return kept


def _check_shared(client: Any, folder: Path) -> None:
    """Every worker must see the tiles folder: they write into it."""
    seen = client.run(os.path.isdir, str(folder))
    blind = sorted(w for w, ok in seen.items() if not ok)
    if blind:
        raise OutputError(
            f"{folder}: not visible to worker(s) {', '.join(blind[:3])}: workers write the map "
            "tiles, so the output folder must be on a file system they share (or set "
            "prediction.writer: client)"
        )


# --------------------------------------------------------------------------- chunks
def write_chunk(
    block: np.ndarray, i: int, j: int, path: str, window: tuple[int, ...], frame: _Frame
) -> ChunkRecord:
    """Write one chunk's maps as a GeoTIFF (temporary name, then renamed); run by a task.

    ``block`` is ``(n_maps + n_counts, h, w)``: the maps, then the arrays to sum. A chunk
    whose maps are all nodata and whose sums are zero writes nothing.
    """
    import rasterio
    import rasterio.errors
    from affine import Affine

    n_maps = len(frame.nodata)
    maps = np.asarray(block[:n_maps]).astype(frame.dtype, copy=False)
    sums = tuple(int(np.nansum(block[n_maps + c])) for c in range(frame.n_counts))
    empty = all(
        (np.isnan(m).all() if np.isnan(fill) else (m == fill).all())
        for m, fill in zip(maps, frame.nodata, strict=True)
    )
    if empty and not any(sums):
        return ChunkRecord(i, j, False, sums)
    r0, c0, h, w = window
    transform = Affine(*frame.transform) @ Affine.translation(c0, r0)
    size = min(512, 16 * -(-max(h, w) // 16))  # GeoTIFF tiles: multiples of 16
    dest = Path(path)
    for codec in TILE_COMPRESSION:
        try:
            with atomic_path(dest) as tmp:
                with rasterio.open(
                    tmp, "w", driver="GTiff", width=w, height=h, count=n_maps, dtype=frame.dtype,
                    crs=frame.crs, transform=transform, tiled=True,
                    blockxsize=size, blockysize=size, interleave="band", **codec,
                ) as dst:  # fmt: skip
                    dst.write(maps)
                    dst.update_tags(socmap_counts=json.dumps(list(sums)))
            break
        except rasterio.errors.RasterioError as exc:
            if codec["COMPRESS"] == "ZSTD" and "ZSTD" in str(exc).upper():
                continue  # a GDAL built without ZSTD
            raise _write_error(dest, exc) from None
    return ChunkRecord(i, j, True, sums)


def _write_on_workers(
    blocks: Any,
    todo: list[tuple[int, int]],
    args: dict[tuple[int, int], _ChunkArgs],
    frame: _Frame,
    label: str,
) -> list[ChunkRecord]:
    """Each chunk computed and written by one task; only the records come back."""
    import dask

    if not todo:
        return []
    frame_key = dask.delayed(frame, pure=True)
    tasks = [
        dask.delayed(write_chunk, pure=False)(blocks[i, j], *args[(i, j)], frame_key)
        for i, j in todo
    ]
    return list(compute_with_progress(*tasks, label=label))


def _write_in_client(
    client: Any,
    blocks: Any,
    todo: list[tuple[int, int]],
    args: dict[tuple[int, int], _ChunkArgs],
    frame: _Frame,
    label: str,
) -> list[ChunkRecord]:
    """Chunks computed on the workers and written here, as they arrive (a few at a time)."""
    records: list[ChunkRecord] = []

    def write(n: int, block: np.ndarray) -> None:
        records.append(write_chunk(block, *args[todo[n]], frame))

    stream_results(client, [blocks[i, j] for i, j in todo], write, label=label)
    return records


# --------------------------------------------------------------------------- maps
def _assemble(
    folder: Path,
    layer: _Layer,
    band: int,
    windows: list[tuple[str, int, int, int, int]],
    geo: tuple[tuple[int, int], str, tuple[float, ...]],
    overviews: bool,
    blocksize: int,
    compress: str,
    *,
    threads: int | str,
) -> Path:
    """One map: a VRT of band ``band`` of the chunk files, copied to a COG; run by a task."""
    import rasterio
    import rasterio.errors
    import rasterio.shutil

    vrt = folder / f"{layer.path.stem}.vrt"
    try:
        with atomic_path(vrt) as tmp:
            tmp.write_text(_vrt_xml(layer, band, windows, geo))
        # flags (integer layers) are not averaged: their overviews take the most common value
        resampling = "MODE" if np.dtype(layer.dtype).kind in "iu" else "AVERAGE"
        with atomic_path(layer.path) as tmp:
            rasterio.shutil.copy(
                vrt, tmp, driver="COG", **cog_codec(compress), PREDICTOR="YES",
                BLOCKSIZE=blocksize, BIGTIFF="IF_SAFER", NUM_THREADS=str(threads),
                OVERVIEWS="AUTO" if overviews else "NONE", OVERVIEW_RESAMPLING=resampling,
            )  # fmt: skip
    except rasterio.errors.RasterioError as exc:
        raise _write_error(layer.path, exc) from None
    return layer.path


def _vrt_xml(
    layer: _Layer,
    band: int,
    windows: list[tuple[str, int, int, int, int]],
    geo: tuple[tuple[int, int], str, tuple[float, ...]],
) -> str:
    """The VRT of one map: band ``band`` of each chunk file in its window, nodata elsewhere."""
    from rasterio.dtypes import _gdal_typename

    (ny, nx), crs, t = geo
    root = ET.Element("VRTDataset", rasterXSize=str(nx), rasterYSize=str(ny))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs
    # GDAL's geotransform order: x0, dx/dcol, dx/drow, y0, dy/dcol, dy/drow
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t[2], t[0], t[1], t[5], t[3], t[4])
    )
    meta = ET.SubElement(root, "Metadata")
    for k, v in layer.tags.items():
        ET.SubElement(meta, "MDI", key=k).text = v
    b = ET.SubElement(root, "VRTRasterBand", dataType=_gdal_typename(layer.dtype), band="1")
    if "long_name" in layer.tags or "statistic" in layer.tags:
        ET.SubElement(b, "Description").text = layer.tags.get(
            "long_name", layer.tags.get("statistic")
        )
    if "units" in layer.tags:
        ET.SubElement(b, "UnitType").text = layer.tags["units"]
    fill = layer.nodata
    ET.SubElement(b, "NoDataValue").text = "nan" if np.isnan(fill) else repr(fill)
    for name, r0, c0, h, w in windows:
        s = ET.SubElement(b, "SimpleSource")
        ET.SubElement(s, "SourceFilename", relativeToVRT="1").text = name
        ET.SubElement(s, "SourceBand").text = str(band + 1)
        ET.SubElement(s, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(s, "DstRect", xOff=str(c0), yOff=str(r0), xSize=str(w), ySize=str(h))
    return ET.tostring(root, encoding="unicode")


def _write_error(p: Path, exc: BaseException) -> OutputError:
    if _disk_full(exc):
        return OutputError(
            f"{p}: disk full while writing ({_os_reason(exc)}); nothing was written under this name"
        )
    return OutputError(f"{p}: cannot write raster ({_os_reason(exc)})")
