"""The synthetic world on EASE-Grid 2.0 North: covariates, ocean, permafrost zones and the true
carbon density (:func:`make_world`), its zones as polygons and its exact zone totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyproj
from affine import Affine
from scipy import ndimage

from mapping.grid import Grid
from mapping.synthetic.truth import (
    CRS,
    STANDARD_DEPTHS,
    ZONE_NAMES,
    TruthParameters,
    code_lookup,
    density_profile,
    fractal_field,
    gaussian_random_field,
    interval_stock,
    permafrost_zones,
    scale_depth,
    trend_log_density,
)

_MAAT_QUANTILES = (
    # land-area quantile -> MAAT (°C): 40 % continuous, 22 % discontinuous, 18 % sporadic,
    # 12 % isolated and 8 % without permafrost at the default thresholds
    np.array([0.0, 0.40, 0.62, 0.80, 0.92, 1.0]),
    np.array([-16.0, -8.0, -4.0, -1.0, 1.0, 2.0]),
)
_COAST = 0.66  # northness beyond which the sea begins (before the ragged-coast noise)


# --------------------------------------------------------------------------- the world
@dataclass(frozen=True, eq=False)
class SyntheticWorld:
    """A synthetic study area on EASE-Grid 2.0 North with a known SOC truth.

    Attributes
    ----------
    crs, transform, shape
        Grid: EPSG:6931, rasterio affine (corner based, north-up in grid
        coordinates, *not* geographically), ``(ny, nx)``.
    covariates
        ``name -> (ny, nx)`` arrays; continuous ones float64 with NaN over the
        ocean, ``landcover`` uint8 with 0 over the ocean.
    mask
        True on land (valid data), False on the ocean.
    zones
        Permafrost-zone codes (uint8, 0 = none or ocean).
    residual
        The residual field ``eps`` on ``ln rho0`` (whole grid, ocean included).
    surface_density, scale_depth
        ``rho0`` (kg C m-3) and ``k`` (cm), NaN over the ocean.
    params, seed
        The truth parameters and the seed the world was made with.
    """

    crs: pyproj.CRS
    transform: Affine
    shape: tuple[int, int]
    covariates: dict[str, np.ndarray]
    mask: np.ndarray
    zones: np.ndarray
    residual: np.ndarray
    surface_density: np.ndarray
    scale_depth: np.ndarray
    params: TruthParameters
    seed: int
    _climate: dict[str, Any] = field(repr=False)

    # ---- grid helpers
    @property
    def resolution(self) -> float:
        """Cell size (m); cells are square."""
        return float(self.transform.a)

    @property
    def cell_area_m2(self) -> float:
        """Area of one cell (m²); exact because EPSG:6931 is equal-area."""
        return abs(self.transform.a * self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres."""
        ny, nx = self.shape
        left, top = self.transform.c, self.transform.f
        return (left, top + ny * self.transform.e, left + nx * self.transform.a, top)

    @property
    def grid(self) -> Any:
        """The world's grid as a :class:`mapping.grid.Grid`."""

        return Grid(crs=self.crs, transform=self.transform, shape=self.shape)

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """1-D cell-centre coordinates ``(y, x)`` in metres."""
        ny, nx = self.shape
        t = self.transform
        return t.f + (np.arange(ny) + 0.5) * t.e, t.c + (np.arange(nx) + 0.5) * t.a

    def rowcol(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices containing projected points (no bounds check)."""
        t = self.transform  # axis-aligned: no rotation terms
        col = (np.asarray(x, dtype=float) - t.c) / t.a
        row = (np.asarray(y, dtype=float) - t.f) / t.e
        return np.floor(row).astype(int), np.floor(col).astype(int)

    @cached_property
    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Longitude and latitude (degrees, EPSG:4326) of every cell centre."""
        y, x = self.coords()
        xx, yy = np.meshgrid(x, y)
        return to_lonlat().transform(xx, yy)

    # ---- truth
    def density(self, z_cm: float) -> np.ndarray:
        """True carbon density (kg C m-3) at depth ``z_cm`` on the grid (NaN on the ocean)."""
        return density_profile(z_cm, self.surface_density, self.scale_depth)

    def true_stock(self, top_cm: float, bottom_cm: float) -> np.ndarray:
        """True SOC stock (kg C m-2) between two depths on the grid (NaN on the ocean)."""
        if not 0 <= top_cm < bottom_cm:
            raise ValueError(f"need 0 <= top < bottom, got {top_cm}-{bottom_cm}")
        return interval_stock(top_cm, bottom_cm, self.surface_density, self.scale_depth)

    def trend(self) -> np.ndarray:
        """Trend part of ``ln rho0`` (without the residual field)."""
        return trend_log_density(self.covariates, self.params)

    def precipitation_at(self, x: Any, y: Any) -> np.ndarray:
        """Annual precipitation (mm) at any projected points, also outside the grid.

        Precipitation is an analytic function of position, so that a covariate
        delivered on another grid can be checked against the exact values.
        """
        return _precipitation(np.asarray(x, float), np.asarray(y, float), self._climate)

    def to_xarray(self) -> Any:
        """The covariates as an ``xarray.Dataset`` with ``y``/``x`` coordinates and CRS."""
        import rioxarray  # noqa: F401  (registers the .rio accessor)
        import xarray as xr

        y, x = self.coords()
        ds = xr.Dataset(
            {
                k: (("y", "x"), np.where(self.mask, v, np.nan) if k != "landcover" else v)
                for k, v in self.covariates.items()
            },
            coords={"y": y, "x": x},
        )
        return ds.rio.write_crs(self.crs.to_string()).rio.write_transform(self.transform)


def to_lonlat() -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def from_lonlat() -> pyproj.Transformer:
    return pyproj.Transformer.from_crs("EPSG:4326", CRS, always_xy=True)


def _northness(x: np.ndarray, y: np.ndarray, clim: Mapping[str, Any]) -> np.ndarray:
    """0 at the cell farthest from the pole, 1 at the nearest; linear in polar distance."""
    rho = np.hypot(x, y)
    return (clim["rho_far"] - rho) / (clim["rho_far"] - clim["rho_near"])


def _precipitation(x: np.ndarray, y: np.ndarray, clim: Mapping[str, Any]) -> np.ndarray:
    u = (x - clim["x0"]) / clim["length"]
    v = (y - clim["y0"]) / clim["length"]
    kx, ky, phase = clim["precip_kx"], clim["precip_ky"], clim["precip_phase"]
    arg = 2 * np.pi * (u[..., None] * kx + v[..., None] * ky) + phase
    g = np.sqrt(2.0 / len(kx)) * np.cos(arg).sum(axis=-1)
    n = _northness(x, y, clim)
    return np.clip(190.0 + 230.0 * (1.0 - n) + 60.0 * g, 60.0, 1500.0)


def make_world(
    seed: int = 0,
    shape: tuple[int, int] = (64, 64),
    resolution: float = 5000.0,
    *,
    center_lonlat: tuple[float, float] = (130.0, 64.5),
    params: TruthParameters | None = None,
) -> SyntheticWorld:
    """Build a synthetic northern study area with a known SOC truth.

    The landscape (coast, mountains, climate gradients) is laid out relative to
    the domain, so a 64 x 64 world shows the same pattern as the 320 x 400
    sample world: ocean towards the pole, all four permafrost zones, all four
    land-cover classes, MAAT from about -16 to +2 °C. The residual field's range
    is physical (metres, from ``params.residual``).

    Parameters
    ----------
    seed
        Seed of every random component.
    shape
        ``(ny, nx)`` cells.
    resolution
        Cell size in metres.
    center_lonlat
        Centre of the domain (degrees). Away from 0°E, grid north is not
        geographic north: at 130°E the pole lies to the lower left.
    params
        Truth parameters; the defaults give realistic stocks.

    Returns
    -------
    SyntheticWorld
    """
    p = params or TruthParameters()
    ny, nx = (int(shape[0]), int(shape[1]))
    if ny < 8 or nx < 8:
        raise ValueError(f"shape must be at least 8 x 8 cells, got {shape}")
    res = float(resolution)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]
    r_coast, r_elev, r_maat, r_prec, r_wet, r_lc, r_ndvi, r_eps = streams

    # grid, snapped to whole cells
    cx, cy = from_lonlat().transform(*center_lonlat)
    left = round((cx - nx * res / 2) / res) * res
    top = round((cy + ny * res / 2) / res) * res
    transform = Affine(res, 0.0, left, 0.0, -res, top)
    y1 = top - (np.arange(ny) + 0.5) * res
    x1 = left + (np.arange(nx) + 0.5) * res
    xx, yy = np.meshgrid(x1, y1)
    rho = np.hypot(xx, yy)
    length = max(nx, ny) * res
    clim: dict[str, Any] = {
        "rho_near": float(rho.min()),
        "rho_far": float(rho.max()),
        "x0": left + nx * res / 2,
        "y0": top - ny * res / 2,
        "length": length,
    }
    north = _northness(xx, yy, clim)

    def cells(km: float) -> float:
        # a length given at the scale of the 2000 km sample domain, in cells of this world
        return km * 1000.0 / res * (length / 2.0e6)

    land = _land(north, r_coast)
    elev, dist_coast = _elevation(xx, yy, clim, land, res, r_elev)
    maat = _maat(north, elev, land, r_maat)

    # --- precipitation (mm): analytic in position (see SyntheticWorld.precipitation_at)
    nmodes = 48
    clim["precip_kx"] = r_prec.normal(0.0, 1.6, nmodes)
    clim["precip_ky"] = r_prec.normal(0.0, 1.6, nmodes)
    clim["precip_phase"] = r_prec.uniform(0.0, 2 * np.pi, nmodes)
    precip = _precipitation(xx, yy, clim)

    # --- topographic wetness index proxy: ln(a / tan(beta)) with a from relative relief
    gy, gx = np.gradient(elev, res)
    tanb = np.hypot(gx, gy)
    relief = elev - ndimage.gaussian_filter(elev, sigma=max(1.0, cells(60.0)), mode="nearest")
    twi = np.log(60.0 * np.exp(-relief / 120.0) / (tanb + 0.002)) + 0.4 * fractal_field(
        (ny, nx), 1.5, r_wet
    )
    twi = np.clip(twi, 2.0, 22.0)

    # --- land cover
    n1 = fractal_field((ny, nx), 2.0, r_lc)
    n2 = fractal_field((ny, nx), 2.0, r_lc)
    barren = (elev > 1400.0 + 150.0 * n1) | ((dist_coast < 0.015 * length) & (n2 > 0.3))
    wet_cut = np.percentile(twi[land], 85.0)
    wetland = (twi > wet_cut + 0.6 * n2) & (tanb < 0.01) & ~barren
    forest = (maat > -9.5 + 1.0 * n1) & (elev < 950.0 + 100.0 * n2) & ~barren & ~wetland
    landcover = _landcover_codes(land, forest, wetland, barren)

    # --- NDVI
    base_ndvi = code_lookup(landcover, {1: 0.42, 2: 0.68, 3: 0.55, 4: 0.16})
    ndvi = base_ndvi + 0.008 * (maat + 6.0) + 0.04 * fractal_field((ny, nx), 2.0, r_ndvi)
    ndvi = np.clip(ndvi, 0.03, 0.92)

    # --- permafrost zones from a lightly smoothed MAAT (zone maps are generalised)
    zones = _zones_from_maat(maat, land, sigma=max(0.7, cells(5.0)))

    covariates = {
        "elevation": np.where(land, elev, np.nan),
        "maat": np.where(land, maat, np.nan),
        "precipitation": np.where(land, precip, np.nan),
        "ndvi": np.where(land, ndvi, np.nan),
        "twi": np.where(land, twi, np.nan),
        "landcover": landcover,
    }

    # --- truth
    eps = gaussian_random_field((ny, nx), res, p.residual, r_eps)
    log_rho0 = trend_log_density(covariates, p) + eps
    rho0 = np.exp(log_rho0)
    k = scale_depth(covariates, p)

    return SyntheticWorld(
        crs=pyproj.CRS.from_user_input(CRS),
        transform=transform,
        shape=(ny, nx),
        covariates=covariates,
        mask=land,
        zones=zones,
        residual=eps,
        surface_density=np.where(land, rho0, np.nan),
        scale_depth=np.where(land, k, np.nan),
        params=p,
        seed=int(seed),
        _climate=clim,
    )


def _land(north: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Land mask: ocean towards the pole with a ragged coast; enclosed seas become land and
    specks of land are removed."""
    ny, nx = north.shape
    sea = north + 0.09 * fractal_field((ny, nx), 3.0, rng) > _COAST
    lab, nlab = ndimage.label(sea)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sea = np.isin(lab, edge[edge > 0])
    lab, nlab = ndimage.label(~sea)
    if nlab:
        sizes = ndimage.sum(np.ones_like(lab), lab, index=np.arange(1, nlab + 1))
        small = np.flatnonzero(sizes < max(4, 0.0005 * nx * ny)) + 1
        sea |= np.isin(lab, small)
    land = ~sea
    if land.sum() < 0.5 * land.size:
        raise RuntimeError("generated world is mostly ocean; choose another centre")
    return land


def _elevation(
    xx: np.ndarray,
    yy: np.ndarray,
    clim: Mapping[str, Any],
    land: np.ndarray,
    res: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Elevation (m): plains, two mountain belts, low near the coast; and the distance to
    the coast (m, infinite without sea)."""
    ny, nx = land.shape
    length = clim["length"]
    u = (xx - clim["x0"]) / length
    v = (yy - clim["y0"]) / length
    base = fractal_field((ny, nx), 3.0, rng)
    belt1 = np.exp(-(((u - 0.18 + 0.06 * np.sin(5.0 * v + 1.0)) / 0.06) ** 2))
    belt2 = np.exp(-(((v + 0.22 - 0.5 * u + 0.05 * np.sin(7.0 * u)) / 0.05) ** 2))
    rough = fractal_field((ny, nx), 2.2, rng)
    elev = 250.0 + 180.0 * base + (1500.0 * belt1 + 900.0 * belt2) * (0.75 + 0.25 * rough)
    dist_coast = (
        ndimage.distance_transform_edt(land) * res if (~land).any() else np.full((ny, nx), np.inf)
    )
    elev *= 1.0 - np.exp(-dist_coast / (0.06 * length))
    return np.clip(elev, 1.0, None), dist_coast


def _maat(
    north: np.ndarray, elev: np.ndarray, land: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Mean annual air temperature (°C): colder towards the pole and with height,
    quantile-mapped onto a fixed distribution so every world has the same zone shares."""
    ny, nx = north.shape
    maat_raw = -17.0 * north - 5.0 * elev / 1000.0 + 1.0 * fractal_field((ny, nx), 2.5, rng)
    maat = np.full((ny, nx), np.nan)
    order = np.argsort(maat_raw[land], kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = (np.arange(order.size) + 0.5) / order.size
    maat[land] = np.interp(ranks, *_MAAT_QUANTILES)
    maat[~land] = np.interp(maat_raw[~land], np.sort(maat_raw[land]), np.sort(maat[land]))
    return maat


def _landcover_codes(
    land: np.ndarray, forest: np.ndarray, wetland: np.ndarray, barren: np.ndarray
) -> np.ndarray:
    """Land-cover codes (:data:`LANDCOVER_CLASSES`): tundra where nothing else, 0 at sea."""
    landcover = np.ones(land.shape, dtype=np.uint8)
    landcover[forest] = 2
    landcover[wetland] = 3
    landcover[barren] = 4
    landcover[~land] = 0
    return landcover


def _zones_from_maat(maat: np.ndarray, land: np.ndarray, sigma: float) -> np.ndarray:
    from rasterio.features import sieve

    w = land.astype(float)
    smooth = ndimage.gaussian_filter(np.where(land, maat, 0.0), sigma) / np.maximum(
        ndimage.gaussian_filter(w, sigma), 1e-12
    )
    zones = permafrost_zones(np.where(land, smooth, np.nan))
    # drop specks: patches of fewer than 4 cells join their largest neighbour
    zones = sieve(zones, size=4, connectivity=4)
    zones[~land] = 0
    return zones.astype(np.uint8)


# --------------------------------------------------------------------------- zones as polygons and totals
def zone_polygons(world: SyntheticWorld) -> Any:
    """The permafrost zones as one (multi)polygon per zone code, exactly on cell edges.

    Returns a ``geopandas.GeoDataFrame`` with ``zone_code`` (int), ``zone_name``
    (str), ``area_km2`` and the geometry in EPSG:6931; rasterising it on the
    world's grid gives back :attr:`SyntheticWorld.zones`.
    """
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes

    parts: dict[int, list[Any]] = {}
    for geom, value in shapes(
        world.zones, mask=world.zones > 0, transform=world.transform, connectivity=4
    ):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    rows = []
    for code in sorted(parts):
        merged = shapely.union_all(parts[code])
        if merged.geom_type == "Polygon":
            merged = shapely.MultiPolygon([merged])
        rows.append(
            {
                "zone_code": code,
                "zone_name": ZONE_NAMES[code],
                "area_km2": float((world.zones == code).sum() * world.cell_area_m2 / 1e6),
                "geometry": merged,
            }
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=CRS)


def zone_totals(
    world: SyntheticWorld, depths: Sequence[tuple[float, float]] = STANDARD_DEPTHS
) -> pd.DataFrame:
    """True area, mean density and storage per permafrost zone and depth interval.

    Rows for each zone code 1-4, ``none`` (land without permafrost) and
    ``permafrost_region`` (zones 1-4 together). Storage in Pg (10^12 kg).
    """
    groups = {ZONE_NAMES[c]: world.zones == c for c in sorted(ZONE_NAMES)}
    groups["none"] = world.mask & (world.zones == 0)
    groups["permafrost_region"] = world.zones > 0
    rows = []
    for top, bottom in depths:
        stock = world.true_stock(top, bottom)
        for name, sel in groups.items():
            n = int(sel.sum())
            total = float(stock[sel].sum()) * world.cell_area_m2
            rows.append(
                {
                    "zone": name,
                    "top_cm": top,
                    "bottom_cm": bottom,
                    "area_km2": n * world.cell_area_m2 / 1e6,
                    "mean_density_kg_m2": total / (n * world.cell_area_m2) if n else np.nan,
                    "storage_pg": total / 1e12,
                }
            )
    return pd.DataFrame(rows)
