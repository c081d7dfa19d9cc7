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

The package's modules: :mod:`~mapping.synthetic.truth` (conventions, truth parameters, the
depth function, Gaussian fields), :mod:`~mapping.synthetic.world` (:func:`make_world`, zone
polygons and exact totals), :mod:`~mapping.synthetic.profiles` (sites and horizons),
:mod:`~mapping.synthetic.worlds` (named worlds for the tests) and
:mod:`~mapping.synthetic.judge`.

Everything here is pure and seeded: no file is read or written, and the same
arguments give identical arrays. Worlds of 64 x 64 cells build in well under
a second. The committed sample data are written by
``workflows/make_sample_data.py``.
"""

from mapping.synthetic.profiles import sample_profiles, sample_sites, validate_horizons
from mapping.synthetic.truth import (
    COVARIATES,
    CRS,
    LANDCOVER_CLASSES,
    STANDARD_DEPTHS,
    ZONE_MAAT_THRESHOLDS,
    ZONE_NAMES,
    ResidualModel,
    TruthParameters,
    density_profile,
    gaussian_random_field,
    interval_stock,
    permafrost_zones,
    scale_depth,
    trend_log_density,
)
from mapping.synthetic.world import SyntheticWorld, make_world, zone_polygons, zone_totals

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
