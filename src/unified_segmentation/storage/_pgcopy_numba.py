"""The compiled loop of :mod:`._pgcopy`: interleave fixed records and variable fields into COPY rows."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def assemble(fixed, var_data, var_offsets, var_nulls, var_jsonb):  # pragma: no cover - compiled
    """Rows of ``fixed[r]`` followed by, per variable field j, its 32-bit big-endian length (-1 if NULL),
    a version byte 1 if ``var_jsonb[j]``, and bytes ``var_data[var_offsets[j, r]:var_offsets[j, r + 1]]``."""
    n, width = fixed.shape
    k = var_offsets.shape[0]
    total = n * width
    for j in range(k):
        for r in range(n):
            total += 4
            if not var_nulls[j, r]:
                total += var_offsets[j, r + 1] - var_offsets[j, r] + var_jsonb[j]
    out = np.empty(total, dtype=np.uint8)
    pos = 0
    for r in range(n):
        for b in range(width):
            out[pos + b] = fixed[r, b]
        pos += width
        for j in range(k):
            if var_nulls[j, r]:
                out[pos] = 255
                out[pos + 1] = 255
                out[pos + 2] = 255
                out[pos + 3] = 255
                pos += 4
                continue
            a = var_offsets[j, r]
            e = var_offsets[j, r + 1]
            size = e - a + var_jsonb[j]
            out[pos] = (size >> 24) & 255
            out[pos + 1] = (size >> 16) & 255
            out[pos + 2] = (size >> 8) & 255
            out[pos + 3] = size & 255
            pos += 4
            if var_jsonb[j]:
                out[pos] = 1
                pos += 1
            for b in range(e - a):
                out[pos + b] = var_data[a + b]
            pos += e - a
    return out
