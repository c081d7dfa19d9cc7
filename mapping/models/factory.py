"""Build an unfitted estimator from the model section of a workflow config.

The factory reads the section by attribute (``type``, ``trend``, ``params``, ``variogram``,
``n_neighbors``, ``max_distance``, ``log_transform``) and takes the seed and the
categorical columns as plain arguments, so it needs no import of the config module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mapping.models.kriging import OrdinaryKriging, RegressionKriging
from mapping.models.linear_forest import LinearQuantileForest
from mapping.models.trees import QuantileGradientBoosting, QuantileRandomForest
from mapping.models.variogram import Variogram

__all__ = ["build_model", "linear_trend"]


def build_model(section: Any, *, seed: int | None, categorical: Sequence[str] | None) -> Any:
    """The estimator a config's ``model`` section names (unfitted), seeded with ``seed``.

    Parameters
    ----------
    section
        The ``model`` section (:class:`mapping.config.ModelConfig` or anything with
        the same attributes). ``section.params`` go to the tree model (for regression
        kriging: to its trend).
    seed
        ``random_state`` of the tree models.
    categorical
        Names of the categorical covariates (``None`` or empty: none).
    """
    cats = list(categorical) if categorical else None
    params = dict(section.params)
    if section.type != "regression_kriging":
        return _trees(section.type, seed, cats, params)
    v = section.variogram
    variogram: Any = v.model
    if v.psill is not None and v.range is not None:
        variogram = Variogram(
            v.model, psill=v.psill, range=v.range, nugget=v.nugget or 0.0, nu=v.nu or 0.5
        )
    kriging = OrdinaryKriging(
        variogram=variogram,
        n_neighbors=section.n_neighbors,
        max_distance=section.max_distance,
        nu=v.nu or 0.5,
        cutoff=v.cutoff,
        n_lags=v.n_lags,
        bound_range=v.bound_range,
    )
    return RegressionKriging(
        trend=_trees(section.trend, seed, cats, params),
        kriging=kriging,
        log_transform=section.log_transform,
    )


def _trees(kind: str, seed: int | None, cats: list[str] | None, params: dict[str, Any]) -> Any:
    if kind == "random_forest":
        return QuantileRandomForest(random_state=seed, categorical_features=cats, **params)
    if kind == "linear_forest":
        return LinearQuantileForest(random_state=seed, categorical_features=cats, **params)
    if kind == "boosted_trees":
        return QuantileGradientBoosting(random_state=seed, categorical_features=cats, **params)
    return linear_trend(cats, params)


def linear_trend(categorical: Sequence[str] | None, params: dict[str, Any]) -> BaseEstimator:
    """Ordinary least squares, with categorical columns one-hot encoded (first level dropped)."""
    if not categorical:
        return LinearRegression(**params)
    encode = make_column_transformer(
        (
            OneHotEncoder(handle_unknown="ignore", drop="first", sparse_output=False),
            list(categorical),
        ),
        remainder="passthrough",
    )
    return make_pipeline(encode, LinearRegression(**params))
