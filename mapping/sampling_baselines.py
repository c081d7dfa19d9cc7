"""Designs from the covariates or the coordinates alone, the baselines of
:func:`mapping.design.greedy_design`: conditioned Latin hypercube sampling (R's ``clhs``)
and spatial coverage sampling (R's ``spcosa``)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["clhs_sites", "coverage_sites"]


def coverage_sites(xy: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Spatial coverage sampling: ``n`` k-means clusters of the cells' coordinates, the cell
    nearest each centre (``spcosa``'s design without prior points)."""
    from sklearn.cluster import KMeans

    xy = np.asarray(xy, dtype=float)
    km = KMeans(n_clusters=int(n), n_init=2, random_state=seed).fit(xy)
    _, idx = cKDTree(xy).query(km.cluster_centers_)
    idx = np.unique(idx)
    if idx.size < n:  # two centres on one cell: fill with the farthest cells
        rest = np.setdiff1d(np.arange(len(xy)), idx)
        far = cKDTree(xy[idx]).query(xy[rest])[0]
        idx = np.concatenate([idx, rest[np.argsort(-far)[: n - idx.size]]])
    return idx


def clhs_sites(
    features: np.ndarray, n: int, *, seed: int = 0, iterations: int = 20000
) -> np.ndarray:
    """Conditioned Latin hypercube sample of the cells' covariates (Minasny & McBratney 2006).

    Every continuous covariate is cut into ``n`` strata of equal counts; simulated annealing
    swaps sampled and unsampled cells to make every stratum hold one site (objective: the
    sum of the absolute deviations of the strata counts from one), as R's ``clhs`` does
    without its categorical and correlation terms.
    """
    X = np.asarray(features, dtype=float)
    rng = np.random.default_rng([int(seed), 29])
    m, p = X.shape
    edges = [np.quantile(X[:, k], np.linspace(0, 1, n + 1)[1:-1]) for k in range(p)]
    strata = np.column_stack([np.searchsorted(edges[k], X[:, k]) for k in range(p)])
    sample = rng.choice(m, n, replace=False)
    counts = np.zeros((p, n), dtype=np.int64)
    for k in range(p):
        np.add.at(counts[k], strata[sample, k], 1)
    obj = np.abs(counts - 1).sum()
    in_sample = np.zeros(m, bool)
    in_sample[sample] = True
    temp = 1.0
    for _ in range(int(iterations)):
        j = int(rng.integers(n))
        new = int(rng.integers(m))
        if in_sample[new]:
            continue
        old = sample[j]
        so, sn = strata[old], strata[new]
        ar = np.arange(p)
        delta = 0
        c = counts
        # moving one site from stratum so[k] to sn[k] in every covariate k
        for k in range(p):
            if so[k] == sn[k]:
                continue
            delta += abs(c[k, so[k]] - 2) - abs(c[k, so[k]] - 1)
            delta += abs(c[k, sn[k]]) - abs(c[k, sn[k]] - 1)
        if delta <= 0 or rng.uniform() < math.exp(-delta / max(temp, 1e-9)):
            c[ar, so] -= 1
            c[ar, sn] += 1
            sample[j] = new
            in_sample[old], in_sample[new] = False, True
            obj += delta
        temp *= 0.9995
        if obj == 0:
            break
    return np.sort(sample)
