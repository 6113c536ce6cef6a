"""Reference profiles: what "normal" looked like, for drift tests and relative thresholds.

A profile is built once from training or validation rows and stored as plain JSON (no pickle:
a profile crosses process and version boundaries and must be safe to load). Numeric features
keep quantile bin edges (the window sketches bin on the same edges, so counts compare bin for
bin), counts, moments and a bottom-k sample for two-sample tests; categorical features keep
category counts. Predictions and labels are profiled the same way, and baseline metrics are
computed when labels are present. A binary model's reference with scores and labels also
fits a score calibrator (:mod:`driftline.detectors.calibration`), stored with the profile,
which the windows apply before estimating performance without labels. A row's score is its
``score``, else its ``scores[positive_label]``, as ingest reads events. A multiclass model's
reference rows with ``scores`` vectors and labels fit its class-probability map
(:class:`~driftline.detectors.calibration.MulticlassCalibrator`), which also fixes its classes.

Categorical values are spelt by :func:`~driftline.detectors.categories.category_string`
everywhere (so ``True``, ``1`` and ``1.0`` are all ``"1"``), as the window sketches spell them.

>>> rows = [{"prediction_id": str(i), "features": {"x": float(i), "c": "ab"[i % 2]},
...          "prediction": "ab"[i % 2], "label": "a"} for i in range(10)]
>>> p = build_profile(rows, model_id="m", model_version="1")
>>> p.features["x"].edges.tolist()[:3], p.features["c"].counts, p.metrics["accuracy"]
([0.0, 0.9, 1.8], {'a': 5, 'b': 5}, 0.5)
>>> ReferenceProfile.from_dict(p.to_dict()) == p
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.detectors.attribution import AttributionSums
from driftline.detectors.calibration import (
    Calibrator,
    MulticlassCalibrator,
    fit_calibrator,
    fit_multiclass_calibrator,
)
from driftline.detectors.categories import category_string, category_strings
from driftline.detectors.estimation import estimate_binary, estimate_class_probabilities
from driftline.detectors.hashing import stable_keys
from driftline.detectors.loss_model import LossModel, fit_loss_model
from driftline.detectors.metrics import classification_metrics, regression_metrics
from driftline.detectors.multivariate import (
    FeatureEncoding,
    Kind,
    ReconstructionModel,
    fit_reconstruction_rows,
)
from driftline.detectors.sketches import (
    CalibratedScores,
    CategoricalSketch,
    ClassProbabilitySums,
    ClassRankings,
    ConfusionCounts,
    ExpectedConfusion,
    NumericSketch,
    RegressionSums,
)

__all__ = [
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "ReferenceProfile",
    "build_profile",
    "new_categorical_sketch",
    "new_numeric_sketch",
    "quantile_edges",
]

DEFAULT_BINS = 10
#: bins of the fine grid of reference quantiles on which windows count every value, for
#: whole-window drift tests: a binned KS statistic is at most one bin's share (~1/200) below the
#: raw one (see :func:`driftline.detectors.drift.ks_binned`); 200 int64 counts a feature
DEFAULT_GRID_BINS = 200
DEFAULT_SAMPLE = 20_000
# top-level keys of a flat row that are event metadata, not features
_META_KEYS = frozenset({"prediction_id", "model_id", "model_version", "timestamp", "scores", "score",
                        "segments", "schema_version", "attributions"})


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _unnum(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass(eq=False, slots=True)
class NumericProfile:
    """Quantile edges (deduplicated; first/last = observed min/max), counts on them, moments,
    the bottom-k sample (smallest stable keys of the row ids, key order), and counts on the
    fine ``grid`` of quantiles (None in profiles written before grids existed: their windows
    are tested on samples)."""

    edges: np.ndarray
    counts: np.ndarray
    sample: np.ndarray
    mean: float
    std: float
    min: float
    max: float
    n: int
    missing: int
    kind: str = "numeric"
    grid: np.ndarray | None = None
    grid_counts: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": "numeric", "edges": self.edges.tolist(), "counts": self.counts.tolist(),
               "sample": self.sample.tolist(), "mean": _num(self.mean), "std": _num(self.std),
               "min": _num(self.min), "max": _num(self.max), "n": self.n, "missing": self.missing}
        if self.grid is not None and self.grid_counts is not None:
            out["grid"] = self.grid.tolist()
            out["grid_counts"] = self.grid_counts.tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        grid = None if d.get("grid") is None else np.array(d["grid"], dtype=np.float64)
        grid_counts = None if grid is None else np.array(d["grid_counts"], dtype=np.int64)
        if grid is not None and grid_counts is not None and grid_counts.size != grid.size - 1:
            raise ValueError(f"a numeric profile's grid has {grid.size} edges but {grid_counts.size} counts")
        return cls(np.array(d["edges"], dtype=np.float64), np.array(d["counts"], dtype=np.int64),
                   np.array(d["sample"], dtype=np.float64), _unnum(d["mean"]), _unnum(d["std"]),
                   _unnum(d["min"]), _unnum(d["max"]), int(d["n"]), int(d["missing"]),
                   grid=grid, grid_counts=grid_counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumericProfile) and _json_eq(self.to_dict(), other.to_dict())


@dataclass(eq=False, slots=True)
class CategoricalProfile:
    counts: dict[str, int]
    missing: int
    kind: str = "categorical"

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": dict(sorted(self.counts.items())), "missing": self.missing}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        return cls({str(k): int(v) for k, v in d["counts"].items()}, int(d["missing"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoricalProfile) and self.to_dict() == other.to_dict()


FeatureProfile = NumericProfile | CategoricalProfile


def _json_eq(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _feature_from_dict(d: Mapping[str, Any] | None) -> FeatureProfile | None:
    if d is None:
        return None
    return NumericProfile.from_dict(d) if d["kind"] == "numeric" else CategoricalProfile.from_dict(d)


@dataclass(eq=False, slots=True)
class ReferenceProfile:
    model_id: str
    model_version: str
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None = None
    label: FeatureProfile | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    n_rows: int = 0
    #: the score calibrator fitted on the reference (binary models with scores and labels)
    calibrator: Calibrator | None = None
    #: the error model by prediction bin fitted on the reference (regression with labels)
    loss_model: LossModel | None = None
    #: the classes and class-probability map fitted on the reference (multiclass models with
    #: per-class ``scores`` and labels)
    class_calibrator: MulticlassCalibrator | None = None
    #: the PCA and band of multivariate drift fitted on the reference rows (when asked for,
    #: ``build_profile(multivariate=True)``), with the encodings the windows' moments use
    reconstruction: ReconstructionModel | None = None
    #: mean |attribution| per feature over the rows that carried ``attributions`` (None when
    #: none did): the relevance a window's attribution ranking is scored against
    attributions: dict[str, float] | None = None
    #: binary models: the reference's scored predictions counted on the raw-score grid every
    #: window counts all its predictions on (``CalibratedScores``' logit bins), the reference
    #: side of the label-free ``score`` drift test (None: not binary, or no scores)
    scores: list[int] | None = None

    def get(self, name: str) -> FeatureProfile:
        """A feature's profile; ``"prediction"``/``"label"`` name those unless a feature is so named."""
        if name in self.features:
            return self.features[name]
        special = {"prediction": self.prediction, "label": self.label}.get(name)
        if special is None:
            raise KeyError(f"no profile for {name!r} in {self.model_id}/{self.model_version}")
        return special

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "n_rows": self.n_rows,
            "features": {k: v.to_dict() for k, v in sorted(self.features.items())},
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "label": None if self.label is None else self.label.to_dict(),
            "metrics": {k: _num(v) for k, v in sorted(self.metrics.items())},
            "calibrator": None if self.calibrator is None else self.calibrator.to_dict(),
            "loss_model": None if self.loss_model is None else self.loss_model.to_dict(),
            "class_calibrator": None if self.class_calibrator is None else self.class_calibrator.to_dict(),
            "reconstruction": None if self.reconstruction is None else self.reconstruction.to_dict(),
        }
        if self.attributions is not None:  # absent, not null: profiles without stay as they were
            out["attributions"] = dict(sorted(self.attributions.items()))
        if self.scores is not None:  # absent, not null, likewise
            out["scores"] = list(self.scores)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        feats = {k: _feature_from_dict(v) for k, v in d["features"].items()}
        return cls(str(d["model_id"]), str(d["model_version"]),
                   {k: v for k, v in feats.items() if v is not None},
                   _feature_from_dict(d.get("prediction")), _feature_from_dict(d.get("label")),
                   {k: _unnum(v) for k, v in d.get("metrics", {}).items()}, int(d.get("n_rows", 0)),
                   # profiles written before calibration have none: scores are taken as calibrated
                   None if d.get("calibrator") is None else Calibrator.from_dict(d["calibrator"]),
                   None if d.get("loss_model") is None else LossModel.from_dict(d["loss_model"]),
                   # profiles written before multiclass estimates have none: no estimates
                   None if d.get("class_calibrator") is None
                   else MulticlassCalibrator.from_dict(d["class_calibrator"]),
                   # profiles written before multivariate drift have none
                   None if d.get("reconstruction") is None
                   else ReconstructionModel.from_dict(d["reconstruction"]),
                   None if d.get("attributions") is None
                   else {str(k): float(v) for k, v in d["attributions"].items()},
                   # profiles written before score drift have none: no score test
                   None if d.get("scores") is None else [int(v) for v in d["scores"]])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceProfile) and _json_eq(self.to_dict(), other.to_dict())


# ---- building --------------------------------------------------------------------------------
def _infer_kind(values: list[Any]) -> str:
    """bool or str anywhere -> categorical; only numbers -> numeric (bool is not a number here)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "numeric"
    return "categorical"


def quantile_edges(present: np.ndarray, bins: int) -> np.ndarray:
    """Deduplicated quantiles at 0, 1/bins, ..., 1 of the non-missing values (a constant feature
    gets one degenerate bin, no value the placeholder [0, 0])."""
    if not present.size:
        return np.array([0.0, 0.0])
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
    return np.repeat(edges, 2) if edges.size == 1 else edges


def _numeric_profile(values: list[Any], keys: np.ndarray, bins: int, sample_size: int,
                     grid_bins: int, grid: np.ndarray | None) -> NumericProfile:
    x = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    present = x[~np.isnan(x)]
    edges = quantile_edges(present, bins)
    if grid is None and grid_bins > 0:
        grid = quantile_edges(present, grid_bins)
    sk = NumericSketch(edges, sample_size=sample_size, grid=grid)
    sk.update(x, keys)
    return NumericProfile(edges, sk.counts, sk.sample_values, sk.mean, sk.std,
                          math.nan if sk.min is None else sk.min, math.nan if sk.max is None else sk.max,
                          sk.n, sk.missing, grid=sk.grid,
                          grid_counts=None if sk.grid is None else sk.grid_counts)


def _categorical_profile(values: list[Any]) -> CategoricalProfile:
    sk = CategoricalSketch(max_categories=len(values))  # reference keeps every category
    sk.update(category_strings(values))
    return CategoricalProfile(dict(sorted(sk.counts.items())), sk.missing)


def _profile(values: list[Any], kind: str, keys: np.ndarray, bins: int, sample_size: int,
             grid_bins: int = 0, grid: np.ndarray | None = None) -> FeatureProfile:
    if kind == "numeric":
        return _numeric_profile(values, keys, bins, sample_size, grid_bins, grid)
    if kind == "categorical":
        return _categorical_profile(values)
    raise ValueError(f"unknown feature type {kind!r} (numeric, categorical)")


def build_profile(
    rows: Iterable[Mapping[str, Any]],
    *,
    model_id: str,
    model_version: str,
    feature_types: Mapping[str, str] | None = None,
    prediction_key: str = "prediction",
    label_key: str = "label",
    features_key: str = "features",
    task: str | None = None,
    bins: int = DEFAULT_BINS,
    sample_size: int = DEFAULT_SAMPLE,
    positive_label: str = "1",
    calibration: str = "auto",
    grid_bins: int = DEFAULT_GRID_BINS,
    grids: Mapping[str, np.ndarray] | None = None,
    multivariate: bool = False,
    encodings: tuple[FeatureEncoding, ...] | None = None,
) -> ReferenceProfile:
    """Profile rows that are flat dicts or PredictionEvent-shaped (features nested under
    ``features_key``). Types are inferred per column and overridable by ``feature_types``
    (``"numeric"``/``"categorical"``; keys may also be ``prediction_key``/``label_key``).
    ``task`` ("binary", "multiclass", "regression") fixes the kind of predictions and labels:
    class ids sent as ints are still classes, not numbers.
    Sample keys hash ``prediction_id`` when present, else the row number.
    ``task="binary"`` with scores and labels fits a calibrator by ``calibration`` (``"auto"``
    or one of :data:`~driftline.detectors.calibration.CALIBRATION_METHODS`).

    Numeric features also count on a fine grid of ``grid_bins`` quantiles (0: none), or on
    the given ``grids`` (a segment's profile counts on its model's grid, which its windows use).
    Predictions and labels are not gridded: their numeric tests use samples.

    ``multivariate`` also fits the reconstruction-error model (:mod:`~driftline.detectors.
    multivariate`) on every profiled feature (a categorical one with no value is left out), or
    on the features of the given ``encodings`` (a segment's profile encodes as its model's);
    a reference it cannot be fitted on raises ``ValueError`` saying why."""
    types = dict(feature_types or {})
    if task is not None:
        target_kind = "numeric" if task == "regression" else "categorical"
        types.setdefault(prediction_key, target_kind)
        types.setdefault(label_key, target_kind)
    columns: dict[str, list[Any]] = {}
    preds: list[Any] = []
    labels: list[Any] = []
    ids: list[str] = []
    scores: list[float] = []
    vectors: list[Mapping[str, Any] | None] = []
    feature_rows: list[Mapping[str, Any]] = []
    attributed: dict[str, list[float]] = {}
    n = 0
    for n, row in enumerate(rows, start=1):  # offline build: a loop over rows is fine here
        nested = row.get(features_key)
        feats = nested if isinstance(nested, Mapping) else {
            k: v for k, v in row.items() if k not in _META_KEYS and k not in (prediction_key, label_key)}
        if multivariate:
            feature_rows.append(feats)
        for name in columns.keys() - feats.keys():
            columns[name].append(None)
        for name, v in feats.items():
            columns.setdefault(name, [None] * (n - 1)).append(v)
        preds.append(row.get(prediction_key))
        labels.append(row.get(label_key))
        ids.append(str(row.get("prediction_id", n - 1)))
        scores.append(_score(row, positive_label))
        vectors.append(row["scores"] if isinstance(row.get("scores"), Mapping) else None)
        _add_attributions(attributed, row.get("attributions"))
    keys = stable_keys(ids)
    attributions = AttributionSums()
    for name, values in sorted(attributed.items()):
        attributions.update(name, np.array(values, dtype=np.float64))

    given = dict(grids or {})

    def make(name: str, values: list[Any], gridded: bool = True) -> FeatureProfile:
        return _profile(values, types.get(name) or _infer_kind(values), keys, bins, sample_size,
                        grid_bins if gridded else 0, given.get(name) if gridded else None)

    features = {name: make(name, vals) for name, vals in sorted(columns.items())}
    has_pred = any(v is not None for v in preds)
    has_label = any(v is not None for v in labels)
    prediction = make(prediction_key, preds, False) if has_pred else None
    label = make(label_key, labels, False) if has_label else None
    metrics: dict[str, float] = {}
    loss_model = None
    if prediction is not None and label is not None:
        pairs = [(y, p) for y, p in zip(labels, preds, strict=True) if y is not None and p is not None]
        y, p = (list(t) for t in zip(*pairs, strict=True)) if pairs else ([], [])
        if prediction.kind == "numeric" and label.kind == "numeric":
            rs = RegressionSums()
            rs.update(np.array(y, dtype=np.float64), np.array(p, dtype=np.float64))
            metrics = regression_metrics(rs)
            loss_model = fit_loss_model(np.array(y, dtype=np.float64), np.array(p, dtype=np.float64))
        else:
            cc = ConfusionCounts()
            cc.update(category_strings(y), category_strings(p))
            metrics = classification_metrics(cc)
    calibrator = None
    if task == "binary" and has_label:
        s = np.array(scores, dtype=np.float64)
        yb = np.array([math.nan if v is None else float(category_string(v) == positive_label)
                       for v in labels])
        if np.any(~np.isnan(s) & ~np.isnan(yb)):
            calibrator = fit_calibrator(s, yb, method=calibration)
    if task == "binary" and has_pred:
        metrics.update(_own_estimates(preds, scores, positive_label, calibrator))
    class_calibrator = None
    if task == "multiclass" and has_label:
        class_calibrator = _fit_classes(vectors, labels, calibration)
    if class_calibrator is not None and has_pred:
        metrics.update(_own_class_estimates(preds, vectors, class_calibrator))
    reconstruction = None
    if multivariate:
        kinds: dict[str, Kind]
        if encodings is not None:
            kinds = {e.name: e.kind for e in encodings}
        else:
            kinds = {name: "numeric" if f.kind == "numeric" else "categorical"
                     for name, f in features.items() if f.kind == "numeric" or f.n > 0}
        reconstruction = fit_reconstruction_rows(feature_rows, kinds, encodings=encodings)
    return ReferenceProfile(model_id, model_version, features, prediction, label, metrics, n, calibrator,
                            loss_model, class_calibrator, reconstruction,
                            attributions.means() if attributions else None,
                            _score_counts(scores) if task == "binary" else None)


def _score_counts(scores: list[float]) -> list[int] | None:
    """The reference scores on the windows' raw-score grid (NaN skipped, as windows skip it).
    Multiclass models have no score test: their per-class vectors have no one score whose
    shift stands for the model's (the top-class probability hides which class moved)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not s.size:
        return None
    grid = CalibratedScores()
    return np.bincount(grid.bins(s), minlength=grid.n_bins).tolist()


def _add_attributions(columns: dict[str, list[float]], given: Any) -> None:
    """One row's attributions, per feature; summed as a window sums them (exactly), so a
    window of the reference's own rows has the reference's means to the bit. Non-numbers
    are skipped (ingest would dead-letter such an event)."""
    if not isinstance(given, Mapping):
        return
    for name, value in given.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            columns.setdefault(str(name), []).append(float(value))


def _fit_classes(
    vectors: list[Mapping[str, Any] | None], labels: list[Any], calibration: str
) -> MulticlassCalibrator | None:
    """The multiclass map from the rows' ``scores`` vectors and labels: the classes are every
    key the vectors name (sorted), None below two classes or without a scored, labelled row."""
    classes = tuple(sorted({str(c) for v in vectors if v for c in v}))
    if len(classes) < 2:
        return None
    matrix = _class_matrix(vectors, classes)
    y = np.array([None if v is None else category_string(v) for v in labels], dtype=object)
    labelled = np.array([v is not None for v in labels], dtype=bool)
    if not np.any(~np.isnan(matrix).any(axis=1) & labelled):
        return None
    # ``calibration`` names the binary maps; of those only "identity" means the same here
    method = "identity" if calibration == "identity" else "auto"
    return fit_multiclass_calibrator(matrix, y, classes, method=method)


def _class_matrix(vectors: list[Mapping[str, Any] | None], classes: tuple[str, ...]) -> np.ndarray:
    """Rows' class probabilities as an (n, K) matrix; NaN where absent or not in [0, 1]."""
    out = np.full((len(vectors), len(classes)), np.nan)
    for i, v in enumerate(vectors):
        if v:
            for j, c in enumerate(classes):
                p = v.get(c)
                if isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0:
                    out[i, j] = float(p)
    return out


def _own_class_estimates(
    preds: list[Any], vectors: list[Mapping[str, Any] | None], calibrator: MulticlassCalibrator
) -> dict[str, float]:
    """The reference's own multiclass estimates, as a window computes them (the baseline of a
    rule on ``estimated_<metric>``, as :func:`_own_estimates` for binary models)."""
    matrix = _class_matrix(vectors, calibrator.classes)
    scored = ~np.isnan(matrix).any(axis=1)
    if not scored.any():
        return {}
    pred = calibrator.index_of([None if p is None else category_string(p) for p in preds])[scored]
    k = len(calibrator.classes)
    sketch, rankings = ClassProbabilitySums(k), ClassRankings(k)
    q = calibrator.apply(matrix[scored])
    sketch.update(pred, q)
    rankings.update(pred, matrix[scored], q)
    return estimate_class_probabilities(sketch, calibrator.classes, rankings=rankings).values


def _own_estimates(
    preds: list[Any], scores: list[float], positive_label: str, calibrator: Calibrator | None
) -> dict[str, float]:
    """The label-free estimates of the reference itself, as a window would compute them: the
    baseline a rule on ``estimated_<metric>`` compares with (an estimate with an estimate, so a
    calibration that is off biases both alike)."""
    s = np.array(scores, dtype=np.float64)
    scored = ~np.isnan(s)
    if not scored.any():
        return {}
    raw = s[scored]
    q = raw if calibrator is None else calibrator.apply(raw)
    positive = np.array([category_string(p) == positive_label for p in preds], dtype=bool)[scored]
    ec, cs = ExpectedConfusion(), CalibratedScores()
    ec.update(positive, q)
    cs.update(positive, raw, q)
    return estimate_binary(cs, expected=ec).values


def _score(row: Mapping[str, Any], positive_label: str) -> float:
    """The row's positive-class probability, NaN when it has none (or not a number in [0, 1])."""
    value = row.get("score")
    if value is None and isinstance(row.get("scores"), Mapping):
        value = row["scores"].get(positive_label)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        return math.nan
    return float(value)


# ---- window sketches on the profile's bins ----------------------------------------------------
def new_numeric_sketch(profile: ReferenceProfile, feature: str, sample_size: int = 1024) -> NumericSketch:
    """A window sketch binned on the reference edges, so counts compare bin for bin."""
    fp = profile.get(feature)
    if not isinstance(fp, NumericProfile):
        raise TypeError(f"{feature!r} is {fp.kind} in the profile, not numeric")
    return NumericSketch(fp.edges, sample_size=sample_size, grid=fp.grid)


def new_categorical_sketch(
    profile: ReferenceProfile, feature: str, max_categories: int = 256
) -> CategoricalSketch:
    """A window sketch that always keeps the reference categories (plus up to ``max_categories`` new)."""
    fp = profile.get(feature)
    if not isinstance(fp, CategoricalProfile):
        raise TypeError(f"{feature!r} is {fp.kind} in the profile, not categorical")
    return CategoricalSketch(categories=list(fp.counts), max_categories=max_categories)
