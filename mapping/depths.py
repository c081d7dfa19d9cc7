"""Profile stocks at standard depth intervals.

From a checked horizon table to SOC (and total-nitrogen) stocks per profile and
depth interval, in kg m⁻²:

1. Missing bulk densities are filled by a pedotransfer function
   (:mod:`mapping.bulk_density`) and flagged.
2. Each horizon's carbon density, kg C m⁻³, is
   ``SOC[g/kg] x BD[g/cm³] x (1 - CF/100)``; its stock is that density times
   its thickness in m (``x thickness[cm] / 100``).
3. Horizons that share a depth range (cryoturbated pockets and tongues drawn on
   the pedon face) are combined by area share into flat layers: the density of
   a layer is the area-weighted mean of the densities of the horizons that
   cover it.
4. The layer densities are harmonised to the requested intervals by a
   mass-preserving equal-area quadratic spline (Bishop et al. 1999) or by
   overlap weighting, and integrated over each interval the profile covers.

The arithmetic, the spline and the validity rules are documented in
``docs/stocks.md``.

References
----------
Bishop, T. F. A., McBratney, A. B. & Laslett, G. M. (1999). Modelling soil
attribute depth functions with equal-area quadratic smoothing splines.
*Geoderma* 91, 27-45. doi:10.1016/S0016-7061(99)00003-8.

Malone, B. P., McBratney, A. B., Minasny, B. & Laslett, G. M. (2009). Mapping
continuous depth functions of soil carbon storage and available water
capacity. *Geoderma* 154, 138-152. doi:10.1016/j.geoderma.2009.10.007.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping.bulk_density import BulkDensityPTF, get_ptf, impute_bulk_density
from mapping.exceptions import ConfigError, OutputError
from mapping.io import atomic_path, write_table
from mapping.profiles import (
    AREA_TOLERANCE_PCT,
    CANONICAL,
    LINE,
    PROFILE_ID,
    check_horizons,
    layer_table,
)
from mapping.units import format_interval

METHODS = ("spline", "linear")
STOCK_FILES = ("stocks.csv", "interval_counts.csv", "invalid_profiles.csv")


@dataclass(frozen=True)
class StocksResult:
    """Output of :func:`compute_stocks`.

    Attributes
    ----------
    stocks
        One row per profile and interval the profile covers: ``profile_id, lon,
        lat, top_cm, bottom_cm, soc_stock_kg_m2`` (``tn_stock_kg_m2, cn_ratio``
        when nitrogen is given), ``bd_imputed`` (horizons in the interval whose
        bulk density was estimated), ``n_horizons`` (horizons in the interval),
        ``method``, ``depth_reached_cm``, then carried profile-level columns.
    counts
        ``top_cm, bottom_cm, interval, n_profiles``: profiles serving each interval, then
        the profiles left out and why: ``n_start_below`` (first horizon starts below the
        interval's top), ``n_end_above`` (last horizon ends above its bottom, no lithic
        contact reached), and ``n_on_rock``: profiles among ``n_profiles`` that end on a
        lithic contact above the interval's bottom (zero stock below the rock).
    invalid
        ``profile_id, lines, reason`` of the profiles dropped with
        ``on_invalid="skip"`` (empty otherwise).
    """

    stocks: pd.DataFrame
    counts: pd.DataFrame
    invalid: pd.DataFrame


# --------------------------------------------------------------------------- piecewise densities
@dataclass(frozen=True)
class Pieces:
    """Piecewise-polynomial density profiles of many profiles.

    Piece ``i`` of profile ``pid[i]`` spans ``[x0[i], x1[i]]`` (cm) and has the
    density ``scale[i] * max(c0 + c1 t + c2 t², 0)`` with ``t = x - x0[i]``.
    Coefficient arrays are ``(n_pieces, k)`` for ``k`` variables (carbon,
    nitrogen) fitted on the same layers.
    """

    pid: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    scale: np.ndarray

    def integrate(self, lo: np.ndarray, hi: np.ndarray, n_profiles: int) -> np.ndarray:
        """Integral of each profile's density from ``lo[p]`` to ``hi[p]`` (cm x density).

        Returns an ``(n_profiles, k)`` array; ``lo``/``hi`` are per profile.
        """
        width = self.x1 - self.x0
        t0 = np.clip(lo[self.pid] - self.x0, 0.0, width)[:, None]
        t1 = np.clip(hi[self.pid] - self.x0, 0.0, width)[:, None]
        t0, t1 = np.broadcast_arrays(t0, t1)
        val = clipped_quadratic_integral(self.c0, self.c1, self.c2, t0, t1) * self.scale
        out = np.zeros((n_profiles, self.c0.shape[1]))
        for j in range(out.shape[1]):
            out[:, j] = np.bincount(self.pid, weights=val[:, j], minlength=n_profiles)
        return out

    def evaluate(self, pid: int, depth: np.ndarray, var: int = 0) -> np.ndarray:
        """Density of one profile at the given depths (NaN outside its pieces)."""
        depth = np.asarray(depth, dtype=float)
        out = np.full(depth.shape, np.nan)
        for i in np.flatnonzero(self.pid == pid):
            inside = (depth >= self.x0[i]) & (depth <= self.x1[i])
            t = depth[inside] - self.x0[i]
            q = self.c0[i, var] + self.c1[i, var] * t + self.c2[i, var] * t * t
            out[inside] = self.scale[i, var] * np.maximum(q, 0.0)
        return out


def clipped_quadratic_integral(
    c0: np.ndarray | float,
    c1: np.ndarray | float,
    c2: np.ndarray | float,
    t0: np.ndarray | float,
    t1: np.ndarray | float,
) -> np.ndarray:
    """Exact ``∫ max(c0 + c1 t + c2 t², 0) dt`` from ``t0`` to ``t1``, elementwise.

    Negative parts of the polynomial count as zero: the clipping of the
    equal-area spline at ``vlow = 0`` (as in mpspline), integrated exactly
    instead of on a 1-cm grid.
    """
    c0, c1, c2, t0, t1 = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (c0, c1, c2, t0, t1))
    )
    r1 = np.full(c0.shape, np.nan)
    r2 = np.full(c0.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = c2 != 0
        disc = c1 * c1 - 4 * c2 * c0
        real = quad & (disc >= 0)
        q = -0.5 * (c1 + np.where(c1 >= 0, 1.0, -1.0) * np.sqrt(np.where(real, disc, 0.0)))
        r1 = np.where(real, q / c2, r1)
        r2 = np.where(real & (q != 0), c0 / q, r2)
        lin = ~quad & (c1 != 0)
        r1 = np.where(lin, -c0 / c1, r1)
    lo, hi = np.minimum(t0, t1), t1

    def clamp(r: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(r), hi, np.clip(r, lo, hi))

    pts = np.sort(np.stack([lo, clamp(r1), clamp(r2), hi]), axis=0)

    def prim(t: np.ndarray) -> np.ndarray:
        return t * (c0 + t * (c1 / 2 + t * c2 / 3))

    total = np.zeros(c0.shape)
    for a, b in itertools.pairwise(pts):
        mid = (a + b) / 2
        pos = (c0 + mid * (c1 + mid * c2)) > 0
        total += np.where(pos & (b > a), prim(b) - prim(a), 0.0)
    return total


def fit_ea_spline(
    top: np.ndarray, bottom: np.ndarray, values: np.ndarray, lam: float = 0.1
) -> dict[str, np.ndarray]:
    """Fit equal-area quadratic smoothing splines to many profiles at once.

    The spline of Bishop et al. (1999) as implemented in mpspline2's
    ``mpspline_est1`` (and ithir's ``ea_spline``): quadratic within each
    layer, linear across gaps, continuous with a continuous first derivative,
    and zero slope at the top of the first and the bottom of the last layer.
    It minimises ``(1/n) Σ (y_i - mean_i(f))² + lam ∫ f'(x)² dx`` (depths in cm).

    Parameters
    ----------
    top, bottom
        ``(P, n)`` layer bounds of ``P`` profiles with ``n`` layers each,
        sorted and not overlapping (gaps allowed), ``n >= 1``.
    values
        ``(P, n)`` or ``(P, n, k)`` layer means.
    lam
        Smoothing parameter ``λ``; mpspline's default 0.1.

    Returns
    -------
    dict
        ``s_bar`` (fitted layer means), ``alfa``, ``b0``, ``b1``, ``gamma``,
        each ``(P, n[, k])``: on layer ``i``, ``f(x) = alfa + b0 (x - top) +
        gamma (x - top)²``; ``b0``/``b1`` are the slopes at its top and bottom.
        In the gap after layer ``i`` ``f`` is linear with slope ``b1[i]``.
    """
    u = np.asarray(top, dtype=float)
    v = np.asarray(bottom, dtype=float)
    y = np.asarray(values, dtype=float)
    squeeze = y.ndim == 2
    if squeeze:
        y = y[..., None]
    p, n, _ = y.shape
    th = v - u
    if n == 1:
        zero = np.zeros_like(y)
        out = {"s_bar": y, "alfa": y, "b0": zero, "b1": zero, "gamma": zero}
    else:
        gp = u[:, 1:] - v[:, :-1]
        r = np.zeros((p, n - 1, n - 1))
        i = np.arange(n - 1)
        r[:, i, i] = 2 * (th[:, :-1] + th[:, 1:]) + 6 * gp
        if n > 2:
            r[:, i[:-1], i[:-1] + 1] = th[:, 1:-1]
            r[:, i[:-1] + 1, i[:-1]] = th[:, 1:-1]
        q = np.zeros((n - 1, n))
        q[i, i] = -1.0
        q[i, i + 1] = 1.0
        rinv_q = np.linalg.solve(r, np.broadcast_to(q, (p, n - 1, n)))
        z = np.eye(n) + 6 * n * lam * (q.T @ rinv_q)
        s_bar = np.linalg.solve(z, y)
        b = 6 * rinv_q @ s_bar
        zrow = np.zeros((p, 1, y.shape[2]))
        b0 = np.concatenate([zrow, b], axis=1)
        b1 = np.concatenate([b, zrow], axis=1)
        t = th[..., None]
        gamma = (b1 - b0) / (2 * t)
        alfa = s_bar - b0 * t / 2 - gamma * t**2 / 3
        out = {"s_bar": s_bar, "alfa": alfa, "b0": b0, "b1": b1, "gamma": gamma}
    if squeeze:
        out = {key: val[..., 0] for key, val in out.items()}
    return out


def build_pieces(
    pid: np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    density: np.ndarray,
    method: str = "spline",
    lam: float = 0.1,
    *,
    preserve_mass: bool = True,
) -> Pieces:
    """Piecewise density profiles from layer densities.

    Parameters
    ----------
    pid
        Profile index ``0..P-1`` of each layer; layers sorted by ``pid`` then depth.
    top, bottom
        Layer bounds (cm); within a profile sorted and not overlapping.
    density
        ``(L,)`` or ``(L, k)`` layer mean densities (any unit per cm).
    method
        ``"spline"``: equal-area quadratic spline (:func:`fit_ea_spline`),
        negative values clipped to 0, then, with ``preserve_mass``, rescaled
        within each layer so that its integral equals the layer's stock.
        ``"linear"``: constant density within each layer.
        Both interpolate linearly across gaps between layers.
    lam
        Spline smoothing parameter.
    preserve_mass
        Rescale the clipped spline within each layer to the layer's mass.
    """
    pid = np.asarray(pid, dtype=np.int64)
    u = np.asarray(top, dtype=float)
    v = np.asarray(bottom, dtype=float)
    y = np.asarray(density, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    k = y.shape[1]
    n_prof = int(pid.max()) + 1 if len(pid) else 0
    counts = np.bincount(pid, minlength=n_prof)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])

    alfa = np.empty_like(y)
    b0 = np.zeros_like(y)
    b1 = np.zeros_like(y)
    gamma = np.zeros_like(y)
    if method == "linear":
        alfa[:] = y
    elif method == "spline":
        for n in np.unique(counts[counts > 0]):
            profs = np.flatnonzero(counts == n)
            idx = start[profs][:, None] + np.arange(n)
            fit = fit_ea_spline(u[idx], v[idx], y[idx], lam)
            alfa[idx], b0[idx], b1[idx], gamma[idx] = (
                fit["alfa"],
                fit["b0"],
                fit["b1"],
                fit["gamma"],
            )
    else:
        raise ConfigError(
            f"unknown harmonisation method {method!r}; choose one of: {', '.join(METHODS)}"
        )

    th = v - u
    scale = np.ones_like(y)
    if method == "spline" and preserve_mass:
        mass = y * th[:, None]
        got = clipped_quadratic_integral(alfa, b0, gamma, 0.0, th[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            # where clipping removed more than half of a layer's mass the spline
            # shape is meaningless there: fall back to the layer mean
            flat = (got < 0.5 * mass) & (mass > 0)
            scale = np.where(mass > 0, mass / np.where(flat, 1.0, got), 0.0)
        alfa = np.where(flat, y, alfa)
        b0 = np.where(flat, 0.0, b0)
        gamma = np.where(flat, 0.0, gamma)
        scale = np.where(flat, 1.0, scale)

    # gaps between consecutive layers of the same profile
    nxt = np.arange(1, len(u))
    gap = (pid[nxt] == pid[nxt - 1]) & (u[nxt] > v[nxt - 1])
    g_after = nxt[gap] - 1  # layer above each gap
    g_len = (u[g_after + 1] - v[g_after])[:, None]
    if method == "spline":
        gc0 = alfa[g_after + 1] - b1[g_after] * g_len
        gc1 = b1[g_after]
    else:
        gc0 = y[g_after]
        gc1 = (y[g_after + 1] - y[g_after]) / g_len

    return Pieces(
        pid=np.concatenate([pid, pid[g_after]]),
        x0=np.concatenate([u, v[g_after]]),
        x1=np.concatenate([v, u[g_after + 1]]),
        c0=np.concatenate([alfa, gc0]),
        c1=np.concatenate([b0, gc1]),
        c2=np.concatenate([gamma, np.zeros((len(g_after), k))]),
        scale=np.concatenate([scale, np.ones((len(g_after), k))]),
    )


# --------------------------------------------------------------------------- stocks
def _check_intervals(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    if not intervals:
        raise ConfigError("at least one depth interval is needed")
    for iv in intervals:
        try:
            a, b = (float(x) for x in iv)
        except (TypeError, ValueError):
            raise ConfigError(f"depth interval {iv!r} is not a (top, bottom) pair") from None
        if not (0 <= a < b):
            raise ConfigError(f"depth interval {format_interval(a, b)}: need 0 <= top < bottom")
        out.append((a, b))
    return out


def compute_stocks(
    horizons: pd.DataFrame,
    intervals: Sequence[tuple[float, float]],
    method: str = "spline",
    lam: float = 0.1,
    tolerance_cm: float = 0.0,
    bulk_density_ptf: str | BulkDensityPTF = "default",
    source: str = "<table>",
    on_invalid: str = "error",
) -> StocksResult:
    """SOC (and nitrogen) stocks per profile and depth interval.

    Parameters
    ----------
    horizons
        Horizon table with canonical columns (:func:`mapping.profiles.read_horizons`).
    intervals
        ``(top, bottom)`` pairs in cm, cumulative (``(0, 100)``) or layered
        (``(30, 60)``), in output order.
    method
        ``"spline"`` (equal-area spline on carbon density) or ``"linear"``
        (overlap weighting).
    lam
        Spline smoothing parameter (cm-based, as in mpspline).
    tolerance_cm
        A profile serves an interval if its first horizon starts at most this
        far below the interval's top and its last horizon ends at most this far
        above the interval's bottom (or within this far of its lithic contact,
        ``lithic_contact_cm``: the soil ends on rock, whose stock is zero); gaps
        and overlaps up to this thickness are accepted. Nothing is extrapolated:
        a profile ending within the tolerance above the bottom is integrated to
        where it ends.
    bulk_density_ptf
        PTF name (:data:`mapping.bulk_density.PTFS`) for missing bulk densities.
    source
        Name of the table for messages.
    on_invalid
        ``"error"`` or ``"skip"``; see :func:`mapping.profiles.check_horizons`.

    Returns
    -------
    StocksResult

    Examples
    --------
    >>> h = pd.DataFrame({"profile_id": ["a"], "lon": [100.0], "lat": [70.0],
    ...                   "top_cm": [0], "bottom_cm": [30], "soc_pct": [2.0],
    ...                   "bulk_density_g_cm3": [1.2], "coarse_fraction_pct": [10.0]})
    >>> compute_stocks(h, [(0, 30)]).stocks["soc_stock_kg_m2"].round(2).tolist()
    [6.48]
    """
    ivs = _check_intervals(intervals)
    _check_harmonisation(method, lam, tolerance_cm)
    ptf = get_ptf(bulk_density_ptf)
    valid, invalid = check_horizons(horizons, source, on_invalid, tolerance_cm=tolerance_cm)
    h = _with_densities(valid, ptf)
    profiles = _harmonised_profiles(h, method, lam, float(tolerance_cm))
    frames = []
    counts = []
    for a, b in ivs:
        frame, count = _interval_stocks(profiles, a, b)
        frames.append(frame)
        counts.append(count)

    stocks = pd.concat(frames, ignore_index=True).sort_values("_pid", kind="stable")
    carried = _carried_columns(h)
    keep = [c for c in carried.columns if c not in stocks.columns]
    if keep:
        stocks = stocks.join(carried[keep], on="_pid")
    stocks = stocks.drop(columns="_pid").reset_index(drop=True)
    return StocksResult(
        stocks=stocks,
        counts=pd.DataFrame(counts, columns=COUNT_COLUMNS),
        invalid=invalid,
    )


def _check_harmonisation(method: str, lam: float, tolerance_cm: float) -> None:
    if method not in METHODS:
        raise ConfigError(
            f"unknown harmonisation method {method!r}; choose one of: {', '.join(METHODS)}"
        )
    if not lam > 0:
        raise ConfigError(f"spline lambda must be > 0 (got {lam!r})")
    if not tolerance_cm >= 0:
        raise ConfigError(f"depth tolerance must be >= 0 cm (got {tolerance_cm!r})")


def _with_densities(h: pd.DataFrame, ptf: BulkDensityPTF) -> pd.DataFrame:
    """Valid horizons with their profile index, row, carbon (and nitrogen) density."""
    bd, imputed = impute_bulk_density(h["soc_pct"], h["bulk_density_g_cm3"], ptf)
    fine = 1.0 - h["coarse_fraction_pct"].to_numpy() / 100.0
    h = h.assign(
        _pid=pd.factorize(h[PROFILE_ID])[0],
        _row=np.arange(len(h)),
        _rho_c=h["soc_g_kg"].to_numpy() * bd * fine,  # g/kg x g/cm3 = kg C m-3
        _imputed=imputed,
    )
    if "n_g_kg" in h.columns:
        h["_rho_n"] = h["n_g_kg"].to_numpy() * bd * fine
    return h


def _layers(h: pd.DataFrame, dens_cols: list[str]) -> pd.DataFrame:
    """Non-overlapping layers per profile with the area-weighted densities of their horizons."""
    layers, members = layer_table(h)
    mem = members.merge(h[["_row", "horizon_area_pct", *dens_cols]], on="_row")
    total = mem.groupby("_layer")["horizon_area_pct"].transform("sum")
    # shares summing to 100 % (within the checks' tolerance) or more (a tolerated thin
    # overlap: the mean of the horizons) are normalised; a share of the face that no
    # horizon covers (a tolerated thin gap in one column) holds no carbon, as nothing is
    # extrapolated: a 30 % O horizon must not stand for the whole face
    w = mem["horizon_area_pct"] / np.where(total >= 100 - AREA_TOLERANCE_PCT, total, 100.0)
    for c in dens_cols:
        mem[c] = mem[c] * w
    dens = mem.groupby("_layer")[dens_cols].sum()
    if "_rho_n" in dens_cols:
        # nitrogen unknown in any horizon of a layer (one pocket of a cryoturbated face)
        # leaves the layer's nitrogen unknown: not 0, not a partial sum
        unknown = mem["_rho_n"].isna().groupby(mem["_layer"]).any()
        dens.loc[unknown[unknown].index, "_rho_n"] = np.nan
    layers = layers.join(dens, on="_layer", how="inner")  # drops tolerated gaps
    return layers.sort_values(["_pid", "u"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class _HarmonisedProfiles:
    """Per-profile depth functions and facts that every interval's stocks are read from."""

    pieces: Pieces  # the fitted depth functions
    prof: pd.DataFrame  # profile_id, lon, lat per profile index
    top0: np.ndarray  # top of the first layer
    reached: np.ndarray  # bottom of the last layer
    depth_ok: np.ndarray  # depth a profile serves to (infinite when it ends on rock)
    n_ok: np.ndarray  # nitrogen known in every layer
    horizons: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # pid, top, bottom, imputed
    has_n: bool
    method: str
    tol: float

    @property
    def n(self) -> int:
        return len(self.top0)


def _harmonised_profiles(
    h: pd.DataFrame, method: str, lam: float, tol: float
) -> _HarmonisedProfiles:
    has_n = "n_g_kg" in h.columns
    dens_cols = ["_rho_c", "_rho_n"] if has_n else ["_rho_c"]
    layers = _layers(h, dens_cols)

    n_prof = int(h["_pid"].max()) + 1
    pid = layers["_pid"].to_numpy()
    top0 = np.full(n_prof, np.inf)
    np.minimum.at(top0, pid, layers["u"].to_numpy())
    reached = np.full(n_prof, -np.inf)
    np.maximum.at(reached, pid, layers["v"].to_numpy())

    y = layers[dens_cols].to_numpy()
    n_ok = np.ones(n_prof, dtype=bool)
    if has_n:
        missing_n = np.isnan(y[:, 1])
        n_ok[np.unique(pid[missing_n])] = False
        y[:, 1] = np.where(missing_n, 0.0, y[:, 1])  # profile reported as NaN below
    pieces = build_pieces(pid, layers["u"].to_numpy(), layers["v"].to_numpy(), y, method, lam)

    prof = h.groupby("_pid", sort=True).agg(
        profile_id=(PROFILE_ID, "first"), lon=("lon", "first"), lat=("lat", "first")
    )
    on_rock = _ends_on_rock(h, n_prof, reached, tol)
    hp, ht, hb, himp = (h[c].to_numpy() for c in ("_pid", "top_cm", "bottom_cm", "_imputed"))
    return _HarmonisedProfiles(
        pieces=pieces,
        prof=prof,
        top0=top0,
        reached=reached,
        depth_ok=np.where(on_rock, np.inf, reached),  # below a lithic contact the stock is zero
        n_ok=n_ok,
        horizons=(hp, ht, hb, himp),
        has_n=has_n,
        method=method,
        tol=tol,
    )


def _interval_stocks(
    p: _HarmonisedProfiles, a: float, b: float
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Stocks of the profiles that serve ``a``-``b`` cm, and the interval's counts row."""
    tol, n_prof, reached = p.tol, p.n, p.reached
    hp, ht, hb, himp = p.horizons
    starts = p.top0 <= a + tol
    served = starts & (p.depth_ok >= b - tol)
    lo = np.maximum(p.top0, a)
    hi = np.maximum(np.minimum(reached, b), lo)  # rock above the interval: zero stock
    # a tolerance as thick as the interval must not serve a profile with no horizon in it
    # (its stock would be a measured-looking 0); on rock above the interval, 0 is right
    served &= (hi > lo) | (np.isinf(p.depth_ok) & (reached <= a))
    integ = p.pieces.integrate(lo, hi, n_prof) / 100.0  # density x cm -> kg m-2
    overlap = (np.minimum(hb, b) - np.maximum(ht, a)) > 0
    n_hor = np.bincount(hp, weights=overlap, minlength=n_prof).astype(int)
    n_imp = np.bincount(hp, weights=overlap & himp, minlength=n_prof).astype(int)
    sel = np.flatnonzero(served)
    f = pd.DataFrame(
        {
            PROFILE_ID: p.prof["profile_id"].to_numpy()[sel],
            "lon": p.prof["lon"].to_numpy()[sel],
            "lat": p.prof["lat"].to_numpy()[sel],
            "top_cm": a,
            "bottom_cm": b,
            "soc_stock_kg_m2": integ[sel, 0],
        }
    )
    if p.has_n:
        tn = np.where(p.n_ok, integ[:, 1], np.nan)[sel]
        f["tn_stock_kg_m2"] = tn
        with np.errstate(divide="ignore", invalid="ignore"):
            f["cn_ratio"] = np.where(tn > 0, integ[sel, 0] / tn, np.nan)
    f["bd_imputed"] = n_imp[sel]
    f["n_horizons"] = n_hor[sel]
    f["method"] = p.method
    f["depth_reached_cm"] = reached[sel]
    f["_pid"] = sel
    count = {
        "top_cm": a,
        "bottom_cm": b,
        "interval": format_interval(a, b),
        "n_profiles": len(sel),
        "n_start_below": int((~starts).sum()),
        "n_end_above": int((starts & ~served).sum()),
        "n_on_rock": int((served & (reached < b - tol)).sum()),
    }
    return f, count


COUNT_COLUMNS = ["top_cm", "bottom_cm", "interval", "n_profiles", "n_start_below", "n_end_above",
                 "n_on_rock"]  # fmt: skip
"""Columns of :attr:`StocksResult.counts` (``interval_counts.csv``)."""


def _ends_on_rock(h: pd.DataFrame, n_prof: int, reached: np.ndarray, tol: float) -> np.ndarray:
    """Profiles whose horizons reach their lithic contact (within ``tol``)."""
    if "lithic_contact_cm" not in h.columns:
        return np.zeros(n_prof, dtype=bool)
    rock = np.full(n_prof, np.nan)
    given = h["lithic_contact_cm"].notna().to_numpy()
    rock[h["_pid"].to_numpy()[given]] = h["lithic_contact_cm"].to_numpy()[given]
    with np.errstate(invalid="ignore"):
        return np.isfinite(rock) & (reached >= rock - tol)


def left_out_text(row: Any) -> str:
    """Why profiles are left out of one interval, e.g. ``"15 end above 30 cm"`` ("" if none)."""
    parts = []
    if getattr(row, "n_end_above", 0):
        parts.append(f"{int(row.n_end_above)} end above {row.bottom_cm:g} cm")
    if getattr(row, "n_start_below", 0):
        parts.append(f"{int(row.n_start_below)} start below {row.top_cm:g} cm")
    return ", ".join(parts)


def _carried_columns(h: pd.DataFrame) -> pd.DataFrame:
    """Extra columns that are constant within every profile, one row per ``_pid``."""
    extra = [
        c for c in h.columns if c not in CANONICAL and not str(c).startswith("_") and c != LINE
    ]
    if not extra:
        return pd.DataFrame(index=pd.RangeIndex(0))
    g = h.groupby("_pid", sort=True)[extra]
    constant = g.nunique(dropna=False).max(axis=0) <= 1
    cols = [c for c in extra if constant[c]]
    return g.first()[cols] if cols else pd.DataFrame(index=pd.RangeIndex(0))


def write_stocks(result: StocksResult, out: str | os.PathLike[str]) -> Path:
    """Write ``stocks.csv``, ``interval_counts.csv`` (and ``invalid_profiles.csv``) into a folder.

    The folder is built under a temporary name and renamed into place, so it
    appears complete or not at all. An existing folder is replaced only if it
    holds nothing but files this function writes.
    """

    dest = Path(out)
    if dest.exists():
        if not dest.is_dir():
            raise OutputError(f"{dest}: exists and is not a folder")
        foreign = sorted(p.name for p in dest.iterdir() if p.name not in STOCK_FILES)
        if foreign:
            raise OutputError(
                f"{dest}: folder exists and holds other files ({foreign[0]}, ...); choose a new output folder"
            )
    with atomic_path(dest, is_dir=True) as tmp:
        write_table(result.stocks, tmp / "stocks.csv")
        write_table(result.counts, tmp / "interval_counts.csv")
        if len(result.invalid):
            write_table(result.invalid, tmp / "invalid_profiles.csv")
    return dest
