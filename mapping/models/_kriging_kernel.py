"""Compiled ordinary-kriging kernel (numba): local neighbourhoods, shared factorisations.

Why a kernel of our own: PyKrige's C backend solves one (n+1)-system per cell with
a Python variogram call per cell and builds the full N x N matrix even with
``n_closest_points``; gstat does one search and one factorisation per cell. Both
are far from the target throughput (``benchmarks/bench_kriging.py``). Two facts
make kriging a grid much cheaper:

* **Cells share neighbour sets.** On a grid, neighbouring cells mostly have the
  same ``k`` nearest data points. Cells are grouped by their neighbour set (an
  order-free 64-bit hash, checked element by element) and each group is
  factorised once: ``K = L L'`` (Cholesky of the neighbours' covariance matrix),
  with ``a = L^-1 z`` and ``u = L^-1 1`` precomputed.
* **Each cell then costs one triangular solve.** With ``v = L^-1 c`` (``c`` the
  covariances between the cell and its neighbours), ordinary kriging is, exactly,

  ``pred = v.a + (1 - u.v) (u.a) / (u.u)``
  ``var  = C(0) - v.v + (1 - u.v)^2 / (u.u)``

  (the GLS form gstat uses for ``z ~ 1``); the Lagrange multiplier is
  ``m = (u.v - 1) / (u.u)``.

Neighbour search is done in spatial buckets of target points: for a bucket with
centre ``c`` and radius ``delta`` (farthest target from ``c``), every ``k``-nearest
neighbour of every target lies within ``r_k(c) + 2 delta`` of ``c`` (triangle
inequality), so one KD-tree ball query per bucket gives a short candidate list,
and each target selects its ``k`` nearest candidates by quickselect.

Covariances follow gstat: ``C(0) = psill + nugget`` (a target on a data point gets
the data value and zero variance), ``C(h) = psill (1 - f(h))`` for ``h > 0``.
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import numba as nb
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

SPHERICAL, EXPONENTIAL, GAUSSIAN, MATERN = 0, 1, 2, 3

# status of a target: kriged; no training point within reach (max_distance); or its
# kriging system did not factorise even with a jitter (never taken for "no neighbours")
KRIGED, NO_NEIGHBOURS, NOT_FACTORISED = 0, 1, 2
MODEL_CODES = {
    "spherical": SPHERICAL,
    "exponential": EXPONENTIAL,
    "gaussian": GAUSSIAN,
    "matern": MATERN,
}

# scipy.special.kv(double, double) for the Matern model, linked by symbol name so the
# compiled functions can be cached on disk (a ctypes pointer would prevent that)
llvm.add_symbol(
    "socmap_scipy_special_kv",
    get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1kv"),
)
_kv = types.ExternalFunction("socmap_scipy_special_kv", types.float64(types.float64, types.float64))

_HASH_KEYS_SEED = 0x5EED_C0DE
# reassociation lets the dot products of the triangular solves vectorise; results move
# by a few ulp, never more (NaN and infinity semantics are kept)
_FASTMATH = {"reassoc", "contract"}


def hash_keys(n: int) -> np.ndarray:
    """Random 64-bit keys, one per training point; a neighbour set's key is their sum."""
    return (
        np.random.default_rng(_HASH_KEYS_SEED)
        .integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64)
        .astype(np.uint64)
    )


@nb.njit(cache=True, nogil=True, inline="always", fastmath=_FASTMATH)
def _cov(
    h: float, code: int, psill: float, rng: float, nugget: float, nu: float, mconst: float
) -> float:
    if h == 0.0:
        return psill + nugget
    hr = h / rng
    if code == SPHERICAL:
        if hr >= 1.0:
            return 0.0
        return psill * (1.0 - hr * (1.5 - 0.5 * hr * hr))
    if code == EXPONENTIAL:
        return psill * math.exp(-hr)
    if code == GAUSSIAN:
        return psill * math.exp(-(hr * hr))
    if hr > 600.0:
        return 0.0
    return psill * (mconst * hr**nu * _kv(nu, hr))


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def covariance_matrix(xy, idx, n, code, psill, rng, nugget, nu, mconst, out):
    """``out[:n, :n]`` = covariances among the points ``xy[idx[:n]]`` (full matrix)."""
    for i in range(n):
        xi = xy[idx[i], 0]
        yi = xy[idx[i], 1]
        out[i, i] = psill + nugget
        for j in range(i):
            dx = xi - xy[idx[j], 0]
            dy = yi - xy[idx[j], 1]
            c = _cov(math.sqrt(dx * dx + dy * dy), code, psill, rng, nugget, nu, mconst)
            out[i, j] = c
            out[j, i] = c


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _cholesky(A, n):
    """In-place lower Cholesky factor of ``A[:n, :n]``; False if not positive definite."""
    for j in range(n):
        s = A[j, j]
        for p in range(j):
            s -= A[j, p] * A[j, p]
        if not s > 0.0:
            return False
        ljj = math.sqrt(s)
        A[j, j] = ljj
        for i in range(j + 1, n):
            t = A[i, j]
            for p in range(j):
                t -= A[i, p] * A[j, p]
            A[i, j] = t / ljj
    return True


@nb.njit(cache=True, nogil=True, inline="always", fastmath=_FASTMATH)
def _forward(L, b, out, n):
    for i in range(n):
        s = b[i]
        for p in range(i):
            s -= L[i, p] * out[p]
        out[i] = s / L[i, i]


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _quickselect(d, idx, n, k):
    """Reorder ``d[:n]`` (and ``idx`` alongside) so its ``k`` smallest come first."""
    lo = 0
    hi = n - 1
    kk = k - 1
    while lo < hi:
        x = d[kk]
        i = lo
        j = hi
        while True:
            while d[i] < x:
                i += 1
            while x < d[j]:
                j -= 1
            if i <= j:
                t = d[i]
                d[i] = d[j]
                d[j] = t
                ti = idx[i]
                idx[i] = idx[j]
                idx[j] = ti
                i += 1
                j -= 1
            if i > j:
                break
        if j < kk:
            lo = i
        if kk < i:
            hi = j


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _factorise(xy, z, S, ns, code, psill, rng, nugget, nu, mconst, cfull, L, a, u, ones):
    """Covariance of the neighbour set ``S[:ns]``, its Cholesky factor, ``a``, ``u``.

    When the matrix is numerically singular (near-duplicate locations without a
    nugget, a Gaussian model) a diagonal jitter of 1e-12, 1e-10, ..., 1e-6 of the
    sill is tried in turn (a tiny nugget); False if even that fails.
    """
    sill = psill + nugget
    jitter = 0.0
    for attempt in range(5):
        if cfull.shape[0] > 0:
            for i in range(ns):
                for j in range(ns):
                    L[i, j] = cfull[S[i], S[j]]
        else:
            covariance_matrix(xy, S, ns, code, psill, rng, nugget, nu, mconst, L)
        for i in range(ns):
            L[i, i] += jitter
        if _cholesky(L, ns):
            break
        jitter = sill * 10.0 ** (-12 + 2 * attempt)
    else:
        return False
    zs = np.empty(ns)
    for i in range(ns):
        zs[i] = z[S[i]]
    _forward(L, zs, a, ns)
    _forward(L, ones, u, ns)
    return True


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def krige_buckets(
    xy, z, txy, order, bstart, cptr, cidx, k, maxd2, keys,
    code, psill, rng, nugget, nu, mconst, cfull, pred, var, lagrange, status,
):  # fmt: skip
    """Ordinary kriging of targets grouped in buckets with candidate neighbour lists.

    Parameters
    ----------
    xy, z : training coordinates (n, 2) and values (n,)
    txy : target coordinates (m, 2)
    order, bstart : targets of bucket b are ``order[bstart[b]:bstart[b + 1]]``
    cptr, cidx : candidate training points of bucket b are ``cidx[cptr[b]:cptr[b + 1]]``
    k : neighbours per target; maxd2 : squared maximum distance (inf: none)
    keys : 64-bit hash key per training point
    cfull : precomputed (n, n) covariance matrix, or a (0, 0) array
    pred, var, lagrange : outputs (m,); NaN where a target has no neighbour or its
        system did not factorise
    status : output (m,) int8: KRIGED, NO_NEIGHBOURS or NOT_FACTORISED
    """
    n_buckets = bstart.shape[0] - 1
    max_cells = 0
    max_cand = 0
    for b in range(n_buckets):
        max_cells = max(max_cells, bstart[b + 1] - bstart[b])
        max_cand = max(max_cand, cptr[b + 1] - cptr[b])
    kmax = min(k, max_cand)
    cxs = np.empty(max_cand)
    cys = np.empty(max_cand)
    dall = np.empty(max_cand)
    d2 = np.empty(max_cand)
    cpos = np.empty(max_cand, dtype=np.int64)
    inprev = np.zeros(max_cand, dtype=np.bool_)
    sel = np.empty((max_cells, kmax), dtype=np.int64)
    nsel = np.empty(max_cells, dtype=np.int64)
    hsh = np.empty(max_cells, dtype=np.uint64)
    mark = np.full(xy.shape[0], -1, dtype=np.int64)
    S = np.empty(kmax, dtype=np.int64)
    L = np.empty((kmax, kmax))
    a = np.empty(kmax)
    u = np.empty(kmax)
    ones = np.ones(kmax)
    c = np.empty(kmax)
    v = np.empty(kmax)
    sill = psill + nugget
    stamp = 0
    for b in range(n_buckets):
        c0 = cptr[b]
        nc = cptr[b + 1] - c0
        t0 = bstart[b]
        nt = bstart[b + 1] - t0
        for j in range(nc):
            p = cidx[c0 + j]
            cxs[j] = xy[p, 0]
            cys[j] = xy[p, 1]
        # 1. each target's k nearest candidates (within maxd) and the set's hash.
        # Consecutive targets are neighbours and mostly keep the previous target's set:
        # it is kept when its farthest member is strictly nearer than every other
        # candidate (and within maxd); otherwise a quickselect picks the k nearest.
        have_prev = False
        prev_full = False
        for t in range(nt):
            ti = order[t0 + t]
            tx = txy[ti, 0]
            ty = txy[ti, 1]
            for j in range(nc):
                dx = tx - cxs[j]
                dy = ty - cys[j]
                dall[j] = dx * dx + dy * dy
            if have_prev:
                maxin = -1.0
                minout = np.inf
                for j in range(nc):
                    dj = dall[j]
                    if inprev[j]:
                        if dj > maxin:
                            maxin = dj
                    elif dj < minout:
                        minout = dj
                if maxin <= maxd2 and (minout > maxd2 or (prev_full and maxin < minout)):
                    ks = nsel[t - 1]
                    for j in range(ks):
                        sel[t, j] = sel[t - 1, j]
                    nsel[t] = ks
                    hsh[t] = hsh[t - 1]
                    continue
            m = 0
            for j in range(nc):
                if dall[j] <= maxd2:
                    d2[m] = dall[j]
                    cpos[m] = j
                    m += 1
            ks = min(k, m)
            if m > ks:
                _quickselect(d2, cpos, m, ks)
            for j in range(nc):
                inprev[j] = False
            h = np.uint64(ks)
            for j in range(ks):
                inprev[cpos[j]] = True
                pj = cidx[c0 + cpos[j]]
                sel[t, j] = pj
                h += keys[pj]
            nsel[t] = ks
            hsh[t] = h
            have_prev = True
            prev_full = ks == k
        # 2. groups of targets with the same hash share one factorisation
        perm = np.argsort(hsh[:nt])
        g = 0
        while g < nt:
            g_end = g + 1
            while g_end < nt and hsh[perm[g_end]] == hsh[perm[g]]:
                g_end += 1
            first = perm[g]
            ns = nsel[first]
            if ns == 0:
                for q in range(g, g_end):
                    ti = order[t0 + perm[q]]
                    pred[ti] = np.nan
                    var[ti] = np.nan
                    lagrange[ti] = np.nan
                    status[ti] = NO_NEIGHBOURS
                g = g_end
                continue
            # canonical order of the set: sorted training index (chunking-independent)
            for j in range(ns):
                S[j] = sel[first, j]
            S[:ns].sort()
            stamp += 1
            for j in range(ns):
                mark[S[j]] = stamp
            ok = _factorise(
                xy, z, S, ns, code, psill, rng, nugget, nu, mconst, cfull, L, a, u, ones
            )
            uu = 0.0
            ua = 0.0
            for j in range(ns):
                uu += u[j] * u[j]
                ua += u[j] * a[j]
            for q in range(g, g_end):
                t = perm[q]
                ti = order[t0 + t]
                same = nsel[t] == ns
                if same:
                    for j in range(ns):
                        if mark[sel[t, j]] != stamp:
                            same = False
                            break
                if not same:  # hash collision: solve this target on its own
                    _krige_one(
                        xy,
                        z,
                        txy,
                        ti,
                        sel[t],
                        nsel[t],
                        code,
                        psill,
                        rng,
                        nugget,
                        nu,
                        mconst,
                        cfull,
                        pred,
                        var,
                        lagrange,
                        status,
                    )
                    continue
                if not ok:
                    pred[ti] = np.nan
                    var[ti] = np.nan
                    lagrange[ti] = np.nan
                    status[ti] = NOT_FACTORISED
                    continue
                tx = txy[ti, 0]
                ty = txy[ti, 1]
                for j in range(ns):
                    dx = tx - xy[S[j], 0]
                    dy = ty - xy[S[j], 1]
                    c[j] = _cov(math.sqrt(dx * dx + dy * dy), code, psill, rng, nugget, nu, mconst)
                _forward(L, c, v, ns)
                va = 0.0
                vv = 0.0
                uv = 0.0
                for j in range(ns):
                    va += v[j] * a[j]
                    vv += v[j] * v[j]
                    uv += u[j] * v[j]
                r = 1.0 - uv
                pred[ti] = va + r * ua / uu
                var[ti] = sill - vv + r * r / uu
                lagrange[ti] = -r / uu
                status[ti] = KRIGED
            g = g_end


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _krige_one(xy, z, txy, ti, sel_row, ns, code, psill, rng, nugget, nu, mconst, cfull,
               pred, var, lagrange, status):  # fmt: skip
    if ns == 0:
        pred[ti] = np.nan
        var[ti] = np.nan
        lagrange[ti] = np.nan
        status[ti] = NO_NEIGHBOURS
        return
    S = np.sort(sel_row[:ns].copy())
    L = np.empty((ns, ns))
    a = np.empty(ns)
    u = np.empty(ns)
    ok = _factorise(xy, z, S, ns, code, psill, rng, nugget, nu, mconst, cfull, L, a, u, np.ones(ns))
    if not ok:
        pred[ti] = np.nan
        var[ti] = np.nan
        lagrange[ti] = np.nan
        status[ti] = NOT_FACTORISED
        return
    c = np.empty(ns)
    v = np.empty(ns)
    for j in range(ns):
        dx = txy[ti, 0] - xy[S[j], 0]
        dy = txy[ti, 1] - xy[S[j], 1]
        c[j] = _cov(math.sqrt(dx * dx + dy * dy), code, psill, rng, nugget, nu, mconst)
    _forward(L, c, v, ns)
    uu = 0.0
    ua = 0.0
    va = 0.0
    vv = 0.0
    uv = 0.0
    for j in range(ns):
        uu += u[j] * u[j]
        ua += u[j] * a[j]
        va += v[j] * a[j]
        vv += v[j] * v[j]
        uv += u[j] * v[j]
    r = 1.0 - uv
    pred[ti] = va + r * ua / uu
    var[ti] = psill + nugget - vv + r * r / uu
    lagrange[ti] = -r / uu
    status[ti] = KRIGED


@nb.njit(cache=True, nogil=True, fastmath=_FASTMATH)
def cross_covariance(txy, xy, code, psill, rng, nugget, nu, mconst, out):
    """``out[i, j]`` = covariance between target ``i`` and training point ``j``."""
    for i in range(txy.shape[0]):
        for j in range(xy.shape[0]):
            dx = txy[i, 0] - xy[j, 0]
            dy = txy[i, 1] - xy[j, 1]
            out[i, j] = _cov(math.sqrt(dx * dx + dy * dy), code, psill, rng, nugget, nu, mconst)
