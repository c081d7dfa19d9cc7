"""socmap: soil organic carbon maps and zone totals with honest uncertainty.

Import is cheap: submodules are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "config",
    "covariates",
    "depths",
    "exceptions",
    "extract",
    "grid",
    "io",
    "layout",
    "models",
    "predict",
    "profiles",
    "report",
    "run",
    "synthetic",
    "testing",
    "units",
    "validation",
    "zonal",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mapping.{name}")
    raise AttributeError(f"module 'mapping' has no attribute {name!r}")
