"""Lazy, chunked prediction of SOC density maps with uncertainty.

A pure NumPy kernel, :func:`_predict_block`, turns one window of the covariate stack
into the statistics of the prediction; :func:`predict_grid` maps it over the grid with
:func:`dask.array.blockwise`, so nothing is computed until the maps are written
(:func:`write_prediction`) or reduced (zone totals).

* Every task receives all covariate bands of its window, plus the cell-centre
  coordinates ``x``, ``y`` (grid CRS), and returns ``(n_statistics, ny, nx)`` float32.
* The fitted model (and the area-of-applicability model) enter the graph once, as a
  single key (:func:`dask.delayed` with ``pure=True``): a scheduler ships them to each
  worker once, never once per task.
* Cells are predicted independently of their neighbours in the output: regression
  kriging searches neighbours among *all* training points held by the model (KD-tree),
  so a chunked map equals an unchunked one and chunk edges show no seams.
* Prediction is deterministic; nothing is drawn at random, so results depend neither
  on chunking nor on the number of workers.
* A cell where any covariate (or a coordinate) is NaN is nodata (NaN) in every output.
* The kernel knows no model type: it asks a model for its map statistics,
  ``predict_stats(X, quantiles, statistics)`` (:func:`mapping.models.base.map_statistics`),
  and each model computes them its own way.
* A cell with valid covariates that the model leaves NaN (a kriging system that did not
  factorise) is flagged in :data:`FAILED`; :func:`write_prediction` counts such cells
  and warns once with their number.

Statistics (variables of the returned Dataset): ``mean``, ``median``, ``lower`` and
``upper`` (the two ``quantiles``, default 5 % and 95 %), ``std`` -- all in kg C m-2 --
and, when an area of applicability is given, ``di`` (the cells' dissimilarity index to
the training data) and ``aoa`` (1 inside, 0 outside); then
:data:`FAILED` (1 where the model gave no prediction, 0 elsewhere, NaN at nodata).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import __version__, io
from mapping.exceptions import GridMismatchError, MissingCRSError, ModelError
from mapping.grid import Grid
from mapping.map_metadata import (
    AOA_NODATA,
    RELATIVE_UNCERTAINTY,
    map_attributes,
    relative_uncertainty,
)
from mapping.models.base import (
    QUANTILE_STATISTICS,
    STATISTICS,
    available_statistics,
    map_statistics,
    quantile_pair,
)
from mapping.units import DENSITY_UNITS, format_interval, map_filename

# Code of a nodata cell in an integer (categorical) covariate layer; equal to
# mapping.covariates.CATEGORICAL_NODATA (kept here so the kernel imports no GDAL stack).
CATEGORICAL_NODATA = int(np.iinfo("int32").min)
UNITS = DENSITY_UNITS
DEFAULT_CHUNKS = 512
DEFAULT_BATCH = 262_144  # one 512 x 512 chunk per model call: per-call overheads stay small
COORDINATES = ("x", "y")
FAILED = "failed"
"""Variable of a prediction: 1 where the inputs are valid but the model gave no prediction."""
AOA_LAYERS = ("di", "aoa")
"""Layers an area of applicability adds to a prediction: the DI and the inside/outside mask."""
WRITERS = ("workers", "client")
"""Who writes the chunks of the maps (:func:`write_prediction`)."""


# --------------------------------------------------------------------------- statistics
def check_statistics(model: Any, statistics: Sequence[str] | None) -> tuple[str, ...]:
    """The statistics to compute for ``model``; all of :data:`STATISTICS` by default.

    A model without ``predict(X, return_std=True)`` or ``predict_quantiles`` (a plain
    scikit-learn forest, say) can only give ``("mean",)``; asking it for more is a
    :class:`~mapping.exceptions.ModelError`. A model may also name outputs of its own in
    ``extra_statistics`` (its ``predict_stats`` gives them).
    """
    stats = tuple(STATISTICS if statistics is None else statistics)
    # a map model may name outputs of its own (a view's parts of one quantity)
    known = (*STATISTICS, *getattr(model, "extra_statistics", ()))
    unknown = [s for s in stats if s not in known]
    if unknown:
        raise ModelError(f"unknown statistic(s) {unknown}; choose from {list(known)}")
    if not stats:
        raise ModelError("no statistic requested")
    if len(set(stats)) != len(stats):
        raise ModelError(f"statistics {list(stats)} repeat a name")
    uncertain = [s for s in stats if s in STATISTICS and s not in available_statistics(model)]
    if uncertain:
        raise ModelError(
            f"{type(model).__name__} gives no uncertainty (no predict(X, return_std=True) or "
            f"predict_quantiles); it cannot give {uncertain}: use statistics=('mean',)"
        )
    return stats


def feature_columns(model: Any, covariates: Sequence[str]) -> list[str]:
    """The columns ``model`` expects, in its order, from ``covariates`` plus ``x``, ``y``.

    Models fitted on a DataFrame know their columns (``feature_names_in_``). A model
    fitted on a plain array gets the covariates, followed by ``x``, ``y`` when it was
    fitted on two more features than there are covariates.

    Raises
    ------
    ModelError
        The model needs a column that is neither a covariate nor a coordinate.
    """
    available = [*covariates, *COORDINATES]
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        names = [str(n) for n in names]
        missing = [n for n in names if n not in available]
        if missing:
            raise ModelError(
                f"model was fitted with column(s) {missing} that are not in the covariate "
                f"stack (stack has {list(covariates)}; coordinates are {list(COORDINATES)})"
            )
        return names
    n = getattr(model, "n_features_in_", None)
    if n is None or n == len(covariates) + 2:
        return available
    if n == len(covariates):
        return list(covariates)
    raise ModelError(
        f"model was fitted on {n} features but the stack has {len(covariates)} covariates "
        f"({list(covariates)}); fit it on a DataFrame so its columns are known"
    )


# --------------------------------------------------------------------------- the kernel
def _predict_block(
    covariate_block: Mapping[str, np.ndarray] | np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    model: Any,
    quantiles: Sequence[float] = (0.05, 0.95),
    *,
    names: Sequence[str] | None = None,
    aoa: Any = None,
    statistics: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    nodata: Mapping[str, float] | None = None,
    failures: bool = False,
) -> dict[str, np.ndarray]:
    """Predict one window of the grid: pure NumPy, no Dask.

    Parameters
    ----------
    covariate_block
        ``{name: (ny, nx) array}``, or a ``(nvar, ny, nx)`` array with ``names``.
        NaN marks nodata.
    x, y
        Cell-centre coordinates in the grid CRS: 1-D (``nx`` and ``ny`` values) or
        ``(ny, nx)``.
    model
        Fitted estimator: its ``predict_stats(X, quantiles, statistics)`` gives the
        statistics (:func:`mapping.models.base.map_statistics`; an estimator without it
        is asked ``predict(X[, return_std=True])`` and ``predict_quantiles``). ``X`` is a
        DataFrame of the model's columns (covariates and ``x``, ``y``).
    quantiles
        ``(lower, upper)`` probabilities of the ``lower`` and ``upper`` outputs.
    names
        Covariate names of a ``(nvar, ny, nx)`` block.
    aoa
        Optional fitted area of applicability: ``aoa.predict(X) -> (di, inside)``.
    statistics
        Which of :data:`STATISTICS` to compute (default: all the model can give).
    batch_size
        Cells per model call; bounds the memory of the model's own temporaries.
    nodata
        Nodata code per covariate, besides NaN. Integer (categorical) bands default to
        :data:`mapping.covariates.CATEGORICAL_NODATA` and are passed on as integers.
    failures
        Also return :data:`FAILED`: 1.0 where the inputs are valid but the model gave a
        NaN statistic (a kriging system that did not factorise), 0.0 elsewhere.

    Returns
    -------
    dict of str to ndarray
        ``(ny, nx)`` float32 arrays: the statistics, plus ``aoa`` (1.0 inside, 0.0
        outside) when ``aoa`` is given and ``failed`` with ``failures``; NaN where any
        input is nodata.
    """
    if isinstance(covariate_block, Mapping):
        cov_names = list(covariate_block)
        bands = [np.asarray(covariate_block[n]) for n in cov_names]
    else:
        arr = np.asarray(covariate_block)
        if arr.ndim != 3:
            raise ValueError(f"covariate block must be (nvar, ny, nx), got shape {arr.shape}")
        if names is None or len(names) != arr.shape[0]:
            raise ValueError("a (nvar, ny, nx) covariate block needs one name per band")
        cov_names = list(names)
        bands = list(arr)
    stats = check_statistics(model, statistics)
    lo, hi = quantile_pair(quantiles)
    if bands:
        shape = bands[0].shape
    else:
        shape = (np.size(y), np.size(x)) if np.ndim(x) == 1 else np.shape(x)
    if any(b.shape != shape for b in bands) or len(shape) != 2:
        raise ValueError(f"covariate bands differ in shape: {[b.shape for b in bands]}")
    ny, nx = shape
    xx = (
        np.broadcast_to(np.asarray(x, dtype="float64").reshape(1, nx), shape)
        if np.ndim(x) == 1
        else np.asarray(x, dtype="float64")
    )
    yy = (
        np.broadcast_to(np.asarray(y, dtype="float64").reshape(ny, 1), shape)
        if np.ndim(y) == 1
        else np.asarray(y, dtype="float64")
    )
    if xx.shape != shape or yy.shape != shape:
        raise ValueError(f"coordinates of shape {xx.shape}/{yy.shape} do not match block {shape}")

    columns = feature_columns(model, cov_names)
    source = dict(zip(cov_names, bands, strict=True))
    source["x"], source["y"] = xx, yy
    if np.ndim(x) == 1 and np.ndim(y) == 1:  # one pass over the block, not two
        valid = np.isfinite(yy[:, :1]) & np.isfinite(xx[:1, :])
    else:
        valid = np.isfinite(xx) & np.isfinite(yy)
    for n, b in zip(cov_names, bands, strict=True):
        valid &= _valid(b, (nodata or {}).get(n))
    flat = np.flatnonzero(valid.ravel())

    out_names = [*stats, *(AOA_LAYERS if aoa is not None else ()), *([FAILED] if failures else [])]
    fill = np.empty if flat.size == ny * nx else partial(np.full, fill_value=np.nan)
    out = {k: fill(ny * nx, dtype="float32") for k in out_names}
    named = getattr(model, "feature_names_in_", None) is not None
    needed = list(dict.fromkeys([*columns, *(cov_names if aoa is not None else []), *COORDINATES]))
    all_valid = flat.size == ny * nx
    # A calibrated model measures the DI of the same AOA as the map's layer: searched once.
    share_di = (
        aoa is not None
        and _same_aoa(getattr(model, "aoa", None), aoa)
        and "di" in inspect.signature(model.predict_stats).parameters
    )
    share_xd = (
        share_di
        and getattr(model, "uses_extrapolation", False) is True
        and "xd" in inspect.signature(model.predict_stats).parameters
        and callable(getattr(aoa, "measure", None))
    )
    flat_src = {c: source[c].ravel() for c in needed}  # views, except broadcast coordinates
    step = max(1, int(batch_size))
    for start in range(0, flat.size, step):
        # a block without nodata is read through views: no gather, no scatter
        sel = (
            slice(start, min(start + step, flat.size)) if all_valid else flat[start : start + step]
        )
        table = pd.DataFrame({c: _column(flat_src[c][sel]) for c in needed}, copy=False)
        X = table[columns] if named else table[columns].to_numpy()
        shared: dict[str, np.ndarray] = {}
        if aoa is not None:
            if share_xd:  # one encoding of the AOA's covariates for both distances
                di, inside, shared["xd"] = aoa.measure(_aoa_input(aoa, table))
            else:
                di, inside = aoa.predict(_aoa_input(aoa, table))
            shared["di"] = di
            out["aoa"][sel] = np.asarray(inside, dtype="float32")
            out["di"][sel] = np.asarray(di, dtype="float32")
        if share_di:
            res = model.predict_stats(X, (lo, hi), stats, **shared)
        else:
            res = map_statistics(model, X, (lo, hi), stats)
        for k in stats:
            out[k][sel] = res[k]
        if failures:  # valid inputs, no prediction: the model failed (kriging system)
            out[FAILED][sel] = np.isnan(np.stack([res[k] for k in stats])).any(axis=0)
    return {k: v.reshape(ny, nx) for k, v in out.items()}


def _valid(band: np.ndarray, nodata: float | None) -> np.ndarray:
    # Float layers mark nodata with NaN (and may declare a code too); integer
    # (categorical) layers with a code, CATEGORICAL_NODATA unless told otherwise.
    if band.dtype.kind in "iu":
        code = CATEGORICAL_NODATA if nodata is None else nodata
        return band != code
    ok = np.isfinite(band)
    if nodata is not None and np.isfinite(nodata):
        ok &= band != nodata
    return ok


def _column(values: np.ndarray) -> np.ndarray:
    # Integer codes stay integers (categories are matched by value); floats keep their
    # precision (tree models work in float32 anyway; coordinates are float64).
    return values.astype("int64", copy=False) if values.dtype.kind in "iu" else values


def _aoa_covariates(aoa: Any) -> list[str]:
    # the covariates an area-of-applicability model looks at, by name
    names = getattr(aoa, "feature_names_in_", None)
    if names is None:
        layout = getattr(aoa, "layout_", None)
        names = getattr(layout, "feature_names", None) if layout is not None else None
    return [str(n) for n in names] if names is not None else []


def _same_aoa(a: Any, b: Any) -> bool:
    # two copies of one fitted AOA (a model's and the map's arrive unpickled apart)
    if a is None or b is None:
        return False
    if a is b:
        return True
    fa, fb = getattr(a, "fingerprint", None), getattr(b, "fingerprint", None)
    return callable(fa) and callable(fb) and fa() == fb()


def _aoa_input(aoa: Any, table: pd.DataFrame) -> pd.DataFrame:
    names = getattr(aoa, "feature_names_in_", None)
    return table[[str(n) for n in names]] if names is not None else table


def _predict_task(
    ycoord: np.ndarray,
    xcoord: np.ndarray,
    model: Any,
    aoa: Any,
    *blocks: np.ndarray,
    names: Sequence[str],
    outputs: Sequence[str],
    statistics: Sequence[str],
    quantiles: tuple[float, float],
    batch_size: int,
    nodata: Mapping[str, float],
    working: tuple[str, str] | None = None,
) -> np.ndarray:
    # One Dask task: all covariate bands of one window in, (n_outputs, ny, nx) out.
    if working is not None:  # geographic grid: the model's x, y are metres of a working plane
        import pyproj

        to = pyproj.Transformer.from_crs(
            pyproj.CRS.from_wkt(working[0]), pyproj.CRS.from_wkt(working[1]), always_xy=True
        )
        lon, lat = np.meshgrid(np.asarray(xcoord, "float64"), np.asarray(ycoord, "float64"))
        xcoord, ycoord = (np.asarray(v, dtype="float64") for v in to.transform(lon, lat))
    res = _predict_block(
        dict(zip(names, blocks, strict=True)),
        xcoord,
        ycoord,
        model,
        quantiles,
        aoa=aoa,
        statistics=statistics,
        batch_size=batch_size,
        nodata=nodata,
        failures=FAILED in outputs,
    )
    return np.stack([res[k] for k in outputs])


# --------------------------------------------------------------------------- the lazy map
def _check_stack(stack: Any, grid: Any) -> None:

    for name, var in stack.data_vars.items():
        if tuple(var.dims) != ("y", "x"):
            raise GridMismatchError(
                f"covariate {name!r} has dims {tuple(var.dims)}, expected ('y', 'x')"
            )
        if tuple(var.shape) != tuple(grid.shape):
            raise GridMismatchError(
                f"covariate {name!r} has shape {tuple(var.shape)}; the grid is {grid!r}"
            )
    try:
        stack_grid = Grid.from_dataarray(stack)
    except MissingCRSError:
        stack_grid = None
    if stack_grid is not None and stack_grid != grid:
        raise GridMismatchError(f"covariate stack lies on {stack_grid!r}, not on {grid!r}")
    if stack_grid is None and "x" in stack.coords and "y" in stack.coords:
        y, x = grid.coords()
        if not (np.allclose(stack["x"].values, x) and np.allclose(stack["y"].values, y)):
            raise GridMismatchError(f"covariate stack coordinates do not match {grid!r}")


COORDINATE_CRS_ATTR = "coordinate_crs_"
"""Attribute of a fitted model holding the CRS (WKT) of the ``x``, ``y`` it was fitted on."""


def record_coordinate_crs(model: Any, crs: Any) -> Any:
    """Record on a fitted ``model`` the CRS of the ``x``, ``y`` columns it was fitted on.

    For a model fitted on a grid's profiles that is :attr:`Grid.working_crs` (the grid's CRS
    when projected; the metric plane of a geographic grid), in which :func:`predict_grid`
    gives the model its cells' coordinates.

    :func:`predict_grid` then refuses a grid in another CRS instead of feeding the model
    coordinates it has never seen. Returns ``model``.
    """
    import pyproj

    setattr(model, COORDINATE_CRS_ATTR, pyproj.CRS.from_user_input(crs).to_wkt())
    return model


def _check_model_crs(model: Any, grid: Any, columns: Sequence[str]) -> None:
    """Refuse a grid whose CRS differs from the CRS of the model's training coordinates."""
    import pyproj

    if not set(COORDINATES) & set(columns):
        return  # the model does not use coordinates
    wkt = getattr(model, COORDINATE_CRS_ATTR, None)
    if wkt is None:
        warnings.warn(
            "the model does not record the CRS of its training coordinates (x, y); they are "
            "taken to be in the grid's working CRS, Grid.working_crs (record it with "
            "record_coordinate_crs after fit)",
            UserWarning,
            stacklevel=3,
        )
        return
    fitted = pyproj.CRS.from_wkt(wkt)
    if not fitted.equals(grid.working_crs):
        raise GridMismatchError(
            f"the model was fitted on x, y in {_crs_label(fitted)}, the grid measures them in "
            f"{_crs_label(grid.working_crs)}: build the stack on a grid in {_crs_label(fitted)} "
            "(build_stack(covariates, grid)) or refit the model"
        )


def _crs_label(crs: Any) -> str:
    auth = crs.to_authority(min_confidence=90)
    return f"{auth[0]}:{auth[1]}" if auth else crs.name


def predict_grid(
    model: Any,
    stack: Any,
    grid: Any,
    quantiles: Sequence[float] = (0.05, 0.95),
    aoa: Any = None,
    chunks: int | tuple[int, int] | None = None,
    *,
    statistics: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Any:
    """Predict SOC density over a grid, lazily: one Dask task per chunk.

    Parameters
    ----------
    model
        Fitted estimator (see :func:`_predict_block`); its columns are covariate names
        in ``stack`` plus ``x``, ``y``.
    stack
        Covariate stack on ``grid``: an ``xr.Dataset`` of ``(y, x)`` variables, NumPy or
        Dask backed; NaN is nodata.
    grid
        The :class:`~mapping.grid.Grid` the stack lies on.
    quantiles
        ``(lower, upper)`` probabilities of the prediction interval.
    aoa
        Optional fitted area of applicability (``predict(X) -> (di, inside)``).
    chunks
        Chunk size, ``int`` or ``(cy, cx)``; default 512 (the COG tile size).
    statistics
        Subset of :data:`STATISTICS` (default all).
    batch_size
        Cells per model call inside a task.

    Returns
    -------
    xr.Dataset
        Dask-backed float32 variables ``mean, median, lower, upper, std`` (``units``
        ``"kg C m-2"``), ``aoa`` when given, and :data:`FAILED` (1 where the covariates
        are valid but the model gave no prediction, e.g. a kriging system that did not
        factorise; 0 elsewhere; NaN at nodata), on ``grid`` (coordinates and CRS).

    Raises
    ------
    GridMismatchError
        The stack does not lie on ``grid``.
    ModelError
        The model needs a column the stack lacks, or cannot give a statistic.
    """
    import dask
    import dask.array as da
    import xarray as xr
    from dask.base import tokenize

    _check_stack(stack, grid)
    stats = check_statistics(model, statistics)
    lo, hi = quantile_pair(quantiles)
    wanted = feature_columns(model, [str(v) for v in stack.data_vars])
    _check_model_crs(model, grid, wanted)
    names = [c for c in wanted if c not in COORDINATES]
    if aoa is not None:
        extra = _aoa_covariates(aoa)
        names += [n for n in extra if n not in names and n not in COORDINATES]
        missing = [n for n in names if n not in stack.data_vars]
        if missing:
            raise ModelError(f"area of applicability needs covariate(s) {missing} not in the stack")
    if not names and not wanted:
        raise ModelError("model uses no covariate and no coordinate")

    rows, cols = grid.chunk_sizes(DEFAULT_CHUNKS if chunks is None else chunks)
    bands = []
    for n in names:
        data = stack[n].data
        if isinstance(data, da.Array):
            bands.append(data.rechunk((rows, cols)))
        else:
            bands.append(
                da.from_array(
                    np.asarray(data), chunks=(rows, cols), name=f"cov-{n}-{tokenize(data)}"
                )
            )
    nodata = {n: stack[n].attrs["nodata"] for n in names if "nodata" in stack[n].attrs}
    ycoord, xcoord = grid.coords()
    yd = da.from_array(ycoord, chunks=(rows,))
    xd = da.from_array(xcoord, chunks=(cols,))

    # One key each for the model and the AOA: shipped to a worker once, not per task.
    model_key = dask.delayed(model, pure=True)
    aoa_key = dask.delayed(aoa, pure=True) if aoa is not None else None
    outputs = [*stats, *(AOA_LAYERS if aoa is not None else ()), FAILED]
    token = tokenize(
        model_key.key,
        None if aoa_key is None else aoa_key.key,
        grid,
        rows,
        cols,
        names,
        [b.name for b in bands],
        outputs,
        lo,
        hi,
        batch_size,
        nodata,
    )
    args: list[Any] = [yd, "y", xd, "x", model_key, None, aoa_key, None]
    for b in bands:
        args += [b, "yx"]
    arr = da.blockwise(
        _predict_task,
        "syx",
        *args,
        new_axes={"s": len(outputs)},
        dtype="float32",
        meta=np.empty((0, 0, 0), dtype="float32"),
        concatenate=True,
        name=f"socmap-predict-{token}",
        names=names,
        outputs=outputs,
        statistics=stats,
        quantiles=(lo, hi),
        batch_size=int(batch_size),
        nodata=nodata,
        working=(grid.crs.to_wkt(), grid.working_crs.to_wkt()) if grid.is_geographic else None,
    )
    variables = {}
    for i, s in enumerate(outputs):
        variables[s] = (("y", "x"), arr[i], _attrs(s, lo, hi))
    ds = xr.Dataset(variables, coords={"y": ycoord, "x": xcoord})
    ds.attrs.update(
        {
            "units": UNITS,
            "quantiles": [lo, hi],
            "model": type(model).__name__,
            "covariates": list(names),
        }
    )
    return grid.attach(ds)


def _attrs(stat: str, lo: float, hi: float) -> dict[str, Any]:
    if stat == FAILED:
        return {
            "units": "1",
            "statistic": FAILED,
            "long_name": "valid covariates but no prediction from the model (1) or not (0)",
        }
    if stat == "di":
        return {
            "units": "1",
            "statistic": "di",
            "long_name": "dissimilarity index to the training data (Meyer and Pebesma 2021)",
        }
    if stat == "aoa":
        return {
            "units": "1",
            "statistic": "aoa",
            "long_name": "inside the area of applicability (1) or outside (0)",
        }
    long = {
        "mean": "predicted mean SOC density",
        "median": "predicted median SOC density",
        "lower": f"{lo:g} quantile of predicted SOC density",
        "upper": f"{hi:g} quantile of predicted SOC density",
        "std": "standard deviation of predicted SOC density",
    }.get(stat, f"{stat} of predicted SOC density (the model's own output)")
    attrs: dict[str, Any] = {"units": UNITS, "statistic": stat, "long_name": long}
    if stat in QUANTILE_STATISTICS:
        attrs["quantile"] = {"median": 0.5, "lower": lo, "upper": hi}[stat]
    return attrs


# --------------------------------------------------------------------------- outputs
class PredictionFailureWarning(UserWarning):
    """Cells with valid covariates that the model gave no prediction for (NaN in the maps)."""


class WrittenMaps(dict[str, Path]):
    """Variable name -> file written, and :attr:`failed`, the number of cells with valid
    covariates the model gave no prediction for (a kriging system that did not factorise)."""

    def __init__(self, paths: Mapping[str, Path], failed: int = 0, pending: Any = None) -> None:
        super().__init__(paths)
        self.failed = int(failed)
        self._pending = pending

    def wait(self) -> None:
        """Wait until the maps are in place (``write_prediction(wait=False)``)."""
        if self._pending is not None:
            self._pending()


def prediction_layers(prediction: Any) -> Any:
    """The variables :func:`write_prediction` computes, in the order of the bands of its
    chunk files: the maps (with :func:`with_relative_uncertainty`; the area of
    applicability last among them), then :data:`FAILED` when the prediction has it."""
    out = with_relative_uncertainty(prediction)
    if FAILED in out.data_vars and list(out.data_vars)[-1] != FAILED:
        out = out[[n for n in out.data_vars if n != FAILED] + [FAILED]]
    return out


def write_prediction(
    prediction: Any,
    folder: str | os.PathLike[str],
    interval: tuple[float, float],
    *,
    run_id: str | None = None,
    format: str = "cog",
    overviews: bool = True,
    label: str | None = None,
    model: str | None = None,
    writer: str = "workers",
    tiles: str | os.PathLike[str] | None = None,
    key: str | None = None,
    on_resume: Any = None,
    wait: bool = True,
) -> WrittenMaps:
    """Write every variable of a (lazy) prediction, computing it once, chunk by chunk.

    Each map carries CF attributes (:func:`mapping.map_metadata.map_attributes`); a
    ``relative_uncertainty`` map, ``(upper - lower) / median``, is added when the
    prediction has quantiles, and the area of applicability is written as ``uint8``
    (0 outside, 1 inside, 255 without a prediction). The :data:`FAILED` variable is not
    written: its cells are counted, and a :class:`PredictionFailureWarning` gives the
    count when there are any.

    Parameters
    ----------
    prediction
        Output of :func:`predict_grid`.
    folder
        Destination folder (created if needed).
    interval
        ``(top_cm, bottom_cm)``; names the files and goes into the tags.
    run_id
        Run identifier written into the tags.
    format
        ``"cog"``: one Cloud-Optimized GeoTIFF per variable,
        ``soc_<top>_<bottom>cm_<statistic>.tif``; ``"zarr"``: one Zarr store
        ``soc_<top>_<bottom>cm.zarr`` holding all variables.
    overviews
        Build COG overviews.
    label
        Progress-bar label.
    model
        Model kind, written into the maps' attributes.
    writer
        COG only: ``"workers"``: each task writes its chunk of every map and the workers
        assemble the COGs (:func:`mapping.io.write_tiled_cogs`; a distributed cluster
        needs ``folder`` on a file system its workers share); ``"client"``: chunks are
        sent to this process, which writes them (no shared file system needed).
    tiles, key
        COG only: folder of the chunk files and the identity of the computation. With
        both, chunk files are kept when writing fails or is killed and a later call with
        the same key computes only the missing chunks (:mod:`mapping.run.checkpoint`).
    on_resume
        ``on_resume(kept, n_chunks)`` when chunk files of an interrupted run are reused.
    wait
        COG only: False returns once the chunks are written (and the failed cells
        counted), the maps still being assembled on the workers; call
        :meth:`WrittenMaps.wait` before using them. The next interval's chunks then
        share the workers with this interval's assembly.

    Returns
    -------
    WrittenMaps
        Variable name -> file written (for Zarr every variable maps to the store), with
        the number of failed cells as ``.failed``.
    """
    top, bottom = interval
    folder = Path(folder)
    text = format_interval(top, bottom)
    label = label or f"predicting {text} cm"
    layers = prediction_layers(prediction)
    names = [str(n) for n in layers.data_vars if n != FAILED]
    flags = [layers[FAILED].data] if FAILED in layers.data_vars else []
    quantiles = tuple(prediction.attrs.get("quantiles", (0.05, 0.95)))

    def attrs(name: str) -> dict[str, str]:
        a = map_attributes(name, top, bottom, quantiles=quantiles, model=model, version=__version__)  # type: ignore[arg-type]
        if run_id:
            a["run_id"] = run_id
        return a

    if format == "zarr":
        path = folder / f"soc_{top:g}_{bottom:g}cm.zarr"
        ds = layers[names].assign_attrs(
            interval=text, interval_cm=f"{text} cm", run_id=run_id or ""
        )
        for name in names:
            ds[name].attrs.update(attrs(name))
        sums = [f.sum() for f in flags]
        _, counts = io.write_zarr_with(ds, path, sums, label=label)
        failed = int(counts[0]) if counts else 0
        return _written({n: path for n in names}, failed, text)
    if format != "cog":
        raise ModelError(f"prediction.format {format!r}: use 'cog' or 'zarr'")
    if writer not in WRITERS:
        raise ModelError(f"prediction.writer {writer!r}: use one of {list(WRITERS)}")
    items: list[tuple[str | os.PathLike[str], Any, dict[str, Any] | None]] = [
        (folder / map_filename(top, bottom, n), _as_written(n, layers[n]), attrs(n)) for n in names
    ]
    done = io.write_tiled_cogs(
        items,
        tiles=tiles,
        key=key,
        counts=flags,
        overviews=overviews,
        label=label,
        on_workers=writer == "workers",
        on_resume=on_resume,
        wait=wait,
    )
    failed = done.counts[0] if flags else 0
    return _written(dict(zip(names, done.paths, strict=True)), failed, text, done.wait)


def _written(
    paths: dict[str, Path], failed: int, interval: str, pending: Any = None
) -> WrittenMaps:
    if failed:
        warnings.warn(
            f"{interval} cm: {failed} cell(s) with valid covariates have no prediction: the "
            "model could not solve them (kriging systems that did not factorise); they are "
            "nodata in the maps",
            PredictionFailureWarning,
            stacklevel=3,
        )
    return WrittenMaps(paths, failed, pending)


def with_relative_uncertainty(prediction: Any) -> Any:
    """Add ``relative_uncertainty = (upper - lower) / median`` when the quantiles are there.

    As the SoilGrids uncertainty layer: the width of the prediction interval over the
    median, dimensionless; NaN where the median is not positive. Lazy, float32.
    """
    names = set(prediction.data_vars)
    if not {"lower", "median", "upper"} <= names or RELATIVE_UNCERTAINTY in names:
        return prediction
    ratio = relative_uncertainty(prediction["lower"], prediction["median"], prediction["upper"])
    ratio = ratio.astype("float32").rio.write_crs(prediction["median"].rio.crs)
    ratio.attrs = {"units": "1", "statistic": RELATIVE_UNCERTAINTY}
    out = prediction.assign({RELATIVE_UNCERTAINTY: ratio})
    # the area of applicability stays last (the order the maps are listed in)
    order = [n for n in out.data_vars if n != "aoa"] + (["aoa"] if "aoa" in names else [])
    return out[order]


def _as_written(name: str, var: Any) -> Any:
    """The array a map file holds: the AOA as ``uint8`` (255 without a prediction)."""
    if name != "aoa":
        return var
    flags = var.fillna(AOA_NODATA).astype("uint8")
    flags.attrs = dict(var.attrs)
    return flags.rio.write_crs(var.rio.crs).rio.write_nodata(AOA_NODATA)
