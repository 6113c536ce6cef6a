"""Integration health: did the data arrive, in the volume and shape it should, before any statistics.

Drift tests and metrics judge the events that arrived; none of them says that a serving app
stopped sending predictions for one channel, that a deploy renamed a feature, or that labels now
come too late to count. These are the alerts an operator needs first, and they are decisions on
counts and on schemas, so they live here, pure: counts and rows in, :class:`HealthEvent` out,
each naming the exact window (its start, ms) and, for schema changes, the position of the first
offending event (whatever the caller uses as one: an offset, a row number, a prediction id).

- :class:`SilenceWatch`: no predictions for a key (the model, or a segment value) for ``N``
  consecutive windows. Windows in which nothing at all arrived are never evaluated by a stream,
  so the watch counts the gap between two windows it is shown as empty windows.
- :func:`volume_band` / :class:`VolumeWatch`: a window's count outside the band learnt from the
  key's past windows: their robust trend (Theil-Sen) extrapolated one window ± ``k`` robust
  standard deviations (Qn of the residuals), widened to at least the Poisson ``alpha``
  quantiles around that centre. Both tolerate the bursts and outages in the history itself;
  the trend follows a daily cycle; the Poisson floor keeps a perfectly regular history (no
  spread) from alarming on ordinary counting noise. The defaults are spent against a false
  alert per model per 30 days over every slice (docs/detectors.md, benchmarks/HEALTH.md).
- :class:`LabelWatch`: label coverage below what the reference's (or history's) coverage allows
  for this many predictions (binomial ``alpha`` quantile), label lag near the horizon, and a
  coverage that has fallen window after window.
- :func:`schema_changes`: a feature missing (absent, not null), a new feature, a value of a JSON
  type the reference never had.

>>> watch = SilenceWatch(windows=2, window_ms=60_000)
>>> watch.update(0, {"": 5, "channel=ios": 3})
[]
>>> watch.update(60_000, {"": 4})
[]
>>> [(e.kind, e.key, e.window_start_ms) for e in watch.update(120_000, {"": 6})]
[('no_predictions', 'channel=ios', 120000)]
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from driftline.detectors.aggregates import FeatureColumns
from driftline.detectors.vocabulary import HEALTH_EVENTS

__all__ = [
    "HEALTH_EVENTS",
    "HealthEvent",
    "LabelWatch",
    "SilenceWatch",
    "VolumeWatch",
    "column_schema_changes",
    "json_type",
    "schema_changes",
    "schema_of",
    "volume_band",
]


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One integration problem, at one window, for one key (slice key or feature name)."""

    kind: str
    key: str
    window_start_ms: int
    detail: dict[str, Any] = field(default_factory=dict)
    #: the first offending event's position (schema changes), else None
    position: Any = None

    def __post_init__(self) -> None:
        if self.kind not in HEALTH_EVENTS:  # the names live in detectors/vocabulary.py
            raise ValueError(f"unknown health event kind {self.kind!r}: one of {sorted(HEALTH_EVENTS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "window_start_ms": self.window_start_ms,
            "detail": dict(self.detail),
            "position": self.position,
        }


class SilenceWatch:
    """Per key, the run of consecutive windows without predictions; fires once when it
    reaches ``windows``, and says so again (``predictions_resumed``) when traffic returns.

    A key is watched from the first window it has predictions in (or from the start, if it is
    in ``expected``). Windows must be shown in increasing order; a window start that skips
    ahead counts the skipped windows as empty for every key, and an event at a skipped window
    carries that window's start.
    """

    def __init__(self, windows: int, window_ms: int, expected: Iterable[str] = ()) -> None:
        if windows < 1 or window_ms <= 0:
            raise ValueError("windows must be >= 1 and window_ms > 0")
        self.windows = windows
        self.window_ms = window_ms
        self._streak: dict[str, int] = dict.fromkeys(expected, 0)
        self._last: int | None = None

    def update(self, window_start_ms: int, counts: Mapping[str, int]) -> list[HealthEvent]:
        if self._last is not None and window_start_ms <= self._last:
            return []  # already seen (re-delivery) or out of order: decided before
        events: list[HealthEvent] = []
        skipped = 0 if self._last is None else (window_start_ms - self._last) // self.window_ms - 1
        for key in sorted(self._streak):
            streak = self._streak[key]
            for s in range(skipped):  # the empty windows between the last shown and this one
                streak += 1
                if streak == self.windows:
                    start = window_start_ms - (skipped - s) * self.window_ms
                    events.append(self._silent(key, start, streak))
            if counts.get(key, 0) > 0:
                if streak >= self.windows:
                    events.append(
                        HealthEvent("predictions_resumed", key, window_start_ms, {"silent_windows": streak})
                    )
                streak = 0
            else:
                streak += 1
                if streak == self.windows:
                    events.append(self._silent(key, window_start_ms, streak))
            self._streak[key] = streak
        for key in sorted(set(counts) - set(self._streak)):
            if counts[key] > 0:
                self._streak[key] = 0
        self._last = window_start_ms
        return events

    def _silent(self, key: str, start: int, streak: int) -> HealthEvent:
        return HealthEvent(
            "no_predictions",
            key,
            start,
            {"windows": streak, "since_ms": start - (streak - 1) * self.window_ms},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "window_ms": self.window_ms,
            "streak": dict(self._streak),
            "last": self._last,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SilenceWatch:
        w = cls(int(d["windows"]), int(d["window_ms"]))
        w._streak = {str(k): int(v) for k, v in d["streak"].items()}
        w._last = None if d["last"] is None else int(d["last"])
        return w


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, 1 / (j - i)) of every pair i < j of n windows."""
    i, j = np.triu_indices(n, 1)
    return i, j, 1.0 / (j - i)


def _median(a: np.ndarray) -> float:
    """``np.median`` of a 1-d array by one partition: a fifth of its cost on the few dozen to
    thousand values here, and the band is computed for every slice of every window."""
    m = a.size // 2
    if a.size % 2:
        return float(np.partition(a, m)[m])
    p = np.partition(a, (m - 1, m))
    return 0.5 * (float(p[m - 1]) + float(p[m]))


def volume_trend(history: Sequence[int]) -> tuple[float, float]:
    """(expected count of the next window, robust sd of the counts around their trend).

    The trend is Theil-Sen's line through the history (the median of pairwise slopes, then
    the median intercept), extrapolated one window on: a flat median lags a daily cycle by
    half the history (on a rate of 1000 varying ±30 % a day, about 150 at 48 windows of 5
    minutes), which is the false alarm it would raise, while the median slope still ignores
    up to 29 % of outage or burst windows in the history. The spread is the Qn scale of the
    residuals, so the trend itself does not widen the band. Fewer than 3 windows: the median
    and 1.4826 · the MAD.
    """
    h = np.asarray(history, dtype=float)
    if h.size < 3:
        med = _median(h)
        return med, 1.4826 * _median(np.abs(h - med))
    n = h.size
    i, j, inv = _pairs(n)
    slope = _median((h[j] - h[i]) * inv)
    t = np.arange(n, dtype=float)
    intercept = _median(h - slope * t)
    r = h - intercept - slope * t
    # Qn of the residuals (Rousseeuw & Croux 1993): the C(n//2 + 1, 2)-th smallest pairwise
    # distance, times 2.2219 and the small-sample factor. As robust as the MAD (breakdown
    # 50 %) and two thirds of its standard error (efficiency 82 % against 37 %): with 48
    # windows the MAD is 40 % low often enough to page every few days at any useful k
    half = n // 2 + 1
    rank = half * (half - 1) // 2 - 1
    qn = float(np.partition(np.abs(r[j] - r[i]), rank)[rank])
    spread = 2.2219 * qn * (n / (n + 1.4) if n % 2 else n / (n + 3.8))
    return max(intercept + slope * n, 0.0), spread


def volume_band(history: Sequence[int], *, k: float = 6.0, alpha: float = 1e-6) -> tuple[float, float]:
    """(low, high) for the next window's count: the :func:`volume_trend` centre ± ``k``
    robust sd, widened to at least the Poisson ``alpha/2`` and ``1 - alpha/2`` quantiles at
    the centre (a perfectly regular history has no spread, but its next count still has
    counting noise).

    >>> volume_band([100, 104, 96, 100, 101, 99, 400, 100])
    (56.0, 154.0)
    """
    if not len(history):
        raise ValueError("volume_band needs at least one past window")
    centre, sd = volume_trend(history)
    if centre <= 0:
        return 0.0, 0.0
    spread = k * sd
    low = min(centre - spread, _poisson_ppf(alpha / 2, centre))
    high = max(centre + spread, _poisson_ppf(1.0 - alpha / 2, centre))
    return max(low, 0.0), high


def _binom_ppf(q: float, n: int, p: float) -> int:
    """``scipy.stats.binom.ppf(q, n, p)`` by its special functions (as :func:`_poisson_ppf`)."""
    if p >= 1.0:
        return n
    if p <= 0.0:
        return 0
    vals = math.ceil(float(special.bdtrik(q, n, p)))
    below = max(vals - 1, 0)
    return int(below if float(special.bdtr(below, n, p)) >= q else vals)


def _poisson_ppf(q: float, mu: float) -> float:
    """``scipy.stats.poisson.ppf(q, mu)`` (its ``isf(a)`` is ``ppf(1 - a)``), by the same two
    special functions without the generic distribution machinery, which costs a hundred
    times more per call: the band is computed for every slice of every window."""
    vals = math.ceil(float(special.pdtrik(q, mu)))
    below = max(vals - 1, 0)
    return float(below if float(special.pdtr(below, mu)) >= q else vals)


class VolumeWatch:
    """Per key, the last ``history`` window counts judged in band; a window outside
    :func:`volume_band` of those is an event (from ``min_history`` past windows on).

    A window judged out of band is kept out of the history the band is fitted on: otherwise
    the trend learns a lasting drop within a few windows and the alert resolves while the
    traffic is still down, and returning traffic is judged against the outage. So the band
    stays the pre-anomaly one for as long as the anomaly lasts, and the first window back in
    it resolves the alert. Re-learning: the ``relearn``-th consecutive out-of-band window is
    still an event, and then the history restarts from the last ``min(history, relearn)`` of
    those windows, so the next window is judged against the new level (a permanent change
    pages for exactly ``relearn`` windows, then resolves). Windows not yet judged (fewer than
    ``min_history``) always join the history.
    """

    def __init__(
        self,
        *,
        history: int = 48,
        min_history: int = 8,
        k: float = 6.0,
        alpha: float = 1e-6,
        relearn: int = 288,
    ) -> None:
        if relearn < min_history:
            raise ValueError("relearn must be >= min_history: the new level could never be judged")
        self.history, self.min_history, self.k, self.alpha = history, min_history, k, alpha
        self.relearn = relearn
        self._counts: dict[str, deque[int]] = {}
        #: per key, the current run of consecutive out-of-band windows (its last counts, and its length)
        self._outside: dict[str, deque[int]] = {}
        self._run: dict[str, int] = {}

    def update(self, window_start_ms: int, counts: Mapping[str, int]) -> list[HealthEvent]:
        events = []
        for key in sorted(set(counts) | set(self._counts)):
            count = int(counts.get(key, 0))
            past = self._counts.setdefault(key, deque(maxlen=self.history))
            if len(past) >= self.min_history:
                low, high = volume_band(list(past), k=self.k, alpha=self.alpha)
                if not low <= count <= high:
                    kind = "volume_low" if count < low else "volume_high"
                    run = self._run.get(key, 0) + 1
                    events.append(
                        HealthEvent(
                            kind, key, window_start_ms,
                            {"count": count, "low": low, "high": high, "windows_out": run},
                        )
                    )
                    outside = self._outside.setdefault(key, deque(maxlen=min(self.history, self.relearn)))
                    outside.append(count)
                    if run >= self.relearn:  # accepted as the new normal
                        self._counts[key] = deque(outside, maxlen=self.history)
                        del self._outside[key], self._run[key]
                    else:
                        self._run[key] = run
                    continue
            past.append(count)
            self._outside.pop(key, None)
            self._run.pop(key, None)
        return events

    def keys(self) -> set[str]:
        """The keys watched (every key ever shown with a count)."""
        return set(self._counts)

    def band(self, key: str) -> tuple[float, float] | None:
        """The band the next window of ``key`` is judged by (None: too few past windows)."""
        past = self._counts.get(key, ())
        if len(past) < self.min_history:
            return None
        return volume_band(list(past), k=self.k, alpha=self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "min_history": self.min_history,
            "k": self.k,
            "alpha": self.alpha,
            "relearn": self.relearn,
            "counts": {k: list(v) for k, v in self._counts.items()},
            "outside": {k: list(v) for k, v in self._outside.items()},
            "run": dict(self._run),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, relearn: int = 288) -> VolumeWatch:
        """From :meth:`to_dict`; a snapshot from before re-learning (no ``relearn``, no run)
        restores with ``relearn`` and no out-of-band run."""
        w = cls(
            history=int(d["history"]),
            min_history=int(d["min_history"]),
            k=float(d["k"]),
            alpha=float(d["alpha"]),
            relearn=int(d.get("relearn", relearn)),
        )
        w._counts = {str(k): deque((int(c) for c in v), maxlen=w.history) for k, v in d["counts"].items()}
        size = min(w.history, w.relearn)
        outside = d.get("outside", {})
        w._outside = {str(k): deque((int(c) for c in v), maxlen=size) for k, v in outside.items()}
        w._run = {str(k): int(v) for k, v in d.get("run", {}).items()}
        return w


class LabelWatch:
    """Labels per key at each window's final phase.

    - ``label_coverage_low``: fewer labelled predictions than the binomial ``alpha`` quantile
      of ``predictions`` draws at ``expected_coverage`` (the reference's, or a learnt one),
      and a coverage more than ``tolerance`` below it (at an expected coverage of 1.0 the
      binomial quantile is every prediction, and one missing label is no incident);
    - ``label_lag_high``: a label-lag quantile (the caller's, e.g. p90 of label time minus
      prediction time) above ``lag_share`` of the horizon: labels later than the horizon are
      lost, so a lag approaching it is the warning before coverage falls;
    - ``label_coverage_falling``: coverage lower in each of the last ``trend_windows``
      windows than in the one before, by ``min_drop`` in all.
    """

    def __init__(
        self,
        horizon_ms: int,
        *,
        expected_coverage: float | None = None,
        alpha: float = 1e-6,
        lag_share: float = 0.8,
        trend_windows: int = 4,
        min_drop: float = 0.05,
        tolerance: float = 0.0,
    ) -> None:
        self.horizon_ms, self.expected_coverage, self.alpha = horizon_ms, expected_coverage, alpha
        self.lag_share, self.trend_windows, self.min_drop = lag_share, trend_windows, min_drop
        self.tolerance = tolerance
        self._z = float(special.ndtri(1 - alpha))
        self._coverage: dict[str, deque[float]] = {}

    def update(
        self, window_start_ms: int, key: str, predictions: int, labelled: int, lag_ms: float | None = None
    ) -> list[HealthEvent]:
        events: list[HealthEvent] = []
        if predictions <= 0:
            return events
        coverage = labelled / predictions
        if self.expected_coverage is not None:
            floor = _binom_ppf(self.alpha, predictions, self.expected_coverage)
            if labelled < floor and coverage < self.expected_coverage - self.tolerance:
                events.append(
                    HealthEvent(
                        "label_coverage_low",
                        key,
                        window_start_ms,
                        {
                            "coverage": coverage,
                            "expected": self.expected_coverage,
                            "labelled": labelled,
                            "min_labelled": floor,
                        },
                    )
                )
        if lag_ms is not None and lag_ms > self.lag_threshold_ms:
            detail = {"lag_ms": lag_ms, "threshold_ms": self.lag_threshold_ms, "horizon_ms": self.horizon_ms,
                      "labelled": labelled}
            events.append(HealthEvent("label_lag_high", key, window_start_ms, detail))
        past = self._coverage.setdefault(key, deque(maxlen=self.trend_windows + 1))
        past.append(coverage)
        if len(past) == past.maxlen:
            run = list(past)
            # the fall must also be more than the counting noise of two windows allows at
            # ``alpha`` (normal approximation at this window's size): at 500 predictions and
            # coverage 0.9, 4 falls of 0.05 in all happen by chance every few hundred windows.
            # The noise is the expected coverage's when known: the run's first window is the
            # highest by selection, and its own p(1 - p) understates the noise
            p = run[0] if self.expected_coverage is None else self.expected_coverage
            noise = self._z * math.sqrt(2 * p * (1 - p) / predictions)
            falling = all(b < a for a, b in itertools.pairwise(run))
            if falling and run[0] - run[-1] >= max(self.min_drop, noise):
                events.append(
                    HealthEvent(
                        "label_coverage_falling", key, window_start_ms, {"coverage": run[1:], "from": run[0]}
                    )
                )
        return events

    @property
    def lag_threshold_ms(self) -> float:
        """The lag above which ``label_lag_high`` fires: ``lag_share`` of the horizon."""
        return self.lag_share * self.horizon_ms

    def trend_judged(self, key: str) -> bool:
        """Whether the last update of ``key`` judged the trend (it has ``trend_windows + 1`` windows)."""
        return len(self._coverage.get(key, ())) == self.trend_windows + 1

    def to_dict(self) -> dict[str, Any]:
        return {"coverage": {k: list(v) for k, v in self._coverage.items()}}

    def restore(self, d: Mapping[str, Any]) -> None:
        """Continue from :meth:`to_dict` (the thresholds come from configuration, not state)."""
        self._coverage = {
            str(k): deque((float(c) for c in v), maxlen=self.trend_windows + 1)
            for k, v in d["coverage"].items()
        }


def json_type(value: Any) -> str | None:
    """The JSON type of a decoded value (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"


def schema_of(rows: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    """Feature → the JSON types its non-null values had in reference rows (``features`` dicts)."""
    types: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            seen = types.setdefault(name, set())
            t = json_type(value)
            if t is not None:
                seen.add(t)
    return {name: frozenset(t) for name, t in types.items()}


def schema_changes(
    expected: Mapping[str, frozenset[str]],
    features: Sequence[Mapping[str, Any]],
    positions: Sequence[Any],
    window_start_ms: int,
) -> list[HealthEvent]:
    """One event per (change, feature) in a window's events, at its first offending position.

    ``features[i]`` is event i's features, ``positions[i]`` its position. A feature *missing*
    is absent from the event (null is a missing value, which data quality counts); a *type
    change* is a non-null value of a JSON type the reference never had for that feature (a
    feature the reference only ever saw null accepts any type).
    """
    if len(features) != len(positions):
        raise ValueError("features and positions must have the same length")
    first: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], str] = {}
    names = frozenset(expected)
    for i, row in enumerate(features):
        keys = row.keys()
        found: list[tuple[str, str]] = [("new_feature", f) for f in keys - names]
        found += [("feature_missing", f) for f in names - keys]
        for f in keys & names:
            t = json_type(row[f])
            if t is not None and expected[f] and t not in expected[f]:
                found.append(("type_change", f))
                seen.setdefault(("type_change", f), t)
        for change in found:
            first.setdefault(change, i)
            counts[change] = counts.get(change, 0) + 1
    events = []
    for change in sorted(first, key=lambda c: (first[c], c)):
        kind, feature = change
        detail: dict[str, Any] = {"events": counts[change], "share": counts[change] / len(features)}
        if kind == "type_change":
            detail |= {"expected": sorted(expected[feature]), "got": seen[change]}
        events.append(HealthEvent(kind, feature, window_start_ms, detail, positions[first[change]]))
    return events


def column_schema_changes(
    expected: Mapping[str, frozenset[str]],
    columns: FeatureColumns,
    rows: Sequence[Mapping[str, Any]],
    window_starts: np.ndarray,
    position: Callable[[int], Any],
) -> list[HealthEvent]:
    """:func:`schema_changes` on a batch already split into columns (ingest's), at the cost of
    a few array passes per feature: only rows whose value is null or absent are looked at one
    by one (to tell an absent key from a null), and only for the features that have some.

    ``rows[i]`` is event i's features, ``window_starts[i]`` its window's start and
    ``position(i)`` its position; each event is named at its first offending row.
    """
    n = columns.size
    if n == 0:
        return []
    found: list[tuple[int, str, str, int, dict[str, Any]]] = []
    names = set(columns.present)
    for feature in sorted(names - set(expected)):
        present = np.flatnonzero(columns.present[feature])
        at = [int(present[0])] if present.size else [i for i, r in enumerate(rows) if feature in r]
        if at:
            found.append((at[0], "new_feature", feature, max(int(present.size), 1), {}))
    for feature in sorted(expected):
        if feature not in names:
            found.append((0, "feature_missing", feature, n, {}))
            continue
        gaps = np.flatnonzero(~columns.present[feature])
        absent = [int(i) for i in gaps.tolist() if feature not in rows[int(i)]]
        if absent:
            found.append((absent[0], "feature_missing", feature, len(absent), {}))
        allowed = expected[feature]
        if not allowed:
            continue
        wrong = np.zeros(n, dtype=bool)
        if "number" not in allowed and feature in columns.numeric_mask:
            wrong |= columns.numeric_mask[feature]
        if not allowed & {"string", "boolean"} and feature in columns.categorical_mask:
            wrong |= columns.categorical_mask[feature]
        bad = np.flatnonzero(wrong)
        if bad.size:
            first = int(bad[0])
            got = json_type(rows[first][feature])
            found.append(
                (first, "type_change", feature, int(bad.size), {"expected": sorted(allowed), "got": got})
            )
    return [
        HealthEvent(
            kind,
            feature,
            int(window_starts[row]),
            {"events": count, "share": count / n, **detail},
            position(row),
        )
        for row, kind, feature, count, detail in sorted(found, key=lambda f: (f[0], f[1], f[2]))
    ]
