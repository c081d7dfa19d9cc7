"""Resumable maps: the finished chunks of a prediction, kept until its maps are in place.

A prediction stage killed while writing its maps resumes with the chunks it had finished.
The record of finished work is the chunk files themselves: every chunk of an interval's
maps is written, by the task that computes it, as one GeoTIFF in
``maps/.partial/soc_<top>_<bottom>cm`` (temporary name, then renamed: a chunk file is
complete or absent), under a key naming the computation
(:func:`mapping.io.write_tiled_cogs`). A rerun with the same key computes only the chunks
without a file; the folder is removed once the interval's maps are in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mapping.predict import WrittenMaps, write_prediction
from mapping.units import format_interval

__all__ = ["write_resumable"]


def write_resumable(
    prediction: Any,
    folder: str | os.PathLike[str],
    interval: tuple[float, float],
    *,
    partial: str | os.PathLike[str],
    key: str,
    echo: Any = None,
    label: str | None = None,
    **options: Any,
) -> WrittenMaps:
    """:func:`mapping.predict.write_prediction` (COGs), keeping finished chunks in ``partial``.

    Each finished chunk is kept in ``partial/soc_<top>_<bottom>cm`` under ``key``, the
    identity of the computation (config, inputs, model); chunks kept under another key
    are discarded. A run killed while writing resumes with the chunks it has, and writes
    maps identical to an uninterrupted run. ``echo`` says how many chunks were reused;
    ``options`` go to :func:`~mapping.predict.write_prediction` (``writer``, ...).
    """
    top, bottom = interval
    label = label or f"predicting {format_interval(top, bottom)} cm"

    def said(kept: int, n_chunks: int) -> None:
        if echo is not None:
            echo(f"[{label}] {kept} of {n_chunks} chunks kept from an interrupted run")

    return write_prediction(
        prediction,
        folder,
        interval,
        label=label,
        tiles=Path(partial) / f"soc_{top:g}_{bottom:g}cm",
        key=key,
        on_resume=said,
        **options,
    )
