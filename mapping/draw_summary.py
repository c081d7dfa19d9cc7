"""Summaries of the Monte Carlo draws of zone totals: ranges, shifts off the maps' totals.

:func:`summarise_draws` turns the long table of :func:`mapping.uncertainty.zone_total_draws`
into one row per zone and interval (mean, median and range); :func:`mean_shifts` finds the
totals whose draws left their map's total; :func:`attach_ranges` puts the ranges beside
the maps' totals. Pure pandas/NumPy, re-exported by :mod:`mapping.uncertainty`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mapping.exceptions import ConfigError, InputError
from mapping.zonal import UNITS

__all__ = ["attach_ranges", "mean_shifts", "summarise_draws"]


def _check_unit(unit: str) -> float:
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    return UNITS[unit]


def _check_ranges(ranges: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in ranges)
    except (TypeError, ValueError):
        raise ConfigError(f"ranges {ranges!r} must be two percentiles, e.g. (5, 95)") from None
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"ranges {ranges!r}: percentiles must satisfy 0 <= lower < upper <= 100")
    return lo, hi


_KEYS = ["zone", "zone_code", "interval", "top_cm", "bottom_cm"]


def _storage_column(df: pd.DataFrame) -> tuple[str, float]:
    for u, size in UNITS.items():
        col = f"storage_{u.lower()}"
        if col in df.columns:
            return col, size
    raise InputError(
        f"draws have no storage column ({', '.join('storage_' + u.lower() for u in UNITS)})"
    )


def summarise_draws(
    draws: pd.DataFrame, ranges: Sequence[float] = (5, 95), unit: str = "Pg"
) -> pd.DataFrame:
    """Median and percentile range of every total from :func:`zone_total_draws`.

    Parameters
    ----------
    draws
        The long table of draws.
    ranges
        Lower and upper percentile of the range (default 5 and 95: a 90 % range).
    unit
        ``"Pg"`` or ``"Tg"`` for the output (the draws may be in either).

    Returns
    -------
    pandas.DataFrame
        One row per interval x zone (``all zones`` included), in the draws' order:
        ``zone, zone_code, interval, top_cm, bottom_cm, n_realizations, storage_mean_pg,
        storage_median_pg, storage_lower_pg, storage_upper_pg, lower_pct, upper_pct``
        (``_tg`` with ``unit="Tg"``). Percentiles interpolate linearly between draws.
    """
    scale = _check_unit(unit)
    lo, hi = _check_ranges(ranges)
    col, size = _storage_column(draws)
    missing = [c for c in [*_KEYS, "realization"] if c not in draws.columns]
    if missing:
        raise InputError(f"draws lack column(s) {', '.join(missing)}")
    values = draws[col].to_numpy(float) * (size / scale)
    key = draws["interval"].astype(str) + "\x00" + draws["zone"].astype(str)
    codes, uniques = pd.factorize(key, sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    u = unit.lower()
    rows = []
    for g in range(len(uniques)):
        idx = order[bounds[g] : bounds[g + 1]]
        v = values[idx]
        p = np.percentile(v, [lo, 50.0, hi])
        meta = draws.iloc[idx[0]]
        rows.append(
            {
                **{k: meta[k] for k in _KEYS},
                "n_realizations": len(v),
                f"storage_mean_{u}": float(v.mean()),
                f"storage_median_{u}": float(p[1]),
                f"storage_lower_{u}": float(p[0]),
                f"storage_upper_{u}": float(p[2]),
                "lower_pct": lo,
                "upper_pct": hi,
            }
        )
    out = pd.DataFrame(rows)
    out["zone_code"] = out["zone_code"].astype("Int64")
    out.attrs.update({**draws.attrs, "storage_unit": unit, "range_pct": (lo, hi)})
    return out


def mean_shifts(
    draws: pd.DataFrame,
    totals: pd.DataFrame,
    *,
    tolerance: float = 0.02,
    z: float = 3.0,
) -> pd.DataFrame:
    """Totals whose Monte Carlo mean left the map's total by more than Monte Carlo noise.

    Every cell's realizations keep its mean, so the mean of the draws of a total is the
    map's total up to the noise of ``n`` realizations (``sd / sqrt(n)``). One thing moves it:
    the ordering by depth. Drawn as increments (the default), a deeper interval keeps its
    map's mean wherever that mean is at least the shallower one's; where a deeper map lies
    below a shallower one (per-interval models do not exclude it) its realizations follow
    the shallower ones, and its total and range move up by that disorder. With
    ``cumulative="max"`` (the running maximum of independent draws) a deeper interval whose
    spread grows faster than its mean is lifted too.

    Parameters
    ----------
    draws
        The long table of :func:`zone_total_draws`.
    totals
        The maps' zone totals (:func:`mapping.zonal.zone_totals`: ``zone``, ``interval``
        and ``storage_pg`` or ``storage_tg``), in the draws' unit.
    tolerance, z
        A shift is reported when it exceeds both ``tolerance`` (relative) and ``z``
        standard errors of the Monte Carlo mean.

    Returns
    -------
    pandas.DataFrame
        One row per reported total: ``zone, interval, map_total, mc_mean, shift`` (relative,
        ``mc_mean / map_total - 1``) and ``noise`` (one standard error, relative).
    """
    col, _ = _storage_column(draws)  # the totals must be in the draws' unit
    keys = ["zone", "interval"]
    if any(k not in totals.columns for k in [*keys, col]):
        raise InputError(f"totals need columns zone, interval and {col} (the draws' unit)")
    stats = draws.groupby(keys, sort=False)[col].agg(["mean", "std", "size"]).reset_index()
    both = stats.merge(totals[[*keys, col]].rename(columns={col: "map"}), on=keys)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = both["mean"] / both["map"] - 1.0
        noise = both["std"] / np.sqrt(both["size"]) / both["map"]
    flagged = (shift.abs() > tolerance) & (shift.abs() > z * noise) & (both["map"] > 0)
    out = pd.DataFrame(
        {
            "zone": both["zone"],
            "interval": both["interval"],
            "map_total": both["map"],
            "mc_mean": both["mean"],
            "shift": shift,
            "noise": noise,
        }
    )
    return out[flagged.to_numpy()].reset_index(drop=True)


def attach_ranges(totals: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Add the Monte Carlo median and range to the table of :func:`mapping.zonal.zone_totals`.

    Rows are matched on ``interval`` and ``zone``; the summary's unit must be the table's.
    Returns a new table with ``storage_median_pg, storage_lower_pg, storage_upper_pg``
    (``_tg``) after the storage column.
    """
    col, _ = _storage_column(totals)
    u = col.removeprefix("storage_")
    add = [f"storage_median_{u}", f"storage_lower_{u}", f"storage_upper_{u}"]
    missing = [c for c in add if c not in summary.columns]
    if missing:
        raise InputError(f"summary has no {missing[0]}; summarise the draws in the table's unit")
    out = totals.merge(summary[["interval", "zone", *add]], on=["interval", "zone"], how="left")
    cols = list(totals.columns)
    pos = cols.index(col) + 1
    out = out[cols[:pos] + add + cols[pos:]]
    out.attrs.update(totals.attrs)
    return out
