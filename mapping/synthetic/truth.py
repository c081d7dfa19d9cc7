"""The known truth of the synthetic world: conventions (CRS, covariates, zones, depths), the
truth parameters, the analytic depth function of carbon density and seeded Gaussian fields."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import fft as sfft

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


STANDARD_DEPTHS: tuple[tuple[float, float], ...] = ((0, 30), (0, 100), (0, 200), (0, 300))

SOC_MAX_PCT = 60.0
"""SOC % of the richest peat the generator makes."""


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
                "soc_max_pct": SOC_MAX_PCT,
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
    lc_term = code_lookup(lc, p.landcover)
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
        + code_lookup(lc, p.k_landcover)
    )


def code_lookup(codes: np.ndarray, table: Mapping[int, float]) -> np.ndarray:
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


def fractal_field(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
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
