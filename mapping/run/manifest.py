"""The run manifest: config, input checksums, package versions, seed, per-stage records."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import uuid
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import rasterio

from mapping import io
from mapping.config import RunConfig
from mapping.exceptions import InputError
from mapping.layout import RunFolder

__all__ = ["Manifest", "digest", "input_checksums", "now", "package_versions"]

#: The ``mapping`` package folder, whose sources :func:`package_versions` checksums.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
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
    """Versions of the packages that shape the numbers, plus Python, GDAL and the checksum
    of socmap's own sources (``socmap_source``)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    out["gdal"] = rasterio.__gdal_version__
    # the code itself: "socmap" is the distribution's version, which commits do not change
    out["socmap_source"] = io.source_checksum(_PACKAGE_DIR)
    return out


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def input_checksums(paths: Iterable[Path], cache: dict[str, str]) -> dict[str, str]:
    """Checksums of ``paths`` (``cache`` keeps those already computed in this run)."""
    out = {}
    for p in paths:
        key = str(p)
        if key not in cache:
            cache[key] = io.file_checksum(p)
        out[key] = cache[key]
    return out


class Manifest:
    """The run manifest: read, update per stage, written atomically."""

    def __init__(self, folder: RunFolder, config: RunConfig) -> None:
        self.folder = folder
        self.path = folder.manifest
        self.out = folder.root
        previous: dict[str, Any] = {}
        if self.path.exists():
            try:
                previous = io.read_json(self.path)
            except (OSError, InputError):
                previous = {}  # a damaged manifest only costs a full re-run
        self.data: dict[str, Any] = {
            "run_id": previous.get("run_id") or uuid.uuid4().hex[:12],
            "created": previous.get("created") or now(),
            "updated": now(),
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

    def start(self, name: str, order: list[str], **fields: Any) -> None:
        """Record ``name`` as running and every stage after it as outdated."""
        later = order[order.index(name) + 1 :] if name in order else []
        for other in later:
            rec = self.data["stages"].get(other)
            if rec and rec.get("status") == "complete":
                rec["status"] = "outdated"
        self.record(name, status="running", **fields)

    def save(self) -> None:
        self.data["updated"] = now()
        io.write_json(self.data, self.path)
