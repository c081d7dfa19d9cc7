"""socmap models: scikit-learn estimators sharing one prediction interface.

``predict(X, return_std=False)`` and ``predict_quantiles(X, quantiles)``.
"""

from mapping.models.trees import QuantileGradientBoosting, QuantileRandomForest

__all__ = [
    "QuantileGradientBoosting",
    "QuantileRandomForest",
]
