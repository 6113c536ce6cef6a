"""Mergeable, bounded-memory partial aggregates for one window.

Every sketch has the same shape: ``update(arrays)`` (vectorised, one call per decoded batch),
``merge(other)`` (in place), ``to_dict()`` / ``from_dict()`` (JSON-safe, exact round trip); the
part that code can rely on without knowing the sketch is the :class:`Mergeable` protocol.
``merge`` is associative and commutative and a merged sketch is *bit-identical* to one sketch
fed the concatenated data, however the data was split across partitions or workers. That is
what makes partial aggregates per partition safe to combine per model, and replays reproducible.

Floating-point sums are the hard part: ``a + b + c`` depends on the order. :class:`ExactSum`
keeps the sum as one exact integer multiple of 2**-1126 (every float64 is one), so adding is
exact and order-free; the float is rounded once, when read. The bottom-k sample of
:class:`NumericSketch` is the set of (key, value) pairs with the smallest stable keys: a
function of the *set* of events, so it too is independent of split and order (a reservoir
sample is not), and a replayed event (same key) does not enter it twice.

>>> a, b = NumericSketch(np.array([0.0, 1.0, 2.0])), NumericSketch(np.array([0.0, 1.0, 2.0]))
>>> a.update(np.array([0.1, 1.5, np.nan]), np.array([5, 3, 9], dtype=np.uint64))
>>> b.update(np.array([2.5]), np.array([1], dtype=np.uint64))
>>> a.merge(b)
>>> a.counts.tolist(), a.missing, a.out_of_range_high, a.sample_values.tolist()
([1, 2], 1, 1, [2.5, 1.5, 0.1])
"""

from __future__ import annotations

import base64
import binascii
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Protocol, Self

import numpy as np

from driftline.detectors.buffers import from_buffer, to_buffer
from driftline.detectors.categories import NULL
from driftline.detectors.hashing import stable_keys

__all__ = [
    "CalibratedScores",
    "CategoricalSketch",
    "ClassProbabilitySums",
    "ClassRankings",
    "ClassScoreHistograms",
    "ConfusionCounts",
    "ExactSum",
    "ExpectedConfusion",
    "Mergeable",
    "NumericSketch",
    "ProbabilitySums",
    "RegressionSums",
    "ScoreHistogram",
    "bin_index",
    "dense_segments",
    "exact_squares",
]

# float64 = M * 2**(e - 53) with |M| < 2**53 and e >= -1073, so every float64 (subnormals
# included) is an integer multiple of 2**-_SHIFT.
_SHIFT = 1126
_CHUNK = 1 << 24  # keeps float64 bincount partial sums of 27-bit integers below 2**53 (exact)
_EXP_OFFSET = 1100  # frexp exponents lie in [-1073, 1024]
_EXP_SLOTS = 2200  # _EXP_OFFSET + the largest exponent, rounded up
# scikit-learn >= 1.5 clips probabilities to [eps, 1 - eps] with eps = float64 machine epsilon
# (older versions used 1e-15); we follow the current one so log-loss matches it exactly.
_PROB_EPS = float(np.finfo(np.float64).eps)
#: cells of the (sketches, labels, labels) table of ConfusionCounts.update_many held at once
_CONFUSION_TABLE_MAX = 1 << 22


class Mergeable(Protocol):
    """The shape every sketch here shares, so code that holds several (a window's optional
    parts) can merge and ship them without knowing which is which.

    ``update`` is left out: its arguments differ by sketch (values and keys, or labels and
    scores), so only the code that knows the sketch can feed it. So is ``n``, which
    :class:`ScoreHistogram` does not keep.
    """

    def merge(self, other: Self) -> None:
        """Fold ``other`` (built from the same parameters) in, in place."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state; ``from_dict`` of it gives back an equal sketch."""
        ...

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self: ...


def _enc(x: float | None) -> float | str | None:
    """Make a float JSON-safe: strict JSON has no inf/nan, so those travel as strings."""
    if x is None or math.isfinite(x):
        return x
    return repr(x)


def _dec(x: float | str | None) -> float | None:
    return None if x is None else float(x)


def _b64(values: np.ndarray, dtype: str) -> str:
    # what base64.b64encode gives, without its wrapper: a partial encodes two per numeric
    # sketch, and a fleet of small windows sends tens of thousands of partials
    if values.size == 0:
        return ""
    return binascii.b2a_base64(to_buffer(values, dtype), newline=False).decode("ascii")


def _unb64(text: str, dtype: str, native: type[np.generic]) -> np.ndarray:
    return from_buffer(base64.b64decode(text), dtype, native)


class ExactSum:
    """Exact, order-independent sum of float64 values, rounded to float64 once on read.

    Non-finite values (inf, nan) are kept apart in a plain float, where they absorb
    everything anyway; the finite part is an exact integer.

    >>> s, t = ExactSum(), ExactSum()
    >>> s.add(np.array([1e20, 1.0])); t.add(np.array([-1e20]))
    >>> s.merge(t); s.value
    1.0
    """

    __slots__ = ("_scaled", "_special")

    def __init__(self) -> None:
        self._scaled = 0  # sum * 2**_SHIFT, exact
        self._special = 0.0  # sum of non-finite values

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(v)
        if not finite.all():
            self._special += float(v[~finite].sum())
            v = v[finite]
        for start in range(0, v.size, _CHUNK):
            self._add_chunk(v[start : start + _CHUNK])

    def _add_chunk(self, v: np.ndarray) -> None:
        mant, exp = np.frexp(v)
        m = (mant * 2.0**53).astype(np.int64)  # exact: 53-bit signed integer mantissa
        hi = (m >> 26).astype(np.float64)  # |hi| <= 2**27
        lo = (m & ((1 << 26) - 1)).astype(np.float64)  # 0 <= lo < 2**26
        idx = exp.astype(np.int64) + _EXP_OFFSET
        hi_sums = np.bincount(idx, weights=hi)
        lo_sums = np.bincount(idx, weights=lo)
        total = self._scaled
        for i in np.flatnonzero((hi_sums != 0) | (lo_sums != 0)).tolist():  # one per exponent
            shift = i - _EXP_OFFSET - 53 + _SHIFT
            total += (int(hi_sums[i]) << (shift + 26)) + (int(lo_sums[i]) << shift)
        self._scaled = total

    @staticmethod
    def add_segments(
        sums: Sequence[ExactSum], values: np.ndarray, seg: np.ndarray, rows: np.ndarray | None = None
    ) -> None:
        """``sums[i].add(values[seg == i])`` for every ``i`` at once (``seg`` non-decreasing, as
        for every ``update_many`` here), bit-identically (an exact
        sum does not depend on how its values are split): one ``frexp`` and one ``bincount``
        over all of them, then the exact integer per (sum, exponent) that occurs.

        With ``rows``, the values of sum ``seg[j]`` are ``values[rows[j]]``: a row that several
        sums take (a window slice and the model's) is split into mantissa and exponent once."""
        base = np.asarray(values, dtype=np.float64).ravel()
        s = np.asarray(seg, dtype=np.int64).ravel()
        _check_sorted(s)
        r = None if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        v = base if r is None else base[r]
        finite = np.isfinite(v)
        if not finite.all():
            bad = ~finite
            for i in np.unique(s[bad]).tolist():  # rare: inf in a window
                sums[i]._special += float(v[bad & (s == i)].sum())
            v, s = v[finite], s[finite]
            r = None if r is None else r[finite]
        if r is None:
            for start in range(0, v.size, _CHUNK):
                chunk = slice(start, start + _CHUNK)
                _add_parts(sums, *_mantissas(v[chunk]), s[chunk])
            return
        hi, lo, idx = _mantissas(np.where(np.isfinite(base), base, 0.0))
        for start in range(0, r.size, _CHUNK):
            part = r[start : start + _CHUNK]
            _add_parts(sums, hi[part], lo[part], idx[part], s[start : start + _CHUNK])

    def add_scalar(self, x: float) -> None:
        if not math.isfinite(x):
            self._special += x
            return
        n, d = float(x).as_integer_ratio()  # d is a power of two <= 2**1074
        self._scaled += n * ((1 << _SHIFT) // d)

    def merge(self, other: ExactSum) -> None:
        self._scaled += other._scaled
        self._special += other._special

    @property
    def fraction(self) -> Fraction:
        """The exact finite part, for callers that must avoid cancellation (variance, R²)."""
        return Fraction(self._scaled, 1 << _SHIFT)

    @property
    def value(self) -> float:
        try:
            finite = self._scaled / (1 << _SHIFT)  # int / int is correctly rounded
        except OverflowError:
            finite = math.inf if self._scaled > 0 else -math.inf
        return finite + self._special

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExactSum):
            return NotImplemented
        return self._scaled == other._scaled and repr(self._special) == repr(other._special)

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method

    def __repr__(self) -> str:
        return f"ExactSum({self.value!r})"

    def to_json(self) -> list[str]:
        return [exact_int_text(self._scaled), repr(self._special)]

    @classmethod
    def from_json(cls, d: Sequence[str]) -> ExactSum:
        s = cls()
        s._scaled = exact_int_value(d[0])
        s._special = float(d[1])
        return s


def exact_int_text(n: int) -> str:
    """An exact sum's scaled integer as text: its odd part in hex and its binary shift
    (``"1a3p1061"`` is ``0x1a3 << 1061``). The integer is the sum times ``2**1126``, so a sum of
    ordinary values ends in about a thousand zero bits: in full hex it took ~285 characters,
    most of a partial's bytes with a score of such sums; the shift leaves ~25. ``%x`` spells what
    ``format(n, "x")`` does (a sign, no prefix), a third faster."""
    if not n:
        return "0"
    shift = (n & -n).bit_length() - 1  # trailing zero bits (of |n|, for a negative n too)
    return "%xp%d" % (n >> shift, shift)  # noqa: UP031


def exact_int_value(text: str) -> int:
    """:func:`exact_int_text` read back; plain hex (what checkpoints of earlier versions hold)
    is read as it was written."""
    odd, _, shift = text.partition("p")
    return int(odd, 16) << int(shift) if shift else int(odd, 16)


def _mantissas(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite float64 values as (high 27 bits, low 26 bits of the signed 53-bit mantissa, exponent
    slot), as :meth:`ExactSum._add_chunk` splits them."""
    mant, exp = np.frexp(v)
    m = (mant * 2.0**53).astype(np.int64)
    hi = (m >> 26).astype(np.float64)
    lo = (m & ((1 << 26) - 1)).astype(np.float64)
    return hi, lo, exp.astype(np.int64) + _EXP_OFFSET


def _add_parts(sums: Sequence[ExactSum], hi: np.ndarray, lo: np.ndarray, idx: np.ndarray,
               s: np.ndarray) -> None:
    """:meth:`ExactSum._add_chunk` for many sums: the bins are (sum, exponent) pairs, and no
    bin gets more than ``_CHUNK`` values, so the float64 bincounts stay exact."""
    if hi.size == 0:
        return
    used = np.zeros(_EXP_SLOTS, dtype=bool)
    used[idx] = True
    exps = np.flatnonzero(used)
    code = np.cumsum(used) - 1
    live, local = dense_segments(s)
    flat = local * exps.size + code[idx]
    shape = (live.size, exps.size)
    hi_sums = np.bincount(flat, weights=hi, minlength=live.size * exps.size).reshape(shape)
    lo_sums = np.bincount(flat, weights=lo, minlength=live.size * exps.size).reshape(shape)
    rows, cols = np.nonzero((hi_sums != 0) | (lo_sums != 0))
    shifts = (exps[cols] - _EXP_OFFSET - 53 + _SHIFT).tolist()
    targets = live[rows].tolist()
    h, lo_ = hi_sums[rows, cols], lo_sums[rows, cols]
    if h.size and max(-h.min(), h.max()) < 2.0**36:
        # hi * 2**26 + lo in int64, exact (|hi| < 2**36, 0 <= lo < 2**50): one Python int and
        # one shift per (sum, exponent), where two of each made this loop 2.5x slower; a
        # window slice's bins hold far fewer than the 2**9 values that bound guarantees
        mantissas = ((h.astype(np.int64) << 26) + lo_.astype(np.int64)).tolist()
    else:
        mantissas = [(int(a) << 26) + int(b) for a, b in zip(h.tolist(), lo_.tolist(), strict=True)]
    for i, m, shift in zip(targets, mantissas, shifts, strict=True):
        sums[i]._scaled += m << shift


def dense_segments(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(seg, return_inverse=True)`` for a non-decreasing ``seg``, without the sort."""
    if seg.size == 0:
        return seg, seg
    change = np.empty(seg.size, dtype=bool)
    change[0] = True
    np.not_equal(seg[1:], seg[:-1], out=change[1:])
    return seg[change], np.cumsum(change) - 1


def _check_sorted(seg: np.ndarray) -> None:
    if seg.size > 1 and bool((seg[1:] < seg[:-1]).any()):
        raise ValueError("seg must be non-decreasing (each sketch's rows together)")


def _segments(seg: np.ndarray, count: int) -> np.ndarray:
    """Start of each of ``count`` segments in a non-decreasing ``seg``, and the end: ``count + 1``."""
    return np.searchsorted(seg, np.arange(count + 1))


def exact_squares(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (p, e) with p + e == x*x exactly (Dekker's two-product, Veltkamp split).

    Summing both parts into an :class:`ExactSum` gives an exact sum of squares, so variance and
    R² can be computed as S2 - S1²/n without catastrophic cancellation. Exact unless |x| > 1e150.
    """
    x = np.asarray(x, dtype=np.float64)
    p = x * x
    with np.errstate(invalid="ignore", over="ignore"):
        c = 134217729.0 * x  # 2**27 + 1
        hi = c - (c - x)
        lo = x - hi
        e = ((hi * hi - p) + 2.0 * hi * lo) + lo * lo
    e = np.where(np.isfinite(e), e, 0.0)
    return p, e


def _check_same(name: str, a: object, b: object) -> None:
    if a != b:
        raise ValueError(f"cannot merge sketches with different {name}: {a!r} != {b!r}")


# --------------------------------------------------------------------------------------------
class ConfusionCounts:
    """Confusion matrix over string labels (rows = true, cols = predicted).

    Memory is ``len(labels)**2`` integers: bounded by the model's label set, not by traffic.
    """

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.matrix = np.zeros((0, 0), dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.matrix.sum())

    def _extend(self, new_labels: Sequence[str]) -> None:
        """Grow to the sorted union of labels, moving the existing counts to their new slots."""
        union = sorted(set(self.labels).union(new_labels))
        if len(union) == len(self.labels):
            return
        pos = np.searchsorted(np.array(union, dtype=object), np.array(self.labels, dtype=object))
        grown = np.zeros((len(union), len(union)), dtype=np.int64)
        grown[np.ix_(pos, pos)] = self.matrix
        self.labels, self.matrix = union, grown

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        t = np.asarray(y_true).astype(str)
        p = np.asarray(y_pred).astype(str)
        if t.shape != p.shape:
            raise ValueError("y_true and y_pred must have the same shape")
        if t.size == 0:
            return
        uniq, inv = np.unique(np.concatenate([t, p]), return_inverse=True)
        self._extend(uniq.tolist())
        k = len(self.labels)
        remap = np.searchsorted(np.array(self.labels), uniq)  # batch-local -> global label index
        gt, gp = remap[inv[: t.size]], remap[inv[t.size :]]
        self.matrix += np.bincount(gt * k + gp, minlength=k * k).reshape(k, k)

    @staticmethod
    def update_many(sketches: Sequence[ConfusionCounts], y_true: np.ndarray, y_pred: np.ndarray,
                    seg: np.ndarray) -> None:
        """``sketches[i].update(y_true[seg == i], y_pred[seg == i])`` for every ``i`` at once
        (``seg`` non-decreasing): one string conversion and ``np.unique`` for all, then each
        sketch grows to the labels its own rows hold and adds its block of counts, as
        ``update`` does. A join flush feeds every classification slice of every model here."""
        t = np.asarray(y_true).astype(str)
        p = np.asarray(y_pred).astype(str)
        sg = np.asarray(seg, dtype=np.int64)
        if not t.shape == p.shape == sg.shape:
            raise ValueError("y_true, y_pred and seg must have the same shape")
        _check_sorted(sg)
        if t.size == 0:
            return
        uniq, inv = np.unique(np.concatenate([t, p]), return_inverse=True)
        k, inv = uniq.size, inv.ravel()
        live, local = dense_segments(sg)
        if live.size * k * k > _CONFUSION_TABLE_MAX:  # many labels: one update per sketch
            bounds = _segments(sg, len(sketches))
            for i in live.tolist():
                a, b = int(bounds[i]), int(bounds[i + 1])
                sketches[i].update(t[a:b], p[a:b])
            return
        flat = (local * k + inv[: t.size]) * k + inv[t.size :]
        table = np.bincount(flat, minlength=live.size * k * k).reshape(live.size, k, k)
        names = uniq.tolist()
        for j, i in enumerate(live.tolist()):
            sk, block = sketches[i], table[j]
            if not sk.labels:  # a new slice: the labels its rows hold (sorted, as _extend grows
                # them) and its block of them, without growing an empty matrix and placing it
                if bool(block.all()):  # every cell filled (two classes, a few dozen rows)
                    sk.labels, sk.matrix = list(names), block.astype(np.int64)
                    continue
                used = np.flatnonzero(block.any(axis=0) | block.any(axis=1))
                sk.labels = [names[u] for u in used.tolist()]
                sk.matrix = block[np.ix_(used, used)].astype(np.int64, copy=False)
                continue
            if sk.labels != names:
                used = np.flatnonzero(block.any(axis=0) | block.any(axis=1))
                sk._extend([names[u] for u in used.tolist()])
                if sk.labels != names:  # the sketch's labels differ from the batch's: place them
                    pos = np.searchsorted(np.array(sk.labels), uniq[used])
                    sk.matrix[np.ix_(pos, pos)] += block[np.ix_(used, used)]
                    continue
            sk.matrix += block

    def merge(self, other: ConfusionCounts) -> None:
        self._extend(other.labels)
        pos = np.searchsorted(np.array(self.labels, dtype=object), np.array(other.labels, dtype=object))
        self.matrix[np.ix_(pos, pos)] += other.matrix

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "matrix": self.matrix.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls()
        s.labels = [str(x) for x in d["labels"]]
        k = len(s.labels)
        s.matrix = np.array(d["matrix"], dtype=np.int64).reshape(k, k)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return self.labels == other.labels and np.array_equal(self.matrix, other.matrix)

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


# --------------------------------------------------------------------------------------------
class ProbabilitySums:
    """Exact sums for binary log-loss and Brier score (p is the probability of class 1)."""

    def __init__(self) -> None:
        self.n = 0
        self.log_loss_sum = ExactSum()  # sum of -log(clipped probability of the true class)
        self.brier_sum = ExactSum()  # sum of (p - y)**2

    def update(self, y_true: np.ndarray, p_positive: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float64)
        p = np.asarray(p_positive, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError("y_true and p_positive must have the same shape")
        # as sklearn: clip p and 1 - p separately, then take the log of the true class's column
        p_true = np.where(y == 1.0, p, 1.0 - p)
        self.n += int(y.size)
        self.log_loss_sum.add(-np.log(np.clip(p_true, _PROB_EPS, 1.0 - _PROB_EPS)))
        self.brier_sum.add((p - y) ** 2)

    @staticmethod
    def update_many(sketches: Sequence[ProbabilitySums], y_true: np.ndarray, p_positive: np.ndarray,
                    seg: np.ndarray) -> None:
        """``sketches[i].update(y_true[seg == i], p_positive[seg == i])`` for every ``i``, at once."""
        y = np.asarray(y_true, dtype=np.float64)
        p = np.asarray(p_positive, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError("y_true and p_positive must have the same shape")
        s = np.asarray(seg, dtype=np.int64)
        counts = np.bincount(s, minlength=len(sketches))
        for i in np.flatnonzero(counts).tolist():
            sketches[i].n += int(counts[i])
        p_true = np.where(y == 1.0, p, 1.0 - p)
        ExactSum.add_segments([x.log_loss_sum for x in sketches],
                              -np.log(np.clip(p_true, _PROB_EPS, 1.0 - _PROB_EPS)), s)
        ExactSum.add_segments([x.brier_sum for x in sketches], (p - y) ** 2, s)

    def merge(self, other: ProbabilitySums) -> None:
        self.n += other.n
        self.log_loss_sum.merge(other.log_loss_sum)
        self.brier_sum.merge(other.brier_sum)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "log_loss_sum": self.log_loss_sum.to_json(),
                "brier_sum": self.brier_sum.to_json()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls()
        s.n = int(d["n"])
        s.log_loss_sum = ExactSum.from_json(d["log_loss_sum"])
        s.brier_sum = ExactSum.from_json(d["brier_sum"])
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProbabilitySums):
            return NotImplemented
        return (self.n, self.log_loss_sum, self.brier_sum) == (other.n, other.log_loss_sum, other.brier_sum)

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


# --------------------------------------------------------------------------------------------
class ScoreHistogram:
    """Counts of positive and negative examples per score bin on ``n_bins`` uniform bins of [0, 1].

    Ranking metrics computed from it are those of the *binned* scores; the error against the raw
    scores is bounded by the pairs that share a bin (see :func:`driftline.detectors.metrics.ranking_metrics`).
    Scores outside [0, 1] are clipped into the end bins.
    """

    def __init__(self, n_bins: int = 200) -> None:
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        self.n_bins = n_bins
        self.pos = np.zeros(n_bins, dtype=np.int64)
        self.neg = np.zeros(n_bins, dtype=np.int64)

    def bins(self, scores: np.ndarray) -> np.ndarray:
        """Bin index of each score: bin i holds [i/n, (i+1)/n), the last bin also holds 1.0."""
        s = np.asarray(scores, dtype=np.float64)
        return np.clip(np.floor(s * self.n_bins), 0, self.n_bins - 1).astype(np.int64)

    def update(self, y_true: np.ndarray, p_positive: np.ndarray) -> None:
        y = np.asarray(y_true).astype(bool)
        b = self.bins(p_positive)
        if y.shape != b.shape:
            raise ValueError("y_true and p_positive must have the same shape")
        self.pos += np.bincount(b[y], minlength=self.n_bins)
        self.neg += np.bincount(b[~y], minlength=self.n_bins)

    @staticmethod
    def update_many(sketches: Sequence[ScoreHistogram], y_true: np.ndarray, p_positive: np.ndarray,
                    seg: np.ndarray) -> None:
        """``sketches[i].update(y_true[seg == i], p_positive[seg == i])`` for every ``i``, at
        once (all with the same bins)."""
        if not sketches:
            return
        n_bins = sketches[0].n_bins
        for x in sketches:
            _check_same("n_bins", n_bins, x.n_bins)
        y = np.asarray(y_true).astype(bool)
        b = sketches[0].bins(p_positive)
        if y.shape != b.shape:
            raise ValueError("y_true and p_positive must have the same shape")
        s = np.asarray(seg, dtype=np.int64)
        _check_sorted(s)
        live, local = dense_segments(s)
        flat = local * n_bins + b
        size = live.size * n_bins
        pos = np.bincount(flat[y], minlength=size).reshape(live.size, n_bins)
        neg = np.bincount(flat[~y], minlength=size).reshape(live.size, n_bins)
        for j, i in enumerate(live.tolist()):
            sketches[i].pos += pos[j]
            sketches[i].neg += neg[j]

    def merge(self, other: ScoreHistogram) -> None:
        _check_same("n_bins", self.n_bins, other.n_bins)
        self.pos += other.pos
        self.neg += other.neg

    def to_dict(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "pos": self.pos.tolist(), "neg": self.neg.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls(int(d["n_bins"]))
        s.pos = np.array(d["pos"], dtype=np.int64)
        s.neg = np.array(d["neg"], dtype=np.int64)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreHistogram):
            return NotImplemented
        return (self.n_bins == other.n_bins and np.array_equal(self.pos, other.pos)
                and np.array_equal(self.neg, other.neg))

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


# --------------------------------------------------------------------------------------------
class _ExactSums:
    """A count ``n`` plus named :class:`ExactSum` fields (listed by ``_sums``): merge, transport
    and equality are the same for every such sketch, so they live here once."""

    n: int

    def _sums(self) -> dict[str, ExactSum]:
        """The sketch's own sums by wire name, in wire order (the objects, not copies)."""
        raise NotImplementedError

    def merge(self, other: Self) -> None:
        self.n += other.n
        for mine, theirs in zip(self._sums().values(), other._sums().values(), strict=True):
            mine.merge(theirs)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, **{f: s.to_json() for f, s in self._sums().items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls()
        s.n = int(d["n"])
        # a new sketch's sums are zero, so merging the stored ones in restores them exactly
        for f, part in s._sums().items():
            part.merge(ExactSum.from_json(d[f]))
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ExactSums) or type(other) is not type(self):
            return NotImplemented
        return self.n == other.n and self._sums() == other._sums()

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


# --------------------------------------------------------------------------------------------
class RegressionSums(_ExactSums):
    """Exact sums for MAE, RMSE, MAPE, R² and mean error.

    Σy and Σy² are exact (squares via :func:`exact_squares`), so R²'s total sum of squares is
    S2 - S1²/n computed in rational arithmetic: no cancellation when |mean| >> std.
    """

    _MAPE_EPS = float(np.finfo(np.float64).eps)  # sklearn: |e| / max(|y|, eps)

    def __init__(self) -> None:
        self.n = 0
        self.abs_err = ExactSum()  # Σ|y - ŷ|
        self.sq_err = ExactSum()  # Σ(y - ŷ)²
        self.ape = ExactSum()  # Σ|y - ŷ| / max(|y|, eps)
        self.err = ExactSum()  # Σ(ŷ - y): positive = over-prediction
        self.y = ExactSum()  # Σy
        self.y2 = ExactSum()  # Σy², exact

    def _sums(self) -> dict[str, ExactSum]:
        return {"abs_err": self.abs_err, "sq_err": self.sq_err, "ape": self.ape, "err": self.err,
                "y": self.y, "y2": self.y2}

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        y = np.asarray(y_true, dtype=np.float64)
        yp = np.asarray(y_pred, dtype=np.float64)
        if y.shape != yp.shape:
            raise ValueError("y_true and y_pred must have the same shape")
        d = y - yp
        ad = np.abs(d)
        self.n += int(y.size)
        self.abs_err.add(ad)
        self.sq_err.add(d * d)
        self.ape.add(ad / np.maximum(np.abs(y), self._MAPE_EPS))
        self.err.add(-d)
        self.y.add(y)
        p, e = exact_squares(y)
        self.y2.add(p)
        self.y2.add(e)



# --------------------------------------------------------------------------------------------
def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value on ``edges`` as np.histogram does ([e_i, e_i+1), last bin closed),
    except that values outside the edges go to the first/last bin instead of being dropped.

    The reference profile and the window sketches both bin with this function, so their
    counts are comparable bin for bin.
    """
    e = np.asarray(edges, dtype=np.float64)
    k = e.size - 1
    return np.clip(np.searchsorted(e, values, side="right") - 1, 0, k - 1)


#: the bytes of edge arrays already found valid: a join creates a sketch per feature per window
#: slice from the same few spec arrays, and the check (four numpy passes) cost more than the
#: rest of a new sketch. Keyed by content, so an array changed in place is checked again.
_VALID_EDGES: set[bytes] = set()
_VALID_EDGES_MAX = 4096


def _check_edges(edges: np.ndarray, what: str) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    key = e.tobytes() if e.ndim == 1 else b""
    if key in _VALID_EDGES:
        return e
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) < 0) or not np.all(np.isfinite(e)):
        raise ValueError(f"{what} must be a finite, non-decreasing 1-d array of length >= 2")
    if len(_VALID_EDGES) >= _VALID_EDGES_MAX:  # many profiles reloaded: start over
        _VALID_EDGES.clear()
    _VALID_EDGES.add(key)
    return e


def _empty(dtype: type[np.generic]) -> np.ndarray:
    """A read-only empty array: what a new sketch holds until it has a sample (shared by all
    of them; replaced, never written in place, so sharing is safe and a write would raise)."""
    out = np.zeros(0, dtype=dtype)
    out.setflags(write=False)
    return out


_NO_KEYS, _NO_VALUES, _NO_COUNTS = _empty(np.uint64), _empty(np.float64), _empty(np.int64)


class NumericSketch:
    """One numeric feature in one window: histogram on fixed edges, moments, range, missing,
    a bottom-k sample (smallest stable keys), and optionally counts on a fine ``grid``.

    The ``grid`` (a few hundred of the reference's quantiles, see
    :data:`driftline.detectors.profile.DEFAULT_GRID_BINS`) is what lets a numeric drift test use
    the *whole* window: integer counts merge exactly, so every event of every partition counts,
    where the bottom-k sample caps a test at ``sample_size`` values. A sketch without a grid (a
    bootstrapped reference, a partial written before grids existed) merged with one that has
    it gives a sketch without: the grid is kept only when *every* part counted on it, so the
    result does not depend on which parts met first, and the test falls back to the sample.
    """

    def __init__(self, edges: np.ndarray, sample_size: int = 1024, grid: np.ndarray | None = None) -> None:
        e = _check_edges(edges, "edges")
        if sample_size < 0:
            raise ValueError("sample_size must be >= 0")
        self.edges = e
        self.sample_size = sample_size
        self.counts = np.zeros(e.size - 1, dtype=np.int64)
        self.grid: np.ndarray | None = None if grid is None else _check_edges(grid, "grid")
        self.grid_counts = _NO_COUNTS if self.grid is None else np.zeros(self.grid.size - 1, dtype=np.int64)
        self.n = 0
        self.missing = 0
        self.sum = ExactSum()
        self.sumsq = ExactSum()  # exact Σx²
        self.min: float | None = None
        self.max: float | None = None
        self.out_of_range_low = 0
        self.out_of_range_high = 0
        self.sample_keys = _NO_KEYS  # sorted ascending
        self._sample_values = _NO_VALUES

    @property
    def sample_values(self) -> np.ndarray:
        """Sampled values, in key order (a deterministic pseudo-random order, not sorted)."""
        return self._sample_values

    @property
    def mean(self) -> float:
        return self.sum.value / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0), from exact moments."""
        if self.n == 0 or self.sum._special or self.sumsq._special:  # empty, or inf/nan values
            return math.nan
        s1, s2 = self.sum.fraction, self.sumsq.fraction
        return math.sqrt((s2 - s1 * s1 / self.n) / self.n)

    def update(self, values: np.ndarray, keys: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64)
        k = np.asarray(keys, dtype=np.uint64)
        if v.shape != k.shape:
            raise ValueError("values and keys must have the same shape")
        present = ~np.isnan(v)
        self.missing += int(v.size - present.sum())
        v, k = v[present], k[present]
        if v.size == 0:
            return
        self.n += int(v.size)
        self.counts += np.bincount(bin_index(self.edges, v), minlength=self.counts.size)
        if self.grid is not None:
            self.grid_counts += np.bincount(bin_index(self.grid, v), minlength=self.grid_counts.size)
        self.out_of_range_low += int((v < self.edges[0]).sum())
        self.out_of_range_high += int((v > self.edges[-1]).sum())
        self.sum.add(v)
        p, e = exact_squares(v)
        self.sumsq.add(p)
        self.sumsq.add(e)
        lo, hi = float(v.min()), float(v.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self._absorb(k, v)

    @staticmethod
    def update_many(sketches: Sequence[NumericSketch], values: np.ndarray, keys: np.ndarray,
                    seg: np.ndarray, rows: np.ndarray | None = None) -> None:
        """``sketches[i].update(values[seg == i], keys[seg == i])`` for every ``i``, with
        bit-identical results, in numpy passes over all of them at once (``seg`` is
        non-decreasing, each sketch listed once).

        An update costs mostly per call (a few dozen numpy operations whatever the batch), and a
        join flush feeds every feature of every slice of every open window of every model: one
        call per sketch made that cost grow with slices and models instead of with events.

        With ``rows``, sketch ``seg[j]`` takes ``values[rows[j]]`` and ``keys[rows[j]]``: a row
        several sketches take (the model's slice and a segment's) is binned and split once."""
        base_v = np.asarray(values, dtype=np.float64)
        base_k = np.asarray(keys, dtype=np.uint64)
        s = np.asarray(seg, dtype=np.int64)
        r = None if rows is None else np.asarray(rows, dtype=np.int64)
        if base_v.shape != base_k.shape or (base_v if r is None else r).shape != s.shape:
            raise ValueError("values and keys, and seg and rows (or values), must have the same shape")
        _check_sorted(s)
        count = len(sketches)
        present = ~np.isnan(base_v if r is None else base_v[r])
        if not present.all():
            missing = np.bincount(s[~present], minlength=count)
            for i in np.flatnonzero(missing).tolist():
                sketches[i].missing += int(missing[i])
            s = s[present]
            if r is None:
                base_v, base_k = base_v[present], base_k[present]
            else:
                r = r[present]
        v, k = (base_v, base_k) if r is None else (base_v[r], base_k[r])
        if v.size == 0:
            return
        bounds = _segments(s, count)
        sizes = np.diff(bounds)
        live_at = np.flatnonzero(sizes)
        live = live_at.tolist()
        for i, size in zip(live, sizes[live_at].tolist(), strict=True):
            sketches[i].n += size
        # a model's slices share the spec's edges array: group by object, then by content
        by_array: dict[int, list[int]] = {}
        for i in live:
            by_array.setdefault(id(sketches[i].edges), []).append(i)
        by_edges: dict[bytes, list[int]] = {}
        for members in by_array.values():
            by_edges.setdefault(sketches[members[0]].edges.tobytes(), []).extend(members)
        for members in by_edges.values():
            members.sort()  # ascending, as searchsorted below needs (several arrays alike)
            edges = sketches[members[0]].edges
            if len(members) == len(live):
                mv, ms = v, s
            else:
                inside = np.isin(s, members)
                mv, ms = v[inside], s[inside]
            local = np.searchsorted(np.array(members, dtype=np.int64), ms)
            nb = edges.size - 1
            if r is not None and len(by_edges) == 1:  # bin each row once, however many take it
                bins = bin_index(edges, base_v)[r]
            else:
                bins = bin_index(edges, mv)
            hist = np.bincount(local * nb + bins, minlength=len(members) * nb)
            hist = hist.reshape(len(members), nb)
            low = np.bincount(local[mv < edges[0]], minlength=len(members)).tolist()
            high = np.bincount(local[mv > edges[-1]], minlength=len(members)).tolist()
            for j, i in enumerate(members):
                sk = sketches[i]
                sk.counts += hist[j]
                sk.out_of_range_low += low[j]
                sk.out_of_range_high += high[j]
        _count_on_grids(sketches, live, v, s)
        ExactSum.add_segments([sk.sum for sk in sketches], base_v, s, rows=r)
        p, e = exact_squares(base_v)
        squares = [sk.sumsq for sk in sketches]
        ExactSum.add_segments(squares, p, s, rows=r)
        ExactSum.add_segments(squares, e, s, rows=r)
        starts = bounds[live]
        lows = np.minimum.reduceat(v, starts).tolist()
        highs = np.maximum.reduceat(v, starts).tolist()
        for i, lo, hi in zip(live, lows, highs, strict=True):
            sk = sketches[i]
            sk.min = lo if sk.min is None else min(sk.min, lo)
            sk.max = hi if sk.max is None else max(sk.max, hi)
        _absorb_many(sketches, live, k, v, s)

    def _absorb(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Keep the sample_size pairs with the smallest distinct keys (ties by smallest value)."""
        m = self.sample_size
        if m == 0:
            return
        if self.sample_keys.size >= m:
            # full: a key above the largest kept one can never enter (the m smallest distinct
            # keys are already held); equal keys stay for the smallest-value tie rule. Once a
            # window's sample has filled, most updates end here, without the sort below.
            below = keys <= self.sample_keys[-1]
            if not below.any():
                return
            keys, values = keys[below], values[below]
        if keys.size > 4 * m:  # cheap pre-filter; falls back to everything if duplicates bite
            thr = np.partition(keys, m - 1)[m - 1]
            keep = keys <= thr
            if np.unique(keys[keep]).size >= m:
                keys, values = keys[keep], values[keep]
        ak = np.concatenate([self.sample_keys, keys])
        av = np.concatenate([self._sample_values, values])
        # a stable sort by key alone is timsort: near-linear on the already sorted sample plus
        # a sorted run (a merge of partials). Equal keys (a replayed event, a hash collision)
        # are rare; only then is the smallest-value tie rule needed, from a two-key sort that
        # orders the keys identically.
        order = np.argsort(ak, kind="stable")
        sorted_keys = ak[order]
        first = np.ones(ak.size, dtype=bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        if not first.all():
            order = np.lexsort((av, ak))
        # copies, not views: a view of the first m would keep every candidate of the update
        # alive (measured: 185 KB instead of 16 KB per feature of a 10,000-event window)
        self.sample_keys, self._sample_values = sorted_keys[first][:m].copy(), av[order][first][:m].copy()

    def merge(self, other: NumericSketch) -> None:
        _check_same("edges", self.edges.tolist(), other.edges.tolist())
        _check_same("sample_size", self.sample_size, other.sample_size)
        if self.grid is not None and other.grid is not None:
            _check_same("grid", self.grid.tolist(), other.grid.tolist())
        elif self.grid is not None:  # the other part did not count on it: neither can the merge
            self.grid, self.grid_counts = None, np.zeros(0, dtype=np.int64)
        if other.n == 0 and other.missing == 0:  # nothing to add (a part a fold never touched)
            return
        self.counts += other.counts
        if self.grid is not None:
            self.grid_counts += other.grid_counts
        self.n += other.n
        self.missing += other.missing
        self.sum.merge(other.sum)
        self.sumsq.merge(other.sumsq)
        self.out_of_range_low += other.out_of_range_low
        self.out_of_range_high += other.out_of_range_high
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        self._absorb(other.sample_keys, other._sample_values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "sample_size": self.sample_size,
            "counts": self.counts.tolist(),
            "n": self.n,
            "missing": self.missing,
            "sum": self.sum.to_json(),
            "sumsq": self.sumsq.to_json(),
            "min": _enc(self.min),
            "max": _enc(self.max),
            "out_of_range_low": self.out_of_range_low,
            "out_of_range_high": self.out_of_range_high,
            # the sample is most of a partial's bytes: little-endian buffers in base64, exact
            # (uint64 keys and inf values survive) and JSON-safe, at C speed both ways
            "sample_keys": _b64(self.sample_keys, "<u8"),
            "sample_values": _b64(self._sample_values, "<f8"),
            # absent, not null, without a grid: partials written before grids existed compare
            # equal to today's grid-less ones
            **(
                {}
                if self.grid is None
                else {"grid": _b64(self.grid, "<f8"), "grid_counts": _b64(self.grid_counts, "<i8")}
            ),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        grid = None if d.get("grid") is None else _unb64(d["grid"], "<f8", np.float64)
        s = cls(np.array(d["edges"], dtype=np.float64), int(d["sample_size"]), grid)
        if grid is not None:
            s.grid_counts = _unb64(d["grid_counts"], "<i8", np.int64)
        s.counts = np.array(d["counts"], dtype=np.int64)
        s.n, s.missing = int(d["n"]), int(d["missing"])
        s.sum, s.sumsq = ExactSum.from_json(d["sum"]), ExactSum.from_json(d["sumsq"])
        s.min, s.max = _dec(d["min"]), _dec(d["max"])
        s.out_of_range_low, s.out_of_range_high = int(d["out_of_range_low"]), int(d["out_of_range_high"])
        s.sample_keys = _unb64(d["sample_keys"], "<u8", np.uint64)
        s._sample_values = _unb64(d["sample_values"], "<f8", np.float64)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericSketch):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return a == b

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


_NO_LIMIT = np.iinfo(np.uint64).max


def _absorb_many(sketches: Sequence[NumericSketch], live: list[int], keys: np.ndarray,
                 values: np.ndarray, seg: np.ndarray) -> None:
    """:meth:`NumericSketch._absorb` for the sketches at ``live`` (rows of ``seg``), with the
    same result: per sketch the ``sample_size`` smallest distinct keys of its sample and its new
    rows, a repeated key keeping its smallest value (the first of equal ones, sample first)."""
    kept = [i for i in live if sketches[i].sample_size > 0]
    if not kept:
        return
    count = len(sketches)
    full = [i for i in kept if sketches[i].sample_keys.size >= sketches[i].sample_size]
    if len(kept) == len(live) and not full:  # the common case: every row is a candidate
        nk, nv, ns = keys, values, seg
        touched = kept
    else:
        limit = np.full(count, _NO_LIMIT, dtype=np.uint64)
        if full:  # full: only keys up to its largest can enter
            limit[full] = [sketches[i].sample_keys[-1] for i in full]
        wanted = np.zeros(count, dtype=bool)
        wanted[kept] = True
        enter = wanted[seg] & (keys <= limit[seg])
        if not enter.any():
            return
        nk, nv, ns = keys[enter], values[enter], seg[enter]
        touched = dense_segments(ns)[0].tolist()
    held = [i for i in touched if sketches[i].sample_keys.size]
    if held:
        old_k = [sketches[i].sample_keys for i in held]
        old_s = np.repeat(np.array(held, dtype=np.int64), [x.size for x in old_k])
        ak = np.concatenate([*old_k, nk])
        av = np.concatenate([*(sketches[i]._sample_values for i in held), nv])
        aseg = np.concatenate([old_s, ns])
    else:
        ak, av, aseg = nk, nv, ns
    order = _order_by_segment_and_key(aseg, ak, count)
    if order is None:  # a repeated (sketch, key) pair, or keys alike in their top bits
        order = np.lexsort((ak, aseg))  # stable: within a sketch, by key, the sample first
        sk_, ss_ = ak[order], aseg[order]
        first = np.ones(ak.size, dtype=bool)
        first[1:] = (sk_[1:] != sk_[:-1]) | (ss_[1:] != ss_[:-1])
        if not first.all():  # a repeated key: the smallest value wins, as in _absorb
            order = np.lexsort((av, ak, aseg))
            sk_, ss_ = ak[order], aseg[order]
        kept_k, kept_v, kept_s = sk_[first], av[order][first], ss_[first]
    else:
        kept_k, kept_v, kept_s = ak[order], av[order], aseg[order]
    bounds = _segments(kept_s, count).tolist()
    for i in touched:
        sk = sketches[i]
        a = bounds[i]
        b = min(bounds[i + 1], a + sk.sample_size)
        # copies: a view would keep the candidates of every sketch of the flush alive
        sk.sample_keys, sk._sample_values = kept_k[a:b].copy(), kept_v[a:b].copy()


def _order_by_segment_and_key(seg: np.ndarray, keys: np.ndarray, count: int) -> np.ndarray | None:
    """The order of the rows by (``seg``, key) when no two rows share a segment and the top
    bits of their keys, else None. Then every (segment, key) pair is distinct, so this is the
    one order a stable ``np.lexsort((keys, seg))`` gives too, from one unstable sort of one
    packed uint64 (segment in the high bits, the key's top bits below it): 8x faster than the
    lexsort of a flush's few thousand rows, which was most of :func:`_absorb_many`."""
    if seg.size < 2:
        return np.zeros(seg.size, dtype=np.int64)
    bits = max(1, (count - 1).bit_length())
    if bits > 32:  # too few key bits left to tell rows apart
        return None
    packed = (seg.astype(np.uint64) << np.uint64(64 - bits)) | (keys >> np.uint64(bits))
    order = np.argsort(packed)
    ranked = packed[order]
    if bool((ranked[1:] == ranked[:-1]).any()):
        return None
    return order


def _count_on_grids(sketches: Sequence[NumericSketch], live: list[int], v: np.ndarray, s: np.ndarray) -> None:
    """The whole-window grid counts of :meth:`NumericSketch.update_many`: sketches sharing a grid
    (a model's slices do) are counted in one bincount, as ``update`` counts each alone."""
    by_grid: dict[bytes, list[int]] = {}
    for i in live:
        grid = sketches[i].grid
        if grid is not None:
            by_grid.setdefault(grid.tobytes(), []).append(i)
    for members in by_grid.values():
        grid = sketches[members[0]].grid
        assert grid is not None
        if len(members) == len(live):
            mv, ms = v, s
        else:
            inside = np.isin(s, members)
            mv, ms = v[inside], s[inside]
        local = np.searchsorted(np.array(members, dtype=np.int64), ms)
        nb = grid.size - 1
        hist = np.bincount(local * nb + bin_index(grid, mv), minlength=len(members) * nb)
        hist = hist.reshape(len(members), nb)
        for j, i in enumerate(members):
            sketches[i].grid_counts += hist[j]


def _count_strings(values: np.ndarray) -> tuple[list[str], list[int]]:
    """The distinct values of an object array as strings, sorted, and their counts: what
    ``np.unique(values.astype(str), return_counts=True)`` gives, by hashing (one pass) instead
    of sorting fixed-width unicode when every value is already a string. numpy's unicode drops
    trailing NULs, so a string ending in one takes the numpy path, as does any non-string."""
    counts = Counter(values.tolist())
    if all(type(c) is str and not c.endswith("\x00") for c in counts):
        cats = sorted(counts)
        return cats, [counts[c] for c in cats]
    uniq, cnt = np.unique(values.astype(str), return_counts=True)
    return uniq.tolist(), cnt.tolist()


# --------------------------------------------------------------------------------------------
class CategoricalSketch:
    """Counts per category of one categorical feature, with at most ``max_categories`` kept
    beyond the pinned ones; the rest are counted in ``overflow``.

    Which categories are kept must not depend on arrival order, or merged partials would differ
    from a single pass. So ``categories`` (typically the reference profile's) are always kept,
    and among the others the ``max_categories`` with the smallest stable hash are kept. A
    category dropped by one partial has ``max_categories`` smaller-hash rivals there, so it is
    dropped from the merge too: merging stays exact. Values are compared as strings.
    """

    def __init__(self, categories: Sequence[str] = (), max_categories: int = 256) -> None:
        if max_categories < 0:
            raise ValueError("max_categories must be >= 0")
        self.pinned: tuple[str, ...] = tuple(sorted({str(c) for c in categories}))
        self.max_categories = max_categories
        self.counts: dict[str, int] = {}
        self.missing = 0
        self.overflow = 0
        self._extra_keys: dict[str, int] = {}  # non-pinned kept category -> stable hash

    @property
    def n(self) -> int:
        """Non-missing values seen (kept + overflow)."""
        return sum(self.counts.values()) + self.overflow

    def update(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=object)
        missing = np.equal(v, NULL) | (v != v)  # None, or a float NaN from a CSV/DataFrame
        self.missing += int(missing.sum())
        present = v[~missing]
        if present.size == 0:
            return
        self._add(*_count_strings(present))

    @staticmethod
    def update_many(sketches: Sequence[CategoricalSketch], values: np.ndarray, seg: np.ndarray) -> None:
        """``sketches[i].update(values[seg == i])`` for every ``i``, bit-identically: one
        ``np.unique`` over all of them, then each sketch's sorted categories and counts."""
        v = np.asarray(values, dtype=object)
        s = np.asarray(seg, dtype=np.int64)
        _check_sorted(s)
        missing = np.equal(v, NULL) | (v != v)
        if missing.any():
            counts = np.bincount(s[missing], minlength=len(sketches))
            for i in np.flatnonzero(counts).tolist():
                sketches[i].missing += int(counts[i])
            v, s = v[~missing], s[~missing]
        if v.size == 0:
            return
        cats, inverse = np.unique(v.astype(str), return_inverse=True)
        live, local = dense_segments(s)
        table = np.bincount(local * cats.size + inverse.ravel(), minlength=live.size * cats.size)
        table = table.reshape(live.size, cats.size)
        names = cats.tolist()
        # the filled cells of all sketches at once, then each sketch's slice of them (in row
        # order: its categories sorted), and each name hashed once for every sketch it is new to
        rows, cols = np.nonzero(table)
        bounds = np.searchsorted(rows, np.arange(live.size + 1)).tolist()
        filled, cells = table[rows, cols].tolist(), cols.tolist()
        hashes: dict[str, int] = {}
        for j, i in enumerate(live.tolist()):
            a, b = bounds[j], bounds[j + 1]
            sketches[i]._add([names[c] for c in cells[a:b]], filled[a:b], hashes, names)

    def _add(self, cats: list[str], cnts: list[int], hashes: dict[str, int] | None = None,
             names: list[str] | None = None) -> None:
        """Count ``cats``; with ``hashes`` (a cache shared by the sketches of one update, of
        the stable keys of ``names``) a new category's key is looked up, not hashed again."""
        pinned = set(self.pinned) if self.pinned else ()
        extra = self._extra_keys
        fresh = [c for c in cats if c not in extra and c not in pinned]  # per category
        if fresh:
            if hashes is None or names is None:
                extra.update(zip(fresh, stable_keys(fresh).tolist(), strict=True))
            else:
                if not hashes:
                    hashes.update(zip(names, stable_keys(names).tolist(), strict=True))
                for c in fresh:
                    extra[c] = hashes[c]
        counts = self.counts
        for c, n in zip(cats, cnts, strict=True):
            counts[c] = counts.get(c, 0) + n
        self._evict()

    def _evict(self) -> None:
        if len(self._extra_keys) <= self.max_categories:
            return
        ranked = sorted(self._extra_keys.items(), key=lambda kv: (kv[1], kv[0]))
        for c, _ in ranked[self.max_categories :]:
            self.overflow += self.counts.pop(c)
            del self._extra_keys[c]

    def merge(self, other: CategoricalSketch) -> None:
        _check_same("categories", self.pinned, other.pinned)
        _check_same("max_categories", self.max_categories, other.max_categories)
        self.missing += other.missing
        self.overflow += other.overflow
        cats = list(other.counts)
        self._add(cats, [other.counts[c] for c in cats])

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(self.pinned), "max_categories": self.max_categories,
                "counts": dict(sorted(self.counts.items())), "missing": self.missing,
                "overflow": self.overflow}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls(d["categories"], int(d["max_categories"]))
        s.missing, s.overflow = int(d["missing"]), int(d["overflow"])
        counts = {str(k): int(v) for k, v in d["counts"].items()}
        s.counts = counts
        extra = [c for c in counts if c not in set(s.pinned)]
        s._extra_keys = dict(zip(extra, stable_keys(extra).tolist(), strict=True))
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoricalSketch):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


# --------------------------------------------------------------------------------------------
class ExpectedConfusion(_ExactSums):
    """Expected binary confusion counts from calibrated scores, no labels needed (CBPE).

    With p = P(y=1 | score) calibrated, an event predicted positive is a true positive with
    probability p, so E[TP] = Σ p·[ŷ=1], E[FP] = Σ (1-p)·[ŷ=1], E[FN] = Σ p·[ŷ=0] and
    E[TN] = Σ (1-p)·[ŷ=0]. The sums are exact (:class:`ExactSum`), so partials merge exactly.
    Events with a NaN score are skipped and not counted.
    """

    def __init__(self) -> None:
        self.n = 0
        self.tp, self.fp, self.fn, self.tn = ExactSum(), ExactSum(), ExactSum(), ExactSum()

    def _sums(self) -> dict[str, ExactSum]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}

    def update(self, pred_positive: np.ndarray, p: np.ndarray) -> None:
        pos = np.asarray(pred_positive, dtype=bool)
        q = np.asarray(p, dtype=np.float64)
        if pos.shape != q.shape:
            raise ValueError("pred_positive and p must have the same shape")
        scored = ~np.isnan(q)
        pos, q = pos[scored], q[scored]
        if np.any((q < 0.0) | (q > 1.0)):
            raise ValueError("p must be probabilities in [0, 1]")
        self.n += int(q.size)
        self.tp.add(q[pos])
        self.fp.add(1.0 - q[pos])
        self.fn.add(q[~pos])
        self.tn.add(1.0 - q[~pos])

    @staticmethod
    def update_many(sketches: Sequence[ExpectedConfusion], pred_positive: np.ndarray, p: np.ndarray,
                    seg: np.ndarray) -> None:
        """``sketches[i].update(pred_positive[seg == i], p[seg == i])`` for every ``i``, at once."""
        pos = np.asarray(pred_positive, dtype=bool)
        q = np.asarray(p, dtype=np.float64)
        if pos.shape != q.shape:
            raise ValueError("pred_positive and p must have the same shape")
        scored = ~np.isnan(q)
        pos, q, s = pos[scored], q[scored], np.asarray(seg, dtype=np.int64)[scored]
        if np.any((q < 0.0) | (q > 1.0)):
            raise ValueError("p must be probabilities in [0, 1]")
        counts = np.bincount(s, minlength=len(sketches))
        for i in np.flatnonzero(counts).tolist():
            sketches[i].n += int(counts[i])
        ExactSum.add_segments([x.tp for x in sketches], q[pos], s[pos])
        ExactSum.add_segments([x.fp for x in sketches], 1.0 - q[pos], s[pos])
        ExactSum.add_segments([x.fn for x in sketches], q[~pos], s[~pos])
        ExactSum.add_segments([x.tn for x in sketches], 1.0 - q[~pos], s[~pos])


# --------------------------------------------------------------------------------------------
class CalibratedScores:
    """Calibrated probabilities of a window's predictions, by predicted class and raw-score bin.

    For each (predicted class, bin) cell it keeps the count, Σq and Σq² of the *calibrated*
    probability q = P(y=1 | score). That is enough for every confidence-based estimate and its
    interval (:mod:`driftline.detectors.estimation`): Σq over predicted positives is E[TP],
    Σq - Σq² = Σq(1-q) is the variance of the Poisson-binomial count TP, and the per-bin sums
    over both classes give the expected ROC curve of the *raw* scores (the bins are on the raw
    score's logit, ``n_bins`` uniform bins on [-10, 10], ends clipped: fine where over-confident
    models put their scores, near 0 and 1).

    Sums are fixed-point integers (q rounded to a multiple of 2**-32, an error below 1e-9 per
    event), so merging is integer addition: exact, associative and order-free like every sketch
    here. Cells hold up to 2**31 events. Events whose raw score or q is NaN are skipped.
    """

    LOGIT_RANGE = 10.0
    _SCALE = float(2**32)
    _CHUNK = 1 << 20  # float64 bincount of integers < 2**33 stays exact below 2**53

    def __init__(self, n_bins: int = 400) -> None:
        if n_bins < 1:
            raise ValueError("n_bins must be >= 1")
        self.n_bins = n_bins
        self.n = 0
        self.count = np.zeros((2, n_bins), dtype=np.int64)  # row 0: predicted negative, 1: positive
        self.sum_q = np.zeros((2, n_bins), dtype=np.int64)  # Σq · 2**32
        self.sum_q2 = np.zeros((2, n_bins), dtype=np.int64)  # Σq² · 2**32

    def bins(self, raw_scores: np.ndarray) -> np.ndarray:
        """Bin of each raw score, on its logit (scores are probabilities, clipped into (0, 1))."""
        s = np.clip(np.asarray(raw_scores, dtype=np.float64), 1e-300, 1.0)
        with np.errstate(divide="ignore"):
            z = np.log(s) - np.log1p(-s)
        lo, width = -self.LOGIT_RANGE, 2.0 * self.LOGIT_RANGE / self.n_bins
        return np.clip(np.floor((z - lo) / width), 0, self.n_bins - 1).astype(np.int64)

    def update(self, pred_positive: np.ndarray, raw_scores: np.ndarray, q: np.ndarray) -> None:
        pos = np.asarray(pred_positive, dtype=bool)
        s = np.asarray(raw_scores, dtype=np.float64)
        p = np.asarray(q, dtype=np.float64)
        if not pos.shape == s.shape == p.shape:
            raise ValueError("pred_positive, raw_scores and q must have the same shape")
        ok = ~(np.isnan(s) | np.isnan(p))
        pos, s, p = pos[ok], s[ok], p[ok]
        if np.any((p < 0.0) | (p > 1.0)) or np.any((s < 0.0) | (s > 1.0)):
            raise ValueError("scores and calibrated probabilities must be in [0, 1]")
        cell = pos.astype(np.int64) * self.n_bins + self.bins(s)
        size = 2 * self.n_bins
        self.n += int(p.size)
        self.count += np.bincount(cell, minlength=size).reshape(2, self.n_bins)
        fixed_q = np.rint(p * self._SCALE)
        fixed_q2 = np.rint(p * p * self._SCALE)
        for start in range(0, p.size, self._CHUNK):
            part = slice(start, start + self._CHUNK)
            for total, w in ((self.sum_q, fixed_q), (self.sum_q2, fixed_q2)):
                total += np.bincount(cell[part], weights=w[part], minlength=size).astype(np.int64).reshape(
                    2, self.n_bins)

    @staticmethod
    def update_many(sketches: Sequence[CalibratedScores], pred_positive: np.ndarray, raw_scores: np.ndarray,
                    q: np.ndarray, seg: np.ndarray) -> None:
        """``sketches[i].update(pred_positive[seg == i], raw_scores[seg == i], q[seg == i])`` for
        every ``i`` at once (``seg`` non-decreasing, all with the same bins), bit-identically.

        A join flush feeds this to every binary slice of every model; one ``update`` per slice
        was a few dozen numpy calls on a few dozen rows each. Here the filled (sketch, cell)
        pairs are counted in one pass, then each sketch adds its few cells. The fixed-point sums
        are float64 bincounts of integers below 2**33 over at most ``_CHUNK`` rows, exact as in
        ``update``, whichever sketch the rows belong to."""
        if not sketches:
            return
        n_bins = sketches[0].n_bins
        for x in sketches:
            _check_same("n_bins", n_bins, x.n_bins)
        pos = np.asarray(pred_positive, dtype=bool)
        s = np.asarray(raw_scores, dtype=np.float64)
        p = np.asarray(q, dtype=np.float64)
        sg = np.asarray(seg, dtype=np.int64)
        if not pos.shape == s.shape == p.shape == sg.shape:
            raise ValueError("pred_positive, raw_scores, q and seg must have the same shape")
        _check_sorted(sg)
        ok = ~(np.isnan(s) | np.isnan(p))
        pos, s, p, sg = pos[ok], s[ok], p[ok], sg[ok]
        if np.any((p < 0.0) | (p > 1.0)) or np.any((s < 0.0) | (s > 1.0)):
            raise ValueError("scores and calibrated probabilities must be in [0, 1]")
        if p.size == 0:
            return
        size = 2 * n_bins
        live, local = dense_segments(sg)
        cell = local * size + pos.astype(np.int64) * n_bins + sketches[0].bins(s)
        cells, inverse = np.unique(cell, return_inverse=True)  # sorted: grouped by sketch
        inverse = inverse.ravel()
        count = np.bincount(inverse, minlength=cells.size)
        sum_q = np.zeros(cells.size, dtype=np.int64)
        sum_q2 = np.zeros(cells.size, dtype=np.int64)
        fixed_q = np.rint(p * CalibratedScores._SCALE)
        fixed_q2 = np.rint(p * p * CalibratedScores._SCALE)
        for start in range(0, p.size, CalibratedScores._CHUNK):
            part = slice(start, start + CalibratedScores._CHUNK)
            for total, w in ((sum_q, fixed_q), (sum_q2, fixed_q2)):
                total += np.bincount(inverse[part], weights=w[part], minlength=cells.size).astype(np.int64)
        bounds = np.searchsorted(cells // size, np.arange(live.size + 1)).tolist()
        where = cells % size
        per_sketch = np.bincount(local, minlength=live.size).tolist()
        for j, i in enumerate(live.tolist()):
            a, b = bounds[j], bounds[j + 1]
            sk, at = sketches[i], where[a:b]
            sk.n += per_sketch[j]
            sk.count.flat[at] += count[a:b]
            sk.sum_q.flat[at] += sum_q[a:b]
            sk.sum_q2.flat[at] += sum_q2[a:b]

    def merge(self, other: CalibratedScores) -> None:
        _check_same("n_bins", self.n_bins, other.n_bins)
        self.n += other.n
        self.count += other.count
        self.sum_q += other.sum_q
        self.sum_q2 += other.sum_q2

    def sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, Σq, Σq²) per (predicted class, bin) as float64."""
        return (self.count.astype(np.float64), self.sum_q / self._SCALE, self.sum_q2 / self._SCALE)

    def to_dict(self) -> dict[str, Any]:
        # sparse: a window fills a few dozen of the 2·n_bins cells
        cells = np.flatnonzero(self.count.ravel())
        return {"n_bins": self.n_bins, "n": self.n, "cells": cells.tolist(),
                "count": self.count.ravel()[cells].tolist(), "sum_q": self.sum_q.ravel()[cells].tolist(),
                "sum_q2": self.sum_q2.ravel()[cells].tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls(int(d["n_bins"]))
        s.n = int(d["n"])
        cells = np.array(d["cells"], dtype=np.int64)
        for name in ("count", "sum_q", "sum_q2"):
            getattr(s, name).ravel()[cells] = np.array(d[name], dtype=np.int64)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibratedScores):
            return NotImplemented
        return (self.n_bins == other.n_bins and self.n == other.n
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("count", "sum_q", "sum_q2")))

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


class ClassProbabilitySums:
    """Calibrated class-probability vectors of a multiclass window, by predicted class.

    For a K-class model (classes fixed by the reference, so every partition agrees) and each
    predicted class i (row K: a predicted label outside the reference's classes) it keeps the
    count, Σq_j (the expected confusion matrix: E[#predicted i, true j]) and Σq_j·q_l. Given
    the predictions, calibration makes each event's label an independent categorical(q), so
    row i of the confusion matrix has covariance diag(Σq) - Σq qᵀ and rows are independent:
    enough for every plug-in estimate and its delta-method variance
    (:func:`~driftline.detectors.estimation.estimate_class_probabilities`).

    Sums are fixed-point integers (each product rounded to a multiple of 2**-32 per event, as
    :class:`CalibratedScores`), so merging is integer addition: exact, associative and
    order-free. Rows with a NaN probability are skipped. Memory is (K+1)·K² integers.
    """

    _SCALE = float(2**32)
    _CHUNK = 1 << 16  # rows per pass: bounds the (rows, K, K) temporary

    def __init__(self, k: int) -> None:
        if k < 2:
            raise ValueError("a multiclass sketch needs at least 2 classes")
        self.k = k
        self.n = 0
        self.count = np.zeros(k + 1, dtype=np.int64)
        self.sum_q = np.zeros((k + 1, k), dtype=np.int64)  # Σq_j · 2**32
        self.sum_qq = np.zeros((k + 1, k, k), dtype=np.int64)  # Σq_j q_l · 2**32

    def update(self, predicted: np.ndarray, q: np.ndarray) -> None:
        """``predicted``: each row's predicted class index (0..K-1, K for any other label);
        ``q``: its (rows, K) calibrated probabilities."""
        pred = np.asarray(predicted, dtype=np.int64)
        p = np.asarray(q, dtype=np.float64)
        if p.ndim != 2 or p.shape != (pred.size, self.k):
            raise ValueError(f"q must be a (rows, {self.k}) matrix, one row per prediction")
        ok = ~np.isnan(p).any(axis=1)
        pred, p = pred[ok], p[ok]
        if np.any((p < 0.0) | (p > 1.0)) or np.any((pred < 0) | (pred > self.k)):
            raise ValueError("probabilities must be in [0, 1] and predicted classes in 0..K")
        self.n += int(pred.size)
        self.count += np.bincount(pred, minlength=self.k + 1)
        for start in range(0, pred.size, self._CHUNK):
            part = slice(start, start + self._CHUNK)
            rows, pp = pred[part], p[part]
            fixed_q = np.rint(pp * self._SCALE).astype(np.int64)
            fixed_qq = np.rint(pp[:, :, None] * pp[:, None, :] * self._SCALE).astype(np.int64)
            for i in np.unique(rows).tolist():
                sel = rows == i
                self.sum_q[i] += fixed_q[sel].sum(axis=0)
                self.sum_qq[i] += fixed_qq[sel].sum(axis=0)

    def merge(self, other: ClassProbabilitySums) -> None:
        _check_same("k", self.k, other.k)
        self.n += other.n
        self.count += other.count
        self.sum_q += other.sum_q
        self.sum_qq += other.sum_qq

    def sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count per predicted row, Σq, Σq qᵀ) as float64."""
        return (self.count.astype(np.float64), self.sum_q / self._SCALE, self.sum_qq / self._SCALE)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "count": self.count.tolist(),
                "sum_q": self.sum_q.ravel().tolist(), "sum_qq": self.sum_qq.ravel().tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls(int(d["k"]))
        s.n = int(d["n"])
        s.count[:] = np.array(d["count"], dtype=np.int64)
        s.sum_q.ravel()[:] = np.array(d["sum_q"], dtype=np.int64)
        s.sum_qq.ravel()[:] = np.array(d["sum_qq"], dtype=np.int64)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassProbabilitySums):
            return NotImplemented
        return (self.k == other.k and self.n == other.n
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("count", "sum_q", "sum_qq")))

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


class ClassRankings:
    """One :class:`CalibratedScores` per class of a multiclass model, each fed one-vs-rest
    (predicted class k, class k's raw score, its calibrated q): the expected one-vs-rest ROC
    AUC of every class. Merges, serialises and compares as its parts do.

    The macro mean's variance also needs how one event's label moves two classes' curves at
    once (a label that is class k is not class l): ``pairs`` keeps, for every pair of classes
    k < l, Σ q_k·q_l over the events in each (coarse bin of score k, coarse bin of score l),
    on ``PAIR_BINS`` bins of the same logit range (each one ``n_bins / PAIR_BINS`` of the
    parts' bins), fixed-point as the parts. ``pairs_n`` counts the events in it, so a merge
    with a partial written before it is seen (its macro interval is then left out)."""

    PAIR_BINS = 10

    def __init__(self, k: int, n_bins: int = 400) -> None:
        if k < 2:
            raise ValueError("a multiclass sketch needs at least 2 classes")
        if n_bins % self.PAIR_BINS:
            raise ValueError(f"n_bins must be a multiple of {self.PAIR_BINS}")
        self.parts = [CalibratedScores(n_bins) for _ in range(k)]
        self.pairs_n = 0
        self.pairs = np.zeros((k * (k - 1) // 2, self.PAIR_BINS, self.PAIR_BINS), dtype=np.int64)

    def coarse(self, raw: np.ndarray) -> np.ndarray:
        """Each score's pair bin: its part bin, ``n_bins / PAIR_BINS`` to one."""
        part = self.parts[0]
        return part.bins(raw) // (part.n_bins // self.PAIR_BINS)

    def update(self, predicted: np.ndarray, raw: np.ndarray, q: np.ndarray) -> None:
        """``predicted``: class indices (K: another label), ``raw`` and ``q``: (rows, K)."""
        pred = np.asarray(predicted, dtype=np.int64)
        r = np.asarray(raw, dtype=np.float64)
        p = np.asarray(q, dtype=np.float64)
        for k, part in enumerate(self.parts):
            part.update(pred == k, r[:, k], p[:, k])
        ok = ~(np.isnan(r).any(axis=1) | np.isnan(p).any(axis=1))
        r, p = r[ok], p[ok]
        self.pairs_n += int(p.shape[0])
        if not p.shape[0]:
            return
        cells = self.PAIR_BINS * self.PAIR_BINS
        coarse = np.column_stack([self.coarse(r[:, k]) for k in range(len(self.parts))])
        pair = 0
        for k in range(len(self.parts)):
            for m in range(k + 1, len(self.parts)):
                cell = coarse[:, k] * self.PAIR_BINS + coarse[:, m]
                w = np.rint(p[:, k] * p[:, m] * CalibratedScores._SCALE)
                for start in range(0, w.size, CalibratedScores._CHUNK):
                    part_rows = slice(start, start + CalibratedScores._CHUNK)
                    self.pairs[pair] += np.bincount(cell[part_rows], weights=w[part_rows],
                                                    minlength=cells).astype(np.int64).reshape(
                        self.PAIR_BINS, self.PAIR_BINS)
                pair += 1

    def pair_sums(self) -> np.ndarray:
        """Σ q_k q_l per (pair k < l in row-major order, bin of k, bin of l), as float64."""
        return self.pairs / CalibratedScores._SCALE

    def merge(self, other: ClassRankings) -> None:
        _check_same("classes", len(self.parts), len(other.parts))
        for mine, theirs in zip(self.parts, other.parts, strict=True):
            mine.merge(theirs)
        self.pairs_n += other.pairs_n
        self.pairs += other.pairs

    def to_dict(self) -> dict[str, Any]:
        cells = np.flatnonzero(self.pairs.ravel())  # sparse, as the parts
        return {"parts": [p.to_dict() for p in self.parts], "pairs_n": self.pairs_n,
                "pair_cells": cells.tolist(), "pairs": self.pairs.ravel()[cells].tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        parts = [CalibratedScores.from_dict(p) for p in d["parts"]]
        s = cls(len(parts), parts[0].n_bins)
        s.parts = parts
        if "pairs" in d:  # absent from partials written before the macro interval
            s.pairs_n = int(d["pairs_n"])
            s.pairs.ravel()[np.array(d["pair_cells"], dtype=np.int64)] = np.array(d["pairs"], dtype=np.int64)
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassRankings):
            return NotImplemented
        return (self.parts == other.parts and self.pairs_n == other.pairs_n
                and np.array_equal(self.pairs, other.pairs))

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method


class ClassScoreHistograms:
    """One :class:`ScoreHistogram` per class of a multiclass model, fed one-vs-rest with the
    *labelled* events (class k's raw score; positive when the label is class k, a label outside
    the reference's classes is a negative of every class): the realised one-vs-rest ROC AUC of
    every class and their macro mean (:func:`~driftline.detectors.metrics.class_ranking_metrics`),
    on the same 200 uniform score bins and with the same error bound as the binary model's.
    Integer counts: merges are exact. Rows whose vector has a NaN are skipped."""

    def __init__(self, k: int, n_bins: int = 200) -> None:
        if k < 2:
            raise ValueError("a multiclass sketch needs at least 2 classes")
        self.parts = [ScoreHistogram(n_bins) for _ in range(k)]

    def update(self, y_true: np.ndarray, raw: np.ndarray) -> None:
        """``y_true``: each labelled row's class index (K: another label), ``raw``: (rows, K)."""
        y = np.asarray(y_true, dtype=np.int64)
        s = np.asarray(raw, dtype=np.float64)
        if s.ndim != 2 or s.shape != (y.size, len(self.parts)):
            raise ValueError(f"raw must be a (rows, {len(self.parts)}) matrix, one row per label")
        ok = ~np.isnan(s).any(axis=1)
        y, s = y[ok], s[ok]
        for k, part in enumerate(self.parts):
            part.update(y == k, s[:, k])

    def merge(self, other: ClassScoreHistograms) -> None:
        _check_same("classes", len(self.parts), len(other.parts))
        for mine, theirs in zip(self.parts, other.parts, strict=True):
            mine.merge(theirs)

    def to_dict(self) -> dict[str, Any]:
        return {"parts": [p.to_dict() for p in self.parts]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        parts = [ScoreHistogram.from_dict(p) for p in d["parts"]]
        s = cls(len(parts), parts[0].n_bins)
        s.parts = parts
        return s

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassScoreHistograms):
            return NotImplemented
        return self.parts == other.parts

    __hash__ = None  # type: ignore[assignment]  # unhashable (mutable); typeshed wants a method
