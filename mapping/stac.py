"""A STAC catalogue of a run's maps: one Collection, one Item per map.

Written under ``OUT/stac/`` (``collection.json``, ``<item>/<item>.json``) with relative
links and asset hrefs, so the folder can be moved or published as it is and STAC browsers
and catalogues (stac-fastapi, pgstac, QGIS's STAC source) can index a run. Each Item
carries the projection (``proj:``), raster (``raster:bands``) and file (``file:checksum``,
``file:size``) extensions, and the map's CF attributes as ``soc:`` properties.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import transform_bounds

from mapping import __version__, io
from mapping.layout import RunFolder

__all__ = ["build_catalogue", "write_stac"]

_COG = pystac.MediaType.COG
_PROPERTIES = ("statistic", "interval", "top_cm", "bottom_cm", "quantile", "model", "software")


def _multihash(checksum: str) -> str:
    """``"sha256:<hex>"`` -> multihash ``1220<hex>`` (what ``file:checksum`` holds)."""
    algorithm, digest = checksum.split(":", 1)
    if algorithm != "sha256":
        raise ValueError(f"no multihash code for {algorithm}")
    return "1220" + digest


def _run_time(run: RunFolder) -> dt.datetime:
    """When the maps were made: the predict stage's start in the manifest (stable per run)."""
    manifest = io.read_json(run.manifest) if run.manifest.is_file() else {}
    stages = manifest.get("stages") or {}
    text = (stages.get("predict") or {}).get("started") or manifest.get("created")
    if text:
        when = dt.datetime.fromisoformat(str(text))
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _footprint(info: io.RasterInfo) -> tuple[list[float], dict[str, Any]]:
    """WGS 84 bbox and GeoJSON geometry of a raster (split at the antimeridian)."""
    ny, nx = info.shape
    t = info.transform
    xs = (t.c, t.c + t.a * nx)
    ys = (t.f, t.f + t.e * ny)
    west, south, east, north = transform_bounds(
        info.crs.to_wkt(), "EPSG:4326", min(xs), min(ys), max(xs), max(ys), densify_pts=51
    )
    bbox = [round(v, 6) for v in (west, south, east, north)]
    w, s, e, n = bbox

    def ring(a: float, b: float) -> list[list[float]]:
        return [[a, s], [b, s], [b, n], [a, n], [a, s]]

    if w <= e:
        return bbox, {"type": "Polygon", "coordinates": [ring(w, e)]}
    return bbox, {"type": "MultiPolygon", "coordinates": [[ring(w, 180.0)], [ring(-180.0, e)]]}


def _data_type(dtype: str) -> DataType:
    return DataType(dtype)


def _item(path: Path, when: dt.datetime) -> pystac.Item:
    info = io.raster_info(path)
    tags = io.raster_tags(path)
    bbox, geometry = _footprint(info)
    item_id = path.stem
    properties: dict[str, Any] = {
        "title": tags.get("long_name", item_id),
        "description": tags.get("comment", ""),
    }
    for key in _PROPERTIES:
        if key in tags:
            value: Any = tags[key]
            if key in ("top_cm", "bottom_cm", "quantile"):
                value = float(value)
            properties[f"soc:{key}"] = value
    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=properties,
    )
    asset = pystac.Asset(
        href=str(path.resolve()),
        media_type=_COG,
        roles=["data"],
        title=tags.get("long_name", item_id),
    )
    item.add_asset("data", asset)

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = info.crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.code = None
        proj.wkt2 = info.crs.to_wkt()
    proj.shape = list(info.shape)
    proj.transform = list(info.transform)[:6]
    t = info.transform
    ny, nx = info.shape
    proj.bbox = [t.c, t.f + t.e * ny, t.c + t.a * nx, t.f]

    band = RasterBand.create(
        data_type=_data_type(info.dtype),
        nodata=_nodata(info.nodata),
        unit=tags.get("units") or info.units,
        spatial_resolution=abs(info.transform.a),
    )
    RasterExtension.ext(asset, add_if_missing=True).bands = [band]
    files = FileExtension.ext(asset, add_if_missing=True)
    files.checksum = _multihash(io.file_checksum(path))
    files.size = path.stat().st_size
    return item


def _nodata(value: float | None) -> Any:
    if value is None:
        return None
    if value != value:  # NaN: STAC spells it as a string
        return "nan"
    return int(value) if float(value).is_integer() else value


def build_catalogue(out: str | Path, *, title: str | None = None) -> pystac.Collection:
    """The STAC Collection of a run folder's COG maps, hrefs normalised under ``OUT/stac``.

    Parameters
    ----------
    out
        The run's output folder.
    title
        Collection title (default: the folder's name).

    Returns
    -------
    pystac.Collection
        With one Item per map; not yet written.
    """
    run = RunFolder(out)
    when = _run_time(run)
    paths = sorted(
        p
        for stats in run.find_maps().values()
        for p, variable in stats.values()
        if variable is None
    )
    items = [_item(p, when) for p in paths]
    if items:
        boxes = [i.bbox for i in items if i.bbox]
        spatial = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
    else:
        spatial = [-180.0, -90.0, 180.0, 90.0]
    name = Path(out).resolve().name
    collection = pystac.Collection(
        id=f"socmap-{name}",
        title=title or f"SOC stock maps of run {name}",
        description=(
            "Soil organic carbon stock maps (kg m-2 of organic carbon) per depth interval: "
            "mean, median, prediction-interval bounds, standard deviation, relative "
            f"uncertainty and area of applicability, made by socmap {__version__}."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([spatial]), pystac.TemporalExtent([[when, when]])
        ),
        license="other",
        keywords=["soil organic carbon", "SOC stock", "digital soil mapping"],
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    for item in items:
        collection.add_item(item)
    collection.normalize_hrefs(str(run.stac.resolve()))
    collection.make_all_asset_hrefs_relative()
    return collection


def write_stac(out: str | Path) -> list[Path]:
    """Write the STAC Collection and Items of a run folder; returns the files written.

    The ``stac/`` folder is rewritten as a whole, so Items of maps no longer present go.
    """
    run = RunFolder(out)
    collection = build_catalogue(out)
    io.remove_output(run.stac)
    written = []
    for obj in [collection, *collection.get_items()]:
        d = obj.to_dict(include_self_link=False, transform_hrefs=True)
        href = obj.get_self_href()
        assert href is not None
        written.append(io.write_json(d, href))
    return written
