"""The inventory report of a run: tables, maps, cross-validation and the run manifest.

:func:`build_report` reads an output folder of ``socmap run`` (only through
:mod:`mapping.io`) and writes ``OUT/report/``::

    index.html           one self-contained page: inline CSS, figures embedded as base64 PNG
    report.md            the same content in Markdown, figures linked from figures/
    figures/*.png        maps of mean density and interval width, storage chart, CV plots
    tables/*.csv, *.json the numbers for machines (Table 1, Table 2, long inventory, profile
                         counts, CV metrics) and report.json with all of them

The whole folder is built under a temporary name and renamed into place, so a failed
build leaves the previous report untouched.

Table 1 and Table 2 follow the layout of the circumpolar inventories: rows are zones
(continuous, discontinuous, sporadic, isolated, then the total) with their area in
10⁶ km², columns are the cumulative depth intervals (0-30, 0-100, 0-200, 0-300 cm, or
whatever the run has). Table 1 gives the mean SOC density (kg C m⁻²) and Table 2 the
storage (Pg, or Tg); when the Monte Carlo summary ``zones/storage_summary.csv`` exists,
Table 2 gives ``median (lower–upper)`` of the simulated totals. Nothing but
``zones/storage.csv`` is needed for the tables; every other input is optional and its
absence is noted in the report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.exceptions import InputError
from mapping.figures import (
    MapView,
    display_grid,
    map_figure,
    pdf_bytes,
    png_bytes,
    polygon_lines,
    reliability_chart,
    storage_chart,
    to_display,
    to_pixels,
    zone_edges,
)
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.plots import plot_observed_vs_predicted
from mapping.units import format_interval, parse_interval
from mapping.zonal import VECTOR_SUFFIXES, _to_grid_crs

if TYPE_CHECKING:
    from mapping.figures import MapView

__all__ = ["InventoryTables", "RunOutputs", "build_report", "inventory_tables", "read_run"]

log = logging.getLogger("socmap")

#: Zone order of the circumpolar inventories; other zones follow in code order.
SEED_ZONE_ORDER = ("continuous", "discontinuous", "sporadic", "isolated")
TOTAL = "total"
_TOTAL_NAMES = {"all zones", "total", "all"}
_MAX_CELLS = 1000  # a side of the decimated read of a map (never the full grid in memory)
_DASH = "–"
_DENSITY = "kg C m⁻²"
_WIDTH_CMAP = "YlOrRd"


# =========================================================================== reading
@dataclass
class RunOutputs:
    """What an output folder holds (each part ``None``/empty when absent).

    Attributes
    ----------
    out
        The output folder.
    manifest
        ``manifest.json``.
    storage
        ``zones/storage.csv``: zone totals of the mean maps.
    storage_unit
        ``"Pg"`` or ``"Tg"`` (from the storage column).
    summary
        ``zones/storage_summary.csv``: Monte Carlo medians and ranges.
    counts
        ``stocks/interval_counts.csv``: profiles per interval.
    cv
        Pooled cross-validation metrics, one row per interval.
    cv_plots, cv_predictions
        ``models/<interval>/observed_vs_predicted.png`` and ``cv_predictions.csv``.
    maps
        ``{interval: {statistic: (path, variable)}}`` of ``maps/``.
    notes
        What was missing or unreadable, in words for the report.
    """

    out: Path
    manifest: dict[str, Any] | None = None
    storage: pd.DataFrame | None = None
    storage_unit: str = "Pg"
    summary: pd.DataFrame | None = None
    counts: pd.DataFrame | None = None
    cv: pd.DataFrame | None = None
    cv_plots: dict[str, Path] = field(default_factory=dict)
    cv_predictions: dict[str, Path] = field(default_factory=dict)
    maps: dict[str, dict[str, tuple[Path, str | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _label(text: Any) -> str | None:
    """``"0-30"`` for anything that parses as a depth interval, else None."""
    try:
        return format_interval(*parse_interval(str(text)))
    except ValueError:
        return None


def _interval_key(label: str) -> tuple[float, float]:
    return parse_interval(label)


def _optional_table(path: Path, notes: list[str], what: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return io.read_table(path)
    except InputError as exc:
        notes.append(f"{what} could not be read ({exc}).")
        return None


def read_run(out: str | Path) -> RunOutputs:
    """Collect the parts of an output folder the report uses.

    Raises
    ------
    InputError
        ``out`` is not a folder, or holds none of the outputs of a run.
    """
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: output folder not found")
    folder = RunFolder(out)
    run = RunOutputs(out=out)
    notes = run.notes
    mpath = folder.manifest
    if mpath.exists():
        try:
            run.manifest = io.read_json(mpath)
        except InputError as exc:
            notes.append(f"The run manifest could not be read ({exc}).")
    else:
        notes.append(
            "No run manifest (manifest.json): config, checksums and timings are not shown."
        )

    run.storage = _optional_table(folder.storage, notes, folder.rel(folder.storage))
    if run.storage is not None:
        cols = [c for c in run.storage.columns if re.fullmatch(r"storage_(pg|tg)", str(c))]
        missing = {"zone", "interval", "area_km2", "mean_density_kg_m2"} - set(run.storage.columns)
        if missing or not cols:
            need = sorted(missing) or ["storage_pg"]
            raise InputError(f"{folder.storage}: missing column(s) {', '.join(need)}")
        run.storage_unit = "Pg" if cols[0] == "storage_pg" else "Tg"
    else:
        notes.append(
            "No zone totals (zones/storage.csv): Tables 1 and 2 and the storage chart are left out."
        )
    run.summary = _optional_table(folder.storage_summary, notes, folder.rel(folder.storage_summary))
    run.counts = _optional_table(folder.interval_counts, notes, folder.rel(folder.interval_counts))
    run.cv = _read_cv(folder, run)
    if run.cv is None:
        notes.append("No cross-validation results (models/*/cv_metrics.csv).")

    run.maps = folder.find_maps()
    if not run.maps:
        notes.append("No prediction maps (maps/soc_*cm_*.tif): the maps are left out.")

    if (
        run.manifest is None
        and run.storage is None
        and run.cv is None
        and not run.maps
        and run.counts is None
    ):
        raise InputError(
            f"{out}: not a socmap output folder (no manifest.json, zones/storage.csv, models/ or maps/)"
        )
    return run


def _read_cv(folder: RunFolder, run: RunOutputs) -> pd.DataFrame | None:
    """Cross-validation metrics of every interval's model folder (or the summary table);
    notes the plots and out-of-fold predictions found on ``run``."""
    frames = []
    for name in folder.model_labels():
        label = _label(name)
        if label is None:
            continue
        path = folder.cv_metrics(name)
        m = _optional_table(path, run.notes, folder.rel(path))
        if m is not None:
            frames.append(m.assign(interval=label))
        if folder.observed_vs_predicted(name).exists():
            run.cv_plots[label] = folder.observed_vs_predicted(name)
        if folder.cv_predictions(name).exists():
            run.cv_predictions[label] = folder.cv_predictions(name)
    if not frames:
        s = _optional_table(folder.cv_summary, run.notes, folder.rel(folder.cv_summary))
        if s is not None and "interval" in s:
            frames.append(s.assign(interval=s["interval"].map(_label)))
    return pd.concat(frames, ignore_index=True) if frames else None


# =========================================================================== tables
@dataclass(frozen=True)
class InventoryTables:
    """Table 1 and Table 2 of the inventory, as numbers.

    Attributes
    ----------
    long
        One row per zone and interval: ``zone, zone_code, interval, top_cm, bottom_cm,
        area_km2, area_nodata_km2, mean_density_kg_m2, storage`` and, when the Monte
        Carlo summary is given, ``median, lower, upper`` (its totals) and
        ``independent_lower, independent_upper`` (the independent-pixel range), all in
        ``unit``. Zones in inventory order, the total last.
    table1
        ``zone, area_km2`` and one column per interval: mean density (kg C m⁻²).
    table2
        ``zone, area_km2`` and one column per interval: storage of the mean map; with a
        summary also ``<interval>_median``, ``_lower``, ``_upper``,
        ``_independent_lower``, ``_independent_upper``.
    counts
        ``interval, n_profiles`` (None without profile counts).
    intervals
        Interval labels, shallow to deep.
    unit
        ``"Pg"`` or ``"Tg"``.
    """

    long: pd.DataFrame
    table1: pd.DataFrame
    table2: pd.DataFrame
    counts: pd.DataFrame | None
    intervals: list[str]
    unit: str

    @property
    def has_range(self) -> bool:
        return "lower" in self.long and bool(self.long["lower"].notna().any())

    @property
    def has_independent(self) -> bool:
        return "independent_lower" in self.long and bool(
            self.long["independent_lower"].notna().any()
        )


def _zone_order(storage: pd.DataFrame) -> list[str]:
    names = [str(z) for z in dict.fromkeys(storage["zone"]) if str(z).lower() not in _TOTAL_NAMES]
    by_lower = {n.lower(): n for n in names}
    first = [by_lower[s] for s in SEED_ZONE_ORDER if s in by_lower]
    return first + [n for n in names if n not in first]


_UNIT_KG = {"pg": 1e12, "tg": 1e9}


def _summary_columns(df: pd.DataFrame, unit: str) -> dict[str, tuple[str, float]]:
    """Find the median/lower/upper (and independent-pixel) storage columns of a summary.

    Accepts names such as ``storage_median_pg``, ``storage_lower_pg``, ``storage_p05``,
    ``independent_lower_pg``, ``storage_upper_independent_tg``. Returns
    ``{key: (column, factor to unit)}``.
    """
    found: dict[str, tuple[str, float]] = {}
    for col in df.columns:
        tokens = set(re.split(r"[^a-z0-9]+", str(col).lower()))
        if tokens & {"density", "area", "km2", "code"}:
            continue
        ind = any(t.startswith("indep") for t in tokens) or "pixel" in tokens
        if tokens & {"median", "p50", "q50"}:
            stat = "median"
        elif tokens & {"lower", "lo", "low", "p05", "p5", "q05", "q5", "min"}:
            stat = "lower"
        elif tokens & {"upper", "hi", "high", "p95", "q95", "max"}:
            stat = "upper"
        else:
            continue
        if not (ind or "storage" in tokens or tokens <= {stat, "pg", "tg"}):
            continue
        col_unit = "tg" if "tg" in tokens else "pg" if "pg" in tokens else unit.lower()
        key = f"independent_{stat}" if ind else stat
        found.setdefault(key, (str(col), _UNIT_KG[col_unit] / _UNIT_KG[unit.lower()]))
    return found


def _summary_long(
    summary: pd.DataFrame, unit: str, where: str
) -> tuple[pd.DataFrame | None, str | None]:
    """Normalise a Monte Carlo summary to ``zone, interval, median, lower, upper, ...``."""
    if "zone" not in summary:
        return None, f"{where} has no 'zone' column; ranges are left out."
    if "interval" in summary:
        labels = summary["interval"].map(_label)
    elif {"top_cm", "bottom_cm"} <= set(summary.columns):
        labels = [
            format_interval(t, b)
            for t, b in zip(summary["top_cm"], summary["bottom_cm"], strict=True)
        ]
        labels = pd.Series(labels, index=summary.index)
    else:
        return (
            None,
            f"{where} has no 'interval' (or 'top_cm'/'bottom_cm') column; ranges are left out.",
        )
    cols = _summary_columns(summary, unit)
    if not {"lower", "upper"} <= set(cols):
        return (
            None,
            f"{where} has no recognisable lower/upper storage columns; ranges are left out.",
        )
    zone = summary["zone"].astype(str).map(lambda z: TOTAL if z.lower() in _TOTAL_NAMES else z)
    out = pd.DataFrame({"zone": zone, "interval": labels})
    for key, (col, factor) in cols.items():
        out[key] = pd.to_numeric(summary[col], errors="coerce") * factor
    return out.dropna(subset=["interval"]), None


def inventory_tables(
    storage: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    counts: pd.DataFrame | None = None,
    *,
    notes: list[str] | None = None,
) -> InventoryTables:
    """Table 1 (mean density) and Table 2 (storage) from the zone totals.

    Parameters
    ----------
    storage
        The zone-totals table (``zones/storage.csv``, :func:`mapping.zonal.zone_totals`).
    summary
        Optional Monte Carlo summary (``zones/storage_summary.csv``): ``zone, interval`` and
        storage median/lower/upper columns (plus the independent-pixel range). Without it,
        range columns of ``storage`` itself (``storage_lower_pg``, ``storage_upper_pg``, ...)
        are used when present.
    counts
        Optional profile counts per interval (``stocks/interval_counts.csv``).
    notes
        List that receives remarks for the reader (e.g. an unreadable summary).

    Returns
    -------
    InventoryTables

    Examples
    --------
    >>> s = pd.DataFrame({"zone": ["a", "all zones"], "interval": ["0-30", "0-30"],
    ...                   "area_km2": [2e6, 2e6], "area_nodata_km2": [0.0, 0.0],
    ...                   "mean_density_kg_m2": [10.0, 10.0], "storage_pg": [20.0, 20.0]})
    >>> inventory_tables(s).table2
        zone   area_km2  0-30
    0      a  2000000.0  20.0
    1  total  2000000.0  20.0
    """
    notes = notes if notes is not None else []
    scol = "storage_pg" if "storage_pg" in storage else "storage_tg"
    unit = "Pg" if scol == "storage_pg" else "Tg"
    s = storage.copy()
    s["interval"] = s["interval"].map(_label)
    dropped = s["interval"].isna()
    if dropped.any():
        notes.append(
            f"{int(dropped.sum())} row(s) of the zone totals have no depth interval and are left out."
        )
        s = s[~dropped]
    s["zone"] = s["zone"].astype(str).map(lambda z: TOTAL if z.lower() in _TOTAL_NAMES else z)
    intervals = sorted(dict.fromkeys(s["interval"]), key=_interval_key)
    zones = [*_zone_order(s), TOTAL] if s["zone"].eq(TOTAL).any() else _zone_order(s)
    if "zone_code" not in s:
        s["zone_code"] = pd.NA
    if "area_nodata_km2" not in s:
        s["area_nodata_km2"] = 0.0
    long = s.rename(columns={scol: "storage"})
    long["top_cm"] = long["interval"].map(lambda v: _interval_key(v)[0])
    long["bottom_cm"] = long["interval"].map(lambda v: _interval_key(v)[1])
    keep = ["zone", "zone_code", "interval", "top_cm", "bottom_cm", "area_km2", "area_nodata_km2",
            "mean_density_kg_m2", "storage"]  # fmt: skip
    long = long[keep]
    where = "zones/storage_summary.csv"
    if summary is None and {"lower", "upper"} <= set(_summary_columns(storage, unit)):
        summary, where = storage, "zones/storage.csv"  # ranges carried by the totals table
    if summary is not None:
        mc, problem = _summary_long(summary, unit, where)
        if problem:
            notes.append(problem)
        if mc is not None:
            mc = mc.drop_duplicates(["zone", "interval"])
            long = long.merge(mc, on=["zone", "interval"], how="left")
            unmatched = long["lower"].isna().sum() if "lower" in long else len(long)
            if unmatched:
                notes.append(
                    f"The Monte Carlo summary has no range for {int(unmatched)} zone × interval row(s)."
                )
    order = {z: k for k, z in enumerate(zones)}
    long["_z"] = long["zone"].map(order)
    long["_i"] = long["interval"].map({iv: k for k, iv in enumerate(intervals)})
    long = (
        long.sort_values(["_z", "_i"], kind="stable")
        .drop(columns=["_z", "_i"])
        .reset_index(drop=True)
    )

    area = long.groupby("zone", sort=False)["area_km2"].first().reindex(zones)

    def wide(value: str, suffix: str = "") -> pd.DataFrame:
        w = long.pivot(index="zone", columns="interval", values=value).reindex(
            index=zones, columns=intervals
        )
        return w.rename(columns={iv: f"{iv}{suffix}" for iv in intervals})

    t1 = pd.concat([area, wide("mean_density_kg_m2")], axis=1).rename_axis("zone").reset_index()
    parts = [area, wide("storage")]
    for key in ("median", "lower", "upper", "independent_lower", "independent_upper"):
        if key in long and long[key].notna().any():
            parts.append(wide(key, f"_{key}"))
    t2 = pd.concat(parts, axis=1).rename_axis("zone").reset_index()
    t1.columns.name = t2.columns.name = None

    cnt = None
    if counts is not None and {"n_profiles"} <= set(counts.columns):
        if "interval" in counts:
            labels = counts["interval"].map(_label)
        else:
            labels = pd.Series(
                [
                    format_interval(t, b)
                    for t, b in zip(counts["top_cm"], counts["bottom_cm"], strict=True)
                ]
            )
        cnt = pd.DataFrame(
            {
                "interval": labels.to_numpy(),
                "n_profiles": counts["n_profiles"].astype("int64").to_numpy(),
            }
        )
        for col in ("n_start_below", "n_end_above", "n_on_rock"):  # why profiles are left out
            if col in counts:
                cnt[col] = counts[col].fillna(0).astype("int64").to_numpy()
        cnt = cnt.dropna(subset=["interval"])
    return InventoryTables(
        long=long, table1=t1, table2=t2, counts=cnt, intervals=intervals, unit=unit
    )


# =========================================================================== number formatting
def _decimals(values: Iterable[float], sig: int, lo: int = 0, hi: int = 3) -> int:
    v = np.abs(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float))
    v = v[v > 0]
    if v.size == 0:
        return lo
    d = sig - 1 - math.floor(math.log10(float(v.min())))
    return int(min(hi, max(lo, d)))


def _fmt(x: Any, d: int) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)) or pd.isna(x):
        return "—"
    return f"{float(x):,.{d}f}"


def _fmt_range(mid: Any, lo: Any, hi: Any, d: int) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return _fmt(mid, d)
    return f"{_fmt(mid, d)} ({_fmt(lo, d)}{_DASH}{_fmt(hi, d)})"


def _iv_text(label: str) -> str:
    return label.replace("-", _DASH) + " cm"


@dataclass
class _Table:
    """A table ready to render: header, rows of strings, numeric-column flags, caption."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: list[bool] | None = None
    foot: str = ""


def _left_out_note(counts: pd.DataFrame | None) -> str:
    """Which profiles each interval leaves out and why, in one sentence ("" if none)."""
    if counts is None or "n_end_above" not in counts:
        return ""
    parts = []
    for r in counts.itertuples():
        top, bottom = _interval_key(r.interval)
        why = []
        if getattr(r, "n_end_above", 0):
            why.append(f"{int(r.n_end_above):,} end above {bottom:g} cm")
        if getattr(r, "n_start_below", 0):
            why.append(f"{int(r.n_start_below):,} start below {top:g} cm")
        if why:
            parts.append(f"{_iv_text(r.interval)}: {', '.join(why)}")
    rock = int(counts["n_on_rock"].max()) if "n_on_rock" in counts else 0
    text = f"Profiles left out: {'; '.join(parts)}." if parts else ""
    if rock:
        text += (f" Profiles that end on a lithic contact count for deeper intervals with zero "
                 f"stock below the rock (up to {rock:,} per interval).")  # fmt: skip
    return text.strip()


def _median_note(t: InventoryTables, d: int) -> str:
    """How far the Monte Carlo medians lie from the map totals, and why they may."""
    if "median" not in t.long or not t.long["median"].notna().any():
        return ""
    rel = (t.long["median"] - t.long["storage"]) / t.long["storage"]
    if not rel.abs().max() >= 0.001:
        return "The Monte Carlo medians equal the map totals to within 0.1 %."
    r = t.long.loc[rel.abs().idxmax()]
    return (
        f"The Monte Carlo median of a total differs from the map total by up to "
        f"{100 * rel.abs().max():.1f} % ({r['zone']}, {_iv_text(r['interval'])}: median "
        f"{_fmt(r['median'], d)} against {_fmt(r['storage'], d)} {t.unit}): the simulated fields "
        "clip negative densities at zero and keep every deeper interval at least as large as "
        "the shallower one in each cell, and the median of a skewed total is not its mean. "
        "The medians are in tables/table2_storage.csv."
    )


def _display_tables(t: InventoryTables, range_label: str) -> tuple[_Table, _Table, _Table | None]:
    area_mkm2 = t.table1["area_km2"] / 1e6
    da = _decimals(area_mkm2, 3, lo=1, hi=3)
    head = ["Zone", "Area (10⁶ km²)", *[_iv_text(iv) for iv in t.intervals]]
    rows1 = []
    for k, r in t.table1.iterrows():
        rows1.append(
            [str(r["zone"]), _fmt(area_mkm2[k], da), *[_fmt(r[iv], 2) for iv in t.intervals]]
        )
    if t.counts is not None:
        n = dict(zip(t.counts["interval"], t.counts["n_profiles"], strict=True))
        rows1.append(
            ["profiles (n)", "", *[f"{int(n[iv]):,}" if iv in n else "—" for iv in t.intervals]]
        )
    nodata = t.long[t.long["area_nodata_km2"] > 0]
    foot = ""
    if len(nodata):
        worst = (nodata["area_nodata_km2"] / nodata["area_km2"]).max()
        foot = (
            f"Up to {100 * worst:.1f} % of a zone's area has no prediction; mean densities are over "
            "the cells with data and storage covers those cells only."
        )
    left = _left_out_note(t.counts)
    if left:
        foot = f"{foot} {left}".strip()
    t1 = _Table(
        head, rows1,
        caption=f"Table 1. Mean SOC density ({_DENSITY}) by zone and depth interval.",
        numeric=[False] + [True] * (len(head) - 1), foot=foot,
    )  # fmt: skip

    # The headline is the map total (mean density x area, so Table 1 x area = Table 2);
    # the Monte Carlo range stands beside it.
    ds = _decimals(t.long["storage"], 3, lo=1, hi=3)
    rows2 = []
    for k, r in t.table2.iterrows():
        cells = [str(r["zone"]), _fmt(area_mkm2[k], da)]
        for iv in t.intervals:
            if t.has_range:
                cells.append(_fmt_range(r[iv], r.get(f"{iv}_lower"), r.get(f"{iv}_upper"), ds))
            else:
                cells.append(_fmt(r[iv], ds))
        rows2.append(cells)
    foot2 = ""
    if t.has_range:
        cap = (f"Table 2. SOC storage ({t.unit}) by zone and depth interval: total of the mean map "
               f"(Table 1 density × area) with the {range_label} of the Monte Carlo totals in "
               "brackets.")  # fmt: skip
        foot2 = _median_note(t, ds)
    else:
        cap = (f"Table 2. SOC storage ({t.unit}) by zone and depth interval (storage of the mean map; "
               "this run has no Monte Carlo ranges).")  # fmt: skip
    t2 = _Table(head, rows2, caption=cap, numeric=[False] + [True] * (len(head) - 1), foot=foot2)
    t3 = None
    if t.has_independent:
        rows3 = []
        for _, r in t.table2.iterrows():
            cells = [str(r["zone"])]
            for iv in t.intervals:
                lo, hi = r.get(f"{iv}_independent_lower"), r.get(f"{iv}_independent_upper")
                cells.append("—" if pd.isna(lo) else f"{_fmt(lo, ds)}{_DASH}{_fmt(hi, ds)}")
            rows3.append(cells)
        t3 = _Table(
            ["Zone", *[_iv_text(iv) for iv in t.intervals]], rows3,
            caption=(f"For comparison: the {range_label} of the storage ({t.unit}) if pixel errors were "
                     "independent (too narrow: map errors are spatially correlated)."),
            numeric=[False] + [True] * len(t.intervals),
        )  # fmt: skip
    return t1, t2, t3


def _cv_table(cv: pd.DataFrame) -> _Table:
    cv = cv.copy()
    cv["_k"] = cv["interval"].map(
        lambda v: _interval_key(v) if isinstance(v, str) else (np.inf, np.inf)
    )
    cv = cv.sort_values("_k")
    head = ["Interval", "n", "CV", "R²", "RMSE", "MAE", "MBE", "NNSE", "PICP", "Mean width"]
    rows = []
    for _, r in cv.iterrows():
        nominal = ""
        if "lower_q" in r and "upper_q" in r and pd.notna(r["lower_q"]) and pd.notna(r["upper_q"]):
            nominal = f" (nominal {r['upper_q'] - r['lower_q']:.2f})"
        rows.append([
            _iv_text(r["interval"]) if isinstance(r["interval"], str) else "—",
            f"{int(r['n']):,}" if pd.notna(r.get("n")) else "—",
            str(r.get("splitter", "—")) if pd.notna(r.get("splitter")) else "—",
            _fmt(r.get("r2"), 2), _fmt(r.get("rmse"), 2), _fmt(r.get("mae"), 2),
            (f"{float(r['mbe']):+.2f}" if pd.notna(r.get("mbe")) else "—"),
            _fmt(r.get("nnse"), 2), _fmt(r.get("picp"), 2) + (nominal if pd.notna(r.get("picp")) else ""),
            _fmt(r.get("mean_width"), 2),
        ])  # fmt: skip
    return _Table(
        head, rows,
        caption=(f"Cross-validation (pooled out-of-fold predictions). RMSE, MAE, MBE (prediction − "
                 f"observation) and mean interval width in {_DENSITY}; PICP: share of observations "
                 "inside their prediction interval."),
        numeric=[False, True, False] + [True] * 7,
    )  # fmt: skip


# =========================================================================== figures
@dataclass
class _Figure:
    name: str  # file name in figures/
    caption: str
    data: bytes
    section: str  # "maps", "storage", "cv"
    interval: str | None = None
    pdf: bytes | None = None  # the same figure as PDF, written beside the PNG


def _read_view(path: Path, variable: str | None = None) -> MapView:

    info = io.raster_info(path, variable=variable)
    data, transform, _ = io.read_decimated(info, max_size=_MAX_CELLS)
    data = data.astype("float64")
    if info.nodata is not None and not np.isnan(info.nodata):
        data[data == info.nodata] = np.nan
    return MapView(
        data=data, transform=transform, crs=info.crs, decimation=abs(transform.a / info.transform.a)
    )


class _Outlines:
    """Zone outlines for map views: polygons reprojected, or edges of a zone raster."""

    def __init__(self, path: Path, field: str | None) -> None:

        self.path = path
        self.field = field
        self.names: dict[str, str] = {}  # zone code -> name, for zone rasters
        self.is_vector = path.suffix.lower() in VECTOR_SUFFIXES
        self.gdf: Any = None
        self.codes: Any = None
        self._cache: dict[Any, tuple[Any, Any]] = {}
        if self.is_vector:
            gdf = io.read_zones_vector(path)
            if field is not None and field in gdf.columns and gdf[field].nunique() < len(gdf):
                gdf = gdf.dissolve(by=field, as_index=False)  # no lines inside one zone
            self.gdf = gdf
        else:
            self.info = io.raster_info(path)
            data, transform, _ = io.read_decimated(self.info, max_size=2 * _MAX_CELLS)
            self.codes = (data, transform)

    def for_view(self, view: MapView) -> tuple[Any, Any]:
        """``(edges, lines)`` for :func:`mapping.figures.map_figure`."""

        grid = Grid(view.crs, view.transform, view.shape)
        if grid in self._cache:
            return self._cache[grid]
        if self.is_vector:
            gdf = _to_grid_crs(self.gdf, grid)
            res: tuple[Any, Any] = (None, polygon_lines(list(gdf.geometry), view.transform))
        else:
            res = (zone_edges(*self._codes_on(view)), None)
        self._cache[grid] = res
        return res

    def labels_for(self, view: MapView) -> list[tuple[float, float, str]]:
        """``(col, row, name)`` of each zone's label on ``view``: a point inside the zone."""
        if self.is_vector:
            gdf = _to_grid_crs(self.gdf, Grid(view.crs, view.transform, view.shape))
            name_col = self.field if self.field in gdf.columns else None
            out = []
            for k, (geom, name) in enumerate(
                zip(gdf.geometry, gdf[name_col] if name_col else range(len(gdf)), strict=True)
            ):
                if geom is None or geom.is_empty:
                    continue
                part = max(getattr(geom, "geoms", [geom]), key=lambda g: g.area)
                pt = part.representative_point()
                col, row = ~view.transform @ (pt.x, pt.y)
                if 0 <= col <= view.shape[1] and 0 <= row <= view.shape[0]:
                    text = self.names.get(str(name), str(name)) if name_col else f"zone {k + 1}"
                    out.append((float(col), float(row), text))
            return out
        from scipy import ndimage

        codes, valid = self._codes_on(view)
        out = []
        for code in np.unique(codes[valid]):
            inside = np.pad(codes == code, 1)
            depth = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
            name = self.names.get(str(int(code)), f"zone {int(code)}")
            out.append((c + 0.5, r + 0.5, name))
        return out

    def _codes_on(self, view: MapView) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        data, transform = self.codes
        nodata = self.info.nodata
        src = data.astype("float64")
        if nodata is not None:
            src[src == nodata] = np.nan
        dst = np.full(view.shape, np.nan)
        reproject(src, dst, src_transform=transform, src_crs=self.info.crs.to_wkt(), src_nodata=np.nan,
                  dst_transform=view.transform, dst_crs=view.crs.to_wkt(), dst_nodata=np.nan,
                  resampling=Resampling.nearest)  # fmt: skip
        return dst, np.isfinite(dst)


def _map_figures(
    run: RunOutputs,
    intervals: Sequence[str],
    outlines: _Outlines | None,
    quantiles: tuple[float, float],
    notes: list[str],
) -> list[_Figure]:

    figs = []
    level = f"{100 * (quantiles[1] - quantiles[0]):g} %"
    qtext = f"{quantiles[0]:g}{_DASH}{quantiles[1]:g} quantiles"
    outline_text = "Black lines: zone boundaries. " if outlines is not None else ""
    for iv in intervals:
        stats = run.maps.get(iv, {})
        if "mean" not in stats:
            if stats:
                notes.append(f"No mean map for {_iv_text(iv)}.")
            continue
        mean = _read_view(*stats["mean"])
        shown = display_grid(mean)  # north up: LAEA centred on the map
        mean = to_display(mean, shown)
        edges, lines = outlines.for_view(mean) if outlines is not None else (None, None)
        labels = outlines.labels_for(mean) if outlines is not None else []
        veil, aoa_text = None, ""
        if "aoa" in stats:
            aoa = to_display(_read_view(*stats["aoa"]), shown)
            if aoa.shape == mean.shape:
                veil = np.isfinite(mean.data) & (aoa.data == 0)
                share = (
                    np.mean(aoa.data[np.isfinite(mean.data)] == 1)
                    if np.isfinite(mean.data).any()
                    else np.nan
                )
                aoa_text = f"Paler: outside the area of applicability ({100 * (1 - share):.1f} % of the mapped cells). "
        dec = (f"Shown at 1/{mean.decimation:.3g} of the map's resolution (read from its overviews). "
               if mean.decimation > 1 else "")  # fmt: skip
        grid_text = (
            "Drawn north up in a Lambert azimuthal equal-area projection centred on the map "
            "(the scale bar is true at the centre); dashed: meridians and parallels; grey line: "
            "edge of the mapped land. "
        )
        fig = map_figure(mean, title=f"Mean SOC stock, {_iv_text(iv)}", label="SOC stock", veil=veil,
                         edges=edges, lines=lines or (), zone_labels=labels)  # fmt: skip
        figs.append(_Figure(
            f"density_{iv}.png",
            f"Mean SOC stock {_iv_text(iv)} ({_DENSITY}). {outline_text}{grid_text}{aoa_text}{dec}".strip(),
            png_bytes(fig), "maps", iv, pdf_bytes(fig),
        ))  # fmt: skip
        if "lower" in stats and "upper" in stats:
            lo, hi = _read_view(*stats["lower"]), _read_view(*stats["upper"])
            if lo.shape != hi.shape:
                notes.append(
                    f"The lower and upper maps of {_iv_text(iv)} differ in shape; no width map."
                )
                continue
            width = to_display(
                MapView(hi.data - lo.data, hi.transform, hi.crs, hi.decimation), shown
            )
            fig = map_figure(width, title=f"Width of the {level} prediction interval, {_iv_text(iv)}",
                             label="interval width", cmap=_WIDTH_CMAP, edges=edges, lines=lines or (),
                             zone_labels=labels)  # fmt: skip
            figs.append(_Figure(
                f"width_{iv}.png",
                f"Width of the {level} prediction interval (upper − lower, {qtext}) {_iv_text(iv)} "
                f"({_DENSITY}). {outline_text}{grid_text}{dec}".strip(),
                png_bytes(fig), "maps", iv, pdf_bytes(fig),
            ))  # fmt: skip
        else:
            notes.append(f"No lower/upper maps for {_iv_text(iv)}: no interval-width map.")
    return figs


def _storage_figure(t: InventoryTables, range_label: str) -> _Figure:

    long = t.long
    value = long["storage"]  # the map totals, as Table 2's headline
    chart = pd.DataFrame({
        "zone": long["zone"], "interval": long["interval"], "value": value,
        "lower": long["lower"] if "lower" in long else np.nan,
        "upper": long["upper"] if "upper" in long else np.nan,
        "ind_lower": long["independent_lower"] if "independent_lower" in long else np.nan,
        "ind_upper": long["independent_upper"] if "independent_upper" in long else np.nan,
        "total": long["zone"].eq(TOTAL),
    })  # fmt: skip
    fig = storage_chart(chart, unit=t.unit, range_label=range_label)
    if t.has_range:
        cap = (f"SOC storage ({t.unit}) per zone and depth interval: bars are totals of the mean map "
               f"(Table 2), black error bars the {range_label} of the Monte Carlo totals")  # fmt: skip
        cap += (
            ", red bars the range the independent-pixel assumption would give."
            if t.has_independent
            else "."
        )
    else:
        cap = f"SOC storage ({t.unit}) per zone and depth interval (storage of the mean map; no Monte Carlo ranges)."
    return _Figure("storage_by_zone.png", cap, png_bytes(fig), "storage", None, pdf_bytes(fig))


def _cv_figures(
    run: RunOutputs, intervals: Sequence[str], tmp: Path, notes: list[str]
) -> list[_Figure]:

    figs = []
    for iv in intervals:
        name = f"observed_vs_predicted_{iv}.png"
        if iv in run.cv_plots:
            data = io.read_bytes(run.cv_plots[iv])
        elif iv in run.cv_predictions:
            pred = io.read_table(run.cv_predictions[iv])
            ok = pred["predicted"].notna()
            has = {"lower", "upper"} <= set(pred.columns)
            path = plot_observed_vs_predicted(
                pred.loc[ok, "observed"], pred.loc[ok, "predicted"],
                lower=pred.loc[ok, "lower"] if has else None, upper=pred.loc[ok, "upper"] if has else None,
                title=f"SOC stock {iv} cm, cross-validation", path=tmp / "figures" / name,
            )  # fmt: skip
            data = io.read_bytes(path)
        else:
            continue
        figs.append(_Figure(
            name,
            f"Observed against cross-validated predicted SOC stock, {_iv_text(iv)}; grey bars: prediction intervals.",
            data, "cv", iv,
        ))  # fmt: skip
    return figs


def _calibration_figure(out: Path, intervals: Sequence[str], level: float) -> _Figure | None:
    """Reliability plot and coverage by DI of the calibrated intervals (from the fit
    stage's ``reliability.csv`` and ``coverage_by_di.csv``), with one sentence on what the
    interval means and where it is not reliable; ``None`` for an uncalibrated run."""
    folder = RunFolder(out)
    rel: dict[str, pd.DataFrame] = {}
    by_di: dict[str, pd.DataFrame] = {}
    beyond: list[float] = []
    for name in folder.model_labels():
        iv = _label(name)
        if iv is None or iv not in intervals or not folder.reliability_table(name).exists():
            continue
        rel[iv] = io.read_table(folder.reliability_table(name))
        if folder.coverage_by_di_table(name).exists():
            by_di[iv] = io.read_table(folder.coverage_by_di_table(name))
        if folder.model_metadata(name).exists():
            cal = io.read_json(folder.model_metadata(name)).get("calibration") or {}
            if cal.get("share_beyond_di_max") is not None:
                beyond.append(float(cal["share_beyond_di_max"]))
    if not rel:
        return None
    order = sorted(rel, key=_interval_key)
    fig = reliability_chart({k: rel[k] for k in order}, by_di, level=level)
    observed = [float(np.interp(level, rel[k]["nominal"], rel[k]["observed"])) for k in order]

    def span(values: list[float]) -> str:
        lo, hi = _fmt(100 * min(values), 0), _fmt(100 * max(values), 0)
        return lo if lo == hi else f"{lo}{_DASH}{hi}"

    where = (
        f" It is an extrapolation, not a measurement, in the {span(beyond)} % of the map "
        "less like the profiles than any "
        "cross-validated one (dissimilarity index beyond the largest cross-validated), where "
        "the error model's rise is extended linearly."
        if beyond
        else ""
    )
    cap = (
        f"Reliability of the per-cell intervals. A {level:.0%} interval is meant to hold the "
        f"true value of a cell {level:.0%} of the time, at cells as unlike the profiles as "
        f"the map's; in cross-validation (error model fitted without the held-out fold) it "
        f"held {span(observed)} % of the held-out profiles.{where} Left: nominal against observed coverage; right: "
        "coverage by decile of the dissimilarity index."
    )
    return _Figure("calibration.png", cap, png_bytes(fig), "cv")


# =========================================================================== rendering
_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2731;
max-width:1120px;margin:0 auto;padding:1.2rem 1.6rem 3rem;line-height:1.45;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .2rem;color:#12324a}
h2{font-size:1.22rem;margin:2.2rem 0 .6rem;padding-bottom:.2rem;border-bottom:2px solid #d6e2ea;color:#12324a}
h3{font-size:1.02rem;margin:1.4rem 0 .4rem;color:#23465e}
.meta{color:#5b6b78;font-size:.88rem;margin:0 0 .8rem}
nav{font-size:.9rem;background:#f3f7fa;padding:.5rem .8rem;border-radius:6px}
nav a{margin-right:1rem;color:#1f5f8b;text-decoration:none}
table{border-collapse:collapse;margin:.4rem 0 .3rem;font-size:.88rem}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3rem 0;color:#23465e}
th,td{padding:.28rem .7rem;border-bottom:1px solid #e3e9ee;vertical-align:top}
th{background:#eef3f7;text-align:left;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:600;border-top:1.5px solid #9fb3c2}
tr.count td{color:#5b6b78;font-style:italic}
.foot{font-size:.82rem;color:#5b6b78;margin:.1rem 0 1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:1rem}
figure{margin:.4rem 0 1rem}
figure img{max-width:100%;height:auto;border:1px solid #e3e9ee;border-radius:4px}
figcaption{font-size:.82rem;color:#4a5a66;margin-top:.25rem}
.notes{background:#fff8e6;border-left:4px solid #e0b04a;padding:.5rem .9rem;font-size:.88rem}
pre{background:#f6f8fa;padding:.7rem;border-radius:6px;overflow:auto;font-size:.78rem;line-height:1.3}
code{font-size:.8rem;word-break:break-all}
"""


def _design_figure(out: Path, run: RunOutputs, outlines: _Outlines | None) -> _Figure | None:
    """The sites ``socmap design`` proposed, over the std map of the first targeted interval."""
    import pyproj

    folder = RunFolder(out)
    if not (folder.design_sites.exists() and folder.design_targets.exists()):
        return None
    sites = io.read_table(folder.design_sites)
    targets = io.read_table(folder.design_targets)
    iv = str(targets["interval"].iloc[0])
    if "std" not in run.maps.get(iv, {}):
        return None
    view = _read_view(*run.maps[iv]["std"])
    view = to_display(view, display_grid(view))
    edges, lines = outlines.for_view(view) if outlines is not None else (None, None)
    fig = map_figure(view, title=f"Proposed new profiles over the standard deviation, {_iv_text(iv)}",
                     label="standard deviation", edges=edges, lines=lines or ())  # fmt: skip
    to = pyproj.Transformer.from_crs("EPSG:4326", view.crs, always_xy=True)
    cols, rows = to_pixels(view.transform, *to.transform(sites["lon"], sites["lat"]))
    fig.axes[0].scatter(cols, rows, s=16, c="#d62728", edgecolors="white", linewidths=0.6, zorder=7)
    reductions = "; ".join(
        f"{r.zone} {_iv_text(r.interval)}: {r.expected_reduction_pct:.1f} %"
        for r in targets.itertuples(index=False)
    )
    caption = (
        f"{len(sites)} new profile sites proposed by `socmap design` (red, design/sites.gpkg). "
        f"Predicted reduction of the 90 % ranges: {reductions}. A prediction of the error model "
        "and the residual variogram; predicted and realised reductions on synthetic worlds are "
        "compared in docs/design.md."
    )
    return _Figure("design_sites.png", caption, png_bytes(fig), "maps", iv, pdf_bytes(fig))


def _html_table(t: _Table, total_zone: bool = True) -> str:
    e = html.escape
    num = t.numeric or [False] * len(t.header)
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{e(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(
        f'<th class="n">{e(h)}</th>' if n else f"<th>{e(h)}</th>" for h, n in zip(t.header, num, strict=True)
    ) + "</tr></thead><tbody>")  # fmt: skip
    for row in t.rows:
        cls = ""
        if total_zone and row and row[0] == TOTAL:
            cls = ' class="total"'
        elif row and row[0] == "profiles (n)":
            cls = ' class="count"'
        cells = "".join(
            f'<td class="n">{e(c)}</td>' if n else f"<td>{e(c)}</td>"
            for c, n in zip(row, num, strict=True)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _md_table(t: _Table) -> str:
    num = t.numeric or [False] * len(t.header)

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = []
    if t.caption:
        lines += [f"*{t.caption}*", ""]
    lines.append("| " + " | ".join(esc(h) for h in t.header) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in num) + "|")
    for row in t.rows:
        cells = [f"**{esc(c)}**" if row[0] == TOTAL and c else esc(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class _Manifest:
    run: list[tuple[str, str]]
    stages: _Table | None
    inputs: _Table | None
    versions: _Table | None
    config_text: str | None


def _manifest_parts(
    manifest: Mapping[str, Any] | None, config: Mapping[str, Any] | None
) -> _Manifest:
    import yaml

    m = dict(manifest or {})
    run = [
        (k, str(m[k]))
        for k in ("run_id", "created", "updated", "config_file", "seed")
        if m.get(k) is not None
    ]
    if not any(k == "seed" for k, _ in run) and config and config.get("seed") is not None:
        run.append(("seed", str(config["seed"])))
    stages = None
    if m.get("stages"):
        rows = []
        order = sorted(m["stages"].items(), key=lambda kv: str(kv[1].get("started") or "~"))
        for name, rec in order:
            sec = rec.get("seconds")
            rows.append([name, str(rec.get("status", "")), str(rec.get("started", "")),
                         f"{float(sec):,.1f}" if sec is not None else "—",
                         str(len(rec.get("outputs", {}) or {}))])  # fmt: skip
        stages = _Table(["Stage", "Status", "Started", "Seconds", "Outputs"], rows,
                        caption="Stages of the run (from the manifest).",
                        numeric=[False, False, False, True, True])  # fmt: skip
    inputs = None
    if m.get("inputs"):
        inputs = _Table(["Input", "Checksum"], [[k, str(v)] for k, v in sorted(m["inputs"].items())],
                        caption="Input files and their checksums.", numeric=[False, False])  # fmt: skip
    versions = None
    if m.get("versions"):
        versions = _Table(["Package", "Version"], [[k, str(v)] for k, v in sorted(m["versions"].items())],
                          caption="Package versions.", numeric=[False, False])  # fmt: skip
    cfg = config if config is not None else m.get("config")
    text = (
        yaml.safe_dump(
            json.loads(json.dumps(cfg, default=str)), sort_keys=False, allow_unicode=True
        )
        if cfg
        else None
    )
    return _Manifest(run, stages, inputs, versions, text)


def _img(fig: _Figure) -> str:
    b64 = base64.b64encode(fig.data).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")  # fmt: skip


@dataclass
class _Content:
    title: str
    subtitle: str
    t1: _Table | None
    t2: _Table | None
    t_independent: _Table | None
    cv: _Table | None
    figures: list[_Figure]
    manifest: _Manifest
    notes: list[str]
    map_intervals: list[str]


def _render_html(c: _Content) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(c.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(c.title)}</h1>",
        f'<p class="meta">{e(c.subtitle)}</p>',
        '<nav><a href="#tables">Tables</a><a href="#maps">Maps</a><a href="#storage">Storage</a>'
        '<a href="#cv">Cross-validation</a><a href="#manifest">Run manifest</a></nav>',
    ]
    if c.notes:
        parts.append('<div class="notes"><strong>Notes</strong><ul>')
        parts += [f"<li>{e(n)}</li>" for n in c.notes]
        parts.append("</ul></div>")
    parts.append('<h2 id="tables">Inventory tables</h2>')
    if c.t1 is None:
        parts.append("<p>No zone totals in this run.</p>")
    else:
        parts.append(_html_table(c.t1))
        if c.t1.foot:
            parts.append(f'<p class="foot">{e(c.t1.foot)}</p>')
        assert c.t2 is not None
        parts.append(_html_table(c.t2))
        if c.t2.foot:
            parts.append(f'<p class="foot">{e(c.t2.foot)}</p>')
        if c.t_independent is not None:
            parts.append(_html_table(c.t_independent))
    parts.append('<h2 id="maps">Maps</h2>')
    maps = [f for f in c.figures if f.section == "maps"]
    if not maps:
        parts.append("<p>No maps in this run.</p>")
    for iv in c.map_intervals:
        figs = [f for f in maps if f.interval == iv]
        if figs:
            parts.append(f'<h3>{e(_iv_text(iv))}</h3><div class="grid">')
            parts += [_img(f) for f in figs]
            parts.append("</div>")
    parts.append('<h2 id="storage">Storage per zone</h2>')
    store = [f for f in c.figures if f.section == "storage"]
    parts += [_img(f) for f in store] or ["<p>No zone totals in this run.</p>"]
    parts.append('<h2 id="cv">Cross-validation</h2>')
    if c.cv is not None:
        parts.append(_html_table(c.cv, total_zone=False))
    cvf = [f for f in c.figures if f.section == "cv"]
    if cvf:
        parts.append('<div class="grid">' + "".join(_img(f) for f in cvf) + "</div>")
    if c.cv is None and not cvf:
        parts.append("<p>No cross-validation results in this run.</p>")
    parts.append('<h2 id="manifest">Run manifest</h2>')
    m = c.manifest
    if m.run:
        parts.append(
            _html_table(
                _Table(["Run", ""], [[k, v] for k, v in m.run], numeric=[False, False]), False
            )
        )
    for t in (m.stages, m.inputs, m.versions):
        if t is not None:
            parts.append(_html_table(t, total_zone=False))
    if m.config_text:
        parts.append(f"<h3>Config</h3><pre>{e(m.config_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_md(c: _Content) -> str:
    out = [f"# {c.title}", "", c.subtitle, ""]
    if c.notes:
        out += ["**Notes**", ""] + [f"- {n}" for n in c.notes] + [""]
    out += ["## Inventory tables", ""]
    if c.t1 is None:
        out += ["No zone totals in this run.", ""]
    else:
        out += [_md_table(c.t1), ""]
        if c.t1.foot:
            out += [c.t1.foot, ""]
        assert c.t2 is not None
        out += [_md_table(c.t2), ""]
        if c.t2.foot:
            out += [c.t2.foot, ""]
        if c.t_independent is not None:
            out += [_md_table(c.t_independent), ""]
    out += ["## Maps", ""]
    maps = [f for f in c.figures if f.section == "maps"]
    if not maps:
        out += ["No maps in this run.", ""]
    for iv in c.map_intervals:
        figs = [f for f in maps if f.interval == iv]
        if figs:
            out += [f"### {_iv_text(iv)}", ""]
            for f in figs:
                out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    out += ["## Storage per zone", ""]
    for f in (f for f in c.figures if f.section == "storage"):
        out += [f"![{f.caption}](figures/{f.name})", "", f"*{f.caption}*", ""]
    out += ["## Cross-validation", ""]
    if c.cv is not None:
        out += [_md_table(c.cv), ""]
    for f in (f for f in c.figures if f.section == "cv"):
        out += [f"![{f.caption}](figures/{f.name})", ""]
    out += ["## Run manifest", ""]
    m = c.manifest
    out += [f"- **{k}**: `{v}`" for k, v in m.run] + [""]
    for t in (m.stages, m.inputs, m.versions):
        if t is not None:
            out += [_md_table(t), ""]
    if m.config_text:
        out += ["### Config", "", "```yaml", m.config_text.rstrip(), "```", ""]
    return "\n".join(out)


# =========================================================================== entry point
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, pd.DataFrame):
        return [_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def _config_dict(config: Any, manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(config, Mapping):
        return dict(config)
    if config is not None:  # a workflow config object (pydantic), as socmap report --config gives
        return json.loads(config.model_dump_json())
    if manifest and isinstance(manifest.get("config"), dict):
        return dict(manifest["config"])
    return None


def _zone_source(
    cfg: Mapping[str, Any] | None,
    zones_path: str | Path | None,
    zone_field: str | None,
    notes: list[str],
) -> _Outlines | None:
    zones = (cfg or {}).get("zones") or {}
    names = {str(k): str(v) for k, v in (zones.get("names") or {}).items()}
    if zones_path is not None:
        p = Path(zones_path)
        if not p.exists():
            raise InputError(f"{p}: file not found")
        outlines = _Outlines(p, zone_field)
        outlines.names = names
        return outlines
    if not zones.get("path"):
        return None
    p = Path(zones["path"])
    if not p.exists():
        notes.append(f"The zones of the run ({p}) are not found; the maps have no zone outlines.")
        return None
    outlines = _Outlines(p, zone_field or zones.get("field"))
    outlines.names = names
    return outlines


def build_report(
    out: Path,
    *,
    config: Any = None,
    zones_path: str | Path | None = None,
    zone_field: str | None = None,
    title: str = "Soil organic carbon inventory",
    stage: str | None = None,
) -> dict[str, Path]:
    """Write the inventory report of an output folder to ``OUT/report/``.

    Parameters
    ----------
    out
        Output folder of ``socmap run`` (see :mod:`mapping.layout`).
    config
        The run's config (the workflow config or its JSON mapping); by default the copy
        in ``manifest.json`` is used (for the zone
        file, the quantile levels and the Monte Carlo range).
    zones_path
        Zone polygons (GeoPackage, Shapefile, GeoParquet, ...) or zone raster whose
        boundaries are drawn on the maps; default: the run's ``zones.path``.
    zone_field
        Field of the polygons holding the zone code; polygons of one zone are merged so
        only boundaries between zones are drawn. Default: the run's ``zones.field``.
    title
        Title of the report.
    stage
        The run's stage that is writing this report (``"report"`` from ``socmap run``):
        the manifest still records it as running, the report lists it as complete (its
        time is in ``manifest.json``).

    Returns
    -------
    dict of str to Path
        Every file written, keyed by its path inside the report folder (``"index.html"``,
        ``"report.md"``, ``"figures/density_0-30.png"``, ``"tables/table2_storage.csv"``,
        ...).

    Raises
    ------
    InputError
        ``out`` is missing or holds no outputs of a run; an input file is unreadable or
        truncated; ``zones_path`` does not exist.
    """
    out = Path(out)
    run = read_run(out)
    if stage is not None and run.manifest and stage in (run.manifest.get("stages") or {}):
        run.manifest = {**run.manifest, "stages": {**run.manifest["stages"]}}
        run.manifest["stages"][stage] = {**run.manifest["stages"][stage], "status": "complete"}
    notes = list(run.notes)
    cfg = _config_dict(config, run.manifest)
    quantiles = tuple((cfg or {}).get("prediction", {}).get("quantiles", (0.05, 0.95)))
    rng = tuple((cfg or {}).get("uncertainty", {}).get("range", (5.0, 95.0)))
    if run.summary is not None and {"lower_pct", "upper_pct"} <= set(run.summary.columns):
        # the percentiles the summary was made with win over the config's
        pct = run.summary[["lower_pct", "upper_pct"]].dropna().drop_duplicates()
        if len(pct) == 1:
            rng = (float(pct.iloc[0, 0]), float(pct.iloc[0, 1]))
    range_label = f"{rng[0]:g}{_DASH}{rng[1]:g} % range"

    tables = None
    if run.storage is not None:
        tables = inventory_tables(run.storage, run.summary, run.counts, notes=notes)
        if run.summary is None and not tables.has_range:
            notes.append(
                "No Monte Carlo summary (zones/storage_summary.csv): Table 2 has no ranges."
            )
    intervals = set(run.maps)
    if tables is not None:
        intervals |= set(tables.intervals)
    if run.cv is not None:
        intervals |= {iv for iv in run.cv["interval"] if isinstance(iv, str)}
    intervals |= set(run.cv_plots) | set(run.cv_predictions)
    ordered = sorted(intervals, key=_interval_key)

    outlines = _zone_source(cfg, zones_path, zone_field, notes) if run.maps else None
    if run.maps and outlines is None and not any("zone outlines" in n for n in notes):
        notes.append("No zones given: the maps have no zone outlines.")

    written: list[str] = []
    folder = RunFolder(out).report
    with io.atomic_path(folder, is_dir=True) as tmp:
        figures = _map_figures(run, ordered, outlines, quantiles, notes)  # type: ignore[arg-type]
        t1 = t2 = t_ind = None
        if tables is not None:
            t1, t2, t_ind = _display_tables(tables, range_label)
            figures.append(_storage_figure(tables, range_label))
        figures += _cv_figures(run, ordered, tmp, notes)
        calibration = _calibration_figure(out, ordered, quantiles[1] - quantiles[0])
        if calibration is not None:
            figures.append(calibration)
        design = _design_figure(out, run, outlines)
        if design is not None:
            figures.append(design)
        cv_table = _cv_table(run.cv) if run.cv is not None else None

        for f in figures:
            io.write_bytes(f.data, tmp / "figures" / f.name)
            written.append(f"figures/{f.name}")
            if f.pdf is not None:
                pdf_name = Path(f.name).with_suffix(".pdf").name
                io.write_bytes(f.pdf, tmp / "figures" / pdf_name)
                written.append(f"figures/{pdf_name}")
        machine: dict[str, Any] = {"title": title, "intervals": ordered, "notes": notes}
        if tables is not None:
            named = {
                "table1_mean_density": tables.table1,
                "table2_storage": tables.table2,
                "inventory_long": tables.long,
            }
            if tables.counts is not None:
                named["profile_counts"] = tables.counts
            for name, df in named.items():
                for suffix in (".csv", ".json"):
                    io.write_table(df, tmp / "tables" / f"{name}{suffix}")
                    written.append(f"tables/{name}{suffix}")
                machine[name] = df
            machine["storage_unit"] = tables.unit
            machine["density_unit"] = "kg C m-2"
            machine["range_percent"] = list(rng) if tables.has_range else None
        elif run.counts is not None:
            machine["profile_counts"] = run.counts
        if run.cv is not None:
            for suffix in (".csv", ".json"):
                io.write_table(run.cv, tmp / "tables" / f"cv_metrics{suffix}")
                written.append(f"tables/cv_metrics{suffix}")
            machine["cv_metrics"] = run.cv
        if run.manifest is not None:
            machine["run"] = {
                k: run.manifest.get(k)
                for k in ("run_id", "created", "updated", "seed", "config_file")
            }
            machine["stages"] = {
                k: {f: v.get(f) for f in ("status", "started", "seconds")}
                for k, v in (run.manifest.get("stages") or {}).items()
            }
        io.write_json(_jsonable(machine), tmp / "tables" / "report.json")
        written.append("tables/report.json")

        # no build time here: the same run gives the same report; the manifest records
        # when the report stage ran
        run_id = (run.manifest or {}).get("run_id")
        subtitle = f"Output folder {out}" + (f" · run {run_id}" if run_id else "")
        content = _Content(
            title=title, subtitle=subtitle, t1=t1, t2=t2, t_independent=t_ind, cv=cv_table,
            figures=figures, manifest=_manifest_parts(run.manifest, cfg), notes=notes,
            map_intervals=ordered,
        )  # fmt: skip
        io.write_text(_render_md(content), tmp / "report.md")
        io.write_text(_render_html(content), tmp / "index.html")
        written += ["report.md", "index.html"]
    for n in notes:
        log.info("report: %s", n)
    return {rel: folder / rel for rel in sorted(set(written))}
