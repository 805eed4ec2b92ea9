"""The quick queue model: refit in the background every N new labels, then re-score the pool.

Active learning only pays if the model that picks the next item has seen
the latest labels, but nobody labeling should wait for a training run. So
after every `project.refit_every` curated labels a job process fits a cheap
model (logistic regression on the project's features, the same model the
simulation uses), scores every open item with the project's query strategy
and stores the order in `queue_scores`; the queue reads it with an indexed
query and never calls a model.

Each refit also measures the quick model on the held-out human labels (the
random validation items) and appends a point to the project's learning
curve, which the savings dashboard draws.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter

import numpy as np
import sqlite_utils
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from threadpoolctl import threadpool_limits

from automl.pool_cache import _IN_SPAN, item_input_chunks, pool_features
from automl.training import training_set
from labeling.errors import GroundworkError
from labeling.projects import Project, get_project
from labeling.queue import store_queue_scores, uncertainty_scores
from labeling.store import utcnow
from labeling.strategies import queue_order

QUICK_MODEL = "logistic regression (quick refit)"
CHUNK = 5000


def _id_span(db: sqlite_utils.Database, project: Project) -> tuple[int, int]:
    lo, hi = db.execute("SELECT min(id), max(id) FROM items WHERE project_id = ?",
                        [project.id]).fetchone()
    return (0, -1) if lo is None else (int(lo), int(hi))


def open_item_ids(db: sqlite_utils.Database, project: Project) -> list[int]:
    """Items the queue can still offer: fewer answers than wanted and no machine label."""
    return [r[0] for r in db.execute(
        f"SELECT id FROM items WHERE {_IN_SPAN} AND n_labels < ? AND n_auto = 0 ORDER BY id",
        [*_id_span(db, project), project.id, project.annotations_per_item])]


def _pool_chunks(db: sqlite_utils.Database, project: Project, pool_ids: list[int], size: int):
    """The pool items' model input in chunks of `size`, in `pool_ids` order (ascending ids):
    `(rows, X)` per chunk (the regression committee reads its pool this way)."""
    for ids, X in item_input_chunks(db, project, pool_ids, size):
        yield len(ids), X


def labeled_count(db: sqlite_utils.Database, project: Project) -> int:
    return int(db.execute("SELECT count(*) FROM items WHERE project_id = ? AND n_labels > 0",
                          [project.id]).fetchone()[0])


def _class_probabilities(model, features, project: Project, classes) -> np.ndarray:
    """Probabilities in the project's class order (a class not seen in training gets 0)."""
    proba = model.predict_proba(features)
    out = np.zeros((proba.shape[0], len(project.classes)))
    for j, c in enumerate(classes):
        if c in project.classes:
            out[:, project.classes.index(c)] = proba[:, j]
    return out


def refit(db: sqlite_utils.Database, project: Project, *, seed: int = 0) -> dict:
    """Fit the quick model on curated labels, re-score the open pool, record a curve point.

    Every item's features come from the project's features file
    (`automl.pool_cache`), built on the first refit and brought up to date
    after an import, so a refit gathers rows and multiplies them by the
    model's weights instead of building n-grams for the whole pool again.

    BLAS runs on one thread: the refit is a background job beside the app,
    and on a busy 2-core machine OpenBLAS's threads spin-wait for each other
    on these small vectors (the model fit took 1-2.7 s with two threads,
    0.07 s with one, measured on 100,000 emails).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _refit(db, project, seed=seed)


def _refit(db: sqlite_utils.Database, project: Project, *, seed: int) -> dict:
    started = time.monotonic()
    project = get_project(db, project.id)  # the strategy may have changed since queuing
    data = training_set(db, project)
    train = np.flatnonzero(~data.holdout)
    held = np.flatnonzero(data.holdout)
    labeled_ids = np.asarray(data.item_ids, dtype=np.int64)
    y_train = [data.labels[i] for i in train]
    features = pool_features(db, project, fit_ids=data.item_ids, seed=seed)
    # An image item without a media file has no features (and no input) to score.
    pool_ids = [int(i) for i in np.intersect1d(open_item_ids(db, project), features.ids)]

    F_train = features.rows(labeled_ids[train])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if project.multi_label:
            binarizer = MultiLabelBinarizer(classes=project.classes).fit([project.classes])
            model = OneVsRestClassifier(LogisticRegression(max_iter=1000))
            model.fit(F_train, binarizer.transform(y_train))
            classes = list(binarizer.classes_)
        else:
            model = LogisticRegression(max_iter=1000)
            model.fit(F_train, [a[0] for a in y_train])
            classes = [str(c) for c in model.classes_]

    accuracy = None
    if len(held):
        proba = _class_probabilities(model, features.rows(labeled_ids[held]), project, classes)
        accuracy = float(np.mean(_exact(proba, [data.labels[i] for i in held], project)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probabilities = features.apply(
            pool_ids, lambda rows: _class_probabilities(model, rows, project, classes), CHUNK
        ).reshape(len(pool_ids), len(project.classes))

    predicted, confidence = _decisions(probabilities, project)
    counts = Counter(c for labels in data.labels for c in labels)

    order = queue_order(
        project.strategy if not project.multi_label or project.strategy != "batch" else "margin",
        _as_single(probabilities, project),
        np.array([p[0] if p else "" for p in predicted], dtype=object),
        dict(counts),
        batch=max(project.refit_every, 10),
        pool_features=lambda rows: features.rows([pool_ids[int(r)] for r in rows]),
        labeled_features=F_train,
        seed=seed,
    ) if pool_ids else np.array([], dtype=int)
    store_queue_scores(db, project, pool_ids, order, predicted, confidence,
                       scorer=f"quick:{len(data.item_ids)}")
    seconds = round(time.monotonic() - started, 3)
    point = {
        "project_id": project.id,
        "labels": len(data.item_ids),
        "accuracy": accuracy,
        "holdout_size": int(len(held)),
        "strategy": project.strategy,
        "model": QUICK_MODEL,
        "seconds": seconds,
        "created_at": utcnow(),
    }
    with db.atomic():
        db["learning_curve"].insert(point)
    return {"labels": len(data.item_ids), "train_size": int(len(train)),
            "holdout_size": int(len(held)), "accuracy": accuracy, "scored": len(pool_ids),
            "strategy": project.strategy, "seconds": seconds,
            "features": {"transformed": features.transformed, "rebuilt": features.rebuilt,
                         "rows": int(len(features.ids))}}


def _exact(proba: np.ndarray, answers: list[list[str]], project: Project) -> list[bool]:
    predicted, _ = _decisions(proba, project)
    return [sorted(p) == sorted(a) for p, a in zip(predicted, answers, strict=True)]


def _decisions(proba: np.ndarray, project: Project) -> tuple[list[list[str]], np.ndarray]:
    """Predicted labels and the confidence the queue and the Label page show."""
    if project.multi_label:
        predicted = [[c for c, p in zip(project.classes, row, strict=True) if p >= 0.5]
                     for row in proba]
        confidence = (np.abs(proba - 0.5) * 2).min(axis=1) if proba.size else np.zeros(0)
        return predicted, confidence
    names = np.array(project.classes, dtype=object)
    predicted = [[c] for c in names[proba.argmax(axis=1)].tolist()] if proba.size else []
    confidence = uncertainty_scores(proba)["confidence"] if len(proba) else np.zeros(0)
    return predicted, confidence


def _as_single(proba: np.ndarray, project: Project) -> np.ndarray:
    """For multi-label, a two-column yes/no view of the least certain class, for the measures."""
    if not project.multi_label or not proba.size:
        return proba
    closest = np.abs(proba - 0.5).argmin(axis=1)
    p = proba[np.arange(len(proba)), closest]
    return np.column_stack([p, 1 - p])


def learning_curve(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Every refit's holdout accuracy against the number of labels, oldest first."""
    return list(db.query(
        "SELECT labels, accuracy, holdout_size, strategy, model, seconds, created_at "
        "FROM learning_curve WHERE project_id = ? ORDER BY id", [project.id]))


def refit_due(db: sqlite_utils.Database, project: Project) -> bool:
    """True when `refit_every` labels arrived since the last refit started and none is running."""
    if project.refit_every <= 0:
        return False
    last = db.execute(
        "SELECT status, params FROM jobs WHERE project_id = ? AND kind = 'refit' "
        "ORDER BY id DESC LIMIT 1", [project.id]).fetchone()
    since = 0
    if last is not None:
        if last[0] in ("queued", "running"):
            from automl.jobs import reap_stale_jobs

            if not reap_stale_jobs(db):
                return False
        since = int(json.loads(last[1] or "{}").get("labels", 0))
    return labeled_count(db, project) - since >= project.refit_every


def start_refit(db: sqlite_utils.Database, project: Project) -> int:
    """Queue a refit job and start its process; returns at once (the page never waits)."""
    from automl.jobs import spawn

    labels = labeled_count(db, project)
    with db.atomic():
        job_id = db["jobs"].insert({
            "project_id": project.id, "kind": "refit", "status": "queued",
            "params": json.dumps({"labels": labels, "strategy": project.strategy}),
            "progress": "{}", "created_at": utcnow(),
        }).last_pk
    spawn(db, job_id)
    return int(job_id)


def maybe_refit(db: sqlite_utils.Database, project: Project) -> int | None:
    """Called after answers are saved: start a background refit when one is due."""
    try:
        return start_refit(db, project) if refit_due(db, project) else None
    except (GroundworkError, OSError):
        return None
