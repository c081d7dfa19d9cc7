"""Cross-validation for maps: splitters, metrics and a CV driver.

Profiles are clustered in space, so random folds put test points next to
training points far more often than the map puts prediction cells next to
them, and overstate accuracy; spatial blocks can do the opposite where
sampling is even. Three splitters, all usable as ``cv=`` in scikit-learn's
``cross_validate`` and ``GridSearchCV``:

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

:func:`metrics_table` computes R², RMSE, MAE, MBE, NSE, NNSE and interval
coverage; :func:`cross_validate_model` runs a model through a splitter and
returns the out-of-fold predictions, intervals and metrics (:class:`CVResult`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.base import clone
from sklearn.model_selection import BaseCrossValidator, GroupKFold, KFold
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from mapping.aoa import AreaOfApplicability
from mapping.calibration import (
    ErrorModel,
    feature_variogram_slope,
    fit_error_model,
    interval_log_moments,
)
from mapping.exceptions import ModelError
from mapping.models.base import ColumnLayout, ColumnSpec, get_coordinates, one_hot

__all__ = [
    "KNNDM",
    "CVResult",
    "IntervalFit",
    "KNNDMResult",
    "RandomKFold",
    "SpatialBlockKFold",
    "cross_validate_model",
    "cv_moments",
    "cv_report",
    "fit_interval",
    "make_splitter",
    "metrics_table",
    "observed_variance",
]


# --------------------------------------------------------------------------- metrics
def metrics_table(
    y_true: Any,
    y_pred: Any,
    lower: Any = None,
    upper: Any = None,
) -> dict[str, float]:
    """Accuracy statistics of predictions against observations.

    Pairs where the observation or the prediction is missing are left out
    (``n`` counts the pairs used).

    Returns
    -------
    dict with

    ``n``
        Number of pairs.
    ``r2``
        Coefficient of determination ``1 - SSE/SST`` (SST about the mean of
        the observations); can be negative.
    ``r2_pearson``
        Squared Pearson correlation of predictions and observations (blind to
        bias and scale; reported for comparison with studies that use it).
    ``rmse``, ``mae``
        Root mean squared and mean absolute error.
    ``mbe``
        Mean bias error ``mean(pred - obs)``: positive means the model
        over-predicts.
    ``nse``
        Nash-Sutcliffe efficiency ``1 - SSE/SST`` (numerically equal to
        ``r2`` as defined here).
    ``nnse``
        Normalised NSE ``1 / (2 - NSE)`` in (0, 1]; 0.5 is as good as the mean.
    ``picp``
        Prediction-interval coverage probability: share of observations with
        ``lower <= obs <= upper`` (NaN without an interval).
    ``mean_width``
        Mean of ``upper - lower`` (NaN without an interval).
    """
    obs = np.asarray(y_true, dtype=float).ravel()
    pred = np.asarray(y_pred, dtype=float).ravel()
    if obs.shape != pred.shape:
        raise ValueError(f"y_true has {obs.size} values, y_pred {pred.size}")
    have_interval = lower is not None and upper is not None
    if have_interval:
        lo = np.asarray(lower, dtype=float).ravel()
        hi = np.asarray(upper, dtype=float).ravel()
        if lo.shape != obs.shape or hi.shape != obs.shape:
            raise ValueError("lower and upper must have the same length as y_true")
    ok = np.isfinite(obs) & np.isfinite(pred)
    obs, pred = obs[ok], pred[ok]
    n = int(obs.size)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        nan = float("nan")
        out.update(r2=nan, r2_pearson=nan, rmse=nan, mae=nan, mbe=nan, nse=nan, nnse=nan)
        out.update(picp=nan, mean_width=nan)
        return out
    err = pred - obs
    sse = float(np.sum(err**2))
    sst = float(np.sum((obs - obs.mean()) ** 2))
    nse = 1.0 - sse / sst if sst > 0 else float("nan")
    if n > 1 and np.std(obs) > 0 and np.std(pred) > 0:
        r = float(np.corrcoef(obs, pred)[0, 1])
        r2p = r * r
    else:
        r2p = float("nan")
    out.update(
        r2=nse,
        r2_pearson=r2p,
        rmse=float(np.sqrt(sse / n)),
        mae=float(np.mean(np.abs(err))),
        mbe=float(np.mean(err)),
        nse=nse,
        nnse=1.0 / (2.0 - nse) if np.isfinite(nse) else float("nan"),
    )
    if have_interval:
        lo, hi = lo[ok], hi[ok]
        good = np.isfinite(lo) & np.isfinite(hi)
        if good.any():
            out["picp"] = float(np.mean((obs[good] >= lo[good]) & (obs[good] <= hi[good])))
            out["mean_width"] = float(np.mean(hi[good] - lo[good]))
        else:
            out["picp"] = out["mean_width"] = float("nan")
    else:
        out["picp"] = out["mean_width"] = float("nan")
    return out


# --------------------------------------------------------------------------- splitters
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

        # R's kmeans(): random rows as initial centres, one start, 10 iterations.
        # One OpenMP thread: many tiny problems, where thread start-up and
        # oversubscription cost more than they give.
        km = KMeans(
            n_clusters=nk, init="random", n_init=1, max_iter=10, random_state=rng.randint(2**31 - 1)
        )
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
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


# --------------------------------------------------------------------------- CV driver
@dataclass
class CVResult:
    """Out-of-fold predictions and their accuracy.

    Attributes
    ----------
    predictions
        One row per input row: ``row`` (position in X), ``fold``, ``observed``,
        ``predicted``, ``lower``, ``upper`` (NaN where the model gives no
        interval or the row was never a test row).
    per_fold
        Metrics of every fold (one row per fold, column ``fold``).
    pooled
        Metrics of all out-of-fold predictions together: the headline
        numbers (CAST's "global validation").
    quantiles
        Levels of ``lower`` and ``upper``.
    splitter
        Name of the splitter class.
    """

    predictions: pd.DataFrame
    per_fold: pd.DataFrame
    pooled: dict[str, float]
    quantiles: tuple[float, float]
    splitter: str

    def summary(self) -> pd.DataFrame:
        """Pooled metrics as a one-row table, with the interval levels and splitter."""
        row = {
            "splitter": self.splitter,
            "lower_q": self.quantiles[0],
            "upper_q": self.quantiles[1],
        }
        row.update(self.pooled)
        return pd.DataFrame([row])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (pooled and per-fold metrics)."""
        return {
            "splitter": self.splitter,
            "quantiles": list(self.quantiles),
            "pooled": self.pooled,
            "per_fold": self.per_fold.to_dict(orient="records"),
        }


def _take(X: Any, idx: np.ndarray) -> Any:
    if isinstance(X, (pd.DataFrame, pd.Series)):
        return X.iloc[idx]
    return np.asarray(X)[idx]


def cross_validate_model(
    estimator: Any,
    X: Any,
    y: Any,
    cv: BaseCrossValidator | int = 5,
    quantiles: tuple[float, float] = (0.05, 0.95),
    groups: Any = None,
) -> CVResult:
    """Cross-validate a model and keep its out-of-fold predictions and intervals.

    For each split a clone of ``estimator`` is fitted on the training rows and
    predicts the test rows: the mean with ``predict`` and, when the model has
    ``predict_quantiles``, the interval ``quantiles``.

    Parameters
    ----------
    estimator
        A scikit-learn regressor (socmap models give intervals too).
    X, y
        Training table (coordinates + covariates) and target.
    cv
        A splitter, or an int for :class:`RandomKFold`.
    quantiles
        Lower and upper levels of the prediction interval.
    groups
        Profile id per row, so a profile's rows never straddle folds.

    Returns
    -------
    CVResult
    """
    lo_q, hi_q = (float(q) for q in quantiles)
    if not 0 < lo_q < hi_q < 1:
        raise ValueError(f"quantiles must satisfy 0 < lower < upper < 1, got {quantiles}")
    if isinstance(cv, int):
        cv = RandomKFold(cv)
    y_arr = np.asarray(y, dtype=float).ravel()
    n = len(y_arr)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows, y has {n}")
    pred = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    mu = np.full(n, np.nan)
    var = np.full(n, np.nan)
    components = hasattr(estimator, "predict_components")
    fold = np.full(n, -1)
    rows = []
    for k, (train, test) in enumerate(cv.split(X, y_arr, groups)):
        if len(test) == 0:
            continue
        if np.any(fold[test] >= 0):
            raise ModelError("the splitter puts a row in more than one test fold")
        model = clone(estimator).fit(_take(X, train), y_arr[train])
        Xt = _take(X, test)
        pred[test] = model.predict(Xt)
        if hasattr(model, "predict_quantiles"):
            q = np.asarray(model.predict_quantiles(Xt, (lo_q, hi_q)))
            lower[test], upper[test] = q[:, 0], q[:, -1]
        if components:
            c = model.predict_components(Xt)
            mu[test] = c["trend"] + c["residual"]
            var[test] = np.maximum(c["trend_var"] + c["krige_var"], 0.0)
        fold[test] = k
        m = metrics_table(y_arr[test], pred[test], lower[test], upper[test])
        rows.append({"fold": k, "n_train": len(train), **m})
    predictions = pd.DataFrame(
        {
            "row": np.arange(n),
            "fold": fold,
            "observed": y_arr,
            "predicted": pred,
            "lower": lower,
            "upper": upper,
        }
    )
    if components:  # the fold model's own scale (log for log models): for calibration
        predictions["mu"] = mu
        predictions["var"] = var
    tested = fold >= 0
    pooled = metrics_table(y_arr[tested], pred[tested], lower[tested], upper[tested])
    return CVResult(
        predictions=predictions,
        per_fold=pd.DataFrame(rows),
        pooled=pooled,
        quantiles=(lo_q, hi_q),
        splitter=type(cv).__name__,
    )


def cv_report(results: Mapping[str, CVResult]) -> pd.DataFrame:
    """One row of pooled metrics per depth interval (keys like ``"0-30"``)."""
    frames = [r.summary().assign(interval=name) for name, r in results.items()]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["interval", *[c for c in out.columns if c != "interval"]]]


# --------------------------------------------------------------------------- fit stage
@dataclass
class IntervalFit:
    """What fitting one depth interval gives: the model, its AOA and its cross-validation.

    ``predictions`` are the out-of-fold predictions with the ``profile_id`` of each row;
    ``warnings`` counts each distinct warning (first line) raised while cross-validating
    and fitting, so a caller can say it once instead of once per fold.
    """

    model: Any
    aoa: AreaOfApplicability | None
    cv: CVResult
    predictions: pd.DataFrame
    warnings: dict[str, int]
    error_model: ErrorModel | None = None


def fit_interval(
    template: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    splitter: BaseCrossValidator,
    quantiles: tuple[float, float],
    profile_ids: np.ndarray,
    aoa: bool = True,
    categorical: Sequence[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> IntervalFit:
    """Cross-validate a clone of ``template``, fit another clone on all rows, fit the AOA.

    The area of applicability (Meyer & Pebesma 2021) is fitted on the training
    covariates, weighted by the model's (or its trend's) feature importances, with the
    threshold from the cross-validation folds; its ``train_di_`` (each profile's DI to
    the training data of its fold) becomes the ``di`` column of the predictions.

    With ``calibration`` (keyword arguments of
    :func:`mapping.calibration.fit_error_model`: ``kind``, ``extrapolate``,
    ``min_per_bin``, ``max_bins``) the AOA is always fitted and an error model of the
    out-of-fold errors against the DI is fitted too (``docs/calibration.md``): errors and
    variances on the model's scale (log for log models), from the fold models'
    ``predict_components`` (``mu``, ``var`` columns) or else their Gaussian intervals.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cv = cross_validate_model(clone(template), X, y, cv=splitter, quantiles=quantiles)
        model = clone(template).fit(X, y)
    counts: dict[str, int] = {}
    for w in caught:
        text = str(w.message).splitlines()[0]
        counts[text] = counts.get(text, 0) + 1
    area = None
    predictions = cv.predictions.assign(profile_id=profile_ids[cv.predictions["row"]])
    if aoa or calibration is not None:
        folds = cv.predictions.sort_values("row")["fold"].to_numpy()
        trend = getattr(model, "trend_", model)
        weights = trend if hasattr(trend, "feature_importances_") else None
        area = AreaOfApplicability(categorical_features=list(categorical or []) or None)
        area = area.fit(X, weights=weights, folds=folds)
        predictions["di"] = np.asarray(area.train_di_, dtype=float)[predictions["row"]]
        predictions["xd"] = np.asarray(area.train_xd_, dtype=float)[predictions["row"]]
    error_model = None
    if calibration is not None:
        log = bool(getattr(model, "log_transform", False))
        mu, var = cv_moments(predictions, cv.quantiles, log=log)
        obs = predictions["observed"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            errors = mu - (np.log(obs) if log else obs)
        tested = predictions["fold"].to_numpy() >= 0
        errors = np.where(tested & np.isfinite(errors), errors, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            target = np.log(np.asarray(y, dtype=float)) if log else np.asarray(y, dtype=float)
        assert area is not None  # fitted above whenever an error model is
        slope = feature_variogram_slope(
            area.transform(X), target, unit=area.mean_distance_, random_state=0
        )
        try:
            error_model = fit_error_model(
                errors,
                var,
                predictions["di"],
                xd=predictions["xd"],
                observed_var=observed_variance(obs, log=log),
                range_slope=slope,
                **dict(calibration),
            )
        except ModelError as exc:  # too few CV points: the model's own variance, said once
            text = f"no calibrated intervals: {exc}"
            counts[text] = counts.get(text, 0) + 1
    return IntervalFit(
        model=model,
        aoa=area if aoa or calibration is not None else None,
        cv=cv,
        predictions=predictions,
        warnings=counts,
        error_model=error_model,
    )


def observed_variance(observed: Any, *, log: bool) -> float:
    """Sample variance of the observations on the model's scale (``ln`` for log models)."""
    o = np.asarray(observed, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        o = np.log(o) if log else o
    o = o[np.isfinite(o)]
    return float(np.var(o, ddof=1)) if o.size > 1 else float("nan")


def cv_moments(
    predictions: pd.DataFrame, quantiles: tuple[float, float], *, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold mean and variance on the model's scale (log for log models).

    The fold models' own (``mu``, ``var`` columns of the CV predictions) or, without
    them, recovered from their Gaussian interval
    (:func:`mapping.calibration.interval_log_moments`).
    """
    if "mu" in predictions and "var" in predictions:
        return predictions["mu"].to_numpy(float), predictions["var"].to_numpy(float)
    return interval_log_moments(predictions["lower"], predictions["upper"], quantiles, log=log)
