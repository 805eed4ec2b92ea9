"""Explanations of a chosen model on its holdout: how good, where wrong, how sure, and why.

Every function here is pure and UI-free: it takes a fitted model (a
`TrainedModel`, or a bare scikit-learn pipeline), the raw holdout input in the
modality's `labeling.inputs.model_input` shape (texts, a DataFrame, image
paths) and the true labels, and returns a plain JSON-serialisable dict. The
dicts are stored in a model version's metrics JSON and drawn by the Train page,
so they hold only numbers, strings, lists and None (never NaN or numpy types).

Why each piece is here:
- `holdout_metrics`: a single holdout number hides how little a small holdout
  can tell; a 95% interval says how far to trust it.
- `per_class`: a good average can hide a class the model never gets right.
- `calibration`: automated labeling and review rules act on confidences, so
  they must mean what they say.
- `importance`: what the model leans on (columns, image regions, terms) is
  how a person spots a shortcut or a leak before trusting the model.
- `explain`: one bundle for the training run that never raises, because an
  explanation that fails must not cost the trained model.

Importance is measured on the whole pipeline over the raw input, so it speaks
in the user's terms (a column, a region of the picture, a word), not in terms
of derived features.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.pipeline import FeatureUnion, Pipeline

from automl.features import _grey
from automl.model import TrainedModel

Z95 = 1.959963984540054  # two-sided 95% normal quantile, for Wilson intervals
N_BOOT = 1000
N_BINS = 10
BUDGET_SECONDS = 3.0  # per importance measurement; a Train page waits on all of them
MIN_IMPORTANCE_ITEMS = 10  # below this, score drops are noise and would mislead
MAX_TABLE_ROWS = 500
MIN_TABLE_ROWS = 100  # fewer rows than this make a column's drop too coarse to rank
MAX_IMAGES = 100
IMAGE_REPEATS = 3
MAX_TEXTS = 200
N_DELETION_TERMS = 20
TOP = 15
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


# ---------------------------------------------------------------- inputs


def _as_model(model: TrainedModel | Pipeline, classes: Sequence[str] | None,
              modality: str | None, multi_label: bool | None) -> TrainedModel:
    """A bare pipeline is wrapped so that every function speaks in class names.

    A pipeline fitted on encoded targets (as training does) cannot be mapped
    back to names from its own `classes_`; pass the `TrainedModel` then.
    """
    if isinstance(model, TrainedModel):
        return model
    fitted = [str(c) for c in getattr(model, "classes_", [])]
    if multi_label and classes is not None:
        fitted = list(classes)
    return TrainedModel(pipeline=model, classes=list(classes) if classes else fitted,
                        fitted_classes=fitted, modality=modality or "",
                        multi_label=bool(multi_label))


def _fields(model: TrainedModel, classes: Sequence[str] | None, modality: str | None,
            multi_label: bool | None) -> tuple[list[str], str, bool]:
    return (list(classes) if classes else list(model.classes),
            modality or model.modality,
            model.multi_label if multi_label is None else bool(multi_label))


def _truth(y_true: Any, classes: list[str], multi_label: bool) -> tuple[list[str], np.ndarray]:
    """True labels in one shape: class names (single-label) or a 0/1 matrix (multi-label).

    Labels come as the store gives them (a list of label lists per item) or as
    plain names. A true label the model never knew is appended to the classes,
    so it counts as an error rather than vanishing from the measure.
    """
    if multi_label:
        if isinstance(y_true, np.ndarray) and y_true.ndim == 2 and \
                y_true.dtype.kind in "biuf" and y_true.shape[1] == len(classes):
            return list(classes), y_true.astype(bool)
        sets = [[str(v) for v in ([row] if isinstance(row, str) else list(row))] for row in y_true]
        extra = sorted({c for s in sets for c in s} - set(classes))
        out = list(classes) + extra
        matrix = np.zeros((len(sets), len(out)), dtype=bool)
        for i, s in enumerate(sets):
            for c in s:
                matrix[i, out.index(c)] = True
        return out, matrix
    names = []
    for row in y_true:
        if isinstance(row, str) or not isinstance(row, Sequence | np.ndarray):
            names.append(str(row))
        else:
            names.append(str(row[0]) if len(row) else "")
    extra = sorted(set(names) - set(classes))
    return list(classes) + extra, np.array(names, dtype=object)


def _proba(model: TrainedModel, X: Any, classes: list[str]) -> np.ndarray:  # noqa: N803
    """The model's probabilities with one column per class in `classes` (absent ones 0)."""
    raw = model.predict_proba(X)
    out = np.zeros((raw.shape[0], len(classes)))
    for j, name in enumerate(model.classes):
        if name in classes:
            out[:, classes.index(name)] = raw[:, j]
    return out


def _n_items(X: Any) -> int:  # noqa: N803
    return int(X.shape[0]) if hasattr(X, "shape") else len(X)


def _subset(X: Any, idx: np.ndarray) -> Any:  # noqa: N803
    if hasattr(X, "iloc"):
        return X.iloc[idx].reset_index(drop=True)
    return [X[i] for i in idx]


def _predicted(proba: np.ndarray, classes: list[str], multi_label: bool) -> np.ndarray:
    if multi_label:
        return proba >= 0.5
    return np.array([classes[int(i)] for i in proba.argmax(axis=1)], dtype=object)


def _score(truth: np.ndarray, proba: np.ndarray, classes: list[str], multi_label: bool) -> float:
    """Balanced accuracy, or its mean over the labels that vary: what training ranks by."""
    pred = _predicted(proba, classes, multi_label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not multi_label:
            return float(balanced_accuracy_score(truth, pred))
        scores = [balanced_accuracy_score(truth[:, j], pred[:, j])
                  for j in range(truth.shape[1]) if len(np.unique(truth[:, j])) > 1]
        return float(np.mean(scores)) if scores else float((truth == pred).mean())


def _clean(value: Any) -> Any:
    """Numbers, strings, lists, dicts and None only: NaN is not JSON, numpy types are not."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value


# ---------------------------------------------------------------- holdout metrics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: honest near 0 and 1 and on small n, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 and n successes the bound is exactly 0 (1); rounding must not leave the point out.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _resample_weights(patterns: np.ndarray, n_boot: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap resamples as counts of distinct item patterns, not as item indices.

    Drawing n items with replacement gives each distinct pattern (a row of
    `patterns`: what is true and what was predicted) a Multinomial(n, share)
    count; drawing those counts directly is the same bootstrap in
    n_boot x patterns memory instead of n_boot x n.
    """
    unique, counts = np.unique(patterns, axis=0, return_counts=True)
    n = int(counts.sum())
    return unique, rng.multinomial(n, counts / n, size=n_boot)


def _boot_balanced(truth: np.ndarray, pred: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Balanced accuracy of every bootstrap resample (classes absent from a resample skipped)."""
    codes = pd.factorize(truth)[0]
    unique, weights = _resample_weights(np.column_stack([codes, truth == pred]).astype(np.int64),
                                        n_boot, rng)
    recalls = []
    for c in np.unique(unique[:, 0]):
        member = unique[:, 0] == c
        support = weights[:, member].sum(axis=1)
        hits = weights[:, member & (unique[:, 1] == 1)].sum(axis=1)
        recalls.append(np.where(support > 0, hits / np.maximum(support, 1), np.nan))
    return np.nanmean(np.vstack(recalls), axis=0)


def _boot_label_balanced(truth: np.ndarray, pred: np.ndarray, n_boot: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Mean per-label balanced accuracy of every resample, over the labels that vary in it."""
    k = truth.shape[1]
    unique, weights = _resample_weights(np.hstack([truth, pred]).astype(np.int8), n_boot, rng)
    t, p = unique[:, :k].astype(bool), unique[:, k:].astype(bool)
    npos, nneg = weights @ t, weights @ ~t
    tpr = (weights @ (t & p)) / np.maximum(npos, 1)
    tnr = (weights @ (~t & ~p)) / np.maximum(nneg, 1)
    valid = (npos > 0) & (nneg > 0)
    counts = valid.sum(axis=1)
    mean = (((tpr + tnr) / 2) * valid).sum(axis=1) / np.maximum(counts, 1)
    elementwise = weights @ (t == p).mean(axis=1) / weights.sum(axis=1)
    return np.where(counts > 0, mean, elementwise)


def holdout_metrics(
    model: TrainedModel | Pipeline,
    X: Any,  # noqa: N803 - scikit-learn's name for inputs
    y_true: Any,
    *,
    classes: Sequence[str] | None = None,
    multi_label: bool | None = None,
    proba: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict:
    """Holdout accuracy and balanced accuracy, each with a 95% interval.

    Plain (or subset) accuracy is a proportion, so its interval is Wilson's.
    Balanced accuracy is not, so it is bootstrapped over holdout items with a
    fixed seed (the same holdout gives the same interval every run). `proba`
    (columns in `classes` order) skips predicting again.
    """
    wrapped = _as_model(model, classes, None, multi_label)
    names, _, multi = _fields(wrapped, classes, None, multi_label)
    names, truth = _truth(y_true, names, multi)
    proba = _proba(wrapped, X, names) if proba is None else _align(proba, names)
    n = len(truth)
    reasons: list[str] = []
    out: dict = {"n": n, "multi_label": multi, "confidence": 0.95, "n_boot": n_boot,
                 "seed": seed, "reasons": reasons}
    if n == 0:
        reasons.append("no holdout items: nothing to measure")
        return out
    pred = _predicted(proba, names, multi)
    rng = np.random.default_rng(seed)
    if multi:
        exact = int((truth == pred).all(axis=1).sum())
        lo, hi = wilson_interval(exact, n)
        out["subset_accuracy"] = {"value": exact / n, "low": lo, "high": hi, "method": "wilson"}
        point = _score(truth, proba, names, True)
        boot = _boot_label_balanced(truth, pred, n_boot, rng)
        key, what = "mean_label_balanced_accuracy", "mean per-label balanced accuracy"
        varying = int(sum(len(np.unique(truth[:, j])) > 1 for j in range(truth.shape[1])))
        if varying == 0:
            reasons.append("no label both occurs and is absent in the holdout: the per-label "
                           "balanced accuracy falls back to element-wise accuracy")
        out["how"] = (f"subset accuracy (every label of an item right) on {n} holdout items "
                      f"with a Wilson 95% interval; {what} (over the labels that occur and are "
                      f"absent in the holdout) with a percentile bootstrap 95% interval "
                      f"({n_boot} resamples of the holdout items, seed {seed})")
    else:
        right = int((truth == pred).sum())
        lo, hi = wilson_interval(right, n)
        out["accuracy"] = {"value": right / n, "low": lo, "high": hi, "method": "wilson"}
        point = _score(truth, proba, names, False)
        boot = _boot_balanced(truth, pred, n_boot, rng)
        key, what = "balanced_accuracy", "balanced accuracy"
        present = sorted(set(truth.tolist()))
        if len(present) < 2:
            reasons.append(f"the holdout holds one class only ({present[0]!r}): balanced "
                           "accuracy is that class's recall")
        absent = [c for c in names if c not in present]
        if absent:
            reasons.append(f"class(es) absent from the holdout, not measured: {', '.join(absent)}")
        out["how"] = (f"accuracy on {n} holdout items with a Wilson 95% interval; {what} (mean "
                      f"recall over the classes in the holdout) with a percentile bootstrap 95% "
                      f"interval ({n_boot} resamples of the holdout items, seed {seed})")
    lo_b, hi_b = np.percentile(boot, [2.5, 97.5])
    # A skewed bootstrap (a near-perfect score, a tiny class) can leave the point just
    # outside the percentiles; the interval is widened to hold it rather than mislead.
    out[key] = {"value": point, "low": float(min(lo_b, point)), "high": float(max(hi_b, point)),
                "method": "bootstrap"}
    out["primary"] = key
    if n < 30:
        reasons.append(f"only {n} holdout items: the intervals are wide")
    return _clean(out)


def _align(proba: np.ndarray, names: list[str]) -> np.ndarray:
    """Given probabilities may lack columns for true labels the model never knew."""
    proba = np.asarray(proba, dtype=float)
    if proba.shape[1] < len(names):
        proba = np.hstack([proba, np.zeros((proba.shape[0], len(names) - proba.shape[1]))])
    return proba


# ---------------------------------------------------------------- per class


def per_class(
    model: TrainedModel | Pipeline,
    X: Any,  # noqa: N803
    y_true: Any,
    *,
    classes: Sequence[str] | None = None,
    multi_label: bool | None = None,
    proba: np.ndarray | None = None,
) -> dict:
    """Precision, recall, F1 and support per class, and the confusion matrix in class order.

    Multi-label items have no single confusion matrix: each label gets its own
    2x2 one ([[tn, fp], [fn, tp]]).
    """
    wrapped = _as_model(model, classes, None, multi_label)
    names, _, multi = _fields(wrapped, classes, None, multi_label)
    names, truth = _truth(y_true, names, multi)
    proba = _proba(wrapped, X, names) if proba is None else _align(proba, names)
    n = len(truth)
    reasons: list[str] = []
    out: dict = {"n": n, "classes": names, "reasons": reasons}
    if n == 0:
        reasons.append("no holdout items: nothing to measure")
        return out
    pred = _predicted(proba, names, multi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if multi:
            p, r, f, s = precision_recall_fscore_support(truth, pred, zero_division=0)
            out["confusion_matrix"] = {
                "labels": names,
                "per_label": multilabel_confusion_matrix(truth, pred).tolist(),
                "layout": "one [[tn, fp], [fn, tp]] matrix per label, in label order",
            }
        else:
            p, r, f, s = precision_recall_fscore_support(truth, pred, labels=names,
                                                         zero_division=0)
            out["confusion_matrix"] = {
                "labels": names,
                "matrix": confusion_matrix(truth, pred, labels=names).tolist(),
                "layout": "rows are true classes, columns predicted classes, in label order",
            }
    out["rows"] = [{"class": c, "precision": p[i], "recall": r[i], "f1": f[i],
                    "support": int(s[i])} for i, c in enumerate(names)]
    absent = [c for i, c in enumerate(names) if s[i] == 0]
    if absent:
        reasons.append(f"no holdout item of class(es) {', '.join(absent)}: their recall and "
                       "F1 are shown as 0, not measured")
    return _clean(out)


# ---------------------------------------------------------------- calibration


def calibration(
    model: TrainedModel | Pipeline,
    X: Any,  # noqa: N803
    y_true: Any,
    *,
    classes: Sequence[str] | None = None,
    multi_label: bool | None = None,
    proba: np.ndarray | None = None,
    n_bins: int = N_BINS,
) -> dict:
    """Reliability curve and expected calibration error (ECE).

    Single-label: the top class's confidence against whether it was right,
    binned like `sklearn.calibration.calibration_curve` (uniform bins), with
    each bin's count so small bins can be discounted. Multi-label: every
    (item, label) probability against whether the label is there.
    ECE = sum over bins of count/n * |accuracy - mean confidence|.
    """
    wrapped = _as_model(model, classes, None, multi_label)
    names, _, multi = _fields(wrapped, classes, None, multi_label)
    names, truth = _truth(y_true, names, multi)
    proba = _proba(wrapped, X, names) if proba is None else _align(proba, names)
    n = len(truth)
    reasons: list[str] = []
    out: dict = {"n": n, "n_bins": n_bins, "reasons": reasons}
    if n == 0:
        reasons.append("no holdout items: nothing to measure")
        return out
    if multi:
        conf = proba.ravel()
        hit = truth.ravel().astype(float)
        out["how"] = (f"each of the {n} x {len(names)} (item, label) probabilities against "
                      f"whether the label is there, in {n_bins} equal-width bins")
    else:
        conf = proba.max(axis=1)
        hit = (_predicted(proba, names, False) == truth).astype(float)
        out["how"] = (f"the top class's confidence against whether it was right on {n} holdout "
                      f"items, in {n_bins} equal-width bins (as calibration_curve bins them)")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], conf)  # calibration_curve's own binning
    counts = np.bincount(ids, minlength=n_bins)
    conf_sum = np.bincount(ids, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(ids, weights=hit, minlength=n_bins)
    bins, ece, worst = [], 0.0, 0.0
    for b in range(n_bins):
        count = int(counts[b])
        mean_conf = conf_sum[b] / count if count else None
        acc = hit_sum[b] / count if count else None
        if count:
            gap = abs(acc - mean_conf)
            ece += count / len(conf) * gap
            worst = max(worst, gap)
        bins.append({"lower": edges[b], "upper": edges[b + 1], "count": count,
                     "mean_confidence": mean_conf, "accuracy": acc})
    out.update({"bins": bins, "ece": ece, "max_gap": worst, "pairs": len(conf)})
    if n < 30:
        reasons.append(f"only {n} holdout items: most bins hold too few to read")
    return _clean(out)


# ---------------------------------------------------------------- importance


class _Fitted:
    """An already-fitted model seen through scikit-learn's estimator interface.

    `permutation_importance` wants an object with `fit`; it never calls it here,
    and refitting would defeat the point (we explain this model, not a new one).
    """

    def __init__(self, model: TrainedModel) -> None:
        self.model = model

    def fit(self, X: Any, y: Any = None) -> _Fitted:  # noqa: N803
        return self


def importance(
    model: TrainedModel | Pipeline,
    X: Any,  # noqa: N803
    y_true: Any,
    *,
    classes: Sequence[str] | None = None,
    modality: str | None = None,
    multi_label: bool | None = None,
    seed: int = 0,
    budget_seconds: float = BUDGET_SECONDS,
    top: int = TOP,
    grid: int = 4,
) -> dict:
    """What the model leans on, in the input's own terms, per modality.

    - tabular: permutation importance of each raw column through the whole
      pipeline (a column's values shuffled across holdout rows).
    - image: each cell of a `grid` x `grid` split of the picture shuffled
      across holdout images; the drop per cell is a heat map.
    - text: the heaviest terms per class from a linear model's coefficients,
      mapped back through the TF-IDF vocabularies; for other models, the drop
      when a frequent term is deleted from the texts.
    Drops are in balanced accuracy (the measure training ranks by). Sizes and
    repeats are capped to stay near `budget_seconds`; `capped` says how. With
    `budget_seconds=math.inf` only the fixed caps apply (`MAX_*`, 5 shuffles
    per column, 3 per image cell, `N_DELETION_TERMS`), so a result does not
    depend on how busy the machine is.
    """
    wrapped = _as_model(model, classes, modality, multi_label)
    names, kind, multi = _fields(wrapped, classes, modality, multi_label)
    names, truth = _truth(y_true, names, multi)
    n = len(truth)
    if n != _n_items(X):
        raise ValueError(f"{_n_items(X)} inputs but {n} labels: they must pair up")
    if n < MIN_IMPORTANCE_ITEMS:
        return {"kind": kind, "n": n, "reasons": [
            f"only {n} holdout items: importance needs at least {MIN_IMPORTANCE_ITEMS}, below "
            "that score drops are noise"]}
    if kind == "tabular":
        return _clean(_table_importance(wrapped, X, truth, names, multi, seed, budget_seconds,
                                        top))
    if kind == "image":
        return _clean(_image_importance(wrapped, X, truth, names, multi, seed, budget_seconds,
                                        grid))
    if kind == "text":
        return _clean(_text_importance(wrapped, X, truth, names, multi, seed, budget_seconds,
                                       top))
    raise ValueError(f"unknown modality {kind!r}")


def _cap_rows(X: Any, truth: np.ndarray, limit: int, seed: int,  # noqa: N803
              capped: list[str], what: str) -> tuple[Any, np.ndarray]:
    n = len(truth)
    if n <= limit:
        return X, truth
    idx = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    capped.append(f"a random {limit} of the {n} holdout {what} (seed {seed})")
    return _subset(X, idx), truth[idx]


def _repeats(seconds_per_eval: float, units: int, budget: float, wanted: int) -> int:
    """How many shuffles per unit fit the budget (at least one, at most `wanted`)."""
    per_round = max(seconds_per_eval * max(units, 1), 1e-6)
    return int(max(1, min(wanted, budget // per_round)))


def _table_importance(model: TrainedModel, X: pd.DataFrame, truth: np.ndarray,  # noqa: N803
                      names: list[str], multi: bool, seed: int, budget: float,
                      top: int) -> dict:
    capped: list[str] = []
    X, truth = _cap_rows(model.prepare(X), truth, MAX_TABLE_ROWS, seed, capped, "rows")

    def scorer(est: _Fitted, X_: Any, y: np.ndarray) -> float:  # noqa: N803
        return _score(y, _proba(est.model, X_, names), names, multi)

    t0 = time.monotonic()
    baseline = scorer(_Fitted(model), X, truth)
    per_eval = time.monotonic() - t0
    affordable = len(truth) * budget / max(per_eval * X.shape[1], 1e-9)
    if affordable < len(truth) and len(truth) > MIN_TABLE_ROWS:
        # One shuffle of every column does not fit: fewer rows (a wide table, a slow model).
        keep = max(int(affordable), MIN_TABLE_ROWS)
        idx = np.sort(np.random.default_rng(seed).choice(len(truth), size=keep, replace=False))
        X, truth = _subset(X, idx), truth[idx]
        capped.append(f"{keep} rows, to stay near {budget:g} s")
        t0 = time.monotonic()
        baseline = scorer(_Fitted(model), X, truth)
        per_eval = time.monotonic() - t0
    repeats = _repeats(per_eval, X.shape[1], budget, 5)
    if repeats < 5:
        capped.append(f"{repeats} shuffle(s) per column instead of 5, to stay near "
                      f"{budget:g} s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = permutation_importance(_Fitted(model), X, truth, scoring=scorer,
                                        n_repeats=repeats, random_state=seed)
    order = np.argsort(-result.importances_mean, kind="stable")
    features = [{"feature": str(X.columns[i]), "mean": result.importances_mean[i],
                 "std": result.importances_std[i]} for i in order[:top]]
    if len(order) > top:
        capped.append(f"the top {top} of {len(order)} columns are listed")
    return {
        "kind": "tabular", "method": "permutation", "n": len(truth), "baseline": baseline,
        "n_repeats": repeats, "n_features": int(X.shape[1]), "features": features,
        "capped": capped, "reasons": [],
        "how": (f"sklearn permutation_importance on the whole pipeline over the raw columns: "
                f"each column shuffled across {len(truth)} holdout rows {repeats} time(s) "
                f"(seed {seed}); mean and std of the drop in balanced accuracy from "
                f"{baseline:.3f}"),
    }


def _write_ppm(path: str, rgb: np.ndarray) -> None:
    """A raw PPM is a header and the bytes: ten times faster to write than PNG, lossless."""
    with open(path, "wb") as fh:
        fh.write(f"P6\n{rgb.shape[1]} {rgb.shape[0]}\n255\n".encode() + rgb.tobytes())


def _scratch_dir() -> str | None:
    """A memory-backed folder for the perturbed copies when there is one (Linux's /dev/shm).

    Thousands of small files are written and read back; on a busy disk each
    open costs a millisecond, in memory a few microseconds.
    """
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _image_importance(model: TrainedModel, paths: Sequence[str], truth: np.ndarray,
                      names: list[str], multi: bool, seed: int, budget: float,
                      grid: int) -> dict:
    """Shuffle one grid cell across images: the cell's content, not its mere presence, is tested.

    Occluding with a flat grey would also measure the model's reaction to an
    unnatural patch; shuffling keeps every image a plausible picture and
    leaves a cell that is blank in every image (a digit's corner) at exactly 0.
    The images are read once as the model reads them and written as copies;
    only the copies whose cell changed are scored again. The number of images
    is chosen so one shuffle of every cell fits the budget; a second and
    third round run only if they fit in what is left of it.
    """
    started = time.monotonic()
    capped: list[str] = []
    paths, truth = _cap_rows(list(paths), truth, MAX_IMAGES, seed, capped, "images")
    features = model.pipeline.steps[0][1]
    side = 2 * int(getattr(features, "size", 16))  # what ImageFeatures reads the picture at
    pixels = np.stack([np.rint(_grey(str(p), side) * 255).astype(np.uint8) for p in paths])
    edges = np.linspace(0, side, grid + 1).round().astype(int)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="groundwork-explain-", dir=_scratch_dir()) as tmp:
        files = [str(Path(tmp) / f"{i}.ppm") for i in range(len(paths))]

        def proba_of(stack: np.ndarray, which: np.ndarray) -> np.ndarray:
            for i in which:
                _write_ppm(files[i], stack[i])
            return _proba(model, [files[i] for i in which], names)

        t0 = time.monotonic()
        base = proba_of(pixels, np.arange(len(paths)))  # on the copies: only the shuffle differs
        per_image = (time.monotonic() - t0) / len(paths)
        left = budget - (time.monotonic() - started)
        affordable = left / max(per_image * grid * grid, 1e-9)
        if affordable < len(paths):
            keep = max(int(affordable), MIN_IMPORTANCE_ITEMS)
            idx = np.sort(rng.choice(len(paths), size=keep, replace=False))
            pixels, truth, base = pixels[idx], truth[idx], base[idx]
            capped.append(f"{keep} images, to stay near {budget:g} s")
        n = len(truth)
        baseline = _score(truth, base, names, multi)
        rounds: list[np.ndarray] = []
        while len(rounds) < IMAGE_REPEATS:
            round_started = time.monotonic()
            drops = np.zeros((grid, grid))
            for r in range(grid):
                for c in range(grid):
                    rows = slice(edges[r], edges[r + 1])
                    cols = slice(edges[c], edges[c + 1])
                    shuffled = pixels.copy()
                    shuffled[:, rows, cols] = pixels[rng.permutation(n), rows, cols]
                    changed = np.flatnonzero((shuffled != pixels).any(axis=(1, 2, 3)))
                    proba = base.copy()
                    if len(changed):
                        proba[changed] = proba_of(shuffled, changed)
                    drops[r, c] = baseline - _score(truth, proba, names, multi)
            rounds.append(drops)
            now = time.monotonic()
            if now + (now - round_started) > started + budget:
                break
    repeats = len(rounds)
    if repeats < IMAGE_REPEATS:
        capped.append(f"{repeats} shuffle(s) per cell instead of {IMAGE_REPEATS}, to stay near "
                      f"{budget:g} s")
    stacked = np.stack(rounds, axis=2)
    return {
        "kind": "image", "method": "region_shuffle", "n": n, "baseline": baseline,
        "rows": grid, "cols": grid, "side": side, "n_repeats": repeats,
        "grid": stacked.mean(axis=2).tolist(),
        "std": stacked.std(axis=2).tolist() if repeats > 1 else None,
        "capped": capped, "reasons": [],
        "how": (f"the picture (as the model reads it, {side}x{side}) split into a {grid}x{grid} "
                f"grid; each cell's pixels swapped between {n} holdout images "
                f"{repeats} time(s) (seed {seed}); the heat map is the mean drop in balanced "
                f"accuracy from {baseline:.3f}, row by row from the top left"),
    }


def _coefficients(model: TrainedModel) -> list[tuple[str, np.ndarray]] | None:
    """(class, coefficient vector) pairs in class terms, when the final model is linear."""
    final = model.pipeline.steps[-1][1]
    fitted = model.fitted_classes
    if hasattr(final, "estimators_") and all(hasattr(e, "coef_") for e in final.estimators_):
        if len(final.estimators_) != len(fitted):
            return None
        return [(fitted[j], np.asarray(e.coef_).ravel()) for j, e in enumerate(final.estimators_)]
    if not hasattr(final, "coef_"):
        return None
    coef = np.asarray(final.coef_)
    if coef.shape[0] == 1 and len(fitted) == 2:
        return [(fitted[1], coef[0]), (fitted[0], -coef[0])]
    if coef.shape[0] != len(fitted):
        return None
    return [(fitted[j], coef[j]) for j in range(len(fitted))]


def _vocabulary(model: TrainedModel) -> list[tuple[np.ndarray, bool]] | None:
    """Feature names per block, and whether a block holds words (not character n-grams)."""
    if len(model.pipeline.steps) != 2:
        return None
    features = model.pipeline.steps[0][1]
    parts = features.transformer_list if isinstance(features, FeatureUnion) else [
        ("features", features)]
    blocks = []
    for _, step in parts:
        if isinstance(step, str) or step is None:  # "drop" / "passthrough"
            if step == "passthrough":
                return None
            continue
        if not hasattr(step, "get_feature_names_out"):
            return None
        blocks.append((np.asarray(step.get_feature_names_out(), dtype=object),
                       getattr(step, "analyzer", None) == "word"))  # not embeddings
    return blocks


def _text_importance(model: TrainedModel, texts: Sequence[str], truth: np.ndarray,
                     names: list[str], multi: bool, seed: int, budget: float,
                     top: int) -> dict:
    coefs, blocks = _coefficients(model), _vocabulary(model)
    if coefs and blocks and sum(len(b) for b, _ in blocks) == len(coefs[0][1]):
        return _text_coefficients(coefs, blocks, top)
    return _text_deletion(model, texts, truth, names, multi, seed, budget, top)


def _text_coefficients(coefs: list[tuple[str, np.ndarray]],
                       blocks: list[tuple[np.ndarray, bool]], top: int) -> dict:
    """Top positive coefficients per class; words and character n-grams listed apart.

    Character n-grams ("ee ", "fr") carry weight but read as noise to a
    person, so terms are the word block's and n-grams come second.
    """
    offsets = np.cumsum([0] + [len(b) for b, _ in blocks])
    per_class, ngrams = {}, {}
    for cls, w in coefs:
        for target, want_words in ((per_class, True), (ngrams, False)):
            picked = [(names_[i], float(w[offsets[k] + i]))
                      for k, (names_, is_word) in enumerate(blocks) if is_word == want_words
                      for i in range(len(names_))]
            picked.sort(key=lambda t: -t[1])
            target[cls] = [{"term": t, "weight": v} for t, v in picked[:top] if v > 0]
    return {
        "kind": "text", "method": "coefficients", "per_class": per_class,
        "char_ngrams": ngrams, "capped": [f"the top {top} terms per class are listed"],
        "reasons": [],
        "how": ("the final linear model's coefficients, mapped back through the TF-IDF "
                "vocabularies: the terms that push most towards each class (word 1-2 grams; "
                "character n-grams listed apart)"),
    }


def _text_deletion(model: TrainedModel, texts: Sequence[str], truth: np.ndarray,
                   names: list[str], multi: bool, seed: int, budget: float, top: int) -> dict:
    """Delete one frequent term from every holdout text and measure what the model loses."""
    capped: list[str] = []
    texts, truth = _cap_rows([str(t) for t in texts], truth, MAX_TEXTS, seed, capped, "texts")
    df = Counter(w for t in texts for w in {w.lower() for w in TOKEN.findall(t)})
    candidates = [w for w, k in df.most_common() if k >= 2 and w not in ENGLISH_STOP_WORDS
                  and not w.isdigit()]
    t0 = time.monotonic()
    base_proba = _proba(model, texts, names)
    baseline = _score(truth, base_proba, names, multi)
    per_eval = time.monotonic() - t0
    n_terms = int(max(1, min(N_DELETION_TERMS, budget // max(per_eval, 1e-6))))
    terms = candidates[:n_terms]
    if len(candidates) > n_terms:
        capped.append(f"the {n_terms} most frequent non-stop-word terms of {len(candidates)}")
    member = truth if multi else np.column_stack([truth == c for c in names])
    overall, per_class = [], {c: [] for c in names}
    done = 0
    for term in terms:
        if done and time.monotonic() - t0 > budget:  # the first estimate was too hopeful
            capped.append(f"{done} of the {len(terms)} planned terms, to stay near {budget:g} s")
            break
        done += 1
        pattern = re.compile(rf"(?i)\b{re.escape(term)}\b")
        proba = _proba(model, [pattern.sub(" ", t) for t in texts], names)
        overall.append({"term": term, "mean": baseline - _score(truth, proba, names, multi)})
        for j, c in enumerate(names):
            rows = member[:, j]
            if rows.any():
                drop = float((base_proba[rows, j] - proba[rows, j]).mean())
                per_class[c].append({"term": term, "weight": drop})
    overall.sort(key=lambda t: -t["mean"])
    for c in names:
        per_class[c] = sorted((t for t in per_class[c] if t["weight"] > 0),
                              key=lambda t: -t["weight"])[:top]
    return {
        "kind": "text", "method": "term_deletion", "n": len(truth), "baseline": baseline,
        "terms": overall[:top], "per_class": per_class, "capped": capped, "reasons": [],
        "how": (f"the model has no linear coefficients: each of the {done} most frequent "
                f"terms (stop words left out) deleted from {len(truth)} holdout texts; terms "
                f"list the drop in balanced accuracy from {baseline:.3f}, per_class the mean "
                "drop in that class's probability on its own items"),
    }


# ---------------------------------------------------------------- the bundle


def _project_fields(project_like: Any, model: TrainedModel | Pipeline) -> dict:
    get = (project_like.get if isinstance(project_like, Mapping)
           else lambda k, d=None: getattr(project_like, k, d))
    fallback = model if isinstance(model, TrainedModel) else None
    return {
        "classes": get("classes", None) or getattr(fallback, "classes", None),
        "modality": get("modality", None) or getattr(fallback, "modality", None),
        "multi_label": get("multi_label", getattr(fallback, "multi_label", False)),
    }


def explain(
    model: TrainedModel | Pipeline,
    X_hold: Any,  # noqa: N803
    y_hold: Any,
    project_like: Any = None,
    *,
    seed: int = 0,
    budget_seconds: float = BUDGET_SECONDS,
) -> dict:
    """Every explanation of `model` on its holdout, as one JSON-ready dict; never raises.

    `project_like` is a Project, a dict or anything with `classes`, `modality`
    and `multi_label` (missing ones come from the model). The model is asked
    once; each part that cannot be computed is None. `errors` says what
    failed and why ("part: message"); `reasons` holds the caveats of the parts
    that were computed (a small holdout, a class missing), each prefixed with
    its part. A degenerate holdout (empty, three items, a class missing)
    still yields what it can.
    """
    out: dict = {"n": 0, "classes": None, "modality": None, "multi_label": None,
                 "holdout_metrics": None, "per_class": None, "calibration": None,
                 "importance": None, "reasons": [], "errors": [], "seconds": 0.0}
    started = time.monotonic()
    try:
        fields = _project_fields(project_like, model)
        wrapped = _as_model(model, fields["classes"], fields["modality"], fields["multi_label"])
        names, modality, multi = _fields(wrapped, fields["classes"], fields["modality"],
                                         fields["multi_label"])
        names, truth = _truth(y_hold if y_hold is not None else [], names, multi)
        n = len(truth)
        out.update(n=n, classes=names, modality=modality, multi_label=multi)
        n_inputs = _n_items(X_hold) if X_hold is not None else 0
        if n_inputs != n:
            out["errors"].append(f"holdout: {n_inputs} inputs but {n} labels; they must pair "
                                 "up, so nothing was measured")
            return _finish(out, started)
        if n == 0:
            out["reasons"].append("no holdout items: every label was needed for training, or "
                                  "none was given by a person")
            return _finish(out, started)
        proba = _proba(wrapped, X_hold, names)
    except Exception as exc:  # noqa: BLE001 - an explanation must not cost the model
        out["errors"].append(f"holdout: the model could not score it: {_describe(exc)}")
        return _finish(out, started)
    common = {"classes": names, "multi_label": multi}
    parts = {
        "holdout_metrics": lambda: holdout_metrics(wrapped, None, truth, proba=proba, seed=seed,
                                                   **common),
        "per_class": lambda: per_class(wrapped, None, truth, proba=proba, **common),
        "calibration": lambda: calibration(wrapped, None, truth, proba=proba, **common),
        "importance": lambda: importance(wrapped, X_hold, truth, modality=modality, seed=seed,
                                         budget_seconds=budget_seconds, **common),
    }
    compute_parts(out, parts)
    return _finish(out, started)


def compute_parts(out: dict, parts: Mapping[str, Any]) -> None:
    """Fill `out[name]` with each part's result; a part that fails leaves the others.

    What failed goes to `out["errors"]`, each part's caveats to `out["reasons"]`,
    prefixed with the part's name (shared with `automl.residuals`).
    """
    for name, compute in parts.items():
        try:
            out[name] = compute()
        except Exception as exc:  # noqa: BLE001 - one failed part leaves the others
            out["errors"].append(f"{name}: {_describe(exc)}")
            continue
        out["reasons"].extend(f"{name}: {r}" for r in out[name].get("reasons", []))


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _finish(out: dict, started: float) -> dict:
    out["seconds"] = round(time.monotonic() - started, 2)
    return _clean(out)
