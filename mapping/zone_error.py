"""The error of a zone's mean that the zone's own held-out profiles leave open.

The Monte Carlo of the zone totals (:func:`mapping.uncertainty.zone_total_draws`) draws
each cell's error from its map's standard deviation, correlated in space by a variogram,
plus errors every cell shares: the residuals' mean level and the trend's extrapolation
error. A variogram cannot hold an error common to a whole zone (it is blind to any
constant), and with ``uncertainty.level: local`` the level's error falls to nothing where
profiles are dense. Yet a densely sampled zone's total is still off by a few per cent:
the map's mean error over the zone is not known, only estimated from the zone's profiles.

Model-assisted estimation of a regional mean (the generalised regression estimator;
Särndal, Swensson & Wretman 1992; Brus 2022, *Spatial sampling with R*, ch. 10) puts the
uncertainty of a map's regional mean at the standard error of the mean of the map's
errors at the region's sample points, ``s / sqrt(n)``. Here the errors are the spatial
cross-validation's out-of-fold errors of the profiles inside the zone (``ln`` predicted
minus ``ln`` observed for models of log stocks; relative to the interval's mean observed
stock otherwise), so they hold the map's error at the distances it predicts at. One
relative error per zone and realization, ``sd_z`` from :func:`zone_error_sd`, scales the
zone's totals in every interval alike, so realizations stay ordered by depth; the
all-zones total takes the sum of the zones' changes (:func:`add_zone_errors`).

With the CV's weights to the mapped area (``cv.weighting: area``) the zone's mean error
is the weighted one and its standard error that of a weighted mean, so profiles crowded
in one corner of a zone count for the land they stand for.

Assumptions: the profiles of a zone, so weighted, stand for its cells, and the map's
errors at the profiles are independent beyond what the folds remove. A zone without a profile gets no term: its
error is the map's extrapolation, which the level and the extrapolation error carry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mapping.draw_summary import _storage_column
from mapping.exceptions import ConfigError, InputError
from mapping.units import ALL_ZONES

__all__ = ["add_zone_errors", "shift_zone_rows", "zone_error_sd", "zone_factors"]

#: Below this many profiles in a zone, the spread of its errors is taken from every
#: profile of the interval (a few profiles say little about their own spread).
MIN_PROFILES = 10


def zone_error_sd(
    errors: Mapping[str, Any],
    zones: Mapping[str, Any],
    names: Sequence[str],
    *,
    weights: Mapping[str, Any] | None = None,
    min_profiles: int = MIN_PROFILES,
) -> pd.DataFrame:
    """The relative error of each zone's totals left by its profiles' errors.

    For zone ``z`` and interval ``k`` with ``n`` profiles holding a finite error, the
    standard error of their mean error ``se = s / sqrt(n)``, ``s`` the standard deviation
    (ddof 1) of the zone's errors when ``n >= min_profiles``, else of all the interval's
    errors. The zone's term is the root mean square of ``se`` over the intervals it has
    profiles in: one value for every interval (a shared factor keeps the realizations
    ordered by depth).

    With ``weights`` (each profile's weight to the mapped area, the CV's ``weight``
    column under ``cv.weighting: area``) ``n`` is Kish's effective size
    ``(Σ w)² / Σ w²`` of the zone's profiles, ``se = s √(Σ w²) / Σ w`` (``s / √n`` for
    equal weights): profiles crowded where access is easy count for the land they stand
    for, so a zone sampled in one corner gets the larger error its sampling leaves, and
    one profile standing for most of a zone leaves nearly all of ``s``. (The sandwich
    variance of a weighted mean, ``Σ w² (e - ē)² / (Σ w)²``, falls to 0 there: the
    dominant profile's own error is the mean.)

    Parameters
    ----------
    errors
        Interval label -> ``(n,)`` out-of-fold errors of its profiles (NaN: none).
    zones
        Interval label -> ``(n,)`` zone index of the same profiles (``-1``: no zone),
        the index into ``names``.
    names
        Zone names, by index.
    weights
        Interval label -> ``(n,)`` non-negative weights of the same profiles, or ``None``
        (every profile counts once).
    min_profiles
        Fewest profiles a zone needs to give its own spread.

    Returns
    -------
    pandas.DataFrame
        One row per zone, in the order of ``names``: ``zone``, ``n_profiles`` (the most
        over the intervals), ``sd`` (0 for a zone without profiles).

    Raises
    ------
    InputError
        The intervals of ``errors`` and ``zones`` differ, or a pair's lengths do.

    Examples
    --------
    >>> e = {"0-30": np.array([0.1, -0.1, 0.3, -0.3])}
    >>> z = {"0-30": np.array([0, 0, 1, 1])}
    >>> t = zone_error_sd(e, z, ["a", "b"], min_profiles=2)
    >>> [round(v, 4) for v in t["sd"]]  # sd(0.1, -0.1) / sqrt(2), sd(0.3, -0.3) / sqrt(2)
    [0.1, 0.3]
    """
    if set(errors) != set(zones):
        raise InputError("zone errors: the intervals of the errors and of the zones differ")
    se2: list[list[float]] = [[] for _ in names]
    count = np.zeros(len(names), dtype=int)
    for k in errors:
        e = np.asarray(errors[k], dtype=float).ravel()
        g = np.asarray(zones[k]).ravel()
        if e.size != g.size:
            raise InputError(f"zone errors: {k}: {e.size} errors but {g.size} zone indices")
        w = np.ones(e.size) if weights is None else np.asarray(weights[k], dtype=float).ravel()
        if w.size != e.size:
            raise InputError(f"zone errors: {k}: {e.size} errors but {w.size} weights")
        ok = np.isfinite(e) & np.isfinite(w) & (w > 0)
        spread_all = float(np.std(e[ok], ddof=1)) if ok.sum() > 1 else math.nan
        for i in range(len(names)):
            mine, wi = e[ok & (g == i)], w[ok & (g == i)]
            n = len(mine)
            if n == 0:
                continue
            v1, v2 = float(wi.sum()), float(np.sum(wi * wi))
            if n >= max(min_profiles, 2):  # the unbiased variance with reliability weights
                dev = mine - float(np.sum(wi * mine)) / v1
                s2 = float(np.sum(wi * dev * dev)) / (v1 - v2 / v1)
            else:
                s2 = spread_all**2
            v = s2 * v2 / v1**2  # s² over Kish's effective size
            if math.isfinite(v):
                se2[i].append(v)
                count[i] = max(count[i], n)
    sd = [math.sqrt(float(np.mean(v))) if v else 0.0 for v in se2]
    return pd.DataFrame({"zone": list(names), "n_profiles": count, "sd": sd})


def zone_factors(
    draws: pd.DataFrame,
    sd: Mapping[str, float],
    *,
    seed: int,
    distribution: str = "lognormal",
) -> np.ndarray:
    """Per row of ``draws``, the factor :func:`add_zone_errors` scales it by (1 for rows of
    unnamed zones and ``all zones``): ``exp(sd_z g - sd_z² / 2)`` (``lognormal``) or
    ``max(0, 1 + sd_z g)`` (``normal``), ``g`` one seeded standard normal per zone and
    realization. It depends on the rows' zone and realization only, not on their values,
    so a finished run's draws can be divided by it exactly
    (``benchmarks/zone_term_variants.py``)."""
    if distribution not in ("normal", "lognormal"):
        raise ConfigError(f"distribution must be 'normal' or 'lognormal', not {distribution!r}")
    reals = draws["realization"].to_numpy(int)
    n_real = int(reals.max()) + 1 if len(draws) else 0
    zones = [z for z in sd if z != ALL_ZONES]
    g = np.random.default_rng([int(seed), 0x5A0E]).standard_normal((len(zones), n_real))
    f = np.ones(len(draws))
    for i, zone in enumerate(zones):
        s = float(sd[zone])
        if not (math.isfinite(s) and s > 0):
            continue
        rows = (draws["zone"] == zone).to_numpy()
        x = g[i, reals[rows]]
        f[rows] = (
            np.exp(s * x - 0.5 * s * s) if distribution == "lognormal" else np.maximum(1 + s * x, 0)
        )
    return f


def shift_zone_rows(draws: pd.DataFrame, delta: np.ndarray) -> pd.DataFrame:
    """``draws`` with ``delta`` added to each row's storage and, to each ``all zones``
    row, the sum of the other rows' ``delta`` in its interval and realization."""
    col, _ = _storage_column(draws)
    out = draws.copy()
    reals = out["realization"].to_numpy(int)
    out[col] = out[col].to_numpy(float) + delta
    total = (out["zone"] == ALL_ZONES).to_numpy()
    if total.any():
        moved = (
            pd.Series(delta[~total])
            .groupby([out.loc[~total, "interval"].to_numpy(), reals[~total]])
            .sum()
        )
        key = pd.MultiIndex.from_arrays([out.loc[total, "interval"].to_numpy(), reals[total]])
        out.loc[total, col] += moved.reindex(key, fill_value=0.0).to_numpy()
    return out


def add_zone_errors(
    draws: pd.DataFrame,
    sd: Mapping[str, float],
    *,
    seed: int,
    distribution: str = "lognormal",
) -> pd.DataFrame:
    """The Monte Carlo draws with each zone's error of its mean (:func:`zone_error_sd`).

    Realization ``r`` of zone ``z`` is scaled by ``exp(sd_z g - sd_z² / 2)``
    (``lognormal``: the mean stays) or ``max(0, 1 + sd_z g)`` (``normal``), ``g`` one
    standard normal per zone and realization (seeded, the same for every interval of the
    zone; :func:`zone_factors`). The all-zones rows gain the sum of the zones' changes.

    Parameters
    ----------
    draws
        :func:`mapping.uncertainty.zone_total_draws`'s table (``realization``, ``zone``,
        ``interval`` and a ``storage_<unit>`` column).
    sd
        Zone name -> relative sd (zones not named, and ``all zones``, are left alone).
    seed
        Seed of the normals.
    distribution
        ``lognormal`` or ``normal``.

    Returns
    -------
    pandas.DataFrame
        A new table, same rows and columns.
    """
    f = zone_factors(draws, sd, seed=seed, distribution=distribution)
    col, _ = _storage_column(draws)
    old = draws[col].to_numpy(float)
    return shift_zone_rows(draws, np.where(f != 1.0, old * (f - 1.0), 0.0))
