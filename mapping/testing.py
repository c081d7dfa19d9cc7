"""Test helpers shipped with the package: a guard against early Dask computes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask


class CountingScheduler:
    """A Dask scheduler that counts calls and fails past ``max_computes``."""

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many computes. Total: {self.total_computes} > max: {self.max_computes}."
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Fail if Dask computes more than ``max_computes`` times inside the block.

    Examples
    --------
    >>> import dask.array as da
    >>> from mapping.testing import raise_if_dask_computes
    >>> with raise_if_dask_computes():
    ...     y = da.ones(10, chunks=5) + 1  # building a graph is fine
    """
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler
