"""Charts of the report and the fit stage: storage per zone and interval, reliability of the
calibrated intervals, observed against predicted.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot state, safe in threads and without a display) and returned as PNG or PDF bytes, or
written atomically through :func:`mapping.io.write_bytes`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.validation import metrics_table

__all__ = [
    "UNITS",
    "new_figure",
    "observed_vs_predicted_figure",
    "pdf_bytes",
    "plot_observed_vs_predicted",
    "png_bytes",
    "reliability_chart",
    "render_figure",
    "storage_chart",
]

UNITS = "kg C m$^{-2}$"


# --------------------------------------------------------------------------- rendering
def pdf_bytes(fig: Any) -> bytes:
    """Render a Figure to PDF bytes (vector lines and text, the map image embedded)."""
    buf = BytesIO()
    fig.savefig(
        buf, format="pdf", bbox_inches="tight", pad_inches=0.08, metadata={"CreationDate": None}
    )
    return buf.getvalue()


def png_bytes(fig: Any, dpi: int | None = None) -> bytes:
    """Render a Figure (Agg canvas) to PNG bytes."""
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight", pad_inches=0.08)
    return buf.getvalue()


PAD_INCHES = 0.08
"""Margin around the tight bounding box of a saved figure."""


def render_figure(fig: Any) -> tuple[bytes, bytes]:
    """Render a Figure (Agg canvas) to PNG bytes at ``fig.dpi`` and PDF bytes, both cropped
    to the figure's tight bounding box plus :data:`PAD_INCHES`.

    The same result as :func:`png_bytes` and :func:`pdf_bytes` with two draws instead of
    four: ``savefig(bbox_inches="tight")`` lays out the whole figure once to find the box
    and then draws it again, for each format. Here the Agg draw of the full canvas gives
    both the pixels and the box; the PNG is the box cut out of those pixels and the PDF is
    drawn once with the box given.
    """
    from matplotlib.image import imsave
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.get_tightbbox(renderer).padded(PAD_INCHES)
    box = Bbox(np.round(box.get_points() * fig.dpi) / fig.dpi)  # whole pixels, as savefig
    width, height = fig.canvas.get_width_height()
    x0, y0 = (box.p0 * fig.dpi).astype(int)
    x1, y1 = (box.p1 * fig.dpi).astype(int)
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        rgba = np.asarray(fig.canvas.buffer_rgba())
        buf = BytesIO()
        # rows run from the top; the box from the bottom
        imsave(buf, rgba[height - y1 : height - y0, x0:x1], format="png", dpi=fig.dpi)
        png = buf.getvalue()
    else:  # something drawn beyond the canvas: savefig enlarges it
        buf = BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches=box)
        png = buf.getvalue()
    buf = BytesIO()
    fig.savefig(buf, format="pdf", bbox_inches=box, metadata={"CreationDate": None})
    return png, buf.getvalue()


def new_figure(width: float, height: float, dpi: int) -> Any:
    """A bare Figure on the Agg canvas (no pyplot state), ``width`` x ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def storage_chart(
    table: pd.DataFrame,
    *,
    unit: str = "Pg",
    range_label: str | None = None,
    dpi: int = 150,
) -> Any:
    """Bar chart of storage per zone and depth interval, with error bars.

    Parameters
    ----------
    table
        Long table, one row per zone and interval: ``zone``, ``interval``, ``value``
        (the bar), ``lower``, ``upper`` (the range of the Monte Carlo totals, NaN when
        absent), ``ind_lower``, ``ind_upper`` (the range under the independent-pixel
        assumption, NaN when absent), ``total`` (bool: the all-zones row, drawn in a
        panel of its own because it dwarfs the zones).
    unit
        Storage unit for the axis.
    range_label
        Legend text of the Monte Carlo range (e.g. ``"5-95 % range"``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colormaps

    intervals = list(dict.fromkeys(table["interval"]))
    zones = list(dict.fromkeys(table.loc[~table["total"], "zone"]))
    totals = list(dict.fromkeys(table.loc[table["total"], "zone"]))
    colours = colormaps["YlGnBu"](np.linspace(0.35, 0.95, max(len(intervals), 1)))
    fig = new_figure(6.3, 3.4, dpi)
    ratios = [max(len(zones), 1), max(len(totals), 0.6)] if totals else [1]
    gs = fig.add_gridspec(1, len(ratios), width_ratios=ratios, wspace=0.25)
    panels = [(fig.add_subplot(gs[0, 0]), zones)]
    if totals:
        panels.append((fig.add_subplot(gs[0, 1]), totals))
    width = 0.8 / max(len(intervals), 1)
    have_mc = bool(table["lower"].notna().any())
    have_ind = bool(table["ind_lower"].notna().any())
    for ax, names in panels:
        for k, iv in enumerate(intervals):
            rows = table[table["interval"].eq(iv)].set_index("zone").reindex(names)
            x = np.arange(len(names)) + (k - (len(intervals) - 1) / 2) * width
            v = rows["value"].to_numpy(float)
            ax.bar(x, v, width * 0.92, color=colours[k], label=f"{iv} cm", zorder=2)
            lo, hi = rows["lower"].to_numpy(float), rows["upper"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                # about its own middle: the bar (the map's total) can lie outside the
                # Monte Carlo range (e.g. a per-interval map shallower than the interval
                # above it, whose realizations are ordered by depth)
                ax.errorbar(x[ok], (lo[ok] + hi[ok]) / 2, yerr=(hi[ok] - lo[ok]) / 2, fmt="none",
                            ecolor="black", elinewidth=1.0, capsize=2.5, zorder=3,
                            label=(range_label or "range") if k == 0 else None)  # fmt: skip
            ilo, ihi = rows["ind_lower"].to_numpy(float), rows["ind_upper"].to_numpy(float)
            ok = np.isfinite(ilo) & np.isfinite(ihi)
            if ok.any():
                ax.errorbar(x[ok] + width * 0.3, (ilo[ok] + ihi[ok]) / 2, yerr=(ihi[ok] - ilo[ok]) / 2,
                            fmt="none", ecolor="#c0392b", elinewidth=1.6, capsize=2.0, zorder=4,
                            label="independent-pixel range" if k == 0 else None)  # fmt: skip
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="y", lw=0.3, color="0.85", zorder=0)
        ax.set_axisbelow(True)
        ax.set_ylim(bottom=0)
    panels[0][0].set_ylabel(f"SOC storage ({unit})", fontsize=9)
    handles, labels = panels[0][0].get_legend_handles_labels()
    rank = {f"{iv} cm": k for k, iv in enumerate(intervals)}  # bars first, in depth order
    pairs = sorted(zip(handles, labels, strict=True), key=lambda hl: rank.get(hl[1], len(rank)))
    handles, labels = [h for h, _ in pairs], [lab for _, lab in pairs]
    ncol = min(len(labels), 6)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=ncol, fontsize=8,
               frameon=False)  # fmt: skip
    title = "Storage per zone and depth interval"
    if not have_mc and not have_ind:
        title += " (no Monte Carlo ranges in this run)"
    fig.suptitle(title, fontsize=10, y=0.99, va="top")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.80, bottom=0.1)
    return fig


def reliability_chart(
    reliability: Mapping[str, pd.DataFrame],
    by_di: Mapping[str, pd.DataFrame],
    *,
    level: float = 0.9,
    dpi: int = 110,
) -> Any:
    """Reliability plot and coverage by dissimilarity of the calibrated intervals.

    Parameters
    ----------
    reliability
        Interval label -> table with ``nominal``, ``observed`` and ``observed_model``
        (:func:`mapping.calibration.cross_fitted_coverage`).
    by_di
        Interval label -> table with ``di_low``, ``di_high``, ``observed`` and
        ``observed_model`` at ``level``.
    level
        Nominal coverage of the map's interval (the reference line of the right panel).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import colormaps

    labels = list(reliability)
    colours = colormaps["YlGnBu"](np.linspace(0.35, 0.95, max(len(labels), 1)))
    fig = new_figure(8.0, 3.6, dpi)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
    for k, iv in enumerate(labels):
        r = reliability[iv]
        left.plot(r["nominal"], r["observed"], "o-", color=colours[k], ms=3, label=f"{iv} cm")
        left.plot(r["nominal"], r["observed_model"], ":", color=colours[k], lw=0.9)
        if iv in by_di and len(by_di[iv]):
            b = by_di[iv]
            x = np.arange(1, len(b) + 1)
            right.plot(x, b["observed"], "o-", color=colours[k], ms=3)
            right.plot(x, b["observed_model"], ":", color=colours[k], lw=0.9)
    right.axhline(level, color="0.5", lw=0.8, ls="--")
    left.set_xlim(0.45, 1.0)
    left.set_ylim(0.3, 1.0)
    left.set_xlabel("nominal coverage", fontsize=8)
    left.set_ylabel("observed coverage (cross-validation)", fontsize=8)
    left.legend(fontsize=7, frameon=False, loc="upper left")
    right.set_xlabel("dissimilarity index decile of the CV points (1 = most similar)", fontsize=8)
    right.set_ylabel(f"coverage of the {level:.0%} interval", fontsize=8)
    right.set_ylim(0.3, 1.0)
    for ax in (left, right):
        ax.tick_params(labelsize=8)
        ax.grid(True, lw=0.3, color="0.85")
    fig.suptitle("Calibrated intervals (solid) and the model's own (dotted)", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.14, wspace=0.28)
    return fig


def observed_vs_predicted_figure(
    y_true: Any,
    y_pred: Any,
    lower: Any = None,
    upper: Any = None,
    *,
    title: str = "Observed vs predicted SOC density",
    units: str = UNITS,
    dpi: int = 120,
) -> Any:
    """Observed (y axis) against predicted (x axis) values with a 1:1 line (a Figure).

    Observed-on-predicted is the orientation recommended by Piñeiro et al.
    (2008, Ecol. Model. 216: 316-322).

    Parameters
    ----------
    y_true, y_pred
        Observations and (out-of-fold) predictions.
    lower, upper
        Prediction interval of every point, drawn as vertical bars, and used
        for the coverage shown in the corner.
    title
        Figure title (e.g. the depth interval and CV scheme).
    units
        Axis units (SOC density by default).
    dpi
        Resolution.

    Returns
    -------
    matplotlib.figure.Figure
        On an Agg canvas; :func:`png_bytes` and :func:`pdf_bytes` render it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    obs = np.asarray(y_true, dtype=float).ravel()
    pred = np.asarray(y_pred, dtype=float).ravel()
    have_interval = lower is not None and upper is not None
    m = metrics_table(obs, pred, lower, upper)

    fig = Figure(figsize=(5.2, 5.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ok = np.isfinite(obs) & np.isfinite(pred)
    if have_interval:
        lo = np.asarray(lower, dtype=float).ravel()
        hi = np.asarray(upper, dtype=float).ravel()
        bar = ok & np.isfinite(lo) & np.isfinite(hi)
        ax.vlines(pred[bar], lo[bar], hi[bar], color="0.75", lw=0.6, zorder=1, label="interval")
    ax.scatter(pred[ok], obs[ok], s=10, c="#1f5f8b", alpha=0.7, lw=0, zorder=2, label="profiles")
    values = [obs[ok], pred[ok]]
    if have_interval:
        values += [lo[bar], hi[bar]]
    finite = np.concatenate(values) if ok.any() else np.array([0.0, 1.0])
    vmin, vmax = float(np.min(finite)), float(np.max(finite))
    pad = 0.04 * (vmax - vmin or 1.0)
    lim = (min(0.0, vmin - pad), vmax + pad)
    ax.plot(lim, lim, color="#b2182b", lw=1.0, zorder=3, label="1:1")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal")
    ax.set_xlabel(f"Predicted ({units})")
    ax.set_ylabel(f"Observed ({units})")
    ax.set_title(title, fontsize=10)
    ax.grid(True, lw=0.3, color="0.85")

    lines = [
        f"n = {int(m['n'])}",
        f"R² = {m['r2']:.2f}",
        f"RMSE = {m['rmse']:.2f}",
        f"MAE = {m['mae']:.2f}",
        f"MBE = {m['mbe']:+.2f}",
        f"NNSE = {m['nnse']:.2f}",
    ]
    if have_interval and np.isfinite(m["picp"]):
        lines.append(f"PICP = {m['picp']:.2f}")
    ax.text(
        0.03,
        0.97,
        "\n".join(lines),
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        family="monospace",
        bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.9},
    )
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    fig.tight_layout()

    return fig


def plot_observed_vs_predicted(
    y_true: Any,
    y_pred: Any,
    lower: Any = None,
    upper: Any = None,
    *,
    title: str = "Observed vs predicted SOC density",
    path: str | os.PathLike[str],
    units: str = UNITS,
    dpi: int = 120,
) -> Path:
    """:func:`observed_vs_predicted_figure` written as PNG to ``path`` (atomically)."""
    fig = observed_vs_predicted_figure(
        y_true, y_pred, lower, upper, title=title, units=units, dpi=dpi
    )
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return io.write_bytes(buf.getvalue(), path)


def design_suite_chart(reference: pd.DataFrame, predicted: Mapping[str, float]) -> Any:
    """Predicted against realised shrinkage of a targeted range on the world suite.

    Parameters
    ----------
    reference
        One row per world and number of new sites: ``n``, ``predicted_pct``,
        ``realised_pct``, ``truth_inside`` (``mapping/report/data/design_suite.csv``); one
        marker per ``n``.
    predicted
        This run's predicted reduction (%) of each targeted total, drawn as vertical lines.
    """
    fig = new_figure(5.2, 4.2, 110)
    ax = fig.add_subplot(1, 1, 1)
    x = reference["predicted_pct"].to_numpy(float)
    y = reference["realised_pct"].to_numpy(float)
    inside = reference["truth_inside"].to_numpy(bool)
    n = reference["n"].to_numpy(int) if "n" in reference else np.zeros(len(x), int)
    top = float(max(np.max(x, initial=0.0), np.max(y, initial=0.0), *predicted.values(), 10.0))
    top = 10.0 * np.ceil(top / 10.0)
    ax.plot([0, top], [0, top], color="0.5", lw=1, ls="--", label="realised = predicted")
    for n_sites, marker in zip(np.unique(n), "os^Dv", strict=False):
        this = n == n_sites
        label = f"a world, N = {n_sites}" if n_sites else "a world"
        ax.scatter(x[this & inside], y[this & inside], s=28, c="#1f77b4", marker=marker,
                   label=f"{label}: truth inside the new range")  # fmt: skip
        if (this & ~inside).any():
            ax.scatter(
                x[this & ~inside], y[this & ~inside], s=28, facecolors="none",
                edgecolors="#1f77b4", marker=marker, label=f"{label}: truth outside",
            )  # fmt: skip
    for k, (name, value) in enumerate(predicted.items()):
        ax.axvline(
            value, color="#d62728", lw=1.2, label="this run's prediction" if k == 0 else None
        )
        ax.annotate(name, (value, top), xytext=(3, -12), textcoords="offset points",
                    fontsize=7, color="#d62728", rotation=90, va="top")  # fmt: skip
    ax.set_xlim(0, top)
    ax.set_ylim(min(0.0, 10.0 * np.floor(np.min(y, initial=0.0) / 10.0)), top)  # a refit can widen
    ax.set_xlabel("predicted shrinkage of the 90 % range (%)")
    ax.set_ylabel("realised shrinkage after the refit (%)")
    ax.legend(fontsize=7, loc="lower right", frameon=False)  # below the diagonal: few worlds
    fig.tight_layout()
    return fig
