"""Figures for the CV report.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg
canvas (no pyplot state, safe in threads and without a display) and written
atomically through :func:`mapping.io.write_bytes`.
"""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from mapping import io
from mapping.validation import metrics_table

UNITS = "kg C m$^{-2}$"


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
    """Observed (y axis) against predicted (x axis) values with a 1:1 line, as PNG.

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
    path
        Output PNG; written to a temporary name and renamed into place.
    units
        Axis units (SOC density by default).
    dpi
        Resolution.

    Returns
    -------
    Path
        ``path``.
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

    buf = BytesIO()
    fig.savefig(buf, format="png")
    return io.write_bytes(buf.getvalue(), path)
