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


@njit(cache=True, nogil=True)
def count_rows(buf, start):  # pragma: no cover - compiled
    """Rows of a binary ``COPY TO`` body starting at ``start`` (after the header), up to the trailer."""
    pos = start
    n = 0
    size = buf.shape[0]
    while pos + 2 <= size:
        nfields = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if nfields == 0xFFFF:
            break
        for _ in range(nfields):
            length = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            pos += 4
            if length != 0xFFFFFFFF:
                pos += length
        n += 1
    return n


@njit(cache=True, nogil=True)
def parse_rows(buf, start, n, kinds, raw, nulls, var_start, var_len):  # pragma: no cover - compiled
    """Fill, for ``n`` rows of a binary ``COPY TO`` body, per field ``f``: fixed-width values
    (``kinds[f]`` 4 or 8: the big-endian integer of that many bytes) into ``raw[f]``; variable
    fields (``kinds[f]`` 0) as (start, length) into ``var_start[f]`` / ``var_len[f]``; NULLs
    into ``nulls[f]`` (all arrays field-major, ``(len(kinds), n)``). Returns -1 when every row has
    ``len(kinds)`` fields of the declared widths, else the index of the first row that does not."""
    pos = start
    k = kinds.shape[0]
    for r in range(n):
        nfields = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if nfields != k:
            return r
        for f in range(k):
            length = (buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            pos += 4
            if length == 0xFFFFFFFF:
                nulls[f, r] = True
                continue
            width = kinds[f]
            if width == 0:
                var_start[f, r] = pos
                var_len[f, r] = length
            else:
                if length != width:
                    return r
                v = np.uint64(0)
                for b in range(width):
                    v = (v << np.uint64(8)) | np.uint64(buf[pos + b])
                raw[f, r] = v
            pos += length
    return -1


@njit(cache=True, nogil=True)
def gather(buf, starts, lengths, nulls):  # pragma: no cover - compiled
    """(offsets int64 (n + 1,), bytes) of the variable fields ``buf[starts[r]:starts[r] + lengths[r]]``
    (empty where ``nulls[r]``): an Arrow large-string layout."""
    n = starts.shape[0]
    offsets = np.zeros(n + 1, dtype=np.int64)
    for r in range(n):
        offsets[r + 1] = offsets[r] + (0 if nulls[r] else lengths[r])
    out = np.empty(offsets[n], dtype=np.uint8)
    for r in range(n):
        if not nulls[r]:
            a = starts[r]
            o = offsets[r]
            for b in range(lengths[r]):
                out[o + b] = buf[a + b]
    return offsets, out
