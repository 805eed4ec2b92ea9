"""Review tasks (human loops): serve the next one, take reviewers' answers, keep the count.

A task wants 1-3 reviewers (its workflow's setting). Each reviewer answers
once; their answers are kept in `review_answers` with who, when and how
long. While some are missing the task is `in progress`; when the last one
arrives the answers are consolidated like annotations (Dawid-Skene over the
project's multi-reviewer tasks, or majority vote while fewer than ten tasks
are shared) and stored as one curated label with source `review`, the task
`completed`. A task past its expiry is `expired` and no longer offered.
"""

from __future__ import annotations

import json

import pandas as pd
import sqlite_utils

from labeling.annotations import record_annotation, retract_annotation, validate_labels
from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.store import utcnow
from review.conditions import describe, legacy

OPEN_STATES = ("open", "in progress")
CONSENSUS_USER = "consensus"

_SELECT = """
    SELECT t.*, i.key, w.name AS workflow, w.instructions,
           coalesce(t.probabilities, p.probabilities) AS probabilities
    FROM review_tasks t
    JOIN items i ON i.id = t.item_id
    LEFT JOIN review_workflows w ON w.id = t.workflow_id
    LEFT JOIN predictions p
      ON p.model_version_id = t.model_version_id AND p.item_id = t.item_id
"""


def _task(row: dict) -> dict:
    row = dict(row)
    for key in ("predicted", "rule", "fired", "probabilities", "given", "given_by"):
        if row.get(key):
            row[key] = json.loads(row[key])
    row["rule"] = legacy(row["rule"])
    row["fired"] = row.get("fired") or [describe(row["rule"])]
    row["why"] = "; ".join(row["fired"])
    row["instructions"] = row.get("instructions") or ""
    return row


def expire_tasks(db: sqlite_utils.Database, project: Project, now: str | None = None) -> int:
    """Mark tasks past their expiry as expired; return how many were."""
    now = now or utcnow()
    with db.atomic():
        cursor = db.execute(
            "UPDATE review_tasks SET status = 'expired' WHERE project_id = ? AND status IN "
            "('open', 'in progress') AND expires_at IS NOT NULL AND expires_at <= ?",
            [project.id, now])
    return cursor.rowcount


def get_task(db: sqlite_utils.Database, project: Project, task_id: int) -> dict:
    try:
        task_id = int(task_id)
    except (TypeError, ValueError):
        raise GroundworkError(f"task id {task_id!r} is not a number: use the ids "
                              "`groundwork review next` prints") from None
    row = next(iter(db.query(f"{_SELECT} WHERE t.id = ? AND t.project_id = ?",
                             [task_id, project.id])), None)
    if row is None:
        raise GroundworkError(
            f"no review task {task_id} in project {project.name!r}: "
            "list open tasks on the Review page or with `groundwork review next`"
        )
    return _task(row)


def next_tasks(
    db: sqlite_utils.Database,
    project: Project,
    n: int = 1,
    exclude: tuple[int, ...] = (),
    *,
    user: str | None = None,
    workflow: str | None = None,
) -> list[dict]:
    """Open tasks, likeliest label errors first, then the least confident predictions.

    Expired tasks are never offered, nor tasks `user` has already answered.
    """
    now = utcnow()
    expire_tasks(db, project, now)
    where, args = [], []
    if exclude:
        where.append(f"t.id NOT IN ({','.join('?' * len(exclude))})")
        args.extend(int(e) for e in exclude)
    if user:
        where.append("NOT EXISTS (SELECT 1 FROM review_answers r WHERE r.task_id = t.id "
                     "AND r.user = ? AND r.retracted_at IS NULL)")
        args.append(user)
    if workflow:
        where.append("w.name = ?")
        args.append(workflow)
    extra = "".join(f" AND {w}" for w in where)
    rows = db.query(
        f"""{_SELECT}
        WHERE t.project_id = ? AND t.status IN ('open', 'in progress')
          AND (t.expires_at IS NULL OR t.expires_at > ?) {extra}
        ORDER BY coalesce(-t.issue_score, t.confidence) ASC, t.id ASC LIMIT ?
        """,
        [project.id, now, *args, int(n)],
    )
    return [_task(r) for r in rows]


def task_answers(db: sqlite_utils.Database, task_id: int, *, live: bool = True) -> list[dict]:
    where = "AND retracted_at IS NULL" if live else ""
    rows = db.query(f"SELECT * FROM review_answers WHERE task_id = ? {where} ORDER BY id",
                    [int(task_id)])
    return [{**r, "labels": json.loads(r["labels"])} for r in rows]


def consolidate_review(db: sqlite_utils.Database, project: Project, task_id: int) -> dict:
    """One answer from a task's reviewers, weighed like annotators' answers to an item.

    Dawid-Skene learns each reviewer's reliability from every task of the
    project that several reviewers answered; with too little overlap,
    majority vote decides (`method` says which).
    """
    from labeling.consolidation import consolidate

    frame = pd.DataFrame(db.query(
        """
        SELECT r.task_id AS item_id, r.user, r.labels FROM review_answers r
        JOIN review_tasks t ON t.id = r.task_id
        WHERE t.project_id = ? AND t.reviewers > 1 AND r.retracted_at IS NULL
          AND (t.status = 'completed' OR t.id = ?)
        ORDER BY r.id
        """, [project.id, int(task_id)]), columns=["item_id", "user", "labels"])
    frame["labels"] = frame["labels"].map(json.loads)
    result = consolidate(frame).set_index("item_id")
    row = result.loc[int(task_id)]
    return {"labels": list(row["labels"]), "confidence": float(row["confidence"]),
            "method": row["method"], "n_answers": int(row["n_answers"])}


def answer_task(
    db: sqlite_utils.Database,
    project: Project,
    task_id: int,
    labels: str | list[str],
    user: str,
    duration_ms: int | None = None,
) -> int | None:
    """Record one reviewer's answer; return the label's annotation id once the task completes.

    With one reviewer per task (the default) every answer completes its task.
    """
    task = get_task(db, project, task_id)
    if task["status"] not in OPEN_STATES:
        raise GroundworkError(
            f"review task {task['id']} is {task['status']}, not open: nothing to answer")
    if task.get("expires_at") and task["expires_at"] <= utcnow():
        expire_tasks(db, project)
        raise GroundworkError(f"review task {task['id']} expired at {task['expires_at']}")
    values = validate_labels(project, labels)
    user = (user or "").strip()
    if not user:
        raise GroundworkError("no user given: pass --user NAME")
    if any(a["user"] == user for a in task_answers(db, task["id"])):
        raise GroundworkError(f"{user} has already answered review task {task['id']}: "
                              "undo that answer to change it")
    annotation_id = None
    with db.atomic():
        db["review_answers"].insert({
            "task_id": task["id"], "user": user, "labels": json.dumps(values),
            "created_at": utcnow(),
            "duration_ms": None if duration_ms is None else int(duration_ms)})
        answers = task_answers(db, task["id"])
        if len(answers) < int(task["reviewers"] or 1):
            db["review_tasks"].update(task["id"], {"status": "in progress"})
            return None
        if len(answers) == 1:
            final, who, took, confidence = values, user, duration_ms, None
        else:
            merged = consolidate_review(db, project, task["id"])
            final, who, took, confidence = (merged["labels"], CONSENSUS_USER, None,
                                            merged["confidence"])
        annotation_id = record_annotation(
            db, project, task["item_id"], final, user=who, source="review",
            duration_ms=took, confidence=confidence,
            model_version_id=task["model_version_id"])
        db["review_tasks"].update(
            task["id"],
            {"status": "completed", "completed_at": utcnow(), "annotation_id": annotation_id})
    return annotation_id


def undo_answer(
    db: sqlite_utils.Database, project: Project, task_id: int, user: str | None = None
) -> None:
    """Take back a reviewer's answer (the latest, or `user`'s) and reopen the task."""
    task = get_task(db, project, task_id)
    everyone = task_answers(db, task["id"])
    answers = [a for a in everyone if user is None or a["user"] == user]
    legacy_answer = not everyone and task["annotation_id"] is not None  # before answers were kept
    if not answers and not legacy_answer:
        raise GroundworkError(f"review task {task_id} has no answer to undo")
    with db.atomic():
        if answers:
            db.execute("UPDATE review_answers SET retracted_at = ? WHERE id = ?",
                       [utcnow(), answers[-1]["id"]])
        if task["annotation_id"] is not None:
            retract_annotation(db, project, task["annotation_id"])
        left = len(task_answers(db, task["id"]))
        db["review_tasks"].update(task["id"], {
            "status": "in progress" if left else "open", "completed_at": None,
            "annotation_id": None})


def task_counts(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    expire_tasks(db, project)
    counts = {"open": 0, "in progress": 0, "completed": 0, "expired": 0}
    for status, n in db.execute(
        "SELECT status, count(*) FROM review_tasks WHERE project_id = ? GROUP BY status",
        [project.id],
    ):
        counts[status] = n
    return counts
