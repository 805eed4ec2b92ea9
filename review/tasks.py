"""Review tasks: serve the next one, take the reviewer's answer, keep the count."""

from __future__ import annotations

import json

import sqlite_utils

from labeling.annotations import record_annotation, retract_annotation, validate_labels
from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.store import utcnow

OPEN_STATES = ("open", "in progress")


def _task(row: dict) -> dict:
    row = dict(row)
    row["predicted"] = json.loads(row["predicted"])
    row["rule"] = json.loads(row["rule"])
    if row.get("probabilities"):
        row["probabilities"] = json.loads(row["probabilities"])
    return row


def get_task(db: sqlite_utils.Database, project: Project, task_id: int) -> dict:
    row = next(
        iter(
            db.query(
                """
                SELECT t.*, i.key, p.probabilities FROM review_tasks t
                JOIN items i ON i.id = t.item_id
                LEFT JOIN predictions p
                  ON p.model_version_id = t.model_version_id AND p.item_id = t.item_id
                WHERE t.id = ? AND t.project_id = ?
                """,
                [int(task_id), project.id],
            )
        ),
        None,
    )
    if row is None:
        raise GroundworkError(
            f"no review task {task_id} in project {project.name!r}: "
            "list open tasks on the Review page or with `groundwork review open`"
        )
    return _task(row)


def next_tasks(
    db: sqlite_utils.Database, project: Project, n: int = 1, exclude: tuple[int, ...] = ()
) -> list[dict]:
    """Open tasks, least confident prediction first (the likeliest model errors)."""
    skip = f"AND t.id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    rows = db.query(
        f"""
        SELECT t.*, i.key, p.probabilities FROM review_tasks t
        JOIN items i ON i.id = t.item_id
        LEFT JOIN predictions p
          ON p.model_version_id = t.model_version_id AND p.item_id = t.item_id
        WHERE t.project_id = ? AND t.status IN ('open', 'in progress') {skip}
        ORDER BY t.confidence ASC, t.id ASC LIMIT ?
        """,
        [project.id, *exclude, int(n)],
    )
    return [_task(r) for r in rows]


def answer_task(
    db: sqlite_utils.Database,
    project: Project,
    task_id: int,
    labels: str | list[str],
    user: str,
    duration_ms: int | None = None,
) -> int:
    """Record the answer as a `review` annotation and close the task, in one transaction."""
    task = get_task(db, project, task_id)
    if task["status"] not in OPEN_STATES:
        raise GroundworkError(
            f"review task {task_id} is {task['status']}, not open: nothing to answer"
        )
    values = validate_labels(project, labels)
    with db.atomic():
        annotation_id = record_annotation(
            db,
            project,
            task["item_id"],
            values,
            user=user,
            source="review",
            duration_ms=duration_ms,
            model_version_id=task["model_version_id"],
        )
        db["review_tasks"].update(
            task["id"],
            {"status": "completed", "completed_at": utcnow(), "annotation_id": annotation_id},
        )
    return annotation_id


def undo_answer(db: sqlite_utils.Database, project: Project, task_id: int) -> None:
    """Reopen a completed task and retract its answer (the reviewer's undo)."""
    task = get_task(db, project, task_id)
    if task["status"] != "completed" or task["annotation_id"] is None:
        raise GroundworkError(f"review task {task_id} has no answer to undo")
    with db.atomic():
        retract_annotation(db, project, task["annotation_id"])
        db["review_tasks"].update(
            task["id"], {"status": "open", "completed_at": None, "annotation_id": None}
        )


def task_counts(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    counts = {"open": 0, "in progress": 0, "completed": 0, "expired": 0}
    for status, n in db.execute(
        "SELECT status, count(*) FROM review_tasks WHERE project_id = ? GROUP BY status",
        [project.id],
    ):
        counts[status] = n
    return counts
