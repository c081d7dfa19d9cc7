"""Layers of a soil column: their arithmetic and the training tables of the layered model.

Stocks of any interval ``[top, bottom]`` are integrals of layer stocks, the density being
uniform within each layer (:func:`integrate_layers`); :func:`thaw_split` divides a column
at its active-layer base; :func:`training_layers` and :func:`layers_from_cumulative` make
the long layer tables :class:`mapping.depth_model.LayeredDepthModel` learns from.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from mapping.depths import compute_stocks
from mapping.exceptions import ModelError
from mapping.units import DEFAULT_BREAKS

__all__ = [
    "DEFAULT_BREAKS",
    "check_breaks",
    "integrate_layers",
    "layer_intervals",
    "layers_from_cumulative",
    "thaw_parts",
    "thaw_split",
    "training_layers",
]


# --------------------------------------------------------------------------- layer arithmetic
def check_breaks(breaks: ArrayLike) -> NDArray:
    """Layer boundaries as a float array; raise ``ModelError`` unless ``0 = b0 < b1 < ...``."""
    b = np.asarray(breaks, dtype=float)
    if b.ndim != 1 or b.size < 2 or b[0] != 0.0 or not np.all(np.diff(b) > 0):
        raise ModelError(
            f"layer breaks must start at 0 cm and increase strictly, got {list(np.ravel(b))}"
        )
    return b


def layer_intervals(breaks: Sequence[float] = DEFAULT_BREAKS) -> list[tuple[float, float]]:
    """The layers ``[(b0, b1), (b1, b2), ...]`` of a break list (cm)."""
    b = check_breaks(breaks)
    return [(float(a), float(c)) for a, c in itertools.pairwise(b)]


def integrate_layers(
    breaks: ArrayLike, layer_stocks: ArrayLike, top: ArrayLike, bottom: ArrayLike
) -> NDArray:
    """Stock between ``top`` and ``bottom`` from layer stocks, density uniform within a layer.

    Parameters
    ----------
    breaks
        ``L + 1`` layer boundaries (cm), from 0.
    layer_stocks
        ``(..., L)`` stocks of the layers (kg m-2), ``>= 0``.
    top, bottom
        Interval bounds (cm), scalars or arrays broadcasting against
        ``layer_stocks[..., 0]``; ``0 <= top <= bottom <= breaks[-1]``.

    Returns
    -------
    ndarray
        ``(...)`` stocks. A layer counts with the share of its thickness inside
        the interval, so ``S(a, b) + S(b, c) = S(a, c)`` (to rounding) and
        ``S(0, d)`` never decreases with ``d``. Layers outside the interval do
        not count, even if their stock is NaN.

    Examples
    --------
    >>> float(integrate_layers([0, 30, 100], [6.0, 7.0], 0, 65))  # 6 + 7 * 35 / 70
    9.5
    """
    b = check_breaks(breaks)
    s = np.asarray(layer_stocks, dtype=float)
    if s.shape[-1] != b.size - 1:
        raise ModelError(f"layer_stocks has {s.shape[-1]} layers, breaks define {b.size - 1}")
    t = np.asarray(top, dtype=float)
    d = np.asarray(bottom, dtype=float)
    if np.any((t < 0) | (d < t) | (d > b[-1])):
        raise ModelError(
            f"intervals must satisfy 0 <= top <= bottom <= {b[-1]:g} cm (the deepest layer)"
        )
    th = np.diff(b)
    lo = np.maximum(t[..., None], b[:-1])
    hi = np.minimum(d[..., None], b[1:])
    frac = np.clip(hi - lo, 0.0, None) / th
    return np.where(frac > 0, s * frac, 0.0).sum(axis=-1)


def thaw_split(
    breaks: Sequence[float],
    layer_stocks: ArrayLike,
    active_layer_cm: ArrayLike,
    max_depth: float = 300.0,
) -> tuple[NDArray, NDArray]:
    """Seasonally thawed and perennially frozen storage within ``0-max_depth`` cm.

    Parameters
    ----------
    breaks
        Layer boundaries (cm); ``max_depth`` must not exceed the deepest.
    layer_stocks
        ``(..., L)`` layer stocks (kg m-2), e.g. one Monte Carlo realisation per
        leading index.
    active_layer_cm
        Active-layer thickness (cm) per cell, broadcasting against
        ``layer_stocks[..., 0]``. Values ``>= max_depth`` make the whole column
        thawed (no near-surface permafrost, or a talik); ``0`` makes it all frozen;
        NaN gives NaN in both outputs.

    Returns
    -------
    thawed, frozen : ndarray
        Stock above the active-layer base and below it, down to ``max_depth``.
        ``frozen = total - thawed`` with ``total`` the ``0-max_depth`` stock, so
        ``thawed + frozen = total`` to rounding and both are ``>= 0``.

    Examples
    --------
    >>> th, fr = thaw_split([0, 30, 100, 300], [6.0, 7.0, 10.0], 65.0)
    >>> float(th), float(fr)
    (9.5, 13.5)
    """
    alt = np.asarray(active_layer_cm, dtype=float)
    s = np.asarray(layer_stocks, dtype=float)
    missing = np.isnan(alt)
    depth = np.clip(np.where(missing, 0.0, alt), 0.0, max_depth)
    total = integrate_layers(breaks, s, 0.0, max_depth)
    thawed = integrate_layers(breaks, s, 0.0, depth)
    # termwise smaller sums in the same order round to smaller values: frozen >= 0
    frozen = total - thawed
    nan = np.broadcast_to(missing, thawed.shape)
    return np.where(nan, np.nan, thawed), np.where(nan, np.nan, frozen)


def thaw_parts(
    breaks: Sequence[float],
    layer_stocks: ArrayLike,
    active_layer_cm: ArrayLike,
    anchors: Sequence[float],
) -> NDArray:
    """The thawed stock as parts of the cumulative stocks ``S(0, d)`` at ``anchors``.

    Where the active-layer base ``a`` lies between two anchors ``d' <= a <= d`` (``d' = 0``
    above the first), the thawed stock ``S(0, a)`` is ``(1 - t) S(0, d') + t S(0, d)`` with
    ``t`` from the column's own stocks; the two terms are its parts at ``d'`` and ``d``, every
    other part is 0. A realization of each ``S(0, d)`` then carries the thawed stock along
    with it (:func:`mapping.run.layered` scales a zone's parts by its Monte Carlo totals).

    Parameters
    ----------
    breaks, layer_stocks
        As :func:`thaw_split`.
    active_layer_cm
        Active-layer thickness (cm) per column; clipped to ``0-anchors[-1]`` (deeper: the
        whole column to the last anchor is thawed); NaN gives NaN parts.
    anchors
        Increasing depths (cm), ``0 < anchors[0]``, ``anchors[-1]`` at most the deepest break.

    Returns
    -------
    ndarray
        ``(..., K)`` parts (kg m-2), ``>= 0``, summing to the thawed stock of
        :func:`thaw_split` with ``max_depth = anchors[-1]``.

    Examples
    --------
    >>> parts = thaw_parts([0, 30, 100, 300], [6.0, 7.0, 10.0], 65.0, [30, 100, 300])
    >>> [round(float(v), 6) for v in parts]  # 9.5 = 0.5 * S(0-30) + 0.5 * S(0-100)
    [3.0, 6.5, 0.0]
    """
    d = np.asarray(anchors, dtype=float)
    b = check_breaks(breaks)
    if d.ndim != 1 or d.size == 0 or d[0] <= 0 or np.any(np.diff(d) <= 0) or d[-1] > b[-1]:
        raise ModelError(
            f"anchors must increase from above 0 to at most {b[-1]:g} cm, got {list(d)}"
        )
    s = np.asarray(layer_stocks, dtype=float)
    alt = np.asarray(active_layer_cm, dtype=float)
    missing = np.isnan(alt)
    depth = np.clip(np.where(missing, 0.0, alt), 0.0, d[-1])
    cum = np.stack([integrate_layers(b, s, 0.0, v) for v in d], axis=-1)  # (..., K)
    thawed = integrate_layers(b, s, 0.0, depth)
    j = np.broadcast_to(np.searchsorted(d, depth, side="left"), thawed.shape)
    hi = np.take_along_axis(cum, j[..., None], axis=-1)[..., 0]
    lo = np.where(j > 0, np.take_along_axis(cum, np.maximum(j - 1, 0)[..., None], -1)[..., 0], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(np.where(hi > lo, (thawed - lo) / (hi - lo), 1.0), 0.0, 1.0)
    k = np.arange(d.size)
    parts = np.where(k == j[..., None], (t * hi)[..., None], 0.0)
    parts = parts + np.where(k == (j - 1)[..., None], ((1.0 - t) * lo)[..., None], 0.0)
    nan = np.broadcast_to(missing, thawed.shape)
    return np.where(nan[..., None], np.nan, parts)


# --------------------------------------------------------------------------- training tables
def training_layers(
    horizons: pd.DataFrame, breaks: Sequence[float] = DEFAULT_BREAKS, **stock_options: Any
) -> pd.DataFrame:
    """Harmonised layer stocks of every profile, for fitting :class:`LayeredDepthModel`.

    Runs :func:`mapping.depths.compute_stocks` on the layers of ``breaks``
    (equal-area spline by default), so a profile contributes every layer it
    covers completely.

    Parameters
    ----------
    horizons
        Horizon table with canonical columns.
    breaks
        Layer boundaries (cm).
    **stock_options
        Passed to :func:`~mapping.depths.compute_stocks` (``method``, ``lam``,
        ``tolerance_cm``, ``bulk_density_ptf``, ``source``, ``on_invalid``).

    Returns
    -------
    pandas.DataFrame
        The stock table (``profile_id, lon, lat, top_cm, bottom_cm,
        soc_stock_kg_m2, ...``) with one row per profile and layer, plus
        ``density_kg_m3`` (mean density of the layer).
    """
    res = compute_stocks(horizons, layer_intervals(breaks), **stock_options)
    out = res.stocks.copy()
    out["density_kg_m3"] = out["soc_stock_kg_m2"] * 100.0 / (out["bottom_cm"] - out["top_cm"])
    return out


def layers_from_cumulative(stocks: pd.DataFrame, value: str = "soc_stock_kg_m2") -> pd.DataFrame:
    """Layer stocks from cumulative ones: ``S(d_i, d_j) = S(0, d_j) - S(0, d_i)``.

    For stock tables with only cumulative intervals from 0 cm (``0-30, 0-100,
    ...``), one row per profile and consecutive pair of its depths; the first
    layer is the shallowest interval itself. Other columns are taken from the
    deeper interval's row. Layers with a stock ``<= 0`` are dropped (a log
    model cannot use them) with a warning.
    """
    cum = stocks[stocks["top_cm"] == 0].sort_values(["profile_id", "bottom_cm"], kind="stable")
    prev_bottom = cum.groupby("profile_id", sort=False)["bottom_cm"].shift(1)
    prev_value = cum.groupby("profile_id", sort=False)[value].shift(1)
    out = cum.copy()
    out["top_cm"] = prev_bottom.fillna(0.0).to_numpy()
    out[value] = (cum[value] - prev_value.fillna(0.0)).to_numpy()
    bad = out[value] <= 0
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} layer(s) with a stock <= 0 left out (first: profile "
            f"{out.loc[bad, 'profile_id'].iloc[0]!r})",
            UserWarning,
            stacklevel=2,
        )
    out = out[~bad].reset_index(drop=True)
    out["density_kg_m3"] = out[value] * 100.0 / (out["bottom_cm"] - out["top_cm"])
    return out
