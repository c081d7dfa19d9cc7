"""The report stage's entry point: :func:`build_report` reads a run folder, builds the tables
and figures and writes ``OUT/report/`` atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapping import io
from mapping.exceptions import InputError
from mapping.layout import RunFolder
from mapping.report.figures import (
    ReportFigure,
    ZoneOutlines,
    calibration_figure,
    design_figure,
    design_suite_figure,
    interval_figures,
    storage_figure,
)
from mapping.report.outputs import RunOutputs, interval_sort_key, read_run
from mapping.report.render import ReportContent, manifest_parts, render_html, render_markdown
from mapping.report.tables import (
    DASH,
    InventoryTables,
    cv_area_table,
    cv_metrics_table,
    display_tables,
    inventory_tables,
    thaw_table,
)

log = logging.getLogger("socmap")


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
) -> ZoneOutlines | None:
    zones = (cfg or {}).get("zones") or {}
    names = {str(k): str(v) for k, v in (zones.get("names") or {}).items()}
    if zones_path is not None:
        p = Path(zones_path)
        if not p.exists():
            raise InputError(f"{p}: file not found")
        outlines = ZoneOutlines(p, zone_field)
        outlines.names = names
        return outlines
    if not zones.get("path"):
        return None
    p = Path(zones["path"])
    if not p.exists():
        notes.append(f"The zones of the run ({p}) are not found; the maps have no zone outlines.")
        return None
    outlines = ZoneOutlines(p, zone_field or zones.get("field"))
    outlines.names = names
    return outlines


def _monte_carlo_range(run: RunOutputs, cfg: Mapping[str, Any] | None) -> tuple[float, ...]:
    """Percentiles of the Monte Carlo range: the summary's own, else the config's."""
    rng = tuple((cfg or {}).get("uncertainty", {}).get("range", (5.0, 95.0)))
    if run.summary is not None and {"lower_pct", "upper_pct"} <= set(run.summary.columns):
        # the percentiles the summary was made with win over the config's
        pct = run.summary[["lower_pct", "upper_pct"]].dropna().drop_duplicates()
        if len(pct) == 1:
            rng = (float(pct.iloc[0, 0]), float(pct.iloc[0, 1]))
    return rng


def _report_intervals(run: RunOutputs, tables: InventoryTables | None) -> list[str]:
    """Every depth interval any output of the run names, shallow to deep."""
    intervals = set(run.maps)
    if tables is not None:
        intervals |= set(tables.intervals)
    if run.cv is not None:
        intervals |= {iv for iv in run.cv["interval"] if isinstance(iv, str)}
    intervals |= set(run.cv_plots) | set(run.cv_predictions)
    return sorted(intervals, key=interval_sort_key)


def _write_figures(figures: Sequence[ReportFigure], tmp: Path) -> list[str]:
    """Each figure as PNG (and PDF when it has one) under ``tmp/figures``; the names written."""
    written = []
    for f in figures:
        io.write_bytes(f.data, tmp / "figures" / f.name)
        written.append(f"figures/{f.name}")
        if f.pdf is not None:
            pdf_name = Path(f.name).with_suffix(".pdf").name
            io.write_bytes(f.pdf, tmp / "figures" / pdf_name)
            written.append(f"figures/{pdf_name}")
    return written


def _write_tables(
    run: RunOutputs,
    tables: InventoryTables | None,
    rng: tuple[float, ...],
    machine: dict[str, Any],
    tmp: Path,
) -> list[str]:
    """The machine tables (CSV and JSON) under ``tmp/tables``, and ``report.json`` with
    ``machine`` and all of them; the names written."""
    written = []
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
            k: run.manifest.get(k) for k in ("run_id", "created", "updated", "seed", "config_file")
        }
        machine["stages"] = {
            k: {f: v.get(f) for f in ("status", "started", "seconds")}
            for k, v in (run.manifest.get("stages") or {}).items()
        }
    io.write_json(_jsonable(machine), tmp / "tables" / "report.json")
    written.append("tables/report.json")
    return written


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
    shifted = ((run.manifest or {}).get("stages") or {}).get("uncertainty", {}).get("mean_shift")
    if shifted:
        moved = ", ".join(f"{iv} cm {100 * v:+.0f} %" for iv, v in shifted.items())
        notes.append(
            f"The Monte Carlo totals of all zones lie off the maps' totals ({moved}): the "
            "realizations are ordered by depth, and the deeper interval's map lies below a "
            "shallower one's in part of the zones, where its realizations follow the shallower "
            "ones (per-interval maps are not depth-consistent; the layered depth model, "
            "model.depth: layered, is). Its ranges moved with them."
        )
    overlap = ((run.manifest or {}).get("stages") or {}).get("zones", {}).get("overlap_cells")
    if overlap:
        notes.append(
            f"Zone polygons of different zones overlap in {int(overlap):,} cells: the overlap "
            "counts in each zone it belongs to and twice in the all-zones total."
        )
    cfg = _config_dict(config, run.manifest)
    quantiles = tuple((cfg or {}).get("prediction", {}).get("quantiles", (0.05, 0.95)))
    rng = _monte_carlo_range(run, cfg)
    range_label = f"{rng[0]:g}{DASH}{rng[1]:g} % range"

    tables = None
    if run.storage is not None:
        tables = inventory_tables(run.storage, run.summary, run.counts, notes=notes)
        if run.summary is None and not tables.has_range:
            notes.append(
                "No Monte Carlo summary (zones/storage_summary.csv): Table 2 has no ranges."
            )
    ordered = _report_intervals(run, tables)

    outlines = _zone_source(cfg, zones_path, zone_field, notes) if run.maps else None
    if run.maps and outlines is None and not any("zone outlines" in n for n in notes):
        notes.append("No zones given: the maps have no zone outlines.")

    written: list[str] = []
    folder = RunFolder(out).report
    with io.atomic_path(folder, is_dir=True) as tmp:

        def other_figures() -> list[ReportFigure | None]:
            # drawn here while the intervals' maps are drawn in other processes
            storage = storage_figure(tables, range_label) if tables is not None else None
            calibration = calibration_figure(out, ordered, quantiles[1] - quantiles[0])
            return [
                storage,
                calibration,
                design_figure(out, run, outlines),
                design_suite_figure(run),
            ]

        n_jobs = (cfg or {}).get("n_jobs")
        figures, cv_figs, others = interval_figures(
            run,
            ordered,
            outlines,
            quantiles,
            notes,
            n_jobs,
            meanwhile=other_figures,  # type: ignore[arg-type]
        )
        storage, calibration, design, design_suite = others
        t1 = t2 = t_ind = None
        if tables is not None:
            t1, t2, t_ind = display_tables(tables, range_label)
        # the report's order: maps, storage, cross-validation, calibration, design
        figures += [
            f for f in (storage, *cv_figs, calibration, design, design_suite) if f is not None
        ]
        # the maps' intervals are calibrated where the fit wrote reliability tables: the
        # figure the CV caption then points to
        calibrated = calibration is not None
        cv_table = cv_metrics_table(run.cv, calibrated) if run.cv is not None else None
        cv_area = cv_area_table(run.cv) if run.cv is not None else None
        t_thaw = thaw_table(run.thaw, range_label) if run.thaw is not None else None

        written += _write_figures(figures, tmp)
        machine: dict[str, Any] = {"title": title, "intervals": ordered, "notes": notes}
        written += _write_tables(run, tables, rng, machine, tmp)

        # no build time here: the same run gives the same report; the manifest records
        # when the report stage ran
        # the run, not the folder: a run folder moved or copied resumes with this report
        # unchanged, so a path here would name where it no longer is
        m = run.manifest or {}
        run_id, created = m.get("run_id"), m.get("created")
        subtitle = (
            f"Run {run_id}" + (f", created {created}" if created else "")
            if run_id
            else "Run without a manifest"
        ) + " · config, inputs and versions in manifest.json beside report/"
        content = ReportContent(
            title=title, subtitle=subtitle, t1=t1, t2=t2, t_independent=t_ind, cv=cv_table,
            figures=figures, manifest=manifest_parts(run.manifest, cfg), notes=notes,
            map_intervals=ordered, t_thaw=t_thaw, cv_area=cv_area,
        )  # fmt: skip
        io.write_text(render_markdown(content), tmp / "report.md")
        io.write_text(render_html(content), tmp / "index.html")
        written += ["report.md", "index.html"]
    for n in notes:
        log.info("report: %s", n)
    return {rel: folder / rel for rel in sorted(set(written))}
