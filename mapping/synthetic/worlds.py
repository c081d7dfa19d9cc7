"""A suite of independent synthetic worlds with known truth, for judging socmap's numbers.

Each world is built from the blocks of :mod:`mapping.synthetic` (landscape,
residual field, profile horizons) and then varied the way real surveys vary:

- **truth with thresholds and interactions**: deep organic deposits only where
  it is cold AND low-lying (``ln rho0`` raised and the e-folding depth ``k``
  multiplied inside that region, nowhere else), and a wetness effect that
  grows with cold (``+ g * twi_z * clip((-maat - 2) / 10, 0, 1)``);
- **a cold tail**: MAAT below the land's 12th percentile is stretched further
  down (to about -20 to -26 °C), and almost no profile is drawn there, so the
  coldest land lies beyond the sampled covariate range;
- **a residual nobody explains**: an exponential Gaussian field with a range of
  20-150 km scaled so that it holds 15-45 % of the variance of ln S(0, 100)
  (surface densities are then clipped to 1.5-150 kg C m-3, a physical range, so
  the realised share, recorded in ``truth/world.json``, differs slightly);
- **preferential, clustered sampling**: the corridors, stations and scattered
  sites of :func:`mapping.synthetic.sample_sites` drawn in surplus and thinned
  with weights that rise with MAAT (warm, accessible land dense, cold remote
  land sparse); 150-2,000 profiles, fewer reaching 1, 2 and 3 m; noisy SOC,
  missing bulk densities and cryoturbated horizons come from
  :func:`mapping.synthetic.sample_profiles`;
- **grids**: EASE-Grid 2.0 North (EPSG:6931, equal area) or geographic
  (EPSG:4326, the same world resampled by nearest neighbour at cell centres);
  float nodata -9999 or NaN; horizon rows shuffled.

The truth on the output grid is ``rho0`` and ``k`` per cell, so the stock of
any interval is exact (:func:`mapping.synthetic.interval_stock`), and zone
totals are the sum of stock x cell area (cell areas on the WGS 84 ellipsoid for
geographic grids). On geographic grids only profiles whose geographic cell
takes its truth from the profile's own source cell are kept, so every
profile's horizons integrate the truth of the cell it falls in.

:func:`write_world` writes a world folder: covariate GeoTIFFs, zones (raster and
GeoPackage), ``profiles.csv``, ``truth/`` (stock rasters per interval, cell
areas, zone totals, the world's description) and ``workflow.yaml``, a copy of
``workflows/sample.yaml`` with only the paths changed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyproj
from affine import Affine

from mapping.synthetic import (
    CRS,
    STANDARD_DEPTHS,
    ZONE_NAMES,
    ResidualModel,
    SyntheticWorld,
    TruthParameters,
    interval_stock,
    make_world,
    sample_profiles,
    sample_sites,
    scale_depth,
    trend_log_density,
)

__all__ = [
    "GriddedWorld",
    "WorldSpec",
    "build_world",
    "suite_specs",
    "true_zone_totals",
]

GEOGRAPHIC_CRS = "EPSG:4326"
_RHO0_RANGE = (1.5, 150.0)  # kg C m-3: surface densities are clipped to this range
_TAIL_QUANTILE = 0.12  # share of land (coldest) whose MAAT is stretched beyond the sampled range


# --------------------------------------------------------------------------- specification
@dataclass(frozen=True)
class WorldSpec:
    """Everything that makes one world of the suite; the seed fixes all randomness.

    Attributes
    ----------
    name, seed
        Folder name and seed of every random component.
    shape, resolution
        ``(ny, nx)`` and cell size (m) of the projected world the truth is built on.
    center_lonlat
        Centre of the domain (degrees).
    grid
        ``"projected"`` (EPSG:6931) or ``"geographic"`` (EPSG:4326).
    nodata
        Float nodata written to the float rasters: ``-9999.0`` or ``nan``.
    n_profiles
        Number of profiles in the table.
    residual_range_m, residual_share
        Range (exponential, gstat scale parameter) of the unexplained field, and
        its share of the variance of ln S(0, 100) over the land.
    cold_quantile, low_quantile
        Deep organic deposits where MAAT is below this land quantile AND
        elevation below that one.
    deposit_log_boost, deposit_k_factor
        Inside the deposits: ``ln rho0`` raised by the boost, ``k`` multiplied.
    wet_cold_gain
        Coefficient of the standardised wetness index times coldness.
    tail_stretch
        MAAT below the land's 12th percentile is stretched by this factor.
    warm_bias
        Strength of preferential sampling: site weight ``exp(warm_bias * maat_z)``.
    tail_keep
        Relative weight of sites in the cold tail (almost none).
    missing_bd
        Target share of horizons without bulk density.
    """

    name: str
    seed: int
    shape: tuple[int, int]
    resolution: float
    center_lonlat: tuple[float, float]
    grid: str
    nodata: float
    n_profiles: int
    residual_range_m: float
    residual_share: float
    cold_quantile: float
    low_quantile: float
    deposit_log_boost: float
    deposit_k_factor: float
    wet_cold_gain: float
    tail_stretch: float
    warm_bias: float
    tail_keep: float
    missing_bd: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``nodata`` NaN as the string ``"nan"``)."""
        d = dataclasses.asdict(self)
        d["nodata"] = "nan" if math.isnan(self.nodata) else self.nodata
        return d


def suite_specs(n_worlds: int = 12, seed: int = 2026) -> list[WorldSpec]:
    """``n_worlds`` independent world specifications, stratified over the suite.

    The profile count (log scale, 150-2,000), residual range (20-150 km) and
    residual share (15-45 %) are Latin-hypercube stratified, so every suite
    covers both ends of each; every third world is geographic and nodata
    alternates between -9999 and NaN. The other settings are drawn per world.
    """
    if n_worlds < 1:
        raise ValueError("n_worlds must be positive")
    rng = np.random.default_rng([int(seed), 1])

    def strata() -> np.ndarray:
        return (rng.permutation(n_worlds) + rng.uniform(size=n_worlds)) / n_worlds

    u_n, u_range, u_share = strata(), strata(), strata()
    specs = []
    for i in range(n_worlds):
        r = np.random.default_rng([int(seed), 2, i])
        specs.append(
            WorldSpec(
                name=f"world_{i + 1:02d}",
                seed=int(seed) * 1000 + i,
                shape=(int(r.integers(150, 211)), int(r.integers(180, 261))),
                resolution=float(r.choice([5000.0, 6000.0, 7000.0])),
                center_lonlat=(float(r.uniform(70.0, 160.0)), float(r.uniform(62.0, 67.0))),
                grid="geographic" if i % 3 == 2 else "projected",
                nodata=-9999.0 if i % 2 == 0 else float("nan"),
                n_profiles=round(150.0 * (2000.0 / 150.0) ** u_n[i]),
                residual_range_m=float(round(20_000.0 + 130_000.0 * u_range[i], -2)),
                residual_share=float(round(0.15 + 0.30 * u_share[i], 3)),
                cold_quantile=float(r.uniform(0.25, 0.45)),
                low_quantile=float(r.uniform(0.30, 0.50)),
                deposit_log_boost=float(r.uniform(0.3, 0.6)),
                deposit_k_factor=float(r.uniform(1.3, 1.8)),
                wet_cold_gain=float(r.uniform(0.08, 0.2)),
                tail_stretch=float(r.uniform(1.8, 3.0)),
                warm_bias=float(r.uniform(0.6, 1.4)),
                tail_keep=0.03,
                missing_bd=float(r.uniform(0.05, 0.3)),
            )
        )
    return specs


# --------------------------------------------------------------------------- the world on its grid
@dataclass(frozen=True, eq=False)
class GriddedWorld:
    """A world on its output grid: covariates, zones, truth and profiles.

    ``surface_density`` (``rho0``, kg C m-3) and ``scale_depth`` (``k``, cm)
    define the true stock of every interval; ``cell_area_m2`` is per cell (the
    same everywhere on the equal-area grid, by latitude on the geographic one).
    """

    spec: WorldSpec
    crs: str
    transform: Affine
    shape: tuple[int, int]
    covariates: dict[str, np.ndarray]
    mask: np.ndarray
    zones: np.ndarray
    surface_density: np.ndarray
    scale_depth: np.ndarray
    cell_area_m2: np.ndarray
    deposits: np.ndarray
    profiles: pd.DataFrame
    summary: dict[str, Any]

    def true_stock(self, top_cm: float, bottom_cm: float) -> np.ndarray:
        """True SOC stock (kg C m-2) between two depths; NaN off land."""
        return interval_stock(top_cm, bottom_cm, self.surface_density, self.scale_depth)


def _truth_world(spec: WorldSpec) -> tuple[SyntheticWorld, np.ndarray, dict[str, Any]]:
    """The projected world with thresholds, interactions, a cold tail and a scaled residual."""
    unit = TruthParameters(residual=ResidualModel(psill=1.0, range=spec.residual_range_m))
    base = make_world(
        spec.seed, spec.shape, spec.resolution, center_lonlat=spec.center_lonlat, params=unit
    )
    land = base.mask
    cov = {k: v.copy() for k, v in base.covariates.items()}

    # cold tail beyond the sampled range
    maat = cov["maat"]
    cut = float(np.quantile(maat[land], _TAIL_QUANTILE))
    tail = land & (maat < cut)
    maat[tail] = cut - (cut - maat[tail]) * spec.tail_stretch

    # thresholds and interactions
    cold_cut = float(np.quantile(maat[land], spec.cold_quantile))
    low_cut = float(np.quantile(cov["elevation"][land], spec.low_quantile))
    deposits = land & (maat <= cold_cut) & (cov["elevation"] <= low_cut)
    twi = cov["twi"]
    twi_z = (twi - np.nanmean(twi[land])) / np.nanstd(twi[land])
    coldness = np.clip((-maat - 2.0) / 10.0, 0.0, 1.0)
    extra = spec.wet_cold_gain * twi_z * coldness + np.where(deposits, spec.deposit_log_boost, 0.0)
    trend = trend_log_density(cov, unit) + extra
    k = scale_depth(cov, unit) * np.where(deposits, spec.deposit_k_factor, 1.0)

    # residual scaled to its share of the variance of ln S(0, 100)
    ln_trend_100 = trend + np.log(k / 100.0 * -np.expm1(-100.0 / k))
    var_t = float(np.var(ln_trend_100[land]))
    eps_unit = base.residual
    scale = math.sqrt(
        spec.residual_share / (1.0 - spec.residual_share) * var_t / np.var(eps_unit[land])
    )
    eps = scale * eps_unit
    # a physical range of surface densities (peat holds at most about 150 kg C m-3)
    rho0 = np.clip(np.exp(trend + eps), _RHO0_RANGE[0], _RHO0_RANGE[1])
    ln_s100 = np.log(interval_stock(0, 100, rho0, k))
    realised = float(np.var(eps[land]) / np.var(ln_s100[land]))

    params = dataclasses.replace(
        unit, residual=ResidualModel(psill=scale**2, range=spec.residual_range_m)
    )
    world = dataclasses.replace(
        base,
        covariates={
            k_: (np.where(land, v, np.nan) if k_ != "landcover" else v) for k_, v in cov.items()
        },
        residual=eps,
        surface_density=np.where(land, rho0, np.nan),
        scale_depth=np.where(land, k, np.nan),
        params=params,
    )
    info = {
        "maat_tail_cut_degC": round(cut, 3),
        "maat_min_degC": round(float(np.nanmin(maat[land])), 3),
        "deposit_maat_max_degC": round(cold_cut, 3),
        "deposit_elevation_max_m": round(low_cut, 1),
        "deposit_land_share": round(float(deposits.sum() / land.sum()), 4),
        "residual_psill": round(scale**2, 5),
        "residual_share_realised": round(realised, 4),
        "tail_cells": int(tail.sum()),
    }
    return world, deposits, info


def _thinned_sites(world: SyntheticWorld, spec: WorldSpec) -> pd.DataFrame:
    """Clustered sites drawn in surplus, thinned towards warm land; cold tail nearly empty."""
    pool = sample_sites(world, 3 * spec.n_profiles + 60, spec.seed)
    maat = world.covariates["maat"][pool["row"].to_numpy(), pool["col"].to_numpy()]
    land_maat = world.covariates["maat"][world.mask]
    z = (maat - np.mean(land_maat)) / np.std(land_maat)
    cut = np.quantile(land_maat, _TAIL_QUANTILE)
    w = np.exp(spec.warm_bias * z) * np.where(maat < cut, spec.tail_keep, 1.0)
    return pool.assign(weight=w)


def _choose(sites: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([int(seed), 3])
    n = min(n, len(sites))
    p = sites["weight"].to_numpy() / sites["weight"].sum()
    idx = np.sort(rng.choice(len(sites), n, replace=False, p=p))
    return sites.iloc[idx].drop(columns="weight").reset_index(drop=True)


def _geographic_grid(world: SyntheticWorld) -> tuple[Affine, tuple[int, int], np.ndarray]:
    """A lon/lat grid over the world's land with cells about as large as the projected ones.

    Returns the transform, shape and, per geographic cell, the flat index of the
    projected cell its centre falls in (-1 outside the world or on the sea).
    """
    lon, lat = world.lonlat
    land = world.mask
    dlat = round(world.resolution / 111_000.0, 3)
    mid = math.radians(float(np.median(lat[land])))
    dlon = round(dlat / math.cos(mid) / 0.01) * 0.01 or 0.01
    west = math.floor(np.min(lon[land]) / dlon) * dlon
    east = math.ceil(np.max(lon[land]) / dlon) * dlon
    south = math.floor(np.min(lat[land]) / dlat) * dlat
    north = math.ceil(np.max(lat[land]) / dlat) * dlat
    nx, ny = round((east - west) / dlon), round((north - south) / dlat)
    transform = Affine(dlon, 0.0, west, 0.0, -dlat, north)
    glon = west + (np.arange(nx) + 0.5) * dlon
    glat = north - (np.arange(ny) + 0.5) * dlat
    gx, gy = np.meshgrid(glon, glat)
    px, py = pyproj.Transformer.from_crs(GEOGRAPHIC_CRS, CRS, always_xy=True).transform(gx, gy)
    row, col = world.rowcol(px, py)
    inside = (row >= 0) & (row < world.shape[0]) & (col >= 0) & (col < world.shape[1])
    src = np.full(gx.shape, -1, dtype=np.int64)
    src[inside] = row[inside] * world.shape[1] + col[inside]
    ok = src >= 0
    src[ok] = np.where(land.ravel()[src[ok]], src[ok], -1)
    return transform, (ny, nx), src


def _row_areas(transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Area (m²) of the cells of each row of a lon/lat grid on the WGS 84 ellipsoid."""
    geod = pyproj.Geod(ellps="WGS84")
    dlon, north, dlat = transform.a, transform.f, -transform.e
    out = np.empty(shape[0])
    for i in range(shape[0]):
        top, bot = north - i * dlat, north - (i + 1) * dlat
        area, _ = geod.polygon_area_perimeter([0, dlon, dlon, 0], [bot, bot, top, top])
        out[i] = abs(area)
    return out


def build_world(spec: WorldSpec) -> GriddedWorld:
    """Build the world of ``spec`` on its output grid, with its profiles (deterministic)."""
    world, deposits, info = _truth_world(spec)
    sites = _thinned_sites(world, spec)
    ny, nx = world.shape

    if spec.grid == "projected":
        crs, transform, shape = CRS, world.transform, world.shape
        take = np.arange(ny * nx).reshape(ny, nx)
        take[~world.mask] = -1
        areas = np.full(shape, world.cell_area_m2)
    elif spec.grid == "geographic":
        crs = GEOGRAPHIC_CRS
        transform, shape, take = _geographic_grid(world)
        areas = np.repeat(_row_areas(transform, shape)[:, None], shape[1], axis=1)
        # keep sites whose geographic cell takes its truth from the site's own cell
        lon = sites["lon"].round(6).to_numpy()
        lat = sites["lat"].round(6).to_numpy()
        gcol = np.floor((lon - transform.c) / transform.a).astype(int)
        grow = np.floor((lat - transform.f) / transform.e).astype(int)
        ok = (grow >= 0) & (grow < shape[0]) & (gcol >= 0) & (gcol < shape[1])
        own = sites["row"].to_numpy() * nx + sites["col"].to_numpy()
        ok[ok] = take[grow[ok], gcol[ok]] == own[ok]
        sites = sites[ok].reset_index(drop=True)
    else:
        raise ValueError(f"grid must be 'projected' or 'geographic', got {spec.grid!r}")

    chosen = _choose(sites, spec.n_profiles, spec.seed)
    profiles = sample_profiles(
        world, len(chosen), spec.seed, sites=chosen, missing_bd=spec.missing_bd
    )
    order = np.random.default_rng([spec.seed, 4]).permutation(len(profiles))
    profiles = profiles.iloc[order].reset_index(drop=True)

    valid = take >= 0

    def pick(a: np.ndarray, fill: Any) -> np.ndarray:
        flat = a.ravel()
        out = np.full(shape, fill, dtype=a.dtype)
        out[valid] = flat[take[valid]]
        return out

    covariates = {
        k: pick(v, 0 if k == "landcover" else np.nan) for k, v in world.covariates.items()
    }
    zones = pick(world.zones, 0)
    reach = profiles.groupby("profile_id")["bottom_cm"].max()
    summary = {
        **info,
        "grid": spec.grid,
        "crs": crs,
        "shape": list(shape),
        "land_cells": int(valid.sum()),
        "n_profiles": int(profiles["profile_id"].nunique()),
        "n_horizons": len(profiles),
        "profiles_reaching": {f"0-{b:g}": int((reach >= b).sum()) for _, b in STANDARD_DEPTHS},
        "profiles_in_cold_tail": int(
            (
                world.covariates["maat"][chosen["row"].to_numpy(), chosen["col"].to_numpy()]
                < info["maat_tail_cut_degC"]
            ).sum()
        ),
    }
    return GriddedWorld(
        spec=spec,
        crs=crs,
        transform=transform,
        shape=shape,
        covariates=covariates,
        mask=valid,
        zones=zones,
        surface_density=pick(world.surface_density, np.nan),
        scale_depth=pick(world.scale_depth, np.nan),
        cell_area_m2=np.where(valid, areas, np.nan),
        deposits=pick(deposits, False),
        profiles=profiles,
        summary=summary,
    )


def true_zone_totals(world: GriddedWorld) -> pd.DataFrame:
    """True area and storage per zone and interval: ``sum(stock * cell area)``.

    Rows for each zone name, ``permafrost_region`` (zones 1-4) and ``none``
    (land without permafrost); storage in Pg.
    """
    groups = {ZONE_NAMES[c]: world.zones == c for c in sorted(ZONE_NAMES)}
    groups["permafrost_region"] = world.zones > 0
    groups["none"] = world.mask & (world.zones == 0)
    rows = []
    for top, bottom in STANDARD_DEPTHS:
        stock = world.true_stock(top, bottom)
        for name, sel in groups.items():
            sel = sel & world.mask
            rows.append(
                {
                    "zone": name,
                    "top_cm": top,
                    "bottom_cm": bottom,
                    "area_km2": float(world.cell_area_m2[sel].sum() / 1e6),
                    "storage_pg": float((stock[sel] * world.cell_area_m2[sel]).sum() / 1e12),
                }
            )
    return pd.DataFrame(rows)
