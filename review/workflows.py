"""Review workflows (Augmented AI's flow definitions) and the human loops they open.

A workflow is named per project and says what it watches (`pool`: the
promoted model's predictions on unlabeled items; `labels`: the project's own
labels, checked for errors out of fold; `batch`: the promoted model's
predictions on an uploaded file, see `review.batches`), when an item needs a person
(`review.conditions`), how many reviewers each task wants (1-3, consolidated
like annotations), when an unanswered task expires, and what reviewers are
told. Running a workflow opens one task (a human loop) per activated item
that has no open task yet, with the prediction, its probabilities and the
conditions that fired. A pool workflow that has run is re-evaluated on the
pool whenever a newer model is promoted (`refresh_workflows`); a batch keeps
the prediction of the model that made it, and pool workflows leave batch
items to their own workflow.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project, require_classes
from labeling.queue import promoted_model_id
from labeling.store import utcnow
from review.conditions import Candidate, describe, evaluate, validate

INLINE = "inline"  # the sampling salt of conditions given on the spot, not saved
SOURCES = ("pool", "labels", "batch")


@dataclass(frozen=True)
class Workflow:
    id: int
    project_id: int
    name: str
    source: str
    conditions: dict
    reviewers: int
    expiry_hours: float | None
    instructions: str
    active: bool
    last_model_version_id: int | None
    created_at: str
    updated_at: str

    @property
    def description(self) -> str:
        return describe(self.conditions)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "conditions": self.conditions,
                "description": self.description, "reviewers": self.reviewers,
                "expiry_hours": self.expiry_hours, "instructions": self.instructions,
                "active": self.active}


def _from_row(row: dict) -> Workflow:
    return Workflow(
        id=row["id"], project_id=row["project_id"], name=row["name"], source=row["source"],
        conditions=json.loads(row["conditions"]), reviewers=int(row["reviewers"]),
        expiry_hours=row["expiry_hours"], instructions=row["instructions"] or "",
        active=bool(row["active"]), last_model_version_id=row["last_model_version_id"],
        created_at=row["created_at"], updated_at=row["updated_at"])


def check_conditions(conditions, project: Project, source: str) -> dict:
    """The normalised conditions for a workflow watching `source`.

    A batch is model predictions like the pool, so the same conditions apply
    (and a suspected label error does not: a batch row has no given label).
    """
    require_classes(project, "review")
    if source not in SOURCES:
        raise GroundworkError(f"unknown workflow source {source!r}: use one of "
                              f"{', '.join(SOURCES)}")
    return validate(conditions, project.classes, "pool" if source == "batch" else source)


def _check_settings(name: str, reviewers, expiry_hours) -> tuple[str, int, float | None]:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise GroundworkError("a workflow needs a name of 1 to 100 characters")
    if isinstance(reviewers, bool) or not isinstance(reviewers, int) or not 1 <= reviewers <= 3:
        raise GroundworkError(f"reviewers per task must be 1, 2 or 3, not {reviewers!r}")
    if expiry_hours is not None:
        try:
            expiry_hours = float(expiry_hours)
        except (TypeError, ValueError):
            raise GroundworkError(f"expiry {expiry_hours!r} is not a number of hours") from None
        if not expiry_hours > 0:
            raise GroundworkError("expiry must be a positive number of hours (or none)")
    return name, reviewers, expiry_hours


def save_workflow(
    db: sqlite_utils.Database,
    project: Project,
    name: str,
    conditions,
    *,
    source: str = "pool",
    reviewers: int = 1,
    expiry_hours: float | None = None,
    instructions: str = "",
) -> Workflow:
    """Create the workflow, or replace the settings of the one with this name."""
    name, reviewers, expiry_hours = _check_settings(name, reviewers, expiry_hours)
    conditions = check_conditions(conditions, project, source)
    now = utcnow()
    existing = find_workflow(db, project, name)
    row = {"project_id": project.id, "name": name, "source": source,
           "conditions": json.dumps(conditions), "reviewers": reviewers,
           "expiry_hours": expiry_hours, "instructions": instructions or "", "updated_at": now}
    with db.atomic():
        if existing is None:
            db["review_workflows"].insert({**row, "created_at": now})
        else:
            db["review_workflows"].update(existing.id, row)
    return get_workflow(db, project, name)


def find_workflow(db: sqlite_utils.Database, project: Project, name: str) -> Workflow | None:
    row = next(iter(db.query("SELECT * FROM review_workflows WHERE project_id = ? AND name = ?",
                             [project.id, str(name).strip()])), None)
    return _from_row(row) if row else None


def get_workflow(db: sqlite_utils.Database, project: Project, name: str) -> Workflow:
    workflow = find_workflow(db, project, name)
    if workflow is None:
        known = ", ".join(w.name for w in list_workflows(db, project)) or "none yet"
        raise GroundworkError(
            f"no review workflow {name!r} in project {project.name!r} (workflows: {known}); "
            f"create one on the Workflows page or with `groundwork review workflow "
            f"{project.name} NAME --below 0.7`")
    return workflow


def list_workflows(db: sqlite_utils.Database, project: Project) -> list[Workflow]:
    return [_from_row(r) for r in db.query(
        "SELECT * FROM review_workflows WHERE project_id = ? ORDER BY name", [project.id])]


def delete_workflow(db: sqlite_utils.Database, project: Project, name: str) -> None:
    """The workflow goes; its tasks stay (answered ones are labels), no longer linked to it."""
    workflow = get_workflow(db, project, name)
    with db.atomic():
        db.execute("DELETE FROM review_workflows WHERE id = ?", [workflow.id])


# ---------------------------------------------------------------- candidates


_NO_OPEN_TASK = """
    NOT EXISTS (SELECT 1 FROM review_tasks t
                WHERE t.item_id = {col} AND t.status IN ('open', 'in progress'))
"""


def _pool_candidates(db: sqlite_utils.Database, project: Project,
                     model_id: int | None) -> list[Candidate]:
    """Unlabeled items the promoted model scored, without an open task (least sure first).

    Items a batch added are left out: their batch workflow decides about them,
    and a batch's output must not change because another workflow ran.
    """
    if model_id is None:
        return []
    rows = db.execute(
        f"""
        SELECT p.item_id, p.predicted, p.confidence, p.probabilities
        FROM predictions p JOIN items i ON i.id = p.item_id
        WHERE p.model_version_id = ? AND i.n_labels = 0 AND {_NO_OPEN_TASK.format(col='p.item_id')}
          AND json_extract(i.metadata, '$.review_batch') IS NULL
        ORDER BY p.confidence ASC, p.item_id ASC
        """,
        [model_id],
    ).fetchall()
    return [Candidate(item_id=item_id, predicted=json.loads(predicted), confidence=confidence,
                      extra={"probabilities": probabilities, "model_version_id": model_id})
            for item_id, predicted, confidence, probabilities in rows]


def _label_candidates(db: sqlite_utils.Database, project: Project) -> list[Candidate]:
    """Checked labels (latest scan) without an open task, likeliest errors first."""
    from review.label_issues import stored_checks

    busy = {r[0] for r in db.execute(
        "SELECT item_id FROM review_tasks WHERE project_id = ? AND status IN "
        "('open', 'in progress')", [project.id])}
    reviewed = {r[0] for r in db.execute(
        """
        SELECT t.item_id FROM review_tasks t JOIN annotations a ON a.id = t.annotation_id
        WHERE t.project_id = ? AND t.status = 'completed' AND t.source = 'labels'
          AND a.retracted_at IS NULL
        """, [project.id])}
    out = []
    for row in stored_checks(db, project, issues_only=False):
        if row["id"] in busy or row["id"] in reviewed:
            continue
        probabilities = row["probabilities"]
        out.append(Candidate(
            item_id=row["id"], predicted=row["suggested"],
            confidence=float(max(probabilities)) if probabilities else 0.0,
            label_error=row["issue"],
            extra={"probabilities": json.dumps(probabilities), "given": row["given"],
                   "given_by": row["users"], "score": row["score"],
                   "model_version_id": None}))
    return out


def candidates(db: sqlite_utils.Database, project: Project, source: str) -> list[Candidate]:
    """What a pool or labels workflow looks at now (a batch workflow: `_activated_now`)."""
    if source == "labels":
        return _label_candidates(db, project)
    return _pool_candidates(db, project, promoted_model_id(db, project))


def _activated_now(db: sqlite_utils.Database, project: Project, conditions: dict, source: str,
                   salt: str) -> tuple[int, list[tuple[Candidate, list]]]:
    """(how many candidates, the activated ones with what fired) for any source.

    A batch workflow re-evaluates its stored batches (`salt` is its name):
    each batch keeps its own model's predictions and its own sample.
    """
    if source == "batch":
        from review.batches import stored_activations

        return stored_activations(db, project, conditions, salt)
    pool = candidates(db, project, source)
    return len(pool), activated(conditions, pool, salt)


def activated(conditions: dict, pool: list[Candidate], salt: str) -> list[tuple[Candidate, list]]:
    """The candidates the conditions activate, each with the conditions that fired."""
    out = []
    for candidate in pool:
        fired = evaluate(conditions, candidate, salt)
        if fired:
            out.append((candidate, fired))
    return out


def preview(
    db: sqlite_utils.Database, project: Project, conditions, *, source: str = "pool",
    salt: str = INLINE,
) -> dict:
    """How many tasks these conditions would open now, before anything is saved.

    A preview over the project's labels reads the latest stored scan (see
    `review.label_issues.check_labels`); `stale` says when labels changed since.
    A batch workflow's preview (`salt` is its name) counts what it would open
    on the batches it already ran; a new file's preview is
    `review.batches.preview_batch`.
    """
    conditions = check_conditions(conditions, project, source)
    n, hits = _activated_now(db, project, conditions, source, salt)
    by_condition = Counter(text for _, fired in hits for text in fired)
    out = {"would_open": len(hits), "candidates": n,
           "by_condition": dict(by_condition), "description": describe(conditions)}
    if source == "labels":
        from review.label_issues import is_fresh, last_check

        out["checked"] = last_check(db, project) is not None
        out["stale"] = not is_fresh(db, project)
    else:
        out["model_version_id"] = promoted_model_id(db, project)
    return out


def _expiry(hours: float | None) -> str | None:
    if hours is None:
        return None
    moment = datetime.now(UTC) + timedelta(hours=float(hours))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_tasks(
    db: sqlite_utils.Database,
    project: Project,
    conditions,
    *,
    source: str = "pool",
    workflow: Workflow | None = None,
    limit: int | None = None,
) -> int:
    """Open a task (human loop) for each activated item; return how many were opened.

    A batch workflow (`workflow` required) re-evaluates the batches it ran;
    a new file goes through `review.batches.run_batch`.
    """
    conditions = check_conditions(conditions, project, source)
    if source == "batch" and workflow is None:
        raise GroundworkError("a batch is reviewed through a saved batch workflow: give its name")
    if source == "pool" and promoted_model_id(db, project) is None:
        raise GroundworkError(
            f"project {project.name!r} has no promoted model yet: train one "
            f"(`groundwork train {project.name}`) before opening reviews")
    if source == "labels":
        from review.label_issues import ensure_checked

        ensure_checked(db, project)
    salt = workflow.name if workflow else INLINE
    _, hits = _activated_now(db, project, conditions, source, salt)
    if limit is not None:
        hits = hits[: max(int(limit), 0)]
    rows = task_rows(project, conditions, source, workflow, hits)
    with db.atomic():
        db["review_tasks"].insert_all(rows, batch_size=1000)
        if workflow is not None:
            db["review_workflows"].update(workflow.id, {
                "active": 1, "last_model_version_id": promoted_model_id(db, project)})
    return len(rows)


def task_rows(project: Project, conditions: dict, source: str, workflow: Workflow | None,
              hits: list[tuple[Candidate, list]]) -> list[dict]:
    """The `review_tasks` rows for activated candidates: what every loop keeps of its why."""
    now = utcnow()
    expires = _expiry(workflow.expiry_hours) if workflow else None
    rows = []
    for candidate, fired in hits:
        extra = candidate.extra
        rows.append({
            "project_id": project.id,
            "item_id": candidate.item_id,
            "model_version_id": extra.get("model_version_id"),
            "predicted": json.dumps(candidate.predicted),
            "confidence": float(candidate.confidence),
            "probabilities": extra.get("probabilities"),
            "rule": json.dumps(conditions),
            "fired": json.dumps(fired),
            "status": "open",
            "created_at": now,
            "workflow_id": workflow.id if workflow else None,
            "source": source,
            "reviewers": workflow.reviewers if workflow else 1,
            "expires_at": expires,
            "given": json.dumps(extra["given"]) if "given" in extra else None,
            "given_by": json.dumps(extra["given_by"]) if "given_by" in extra else None,
            "issue_score": extra.get("score") if candidate.label_error else None,
        })
    return rows


def run_workflow(db: sqlite_utils.Database, project: Project, name: str,
                 limit: int | None = None) -> int:
    """Evaluate the workflow now and open its tasks."""
    workflow = get_workflow(db, project, name)
    return open_tasks(db, project, workflow.conditions, source=workflow.source,
                      workflow=workflow, limit=limit)


def refresh_workflows(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    """After a promotion, re-run every pool workflow that has run on an older model.

    Training runs in a process that knows nothing of review (the dependency
    rule), so whoever promotes or looks calls this: `groundwork train`,
    `promote` and `rollback` right after a promotion, the Review and Workflows
    pages and `groundwork review next` on load (for promotions made on the
    Train page or by a background job). Tasks for the new model's predictions
    are there when someone looks.
    """
    model_id = promoted_model_id(db, project)
    if model_id is None:
        return {}
    opened = {}
    for workflow in list_workflows(db, project):
        if (workflow.active and workflow.source == "pool"
                and workflow.last_model_version_id != model_id):
            opened[workflow.name] = open_tasks(db, project, workflow.conditions,
                                               source="pool", workflow=workflow)
    return opened
