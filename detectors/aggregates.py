"""The partial aggregate of one window of one model slice, built from mergeable sketches.

A window's numbers are never computed from raw events held in memory: each stream partition
folds its events into a :class:`WindowAggregate`, partials travel between workers as
``to_dict()`` payloads, and the owner of the model merges them. Because every sketch merges
exactly (see :mod:`driftline.detectors.sketches`), one worker and six workers produce
identical windows, and memory per window is bounded by the number of features, never by the
number of events.

The :class:`AggregateSpec` fixes what is sketched and how (bin edges and pinned categories from
the reference profile); every partition builds its aggregates from the same spec, so their
partials are always mergeable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar, overload

import numpy as np

from driftline.detectors.attribution import AttributionSums
from driftline.detectors.buffers import from_buffer, to_buffer
from driftline.detectors.calibration import Calibrator, MulticlassCalibrator
from driftline.detectors.categories import NULL, category_string, category_strings
from driftline.detectors.label_lag import LabelLagHistogram
from driftline.detectors.loss_model import LossModel
from driftline.detectors.multivariate import FeatureEncoding, MomentSketch, encode_columns
from driftline.detectors.sketches import (
    CalibratedScores,
    CategoricalSketch,
    ClassProbabilitySums,
    ClassRankings,
    ClassScoreHistograms,
    ConfusionCounts,
    ExpectedConfusion,
    Mergeable,
    NumericSketch,
    ProbabilitySums,
    RegressionSums,
    ScoreHistogram,
    dense_segments,
)

__all__ = [
    "AggregateSpec",
    "FeatureColumns",
    "WindowAggregate",
    "class_score_matrix",
    "feature_columns",
    "fold_attributions",
    "fold_label_lags",
    "fold_outcomes",
    "fold_predictions",
]

Task = Literal["binary", "multiclass", "regression"]

#: One bin of placeholder edges for numeric features with no reference profile yet: the
#: bottom-k sample and the moments still work, and every partition agrees on the edges.
_NO_EDGES = np.array([0.0, 0.0])
#: the score histogram's edges (tenths of [0, 1]), one array for every window's score sketch
_SCORE_EDGES = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """What a model's windows sketch: the same for every partition of that model."""

    task: Task = "binary"
    positive_label: str = "1"
    numeric_edges: Mapping[str, np.ndarray] = field(default_factory=dict)
    categories: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: the bottom-k sample per numeric feature (and of the error stream); the one default,
    #: also ``ModelConfig.sample_size``
    sample_size: int = 1000
    max_categories: int = 256
    #: the reference's score → probability map (binary); None: scores are taken as calibrated
    calibrator: Calibrator | None = None
    #: the reference's error model by prediction bin (regression); None: no MAE/RMSE estimate
    loss_model: LossModel | None = None
    #: fine grids of reference quantiles per numeric feature: whole-window counts for the
    #: drift tests (:class:`~driftline.detectors.sketches.NumericSketch`)
    numeric_grids: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: the reference's classes and class-probability map (multiclass with per-class scores
    #: and labels); None: no multiclass estimates (the classes are not known up front)
    class_calibrator: MulticlassCalibrator | None = None
    #: the reference's encodings of the features multivariate drift reads (the model's
    #: ``multivariate: true``); None: windows keep no moments
    moment_encodings: tuple[FeatureEncoding, ...] | None = None

    def kind_of(self, feature: str) -> str | None:
        """The declared kind of ``feature`` ("numeric"/"categorical"), None when undeclared."""
        if feature in self.numeric_edges:
            return "numeric"
        if feature in self.categories:
            return "categorical"
        return None


@dataclass(slots=True)
class FeatureColumns:
    """One batch's feature values split by type, so sketches get homogeneous arrays."""

    numeric: dict[str, np.ndarray]  # float64, NaN = missing or not a number
    categorical: dict[str, np.ndarray]  # object array of str, None = missing or not a category
    numeric_mask: dict[str, np.ndarray]  # bool: value was a number (for type errors)
    categorical_mask: dict[str, np.ndarray]  # bool: value was a string or bool
    present: dict[str, np.ndarray]  # bool: value was present and not null
    size: int = 0

    def take(self, idx: np.ndarray) -> FeatureColumns:
        """The rows at ``idx``, every column alike."""
        return FeatureColumns(
            {k: v[idx] for k, v in self.numeric.items()},
            {k: v[idx] for k, v in self.categorical.items()},
            {k: v[idx] for k, v in self.numeric_mask.items()},
            {k: v[idx] for k, v in self.categorical_mask.items()},
            {k: v[idx] for k, v in self.present.items()},
            int(idx.size),
        )

    @classmethod
    def concat(cls, parts: Sequence[FeatureColumns]) -> FeatureColumns:
        """The columns of all parts' rows, one after the other: exactly what
        :func:`feature_columns` gives for those events, so folding batches of batches (or a
        share :meth:`take` cut from a bigger batch) changes no result. A feature's type split
        is decided over these rows only, and a part without a feature reads as nulls."""
        names = sorted(set().union(*(p.present for p in parts)))
        out = cls({}, {}, {}, {}, {}, sum(p.size for p in parts))
        for name in names:
            has_num = any(name in p.numeric and p.numeric_mask[name].any() for p in parts)
            has_text = any(name in p.categorical and p.categorical_mask[name].any() for p in parts)
            if has_num or not has_text:
                out.numeric[name] = _concat(parts, "numeric", name, np.nan, np.float64)
                out.numeric_mask[name] = _concat(parts, "numeric_mask", name, False, bool)
            if has_text:
                out.categorical[name] = _concat(parts, "categorical", name, None, object)
                out.categorical_mask[name] = _concat(parts, "categorical_mask", name, False, bool)
            out.present[name] = _present(name, out.numeric_mask.get(name), out.categorical_mask.get(name))
        return out

    def to_wire(self) -> dict[str, tuple[bytes | None, list[str | None] | None]]:
        """Compact and msgpack-ready: per feature, its numbers as float64 bytes (NaN where
        none) and its categories as strings (None where none). The masks are not sent:
        :meth:`from_wire` derives them, since decoded JSON can hold no NaN."""
        return {
            name: (
                to_buffer(self.numeric[name], "<f8") if name in self.numeric else None,
                self.categorical[name].tolist() if name in self.categorical else None,
            )
            for name in self.present
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Sequence[Any]], size: int) -> FeatureColumns:
        out = cls({}, {}, {}, {}, {}, size)
        for name, (num, cat) in wire.items():
            nmask = cmask = None
            if num is not None:
                arr = from_buffer(num, "<f8", np.float64)
                out.numeric[name], nmask = arr, ~np.isnan(arr)
                out.numeric_mask[name] = nmask
            if cat is not None:
                obj = np.empty(size, dtype=object)
                obj[:] = cat
                out.categorical[name], cmask = obj, np.not_equal(obj, NULL)
                out.categorical_mask[name] = cmask
            out.present[name] = _present(name, nmask, cmask)
        return out


def _present(name: str, nmask: np.ndarray | None, cmask: np.ndarray | None) -> np.ndarray:
    """Present = a number or a category. Every feature has a column of at least one kind."""
    if nmask is None:
        if cmask is None:
            raise ValueError(f"feature {name!r} has neither a numeric nor a categorical column")
        return cmask
    return nmask if cmask is None else nmask | cmask


def _concat(parts: Sequence[FeatureColumns], field: str, name: str, fill: Any, dtype: Any) -> np.ndarray:
    """One column of all parts; a part without it contributes ``fill`` (read: missing)."""
    arrays = []
    for p in parts:
        got = getattr(p, field).get(name)
        arrays.append(got if got is not None else np.full(p.size, fill, dtype=dtype))
    return np.concatenate(arrays)


_NUMBER_TYPES = {int, float, type(None)}
_TEXT_TYPES = {str, bool, type(None)}


def feature_columns(features: Sequence[Mapping[str, Any]]) -> FeatureColumns:
    """Turn a batch of feature dicts into per-feature arrays, one pass per feature.

    The common case (a feature whose values are all numbers or all strings) costs one list
    comprehension and one ``np.array`` call; mixed types fall back to a per-value split.
    """
    names: set[str] = set().union(*features) if features else set()
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    numeric_mask: dict[str, np.ndarray] = {}
    categorical_mask: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    n = len(features)
    for name in sorted(names):
        values = [f.get(name) for f in features]
        types = set(map(type, values))
        if types <= _NUMBER_TYPES:
            arr = np.array(values, dtype=np.float64)
            is_present = ~np.isnan(arr)
            numeric[name] = arr
            numeric_mask[name] = is_present
            present[name] = is_present
        elif types <= _TEXT_TYPES:
            arr_obj = category_strings(values)
            is_present = np.not_equal(arr_obj, NULL)
            categorical[name] = arr_obj
            categorical_mask[name] = is_present
            present[name] = is_present
        else:
            num = np.full(n, np.nan)
            cat = np.empty(n, dtype=object)
            nmask = np.zeros(n, dtype=bool)
            cmask = np.zeros(n, dtype=bool)
            for i, v in enumerate(values):
                t = type(v)
                if t is int or t is float:
                    num[i] = v
                    nmask[i] = True
                elif t is str or t is bool:
                    cat[i] = category_string(v)
                    cmask[i] = True
            numeric[name], numeric_mask[name] = num, nmask
            categorical[name], categorical_mask[name] = cat, cmask
            present[name] = nmask | cmask
    return FeatureColumns(numeric, categorical, numeric_mask, categorical_mask, present, n)


_S = TypeVar("_S", bound=Mergeable)


@overload
def _load(part: _S, d: Mapping[str, Any], name: str) -> _S: ...
@overload
def _load(part: _S | None, d: Mapping[str, Any], name: str) -> _S | None: ...
def _load(part: _S | None, d: Mapping[str, Any], name: str) -> _S | None:
    """``part`` as stored under ``name`` in ``d``; kept as built when the task has no such
    part or the payload holds none."""
    if part is None or d.get(name) is None:
        return part
    return type(part).from_dict(d[name])


class WindowAggregate:
    """Everything one window of one (model, version, segment) needs, mergeable and bounded."""

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec
        self.n_predictions = 0
        self.n_labelled = 0
        self.numeric: dict[str, NumericSketch] = {}
        self.categorical: dict[str, CategoricalSketch] = {}
        self.type_errors: dict[str, int] = {}
        self.present: dict[str, int] = {}
        regression = spec.task == "regression"
        self.prediction_num = NumericSketch(_NO_EDGES, spec.sample_size) if regression else None
        self.prediction_cat = None if regression else CategoricalSketch((), spec.max_categories)
        self.score = NumericSketch(_SCORE_EDGES, spec.sample_size)
        self.label_num = NumericSketch(_NO_EDGES, spec.sample_size) if regression else None
        self.label_cat = None if regression else CategoricalSketch((), spec.max_categories)
        self.confusion = None if regression else ConfusionCounts()
        self.probability = ProbabilitySums() if spec.task == "binary" else None
        self.score_histogram = ScoreHistogram() if spec.task == "binary" else None
        self.regression = RegressionSums() if regression else None
        #: expected confusion from the scores of *all* predictions: label-free estimates
        self.expected = ExpectedConfusion() if spec.task == "binary" else None
        #: the same calibrated probabilities by raw-score bin: intervals and expected ROC AUC
        self.calibrated = CalibratedScores() if spec.task == "binary" else None
        #: calibrated class-probability vectors by predicted class: multiclass estimates
        classes = spec.class_calibrator.classes if spec.class_calibrator is not None else ()
        self.class_probabilities = (ClassProbabilitySums(len(classes))
                                    if spec.task == "multiclass" and classes else None)
        #: the same vectors one-vs-rest by raw-score bin per class: expected ROC AUC per class
        self.class_rankings = ClassRankings(len(classes)) if spec.task == "multiclass" and classes else None
        #: the labelled events' raw vectors one-vs-rest by score bin: realised ROC AUC per class
        self.class_histograms = (ClassScoreHistograms(len(classes))
                                 if spec.task == "multiclass" and classes else None)
        #: regression predictions counted on the loss model's bins: label-free MAE and RMSE
        self.loss_bins = (NumericSketch(np.array(spec.loss_model.edges), 0)
                          if regression and spec.loss_model is not None else None)
        #: the labelled events' error signal and their prediction times (ms, exact as float64
        #: below 2**53), two bottom-k samples on the same stable keys: the online detectors'
        #: input, bounded and mergeable like every other part (see :meth:`error_stream`)
        self.error_sample = NumericSketch(_NO_EDGES, spec.sample_size)
        self.error_time = NumericSketch(_NO_EDGES, spec.sample_size)
        #: n, Σ z and Σ z zᵀ of the encoded features, exact: the window's multivariate drift
        encodings = spec.moment_encodings
        self.moments = MomentSketch(len(encodings)) if encodings else None
        #: per feature, the count and exact sum of |attribution| (events that carry
        #: ``attributions``); None until one does, so windows without any cost nothing
        self.attributions: AttributionSums | None = None
        #: label time - prediction time of the joined labels, on fixed log bins
        #: (detectors/label_lag.py); None until a label joins, so payloads without stay as they were
        self.label_lag: LabelLagHistogram | None = None

    def _parts(self) -> dict[str, Mergeable | None]:
        """The optional prediction/label/outcome sketches by wire name, present or None by
        task, in wire order: what :meth:`merge` and :meth:`to_dict` walk. :meth:`from_dict`
        names each one itself, to keep its concrete type."""
        return {
            "prediction_num": self.prediction_num,
            "prediction_cat": self.prediction_cat,
            "score": self.score,
            "label_num": self.label_num,
            "label_cat": self.label_cat,
            "confusion": self.confusion,
            "probability": self.probability,
            "score_histogram": self.score_histogram,
            "regression": self.regression,
            "expected": self.expected,
            "calibrated": self.calibrated,
            "class_probabilities": self.class_probabilities,
            "class_rankings": self.class_rankings,
            "class_histograms": self.class_histograms,
            "loss_bins": self.loss_bins,
            "error_sample": self.error_sample,
            "error_time": self.error_time,
            "moments": self.moments,
        }

    # -- sketch factories: same spec -> same edges and pins on every partition ----------
    def _numeric(self, name: str) -> NumericSketch:
        sketch = self.numeric.get(name)
        if sketch is None:
            edges = self.spec.numeric_edges.get(name, _NO_EDGES)
            grid = self.spec.numeric_grids.get(name)
            sketch = self.numeric[name] = NumericSketch(edges, self.spec.sample_size, grid)
        return sketch

    def _categorical(self, name: str) -> CategoricalSketch:
        sketch = self.categorical.get(name)
        if sketch is None:
            pins = self.spec.categories.get(name, ())
            sketch = self.categorical[name] = CategoricalSketch(pins, self.spec.max_categories)
        return sketch

    # -- updates --------------------------------------------------------------------------
    def add_predictions(
        self,
        columns: FeatureColumns,
        idx: np.ndarray,
        keys: np.ndarray,
        predictions: np.ndarray,
        scores: np.ndarray,
        class_scores: Sequence[Mapping[str, float] | None] | None = None,
    ) -> None:
        """Fold the events at ``idx`` of a batch in. ``predictions`` are label strings
        (classification) or floats (regression), ``scores`` the positive-class probability
        (NaN when absent), ``class_scores`` each event's per-class probabilities (None: none
        sent); all arrays are already indexed by ``idx`` except ``columns``."""
        self.n_predictions += int(idx.size)
        spec = self.spec
        for name, values in columns.numeric.items():
            mask = columns.numeric_mask[name][idx]
            if spec.kind_of(name) == "categorical":
                self._type_error(name, int(mask.sum()))
                continue
            if mask.any() or name not in columns.categorical:
                self._numeric(name).update(values[idx], keys)
        for name, values in columns.categorical.items():
            mask = columns.categorical_mask[name][idx]
            if spec.kind_of(name) == "numeric":
                self._type_error(name, int(mask.sum()))
                continue
            if mask.any() or name not in columns.numeric:
                self._categorical(name).update(values[idx])
        for name, mask in columns.present.items():
            self.present[name] = self.present.get(name, 0) + int(mask[idx].sum())
        if self.prediction_cat is not None:
            self.prediction_cat.update(predictions)
        elif self.prediction_num is not None:
            self.prediction_num.update(predictions.astype(np.float64), keys)
            if self.loss_bins is not None:
                self.loss_bins.update(predictions.astype(np.float64), keys)
        self.score.update(scores, keys)
        if self.expected is not None and self.calibrated is not None:
            scored = ~np.isnan(scores)
            if scored.any():
                raw = scores[scored]
                q = raw if spec.calibrator is None else spec.calibrator.apply(raw)
                positive = predictions[scored] == spec.positive_label
                self.expected.update(positive, q)
                self.calibrated.update(positive, raw, q)
        if self.class_probabilities is not None and class_scores is not None:
            assert spec.class_calibrator is not None
            self._add_class_rows(*_class_rows(spec.class_calibrator, predictions, class_scores))
        if self.moments is not None and spec.moment_encodings is not None:
            self.moments.update(encode_columns(spec.moment_encodings, columns, idx))

    def _add_class_rows(self, pred: np.ndarray, raw: np.ndarray, q: np.ndarray) -> None:
        """Fold scored rows (predicted class index, raw and calibrated vectors) by predicted class."""
        assert self.class_probabilities is not None
        if pred.size:
            self.class_probabilities.update(pred, q)
            if self.class_rankings is not None:
                self.class_rankings.update(pred, raw, q)

    def _add_class_labels(self, labels: np.ndarray,
                          class_scores: Sequence[Mapping[str, float] | None]) -> None:
        """Labelled rows with a score vector into the per-class histograms (rows whose label is
        missing are left out: their class is unknown, as they are outside scikit-learn's view)."""
        assert self.class_histograms is not None and self.spec.class_calibrator is not None
        known = np.flatnonzero(np.not_equal(labels, NULL))
        if not known.size:
            return
        cal = self.spec.class_calibrator
        raw = class_score_matrix([class_scores[i] for i in known.tolist()], cal.classes)
        self.class_histograms.update(cal.index_of(np.asarray(labels, dtype=object)[known].tolist()), raw)

    def _type_error(self, name: str, count: int) -> None:
        if count:
            self.type_errors[name] = self.type_errors.get(name, 0) + count

    def add_outcomes(
        self,
        predictions: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray,
        keys: np.ndarray,
        times: np.ndarray | None = None,
        class_scores: Sequence[Mapping[str, float] | None] | None = None,
    ) -> None:
        """Fold joined (prediction, label) pairs in: these are the window's labelled outcomes.

        ``times`` are the predictions' event times (ms); without them the error sample is not
        kept (the online detectors need the order of events, not just their set).
        ``class_scores`` are the predictions' score vectors (multiclass: realised ROC AUC)."""
        self.n_labelled += int(labels.size)
        if self.regression is not None and self.label_num is not None:
            y = labels.astype(np.float64)
            yhat = predictions.astype(np.float64)
            self.regression.update(y, yhat)
            self.label_num.update(y, keys)
            if times is not None:
                self._add_errors(np.abs(y - yhat), keys, times)
            return
        assert self.confusion is not None and self.label_cat is not None
        if times is not None:
            known = np.not_equal(labels, NULL) & np.not_equal(predictions, NULL)
            wrong = np.where(known, (labels != predictions).astype(np.float64), np.nan)
            self._add_errors(wrong, keys, times)
        self.confusion.update(labels, predictions)
        self.label_cat.update(labels)
        if self.class_histograms is not None and class_scores is not None:
            self._add_class_labels(labels, class_scores)
        if self.probability is not None and self.score_histogram is not None:
            has_score = ~np.isnan(scores)
            if has_score.any():
                y = (labels[has_score] == self.spec.positive_label).astype(np.int64)
                self.probability.update(y, scores[has_score])
                self.score_histogram.update(y, scores[has_score])

    def _add_errors(self, errors: np.ndarray, keys: np.ndarray, times: np.ndarray) -> None:
        """Sample (error, time) pairs under the same keys. Rows with a NaN in either are dropped
        from *both* sketches, so the two bottom-k samples always hold the same key set."""
        e = np.asarray(errors, dtype=np.float64)
        t = np.asarray(times, dtype=np.float64)
        ok = ~(np.isnan(e) | np.isnan(t))
        k = np.asarray(keys, dtype=np.uint64)[ok]
        self.error_sample.update(e[ok], k)
        self.error_time.update(t[ok], k)

    def error_stream(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sampled error signal as (values, times_ms, keys), sorted by event time, ties by
        key: a function of the window's set of labelled events only, so every split of the
        events over partitions gives the same stream."""
        ek, tk = self.error_sample.sample_keys, self.error_time.sample_keys
        if np.array_equal(ek, tk):
            values, times, keys = self.error_sample.sample_values, self.error_time.sample_values, ek
        else:  # partials built by different code versions: keep the pairs present in both
            keys, ie, it = np.intersect1d(ek, tk, assume_unique=True, return_indices=True)
            values, times = self.error_sample.sample_values[ie], self.error_time.sample_values[it]
        order = np.lexsort((keys, times))
        return values[order], times[order].astype(np.int64), keys[order]

    # -- merge and transport ----------------------------------------------------------------
    def merge(self, other: WindowAggregate) -> None:
        self.n_predictions += other.n_predictions
        self.n_labelled += other.n_labelled
        for name, sketch in other.numeric.items():
            self._numeric(name).merge(sketch)
        for name, csk in other.categorical.items():
            self._categorical(name).merge(csk)
        for name, count in other.type_errors.items():
            self.type_errors[name] = self.type_errors.get(name, 0) + count
        for name, count in other.present.items():
            self.present[name] = self.present.get(name, 0) + count
        if other.attributions is not None:
            if self.attributions is None:
                self.attributions = AttributionSums()
            self.attributions.merge(other.attributions)
        if other.label_lag is not None:
            if self.label_lag is None:
                self.label_lag = LabelLagHistogram()
            self.label_lag.merge(other.label_lag)
        theirs = other._parts()
        for name, mine in self._parts().items():
            if mine is not None:
                part = theirs[name]
                if part is None:
                    raise ValueError(f"cannot merge aggregates of different tasks: the other has no {name}")
                mine.merge(part)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_predictions": self.n_predictions,
            "n_labelled": self.n_labelled,
            "numeric": {k: v.to_dict() for k, v in sorted(self.numeric.items())},
            "categorical": {k: v.to_dict() for k, v in sorted(self.categorical.items())},
            "type_errors": dict(sorted(self.type_errors.items())),
            "present": dict(sorted(self.present.items())),
        }
        for name, part in self._parts().items():
            out[name] = None if part is None else part.to_dict()
        if self.attributions is not None:  # absent, not null: payloads without stay as they were
            out["attributions"] = self.attributions.to_dict()
        if self.label_lag is not None:  # absent likewise
            out["label_lag"] = self.label_lag.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], spec: AggregateSpec) -> Self:
        agg = cls(spec)
        agg.n_predictions = int(d["n_predictions"])
        agg.n_labelled = int(d["n_labelled"])
        agg.numeric = {k: NumericSketch.from_dict(v) for k, v in d["numeric"].items()}
        agg.categorical = {k: CategoricalSketch.from_dict(v) for k, v in d["categorical"].items()}
        agg.type_errors = {k: int(v) for k, v in d["type_errors"].items()}
        agg.present = {k: int(v) for k, v in d["present"].items()}
        agg.prediction_num = _load(agg.prediction_num, d, "prediction_num")
        agg.prediction_cat = _load(agg.prediction_cat, d, "prediction_cat")
        agg.score = _load(agg.score, d, "score")
        agg.label_num = _load(agg.label_num, d, "label_num")
        agg.label_cat = _load(agg.label_cat, d, "label_cat")
        agg.confusion = _load(agg.confusion, d, "confusion")
        agg.probability = _load(agg.probability, d, "probability")
        agg.score_histogram = _load(agg.score_histogram, d, "score_histogram")
        agg.regression = _load(agg.regression, d, "regression")
        agg.expected = _load(agg.expected, d, "expected")
        agg.calibrated = _load(agg.calibrated, d, "calibrated")
        # partials written before multiclass estimates have none: the sketch starts empty
        agg.class_probabilities = _load(agg.class_probabilities, d, "class_probabilities")
        agg.class_rankings = _load(agg.class_rankings, d, "class_rankings")
        agg.class_histograms = _load(agg.class_histograms, d, "class_histograms")
        agg.loss_bins = _load(agg.loss_bins, d, "loss_bins")
        agg.error_sample = _load(agg.error_sample, d, "error_sample")
        agg.error_time = _load(agg.error_time, d, "error_time")
        # partials and checkpoints written before moments have none: the sketch starts empty
        agg.moments = _load(agg.moments, d, "moments")
        if d.get("attributions") is not None:
            agg.attributions = AttributionSums.from_dict(d["attributions"])
        if d.get("label_lag") is not None:  # partials and checkpoints from before label lag have none
            agg.label_lag = LabelLagHistogram.from_dict(d["label_lag"])
        return agg


# -- folding many aggregates at once ---------------------------------------------------------
def fold_predictions(
    parts: Sequence[tuple[WindowAggregate, np.ndarray]],
    columns: FeatureColumns,
    keys: np.ndarray,
    predictions: np.ndarray,
    scores: np.ndarray,
    fold_groups: np.ndarray | None = None,
    class_scores: Sequence[Mapping[str, float] | None] | None = None,
) -> None:
    """``agg.add_predictions(columns, idx, keys[idx], predictions[idx], scores[idx],
    class_scores[idx])`` for every ``(agg, idx)`` of ``parts`` (each aggregate once),
    bit-identically, with one batched sketch update per feature for all of them instead of one
    per aggregate and feature (multiclass score vectors: one matrix and calibration per model,
    then integer sums per aggregate).

    ``predictions`` is the batch's object array: category strings for classification models,
    floats for regression ones. A feature with both a numeric and a categorical column in the
    batch folds each kind only from rows whose ``fold_groups`` value holds a value of that kind,
    which is what one ``add_predictions`` call per group does (the join's groups are its window
    keys); without ``fold_groups`` each part is its own group."""
    if not parts:
        return
    aggs = [agg for agg, _ in parts]
    sizes = [int(idx.size) for _, idx in parts]
    rows = np.concatenate([idx for _, idx in parts])
    seg = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    groups_of = seg if fold_groups is None else fold_groups[rows]
    k = np.asarray(keys, dtype=np.uint64)[rows]
    for agg, size in zip(aggs, sizes, strict=True):
        agg.n_predictions += size
    base_keys = np.asarray(keys, dtype=np.uint64)
    for name, values in columns.numeric.items():
        _fold_kind(aggs, "numeric", name, values, columns.numeric_mask[name][rows], seg, base_keys, rows,
                   groups_of, name in columns.categorical)
    for name, values in columns.categorical.items():
        _fold_kind(aggs, "categorical", name, values, columns.categorical_mask[name][rows], seg, base_keys,
                   rows, groups_of, name in columns.numeric)
    for name, mask in columns.present.items():
        counts = np.bincount(seg, weights=mask[rows], minlength=len(parts)).tolist()
        for agg, c in zip(aggs, counts, strict=True):
            agg.present[name] = agg.present.get(name, 0) + int(c)
    preds, sc = predictions[rows], np.asarray(scores, dtype=np.float64)[rows]
    cat = [i for i, a in enumerate(aggs) if a.prediction_cat is not None]
    num = [i for i, a in enumerate(aggs) if a.prediction_num is not None]
    if cat:
        sel, local = _select(seg, cat, len(parts))
        CategoricalSketch.update_many([aggs[i].prediction_cat for i in cat], preds[sel], local)  # type: ignore[misc]
    if num:
        sel, local = _select(seg, num, len(parts))
        NumericSketch.update_many([aggs[i].prediction_num for i in num],  # type: ignore[misc]
                                  preds[sel].astype(np.float64), k[sel], local)
        lossy = [i for i in num if aggs[i].loss_bins is not None]
        if lossy:
            sel, local = _select(seg, lossy, len(parts))
            NumericSketch.update_many([aggs[i].loss_bins for i in lossy],  # type: ignore[misc]
                                      preds[sel].astype(np.float64), k[sel], local)
    NumericSketch.update_many([a.score for a in aggs], sc, k, seg)
    expected = [i for i, a in enumerate(aggs) if a.expected is not None and a.calibrated is not None]
    if expected:
        sel, local = _select(seg, expected, len(parts))
        positive = np.array([aggs[i].spec.positive_label for i in expected], dtype=object)
        is_positive = np.asarray(preds[sel] == positive[local], dtype=bool)
        raw = sc[sel]
        # each model's own calibrator (one object per model: its slices share it) maps its rows
        q = raw.copy()
        by_calibrator: dict[int, list[int]] = {}
        for j, i in enumerate(expected):
            calibrator = aggs[i].spec.calibrator
            if calibrator is not None:
                by_calibrator.setdefault(id(calibrator), []).append(j)
        for members in by_calibrator.values():
            calibrator = aggs[expected[members[0]]].spec.calibrator
            assert calibrator is not None
            take = np.isin(local, members) & ~np.isnan(raw)
            if take.any():
                q[take] = calibrator.apply(raw[take])
        ExpectedConfusion.update_many([aggs[i].expected for i in expected],  # type: ignore[misc]
                                      is_positive, q, local)
        CalibratedScores.update_many([aggs[i].calibrated for i in expected],  # type: ignore[misc]
                                     is_positive, raw, q, local)
    if class_scores is not None:
        # one matrix and one calibration per model (its slices share the calibrator object)
        # over the rows any of its slices takes; each slice then takes its rows of them
        by_map: dict[int, list[tuple[WindowAggregate, np.ndarray]]] = {}
        for agg, idx in parts:
            if agg.class_probabilities is not None and agg.spec.class_calibrator is not None and idx.size:
                by_map.setdefault(id(agg.spec.class_calibrator), []).append((agg, idx))
        for slices in by_map.values():
            class_map = slices[0][0].spec.class_calibrator
            assert class_map is not None
            union = np.unique(np.concatenate([idx for _, idx in slices]))
            picked = [class_scores[i] for i in union.tolist()]
            c_pred, c_raw, c_q, at = _class_rows(class_map, predictions[union], picked, positions=True)
            if not at.size:
                continue
            for agg, idx in slices:
                where = np.searchsorted(union, idx)  # idx's positions in union
                pos = np.minimum(np.searchsorted(at, where), at.size - 1)  # and among the scored
                take = pos[at[pos] == where]  # in idx's order, as add_predictions takes them
                agg._add_class_rows(c_pred[take], c_raw[take], c_q[take])
    _fold_moments(parts, columns, fold_groups)


def _fold_moments(
    parts: Sequence[tuple[WindowAggregate, np.ndarray]],
    columns: FeatureColumns,
    fold_groups: np.ndarray | None,
) -> None:
    """The moment sketches of :func:`fold_predictions`: per model (one encodings object), its
    rows are encoded once for all its slices, and the exact sums are folded once per fold
    group (the join's window keys: a segment combination) and merged, as integer additions,
    into every slice holding that group. So the per-event cost does not grow with the number
    of segment dimensions; sums are exact, so this equals one update per slice bit for bit.
    A part whose rows are not whole groups (or without ``fold_groups``) folds its own rows."""
    by_model: dict[int, list[tuple[WindowAggregate, np.ndarray]]] = {}
    for agg, idx in parts:
        if agg.moments is not None and agg.spec.moment_encodings is not None and idx.size:
            by_model.setdefault(id(agg.spec.moment_encodings), []).append((agg, idx))
    for slices in by_model.values():
        encodings = slices[0][0].spec.moment_encodings
        assert encodings is not None
        union = np.unique(np.concatenate([idx for _, idx in slices]))
        z = encode_columns(encodings, columns, union)
        direct: list[tuple[WindowAggregate, np.ndarray]] = []
        grouped: list[tuple[WindowAggregate, np.ndarray]] = []
        if fold_groups is None:
            direct = slices
        else:
            group_of = fold_groups[union]
            keys, inverse, sizes = np.unique(group_of, return_inverse=True, return_counts=True)
            for agg, idx in slices:
                mine = np.unique(fold_groups[idx])
                whole = int(sizes[np.searchsorted(keys, mine)].sum()) == idx.size
                (grouped if whole else direct).append((agg, mine if whole else idx))
            if grouped:
                temps = [MomentSketch(len(encodings)) for _ in range(keys.size)]
                MomentSketch.update_many(temps, z, inverse.ravel())
                for agg, mine in grouped:
                    assert agg.moments is not None
                    for g in np.searchsorted(keys, mine).tolist():
                        agg.moments.merge(temps[g])
        if direct:
            sizes_direct = [int(idx.size) for _, idx in direct]
            rows = np.concatenate([idx for _, idx in direct])
            seg = np.repeat(np.arange(len(direct), dtype=np.int64), sizes_direct)
            MomentSketch.update_many(
                [agg.moments for agg, _ in direct],  # type: ignore[misc]
                z[np.searchsorted(union, rows)],
                seg,
            )


def fold_attributions(
    parts: Sequence[tuple[WindowAggregate, np.ndarray]], attributions: Mapping[str, np.ndarray]
) -> None:
    """Fold the rows at ``idx`` of each feature's attribution column (NaN: that event sent
    none for it) into every ``(agg, idx)`` of ``parts``, one exact-sum pass per feature for all
    of them. An aggregate gets its :class:`AttributionSums` with its first attribution, so one
    whose events carried none stays without, however its events were batched."""
    if not parts or not attributions:
        return
    sizes = [int(idx.size) for _, idx in parts]
    rows = np.concatenate([idx for _, idx in parts])
    seg = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    sums = [agg.attributions or AttributionSums() for agg, _ in parts]
    for name in sorted(attributions):
        AttributionSums.update_many(sums, name, attributions[name], seg, rows)
    for (agg, _), got in zip(parts, sums, strict=True):
        if got:
            agg.attributions = got


def fold_label_lags(parts: Sequence[tuple[WindowAggregate, np.ndarray]], lags: np.ndarray) -> None:
    """Count the lags (label time - prediction time, ms) at ``idx`` into every ``(agg, idx)``
    of ``parts``, in one pass for all of them. An aggregate gets its histogram with its first
    joined label, so one no label joined stays without, however its events were batched."""
    sizes = [int(idx.size) for _, idx in parts]
    if not sum(sizes):
        return
    rows = np.concatenate([idx for _, idx in parts])
    seg = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    sketches = [agg.label_lag or LabelLagHistogram() for agg, _ in parts]
    LabelLagHistogram.update_many(sketches, np.asarray(lags, dtype=np.int64)[rows], seg)
    for (agg, _), got in zip(parts, sketches, strict=True):
        if got:
            agg.label_lag = got


def _class_rows(
    calibrator: MulticlassCalibrator,
    predictions: np.ndarray,
    class_scores: Sequence[Mapping[str, float] | None],
    *,
    positions: bool = False,
) -> Any:
    """The scored rows of a batch as (predicted class index, raw vectors, calibrated vectors),
    and with ``positions`` their positions in the batch: rows with no vector or a missing class
    are left out."""
    raw = class_score_matrix(class_scores, calibrator.classes)
    at = np.flatnonzero(~np.isnan(raw).any(axis=1))
    pred = calibrator.index_of(np.asarray(predictions, dtype=object)[at].tolist())
    q = calibrator.apply(raw[at]) if at.size else raw[at]
    return (pred, raw[at], q, at) if positions else (pred, raw[at], q)


def class_score_matrix(
    class_scores: Sequence[Mapping[str, float] | None], classes: Sequence[str]
) -> np.ndarray:
    """(events, K) matrix of each event's ``scores`` entry per class (columns in ``classes``
    order); NaN where an event has no ``scores`` or lacks a class (such rows are skipped)."""
    out = np.full((len(class_scores), len(classes)), np.nan)
    for row, d in enumerate(class_scores):
        if d:
            out[row] = [d.get(c, np.nan) for c in classes]
    return out


def _select(seg: np.ndarray, members: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the parts at ``members`` (ascending), and each one's position in ``members``."""
    position = np.full(count, -1, dtype=np.int64)
    position[members] = np.arange(len(members))
    local = position[seg]
    sel = local >= 0
    return sel, local[sel]


def _fold_kind(aggs: list[WindowAggregate], kind: str, name: str, values: np.ndarray, mask: np.ndarray,
               seg: np.ndarray, keys: np.ndarray, rows: np.ndarray, groups_of: np.ndarray,
               other_kind: bool) -> None:
    """One feature column of one kind (``values`` and ``keys`` of the whole batch; ``mask``,
    ``seg`` and ``groups_of`` per taken row, ``rows`` their batch positions) into every aggregate
    that takes it (see :func:`fold_predictions`); aggregates whose spec declares the other kind
    count type errors."""
    other = "categorical" if kind == "numeric" else "numeric"
    wrong = [i for i, a in enumerate(aggs) if a.spec.kind_of(name) == other]
    if wrong:
        counts = np.bincount(seg, weights=mask, minlength=len(aggs))
        for i in wrong:
            aggs[i]._type_error(name, int(counts[i]))
    take = np.ones(seg.size, dtype=bool)
    if wrong:
        bad = np.zeros(len(aggs), dtype=bool)
        bad[wrong] = True
        take &= ~bad[seg]
    if other_kind:  # a mixed column: only the groups that hold a value of this kind
        _, inverse = np.unique(groups_of, return_inverse=True)
        has = np.bincount(inverse.ravel(), weights=mask) > 0
        take &= has[inverse.ravel()]
    if not take.any():
        return
    targets, local = dense_segments(seg[take])
    sketches: list[Any]
    if kind == "numeric":
        sketches = [aggs[i]._numeric(name) for i in targets.tolist()]
        NumericSketch.update_many(sketches, values, keys, local.ravel(), rows=rows[take])
    else:
        sketches = [aggs[i]._categorical(name) for i in targets.tolist()]
        CategoricalSketch.update_many(sketches, values[rows[take]], local.ravel())


def fold_outcomes(
    parts: Sequence[tuple[WindowAggregate, np.ndarray]],
    predictions: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    keys: np.ndarray,
    times: np.ndarray | None = None,
    class_scores: Sequence[Mapping[str, float] | None] | None = None,
) -> None:
    """``agg.add_outcomes(predictions[idx], labels[idx], scores[idx], keys[idx], times[idx],
    class_scores[idx])`` for every ``(agg, idx)`` of ``parts`` (each aggregate once),
    bit-identically, with batched sketch updates. ``predictions`` and ``labels`` are object
    arrays: category strings for classification models, floats for regression ones."""
    if not parts:
        return
    aggs = [agg for agg, _ in parts]
    sizes = [int(idx.size) for _, idx in parts]
    rows = np.concatenate([idx for _, idx in parts])
    seg = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    preds, labs = predictions[rows], labels[rows]
    sc, k = np.asarray(scores, dtype=np.float64)[rows], np.asarray(keys, dtype=np.uint64)[rows]
    for agg, size in zip(aggs, sizes, strict=True):
        agg.n_labelled += size
    errors = np.full(rows.size, np.nan)
    regression = [i for i, a in enumerate(aggs) if a.regression is not None and a.label_num is not None]
    classes = [i for i, a in enumerate(aggs) if a.regression is None]
    if regression:
        sel, local = _select(seg, regression, len(parts))
        y, yhat = labs[sel].astype(np.float64), preds[sel].astype(np.float64)
        start = 0
        for i in regression:
            end = start + sizes[i]
            aggs[i].regression.update(y[start:end], yhat[start:end])  # type: ignore[union-attr]
            start = end
        NumericSketch.update_many([aggs[i].label_num for i in regression], y, k[sel], local)  # type: ignore[misc]
        errors[sel] = np.abs(y - yhat)
    if classes:
        sel, local = _select(seg, classes, len(parts))
        lab, pred = labs[sel], preds[sel]
        known = np.not_equal(lab, NULL) & np.not_equal(pred, NULL)
        errors[sel] = np.where(known, (lab != pred).astype(np.float64), np.nan)
        ConfusionCounts.update_many([aggs[i].confusion for i in classes], lab, pred, local)  # type: ignore[misc]
        if class_scores is not None:
            for i in classes:
                if aggs[i].class_histograms is not None:
                    a, b = bounds[i], bounds[i + 1]
                    aggs[i]._add_class_labels(labs[a:b], [class_scores[r] for r in rows[a:b].tolist()])
        CategoricalSketch.update_many([aggs[i].label_cat for i in classes], lab, local)  # type: ignore[misc]
        binary = [i for i in classes
                  if aggs[i].probability is not None and aggs[i].score_histogram is not None]
        if binary:
            sel, local = _select(seg, binary, len(parts))
            has = ~np.isnan(sc[sel])
            positive = np.array([aggs[i].spec.positive_label for i in binary], dtype=object)
            y_pos = np.asarray(labs[sel][has] == positive[local[has]], dtype=bool).astype(np.int64)
            ProbabilitySums.update_many([aggs[i].probability for i in binary],  # type: ignore[misc]
                                        y_pos, sc[sel][has], local[has])
            ScoreHistogram.update_many([aggs[i].score_histogram for i in binary],  # type: ignore[misc]
                                       y_pos, sc[sel][has], local[has])
    if times is not None:
        t = np.asarray(times, dtype=np.float64)[rows]
        ok = ~(np.isnan(errors) | np.isnan(t))
        NumericSketch.update_many([a.error_sample for a in aggs], errors[ok], k[ok], seg[ok])
        NumericSketch.update_many([a.error_time for a in aggs], t[ok], k[ok], seg[ok])
