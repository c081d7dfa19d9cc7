"""The report's figures of a run: maps of the mean density and the interval width with zone
outlines, the storage chart, cross-validation and calibration plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj

from mapping import io
from mapping.cluster import process_map
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.report.charts import (
    design_suite_chart,
    observed_vs_predicted_figure,
    reliability_chart,
    render_figure,
    storage_chart,
)
from mapping.report.maps import (
    MapView,
    display_grid,
    map_figure,
    polygon_lines,
    to_display,
    to_pixels,
    zone_edges,
)
from mapping.report.outputs import RunOutputs, interval_label_or_none, interval_sort_key
from mapping.report.tables import (
    DASH,
    DENSITY_LABEL,
    TOTAL,
    InventoryTables,
    fmt_number,
    interval_text,
)
from mapping.zones import VECTOR_SUFFIXES, to_grid_crs

MAP_VIEW_CELLS = 1000
"""A side of the decimated read of a map a figure draws (never the full grid in memory)."""
_WIDTH_CMAP = "YlOrRd"


# =========================================================================== figures
@dataclass
class ReportFigure:
    name: str  # file name in figures/
    caption: str
    data: bytes
    section: str  # "maps", "storage", "cv"
    interval: str | None = None
    pdf: bytes | None = None  # the same figure as PDF, written beside the PNG


def _png_pdf(fig: Any, section: str, interval: str | None) -> tuple[bytes, str, str | None, bytes]:
    """``(png, section, interval, pdf)``: the fields of a :class:`ReportFigure` after its
    caption, the figure rendered once for both formats."""
    png, pdf = render_figure(fig)
    return png, section, interval, pdf


def read_view(path: Path, variable: str | None = None) -> MapView:

    info = io.raster_info(path, variable=variable)
    data, transform, _ = io.read_decimated(info, max_size=MAP_VIEW_CELLS)
    data = data.astype("float64")
    if info.nodata is not None and not np.isnan(info.nodata):
        data[data == info.nodata] = np.nan
    return MapView(
        data=data, transform=transform, crs=info.crs, decimation=abs(transform.a / info.transform.a)
    )


class ZoneOutlines:
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
            data, transform, _ = io.read_decimated(self.info, max_size=2 * MAP_VIEW_CELLS)
            self.codes = (data, transform)

    def for_view(self, view: MapView) -> tuple[Any, Any]:
        """``(edges, lines)`` for :func:`mapping.report.maps.map_figure`."""

        grid = Grid(view.crs, view.transform, view.shape)
        if grid in self._cache:
            return self._cache[grid]
        if self.is_vector:
            gdf = to_grid_crs(self.gdf, grid)
            res: tuple[Any, Any] = (None, polygon_lines(list(gdf.geometry), view.transform))
        else:
            res = (zone_edges(*self._codes_on(view)), None)
        self._cache[grid] = res
        return res

    def labels_for(self, view: MapView) -> list[tuple[float, float, str]]:
        """``(col, row, name)`` of each zone's label on ``view``: a point inside the zone."""
        if self.is_vector:
            gdf = to_grid_crs(self.gdf, Grid(view.crs, view.transform, view.shape))
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


def interval_figures(
    run: RunOutputs,
    intervals: Sequence[str],
    outlines: ZoneOutlines | None,
    quantiles: tuple[float, float],
    notes: list[str],
    n_jobs: int | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> tuple[list[ReportFigure], list[ReportFigure], Any]:
    """The figures of every interval: its mean and interval-width maps, and its observed
    against cross-validated predicted plot; PNG and PDF.

    The intervals are drawn side by side in up to ``n_jobs`` local processes
    (:func:`mapping.cluster.process_map`; matplotlib's drawing holds the GIL); figures
    and notes come back in interval order, the same as drawn one by one.

    ``meanwhile`` is called in this process while the intervals are drawn elsewhere
    (other figures of the report).

    Returns
    -------
    (maps, cv, meanwhile_result)
        The map figures and the cross-validation figures, each in interval order, and
        what ``meanwhile`` returned.
    """
    jobs = [
        {
            "stats": run.maps.get(iv, {}),
            "iv": iv,
            "outlines": outlines,
            "quantiles": quantiles,
            "cv_predictions": run.cv_predictions.get(iv),
            "cv_plot": run.cv_plots.get(iv),
        }
        for iv in intervals
    ]
    drawn = process_map(_one_interval, jobs, n_jobs)
    extra = meanwhile() if meanwhile is not None else None
    maps: list[ReportFigure] = []
    cvs: list[ReportFigure] = []
    for done, cv, said in drawn:
        maps += done
        cvs += [cv] if cv is not None else []
        notes += said
    return maps, cvs, extra


def _one_interval(
    stats: dict[str, Any],
    iv: str,
    outlines: ZoneOutlines | None,
    quantiles: tuple[float, float],
    cv_predictions: Path | None,
    cv_plot: Path | None,
) -> tuple[list[ReportFigure], ReportFigure | None, list[str]]:
    maps, notes = _interval_map_figures(stats, iv, outlines, quantiles)
    return maps, _cv_figure(iv, cv_predictions, cv_plot), notes


def _interval_map_figures(
    stats: dict[str, Any],
    iv: str,
    outlines: ZoneOutlines | None,
    quantiles: tuple[float, float],
) -> tuple[list[ReportFigure], list[str]]:
    """The maps of one interval and the notes they raise (see :func:`interval_figures`)."""
    figs: list[ReportFigure] = []
    notes: list[str] = []
    level = f"{100 * (quantiles[1] - quantiles[0]):g} %"
    qtext = f"{quantiles[0]:g}{DASH}{quantiles[1]:g} quantiles"
    outline_text = "Black lines: zone boundaries. " if outlines is not None else ""
    if "mean" not in stats:
        if stats:
            notes.append(f"No mean map for {interval_text(iv)}.")
        return figs, notes
    mean = read_view(*stats["mean"])
    shown = display_grid(mean)  # north up: LAEA centred on the map
    mean = to_display(mean, shown)
    edges, lines = outlines.for_view(mean) if outlines is not None else (None, None)
    labels = outlines.labels_for(mean) if outlines is not None else []
    veil, aoa_text = None, ""
    if "aoa" in stats:
        aoa = to_display(read_view(*stats["aoa"]), shown)
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
    fig = map_figure(mean, title=f"Mean SOC stock, {interval_text(iv)}", label="SOC stock", veil=veil,
                     edges=edges, lines=lines or (), zone_labels=labels)  # fmt: skip
    figs.append(ReportFigure(
        f"density_{iv}.png",
        f"Mean SOC stock {interval_text(iv)} ({DENSITY_LABEL}). {outline_text}{grid_text}{aoa_text}{dec}".strip(),
        *_png_pdf(fig, "maps", iv),
    ))  # fmt: skip
    if "lower" in stats and "upper" in stats:
        lo, hi = read_view(*stats["lower"]), read_view(*stats["upper"])
        if lo.shape != hi.shape:
            notes.append(
                f"The lower and upper maps of {interval_text(iv)} differ in shape; no width map."
            )
            return figs, notes
        width = to_display(MapView(hi.data - lo.data, hi.transform, hi.crs, hi.decimation), shown)
        fig = map_figure(width, title=f"Width of the {level} prediction interval, {interval_text(iv)}",
                         label="interval width", cmap=_WIDTH_CMAP, edges=edges, lines=lines or (),
                         zone_labels=labels)  # fmt: skip
        figs.append(ReportFigure(
            f"width_{iv}.png",
            f"Width of the {level} prediction interval (upper − lower, {qtext}) {interval_text(iv)} "
            f"({DENSITY_LABEL}). {outline_text}{grid_text}{dec}".strip(),
            *_png_pdf(fig, "maps", iv),
        ))  # fmt: skip
    else:
        notes.append(f"No lower/upper maps for {interval_text(iv)}: no interval-width map.")
    return figs, notes


def storage_figure(t: InventoryTables, range_label: str) -> ReportFigure:

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
    return ReportFigure("storage_by_zone.png", cap, *_png_pdf(fig, "storage", None))


def _cv_figure(iv: str, predictions: Path | None, plot: Path | None) -> ReportFigure | None:
    """One interval's observed against cross-validated predicted stocks, PNG and PDF (drawn
    from ``cv_predictions.csv``; the fit stage's PNG when only that is left); ``None``
    without either."""
    pdf = None
    if predictions is not None:
        pred = io.read_table(predictions)
        ok = pred["predicted"].notna()
        has = {"lower", "upper"} <= set(pred.columns)
        fig = observed_vs_predicted_figure(
            pred.loc[ok, "observed"], pred.loc[ok, "predicted"],
            lower=pred.loc[ok, "lower"] if has else None, upper=pred.loc[ok, "upper"] if has else None,
            title=f"SOC stock {iv} cm, cross-validation",
        )  # fmt: skip
        data, pdf = render_figure(fig)
    elif plot is not None:
        data = io.read_bytes(plot)
    else:
        return None
    return ReportFigure(
        f"observed_vs_predicted_{iv}.png",
        f"Observed against cross-validated predicted SOC stock, {interval_text(iv)}; grey bars: prediction intervals.",
        data, "cv", iv, pdf,
    )  # fmt: skip


def calibration_figure(out: Path, intervals: Sequence[str], level: float) -> ReportFigure | None:
    """Reliability plot and coverage by DI of the calibrated intervals (from the fit
    stage's ``reliability.csv`` and ``coverage_by_di.csv``), with one sentence on what the
    interval means and where it is not reliable; ``None`` for an uncalibrated run."""
    folder = RunFolder(out)
    rel: dict[str, pd.DataFrame] = {}
    by_di: dict[str, pd.DataFrame] = {}
    beyond: list[float] = []
    for name in folder.model_labels():
        iv = interval_label_or_none(name)
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
    order = sorted(rel, key=interval_sort_key)
    fig = reliability_chart({k: rel[k] for k in order}, by_di, level=level)
    observed = [float(np.interp(level, rel[k]["nominal"], rel[k]["observed"])) for k in order]

    def pct(share: float) -> str:
        # one decimal below 1 %: a third of a percent of the map is not "0 %"
        v = 100 * share
        if 0 < v < 0.05:
            return "<0.1"
        return fmt_number(v, 1 if v < 1 else 0)

    def span(values: list[float]) -> str:
        lo, hi = pct(min(values)), pct(max(values))
        return lo if lo == hi else f"{lo}{DASH}{hi}"

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
    return ReportFigure("calibration.png", cap, *_png_pdf(fig, "cv", None))


def design_figure(out: Path, run: RunOutputs, outlines: ZoneOutlines | None) -> ReportFigure | None:
    """The sites ``socmap design`` proposed, over the std map of the first targeted interval."""
    folder = RunFolder(out)
    targets = run.design_targets
    if targets is None or not folder.design_sites.exists():
        return None
    sites = io.read_table(folder.design_sites)
    iv = str(targets["interval"].iloc[0])
    if "std" not in run.maps.get(iv, {}):
        return None
    view = read_view(*run.maps[iv]["std"])
    view = to_display(view, display_grid(view))
    edges, lines = outlines.for_view(view) if outlines is not None else (None, None)
    fig = map_figure(view, title=f"Proposed new profiles over the standard deviation, {interval_text(iv)}",
                     label="standard deviation", edges=edges, lines=lines or ())  # fmt: skip
    to = pyproj.Transformer.from_crs("EPSG:4326", view.crs, always_xy=True)
    cols, rows = to_pixels(view.transform, *to.transform(sites["lon"], sites["lat"]))
    fig.axes[0].scatter(cols, rows, s=16, c="#d62728", edgecolors="white", linewidths=0.6, zorder=7)
    bounded = {"max_reduction_pct", "shared_pct"} <= set(targets.columns)  # since fefba56
    reductions = "; ".join(
        f"{r.zone} {interval_text(r.interval)}: {r.expected_reduction_pct:.1f} %"
        + (
            f" (at most {r.max_reduction_pct:.1f} % from any {len(sites)} sites; "
            f"{r.shared_pct:.0f} % of its variance is the error every cell shares)"
            if bounded
            else ""
        )
        for r in targets.itertuples(index=False)
    )
    caption = (
        f"{len(sites)} new profile sites proposed by `socmap design` (red, design/sites.gpkg). "
        f"Predicted reduction of the 90 % ranges: {reductions}. A prediction of the error model "
        "and the residual variogram, which a refit with the new profiles re-estimates; "
        "predicted and realised reductions on synthetic worlds are compared in docs/design.md."
    )
    return ReportFigure("design_sites.png", caption, *_png_pdf(fig, "maps", iv))


DESIGN_SUITE = Path(__file__).parent / "data" / "design_suite.csv"
"""Predicted and realised shrinkage of ``socmap design``'s targeted range on the world suite
(``docs/design.md``, "N = 50 and 200 under the sample workflow's structure", "A third
design suite" and "The training range follows the box"): the eight projected worlds of the
suites of seeds 2033 to 2036 (``suite``; 2033, 2035 and 2036 with the range term following
the training box, as the design is built since 2026-12-06), N = 50 and 200 new
profiles aimed at continuous/0-100, one row per suite, world and N, measured with the sample
workflow (the layered model, ``cv.repeats: 3``, ``uncertainty: {shared: extrapolation,
correlation: cv_errors}``). Written by ``python benchmarks/design_suite.py --suite OUT
--n 50 200 --target continuous/0-100`` as ``OUT/design_shrinkage_continuous-0-100.csv``
(the ``suite`` column added)."""


def _suite_summary(reference: pd.DataFrame) -> str:
    """One clause per number of new sites: predicted and realised shrinkage on the suite."""
    parts = []
    for n, rows in reference.groupby("n", sort=True):
        pred, real = rows["predicted_pct"], rows["realised_pct"]
        parts.append(
            f"with N = {int(n)} new profiles socmap design predicted "
            f"{pred.min():.0f}-{pred.max():.0f} % (mean {pred.mean():.1f} %) and the refit "
            f"realised {real.min():.0f}-{real.max():.0f} % (mean {real.mean():.1f} %), more "
            f"than predicted in {int((real > pred).sum())} of {len(rows)} worlds"
        )
    return "; ".join(parts)


def design_suite_figure(run: RunOutputs) -> ReportFigure | None:
    """This run's predicted reductions beside the predicted and realised ones on the world
    suite (:data:`DESIGN_SUITE`), when ``socmap design`` was run on the output folder."""
    targets = run.design_targets
    if targets is None:
        return None
    reference = io.read_table(DESIGN_SUITE)
    predicted = {
        f"{r.zone} {r.interval}": float(r.expected_reduction_pct)
        for r in targets.itertuples(index=False)
    }
    fig = design_suite_chart(reference, predicted)
    caption = (
        "How far to trust the predicted reductions: on the synthetic worlds of the world "
        f"suite (sites aimed at {reference['targets'].iloc[0]}, docs/design.md), "
        f"{_suite_summary(reference)}. The prediction keeps the error model, the variogram "
        "and the regional error fixed, which a refit re-estimates. The truth stayed inside "
        f"the new 90 % range in {int(reference['truth_inside'].sum())} of {len(reference)} "
        "reruns. Red: this run's predicted reductions."
    )
    # beside the proposed sites, in the first targeted interval's maps
    iv = str(targets["interval"].iloc[0])
    return ReportFigure("design_suite.png", caption, *_png_pdf(fig, "maps", iv))
