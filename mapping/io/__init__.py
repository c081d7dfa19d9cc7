"""All reading and writing of files: the only package of ``mapping`` that opens files.

Stages take and return in-memory objects. :mod:`~mapping.io.files` holds atomic writes,
tables, JSON, models and arrays; :mod:`~mapping.io.rasters` raster headers, lazy reads and
the COG/Zarr writers; :mod:`~mapping.io.tiles` the maps written chunk by chunk by the
tasks that compute them; :mod:`~mapping.io.warp` the window warps onto a target grid.
"""

from __future__ import annotations

from mapping.io.files import (
    TABLE_SUFFIXES,
    atomic_path,
    csv_dialect,
    file_checksum,
    load_array,
    read_bytes,
    read_csv_text_column,
    read_json,
    read_model,
    read_table,
    read_text,
    read_vector,
    read_zones_vector,
    remove_output,
    save_array,
    write_bytes,
    write_json,
    write_model,
    write_points,
    write_table,
    write_text,
)
from mapping.io.rasters import (
    RASTER_CONTAINER_SUFFIXES,
    RasterInfo,
    decimation,
    gdal_name,
    open_raster,
    open_raster_on_grid,
    pyproj_crs,
    raster_grid,
    raster_info,
    raster_tags,
    read_decimated,
    write_cog,
    write_cogs,
    write_zarr,
    write_zarr_with,
)
from mapping.io.tiles import TiledMaps, write_tiled_cogs
from mapping.io.warp import read_warped

__all__ = [
    "RASTER_CONTAINER_SUFFIXES",
    "TABLE_SUFFIXES",
    "RasterInfo",
    "TiledMaps",
    "atomic_path",
    "csv_dialect",
    "decimation",
    "file_checksum",
    "gdal_name",
    "load_array",
    "open_raster",
    "open_raster_on_grid",
    "pyproj_crs",
    "raster_grid",
    "raster_info",
    "raster_tags",
    "read_bytes",
    "read_csv_text_column",
    "read_decimated",
    "read_json",
    "read_model",
    "read_table",
    "read_text",
    "read_vector",
    "read_warped",
    "read_zones_vector",
    "remove_output",
    "save_array",
    "write_bytes",
    "write_cog",
    "write_cogs",
    "write_json",
    "write_model",
    "write_points",
    "write_table",
    "write_text",
    "write_tiled_cogs",
    "write_zarr",
    "write_zarr_with",
]
