"""How sure a cross-validated RMSE is: a spatial block bootstrap of the out-of-fold errors.

A CV RMSE from a few hundred clustered profiles is itself an estimate: errors of nearby
profiles are correlated (they share the residual field and the trend's error in land
alike), so an ordinary bootstrap over profiles treats them as independent and gives a
range far too narrow. Resampling whole square blocks of profiles (Künsch 1989; Lahiri
2003 for spatial blocks), with blocks wider than the errors' correlation, keeps that
dependence: the spread of the resampled RMSEs is the sampling spread of the CV RMSE.

The range says how far the CV RMSE can be from the error of the same model at the
profiles' kind of land through chance alone. It does not see what the profiles do not
reach (land unlike any profile): a CV that under-states the map's error there is
biased, and no resampling of the same profiles shows that (``docs/validation.md``,
"How sure is a CV RMSE").
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_BLOCKS", "block_bootstrap_rmse", "block_ids"]

MIN_BLOCKS = 10
"""Fewer occupied blocks than this: no range (the percentiles of a handful of blocks are
not a sampling distribution)."""


def block_ids(x: np.ndarray, y: np.ndarray, block_m: float) -> np.ndarray:
    """The square block of side ``block_m`` (metres, a projected plane) of every point,
    numbered ``0 .. k-1`` in the order of the blocks' (column, row) on a lattice anchored
    at the origin (so a point's block does not depend on the other points)."""
    if not block_m > 0:
        raise ValueError(f"block_m must be > 0, got {block_m!r}")
    col = np.floor(np.asarray(x, dtype=float) / block_m).astype(np.int64)
    row = np.floor(np.asarray(y, dtype=float) / block_m).astype(np.int64)
    _, ids = np.unique(np.column_stack([col, row]), axis=0, return_inverse=True)
    return ids.ravel()


def block_bootstrap_rmse(
    errors: np.ndarray,
    blocks: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.9,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile range of the (weighted) RMSE of ``errors`` under a block bootstrap.

    Each replicate draws as many blocks as there are, with replacement, and recomputes
    ``sqrt(Σ w e² / Σ w)`` over the drawn blocks' points.

    Parameters
    ----------
    errors
        Out-of-fold errors (prediction − observation), finite.
    blocks
        Block number of every error, ``0 .. k-1`` (:func:`block_ids`).
    weights
        Non-negative weights (e.g. to the mapped area); ``None``: equal.
    n_boot
        Replicates.
    level
        Central probability of the range (0.9: the 5 and 95 % percentiles).
    seed
        Seed of the draws.

    Returns
    -------
    (lower, upper)
        NaN, NaN with fewer than :data:`MIN_BLOCKS` blocks.
    """
    e = np.asarray(errors, dtype=float)
    ids = np.asarray(blocks, dtype=np.int64)
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float)
    if not (e.shape == ids.shape == w.shape):
        raise ValueError("errors, blocks and weights must have the same length")
    if not np.isfinite(e).all() or (w < 0).any():
        raise ValueError("errors must be finite and weights non-negative")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    k = int(ids.max()) + 1 if ids.size else 0
    if k < MIN_BLOCKS:
        return float("nan"), float("nan")
    sw = np.bincount(ids, weights=w, minlength=k)
    swe = np.bincount(ids, weights=w * e**2, minlength=k)
    rng = np.random.default_rng(seed)
    # counts of each block in each replicate (a multinomial draw of k blocks): the same
    # distribution as k indices with replacement, in n_boot x k memory at most
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(float)
    num, den = counts @ swe, counts @ sw
    ok = den > 0
    rmse = np.sqrt(num[ok] / den[ok])
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(rmse, [a, 1.0 - a])
    return float(lo), float(hi)
