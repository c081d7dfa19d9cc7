"""Compiled (numba) pass of :func:`mapping.zonal.exact_bincount`.

Each double is split from its bits into its exponent and the two 26/27-bit halves of its
integer mantissa; the halves are added per (bin, exponent) in float64, exactly (integers
below 2**53). NumPy needed a dozen passes over the values for this (shifts, masks, two
``bincount`` calls on a combined key); the loop below makes two, and gives the same sums
(exact integers do not depend on the order of addition).
``benchmarks/bench_uncertainty.py kernels`` measures both and checks they are equal.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_MANTISSA = (1 << 52) - 1
_HIDDEN = 1 << 52
_HALF = (1 << 26) - 1


@nb.njit(cache=True, nogil=True)
def exponent_range(bits: np.ndarray) -> tuple[int, int, bool]:
    """Smallest and largest biased exponent (subnormals and zeros count as 1) of the
    doubles whose bits are ``bits``, and whether all of them are finite."""
    lo, hi = 2047, 1
    for c in range(bits.shape[0]):
        e = (bits[c] >> 52) & 0x7FF
        if e == 0x7FF:
            return 1, 1, False
        if e == 0:
            e = 1
        if e < lo:
            lo = e
        if e > hi:
            hi = e
    return lo, hi, True


@nb.njit(cache=True, nogil=True)
def add_halves(idx: np.ndarray, bits: np.ndarray, e0: int, hs: np.ndarray, ls: np.ndarray) -> None:
    """``hs[b, e - e0] += M >> 26``, ``ls[b, e - e0] += M & (2**26 - 1)`` for each double
    ``+-M * 2**(e - 1075)`` (bits ``bits``) in bin ``b = idx``; ``M`` signed, ``>>`` floors,
    so ``hi * 2**26 + lo == M`` for either sign."""
    for c in range(bits.shape[0]):
        b = bits[c]
        e = (b >> 52) & 0x7FF
        m = b & _MANTISSA
        if e == 0:
            e = 1  # zeros and subnormals: no hidden bit, exponent 1
        else:
            m |= _HIDDEN
        if b < 0:
            m = -m
        k = idx[c]
        hs[k, e - e0] += m >> 26
        ls[k, e - e0] += m & _HALF
