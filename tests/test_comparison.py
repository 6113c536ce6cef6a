"""The comparison interface (detectors/comparison.py): a window against its reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.aggregates import AggregateSpec, WindowAggregate
from driftline.detectors.comparison import Reference, TestPolicy, compare
from driftline.detectors.sketches import CategoricalSketch


def _window(counts: dict[str, int]) -> WindowAggregate:
    agg = WindowAggregate(AggregateSpec(categories={"colour": sorted(counts)}))
    sketch = CategoricalSketch(categories=sorted(counts))
    sketch.update(np.array([c for c, n in counts.items() for _ in range(n)], dtype=object))
    agg.categorical["colour"] = sketch
    agg.n_predictions = sum(counts.values())
    agg.present["colour"] = agg.n_predictions
    return agg


@pytest.mark.parametrize("correction", ["bh", "bonferroni", "none"])
def test_a_statistic_of_exactly_zero_is_reported_as_zero_not_missing(correction: str) -> None:
    """Identical proportions give chi-square 0.0 with p = 1. The correction used to round-trip
    results through ``statistic or nan``, which turned 0.0 into null in every report."""
    counts = {"red": 30, "blue": 70}
    ref = Reference("test", categorical={"colour": dict(counts)})
    found = compare(_window(counts), ref, TestPolicy(correction=correction))
    (entry,) = found.drift
    expected = stats.chi2_contingency(np.array([[30, 70], [30, 70]]), correction=False)
    assert entry.statistic == expected.statistic == 0.0
    assert entry.p_value == pytest.approx(1.0)
    assert (entry.drifted, found.dataset_drift, found.drift_share) == (False, False, 0.0)


def test_a_window_without_reference_has_quality_but_no_drift() -> None:
    found = compare(_window({"red": 1, "blue": 3}), None, TestPolicy())
    assert (found.drift, found.drift_share, found.dataset_drift) == ([], None, None)
    assert found.quality["colour"].missing_rate == 0.0
