"""Resumable maps: the finished chunks of a prediction, kept until its maps are in place.

A prediction stage killed while writing its maps resumes with the chunks it had finished:
:class:`ChunkStore` keeps each chunk of the stacked statistics as it is written, and
:func:`write_resumable` writes the maps of one interval from a prediction whose kept
chunks are read back instead of computed. Files are written and read through
:mod:`mapping.io` (atomic ``.npy`` files and a JSON key).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from mapping import io
from mapping.exceptions import InputError
from mapping.predict import WrittenMaps, prediction_layers, write_prediction
from mapping.units import format_interval

__all__ = ["ChunkStore", "write_resumable"]


class ChunkStore:
    """Finished chunks of a prediction, kept on disk so that a killed run can resume.

    Each chunk of the stacked statistics, ``(n_statistics, ny, nx)`` float32, is saved as
    ``r<i>_c<j>.npy`` in ``folder`` by :meth:`on_block` once all its statistics have been
    written, through :func:`mapping.io.save_array`: a chunk file is complete or absent,
    so the chunk files *are* the record of finished chunks. ``key.json`` names the
    computation (and its chunk layout); a folder with another key is emptied. Saving
    happens in the client process, so workers need no shared file system.

    :meth:`dataset` is the prediction with every kept chunk read from its file instead of
    computed (the graph of those chunks is culled), so a resumed run computes only the
    missing chunks and writes maps identical to an uninterrupted run.

    The statistics are the variables of ``prediction`` in their order; ``on_block(k, ...)``
    receives the ``k``-th of them (the order :func:`mapping.predict.write_prediction`
    hands them over in when given :func:`mapping.predict.prediction_layers`).
    """

    def __init__(self, folder: Path, key: str, prediction: Any) -> None:
        self.folder = folder
        self.prediction = prediction
        self.names = [str(v) for v in prediction.data_vars]
        first = prediction[self.names[0]].data
        self.chunks: tuple[tuple[int, ...], tuple[int, ...]] = first.chunks
        self.offsets = [np.cumsum((0, *c)).tolist() for c in self.chunks]
        self.n_chunks = len(self.chunks[0]) * len(self.chunks[1])
        ident = {"key": key, "statistics": self.names, "chunks": [list(c) for c in self.chunks]}
        kept = None
        try:
            kept = io.read_json(folder / "key.json")
        except (InputError, OSError, ValueError):
            pass
        if kept != ident:
            io.remove_output(folder)
            io.write_json(ident, folder / "key.json")
        ny, nx = (len(c) for c in self.chunks)
        self.done = {(i, j) for i in range(ny) for j in range(nx) if self.path(i, j).exists()}
        self.reused = len(self.done)
        self._pending: dict[tuple[int, int], dict[int, np.ndarray]] = {}

    def path(self, i: int, j: int) -> Path:
        """The file of chunk ``(i, j)``."""
        return self.folder / f"r{i}_c{j}.npy"

    def dataset(self) -> Any:
        """The prediction, with the kept chunks read from disk."""
        stacked = da.stack([self.prediction[n].data for n in self.names]).rechunk({0: -1})
        if not self.done:
            return self.prediction
        name = f"socmap-resumed-{tokenize(stacked.name, sorted(self.done))}"
        layer: dict[Any, Any] = {}
        for i in range(len(self.chunks[0])):
            for j in range(len(self.chunks[1])):
                if (i, j) in self.done:
                    layer[(name, 0, i, j)] = (_load_chunk, str(self.path(i, j)))
                else:
                    layer[(name, 0, i, j)] = (stacked.name, 0, i, j)  # computed as before
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[stacked])
        mixed = da.Array(graph, name, chunks=stacked.chunks, dtype=stacked.dtype)
        out = self.prediction.copy()
        for k, n in enumerate(self.names):
            out[n] = out[n].copy(data=mixed[k])
        return out

    def on_block(self, k: int, window: tuple[slice, slice], block: np.ndarray) -> None:
        """Collect the statistics of one chunk; save it once all have arrived."""
        try:
            ij = (self.offsets[0].index(window[0].start), self.offsets[1].index(window[1].start))
        except ValueError:  # not a chunk window (an in-memory array is written by rows)
            return
        if ij in self.done:
            return
        parts = self._pending.setdefault(ij, {})
        parts[k] = np.asarray(block, dtype="float32")
        if len(parts) < len(self.names):
            return
        io.save_array(np.stack([parts[m] for m in range(len(self.names))]), self.path(*ij))
        del self._pending[ij]
        self.done.add(ij)

    def remove(self) -> None:
        """Drop the kept chunks (the maps are in place)."""
        io.remove_output(self.folder)


def _load_chunk(path: str) -> np.ndarray:
    return io.load_array(path)


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

    Each finished chunk is kept in ``partial/soc_<top>_<bottom>cm`` (:class:`ChunkStore`)
    under ``key``, the identity of the computation (config, inputs, model); chunks kept
    under another key are discarded. A run killed while writing resumes with the chunks it
    has, and writes maps identical to an uninterrupted run. The folder of this interval is
    removed once its maps are in place. ``echo`` says how many chunks were reused;
    ``options`` go to :func:`~mapping.predict.write_prediction`.
    """
    top, bottom = interval
    label = label or f"predicting {format_interval(top, bottom)} cm"
    layers = prediction_layers(prediction)
    store = ChunkStore(Path(partial) / f"soc_{top:g}_{bottom:g}cm", key, layers)
    if store.reused and echo is not None:
        echo(f"[{label}] {store.reused} of {store.n_chunks} chunks kept from an interrupted run")
    written = write_prediction(
        store.dataset(), folder, interval, label=label, on_block=store.on_block, **options
    )
    store.remove()
    return written
