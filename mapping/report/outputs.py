"""The outputs of a run, read through :class:`mapping.layout.RunFolder` (only through
:mod:`mapping.io`): the zone totals and every optional table the report shows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mapping import io
from mapping.exceptions import InputError
from mapping.layout import RunFolder
from mapping.units import format_interval, parse_interval


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
    thaw
        ``zones/thaw_split.csv``: storage above and below the active-layer base per zone
        (runs with ``active_layer``).
    cv
        Pooled cross-validation metrics, one row per interval.
    cv_plots, cv_predictions
        ``models/<interval>/observed_vs_predicted.png`` and ``cv_predictions.csv``.
    maps
        ``{interval: {statistic: (path, variable)}}`` of ``maps/``.
    design_targets
        ``design/targets.csv`` of ``socmap design``: the targeted totals and their predicted
        reductions.
    notes
        What was missing or unreadable, in words for the report.
    """

    out: Path
    manifest: dict[str, Any] | None = None
    storage: pd.DataFrame | None = None
    storage_unit: str = "Pg"
    summary: pd.DataFrame | None = None
    counts: pd.DataFrame | None = None
    thaw: pd.DataFrame | None = None
    cv: pd.DataFrame | None = None
    cv_plots: dict[str, Path] = field(default_factory=dict)
    cv_predictions: dict[str, Path] = field(default_factory=dict)
    maps: dict[str, dict[str, tuple[Path, str | None]]] = field(default_factory=dict)
    design_targets: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def interval_label_or_none(text: Any) -> str | None:
    """``"0-30"`` for anything that parses as a depth interval, else None."""
    try:
        return format_interval(*parse_interval(str(text)))
    except ValueError:
        return None


def interval_sort_key(label: str) -> tuple[float, float]:
    return parse_interval(label)


def _optional_table(path: Path, notes: list[str], what: str) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return io.read_table(path)
    except InputError as exc:
        notes.append(f"{what} could not be read ({exc}).")
        return None


#: The tables of the stages a report reads, and what the report shows of them.
_STAGE_TABLES = {
    "zones": ("storage", "the zone totals (Tables 1 and 2)"),
    "uncertainty": ("summary", "the Monte Carlo ranges"),
    "thaw": ("thaw", "the thawed and frozen split (Table 3)"),
}


def _note_stale(run: RunOutputs, folder: RunFolder) -> None:
    """Note the tables whose stage did not complete in the manifest's last run: their files
    are an earlier run's (a stage that fails leaves the previous outputs in place)."""
    stages = (run.manifest or {}).get("stages", {})
    for stage, (attr, what) in _STAGE_TABLES.items():
        status = stages.get(stage, {}).get("status")
        if getattr(run, attr) is not None and status not in (None, "complete"):
            run.notes.append(
                f"The {stage} stage is '{status}' in the manifest: {what} come from an earlier "
                "run and may not match the rest of this report."
            )


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
    if folder.thaw_split.exists():
        run.thaw = _optional_table(folder.thaw_split, notes, folder.rel(folder.thaw_split))
    run.cv = _read_cv(folder, run)
    if run.cv is None:
        notes.append("No cross-validation results (models/*/cv_metrics.csv).")
    _note_stale(run, folder)

    rel = folder.rel(folder.design_targets)
    run.design_targets = _optional_table(folder.design_targets, notes, rel)
    if run.design_targets is not None:
        lack = sorted(
            {"zone", "interval", "expected_reduction_pct"} - set(run.design_targets.columns)
        )
        if lack:
            notes.append(
                f"{rel} lacks column(s) {', '.join(lack)}: the proposed sites are left out."
            )
            run.design_targets = None

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
        label = interval_label_or_none(name)
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
            frames.append(s.assign(interval=s["interval"].map(interval_label_or_none)))
    return pd.concat(frames, ignore_index=True) if frames else None
