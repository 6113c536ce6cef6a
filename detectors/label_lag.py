"""Label lag: how long after its prediction a label comes, as a mergeable histogram.

A model's labels must arrive within its label horizon or they are lost (the window is final,
and the prediction counts as unlabelled). Coverage says how many were lost; the *lag* of the
labels that did arrive says how close the rest came, so a label pipeline slowing down shows
here windows before coverage falls.

The lag of a joined pair is ``label timestamp - prediction timestamp`` (event time, ms). A
label stamped at or before its prediction (clock skew, or a label system that stamps the
event it labels) has lag 0: the histogram counts it in the 0 bin, not as a negative lag.

:class:`LabelLagHistogram` counts lags on fixed bins laid out as an HDR histogram does: every
lag below ``2 * SUB`` ms has a bin of its own, and each octave above is cut into ``SUB``
equal bins, so a bin ``[lo, lo + w)`` has ``w <= lo / SUB``. The bin of a lag is computed in
integers (a shift), so every partition puts a lag in the same bin; counts are integers, so
merging is exact, associative and commutative, and a merged histogram is bit-identical to one
fed every lag. A quantile is the order statistic NumPy's ``method="inverted_cdf"`` picks (the
``ceil(q n)``-th smallest lag), reported as the middle of its bin: exact below ``2 * SUB`` ms,
and within :data:`RESOLUTION` (1/32) of it, relatively, above. At most 800 bins exist for
lags up to 2**53 ms; a window's lags usually span a few octaves, so a few dozen are used.

>>> h = LabelLagHistogram()
>>> h.update(np.array([-5, 0, 7, 1_000, 1_010, 60_000]))
>>> h.n, h.quantile(0.5), h.quantile(1.0)
(6, 7.0, 60415.5)
>>> other = LabelLagHistogram(); other.update(np.array([30_000]))
>>> h.merge(other); h.quantile(0.95)
60415.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from driftline.detectors.vocabulary import LABEL_LAG_QUANTILES

__all__ = ["RESOLUTION", "SUB", "LabelLagHistogram", "lag_bins", "lag_metrics"]

#: bits of sub-bin per octave: ``SUB = 2**SUB_BITS`` bins per doubling of the lag
SUB_BITS = 4
SUB = 1 << SUB_BITS
#: the largest relative error of a quantile: half a bin, and a bin is at most 1/SUB of its lag
RESOLUTION = 1 / (2 * SUB)
#: lags are clipped here, below 2**53, so their float64 exponent is exact
_MAX_LAG = (1 << 53) - 1
#: above any bin index (the largest is 32 + 48 * 16 - 1): the stride of (sketch, bin) keys
_STRIDE = 1024


def lag_bins(lags: np.ndarray) -> np.ndarray:
    """The bin index of each lag (ms): ``(lag >> s) + s * SUB`` with ``s = max(0,
    floor(log2 lag) - SUB_BITS)``; a lag <= 0 is bin 0.

    >>> lag_bins(np.array([-3, 0, 15, 31, 32, 33, 34, 64])).tolist()
    [0, 0, 15, 31, 32, 32, 33, 48]
    """
    v = np.clip(np.asarray(lags, dtype=np.int64), 0, _MAX_LAG)
    _, exponent = np.frexp(v.astype(np.float64))  # v = m * 2**exponent, m in [0.5, 1): exact
    shift = np.maximum(exponent.astype(np.int64) - 1 - SUB_BITS, 0)
    return (v >> shift) + shift * SUB


def _bin_middle(index: int) -> float:
    """The middle of the integer lags of bin ``index``: the lag itself below ``2 * SUB``."""
    shift = max(0, index // SUB - 1)
    low = (index - shift * SUB) << shift
    return low + ((1 << shift) - 1) / 2


class LabelLagHistogram:
    """Counts of joined labels per lag bin (see the module docstring), sparse."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        #: bin index -> labels whose lag fell in it
        self.counts: dict[int, int] = {}

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.counts)

    def update(self, lags: np.ndarray) -> None:
        """Count lags (ms; int64, or floats holding integers)."""
        LabelLagHistogram.update_many([self], lags, np.zeros(np.size(lags), dtype=np.int64))

    @staticmethod
    def update_many(sketches: Sequence[LabelLagHistogram], lags: np.ndarray, seg: np.ndarray) -> None:
        """``sketches[i].update(lags[seg == i])`` for every ``i``, with one pass over the lags
        (the join folds a window's model slice and its segment slices at once)."""
        if not np.size(lags):
            return
        keyed = np.asarray(seg, dtype=np.int64) * _STRIDE + lag_bins(lags)
        keys, counts = np.unique(keyed, return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            target = sketches[key // _STRIDE].counts
            index = key % _STRIDE
            target[index] = target.get(index, 0) + count

    def merge(self, other: LabelLagHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile of the lags (ms) as the middle of the bin of NumPy's
        ``inverted_cdf`` order statistic; None when no lag was counted."""
        if not 0 <= q <= 1:
            raise ValueError(f"a quantile is in [0, 1], got {q!r}")
        n = self.n
        if n == 0:
            return None
        rank = min(n, max(1, math.ceil(n * q)))  # NumPy: index ceil(n q - 1), clipped
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return _bin_middle(index)
        raise AssertionError("unreachable: rank <= n")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelLagHistogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_dict(self) -> dict[str, Any]:
        bins = sorted(self.counts)
        return {"bins": bins, "counts": [self.counts[b] for b in bins]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        h = cls()
        h.counts = {int(b): int(c) for b, c in zip(d["bins"], d["counts"], strict=True)}
        return h


def lag_metrics(histogram: LabelLagHistogram | None) -> dict[str, float]:
    """The window's label-lag quantiles by their metric names (``LABEL_LAG_QUANTILES``);
    none for a window no label joined."""
    if not histogram:
        return {}
    out: dict[str, float] = {}
    for q, name in LABEL_LAG_QUANTILES.items():
        value = histogram.quantile(q)
        if value is not None:
            out[name] = value
    return out
