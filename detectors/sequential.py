"""Drift alerts bounded over time: one CUSUM per tested feature, spent from a monthly budget.

Each window's drift verdict is a test at alpha. With 5-minute windows a slice is tested 288
times a day, so "alert when a window drifted" (or two in a row) pages a stationary model every
few days per slice. The per-window verdict stays in every result; what *alerts* is a set of
one-sided CUSUMs (Page 1954), one per statistic the window tests (each feature, and the
prediction entry), whose common threshold is set so that the *union* over the model's
statistics and slices keeps the expected false alerts under one per 30 days:

* a statistic's evidence is ``z = Φ⁻¹(1 - p)`` of its *raw* p-value; a feature whose effect size
  is under a floor (:data:`DISTANCE_FLOORS`) contributes ``min(z, 0)``, so a change too small to
  matter adds nothing however much traffic makes it significant (and the floor only ever makes
  the evidence smaller, which keeps the null run length of N(0, 1) evidence a lower bound);
* ``S_i = min(2h, max(0, S_i + z_i - k))`` per statistic, k = :data:`CUSUM_K`;
* the threshold h is Bonferroni-spent (:func:`spent_threshold`): each of the M = statistics x
  slices CUSUMs gets an in-control average run length of M times the windows in 30 days, by
  Siegmund's approximation (:func:`siegmund_arl`), so the model's expected false alerts per 30
  days are at most M x (windows / ARL) = 1;
* what users see and rules watch, ``drift_cusum``, is ``CUSUM_H * max_i S_i / h``: the largest
  per-statistic CUSUM on one scale whatever the model's size, so the default rule stays
  ``drift_cusum >= 3`` (:data:`CUSUM_H`) for every model; alert evidence names the statistics at
  or over it (:meth:`DriftCusum.crossed`).

Why per statistic rather than one CUSUM of the window's combined (Simes) evidence: a change in
one feature of seven is diluted by the combination (its p-value is multiplied by up to 7 every
window), where the per-statistic CUSUMs pay for multiplicity once, in h, and only
logarithmically (h grows with log M). On the benchmark model (7 features and the prediction,
1000 events a window) a Jensen-Shannon change of 0.05 in a 3-category feature gives z of about
2.9 a window: the per-window chi-square test has noncentrality of only about 13 there
(8 n ln2 JS^2), so a direction-blind per-window statistic cannot be summed to "within 3
windows" in 95 % of trials at one false alert a month (benchmarks/DETECTION.md gives the share
reached, docs/detectors.md the ceiling and what would lift it).

References: E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954); D. Siegmund,
*Sequential Analysis* (1985), ch. 2 (ARL approximation).

>>> c = DriftCusum()
>>> [round(c.update({"feature:a": z}, 3.0), 2) for z in (0.5, 3.5, 3.5, 0.0)]
[0.0, 2.0, 4.0, 2.5]
>>> round(spent_threshold(8 * 8640), 2)  # one slice of 7 features and the prediction
3.05
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize, stats

from driftline.schemas.results import DriftTest

__all__ = [
    "BUDGET_MS",
    "CUSUM_H",
    "CUSUM_K",
    "CUSUM_KINDS",
    "DISTANCE_FLOORS",
    "DriftCusum",
    "siegmund_arl",
    "spent_threshold",
    "statistic_evidence",
    "threshold_for",
]

#: the CUSUMs' reference value: evidence below it (z < k) pulls S back down. 1.5 maximised the
#: share of the benchmark's category change found within 3 windows among k in 1 to 2.5 at the
#: same false-alert budget (benchmarks/DETECTION.md)
CUSUM_K = 1.5
#: the scale ``drift_cusum`` is reported on: a statistic's S reaches its spent threshold h
#: exactly when ``drift_cusum`` reaches this (the default drift rule's threshold)
CUSUM_H = 3.0
#: the span the false-alert budget is spent over: at most one expected false alert per model
#: (counting every slice) per 30 days
BUDGET_MS = 30 * 86_400_000
#: the drift entries that have a CUSUM: those complete at a window's provisional close, when the
#: label-free rules are judged (label drift exists only once labels arrive, at the final close,
#: after the window's evidence was fed)
CUSUM_KINDS = ("feature", "prediction")
#: effect sizes below which a feature's test counts as no evidence (per distance name):
#: 0.05 reference standard deviations of earth mover's distance; a Jensen-Shannon distance of
#: 0.025 (the smallest change the defaults must find is 0.05); PSI 0.05 (below "moderate")
DISTANCE_FLOORS: Mapping[str, float] = {"wasserstein_normed": 0.05, "jensen_shannon": 0.025, "psi": 0.05}
_Z_CAP = 8.0  # p below ~6e-16 is not more evidence; keeps one window from pinning S forever


def statistic_key(d: DriftTest) -> str:
    """The name a drift entry's CUSUM is kept under (kind and feature: a feature may be called
    ``prediction``)."""
    return f"{d.kind}:{d.feature}"


def statistic_evidence(
    drift: Sequence[DriftTest], floors: Mapping[str, float] = DISTANCE_FLOORS
) -> dict[str, float]:
    """Each tested statistic's evidence ``z = Φ⁻¹(1 - raw p)``, by :func:`statistic_key`; an
    entry under its effect floor gives ``min(z, 0)``; untested entries are absent."""
    tested: list[DriftTest] = []
    ps: list[float] = []
    for d in drift:
        if d.kind not in CUSUM_KINDS:
            continue
        p = d.raw_p_value if d.raw_p_value is not None else d.p_value
        if p is None or not math.isfinite(p):
            continue
        tested.append(d)
        ps.append(p)
    if not tested:
        return {}
    # one norm.isf call for the window: scipy's per-call checks cost ~1 ms, the values are the
    # element-wise ones (issue 15)
    zs = stats.norm.isf(np.asarray(ps, dtype=np.float64)).tolist()
    out: dict[str, float] = {}
    for d, zi in zip(tested, zs, strict=True):
        z = float(min(_Z_CAP, max(-_Z_CAP, zi)))
        floor = floors.get(d.distance_name or "", 0.0)
        if d.distance is not None and d.distance < floor:
            z = min(z, 0.0)
        out[statistic_key(d)] = z
    return out


def siegmund_arl(k: float, h: float, mu: float = 0.0) -> float:
    """Siegmund's approximation of a CUSUM's average run length on N(mu, 1) increments minus k
    (in windows): the in-control run length with mu = 0, the detection delay with mu > k."""
    delta = mu - k
    b = h + 1.166
    if abs(delta) < 1e-12:
        return b * b
    return (math.exp(-2.0 * delta * b) + 2.0 * delta * b - 1.0) / (2.0 * delta * delta)


@lru_cache(maxsize=1024)
def spent_threshold(arl: float, k: float = CUSUM_K) -> float:
    """The h whose in-control run length (Siegmund, N(0, 1) evidence) is ``arl`` windows."""
    if arl <= siegmund_arl(k, 0.0):
        return 0.0
    return float(optimize.brentq(lambda h: siegmund_arl(k, h) - arl, 0.0, 100.0, xtol=1e-9))


def threshold_for(window_ms: int, statistics: int, slices: int, k: float = CUSUM_K) -> float:
    """Each statistic's h for a model whose windows last ``window_ms`` and which has
    ``statistics`` CUSUMs in each of ``slices`` slices: the budget of one false alert per
    :data:`BUDGET_MS` split evenly (Bonferroni) over all of them."""
    windows = BUDGET_MS / window_ms
    return spent_threshold(windows * max(1, statistics) * max(1, slices), k)


@dataclass(slots=True)
class DriftCusum:
    """One slice's CUSUMs, one per statistic, fed once per window in event-time order (see the
    module docstring).

    ``value`` is the last reported ``drift_cusum``; ``last_start`` is the newest window fed: a
    window evaluated again (its final phase, a re-delivery) reports the value it produced
    instead of adding its evidence twice. A statistic absent from a window keeps its S."""

    k: float = CUSUM_K
    values: dict[str, float] = field(default_factory=dict)
    h: float = CUSUM_H
    value: float = 0.0
    last_start: int | None = None

    def update(self, z: Mapping[str, float], h: float) -> float:
        # a budget smaller than Siegmund's run length at h = 0 (a window of days) spends h = 0:
        # any evidence over k alerts, reported large but finite
        self.h = h = max(h, 1e-9)
        cap = 2.0 * h
        for key, zi in z.items():
            self.values[key] = min(cap, max(0.0, self.values.get(key, 0.0) + zi - self.k))
        self.value = self.normalised(max(self.values.values(), default=0.0))
        return self.value

    def normalised(self, s: float) -> float:
        return CUSUM_H * s / self.h

    def observe(self, start: int, z: Mapping[str, float], h: float) -> float | None:
        """Feed the window starting at ``start``; an older window than the last fed returns None
        (it cannot rewind the statistics), the same window its value again."""
        if self.last_start is not None and start <= self.last_start:
            return self.value if start == self.last_start else None
        self.last_start = start
        return self.update(z, h)

    def crossed(self) -> list[dict[str, Any]]:
        """The statistics at or over the threshold, largest first: what alert evidence names
        (``kind``, ``feature`` and its own ``drift_cusum`` on the common scale)."""
        out = []
        for key, s in sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0])):
            v = self.normalised(s)
            if v < CUSUM_H:
                break
            kind, _, feature = key.partition(":")
            out.append({"feature": feature, "kind": kind, "drift_cusum": v})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "values": dict(sorted(self.values.items())), "h": self.h, "value": self.value,
                "last_start": self.last_start}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftCusum:
        """From :meth:`to_dict`; a snapshot of the single combined CUSUM (before per-statistic
        ones) restores its window position with every statistic at 0."""
        last = d.get("last_start")
        last_start = None if last is None else int(last)
        if "values" not in d:
            return cls(k=float(d["k"]), last_start=last_start)
        return cls(float(d["k"]), {str(k): float(v) for k, v in d["values"].items()}, float(d["h"]),
                   float(d["value"]), last_start)
