"""Every name a configuration may use for the monitor's statistics, in one light module.

A configuration names drift tests (``drift_tests: {amount: psi}``), corrections, online
detectors and the metrics rules watch (``metric: accuracy``). A misspelt name must stop start-up
with an error naming the key, the value and the closest valid name, not load cleanly and fail
every window at 3 a.m. So the names are listed here, without importing scipy or river (loading
a config must stay cheap), and ``tests/test_vocabulary.py`` keeps these lists in step with what
the code computes: every name listed is produced, every name produced is listed.

Metric names are either exact (``accuracy``, ``dataset_drift``) or a *family* with a free part:
a class (``f1.<class>``), a feature (``drift.<feature>.statistic``, ``missing_rate.<feature>``)
or a detector (``online.<detector>.detections``).

>>> check_metric("accuracy"), check_metric("drift.amount.p_value"), check_metric("online.adwin.detections")
(None, None, None)
>>> check_metric("acuracy", "rules[0].metric")
Traceback (most recent call last):
ValueError: rules[0].metric: unknown metric 'acuracy'; did you mean 'accuracy'?
>>> check_name("bonferoni", CORRECTIONS, "drift_correction")
Traceback (most recent call last):
ValueError: drift_correction must be bh, bonferroni or none, not 'bonferoni'; did you mean 'bonferroni'?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CORRECTIONS",
    "DEFAULT_ATTRIBUTION_THRESHOLD",
    "DRIFT_TESTS",
    "HEALTH_ALERTS",
    "HEALTH_EVENTS",
    "LABEL_FREE_METRICS",
    "LABEL_LAG_QUANTILES",
    "METRICS",
    "METRIC_FAMILIES",
    "MULTIVARIATE_METHODS",
    "ONLINE_DETECTORS",
    "PROPORTION_METRICS",
    "SEGMENT_RANKING_METRIC",
    "check_metric",
    "check_name",
    "closest",
    "is_label_free",
    "is_metric",
]

#: the tests of ``driftline.detectors.drift.run_test``
DRIFT_TESTS = frozenset(
    {
        "ks",
        "anderson_darling",
        "cramer_von_mises",
        "wasserstein",
        "chi_square",
        "z",
        "fisher",
        "psi",
        "jensen_shannon",
        "hellinger",
    }
)
#: multiple-testing corrections across a window's features ("none" turns it off)
CORRECTIONS = ("bh", "bonferroni", "none")
#: the kinds of ``driftline.detectors.online.DETECTORS``
ONLINE_DETECTORS = frozenset({"adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w"})

#: multivariate drift methods (``driftline.detectors.multivariate``)
MULTIVARIATE_METHODS = frozenset({"pca_reconstruction"})
#: kinds of integration-health events (:class:`driftline.detectors.integration.HealthEvent`)
HEALTH_EVENTS = frozenset(
    {
        "no_predictions",
        "predictions_resumed",
        "volume_low",
        "volume_high",
        "label_coverage_low",
        "label_coverage_falling",
        "label_lag_high",
        "feature_missing",
        "new_feature",
        "type_change",
    }
)
#: the alerts integration-health events raise, by alert name (a rule name of its own, and the
#: name ``health.disable`` takes): each event kind belongs to exactly one, whose first kind
#: fires it and whose ``predictions_resumed`` resolves it (``streams/integration_health.py``)
HEALTH_ALERTS: dict[str, tuple[str, ...]] = {
    "no-predictions": ("no_predictions", "predictions_resumed"),
    "volume-out-of-band": ("volume_low", "volume_high"),
    "label-coverage-low": ("label_coverage_low",),
    "label-coverage-falling": ("label_coverage_falling",),
    "label-lag-high": ("label_lag_high",),
    "schema-change": ("feature_missing", "new_feature", "type_change"),
}
#: the nDCG below which a window's attribution ranking has drifted (``attribution_drift``):
#: SageMaker Clarify's violation threshold; ``ModelConfig.attribution_threshold`` overrides it
DEFAULT_ATTRIBUTION_THRESHOLD = 0.9

#: metrics that are a share of labelled events, for which Wilson intervals hold
#: (``driftline.streams.ranking``)
PROPORTION_METRICS = frozenset({"accuracy", "label_coverage"})
#: per task, the metric a final whole-model result ranks its segments by
#: (``WindowResult.segments_ranked``), and whether higher is better
SEGMENT_RANKING_METRIC: dict[str, tuple[str, bool]] = {
    "binary": ("accuracy", True),
    "multiclass": ("accuracy", True),
    "regression": ("mae", False),
}

#: the label-lag quantiles a window carries once labels joined (``detectors/label_lag.py``), by
#: metric name; ``health.lag_quantile`` names one of these quantiles
LABEL_LAG_QUANTILES: dict[float, str] = {
    0.5: "label_lag_p50_ms",
    0.9: "label_lag_p90_ms",
    0.95: "label_lag_p95_ms",
    0.99: "label_lag_p99_ms",
}

_AVERAGED = ("precision", "recall", "f1")
#: metrics a window's values carry by exact name
METRICS = frozenset(
    {
        # counts and coverage
        "n",
        "prediction_count",
        "labelled_count",
        "label_coverage",
        # label time - prediction time of the joined labels (ms): how close to the horizon
        *LABEL_LAG_QUANTILES.values(),
        # classification
        "accuracy",
        "balanced_accuracy",
        *(f"{m}_{avg}" for m in _AVERAGED for avg in ("macro", "micro", "weighted")),
        "log_loss",
        "brier",
        "n_positive",
        "roc_auc",
        "roc_auc_error_bound",
        "pr_auc",
        "pr_auc_error_bound",
        # regression
        "mae",
        "rmse",
        "mape",
        "r2",
        "mean_error",
        # label-free estimates of performance
        "estimated_accuracy",
        "estimated_precision",
        "estimated_recall",
        "estimated_f1",
        "estimated_roc_auc",
        "estimated_mae",
        "estimated_rmse",
        # estimate - realised, once a window is labelled: how far the label-free estimate was off
        *(
            f"estimation_error_{m}"
            for m in ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse")
        ),
        # drift over the window's features
        "dataset_drift",
        "drift_share",
        "drifted_features",
        # CUSUM of per-window drift evidence (detectors/sequential.py): what the default drift
        # rule watches, so false alerts are bounded per month rather than per window
        "drift_cusum",
        # multivariate drift (models with ``multivariate: true``): the window's mean squared
        # reconstruction error, and 1 when it is outside the reference's band
        "multivariate_error",
        "multivariate_drift",
        # feature attribution drift (detectors/attribution.py), when events carry attributions
        # and the reference has them: the nDCG, and 1/0 for "below attribution_threshold"
        "attribution_ndcg",
        "attribution_drift",
    }
)
#: (prefix, free part, suffix): a name ``prefix + anything + suffix``
METRIC_FAMILIES: tuple[tuple[str, str, str], ...] = (
    *((f"{m}.", "<class>", "") for m in _AVERAGED),
    ("support.", "<class>", ""),
    # a multiclass model's per-class estimates and their errors once labelled
    *((f"estimated_{m}.", "<class>", "") for m in ("precision", "recall", "f1", "roc_auc")),
    *((f"estimation_error_{m}.", "<class>", "") for m in ("precision", "recall", "f1", "roc_auc")),
    # a multiclass model's realised one-vs-rest ROC AUC per class (``roc_auc`` is the macro mean)
    ("roc_auc.", "<class>", ""),
    ("roc_auc_error_bound.", "<class>", ""),
    ("drift.", "<feature>", ".statistic"),
    ("drift.", "<feature>", ".p_value"),
    ("missing_rate.", "<feature>", ""),
    ("type_error_rate.", "<feature>", ""),
    ("out_of_range_rate.", "<feature>", ""),
    ("online.", "<detector>", ".detections"),
)

#: label-free metrics are complete when a window's predictions are (provisional phase); the
#: others need labels and are judged when the window is final
LABEL_FREE_METRICS = frozenset(
    {"dataset_drift", "drift_share", "drifted_features", "drift_cusum", "prediction_count",
     "multivariate_error", "multivariate_drift", "attribution_ndcg", "attribution_drift"}
)
_LABEL_FREE_PREFIXES = ("drift.", "missing_rate.", "type_error_rate.", "out_of_range_rate.", "estimated_")


def is_label_free(metric: str) -> bool:
    """Whether a metric is complete when predictions are (label drift is not)."""
    if metric.startswith("drift.label."):
        return False
    return metric in LABEL_FREE_METRICS or metric.startswith(_LABEL_FREE_PREFIXES)


def is_metric(name: str) -> bool:
    """Whether a window can carry a value called ``name``."""
    if name in METRICS:
        return True
    for prefix, free, suffix in METRIC_FAMILIES:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            middle = name[len(prefix) : len(name) - len(suffix)]
            if free != "<detector>" or middle in ONLINE_DETECTORS:
                return True
    return False


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name a typo most likely meant, if any is close."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_name(name: str, valid: Iterable[str], where: str) -> None:
    """Raise ``ValueError`` naming ``where``, the valid names, the bad one and the closest."""
    names = sorted(valid)
    if name in names:
        return
    choices = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    guess = closest(name, names)
    hint = f"; did you mean {guess!r}?" if guess else ""
    raise ValueError(f"{where} must be {choices}, not {name!r}{hint}")


def check_metric(name: str, where: str = "metric") -> None:
    """Raise ``ValueError`` unless a window can carry ``name`` (see :func:`is_metric`)."""
    if is_metric(name):
        return
    templates = [*METRICS, *(p + free + s for p, free, s in METRIC_FAMILIES)]
    guess = closest(name, templates)
    examples = "accuracy, dataset_drift, drift.<feature>.statistic, ..."
    hint = f"; did you mean {guess!r}?" if guess else f"; see docs/alerting.md for metric names ({examples})"
    raise ValueError(f"{where}: unknown metric {name!r}{hint}")
