"""Shared helpers for socmap estimators.

Every socmap model takes ``X`` as a table whose columns are the projected
coordinates of the training points (named by ``coord_columns``, ``("x", "y")``
by default) and the covariates (every other column). Plain arrays are accepted
too, with ``coord_columns`` given as integer positions, because scikit-learn's
own tools (``parametrize_with_checks``, pipelines) pass arrays.

All socmap models share one prediction interface::

    predict(X, return_std=False) -> mean  |  (mean, std)
    predict_quantiles(X, quantiles=(0.05, 0.5, 0.95)) -> ndarray (n, len(quantiles))
    predict_stats(X, quantiles=(0.05, 0.95), statistics=None) -> {statistic: (n,) array}

``predict_stats`` gives the map statistics (:data:`STATISTICS`) of a block of cells in
one call; each model computes them its own way (regression kriging krige once for all
of them). :func:`map_statistics` calls it on any estimator, falling back on ``predict``
and ``predict_quantiles`` for estimators that lack it. A NaN statistic at a row with
valid inputs means the model could not predict that row (a kriging system that did not
factorise); the prediction stage counts such cells.

The helpers here resolve column specifications, split coordinates from
features, and encode categorical covariates the same way at ``fit`` and at
``predict`` time.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from mapping.exceptions import ModelError

ColumnSpec = Hashable | int
"""A column given by its DataFrame name or by its integer position."""

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.5, 0.95)
STATISTICS: tuple[str, ...] = ("mean", "median", "lower", "upper", "std")
"""The map statistics: mean, median, lower and upper quantile, standard deviation."""
QUANTILE_STATISTICS: tuple[str, ...] = ("median", "lower", "upper")


# --------------------------------------------------------------------------- columns
def _column_names(X: Any) -> list[Hashable] | None:
    return list(X.columns) if isinstance(X, pd.DataFrame) else None


def _n_columns(X: Any) -> int:
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise ModelError(f"X must be a 2-D table, got an array of shape {tuple(shape)}")
    return int(shape[1])


def resolve_columns(
    X: Any, columns: Sequence[ColumnSpec] | None, what: str = "column"
) -> list[int]:
    """Positions of ``columns`` in ``X``.

    Parameters
    ----------
    X
        A DataFrame or a 2-D array.
    columns
        Column names (DataFrame only) or integer positions; ``None`` means none.
    what
        Word used in error messages (``"coordinate column"``, …).

    Raises
    ------
    ModelError
        When a name is not a column of ``X`` or a position is out of range.
    """
    if columns is None:
        return []
    if isinstance(columns, (str, int, np.integer)):
        columns = [columns]
    names = _column_names(X)
    n = _n_columns(X)
    out: list[int] = []
    for c in columns:
        if names is not None and c in names:
            out.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not -n <= int(c) < n:
                raise ModelError(f"{what} {c} is out of range for a table with {n} columns")
            out.append(int(c) % n)
        else:
            have = ", ".join(map(str, names)) if names is not None else f"{n} unnamed columns"
            raise ModelError(f"{what} {c!r} not found in X (columns: {have})")
    if len(set(out)) != len(out):
        raise ModelError(f"{what}s {list(columns)!r} name the same column twice")
    return out


def coordinate_indices(
    X: Any, coord_columns: Sequence[ColumnSpec] | None, *, required: bool = True
) -> list[int]:
    """Positions of the two coordinate columns in ``X``.

    With ``required=False`` an X that holds none of the coordinate columns
    (e.g. a plain array while ``coord_columns`` are names) gives ``[]``; an X
    holding only one of them is always an error.
    """
    if coord_columns is None:
        if required:
            raise ModelError("coord_columns must name the two coordinate columns, got None")
        return []
    cols = list(coord_columns)
    if len(cols) != 2:
        raise ModelError(f"coord_columns must name two columns (x, y), got {cols!r}")
    if not required:
        names = _column_names(X)
        present = [
            (names is not None and c in names)
            or (isinstance(c, (int, np.integer)) and not isinstance(c, bool))
            for c in cols
        ]
        if not any(present):
            return []
        if not all(present):
            missing = [c for c, p in zip(cols, present, strict=True) if not p]
            raise ModelError(f"coordinate column {missing[0]!r} not found in X")
    return resolve_columns(X, cols, what="coordinate column")


def get_coordinates(X: Any, coord_columns: Sequence[ColumnSpec] | None) -> np.ndarray:
    """The ``(n, 2)`` float array of projected coordinates held in ``X``.

    ``X`` may also be an ``(n, 2)`` array of coordinates itself when
    ``coord_columns`` is ``None``.
    """
    if coord_columns is None:
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ModelError(f"expected an (n, 2) array of coordinates, got shape {arr.shape}")
        return arr
    idx = coordinate_indices(X, coord_columns, required=True)
    arr = (
        X.iloc[:, idx].to_numpy(dtype=float)
        if isinstance(X, pd.DataFrame)
        else np.asarray(X)[:, idx].astype(float)
    )
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ModelError(f"coordinates of row {row} are missing or not finite")
    return arr


def feature_indices(
    X: Any, coord_columns: Sequence[ColumnSpec] | None, *, use_coordinates: bool = False
) -> list[int]:
    """Positions of the feature columns: every column but the coordinates.

    With ``use_coordinates=True`` every column is a feature.
    """
    n = _n_columns(X)
    if use_coordinates:
        return list(range(n))
    coords = set(coordinate_indices(X, coord_columns, required=False))
    return [i for i in range(n) if i not in coords]


def check_quantiles(quantiles: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate quantile levels: a 1-D float array, each strictly in (0, 1)."""
    q = np.atleast_1d(np.asarray(quantiles, dtype=float))
    if q.ndim != 1 or q.size == 0:
        raise ValueError(f"quantiles must be a non-empty 1-D sequence, got {quantiles!r}")
    if not np.all((q > 0) & (q < 1)):
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {q.tolist()}")
    return q


def gaussian_quantiles(
    mean: np.ndarray, std: np.ndarray, quantiles: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Quantiles of N(mean, std²) as an ``(n, len(quantiles))`` array."""
    q = check_quantiles(quantiles)
    z = norm.ppf(q)
    return np.asarray(mean, dtype=float)[:, None] + np.asarray(std, dtype=float)[:, None] * z


def gaussian_stats(
    mu: np.ndarray,
    mean_var: np.ndarray,
    var: np.ndarray,
    lo: float,
    hi: float,
    *,
    log: bool,
) -> dict[str, np.ndarray]:
    """Map statistics of a Gaussian prediction ``N(mu, var)``, on the log scale when ``log``.

    ``mean``, ``std``, ``lower`` (quantile ``lo``), ``median`` and ``upper`` (``hi``). With
    ``log`` the prediction is of ln(stock): quantiles are exponentiated, the mean is the
    log-normal ``exp(mu + mean_var / 2)`` and the std ``mean * sqrt(exp(var) - 1)``.
    ``mean_var`` is the variance behind the mean's back-transform (the model's own; a
    calibrated ``var`` widens the spread without moving the mean).
    """
    sd = np.sqrt(var)
    q = {"lower": mu + norm.ppf(lo) * sd, "median": mu, "upper": mu + norm.ppf(hi) * sd}
    if not log:
        return {"mean": mu, "std": sd, **q}
    mean = np.exp(mu + 0.5 * mean_var)
    std = mean * np.sqrt(np.expm1(var))
    return {"mean": mean, "std": std, **{k: np.exp(a) for k, a in q.items()}}


# --------------------------------------------------------------------------- map statistics
def _supports_return_std(model: Any) -> bool:
    try:
        return "return_std" in inspect.signature(model.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False


def _has_quantiles(model: Any) -> bool:
    return callable(getattr(model, "predict_quantiles", None))


def available_statistics(model: Any) -> tuple[str, ...]:
    """The statistics ``model`` can give: all of :data:`STATISTICS` for a model with
    ``predict(X, return_std=True)`` or ``predict_quantiles``, else only ``("mean",)``."""
    if _supports_return_std(model) or _has_quantiles(model):
        return STATISTICS
    return ("mean",)


def quantile_pair(quantiles: Sequence[float]) -> tuple[float, float]:
    """``(lower, upper)`` levels, checked: ``0 < lower < upper < 1``."""
    q = tuple(float(v) for v in quantiles)
    if len(q) != 2 or not 0.0 < q[0] < q[1] < 1.0:
        raise ModelError(
            f"quantiles {tuple(quantiles)} must be (lower, upper) with 0 < lower < upper < 1"
        )
    return q  # type: ignore[return-value]


def interface_statistics(
    model: Any,
    X: Any,
    quantiles: Sequence[float] = (0.05, 0.95),
    statistics: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Map statistics from ``predict(X[, return_std=True])`` and ``predict_quantiles``.

    ``std`` (and, without ``predict_quantiles``, the Gaussian quantiles) from
    ``predict(X, return_std=True)``; ``median``, ``lower`` and ``upper`` from
    ``predict_quantiles(X, (lower, 0.5, upper))`` when the model has it. Each model
    method is called at most once. Returns ``(n,)`` float64 arrays.
    """
    stats = tuple(STATISTICS if statistics is None else statistics)
    lo, hi = quantile_pair(quantiles)
    want_q = [s for s in stats if s in QUANTILE_STATISTICS]
    res: dict[str, np.ndarray] = {}
    mean = std = None
    if "std" in stats or (want_q and not _has_quantiles(model)):
        mean, std = model.predict(X, return_std=True)
    elif "mean" in stats:
        mean = model.predict(X)
    if want_q:
        if _has_quantiles(model):
            q = np.asarray(model.predict_quantiles(X, [lo, 0.5, hi]), dtype="float64")
            if q.ndim != 2 or q.shape[1] != 3:
                raise ModelError(
                    f"{type(model).__name__}.predict_quantiles returned shape {q.shape}, "
                    "expected (n, 3)"
                )
            qs = {"lower": q[:, 0], "median": q[:, 1], "upper": q[:, 2]}
        else:
            m, s = np.asarray(mean, dtype="float64"), np.asarray(std, dtype="float64")
            qs = {"lower": m + norm.ppf(lo) * s, "median": m, "upper": m + norm.ppf(hi) * s}
        res.update({k: qs[k] for k in want_q})
    if "mean" in stats:
        res["mean"] = np.asarray(mean, dtype="float64").ravel()
    if "std" in stats:
        res["std"] = np.asarray(std, dtype="float64").ravel()
    return res


def selected_statistics(
    full: dict[str, np.ndarray], statistics: Sequence[str] | None
) -> dict[str, np.ndarray]:
    """The requested ``statistics`` of ``full`` as ``(n,)`` float64 arrays."""
    stats = STATISTICS if statistics is None else statistics
    return {k: np.asarray(full[k], dtype="float64").ravel() for k in stats}


def map_statistics(
    model: Any,
    X: Any,
    quantiles: Sequence[float] = (0.05, 0.95),
    statistics: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """``model.predict_stats(X, quantiles, statistics)``, or :func:`interface_statistics`
    for an estimator without ``predict_stats`` (a plain scikit-learn regressor)."""
    own = getattr(model, "predict_stats", None)
    if callable(own):
        return own(X, quantiles, statistics)  # type: ignore[no-any-return]
    return interface_statistics(model, X, quantiles, statistics)


class MapStatisticsMixin:
    """``predict_stats`` from the model's ``predict`` and ``predict_quantiles``."""

    def predict_stats(
        self,
        X: Any,
        quantiles: Sequence[float] = (0.05, 0.95),
        statistics: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Map statistics (:data:`STATISTICS`, or the subset ``statistics``) of the rows
        of ``X``: ``(n,)`` float64 arrays; ``lower`` and ``upper`` are the ``quantiles``."""
        return interface_statistics(self, X, quantiles, statistics)


# --------------------------------------------------------------------------- categories
@dataclass
class ColumnLayout:
    """Which input columns are features and how categorical ones are coded.

    Built once at ``fit`` (:meth:`from_fit`) and applied unchanged at
    ``predict`` (:meth:`transform`), so a category seen at ``fit`` keeps its
    code and one never seen becomes missing (``NaN``).

    Attributes
    ----------
    n_columns
        Number of columns of ``X`` at fit.
    names
        Column names at fit (``None`` for arrays).
    coord_idx
        Positions of the coordinate columns (may be empty).
    feature_idx
        Positions of the feature columns, in order.
    categories
        For each feature, the sorted levels seen at fit if it is categorical,
        else ``None``.
    """

    n_columns: int
    names: list[Hashable] | None
    coord_idx: list[int]
    feature_idx: list[int]
    categories: list[np.ndarray | None] = field(default_factory=list)

    @classmethod
    def from_fit(
        cls,
        X: Any,
        *,
        coord_columns: Sequence[ColumnSpec] | None,
        use_coordinates: bool = False,
        categorical_features: Sequence[ColumnSpec] | np.ndarray | None = None,
    ) -> ColumnLayout:
        """Work out the layout of the training table ``X``.

        A column is categorical when it has a pandas ``category`` (or
        ``object``/``string``) dtype, or when ``categorical_features`` names it
        (by name, position or as a boolean mask over all columns).
        """
        n = _n_columns(X)
        names = _column_names(X)
        coord_idx = coordinate_indices(X, coord_columns, required=False)
        feat = feature_indices(X, coord_columns, use_coordinates=use_coordinates)
        if not feat:
            raise ModelError("X has no covariate columns besides the coordinates")
        cat_cols = set(_categorical_positions(X, categorical_features))
        cats: list[np.ndarray | None] = []
        for j in feat:
            if j in cat_cols:
                col = _column(X, j)
                levels = pd.unique(col[pd.notna(col)])
                try:
                    levels = np.sort(levels)
                except TypeError:  # mixed types: order by text
                    levels = np.array(sorted(levels, key=str), dtype=object)
                cats.append(np.asarray(levels))
            else:
                cats.append(None)
        return cls(n, names, coord_idx, feat, cats)

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature columns (``"x<i>"`` for unnamed arrays)."""
        if self.names is None:
            return [f"x{j}" for j in self.feature_idx]
        return [str(self.names[j]) for j in self.feature_idx]

    @property
    def categorical_mask(self) -> np.ndarray:
        """Boolean mask over the feature columns: which are categorical."""
        return np.array([c is not None for c in self.categories], dtype=bool)

    def encode(self, X: Any, *, unknown: float = np.nan) -> Any:
        """``X`` with its categorical feature columns replaced by level codes.

        Codes are ``0 … n_levels - 1`` in the order of :attr:`categories`;
        levels unseen at fit and missing values become ``unknown``. Every other
        column is left as it is. A DataFrame is matched by column name, an
        array by position.
        """
        if isinstance(X, pd.DataFrame):
            out = X.copy()
            for j, levels in zip(self.feature_idx, self.categories, strict=True):
                if levels is None:
                    continue
                name = self.names[j] if self.names is not None else X.columns[j]
                if name not in X.columns:
                    raise ModelError(f"covariate {name!r} seen at fit is missing from X")
                out[name] = encode_categories(X[name].to_numpy(dtype=object), levels, unknown)
            return out
        arr = np.array(X, dtype=float, copy=True)
        for j, levels in zip(self.feature_idx, self.categories, strict=True):
            if levels is not None:
                arr[:, j] = encode_categories(arr[:, j], levels, unknown)
        return arr

    def transform(self, X: Any, *, unknown: float = np.nan) -> np.ndarray:
        """The float feature matrix of ``X`` (coordinates dropped, categories coded)."""
        n = _n_columns(X)
        names = _column_names(X)
        if self.names is not None and names is not None:
            wanted = [self.names[j] for j in self.feature_idx]
            missing = [c for c in wanted if c not in names]
            if missing:
                raise ModelError(f"covariate {missing[0]!r} seen at fit is missing from X")
            pos = [names.index(c) for c in wanted]
        else:
            if n != self.n_columns:
                raise ModelError(f"X has {n} columns; the model was fitted with {self.n_columns}")
            pos = list(self.feature_idx)
        enc = self.encode(X, unknown=unknown)
        try:
            if isinstance(enc, pd.DataFrame):
                return enc.iloc[:, pos].to_numpy(dtype=float)
            return np.asarray(enc, dtype=float)[:, pos]
        except (TypeError, ValueError):
            raise ModelError(
                "X holds a non-numeric covariate that was not categorical at fit"
            ) from None


def encode_categories(values: Any, levels: np.ndarray, unknown: float = np.nan) -> np.ndarray:
    """Codes of ``values`` among ``levels`` as floats; unseen or missing -> ``unknown``."""
    codes = pd.Index(levels).get_indexer(pd.Index(np.asarray(values, dtype=object)))
    out = codes.astype(float)
    out[codes < 0] = unknown
    return out


def one_hot(codes: np.ndarray, mask: np.ndarray, categories: list[np.ndarray | None]) -> np.ndarray:
    """Expand categorical code columns into 0/1 indicator columns.

    Numeric columns are kept in place; a categorical column with ``L`` levels
    becomes ``L`` indicators (all zero for an unseen or missing level).
    """
    parts: list[np.ndarray] = []
    for k in range(codes.shape[1]):
        if not mask[k]:
            parts.append(codes[:, k : k + 1])
            continue
        levels = categories[k]
        assert levels is not None
        ind = np.zeros((codes.shape[0], len(levels)))
        ok = np.isfinite(codes[:, k]) & (codes[:, k] >= 0)
        ind[np.flatnonzero(ok), codes[ok, k].astype(int)] = 1.0
        parts.append(ind)
    return np.hstack(parts) if parts else np.empty((codes.shape[0], 0))


def one_hot_groups(mask: np.ndarray, categories: list[np.ndarray | None]) -> np.ndarray:
    """For each one-hot output column, the index of the feature it came from."""
    groups: list[int] = []
    for k, is_cat in enumerate(mask):
        width = len(categories[k]) if is_cat else 1  # type: ignore[arg-type]
        groups.extend([k] * width)
    return np.asarray(groups, dtype=int)


def _column(X: Any, j: int) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        return X.iloc[:, j].to_numpy(dtype=object if _is_categorical(X.iloc[:, j]) else None)
    return np.asarray(X)[:, j]


def _is_categorical(s: pd.Series) -> bool:
    return (
        isinstance(s.dtype, pd.CategoricalDtype)
        or s.dtype == object
        or pd.api.types.is_string_dtype(s.dtype)
    )


def _categorical_positions(
    X: Any, categorical_features: Sequence[ColumnSpec] | np.ndarray | None
) -> list[int]:
    out: set[int] = set()
    if isinstance(X, pd.DataFrame):
        out.update(j for j in range(X.shape[1]) if _is_categorical(X.iloc[:, j]))
    elif np.asarray(X).dtype == object:
        raise ModelError("X is an array of objects; pass a DataFrame with category columns")
    if categorical_features is not None:
        cf = np.asarray(categorical_features)
        if cf.dtype == bool:
            if cf.shape != (_n_columns(X),):
                raise ModelError(
                    f"categorical_features mask has {cf.size} entries; X has {_n_columns(X)} columns"
                )
            out.update(np.flatnonzero(cf).tolist())
        else:
            out.update(resolve_columns(X, list(categorical_features), what="categorical feature"))
    return sorted(out)
