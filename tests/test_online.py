"""OnlineDetector against river itself: same stream in, same detections out, restarts included."""

from __future__ import annotations

import doctest
import json
from typing import Any

import numpy as np
import pytest
from river import drift
from river.drift import binary

from driftline.detectors import online
from driftline.detectors.online import DETECTORS, Detection, OnlineDetector

pytestmark = pytest.mark.timeout(60)

_RIVER = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley, "kswin": drift.KSWIN,
          "ddm": binary.DDM, "eddm": binary.EDDM, "hddm_a": binary.HDDMA, "hddm_w": binary.HDDMW}


def _stream(kind: str, n: int = 3000, seed: int = 7) -> np.ndarray:
    """Several regime changes, so every detector fires more than once (and resets in between)."""
    rng = np.random.default_rng(seed)
    if DETECTORS[kind][1]:  # error rates 0.1 -> 0.4 -> 0.05 -> 0.5
        rates = np.repeat([0.1, 0.4, 0.05, 0.5], n // 4)
        return (rng.random(rates.size) < rates).astype(np.float64)
    means = np.repeat([0.0, 1.5, -1.0, 2.0], n // 4)
    return means + rng.normal(size=means.size)


def _oracle(kind: str, values: np.ndarray, params: dict[str, Any]) -> list[int]:
    det = _RIVER[kind](**params)
    out = []
    for i, x in enumerate(values.tolist()):
        det.update(bool(x) if DETECTORS[kind][1] else x)
        if det.drift_detected:
            out.append(i)
    return out


def _params(kind: str) -> dict[str, Any]:
    return {"seed": 0} if kind == "kswin" else {}


@pytest.mark.parametrize("kind", sorted(DETECTORS))
def test_detections_equal_rivers_own(kind: str) -> None:
    values = _stream(kind)
    times = 1_000_000 + np.arange(values.size, dtype=np.int64) * 250
    expected = _oracle(kind, values, _params(kind))
    assert len(expected) >= 2, "the stream must make river fire, or the comparison proves nothing"
    det = OnlineDetector(kind, "error" if DETECTORS[kind][1] else "score")
    got: list[Detection] = []
    for chunk in np.array_split(np.arange(values.size), 7):  # uneven batches
        got += det.update(values[chunk], times[chunk])
    assert [d.index for d in got] == expected
    assert [d.time_ms for d in got] == [1_000_000 + i * 250 for i in expected]
    assert {(d.detector, d.signal) for d in got} == {(kind, det.signal)}


@pytest.mark.parametrize("kind", sorted(DETECTORS))
@pytest.mark.parametrize("cut", [1, 517, 1499, 2222])
def test_round_trip_mid_stream_changes_nothing(kind: str, cut: int) -> None:
    values = _stream(kind)
    times = np.arange(values.size, dtype=np.int64)
    expected = _oracle(kind, values, _params(kind))
    signal = "error" if DETECTORS[kind][1] else "score"
    first = OnlineDetector(kind, signal)
    got = first.update(values[:cut], times[:cut])
    payload = json.loads(json.dumps(first.to_dict(), allow_nan=False))  # strict JSON on the wire
    restored = OnlineDetector.from_dict(payload)
    got += restored.update(values[cut:], times[cut:])
    assert [d.index for d in got] == expected
    assert restored.to_dict() == _fed(kind, signal, values).to_dict()


def _fed(kind: str, signal: str, values: np.ndarray) -> OnlineDetector:
    det = OnlineDetector(kind, signal)
    det.update(values, np.arange(values.size))
    return det


def test_batch_is_fed_in_event_time_order_and_nan_skipped() -> None:
    rng = np.random.default_rng(3)
    values = np.r_[rng.normal(size=1000), rng.normal(3.0, size=1000)]
    times = np.arange(values.size, dtype=np.int64) * 10
    expected = _oracle("adwin", values, {})
    perm = rng.permutation(values.size)
    with_gaps = np.insert(values[perm], [5, 50], np.nan)
    gap_times = np.insert(times[perm], [5, 50], [7, 9])
    got = OnlineDetector("adwin", "score").update(with_gaps, gap_times)
    assert [d.index for d in got] == expected
    assert [d.time_ms for d in got] == [i * 10 for i in expected]


def test_params_reach_river() -> None:
    values = _stream("page_hinkley")
    expected = _oracle("page_hinkley", values, {"threshold": 10.0, "min_instances": 100})
    det = OnlineDetector("page_hinkley", "abs_error", {"threshold": 10.0, "min_instances": 100})
    assert [d.index for d in det.update(values, np.arange(values.size))] == expected
    assert expected != _oracle("page_hinkley", values, {})


def test_binary_detectors_refuse_real_valued_signals() -> None:
    with pytest.raises(ValueError, match="only the 'error' signal"):
        OnlineDetector("ddm", "score")
    with pytest.raises(ValueError, match="0/1"):
        OnlineDetector("eddm", "error").update(np.array([0.0, 0.5]), np.array([1, 2]))
    with pytest.raises(ValueError, match="unknown online detector"):
        OnlineDetector("cusum", "error")


def test_adwin_state_from_another_river_version_is_refused() -> None:
    det = OnlineDetector("adwin", "score")
    det.update(np.arange(100.0), np.arange(100))
    d = det.to_dict()
    d["state"]["_helper"]["river"] = "0.0.1"
    with pytest.raises(ValueError, match=r"river 0\.0\.1"):
        OnlineDetector.from_dict(d)


def test_unknown_state_objects_are_not_rebuilt() -> None:
    d = OnlineDetector("ddm", "error").to_dict()
    d["state"]["_p"] = {"object": "Popen", "state": {}}
    with pytest.raises(KeyError):
        OnlineDetector.from_dict(d)


def test_docstring_example() -> None:
    assert doctest.testmod(online).failed == 0
