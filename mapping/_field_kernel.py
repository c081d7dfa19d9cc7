"""Compiled (numba) bilinear interpolation of a coarsened Gaussian field at chosen cells.

NumPy needs eight gathers and a dozen full-size temporaries per kernel for this, 0.2 to
0.5 s per realization for 1.4 million cells and four kernels (14-34x this loop); the loop below reads each
node once from cache and does the same floating-point operations in the same order, so
its results are bit for bit :meth:`mapping.randomfield.GaussianField.window`'s
(``benchmarks/bench_uncertainty.py kernels`` measures both and checks they are equal).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)  # no fastmath: no contraction into FMA, same bits as NumPy
def bilinear_at(
    nodes: np.ndarray,
    width: int,
    base: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    place: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[:, place[c]] = `` the bilinear value of cell ``c`` on ``nodes``.

    ``nodes`` is ``(n_kernels, rows * width)`` (a tile's lattice nodes, rows of
    ``width`` nodes), ``base[c]`` the flat index of the cell's upper-left node, ``u[c]``,
    ``v[c]`` its fractional offsets down and across. Rows first, then columns:
    ``left = n00 (1 - u) + n10 u``, ``right = n01 (1 - u) + n11 u``,
    ``left (1 - v) + right v``.
    """
    for q in range(nodes.shape[0]):
        n = nodes[q]
        o = out[q]
        for c in range(base.shape[0]):
            b = base[c]
            uu = u[c]
            vv = v[c]
            left = n[b] * (1.0 - uu) + n[b + width] * uu
            right = n[b + 1] * (1.0 - uu) + n[b + width + 1] * uu
            o[place[c]] = left * (1.0 - vv) + right * vv


@nb.njit(cache=True, nogil=True)
def add_topup(out: np.ndarray, sd: np.ndarray, noise: np.ndarray, flat: np.ndarray) -> None:
    """``out[q, c] += sd[q, c] * noise[flat[c]]``: the top-up noise at the chosen cells."""
    for q in range(out.shape[0]):
        o = out[q]
        s = sd[q]
        for c in range(flat.shape[0]):
            o[c] += s[c] * noise[flat[c]]
