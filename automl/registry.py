"""The model registry: versions, their artifacts, which one is promoted, and pool scoring.

An artifact is written under `<data>/models/<project id>/v<N>.joblib` with
its sha256 recorded in the store; loading checks the hash, so a model file
changed or truncated behind our back is refused rather than silently used,
and checks the path, so a row pointing outside the project's model folder is
refused before anything is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import sqlite_utils

from automl.model import TrainedModel
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project
from labeling.queue import (
    store_predictions,
    store_queue_scores,
    store_value_predictions,
    uncertainty_scores,
)
from labeling.store import data_dir_of, utcnow
from labeling.strategies import queue_order

SCORE_BATCH = 2000


def _row(row: dict) -> dict:
    row = dict(row)
    for key in ("params", "metrics", "classes"):
        row[key] = json.loads(row.get(key) or ("[]" if key == "classes" else "{}"))
    return row


def list_models(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Every version of the project's model, newest first."""
    return [
        _row(r)
        for r in db.query(
            "SELECT * FROM model_versions WHERE project_id = ? ORDER BY version DESC",
            [project.id],
        )
    ]


def promoted_model(db: sqlite_utils.Database, project: Project) -> dict | None:
    row = next(
        iter(
            db.query(
                "SELECT * FROM model_versions WHERE project_id = ? AND status = 'promoted' "
                "ORDER BY version DESC LIMIT 1",
                [project.id],
            )
        ),
        None,
    )
    return _row(row) if row else None


def save_artifact(
    db: sqlite_utils.Database, project: Project, version: int, model: TrainedModel
) -> tuple[str, str]:
    """Write the model atomically; return (path relative to the data folder, sha256)."""
    rel = f"models/{project.id}/v{version}.joblib"
    target = data_dir_of(db) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    joblib.dump(model, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    digest = _sha256(tmp)
    os.replace(tmp, target)
    return rel, digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_file(db: sqlite_utils.Database, row: dict) -> Path:
    """The artifact's file, which must lie in the project's own model folder.

    Loading a joblib file runs code from it: a row edited to point elsewhere
    (an absolute path, `../` out of the folder, a symlink leading out, or
    another project's folder) is refused before the file is opened, whatever
    its hash says.
    """
    folder = (data_dir_of(db) / "models" / str(int(row["project_id"]))).resolve()
    stored = str(row.get("artifact_path") or "")
    path = (data_dir_of(db) / stored).resolve()
    if not stored or not path.is_relative_to(folder) or path == folder:
        raise GroundworkError(
            f"model artifact {stored!r} of v{row['version']} is outside the project's model "
            f"folder (models/{row['project_id']}/): refusing to load it; retrain the project "
            "(`groundwork train`) or restore the store from a backup")
    return path


def load_model(db: sqlite_utils.Database, row: dict) -> TrainedModel:
    """The version's model, only from the project's own folder and only if its hash matches."""
    path = artifact_file(db, row)
    if not path.is_file() or _sha256(path) != row["artifact_sha256"]:
        raise GroundworkError(
            f"model artifact {row['artifact_path']} of v{row['version']} was changed or is "
            "missing: retrain the project (`groundwork train`)"
        )
    model = joblib.load(path)
    if not isinstance(model, TrainedModel):
        raise GroundworkError(f"{row['artifact_path']} is not a Groundwork model: retrain")
    return model


@dataclass
class PoolScores:
    """A model's scores for the unlabeled pool, computed and not yet stored.

    Computing (reading every item, predicting) is what can fail or take long;
    storing is a few quick inserts. Kept apart so the scores can be written in
    the same transaction as a promotion: the queue never follows a model that
    did not get promoted, and a failed scoring leaves the old order in place.
    """

    item_ids: list[int]
    values: np.ndarray | None = None  # regression: predicted numbers
    proba: np.ndarray | None = None  # classes: probabilities, one column per class
    order: list[int] | None = None  # the queue order (single-label), most useful first

    @property
    def size(self) -> int:
        return len(self.item_ids)


def pool_scores(db: sqlite_utils.Database, project: Project, model: TrainedModel) -> PoolScores:
    """Predict every item without a curated label; nothing is written.

    Single-label projects also get the queue order under the project's
    strategy (without the batch's diversity step, which needs features the
    quick refit has at hand); the next quick refit takes over from it.
    """
    ids = [r[0] for r in db.execute(
        "SELECT id FROM items WHERE project_id = ? AND n_labels = 0 ORDER BY id", [project.id])]
    if project.regression:
        # Predicted numbers are for the Label page's suggestion and batch work; the queue
        # order stays the quick refit's (a committee's disagreement, `automl.refit`).
        values = [model.predict_values(model_input(db, project, get_items(
            db, project, ids[start : start + SCORE_BATCH])))
            for start in range(0, len(ids), SCORE_BATCH)]
        return PoolScores(ids, values=np.concatenate(values) if values else np.empty(0))
    parts = []
    for start in range(0, len(ids), SCORE_BATCH):
        items = get_items(db, project, ids[start : start + SCORE_BATCH])
        parts.append(np.asarray(model.predict_proba(model_input(db, project, items)),
                                dtype=float))
    proba = np.vstack(parts) if parts else np.empty((0, len(project.classes)))
    scores = PoolScores(ids, proba=proba)
    if ids and not project.multi_label:
        predicted = np.array(project.classes, dtype=object)[proba.argmax(axis=1)]
        counts = Counter(c for labels in current_labels(db, project, curated_only=True)
                         .get("labels", []) for c in labels)
        scores.order = list(queue_order(project.strategy, proba, predicted, dict(counts),
                                        batch=max(project.refit_every, 10)))
    return scores


def store_pool_scores(db: sqlite_utils.Database, project: Project, model_version_id: int,
                      scores: PoolScores) -> int:
    """Write computed pool scores: the version's predictions and, for classes, the queue order.

    One transaction (a savepoint inside the caller's), so they land together.
    """
    with db.atomic():
        if scores.values is not None:
            store_value_predictions(db, model_version_id, scores.item_ids, scores.values)
            return scores.size
        for start in range(0, scores.size, SCORE_BATCH):
            store_predictions(db, model_version_id, scores.item_ids[start : start + SCORE_BATCH],
                              project.classes, scores.proba[start : start + SCORE_BATCH],
                              multi_label=project.multi_label)
        if scores.order is not None:
            predicted = np.array(project.classes, dtype=object)[scores.proba.argmax(axis=1)]
            store_queue_scores(db, project, scores.item_ids, scores.order,
                               [[p] for p in predicted],
                               uncertainty_scores(scores.proba)["confidence"],
                               scorer=f"model:{model_version_id}")
    return scores.size


def score_pool(
    db: sqlite_utils.Database, project: Project, model_version_id: int, model: TrainedModel
) -> int:
    """Predict every item without a curated label and store the scores for the queue and review.

    The promoted model also re-orders the live queue with the project's
    strategy; see `pool_scores`.
    """
    return store_pool_scores(db, project, model_version_id, pool_scores(db, project, model))


def promote(db: sqlite_utils.Database, project: Project, version: int, *,
            user: str | None = None) -> dict:
    """Make `version` the model that drives the queue, review rules and batch prediction."""
    row = next(iter(db.query(
        "SELECT * FROM model_versions WHERE project_id = ? AND version = ?",
        [project.id, int(version)])), None)
    if row is None:
        known = ", ".join(f"v{m['version']}" for m in list_models(db, project)) or "none"
        raise GroundworkError(f"project {project.name!r} has no model v{version} (versions: "
                              f"{known})")
    row = _row(row)
    # Scored first, promoted with its scores in one transaction: a pool item that cannot be
    # read leaves the current model promoted, not a new one with a stale queue.
    scores = pool_scores(db, project, load_model(db, row))
    with db.atomic():
        db.execute("UPDATE model_versions SET status = 'archived' WHERE project_id = ? AND "
                   "status = 'promoted' AND id != ?", [project.id, row["id"]])
        db.execute("UPDATE model_versions SET status = 'promoted', promoted_at = ?, "
                   "promoted_by = ? WHERE id = ?", [utcnow(), user, row["id"]])
        from labeling.users import record_event  # who promoted, and when (audit log)
        record_event(db, user, "promote", project, f"v{row['version']}")
        store_pool_scores(db, project, row["id"], scores)
    row["status"] = "promoted"
    return row


def rollback(db: sqlite_utils.Database, project: Project, *, user: str | None = None) -> dict:
    """Promote again the version that was promoted before the current one.

    "Before" is by promotion time, not by version number: after a roll back
    from v3 to v2, rolling back again returns to v3.
    """
    current = promoted_model(db, project)
    previous = next(iter(db.query(
        "SELECT version FROM model_versions WHERE project_id = ? AND status = 'archived' "
        "AND promoted_at IS NOT NULL ORDER BY promoted_at DESC, version DESC LIMIT 1",
        [project.id])), None)
    if previous is None:
        raise GroundworkError(
            f"project {project.name!r} has no earlier promoted model to roll back to"
            + (f" (v{current['version']} is the only one promoted so far)" if current else ""))
    return promote(db, project, previous["version"], user=user)
