"""Metadata of the SOC maps, following the CF conventions as rioxarray and GDAL read them.

Each map carries, as GeoTIFF tags (and Zarr attributes), a ``long_name`` that says what the
layer is, UDUNITS-parseable ``units`` with the carbon named in ``comment``, the statistic,
the depth interval, the quantile level, the model and the software version. The area of
applicability is a ``uint8`` flag layer (``flag_values``/``flag_meanings``, nodata 255).

>>> a = map_attributes("upper", 0, 30, quantiles=(0.05, 0.95), model="quantile_forest")
>>> a["long_name"], a["units"], a["quantile"]
('SOC stock 0-30 cm, 95th percentile', 'kg m-2', '0.95')
>>> map_attributes("aoa", 0, 30)["flag_meanings"]
'outside_area_of_applicability inside_area_of_applicability'
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AOA_NODATA",
    "CARBON_COMMENT",
    "RELATIVE_UNCERTAINTY",
    "STOCK_UNITS",
    "map_attributes",
    "percentile_text",
    "relative_uncertainty",
]

STOCK_UNITS = "kg m-2"
"""UDUNITS-parseable units of every SOC stock map (the mass is that of organic carbon)."""

CARBON_COMMENT = "mass of organic carbon per unit area (kg C m-2)"
"""What the ``kg m-2`` of a stock map measure: CF has no standard name for it."""

RELATIVE_UNCERTAINTY = "relative_uncertainty"
"""Statistic name of the relative-uncertainty layer, (upper - lower) / median."""

AOA_NODATA = 255
"""Nodata of the ``uint8`` area-of-applicability map (cells without a prediction)."""

_STATISTICS = {
    "mean": "mean",
    "median": "median",
    "std": "standard deviation",
    "aoa": "area of applicability",
    RELATIVE_UNCERTAINTY: "relative uncertainty",
}


def percentile_text(q: float) -> str:
    """``0.95 -> "95th percentile"``, ``0.5 -> "50th percentile"``, ``0.025 -> "2.5th percentile"``."""
    p = 100 * q
    n = f"{p:g}"
    last = round(p) % 100 if float(n).is_integer() else None
    suffix = "th"
    if last is not None and not 11 <= last <= 13:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(last % 10, "th")
    return f"{n}{suffix} percentile"


def map_attributes(
    statistic: str,
    top: float,
    bottom: float,
    *,
    quantiles: tuple[float, float] = (0.05, 0.95),
    model: str | None = None,
    version: str | None = None,
) -> dict[str, str]:
    """CF-style attributes of one map, as strings (GeoTIFF tags take text).

    Parameters
    ----------
    statistic
        ``mean``, ``median``, ``lower``, ``upper``, ``std``, ``di``, ``aoa`` or
        ``relative_uncertainty``.
    top, bottom
        Depth interval in cm.
    quantiles
        The ``(lower, upper)`` quantile levels of the run.
    model
        Model kind (e.g. ``quantile_forest``).
    version
        socmap version that wrote the map.

    Returns
    -------
    dict of str to str
        ``long_name``, ``units``, ``statistic``, ``interval`` ... ready for ``update_tags``.
    """
    lo, hi = quantiles
    interval = f"{top:g}-{bottom:g}"
    depth = f"{interval} cm"
    quantile = {"median": 0.5, "lower": lo, "upper": hi}.get(statistic)
    attrs: dict[str, str] = {}
    if statistic == "aoa":
        attrs["long_name"] = f"area of applicability of the SOC stock {depth} model"
        attrs["units"] = "1"
        attrs["flag_values"] = "0 1"
        attrs["flag_meanings"] = "outside_area_of_applicability inside_area_of_applicability"
        attrs["comment"] = (
            "1 where the dissimilarity index is within the training data's threshold "
            f"(Meyer and Pebesma 2021); {AOA_NODATA} where no prediction was made"
        )
    elif statistic == "di":
        attrs["long_name"] = f"dissimilarity index of the SOC stock {depth} model"
        attrs["units"] = "1"
        attrs["comment"] = (
            "distance to the nearest training profile in the weighted, standardised "
            "covariate space over the training profiles' mean distance (Meyer and "
            "Pebesma 2021); NaN where no prediction was made"
        )
    elif statistic == RELATIVE_UNCERTAINTY:
        attrs["long_name"] = (
            f"SOC stock {depth}, relative uncertainty "
            f"({percentile_text(hi)} - {percentile_text(lo)}) / median"
        )
        attrs["units"] = "1"
        attrs["comment"] = (
            "width of the prediction interval divided by the median, as the SoilGrids "
            "uncertainty layer; NaN where the median is not positive"
        )
    else:
        what = percentile_text(quantile) if quantile is not None else _STATISTICS[statistic]
        if statistic == "median":
            what = "median"
        attrs["long_name"] = f"SOC stock {depth}, {what}"
        attrs["units"] = STOCK_UNITS
        attrs["comment"] = CARBON_COMMENT
    attrs["statistic"] = statistic
    attrs["interval"] = interval
    attrs["interval_units"] = "cm"
    attrs["top_cm"] = f"{top:g}"
    attrs["bottom_cm"] = f"{bottom:g}"
    if quantile is not None:
        attrs["quantile"] = f"{quantile:g}"
    if statistic == RELATIVE_UNCERTAINTY:
        attrs["quantiles"] = f"{lo:g} {hi:g}"
    if model:
        attrs["model"] = model
    if version:
        attrs["software"] = f"socmap {version}"
    return attrs


def relative_uncertainty(lower: Any, median: Any, upper: Any) -> Any:
    """``(upper - lower) / median`` where the median is positive, NaN elsewhere (lazy-safe)."""
    width = upper - lower
    return (width / median).where(median > 0)
