"""One spelling per category, shared by reference profiles, window sketches and the join.

Serving apps send classes and categorical features as bools, ints, floats or strings, and a
label from another system often uses another of those types for the same class. Every place
that turns a value into a category goes through :func:`category_string`, so ``True``, ``1``
and ``1.0`` are one category (``"1"``) in the profile, in the window and in the confusion
matrix alike.

>>> [category_string(v) for v in (True, False, 1, 1.0, 2.5, "a")]
['1', '0', '1', '1', '2.5', 'a']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NULL", "category_string", "category_strings"]

#: None as the 0-d object array numpy turns a bare None into, for elementwise null tests
#: (``np.equal(values, NULL)``): the same comparison, in the one spelling numpy's stubs accept.
NULL = np.array(None, dtype=object)


def category_string(value: Any) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def category_strings(values: Sequence[Any]) -> np.ndarray:
    """Categories of ``values`` as an object array; None stays None (missing)."""
    out = np.empty(len(values), dtype=object)
    types = set(map(type, values))
    if types <= _AS_IS:  # the common cases skip the per-value function call
        out[:] = values
    elif types <= _INTS:
        out[:] = [None if v is None else str(v) for v in values]
    else:
        out[:] = [None if v is None else category_string(v) for v in values]
    return out


_AS_IS = {str, type(None)}
_INTS = {int, type(None)}
