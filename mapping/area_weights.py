"""Weights that make a cross-validation speak for the mapped area, not for the profiles.

Profiles cluster where people can reach (warm, accessible land); the map covers every land
cell. The mean squared error of out-of-fold predictions at the profiles is then an estimate
of the error *at the profiles*, not of the error at a random cell of the map. Weighting
each held-out profile by the inverse of the sampling intensity around it (de Bruin et al.
2022, "Dealing with clustered samples for assessing map accuracy by cross-validation",
*Ecological Informatics* 69, 101665) makes the weighted CV error a ratio estimator of the
map's error over the area.

The intensity is known here only relative to the land, in the space of the covariates: the
ratio ``w(x) = f_area(x) / f_profiles(x)`` of the two densities is estimated by
probabilistic classification (a random forest told apart the land cells and the profiles,
each class with the same total weight: ``w = (1 - p) / p`` with ``p`` the probability of
"profile"; Sugiyama, Suzuki & Kanamori 2012, *Density Ratio Estimation in Machine
Learning*, ch. 4). Feature space, not geographic space, because the map's error follows
the covariates (the trend's extrapolation). The weights are capped at their 98th
percentile so a handful of profiles alone in unsampled land cannot carry the estimate.

What they cannot do: land with no profile at all (covariates beyond the sampled range)
gets no weight from anyone; its error is not in any CV figure (the calibrated maps'
std carries it; ``docs/calibration.md``). Measured on the world suite in
``docs/validation.md`` ("Cross-validation weighted to the mapped area").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

__all__ = ["area_weights", "effective_size"]

MIN_PROFILES = 10
"""Fewer profiles than this: equal weights (a density ratio from a handful is noise)."""


def _design(frame: pd.DataFrame, columns: Sequence[str], categorical: Sequence[str]) -> np.ndarray:
    """Numeric columns as they are, categorical ones as one 0/1 column per level."""
    parts = [frame[[c for c in columns if c not in categorical]].to_numpy(float)]
    for name in categorical:
        codes = np.asarray(frame[name])
        for level in np.unique(codes):
            parts.append((codes == level).astype(float)[:, None])
    return np.hstack(parts)


def area_weights(
    profiles: pd.DataFrame,
    cells: pd.DataFrame,
    covariates: Sequence[str],
    *,
    categorical: Sequence[str] = (),
    min_samples_leaf: int = 20,
    n_estimators: int = 200,
    cap_quantile: float = 0.98,
    random_state: int = 0,
) -> np.ndarray:
    """Inverse sampling-intensity weights of profiles relative to the mapped area.

    Parameters
    ----------
    profiles
        The profiles' covariates (one row per CV row).
    cells
        The covariates of a random sample of the map's valid cells (e.g. the 4,000 cells
        the fit stage draws for kNNDM).
    covariates
        Columns to compare (not the coordinates: the weights correct the covariate
        distribution, where the map's error lives).
    categorical
        Columns among ``covariates`` holding class codes (compared level by level).
    min_samples_leaf, n_estimators, random_state
        Of the random forest classifier (``min_samples_leaf`` smooths the ratio).
    cap_quantile
        Weights above this quantile of the weights are set to it.

    Returns
    -------
    ndarray
        One weight per row of ``profiles``, mean 1; all ones with fewer than
        :data:`MIN_PROFILES` profiles or no cells. Rows with a missing covariate get
        the mean weight 1.
    """
    n = len(profiles)
    out = np.ones(n)
    if n < MIN_PROFILES or len(cells) == 0:
        return out
    cols = [str(c) for c in covariates]
    cat = [str(c) for c in categorical if c in cols]
    both = pd.concat([profiles[cols], cells[cols]], ignore_index=True)
    ok = np.isfinite(both[[c for c in cols if c not in cat]].to_numpy(float)).all(axis=1)
    for name in cat:
        ok &= pd.notna(both[name]).to_numpy()
    X = _design(both[ok].reset_index(drop=True), cols, cat)
    is_profile = np.r_[np.ones(n, bool), np.zeros(len(cells), bool)][ok]
    n_p, n_c = int(is_profile.sum()), int((~is_profile).sum())
    if n_p < MIN_PROFILES or n_c == 0:
        return out
    # each class the same total weight: p / (1 - p) is then the density ratio itself
    sample_weight = np.where(is_profile, 1.0, n_p / n_c)
    forest = RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=min_samples_leaf,
        random_state=random_state,
        n_jobs=1,
    )
    forest.fit(X, is_profile.astype(int), sample_weight=sample_weight)
    p = np.clip(forest.predict_proba(X[is_profile])[:, 1], 1e-3, 1.0 - 1e-3)
    w = (1.0 - p) / p
    w = np.minimum(w, np.quantile(w, cap_quantile))
    out[ok[:n]] = w / w.mean()
    return out / out.mean()


def effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` of a set of weights."""
    w = np.asarray(weights, dtype=float)
    w = w[np.isfinite(w)]
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0
