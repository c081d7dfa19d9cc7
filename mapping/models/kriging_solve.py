"""Ordinary kriging in NumPy: the neighbourhood search and the global solve.

:func:`krige_residuals`
    Ordinary kriging of values at training points onto target points, with a local
    neighbourhood (``n_neighbors`` nearest, optional ``max_distance``) or globally. The
    prediction stage calls it per chunk with a KD-tree built once over *all* training
    points, so chunks have no seams.
:func:`training_covariance`
    The training points' covariance matrix, which a fitted model keeps between chunks.

The local path groups targets into buckets and hands each bucket's candidate neighbours
to the numba kernel (:mod:`mapping.models._kriging_kernel`); the global path factorises
the whole system once (Cholesky) and solves the targets in batches. The estimators of
:mod:`mapping.models.kriging` call these functions; ``docs/kriging.md`` states the
formulas.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from mapping.exceptions import ModelError
from mapping.models.variogram import Variogram

# a target's kriging status (mapping.models._kriging_kernel uses the same codes)
KRIGED, NO_NEIGHBOURS, NOT_FACTORISED = 0, 1, 2
_GLOBAL_BATCH_BYTES = 64 * 2**20  # cross-covariance block of the global path
FULL_COV_MAX_N = 4096  # at most 128 MiB for a precomputed data covariance matrix
_BUCKET_FRACTION = 1.0 / 3.0  # bucket side / typical k-th neighbour distance


class InputValueError(ModelError, ValueError):
    """Malformed numeric input (NaN, infinity, wrong shape): a user error and a ValueError."""


def _variogram_args(v: Variogram) -> tuple[int, float, float, float, float, float]:
    from mapping.models import _kriging_kernel as _k  # heavy: numba, only when kriging

    mconst = 0.0
    if v.model == "matern":
        mconst = 2.0 ** (1.0 - v.nu) / math.gamma(v.nu)
    return _k.MODEL_CODES[v.model], v.psill, v.range, v.nugget, v.nu, mconst


def _as_xy(a: ArrayLike, what: str) -> NDArray:
    xy = np.ascontiguousarray(a, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputValueError(f"{what} must be an (n, 2) array, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise InputValueError(f"{what} contain NaN or infinity")
    return xy


def krige_residuals(
    train_xy: ArrayLike,
    residuals: ArrayLike,
    variogram: Variogram,
    target_xy: ArrayLike,
    n_neighbors: int | None = 32,
    max_distance: float | None = None,
    tree: cKDTree | None = None,
    *,
    covariance: NDArray | None = None,
    return_lagrange: bool = False,
    return_status: bool = False,
) -> tuple[NDArray, ...]:
    """Ordinary kriging of ``residuals`` at ``train_xy`` onto ``target_xy``.

    Parameters
    ----------
    train_xy
        ``(n, 2)`` training coordinates (projected CRS, metres), distinct.
    residuals
        ``(n,)`` values to krige.
    variogram
        The variogram of ``residuals``.
    target_xy
        ``(m, 2)`` target coordinates.
    n_neighbors
        Neighbours per target (the ``n_neighbors`` nearest, gstat's ``nmax``);
        ``None`` uses all points (global kriging, gstat's default).
    max_distance
        Use only training points within this distance (gstat's ``maxdist``);
        a target with none gets NaN, as in gstat.
    tree
        A ``scipy.spatial.cKDTree`` of ``train_xy``, built once and reused across
        chunks; built here if not given.
    covariance
        Optional precomputed ``(n, n)`` covariance matrix of the training points
        (:func:`training_covariance`), kept by a fitted model so that chunk after
        chunk does not rebuild it.
    return_lagrange
        Also return the Lagrange multiplier ``m`` of each system (convention
        ``var = C(0) - lambda'c - m``), used by lognormal back-transforms.
    return_status
        Also return each target's status (``int8``): :data:`KRIGED`,
        :data:`NO_NEIGHBOURS` (no training point within ``max_distance``) or
        :data:`NOT_FACTORISED` (its kriging system is not positive definite even with
        a diagonal jitter of 1e-6 of the sill). Both failures give NaN prediction and
        variance; the status tells them apart.

    Returns
    -------
    pred, var : ndarray
        Kriging prediction and kriging variance, ``(m,)`` each; followed by the
        Lagrange multipliers and the status when asked for, in that order.

    Notes
    -----
    Neighbour selection is exact (the ``k`` nearest by Euclidean distance); with
    exact distance ties at the ``k``-th neighbour the choice among the tied points
    is arbitrary, as in any implementation. Results do not depend on how targets
    are split into chunks.
    """
    xy = _as_xy(train_xy, "training coordinates")
    z = np.ascontiguousarray(residuals, dtype=np.float64).ravel()
    if z.shape[0] != xy.shape[0]:
        raise InputValueError(f"{xy.shape[0]} training coordinates but {z.shape[0]} values")
    if not np.isfinite(z).all():
        raise InputValueError("values to krige contain NaN or infinity")
    txy = _as_xy(target_xy, "target coordinates")
    if not isinstance(variogram, Variogram):
        raise ModelError(f"variogram must be a Variogram, got {type(variogram).__name__}")
    n, m = xy.shape[0], txy.shape[0]
    if n == 0:
        raise ModelError("kriging needs at least one training point")
    if n_neighbors is not None and int(n_neighbors) < 1:
        raise ModelError(f"n_neighbors must be >= 1 or None, got {n_neighbors}")
    if max_distance is not None and not float(max_distance) > 0:
        raise ModelError(f"max_distance must be > 0 or None, got {max_distance}")
    if covariance is not None:
        covariance = np.ascontiguousarray(covariance, dtype=np.float64)
        if covariance.shape != (n, n):
            raise ModelError(f"covariance matrix has shape {covariance.shape}; expected {(n, n)}")
    pred = np.empty(m)
    var = np.empty(m)
    lag = np.empty(m)
    status = np.full(m, KRIGED, dtype=np.int8)
    if m:
        # compiled on first use and cached on disk; imported here to keep imports cheap
        args = _variogram_args(variogram)
        out = (pred, var, lag, status)
        if max_distance is None and (n_neighbors is None or int(n_neighbors) >= n):
            _krige_global(xy, z, txy, args, covariance, *out)
        else:
            k = n if n_neighbors is None else min(int(n_neighbors), n)
            _krige_local(xy, z, txy, args, k, max_distance, tree, covariance, *out)
    return (pred, var, *([lag] if return_lagrange else []), *([status] if return_status else []))


def training_covariance(train_xy: ArrayLike, variogram: Variogram) -> NDArray:
    """``(n, n)`` covariance matrix of the training points under ``variogram``."""
    from mapping.models import _kriging_kernel as _k  # heavy: numba, only when kriging

    xy = _as_xy(train_xy, "training coordinates")
    n = xy.shape[0]
    out = np.empty((n, n))
    _k.covariance_matrix(xy, np.arange(n), n, *_variogram_args(variogram), out)
    return out


def _krige_global(xy, z, txy, args, covariance, pred, var, lag, status) -> None:
    from scipy.linalg import cholesky, solve_triangular

    from mapping.models import _kriging_kernel as _k  # heavy: numba, only when kriging

    n = xy.shape[0]
    if covariance is None:
        K = np.empty((n, n))
        _k.covariance_matrix(xy, np.arange(n), n, *args, K)
    else:
        K = covariance
    sill = args[1] + args[3]
    # numerically singular (near-duplicates without nugget, Gaussian model): a diagonal
    # jitter of 1e-12 ... 1e-6 of the sill, as in the local kernel
    for attempt in range(5):
        jitter = 0.0 if attempt == 0 else sill * 10.0 ** (-14 + 2 * attempt)
        try:
            L = cholesky(K + np.eye(n) * jitter, lower=True)
            break
        except np.linalg.LinAlgError:
            continue
    else:
        pred[:] = var[:] = lag[:] = np.nan
        status[:] = NOT_FACTORISED
        return
    a = solve_triangular(L, z, lower=True)
    u = solve_triangular(L, np.ones(n), lower=True)
    uu, ua = float(u @ u), float(u @ a)
    batch = max(1, _GLOBAL_BATCH_BYTES // (8 * n))
    for s in range(0, txy.shape[0], batch):
        t = txy[s : s + batch]
        C = np.empty((t.shape[0], n))
        _k.cross_covariance(t, xy, *args, C)
        V = solve_triangular(L, C.T, lower=True)
        r = 1.0 - u @ V
        pred[s : s + batch] = a @ V + r * ua / uu
        var[s : s + batch] = sill - np.einsum("ij,ij->j", V, V) + r * r / uu
        lag[s : s + batch] = -r / uu


def _krige_local(
    xy, z, txy, args, k, max_distance, tree, covariance, pred, var, lag, status
) -> None:
    from mapping.models import _kriging_kernel as _k  # heavy: numba, only when kriging

    if tree is None:
        tree = cKDTree(xy)
    elif tree.n != xy.shape[0]:
        raise ModelError(
            f"KD-tree holds {tree.n} points but there are {xy.shape[0]} training points"
        )
    m = txy.shape[0]
    maxd = math.inf if max_distance is None else float(max_distance)
    # bucket side: a third of the typical distance to the k-th neighbour
    sample = txy[:: max(1, m // 256)]
    rk = tree.query(sample, k=[k], workers=1)[0][:, 0]
    r = float(np.median(rk))
    r = min(r, maxd)
    lo = txy.min(axis=0)
    extent = float(np.max(txy.max(axis=0) - lo))
    side = max(r * _BUCKET_FRACTION, extent * 1e-6, 1e-9)
    bxy = np.floor((txy - lo) / side).astype(np.int64)
    key = bxy[:, 1] * (int(bxy[:, 0].max()) + 1) + bxy[:, 0]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    bstart = np.r_[starts, m].astype(np.int64)
    tx, ty = txy[order, 0], txy[order, 1]
    cx = 0.5 * (np.minimum.reduceat(tx, starts) + np.maximum.reduceat(tx, starts))
    cy = 0.5 * (np.minimum.reduceat(ty, starts) + np.maximum.reduceat(ty, starts))
    nb = np.diff(bstart)
    d2 = (tx - np.repeat(cx, nb)) ** 2 + (ty - np.repeat(cy, nb)) ** 2
    delta = np.sqrt(np.maximum.reduceat(d2, starts))
    centres = np.column_stack([cx, cy])
    rk_c = tree.query(centres, k=[k], workers=1)[0][:, 0]
    # every k-nearest neighbour of a target lies within r_k(centre) + 2 delta of the centre
    radius = np.minimum(rk_c + 2.0 * delta, maxd + delta)
    radius = radius * (1.0 + 1e-9) + 1e-9 * max(extent, 1.0)
    cands = tree.query_ball_point(centres, radius, workers=1, return_sorted=False)
    lens = np.fromiter((len(c) for c in cands), dtype=np.int64, count=len(cands))
    cptr = np.r_[0, np.cumsum(lens)].astype(np.int64)
    cidx = (
        np.concatenate([np.asarray(c, dtype=np.int64) for c in cands])
        if cptr[-1]
        else np.zeros(0, dtype=np.int64)
    )
    n = xy.shape[0]
    if covariance is not None:
        cfull = covariance
    elif n <= FULL_COV_MAX_N and n * n <= m * k * k / 10:
        # gathering from the full matrix beats computing each group's covariances
        # once the targets are many
        cfull = np.empty((n, n))
        _k.covariance_matrix(xy, np.arange(n), n, *args, cfull)
    else:
        cfull = np.empty((0, 0))
    maxd2 = maxd * maxd if math.isfinite(maxd) else math.inf
    _k.krige_buckets(
        xy, z, txy, order.astype(np.int64), bstart, cptr, cidx, k, maxd2,
        _k.hash_keys(n), *args, cfull, pred, var, lag, status,
    )  # fmt: skip


# ------------------------------------------------------------ training points
def merge_duplicates(xy: NDArray, z: NDArray) -> tuple[NDArray, NDArray]:
    """Average values at identical coordinates (a kriging system needs distinct points)."""
    uniq, inv = np.unique(xy, axis=0, return_inverse=True)
    if len(uniq) == len(xy):
        return xy, z
    inv = inv.ravel()
    sums = np.bincount(inv, weights=z, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq))
    return np.ascontiguousarray(uniq), sums / counts


def spatial_order(xy: NDArray) -> NDArray:
    """Permutation putting points in Morton (Z-curve) order, 16 bits per axis.

    Neighbouring points get nearby indices, so a neighbourhood's rows of the
    training covariance matrix lie close together in memory.
    """
    lo = xy.min(axis=0)
    span = float(np.max(xy.max(axis=0) - lo)) or 1.0
    q = ((xy - lo) / span * 65535.0).astype(np.uint64)

    def spread(v: NDArray) -> NDArray:
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    return np.argsort(spread(q[:, 0]) | (spread(q[:, 1]) << np.uint64(1)), kind="stable")
