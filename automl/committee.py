"""The quick queue model for regression projects: a committee of trees and its disagreement.

A number has no class probabilities to be unsure about, so the queue asks
where a committee disagrees most: the trees of an extra-trees forest are the
committee (query by committee, Seung et al.; modAL's `max_std_sampling`),
and a row whose trees spread widest is the one a label teaches most. Like
the class refit (`automl.refit`), it runs in a background job every
`refit_every` labels, stores the order in `queue_scores`, and records the
quick model's R² on the held-out human labels as a learning-curve point.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import sqlite_utils
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.metrics import r2_score

from automl.features import make_features
from automl.refit import _pool_chunks, open_item_ids
from automl.training import training_set
from labeling.projects import Project
from labeling.queue import store_queue_scores
from labeling.store import utcnow
from labeling.strategies import regression_order
from labeling.targets import number_label

QUICK_MODEL = "extra trees committee (quick refit)"
TREES = 50
CHUNK = 5000


def committee_predictions(model: ExtraTreesRegressor, features) -> tuple[np.ndarray, np.ndarray]:
    """The committee's mean and the spread (standard deviation) of its members' predictions."""
    votes = np.stack([tree.predict(features) for tree in model.estimators_])
    return votes.mean(axis=0), votes.std(axis=0)


def refit_regression(db: sqlite_utils.Database, project: Project, *, seed: int = 0) -> dict:
    """Fit the committee on curated numbers, rank the open pool by disagreement, record R²."""
    started = time.monotonic()
    data = training_set(db, project)
    X_train, y_labels = data.part(~data.holdout)
    y_train = np.array([float(a[0]) for a in y_labels])
    features = make_features(project.modality, X_train)
    model = ExtraTreesRegressor(n_estimators=TREES, min_samples_leaf=2, random_state=seed,
                                n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(features.fit_transform(X_train), y_train)
    r2 = None
    held = int(data.holdout.sum())
    if held >= 2:
        X_held, y_held = data.part(data.holdout)
        truth = np.array([float(a[0]) for a in y_held])
        if np.ptp(truth) > 0:
            r2 = float(r2_score(truth, model.predict(features.transform(X_held))))
    pool_ids = open_item_ids(db, project)
    mean = np.zeros(len(pool_ids))
    spread = np.zeros(len(pool_ids))
    start = 0
    for rows, X in _pool_chunks(db, project, pool_ids, CHUNK):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            part_mean, part_spread = committee_predictions(model, features.transform(X))
        mean[start:start + rows], spread[start:start + rows] = part_mean, part_spread
        start += rows
    order = regression_order(project.strategy, mean, spread, seed)
    store_queue_scores(db, project, pool_ids, order, [[number_label(v)] for v in mean],
                       np.zeros(len(pool_ids)), scorer=f"quick:{len(data.item_ids)}")
    seconds = round(time.monotonic() - started, 3)
    with db.atomic():
        db["learning_curve"].insert({
            "project_id": project.id, "labels": len(data.item_ids), "accuracy": r2,
            "holdout_size": held, "strategy": project.strategy, "model": QUICK_MODEL,
            "seconds": seconds, "created_at": utcnow(),
        })
    return {"labels": len(data.item_ids), "train_size": int(len(y_train)),
            "holdout_size": held, "r2": r2, "scored": len(pool_ids),
            "strategy": project.strategy, "seconds": seconds}


def quick_refit(db: sqlite_utils.Database, project: Project, *, seed: int = 0) -> dict:
    """The background refit for any project: classes (`automl.refit`) or numbers (here)."""
    if project.regression:
        return refit_regression(db, project, seed=seed)
    from automl.refit import refit

    return refit(db, project, seed=seed)
