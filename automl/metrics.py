"""Objective metrics by name: one function scores decisions or probabilities alike.

The search scores out-of-fold predictions and the registry scores a holdout,
neither with a fitted scikit-learn estimator at hand, so scikit-learn's
scorers (which call the estimator) do not fit; the metric functions they wrap
do. Every name here is a scikit-learn scorer name, every value is "higher is
better" as with scorers (log loss is negated), and the allowed names per
problem type live in `automl.data_report.METRICS`.

Probability metrics (ROC AUC, average precision, log loss) judge the ranking
or the calibration, not a decision: a tuned decision threshold cannot change
them, so the search leaves the decision rule alone when one is optimised.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

DEFAULT = "balanced_accuracy"
PROBABILITY_METRICS = frozenset({"roc_auc", "roc_auc_ovr", "average_precision", "neg_log_loss"})
LABELS = {
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "f1_macro": "macro F1",
    "f1_weighted": "weighted F1",
    "f1_micro": "micro F1",
    "f1_samples": "per-item F1",
    "f1": "F1 of the positive class",
    "jaccard_samples": "per-item Jaccard",
    "roc_auc": "ROC AUC",
    "roc_auc_ovr": "ROC AUC (one vs rest)",
    "average_precision": "average precision",
    "neg_log_loss": "negative log loss",
    "r2": "R²",
    "neg_mean_absolute_error": "negative mean absolute error",
    "neg_root_mean_squared_error": "negative root mean squared error",
}
# Regression scorers: the function of (truth, prediction) and the sign that makes
# higher better, as scikit-learn's `neg_` scorers do.
REGRESSION_METRICS = {
    "r2": (skm.r2_score, 1.0),
    "neg_mean_absolute_error": (skm.mean_absolute_error, -1.0),
    "neg_root_mean_squared_error": (skm.root_mean_squared_error, -1.0),
}


def needs_probabilities(metric: str) -> bool:
    return metric in PROBABILITY_METRICS


def label(metric: str) -> str:
    """How a person reads the metric's name."""
    return LABELS.get(metric, metric.replace("_", " "))


def metric_value(
    metric: str,
    y_true,
    y_pred=None,
    proba: np.ndarray | None = None,
    *,
    multi_label: bool = False,
    classes=None,
) -> float:
    """`metric` of predictions against the truth.

    Single-label: `y_true` and `y_pred` are class values; `proba` has one
    column per class in the order of `classes` (default: 0..k-1, the search's
    encoded classes). Multi-label: 0/1 matrices, `proba` one column per label.
    Decision metrics need `y_pred`, probability metrics need `proba`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if needs_probabilities(metric):
            if proba is None:
                raise ValueError(f"{metric} needs probabilities")
            return _from_probabilities(metric, y_true, np.asarray(proba, dtype=float),
                                       multi_label, classes)
        if y_pred is None:
            raise ValueError(f"{metric} needs predicted labels")
        return _from_decisions(metric, y_true, y_pred, multi_label, classes)


def _positive(values: np.ndarray, classes) -> object:
    """The positive class of a binary F1: encoded 1, else the project's later class."""
    if values.dtype.kind in "iub":
        return 1
    if classes is not None and len(classes) == 2:
        return list(classes)[-1]
    named = [c for c in (classes or []) if c in set(values.tolist())]
    return named[-1] if named else values[-1]


def _from_decisions(metric: str, y_true, y_pred, multi_label: bool, classes=None) -> float:
    if metric in REGRESSION_METRICS:
        fn, sign = REGRESSION_METRICS[metric]
        y_true = np.asarray(y_true, dtype=float)
        if metric == "r2" and len(y_true) < 2:
            return float("nan")  # R² of one value is undefined
        return sign * float(fn(y_true, np.asarray(y_pred, dtype=float)))
    if metric == "balanced_accuracy":
        if not multi_label:
            fast = _encoded_balanced_accuracy(y_true, y_pred)
            return fast if fast is not None else float(skm.balanced_accuracy_score(y_true,
                                                                                   y_pred))
        # Mean over the labels that vary: a label nobody has says nothing about the model.
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        scores = [skm.balanced_accuracy_score(y_true[:, j], y_pred[:, j])
                  for j in range(y_true.shape[1]) if len(np.unique(y_true[:, j])) > 1]
        return float(np.mean(scores)) if scores else float((y_true == y_pred).mean())
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    if metric == "jaccard_samples":
        return float(skm.jaccard_score(y_true, y_pred, average="samples", zero_division=0))
    if metric.startswith("f1"):
        average = metric.partition("_")[2] or "binary"
        if average == "binary":
            # The positive class is the second one, as with scikit-learn's encoded 0/1.
            values = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]))
            return float(skm.f1_score(y_true, y_pred, pos_label=_positive(values, classes),
                                      average="binary", zero_division=0))
        return float(skm.f1_score(y_true, y_pred, average=average, zero_division=0))
    raise ValueError(f"unknown metric {metric!r}")


def _encoded_balanced_accuracy(y_true, y_pred) -> float | None:
    """scikit-learn's balanced accuracy for encoded classes (0..k-1), without its checks.

    The search scores every threshold of every trial's decision rule on every
    fold: thousands of calls per run, where scikit-learn's input validation
    took a quarter of a short trial's time. Same definition (mean recall over
    the classes present in `y_true`; a test holds the two equal); None when
    the inputs are not small non-negative integers, which go to scikit-learn.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if (y_true.dtype.kind not in "iu" or y_pred.dtype.kind not in "iu" or y_true.ndim != 1
            or y_true.shape != y_pred.shape or not len(y_true) or y_true.min() < 0
            or y_pred.min() < 0):
        return None
    k = int(max(y_true.max(), y_pred.max())) + 1
    support = np.bincount(y_true, minlength=k)
    hits = np.bincount(y_true[y_true == y_pred], minlength=k)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def _from_probabilities(metric: str, y_true, proba: np.ndarray, multi_label: bool,
                        classes) -> float:
    if multi_label:
        y_true = np.asarray(y_true)
        varied = [j for j in range(y_true.shape[1]) if len(np.unique(y_true[:, j])) > 1]
        if not varied:
            return float("nan")
        if metric == "roc_auc":
            return float(skm.roc_auc_score(y_true[:, varied], proba[:, varied], average="macro"))
        raise ValueError(f"{metric} is not a multi-label metric")
    classes = list(range(proba.shape[1])) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in np.asarray(y_true).tolist()])
    if metric == "neg_log_loss":
        return -float(skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=range(len(classes))))
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")  # one class only: a ranking metric is undefined
    # Over the classes present (a declared class nobody labeled has no ranking to judge),
    # the rows renormalised over them; with two, the second is the positive class.
    sub = proba[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-15, None)
    if len(present) == 2 and metric in ("roc_auc", "roc_auc_ovr", "average_precision"):
        fn = skm.average_precision_score if metric == "average_precision" else skm.roc_auc_score
        return float(fn(y == present[1], sub[:, 1]))
    if metric in ("roc_auc", "roc_auc_ovr"):
        return float(skm.roc_auc_score(np.searchsorted(present, y), sub, multi_class="ovr",
                                       average="macro"))
    raise ValueError(f"{metric} does not fit a {len(classes)}-class problem")
