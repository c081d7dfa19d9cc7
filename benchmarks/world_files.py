"""Write a synthetic world of :mod:`mapping.synthetic.worlds` to a folder ``socmap run`` reads.

The folder holds the covariate GeoTIFFs, the zones (raster and GeoPackage), the profile table,
the truth (stock rasters per standard interval, cell areas, true zone totals, the world's
parameters) and ``workflow.yaml``: ``workflows/sample.yaml`` with only the paths changed. The
folder is written under a temporary name and renamed into place, so a present folder is whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from mapping import io
from mapping.synthetic import COVARIATES, STANDARD_DEPTHS, ZONE_NAMES
from mapping.synthetic.worlds import GriddedWorld, true_zone_totals


def workflow_config(sample_yaml: Path, world_dir: Path) -> str:
    """``workflows/sample.yaml`` with only the paths changed to the world folder's files.

    Its ``active_layer`` section (with the comment lines just above it) is left out: the
    worlds have no active-layer raster, and the suite's figures do not judge the thaw split
    (the sample world's known split does, in the tests)."""
    text = Path(sample_yaml).read_text()
    text = re.sub(r"(?m)(^#.*\n)*^active_layer:.*\n(^[ \t]+.*\n?)*", "", text)
    text = text.replace("../sample_rasters/", "")
    return re.sub(r"(?m)^output: \.\./out/\S+$", "output: run", text)


def _write_tif(
    path: Path, a: np.ndarray, world: GriddedWorld, *, categorical: bool = False
) -> None:
    import rasterio

    if categorical:
        data, nodata, dtype = np.where(world.mask, a, 0).astype("uint8"), 0, "uint8"
    else:
        nodata = world.spec.nodata
        data = np.where(world.mask, a, nodata).astype("float32")
        dtype = "float32"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=world.shape[1],
        height=world.shape[0],
        count=1,
        dtype=dtype,
        crs=world.crs,
        transform=world.transform,
        nodata=nodata,
        compress="DEFLATE",
        tiled=True,
    ) as dst:
        dst.write(data, 1)


def _zone_polygons(world: GriddedWorld) -> Any:
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes

    parts: dict[int, list[Any]] = {}
    for geom, value in shapes(
        world.zones, mask=world.zones > 0, transform=world.transform, connectivity=4
    ):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    rows = [
        {
            "zone_code": c,
            "zone_name": ZONE_NAMES[c],
            "geometry": shapely.MultiPolygon(
                list(getattr(shapely.union_all(parts[c]), "geoms", [shapely.union_all(parts[c])]))
            ),
        }
        for c in sorted(parts)
    ]
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=world.crs)


def write_world(world: GriddedWorld, out: Path, sample_yaml: Path) -> Path:
    """Write the world folder (see the module docstring); returns the workflow's path."""
    import rasterio

    out = Path(out)
    with io.atomic_path(out, is_dir=True) as tmp, rasterio.Env(GDAL_PAM_ENABLED="NO"):
        (tmp / "truth").mkdir(parents=True)
        for name in COVARIATES:
            _write_tif(
                tmp / f"{name}.tif",
                world.covariates[name],
                world,
                categorical=name == "landcover",
            )
        _write_tif(tmp / "permafrost_zones.tif", world.zones, world, categorical=True)
        for top, bottom in STANDARD_DEPTHS:
            _write_tif(
                tmp / "truth" / f"soc_{top:g}_{bottom:g}cm.tif",
                world.true_stock(top, bottom),
                world,
            )
        _write_tif(tmp / "truth" / "cell_area_m2.tif", world.cell_area_m2, world)
        _zone_polygons(world).to_file(tmp / "permafrost_zones.gpkg", layer="permafrost_zones")
        world.profiles.round(
            {"lon": 6, "lat": 6, "soc_pct": 3, "bulk_density_g_cm3": 3, "coarse_fraction_pct": 1}
        ).to_csv(tmp / "profiles.csv", index=False)
        true_zone_totals(world).to_csv(tmp / "truth" / "zone_totals.csv", index=False)
        np.savez_compressed(
            tmp / "truth" / "truth.npz",
            surface_density=world.surface_density,
            scale_depth=world.scale_depth,
            cell_area_m2=world.cell_area_m2,
        )
        (tmp / "truth" / "world.json").write_text(
            json.dumps({"spec": world.spec.to_dict(), "summary": world.summary}, indent=2)
        )
        (tmp / "workflow.yaml").write_text(workflow_config(sample_yaml, out))
    return out / "workflow.yaml"
