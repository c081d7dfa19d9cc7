"""The inventory report of a run: tables, maps, cross-validation and the run manifest.

:func:`build_report` reads an output folder of ``socmap run`` (through
:class:`mapping.layout.RunFolder`, only through :mod:`mapping.io`) and writes ``OUT/report/``::

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
storage (Pg, or Tg) of the mean map (Table 1 × area); when the Monte Carlo summary
``zones/storage_summary.csv`` exists, Table 2 gives that total with the ``(lower–upper)``
range of the simulated totals, and their medians go to ``tables/table2_storage.csv``. Nothing but
``zones/storage.csv`` is needed for the tables; every other input is optional and its
absence is noted in the report.

The modules of the package, in the order the data passes through them:

* :mod:`~mapping.report.outputs` -- the run's outputs, read through ``RunFolder``;
* :mod:`~mapping.report.tables` -- Table 1, Table 2 and their display form;
* :mod:`~mapping.report.maps` -- map drawing: display projection, graticule, outlines;
* :mod:`~mapping.report.charts` -- storage, reliability and observed-vs-predicted charts;
* :mod:`~mapping.report.figures` -- the figures of one run, from its maps and tables;
* :mod:`~mapping.report.render` -- HTML and Markdown;
* :mod:`~mapping.report.build` -- :func:`build_report`, the report stage's entry point.
"""

from mapping.report.build import build_report
from mapping.report.outputs import RunOutputs, read_run
from mapping.report.tables import InventoryTables, inventory_tables

__all__ = ["InventoryTables", "RunOutputs", "build_report", "inventory_tables", "read_run"]
