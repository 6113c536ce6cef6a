"""Numeric arrays as bytes of an explicit little-endian dtype, and back.

One spelling for every place an array leaves the process (join-input blocks, feature columns,
sketch samples in partials and checkpoints): exact for every value (uint64 keys, inf, NaN),
independent of the machine's byte order, and converted at C speed both ways.

>>> from_buffer(to_buffer(np.array([1, 2**64 - 1], dtype=np.uint64), "<u8"), "<u8", np.uint64).tolist()
[1, 18446744073709551615]
"""

from __future__ import annotations

import numpy as np

__all__ = ["from_buffer", "to_buffer"]


def to_buffer(values: np.ndarray, dtype: str) -> bytes:
    return values.astype(dtype, copy=False).tobytes()


def from_buffer(buf: bytes, dtype: str, native: type[np.generic]) -> np.ndarray:
    """The inverse of :func:`to_buffer`, as a writable array of the ``native`` dtype."""
    return np.frombuffer(buf, dtype=dtype).astype(native)
