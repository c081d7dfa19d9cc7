"""The range term of a design's cells as new sites widen the training box.

The error model adds a range term ``min(max(b xd², a xd), cap - v)`` to the variance of a
cell beyond the box the training covariates span (:meth:`mapping.calibration.ErrorModel.
range_term`; ``xd`` the distance to the box in DI units). A new profile beyond the box widens
it: every cell between the old edge and the site loses its term, the cells farther out keep
that of their shorter distance. :func:`mapping.design.greedy_design` follows the term on a
sample of the cells that have one (:func:`range_state`), scores every candidate beyond the
box by the blocks' terms after it (:func:`range_after`) and widens the box for each chosen
site (:func:`widen`). Pure NumPy/SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

__all__ = ["RangeState", "beyond_box", "box_xd2", "range_after", "range_state", "widen"]


@dataclass
class RangeState:
    """The range term of one interval's cells as the training box widens (see
    :attr:`mapping.design.IntervalErrors.range_var`).

    The term is recomputed on a sample of the cells that have one (``M`` cells, every block
    that has such cells holds at least one) and carried to the blocks by a ratio estimate:
    ``rtb = S (coef * rt)`` equals the blocks' mean term over all their cells at the start.
    """

    lo: np.ndarray  # (p,) the box, features' units
    hi: np.ndarray
    f: np.ndarray  # (M, p) the sampled cells' features
    rt0: np.ndarray  # (M,) their term now
    coef: np.ndarray  # (M,) weight in their block's mean term
    S: Any  # (B, M) sparse: sample -> block
    b: float
    a: float
    rtb0: np.ndarray  # (B,) blocks' mean term now (all cells)
    rtb: np.ndarray  # current
    rtx0: np.ndarray  # (C,) candidates' term now
    rtx: np.ndarray
    xd2: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) current xd²

    def term(self, xd: np.ndarray, rt0: np.ndarray) -> np.ndarray:
        """The term at extrapolation distance ``xd`` of cells whose term is now ``rt0``."""
        return np.minimum(np.maximum(self.b * xd**2, self.a * xd), rt0)


def box_xd2(f: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Squared distance of the rows of ``f`` to the box ``[lo, hi]`` (0 inside)."""
    return np.sum((f - np.clip(f, lo, hi)) ** 2, axis=1)


def range_state(
    e: Any,
    v: np.ndarray,
    w_all: np.ndarray,
    wsafe: np.ndarray,
    block: np.ndarray,
    B: int,
    cand: np.ndarray,
    n_cells: int,
    rng: np.random.Generator,
) -> RangeState | None:
    """The starting :class:`RangeState` of an interval (``e`` its
    :class:`mapping.design.IntervalErrors`, ``v`` and ``w_all`` its cells' variances and
    weights, ``wsafe`` the blocks' summed weights), or ``None`` when it models no range
    term (no ``range_var``, box or features, or no cell has a term)."""
    if e.range_var is None or e.box is None or e.features is None:
        return None
    if not (e.range_coef > 0 or e.range_linear > 0):
        return None
    F = np.asarray(e.features, float)
    rt = np.clip(np.nan_to_num(np.asarray(e.range_var, float)), 0.0, np.maximum(v, 0.0))
    ok = (rt > 0) & np.isfinite(F).all(axis=1) & (w_all > 0)
    if e.group is not None:
        ok &= np.asarray(e.group) == 0  # an unseen class has no distance to the box
    rt = np.where(ok, rt, 0.0)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    if idx.size > n_cells:
        # stratified by block: every block with a term keeps at least one cell
        blocks_rt = np.unique(block[idx])
        k = max(1, n_cells // blocks_rt.size)
        order = idx[rng.permutation(idx.size)]
        order = order[np.argsort(block[order], kind="stable")]
        first = np.searchsorted(block[order], block[order], side="left")
        idx = np.sort(order[np.arange(order.size) - first < k])
    wr = w_all * rt
    total = np.bincount(block, wr, B)
    sampled = np.bincount(block[idx], wr[idx], B)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sampled > 0, total / sampled, 0.0)
    coef = w_all[idx] * scale[block[idx]] / wsafe[block[idx]]
    S = csr_matrix((np.ones(idx.size), (block[idx], np.arange(idx.size))), shape=(B, idx.size))
    lo, hi = (np.asarray(a, float).copy() for a in e.box)
    rs = RangeState(
        lo=lo, hi=hi, f=F[idx], rt0=rt[idx], coef=coef, S=S,
        b=float(e.range_coef), a=float(e.range_linear),
        rtb0=total / wsafe, rtb=total / wsafe, rtx0=rt[cand], rtx=rt[cand].copy(),
    )  # fmt: skip
    rs.xd2 = box_xd2(rs.f, lo, hi)
    return rs


def range_after(rs: RangeState, fx: np.ndarray) -> np.ndarray:
    """``(E, B)``: the blocks' mean range term after a site at each row of ``fx`` (the
    candidates' features) widened the box. Only the coordinates a candidate lies beyond
    change the sampled cells' distances, on the side it lies."""
    xd2 = np.repeat(rs.xd2[None, :], len(fx), axis=0)
    for k in range(fx.shape[1]):
        for side in (1.0, -1.0):
            edge = rs.hi[k] if side > 0 else rs.lo[k]
            out = np.flatnonzero(side * (fx[:, k] - edge) > 0)
            cells = np.flatnonzero(side * (rs.f[:, k] - edge) > 0)
            if out.size == 0 or cells.size == 0:
                continue
            fc = rs.f[cells, k]
            old = (fc - edge) ** 2
            new = np.maximum(side * (fc[None, :] - fx[out, k][:, None]), 0.0) ** 2
            xd2[np.ix_(out, cells)] += new - old[None, :]
    rt = rs.term(np.sqrt(np.maximum(xd2, 0.0)), rs.rt0[None, :]) * rs.coef[None, :]
    return np.asarray(rs.S @ rt.T).T


def widen(rs: RangeState, f: np.ndarray, fcand: np.ndarray) -> None:
    """Widen the box to a new site's features ``f`` and update the terms."""
    rs.lo = np.minimum(rs.lo, f)
    rs.hi = np.maximum(rs.hi, f)
    rs.xd2 = box_xd2(rs.f, rs.lo, rs.hi)
    rs.rtb = np.asarray(rs.S @ (rs.term(np.sqrt(rs.xd2), rs.rt0) * rs.coef)).ravel()
    rs.rtx = rs.term(np.sqrt(box_xd2(fcand, rs.lo, rs.hi)), rs.rtx0)


def beyond_box(rs: RangeState, fcand: np.ndarray) -> np.ndarray:
    """Candidates (positions) whose features lie beyond the current box."""
    ok = np.isfinite(fcand).all(axis=1)
    out = ((fcand > rs.hi) | (fcand < rs.lo)).any(axis=1)
    return np.flatnonzero(ok & out)
