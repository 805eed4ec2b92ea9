"""What review tells you: the model's accuracy on reviewed items, and each loop's record.

Accuracy is measured where a person checked a prediction: every completed
task over the model's predictions (not label checks) counts, the reviewer's
(consolidated) answer being the truth. Reviewed items are mostly the ones a
rule picked as doubtful, so that number is not the pool's accuracy; tasks
opened by a random audit sample are, and are reported apart (`audit`).
Intervals are Wilson score intervals (95% by default).

The export writes one JSON object per task (human loop), as JSON Lines: its
input, the prediction, the workflow and conditions that fired, every
reviewer's answer with time taken and timestamps, and the final label.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.items import get_items
from labeling.projects import Project
from review.tasks import expire_tasks, task_answers

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None when nothing was measured."""
    if n <= 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _measure(pairs: list[tuple[list[str], list[str]]]) -> dict:
    n = len(pairs)
    correct = sum(pred == truth for pred, truth in pairs)
    interval = wilson(correct, n)
    return {"reviewed": n, "correct": correct,
            "accuracy": correct / n if n else None,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None}


def reviewed_accuracy(
    db: sqlite_utils.Database, project: Project, *, workflow: str | None = None
) -> dict:
    """Accuracy of the model on reviewed predictions: overall, per predicted class, audits."""
    where = "AND w.name = ?" if workflow else ""
    rows = list(db.query(
        f"""
        SELECT t.predicted, t.fired, a.labels AS answer
        FROM review_tasks t
        JOIN annotations a ON a.id = t.annotation_id
        LEFT JOIN review_workflows w ON w.id = t.workflow_id
        WHERE t.project_id = ? AND t.status = 'completed' AND t.source IN ('pool', 'batch')
          AND a.retracted_at IS NULL {where}
        """,
        [project.id, *([workflow] if workflow else [])],
    ))
    pairs = [(json.loads(r["predicted"]), json.loads(r["answer"])) for r in rows]
    audits = [p for p, r in zip(pairs, rows, strict=True)
              if any(f.startswith("random ") for f in json.loads(r["fired"] or "[]"))]
    per_class = []
    for cls in project.classes:
        mine = [(p, t) for p, t in pairs if cls in p]
        if mine:
            per_class.append({"class": cls, **_measure(mine)})
    return {"overall": _measure(pairs), "per_class": per_class, "audit": _measure(audits),
            "interval": "Wilson score, 95%",
            "how_measured": (
                "completed review tasks over the model's predictions; the reviewers' answer "
                "is the truth; per class by the class the model predicted. Rules pick "
                "doubtful predictions, so only the audit (random sample) part estimates "
                "the pool's accuracy")}


def _input(db: sqlite_utils.Database, project: Project, item) -> dict:
    out: dict = {"item_id": item.id, "key": item.key}
    if project.modality == "text":
        out["content"] = item.content
    elif project.modality == "tabular":
        out["content"] = item.row()
    else:
        out["media_path"] = item.media_path
    return out


def loop_records(
    db: sqlite_utils.Database, project: Project, *, workflow: str | None = None
):
    """One record per task (human loop), oldest first."""
    expire_tasks(db, project)
    where = "AND w.name = ?" if workflow else ""
    rows = list(db.query(
        f"""
        SELECT t.*, w.name AS workflow_name, a.labels AS final_labels, a.user AS final_user,
               mv.version AS model_version
        FROM review_tasks t
        LEFT JOIN review_workflows w ON w.id = t.workflow_id
        LEFT JOIN annotations a ON a.id = t.annotation_id
        LEFT JOIN model_versions mv ON mv.id = t.model_version_id
        WHERE t.project_id = ? {where}
        ORDER BY t.id
        """,
        [project.id, *([workflow] if workflow else [])],
    ))
    items = {i.id: i for i in get_items(db, project, sorted({r["item_id"] for r in rows}))}
    for row in rows:
        probabilities = json.loads(row["probabilities"]) if row["probabilities"] else None
        if probabilities is None and row["model_version_id"] is not None:
            stored = db.execute("SELECT probabilities FROM predictions WHERE model_version_id = ? "
                                "AND item_id = ?", [row["model_version_id"], row["item_id"]]
                                ).fetchone()
            probabilities = json.loads(stored[0]) if stored else None
        answers = task_answers(db, row["id"])
        record = {
            "task_id": row["id"],
            "status": row["status"],
            "workflow": row["workflow_name"],
            "source": row["source"],
            "conditions": json.loads(row["rule"]),
            "conditions_fired": json.loads(row["fired"] or "[]"),
            "reviewers_wanted": row["reviewers"],
            "created_at": row["created_at"],
            "expires_at": row["expires_at"],
            "completed_at": row["completed_at"],
            "input": _input(db, project, items[row["item_id"]]),
            "prediction": {
                "labels": json.loads(row["predicted"]),
                "confidence": row["confidence"],
                "probabilities": (dict(zip(project.classes, probabilities, strict=False))
                                  if probabilities else None),
                "model_version": row["model_version"],
            },
            "answers": [{"reviewer": a["user"], "labels": a["labels"],
                         "submitted_at": a["created_at"], "time_taken_ms": a["duration_ms"]}
                        for a in answers],
            "final": ({"labels": json.loads(row["final_labels"]), "by": row["final_user"],
                       "annotation_id": row["annotation_id"]}
                      if row["final_labels"] else None),
        }
        if row["given"]:
            record["label_check"] = {"given": json.loads(row["given"]),
                                     "given_by": json.loads(row["given_by"] or "[]"),
                                     "suggested": json.loads(row["predicted"]),
                                     "score": row["issue_score"]}
        yield record


def loops_jsonl(db: sqlite_utils.Database, project: Project, *,
                workflow: str | None = None) -> str:
    """Every human loop as JSON Lines text (what the page's download button serves)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                   for r in loop_records(db, project, workflow=workflow))


def export_loops(
    db: sqlite_utils.Database, project: Project, out: str | Path, *,
    workflow: str | None = None,
) -> int:
    """Write every human loop as JSON Lines (atomically); return how many."""
    out = Path(out)
    if not out.parent.exists():
        raise GroundworkError(f"folder {str(out.parent)!r} does not exist: create it first")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in loop_records(db, project, workflow=workflow):
                fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                n += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n
