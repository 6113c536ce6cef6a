"""Online drift detectors: river's seven detectors behind one batch interface with event times.

Window tests (:mod:`driftline.detectors.drift`) say *whether* a window differs from the
reference; an online detector watches a per-event signal and says *when* it changed, to the
event. One :class:`OnlineDetector` runs per (model, version, segment, signal).

Signals and detectors. ``"error"`` is the 0/1 misclassification of each labelled event,
``"abs_error"`` the absolute error of a regression, ``"score"`` the model's score. River's
``binary`` detectors (DDM, EDDM, HDDM_A, HDDM_W; Gama 2004, Baena-García 2006, Frías-Blanco
2015) model an error *rate* and take booleans, so they accept only ``"error"``. ADWIN (Bifet &
Gavaldà 2007), Page-Hinkley (Page 1954) and KSWIN (Raab et al. 2020) take real values and
accept any signal.

Restarts. A detector's state is its evidence; losing it on a restart would blind it for its
whole warm-up. :meth:`OnlineDetector.to_dict` exports the river object's attributes as JSON
(never pickle: the state crosses process and version boundaries and must be safe to load), and
rebuilds only classes on an allow-list. Two pieces of state live in Rust structs with no
attributes: ADWIN's buckets and HDDM_W's exponentially weighted means. Their only export is
river's own byte serialisation (``__getstate__``), which travels as base64 with the river
version and is refused by another river version rather than misread (start a fresh detector
then). Everything else is plain numbers, deques and, for KSWIN, the ``random.Random`` state.

Cost. River updates one value at a time, so :meth:`OnlineDetector.update` loops in Python
(~1-20 µs a value): fine for labelled events, the only per-event path that runs here.

>>> det = OnlineDetector("ddm", "error")
>>> errors = np.r_[np.zeros(500), np.ones(100)]
>>> det.update(errors, np.arange(600) * 1000)
[Detection(detector='ddm', signal='error', time_ms=500000, index=500)]
>>> OnlineDetector.from_dict(det.to_dict()).to_dict() == det.to_dict()
True
"""

from __future__ import annotations

import base64
import collections
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import river
from river import drift, stats
from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsEWMean
from river.base import BinaryDriftDetector, DriftDetector
from river.drift import binary
from river.drift.binary.hddm_w import SampleInfo

__all__ = ["DETECTORS", "SIGNALS", "Detection", "OnlineDetector"]

SIGNALS = frozenset({"error", "abs_error", "score"})

#: name -> (river class, takes booleans). KSWIN's seed defaults to 0, not None: a detector
#: whose verdicts depend on an unseeded random state could not be replayed.
DETECTORS: dict[str, tuple[Callable[..., DriftDetector | BinaryDriftDetector], bool]] = {
    "adwin": (drift.ADWIN, False),
    "page_hinkley": (drift.PageHinkley, False),
    "kswin": (drift.KSWIN, False),
    "ddm": (binary.DDM, True),
    "eddm": (binary.EDDM, True),
    "hddm_a": (binary.HDDMA, True),
    "hddm_w": (binary.HDDMW, True),
}
_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"kswin": {"seed": 0}}

#: river helper objects a detector may hold; the only classes :func:`_decode` will rebuild
_STATE_CLASSES: dict[str, type[object]] = {
    c.__name__: c for c in (stats.Mean, stats.Var, stats.EWMean, SampleInfo)
}
#: Rust objects whose state is river's own bytes (see the module docstring)
_NATIVE_CLASSES: dict[str, type] = {c.__name__: c for c in (AdaptiveWindowing, RsEWMean)}
#: attributes that __init__ rebuilds from the parameters (PageHinkley's bound test method)
_REBUILT = frozenset({"_test_drift"})


@dataclass(frozen=True, slots=True)
class Detection:
    """A change found by ``detector`` on ``signal`` at the event stamped ``time_ms``, which was
    the detector's ``index``-th input (0-based, counted over its whole life, restarts included)."""

    detector: str
    signal: str
    time_ms: int
    index: int


# ---- JSON codec for river detector state ------------------------------------------------------
def _encode(v: Any) -> Any:
    if v is None or isinstance(v, bool | str | int):
        return v
    if isinstance(v, float | np.floating):
        x = float(v)
        return x if math.isfinite(x) else {"float": repr(x)}
    if isinstance(v, collections.deque):
        return {"deque": [_encode(x) for x in v], "maxlen": v.maxlen}
    if isinstance(v, random.Random):
        version, internal, gauss = v.getstate()
        return {"random": [version, list(internal), gauss]}
    name = type(v).__name__
    # isinstance tells the checker which methods v has; the exact-class test keeps subclasses out
    if isinstance(v, AdaptiveWindowing | RsEWMean) and _NATIVE_CLASSES.get(name) is type(v):
        return {"native": name, "args": [_encode(x) for x in v.__getnewargs__()],
                "river": river.__version__, "bytes": base64.b64encode(v.__getstate__()).decode("ascii")}
    if _STATE_CLASSES.get(name) is type(v):
        return {"object": name, "state": {k: _encode(x) for k, x in sorted(vars(v).items())}}
    raise TypeError(f"cannot export {type(v)!r} from a river detector (river {river.__version__})")


def _decode(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "float" in v:
        return float(v["float"])
    if "deque" in v:
        return collections.deque((_decode(x) for x in v["deque"]), maxlen=v["maxlen"])
    if "random" in v:
        version, internal, gauss = v["random"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        return rng
    if "native" in v:
        if v["river"] != river.__version__:
            raise ValueError(f"{v['native']} state was saved by river {v['river']}, "
                             f"this is river {river.__version__}: start a fresh detector")
        native = _NATIVE_CLASSES[v["native"]](*(_decode(x) for x in v["args"]))
        native.__setstate__(base64.b64decode(v["bytes"]))
        return native
    cls = _STATE_CLASSES[v["object"]]  # KeyError for anything not on the allow-list
    obj = cls.__new__(cls)
    obj.__dict__.update({k: _decode(x) for k, x in v["state"].items()})
    return obj


class OnlineDetector:
    """One river drift detector fed a per-event signal in event-time order.

    ``params`` are the river class's own keyword arguments (e.g. ``{"delta": 0.002}`` for
    ADWIN). NaN values (an event without a score or label) are skipped and not counted.
    """

    def __init__(self, kind: str, signal: str, params: Mapping[str, Any] | None = None) -> None:
        if kind not in DETECTORS:
            raise ValueError(f"unknown online detector {kind!r}; known: {sorted(DETECTORS)}")
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; known: {sorted(SIGNALS)}")
        factory, takes_bool = DETECTORS[kind]
        if takes_bool and signal != "error":
            raise ValueError(f"{kind} monitors an error rate: it takes only the 'error' signal")
        self.kind = kind
        self.signal = signal
        self.params: dict[str, Any] = {**_DEFAULT_PARAMS.get(kind, {}), **(params or {})}
        self._binary = takes_bool
        self._river: DriftDetector | BinaryDriftDetector = factory(**self.params)
        self.n_seen = 0

    @property
    def drift_detected(self) -> bool:
        """River's flag for the last value fed (it resets on the next update)."""
        return bool(self._river.drift_detected)

    def update(self, values: np.ndarray, times_ms: np.ndarray) -> list[Detection]:
        """Feed one batch, sorted by event time (stable, so equal times keep batch order), and
        return a detection per value that made river flag a change, stamped with its time."""
        v = np.asarray(values, dtype=np.float64).ravel()
        t = np.asarray(times_ms, dtype=np.int64).ravel()
        if v.shape != t.shape:
            raise ValueError("values and times_ms must have the same shape")
        order = np.argsort(t, kind="stable")
        v, t = v[order], t[order]
        keep = ~np.isnan(v)
        v, t = v[keep], t[keep]
        if self._binary:
            if np.any((v != 0.0) & (v != 1.0)):
                raise ValueError("the 'error' signal must be 0/1 (True = misclassified)")
            feed: list[Any] = (v == 1.0).tolist()
        else:
            feed = v.tolist()
        det = self._river
        hits: list[int] = []
        for i, x in enumerate(feed):
            det.update(x)
            if det.drift_detected:
                hits.append(i)
        start = self.n_seen
        self.n_seen += len(feed)
        times = t.tolist()
        return [Detection(self.kind, self.signal, times[i], start + i) for i in hits]

    # -- state -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        state = {k: _encode(x) for k, x in sorted(vars(self._river).items())
                 if k not in _REBUILT and k not in self.params}
        return {"kind": self.kind, "signal": self.signal,
                "params": {k: _encode(x) for k, x in sorted(self.params.items())},
                "n_seen": self.n_seen, "state": state}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        params = {k: _decode(x) for k, x in d["params"].items()}
        det = cls(str(d["kind"]), str(d["signal"]), params)
        det.n_seen = int(d["n_seen"])
        for k, x in d["state"].items():
            setattr(det._river, k, _decode(x))
        return det
