"""Run the stages of a workflow in order, keep their results, skip what is unchanged.

A stage is skipped when the manifest records it as complete with the same
fingerprint (its config section, the checksums of its inputs, the
fingerprints of the stages it depends on, and the code: socmap's sources by
checksum and the versions of the packages that shape the numbers) and its
outputs are still in place
with the recorded checksums. The fingerprint names input files by their
content, not their path, so a run folder moved or copied with its config and
data (or with the data left where the config still finds them) resumes as it
stands. The manifest is rewritten (atomically) after every
stage, so a killed run resumes from the last finished stage.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapping import io
from mapping.cluster import release_memory, start_helpers
from mapping.config import RunConfig
from mapping.grid import Grid
from mapping.layout import RunFolder
from mapping.run.manifest import Manifest, digest, input_checksums, now
from mapping.run.preflight import preflight
from mapping.zones import ZoneLayout

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Stage", "StageContext", "run_stages"]


@dataclass
class StageContext:
    """What a stage function gets: the config, the output folder and earlier results.

    ``grid`` and ``stack`` (the target Grid and the lazy covariate stack) and ``zones``
    (the zone layout on that grid) are built once per run, by the preflight checks or
    else by the first stage that needs them, and passed on to the later ones; a stage
    reads them back from files only when it resumes a run. ``notes[stage]`` holds what a
    stage adds to its manifest entry (e.g. the predict stage's ``failed_cells`` per
    interval).
    """

    config: RunConfig
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    scheduler: str | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = print
    grid: Grid | None = None
    stack: xr.Dataset | None = None
    stack_held: bool = False  # read into memory (stages.grid_and_stack)
    zones: ZoneLayout | None = None
    layers: Any = None  # depth_model.LayerStore: a layered run's predicted layers, predict -> thaw
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def folder(self) -> RunFolder:
        """The output folder's layout."""
        return RunFolder(self.out)


@dataclass(frozen=True)
class Stage:
    """One step of the workflow.

    ``run(ctx)`` does the work and returns ``(outputs, result)``: the paths it
    wrote (relative to the output folder) and an in-memory result for later
    stages. ``load(ctx)`` rebuilds that result from the files when the stage is
    skipped.
    """

    name: str
    run: Callable[[StageContext], tuple[list[str], Any]]
    load: Callable[[StageContext], Any]
    config_keys: tuple[str, ...]
    inputs: Callable[[RunConfig], list[Path]]
    depends: tuple[str, ...] = ()


def run_stages(
    config: RunConfig,
    stages: list[Stage],
    *,
    until: str | None = None,
    force: bool = False,
    scheduler: str | None = None,
    echo: Callable[[str], None] = print,
    check: bool = True,
) -> StageContext:
    """Run ``stages`` in order (up to and including ``until``), skipping unchanged ones.

    :func:`mapping.run.preflight.preflight` checks the config, the inputs and the output
    folder first (``check=False`` skips it); nothing is written before it passes. A stage
    is recorded ``running`` before it starts (and the stages after it ``outdated``),
    ``complete`` with its output checksums once its files are in place, and ``failed``
    or ``interrupted`` when it raises; outputs of its previous run that it no longer
    writes are removed.
    """
    out = config.output
    ctx = StageContext(config=config, out=out, scheduler=scheduler or config.scheduler, echo=echo)
    if check:
        names = [s.name for s in stages]
        ahead = names[: names.index(until) + 1] if until in names else names
        checked = preflight(config, echo=echo, monte_carlo="uncertainty" in ahead)
        ctx.grid, ctx.stack, ctx.zones = checked.grid, checked.stack, checked.layout
    manifest = Manifest(ctx.folder, config)
    # the input files this config names: one it no longer names (renamed, or the run moved)
    # leaves the record
    named = {str(p) for s in stages for p in s.inputs(config)}
    manifest.data["inputs"] = {k: v for k, v in manifest.data["inputs"].items() if k in named}
    if _fit_ahead(manifest, stages, until, force):
        # the fit's helper processes import their libraries while the first stages run
        start_helpers(config.n_jobs)
    cache: dict[str, str] = {}
    try:
        for stage in stages:
            fp = _fingerprint(stage, config, manifest, cache, ctx.fingerprints)
            ctx.fingerprints[stage.name] = fp
            if not force and manifest.is_complete(stage.name, fp):
                echo(f"[{stage.name}] unchanged, reusing {out}")
                ctx.results[stage.name] = stage.load(ctx)
            else:
                order = [s.name for s in stages]
                ctx.results[stage.name] = _run_one(stage, ctx, manifest, fp, order)
            if until is not None and stage.name == until:
                break
    finally:
        gc.unfreeze()  # what release_memory froze between stages is collectable again
    return ctx


def _fit_ahead(manifest: Manifest, stages: list[Stage], until: str | None, force: bool) -> bool:
    """Whether the fit stage is among the stages to run and not complete in the manifest
    (it may still be found unchanged; a changed input found only later is a missed head
    start, not an error)."""
    names = [s.name for s in stages]
    if "fit" not in names or (until in names and names.index(until) < names.index("fit")):
        return False
    return force or manifest.stage("fit").get("status") != "complete"


def _fingerprint(
    stage: Stage,
    config: RunConfig,
    manifest: Manifest,
    cache: dict[str, str],
    fingerprints: dict[str, str],
) -> str:
    """Identity of a stage's work: its config section, inputs, upstream and the versions of
    the code (socmap's sources by checksum, the packages, Python and GDAL).

    Input files enter by their checksums alone: a path in the config section that names
    an input of this stage or of an earlier one (``cache``, every file checksummed in
    this run) is replaced by the file's checksum, so the file's role stays in the
    fingerprint and its location does not.
    """
    cfg = json.loads(config.model_dump_json())
    inputs = input_checksums(stage.inputs(config), cache)
    section = _by_content({k: cfg.get(k) for k in stage.config_keys}, cache)
    manifest.data["inputs"].update(inputs)
    return digest(
        {
            "stage": stage.name,
            "config": section,
            "inputs": sorted(inputs.values()),
            "upstream": [fingerprints[d] for d in stage.depends if d in fingerprints],
            # any change of socmap's code or of a package that shapes the numbers
            "versions": manifest.data["versions"],
        }
    )


def _by_content(obj: Any, inputs: dict[str, str]) -> Any:
    """``obj`` (JSON data) with every string that is a key of ``inputs`` (a file's path)
    replaced by the file's checksum."""
    if isinstance(obj, dict):
        return {k: _by_content(v, inputs) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_by_content(v, inputs) for v in obj]
    if isinstance(obj, str):
        return inputs.get(obj, obj)
    return obj


def _run_one(stage: Stage, ctx: StageContext, manifest: Manifest, fp: str, order: list[str]) -> Any:
    """Run one stage and record it: running, then complete (or failed / interrupted)."""
    ctx.echo(f"[{stage.name}] running")
    t0 = time.perf_counter()
    started = now()
    rec = manifest.stage(stage.name)  # files of its last run, to clear stale ones
    previous = rec.get("outputs") or rec.get("previous_outputs") or {}
    keep = {"fingerprint": fp, "started": started, "previous_outputs": previous}
    manifest.start(stage.name, order, **keep)
    ctx.notes.pop(stage.name, None)
    try:
        outputs, result = stage.run(ctx)
    except BaseException as exc:
        status = "failed" if isinstance(exc, Exception) else "interrupted"
        manifest.record(stage.name, status=status, **keep)
        raise
    seconds = time.perf_counter() - t0
    for rel in sorted(set(previous) - set(outputs)):  # stale: no longer written
        io.remove_output(ctx.out / rel)
    manifest.record(
        stage.name,
        status="complete",
        fingerprint=fp,
        started=started,
        seconds=round(seconds, 3),
        outputs={rel: io.file_checksum(ctx.out / rel) for rel in outputs},
        **ctx.notes.get(stage.name, {}),
    )
    ctx.echo(f"[{stage.name}] done in {seconds:.1f} s")
    release_memory()  # the next stage's peak starts from what this one still needs
    return result
