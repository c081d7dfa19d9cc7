"""The figures that judge a run against a world's known truth (``VALIDATION.md``).

Every function takes plain arrays or tables and returns numbers, so that each
can be checked on a hand-made case. Pixel figures use the cells where truth
and prediction are both finite (the land cells of the grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "cv_ratio",
    "half_widths",
    "most_dissimilar",
    "picp",
    "pixel_r2",
    "range_coverage",
    "rms_z",
    "true_new_error",
    "zone_errors",
]


def _valid(*arrays: np.ndarray) -> np.ndarray:
    ok = np.ones(np.shape(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, dtype=float))
    return ok


def pixel_r2(mean: np.ndarray, truth: np.ndarray) -> float:
    """``1 - sum((mean - truth)^2) / sum((truth - mean(truth))^2)`` over valid cells."""
    ok = _valid(mean, truth)
    m, t = np.asarray(mean, float)[ok], np.asarray(truth, float)[ok]
    return float(1.0 - np.sum((m - t) ** 2) / np.sum((t - t.mean()) ** 2))


def picp(
    lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None
) -> float:
    """Share of valid cells with ``lower <= truth <= upper`` (optionally only ``where``)."""
    ok = _valid(lower, upper, truth)
    if where is not None:
        ok &= np.asarray(where, dtype=bool)
    lo, hi, t = (np.asarray(a, float)[ok] for a in (lower, upper, truth))
    return float(np.mean((lo <= t) & (t <= hi))) if t.size else float("nan")


def rms_z(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> float:
    """``sqrt(mean(((mean - truth) / std)^2))`` over valid cells with ``std > 0``."""
    ok = _valid(mean, std, truth) & (np.asarray(std, float) > 0)
    z = (np.asarray(mean, float)[ok] - np.asarray(truth, float)[ok]) / np.asarray(std, float)[ok]
    return float(np.sqrt(np.mean(z**2)))


def most_dissimilar(di: np.ndarray, share: float = 0.10) -> np.ndarray:
    """Mask of the ``share`` of finite cells with the largest dissimilarity index.

    Cells are ranked (ties broken by position), so exactly
    ``round(share * n_finite)`` cells are selected.
    """
    d = np.asarray(di, dtype=float)
    ok = np.isfinite(d)
    n = round(share * int(ok.sum()))
    out = np.zeros(d.shape, dtype=bool)
    if n == 0:
        return out
    flat = np.flatnonzero(ok)
    top = flat[np.argsort(-d.ravel()[flat], kind="stable")[:n]]
    out.ravel()[top] = True
    return out


def true_new_error(
    mean: np.ndarray, truth: np.ndarray, observed: np.ndarray, truth_at_obs: np.ndarray
) -> float:
    """True error of a new observation at a random land location.

    ``sqrt(map MSE over valid cells + mean((observed - truth_at_obs)^2))``: the
    map's error against the truth plus the error of an observation (stock from
    noisy horizons) against the truth of its cell, which a cross-validation
    RMSE against observations also contains.
    """
    ok = _valid(mean, truth)
    mse_map = float(np.mean((np.asarray(mean, float)[ok] - np.asarray(truth, float)[ok]) ** 2))
    o = np.asarray(observed, float)
    t = np.asarray(truth_at_obs, float)
    good = np.isfinite(o) & np.isfinite(t)
    mse_obs = float(np.mean((o[good] - t[good]) ** 2)) if good.any() else 0.0
    return float(np.sqrt(mse_map + mse_obs))


def cv_ratio(cv_rmse: float, true_error: float) -> float:
    """Reported CV RMSE divided by the true error of a new observation."""
    return float(cv_rmse) / float(true_error)


def zone_errors(
    reported: pd.DataFrame, truth: pd.DataFrame, keys: Sequence[str] = ("zone", "interval")
) -> pd.DataFrame:
    """Join reported and true zone totals and add the figures per zone and interval.

    ``reported`` needs ``total, lower, upper``; ``truth`` needs ``true_total``;
    both keyed by ``keys``. Adds ``rel_error = (total - true) / true``,
    ``inside = lower <= true <= upper`` and ``half_width = (upper - lower) / 2 / true``.
    """
    j = reported.merge(truth, on=list(keys), how="inner", validate="one_to_one")
    j["rel_error"] = (j["total"] - j["true_total"]) / j["true_total"]
    j["inside"] = (j["lower"] <= j["true_total"]) & (j["true_total"] <= j["upper"])
    j["half_width"] = (j["upper"] - j["lower"]) / 2.0 / j["true_total"]
    return j


def range_coverage(table: pd.DataFrame) -> float:
    """Share of zone x interval rows whose true total lies inside the reported range."""
    return float(table["inside"].mean())


def half_widths(table: pd.DataFrame) -> float:
    """Median relative half-width of the reported ranges."""
    return float(table["half_width"].median())
