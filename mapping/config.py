"""Typed, frozen workflow configuration.

A workflow is one YAML file (see ``workflows/sample.yaml`` and
``docs/config.md``). It is loaded once with :func:`load_config`, validated
against the schema below and passed explicitly to the stages. Unknown keys,
wrong types and missing or unreadable input files are :class:`ConfigError`
with a one-line message naming the file and the key. Relative paths are
resolved against the folder of the config file. YAML is read with
``yaml.safe_load``: no value is ever evaluated as code.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pyproj
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from mapping import io
from mapping.exceptions import ConfigError
from mapping.grid import _angular_factor
from mapping.units import DEFAULT_BREAKS, parse_interval


def _resolve(p: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    p = Path(os.path.expanduser(str(p)))
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return p.resolve()


def _input_path(p: Path, info: ValidationInfo) -> Path:
    p = _resolve(p, info)
    if (info.context or {}).get("check_files", True):
        if not p.exists():
            raise ValueError(f"file not found: {p}")
        if not os.access(p, os.R_OK):
            raise ValueError(f"file not readable: {p}")
    return p


InputPath = Annotated[Path, AfterValidator(_input_path)]
OutputPath = Annotated[Path, AfterValidator(_resolve)]


_DISTANCE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(km|m)\s*")
_METRES_PER = {"m": 1.0, "km": 1000.0}


def _parse_distance(v: Any) -> Any:
    """``"300 km"`` or ``"300000 m"`` to metres (float); numbers pass unchanged."""
    if isinstance(v, str):
        m = _DISTANCE.fullmatch(v)
        if m is None:
            raise ValueError(
                f"distance {v!r} must be a number with a unit, e.g. '300 km' or '300000 m'"
            )
        return float(m.group(1)) * _METRES_PER[m.group(2)]
    return v


Distance = Annotated[float, BeforeValidator(_parse_distance)]
"""A distance in metres, written ``300 km``, ``300000 m`` or (projected grids only) ``300000``."""


def _readable_crs(v: str) -> str:
    try:
        pyproj.CRS.from_user_input(v)
    except pyproj.exceptions.CRSError:
        raise ValueError(f"{v!r} is not a CRS (e.g. EPSG:4326, EPSG:6931)") from None
    return v


Crs = Annotated[str, AfterValidator(_readable_crs)]
"""A CRS as pyproj reads it (``EPSG:6931``, a WKT or PROJ string), checked when read."""

DISTANCE_KEYS = (
    "model.variogram.range",
    "model.variogram.cutoff",
    "model.max_distance",
    "cv.block_size",
)
"""Config keys holding distances: same meaning on any grid (:data:`Distance`)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfilesConfig(_Section):
    """Where the horizon table is and how its columns are named."""

    path: InputPath
    crs: Crs = "EPSG:4326"
    layer: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    """Canonical name -> name in the file, e.g. ``{soc_pct: OC_percent}``."""
    max_rows: int = Field(5_000_000, ge=1)
    """Largest horizon table read (rows); a longer one is refused before it fills memory."""


class StocksConfig(_Section):
    """Profile stocks at standard depths."""

    depths: list[str] = Field(default_factory=lambda: ["0-30", "0-100", "0-200", "0-300"])
    method: Literal["spline", "linear"] = "spline"
    spline_lambda: float = Field(0.1, gt=0)
    depth_tolerance_cm: float = Field(0.0, ge=0)
    bulk_density_ptf: str = "default"
    on_invalid: Literal["error", "skip"] = "error"

    @field_validator("depths")
    @classmethod
    def _check_depths(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one depth interval is needed")
        seen: dict[tuple[float, float], str] = {}
        for d in v:
            iv = parse_interval(d)
            if iv in seen:
                raise ValueError(f"{d} is given twice (as {seen[iv]!r} before)")
            seen[iv] = d
        return v

    def intervals(self) -> list[tuple[float, float]]:
        return [parse_interval(d) for d in self.depths]


class CovariateConfig(_Section):
    """One covariate raster."""

    name: str
    path: InputPath
    kind: Literal["continuous", "categorical"] = "continuous"
    resampling: Literal["nearest", "bilinear", "cubic", "average", "mode"] | None = None
    band: int = Field(1, ge=1)
    variable: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"covariate name {v!r} must be an identifier (letters, digits, _)")
        return v

    @property
    def resampling_method(self) -> str:
        if self.resampling is not None:
            return self.resampling
        return "nearest" if self.kind == "categorical" else "bilinear"


class GridConfig(_Section):
    """Target grid: like the first covariate (default), or CRS + resolution + bounds."""

    like: Literal["first_covariate"] | InputPath | None = "first_covariate"
    crs: Crs | None = None
    resolution: float | tuple[float, float] | None = None
    bounds: tuple[float, float, float, float] | None = None
    chunks: int = Field(512, ge=16)

    @model_validator(mode="after")
    def _bounds_on_the_globe(self) -> GridConfig:
        if self.crs is None or self.bounds is None:
            return self
        crs = pyproj.CRS.from_user_input(self.crs)
        if crs.is_geographic:
            left, bottom, right, top = self.bounds
            turn = 360.0 / _angular_factor(crs)  # 400 in grads
            if not -90.0 <= bottom < top <= 90.0:
                raise ValueError(
                    f"bounds: latitudes {bottom:g} to {top:g} must lie in [-90, 90] "
                    "(left, bottom, right, top in degrees)"
                )
            if right - left > turn:
                raise ValueError(
                    f"bounds: longitudes {left:g} to {right:g} span {right - left:g}, more "
                    f"than the globe's {turn:.6g}: the land past the first turn would count twice"
                )
        return self


class VariogramConfig(_Section):
    model: Literal["spherical", "exponential", "gaussian", "matern"] = "spherical"
    psill: float | None = None
    range: Distance | None = None
    nugget: float | None = None
    nu: float | None = None
    cutoff: Distance | None = Field(None, gt=0)
    """Largest lag (m) of the sample variogram; default one third of the bounding-box diagonal (gstat)."""
    n_lags: int = Field(15, ge=3)
    """Number of equal-width lag bins up to ``cutoff`` (gstat's default 15)."""
    bound_range: bool = True
    """Hold a fitted practical range at most at the largest lag (the data cannot place it
    further); ``false`` = gstat's ``fit.variogram`` exactly."""


class ModelConfig(_Section):
    """Model per depth interval."""

    type: Literal["regression_kriging", "random_forest", "boosted_trees"] = "regression_kriging"
    trend: Literal["random_forest", "boosted_trees", "linear", "linear_forest"] = "random_forest"
    params: dict[str, Any] = Field(default_factory=dict)
    variogram: VariogramConfig = Field(default_factory=VariogramConfig)
    n_neighbors: int | None = Field(32, ge=1)
    max_distance: Distance | None = Field(None, gt=0)
    log_transform: bool = False
    depth: Literal["per_interval", "layered"] = "per_interval"
    """``per_interval``: one model per depth interval; ``layered``: one
    :class:`mapping.depth_model.LayeredDepthModel` for every depth (``docs/depth_model.md``)."""
    layers: tuple[float, ...] = DEFAULT_BREAKS
    """Layer boundaries (cm) of the layered model, from 0, increasing."""
    anchor_cm: float | None = 30.0
    """Layered model: the break whose 0-``anchor_cm`` density is the kriged level (null: none)."""
    weighting: Literal["none", "area"] = "none"
    """Layered model: ``area`` fits the level and the shape with each profile weighted by
    the inverse of the sampling intensity around it in covariate space
    (:func:`mapping.area_weights.area_weights`), so the trees fit the mapped land rather
    than the profiles; ``none``: every profile alike (``docs/depth_model.md``)."""
    weighting_power: float = Field(0.5, gt=0, le=1)
    """With ``weighting: area``: the weights are the density ratio to this power (1: the
    full ratio; 0.5, the default, measured best for the maps and the totals on three world
    suites, ``docs/depth_model.md``, "Fitting to the mapped area")."""

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) < 2 or v[0] != 0 or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"layers must start at 0 and increase strictly, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _anchor_is_a_break(self) -> ModelConfig:
        if (
            self.depth == "layered"
            and self.anchor_cm is not None
            and self.anchor_cm not in self.layers
        ):
            raise ValueError(f"anchor_cm {self.anchor_cm:g} is not one of the layer breaks")
        if self.weighting != "none" and self.depth != "layered":
            raise ValueError("weighting: area needs depth: layered")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # the per-interval default dumps as before the layered keys existed, so run
        # fingerprints and model metadata of per-interval runs are unchanged
        data = handler(self)
        if self.depth == "per_interval":
            for key in ("depth", "layers", "anchor_cm"):
                data.pop(key, None)
        if self.weighting == "none":  # as before the keys existed
            data.pop("weighting", None)
            data.pop("weighting_power", None)
        return data


class CVConfig(_Section):
    method: Literal["kfold", "block", "knndm"] = "knndm"
    n_splits: int = Field(5, ge=2)
    block_size: Distance | None = Field(None, gt=0)
    space: Literal["geographical", "feature"] = "feature"
    """Space of kNNDM's distances: the covariates (``feature``, the trend's error) or the
    coordinates (``geographical``, the residual's); only for ``method: knndm``."""
    weighting: Literal["area", "none"] = "area"
    """``area``: the CV metrics are also reported weighted to the mapped area (inverse
    sampling intensity in covariate space, ``docs/validation.md``); ``none``: only at the
    profiles."""
    bootstrap: int = Field(1000, ge=0)
    """Replicates of the spatial block bootstrap that gives the CV RMSE its 90 % range
    (``rmse_lower``, ``rmse_upper`` in the CV tables); 0: no range."""
    bootstrap_block: Distance = Field(100_000.0, gt=0)
    """Side of the bootstrap's square blocks of profiles: wider than the CV errors'
    correlation (``docs/validation.md``, "How sure is a CV RMSE")."""
    repeats: int = Field(1, ge=1)
    """Partitions of the cross-validation (the first one and ``repeats - 1`` more, each with
    its own seed): the CV metrics pool them, and the zone totals' regional error variance is
    their mean (``uncertainty.regional``). The per-fold table, plots, AOA and error models
    use the first. Needs ``model.depth: layered`` (``docs/uncertainty.md``, "More
    partitions"; the sample workflow sets 3)."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.repeats == 1:  # as before the key existed
            data.pop("repeats", None)
        return data

    @model_validator(mode="after")
    def _block_needs_size(self) -> CVConfig:
        if self.method == "block" and self.block_size is None:
            raise ValueError("block_size (metres) is required when method is block")
        return self


class CalibrationConfig(_Section):
    """How the per-cell error model is fitted (:func:`mapping.calibration.fit_error_model`)."""

    kind: Literal["ratio", "additive"] = "ratio"
    extrapolate: Literal["linear", "constant"] = "linear"
    min_per_bin: int = Field(30, ge=2)
    max_bins: int = Field(10, ge=1)
    range_extrapolation: bool = True
    """Widen the intervals of cells beyond the training range of the covariates: by the
    error growth of held-out profiles beyond their fold's range, and at least by the
    observations' semivariogram in feature space (``docs/calibration.md``)."""
    range_cap: float | None = Field(8.0, gt=0)
    """That term lifts a cell's variance to at most this multiple of the observations'
    variance (log scale for log models); ``null``: no cap."""
    weighting: Literal["none", "area"] = "none"
    """``area``: the error model's sums weigh each CV point by its weight to the mapped
    area (``cv.weighting: area``; ``docs/calibration.md``)."""
    partitions: Literal["first", "all"] = "first"
    """Layered model with ``cv.repeats`` above 1: ``all`` fits the error models on the CV
    errors of every partition, each at its DI to its own fold's training data;
    ``first``: on the first partition's."""
    shape: Literal["isotonic", "loglinear"] = "isotonic"
    """The ratio's curve against the DI: ``isotonic`` (one non-decreasing step per bin) or
    ``loglinear`` (``c exp(beta DI)``, two parameters from all CV points;
    ``docs/calibration.md``, "The curve's shape")."""
    shared_shape: Literal["isotonic", "loglinear"] | None = None
    """Another curve for the excess over the in-domain level alone (the extrapolation
    error the zone totals share, ``uncertainty.shared: extrapolation``, and a design's
    prediction of it): the cells' intervals keep ``shape``'s variance. ``null``: ``shape``
    for both (``docs/calibration.md``, "One curve for the cells, another for the shared
    error")."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        # as before the keys existed (runs' fingerprints)
        if self.shape == "isotonic":
            data.pop("shape", None)
        if self.shared_shape is None:
            data.pop("shared_shape", None)
        return data

    @model_validator(mode="after")
    def _loglinear_needs_ratio(self) -> CalibrationConfig:
        if "loglinear" in (self.shape, self.shared_shape) and self.kind != "ratio":
            raise ValueError("shape loglinear needs kind ratio (a ratio's curve)")
        return self


class PredictionConfig(_Section):
    quantiles: tuple[float, float] = (0.05, 0.95)
    chunks: int = Field(512, ge=16)
    aoa: bool = True
    calibrate: bool = True
    """Std and quantile maps from the error model fitted on the CV errors against the
    dissimilarity index (regression kriging only; ``docs/calibration.md``)."""
    # mypy without pydantic's plugin cannot type a model class as a default factory
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)  # type: ignore[arg-type]
    format: Literal["cog", "zarr"] = "cog"
    writer: Literal["workers", "client"] = "workers"
    """Who writes the maps' chunks: the workers that compute them (the output folder must
    be on a file system every worker reaches) or the process that runs socmap."""
    depths: list[str] = Field(default_factory=list)
    """Layered model: more intervals mapped from the same fit (e.g. ``[0-50, 0-150]``)."""

    @field_validator("depths")
    @classmethod
    def _check_depths(cls, v: list[str]) -> list[str]:
        for d in v:
            parse_interval(d)
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if not self.depths:  # runs without extra depths dump as before the key existed
            data.pop("depths", None)
        if self.writer == "workers":  # who writes does not change a map: not fingerprinted
            data.pop("writer", None)
        return data

    @field_validator("quantiles")
    @classmethod
    def _check_q(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 < lo < hi < 1:
            raise ValueError("quantiles must satisfy 0 < lower < upper < 1")
        return v

    @model_validator(mode="after")
    def _shared_shape_needs_the_di(self) -> PredictionConfig:
        if self.calibration.shared_shape is not None and not self.aoa:
            raise ValueError("calibration.shared_shape needs the DI map (aoa: true)")
        return self


class ZonesConfig(_Section):
    path: InputPath
    field: str | None = None
    names: dict[int, str] = Field(default_factory=dict)
    unit: Literal["Pg", "Tg"] = "Pg"
    nodata: list[int | str] = Field(default_factory=list)
    """Zone codes (or names, for a text field of polygons) that mean "no zone": a raster's
    background the file does not declare as nodata, a "no permafrost" class of the
    polygons. With ``names``, every other code on the grid must be named."""

    @model_validator(mode="after")
    def _nodata_is_not_named(self) -> ZonesConfig:
        named = {str(c) for c in self.names} | {str(n).casefold() for n in self.names.values()}
        both = [c for c in self.nodata if str(c).casefold() in named]
        if both:
            raise ValueError(f"nodata: {both[0]!r} is also in names")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if not self.nodata:  # as before the key existed (runs' fingerprints)
            data.pop("nodata", None)
        return data


class UncertaintyConfig(_Section):
    n_realizations: int = Field(100, ge=2)
    range: tuple[float, float] = (5.0, 95.0)
    """Percentiles of the Monte Carlo totals that bound the reported range (5 and 95 for a
    90 % range; ``prediction.quantiles`` are fractions, these are percentages)."""

    @field_validator("range")
    @classmethod
    def _check_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(
                f"percentiles with 0 <= lower < upper <= 100 (e.g. [5, 95]); got {list(v)}"
            )
        if hi <= 1.0:
            raise ValueError(
                f"percentiles, not fractions: [{100 * lo:g}, {100 * hi:g}] for {list(v)} "
                "(prediction.quantiles are fractions, uncertainty.range percentages)"
            )
        return v

    regional: Literal["folds_pooled", "folds_net", "folds"] = "folds_pooled"
    """Regional error of the totals from the CV fold errors: the regional share pooled over
    the intervals (``folds_pooled``); the same net of the residual field's covariance
    within a fold, which the draws hold already (``folds_net``; over-corrects where the
    CV's held-out profiles lie near training ones, docs/uncertainty.md); or each
    interval's own fold means (``folds``)."""
    shared: Literal["constant", "proportional", "extrapolation"] = "constant"
    """How the regional error is shared: one standard deviation for every cell (capped at
    the cell's own; ``constant``), or the same share of every cell's own variance, so it
    grows where the maps are less certain (``proportional``), or each cell's calibrated
    error above the error model's in-domain level, in place of the CV regional error
    (``extrapolation``; log models with error models, docs/uncertainty.md)."""
    correlation: Literal["residuals", "cv_errors"] = "residuals"
    """The correlation of the cells' own errors in the Monte Carlo (and a design): the
    fitted residual variogram's (``residuals``), or that of a variogram fitted to the
    standardised cross-validation errors (``cv_errors``; log models with error models,
    docs/uncertainty.md)."""
    reference: Literal["median", "mean"] = "median"
    """With ``shared: extrapolation``, the in-domain level above which a cell's calibrated
    error is shared: the error model at the training points' median DI (``median``), or
    their mean variance ratio (``mean``: the DI where the error model's non-decreasing
    curve first reaches its mean over the training points' DIs; docs/uncertainty.md)."""

    level: Literal["constant", "local"] = "constant"
    """How the cells carry the error of the residuals' mean level (``residual_mean_sd``):
    every cell all of it (``constant``), or each cell the share ``1 - k' K⁻¹ 1`` its
    kriging leaves the mean, none where the data pin it down, so the level's part of a
    zone's range falls as profiles fill the zone (``local``; docs/uncertainty.md)."""
    zone_error: Literal["none", "cv"] = "none"
    """An error of each zone's mean, shared by the zone's totals at every depth: none, or
    the standard error of the mean CV error of the zone's own profiles (``cv``;
    :mod:`mapping.zone_error`, docs/uncertainty.md), which a variogram cannot show and a
    local level leaves out where the profiles are dense."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        # the defaults of keys added later are left out, as before the keys existed (runs'
        # fingerprints)
        if self.reference == "median":
            data.pop("reference", None)
        if self.level == "constant":
            data.pop("level", None)
        if self.zone_error == "none":
            data.pop("zone_error", None)
        return data


class ActiveLayerConfig(_Section):
    """Active-layer thickness (cm) for the thawed / perennially frozen split: a raster
    (any CRS and resolution, aligned bilinearly onto the grid) or one constant."""

    path: InputPath | None = None
    constant: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> ActiveLayerConfig:
        if (self.path is None) == (self.constant is None):
            raise ValueError("give exactly one of path and constant")
        return self


class TLSConfig(_Section):
    """Certificates of this client for a ``tls://`` scheduler (Dask's ``Security``).

    Without this section, Dask's own TLS settings apply (``distributed.comm.tls.*``,
    e.g. the ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE`` environment variable).
    """

    ca_file: InputPath
    cert: InputPath
    key: InputPath | None = None


_DASHBOARD = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]*):\d{1,5}$")


def valid_dashboard(v: str | None) -> str | None:
    """A checked dashboard address: ``HOST:PORT``, or ``None`` for ``null`` / ``"off"``."""
    if v is None or v.strip().lower() in {"off", "none", "null"}:
        return None
    if not _DASHBOARD.match(v.strip()):
        raise ValueError(f"dashboard {v!r} is not HOST:PORT (e.g. 127.0.0.1:8787) or off")
    return v.strip()


class RunConfig(_Section):
    """A whole workflow."""

    seed: int = 0
    output: OutputPath
    profiles: ProfilesConfig
    stocks: StocksConfig = Field(default_factory=StocksConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    covariates: list[CovariateConfig] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    prediction: PredictionConfig = Field(default_factory=PredictionConfig)
    zones: ZonesConfig | None = None
    uncertainty: UncertaintyConfig = Field(default_factory=UncertaintyConfig)
    scheduler: str | None = None
    n_jobs: int | None = Field(None, ge=1)
    """Local processes of the fit stage (the intervals fitted side by side) and of the
    report's figures; ``null``: the usable cores. Results do not depend on it."""
    dashboard: str | None = "127.0.0.1:8787"
    """Where a local cluster's dashboard listens: loopback by default; ``0.0.0.0:8787``
    exposes it (no authentication) to other machines; ``null`` turns it off."""
    tls: TLSConfig | None = None
    active_layer: ActiveLayerConfig | None = None
    """Thawed vs perennially frozen storage per zone (``model.depth: layered``, zones)."""

    source: Path | None = Field(None, exclude=True)
    _bare_distances: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _note_bare_distances(cls, data: Any, handler: Any) -> RunConfig:
        # A distance written as a bare number means metres of a projected grid; which ones
        # were is kept so that a geographic grid can refuse them (check_distances).
        cfg = handler(data)
        if isinstance(data, dict):
            bare = []
            for key in DISTANCE_KEYS:
                v: Any = data
                for part in key.split("."):
                    v = v.get(part) if isinstance(v, dict) else None
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    bare.append(key)
            cfg._bare_distances = tuple(bare)
        return cfg

    def check_distances(self, geographic: bool) -> None:
        """Refuse distances written without a unit when the grid is geographic.

        Raises
        ------
        ConfigError
            One line naming the key and how to write it.
        """
        if not geographic or not self._bare_distances:
            return
        key = self._bare_distances[0]
        metres: Any = self
        for part in key.split("."):
            metres = getattr(metres, part)
        where = f"{self.source}: " if self.source is not None else ""
        raise ConfigError(
            f"{where}{key}: a bare number is a distance in metres of a projected grid; the grid "
            f"is geographic, so write it with a unit, e.g. {key.rsplit('.', 1)[-1]}: "
            f"{_with_unit(float(metres))}"
        )

    @field_validator("dashboard")
    @classmethod
    def _check_dashboard(cls, v: str | None) -> str | None:
        return valid_dashboard(v)

    @model_validator(mode="after")
    def _depths_within_layers(self) -> RunConfig:
        if self.model.depth == "layered":
            last = self.model.layers[-1]
            for d, (_, bottom) in zip(self.stocks.depths, self.stocks.intervals(), strict=True):
                if bottom > last:
                    raise ValueError(
                        f"stocks.depths: {d} reaches below the deepest model.layers break "
                        f"({last:g} cm)"
                    )
            for d in self.prediction.depths:
                if parse_interval(d)[1] > last:
                    raise ValueError(
                        f"prediction.depths: {d} reaches below the deepest model.layers break "
                        f"({last:g} cm)"
                    )
        elif self.prediction.depths:
            raise ValueError("prediction.depths needs model.depth: layered")
        elif self.cv.repeats > 1:
            raise ValueError("cv.repeats above 1 needs model.depth: layered")
        elif self.active_layer is not None:
            raise ValueError("active_layer needs model.depth: layered")
        if self.active_layer is not None and self.zones is None:
            raise ValueError("active_layer needs zones (the split is per zone)")
        return self

    @model_validator(mode="after")
    def _uncertainty_needs_kriging(self) -> RunConfig:
        # a tree model has no residual variogram, so no Monte Carlo ranges that these keys
        # could change: refused rather than silently left out of the totals' ranges
        if self.model.type == "regression_kriging":
            return self
        unc = self.uncertainty
        for key, value, default in (
            ("level", unc.level, "constant"),
            ("zone_error", unc.zone_error, "none"),
        ):
            if value != default:
                raise ValueError(
                    f"uncertainty.{key}: {value} needs model.type: regression_kriging (a "
                    f"{self.model.type} model has no Monte Carlo ranges of the totals); "
                    f"remove the key or set it to {default}"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.active_layer is None:  # runs without it dump as before the key existed
            data.pop("active_layer", None)
        return data

    @field_validator("covariates")
    @classmethod
    def _unique_names(cls, v: list[CovariateConfig]) -> list[CovariateConfig]:
        seen: set[str] = set()
        for c in v:
            if c.name in seen:
                raise ValueError(f"covariate name {c.name!r} appears twice")
            seen.add(c.name)
        return v


def _with_unit(metres: float) -> str:
    km = metres / 1000.0
    return f"{km:g} km" if km >= 1 else f"{metres:g} m"


_MAX_CONFIG_CHARS = 1 << 20  # a workflow config is a page or two
_MAX_CONFIG_VALUES = 100_000


def _expanded_size(root: yaml.Node) -> int:
    """Number of nodes ``root`` stands for with every alias expanded (shared nodes counted
    once per use), computed once per distinct node; stops counting past the limit."""
    memo: dict[int, int] = {}
    # iterative post-order: deep nesting must not hit Python's recursion limit
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        if isinstance(node, yaml.ScalarNode):
            memo[id(node)] = 1
            continue
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            total = 1 + sum(memo.get(id(c), 0) for c in children)
            memo[id(node)] = min(total, _MAX_CONFIG_VALUES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def _format_error(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    loc = f"{loc}: " if loc else ""  # a whole-config rule's message names its keys itself
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if kind not in {"value_error"} and "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{path}: {loc}{msg}{more}"


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> RunConfig:
    """Load and validate a workflow YAML file.

    Parameters
    ----------
    path
        The YAML file. Relative paths inside it are taken from its folder.
    check_files
        Check that input files exist and are readable.

    Raises
    ------
    ConfigError
        One line naming the file and the offending key.
    """
    p = Path(path)
    try:
        text = io.read_text(p)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config ({type(exc).__name__})") from None
    if len(text) > _MAX_CONFIG_CHARS:
        raise ConfigError(f"{p}: config is {len(text)} characters, more than {_MAX_CONFIG_CHARS}")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        # aliases (*name) share one node, so a few lines can stand for billions of values
        # ("billion laughs"); count what they expand to before building anything
        if node is not None and _expanded_size(node) > _MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{p}: YAML aliases (*name) expand the config to more than "
                f"{_MAX_CONFIG_VALUES} values; write the values out"
            )
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: invalid YAML{where}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: config must be a mapping of keys to values")
    ctx = {"base_dir": p.resolve().parent, "check_files": check_files}
    try:
        cfg = RunConfig.model_validate(data, context=ctx)
    except ValidationError as exc:
        raise ConfigError(_format_error(p, exc)) from None
    return cfg.model_copy(update={"source": p.resolve()})
