#!/usr/bin/env python
"""Regenerate the sample data in ``sample_rasters/`` from the synthetic world.

    python workflows/make_sample_data.py [--out sample_rasters] [--seed 20261124]

Everything is derived from one seed through :mod:`mapping.synthetic`: the
covariate Cloud-Optimized GeoTIFFs on EASE-Grid 2.0 North (precipitation on a
geographic 0.1° grid instead, so the alignment stage has work to do), the
permafrost zones as raster and polygons, the horizon table of profiles, and the
known truth (SOC stock rasters, model parameters, zone totals). The output is
written to a temporary folder next to ``--out`` and renamed into place, and it
is byte-identical from run to run with the same library versions
(``SHA256SUMS`` lists the checksums).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject

from mapping.io import atomic_path
from mapping.synthetic import (
    CRS,
    LANDCOVER_CLASSES,
    STANDARD_DEPTHS,
    ZONE_MAAT_THRESHOLDS,
    ZONE_NAMES,
    SyntheticWorld,
    make_world,
    sample_profiles,
    zone_polygons,
    zone_totals,
)
from mapping.synthetic.active_layer import ALT_MAX_CM, active_layer_thickness, true_thaw_split

SEED = 20261124
SHAPE = (320, 400)  # (ny, nx): 1600 km x 2000 km
RESOLUTION = 5000.0
CENTER = (130.0, 64.5)  # lon, lat: north-east Siberia
N_PROFILES = 500
FLOAT_NODATA = -9999.0
# precipitation is delivered like a reanalysis product: geographic 0.1° grid, larger extent
PRECIP_GRID = {"west": 100.0, "east": 165.0, "south": 48.0, "north": 80.0, "step": 0.1}

COVARIATE_FILES: dict[str, dict[str, str]] = {
    "elevation": {"file": "elevation.tif", "units": "m", "long_name": "elevation above sea level"},
    "maat": {"file": "maat.tif", "units": "degC", "long_name": "mean annual air temperature"},
    "precipitation": {
        "file": "precipitation.tif",
        "units": "mm yr-1",
        "long_name": "annual precipitation",
    },
    "ndvi": {
        "file": "ndvi.tif",
        "units": "1",
        "long_name": "normalized difference vegetation index",
    },
    "twi": {"file": "twi.tif", "units": "1", "long_name": "topographic wetness index ln(a/tan b)"},
    "landcover": {"file": "landcover.tif", "units": "class", "long_name": "land-cover class"},
}
CSV_DECIMALS = {
    "lon": 6,
    "lat": 6,
    "soc_pct": 3,
    "bulk_density_g_cm3": 3,
    "coarse_fraction_pct": 1,
    "n_pct": 5,
}
# GeoPackages record the time they were written unless told otherwise
FIXED_TIMESTAMP = "2026-01-01T00:00:00Z"


# --------------------------------------------------------------------------- writers
def write_cog(
    path: Path,
    array: np.ndarray,
    *,
    crs: str,
    transform: Affine,
    nodata: float,
    tags: dict[str, str],
    categorical: bool = False,
) -> None:
    """Write one band as a tiled, DEFLATE-compressed Cloud-Optimized GeoTIFF with overviews."""
    dtype = "uint8" if categorical else "float32"
    data = array.astype(dtype)
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "level": 9,
        "predictor": 2 if categorical else 3,
        "blocksize": 256,
        "overview_resampling": "MODE" if categorical else "AVERAGE",
        "overview_count": 2,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(**tags)
        dst.set_band_description(1, tags.get("long_name", path.stem))
        dst.units = (tags.get("units", ""),)


def _masked(world: SyntheticWorld, a: np.ndarray) -> np.ndarray:
    return np.where(world.mask, a, FLOAT_NODATA)


def precipitation_grid(world: SyntheticWorld) -> tuple[np.ndarray, Affine]:
    """Annual precipitation on the geographic grid, evaluated exactly at its cell centres."""
    g = PRECIP_GRID
    step = g["step"]
    nx = round((g["east"] - g["west"]) / step)
    ny = round((g["north"] - g["south"]) / step)
    transform = Affine(step, 0.0, g["west"], 0.0, -step, g["north"])
    lon = g["west"] + (np.arange(nx) + 0.5) * step
    lat = g["north"] - (np.arange(ny) + 0.5) * step
    lon2, lat2 = np.meshgrid(lon, lat)
    x, y = pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True).transform(lon2, lat2)
    return world.precipitation_at(x, y), transform


def precipitation_alignment_error(
    world: SyntheticWorld, precip: np.ndarray, transform: Affine
) -> dict[str, float]:
    """How far bilinear reprojection of the geographic precipitation is from the exact grid values."""
    dst = np.full(world.shape, np.nan, dtype="float64")
    reproject(
        precip.astype("float64"),
        dst,
        src_transform=transform,
        src_crs="EPSG:4326",
        dst_transform=world.transform,
        dst_crs=CRS,
        resampling=Resampling.bilinear,
        dst_nodata=np.nan,
    )
    err = np.abs(dst - world.covariates["precipitation"])[world.mask]
    rel = err / world.covariates["precipitation"][world.mask]
    return {
        "max_abs_mm": round(float(np.nanmax(err)), 3),
        "mean_abs_mm": round(float(np.nanmean(err)), 3),
        "max_rel": round(float(np.nanmax(rel)), 5),
    }


def grid_rotation(world: SyntheticWorld) -> dict[str, float]:
    """Geographic bearing (degrees clockwise from north) of the grid's +y axis at centre and corners."""
    to_ll = pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    geod = pyproj.Geod(ellps="WGS84")
    left, bottom, right, top = world.bounds
    points = {
        "centre": ((left + right) / 2, (bottom + top) / 2),
        "upper_left": (left, top),
        "upper_right": (right, top),
        "lower_left": (left, bottom),
        "lower_right": (right, bottom),
    }
    out = {}
    for name, (x, y) in points.items():
        lon0, lat0 = to_ll.transform(x, y)
        lon1, lat1 = to_ll.transform(x, y + 1000.0)
        az, _, _ = geod.inv(lon0, lat0, lon1, lat1)
        out[name] = round(az % 360.0, 2)
    return out


def profile_counts(profiles: pd.DataFrame) -> dict[str, int]:
    bottom = profiles.groupby("profile_id")["bottom_cm"].max()
    return {f"0-{d:g}": int((bottom >= d).sum()) for _, d in STANDARD_DEPTHS}


def _ranges(profiles: pd.DataFrame, horizons: list[str]) -> dict[str, list[float]]:
    sel = profiles[profiles["horizon"].isin(horizons)]
    return {
        col: [round(float(v), 2) for v in sel[col].quantile([0.05, 0.95])]
        for col in ("soc_pct", "bulk_density_g_cm3")
    }


def ptf_stock_gap(world: SyntheticWorld, n_profiles: int, seed: int) -> dict[str, float]:
    """Mean stock from PTF bulk densities relative to measured ones, in %, per interval.

    The same profiles are generated without missing values (same random stream), and
    their stocks are computed twice by the stock stage: with the bulk densities as
    measured and with every bulk density estimated by the default PTF.
    """
    from mapping.depths import compute_stocks

    full = sample_profiles(world, n_profiles, seed, missing_bd=0.0)
    keep = ["profile_id", "lon", "lat", "top_cm", "bottom_cm", "soc_pct",
            "bulk_density_g_cm3", "coarse_fraction_pct", "horizon_area_pct"]  # fmt: skip
    full = format_profiles(full)[keep]  # the values as written to profiles.csv
    means = []
    for table in (full, full.assign(bulk_density_g_cm3=np.nan)):
        res = compute_stocks(table, list(STANDARD_DEPTHS), bulk_density_ptf="default")
        means.append(res.stocks.groupby(["top_cm", "bottom_cm"])["soc_stock_kg_m2"].sum())
    gap = 100.0 * (means[1] / means[0] - 1.0)
    return {f"0-{b:g}": round(float(gap[(a, b)]), 2) for a, b in STANDARD_DEPTHS}


def format_profiles(profiles: pd.DataFrame) -> pd.DataFrame:
    df = profiles.round(CSV_DECIMALS)
    for col in ("top_cm", "bottom_cm", "horizon_area_pct"):
        df[col] = df[col].round().astype(int)
    return df


# --------------------------------------------------------------------------- the run
def generate(
    out_dir: Path, *, seed: int, shape: tuple[int, int], n_profiles: int
) -> dict[str, Any]:
    """Write every sample file into ``out_dir`` (an empty folder); return the summary."""
    world = make_world(seed, shape, RESOLUTION, center_lonlat=CENTER)
    profiles = sample_profiles(world, n_profiles, seed)
    crs = CRS
    provenance = f"synthetic sample data; workflows/make_sample_data.py --seed {seed}"

    # covariates on the EASE-Grid 2.0 North grid
    for name, meta in COVARIATE_FILES.items():
        tags = {"units": meta["units"], "long_name": meta["long_name"], "source": provenance}
        if name == "precipitation":
            continue
        if name == "landcover":
            codes = ", ".join(f"{c}={n}" for c, n in LANDCOVER_CLASSES.items())
            write_cog(
                out_dir / meta["file"],
                world.covariates[name],
                crs=crs,
                transform=world.transform,
                nodata=0,
                tags={**tags, "classes": codes},
                categorical=True,
            )
        else:
            write_cog(
                out_dir / meta["file"],
                _masked(world, world.covariates[name]),
                crs=crs,
                transform=world.transform,
                nodata=FLOAT_NODATA,
                tags=tags,
            )
    precip, precip_transform = precipitation_grid(world)
    meta = COVARIATE_FILES["precipitation"]
    write_cog(
        out_dir / meta["file"],
        precip,
        crs="EPSG:4326",
        transform=precip_transform,
        nodata=FLOAT_NODATA,
        tags={"units": meta["units"], "long_name": meta["long_name"], "source": provenance},
    )

    # permafrost zones: raster and the same zones as polygons
    zone_tags = {
        "units": "class",
        "long_name": "permafrost zone",
        "classes": ", ".join(f"{c}={n}" for c, n in ZONE_NAMES.items()) + ", 0=none or ocean",
        "source": provenance,
    }
    write_cog(
        out_dir / "permafrost_zones.tif",
        world.zones,
        crs=crs,
        transform=world.transform,
        nodata=0,
        tags=zone_tags,
        categorical=True,
    )
    polys = zone_polygons(world)
    import pyogrio

    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_TIMESTAMP})
    try:
        pyogrio.write_dataframe(polys, out_dir / "permafrost_zones.gpkg", layer="permafrost_zones")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})

    # profiles
    format_profiles(profiles).to_csv(out_dir / "profiles.csv", index=False, lineterminator="\n")

    # truth
    truth = out_dir / "truth"
    truth.mkdir()
    for top, bottom in STANDARD_DEPTHS:
        write_cog(
            truth / f"soc_{top:g}_{bottom:g}cm.tif",
            _masked(world, world.true_stock(top, bottom)),
            crs=crs,
            transform=world.transform,
            nodata=FLOAT_NODATA,
            tags={
                "units": "kg C m-2",
                "long_name": f"true SOC stock {top:g}-{bottom:g} cm",
                "interval": f"{top:g}-{bottom:g}",
                "statistic": "truth",
                "source": provenance,
            },
        )
    write_cog(
        truth / "precipitation_5km.tif",
        _masked(world, world.covariates["precipitation"]),
        crs=crs,
        transform=world.transform,
        nodata=FLOAT_NODATA,
        tags={
            "units": "mm yr-1",
            "long_name": "annual precipitation, exact values at the cell centres of the covariate grid",
            "source": provenance,
        },
    )
    totals = zone_totals(world)
    totals.round(6).to_csv(truth / "zone_totals.csv", index=False, lineterminator="\n")

    # active layer (for the thawed / perennially frozen split) and its true split
    alt = active_layer_thickness(world, seed)
    write_cog(
        out_dir / "active_layer.tif",
        _masked(world, alt),
        crs=crs,
        transform=world.transform,
        nodata=FLOAT_NODATA,
        tags={
            "units": "cm",
            "long_name": "active-layer thickness (seasonal thaw depth)",
            "source": provenance,
        },
    )
    thaw = true_thaw_split(world, alt)
    thaw.round(6).to_csv(truth / "thaw_split.csv", index=False, lineterminator="\n")

    counts = profile_counts(profiles)
    n_pairs = int((profiles.groupby("profile_id")["horizon_area_pct"].min() < 100).sum())
    align = precipitation_alignment_error(world, precip, precip_transform)
    rotation = grid_rotation(world)
    lon, lat = world.lonlat
    zone_area = {
        ZONE_NAMES.get(c, "none"): int((world.zones[world.mask] == c).sum()) * 25
        for c in (1, 2, 3, 4, 0)
    }
    summary: dict[str, Any] = {
        "seed": seed,
        "generator": "workflows/make_sample_data.py (mapping.synthetic)",
        "grid": {
            "crs": crs,
            "shape": list(world.shape),
            "resolution_m": world.resolution,
            "transform": list(world.transform)[:6],
            "bounds": list(world.bounds),
            "cell_area_km2": world.cell_area_m2 / 1e6,
            "center_lonlat": list(CENTER),
            "lon_range": [round(float(lon.min()), 2), round(float(lon.max()), 2)],
            "lat_range": [round(float(lat.min()), 2), round(float(lat.max()), 2)],
            "grid_up_bearing_deg": rotation,
            "land_cells": int(world.mask.sum()),
            "ocean_cells": int((~world.mask).sum()),
        },
        "truth": world.params.to_dict(),
        "zones": {
            "codes": {str(c): n for c, n in ZONE_NAMES.items()},
            "maat_upper_bounds_degC": dict(
                zip([ZONE_NAMES[c] for c in (1, 2, 3, 4)], ZONE_MAAT_THRESHOLDS, strict=True)
            ),
            "rule": "zone of a cell = first zone whose MAAT upper bound it does not exceed, "
            "on MAAT smoothed with a Gaussian of 1 cell; patches < 4 cells sieved; "
            "warmer land and ocean = 0",
            "area_km2": zone_area,
        },
        "landcover_codes": {str(c): n for c, n in LANDCOVER_CLASSES.items()},
        "covariates": {
            name: {
                "file": meta["file"],
                "units": meta["units"],
                "kind": "categorical" if name == "landcover" else "continuous",
                "crs": "EPSG:4326" if name == "precipitation" else crs,
            }
            for name, meta in COVARIATE_FILES.items()
        },
        "precipitation": {
            "file": "precipitation.tif",
            "crs": "EPSG:4326",
            "resolution_deg": PRECIP_GRID["step"],
            "bounds": [PRECIP_GRID[k] for k in ("west", "south", "east", "north")],
            "exact_on_grid": "truth/precipitation_5km.tif",
            "bilinear_to_grid_error": align,
        },
        "profiles": {
            "file": "profiles.csv",
            "n_profiles": int(profiles["profile_id"].nunique()),
            "n_horizons": len(profiles),
            "profiles_reaching": counts,
            "cryoturbated_profiles": n_pairs,
            "organic_horizons": int(profiles["horizon"].str.startswith("O").sum()),
            "organic_horizons_p5_p95": _ranges(profiles, ["Oi", "Oe", "Oa"]),
            "mineral_horizons_p5_p95": _ranges(profiles, ["A", "Bg", "C", "Cf"]),
            "ptf_vs_measured_stock_pct": ptf_stock_gap(world, n_profiles, seed),
            "missing_bulk_density_share": round(
                float(profiles["bulk_density_g_cm3"].isna().mean()), 4
            ),
            "csv_decimals": CSV_DECIMALS,
            "truth_at_profile": "the stock of the grid cell containing the profile",
        },
    }
    summary["active_layer"] = {
        "file": "active_layer.tif",
        "units": "cm",
        "rule": "ALT = 45 cm * exp(0.11 (maat + 12)) * exp(-0.08 (twi - 9)) * exp(eta), "
        "eta Gaussian (sd 0.15, exponential, range 60 km), clipped to 20-300 cm; "
        f"{ALT_MAX_CM:g} cm (no permafrost within 3 m) outside the permafrost zones",
        "true_split": "truth/thaw_split.csv",
        "permafrost_region_thawed_share": round(float(thaw["thawed_share"].iloc[-1]), 4),
    }
    eps = world.residual[world.mask]
    summary["truth"]["residual"]["realized_on_land"] = {
        "mean": round(float(eps.mean()), 5),
        "variance": round(float(eps.var()), 5),
    }
    (truth / "parameters.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out_dir / "README.md").write_text(readme(summary, totals, thaw))
    sums = []
    for f in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        sums.append(f"{digest}  {f.relative_to(out_dir).as_posix()}")
    (out_dir / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    summary["zone_totals"] = totals
    return summary


# --------------------------------------------------------------------------- README
def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _by_class(values: dict[str, float]) -> str:
    return ", ".join(
        f"{v:+g} ({LANDCOVER_CLASSES[int(c)].replace('_', ' ')})" for c, v in values.items()
    )


def readme(s: dict[str, Any], totals: pd.DataFrame, thaw: pd.DataFrame) -> str:
    g = s["grid"]
    al = s["active_layer"]
    thaw_table = _table(
        ["zone", "thawed (Pg)", "perennially frozen (Pg)", "0–300 cm (Pg)", "thawed share"],
        [
            [
                r.zone.replace("_", " "),
                f"{r.thawed_pg:.2f}",
                f"{r.frozen_pg:.2f}",
                f"{r.total_pg:.2f}",
                f"{100 * r.thawed_share:.1f} %",
            ]
            for r in thaw.itertuples()
        ],
    )
    t = s["truth"]
    rot = g["grid_up_bearing_deg"]
    ny, nx = g["shape"]
    res_km = g["resolution_m"] / 1000
    left, bottom, right, top = g["bounds"]
    land_pct = 100 * g["land_cells"] / (g["land_cells"] + g["ocean_cells"])
    counts = s["profiles"]["profiles_reaching"]
    n30 = counts["0-30"]
    zones = ["continuous", "discontinuous", "sporadic", "isolated"]
    tot = totals.set_index(["zone", "bottom_cm"])
    depth_cols = [f"0-{b:g} cm" for _, b in STANDARD_DEPTHS]
    rows_density = []
    rows_storage = []
    for z in [*zones, "permafrost_region", "none"]:
        area = tot.loc[(z, 30), "area_km2"]
        rows_density.append(
            [z, f"{area / 1e6:.4f}"]
            + [f"{tot.loc[(z, b), 'mean_density_kg_m2']:.2f}" for _, b in STANDARD_DEPTHS]
        )
        rows_storage.append(
            [z] + [f"{tot.loc[(z, b), 'storage_pg']:.3f}" for _, b in STANDARD_DEPTHS]
        )
    coef = t["trend"]["coefficients"]
    kco = t["scale_depth"]["coefficients"]
    res = t["residual"]
    noise = t["observation_noise"]
    bdp = t["bulk_density"]
    gap = s["profiles"]["ptf_vs_measured_stock_pct"]
    ptf_gap = " / ".join(f"{gap[f'0-{b:g}']:+.1f} %" for _, b in STANDARD_DEPTHS)
    align = s["precipitation"]["bilinear_to_grid_error"]
    pb = s["precipitation"]["bounds"]
    thr = s["zones"]["maat_upper_bounds_degC"]
    org = s["profiles"]["organic_horizons_p5_p95"]
    mnr = s["profiles"]["mineral_horizons_p5_p95"]
    lc_rows = [[c, n.replace("_", " ")] for c, n in s["landcover_codes"].items()]

    return f"""# Sample data

A synthetic but realistic northern study area (modelled on north-east Siberia) with a
**known truth**, so that every stage of socmap can be checked against the right answer.
Everything here is written by

```bash
python workflows/make_sample_data.py --out sample_rasters --seed {s["seed"]}
```

from the seeded building blocks in `mapping/synthetic/`; do not edit the files by hand.
Regenerating gives byte-identical files with the same library versions (`SHA256SUMS`).

## Grid

- CRS **EPSG:6931**, EASE-Grid 2.0 North (Lambert azimuthal equal-area on the North Pole,
  WGS 84, metres). Equal-area: every cell is exactly {g["cell_area_km2"]:g} km².
- {nx} columns x {ny} rows of {res_km:g} km cells: {(right - left) / 1000:g} km (x) by
  {(top - bottom) / 1000:g} km (y); bounds (left, bottom, right, top) =
  ({left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f}) m. Arrays are (y, x) = ({ny}, {nx}).
- Longitude {g["lon_range"][0]}–{g["lon_range"][1]} °E, latitude {g["lat_range"][0]}–{g["lat_range"][1]} °N,
  centred on {g["center_lonlat"][0]} °E, {g["center_lonlat"][1]} °N.
- **Grid north is not geographic north.** The pole lies outside the grid, beyond its
  lower-left corner. The grid's +y axis ("up") points to the geographic bearing
  {rot["centre"]}° (south-east) at the centre, and {min(rot.values())}°–{max(rot.values())}° over the
  corners. Equivalently, geographic north points {rot["centre"]}° counter-clockwise from grid up at
  the centre, towards the lower left.
- Nodata: the sea (lower left: a ragged coast, bays and a few islands) is nodata in every
  file on this grid: **-9999** in float32 files, **0** in uint8 files. {land_pct:.1f} % of the
  cells are land, and all covariates share exactly the same mask.

## Files

| file | what | type | units | nodata |
|---|---|---|---|---|
| `elevation.tif` | elevation above sea level | float32 | m | -9999 |
| `maat.tif` | mean annual air temperature | float32 | °C | -9999 |
| `precipitation.tif` | annual precipitation, **on another grid** (see below) | float32 | mm yr⁻¹ | -9999 |
| `ndvi.tif` | NDVI (growing-season) | float32 | 0–1 | -9999 |
| `twi.tif` | topographic wetness index ln(a / tan β) | float32 | – | -9999 |
| `landcover.tif` | land-cover class (codes below) | uint8 | class | 0 |
| `permafrost_zones.tif` | permafrost zone (1 continuous, 2 discontinuous, 3 sporadic, 4 isolated) | uint8 | class | 0 |
| `permafrost_zones.gpkg` | the same zones as polygons, layer `permafrost_zones`: `zone_code` (int), `zone_name` (str), `area_km2`; EPSG:6931 | – | – | – |
| `active_layer.tif` | active-layer thickness (seasonal thaw depth; 300 = no permafrost within 3 m) | float32 | cm | -9999 |
| `profiles.csv` | horizon-level profile table (below) | CSV | – | empty cell |
| `truth/soc_0_30cm.tif` … `truth/soc_0_300cm.tif` | true SOC stock 0–30, 0–100, 0–200, 0–300 cm | float32 | kg C m⁻² | -9999 |
| `truth/precipitation_5km.tif` | exact precipitation at the cell centres of the covariate grid | float32 | mm yr⁻¹ | -9999 |
| `truth/parameters.json` | truth formulas and coefficients, residual variogram, noise, grid, counts | JSON | – | – |
| `truth/zone_totals.csv` | true area, mean density and storage per zone and interval | CSV | km², kg C m⁻², Pg | – |
| `truth/thaw_split.csv` | true 0–300 cm storage above (thawed) and below (perennially frozen) the active-layer base per zone | CSV | km², Pg | – |
| `SHA256SUMS` | checksums of all files above | – | – | – |

All rasters are Cloud-Optimized GeoTIFFs: 256 x 256 tiles, DEFLATE (level 9, predictor 3
for floats, 2 for classes), two overview levels (average for continuous, mode for classes),
with `units` and `long_name` tags.

**Precipitation** deliberately differs in grid, as climate products do: EPSG:4326, 0.1° x 0.1°
cells, a larger extent (lon {pb[0]:g}–{pb[2]:g} °E, lat {pb[1]:g}–{pb[3]:g} °N) and values over the sea as
well (no nodata cells; the land mask comes from the other covariates). The covariate
alignment stage must reproject it onto the EASE-Grid. Precipitation is an analytic function
of position, so `truth/precipitation_5km.tif` holds the exact values on the grid; bilinear
reprojection differs from them by at most {align["max_abs_mm"]} mm (mean {align["mean_abs_mm"]} mm, at most
{100 * align["max_rel"]:.2f} %).

**Land-cover codes**

{_table(["code", "class"], lc_rows)}

## Permafrost zones

Zones follow mean annual air temperature (a simplification of the usual MAAT ranges of
the Brown et al. zones, not a permafrost model): continuous MAAT ≤ {thr["continuous"]:g} °C,
discontinuous ≤ {thr["discontinuous"]:g} °C, sporadic ≤ {thr["sporadic"]:g} °C, isolated ≤ {thr["isolated"]:g} °C, warmer land has
no permafrost (code 0). MAAT is smoothed with a one-cell Gaussian first and patches under
four cells are sieved, as zone maps are generalised. The polygons are the raster's cells
merged per zone (one multipolygon per zone), so rasterising them on the grid gives the
raster back exactly.

## Active layer

`active_layer.tif` is the thickness of the seasonally thawed layer (cm), for the thawed /
perennially frozen split of `model.depth: layered` (`workflows/sample.yaml`). It deepens
with air temperature (Stefan: with the square root of the thawing degree-days) and is thinner
under wet ground:

    {al["rule"]}

(about 45 cm at -12 °C, 90 cm at -6 °C, 170 cm at 0 °C; `mapping/synthetic/active_layer.py`).
The true split, the truth's density profile integrated above and below the active-layer base
(`truth/thaw_split.csv`; {100 * al["permafrost_region_thawed_share"]:.1f} % of the permafrost
region's 0–300 cm carbon is in the active layer):

{thaw_table}

## Profiles (`profiles.csv`)

{s["profiles"]["n_profiles"]} profiles, {s["profiles"]["n_horizons"]} horizons, clustered as real surveys are: about 55 % along four
road/river corridors (denser at a few places along each), 20 % around four field stations
(with more deep cores) and 25 % scattered. Column `survey` names the group.

| column | meaning | units |
|---|---|---|
| `profile_id` | profile identifier | – |
| `lon`, `lat` | location, EPSG:4326 (6 decimals) | degrees |
| `top_cm`, `bottom_cm` | horizon depth from the surface | cm |
| `horizon` | designation (Oi/Oe/Oa organic, A, Bg, C/Cf; `jj` = cryoturbated) | – |
| `soc_pct` | soil organic carbon | % (mass) |
| `bulk_density_g_cm3` | bulk density of the fine earth (missing in {100 * s["profiles"]["missing_bulk_density_share"]:.1f} % of horizons) | g cm⁻³ |
| `coarse_fraction_pct` | coarse fragments | % (volume) |
| `horizon_area_pct` | share of the pedon's area (100, or a cryoturbated pair summing to 100) | % |
| `n_pct` | total nitrogen (C:N 15–30) | % (mass) |
| `survey` | corridor_1–4, station_A–D, scattered | – |

Profiles reaching each depth (the seed's compilation had 3422 / 2290 / 1296 / 720, i.e.
100 / 67 / 38 / 21 %):

{_table(["interval", "profiles", "share of 0-30 cm"], [[k + " cm", v, f"{100 * v / n30:.0f} %"] for k, v in counts.items()])}

All horizons are valid (top < bottom, contiguous from 0 cm, SOC 0–100 %, BD 0.05–2.65,
coarse fragments 0–100 %). Wetland profiles start with a thick surface layer (30–130 cm)
and the others with a thin one. Bulk density follows the default pedotransfer function
(`hossain2015`, `docs/stocks.md`) with scatter, so a surface layer is organic (Oi/Oe/Oa,
SOC ≥ 17 %) only where its carbon density reaches what organic material on that PTF holds
(about 60 kg C m⁻³ or more, mostly peat in wetlands) and a humus-rich A horizon otherwise.
{s["profiles"]["organic_horizons"]} horizons are organic (O…); Oi/Oe/Oa horizons have SOC {org["soc_pct"][0]:g}–{org["soc_pct"][1]:g} % and BD
{org["bulk_density_g_cm3"][0]:g}–{org["bulk_density_g_cm3"][1]:g} g cm⁻³, mineral horizons (A/Bg/C/Cf) SOC {mnr["soc_pct"][0]:g}–{mnr["soc_pct"][1]:g} % and BD
{mnr["bulk_density_g_cm3"][0]:g}–{mnr["bulk_density_g_cm3"][1]:g} g cm⁻³ (5–95 % ranges). {s["profiles"]["cryoturbated_profiles"]} profiles in the colder
zones have a cryoturbated pair of horizons over the same depth range: a carbon-rich pocket
(`Ojj` when organic, `Ajj` otherwise) and its mineral matrix (`Bgjj`) with area shares
summing to 100 %.

## The truth

Carbon density is continuous in depth; in each cell

    rho(z) = rho0 * exp(-z / k)                                   kg C m-3, z in cm
    S(a, b) = rho0 * k / 100 * (exp(-a / k) - exp(-b / k))        kg C m-2

    ln rho0 = {coef["intercept"]:g} {coef["maat_sq"]:+g} (maat {-coef["maat_optimum"]:+g})^2 {coef["ndvi"]:+g} ndvi {coef["twi"]:+g} twi
              {coef["elevation_km"]:+g} elevation/1000 {coef["precipitation_m"]:+g} precipitation/1000 + b[landcover] + eps
    ln k    = ln {math.exp(kco["k_intercept"]):.0f} {kco["k_maat"]:+g} maat + c[landcover]

with, by land-cover code, b = {_by_class(coef["landcover"])} and
c = {_by_class(kco["k_landcover"])} (covariates in
the units above; precipitation is the exact on-grid value). `eps` is a zero-mean Gaussian
field with an **{res["model"]}** variogram, psill **{res["psill"]:g}**, range **{res["range"]:g} m** (gstat
convention, practical range {res["practical_range"] / 1000:g} km), nugget **{res["nugget"]:g}**, simulated on the grid
by circulant embedding. Since `k` has no residual, ln S(0, d) minus its trend equals
`eps` at every depth d. The truth rasters are S(0, d) on the grid; the truth at a profile
is the value of the cell that contains it.

Each profile's horizons integrate `rho` of its cell exactly; the stock is then split into
SOC, BD and coarse fragments so that SOC x BD x (1 - CF/100) x thickness / 10 reproduces
it. The split follows the default PTF: BD = PTF(SOC) x exp(e), e ~ N(-sd²/2, sd²),
sd = {bdp["scatter_sd"]:g} (natural scatter at a given SOC), with SOC solved so that the product
reproduces the carbon density (SOC ≤ {bdp["soc_max_pct"]:g} % before laboratory error). The PTF is
therefore a mean-unbiased estimate of a missing bulk density: on this table, mean stocks
with every bulk density taken from the PTF differ from those with the measured ones by
{ptf_gap} (0–30 / 0–100 / 0–200 / 0–300 cm; Jensen's inequality on the scatter).
Two kinds of mean-unbiased noise are added: all horizons of a profile are scaled by
exp(eta), eta ~ N(-tau²/2, tau²), tau = {noise["profile_noise_sd"]:g} (short-range variation: a nugget of {noise["effective_ln_stock_nugget"]:g}
in ln stock), and SOC and BD get independent laboratory errors of {100 * noise["soc_lab_sd"]:g} % and
{100 * noise["bd_lab_sd"]:g} % (log-normal). Values are then rounded as stated above.

True mean density (kg C m⁻²) per zone and interval (area in 10⁶ km²):

{_table(["zone", "area", *depth_cols], rows_density)}

True storage (Pg = 10¹² kg C), cell area 25 km²:

{_table(["zone", *depth_cols], rows_storage)}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("sample_rasters"), help="output folder")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of every random component")
    parser.add_argument(
        "--shape", type=int, nargs=2, default=SHAPE, metavar=("NY", "NX"), help="grid size"
    )
    parser.add_argument("--n-profiles", type=int, default=N_PROFILES, help="number of profiles")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)

    # no .aux.xml side files
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), atomic_path(args.out, is_dir=True) as tmp:
        tmp.chmod(0o755)  # a temporary folder is private; the data folder is not
        summary = generate(tmp, seed=args.seed, shape=tuple(args.shape), n_profiles=args.n_profiles)
    if not args.quiet:
        print_summary(args.out, summary)
    return 0


def print_summary(out: Path, s: dict[str, Any]) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files to {out} ({total / 1e6:.2f} MB)")
    for p in files:
        print(f"  {p.stat().st_size / 1e3:9.1f} kB  {p.relative_to(out)}")
    print("profiles reaching:", s["profiles"]["profiles_reaching"])
    print("zone areas (km2):", s["zones"]["area_km2"])
    print("precipitation bilinear error:", s["precipitation"]["bilinear_to_grid_error"])
    print("grid +y bearing (deg):", s["grid"]["grid_up_bearing_deg"])
    t = s["zone_totals"]
    print(
        t.pivot(index="zone", columns="bottom_cm", values="storage_pg")
        .round(3)
        .to_string(header=True)
    )


if __name__ == "__main__":
    sys.exit(main())
