"""A synthetic active layer with its known thawed / perennially frozen carbon split.

The active layer (the soil that thaws every summer above the permafrost table) deepens
with the air temperature: by Stefan's solution its thickness grows with the square root
of the thawing degree-days, which over the range of the sample area behaves like an
exponential of the mean annual air temperature. Wet, organic (high-TWI) ground insulates
and thaws less deep. So, per cell,

    ALT = 45 cm * exp(0.11 (MAAT + 12)) * exp(-0.08 (TWI - 9)) * exp(eta)

with ``eta`` a Gaussian field (sd 0.15, exponential covariance, 60 km range) for what
the covariates miss (snow, vegetation, soil moisture). That gives about 45 cm at
-12 °C, 90 cm at -6 °C and 170 cm at 0 °C, the spread of CALM sites from the
continuous to the sporadic zone. Cells outside the permafrost zones have no permafrost
within 3 m: their ALT is 300 cm (the whole column seasonally thawed). Values are clipped
to 20-300 cm.

The true split per cell is the stock of the truth's density profile above and below the
active-layer base (:func:`mapping.synthetic.interval_stock`), and the zone totals sum it
over the cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mapping.synthetic import (
    ZONE_NAMES,
    ResidualModel,
    SyntheticWorld,
    gaussian_random_field,
    interval_stock,
)

__all__ = ["ALT_MAX_CM", "active_layer_thickness", "true_thaw_split"]

ALT_MAX_CM = 300.0
"""Thickness given to cells without permafrost within the deepest standard interval."""

_COEF = {"base_cm": 45.0, "maat": 0.11, "maat_ref": -12.0, "twi": -0.08, "twi_ref": 9.0}
_NOISE = ResidualModel(psill=0.15**2, range=60_000.0, nugget=0.0)


def active_layer_thickness(world: SyntheticWorld, seed: int = 0) -> np.ndarray:
    """Active-layer thickness (cm) on the world's grid; NaN over the ocean.

    Parameters
    ----------
    world
        The synthetic world (its ``maat`` and ``twi`` covariates and permafrost zones).
    seed
        Seed of the unexplained part ``eta``.

    Returns
    -------
    ndarray
        ``(ny, nx)`` float64, 20-300 cm on land, 300 cm where there is no permafrost.
    """
    c = _COEF
    rng = np.random.default_rng([seed, 0xA17])
    eta = gaussian_random_field(world.shape, world.resolution, _NOISE, rng)
    maat = world.covariates["maat"]
    twi = world.covariates["twi"]
    alt = c["base_cm"] * np.exp(
        c["maat"] * (maat - c["maat_ref"]) + c["twi"] * (twi - c["twi_ref"]) + eta
    )
    alt = np.clip(alt, 20.0, ALT_MAX_CM)
    alt = np.where(world.zones > 0, alt, ALT_MAX_CM)
    return np.where(world.mask, alt, np.nan)


def true_thaw_split(
    world: SyntheticWorld, active_layer_cm: np.ndarray, max_depth: float = ALT_MAX_CM
) -> pd.DataFrame:
    """True storage above and below the active-layer base, per permafrost zone.

    Parameters
    ----------
    world
        The synthetic world (its true density profile per cell).
    active_layer_cm
        :func:`active_layer_thickness` (cm) on the world's grid.
    max_depth
        Bottom of the column that is split (cm).

    Returns
    -------
    DataFrame
        One row per zone (codes 1-4 by name, then ``permafrost_region``): ``zone``,
        ``area_km2``, ``thawed_pg``, ``frozen_pg``, ``total_pg`` (``0-max_depth``),
        ``thawed_share``.
    """
    depth = np.clip(np.nan_to_num(active_layer_cm, nan=0.0), 0.0, max_depth)
    rho0, k = world.surface_density, world.scale_depth
    total = interval_stock(0.0, max_depth, rho0, k)
    # S(0, d) with d per cell: the analytic integral of rho0 exp(-z / k)
    thawed = rho0 * k / 100.0 * (1.0 - np.exp(-depth / k))
    groups = {ZONE_NAMES[c]: world.zones == c for c in sorted(ZONE_NAMES)}
    groups["permafrost_region"] = world.zones > 0
    rows = []
    for name, sel in groups.items():
        sel = sel & world.mask
        a = world.cell_area_m2
        th, tot = float(thawed[sel].sum()) * a / 1e12, float(total[sel].sum()) * a / 1e12
        rows.append(
            {
                "zone": name,
                "area_km2": int(sel.sum()) * a / 1e6,
                "thawed_pg": th,
                "frozen_pg": tot - th,
                "total_pg": tot,
                "thawed_share": th / tot if tot else np.nan,
            }
        )
    return pd.DataFrame(rows)
