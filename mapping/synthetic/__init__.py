"""A synthetic northern study area whose soil organic carbon is known exactly.

The world is built on EASE-Grid 2.0 North (EPSG:6931, equal-area, metres):
covariates (elevation, mean annual air temperature, precipitation, NDVI, a
wetness index, land cover), an ocean mask, permafrost zones from temperature
thresholds, and a *true* carbon density that is continuous in depth::

    rho(z)      = rho0 * exp(-z / k)                    kg C m-3, z in cm
    S(a, b)     = rho0 * k / 100 * (exp(-a/k) - exp(-b/k))   kg C m-2
    ln rho0     = trend(covariates) + eps(x, y)
    ln k        = depth-scale formula(covariates)       k in cm

``eps`` is a zero-mean Gaussian field with an exponential variogram (gstat
conventions: ``gamma(h) = psill * (1 - exp(-h / range))``), simulated by
circulant embedding, which reproduces the model covariance exactly on the
grid. Because ``k`` has no residual, ``ln S(0, d) - trend_d`` equals ``eps``
for *every* depth ``d``: the residual variogram of log stocks is the same
known model at 0-30, 0-100, 0-200 and 0-300 cm.

Profiles (:func:`sample_profiles`) are generated from the density of the
cell that contains them: each horizon's stock is the exact integral of
``rho`` over the horizon, then split into SOC %, bulk density and coarse
fragments so that ``SOC * BD * (1 - CF) * thickness / 10`` reproduces it,
with the bulk density scattered around the default pedotransfer function
(:mod:`mapping.bulk_density`), which therefore estimates missing values
without bias (to 1-2 %: Jensen's inequality on the scatter). With ``noise=False`` the horizons integrate to the true stock to rounding
error; with ``noise=True`` a documented short-range (nugget) factor and
laboratory errors are added, both mean-unbiased.

Everything here is pure and seeded: no file is read or written, and the same
arguments give identical arrays. Worlds of 64 x 64 cells build in well under
a second. The committed sample data are written by
``workflows/make_sample_data.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyproj
from affine import Affine
from scipy import fft as sfft
from scipy import ndimage

from mapping.bulk_density import get_ptf
from mapping.grid import Grid

__all__ = [
    "COVARIATES",
    "CRS",
    "LANDCOVER_CLASSES",
    "STANDARD_DEPTHS",
    "ZONE_MAAT_THRESHOLDS",
    "ZONE_NAMES",
    "ResidualModel",
    "SyntheticWorld",
    "TruthParameters",
    "density_profile",
    "gaussian_random_field",
    "interval_stock",
    "make_world",
    "permafrost_zones",
    "sample_profiles",
    "sample_sites",
    "scale_depth",
    "trend_log_density",
    "validate_horizons",
    "zone_polygons",
    "zone_totals",
]

CRS = "EPSG:6931"
"""EASE-Grid 2.0 North: Lambert azimuthal equal-area on the pole, metres."""

COVARIATES: tuple[str, ...] = ("elevation", "maat", "precipitation", "ndvi", "twi", "landcover")
"""Covariate names, in the order of the sample workflow."""

LANDCOVER_CLASSES: dict[int, str] = {
    1: "tundra",
    2: "boreal_forest",
    3: "wetland",
    4: "barren",
}
"""Land-cover codes (0 = ocean / nodata)."""

ZONE_NAMES: dict[int, str] = {1: "continuous", 2: "discontinuous", 3: "sporadic", 4: "isolated"}
"""Permafrost-zone codes (0 = no permafrost, or ocean)."""

ZONE_MAAT_THRESHOLDS: tuple[float, float, float, float] = (-8.0, -4.0, -1.0, 1.0)
"""Upper MAAT bounds (°C, inclusive) of the continuous, discontinuous, sporadic
and isolated zones; warmer land has no permafrost (code 0)."""

_MAAT_QUANTILES = (
    # land-area quantile -> MAAT (°C): 40 % continuous, 22 % discontinuous, 18 % sporadic,
    # 12 % isolated and 8 % without permafrost at the default thresholds
    np.array([0.0, 0.40, 0.62, 0.80, 0.92, 1.0]),
    np.array([-16.0, -8.0, -4.0, -1.0, 1.0, 2.0]),
)
_COAST = 0.66  # northness beyond which the sea begins (before the ragged-coast noise)

STANDARD_DEPTHS: tuple[tuple[float, float], ...] = ((0, 30), (0, 100), (0, 200), (0, 300))


# --------------------------------------------------------------------------- truth parameters
@dataclass(frozen=True, slots=True)
class ResidualModel:
    """Variogram of the residual field ``eps`` (on ``ln rho0``), gstat ``vgm`` conventions.

    For the exponential model ``gamma(h) = nugget + psill * (1 - exp(-h / range))``;
    ``range`` is the scale parameter in metres (the practical range, where 95 %
    of the sill is reached, is ``3 * range``).
    """

    model: str = "exponential"
    psill: float = 0.09
    range: float = 75_000.0
    nugget: float = 0.0

    def covariance(self, h: np.ndarray) -> np.ndarray:
        """Covariance ``C(h) = psill * exp(-h / range)`` (plus nugget at ``h == 0``)."""
        if self.model != "exponential":
            raise ValueError(f"unsupported residual model {self.model!r}; use 'exponential'")
        c = self.psill * np.exp(-np.asarray(h, dtype=float) / self.range)
        return np.where(np.asarray(h) == 0, c + self.nugget, c)


@dataclass(frozen=True, slots=True)
class TruthParameters:
    """Coefficients of the true carbon-density model and of the observation noise.

    ``ln rho0 = intercept + maat_sq * (maat - maat_optimum)**2 + ndvi * ndvi
    + twi * twi + elevation_km * elevation / 1000 + precipitation_m * precipitation / 1000
    + landcover[class] + eps``, with ``rho0`` in kg C m-3.

    ``ln k = k_intercept + k_maat * maat + k_landcover[class]``, with ``k`` in cm.

    Observation noise (only with ``noise=True``): every horizon of a profile is
    multiplied by ``exp(eta)``, ``eta ~ N(-tau^2/2, tau^2)`` (``tau =
    profile_noise_sd``, short-range variation within a cell: a nugget of
    ``tau^2`` in ``ln`` stock, mean-unbiased); SOC and bulk density get
    independent multiplicative laboratory errors ``exp(N(-s^2/2, s^2))``.

    Bulk density (with or without noise) is the default pedotransfer function's
    value at the horizon's SOC times ``exp(e)``, ``e ~ N(-sd^2/2, sd^2)`` (``sd =
    bd_scatter_sd``, natural scatter at a given SOC), so the PTF that fills in
    missing values is a mean-unbiased estimator of the world's bulk density.
    """

    intercept: float = 2.95
    maat_optimum: float = -7.0
    maat_sq: float = -0.003
    ndvi: float = 0.45
    twi: float = 0.035
    elevation_km: float = -0.25
    precipitation_m: float = 0.35
    landcover: Mapping[int, float] = field(
        default_factory=lambda: {1: 0.0, 2: -0.05, 3: 0.55, 4: -0.80}
    )
    k_intercept: float = math.log(160.0)
    k_maat: float = -0.015
    k_landcover: Mapping[int, float] = field(
        default_factory=lambda: {1: 0.0, 2: -0.05, 3: 0.20, 4: -0.40}
    )
    residual: ResidualModel = field(default_factory=ResidualModel)
    profile_noise_sd: float = 0.15
    soc_lab_sd: float = 0.05
    bd_lab_sd: float = 0.05
    bd_scatter_sd: float = 0.10

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the truth, with formulas and units."""
        return {
            "depth_function": {
                "density": "rho(z) = rho0 * exp(-z / k)",
                "stock": "S(a, b) = rho0 * k / 100 * (exp(-a / k) - exp(-b / k))",
                "units": {"rho0": "kg C m-3", "k": "cm", "z": "cm", "S": "kg C m-2"},
            },
            "trend": {
                "response": "ln(rho0)",
                "formula": (
                    "intercept + maat_sq * (maat - maat_optimum)^2 + ndvi * ndvi + twi * twi"
                    " + elevation_km * elevation / 1000 + precipitation_m * precipitation / 1000"
                    " + landcover[class] + eps"
                ),
                "coefficients": {
                    "intercept": self.intercept,
                    "maat_optimum": self.maat_optimum,
                    "maat_sq": self.maat_sq,
                    "ndvi": self.ndvi,
                    "twi": self.twi,
                    "elevation_km": self.elevation_km,
                    "precipitation_m": self.precipitation_m,
                    "landcover": {str(c): v for c, v in sorted(self.landcover.items())},
                },
            },
            "scale_depth": {
                "response": "ln(k)",
                "formula": "k_intercept + k_maat * maat + k_landcover[class]",
                "coefficients": {
                    "k_intercept": self.k_intercept,
                    "k_maat": self.k_maat,
                    "k_landcover": {str(c): v for c, v in sorted(self.k_landcover.items())},
                },
            },
            "residual": {
                "variable": "eps = ln(rho0) - trend; equals ln(S(0, d)) - ln(S_trend(0, d)) for every d",
                "model": self.residual.model,
                "psill": self.residual.psill,
                "range": self.residual.range,
                "range_units": "m",
                "range_convention": "gstat vgm: gamma(h) = nugget + psill * (1 - exp(-h / range))",
                "practical_range": 3.0 * self.residual.range,
                "nugget": self.residual.nugget,
                "simulation": "circulant embedding on the grid (exact covariance at cell centres)",
            },
            "observation_noise": {
                "profile_noise_sd": self.profile_noise_sd,
                "profile_noise": "all horizons of a profile x exp(eta), eta ~ N(-sd^2/2, sd^2): nugget sd^2 in ln stock, mean-unbiased",
                "soc_lab_sd": self.soc_lab_sd,
                "bd_lab_sd": self.bd_lab_sd,
                "lab_noise": "SOC and BD each x exp(N(-sd^2/2, sd^2)), independent per horizon",
                "effective_ln_stock_nugget": self.profile_noise_sd**2,
            },
            "bulk_density": {
                "ptf": "hossain2015 (the default of mapping.bulk_density)",
                "rule": (
                    "BD = PTF(SOC) * exp(e), e ~ N(-sd^2/2, sd^2); SOC solved so that "
                    "SOC * BD * (1 - CF/100) reproduces the horizon's carbon density; "
                    "organic branch (SOC 17-60 %) where the density allows it, else mineral"
                ),
                "scatter_sd": self.bd_scatter_sd,
                "soc_max_pct": _SOC_MAX,
            },
        }


# --------------------------------------------------------------------------- analytic depth function
def density_profile(z_cm: Any, rho0: Any, scale_cm: Any) -> np.ndarray:
    """Carbon density ``rho(z) = rho0 * exp(-z / k)`` in kg C m-3.

    Parameters
    ----------
    z_cm
        Depth below the surface (cm).
    rho0
        Density at the surface (kg C m-3).
    scale_cm
        e-folding depth ``k`` (cm).

    Examples
    --------
    >>> round(float(density_profile(100.0, 30.0, 100.0)), 6)  # 30 / e
    11.036383
    """
    return np.asarray(rho0, dtype=float) * np.exp(-np.asarray(z_cm, dtype=float) / scale_cm)


def interval_stock(top_cm: Any, bottom_cm: Any, rho0: Any, scale_cm: Any) -> np.ndarray:
    """Exact stock between two depths, ``integral_top^bottom rho dz``, in kg C m-2.

    ``S = rho0 * k / 100 * exp(-top/k) * (1 - exp(-(bottom - top)/k))``; the
    factor 1/100 turns cm into m. Written with ``expm1`` so that thin horizons
    keep full relative precision.

    Examples
    --------
    >>> round(float(interval_stock(0, 30, 36.0, 190.0)), 4)  # 36 * 1.9 * (1 - e^-30/190)
    9.9905
    """
    top = np.asarray(top_cm, dtype=float)
    bottom = np.asarray(bottom_cm, dtype=float)
    k = np.asarray(scale_cm, dtype=float)
    return (
        np.asarray(rho0, dtype=float)
        * k
        / 100.0
        * np.exp(-top / k)
        * -np.expm1(-(bottom - top) / k)
    )


def trend_log_density(
    covariates: Mapping[str, Any], params: TruthParameters | None = None
) -> np.ndarray:
    """Trend part of ``ln rho0`` from covariate values (arrays or scalars).

    ``covariates`` needs ``maat``, ``ndvi``, ``twi``, ``elevation``,
    ``precipitation`` and ``landcover`` (integer codes; other codes give NaN).
    """
    p = params or TruthParameters()
    lc = np.asarray(covariates["landcover"])
    lc_term = _lookup(lc, p.landcover)
    return (
        p.intercept
        + p.maat_sq * (np.asarray(covariates["maat"], dtype=float) - p.maat_optimum) ** 2
        + p.ndvi * np.asarray(covariates["ndvi"], dtype=float)
        + p.twi * np.asarray(covariates["twi"], dtype=float)
        + p.elevation_km * np.asarray(covariates["elevation"], dtype=float) / 1000.0
        + p.precipitation_m * np.asarray(covariates["precipitation"], dtype=float) / 1000.0
        + lc_term
    )


def scale_depth(covariates: Mapping[str, Any], params: TruthParameters | None = None) -> np.ndarray:
    """e-folding depth ``k`` (cm) of the density profile from ``maat`` and ``landcover``."""
    p = params or TruthParameters()
    lc = np.asarray(covariates["landcover"])
    return np.exp(
        p.k_intercept
        + p.k_maat * np.asarray(covariates["maat"], dtype=float)
        + _lookup(lc, p.k_landcover)
    )


def _lookup(codes: np.ndarray, table: Mapping[int, float]) -> np.ndarray:
    out = np.full(codes.shape, np.nan)
    for code, value in table.items():
        out[codes == code] = value
    return out


def permafrost_zones(
    maat: np.ndarray, thresholds: Sequence[float] = ZONE_MAAT_THRESHOLDS
) -> np.ndarray:
    """Zone codes from MAAT (°C): 1 continuous ... 4 isolated, 0 none or NaN.

    A cell belongs to the first zone whose upper bound it does not exceed:
    ``maat <= -8`` continuous, ``<= -4`` discontinuous, ``<= -1`` sporadic,
    ``<= +1`` isolated (default thresholds).
    """
    t = np.asarray(maat, dtype=float)
    codes = np.zeros(t.shape, dtype=np.uint8)
    for code in range(len(thresholds), 0, -1):
        codes[t <= thresholds[code - 1]] = code
    codes[~np.isfinite(t)] = 0
    return codes


# --------------------------------------------------------------------------- random fields
def gaussian_random_field(
    shape: tuple[int, int],
    resolution: float,
    model: ResidualModel,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unconditional zero-mean Gaussian field on a regular grid by circulant embedding.

    The covariance of the result at cell centres is exactly ``model.covariance``
    (Dietrich & Newsam 1997): the grid is embedded in a torus at least twice its
    size and ten ranges wider than it, whose circulant covariance matrix is
    diagonalised by the FFT. Any slightly negative eigenvalues (none for the
    exponential model at this padding) are set to zero. GSTools' randomisation
    method reaches the same accuracy 50 times more slowly on the sample grid, and
    its Fourier generator loses variance at short lags
    (``benchmarks/bench_random_field.py``).

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    resolution
        Cell size (same unit as ``model.range``).
    model
        Covariance model (``nugget`` is added as white noise).
    rng
        Source of randomness.
    """
    ny, nx = shape
    pad = math.ceil(10.0 * model.range / resolution)
    my = sfft.next_fast_len(max(2 * ny, ny + pad))
    mx = sfft.next_fast_len(max(2 * nx, nx + pad))
    ly = np.minimum(np.arange(my), my - np.arange(my)) * resolution
    lx = np.minimum(np.arange(mx), mx - np.arange(mx)) * resolution
    h = np.hypot(ly[:, None], lx[None, :])
    cov = model.psill * np.exp(-h / model.range)
    eig = sfft.fft2(cov).real
    eig = np.clip(eig, 0.0, None)
    z = rng.standard_normal((my, mx)) + 1j * rng.standard_normal((my, mx))
    f = sfft.fft2(np.sqrt(eig / (my * mx)) * z).real[:ny, :nx]
    if model.nugget > 0:
        f = f + rng.normal(0.0, math.sqrt(model.nugget), size=(ny, nx))
    return f


def _fractal(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth standardised noise with power spectrum ~ (1 + f^2)^(-beta/2), f in cycles per domain.

    Frequencies are counted per domain length, so worlds of any cell count show
    the same landscape pattern.
    """
    ny, nx = shape
    n = max(ny, nx)
    my, mx = 2 * ny, 2 * nx  # pad so the torus seam does not show
    fy = sfft.fftfreq(my, d=1.0 / n)[:, None] * 1.0
    fx = sfft.fftfreq(mx, d=1.0 / n)[None, :] * 1.0
    amp = (1.0 + fy**2 + fx**2) ** (-beta / 4.0)
    z = rng.standard_normal((my, mx))
    f = sfft.ifft2(sfft.fft2(z) * amp).real[:ny, :nx]
    return (f - f.mean()) / f.std()


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
        return _to_lonlat().transform(xx, yy)

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


def _to_lonlat() -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def _from_lonlat() -> pyproj.Transformer:
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
    cx, cy = _from_lonlat().transform(*center_lonlat)
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

    # --- ocean towards the pole, with a ragged coast; enclosed sea -> land, specks removed
    sea = north + 0.09 * _fractal((ny, nx), 3.0, r_coast) > _COAST
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

    # --- elevation (m): plains, two mountain belts, low near the coast
    u = (xx - clim["x0"]) / length
    v = (yy - clim["y0"]) / length
    base = _fractal((ny, nx), 3.0, r_elev)
    belt1 = np.exp(-(((u - 0.18 + 0.06 * np.sin(5.0 * v + 1.0)) / 0.06) ** 2))
    belt2 = np.exp(-(((v + 0.22 - 0.5 * u + 0.05 * np.sin(7.0 * u)) / 0.05) ** 2))
    rough = _fractal((ny, nx), 2.2, r_elev)
    elev = 250.0 + 180.0 * base + (1500.0 * belt1 + 900.0 * belt2) * (0.75 + 0.25 * rough)
    dist_coast = (
        ndimage.distance_transform_edt(land) * res if sea.any() else np.full((ny, nx), np.inf)
    )
    elev *= 1.0 - np.exp(-dist_coast / (0.06 * length))
    elev = np.clip(elev, 1.0, None)

    # --- mean annual air temperature (°C): colder towards the pole and with height
    maat_raw = -17.0 * north - 5.0 * elev / 1000.0 + 1.0 * _fractal((ny, nx), 2.5, r_maat)
    # quantile-map onto a fixed distribution so every world has the same zone shares
    maat = np.full((ny, nx), np.nan)
    order = np.argsort(maat_raw[land], kind="stable")
    ranks = np.empty(order.size)
    ranks[order] = (np.arange(order.size) + 0.5) / order.size
    maat[land] = np.interp(ranks, *_MAAT_QUANTILES)
    maat[~land] = np.interp(maat_raw[~land], np.sort(maat_raw[land]), np.sort(maat[land]))

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
    twi = np.log(60.0 * np.exp(-relief / 120.0) / (tanb + 0.002)) + 0.4 * _fractal(
        (ny, nx), 1.5, r_wet
    )
    twi = np.clip(twi, 2.0, 22.0)

    # --- land cover
    n1 = _fractal((ny, nx), 2.0, r_lc)
    n2 = _fractal((ny, nx), 2.0, r_lc)
    barren = (elev > 1400.0 + 150.0 * n1) | ((dist_coast < 0.015 * length) & (n2 > 0.3))
    wet_cut = np.percentile(twi[land], 85.0)
    wetland = (twi > wet_cut + 0.6 * n2) & (tanb < 0.01) & ~barren
    forest = (maat > -9.5 + 1.0 * n1) & (elev < 950.0 + 100.0 * n2) & ~barren & ~wetland
    landcover = np.ones((ny, nx), dtype=np.uint8)
    landcover[forest] = 2
    landcover[wetland] = 3
    landcover[barren] = 4
    landcover[~land] = 0

    # --- NDVI
    base_ndvi = _lookup(landcover, {1: 0.42, 2: 0.68, 3: 0.55, 4: 0.16})
    ndvi = base_ndvi + 0.008 * (maat + 6.0) + 0.04 * _fractal((ny, nx), 2.0, r_ndvi)
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


# --------------------------------------------------------------------------- profiles
DEPTH_CLASSES: tuple[tuple[float, float, float], ...] = (
    # (probability, shallowest, deepest) of the profile bottom (cm)
    (0.03, 10, 30),
    (0.32, 30, 100),
    (0.28, 100, 200),
    (0.166, 200, 300),
    (0.204, 300, 351),
)
"""Shares of profile bottoms (allocated as exact quotas), so that 100 / 67 / 38 / 21 %
of the profiles that reach 30 cm also reach 100 / 200 / 300 cm, as in the
3422 / 2290 / 1296 / 720 profiles of the seed's compilation."""


def sample_sites(world: SyntheticWorld, n_profiles: int = 500, seed: int = 0) -> pd.DataFrame:
    """Profile locations and bottoms, clustered as real soil surveys are.

    About 55 % of the profiles lie along four road/river corridors (denser at a
    few places along each), 20 % around four field stations (more deep cores
    there), and 25 % are scattered over the land. Every site lies in the
    inner 80 % of a land cell, so rounding lon/lat to 1e-6° never moves it to
    another cell.

    Returns
    -------
    pandas.DataFrame
        ``profile_id, survey, x, y, lon, lat, row, col, bottom_cm``.
    """
    if n_profiles < 1:
        raise ValueError("n_profiles must be positive")
    rng = np.random.default_rng([int(seed), 11])
    ny, nx = world.shape
    res = world.resolution
    length = max(ny, nx) * res
    left, _, _, top = world.bounds
    land_rc = np.argwhere(world.mask)

    def on_land(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r, c = world.rowcol(x, y)
        ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        out = np.zeros(x.shape, bool)
        out[ok] = world.mask[r[ok], c[ok]]
        return out

    def random_land(n: int) -> tuple[np.ndarray, np.ndarray]:
        rc = land_rc[rng.integers(0, len(land_rc), n)]
        x = left + (rc[:, 1] + rng.uniform(0, 1, n)) * res
        y = top - (rc[:, 0] + rng.uniform(0, 1, n)) * res
        return x, y

    n_corr = round(0.55 * n_profiles)
    n_stat = round(0.20 * n_profiles)
    n_scat = n_profiles - n_corr - n_stat
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    labels: list[str] = []

    # corridors: persistent random walks heading roughly towards the pole
    per = np.diff(np.linspace(0, n_corr, 5).round().astype(int))
    for i, m in enumerate(per):
        path = [np.array(random_land(1)).ravel()]
        heading = math.atan2(-path[0][1], -path[0][0]) + rng.normal(0, 0.6)
        for _ in range(400):
            heading += rng.normal(0, 0.2)
            step = 0.006 * length * np.array([math.cos(heading), math.sin(heading)])
            nxt = path[-1] + step
            if not on_land(np.array([nxt[0]]), np.array([nxt[1]]))[0]:
                break
            path.append(nxt)
            if len(path) > 120:
                break
        pts = np.array(path)
        seg = np.r_[0.0, np.cumsum(np.hypot(*np.diff(pts, axis=0).T))]
        hot = rng.uniform(0, seg[-1], 3)
        got_x, got_y = np.empty(0), np.empty(0)
        while got_x.size < m:
            k = 4 * m
            s = np.where(
                rng.uniform(size=k) < 0.7,
                rng.choice(hot, k) + rng.normal(0, 0.006 * length, k),
                rng.uniform(0, seg[-1], k),
            )
            s = np.clip(s, 0, seg[-1])
            px = np.interp(s, seg, pts[:, 0]) + rng.normal(0, 0.002 * length, k)
            py = np.interp(s, seg, pts[:, 1]) + rng.normal(0, 0.002 * length, k)
            ok = on_land(px, py)
            got_x, got_y = np.r_[got_x, px[ok]], np.r_[got_y, py[ok]]
        xs.append(got_x[:m])
        ys.append(got_y[:m])
        labels += [f"corridor_{i + 1}"] * m

    # field stations: tight clusters
    per = np.diff(np.linspace(0, n_stat, 5).round().astype(int))
    for i, m in enumerate(per):
        c = np.array(random_land(1)).ravel()
        got_x, got_y = np.empty(0), np.empty(0)
        while got_x.size < m:
            px = c[0] + rng.normal(0, 0.004 * length, 4 * m + 4)
            py = c[1] + rng.normal(0, 0.004 * length, 4 * m + 4)
            ok = on_land(px, py)
            got_x, got_y = np.r_[got_x, px[ok]], np.r_[got_y, py[ok]]
        xs.append(got_x[:m])
        ys.append(got_y[:m])
        labels += [f"station_{chr(65 + i)}"] * m

    # scattered
    px, py = random_land(n_scat)
    xs.append(px)
    ys.append(py)
    labels += ["scattered"] * n_scat

    x = np.concatenate(xs)
    y = np.concatenate(ys)
    row, col = world.rowcol(x, y)
    # keep each site in the inner 80 % of its cell
    fx = np.clip((x - left) / res - col, 0.1, 0.9)
    fy = np.clip((top - y) / res - row, 0.1, 0.9)
    x = left + (col + fx) * res
    y = top - (row + fy) * res
    lon, lat = _to_lonlat().transform(x, y)

    survey = np.array(labels)
    # depth classes in fixed quotas (largest remainder), deeper ones more often at stations
    probs = np.array([c[0] for c in DEPTH_CLASSES])
    quota = np.floor(probs * len(x)).astype(int)
    extra = np.argsort(-(probs * len(x) - quota), kind="stable")[: len(x) - quota.sum()]
    quota[extra] += 1
    key = rng.uniform(size=len(x)) + 0.2 * np.char.startswith(survey, "station")
    cls = np.empty(len(x), dtype=int)
    cls[np.argsort(key, kind="stable")] = np.repeat(np.arange(len(probs)), quota)
    lo = np.array([c[1] for c in DEPTH_CLASSES])[cls]
    hi = np.array([c[2] for c in DEPTH_CLASSES])[cls]
    bottom = rng.integers(lo, hi).astype(float)
    exact = (rng.uniform(size=len(x)) < 0.3) & (lo >= 30)  # cores taken to a round depth
    bottom[exact] = lo[exact]
    width = len(str(len(x)))
    return pd.DataFrame(
        {
            "profile_id": [f"P{i + 1:0{max(4, width)}d}" for i in range(len(x))],
            "survey": survey,
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
            "row": row,
            "col": col,
            "bottom_cm": bottom,
        }
    )


# Bulk density follows the default pedotransfer function (mapping.bulk_density), so that the
# PTF the stock stage uses for missing values is a mean-unbiased estimator of the world's BD.
_SOC_MAX = 60.0  # % : the richest peat the generator makes
# mineral horizons richer than this SOC x BD (% x g cm-3; SOC about 10.5 %) are buried organic layers
_MINERAL_MAX = 8.0
_POCKET_DENSITY = 75.0  # kg C m-3 aimed at in cryoturbated pockets (organic material)


def _ptf() -> Any:

    return get_ptf("default")


def _solve_soc(x: float, organic: bool) -> float:
    """SOC (%) on one branch of the default PTF with ``SOC * PTF(SOC) = x``.

    ``SOC * PTF(SOC)`` rises monotonically on the mineral branch (SOC below the
    organic threshold) and falls monotonically on the organic branch up to
    :data:`_SOC_MAX`; ``x`` outside a branch's range is clipped to its end.
    """
    from scipy.optimize import brentq

    ptf = _ptf()
    thr = ptf.organic_threshold_pct
    if organic:
        f = ptf.organic

        def gap(s: float) -> float:
            return s * float(f(s)) - x

        lo, hi = thr, _SOC_MAX
        if gap(lo) <= 0:  # denser than organic material on the PTF can be: SOC at the threshold
            return lo
        if gap(hi) >= 0:
            return hi
        return float(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12))
    g = ptf.mineral

    def gap_m(s: float) -> float:
        return s * float(g(s)) - x

    lo, hi = 1e-6, thr * (1.0 - 1e-12)
    if gap_m(hi) <= 0:
        return hi
    return float(brentq(gap_m, lo, hi, xtol=1e-12, rtol=1e-12))


def _split_on_ptf(
    qq: float, prefer_organic: bool, scatter_sd: float, rng: np.random.Generator
) -> tuple[float, float, bool]:
    """SOC (%), BD (g cm-3) and organic flag of fine earth with ``SOC * BD = qq``.

    BD is the default PTF's value at the horizon's SOC times ``exp(e)``, ``e ~
    N(-sd^2/2, sd^2)`` (mean-unbiased natural scatter), and SOC is solved so that
    the product reproduces ``qq``. Material the preferred branch cannot hold
    goes to the other one: an organic horizon poorer in carbon than organic
    material on the PTF ever is (about 60 kg C m-3 at SOC 60 %) becomes a
    humus-rich mineral horizon, a mineral one richer than SOC x BD = 8 a buried
    organic layer.
    """
    ptf = _ptf()
    thr = ptf.organic_threshold_pct
    e = rng.normal(-0.5 * scatter_sd**2, scatter_sd)
    x = qq * math.exp(-e)  # = SOC * PTF(SOC) for BD = PTF(SOC) * exp(e)
    organic_low = _SOC_MAX * float(ptf.organic(_SOC_MAX))  # about 6.1
    mineral_high = thr * float(ptf.mineral(thr))  # about 12.0
    organic = x >= organic_low if prefer_organic else x >= min(_MINERAL_MAX, mineral_high)
    soc = _solve_soc(x, organic)
    return soc, qq / soc, organic


def sample_profiles(
    world: SyntheticWorld,
    n_profiles: int = 500,
    seed: int = 0,
    *,
    noise: bool = True,
    missing_bd: float = 0.12,
    sites: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A horizon table of profiles drawn from the world's true density.

    Sites come from :func:`sample_sites` with the same ``seed``. Each horizon's
    stock is the exact integral of the density of the site's cell (see
    :func:`interval_stock`), split into SOC, bulk density and coarse fragments
    so that ``soc_pct * bulk_density_g_cm3 * (1 - coarse_fraction_pct/100) *
    thickness_cm / 10 * horizon_area_pct / 100``, summed over the profile,
    equals the true stock. Bulk density is the default pedotransfer
    function's value at the horizon's SOC with mean-unbiased scatter
    (``params.bd_scatter_sd``), so the stock stage's estimate of a missing
    value is unbiased. Wetland profiles start with a thick surface layer,
    others with a thin one; these are organic (Oi/Oe/Oa, SOC 17-60 %) where
    their carbon density reaches what organic material on the PTF holds
    (about 60 kg C m-3 and more) and humus-rich mineral horizons otherwise.
    About one profile in twenty in the colder zones has a cryoturbated pair
    of horizons sharing a depth range (a carbon-rich pocket, ``Ojj`` when
    organic, ``Ajj`` otherwise, and its mineral matrix, area
    shares summing to 100).

    Parameters
    ----------
    world
        The synthetic world.
    n_profiles
        Number of profiles.
    seed
        Seed of the sites, horizons and noise.
    noise
        Add the short-range and laboratory noise of ``world.params``; with
        ``False`` the stocks are exact and no bulk density is missing.
    missing_bd
        Target share of horizons without bulk density (``noise=True`` only).
    sites
        Sites as :func:`sample_sites` returns them (``profile_id, survey, lon,
        lat, row, col, bottom_cm``); default ``sample_sites(world, n_profiles, seed)``.

    Returns
    -------
    pandas.DataFrame
        ``profile_id, lon, lat, top_cm, bottom_cm, horizon, soc_pct,
        bulk_density_g_cm3, coarse_fraction_pct, horizon_area_pct, n_pct,
        survey``.
    """
    if sites is None:
        sites = sample_sites(world, n_profiles, seed)
    rng = np.random.default_rng([int(seed), 22])
    p = world.params
    lc_all = world.covariates["landcover"]
    rows: list[dict[str, Any]] = []
    for site in sites.itertuples(index=False):
        r, c = int(site.row), int(site.col)
        rho0 = float(world.surface_density[r, c])
        k = float(world.scale_depth[r, c])
        lc = int(lc_all[r, c])
        zone = int(world.zones[r, c])
        depth = float(site.bottom_cm)
        scale = (
            math.exp(rng.normal(-0.5 * p.profile_noise_sd**2, p.profile_noise_sd)) if noise else 1.0
        )

        # horizon boundaries: organic layer, then mineral horizons thickening with depth
        h_org = {1: rng.uniform(4, 18), 2: rng.uniform(4, 14), 3: rng.uniform(30, 130), 4: 0.0}[lc]
        h_org = min(float(round(h_org)), depth)
        tops = [0.0]
        kinds: list[str] = []
        while tops[-1] < depth:
            z = tops[-1]
            organic = z < h_org
            t = round(rng.uniform(10, 30) if organic else rng.uniform(8, 30) * (1.0 + z / 150.0))
            end = h_org if organic else depth
            nxt = min(z + t, end)
            if end - nxt < 4:
                nxt = end
            tops.append(float(nxt))
            kinds.append("organic" if organic else "mineral")
        bounds = list(itertools.pairwise(tops))

        cryo_at = -1
        if zone in (1, 2) and lc in (1, 3) and rng.uniform() < 0.12:
            cands = [
                i
                for i, (a, b) in enumerate(bounds)
                if kinds[i] == "mineral" and 10 <= a <= 100 and b - a >= 8
            ]
            if cands:
                cryo_at = int(rng.choice(cands))

        cf_profile = (
            rng.uniform(15, 50)
            if lc == 4
            else (rng.uniform(1, 15) if rng.uniform() < 0.35 else 0.0)
        )
        for i, ((a, b), kind) in enumerate(zip(bounds, kinds, strict=True)):
            s = scale * float(interval_stock(a, b, rho0, k))
            q = s / ((b - a) / 100.0)  # mean density of the horizon, kg m-3
            if i == cryo_at:
                share = float(rng.choice([20, 25, 30, 35, 40]))
                # an organic pocket where the matrix can spare the carbon
                ratio = min(max(rng.uniform(1.8, 2.6), _POCKET_DENSITY / q), 80.0 / share)
                q1 = q * ratio
                q2 = (q - share / 100.0 * q1) / (1.0 - share / 100.0)
                parts = [("Ojj", q1, share, "pocket"), ("Bgjj", q2, 100.0 - share, "mineral")]
            else:
                name = _horizon_name(kind, a, b, zone)
                parts = [(name, q, 100.0, kind)]
            for name, qh, area, kd in parts:
                cf = round(cf_profile * (0.6 + 0.8 * rng.uniform()), 1) if cf_profile > 0 else 0.0
                if kd != "mineral" or qh / 10.0 >= _MINERAL_MAX:
                    cf = 0.0  # organic material carries no stones
                soc, bd, organic = _split_on_ptf(
                    qh / (10.0 * (1.0 - cf / 100.0)), kd != "mineral", p.bd_scatter_sd, rng
                )
                if organic:
                    if cf > 0:  # re-split without stones
                        cf = 0.0
                        soc, bd, organic = _split_on_ptf(qh / 10.0, True, p.bd_scatter_sd, rng)
                    if kd == "mineral":
                        name = "Ob"  # too rich in carbon for mineral soil: a buried organic layer
                if not organic and kd != "mineral":
                    # too poor in carbon for organic material on the PTF: humus-rich mineral
                    name = "Ajj" if kd == "pocket" else _horizon_name("mineral", a, b, zone)
                cn = rng.uniform(22, 30) if organic else rng.uniform(15, 22)
                if noise:
                    soc *= math.exp(rng.normal(-0.5 * p.soc_lab_sd**2, p.soc_lab_sd))
                    bd *= math.exp(rng.normal(-0.5 * p.bd_lab_sd**2, p.bd_lab_sd))
                    bd = max(bd, 0.05)  # a lab never reports less
                rows.append(
                    {
                        "profile_id": site.profile_id,
                        "lon": site.lon,
                        "lat": site.lat,
                        "top_cm": a,
                        "bottom_cm": b,
                        "horizon": name,
                        "soc_pct": soc,
                        "bulk_density_g_cm3": bd,
                        "coarse_fraction_pct": cf,
                        "horizon_area_pct": area,
                        "n_pct": soc / cn,
                        "survey": site.survey,
                    }
                )
    df = pd.DataFrame(rows)
    if noise and missing_bd > 0:
        # whole profiles without BD (older surveys) plus scattered missing horizons
        pids = df["profile_id"].unique()
        no_bd = set(rng.choice(pids, round(0.6 * missing_bd * len(pids)), replace=False))
        drop = np.array(df["profile_id"].isin(no_bd))
        drop |= rng.uniform(size=len(df)) < 0.4 * missing_bd
        df.loc[drop, "bulk_density_g_cm3"] = np.nan
    validate_horizons(df)
    return df


def _horizon_name(kind: str, top: float, bottom: float, zone: int) -> str:
    if kind == "organic":
        return "Oi" if top == 0 and bottom <= 10 else ("Oe" if top < 30 else "Oa")
    if top < 20:
        return "A"
    if top < 100:
        return "Bg"
    return "Cf" if zone > 0 else "C"


def validate_horizons(df: pd.DataFrame) -> None:
    """Check the strict validity rules the sample data promise; raise ``ValueError`` if broken.

    Per profile: ``top < bottom``; horizons contiguous from 0 cm without gaps or
    overlaps, except groups sharing the same depth range whose
    ``horizon_area_pct`` sum to 100; SOC in (0, 100] %; BD in [0.05, 2.65]
    g cm-3 where given; coarse fragments in [0, 100) %; lon in [-180, 180], lat
    in [-90, 90].
    """
    bad = []
    if not (df["top_cm"] < df["bottom_cm"]).all():
        bad.append("top_cm >= bottom_cm")
    if not df["soc_pct"].between(0, 100, inclusive="right").all():
        bad.append("soc_pct outside (0, 100]")
    bd = df["bulk_density_g_cm3"].dropna()
    if not bd.between(0.05, 2.65).all():
        bad.append("bulk_density_g_cm3 outside [0.05, 2.65]")
    if not df["coarse_fraction_pct"].between(0, 100, inclusive="left").all():
        bad.append("coarse_fraction_pct outside [0, 100)")
    if not (df["lon"].between(-180, 180).all() and df["lat"].between(-90, 90).all()):
        bad.append("coordinates out of range")
    for pid, g in df.groupby("profile_id", sort=False):
        layers = g.groupby(["top_cm", "bottom_cm"], sort=True)["horizon_area_pct"].sum()
        if not np.allclose(layers.to_numpy(), 100.0):
            bad.append(f"{pid}: area shares of a depth range do not sum to 100")
        tops = layers.index.get_level_values(0).to_numpy()
        bottoms = layers.index.get_level_values(1).to_numpy()
        if tops[0] != 0 or not np.array_equal(tops[1:], bottoms[:-1]):
            bad.append(f"{pid}: horizons not contiguous from 0 cm")
        if len({(a, b) for a, b in zip(g["top_cm"], g["bottom_cm"], strict=True)}) != len(layers):
            bad.append(f"{pid}: inconsistent depth ranges")
        if bad:
            break
    if bad:
        raise ValueError("invalid synthetic horizons: " + "; ".join(bad[:5]))
