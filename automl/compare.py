"""Compare two model versions on the same held-out labels, measured now.

Each version's stored holdout score was measured on the labels of its day;
after corrections those differ, so two stored scores are not comparable. Here
both versions predict today's held-out labels, minus any item either of them
learned from (known from their training-set snapshots), and the comparison
says how many items they disagree on and whether the difference could be
chance (McNemar's exact test on the items exactly one of them gets right).
"""

from __future__ import annotations

import numpy as np
import sqlite_utils
from scipy.stats import binomtest

from automl.registry import list_models, load_model
from automl.search import score
from automl.snapshots import trained_items
from automl.training import predict_labels, training_set
from labeling.errors import GroundworkError
from labeling.projects import Project


def _version(db: sqlite_utils.Database, project: Project, version: int) -> dict:
    for row in list_models(db, project):
        if row["version"] == int(version):
            return row
    known = ", ".join(f"v{m['version']}" for m in list_models(db, project)) or "none"
    raise GroundworkError(f"project {project.name!r} has no model v{version} (versions: {known})")


def compare_versions(db: sqlite_utils.Database, project: Project, a: int, b: int) -> dict:
    """Both versions on today's holdout: balanced accuracy, accuracy with an interval, McNemar."""
    rows = [_version(db, project, a), _version(db, project, b)]
    data = training_set(db, project)
    seen = trained_items(db, rows[0]) | trained_items(db, rows[1])
    keep = np.array([bool(h) and i not in seen for i, h in zip(data.item_ids, data.holdout,
                                                                  strict=True)])
    if not keep.any():
        raise GroundworkError(
            f"project {project.name!r} has no held-out labels that neither v{a} nor v{b} "
            "learned from: label more items (a fifth of people's labels are held out)")
    X, answers = data.part(keep)
    out: dict = {"holdout_size": int(keep.sum()), "versions": []}
    if project.regression:
        return _compare_numbers(db, project, rows, X, answers, out)
    if project.multi_label:
        from sklearn.preprocessing import MultiLabelBinarizer

        truth = MultiLabelBinarizer(classes=project.classes).fit_transform(answers)
    else:
        truth = np.array([x[0] for x in answers])
    right = []
    for row in rows:
        model = load_model(db, row)
        predicted = predict_labels(model, X, project)
        correct = (predicted == truth).all(axis=1) if project.multi_label else predicted == truth
        right.append(correct)
        interval = binomtest(int(correct.sum()), len(correct)).proportion_ci(0.95, "wilson")
        low, high = interval.low, interval.high
        out["versions"].append({
            "version": row["version"], "status": row["status"], "estimator": row["estimator"],
            "balanced_accuracy": round(score(truth, predicted, project.multi_label), 4),
            "accuracy": round(float(correct.mean()), 4),
            "accuracy_interval": [round(low, 4), round(high, 4)],
            "stored_holdout": row["holdout_score"],
        })
    only_a = int((right[0] & ~right[1]).sum())
    only_b = int((right[1] & ~right[0]).sum())
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    out.update({
        "only_a_right": only_a,
        "only_b_right": only_b,
        "p_value": round(float(p_value), 4),
        "how_measured": (
            f"both versions predict the same {int(keep.sum())} held-out curated labels of "
            "today (items either version trained on are left out); accuracy interval: Wilson "
            "95%; p-value: McNemar's exact test on the items exactly one version gets right"),
    })
    return out


def _compare_numbers(db: sqlite_utils.Database, project: Project, rows: list[dict], X,  # noqa: N803
                     answers: list, out: dict) -> dict:
    """Regression: R², MAE and RMSE of both on the same rows, and a paired test of their errors.

    Which version is closer is decided per row; the Wilcoxon signed-rank test
    on the paired absolute errors says whether the difference could be chance.
    """
    from scipy.stats import wilcoxon
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    truth = np.array([float(x[0]) for x in answers])
    errors = []
    for row in rows:
        predicted = load_model(db, row).predict_values(X)
        errors.append(np.abs(predicted - truth))
        out["versions"].append({
            "version": row["version"], "status": row["status"], "estimator": row["estimator"],
            "r2": round(float(r2_score(truth, predicted)), 4) if len(truth) > 1 else None,
            "mae": round(float(mean_absolute_error(truth, predicted)), 4),
            "rmse": round(float(root_mean_squared_error(truth, predicted)), 4),
            "stored_holdout": row["holdout_score"],
        })
    diff = errors[0] - errors[1]
    p_value = float(wilcoxon(errors[0], errors[1]).pvalue) if np.any(diff != 0) else 1.0
    out.update({
        "only_a_closer": int((diff < 0).sum()),
        "only_b_closer": int((diff > 0).sum()),
        "p_value": round(p_value, 4),
        "how_measured": (
            f"both versions predict the same {len(truth)} held-out curated numbers of today "
            "(items either version trained on are left out); p-value: Wilcoxon signed-rank "
            "test on the paired absolute errors"),
    })
    return out
