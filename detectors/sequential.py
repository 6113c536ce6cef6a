"""Drift alerts bounded over time: a CUSUM of per-window drift evidence.

Each window's drift verdict is a test at alpha. With 5-minute windows a slice is tested 288
times a day, so "alert when a window drifted" (or two in a row) pages a stationary model every
few days per slice. The per-window verdict stays in every result; what *alerts* is a one-sided
CUSUM (Page 1954) of the windows' evidence, whose threshold is set for an expected run length
under no drift instead of a per-window level:

* a window's evidence is ``z = Φ⁻¹(1 - p)`` of its global drift p-value: Simes' combination of
  its features' raw p-values (the same global test as "any BH-corrected feature drifted"),
  counting only features whose effect size reaches a floor (:data:`DISTANCE_FLOORS`), so a
  change too small to matter adds nothing however much traffic makes it significant; under no
  drift z is (at most) standard normal;
* ``S = min(cap, max(0, S + z - k))``; the rule ``drift_cusum >= h`` fires when S reaches h.

With k = 1.5 and h = 3 the in-control average run length of a N(0, 1) stream is about
6 * 10^4 windows by Siegmund's approximation (:func:`siegmund_arl`): 207 days of 5-minute
windows per slice, 41 days for a model with 5 slices. The pipeline's evidence is more
conservative than N(0, 1) (binned KS, Simes, floors): ``benchmarks/detection.py`` measures
the false alerts per model per 30 days counting every slice. A 0.2 sigma shift at 1000 events
a window (z about 4.5 a window with 7 features) crosses h in one or two windows; a change
whose z is about 2.8 a window (a Jensen-Shannon change of 0.05 in a 3-category feature) needs
two to four. No choice of (k, h) finds the latter within 3 windows almost always *and* keeps
one false alert a month: that needs three windows' evidence to clear about 4.3 standard
deviations, i.e. z of about 3.4 a window (benchmarks/DETECTION.md).
The cap (2h) bounds how long an alert takes to clear after the drift stops (about h/k windows)
without changing when it fires.

References: E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954); D. Siegmund,
*Sequential Analysis* (1985), ch. 2 (ARL approximation); R. J. Simes, "An improved Bonferroni
procedure for multiple tests of significance", Biometrika 73 (1986).

>>> c = DriftCusum()
>>> [round(c.update(z), 2) for z in (0.5, 3.5, 3.5, 0.0)]
[0.0, 2.0, 4.0, 2.5]
>>> round(siegmund_arl(CUSUM_K, CUSUM_H))
59508
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from driftline.schemas.results import DriftTest

__all__ = [
    "CUSUM_H",
    "CUSUM_K",
    "DISTANCE_FLOORS",
    "DriftCusum",
    "siegmund_arl",
    "window_evidence",
]

#: the CUSUM's reference value: evidence below it (z < k) pulls S back down
CUSUM_K = 1.5
#: the default drift rule's threshold on ``drift_cusum`` (DEFAULT_RULES in alerting/rules.py)
CUSUM_H = 3.0
#: effect sizes below which a feature's test counts as no evidence (per distance name):
#: 0.05 reference standard deviations of earth mover's distance; a Jensen-Shannon distance of
#: 0.025 (the smallest change the defaults must find is 0.05); PSI 0.05 (below "moderate")
DISTANCE_FLOORS: Mapping[str, float] = {"wasserstein_normed": 0.05, "jensen_shannon": 0.025, "psi": 0.05}
_Z_CAP = 8.0  # p below ~6e-16 is not more evidence; keeps one window from pinning S forever


def window_evidence(
    drift: Sequence[DriftTest], floors: Mapping[str, float] = DISTANCE_FLOORS
) -> float | None:
    """The window's drift evidence z (None when it tested no feature): Simes' p over the
    features' raw p-values, a feature whose distance is below its floor counting as p = 1."""
    ps = []
    for d in drift:
        if d.kind != "feature":
            continue
        p = d.raw_p_value if d.raw_p_value is not None else d.p_value
        if p is None or not math.isfinite(p):
            continue
        floor = floors.get(d.distance_name or "", 0.0)
        if d.distance is not None and d.distance < floor:
            p = 1.0
        ps.append(p)
    if not ps:
        return None
    p_sorted = np.sort(np.asarray(ps, dtype=np.float64))
    m = p_sorted.size
    simes = float(min(1.0, np.min(p_sorted * m / np.arange(1, m + 1))))
    return float(np.clip(stats.norm.isf(simes), -_Z_CAP, _Z_CAP))


@dataclass(slots=True)
class DriftCusum:
    """One slice's CUSUM, fed once per window in event-time order (see the module docstring).

    ``last_start`` is the newest window fed: a window evaluated again (its final phase, a
    re-delivery) reports the value it produced instead of adding its evidence twice."""

    k: float = CUSUM_K
    cap: float = 2.0 * CUSUM_H
    value: float = 0.0
    last_start: int | None = None

    def update(self, z: float | None) -> float:
        if z is not None:
            self.value = min(self.cap, max(0.0, self.value + z - self.k))
        return self.value

    def observe(self, start: int, z: float | None) -> float | None:
        """Feed the window starting at ``start``; an older window than the last fed returns None
        (it cannot rewind the statistic), the same window its value again."""
        if self.last_start is not None and start <= self.last_start:
            return self.value if start == self.last_start else None
        self.last_start = start
        return self.update(z)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "cap": self.cap, "value": self.value, "last_start": self.last_start}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftCusum:
        last = d.get("last_start")
        return cls(float(d["k"]), float(d["cap"]), float(d["value"]), None if last is None else int(last))


def siegmund_arl(k: float, h: float, mu: float = 0.0) -> float:
    """Siegmund's approximation of a CUSUM's average run length on N(mu, 1) increments minus k
    (in windows): the in-control run length with mu = 0, the detection delay with mu > k."""
    delta = mu - k
    b = h + 1.166
    if abs(delta) < 1e-12:
        return b * b
    return (math.exp(-2.0 * delta * b) + 2.0 * delta * b - 1.0) / (2.0 * delta * delta)
