"""Cross-validation splitters for maps: random, spatial-block and kNNDM folds.

Profiles are clustered in space, so random folds put test points next to
training points far more often than the map puts prediction cells next to
them, and overstate accuracy; spatial blocks can do the opposite where
sampling is even. Three splitters, all usable as ``cv=`` in scikit-learn's
``cross_validate`` and ``GridSearchCV`` (and in
:func:`mapping.validation.cross_validate_model`):

:class:`RandomKFold`
    Random k-fold over rows, or over profiles when ``groups`` is given.
:class:`SpatialBlockKFold`
    Square blocks of ``block_size`` metres, blocks dealt to folds so that the
    folds hold similar numbers of points.
:class:`KNNDM`
    k-fold nearest-neighbour distance matching (Linnenbrink et al. 2024), as
    ``CAST::knndm``: the fold configuration whose test-to-training
    nearest-neighbour distances best match the prediction-to-training ones.

Every splitter keeps the rows of one profile (``groups``) in one fold.
:func:`make_splitter` builds the one the config names.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.model_selection import BaseCrossValidator, GroupKFold, KFold
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from mapping.exceptions import ModelError
from mapping.models.base import ColumnLayout, ColumnSpec, get_coordinates, one_hot

__all__ = [
    "KNNDM",
    "KNNDMResult",
    "RandomKFold",
    "SpatialBlockKFold",
    "cv_distances",
    "make_splitter",
]


def _group_codes(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(unique group index per row, first row of each group)."""
    g = np.asarray(groups)
    if g.shape[0] != n:
        raise ValueError(f"groups has {g.shape[0]} entries, X has {n} rows")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    return inverse.ravel(), first


def _group_coordinates(coords: np.ndarray, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean coordinates per group and each row's group index."""
    inverse, first = _group_codes(groups, len(coords))
    sums = np.zeros((len(first), 2))
    np.add.at(sums, inverse, coords)
    counts = np.bincount(inverse, minlength=len(first))[:, None]
    return sums / counts, inverse


class _FoldLabelCV(BaseCrossValidator):
    """A splitter defined by a fold label per row (labels 0 … n_splits-1)."""

    n_splits: int

    def fold_labels(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        raise NotImplementedError

    def _iter_test_indices(
        self, X: Any = None, y: Any = None, groups: Any = None
    ) -> Iterator[np.ndarray]:
        labels = self.fold_labels(X, y, groups)
        for k in range(self.get_n_splits(X, y, groups)):
            yield np.flatnonzero(labels == k)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return int(self.n_splits)


class RandomKFold(_FoldLabelCV):
    """Random k-fold; by profile when ``groups`` is given.

    Without groups this is :class:`sklearn.model_selection.KFold` with
    shuffling; with groups, :class:`~sklearn.model_selection.GroupKFold` with
    shuffling, so all rows of a profile fall in the same fold.
    """

    def __init__(self, n_splits: int = 5, *, random_state: int | None = None) -> None:
        self.n_splits = n_splits
        self.random_state = random_state

    def fold_labels(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        n = len(X)
        labels = np.empty(n, dtype=int)
        if groups is None:
            splits = KFold(self.n_splits, shuffle=True, random_state=self.random_state).split(
                np.empty((n, 1))
            )
        else:
            splits = GroupKFold(self.n_splits, shuffle=True, random_state=self.random_state).split(
                np.empty((n, 1)), groups=np.asarray(groups)
            )
        for k, (_, test) in enumerate(splits):
            labels[test] = k
        return labels


class SpatialBlockKFold(_FoldLabelCV):
    """k-fold over square spatial blocks.

    The plane is cut into squares of ``block_size`` (in the units of the
    coordinates, metres in a projected CRS) starting at the lower-left data
    point. Blocks are dealt to folds largest first, each to the fold with the
    fewest points so far, so that folds hold similar numbers of points; ties
    between equal blocks are broken at random.

    Parameters
    ----------
    block_size
        Side of a block; take it at least as large as the range of residual
        spatial autocorrelation.
    n_splits
        Number of folds.
    coord_columns
        Coordinate columns of ``X`` (names or positions).
    random_state
        Seed for the order of equal-sized blocks.
    """

    def __init__(
        self,
        block_size: float,
        n_splits: int = 5,
        *,
        coord_columns: Sequence[ColumnSpec] | None = ("x", "y"),
        random_state: int | None = None,
    ) -> None:
        self.block_size = block_size
        self.n_splits = n_splits
        self.coord_columns = coord_columns
        self.random_state = random_state

    def block_ids(self, X: Any) -> np.ndarray:
        """Index of the block of every row of ``X``."""
        return self._blocks(get_coordinates(X, self.coord_columns))

    def _blocks(self, coords: np.ndarray) -> np.ndarray:
        if not (self.block_size and self.block_size > 0):
            raise ModelError(f"block_size must be a positive distance, got {self.block_size!r}")
        ij = np.floor((coords - coords.min(axis=0)) / float(self.block_size)).astype(np.int64)
        _, ids = np.unique(ij, axis=0, return_inverse=True)
        return ids.ravel()

    def fold_labels(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        coords = get_coordinates(X, self.coord_columns)
        if groups is not None:
            units, inverse = _group_coordinates(coords, groups)
        else:
            units, inverse = coords, np.arange(len(coords))
        blocks = self._blocks(units)
        counts = np.bincount(blocks)
        nonempty = np.flatnonzero(counts)
        if len(nonempty) < self.n_splits:
            raise ModelError(
                f"only {len(nonempty)} blocks of {self.block_size:g} m hold data, fewer than "
                f"n_splits={self.n_splits}; use a smaller block_size"
            )
        rng = check_random_state(self.random_state)
        order = rng.permutation(nonempty)
        order = order[np.argsort(-counts[order], kind="stable")]
        load = np.zeros(self.n_splits)
        block_fold = np.empty(len(counts), dtype=int)
        for b in order:
            k = int(np.argmin(load))
            block_fold[b] = k
            load[k] += counts[b]
        return block_fold[blocks][inverse]


@dataclass
class KNNDMResult:
    """What :class:`KNNDM` chose and why.

    Attributes
    ----------
    folds
        Fold label (0 … k-1) per row of X.
    W
        Wasserstein distance between the CV and the prediction
        nearest-neighbour distance distributions (same units as coordinates).
    q
        Number of clusters of the chosen configuration, or ``"random CV"``
        when the training points are not more clustered than the prediction
        points (then random folds already match).
    Gij
        Prediction-to-training nearest-neighbour distances.
    Gj
        Training-to-training (leave-one-out) nearest-neighbour distances.
    Gjstar
        Test-to-training nearest-neighbour distances under the chosen folds.
    method
        Clustering used.
    """

    folds: np.ndarray
    W: float
    q: int | str
    Gij: np.ndarray
    Gj: np.ndarray
    Gjstar: np.ndarray
    method: str
    configurations: pd.DataFrame = field(default_factory=pd.DataFrame)


def cv_distances(coords: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Distance from every point to the nearest point of the other folds."""
    out = np.full(len(coords), np.nan)
    for f in np.unique(folds):
        test = folds == f
        if test.all():
            continue
        tree = cKDTree(coords[~test])
        out[test] = tree.query(coords[test], k=1)[0]
    return out


class KNNDM(_FoldLabelCV):
    """k-fold nearest-neighbour distance matching (Linnenbrink et al. 2024).

    A faithful port of the geographical-space algorithm of ``CAST::knndm``:

    1. ``Gij``: distance from each prediction point to its nearest training
       point; ``Gj``: from each training point to its nearest other one.
    2. If a one-sided Kolmogorov-Smirnov test does not find ``Gj``
       stochastically smaller than ``Gij`` (p >= 0.05), training points are no
       more clustered than the prediction situation and random folds are
       returned.
    3. Otherwise, for ``n_configs`` cluster counts ``q`` spaced
       logarithmically from ``k`` to ``n - 2``: cluster the training
       coordinates into ``q`` clusters (k-means, or Ward hierarchical
       clustering), order clusters along the first principal component of
       the coordinates, give each cluster holding at least ``n/k`` points a
       fold of its own and deal the others round-robin to the remaining
       folds. Configurations where a fold holds more than ``maxp`` of the
       points are discarded.
    4. Keep the configuration with the smallest Wasserstein distance ``W``
       between the ECDF of the test-to-training distances ``Gj*`` and that
       of ``Gij``.

    With ``groups`` the algorithm runs on the mean location of each group
    (profile) and every row follows its group.

    With ``space="feature"`` (``CAST::knndm(space = "feature")``) the same
    algorithm runs in the space of the covariates instead of the coordinates:
    every covariate column of ``X`` (all but ``coord_columns``) is
    standardised with the training mean and standard deviation, categorical
    ones (pandas ``category``/``object`` or named in ``categorical_features``)
    become standardised 0/1 indicators (CAST uses Gower distances there), and
    ``prediction_points`` must be a DataFrame holding the same covariates at
    (a sample of) the cells to map. Distances, clusters, the first principal
    component and ``W`` are then in standardised feature units. Feature space
    reproduces how far the map's cells are from the training data *in the
    covariates*, which is what a trend model's error depends on when the
    profiles are clustered in climate (cold, remote land under-sampled);
    geographical space reproduces the spatial distances a residual kriging
    relies on.

    Parameters
    ----------
    n_splits
        Number of folds ``k``.
    prediction_points
        Coordinates of the places to be predicted: an ``(m, 2)`` array, or a
        DataFrame holding ``coord_columns``. A regular sample of a few
        thousand grid cells of the mapped area is enough.
    coord_columns
        Coordinate columns of ``X``.
    maxp
        Largest share of the points a fold may hold, strictly between
        ``1/k`` and 1 (CAST default 0.5).
    clustering
        ``"kmeans"`` (the paper's choice; R ``kmeans`` defaults: one start, 10
        iterations) or ``"hierarchical"`` (Ward, CAST's default ``ward.D2``).
    n_configs
        Number of cluster counts tried (CAST ``nk_len``).
    random_state
        Seed for k-means and for random folds.
    space
        ``"geographical"`` (default) or ``"feature"``.
    categorical_features
        Extra categorical covariates for ``space="feature"``.

    Notes
    -----
    Distances are Euclidean: coordinates must be projected. Evaluate kNNDM
    folds on the pooled out-of-fold predictions (folds can be unbalanced).
    """

    def __init__(
        self,
        n_splits: int = 5,
        *,
        prediction_points: Any = None,
        coord_columns: Sequence[ColumnSpec] | None = ("x", "y"),
        maxp: float = 0.5,
        clustering: str = "kmeans",
        n_configs: int = 100,
        random_state: int | None = None,
        space: str = "geographical",
        categorical_features: Sequence[ColumnSpec] | None = None,
    ) -> None:
        self.n_splits = n_splits
        self.prediction_points = prediction_points
        self.coord_columns = coord_columns
        self.maxp = maxp
        self.clustering = clustering
        self.n_configs = n_configs
        self.random_state = random_state
        self.space = space
        self.categorical_features = categorical_features

    def fold_labels(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        return self.assign(X, groups).folds

    # ----------------------------------------------------------------- algorithm
    def _prediction_coordinates(self) -> np.ndarray:
        pp = self.prediction_points
        if pp is None:
            raise ModelError(
                "KNNDM needs prediction_points: coordinates of (a sample of) the cells to map"
            )
        if isinstance(pp, pd.DataFrame) and self.coord_columns is not None:
            return get_coordinates(pp, self.coord_columns)
        return get_coordinates(np.asarray(pp, dtype=float), None)

    def _feature_spaces(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Standardised covariates of the training rows and of the prediction points."""
        pp = self.prediction_points
        if not isinstance(pp, pd.DataFrame):
            raise ModelError(
                "KNNDM(space='feature') needs prediction_points as a DataFrame of the "
                "covariates at (a sample of) the cells to map"
            )
        layout = ColumnLayout.from_fit(
            X, coord_columns=self.coord_columns, categorical_features=self.categorical_features
        )
        mask = layout.categorical_mask
        Z = one_hot(layout.transform(X), mask, layout.categories)
        P = one_hot(layout.transform(pp), mask, layout.categories)
        if not np.isfinite(Z).all():
            row = int(np.flatnonzero(~np.isfinite(Z).all(axis=1))[0])
            raise ModelError(f"training row {row} has a missing covariate value")
        P = P[np.isfinite(P).all(axis=1)]  # cells with a missing or unseen value: no distance
        if len(P) == 0:
            raise ModelError("no prediction point has a complete set of covariates")
        sd = Z.std(axis=0, ddof=1)
        keep = sd > 0  # a constant covariate says nothing about distance
        centre = Z.mean(axis=0)
        return (
            (Z[:, keep] - centre[keep]) / sd[keep],
            (P[:, keep] - centre[keep]) / sd[keep],
        )

    def assign(self, X: Any, groups: Any = None) -> KNNDMResult:
        """Run kNNDM on the coordinates (or covariates) of ``X`` (cached for identical input)."""
        if self.space not in ("geographical", "feature"):
            raise ModelError(f"space must be 'geographical' or 'feature', got {self.space!r}")
        pcoords = None
        if self.space == "feature":
            coords, pcoords = self._feature_spaces(X)
        else:
            coords = get_coordinates(X, self.coord_columns)
        key = self._cache_key(coords, groups, pcoords)
        cache = self.__dict__.setdefault("_cache", {})
        if key in cache:
            return cache[key]
        if groups is not None:
            units, inverse = _group_coordinates(coords, groups)
        else:
            units, inverse = coords, None
        res = self._knndm(units, pcoords)
        if inverse is not None:
            res.folds = res.folds[inverse]
        cache.clear()
        cache[key] = res
        return res

    def _cache_key(self, coords: np.ndarray, groups: Any, pcoords: Any = None) -> str:
        h = hashlib.sha1(np.ascontiguousarray(coords).tobytes())
        if groups is not None:
            h.update(pd.util.hash_array(np.asarray(groups, dtype=object)).tobytes())
        pp = self._prediction_coordinates() if pcoords is None else pcoords
        h.update(np.ascontiguousarray(pp).tobytes())
        params = (
            self.n_splits,
            self.maxp,
            self.clustering,
            self.n_configs,
            repr(self.random_state),
            self.space,
        )
        h.update(repr(params).encode())
        return h.hexdigest()

    def _knndm(self, tcoords: np.ndarray, pcoords: np.ndarray | None = None) -> KNNDMResult:
        k = int(self.n_splits)
        n = len(tcoords)
        if not 1.0 / k < self.maxp < 1.0:
            raise ModelError(
                f"maxp must lie strictly between 1/k = {1 / k:.3g} and 1, got {self.maxp}"
            )
        if self.clustering not in ("kmeans", "hierarchical"):
            raise ModelError(
                f"clustering must be 'kmeans' or 'hierarchical', got {self.clustering!r}"
            )
        if n < k + 2:
            raise ModelError(
                f"kNNDM needs more than n_splits + 1 = {k + 1} training locations, got {n}"
            )
        if pcoords is None:
            pcoords = self._prediction_coordinates()
        rng = check_random_state(self.random_state)
        tree = cKDTree(tcoords)
        Gj = tree.query(tcoords, k=2)[0][:, 1]
        Gij = tree.query(pcoords, k=1)[0]

        # Is Gj stochastically smaller than Gij (training points clustered)?
        # as R's ks.test: exact p-value for small samples, asymptotic otherwise
        method = "exact" if len(Gj) * len(Gij) < 10000 else "asymp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # ties: exact falls back to asymp
            p = ks_2samp(Gj, Gij, alternative="greater", method=method).pvalue
        if p >= 0.05:
            folds = rng.permutation(np.tile(np.arange(k), -(-n // k))[:n])
            Gjstar = cv_distances(tcoords, folds)
            return KNNDMResult(
                folds=folds,
                W=float(wasserstein_distance(Gjstar, Gij)),
                q="random CV",
                Gij=Gij,
                Gj=Gj,
                Gjstar=Gjstar,
                method=self.clustering,
            )

        grid = np.unique(
            np.round(np.exp(np.linspace(np.log(k), np.log(n - 2), int(self.n_configs)))).astype(int)
        )
        n_distinct = len(np.unique(tcoords, axis=0))
        # first principal component of the (centred, unscaled) coordinates
        centre = tcoords.mean(axis=0)
        pc1 = np.linalg.svd(tcoords - centre, full_matrices=False)[2][0]
        if self.clustering == "hierarchical":
            from scipy.cluster.hierarchy import fcluster, linkage

            Z = linkage(tcoords, method="ward")

        rows = []
        best: tuple[float, int, np.ndarray] | None = None
        # One OpenMP thread for the many tiny k-means problems, where thread start-up and
        # oversubscription cost more than they give; limited once for the whole search
        # (the limit costs ~4 ms to set, about twice a k-means of 500 points).
        with threadpool_limits(limits=1, user_api="openmp"):
            for nk in grid:
                if nk > n_distinct:
                    rows.append((int(nk), np.nan))
                    continue
                if self.clustering == "hierarchical":
                    clust = fcluster(Z, t=nk, criterion="maxclust") - 1
                else:
                    clust = self._kmeans(tcoords, int(nk), rng)
                folds = _merge_clusters(clust, tcoords, centre, pc1, k)
                if np.max(np.bincount(folds, minlength=k)) / n > self.maxp:
                    rows.append((int(nk), np.nan))
                    continue
                W = float(wasserstein_distance(cv_distances(tcoords, folds), Gij))
                rows.append((int(nk), W))
                if best is None or W < best[0]:
                    best = (W, int(nk), folds)
        configs = pd.DataFrame(rows, columns=["q", "W"])
        if best is None:
            raise ModelError(
                f"kNNDM found no fold configuration with every fold below maxp={self.maxp}; "
                "raise maxp or lower n_splits"
            )
        W, q, folds = best
        return KNNDMResult(
            folds=folds,
            W=W,
            q=q,
            Gij=Gij,
            Gj=Gj,
            Gjstar=cv_distances(tcoords, folds),
            method=self.clustering,
            configurations=configs,
        )

    @staticmethod
    def _kmeans(coords: np.ndarray, nk: int, rng: np.random.RandomState) -> np.ndarray:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        # R's kmeans(): random rows as initial centres, one start, 10 iterations (the
        # caller limits OpenMP to one thread)
        km = KMeans(
            n_clusters=nk, init="random", n_init=1, max_iter=10, random_state=rng.randint(2**31 - 1)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return km.fit_predict(coords)


def _merge_clusters(
    clust: np.ndarray, coords: np.ndarray, centre: np.ndarray, pc1: np.ndarray, k: int
) -> np.ndarray:
    """Merge clusters into k folds as CAST does.

    Clusters are ordered by the projection of their centroid on the first
    principal component; each cluster with at least n/k points becomes a fold
    of its own, the rest are dealt round-robin to the remaining folds.
    """
    n = len(clust)
    ids, inverse, sizes = np.unique(clust, return_inverse=True, return_counts=True)
    sums = np.zeros((len(ids), coords.shape[1]))
    np.add.at(sums, inverse.ravel(), coords)
    score = ((sums / sizes[:, None]) - centre) @ pc1
    order = np.argsort(score, kind="stable")
    fold_of = np.full(len(ids), -1)
    next_fold = 0
    for c in order:
        if sizes[c] >= n / k:
            fold_of[c] = next_fold
            next_fold += 1
    free = [f for f in range(k) if f not in set(fold_of[fold_of >= 0].tolist())]
    rest = [c for c in order if fold_of[c] < 0]
    if rest and not free:  # cannot happen: k big clusters already hold every point
        raise ModelError("kNNDM: no fold left for the remaining clusters")
    for i, c in enumerate(rest):
        fold_of[c] = free[i % len(free)]
    return fold_of[inverse.ravel()]


def make_splitter(
    method: str,
    n_splits: int = 5,
    *,
    block_size: float | None = None,
    prediction_points: Any = None,
    coord_columns: Sequence[ColumnSpec] | None = ("x", "y"),
    random_state: int | None = None,
    space: str = "geographical",
    categorical_features: Sequence[ColumnSpec] | None = None,
) -> BaseCrossValidator:
    """The splitter named in the config (``cv.method``: kfold, block or knndm).

    ``space`` and ``categorical_features`` go to :class:`KNNDM` (``space="feature"``
    needs ``prediction_points`` as a DataFrame of covariates).
    """
    if method == "kfold":
        return RandomKFold(n_splits, random_state=random_state)
    if method == "block":
        if block_size is None:
            raise ModelError(
                "cv.block_size must be set for cv.method 'block' (metres; at least the "
                "range of residual autocorrelation)"
            )
        return SpatialBlockKFold(
            block_size, n_splits, coord_columns=coord_columns, random_state=random_state
        )
    if method == "knndm":
        return KNNDM(
            n_splits,
            prediction_points=prediction_points,
            coord_columns=coord_columns,
            random_state=random_state,
            space=space,
            categorical_features=categorical_features,
        )
    raise ModelError(f"cv.method must be one of kfold, block, knndm; got {method!r}")
