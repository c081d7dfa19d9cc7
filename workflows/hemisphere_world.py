"""A hemisphere-sized synthetic world, generated tile by tile with a known SOC truth.

The world covers EASE-Grid 2.0 North (EPSG:6931) from -7,000 to +7,000 km on both axes,
by default at 1 km (14,000 x 14,000 cells). Its truth is the sample world's
(:mod:`mapping.synthetic`): the same density profile, trend, depth scale, residual
variogram, permafrost zones from MAAT thresholds and profile generator, imported from
there. Only the landscape differs, because the whole grid never fits in memory:

* a **coarse layer** (at most 1,400 x 1,400 nodes, 10 km at full size) holds the
  large-scale geography: continents with an Arctic Ocean at the pole, mountain belts,
  a MAAT gradient away from the pole quantile-mapped so that the permafrost region covers
  about :data:`PERMAFROST_CELLS_1KM` km², precipitation and a wetness index. It is built
  in memory from the seed in a second or two.
* **fine detail** comes from seeded Gaussian fields made window by window with
  :class:`mapping.randomfield.GaussianField`, whose value at a cell depends only on the
  seed and the cell's position, never on the window asked for.

Every cell's value is therefore a function of the seed, the grid size and the cell's
position only: a tile can be computed on its own, in any order, and gives the same
values whatever the tiling. The residual ``eps`` of ``ln rho0`` is a Gaussian field with
the sample world's exponential variogram (``psill`` 0.09, ``range`` 75 km).

Permafrost zones follow the *smooth* MAAT (the coarse layer without fine detail), as
zone maps are generalised; the cell's own MAAT covariate adds fine detail and lapse
with the fine relief.

:func:`generate` writes the world to a folder: one GeoTIFF per tile and layer under
``tiles/`` (all-ocean tiles have no files) and one VRT per layer over them, the profile
table, the true stocks, the true zone totals and a ready workflow config. It is resumable:
each tile is finished by a small JSON record written last, and finished tiles are skipped.
"""

from __future__ import annotations

import json
import math
import os
import xml.sax.saxutils as xmlu
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
from affine import Affine
from scipy import fft as sfft

from mapping.synthetic import (
    CRS,
    LANDCOVER_CLASSES,
    STANDARD_DEPTHS,
    ZONE_MAAT_THRESHOLDS,
    ZONE_NAMES,
    SyntheticWorld,
    TruthParameters,
    interval_stock,
    permafrost_zones,
    sample_profiles,
    scale_depth,
    trend_log_density,
    validate_horizons,
)

__all__ = [
    "EXTENT_M",
    "LAYERS",
    "HemisphereSpec",
    "HemisphereWorld",
    "TileData",
    "generate",
]

EXTENT_M = 7_000_000.0
"""Half-width of the grid (m): the grid spans ``[-EXTENT_M, EXTENT_M]`` on both axes."""

PERMAFROST_CELLS_1KM = 21.0e6
"""Target area of the permafrost region (km²), about that of the real northern one."""

LAND_SHARE = 0.34
"""Share of the grid's area that is land."""

FLOAT_NODATA = -9999.0
MAX_COARSE = 1400  # coarse layer nodes per axis, at most
COVARIATE_LAYERS = ("elevation", "maat", "precipitation", "ndvi", "twi", "landcover")
TRUTH_LAYERS = tuple(f"soc_{a:g}_{b:g}cm" for a, b in STANDARD_DEPTHS)
LAYERS: tuple[str, ...] = (*COVARIATE_LAYERS, "permafrost_zones", *TRUTH_LAYERS)
"""Raster layers written per tile: covariates, zones and true stocks (kg C m-2)."""

_UNITS = {
    "elevation": ("m", "elevation above sea level"),
    "maat": ("degC", "mean annual air temperature"),
    "precipitation": ("mm yr-1", "annual precipitation"),
    "ndvi": ("1", "normalized difference vegetation index"),
    "twi": ("1", "topographic wetness index ln(a/tan b)"),
    "landcover": ("class", "land-cover class"),
    "permafrost_zones": ("class", "permafrost zone"),
    **{
        f"soc_{a:g}_{b:g}cm": ("kg m-2", f"true SOC stock {a:g}-{b:g} cm")
        for a, b in STANDARD_DEPTHS
    },
}
_CATEGORICAL = ("landcover", "permafrost_zones")
# fine-detail fields (realization numbers of one unit-variance Gaussian field)
_FINE = {"coast": 0, "elev": 1, "maat": 2, "twi": 3, "lc1": 4, "lc2": 5, "ndvi": 6}
_FINE_RANGE_M = 4000.0  # exponential range of the fine detail
_CSV_DECIMALS = {
    "lon": 6,
    "lat": 6,
    "soc_pct": 3,
    "bulk_density_g_cm3": 3,
    "coarse_fraction_pct": 1,
    "n_pct": 5,
}


# =============================================================================== spec
@dataclass(frozen=True)
class HemisphereSpec:
    """What defines a hemisphere world: same spec, same bytes.

    Attributes
    ----------
    seed
        Seed of every random component.
    cells
        Cells per axis (the grid spans 14,000 km, so 14,000 gives 1 km cells).
    tile
        Tile edge in cells (the unit of work, of resumption and of the tile files).
    n_profiles
        Target number of profiles (the realised number differs by a few: tiles whose
        share rounds to zero, or with too little land, get none).
    """

    seed: int = 20140101
    cells: int = 14_000
    tile: int = 1024
    n_profiles: int = 10_000

    def __post_init__(self) -> None:
        if self.cells < 64:
            raise ValueError(f"cells must be at least 64, got {self.cells}")
        if self.tile < 16:
            raise ValueError(f"tile must be at least 16 cells, got {self.tile}")
        if self.n_profiles < 0:
            raise ValueError(f"n_profiles must be >= 0, got {self.n_profiles}")

    @property
    def resolution(self) -> float:
        """Cell size (m)."""
        return 2.0 * EXTENT_M / self.cells

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0.0, -EXTENT_M, 0.0, -self.resolution, EXTENT_M)

    def tiles(self) -> Iterator[tuple[int, int, slice, slice]]:
        """``(i, j, rows, cols)`` of every tile, row-major."""
        n = self.cells
        for i, r0 in enumerate(range(0, n, self.tile)):
            for j, c0 in enumerate(range(0, n, self.tile)):
                yield i, j, slice(r0, min(r0 + self.tile, n)), slice(c0, min(c0 + self.tile, n))


@dataclass
class TileData:
    """Every layer of one tile (``(ny, nx)`` arrays) and its land mask."""

    rows: slice
    cols: slice
    land: np.ndarray
    layers: dict[str, np.ndarray]
    surface_density: np.ndarray
    scale_depth: np.ndarray
    residual: np.ndarray


def _spectral_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Standardised noise with power spectrum ``(1 + f^2)^(-beta/2)``, f in cycles per domain."""
    ny, nx = shape
    n = max(ny, nx)
    fy = sfft.fftfreq(2 * ny, d=1.0 / n)[:, None]
    fx = sfft.rfftfreq(2 * nx, d=1.0 / n)[None, :]
    amp = (1.0 + fy**2 + fx**2) ** (-beta / 4.0)
    z = rng.standard_normal((2 * ny, 2 * nx))
    f = sfft.irfft2(sfft.rfft2(z) * amp, s=(2 * ny, 2 * nx))[:ny, :nx]
    return (f - f.mean()) / f.std()


# =============================================================================== the world
class HemisphereWorld:
    """The coarse geography of a hemisphere world and its tiles.

    Parameters
    ----------
    spec
        Seed and size.
    params
        Truth parameters (default: the sample world's).
    """

    def __init__(self, spec: HemisphereSpec, params: TruthParameters | None = None) -> None:
        self.spec = spec
        self.params = params or TruthParameters()
        self.nc = min(spec.cells, MAX_COARSE)
        self.cres = 2.0 * EXTENT_M / self.nc
        self._build_coarse()

    # ------------------------------------------------------------------ coarse layer
    def _build_coarse(self) -> None:
        nc, cres = self.nc, self.cres
        ss = np.random.SeedSequence([int(self.spec.seed), 0x48454D49])  # "HEMI"
        r_cont, r_mtn, r_elev, r_maat, r_prec, r_surv = (
            np.random.default_rng(s) for s in ss.spawn(6)
        )
        xc = -EXTENT_M + (np.arange(nc) + 0.5) * cres
        yc = EXTENT_M - (np.arange(nc) + 0.5) * cres
        xx, yy = np.meshgrid(xc, yc)
        rr = np.hypot(xx, yy) / 1000.0  # km from the pole
        # continents: large-scale noise, an Arctic Ocean round the pole, a land-rich ring
        ring = np.interp(
            rr,
            [0, 1200, 2000, 2800, 4000, 5500, 7000, 10000],
            [-3.5, -2.5, -0.2, 0.7, 0.6, 0.2, -0.2, -0.8],
        )
        score = _spectral_noise((nc, nc), 3.6, r_cont) + ring
        thr = float(np.quantile(score, 1.0 - LAND_SHARE))
        land = score > thr
        # elevation (m): plains, ridged mountain belts, low towards the coast
        ridge = 1.0 - np.abs(_spectral_noise((nc, nc), 2.8, r_mtn))
        mtn = np.clip(ridge - 0.55, 0.0, None) ** 2 * 9000.0
        elev = 250.0 + 200.0 * _spectral_noise((nc, nc), 3.0, r_elev) + mtn
        elev *= np.sqrt(np.clip((score - thr) / 0.35, 0.0, 1.0))
        elev = np.clip(elev, 1.0, None)
        # MAAT: warmer away from the pole, colder with height; quantile-mapped on land so
        # the permafrost region has its target area, with the sample world's zone shares
        maat_raw = (
            34.0 * (rr / 7000.0)
            - 5.0 * elev / 1000.0
            + 1.5 * _spectral_noise((nc, nc), 2.5, r_maat)
        )
        f_perm = min(0.9, PERMAFROST_CELLS_1KM * 1e6 / (land.mean() * (2 * EXTENT_M) ** 2))
        probs = np.linspace(0.0, 1.0, 401)
        target = np.interp(
            probs,
            np.array([0.0, 0.40, 0.62, 0.80, 1.0, 1.0 + (1 - f_perm) * 0.5 / f_perm, 1.0 / f_perm])
            * f_perm,
            [-16.0, ZONE_MAAT_THRESHOLDS[0], ZONE_MAAT_THRESHOLDS[1], ZONE_MAAT_THRESHOLDS[2],
             ZONE_MAAT_THRESHOLDS[3], 9.0, 27.0],
        )  # fmt: skip
        knots = np.quantile(maat_raw[land], probs)
        knots = np.maximum.accumulate(knots + np.arange(probs.size) * 1e-9)
        # precipitation (mm): wetter away from the pole, smooth like a climate product
        precip = (
            220.0
            + 520.0 * np.clip(rr / 7000.0, 0, 1.4)
            + 160.0 * _spectral_noise((nc, nc), 3.0, r_prec)
        )
        precip = np.clip(precip, 60.0, 3000.0)
        # wetness index from the coarse relief
        gy, gx = np.gradient(elev, cres)
        tanb = np.hypot(gx, gy) + 0.0005
        twi = np.clip(np.log(40.0 / tanb) - 1.0 * (elev > 1500) + 0.0, 2.0, 22.0)
        twi = 2.0 + (twi - twi[land].min()) / (np.ptp(twi[land]) + 1e-12) * 14.0
        # survey intensity: profiles gather where people go (a few accessible regions)
        survey = np.exp(1.2 * _spectral_noise((nc, nc), 3.2, r_surv))
        self.coarse = {
            "score": score,
            "elev": elev,
            "maat_raw": maat_raw,
            "precip": precip,
            "twi": twi,
            "survey": survey,
        }
        self.land_threshold = thr
        self.maat_knots = (knots, target)
        self.wet_cut = float(np.quantile(twi[land], 0.85))
        self.coarse_land = land
        self.coarse_perm = land & (np.interp(maat_raw, knots, target) <= ZONE_MAAT_THRESHOLDS[3])

    # ------------------------------------------------------------------ fine fields
    @cached_property
    def _eps_field(self) -> Any:
        from mapping.models.variogram import Variogram
        from mapping.randomfield import GaussianField

        r = self.params.residual
        v = Variogram("exponential", psill=1.0, range=r.range)
        res = self.spec.resolution
        return GaussianField.from_variograms([v], (res, res), seed=int(self.spec.seed) % 2**32)

    @cached_property
    def _fine_field(self) -> Any:
        from mapping.models.variogram import Variogram
        from mapping.randomfield import GaussianField

        v = Variogram("exponential", psill=1.0, range=_FINE_RANGE_M)
        res = self.spec.resolution
        return GaussianField.from_variograms(
            [v], (res, res), seed=(int(self.spec.seed) + 7919) % 2**32
        )

    def _coarse_at(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        """Bilinear interpolation of a coarse layer at the centres of cells ``rows, cols``."""
        a = self.coarse[name]
        f = self.spec.resolution / self.cres
        ui = np.clip((np.arange(rows.start, rows.stop) + 0.5) * f - 0.5, 0.0, self.nc - 1.0)
        uj = np.clip((np.arange(cols.start, cols.stop) + 0.5) * f - 0.5, 0.0, self.nc - 1.0)
        i0 = np.minimum(np.floor(ui).astype(int), self.nc - 2)
        j0 = np.minimum(np.floor(uj).astype(int), self.nc - 2)
        wi, wj = (ui - i0)[:, None], uj - j0
        ar = a[i0] * (1.0 - wi) + a[i0 + 1] * wi
        return ar[:, j0] * (1.0 - wj) + ar[:, j0 + 1] * wj

    def maybe_land(self, rows: slice, cols: slice) -> bool:
        """False only if no cell of the window can be land (coarse score far below the coast)."""
        f = self.spec.resolution / self.cres
        i0 = max(0, int(rows.start * f) - 2)
        i1 = min(self.nc, math.ceil(rows.stop * f) + 2)
        j0 = max(0, int(cols.start * f) - 2)
        j1 = min(self.nc, math.ceil(cols.stop * f) + 2)
        return bool(self.coarse["score"][i0:i1, j0:j1].max() > self.land_threshold - 0.5)

    def tile(self, rows: slice, cols: slice) -> TileData:
        """Every layer on cells ``rows, cols`` (any window; values do not depend on it)."""
        p = self.params
        fine = self._fine_field.window(rows, cols, list(_FINE.values()))[0]
        fz = {k: fine[n] for n, k in enumerate(_FINE)}
        score = self._coarse_at("score", rows, cols)
        land = score + 0.06 * fz["coast"] > self.land_threshold
        elev_c = self._coarse_at("elev", rows, cols)
        detail = 40.0 + 0.08 * elev_c  # rougher in the mountains
        elev = np.clip(elev_c + detail * fz["elev"], 1.0, None)
        knots, target = self.maat_knots
        maat_smooth = np.interp(self._coarse_at("maat_raw", rows, cols), knots, target)
        maat = maat_smooth - 5.0 * (elev - elev_c) / 1000.0 + 0.3 * fz["maat"]
        precip = self._coarse_at("precip", rows, cols)
        twi = np.clip(self._coarse_at("twi", rows, cols) + 1.2 * fz["twi"], 2.0, 22.0)
        n1, n2 = fz["lc1"], fz["lc2"]
        barren = (elev > 1400.0 + 150.0 * n1) | (maat < -14.5 + 0.5 * n2)
        wetland = (twi > self.wet_cut + 0.6 * n2) & ~barren
        forest = (maat > -9.5 + 1.0 * n1) & (elev < 950.0 + 100.0 * n2) & ~barren & ~wetland
        lc = np.ones(land.shape, dtype=np.uint8)
        lc[forest] = 2
        lc[wetland] = 3
        lc[barren] = 4
        lc[~land] = 0
        base = np.select([lc == 1, lc == 2, lc == 3, lc == 4], [0.42, 0.68, 0.55, 0.16], 0.0)
        ndvi = np.clip(
            base + 0.008 * (np.minimum(maat, 10.0) + 6.0) + 0.04 * fz["ndvi"], 0.03, 0.92
        )
        zones = permafrost_zones(np.where(land, maat_smooth, np.nan))
        cov = {
            "elevation": np.where(land, elev, np.nan),
            "maat": np.where(land, maat, np.nan),
            "precipitation": np.where(land, precip, np.nan),
            "ndvi": np.where(land, ndvi, np.nan),
            "twi": np.where(land, twi, np.nan),
            "landcover": lc,
        }
        eps = math.sqrt(p.residual.psill) * self._eps_field.window(rows, cols, [0])[0, 0]
        rho0 = np.where(land, np.exp(trend_log_density(cov, p) + eps), np.nan)
        k = np.where(land, scale_depth(cov, p), np.nan)
        layers: dict[str, np.ndarray] = {**cov, "permafrost_zones": zones}
        for (a, b), name in zip(STANDARD_DEPTHS, TRUTH_LAYERS, strict=True):
            layers[name] = interval_stock(a, b, rho0, k)
        return TileData(rows, cols, land, layers, rho0, k, eps)

    def tile_world(self, t: TileData) -> SyntheticWorld:
        """One tile as a :class:`~mapping.synthetic.SyntheticWorld` (for the profile generator)."""
        tr = self.spec.transform @ Affine.translation(t.cols.start, t.rows.start)
        return SyntheticWorld(
            crs=pyproj.CRS.from_user_input(CRS),
            transform=tr,
            shape=t.land.shape,
            covariates={k: t.layers[k] for k in COVARIATE_LAYERS},
            mask=t.land,
            zones=t.layers["permafrost_zones"],
            residual=t.residual,
            surface_density=t.surface_density,
            scale_depth=t.scale_depth,
            params=self.params,
            seed=int(self.spec.seed),
            _climate={},
        )

    def profile_quota(self) -> dict[tuple[int, int], int]:
        """Profiles per tile: land area weighted by survey intensity, four times denser in
        the permafrost region (largest-remainder rounding to ``spec.n_profiles``)."""
        f = self.spec.resolution / self.cres
        w = self.coarse_land * self.coarse["survey"] * (1.0 + 3.0 * self.coarse_perm)
        keys, weights = [], []
        for i, j, rows, cols in self.spec.tiles():
            i0, i1 = int(rows.start * f), max(int(rows.start * f) + 1, round(rows.stop * f))
            j0, j1 = int(cols.start * f), max(int(cols.start * f) + 1, round(cols.stop * f))
            keys.append((i, j))
            weights.append(float(w[i0:i1, j0:j1].sum()))
        wt = np.array(weights)
        n = self.spec.n_profiles
        share = wt / wt.sum() * n if wt.sum() > 0 else np.zeros_like(wt)
        q = np.floor(share).astype(int)
        extra = np.argsort(-(share - q), kind="stable")[: n - q.sum()]
        q[extra] += 1
        return dict(zip(keys, (int(v) for v in q), strict=True))


# =============================================================================== totals
def _tile_totals(t: TileData, cell_area_m2: float) -> dict[str, Any]:
    """Cells and storage (kg) per zone group and interval in one tile."""
    zones = t.layers["permafrost_zones"]
    groups = {ZONE_NAMES[c]: zones == c for c in sorted(ZONE_NAMES)}
    groups["none"] = t.land & (zones == 0)
    groups["permafrost_region"] = zones > 0
    out: dict[str, Any] = {"land_cells": int(t.land.sum())}
    for name, sel in groups.items():
        out[name] = {"cells": int(sel.sum())}
        for layer in TRUTH_LAYERS:
            out[name][layer] = float(np.sum(t.layers[layer][sel], dtype=np.float64)) * cell_area_m2
    return out


def _zone_totals_table(records: list[dict[str, Any]], cell_area_m2: float) -> pd.DataFrame:
    names = [*(ZONE_NAMES[c] for c in sorted(ZONE_NAMES)), "none", "permafrost_region"]
    rows = []
    for (a, b), layer in zip(STANDARD_DEPTHS, TRUTH_LAYERS, strict=True):
        for name in names:
            n = sum(r["totals"][name]["cells"] for r in records if r["totals"])
            kg = math.fsum(r["totals"][name][layer] for r in records if r["totals"])
            area = n * cell_area_m2
            rows.append(
                {
                    "zone": name,
                    "top_cm": a,
                    "bottom_cm": b,
                    "area_km2": area / 1e6,
                    "mean_density_kg_m2": kg / area if n else np.nan,
                    "storage_pg": kg / 1e12,
                }
            )
    return pd.DataFrame(rows)


# =============================================================================== writing
def _write_tile_raster(path: Path, data: np.ndarray, name: str, transform: Affine) -> None:
    import rasterio

    from mapping.io import atomic_path

    categorical = name in _CATEGORICAL
    dtype = "uint8" if categorical else "float32"
    arr = data.astype(dtype) if categorical else np.where(np.isfinite(data), data, FLOAT_NODATA)
    ny, nx = arr.shape
    block = 256 if min(ny, nx) >= 256 else 16 * max(1, min(ny, nx) // 16)
    profile = {
        "driver": "GTiff",
        "width": nx,
        "height": ny,
        "count": 1,
        "dtype": dtype,
        "crs": CRS,
        "transform": transform,
        "nodata": 0 if categorical else FLOAT_NODATA,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "DEFLATE",
        "predictor": 2 if categorical else 3,
        "interleave": "band",
    }
    units, long_name = _UNITS[name]
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr.astype(dtype), 1)
            dst.update_tags(units=units, long_name=long_name)
            dst.set_band_description(1, long_name)


def _tile_name(i: int, j: int) -> str:
    return f"r{i:03d}_c{j:03d}"


def _write_text(path: Path, text: str) -> None:
    from mapping.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _vrt(spec: HemisphereSpec, name: str, tiles: list[tuple[int, int, slice, slice]]) -> str:
    categorical = name in _CATEGORICAL
    dtype = "Byte" if categorical else "Float32"
    nodata = "0" if categorical else f"{FLOAT_NODATA:g}"
    t = spec.transform
    wkt = xmlu.escape(pyproj.CRS.from_user_input(CRS).to_wkt())
    units, long_name = _UNITS[name]
    lines = [
        f'<VRTDataset rasterXSize="{spec.cells}" rasterYSize="{spec.cells}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{wkt}</SRS>',
        f"  <GeoTransform>{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform>",
        '  <Metadata><MDI key="units">'
        f'{xmlu.escape(units)}</MDI><MDI key="long_name">{xmlu.escape(long_name)}</MDI></Metadata>',
        f'  <VRTRasterBand dataType="{dtype}" band="1" blockXSize="256" blockYSize="256">',
        f"    <NoDataValue>{nodata}</NoDataValue>",
        f"    <Description>{xmlu.escape(long_name)}</Description>",
        f"    <UnitType>{xmlu.escape(units)}</UnitType>",
    ]
    for i, j, rows, cols in tiles:
        ny, nx = rows.stop - rows.start, cols.stop - cols.start
        lines += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="1">tiles/{name}/{_tile_name(i, j)}.tif'
            "</SourceFilename>",
            "      <SourceBand>1</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{nx}" ySize="{ny}"/>',
            f'      <DstRect xOff="{cols.start}" yOff="{rows.start}" xSize="{nx}" ySize="{ny}"/>',
            "    </SimpleSource>",
        ]
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def _format_profiles(df: pd.DataFrame) -> pd.DataFrame:
    out = df.round(_CSV_DECIMALS)
    # deep horizons of warm, barren land hold almost no carbon: report the smallest value the
    # table can show (as a laboratory reports its detection limit) rather than 0
    for col, floor in (("soc_pct", 0.001), ("n_pct", 0.00001)):
        out[col] = out[col].clip(lower=floor)
    for col in ("top_cm", "bottom_cm", "horizon_area_pct"):
        out[col] = out[col].round().astype(int)
    return out


def _config_text(spec: HemisphereSpec) -> str:
    covs = "\n".join(
        f"  - name: {n}\n    path: {n}.vrt"
        + ("\n    kind: categorical" if n == "landcover" else "")
        for n in COVARIATE_LAYERS
    )
    return f"""\
# A synthetic hemisphere world ({spec.cells} x {spec.cells} cells of {spec.resolution:g} m on
# EASE-Grid 2.0 North) written by workflows/make_hemisphere_world.py with seed {spec.seed}.
# Its truth is in truth/: the true stocks (soc_*.vrt) and zone totals (zone_totals.csv).
#
#   socmap plan hemisphere.yaml
#   socmap run  hemisphere.yaml
seed: {spec.seed}
output: out

profiles:
  path: profiles.csv
  crs: EPSG:4326

stocks:
  depths: ["0-30", "0-100", "0-200", "0-300"]
  method: spline

grid:
  like: first_covariate

covariates:
{covs}

model:
  type: regression_kriging
  trend: random_forest
  # 100 trees: on this world's truth (1.5 M cells in 24 random land windows) the maps of
  # 100 and of 200 trees differ in pixel R² by at most 0.003 in every interval, with the
  # same interval coverage; prediction costs half (docs/scaling.md).
  params: {{n_estimators: 100}}
  # the residual variogram is exponential with a 75 km range (225 km practical range)
  variogram: {{model: exponential, cutoff: 300 km, n_lags: 30}}
  n_neighbors: 32
  log_transform: true

cv:
  method: knndm
  n_splits: 5

prediction:
  quantiles: [0.05, 0.95]
  chunks: 1024
  aoa: true
  format: cog

zones:
  path: permafrost_zones.vrt
  names: {{1: continuous, 2: discontinuous, 3: sporadic, 4: isolated}}
  unit: Pg

uncertainty:
  n_realizations: 100
"""


def generate(
    out_dir: str | os.PathLike[str],
    spec: HemisphereSpec,
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """Write (or finish writing) the hemisphere world into ``out_dir``.

    Files already complete are kept: each tile ends with ``tiles/done/<tile>.json``, written
    after its rasters and profiles, and every file is written to a temporary name and
    renamed, so a file that exists is whole. Rerunning on a finished folder rewrites
    nothing.

    Parameters
    ----------
    out_dir
        Target folder (created).
    spec
        Seed and size; a folder started with another spec is refused.
    progress
        Optional callable ``progress(done, total, tile_name, seconds)``.

    Returns
    -------
    dict
        The summary also written to ``world.json``.

    Raises
    ------
    ValueError
        ``out_dir`` holds a world made with another spec.
    """
    import time

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_text = json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n"
    if spec_file.exists():
        if json.loads(spec_file.read_text()) != asdict(spec):
            raise ValueError(
                f"{out}: holds a world made with {spec_file.read_text().strip()}; "
                "use an empty folder for another spec"
            )
    else:
        _write_text(spec_file, spec_text)

    world = HemisphereWorld(spec)
    quota = world.profile_quota()
    cell_area = spec.resolution**2
    done_dir = out / "tiles" / "done"
    done_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    land_tiles: list[tuple[int, int, slice, slice]] = []
    all_tiles = list(spec.tiles())
    for n, (i, j, rows, cols) in enumerate(all_tiles):
        name = _tile_name(i, j)
        marker = done_dir / f"{name}.json"
        t0 = time.perf_counter()
        if not marker.exists():
            rec: dict[str, Any] = {"tile": name, "land_cells": 0, "profiles": 0, "totals": None}
            if world.maybe_land(rows, cols):
                t = world.tile(rows, cols)
                if t.land.any():
                    tr = spec.transform @ Affine.translation(cols.start, rows.start)
                    for layer in LAYERS:
                        _write_tile_raster(
                            out / "tiles" / layer / f"{name}.tif", t.layers[layer], layer, tr
                        )
                    rec["land_cells"] = int(t.land.sum())
                    rec["totals"] = _tile_totals(t, cell_area)
                    m = quota[(i, j)] if rec["land_cells"] >= 64 else 0
                    if m > 0:
                        tile_seed = [int(spec.seed), 0x50524F46, i, j]  # "PROF"
                        seed_int = int(np.random.SeedSequence(tile_seed).generate_state(1)[0])
                        prof = sample_profiles(world.tile_world(t), m, seed=seed_int, noise=True)
                        prof["profile_id"] = name + "_" + prof["profile_id"]
                        csv = _format_profiles(prof).to_csv(index=False, lineterminator="\n")
                        _write_text(out / "tiles" / "profiles" / f"{name}.csv", csv)
                        rec["profiles"] = int(prof["profile_id"].nunique())
                    del t
            _write_text(marker, json.dumps(rec, sort_keys=True) + "\n")
            if progress is not None:
                progress(n + 1, len(all_tiles), name, time.perf_counter() - t0)
        rec = json.loads(marker.read_text())
        records.append(rec)
        if rec["land_cells"] > 0:
            land_tiles.append((i, j, rows, cols))

    # ---- mosaics, tables, config (cheap; rewritten only when missing)
    for layer in LAYERS:
        dest = out / (f"truth/{layer}.vrt" if layer in TRUTH_LAYERS else f"{layer}.vrt")
        if not dest.exists():
            text = _vrt(spec, layer, land_tiles)
            if layer in TRUTH_LAYERS:  # sources are relative to the VRT
                text = text.replace('relativeToVRT="1">tiles/', 'relativeToVRT="1">../tiles/')
            _write_text(dest, text)
    prof_csv = out / "profiles.csv"
    n_profiles = n_horizons = 0
    if not prof_csv.exists():
        parts = [
            pd.read_csv(out / "tiles" / "profiles" / f"{r['tile']}.csv", keep_default_na=True)
            for r in records
            if r["profiles"] > 0
        ]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(df):
            ids = pd.unique(df["profile_id"])
            width = max(5, len(str(len(ids))))
            new = {old: f"P{k + 1:0{width}d}" for k, old in enumerate(ids)}
            df["profile_id"] = df["profile_id"].map(new)
            validate_horizons(df)
        _write_text(prof_csv, df.to_csv(index=False, lineterminator="\n"))
    totals_csv = out / "truth" / "zone_totals.csv"
    if not totals_csv.exists():
        totals = _zone_totals_table(records, cell_area)
        _write_text(totals_csv, totals.round(6).to_csv(index=False, lineterminator="\n"))
    cfg = out / "hemisphere.yaml"
    if not cfg.exists():
        _write_text(cfg, _config_text(spec))

    df = pd.read_csv(prof_csv)
    n_profiles = int(df["profile_id"].nunique()) if len(df) else 0
    n_horizons = len(df)
    bottoms = df.groupby("profile_id")["bottom_cm"].max() if len(df) else pd.Series(dtype=float)
    land_cells = sum(r["land_cells"] for r in records)
    perm = sum(r["totals"]["permafrost_region"]["cells"] for r in records if r["totals"])
    summary = {
        "spec": asdict(spec),
        "crs": CRS,
        "resolution_m": spec.resolution,
        "shape": [spec.cells, spec.cells],
        "tiles": len(all_tiles),
        "land_tiles": len(land_tiles),
        "land_cells": land_cells,
        "permafrost_cells": perm,
        "zone_cells": {
            ZONE_NAMES[c]: sum(r["totals"][ZONE_NAMES[c]]["cells"] for r in records if r["totals"])
            for c in sorted(ZONE_NAMES)
        },
        "landcover_classes": {str(k): v for k, v in LANDCOVER_CLASSES.items()},
        "profiles": n_profiles,
        "horizons": n_horizons,
        "profiles_reaching_cm": {str(d): int((bottoms >= d).sum()) for d in (30, 100, 200, 300)},
        "truth": world.params.to_dict(),
    }
    summary_file = out / "world.json"
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    if not summary_file.exists() or summary_file.read_text() != text:
        _write_text(summary_file, text)
    return summary
