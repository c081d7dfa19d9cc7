"""What a run derives from its config for the model: columns, categorical covariates, the
estimator, the profiles an interval needs. Shared by the stages, preflight and plan."""

from __future__ import annotations

from typing import Any

from mapping.config import RunConfig
from mapping.models.factory import build_model as _build_model

__all__ = ["build_model", "categorical_covariates", "min_profiles", "model_features"]


def categorical_covariates(cfg: RunConfig) -> list[str]:
    """Names of the covariates of kind ``categorical``, in config order."""
    return [c.name for c in cfg.covariates if c.kind == "categorical"]


def model_features(cfg: RunConfig) -> list[str]:
    """Columns a model sees: the coordinates, then the covariates in config order."""
    return ["x", "y", *[c.name for c in cfg.covariates]]


def build_model(cfg: RunConfig) -> Any:
    """The estimator named by ``cfg.model`` (unfitted), seeded from ``cfg.seed``.

    ``model.params`` go to the tree model (for regression kriging: to its trend).
    """
    return _build_model(cfg.model, seed=cfg.seed, categorical=categorical_covariates(cfg) or None)


def min_profiles(cfg: RunConfig) -> int:
    """Profiles an interval needs to fit and cross-validate a model."""
    return max(10, 2 * cfg.cv.n_splits)
