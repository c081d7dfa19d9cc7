"""Where to sample next: new profile sites that shrink the ranges of chosen zone totals most.

The error of a zone total ``T = sum_c a_c d_c`` (``a`` cell area, ``d`` density) is the
error the Monte Carlo of :mod:`mapping.uncertainty` draws, linearised: on the model's scale
(log scale for log models) a cell's error is ``e_c = sigma_g G + l_c Z_c`` with ``G`` one
standard normal shared by all cells (the error of the regional level, ``common_sd``), ``Z`` a
unit Gaussian field with the residual variogram's correlation ``rho`` and
``l_c² = v_c - sigma_g²`` the cell's own part of its calibrated variance ``v_c``
(:mod:`mapping.calibration`: ``v = r(DI) (s2 - noise)``). The density error is
``m_c e_c`` for log models (``e_c`` for others), so

    Var(T) = sigma_g² (sum_c a_c m_c)² + sum_{c,c'} a_c m_c l_c a_c' m_c' l_c' rho(h_cc').

A new profile at cell ``x`` does three things, and the design counts them all:

* **kriging**: it observes ``e_x`` plus measurement noise ``tau²`` (the error model's
  ``noise_var``, else the variogram's nugget), so every error correlated with it shrinks:
  the Gaussian update ``Var(T | y_x) = Var(T) - Cov(T, l Z_x)² / (l_x² + tau² + sigma_g²)``
  (jointly for all sites chosen). The shared error is not kriged: it is the trend's regional
  error that cross-validation sees after hundreds of profiles, so one more profile does not
  observe it; its variance is scaled by ``n0 / (n0 + k)`` after ``k`` new profiles (``n0``
  the run's profiles), and a site sees it as noise;
* **the trend's error where cells are dissimilar**: it is a training point in feature
  space, so the DI (:mod:`mapping.aoa`) of every cell whose covariates resemble it falls to at
  most their distance to it, and their calibrated variance falls with ``r(DI)``. Cells far
  away but alike in their covariates (the cold, remote, under-sampled land) gain as much as
  neighbours;
* **the training range**: a site beyond the box the training covariates span widens it, and
  the error model's range term (the variance it adds beyond that box) falls to that of each
  cell's distance to the wider box; a site inside the box leaves the term as it is.

Sites are chosen greedily: each step adds the reachable candidate with the largest predicted
drop of ``sum_t Var(T_t) / Var_now(T_t)`` over the target totals (equal weight to every
target's relative variance), then updates the DIs and the Gaussian conditioning. The sums
run over blocks of cells (at most ``max_blocks``, side well below the residual range) and a
sample of ``n_candidates`` reachable cells, so 200 sites over 10⁶ cells take minutes.

The reported reduction of a range is ``1 - sqrt(Var_after / Var_now)`` of the model above:
a prediction. It assumes the error model and the variogram hold where the new profiles fall
(stationarity of the residual's correlation, the DI-error relation seen in cross-validation)
and that the new profiles reach the intervals' bottoms (``docs/design.md``).

Pure NumPy/SciPy: :mod:`mapping.design_range` follows the range term as the training box
widens, and :mod:`mapping.run.design` reads a fitted run's maps and models into
:class:`IntervalErrors` and writes the sites and the targets' table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from scipy.spatial.distance import cdist

from mapping.design_range import RangeState, beyond_box, range_after, range_state, widen
from mapping.exceptions import InputError, InvalidParameter
from mapping.models.variogram import Variogram, unit_semivariance
from mapping.sampling_baselines import clhs_sites, coverage_sites
from mapping.units import ALL_ZONES, format_interval, parse_interval

__all__ = [
    "DesignResult",
    "IntervalErrors",
    "Target",
    "clhs_sites",
    "coverage_sites",
    "greedy_design",
    "parse_target",
]

#: Mean distance between two random points of a unit square (the diagonal of the block
#: correlation matrix uses it: a block's cells are correlated as at that distance).
_MEAN_SQUARE_DISTANCE = 0.5214
#: Candidates per batch when the range term after each is computed (memory: batch × cells).
_RANGE_CHUNK = 256


# =============================================================================== inputs
@dataclass(frozen=True)
class Target:
    """A zone total to shrink: zone name (or ``"all zones"``) and depth interval label."""

    zone: str
    interval: str

    @property
    def label(self) -> str:
        return f"{self.zone}/{self.interval}"


def parse_target(text: str, zones: Sequence[str], intervals: Sequence[str]) -> Target:
    """``"continuous/0-100"`` as a :class:`Target`; unknown zone or interval is an error.

    ``all/0-100`` and ``all zones/0-100`` name the sum over the zones.
    """
    zone, sep, interval = str(text).rpartition("/")
    if not sep or not zone or not interval:
        raise InputError(f"--target {text!r}: expected ZONE/INTERVAL such as continuous/0-100")
    try:
        label = format_interval(*parse_interval(interval.strip()))
    except (ValueError, InputError):
        raise InputError(f"--target {text!r}: {interval!r} is not a depth interval") from None
    if label not in intervals:
        raise InputError(
            f"--target {text!r}: interval {label} is not in the run ({', '.join(intervals)})"
        )
    z = zone.strip()
    if z.lower() in ("all", "all zones", "all_zones"):
        z = ALL_ZONES
    elif z not in zones:
        raise InputError(f"--target {text!r}: unknown zone {z!r} (zones: {', '.join(zones)}, all)")
    return Target(z, label)


@dataclass
class IntervalErrors:
    """The error model of one interval's map on the land cells (flat arrays, same order).

    Attributes
    ----------
    label
        Interval label (``"0-100"``).
    mean, std
        Mean density and its calibrated standard deviation (kg C m⁻²).
    variogram
        Residual variogram (its correlation is used).
    log
        The model works on log stocks (lognormal draws).
    common_sd
        Standard deviation of the error shared by every cell (model's scale).
    noise_var
        Variance of a new observation about its cell's value (model's scale).
    features
        Cells' covariates in the AOA's standardised, weighted space divided by its mean
        distance (so distances are DI units), or ``None`` (no DI effect).
    di
        Cells' DI (NaN: undefined), or ``None``.
    factor
        The error model's ``r(DI)`` (``g(DI)`` for the additive kind), vectorised, or ``None``.
    additive
        The error model is additive (``v = base + g``) rather than a ratio.
    di_undefined
        DI given to cells whose DI is NaN (the error model's largest DI plus one).
    group
        Per cell, its group of categories the training data never saw (0: every category
        seen; :meth:`mapping.aoa.AreaOfApplicability.design_space`), or ``None`` (all 0).
        Such cells have no DI until a profile of their class exists: only a site of the
        same group lowers their DI (to its distance over ``features``), and such a site
        lowers no one else's.
    range_var
        Per cell, the error model's range term in its variance (model's scale): the
        variance added because the cell lies beyond the training data's range
        (:meth:`mapping.calibration.ErrorModel.range_term`), or ``None`` (not modelled: the
        term then scales with ``factor`` like the rest of the variance).
    box
        ``(lower, upper)``: the training data's range in ``features`` (DI units), the box
        the extrapolation distance is measured to; with ``range_var``.
    range_coef, range_linear
        The range term's ``b`` and ``a``: ``max(b xd², a xd)`` for an extrapolation
        distance ``xd`` (DI units). A site beyond the box widens it, and a cell's term falls
        to ``min(max(b xd'², a xd'), range_var)`` with ``xd'`` its distance to the wider box.
    extra_sd
        Per cell, the sd of the trend's extrapolation error that every cell shares with
        its own standard normal (``uncertainty.shared: extrapolation``,
        :func:`mapping.calibration.extrapolation_sd`; model's scale), or ``None``. It is the
        part of the cell's variance above its in-domain level ``v - extra_sd²``: a site that
        lowers the DI of cells like it lowers it, and it adds across cells coherently.
    """

    label: str
    mean: np.ndarray
    std: np.ndarray
    variogram: Variogram
    log: bool
    common_sd: float = 0.0
    noise_var: float = 0.0
    features: np.ndarray | None = None
    di: np.ndarray | None = None
    factor: Any = None
    additive: bool = False
    di_undefined: float = np.inf
    extra_sd: np.ndarray | None = None
    group: np.ndarray | None = None
    range_var: np.ndarray | None = None
    box: tuple[np.ndarray, np.ndarray] | None = None
    range_coef: float = 0.0
    range_linear: float = 0.0

    def variance(self) -> np.ndarray:
        """Calibrated error variance of each cell on the model's scale."""
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log1p((self.std / self.mean) ** 2)
        return self.std**2

    def weight(self, area: np.ndarray) -> np.ndarray:
        """``d(density) / d(error)`` times the cell area: ``a m`` (log) or ``a``."""
        return area * self.mean if self.log else area


@dataclass
class DesignResult:
    """Sites chosen in order and the predicted variances of the targets after each.

    Attributes
    ----------
    cells
        Index (into the land cells given) of each site, in the order chosen.
    variance
        ``(n + 1, n_targets)``: predicted variance of each target total after 0, 1, ... n
        sites (model's linearisation; only ratios are used).
    targets
        The targets, in column order.
    gain_kriging, gain_dissimilarity
        Share of each step's predicted gain (summed relative variance) from the kriging
        update and from the lower DI.
    shared
        ``(n + 1, n_targets)``: the part of ``variance`` that is the error shared by every
        cell (the regional level, ``common_sd``), which no site observes: it falls only as
        ``n0 / (n0 + k)`` with the count of profiles, and with ``IntervalErrors.extra_sd``
        the shared extrapolation error, which sites lower where they lower the DI (empty
        when not computed).
    level
        ``(n + 1, n_targets)``: the regional level's part of ``shared`` alone, the error no
        site can lower (empty when not computed: then all of ``shared``).
    """

    cells: np.ndarray
    variance: np.ndarray
    targets: list[Target]
    gain_kriging: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gain_dissimilarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shared: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    level: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def range_factor(self) -> np.ndarray:
        """``sqrt(Var_after / Var_now)``: the predicted factor on each range, ``(n + 1, n_t)``."""
        v0 = self.variance[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.clip(self.variance / v0, 0.0, None))

    def shared_share(self) -> np.ndarray:
        """``shared_now / Var_now``: the share of each target's variance in the shared error,
        ``(n_targets,)`` (NaN when ``shared`` was not computed)."""
        if self.shared.shape != self.variance.shape:
            return np.full(self.variance.shape[1], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.shared[0] / self.variance[0]

    def floor_factor(self) -> np.ndarray:
        """``sqrt(level_after_n / Var_now)``: the range factor if the ``n`` sites removed
        every error but the regional level's, the most any ``n`` sites can shrink a range
        under the model, ``(n_targets,)`` (NaN when ``shared`` was not computed)."""
        fixed = self.level if self.level.shape == self.variance.shape else self.shared
        if fixed.shape != self.variance.shape:
            return np.full(self.variance.shape[1], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.clip(fixed[-1] / self.variance[0], 0.0, 1.0))


# =============================================================================== helpers
def _structured_correlation(v: Variogram, h: np.ndarray) -> np.ndarray:
    """``C(h) / C(0)`` without the nugget's delta at 0 (the correlation of distinct cells)."""
    if v.sill <= 0:
        return np.zeros_like(h)
    return v.psill / v.sill * (1.0 - unit_semivariance(v.model, h, v.range, v.nu))


def _blocks(
    rows: np.ndarray, cols: np.ndarray, max_blocks: int, group: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """Block id of every cell (compact 0..B-1), the number of blocks and the block side
    (cells); with ``group``, a block holds cells of one group only."""
    q = max(1, math.ceil(math.sqrt(len(rows) / max(max_blocks, 1))))
    ng = 1 if group is None or not len(group) else int(group.max()) + 1
    while True:
        key = (rows // q).astype(np.int64) * (int(cols.max()) // q + 1) + cols // q
        if ng > 1:
            assert group is not None
            key = key * ng + group
        uniq, inv = np.unique(key, return_inverse=True)
        if len(uniq) <= max_blocks:
            return inv.astype(np.int64), len(uniq), q
        q += 1


def _ensure_1d(a: Any, n: int, what: str) -> np.ndarray:
    out = np.asarray(a, dtype=float).ravel()
    if out.size != n:
        raise InvalidParameter(f"{what} has {out.size} values for {n} cells")
    return out


@dataclass
class _IntervalState:
    """Block and candidate quantities of one interval (see :func:`greedy_design`)."""

    errs: IntervalErrors
    targets: list[int]  # columns of the result
    L0: np.ndarray  # (T, B) sum of weight * own sd per block and target
    Q0: np.ndarray  # (T, B) (1 - rho within a block) * sum of (weight * own sd)^2
    U: np.ndarray  # (T,) sum of weight per target (the shared error's multiplier)
    R: np.ndarray  # (B, B) block correlation
    rho_xb: np.ndarray  # (C, B) candidate-block correlation
    vb0: np.ndarray  # (B,) block mean variance
    fb0: np.ndarray  # (B,) block r(DI)
    fb: np.ndarray  # current block r(DI)
    vx0: np.ndarray  # (C,) candidate variance
    fx0: np.ndarray  # (C,) candidate r(DI)
    fx: np.ndarray
    fxb: np.ndarray | None  # (C, B) r(distance candidate-block), float32
    fcand: np.ndarray | None  # (C, p) candidate features (DI units)
    tau2: float
    gcand: np.ndarray | None = None  # (C,) candidates' groups of unseen categories
    # the shared extrapolation error (IntervalErrors.extra_sd), else empty / inf:
    X0: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (T, B) sum w x per block
    vin_b: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,) in-domain variance
    vin_x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (C,) in-domain variance
    rs: RangeState | None = None  # the range term, when modelled apart from the DI's factor

    @property
    def extra(self) -> bool:
        return self.X0.size > 0


def _factor(errs: IntervalErrors, di: np.ndarray) -> np.ndarray:
    d = np.where(np.isfinite(di), di, errs.di_undefined)
    return np.asarray(errs.factor(d), dtype=float)


def _scaled_variance(
    st: _IntervalState, v0: np.ndarray, f0: np.ndarray, f: np.ndarray
) -> np.ndarray:
    """Variance after the DI fell from the one giving ``f0`` to the one giving ``f``."""
    if st.fxb is None:
        return v0
    if st.errs.additive:
        return np.maximum(v0 + (f - f0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f0 > 0, v0 * (f / f0), v0)


def _block_variance(st: _IntervalState) -> np.ndarray:
    """The blocks' mean variance after the sites so far: the DI's factor scales what is not
    the range term, which follows the box (:class:`RangeState`)."""
    if st.rs is None:
        return _scaled_variance(st, st.vb0, st.fb0, st.fb)
    return _scaled_variance(st, st.vb0 - st.rs.rtb0, st.fb0, st.fb) + st.rs.rtb


def _candidate_variance(st: _IntervalState) -> np.ndarray:
    """The candidates' variance after the sites so far (as :func:`_block_variance`)."""
    if st.rs is None:
        return _scaled_variance(st, st.vx0, st.fx0, st.fx)
    return _scaled_variance(st, st.vx0 - st.rs.rtx0, st.fx0, st.fx) + st.rs.rtx


def _own_part(v: np.ndarray, g2: float, cap: np.ndarray | float = np.inf) -> np.ndarray:
    """A cell's own sd: its variance (at most ``cap``, its in-domain level when the
    extrapolation error is shared) less the constant shared error's."""
    return np.sqrt(np.maximum(np.minimum(v, cap) - g2, 0.0))


def _extra_ratio(vb: np.ndarray, vin: np.ndarray, vb0: np.ndarray) -> np.ndarray:
    """``x_b' / x_b``: a block's extrapolation sd after its variance fell from ``vb0`` to
    ``vb`` (both above its in-domain level ``vin``); 0 where it had none."""
    x0 = np.maximum(vb0 - vin, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x0 > 0, np.sqrt(np.maximum(vb - vin, 0.0) / x0), 0.0)


# =============================================================================== the design
def _interval_state(
    e: IntervalErrors,
    cols_t: list[int],
    targets: Sequence[Target],
    weights: Mapping[str, np.ndarray],
    area: np.ndarray,
    block: np.ndarray,
    B: int,
    width: float,
    cand: np.ndarray,
    dist_bb: np.ndarray,
    dist_xb: np.ndarray,
    range_cells: int,
    rng: np.random.Generator,
) -> _IntervalState:
    """The starting state of one interval's targets: block sums of their errors, the
    blocks' and candidates' correlations and their DI factors."""
    v = e.variance()
    w_all = e.weight(area)
    g2 = float(e.common_sd) ** 2
    x = None
    if e.extra_sd is not None:
        x = np.nan_to_num(np.minimum(np.asarray(e.extra_sd, float), np.sqrt(np.maximum(v, 0))))
    v_in = v if x is None else v - x**2  # the in-domain level
    own = _own_part(v_in, g2)
    L0 = np.empty((len(cols_t), B))
    X0 = np.empty((len(cols_t), B)) if x is not None else np.zeros((0, 0))
    Q0 = np.empty((len(cols_t), B))
    U = np.empty(len(cols_t))
    # cells of a block are correlated as at the mean distance of two points of a square;
    # the rest of their variance (nugget, short range) is their own
    rho_in = float(
        _structured_correlation(e.variogram, np.array([_MEAN_SQUARE_DISTANCE * width]))[0]
    )
    for j, ti in enumerate(cols_t):
        wz = np.asarray(weights[targets[ti].zone], float) * w_all
        L0[j] = np.bincount(block, wz * own, B)
        Q0[j] = (1.0 - rho_in) * np.bincount(block, (wz * own) ** 2, B)
        U[j] = wz.sum()
        if x is not None:
            X0[j] = np.bincount(block, wz * x, B)
    wsum = np.bincount(block, w_all, B)
    wsafe = np.where(wsum > 0, wsum, 1.0)
    vb0 = np.bincount(block, w_all * v, B) / wsafe
    vin_b = np.bincount(block, w_all * v_in, B) / wsafe if x is not None else np.zeros(0)
    fxb = fcand = gcand = None
    fb0 = np.ones(B)
    fx0 = np.ones(cand.size)
    if e.factor is not None and e.features is not None and e.di is not None:
        F = np.asarray(e.features, float)
        fb_feat = np.column_stack(
            [np.bincount(block, w_all * F[:, k], B) / wsafe for k in range(F.shape[1])]
        )
        dib = np.bincount(block, w_all * np.where(np.isfinite(e.di), e.di, e.di_undefined), B)
        fb0 = _factor(e, dib / wsafe)
        fx0 = _factor(e, e.di[cand])
        fcand = F[cand]
        d_xb = cdist(fcand, fb_feat)
        if e.group is not None and np.any(e.group):
            # a block holds one group (_blocks): no distance holds between groups
            gcand = np.asarray(e.group, np.int64)[cand]
            gb = np.zeros(B, np.int64)
            gb[block] = e.group
            d_xb[gcand[:, None] != gb[None, :]] = np.inf
        fxb = _factor(e, np.where(np.isfinite(d_xb), d_xb, np.nan)).astype(np.float32)
        fxb[~np.isfinite(d_xb)] = np.inf
    rs = None
    if fxb is not None and range_cells > 0:
        rs = range_state(e, v, w_all, wsafe, block, B, cand, int(range_cells), rng)
    return _IntervalState(
        errs=e,
        targets=cols_t,
        L0=L0,
        Q0=Q0,
        U=U,
        R=_structured_correlation(e.variogram, dist_bb),
        rho_xb=_structured_correlation(e.variogram, dist_xb),
        vb0=vb0,
        fb0=fb0,
        fb=fb0.copy(),
        vx0=v[cand],
        fx0=fx0,
        fx=fx0.copy(),
        fxb=fxb,
        fcand=fcand,
        tau2=float(e.noise_var),
        gcand=gcand,
        X0=X0,
        vin_b=vin_b,
        vin_x=v_in[cand] if x is not None else np.zeros(0),
        rs=rs,
    )


def _di_gain(
    st: _IntervalState,
    vb: np.ndarray,
    g2: float,
    c_b: np.ndarray,
    wt: np.ndarray | None = None,
    X: np.ndarray | None = None,
) -> np.ndarray:
    """Gain of every candidate from lowering the DI of the blocks like it.

    Block factor ``min(f_b, f(d_xb))``, variance ``alpha f + beta'`` (``beta' = beta +
    g2``), own variance ``max(alpha f + beta, 0)``; the gain is ``sum_b (own_b^2 -
    own'_xb^2) c_b / own_b^2`` with ``c_b`` the blocks' weighted contribution to the
    targets' variances. With the extrapolation error shared, the own variance is capped at
    the block's in-domain level and the gain adds ``sum_t wt_t (X_t² - X'_t²)``, ``X_t``
    the targets' current shared extrapolation sd (``(T,)``), ``X'`` after the candidate.
    """
    assert st.fxb is not None
    cap = st.vin_b if st.extra else np.inf
    own2 = _own_part(vb, g2, cap) ** 2
    w_b = np.where(own2 > 0, c_b / np.where(own2 > 0, own2, 1.0), 0.0)
    ub0 = st.vb0 if st.rs is None else st.vb0 - st.rs.rtb0  # what the DI's factor scales
    if st.errs.additive:
        alpha = np.ones_like(st.vb0)
        beta = ub0 - st.fb0 - g2
    else:
        alpha = np.where(st.fb0 > 0, ub0 / np.where(st.fb0 > 0, st.fb0, 1.0), 0.0)
        beta = np.full_like(st.vb0, -g2)
    t = np.minimum(st.fxb, st.fb.astype(np.float32)[None, :])
    t *= alpha.astype(np.float32)
    if st.rs is not None and st.fcand is not None:
        # the range term after the candidate: as now, but where it widens the box
        t += st.rs.rtb.astype(np.float32)[None, :]
        out = beyond_box(st.rs, st.fcand)
        for i in range(0, out.size, _RANGE_CHUNK):
            rows = out[i : i + _RANGE_CHUNK]
            t[rows] += (range_after(st.rs, st.fcand[rows]) - st.rs.rtb[None, :]).astype(np.float32)
    extra = 0.0
    if st.extra and wt is not None and X is not None:
        t += (beta + g2).astype(np.float32)  # the blocks' variance after the candidate
        # the targets' shared extrapolation sd after the candidate
        x0 = np.sqrt(np.maximum(st.vb0 - st.vin_b, 0.0)).astype(np.float32)
        xr = np.sqrt(np.maximum(t - st.vin_b.astype(np.float32), 0.0))
        xr = np.divide(xr, x0[None, :], out=np.zeros_like(xr), where=x0[None, :] > 0)
        Xc = xr @ st.X0.T.astype(np.float32)  # (C, T)
        extra = ((X**2)[None, :] - Xc.astype(float) ** 2) @ wt
        np.minimum(t, st.vin_b.astype(np.float32), out=t)  # the own part: in-domain at most
        t -= np.float32(g2)
    else:
        t += beta.astype(np.float32)
    np.maximum(t, 0.0, out=t)
    gain = float(np.sum(own2 * w_b)) - t @ w_b.astype(np.float32)
    return np.maximum(gain.astype(float) + extra, 0.0)


def _take(
    states: Sequence[_IntervalState],
    rho_sx: dict[int, list[np.ndarray]],
    cand_xy: np.ndarray,
    best: int,
) -> None:
    """Update every interval's state for a chosen candidate: its correlations with the
    other candidates, and the DI factors it lowers."""
    h = np.sqrt(((cand_xy - cand_xy[best]) ** 2).sum(-1))
    for si, st in enumerate(states):
        rho_sx[si].append(_structured_correlation(st.errs.variogram, h))
        if st.fxb is not None and st.fcand is not None:
            if st.rs is not None and np.isfinite(st.fcand[best]).all():
                widen(st.rs, st.fcand[best], st.fcand)
            st.fb = np.minimum(st.fb, st.fxb[best])
            d = np.sqrt(((st.fcand - st.fcand[best]) ** 2).sum(-1))
            if st.gcand is not None:
                d = np.where(st.gcand == st.gcand[best], d, np.inf)
            st.fx = np.minimum(st.fx, _factor(st.errs, d))


def _interval_step(
    st: _IntervalState,
    chosen: list[int],
    rho_sx: list[np.ndarray],
    n0: float | None,
    *,
    last: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One interval's targets after the sites ``chosen`` so far.

    Returns the targets' variances, the shared error's part of them, the regional level's
    part of that (the rest is the shared extrapolation error) and, unless ``last``, every
    candidate's kriging gain and DI gain (zeros when ``last``), both weighted by the
    inverse of those variances.
    """
    e = st.errs
    g2 = float(e.common_sd) ** 2
    vb = _block_variance(st)
    cap_b = st.vin_b if st.extra else np.inf
    own_b0 = _own_part(st.vb0, g2, cap_b)
    phi = _own_part(vb, g2, cap_b) / np.maximum(own_b0, 1e-300)
    phi = np.where(own_b0 > 0, phi, 0.0)
    L = st.L0 * phi  # (T, B)
    RL = L @ st.R  # (T, B)  (R symmetric)
    Q = st.Q0 * phi**2  # (T, B) the blocks' own variance
    var0 = np.einsum("tb,tb->t", L, RL) + Q.sum(axis=1) + g2 * st.U**2
    vx = _candidate_variance(st)
    lx = _own_part(vx, g2, st.vin_x if st.extra else np.inf)
    # the shared error is not kriged: a site observes it as noise (see the module
    # docstring); it falls as the profiles' count grows, n0 / (n0 + k)
    level = g2 * st.U**2 * (1.0 if n0 is None else n0 / (n0 + len(chosen)))
    shared = level
    var0 = var0 - g2 * st.U**2
    G = lx[:, None] * (st.rho_xb @ L.T)  # (C, T)
    noise = np.full(len(lx), st.tau2 + g2)
    X = np.zeros(len(st.U))
    if st.extra:
        # the extrapolation error every cell shares: it falls where sites lower the DI
        X = st.X0 @ _extra_ratio(vb, st.vin_b, st.vb0)
        shared = shared + X**2
        noise += np.maximum(vx - st.vin_x, 0.0)  # a site sees its own as noise
    px = lx**2
    var = var0.copy()
    if chosen:
        S = np.asarray(chosen)
        rsx = np.vstack(rho_sx)  # (S, C)
        lS = lx[S]
        K_ss = lS[:, None] * lS[None, :] * rsx[:, S]
        K_ss[np.diag_indices_from(K_ss)] = lS**2 + noise[S]
        K_sx = lS[:, None] * lx[None, :] * rsx
        K_sx[np.arange(len(S)), S] = lS**2
        c, _ = cho_factor(K_ss, lower=True, check_finite=False)
        A = solve_triangular(c, K_sx, lower=True, check_finite=False)
        Bt = solve_triangular(c, G[S], lower=True, check_finite=False)
        px = lx**2 - np.einsum("sc,sc->c", A, A)
        G = G - A.T @ Bt
        var = var0 - np.einsum("st,st->t", Bt, Bt)
    var = np.maximum(var, 0.0) + shared
    zeros = np.zeros(len(lx))
    if last:
        return var, shared, level, zeros, zeros
    wt = 1.0 / np.where(var > 0, var, np.inf)
    kr = (G**2 / np.maximum(px + noise, 1e-300)[:, None]) @ wt
    di_gain = _di_gain(st, vb, g2, (L * RL + Q).T @ wt, wt, X) if st.fxb is not None else zeros
    return var, shared, level, kr, di_gain


def _block_geometry(
    xy: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    area: np.ndarray,
    cand: np.ndarray,
    max_blocks: int,
    group: np.ndarray | None = None,
) -> tuple[np.ndarray, int, float, np.ndarray, np.ndarray]:
    """Blocks of cells (of one ``group`` each): each cell's block, their count, their side
    (m), the distances between blocks (a block to itself: the mean distance of two points of
    a square) and from the candidates to the blocks."""
    block, B, q = _blocks(rows, cols, max_blocks, group)
    counts = np.bincount(block, minlength=B).astype(float)
    bxy = np.column_stack(
        [np.bincount(block, xy[:, 0], B) / counts, np.bincount(block, xy[:, 1], B) / counts]
    )
    dist_bb = cdist(bxy, bxy)
    # block side (m) from the cells' true areas: right on geographic grids too, where the
    # working coordinates of the cells form no regular lattice
    side = math.sqrt(float(np.median(area))) if np.isfinite(area).any() else 1.0
    width = q * (side if side > 0 else 1.0)
    np.fill_diagonal(dist_bb, _MEAN_SQUARE_DISTANCE * width)
    return block, B, width, dist_bb, cdist(xy[cand], bxy)


def _group_key(errors: Sequence[IntervalErrors], n: int) -> np.ndarray | None:
    """One label per cell (0..K-1) for its combination of the intervals' groups of unseen
    categories, so that blocks split by it hold one group of every interval; ``None`` when
    no interval has such cells (the blocks as without categories)."""
    groups = [np.asarray(e.group, np.int64).ravel() for e in errors if e.group is not None]
    groups = [g for g in groups if g.size == n and g.any()]
    if not groups:
        return None
    _, inverse = np.unique(np.column_stack(groups), axis=0, return_inverse=True)
    return inverse.ravel().astype(np.int64)


def greedy_design(
    xy: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    area: np.ndarray,
    zone_weights: Mapping[str, np.ndarray],
    errors: Sequence[IntervalErrors],
    targets: Sequence[Target],
    n: int,
    *,
    reachable: np.ndarray | None = None,
    max_blocks: int = 2500,
    n_candidates: int = 3000,
    n_existing: int | None = None,
    range_cells: int = 4000,
    seed: int = 0,
    echo: Any = None,
) -> DesignResult:
    """Choose ``n`` sites greedily to shrink the variances of the target zone totals.

    Parameters
    ----------
    xy
        ``(n_cells, 2)`` cell centres in metres (the grid's working CRS).
    rows, cols
        Grid row and column of every cell (for the blocks).
    area
        Cell areas (m²).
    zone_weights
        Zone name -> share of each cell in the zone (0..1); ``"all zones"`` is their sum.
    errors
        One :class:`IntervalErrors` per interval named by the targets.
    targets
        The zone totals to shrink.
    n
        Number of sites (>= 1).
    reachable
        Boolean mask of cells a field team can reach (default: all).
    max_blocks, n_candidates
        Resolution of the computation: blocks of cells for the totals, sampled candidate
        cells (all reachable ones when fewer).
    n_existing
        Number of profiles the run was fitted on: the shared error's variance is scaled by
        ``n_existing / (n_existing + k)`` after ``k`` sites (``None``: not scaled).
    range_cells
        Cells (a sample stratified by block) on which the range term is recomputed as new
        sites widen the training box (:attr:`IntervalErrors.range_var`); 0: the term
        scales with the DI's factor like the rest of the variance.
    seed
        Seed of the candidate sample.
    echo
        Progress callback (one line per 10 % of the sites).

    Returns
    -------
    DesignResult
    """
    if int(n) != n or n < 1:
        raise InvalidParameter(f"the number of sites must be a positive integer, got {n!r}")
    xy = np.asarray(xy, dtype=float)
    nc = len(xy)
    area = _ensure_1d(area, nc, "area")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    reach = np.ones(nc, bool) if reachable is None else np.asarray(reachable, bool).ravel()
    if reach.size != nc:
        raise InvalidParameter(f"reachable has {reach.size} values for {nc} cells")
    cand = np.flatnonzero(reach)
    if cand.size < n:
        raise InputError(
            f"only {cand.size} reachable cells with a prediction for {n} sites; widen the "
            "access limit (--access, --max-distance-km) or ask for fewer sites"
        )
    if not targets:
        raise InvalidParameter("no target totals")
    n0 = None if n_existing is None else max(float(n_existing), 1.0)
    by_label = {e.label: e for e in errors}
    weights = dict(zone_weights)
    if ALL_ZONES not in weights:
        weights[ALL_ZONES] = np.sum([np.asarray(w, float) for w in zone_weights.values()], axis=0)
    rng = np.random.default_rng([int(seed), 17])
    if cand.size > n_candidates:
        cand = np.sort(rng.choice(cand, n_candidates, replace=False))
    C = cand.size

    labels = list(dict.fromkeys(t.interval for t in targets))
    for label in labels:
        if label not in by_label:
            raise InvalidParameter(f"no error model for interval {label}")
    block, B, width, dist_bb, dist_xb = _block_geometry(
        xy, rows, cols, area, cand, max_blocks, _group_key([by_label[k] for k in labels], nc)
    )

    states: list[_IntervalState] = []
    for label in labels:
        cols_t = [i for i, t in enumerate(targets) if t.interval == label]
        states.append(
            _interval_state(
                by_label[label], cols_t, targets, weights, area, block, B, width, cand,
                dist_bb, dist_xb, range_cells, np.random.default_rng([int(seed), 23]),
            )
        )  # fmt: skip
    del dist_xb

    chosen: list[int] = []  # positions in cand
    rho_sx: dict[int, list[np.ndarray]] = {i: [] for i in range(len(states))}
    variance = np.empty((n + 1, len(targets)))
    shared = np.empty((n + 1, len(targets)))
    level = np.empty((n + 1, len(targets)))
    gk = np.zeros(n)
    gd = np.zeros(n)
    taken = np.zeros(C, bool)
    step = max(1, n // 10)
    for it in range(n + 1):
        score = np.zeros(C)
        s_kr = np.zeros(C)
        s_di = np.zeros(C)
        for si, st in enumerate(states):
            var, sh, lv, kr, di_gain = _interval_step(st, chosen, rho_sx[si], n0, last=it == n)
            variance[it, st.targets] = var
            shared[it, st.targets] = sh
            level[it, st.targets] = lv
            s_kr += kr
            s_di += di_gain
            score += kr
            score += di_gain
        if it == n:
            break
        score[taken] = -np.inf
        best = int(np.argmax(score))
        total = s_kr[best] + s_di[best]
        gk[it] = s_kr[best] / total if total > 0 else 0.0
        gd[it] = s_di[best] / total if total > 0 else 0.0
        chosen.append(best)
        taken[best] = True
        _take(states, rho_sx, xy[cand], best)
        if echo is not None and ((it + 1) % step == 0 or it + 1 == n):
            echo(f"[design] {it + 1} of {n} sites")
    return DesignResult(
        cells=cand[np.asarray(chosen, dtype=np.int64)],
        variance=variance,
        targets=list(targets),
        gain_kriging=gk,
        gain_dissimilarity=gd,
        shared=shared,
        level=level,
    )
