"""Conventions as code: depth intervals, map file names, storage units.

Stages, the report and the command line share these conventions; they live here so that
no stage has to import the workflow config (or the CLI) to name an interval or a file.

>>> parse_interval("0-30")
(0.0, 30.0)
>>> format_interval(0.0, 30.0)
'0-30'
>>> map_filename(0, 100, "mean")
'soc_0_100cm_mean.tif'
>>> STORAGE_UNITS["Pg"] / STORAGE_UNITS["Tg"]
1000.0
"""

from __future__ import annotations

import re

from mapping.exceptions import InvalidParameter

__all__ = [
    "ALL_ZONES",
    "DENSITY_UNITS",
    "NO_ALT",
    "STORAGE_UNITS",
    "format_interval",
    "interval_key",
    "interval_label",
    "map_filename",
    "map_stem",
    "parse_interval",
]

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")

DENSITY_UNITS = "kg C m-2"
"""Units of every SOC density map (and of profile stocks)."""

STORAGE_UNITS = {"Pg": 1e12, "Tg": 1e9}
"""Storage units of zone totals and their size in kg C."""

ALL_ZONES = "all zones"
"""The name of the row that sums every zone (zone tables, draws, designs' targets)."""

NO_ALT = "no active-layer value"
"""The state, beside ``thawed`` and ``frozen``, of mapped stock where the active-layer
raster has no value (``zones/thaw_split.csv``)."""


def parse_interval(text: str) -> tuple[float, float]:
    """Parse ``"0-30"`` into ``(0.0, 30.0)``.

    Raises
    ------
    InvalidParameter
        (a ``ValueError``) if ``text`` is not ``TOP-BOTTOM`` with top above bottom.
    """
    m = _INTERVAL.match(str(text))
    if not m:
        raise InvalidParameter(f"depth interval {text!r} is not of the form TOP-BOTTOM, e.g. 0-30")
    top, bottom = float(m.group(1)), float(m.group(2))
    if not top < bottom:
        raise InvalidParameter(f"depth interval {text!r}: top must be above bottom")
    return top, bottom


def interval_key(
    key: object, what: str, error: type[Exception] = ValueError
) -> tuple[float, float]:
    """:func:`parse_interval` of a key of a mapping keyed by depth interval (``{"0-30": ...}``);
    a key that is not one raises ``error`` naming ``what`` and the key."""
    try:
        return parse_interval(str(key))
    except ValueError:
        raise error(f"{what} {key!r}: key is not a depth interval such as '0-30'") from None


def format_interval(top: float, bottom: float) -> str:
    """Inverse of :func:`parse_interval`: ``(0, 30) -> "0-30"``."""
    return f"{top:g}-{bottom:g}"


def interval_label(top: float, bottom: float) -> str:
    """Folder-safe label of a depth interval: ``(0, 30) -> "0-30"``."""
    return format_interval(top, bottom)


def map_stem(top: float, bottom: float) -> str:
    """``soc_<top>_<bottom>cm``: the common stem of an interval's map files."""
    return f"soc_{top:g}_{bottom:g}cm"


def map_filename(top: float, bottom: float, statistic: str, suffix: str = ".tif") -> str:
    """``soc_<top>_<bottom>cm_<statistic>.tif`` (the file name of one map)."""
    return f"{map_stem(top, bottom)}_{statistic}{suffix}"


DEFAULT_BREAKS: tuple[float, ...] = (
    0.0,
    5.0,
    15.0,
    30.0,
    50.0,
    75.0,
    100.0,
    150.0,
    200.0,
    250.0,
    300.0,
)
"""Layer boundaries (cm) of the harmonised layers the model learns and predicts:
the GlobalSoilMap tops (0-5, 5-15, 15-30 cm), then 20-50 cm layers down to 3 m,
with a boundary at every standard cumulative depth (30, 100, 200, 300 cm)."""
