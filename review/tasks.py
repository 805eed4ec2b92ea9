"""Review tasks (human loops): serve the next one, take reviewers' answers, keep the count.

A task wants 1-3 reviewers (its workflow's setting). Each reviewer answers
once; their answers are kept in `review_answers` with who, when and how
long. While some are missing the task is `in progress`; when the last one
arrives the answers are consolidated like annotations (Dawid-Skene over the
project's multi-reviewer tasks, or majority vote while fewer than ten tasks
are shared) and stored as one curated label with source `review`, the task
`completed`. A task past its expiry is `expired` and no longer offered.

Claims keep two reviewers off the same task, the way `labeling.leases` keeps
two annotators off the same item: `claim_tasks` (the Review page, and
`groundwork review next --user U`) hands a reviewer their own live claims
first, then tasks nobody else holds, and holds them for a few minutes
(`GROUNDWORK_LEASE_SECONDS`, default 5 minutes). A task wanting k reviewers
is held by at most k minus its answers people at once. A held task is
`in progress`; an answer, a skip (`release_claim`) or the claim's expiry
frees it, and an unanswered task whose claims all ended is `open` again.
Claims are rows of the store's `review_claims` table, one per (task,
reviewer) with the time the claim ends: short-lived state that is never the
only record of anything, dropped lazily once it ended, its task closed or its
holder answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlite_utils

from labeling.annotations import record_annotation, retract_annotation, validate_labels
from labeling.errors import GroundworkError
from labeling.leases import _write_transaction, check_seconds, check_user, default_lease_seconds
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
    """Mark tasks past their expiry as expired and drop ended claims; return how many expired."""
    now = now or utcnow()
    with db.atomic():
        cursor = db.execute(
            "UPDATE review_tasks SET status = 'expired' WHERE project_id = ? AND status IN "
            "('open', 'in progress') AND expires_at IS NOT NULL AND expires_at <= ?",
            [project.id, now])
        _drop_stale_claims(db, project, now)
    return cursor.rowcount


# ---------------------------------------------------------------- claims


def _forget_claims(db: sqlite_utils.Database, task_id: int) -> None:
    """A completed task holds nobody any more (an undo must not find old claims live)."""
    db.execute("DELETE FROM review_claims WHERE task_id = ?", [int(task_id)])


def live_claims(db: sqlite_utils.Database, project: Project) -> dict[int, dict[str, str]]:
    """Task id -> {reviewer: when their claim ends}, for claims that have not ended."""
    out: dict[int, dict[str, str]] = {}
    for task_id, user, until in db.execute(
            "SELECT task_id, user, expires_at FROM review_claims WHERE project_id = ? "
            "AND expires_at > ? ORDER BY task_id, user", [project.id, utcnow()]).fetchall():
        out.setdefault(task_id, {})[user] = until
    return out


def _drop_stale_claims(db: sqlite_utils.Database, project: Project, now: str) -> None:
    """Drop claims that ended, that are on tasks no longer open, or whose holder answered;
    then an unanswered task nobody holds is `open` again."""
    db.execute(
        """
        DELETE FROM review_claims
        WHERE project_id = ? AND (
            expires_at <= ?
            OR NOT EXISTS (SELECT 1 FROM review_tasks t WHERE t.id = review_claims.task_id
                           AND t.status IN ('open', 'in progress'))
            OR EXISTS (SELECT 1 FROM review_answers r WHERE r.task_id = review_claims.task_id
                       AND r.user = review_claims.user AND r.retracted_at IS NULL))
        """, [project.id, now])
    db.execute(
        """
        UPDATE review_tasks SET status = 'open'
        WHERE project_id = ? AND status = 'in progress'
          AND NOT EXISTS (SELECT 1 FROM review_claims c WHERE c.task_id = review_tasks.id
                          AND c.expires_at > ?)
          AND NOT EXISTS (SELECT 1 FROM review_answers r WHERE r.task_id = review_tasks.id
                          AND r.retracted_at IS NULL)
        """, [project.id, now])


def _full_for(db: sqlite_utils.Database, project: Project, user: str,
              claims: dict[int, dict[str, str]]) -> list[int]:
    """Tasks other reviewers' live claims fill: as many holders as answers still wanted."""
    held = {task_id: [u for u in users if u != user] for task_id, users in claims.items()}
    held = {task_id: others for task_id, others in held.items() if others}
    if not held:
        return []
    rows = db.execute(
        f"""
        SELECT t.id, t.reviewers, (SELECT count(*) FROM review_answers r
                                   WHERE r.task_id = t.id AND r.retracted_at IS NULL)
        FROM review_tasks t WHERE t.id IN ({','.join('?' * len(held))})
        """, sorted(held)).fetchall()
    return [task_id for task_id, wanted, answers in rows
            if len(held[task_id]) >= int(wanted or 1) - answers]


def _until(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hold(db: sqlite_utils.Database, project: Project, task_ids: Sequence[int], user: str,
          until: str) -> None:
    if not task_ids:
        return
    db.conn.executemany(
        "INSERT INTO review_claims (task_id, user, project_id, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (task_id, user) DO UPDATE SET expires_at = excluded.expires_at",
        [(int(t), user, project.id, until) for t in task_ids])
    db.execute(f"UPDATE review_tasks SET status = 'in progress' WHERE id IN "
               f"({','.join('?' * len(task_ids))})", [int(t) for t in task_ids])


def claim_tasks(
    db: sqlite_utils.Database,
    project: Project,
    user: str,
    n: int = 1,
    *,
    seconds: float | None = None,
    exclude: Sequence[int] = (),
    workflow: str | None = None,
) -> list[dict]:
    """Up to `n` tasks for `user`, each held for them for `seconds` (default 5 minutes).

    The user's own live claims first (renewed: a reload shows the same task),
    then what `next_tasks` offers among the tasks nobody else fills. Empty
    when nothing is open for the user, or everything open is held by others
    (`held_by_others` tells the two apart). Each task carries `claimed_until`.
    One write transaction (`BEGIN IMMEDIATE`), so two reviewers asking at once
    take turns instead of both reading the same free task.
    """
    user = check_user(db, user)
    seconds = check_seconds(default_lease_seconds() if seconds is None else seconds)
    skip = {int(e) for e in exclude}
    with _write_transaction(db):
        now, until = utcnow(), _until(seconds)
        expire_tasks(db, project, now)
        claims = live_claims(db, project)
        mine = tuple(t for t, users in claims.items() if user in users and t not in skip)
        out = _select(db, project, n, mine, workflow=workflow, now=now, only=True) if mine else []
        if len(out) < n:
            taken = (*skip, *mine, *_full_for(db, project, user, claims))
            out += _select(db, project, n - len(out), taken, user=user, workflow=workflow,
                           now=now)
        _hold(db, project, [t["id"] for t in out], user, until)
    return [{**t, "status": "in progress", "claimed_until": until} for t in out]


def claim_task(db: sqlite_utils.Database, project: Project, task_id: int, user: str,
               seconds: float | None = None) -> str:
    """Hold one given task for `user` (their undone answer's task, back on their screen, or
    the task a page keeps showing); return when the claim ends.

    Refused when the task is no longer open or other reviewers fill it.
    """
    user = check_user(db, user)
    seconds = check_seconds(default_lease_seconds() if seconds is None else seconds)
    with _write_transaction(db):
        expire_tasks(db, project)
        task = get_task(db, project, task_id)
        if task["status"] not in OPEN_STATES:
            raise GroundworkError(f"review task {task['id']} is {task['status']}, not open")
        claims = live_claims(db, project)
        if task["id"] in _full_for(db, project, user, claims):
            raise GroundworkError(_held_message(task, claims))
        until = _until(seconds)
        _hold(db, project, [task["id"]], user, until)
    return until


def release_claim(db: sqlite_utils.Database, project: Project, task_id: int, user: str) -> bool:
    """Free `user`'s claim on a task (skipped, or they stop); True if there was one."""
    with db.atomic():
        cursor = db.execute(
            "DELETE FROM review_claims WHERE project_id = ? AND task_id = ? AND user = ?",
            [project.id, int(task_id), (user or "").strip()])
        _drop_stale_claims(db, project, utcnow())
    return cursor.rowcount > 0


def held_by_others(db: sqlite_utils.Database, project: Project, user: str) -> int:
    """How many open tasks other reviewers' live claims keep from `user` now."""
    claims = live_claims(db, project)
    full = _full_for(db, project, (user or "").strip(), claims)
    if not full:
        return 0
    return int(db.execute(
        f"SELECT count(*) FROM review_tasks t WHERE t.id IN ({','.join('?' * len(full))}) "
        "AND t.status IN ('open', 'in progress') AND NOT EXISTS (SELECT 1 FROM review_answers r "
        "WHERE r.task_id = t.id AND r.user = ? AND r.retracted_at IS NULL)",
        [*full, (user or "").strip()]).fetchone()[0])


def _held_message(task: dict, claims: dict[int, dict[str, str]]) -> str:
    holders = claims.get(task["id"], {})
    until = max(holders.values(), default="")[11:16]
    return (f"review task {task['id']} is being reviewed by {', '.join(sorted(holders))} "
            f"(held until {until} UTC): take another one with `groundwork review next "
            "--user NAME`, or wait until the claim ends")


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
    exclude: Sequence[int] = (),
    *,
    user: str | None = None,
    workflow: str | None = None,
) -> list[dict]:
    """Open tasks, likeliest label errors first, then the least confident predictions.

    A look: nothing is held (`claim_tasks` holds what it serves). Expired
    tasks are never offered; with `user`, neither are tasks they already
    answered nor tasks other reviewers' claims fill.
    """
    now = utcnow()
    expire_tasks(db, project, now)
    if user:
        exclude = (*exclude, *_full_for(db, project, user, live_claims(db, project)))
    return _select(db, project, n, tuple(exclude), user=user, workflow=workflow, now=now)


def _select(
    db: sqlite_utils.Database,
    project: Project,
    n: int,
    ids: tuple[int, ...],
    *,
    user: str | None = None,
    workflow: str | None = None,
    now: str | None = None,
    only: bool = False,
) -> list[dict]:
    """Open tasks in review order: leaving out `ids`, or (`only`) among `ids` alone."""
    now = now or utcnow()
    where, args = [], []
    if ids or only:
        where.append(f"t.id {'IN' if only else 'NOT IN'} ({','.join('?' * len(ids))})")
        args.extend(int(e) for e in ids)
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
    Refused while other reviewers' claims fill the task (it is on their
    screens); the answer frees the answerer's own claim.
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
    claims = live_claims(db, project)
    if task["id"] in _full_for(db, project, user, claims):
        raise GroundworkError(_held_message(task, claims))
    annotation_id = None
    with db.atomic():
        db.execute("DELETE FROM review_claims WHERE task_id = ? AND user = ?",
                   [task["id"], user])
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
        _forget_claims(db, task["id"])
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
        busy = task_answers(db, task["id"]) or task["id"] in live_claims(db, project)
        db["review_tasks"].update(task["id"], {
            "status": "in progress" if busy else "open", "completed_at": None,
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
