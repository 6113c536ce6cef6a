"""Multivariate drift: PCA reconstruction error, per window, from mergeable second moments.

Univariate tests look at one feature at a time, so a change in how features move *together*
(two features that were positively correlated become negatively correlated, each marginal
unchanged) passes every one of them. NannyML's ``DataReconstructionDriftCalculator`` catches it
in batch: encode categoricals, standardise on the reference, fit a PCA on the reference keeping
a share of the variance (0.65 by default), and watch the mean reconstruction error of each
chunk; the reference's structure is what the kept components reconstruct well, so a window
whose structure differs reconstructs badly.

A stream cannot keep a window's rows, but it does not need to. With ``z`` a row standardised by
the reference and ``R = I - P`` the projection onto the components the PCA drops, a row's
squared error is ``zᵀ R z`` (``R`` is symmetric and idempotent), so the window's mean is

    mean error = trace(R · M · R),   M = (1/n) Σ z zᵀ   (the window's second moments)

and a window needs only ``n``, ``Σ z`` and ``Σ z zᵀ``: :class:`MomentSketch`. Those sums are
kept exactly (integers on the scale of :class:`~driftline.detectors.sketches.ExactSum`), so a
window's sketch is bit-identical however its rows were split over partitions and merged.
The diagonal of ``R M R`` splits the error by feature: which features the window no longer
reconstructs, compared with the reference's own diagonal, is what drives the signal.

Departures from NannyML, and why:

- the error is the *squared* Euclidean norm (NannyML averages the norm). Its mean is a
  function of second moments; the mean of a norm is not, and would need the rows;
- the threshold scales with the window's size: ``mean ± k · sd_row · sqrt(1/n + 2/n_ref)``,
  with the mean and per-row standard deviation of the reference's own errors, each row's
  error taken under a PCA fitted on the other folds of the reference (a PCA reconstructs the
  rows it was fitted on too well: calibrated in sample, independent features alarmed on 9 %
  of stationary windows of 2000 rows), NannyML's "sampling error" term plus the reference's
  own sampling noise, twice (the held-out estimate's and the full fit's, see
  :data:`REFERENCE_TERM`), and a Cornish-Fisher correction for the skew of a mean of
  squared errors (``k ± (k² - 1) · skew_row / (6 sqrt(n))``): per-row errors are far from
  normal (a skewed feature in the residual gives a skewness of 6), and without it a 3-sigma
  band false-alarmed on 1.2 % of stationary windows instead of 0.3 % (now 0.15 %)
  (``tests/test_multivariate.py``). Windows and segments differ in size by orders of
  magnitude, and one band calibrated on reference chunks of one size is too tight for a small
  segment and too loose for a busy hour. NannyML's rule (reference chunks, mean ± 3 sd of
  their errors) is kept as
  ``threshold="chunks"`` for when windows have the size of those chunks.

Encoding is NannyML's, with one departure: a numeric feature is mapped to its normal score
through the reference's quantiles before it is standardised (see :class:`FeatureEncoding`: a
heavy-tailed feature otherwise false-alarms small windows). A missing numeric value is imputed
with the reference mean, a missing category with the reference's most frequent one, and a
categorical feature becomes the reference frequency of its value (unseen values: 0),
standardised like a numeric one. Frequency
encoding keeps one column per feature, so the sketch holds ``d (d + 1) / 2`` sums for ``d``
features whatever the number of categories (one-hot of the top 20 categories of 10 features
would make ``d`` 200 and the sketch 20,000 sums), and a shift towards rare or unseen values
moves the encoded column, which the error sees.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=2000)
>>> ref = {"a": x + 0.1 * rng.normal(size=2000), "b": x + 0.1 * rng.normal(size=2000)}
>>> model = fit_reconstruction(ref, {"a": "numeric", "b": "numeric"})
>>> model.n_components
1
>>> y = rng.normal(size=500)
>>> flipped = MomentSketch(2); flipped.update(model.encode({"a": y, "b": -y}))
>>> result = model.evaluate(flipped)
>>> result.alert, result.drivers
(True, ['b', 'a'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
from scipy import special

from driftline.detectors.categories import NULL, category_strings
from driftline.detectors.sketches import exact_int_text, exact_int_value

if TYPE_CHECKING:  # aggregates folds these sketches, so it imports this module, not the reverse
    from driftline.detectors.aggregates import FeatureColumns

__all__ = [
    "FeatureEncoding",
    "MomentSketch",
    "ReconstructionModel",
    "ReconstructionResult",
    "encode",
    "encode_columns",
    "fit_reconstruction",
    "fit_reconstruction_rows",
]

Kind = Literal["numeric", "categorical"]
Threshold = Literal["sampling", "chunks"]

# The scale of detectors.sketches.ExactSum: every float64 is an integer multiple of 2**-1126.
_SHIFT = 1126
_MIN_EXP = 1073  # frexp exponents lie in [-1073, 1024]
_POW2 = np.ldexp(1.0, np.arange(8))  # 2**(e mod 8), gathered instead of a slow ldexp
_EXACT_ROWS = 1 << 18  # rows per exact pass: 2**34 * 2**18 < 2**53 (see _add_chunk)
_CHUNK_ROWS = 8192  # rows per vectorised pass: bounds the temporary products (rows x sums)


class _ExactVector:
    """Exact, order-independent sums of the columns of a float64 matrix (``ExactSum`` per
    column, vectorised over columns: one ``frexp`` and two ``bincount`` a chunk, not a call per
    column). Non-finite values are kept apart per column, as ``ExactSum`` does."""

    __slots__ = ("scaled", "special")

    def __init__(self, k: int) -> None:
        self.scaled = [0] * k
        self.special = np.zeros(k)

    def add(self, columns: np.ndarray) -> None:
        """Add a ``(k, rows)`` array: row ``c`` holds the values of sum ``c`` (column-major, so
        each sum's values are contiguous and no transposing copy is made)."""
        v = np.asarray(columns, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] != len(self.scaled):
            raise ValueError(f"expected a ({len(self.scaled)}, rows) array, got {v.shape}")
        finite = np.isfinite(v)
        if not finite.all():
            with np.errstate(invalid="ignore"):  # inf + -inf is nan, as in ExactSum
                self.special += np.where(finite, 0.0, v).sum(axis=1)
            v = np.where(finite, v, 0.0)
        for start in range(0, v.shape[1], _EXACT_ROWS):
            self._add_chunk(v[:, start : start + _EXACT_ROWS])

    @staticmethod
    def add_many(targets: Sequence[_ExactVector], columns: np.ndarray, seg: np.ndarray) -> None:
        """``targets[s].add(columns[:, seg == s])`` for every ``s``, with one ``frexp`` and two
        ``bincount`` a chunk for all of them: the same exact integers, so the same sums."""
        if not targets:
            return
        k = len(targets[0].scaled)
        v = np.asarray(columns, dtype=np.float64)
        seg = np.asarray(seg, dtype=np.int64)
        if v.ndim != 2 or v.shape != (k, seg.size):
            raise ValueError(f"expected a ({k}, {seg.size}) array, got {v.shape}")
        finite = np.isfinite(v)
        if not finite.all():
            with np.errstate(invalid="ignore"):
                for s in np.unique(seg[~finite.all(axis=0)]).tolist():
                    part = v[:, seg == s]
                    targets[s].special += np.where(np.isfinite(part), 0.0, part).sum(axis=1)
            v = np.where(finite, v, 0.0)
        for start in range(0, v.shape[1], _EXACT_ROWS):
            _add_chunk_many(targets, v[:, start : start + _EXACT_ROWS], seg[start : start + _EXACT_ROWS])

    def _add_chunk(self, v: np.ndarray) -> None:
        # Each value is m * 2**(e - 53) with a 53-bit integer m = hi * 2**26 + lo, split in
        # floats: hi = floor(mant * 2**27) and lo = mant * 2**53 - hi * 2**26 are exact.
        # Exponents are grouped in blocks of 8: within a block, hi and lo are scaled by
        # 2**(e mod 8), exactly (a power of two), to at most 2**34; _EXACT_ROWS of them sum to
        # below 2**53, so float64 bincount sums are exact integers. One Python-int step per
        # (sum, exponent block) present, not per value.
        k = v.shape[0]
        if v.size == 0:
            return
        mant, exp = np.frexp(v)
        hi = np.floor(mant * 2.0**27)
        lo = mant * 2.0**53 - hi * 2.0**26
        e = exp + _MIN_EXP  # >= 0: frexp exponents are >= -1073
        block = e >> 3
        scale = _POW2[e & 7]
        hi *= scale
        lo *= scale
        first = int(block.min())
        width = int(block.max()) - first + 1
        idx = (block - first).astype(np.int64) + width * np.arange(k, dtype=np.int64)[:, None]
        flat_idx = idx.ravel()
        hi_sums = np.bincount(flat_idx, weights=hi.ravel(), minlength=k * width)
        lo_sums = np.bincount(flat_idx, weights=lo.ravel(), minlength=k * width)
        scaled = self.scaled
        for flat in np.flatnonzero((hi_sums != 0) | (lo_sums != 0)).tolist():
            col, b = divmod(flat, width)
            shift = ((b + first) << 3) - _MIN_EXP - 53 + _SHIFT  # >= 0, as _SHIFT = 1073 + 53
            scaled[col] += (int(hi_sums[flat]) << (shift + 26)) + (int(lo_sums[flat]) << shift)

    def merge(self, other: _ExactVector) -> None:
        if len(other.scaled) != len(self.scaled):
            raise ValueError("cannot merge sums of different sizes")
        self.scaled = [a + b for a, b in zip(self.scaled, other.scaled, strict=True)]
        self.special = self.special + other.special

    def means(self, n: int) -> np.ndarray:
        """Each sum divided by ``n``, correctly rounded once (``int / int``)."""
        denom = n << _SHIFT
        return np.array([s / denom for s in self.scaled]) + self.special / n

    def to_json(self) -> list[list[str]]:
        return [[exact_int_text(s), repr(float(x))] for s, x in zip(self.scaled, self.special, strict=True)]

    @classmethod
    def from_json(cls, d: Sequence[Sequence[str]]) -> _ExactVector:
        v = cls(len(d))
        v.scaled = [exact_int_value(s) for s, _ in d]
        v.special = np.array([float(x) for _, x in d])
        return v

    def fractions(self) -> list[Fraction]:
        return [Fraction(s, 1 << _SHIFT) for s in self.scaled]


def _add_chunk_many(targets: Sequence[_ExactVector], v: np.ndarray, seg: np.ndarray) -> None:
    """:meth:`_ExactVector._add_chunk` with a target per column of ``v`` (``seg``): the
    bincount index is (target, sum, exponent block)."""
    k = v.shape[0]
    if v.size == 0:
        return
    mant, exp = np.frexp(v)
    hi = np.floor(mant * 2.0**27)
    lo = mant * 2.0**53 - hi * 2.0**26
    e = exp + _MIN_EXP
    block = e >> 3
    scale = _POW2[e & 7]
    hi *= scale
    lo *= scale
    first = int(block.min())
    width = int(block.max()) - first + 1
    cells = k * width
    idx = (
        (block - first).astype(np.int64)
        + width * np.arange(k, dtype=np.int64)[:, None]
        + cells * seg[None, :]
    )
    flat_idx = idx.ravel()
    size = cells * len(targets)
    hi_sums = np.bincount(flat_idx, weights=hi.ravel(), minlength=size)
    lo_sums = np.bincount(flat_idx, weights=lo.ravel(), minlength=size)
    for flat in np.flatnonzero((hi_sums != 0) | (lo_sums != 0)).tolist():
        target, rest = divmod(flat, cells)
        col, b = divmod(rest, width)
        shift = ((b + first) << 3) - _MIN_EXP - 53 + _SHIFT
        targets[target].scaled[col] += (int(hi_sums[flat]) << (shift + 26)) + (int(lo_sums[flat]) << shift)


class MomentSketch:
    """``n``, ``Σ z`` and ``Σ z zᵀ`` (upper triangle) of encoded rows: the mergeable state of
    one window slice for :class:`ReconstructionModel`. Bounded by ``d (d + 3) / 2`` exact sums.

    >>> a, b, whole = MomentSketch(2), MomentSketch(2), MomentSketch(2)
    >>> rows = np.array([[0.1, 2.0], [1e16, -1.0], [-1e16, 0.3]])
    >>> a.update(rows[:1]); b.update(rows[1:]); whole.update(rows[::-1])
    >>> b.merge(a); b == whole, b.mean().tolist()
    (True, [0.03333333333333333, 0.43333333333333335])
    """

    __slots__ = ("_cross", "_sums", "d", "n")

    def __init__(self, d: int) -> None:
        self.d = d
        self.n = 0
        self._sums = _ExactVector(d)
        self._cross = _ExactVector(d * (d + 1) // 2)

    def update(self, z: np.ndarray) -> None:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.d:
            raise ValueError(f"expected a (rows, {self.d}) matrix, got {z.shape}")
        i, j = np.triu_indices(self.d)
        for start in range(0, z.shape[0], _CHUNK_ROWS):
            block = np.ascontiguousarray(z[start : start + _CHUNK_ROWS].T)  # (d, rows): small
            self._sums.add(block)
            with np.errstate(over="ignore"):  # an overflowing product is kept apart, as inf
                self._cross.add(block[i] * block[j])  # each product is the same float wherever
        self.n += z.shape[0]

    @classmethod
    def update_many(cls, sketches: Sequence[MomentSketch], z: np.ndarray, seg: np.ndarray) -> None:
        """``sketches[s].update(z[seg == s])`` for every ``s``, bit-identically, with one pass of
        products and exact sums over all rows (the join's fold of a flush)."""
        if not sketches:
            return
        d = sketches[0].d
        z = np.asarray(z, dtype=np.float64)
        seg = np.asarray(seg, dtype=np.int64)
        if z.ndim != 2 or z.shape[1] != d or seg.shape != (z.shape[0],):
            raise ValueError(f"expected a (rows, {d}) matrix and a segment per row: {z.shape}, {seg.shape}")
        if any(s.d != d for s in sketches):
            raise ValueError("cannot fold into sketches of different d")
        i, j = np.triu_indices(d)
        sums = [s._sums for s in sketches]
        cross = [s._cross for s in sketches]
        for start in range(0, z.shape[0], _CHUNK_ROWS):
            block = np.ascontiguousarray(z[start : start + _CHUNK_ROWS].T)
            part = seg[start : start + _CHUNK_ROWS]
            _ExactVector.add_many(sums, block, part)
            with np.errstate(over="ignore"):
                _ExactVector.add_many(cross, block[i] * block[j], part)
        counts = np.bincount(seg, minlength=len(sketches)).tolist()
        for sketch, c in zip(sketches, counts, strict=True):
            sketch.n += int(c)

    def merge(self, other: MomentSketch) -> None:
        if other.d != self.d:
            raise ValueError(f"cannot merge sketches with different d: {self.d} != {other.d}")
        self.n += other.n
        self._sums.merge(other._sums)
        self._cross.merge(other._cross)

    def mean(self) -> np.ndarray:
        return self._sums.means(self.n) if self.n else np.full(self.d, math.nan)

    def second_moment(self) -> np.ndarray:
        """``M = (1/n) Σ z zᵀ``, each entry correctly rounded from the exact sum."""
        m = np.full((self.d, self.d), math.nan)
        if self.n:
            i, j = np.triu_indices(self.d)
            m[i, j] = self._cross.means(self.n)
            m[j, i] = m[i, j]
        return m

    def covariance(self) -> np.ndarray:
        """Population covariance (ddof 0), computed from the exact sums without cancellation."""
        n = self.n
        s = self._sums.fractions()
        c = self._cross.fractions()
        out = np.empty((self.d, self.d))
        for k, (i, j) in enumerate(zip(*np.triu_indices(self.d), strict=True)):
            out[i, j] = out[j, i] = float((c[k] * n - s[i] * s[j]) / (n * n))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MomentSketch):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_dict(self) -> dict[str, Any]:
        return {"d": self.d, "n": self.n, "sums": self._sums.to_json(), "cross": self._cross.to_json()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        s = cls(int(d["d"]))
        s.n = int(d["n"])
        s._sums = _ExactVector.from_json(d["sums"])
        s._cross = _ExactVector.from_json(d["cross"])
        if len(s._cross.scaled) != s.d * (s.d + 1) // 2 or len(s._sums.scaled) != s.d:
            raise ValueError("moment sketch sizes do not match d")
        return s


@dataclass(frozen=True, slots=True)
class FeatureEncoding:
    """How one feature becomes one standardised column.

    A numeric feature with a reference quantile grid (``grid``, the distinct reference
    quantiles, and ``levels``, their cumulative probabilities) is first mapped to its normal
    score ``Φ⁻¹(F_ref(x))`` (``F_ref`` interpolated linearly between grid points, clipped to
    ``[CLIP, 1 - CLIP]``): a heavy-tailed feature (a lognormal amount) standardised as it is
    gives squared errors with a far heavier tail than the band's near-normal approximation of
    their window mean allows, and small stationary windows false-alarmed 0.7-1.5 % of the time
    instead of 0.27 % (``tests/test_multivariate.py``). The score depends on the row alone, so
    window moments stay exact sums and merge bit-identically. Without a grid (profiles written
    before it) the raw value is standardised, as before."""

    name: str
    kind: Kind
    mean: float  # of the encoded reference column
    scale: float  # its population standard deviation (1.0 when constant, as StandardScaler)
    fill: float | str  # imputed for a missing value: reference mean, or most frequent category
    frequencies: Mapping[str, float] = field(default_factory=dict)  # categorical only
    grid: tuple[float, ...] = ()  # numeric only: distinct reference quantiles, increasing
    levels: tuple[float, ...] = ()  # their reference CDF values

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "numeric":
            x = np.asarray(values, dtype=np.float64)
            x = np.where(np.isfinite(x), x, float(self.fill))
            if self.grid:
                x = normal_scores(x, self.grid, self.levels)
        else:
            cats = np.asarray(values, dtype=object)
            cats = np.where(np.equal(cats, NULL), self.fill, cats)
            uniq, inv = np.unique(cats.astype(str), return_inverse=True)
            x = np.array([self.frequencies.get(u, 0.0) for u in uniq.tolist()], dtype=np.float64)[inv]
        return (x - self.mean) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "mean": self.mean,
            "scale": self.scale,
            "fill": self.fill,
            "frequencies": dict(self.frequencies),
            "grid": list(self.grid),
            "levels": list(self.levels),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureEncoding:
        return cls(
            d["name"],
            d["kind"],
            float(d["mean"]),
            float(d["scale"]),
            d["fill"],
            {str(k): float(v) for k, v in d.get("frequencies", {}).items()},
            tuple(float(v) for v in d.get("grid", ())),
            tuple(float(v) for v in d.get("levels", ())),
        )


#: quantile levels of a numeric feature's reference grid (``GRID_POINTS + 1`` of them, 0 to 1)
GRID_POINTS = 200
#: the normal score's CDF clip: half a grid step, so scores lie within ±2.81 (an unseen
#: extreme counts as the reference's most extreme, not as an unbounded squared error)
CLIP = 0.5 / GRID_POINTS


def quantile_grid(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The distinct reference quantiles at ``GRID_POINTS + 1`` even levels, each with the mean
    of the levels it holds (an atom, say 30 % zeros, gets the middle of its CDF jump)."""
    levels = np.linspace(0.0, 1.0, GRID_POINTS + 1)
    q = np.quantile(np.asarray(x, dtype=np.float64), levels)
    uniq, inv = np.unique(q, return_inverse=True)
    mid = np.bincount(inv, weights=levels) / np.bincount(inv)
    return tuple(uniq.tolist()), tuple(mid.tolist())


def normal_scores(x: np.ndarray, grid: Sequence[float], levels: Sequence[float]) -> np.ndarray:
    """``Φ⁻¹`` of the interpolated reference CDF, clipped (see :class:`FeatureEncoding`)."""
    if len(grid) < 2:  # a constant reference: every value is the same score
        return np.zeros(np.shape(x))
    p = np.clip(np.interp(x, grid, levels, left=0.0, right=1.0), CLIP, 1.0 - CLIP)
    return np.asarray(special.ndtri(p), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ReconstructionResult:
    """One window's reconstruction error against the reference's band, and what drives it."""

    error: float  # mean squared reconstruction error of the window's rows
    lower: float
    upper: float
    alert: bool
    n: int
    reference_error: float
    #: per-feature share of the error (the diagonal of R M R): they sum to ``error``
    contributions: dict[str, float]
    #: features whose contribution rose above the reference's, largest rise first
    drivers: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-safe: an empty window's NaN error and its unbounded band are null."""
        return {
            "method": "pca_reconstruction",
            "error": _finite(self.error),
            "lower": _finite(self.lower),
            "upper": _finite(self.upper),
            "alert": self.alert,
            "n": self.n,
            "reference_error": self.reference_error,
            "contributions": {f: _finite(v) for f, v in self.contributions.items()},
            "drivers": list(self.drivers),
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class ReconstructionModel:
    """A PCA fitted on the reference, its encodings and its calibrated band. JSON-safe."""

    encodings: tuple[FeatureEncoding, ...]
    components: np.ndarray  # (n_components, d), rows orthonormal
    reference_error: float  # mean per-row squared error on the reference
    row_sd: float  # standard deviation of the per-row error on the reference (ddof 1)
    row_skew: float  # skewness of the per-row error on the reference (Fisher, biased)
    n_reference: int
    reference_contributions: np.ndarray  # (d,)
    k: float = 3.0
    threshold: Threshold = "sampling"
    chunk_band: tuple[float, float] | None = None  # NannyML's band, when fitted with chunks
    min_n: int = 30

    @property
    def features(self) -> list[str]:
        return [e.name for e in self.encodings]

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def residual(self) -> np.ndarray:
        """``R = I - WᵀW``: the projection onto what the kept components do not reconstruct."""
        w = self.components
        return np.eye(w.shape[1]) - w.T @ w

    def encode(self, columns: Mapping[str, np.ndarray], n: int | None = None) -> np.ndarray:
        """Rows of standardised encoded features, in :attr:`features` order (:func:`encode`)."""
        return encode(self.encodings, columns, n)

    def encode_columns(self, columns: FeatureColumns, idx: np.ndarray | None = None) -> np.ndarray:
        """:func:`encode_columns` with this model's encodings."""
        return encode_columns(self.encodings, columns, idx)

    def new_sketch(self) -> MomentSketch:
        return MomentSketch(len(self.encodings))

    def band(self, n: int) -> tuple[float, float]:
        """(lower, upper) for a window of ``n`` rows."""
        if self.threshold == "chunks" and self.chunk_band is not None:
            return self.chunk_band
        if n <= 0:
            return -math.inf, math.inf
        sd = self.row_sd * math.sqrt(1 / n + REFERENCE_TERM / self.n_reference)
        skew = (self.k**2 - 1) * self.row_skew / (6 * math.sqrt(n))
        return self.reference_error - sd * max(self.k - skew, 0.0), self.reference_error + sd * (
            self.k + skew
        )

    def evaluate(self, sketch: MomentSketch) -> ReconstructionResult:
        """The window's error from its moments alone, its band and its drivers."""
        r = self.residual
        e = r @ sketch.second_moment() @ r if sketch.n else np.full((sketch.d, sketch.d), math.nan)
        diag = np.diag(e)
        error = float(np.trace(e))
        lower, upper = self.band(sketch.n)
        alert = sketch.n >= self.min_n and not lower <= error <= upper
        rise = diag - self.reference_contributions
        order = sorted(range(len(diag)), key=lambda c: (-rise[c], c))
        drivers = [self.features[c] for c in order if rise[c] > 0] if alert else []
        return ReconstructionResult(
            error=error,
            lower=lower,
            upper=upper,
            alert=bool(alert),
            n=sketch.n,
            reference_error=self.reference_error,
            contributions={f: float(v) for f, v in zip(self.features, diag, strict=True)},
            drivers=drivers,
        )

    def row_errors(self, z: np.ndarray) -> np.ndarray:
        """Per-row squared errors (for calibration and tests; windows use :meth:`evaluate`)."""
        residual = z @ self.residual
        return np.einsum("ij,ij->i", residual, residual)

    def to_dict(self) -> dict[str, Any]:
        return {
            "encodings": [e.to_dict() for e in self.encodings],
            "components": self.components.tolist(),
            "reference_error": self.reference_error,
            "row_sd": self.row_sd,
            "row_skew": self.row_skew,
            "n_reference": self.n_reference,
            "reference_contributions": self.reference_contributions.tolist(),
            "k": self.k,
            "threshold": self.threshold,
            "chunk_band": list(self.chunk_band) if self.chunk_band is not None else None,
            "min_n": self.min_n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReconstructionModel:
        band = d.get("chunk_band")
        return cls(
            encodings=tuple(FeatureEncoding.from_dict(e) for e in d["encodings"]),
            components=np.array(d["components"], dtype=np.float64).reshape(-1, len(d["encodings"])),
            reference_error=float(d["reference_error"]),
            row_sd=float(d["row_sd"]),
            row_skew=float(d["row_skew"]),
            n_reference=int(d["n_reference"]),
            reference_contributions=np.array(d["reference_contributions"], dtype=np.float64),
            k=float(d["k"]),
            threshold=d["threshold"],
            chunk_band=(float(band[0]), float(band[1])) if band is not None else None,
            min_n=int(d["min_n"]),
        )


def encode(
    encodings: Sequence[FeatureEncoding], columns: Mapping[str, np.ndarray], n: int | None = None
) -> np.ndarray:
    """Rows of standardised encoded features, in ``encodings`` order. A feature absent from
    ``columns`` counts as missing in every row (imputed, so standardised to ~0); ``n`` gives
    the row count when no column is there to say it."""
    sizes = {len(np.asarray(v)) for v in columns.values()} | ({n} if n is not None else set())
    if len(sizes) > 1:
        raise ValueError(f"columns of different lengths: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    out = np.empty((n, len(encodings)))
    for c, enc in enumerate(encodings):
        if enc.name in columns:
            values = np.asarray(columns[enc.name])
        elif enc.kind == "categorical":
            values = np.full(n, None, dtype=object)
        else:
            values = np.full(n, math.nan)
        out[:, c] = enc.encode(values)
    return out


def encode_columns(
    encodings: Sequence[FeatureEncoding], columns: FeatureColumns, idx: np.ndarray | None = None
) -> np.ndarray:
    """:func:`encode` on the join's typed columns (the rows at ``idx``, default all): a numeric
    feature's non-numbers are missing, as in the window's sketches; a categorical feature
    takes a row's category, else its number spelt as the profile spells it
    (``category_string``), so each row's encoding depends on that row alone."""
    rows = np.arange(columns.size) if idx is None else idx
    kinds = {e.name: e.kind for e in encodings}
    return encode(encodings, _typed(columns, kinds, rows), n=int(rows.size))


def _typed(columns: FeatureColumns, kinds: Mapping[str, Kind], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each feature's values at ``rows`` as its kind reads them (see ``encode_columns``).

    A row's encoding depends on that row alone, never on the batch it came in: a categorical
    feature takes a row's category, else its number spelt as a category. (Reading numbers as
    missing whenever some other row of the batch sent text would make a window's moments
    depend on how its events were split over partitions and flushes, and they must not.)"""
    picked: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if kind == "numeric":
            if name in columns.numeric:
                picked[name] = columns.numeric[name][rows]
            continue
        text = columns.categorical[name][rows] if name in columns.categorical else None
        if name in columns.numeric:
            values = columns.numeric[name][rows]
            spelt = category_strings([None if np.isnan(v) else float(v) for v in values.tolist()])
            picked[name] = spelt if text is None else np.where(np.equal(text, NULL), spelt, text)
        elif text is not None:
            picked[name] = text
    return picked


def fit_reconstruction_rows(
    features: Sequence[Mapping[str, Any]], kinds: Mapping[str, Kind], **options: Any
) -> ReconstructionModel:
    """:func:`fit_reconstruction` on reference rows' feature dicts (what a profile is built
    from), typed as the join types a window's events, so reference and windows agree."""
    from driftline.detectors.aggregates import feature_columns

    columns = feature_columns(features)
    picked = _typed(columns, kinds, np.arange(columns.size))
    for name, kind in kinds.items():  # a feature no row has is missing throughout
        if name not in picked:
            picked[name] = np.full(
                columns.size,
                None if kind == "categorical" else math.nan,
                dtype=object if kind == "categorical" else np.float64,
            )
    return fit_reconstruction(picked, kinds, **options)


def _encoding(name: str, kind: Kind, values: np.ndarray) -> FeatureEncoding:
    if kind == "numeric":
        x = np.asarray(values, dtype=np.float64)
        finite = x[np.isfinite(x)]
        fill = float(finite.mean()) if finite.size else 0.0
        x = np.where(np.isfinite(x), x, fill)
        grid, levels = quantile_grid(finite) if finite.size else ((), ())
        if grid:
            x = normal_scores(x, grid, levels)
        freqs: dict[str, float] = {}
        fill_value: float | str = fill
    else:
        cats = np.asarray(values, dtype=object)
        present = cats[~np.equal(cats, NULL)].astype(str)
        uniq, counts = np.unique(present, return_counts=True)
        if uniq.size == 0:
            raise ValueError(f"categorical feature {name!r} has no value in the reference")
        fill_value = str(uniq[int(np.argmax(counts))])  # most frequent; ties: first in sort order
        freqs = {str(u): int(c) / present.size for u, c in zip(uniq, counts, strict=True)}
        filled = np.where(np.equal(cats, NULL), fill_value, cats).astype(str)
        x = np.array([freqs[c] for c in filled.tolist()], dtype=np.float64)
        grid, levels = (), ()
    mean = float(x.mean())
    sd = float(x.std())
    return FeatureEncoding(name, kind, mean, sd if sd > 0 else 1.0, fill_value, freqs, grid, levels)


#: folds of the reference's cross-fitted calibration (see :func:`_held_out_errors`)
CALIBRATION_FOLDS = 5
#: the reference's share of the band's variance, in units of ``row_sd² / n_reference``: the
#: reference error is estimated on held-out rows, and the full PCA a window is judged by
#: meets fresh data with its own sampling error of the same size, so the reference counts
#: twice (with 1, stationary windows of 2000 rows against 4000 alarmed 1.4 % of the time
#: instead of 0.27 %; tests/test_multivariate.py)
REFERENCE_TERM = 2.0


def _held_out_errors(z: np.ndarray, kept: int, *, restandardise: bool = True) -> np.ndarray:
    """Each reference row's squared error under a PCA (``kept`` components) fitted on the
    *other* folds (interleaved rows, :data:`CALIBRATION_FOLDS`).

    Why not the rows' errors under the PCA fitted on all of them: a PCA reconstructs the rows
    it was fitted on better than fresh ones, most when the spectrum is flat (independent
    features): the dropped direction is the sample's least-variance one, whose variance is
    biased low by about ``2 sqrt(d / n)`` (Marchenko-Pastur). With four independent features
    and 4000 reference rows the in-sample reference error was 0.935, fresh windows' 1.003, and
    stationary windows of 2000 rows alarmed 9 % of the time. Held-out rows are fresh for their
    PCA, like a window for the full one (which is fitted on more rows, so the band is, if
    anything, slightly wide)."""
    n, d = z.shape
    folds = np.arange(n) % CALIBRATION_FOLDS
    errors = np.empty(n)
    for f in range(CALIBRATION_FOLDS):
        held = folds == f
        # standardised again on the training folds alone (an affine map of the columns, as
        # the encodings' own), else held-out rows are tied to the training ones through the
        # shared scale: the training folds' low-variance direction is the held-out rows'
        # high-variance one, and the held-out errors come out too high (2 % of stationary
        # windows alarmed below the band with four independent features). Only where the
        # encodings were fitted on these rows: a segment's are its model's, its rows are not
        # centred in them, and its error counts their mean
        zt, zh = z[~held], z[held]
        if restandardise:
            mean, sd = zt.mean(axis=0), zt.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            zt, zh = (zt - mean) / sd, (zh - mean) / sd
        train = MomentSketch(d)
        train.update(zt)
        values, vectors = np.linalg.eigh(train.covariance())
        w = vectors[:, np.argsort(values)[::-1][:kept]].T
        residual = zh - (zh @ w.T) @ w
        errors[held] = np.einsum("ij,ij->i", residual, residual)
    return errors


def _skewness(x: np.ndarray) -> float:
    """Fisher's biased skewness (scipy.stats.skew's default); 0 for a constant."""
    d = x - x.mean()
    m2 = float((d * d).mean())
    return float((d**3).mean()) / m2**1.5 if m2 > 0 else 0.0


def _n_components(ratios: np.ndarray, variance: float | int) -> int:
    """As scikit-learn's PCA: an int is a count; a share keeps the fewest components whose
    cumulative explained variance ratio exceeds it. Unlike scikit-learn, never every
    component: with nothing left to reconstruct the error is rounding noise, and its band
    would alarm at random (two uncorrelated features reach 0.65 only with both kept)."""
    if isinstance(variance, int) and not isinstance(variance, bool) and variance >= 1:
        return min(variance, ratios.size - 1)
    if not 0 < variance < 1:
        raise ValueError(f"variance must be a share in (0, 1) or a component count, not {variance!r}")
    return min(int(np.searchsorted(np.cumsum(ratios), variance, side="right")) + 1, ratios.size - 1)


def fit_reconstruction(
    columns: Mapping[str, np.ndarray],
    kinds: Mapping[str, Kind],
    *,
    variance: float | int = 0.65,
    k: float = 3.0,
    threshold: Threshold = "sampling",
    chunk_size: int | None = None,
    min_n: int = 30,
    encodings: Sequence[FeatureEncoding] | None = None,
) -> ReconstructionModel:
    """Fit encodings, PCA and band on reference columns (``kinds`` names the features used).

    ``encodings`` (another model's, in the order of their names) are kept instead of fitted:
    a segment's model encodes as its whole model does, so one encoded row (and one moment
    sketch fold) serves every slice of a window, and the segment's PCA and band are fitted on
    its own rows in those coordinates (their mean need not be 0: errors use uncentred moments
    on both sides, so the reference error and the windows' agree).

    The PCA is an eigen-decomposition of the reference's covariance, itself read from the
    reference's :class:`MomentSketch`: the same sums a window keeps. ``chunk_size`` also fits
    NannyML's band (consecutive reference chunks of that many rows, mean ± k sd of their
    errors); ``threshold="chunks"`` uses it instead of the size-aware band.
    """
    names = sorted(kinds)
    if len(names) < 2:
        raise ValueError("multivariate drift needs at least two features")
    missing = [f for f in names if f not in columns]
    if missing:
        raise ValueError(f"reference has no column for {missing}")
    given = encodings
    if encodings is None:
        encodings = tuple(_encoding(f, kinds[f], np.asarray(columns[f])) for f in names)
    else:
        encodings = tuple(encodings)
        if [e.name for e in encodings] != names or any(e.kind != kinds[e.name] for e in encodings):
            raise ValueError(f"the given encodings are not those of {names} as {dict(kinds)}")
    z = np.column_stack([e.encode(np.asarray(columns[e.name])) for e in encodings])
    n = z.shape[0]
    if n < 2 * len(names):
        raise ValueError(
            f"reference has {n} rows; fitting {len(names)} features needs at least {2 * len(names)}"
        )
    ref = MomentSketch(len(names))
    ref.update(z)
    values, vectors = np.linalg.eigh(ref.covariance())
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    if not values.sum() > 0:
        raise ValueError(f"no feature of {names} varies in the reference: nothing to reconstruct")
    kept = _n_components(values / values.sum(), variance)
    components = np.ascontiguousarray(vectors[:, :kept].T)
    errors = _held_out_errors(z, kept, restandardise=given is None)
    # the per-feature baseline of ``drivers`` is the reference's split under the very PCA a
    # window is split by (the held-out folds' PCAs split it along other directions); its sum
    # is the in-sample error, a little under ``reference_error``
    r = np.eye(len(names)) - components.T @ components
    contributions = np.diag(r @ ref.second_moment() @ r)
    band = None
    if chunk_size is not None:
        chunk_errors = np.array(
            [errors[s : s + chunk_size].mean() for s in range(0, n - chunk_size + 1, chunk_size)]
        )
        if chunk_errors.size < 2:
            raise ValueError(f"chunk_size {chunk_size} leaves fewer than two reference chunks of {n} rows")
        spread = k * float(chunk_errors.std(ddof=1))
        band = (float(chunk_errors.mean()) - spread, float(chunk_errors.mean()) + spread)
    elif threshold == "chunks":
        raise ValueError('threshold="chunks" needs chunk_size')
    return ReconstructionModel(
        encodings=encodings,
        components=components,
        reference_error=float(errors.mean()),
        row_sd=float(errors.std(ddof=1)),
        row_skew=_skewness(errors),
        n_reference=n,
        reference_contributions=contributions,
        k=k,
        threshold=threshold,
        chunk_band=band,
        min_n=min_n,
    )
