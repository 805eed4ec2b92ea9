"""Training: curated labels -> an Optuna search over scikit-learn pipelines -> a model version.

What is measured and how:
- The search scores each candidate by cross-validated balanced accuracy on
  the training labels (balanced, so a model that always answers the majority
  class scores 1/k, not the class share).
- A holdout of human and review labels, chosen by a hash of the item key (so
  the same items stay held out from one run to the next), is never seen by the
  search or the final fit. Its balanced accuracy is the number the app shows,
  and the number two versions are compared on before a new one is promoted.
- The time budget is hard: the deadline is checked between folds inside a
  trial, not only between trials, and the refit and pool scoring are counted.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import sqlite_utils
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import balanced_accuracy_score, classification_report, confusion_matrix
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer

from automl.features import is_sparse_modality, make_features
from automl.model import TrainedModel
from automl.registry import load_model, promoted_model, save_artifact, score_pool
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project
from labeling.queue import store_predictions
from labeling.splits import HOLDOUT_SOURCES, in_holdout
from labeling.store import utcnow

METRIC = "balanced_accuracy"
MIN_HOLDOUT_SOURCE_LABELS = 10  # below this, every label is needed for training

# Failed and pruned trials are recorded on the study; they are not console noise.
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass
class TrainingSet:
    """A snapshot of curated labels, split once into training and holdout parts."""

    item_ids: list[int]
    keys: list[str]
    X: object  # list[str] | DataFrame, as labeling.inputs.model_input gives it
    labels: list[list[str]]
    sources: list[str]
    holdout: np.ndarray  # bool mask
    snapshot_hash: str

    def part(self, mask: np.ndarray):
        idx = np.flatnonzero(mask)
        X = self.X.iloc[idx].reset_index(drop=True) if hasattr(self.X, "iloc") else [
            self.X[i] for i in idx]
        return X, [self.labels[i] for i in idx]


def training_set(
    db: sqlite_utils.Database, project: Project, *, include_auto: bool = False
) -> TrainingSet:
    """Curated labels (human, import, review); machine labels only if the user opts in.

    Auto-labels are never held out: the holdout measures against people.
    """
    labels = current_labels(db, project, curated_only=not include_auto)
    if labels.empty:
        raise GroundworkError(
            f"training needs labels: project {project.name!r} has no curated labels yet; "
            "label at least a few items of two classes (or import a label column)"
        )
    ids = [int(i) for i in labels["item_id"]]
    items = get_items(db, project, ids)
    by_id = {item.id: item for item in items}
    keys = [by_id[i].key for i in ids]
    answers = [list(v) for v in labels["labels"]]
    sources = list(labels["source"])
    _check_classes(project, answers)
    # Hold out people's own answers (human, review); a project whose labels were
    # all imported holds out imported labels instead, so it still gets a measure.
    eligible = np.array([s in HOLDOUT_SOURCES for s in sources])
    if eligible.sum() < MIN_HOLDOUT_SOURCE_LABELS:
        eligible = np.array([s != "auto" for s in sources])
    mask = eligible & np.array([in_holdout(project.id, k) for k in keys], dtype=bool)
    if eligible.sum() < MIN_HOLDOUT_SOURCE_LABELS or not _has_two_classes(
        [a for a, m in zip(answers, mask, strict=True) if not m], project.multi_label
    ):
        mask = np.zeros(len(ids), dtype=bool)
    snapshot = json.dumps(sorted(zip(keys, answers, mask.tolist(), strict=True)))
    return TrainingSet(
        item_ids=ids,
        keys=keys,
        X=model_input(db, project, [by_id[i] for i in ids]),
        labels=answers,
        sources=sources,
        holdout=mask,
        snapshot_hash=hashlib.sha256(snapshot.encode()).hexdigest(),
    )


def _has_two_classes(answers: list[list[str]], multi_label: bool) -> bool:
    if multi_label:
        return len({c for a in answers for c in a}) >= 1 and len({tuple(a) for a in answers}) >= 2
    return len({a[0] for a in answers}) >= 2


def _check_classes(project: Project, answers: list[list[str]]) -> None:
    if _has_two_classes(answers, project.multi_label):
        return
    found = sorted({c for a in answers for c in a})
    shown = ", ".join(repr(c) for c in found) or "no class"
    raise GroundworkError(
        f"training needs at least two classes: the {len(answers)} curated labels of project "
        f"{project.name!r} are all {shown}; label some items of another class first"
    )


def validate_training(
    db: sqlite_utils.Database, project: Project, *, include_auto: bool = False
) -> None:
    """The checks a training run starts with, cheap enough to run before starting a job."""
    labels = current_labels(db, project, curated_only=not include_auto)
    if labels.empty:
        raise GroundworkError(
            f"training needs labels: project {project.name!r} has no curated labels yet; "
            "label at least a few items of two classes (or import a label column)"
        )
    _check_classes(project, [list(v) for v in labels["labels"]])


# ---------------------------------------------------------------- the search space


def _families(modality: str) -> list[str]:
    if is_sparse_modality(modality):
        return ["logistic_regression", "linear_svm", "complement_nb", "knn"]
    return ["logistic_regression", "linear_svm", "random_forest", "extra_trees",
            "hist_gradient_boosting", "knn"]


DEFAULT_TRIAL = {"model": "logistic_regression", "lr_C": 1.0, "lr_balanced": True}


def build_estimator(params: dict, seed: int, n_samples: int):
    """A scikit-learn classifier from a flat parameter dict (what Optuna's trials hold)."""
    family = params["model"]
    balanced = "balanced" if params.get(f"{_prefix(family)}_balanced") else None
    if family == "logistic_regression":
        return LogisticRegression(C=params["lr_C"], class_weight=balanced, max_iter=2000)
    if family == "linear_svm":
        return SGDClassifier(loss="modified_huber", alpha=params["svm_alpha"],
                             class_weight=balanced, random_state=seed, max_iter=2000, tol=1e-4)
    if family == "complement_nb":
        return ComplementNB(alpha=params["nb_alpha"])
    if family == "knn":
        k = max(1, min(params["knn_k"], n_samples - 1))
        return KNeighborsClassifier(n_neighbors=k, weights=params["knn_weights"],
                                    metric="cosine")
    if family in ("random_forest", "extra_trees"):
        cls = RandomForestClassifier if family == "random_forest" else ExtraTreesClassifier
        p = _prefix(family)
        return cls(n_estimators=params[f"{p}_trees"], max_features=params[f"{p}_features"],
                   min_samples_leaf=params[f"{p}_leaf"], class_weight=balanced,
                   random_state=seed, n_jobs=1)
    if family == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            learning_rate=params["hgb_lr"], max_leaf_nodes=params["hgb_leaves"],
            l2_regularization=params["hgb_l2"], class_weight=balanced, random_state=seed,
            early_stopping=False, max_iter=params["hgb_iter"])
    raise ValueError(f"unknown model family {family!r}")


def _prefix(family: str) -> str:
    return {"logistic_regression": "lr", "linear_svm": "svm", "complement_nb": "nb",
            "knn": "knn", "random_forest": "rf", "extra_trees": "et",
            "hist_gradient_boosting": "hgb"}[family]


def suggest(trial: optuna.Trial, families: list[str]) -> dict:
    family = trial.suggest_categorical("model", families)
    p = _prefix(family)
    params = {"model": family}
    if family == "logistic_regression":
        params["lr_C"] = trial.suggest_float("lr_C", 1e-3, 1e3, log=True)
    elif family == "linear_svm":
        params["svm_alpha"] = trial.suggest_float("svm_alpha", 1e-6, 1e-1, log=True)
    elif family == "complement_nb":
        params["nb_alpha"] = trial.suggest_float("nb_alpha", 1e-3, 10.0, log=True)
    elif family == "knn":
        params["knn_k"] = trial.suggest_int("knn_k", 1, 30, log=True)
        params["knn_weights"] = trial.suggest_categorical("knn_weights", ["uniform", "distance"])
    elif family in ("random_forest", "extra_trees"):
        params[f"{p}_trees"] = trial.suggest_int(f"{p}_trees", 50, 300, log=True)
        params[f"{p}_features"] = trial.suggest_categorical(f"{p}_features", ["sqrt", "log2"])
        params[f"{p}_leaf"] = trial.suggest_int(f"{p}_leaf", 1, 8, log=True)
    elif family == "hist_gradient_boosting":
        params["hgb_lr"] = trial.suggest_float("hgb_lr", 0.02, 0.3, log=True)
        params["hgb_leaves"] = trial.suggest_int("hgb_leaves", 8, 64, log=True)
        params["hgb_l2"] = trial.suggest_float("hgb_l2", 1e-6, 1.0, log=True)
        params["hgb_iter"] = trial.suggest_int("hgb_iter", 50, 300, log=True)
    if family in ("logistic_regression", "linear_svm", "random_forest", "extra_trees",
                  "hist_gradient_boosting"):
        params[f"{p}_balanced"] = trial.suggest_categorical(f"{p}_balanced", [True, False])
    return params


# ---------------------------------------------------------------- scoring


def score(y_true, y_pred, multi_label: bool) -> float:
    """Balanced accuracy; for multi-label, its mean over the labels that vary in y_true."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not multi_label:
            return float(balanced_accuracy_score(y_true, y_pred))
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        scores = [balanced_accuracy_score(y_true[:, j], y_pred[:, j])
                  for j in range(y_true.shape[1]) if len(np.unique(y_true[:, j])) > 1]
        return float(np.mean(scores)) if scores else float((y_true == y_pred).mean())


def _splits(y, multi_label: bool, seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds when every class has two examples, else plain folds.

    Under four labels there is nothing to cross-validate: the model is scored
    on its own training labels, and the result says so (`cv_folds` = 0).
    """
    if n < 4:
        everything = np.arange(n)
        return [(everything, everything)]
    if not multi_label:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            k = int(min(3, counts.min()))
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))
    return list(KFold(3, shuffle=True, random_state=seed).split(np.zeros(n)))


# ---------------------------------------------------------------- the training run


def train_project(
    db: sqlite_utils.Database,
    project: Project,
    budget: float = 30.0,
    *,
    seed: int = 0,
    job_id: int | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    include_auto: bool = False,
) -> dict:
    """Search, fit, measure, save, maybe promote, and score the pool with the promoted model."""
    if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise GroundworkError(f"the time budget must be a positive number of seconds, not "
                              f"{budget!r}")
    started = time.monotonic()
    deadline = started + budget
    data = training_set(db, project, include_auto=include_auto)
    train_mask = ~data.holdout
    X_train, y_train_labels = data.part(train_mask)
    X_hold, y_hold_labels = data.part(data.holdout)

    if project.multi_label:
        binarizer = MultiLabelBinarizer(classes=project.classes)
        y_train = binarizer.fit_transform(y_train_labels)
        y_hold = binarizer.transform(y_hold_labels) if len(y_hold_labels) else None
        fitted_classes = list(project.classes)
    else:
        # Integer targets: scikit-learn's forests mishandle class_weight with digit strings.
        encoder = LabelEncoder().fit([a[0] for a in y_train_labels])
        y_train = encoder.transform([a[0] for a in y_train_labels])
        y_hold = np.array([a[0] for a in y_hold_labels]) if len(y_hold_labels) else None
        fitted_classes = [str(c) for c in encoder.classes_]

    # Unsupervised feature steps are fitted once for the search (the final
    # pipeline refits them): the search then spends its budget on models.
    features = make_features(project.modality, X_train)
    F_train = features.fit_transform(X_train)
    n = len(y_train)
    splits = _splits(y_train, project.multi_label, seed, n)
    families = _families(project.modality)

    def make(params: dict):
        est = build_estimator(params, seed, n)
        return OneVsRestClassifier(est) if project.multi_label else est

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, families)
        fold_scores: list[float] = []
        t0 = time.monotonic()
        for fold, (tr, va) in enumerate(splits):
            if fold_scores and time.monotonic() > deadline and trial.number > 0:
                raise optuna.TrialPruned("time budget reached")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = make(params).fit(F_train[tr], y_train[tr])
                predicted = model.predict(F_train[va])
            fold_scores.append(score(y_train[va], predicted, project.multi_label))
            trial.report(float(np.mean(fold_scores)), fold)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("cv_std", float(np.std(fold_scores)))
        trial.set_user_attr("fit_seconds", time.monotonic() - t0)
        return float(np.mean(fold_scores))

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    study.enqueue_trial(DEFAULT_TRIAL)

    def report(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if progress is not None:
            progress({
                "trials": len(study.trials),
                "best": study.best_value if done else None,
                "elapsed": round(time.monotonic() - started, 2),
                "budget": budget,
            })
        if should_stop is not None and should_stop():
            study.stop()
        # Leave a fifth of the budget for the refit, the holdout and scoring the pool.
        if done and time.monotonic() > started + 0.8 * budget:
            study.stop()

    remaining = max(deadline - time.monotonic(), 0.0)
    study.optimize(objective, timeout=remaining * 0.8, callbacks=[report], catch=(ValueError,))
    if should_stop is not None and should_stop():
        raise JobCancelled("training was cancelled")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        reason = failed[0].system_attrs.get("fail_reason", "") if failed else ""
        raise GroundworkError(f"no model could be fitted on these labels {reason}".strip())
    best = study.best_trial
    params = {k: v for k, v in best.params.items()}

    pipeline = Pipeline([("features", make_features(project.modality, X_train)),
                         ("model", make(params))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X_train, y_train)
    columns = list(X_train.columns) if project.modality == "tabular" else None
    model = TrainedModel(pipeline=pipeline, classes=list(project.classes),
                         fitted_classes=fitted_classes, modality=project.modality,
                         multi_label=project.multi_label, columns=columns)

    holdout_score = None
    held_sources = ", ".join(sorted({s for s, m in zip(data.sources, data.holdout, strict=True)
                                     if m})) or "none"
    metrics: dict = {
        "holdout_sources": held_sources,
        "include_auto": include_auto,
        "cv_std": best.user_attrs.get("cv_std"),
        "cv_folds": 0 if splits[0][0] is splits[0][1] else len(splits),
        "trials": len(study.trials),
        "trials_completed": len(completed),
        "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "search_seconds": round(time.monotonic() - started, 2),
        "how_measured": (
            f"cv: mean balanced accuracy over {len(splits)} cross-validation folds of the "
            f"{n} training labels; holdout: balanced accuracy on {int(data.holdout.sum())} "
            f"labels ({held_sources}) held out by a hash of the item key and never seen by "
            "the search or the fit"
        ),
    }
    if y_hold is not None:
        predicted_hold = _predict_labels(model, X_hold, project)
        holdout_score = score(y_hold, predicted_hold, project.multi_label)
        if not project.multi_label:
            metrics["per_class"] = classification_report(
                y_hold, predicted_hold, labels=project.classes, output_dict=True,
                zero_division=0)
            metrics["confusion_matrix"] = {
                "labels": project.classes,
                "matrix": confusion_matrix(y_hold, predicted_hold,
                                           labels=project.classes).tolist(),
            }

    # Promotion: the new version must do at least as well as the promoted one on
    # the same holdout (both measured now, on today's labels).
    current = promoted_model(db, project)
    promote_it = True
    if current is not None and y_hold is not None:
        try:
            old = load_model(db, current)
            old_score = score(y_hold, _predict_labels(old, X_hold, project), project.multi_label)
        except (GroundworkError, ValueError, KeyError):
            old_score = None
        metrics["compared_with"] = {"version": current["version"], "holdout": old_score}
        promote_it = old_score is None or holdout_score >= old_score

    version = (db.execute("SELECT max(version) FROM model_versions WHERE project_id = ?",
                          [project.id]).fetchone()[0] or 0) + 1
    rel_path, digest = save_artifact(db, project, version, model)
    try:
        with db.atomic():
            if promote_it:
                db.execute("UPDATE model_versions SET status = 'archived' WHERE project_id = ? "
                           "AND status = 'promoted'", [project.id])
            model_id = db["model_versions"].insert({
                "project_id": project.id,
                "version": version,
                "created_at": utcnow(),
                "status": "promoted" if promote_it else "candidate",
                "estimator": params["model"],
                "params": json.dumps(params),
                "metric_name": METRIC,
                "cv_score": float(best.value),
                "holdout_score": holdout_score,
                "holdout_size": int(data.holdout.sum()),
                "train_size": n,
                "metrics": json.dumps(metrics, default=float),
                "snapshot_hash": data.snapshot_hash,
                "artifact_path": rel_path,
                "artifact_sha256": digest,
                "classes": json.dumps(project.classes),
                "job_id": job_id,
            }).last_pk
    except BaseException:
        from labeling.store import data_dir_of

        (data_dir_of(db) / rel_path).unlink(missing_ok=True)
        raise
    if data.holdout.any():
        # Predictions on held-out labels let automated labeling and review measure
        # this model on items it never saw; the queue ignores labeled items.
        held_ids = [i for i, m in zip(data.item_ids, data.holdout, strict=True) if m]
        store_predictions(db, model_id, held_ids, project.classes,
                          model.predict_proba(X_hold), multi_label=project.multi_label)
    scored = score_pool(db, project, model_id, model) if promote_it else 0
    return {
        "model_version": version,
        "model_version_id": model_id,
        "metric": METRIC,
        "cv": float(best.value),
        "holdout": holdout_score,
        "holdout_size": int(data.holdout.sum()),
        "train_size": n,
        "estimator": params["model"],
        "params": params,
        "promoted": promote_it,
        "scored": scored,
        "trials": len(study.trials),
        "seconds": round(time.monotonic() - started, 2),
        "include_auto": include_auto,
    }


def _predict_labels(model: TrainedModel, X, project: Project):
    """Predictions in the shape `score` wants: a label array, or a 0/1 matrix for multi-label."""
    proba = model.predict_proba(X)
    if project.multi_label:
        return (proba >= 0.5).astype(int)
    return np.array([project.classes[int(i)] for i in proba.argmax(axis=1)])


class JobCancelled(Exception):
    """Raised when a person cancelled the run; nothing is saved."""

