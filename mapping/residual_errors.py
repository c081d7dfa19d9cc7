"""The errors of a map that a Monte Carlo of its zone totals needs beyond each cell's own.

* :func:`residual_variogram`: the correlation of the residual errors (the fitted residual
  variogram of a regression-kriging model);
* :func:`residual_mean_sd`: the error of the residuals' mean level, shared by every cell far
  from data (generalised least squares under the model's own variogram); :class:`LocalLevel`
  the share of it each cell carries (none where the data pin the cell down);
* :func:`cv_block_error_sd`: the regional (block-scale) error of the trend, seen by spatial
  cross-validation; :func:`regional_error_sd` the same from any grouping of the held-out
  profiles (e.g. :func:`spatial_groups`), pooled over depth intervals;
* :func:`cv_error_variogram`: the correlation of the map's errors seen by spatial
  cross-validation (a variogram of the standardised out-of-fold errors);
* :func:`interval_variograms` and :func:`interval_common_sd`: those, checked and keyed by
  depth interval, as :func:`mapping.uncertainty.zone_total_draws` takes them.

The per-cell error variance calibrated against the dissimilarity index is another model
(:class:`mapping.calibration.ErrorModel`); this module is about how cell errors go together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import cho_factor, cho_solve
from scipy.spatial.distance import cdist

from mapping.exceptions import ConfigError, InputError, ModelError
from mapping.models.variogram import (
    Variogram,
    default_cutoff,
    sample_variogram,
    unit_semivariance,
)
from mapping.units import format_interval, interval_key

__all__ = [
    "LocalLevel",
    "cv_block_error_sd",
    "cv_error_variogram",
    "gls_mean_sd",
    "interval_common_sd",
    "interval_variograms",
    "regional_error_sd",
    "residual_mean_sd",
    "residual_variogram",
    "spatial_groups",
    "within_group_covariance",
]


def residual_variogram(model: Any) -> Variogram:
    """The fitted residual variogram of a model (``RegressionKriging.variogram_``).

    Raises
    ------
    ModelError
        The model has no fitted residual variogram (a tree model, or residuals all equal);
        fit one to its out-of-bag or cross-validated residuals with
        :meth:`mapping.models.variogram.Variogram.fit`.
    """
    v = getattr(model, "variogram_", None)
    if not isinstance(v, Variogram):
        raise ModelError(
            f"{type(model).__name__} has no fitted residual variogram (variogram_); fit one to "
            "its out-of-bag or cross-validated residuals with Variogram.fit"
        )
    return v


def interval_variograms(
    variogram: Variogram | Mapping[str, Variogram], labels: Sequence[str]
) -> list[Variogram]:
    """One variogram per interval label: ``variogram`` for all, or looked up by interval.

    Raises
    ------
    ModelError
        A key that is not a depth interval, a value that is not a :class:`Variogram`, or
        an interval of ``labels`` without one.
    """
    if isinstance(variogram, Variogram):
        return [variogram] * len(labels)
    if not isinstance(variogram, Mapping):
        raise ModelError(
            f"variogram must be a Variogram or a mapping, got {type(variogram).__name__}"
        )
    by_label = {}
    for key, v in variogram.items():
        label = format_interval(*interval_key(key, "variogram", ModelError))
        if not isinstance(v, Variogram):
            raise ModelError(f"variogram {key!r}: expected a Variogram, got {type(v).__name__}")
        by_label[label] = v
    missing = [lab for lab in labels if lab not in by_label]
    if missing:
        raise ModelError(f"variogram: no variogram for interval {missing[0]}")
    return [by_label[lab] for lab in labels]


def interval_common_sd(
    common_sd: float | Mapping[str, float], labels: Sequence[str]
) -> list[float]:
    """One shared-error standard deviation (finite, >= 0) per interval label.

    Raises
    ------
    ConfigError
        A key that is not a depth interval, a missing interval, or a value that is not a
        number >= 0.
    """
    if isinstance(common_sd, Mapping):
        by_label = {}
        for key, value in common_sd.items():
            by_label[format_interval(*interval_key(key, "common_sd", ConfigError))] = value
        missing = [lab for lab in labels if lab not in by_label]
        if missing:
            raise ConfigError(f"common_sd: no value for interval {missing[0]}")
        values = [by_label[lab] for lab in labels]
    else:
        values = [common_sd] * len(labels)
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"common_sd must be a number >= 0, got {v!r}") from None
        if not (math.isfinite(f) and f >= 0):
            raise ConfigError(f"common_sd must be a number >= 0, got {v!r}")
        out.append(f)
    return out


def cv_block_error_sd(
    cv: pd.DataFrame,
    *,
    log: bool = True,
    group: str = "fold",
    observed: str = "observed",
    predicted: str = "predicted",
) -> float:
    """Regional (block-scale) error of a map, from spatial cross-validation.

    The error a trend makes over a whole region (a random forest cannot extrapolate into
    warm, sparsely sampled land) is shared by the region's cells; a residual variogram,
    fitted at the profiles, does not show it. Spatial cross-validation does: each fold of
    a kNNDM (or block) split is predicted from the others, so the mean error of a fold is
    the error of the map's level over an area predicted at the distances of the map. Its
    spread over folds contains, besides that regional error ``tau``, the sampling noise of
    a mean of ``n_k`` profile errors. The one-way random-effects method of moments
    separates the two:

    ``tau² = max(0, var_k(ē_k) − mean_k(s_k² / n_k))``

    with ``ē_k``, ``s_k²`` and ``n_k`` the mean, variance (ddof 1) and count of the errors
    ``e = ln(predicted) − ln(observed)`` (``predicted − observed`` with ``log=False``) in
    fold ``k``, and ``var_k`` the variance (ddof 1) of the fold means. With ``K`` folds the
    estimate has ``K − 1`` degrees of freedom: it is a scale, not a precise figure.

    Parameters
    ----------
    cv
        Out-of-fold predictions: one row per profile with the fold, observed and
        predicted values (``models/<interval>/cv_predictions.csv``).
    log
        Errors on the log scale (for models fitted on log stocks; the result is then in
        log units, as ``common_sd`` of :func:`zone_total_draws` needs with
        ``lognormal``); rows with a value <= 0 are left out.
    group, observed, predicted
        Column names.

    Returns
    -------
    float
        ``tau`` (log units, or the values' units with ``log=False``); 0.0 with fewer than
        two folds of at least two profiles.

    Raises
    ------
    InputError
        A column is missing.

    Examples
    --------
    >>> cv = pd.DataFrame({"fold": [1, 1, 2, 2], "observed": [1.0, 1.0, 1.0, 1.0],
    ...                    "predicted": [0.0, 2.0, 2.0, 4.0]})
    >>> cv_block_error_sd(cv, log=False)  # var of (1, 3) = 2, noise (2/2 + 2/2)/2 = 1
    1.0
    """
    missing = [c for c in (group, observed, predicted) if c not in cv.columns]
    if missing:
        raise InputError(f"cross-validation table lacks column {missing[0]!r}")
    obs = cv[observed].to_numpy(float)
    pred = cv[predicted].to_numpy(float)
    ok = np.isfinite(obs) & np.isfinite(pred)
    if log:
        ok &= (obs > 0) & (pred > 0)
        err = np.log(pred[ok]) - np.log(obs[ok])
    else:
        err = pred[ok] - obs[ok]
    stats = pd.Series(err).groupby(cv[group].to_numpy()[ok]).agg(["mean", "var", "size"])
    stats = stats[stats["size"] >= 2]
    if len(stats) < 2:
        return 0.0
    between = float(stats["mean"].var(ddof=1))
    noise = float((stats["var"] / stats["size"]).mean())
    return math.sqrt(max(between - noise, 0.0))


def residual_mean_sd(model: Any) -> float:
    """Standard error of the residuals' mean level under the model's own variogram.

    ``sqrt(1 / (1' K⁻¹ 1))``, ``K`` the covariance of the residuals at the training
    locations (``RegressionKriging.kriging_``), is the standard deviation of the
    generalised-least-squares estimate of their mean: with clustered data and a long
    range it is far larger than ``sd / sqrt(n)``. An error of that size is shared by every
    cell that is not close to data, so it belongs in ``common_sd`` of
    :func:`zone_total_draws` (on the log scale for models with ``log_transform``).

    Raises
    ------
    ModelError
        The model has no fitted residual kriging.
    """
    return gls_mean_sd(residual_variogram(model), _training_xy(model))


def _training_xy(model: Any) -> Any:
    """The locations a fitted (regression-)kriging model kriged its residuals at."""
    xy = getattr(getattr(model, "kriging_", model), "xy_", None)
    if xy is None:
        raise ModelError(f"{type(model).__name__} holds no training locations (kriging_.xy_)")
    return xy


def gls_mean_sd(variogram: Variogram, xy: Any) -> float:
    """``sqrt(1 / (1' K⁻¹ 1))``: the standard error of the generalised-least-squares mean of
    a field with ``variogram`` sampled at the points ``xy`` (``(n, 2)``), ``K`` their
    covariance (:func:`residual_mean_sd` at a model's training locations)."""
    return float(math.sqrt(1.0 / float(np.sum(_gls_weights(variogram, xy)))))


def _gls_weights(variogram: Variogram, xy: Any) -> np.ndarray:
    """``K⁻¹ 1``, ``K`` the covariance of the field at the points ``xy``.

    ``K`` is the one ``n x n`` array: filled a block of rows at a time and factorised in
    place (10,000 profiles: one 0.8 GB matrix, 1.2 GB peak RSS of the benchmark, against
    4.1 GB for ``covariance(cdist(xy, xy))`` and a factor beside it,
    ``benchmarks/bench_local_level.py``).
    """
    xy = np.asarray(xy, dtype="float64")
    one = np.ones(len(xy))
    try:
        # K is symmetric: its transpose is the same matrix in the Fortran order LAPACK
        # factorises in place (a C-ordered one is copied first)
        cov = _covariance_matrix(variogram, xy).T
        factor = cho_factor(cov, overwrite_a=True, check_finite=False)
        return np.asarray(cho_solve(factor, one, overwrite_b=True))
    except np.linalg.LinAlgError:  # not positive definite (duplicates without a nugget)
        return np.asarray(np.linalg.lstsq(_covariance_matrix(variogram, xy), one, rcond=None)[0])


def _covariance_matrix(variogram: Variogram, xy: np.ndarray, rows: int = 1024) -> np.ndarray:
    """``C(|x_i - x_j|)`` of the points ``xy``, ``rows`` rows at a time (the temporaries
    stay at ``rows x n``)."""
    cov = np.empty((len(xy), len(xy)))
    for s in range(0, len(xy), rows):
        cov[s : s + rows] = variogram.covariance(cdist(xy[s : s + rows], xy))
    return cov


TOLERANCE = 1e-6
"""How far :meth:`LocalLevel.weight` may move a cell's ``a`` by leaving out the data beyond
:attr:`LocalLevel.cutoff`."""


class LocalLevel:
    """The error of the residuals' mean level as each cell carries it.

    Kriging the residuals with their mean estimated by generalised least squares
    (``m̂``, standard error ``sd`` = :func:`gls_mean_sd`), a cell's prediction takes the
    mean with the weight ``a = 1 - k' K⁻¹ 1`` that the simple-kriging weights ``K⁻¹ k``
    leave to it (``k`` the covariances between the cell and the data): its error from the
    level is ``(m̂ - m) a``. Far from data ``a = 1`` and the whole level error is the
    cell's; where the data pin the cell down, ``a`` is near 0 and the level does not
    matter. Summed over a zone, ``sd * Σ w a / Σ w`` is the level's part of the error of
    the zone's block-kriged mean (universal kriging of a block), which falls as new
    profiles fill the zone; a constant ``sd`` for every cell does not. ``a`` is clipped
    to ``[0, 1]``.

    Parameters
    ----------
    variogram
        The residual variogram (its covariance, nugget included, gives ``K`` and ``k``).
    xy
        ``(n, 2)`` data locations in the grid's working CRS (metres).
    """

    def __init__(self, variogram: Variogram, xy: Any) -> None:
        self.variogram = variogram
        self.xy = np.asarray(xy, dtype="float64").reshape(-1, 2)

    @functools.cached_property
    def u(self) -> np.ndarray:
        """``K⁻¹ 1``, solved on first use (a dense ``n x n`` solve: levels found
        :meth:`same_as` one another can share one)."""
        return _gls_weights(self.variogram, self.xy)

    @functools.cached_property
    def sd(self) -> float:
        """The error of the level, ``1 / sqrt(1' K⁻¹ 1)``."""
        return float(math.sqrt(1.0 / float(np.sum(self.u))))

    @classmethod
    def of_model(cls, model: Any) -> LocalLevel:
        """From a fitted regression-kriging model (its residual variogram and locations)."""
        return cls(residual_variogram(model), _training_xy(model))

    def same_as(self, other: LocalLevel) -> bool:
        """The same variogram and data locations, so the same weights everywhere."""
        return self.variogram.to_dict() == other.variogram.to_dict() and np.array_equal(
            self.xy, other.xy
        )

    @functools.cached_property
    def cutoff(self) -> float:
        """Distance beyond which the data's covariances move no ``a`` by more than
        ``TOLERANCE``: the range of a spherical model, else where ``psill ρ(h) Σ|u|``
        falls to it (``ρ`` the unit correlation)."""
        v = self.variogram
        if v.psill <= 0:
            return 0.0
        if v.model == "spherical":
            return float(v.range)
        bound = TOLERANCE / (v.psill * float(np.abs(self.u).sum()))

        def rho(h: float) -> float:
            return 1.0 - float(unit_semivariance(v.model, np.array([h]), v.range, v.nu)[0])

        hi = float(v.range)
        for _ in range(200):  # rho falls at least exponentially: a few doublings
            if rho(hi) <= bound:
                break
            hi *= 2.0
        lo = 0.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if rho(mid) <= bound else (mid, hi)
        return hi

    def weight(self, x: Any, y: Any, block: int = 4096) -> np.ndarray:
        """``a`` at the points ``(x, y)`` (any shape, working CRS): float64, same shape.

        The points go ``block`` at a time (in the given order: a map chunk's rows are
        compact), each with the data inside its bounding box widened by :attr:`cutoff`:
        the data beyond move ``a`` by less than ``TOLERANCE``, so the cost follows the
        data near the cells, not all of them (``benchmarks/bench_local_level.py``).
        """
        x = np.asarray(x, dtype="float64")
        pts = np.column_stack([x.ravel(), np.asarray(y, dtype="float64").ravel()])
        out = np.empty(len(pts))
        r = self.cutoff
        for s in range(0, len(pts), block):
            part = pts[s : s + block]
            lo, hi = part.min(axis=0) - r, part.max(axis=0) + r
            near = np.all((self.xy >= lo) & (self.xy <= hi), axis=1)
            k = self.variogram.covariance(cdist(part, self.xy[near]))
            out[s : s + block] = 1.0 - k @ self.u[near]
        return np.clip(out, 0.0, 1.0).reshape(x.shape)


def spatial_groups(
    coords: Any, folds: Any, size: int = 15, *, random_state: int | None = 0
) -> np.ndarray:
    """Cut every CV fold's held-out points into compact spatial clusters.

    Within each fold, k-means on the coordinates makes ``max(1, n_fold // size)``
    clusters, so each group is a patch of profiles that were held out together:
    its mean error is the model's error over that patch, as predicted without
    it. Rows with fold ``< 0`` (never tested) get group ``-1``.

    Parameters
    ----------
    coords
        ``(n, 2)`` projected coordinates.
    folds
        CV fold label per row.
    size
        Target number of points per group.
    random_state
        Seed of k-means.

    Returns
    -------
    ndarray of int
        Group label per row (unique across folds).
    """
    from sklearn.cluster import KMeans

    xy = np.asarray(coords, dtype=float)
    f = np.asarray(folds).ravel()
    if xy.ndim != 2 or xy.shape != (f.size, 2):
        raise ModelError(f"coords must be ({f.size}, 2), got {xy.shape}")
    if size < 2:
        raise ModelError(f"size must be at least 2, got {size}")
    out = np.full(f.size, -1, dtype=int)
    nxt = 0
    for label in np.unique(f[f >= 0]):
        idx = np.flatnonzero(f == label)
        k = max(1, len(idx) // int(size))
        if k == 1:
            lab = np.zeros(len(idx), dtype=int)
        else:
            km = KMeans(n_clusters=k, n_init=4, random_state=random_state)
            lab = km.fit_predict(xy[idx])
        out[idx] = nxt + lab
        nxt += k
    return out


def within_group_covariance(
    coords: Any, groups: Any, variogram: Variogram, *, max_points: int = 2000, seed: int = 0
) -> float:
    """Mean covariance of the residual field between two points of the same group.

    A group's mean error is not a mean of independent errors: its points share the
    residual field, correlated as ``variogram`` says, and the spread of group means
    holds that shared part, ``c̄ = Σ_k Σ_{i≠j} C(h_ij) / Σ_k n_k (n_k − 1)`` (``C``
    the covariance without the nugget), besides the regional error of the trend. The
    one-way method of moments of :func:`regional_error_sd` takes ``c̄`` for regional
    error (``E[(MSB − MSW) / n0] = tau² + c̄`` for groups of equal size); a Monte Carlo
    that draws the residual field with this variogram already holds it. Groups of more
    than ``max_points`` points are subsampled (seeded).

    Parameters
    ----------
    coords
        ``(n, 2)`` projected coordinates (the variogram's units).
    groups
        Group label per point; ``-1`` = leave out.
    variogram
        The residual variogram.

    Returns
    -------
    float
        ``c̄`` (0.0 without a group of two points, or for a pure nugget).

    Examples
    --------
    >>> v = Variogram("exponential", psill=1.0, range=1.0, nugget=0.5)
    >>> xy = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    >>> round(within_group_covariance(xy, [0, 0, 1, 1], v), 6)  # exp(-1)
    0.367879
    """
    xy = np.asarray(coords, dtype=float)
    g = np.asarray(groups).ravel()
    if xy.shape != (g.size, 2):
        raise ModelError(f"coords must be ({g.size}, 2), got {xy.shape}")
    if variogram.psill <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    total = pairs = 0.0
    for label in np.unique(g[g >= 0]):
        idx = np.flatnonzero(g == label)
        n = len(idx)
        if n < 2:
            continue
        if n > max_points:
            idx = rng.choice(idx, max_points, replace=False)
        c = variogram.psill - (variogram(cdist(xy[idx], xy[idx])) - variogram.nugget)
        m = len(idx)
        mean_off = (float(c.sum()) - float(np.trace(c))) / (m * (m - 1))
        total += mean_off * n * (n - 1)
        pairs += n * (n - 1)
    return total / pairs if pairs else 0.0


def _one_way_components(e: np.ndarray, g: np.ndarray) -> tuple[float, float, float, int]:
    """One-way random effects, method of moments for unbalanced groups.

    Returns ``(between-group variance, within-group variance, n0, df_between)``;
    ``E[MSB] = s_w^2 + n0 tau^2`` and ``E[MSW] = s_w^2`` (Searle et al. 1992, ch. 3).
    """
    labels, inv, n_g = np.unique(g, return_inverse=True, return_counts=True)
    G, N = len(labels), len(e)
    if G < 2 or N - G < 1:
        return 0.0, float(np.var(e, ddof=1)) if N > 1 else 0.0, 1.0, 0
    means = np.bincount(inv, weights=e) / n_g
    grand = e.mean()
    msb = float(np.sum(n_g * (means - grand) ** 2) / (G - 1))
    msw = float(np.sum((e - means[inv]) ** 2) / (N - G))
    n0 = float((N - np.sum(n_g**2) / N) / (G - 1))
    return msb, msw, n0, G - 1


def regional_error_sd(
    errors: Any | dict[str, Any],
    groups: Any | dict[str, Any],
    *,
    pool: bool = True,
    shared: float | dict[str, float] | None = None,
) -> dict[str, float] | float:
    """Standard deviation of the regional error shared by the cells of a zone.

    The errors of held-out profiles are split into a part shared by a group
    (the model's error over the area the group covers, as predicted without
    it) and a part of their own; the one-way random-effects method of moments
    for unbalanced groups separates them: ``tau^2 = max(0, (MSB - MSW) / n0)``
    on ``G - 1`` degrees of freedom for ``G`` groups.

    The scale of ``tau`` is the scale of the groups. With the kNNDM folds as
    groups (regions of about a zone's size) this is
    :func:`cv_block_error_sd`, on four degrees of freedom for
    five folds: one noisy estimate can collapse to zero. ``pool=True`` fixes
    that without changing the scale: the *share* of the error variance that is
    regional, ``tau^2 / (tau^2 + s_w^2)``, is averaged over the depth intervals
    (weighted by their degrees of freedom, ``sum(K - 1)``; the intervals share
    profiles, so fewer effective ones) and applied to each interval's own
    within-group variance. With :func:`spatial_groups` (compact patches of
    ~15 held-out profiles) there are ``n / 15 - 1`` degrees of freedom, but a
    patch is smaller than a zone: its shared error also holds part of the
    residual's spatial correlation, which the Monte Carlo draws carry already,
    and ``tau`` comes out wider than a zone's regional error.

    Parameters
    ----------
    errors
        Out-of-fold errors (log scale for log models), or a mapping interval ->
        errors.
    groups
        Group label per error (``-1`` = leave out), or a mapping with the same
        keys.
    pool
        Pool the regional share across intervals (only for mappings).
    shared
        The part of the groups' spread that a Monte Carlo draws already: the mean
        covariance of the residual field within a group (:func:`within_group_covariance`),
        one value or a mapping with the same keys; subtracted from each ``tau²`` before
        pooling (``None``: nothing).

    Returns
    -------
    float or dict
        ``tau`` (for one interval), or interval -> ``tau``.
    """
    single = not isinstance(errors, dict)
    E = {"_": errors} if single else dict(errors)
    Gs = {"_": groups} if single else dict(groups)
    if set(E) != set(Gs):
        raise ModelError("errors and groups must have the same intervals")
    comps: dict[str, tuple[float, float, float, int]] = {}
    for k in E:
        e = np.asarray(E[k], dtype=float).ravel()
        g = np.asarray(Gs[k]).ravel()
        if e.size != g.size:
            raise ModelError(f"interval {k}: {e.size} errors but {g.size} group labels")
        ok = np.isfinite(e) & (g >= 0)
        comps[k] = _one_way_components(e[ok], g[ok])
    net = shared if isinstance(shared, dict) else dict.fromkeys(comps, float(shared or 0.0))
    tau2 = {
        k: max(0.0, (msb - msw) / n0 - float(net.get(k, 0.0))) if df else 0.0
        for k, (msb, msw, n0, df) in comps.items()
    }
    if single or not pool:
        out = {k: float(np.sqrt(v)) for k, v in tau2.items()}
        return out["_"] if single else out
    dfs = np.array([c[3] for c in comps.values()], dtype=float)
    shares = np.array(
        [tau2[k] / (tau2[k] + comps[k][1]) if tau2[k] + comps[k][1] > 0 else 0.0 for k in comps]
    )
    share = float(np.sum(dfs * shares) / dfs.sum()) if dfs.sum() > 0 else 0.0
    return {
        k: float(np.sqrt(share / (1.0 - share) * comps[k][1]))
        if share < 1
        else float(np.sqrt(tau2[k]))
        for k in comps
    }


def cv_error_variogram(coords: Any, errors: Sequence[Any], model: str = "exponential") -> Variogram:
    """A variogram of standardised cross-validation errors (the correlation of the map's
    errors, in the spirit of Wadoux & Heuvelink 2023).

    The residual variogram is the correlation of the residuals at the profiles; a map's
    error holds the trend's error too, whose correlation it does not show. Out-of-fold
    errors divided by their calibrated sd, ``z = (mu - ln observed) / sd``, have unit
    variance wherever the calibration holds; their variogram's structured share and range
    are how those errors go together in space. With several CV partitions of the same
    profiles the sample variograms (the same pairs, so the same lags) are averaged before
    the fit.

    Parameters
    ----------
    coords
        ``(n, 2)`` profile coordinates (projected, metres).
    errors
        One ``(n,)`` array of standardised errors per partition, same profiles and order;
        rows not finite in every partition are left out.
    model
        Variogram model of the fit (gstat conventions, :meth:`Variogram.fit_sample`).

    Raises
    ------
    ModelError
        Fewer than 10 profiles with finite errors, or a fit that fails.
    """
    xy = np.asarray(coords, dtype=float)
    z = np.column_stack([np.asarray(e, dtype=float) for e in errors])
    ok = np.isfinite(z).all(axis=1) & np.isfinite(xy).all(axis=1)
    if ok.sum() < 10:
        raise ModelError(
            f"only {int(ok.sum())} profiles with a cross-validation error; at least 10 are "
            "needed for a variogram of the errors"
        )
    xy, z = xy[ok], z[ok]
    cutoff = default_cutoff(xy)
    samples = [sample_variogram(xy, z[:, p], cutoff=cutoff) for p in range(z.shape[1])]
    sample = samples[0].copy()
    sample["gamma"] = np.mean([s["gamma"].to_numpy() for s in samples], axis=0)
    return Variogram.fit_sample(sample, model)
