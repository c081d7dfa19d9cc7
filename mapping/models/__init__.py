"""socmap models: scikit-learn estimators sharing one prediction interface.

``predict(X, return_std=False)`` and ``predict_quantiles(X, quantiles)``.
"""

from mapping.models.kriging import OrdinaryKriging, RegressionKriging, krige_residuals
from mapping.models.trees import QuantileGradientBoosting, QuantileRandomForest
from mapping.models.variogram import Variogram, sample_variogram

__all__ = [
    "OrdinaryKriging",
    "QuantileGradientBoosting",
    "QuantileRandomForest",
    "RegressionKriging",
    "Variogram",
    "krige_residuals",
    "sample_variogram",
]
