"""Running a workflow: the runner, the manifest, the stages, preflight checks and the plan.

>>> from mapping.run import run_stages, stage_list  # doctest: +SKIP
>>> ctx = run_stages(load_config("workflows/sample.yaml"), stage_list(cfg))  # doctest: +SKIP

The only package (with ``mapping.cli``) that reads the workflow config: it turns config
sections into plain arguments for the domain modules below it.
"""

from __future__ import annotations

from mapping.run.layered import predict_depths, stage_list
from mapping.run.runner import Stage, StageContext, run_stages
from mapping.run.stages import default_stages

__all__ = ["Stage", "StageContext", "default_stages", "predict_depths", "run_stages", "stage_list"]
