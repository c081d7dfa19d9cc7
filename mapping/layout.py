"""The output folder of a run: every path in it, named once.

::

    OUT/
      manifest.json        config, input checksums, package versions, seed, per-stage status and timings
      stocks/              profile stocks, profile counts per interval
      training/            stocks joined with covariates at the profiles
      models/<interval>/   fitted model + metadata, CV metrics, observed-vs-predicted plot
      maps/                soc_<top>_<bottom>cm_<statistic>.tif
      zones/               storage table, Monte Carlo draws and ranges
      report/              index.html, report.md, figures/, tables/
      stac/                collection.json and one item per map (<item>/<item>.json)

:class:`RunFolder` is the only code that knows this layout: the stages of ``mapping.run``
write through it and ``mapping.report`` reads a run through it. It only computes paths;
opening files is :mod:`mapping.io`'s job.

>>> run = RunFolder("/data/out")
>>> run.rel(run.model_file("0-30"))
'models/0-30/model.joblib'
>>> run.rel(run.map_file(0, 30, "mean"))
'maps/soc_0_30cm_mean.tif'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mapping.units import format_interval, map_filename, map_stem

__all__ = ["RunFolder"]

_MAP_NAME = re.compile(
    r"^soc_(?P<top>\d+(?:\.\d+)?)_(?P<bottom>\d+(?:\.\d+)?)cm_(?P<stat>[a-z_]+)\.tif$"
)
_ZARR_NAME = re.compile(r"^soc_(?P<top>\d+(?:\.\d+)?)_(?P<bottom>\d+(?:\.\d+)?)cm\.zarr$")
_ZARR_STATISTICS = ("mean", "median", "lower", "upper", "std", "relative_uncertainty", "di", "aoa")


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run's output folder (nothing is created or opened)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    STAGE_FOLDERS = ("stocks", "training", "models", "maps", "zones", "report")
    """Folders a run writes (a file in their place is an error found before running)."""

    PARTIAL = ".partial"
    """Folder in ``maps/`` holding the finished chunks of an unfinished prediction."""

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the root, as the manifest records it."""
        return str(Path(path).relative_to(self.root))

    # ------------------------------------------------------------------ manifest
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    # ------------------------------------------------------------------ stocks, training
    @property
    def stocks(self) -> Path:
        return self.root / "stocks" / "stocks.csv"

    @property
    def interval_counts(self) -> Path:
        return self.root / "stocks" / "interval_counts.csv"

    @property
    def invalid_profiles(self) -> Path:
        return self.root / "stocks" / "invalid_profiles.csv"

    @property
    def layers(self) -> Path:
        """Layer stocks of the profiles (layered depth model)."""
        return self.root / "stocks" / "layers.csv"

    @property
    def training_layers(self) -> Path:
        """Layer stocks joined with covariates (layered depth model)."""
        return self.root / "training" / "layers.parquet"

    @property
    def training(self) -> Path:
        return self.root / "training" / "training.parquet"

    @property
    def excluded_profiles(self) -> Path:
        return self.root / "training" / "excluded_profiles.csv"

    # ------------------------------------------------------------------ models
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_folder(self, label: str) -> Path:
        return self.models / label

    def model_file(self, label: str) -> Path:
        return self.model_folder(label) / "model.joblib"

    def aoa_file(self, label: str) -> Path:
        return self.model_folder(label) / "aoa.joblib"

    def error_model_file(self, label: str) -> Path:
        return self.model_folder(label) / "error_model.joblib"

    def error_model_table(self, label: str) -> Path:
        return self.model_folder(label) / "error_model.csv"

    def reliability_table(self, label: str) -> Path:
        return self.model_folder(label) / "reliability.csv"

    def coverage_by_di_table(self, label: str) -> Path:
        return self.model_folder(label) / "coverage_by_di.csv"

    def cv_predictions(self, label: str) -> Path:
        return self.model_folder(label) / "cv_predictions.csv"

    def cv_repeats(self, label: str) -> Path:
        """Out-of-fold predictions of the further CV partitions (``cv.repeats``)."""
        return self.model_folder(label) / "cv_repeats.csv"

    def cv_metrics(self, label: str) -> Path:
        return self.model_folder(label) / "cv_metrics.csv"

    def observed_vs_predicted(self, label: str) -> Path:
        return self.model_folder(label) / "observed_vs_predicted.png"

    def model_metadata(self, label: str) -> Path:
        return self.model_folder(label) / "metadata.json"

    @property
    def layered_model(self) -> Path:
        """The one fitted :class:`mapping.depth_model.LayeredDepthModel` of a layered run."""
        return self.models / "layered_model.joblib"

    @property
    def cv_summary(self) -> Path:
        return self.models / "cv_summary.csv"

    def model_labels(self) -> list[str]:
        """Names of the per-interval model folders present, sorted."""
        if not self.models.is_dir():
            return []
        return sorted(p.name for p in self.models.iterdir() if p.is_dir())

    # ------------------------------------------------------------------ maps
    @property
    def maps(self) -> Path:
        return self.root / "maps"

    @property
    def partial(self) -> Path:
        return self.maps / self.PARTIAL

    def map_file(self, top: float, bottom: float, statistic: str) -> Path:
        return self.maps / map_filename(top, bottom, statistic)

    def interval_maps(self, top: float, bottom: float) -> dict[str, Path]:
        """The COG maps of one interval present on disk: statistic -> path."""
        stem = map_stem(top, bottom)
        return {p.stem.removeprefix(stem + "_"): p for p in sorted(self.maps.glob(stem + "_*.tif"))}

    def temporaries(self) -> list[Path]:
        """Temporary files a killed prediction left in ``maps/``."""
        return sorted(self.maps.glob(".*.tmp*"))

    def find_maps(self) -> dict[str, dict[str, tuple[Path, str | None]]]:
        """Every map present: interval label -> statistic -> (path, Zarr variable or None)."""
        found: dict[str, dict[str, tuple[Path, str | None]]] = {}
        if not self.maps.is_dir():
            return found
        for p in sorted(self.maps.iterdir()):
            m = _MAP_NAME.match(p.name)
            if m and p.is_file():
                label = format_interval(float(m["top"]), float(m["bottom"]))
                found.setdefault(label, {})[m["stat"]] = (p, None)
                continue
            m = _ZARR_NAME.match(p.name)
            if m and p.is_dir():
                label = format_interval(float(m["top"]), float(m["bottom"]))
                for stat in _ZARR_STATISTICS:
                    if (p / stat).is_dir():
                        found.setdefault(label, {})[stat] = (p, stat)
        return found

    # ------------------------------------------------------------------ zones
    @property
    def storage(self) -> Path:
        return self.root / "zones" / "storage.csv"

    @property
    def storage_json(self) -> Path:
        return self.root / "zones" / "storage.json"

    @property
    def independent_pixel_range(self) -> Path:
        return self.root / "zones" / "independent_pixel_range.csv"

    @property
    def draws(self) -> Path:
        return self.root / "zones" / "draws.parquet"

    @property
    def thaw_split(self) -> Path:
        """Seasonally thawed and perennially frozen storage per zone."""
        return self.root / "zones" / "thaw_split.csv"

    @property
    def storage_summary(self) -> Path:
        return self.root / "zones" / "storage_summary.csv"

    # ------------------------------------------------------------------ design
    @property
    def design(self) -> Path:
        """Proposed new profile sites (``socmap design``)."""
        return self.root / "design"

    @property
    def design_sites(self) -> Path:
        return self.design / "sites.gpkg"

    @property
    def design_targets(self) -> Path:
        return self.design / "targets.csv"

    # ------------------------------------------------------------------ report
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_index(self) -> Path:
        return self.report / "index.html"

    # ------------------------------------------------------------------ STAC catalogue
    @property
    def stac(self) -> Path:
        return self.root / "stac"

    @property
    def stac_collection(self) -> Path:
        return self.stac / "collection.json"

    def stac_item(self, item_id: str) -> Path:
        return self.stac / item_id / f"{item_id}.json"
