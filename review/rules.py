"""Activation rules: which predictions need a person to look at them.

A rule is a small JSON-able dict (`{"below": 0.7}`), stored with every task it
opens so a reviewer can always see why an item was flagged.
"""

from __future__ import annotations

import json

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.queue import promoted_model_id
from labeling.store import utcnow


def validate_threshold(below: float) -> float:
    try:
        value = float(below)
    except (TypeError, ValueError):
        raise GroundworkError(f"confidence threshold {below!r} is not a number: use 0..1") from None
    if not 0.0 < value <= 1.0:
        raise GroundworkError(
            f"confidence threshold {value} is outside (0, 1]: use e.g. --below 0.7"
        )
    return value


def describe(rule: dict) -> str:
    return f"confidence below {rule['below']:.2f}"


def _candidates(db: sqlite_utils.Database, project: Project, model_id: int, below: float):
    """Unlabeled pool items under the threshold that have no open task yet (least sure first)."""
    return db.execute(
        """
        SELECT p.item_id, p.predicted, p.confidence
        FROM predictions p JOIN items i ON i.id = p.item_id
        WHERE p.model_version_id = ? AND p.confidence < ? AND i.n_labels = 0
          AND NOT EXISTS (
              SELECT 1 FROM review_tasks t
              WHERE t.item_id = p.item_id AND t.status IN ('open', 'in progress')
          )
        ORDER BY p.confidence ASC
        """,
        [model_id, below],
    ).fetchall()


def preview_review(db: sqlite_utils.Database, project: Project, below: float) -> int:
    """How many tasks `open_review` would open now, before anything is saved."""
    below = validate_threshold(below)
    model_id = promoted_model_id(db, project)
    if model_id is None:
        return 0
    return len(_candidates(db, project, model_id, below))


def open_review(
    db: sqlite_utils.Database, project: Project, below: float, limit: int | None = None
) -> int:
    """Open a review task for each current prediction with confidence below `below`."""
    below = validate_threshold(below)
    model_id = promoted_model_id(db, project)
    if model_id is None:
        raise GroundworkError(
            f"project {project.name!r} has no promoted model yet: train one "
            f"(`groundwork train {project.name}`) before opening reviews"
        )
    rule = {"below": below}
    rows = _candidates(db, project, model_id, below)
    if limit is not None:
        rows = rows[: max(int(limit), 0)]
    now = utcnow()
    with db.atomic():
        db["review_tasks"].insert_all(
            {
                "project_id": project.id,
                "item_id": item_id,
                "model_version_id": model_id,
                "predicted": predicted,
                "confidence": confidence,
                "rule": json.dumps(rule),
                "status": "open",
                "created_at": now,
            }
            for item_id, predicted, confidence in rows
        )
    return len(rows)
