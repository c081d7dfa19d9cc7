"""Table 1 (mean density) and Table 2 (storage) of the inventory report, and their display
form (number formatting, notes, the cross-validation table)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mapping.report.outputs import interval_label_or_none, interval_sort_key
from mapping.units import NO_ALT, format_interval

#: Zone order of the circumpolar inventories; other zones follow in code order.
SEED_ZONE_ORDER = ("continuous", "discontinuous", "sporadic", "isolated")
TOTAL = "total"
_TOTAL_NAMES = {"all zones", "total", "all"}
DASH = "–"
DENSITY_LABEL = "kg C m⁻²"


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
        labels = summary["interval"].map(interval_label_or_none)
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
    s["interval"] = s["interval"].map(interval_label_or_none)
    dropped = s["interval"].isna()
    if dropped.any():
        notes.append(
            f"{int(dropped.sum())} row(s) of the zone totals have no depth interval and are left out."
        )
        s = s[~dropped]
    s["zone"] = s["zone"].astype(str).map(lambda z: TOTAL if z.lower() in _TOTAL_NAMES else z)
    intervals = sorted(dict.fromkeys(s["interval"]), key=interval_sort_key)
    zones = [*_zone_order(s), TOTAL] if s["zone"].eq(TOTAL).any() else _zone_order(s)
    if "zone_code" not in s:
        s["zone_code"] = pd.NA
    if "area_nodata_km2" not in s:
        s["area_nodata_km2"] = 0.0
    long = s.rename(columns={scol: "storage"})
    long["top_cm"] = long["interval"].map(lambda v: interval_sort_key(v)[0])
    long["bottom_cm"] = long["interval"].map(lambda v: interval_sort_key(v)[1])
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
            labels = counts["interval"].map(interval_label_or_none)
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


def fmt_number(x: Any, d: int) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)) or pd.isna(x):
        return "—"
    return f"{float(x):,.{d}f}"


def _fmt_range(mid: Any, lo: Any, hi: Any, d: int) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return fmt_number(mid, d)
    return f"{fmt_number(mid, d)} ({fmt_number(lo, d)}{DASH}{fmt_number(hi, d)})"


def interval_text(label: str) -> str:
    return label.replace("-", DASH) + " cm"


@dataclass
class DisplayTable:
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
        top, bottom = interval_sort_key(r.interval)
        why = []
        if getattr(r, "n_end_above", 0):
            why.append(f"{int(r.n_end_above):,} end above {bottom:g} cm")
        if getattr(r, "n_start_below", 0):
            why.append(f"{int(r.n_start_below):,} start below {top:g} cm")
        if why:
            parts.append(f"{interval_text(r.interval)}: {', '.join(why)}")
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
        f"{100 * rel.abs().max():.1f} % ({r['zone']}, {interval_text(r['interval'])}: median "
        f"{fmt_number(r['median'], d)} against {fmt_number(r['storage'], d)} {t.unit}): the simulated fields "
        "clip negative densities at zero and keep every deeper interval at least as large as "
        "the shallower one in each cell, and the median of a skewed total is not its mean. "
        "The medians are in tables/table2_storage.csv."
    )


def display_tables(
    t: InventoryTables, range_label: str
) -> tuple[DisplayTable, DisplayTable, DisplayTable | None]:
    area_mkm2 = t.table1["area_km2"] / 1e6
    da = _decimals(area_mkm2, 3, lo=1, hi=3)
    head = ["Zone", "Area (10⁶ km²)", *[interval_text(iv) for iv in t.intervals]]
    rows1 = []
    for k, r in t.table1.iterrows():
        rows1.append(
            [
                str(r["zone"]),
                fmt_number(area_mkm2[k], da),
                *[fmt_number(r[iv], 2) for iv in t.intervals],
            ]
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
    t1 = DisplayTable(
        head, rows1,
        caption=f"Table 1. Mean SOC density ({DENSITY_LABEL}) by zone and depth interval.",
        numeric=[False] + [True] * (len(head) - 1), foot=foot,
    )  # fmt: skip

    # The headline is the map total (mean density x area, so Table 1 x area = Table 2);
    # the Monte Carlo range stands beside it.
    ds = _decimals(t.long["storage"], 3, lo=1, hi=3)
    rows2 = []
    for k, r in t.table2.iterrows():
        cells = [str(r["zone"]), fmt_number(area_mkm2[k], da)]
        for iv in t.intervals:
            if t.has_range:
                cells.append(_fmt_range(r[iv], r.get(f"{iv}_lower"), r.get(f"{iv}_upper"), ds))
            else:
                cells.append(fmt_number(r[iv], ds))
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
    t2 = DisplayTable(
        head, rows2, caption=cap, numeric=[False] + [True] * (len(head) - 1), foot=foot2
    )
    t3 = None
    if t.has_independent:
        rows3 = []
        for _, r in t.table2.iterrows():
            cells = [str(r["zone"])]
            for iv in t.intervals:
                lo, hi = r.get(f"{iv}_independent_lower"), r.get(f"{iv}_independent_upper")
                cells.append(
                    "—" if pd.isna(lo) else f"{fmt_number(lo, ds)}{DASH}{fmt_number(hi, ds)}"
                )
            rows3.append(cells)
        t3 = DisplayTable(
            ["Zone", *[interval_text(iv) for iv in t.intervals]], rows3,
            caption=(f"For comparison: the {range_label} of the storage ({t.unit}) if pixel errors were "
                     "independent (too narrow: map errors are spatially correlated)."),
            numeric=[False] + [True] * len(t.intervals),
        )  # fmt: skip
    return t1, t2, t3


def _by_interval(cv: pd.DataFrame) -> pd.DataFrame:
    """Rows in depth order (rows without an interval label last)."""
    key = cv["interval"].map(
        lambda v: interval_sort_key(v) if isinstance(v, str) else (np.inf, np.inf)
    )
    return cv.assign(_k=key).sort_values("_k")


def _rmse(r: pd.Series, key: str = "rmse") -> str:
    """The RMSE with its block-bootstrap range, ``3.45 (3.09–3.90)``, when the run has it."""
    text = fmt_number(r.get(key), 2)
    lo, hi = r.get(f"{key}_lower"), r.get(f"{key}_upper")
    if pd.notna(r.get(key)) and pd.notna(lo) and pd.notna(hi):
        text += f" ({fmt_number(lo, 2)}{DASH}{fmt_number(hi, 2)})"
    return text


_RANGE_NOTE = (
    " In brackets: the RMSE's 90 % range under a spatial block bootstrap of the profiles "
    "(how far chance alone can move it; land unlike every profile is not in it)."
)


def _partitions_note(cv: pd.DataFrame) -> str:
    """The caption's sentence on a CV repeated over several partitions (``cv.repeats``)."""
    if "partitions" not in cv.columns or not (cv["partitions"] > 1).any():
        return ""
    n = int(cv["partitions"].max())
    return (
        f" Pooled over {n} partitions of the profiles into folds (cv.repeats), each profile "
        "once per partition; n counts the profiles."
    )


def cv_metrics_table(cv: pd.DataFrame, calibrated: bool = False) -> DisplayTable:
    """The cross-validation table; ``calibrated``: the run's maps carry calibrated intervals,
    which the PICP and width here (the model's own intervals) are not."""
    cv = _by_interval(cv)
    head = ["Interval", "n", "CV", "R²", "RMSE", "MAE", "MBE", "NNSE", "PICP", "Mean width"]
    rows = []
    for _, r in cv.iterrows():
        nominal = ""
        if "lower_q" in r and "upper_q" in r and pd.notna(r["lower_q"]) and pd.notna(r["upper_q"]):
            nominal = f" (nominal {r['upper_q'] - r['lower_q']:.2f})"
        rows.append([
            interval_text(r["interval"]) if isinstance(r["interval"], str) else "—",
            f"{int(r['n']):,}" if pd.notna(r.get("n")) else "—",
            str(r.get("splitter", "—")) if pd.notna(r.get("splitter")) else "—",
            fmt_number(r.get("r2"), 2), _rmse(r), fmt_number(r.get("mae"), 2),
            (f"{float(r['mbe']):+.2f}" if pd.notna(r.get("mbe")) else "—"),
            fmt_number(r.get("nnse"), 2), fmt_number(r.get("picp"), 2) + (nominal if pd.notna(r.get("picp")) else ""),
            fmt_number(r.get("mean_width"), 2),
        ])  # fmt: skip
    return DisplayTable(
        head, rows,
        caption=(f"Cross-validation (pooled out-of-fold predictions). RMSE, MAE, MBE (prediction − "
                 f"observation) and mean interval width in {DENSITY_LABEL}; PICP: share of observations "
                 "inside their prediction interval"
                 + (" (the model's own, before the calibration of the maps' intervals: "
                    "the reliability figure shows those)." if calibrated else ".")
                 + _partitions_note(cv)
                 + (_RANGE_NOTE if "rmse_lower" in cv.columns else "")),
        numeric=[False, True, False] + [True] * 7,
    )  # fmt: skip


def cv_area_table(cv: pd.DataFrame) -> DisplayTable | None:
    """The cross-validation weighted to the mapped area (``*_area`` columns of
    ``cv_metrics.csv``), or ``None`` when the run did not weigh it."""
    if "rmse_area" not in cv.columns:
        return None
    cv = _by_interval(cv)
    head = ["Interval", "Effective n", "R²", "RMSE", "MAE", "MBE", "PICP", "RMSE at the profiles"]
    rows = []
    for _, r in cv.iterrows():
        rows.append([
            interval_text(r["interval"]) if isinstance(r["interval"], str) else "—",
            fmt_number(r.get("n_eff"), 0), fmt_number(r.get("r2_area"), 2),
            _rmse(r, "rmse_area"), fmt_number(r.get("mae_area"), 2),
            (f"{float(r['mbe_area']):+.2f}" if pd.notna(r.get("mbe_area")) else "—"),
            fmt_number(r.get("picp_area"), 2), fmt_number(r.get("rmse"), 2),
        ])  # fmt: skip
    return DisplayTable(
        head, rows,
        caption=("The same out-of-fold predictions weighted to the mapped area: each profile by "
                 "the inverse of the sampling intensity around it in covariate space (land cells "
                 "against profiles, docs/validation.md), so the figures estimate the error at a "
                 "random cell of the map rather than at the profiles. Land with no profile alike "
                 f"is in neither; its error is in the std maps. In {DENSITY_LABEL}."
                 + (_RANGE_NOTE if "rmse_area_lower" in cv.columns else "")),
        numeric=[False] + [True] * 7,
    )  # fmt: skip


def thaw_table(thaw: pd.DataFrame, range_label: str) -> DisplayTable:
    """Thawed (active layer) and perennially frozen storage per zone, with ranges.

    ``thaw`` is ``zones/thaw_split.csv``: one row per zone and state (``thawed``,
    ``frozen``, ``no active-layer value`` where the raster leaves mapped land without one,
    ``total 0-300 cm``), the storage of the mean maps (``storage_pg`` or ``storage_tg``)
    and its Monte Carlo bounds (``..._lower``, ``..._upper``). The thawed share is of the
    whole total, that land included.
    """
    col = next(c for c in thaw.columns if c.startswith("storage_") and c.count("_") == 1)
    unit = col.split("_")[1].capitalize()
    d = _decimals(thaw[col].to_numpy(float), 3, hi=2)
    # mapped land the active-layer raster leaves without a value is in neither state
    states = ["thawed", "frozen"] + [NO_ALT] * bool(thaw["state"].eq(NO_ALT).any())
    rows = []
    for zone, part in thaw.groupby("zone", sort=False):
        r = part.set_index("state")
        total = next(s for s in r.index if str(s).startswith("total"))
        cells = [
            _fmt_range(
                r.loc[state, col],
                r.loc[state].get(f"{col}_lower", np.nan),
                r.loc[state].get(f"{col}_upper", np.nan),
                d,
            )
            for state in states
        ]
        share = r.loc["thawed", col] / r.loc[total, col]
        rows.append([str(zone), *cells, fmt_number(r.loc[total, col], d), f"{100 * share:.0f} %"])
    depth = str(total).removeprefix("total ").replace("-", DASH)
    caption = (
        f"Table 3. SOC storage ({unit}) in the seasonally thawed active layer and in the "
        f"perennially frozen ground below it, {depth}, per zone: storage of the mean maps "
        f"({range_label} of the Monte Carlo realizations), the {depth} storage and the "
        "thawed share."
    )
    head = ["Zone", "Thawed (active layer)", "Perennially frozen"]
    if len(states) == 3:
        head.append("No active-layer value")
        caption += (
            " Mapped land without an active-layer value is in neither state: its storage has "
            "a column of its own, and the thawed share is of the whole total."
        )
    return DisplayTable(
        [*head, depth, "Thawed share"],
        rows,
        caption,
        numeric=[False] + [True] * (len(head) + 1),
    )
