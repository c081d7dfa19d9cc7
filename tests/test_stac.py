"""STAC catalogue of a run: a Collection and one Item per map, checked field by field.

The Collection and every Item are validated against the official STAC 1.1.0 core JSON
schemas that ``pystac`` ships (no network). The extension schemas (projection, raster,
file) live only at their ``stac-extensions.github.io`` URIs, so without a network every
field those extensions define is checked here instead, and a full ``pystac`` validation
including the extensions runs when ``SOCMAP_NETWORK_TESTS=1``. The catalogue is also read
back with ``pystac`` (links and asset hrefs resolved from the files).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pystac
import pystac.validation
import pytest
import rasterio
import xarray as xr

from mapping.grid import Grid
from mapping.predict import write_prediction
from mapping.stac import write_stac

GRID = Grid.from_bounds(
    (-400_000, 300_000, -400_000 + 200 * 1000, 300_000 + 150 * 1000), 1000.0, "EPSG:6931"
)
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(1)
    median = rng.uniform(1, 20, GRID.shape).astype("float32")
    median[:10, :10] = np.nan
    aoa = np.where(np.isnan(median), np.nan, rng.uniform(size=GRID.shape) > 0.2).astype("float32")
    arrays = {
        "mean": median,
        "median": median,
        "lower": median / 2,
        "upper": median * 2,
        "aoa": aoa,
    }
    ds = GRID.attach(
        xr.Dataset(
            {k: (("y", "x"), da.from_array(v, chunks=64)) for k, v in arrays.items()},
            coords=dict(zip(("y", "x"), GRID.coords(), strict=True)),
            attrs={"quantiles": [0.05, 0.95]},
        )
    )
    with dask.config.set(scheduler="threads"):
        write_prediction(ds, out / "maps", (0, 30), overviews=False, model="random_forest")
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "created": "2026-01-02T03:04:05+00:00",
                "stages": {"predict": {"started": "2026-01-02T03:05:00+00:00"}},
            }
        )
    )
    written = write_stac(out)
    assert len(written) == 1 + 6
    return out


def _items(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (run / "stac").glob("*/*.json")}


def test_collection_links_every_item(run: Path) -> None:
    col = json.loads((run / "stac" / "collection.json").read_text())
    assert col["type"] == "Collection" and col["stac_version"] == "1.1.0"
    for key in ("id", "description", "license", "extent", "links"):
        assert key in col
    [bbox] = col["extent"]["spatial"]["bbox"]
    assert -180 <= bbox[0] < bbox[2] <= 180 and -90 <= bbox[1] < bbox[3] <= 90
    assert col["extent"]["temporal"]["interval"] == [["2026-01-02T03:05:00Z"] * 2]
    hrefs = [link["href"] for link in col["links"] if link["rel"] == "item"]
    assert len(hrefs) == 6
    for href in hrefs:
        assert not Path(href).is_absolute()  # a self-contained catalogue moves as a folder
        assert (run / "stac" / href).resolve().is_file()


def test_items_carry_projection_raster_and_file(run: Path) -> None:
    items = _items(run)
    assert set(items) == {
        f"soc_0_30cm_{s}"
        for s in ("mean", "median", "lower", "upper", "relative_uncertainty", "aoa")
    }
    for item_id, item in items.items():
        assert (
            item["type"] == "Feature" and item["stac_version"] == "1.1.0" and item["id"] == item_id
        )
        assert set(item["stac_extensions"]) >= {PROJECTION, RASTER, FILE}
        assert item["properties"]["datetime"] == "2026-01-02T03:05:00Z"
        assert item["properties"]["proj:code"] == "EPSG:6931"
        assert item["properties"]["proj:shape"] == list(GRID.shape)
        assert item["properties"]["proj:transform"] == list(GRID.transform)[:6]
        w, s, e, n = item["bbox"]
        assert -180 <= w < e <= 180 and -90 <= s < n <= 90
        ring = np.array(item["geometry"]["coordinates"][0])
        assert ring[:, 0].min() == w and ring[:, 1].max() == n
        asset = item["assets"]["data"]
        path = (run / "stac" / item_id / asset["href"]).resolve()
        assert path == (run / "maps" / f"{item_id}.tif").resolve()
        assert asset["type"] == pystac.MediaType.COG and asset["roles"] == ["data"]
        assert asset["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert asset["file:size"] == path.stat().st_size
        [band] = asset["raster:bands"]
        with rasterio.open(path) as src:
            assert band["data_type"] == src.dtypes[0]
            assert asset["title"] == src.tags()["long_name"] == item["properties"]["title"]
        assert band["spatial_resolution"] == 1000.0
    aoa = items["soc_0_30cm_aoa"]["assets"]["data"]["raster:bands"][0]
    assert aoa["data_type"] == "uint8" and aoa["nodata"] == 255 and aoa["unit"] == "1"
    upper = items["soc_0_30cm_upper"]
    band = upper["assets"]["data"]["raster:bands"][0]
    assert band["nodata"] == "nan" and band["unit"] == "kg m-2"
    assert upper["properties"]["soc:quantile"] == 0.95 and upper["properties"]["soc:top_cm"] == 0.0


def test_pystac_reads_the_catalogue_back(run: Path) -> None:
    col = pystac.Collection.from_file(str(run / "stac" / "collection.json"))
    items = list(col.get_items())
    assert len(items) == 6
    for item in items:
        assert Path(item.assets["data"].get_absolute_href()).is_file()
        assert item.get_collection() is not None and item.get_collection().id == col.id


def test_core_schemas_validate_collection_and_items(run: Path) -> None:
    collection = json.loads((run / "stac" / "collection.json").read_text())
    used = pystac.validation.validate_dict(collection, extensions=[])
    assert used == [
        "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json"
    ]
    for name, item in _items(run).items():
        used = pystac.validation.validate_dict(item, extensions=[])
        assert used == ["https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"], name


def test_core_schema_rejects_an_item_without_geometry(run: Path) -> None:
    # The validator above is the real one: an Item the spec forbids fails it.
    item = next(iter(_items(run).values()))
    del item["geometry"]
    with pytest.raises(pystac.errors.STACValidationError, match="geometry"):
        pystac.validation.validate_dict(item, extensions=[])


@pytest.mark.skipif(
    os.environ.get("SOCMAP_NETWORK_TESTS") != "1",
    reason="extension schemas are fetched from stac-extensions.github.io (SOCMAP_NETWORK_TESTS=1)",
)
def test_full_validation_with_extension_schemas(run: Path) -> None:
    col = pystac.Collection.from_file(str(run / "stac" / "collection.json"))
    assert col.validate_all() == 6
