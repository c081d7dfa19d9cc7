"""Run the stages of a workflow in order, keep their results, skip what is unchanged.

The pipeline is the one place that knows the output folder::

    OUT/
      manifest.json        config, input checksums, package versions, seed, per-stage status and timings
      stocks/              profile stocks, profile counts per interval
      training/            stocks joined with covariates at the profiles
      models/<interval>/   fitted model + metadata, CV metrics, observed-vs-predicted plot
      maps/                soc_<top>_<bottom>cm_<statistic>.tif
      zones/               storage table
      report/              index.html, report.md, figures/

A stage is skipped when the manifest records it as complete with the same
fingerprint (its config section, the checksums of its inputs and the
fingerprints of the stages it depends on) and its outputs are still in place
with the recorded checksums. The manifest is rewritten (atomically) after every
stage, so a killed run resumes from the last finished stage.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import platform
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapping import io
from mapping.config import RunConfig, format_interval
from mapping.exceptions import MappingError

log = logging.getLogger("socmap")

MANIFEST = "manifest.json"
_PACKAGES = (
    "socmap",
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "dask",
    "distributed",
    "rasterio",
    "rioxarray",
    "pyproj",
    "shapely",
    "geopandas",
    "pyogrio",
    "scikit-learn",
    "quantile-forest",
    "pykrige",
    "gstools",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, plus Python and GDAL."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageContext:
    """What a stage function gets: the config, the output folder and earlier results."""

    config: RunConfig
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None


@dataclass(frozen=True)
class Stage:
    """One step of the workflow.

    ``run(ctx)`` does the work and returns ``(outputs, result)``: the paths it
    wrote (relative to the output folder) and an in-memory result for later
    stages. ``load(ctx)`` rebuilds that result from the files when the stage is
    skipped.
    """

    name: str
    run: Callable[[StageContext], tuple[list[str], Any]]
    load: Callable[[StageContext], Any]
    config_keys: tuple[str, ...]
    inputs: Callable[[RunConfig], list[Path]]
    depends: tuple[str, ...] = ()


class Manifest:
    """The run manifest: read, update per stage, written atomically."""

    def __init__(self, out: Path, config: RunConfig) -> None:
        self.path = out / MANIFEST
        self.out = out
        previous: dict[str, Any] = {}
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                previous = {}  # a damaged manifest only costs a full re-run
        self.data: dict[str, Any] = {
            "run_id": previous.get("run_id") or uuid.uuid4().hex[:12],
            "created": previous.get("created") or _now(),
            "updated": _now(),
            "config_file": str(config.source) if config.source else None,
            "config": json.loads(config.model_dump_json()),
            "seed": config.seed,
            "versions": package_versions(),
            "inputs": previous.get("inputs", {}),
            "stages": previous.get("stages", {}),
        }

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.data["stages"].get(name, {}))

    def is_complete(self, name: str, fingerprint: str) -> bool:
        rec = self.data["stages"].get(name)
        if not rec or rec.get("status") != "complete" or rec.get("fingerprint") != fingerprint:
            return False
        for rel, checksum in rec.get("outputs", {}).items():
            p = self.out / rel
            if not p.exists() or io.file_checksum(p) != checksum:
                return False
        return True

    def record(self, name: str, **fields: Any) -> None:
        self.data["stages"][name] = fields
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        io.write_json(self.data, self.path)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def input_checksums(paths: Iterable[Path], cache: dict[str, str]) -> dict[str, str]:
    out = {}
    for p in paths:
        key = str(p)
        if key not in cache:
            cache[key] = io.file_checksum(p)
        out[key] = cache[key]
    return out


def run_stages(
    config: RunConfig,
    stages: list[Stage],
    *,
    until: str | None = None,
    force: bool = False,
    scheduler: str | None = None,
    echo: Callable[[str], None] = print,
) -> StageContext:
    """Run ``stages`` in order (up to and including ``until``), skipping unchanged ones."""
    out = config.output
    ctx = StageContext(config=config, out=out, scheduler=scheduler or config.scheduler)
    manifest = Manifest(out, config)
    cache: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for stage in stages:
        cfg = json.loads(config.model_dump_json())
        section = {k: cfg.get(k) for k in stage.config_keys}
        inputs = input_checksums(stage.inputs(config), cache)
        manifest.data["inputs"].update(inputs)
        fp = _digest(
            {
                "stage": stage.name,
                "config": section,
                "inputs": inputs,
                "upstream": [fingerprints[d] for d in stage.depends if d in fingerprints],
                "version": manifest.data["versions"].get("socmap"),
            }
        )
        fingerprints[stage.name] = fp
        if not force and manifest.is_complete(stage.name, fp):
            echo(f"[{stage.name}] unchanged, reusing {out}")
            ctx.results[stage.name] = stage.load(ctx)
        else:
            echo(f"[{stage.name}] running")
            t0 = time.perf_counter()
            started = _now()
            try:
                outputs, result = stage.run(ctx)
            except MappingError:
                manifest.record(stage.name, status="failed", fingerprint=fp, started=started)
                raise
            seconds = time.perf_counter() - t0
            manifest.record(
                stage.name,
                status="complete",
                fingerprint=fp,
                started=started,
                seconds=round(seconds, 3),
                outputs={rel: io.file_checksum(out / rel) for rel in outputs},
            )
            ctx.results[stage.name] = result
            echo(f"[{stage.name}] done in {seconds:.1f} s")
        if until is not None and stage.name == until:
            break
    return ctx


# --------------------------------------------------------------------------- stages
def interval_label(top: float, bottom: float) -> str:
    """Folder-safe label of a depth interval: ``(0, 30) -> "0-30"``."""
    return format_interval(top, bottom)


def _stocks_inputs(cfg: RunConfig) -> list[Path]:
    return [cfg.profiles.path]


def _run_stocks(ctx: StageContext) -> tuple[list[str], Any]:
    from mapping.depths import compute_stocks
    from mapping.profiles import read_horizons

    cfg = ctx.config
    horizons = read_horizons(cfg.profiles.path, columns=dict(cfg.profiles.columns), layer=cfg.profiles.layer)
    result = compute_stocks(
        horizons,
        cfg.stocks.intervals(),
        method=cfg.stocks.method,
        lam=cfg.stocks.spline_lambda,
        tolerance_cm=cfg.stocks.depth_tolerance_cm,
        bulk_density_ptf=cfg.stocks.bulk_density_ptf,
        source=str(cfg.profiles.path),
        on_invalid=cfg.stocks.on_invalid,
    )
    outputs = ["stocks/stocks.csv", "stocks/interval_counts.csv"]
    io.write_table(result.stocks, ctx.out / outputs[0])
    io.write_table(result.counts, ctx.out / outputs[1])
    if len(result.invalid):
        outputs.append("stocks/invalid_profiles.csv")
        io.write_table(result.invalid, ctx.out / outputs[-1])
    return outputs, result.stocks


def _load_stocks(ctx: StageContext) -> Any:
    return io.read_table(ctx.out / "stocks" / "stocks.csv")


STOCKS = Stage(
    name="stocks",
    run=_run_stocks,
    load=_load_stocks,
    config_keys=("profiles", "stocks"),
    inputs=_stocks_inputs,
)


def default_stages() -> list[Stage]:
    """The stages of ``socmap run``, in order."""
    return [STOCKS]
