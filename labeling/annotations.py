"""Annotations: every answer anyone (or any model) gave, with who, when and how long.

Answers are never deleted; undo retracts one (it stays for the audit trail).
`n_labels` on the item counts live curated answers so the queue never scans.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd
import sqlite_utils

from labeling.errors import GroundworkError
from labeling.items import get_item
from labeling.projects import Project
from labeling.store import utcnow
from labeling.targets import number_label, parse_number

SOURCES = ("human", "auto", "review", "import")
CURATED_SOURCES = ("human", "review", "import")


def parse_labels(value: str | Iterable[str]) -> list[str]:
    """Accept "a", "a,b", "a;b", "a|b" or a list; multi-label answers come comma-separated."""
    if isinstance(value, str):
        parts = value.replace(";", ",").replace("|", ",").split(",")
    else:
        parts = list(value)
    return [p.strip() for p in (str(x) for x in parts) if p.strip()]


# A multi-label answer that no tag applies: the Label page's "No tags apply" (key 0),
# `groundwork label P ITEM "[]"`. Spelled out, so a blank cell or a forgotten argument
# is still refused as "no label given" rather than recorded as a decision.
NO_TAGS = "[]"


def _no_tags(project: Project, labels: str | Iterable[str] | None) -> bool:
    """True for an explicit empty set (`[]`, or the text "[]") in a multi-label project.

    An empty set is an answer there: the model predicts it (no tag at p >= 0.5),
    training encodes it (a row of zeros), consolidation and the label-issue
    filter count it. A single-label item always has exactly one class.
    """
    if not project.multi_label or labels is None:
        return False
    if isinstance(labels, str):
        return labels.strip() == NO_TAGS
    return len(labels) == 0


def validate_labels(project: Project, labels: str | Iterable[str]) -> list[str]:
    """Refuse what the project cannot hold, naming the classes it does have."""
    if project.regression:
        return [_number_answer(project, labels)]
    if labels is not None and not isinstance(labels, str):
        labels = list(labels)  # read once: it may be an iterator
    if _no_tags(project, labels):
        return []
    values = parse_labels(labels if labels is not None else [])
    if not values:
        raise GroundworkError(
            "no label given: pick one of " + ", ".join(project.classes)
            + (f" (or {NO_TAGS} for none of them)" if project.multi_label else ""))

    def shown(names: list[str]) -> str:  # one short line, however long or many the labels
        cut = [repr(n) if len(n) <= 60 else f"{n[:50]!r}... ({len(n)} chars)" for n in names]
        return ", ".join(cut[:5]) + (f" and {len(cut) - 5} more" if len(cut) > 5 else "")

    unknown = [v for v in values if v not in project.classes]
    if unknown:
        raise GroundworkError(
            f"unknown label {shown(unknown)} for project {project.name!r}: "
            f"classes are {', '.join(project.classes)}"
        )
    if not project.multi_label and len(values) > 1:
        raise GroundworkError(
            f"project {project.name!r} is single-label but got {len(values)} labels "
            f"({shown(values)}): give exactly one"
        )
    return sorted(set(values), key=project.classes.index)


def _number_answer(project: Project, answer) -> str:
    """A regression answer: one finite number, kept in canonical form."""
    values = [answer] if isinstance(answer, (str, int, float)) or answer is None else list(answer)
    if len(values) != 1:
        raise GroundworkError(f"project {project.name!r} wants one number per item, got "
                              f"{len(values)} values")
    number = parse_number(values[0])
    if number is None:
        shown = str(values[0])[:40]
        raise GroundworkError(f"{shown!r} is not a number: project {project.name!r} is a "
                              "regression project, answer with a number such as 12.5")
    return number_label(number)


def record_annotation(
    db: sqlite_utils.Database,
    project: Project,
    item_id: int,
    labels: str | Iterable[str],
    user: str,
    source: str = "human",
    duration_ms: int | None = None,
    confidence: float | None = None,
    model_version_id: int | None = None,
    submission_id: str | None = None,
) -> int:
    """Store one answer durably and return its id.

    `submission_id` makes the call idempotent: a client names each answer
    (the Label page: one id per item shown; a script: any unique string, e.g.
    a UUID) and the same id arriving again (a double click, a retry after a
    timeout) returns the first answer's id without recording anything. The id
    is unique per project, enforced by the store, so two processes racing with
    the same id still record one answer. Reusing an id for a different answer
    is refused: that is a client bug, not a re-send.
    """
    if source not in SOURCES:
        raise GroundworkError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    values = validate_labels(project, labels)
    user = (user or "").strip()
    if not user:
        raise GroundworkError("no user given: pass --user NAME")
    submission_id = clean_submission_id(submission_id)
    if submission_id is not None:
        earlier = _submitted(db, project, submission_id, int(item_id), values, user)
        if earlier is not None:
            return earlier
    item = get_item(db, project, item_id)
    row = {
        "project_id": project.id,
        "item_id": item.id,
        "user": user,
        "labels": json.dumps(values),
        "source": source,
        "created_at": utcnow(),
        "duration_ms": None if duration_ms is None else int(duration_ms),
        "confidence": confidence,
        "model_version_id": model_version_id,
        "submission_id": submission_id,
    }
    with db.atomic():
        # Write first (never read-then-write in one transaction: under WAL that fails with
        # "database is locked" when another writer got in between); a duplicate id is a no-op.
        cursor = db.execute(
            f"INSERT INTO annotations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
            "ON CONFLICT (project_id, submission_id) WHERE submission_id IS NOT NULL DO NOTHING",
            list(row.values()),
        )
        if cursor.rowcount == 0:  # the same submission landed first in another process
            earlier = _submitted(db, project, submission_id, item.id, values, user)
            if earlier is None:
                raise GroundworkError(f"answer {submission_id!r} was not recorded: send it again")
            return earlier
        pk = cursor.lastrowid
        if source in CURATED_SOURCES:
            db.execute("UPDATE items SET n_labels = n_labels + 1 WHERE id = ?", [item.id])
        elif source == "auto":
            db.execute("UPDATE items SET n_auto = n_auto + 1 WHERE id = ?", [item.id])
    return int(pk)


def clean_submission_id(submission_id: str | None) -> str | None:
    """None or blank means "not idempotent"; anything else is kept as given (up to 200 chars)."""
    if submission_id is None:
        return None
    value = str(submission_id).strip()
    if not value:
        return None
    if len(value) > 200:
        raise GroundworkError("submission id is longer than 200 characters: use a shorter one "
                              "(a UUID is 36)")
    return value


def find_submission(db: sqlite_utils.Database, project: Project, submission_id: str) -> int | None:
    """The id of the answer recorded under `submission_id` in the project, if any."""
    submission_id = clean_submission_id(submission_id)
    if submission_id is None:
        return None
    row = db.execute(
        "SELECT id FROM annotations WHERE project_id = ? AND submission_id = ?",
        [project.id, submission_id],
    ).fetchone()
    return int(row[0]) if row else None


def _submitted(
    db: sqlite_utils.Database,
    project: Project,
    submission_id: str,
    item_id: int,
    labels: list[str],
    user: str,
) -> int | None:
    """The earlier answer with this submission id, or None; refuses an id reused for another."""
    row = db.execute(
        "SELECT id, item_id, labels, user FROM annotations WHERE project_id = ? "
        "AND submission_id = ?",
        [project.id, submission_id],
    ).fetchone()
    if row is None:
        return None
    pk, earlier_item, earlier_labels, earlier_user = row
    if (earlier_item, json.loads(earlier_labels), earlier_user) != (item_id, labels, user):
        raise GroundworkError(
            f"submission id {submission_id!r} was already used for another answer (item "
            f"{earlier_item}, {', '.join(json.loads(earlier_labels))} by {earlier_user}): "
            "give each answer its own id"
        )
    return int(pk)


def retract_annotation(db: sqlite_utils.Database, project: Project, annotation_id: int) -> None:
    """Undo: the answer stops counting but stays on record."""
    row = db.execute(
        "SELECT item_id, source, retracted_at FROM annotations WHERE id = ? AND project_id = ?",
        [annotation_id, project.id],
    ).fetchone()
    if row is None:
        raise GroundworkError(f"no annotation {annotation_id} in project {project.name!r}")
    item_id, source, retracted = row
    if retracted:
        return
    with db.atomic():
        db.execute(
            "UPDATE annotations SET retracted_at = ? WHERE id = ?", [utcnow(), annotation_id]
        )
        if source in CURATED_SOURCES:
            db.execute("UPDATE items SET n_labels = max(n_labels - 1, 0) WHERE id = ?", [item_id])
        elif source == "auto":
            db.execute("UPDATE items SET n_auto = max(n_auto - 1, 0) WHERE id = ?", [item_id])


def recent_annotations(
    db: sqlite_utils.Database, project: Project, user: str, limit: int = 10
) -> list[dict]:
    """The user's last live answers, newest first (what undo walks back through)."""
    return list(
        db.query(
            """
            SELECT a.id, a.item_id, i.key, a.labels, a.source, a.created_at
            FROM annotations a JOIN items i ON i.id = a.item_id
            WHERE a.project_id = ? AND a.user = ? AND a.retracted_at IS NULL
              AND a.source IN ('human', 'review')
            ORDER BY a.id DESC LIMIT ?
            """,
            [project.id, user, limit],
        )
    )


def live_annotations(db: sqlite_utils.Database, project: Project) -> pd.DataFrame:
    """Every live answer of the project as a frame (item id, key, labels, source, ...)."""
    frame = pd.DataFrame(
        db.query(
            """
            SELECT a.id, a.item_id, i.key, a.user, a.labels, a.source, a.created_at,
                   a.duration_ms, a.confidence, a.model_version_id
            FROM annotations a JOIN items i ON i.id = a.item_id
            WHERE a.project_id = ? AND a.retracted_at IS NULL
            ORDER BY a.id
            """,
            [project.id],
        ),
        columns=[
            "id",
            "item_id",
            "key",
            "user",
            "labels",
            "source",
            "created_at",
            "duration_ms",
            "confidence",
            "model_version_id",
        ],
    )
    frame["labels"] = frame["labels"].map(json.loads)
    return frame


def current_labels(
    db: sqlite_utils.Database, project: Project, *, curated_only: bool
) -> pd.DataFrame:
    """One label per item: the latest live curated answer, else (unless curated_only) auto.

    Curated answers always beat machine answers, whatever their order; a
    review answer given after a human one replaces it (that is what review is for).
    """
    answers = live_annotations(db, project)
    if curated_only:
        answers = answers[answers["source"].isin(CURATED_SOURCES)]
    if answers.empty:
        return answers
    answers = _consolidated(answers, project.annotations_per_item, project.regression)
    answers = answers.assign(curated=answers["source"].isin(CURATED_SOURCES))
    answers = answers.sort_values(["item_id", "curated", "id"])
    return (
        answers.groupby("item_id", as_index=False)
        .tail(1)
        .sort_values("item_id")
        .reset_index(drop=True)
    )


def _consolidated(answers: pd.DataFrame, wanted: int, regression: bool = False
                  ) -> pd.DataFrame:
    """Replace several people's answers to an item by their consolidated answer.

    When a project wants k > 1 answers per item, an item whose human answers
    come from fewer than k people is not consolidated yet and does not count.
    """
    human = answers[answers["source"] == "human"]
    if human.empty:
        return answers
    latest = human.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")
    people = latest.groupby("item_id")["user"].nunique()
    shared = people[people >= 2].index
    waiting = people[people < wanted].index if wanted > 1 else people.index[:0]
    if shared.empty and waiting.empty:
        return answers
    keep = answers[~((answers["source"] == "human")
                     & answers["item_id"].isin(shared.union(waiting)))]
    ready = shared.difference(waiting)
    if ready.empty:
        return keep
    from labeling.consolidation import consolidate, consolidate_numbers, settled_labels

    if regression:
        consensus = consolidate_numbers(latest).set_index("item_id")
    else:
        # Reviewer-settled items anchor each person's reliability (see consolidation.py).
        consensus = consolidate(latest, settled_labels(answers)).set_index("item_id")
    rows = latest[latest["item_id"].isin(ready)].groupby("item_id").tail(1).copy()
    rows["labels"] = rows["item_id"].map(consensus["labels"])
    rows["confidence"] = rows["item_id"].map(consensus["confidence"])
    rows["user"] = "consensus"
    return pd.concat([keep, rows], ignore_index=True)


def answer_progress(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    """How far a project that wants k answers per item is: answers given of answers wanted.

    With k > 1 an item answered once is not done (it is not consolidated, so it
    does not train anything), so progress counts each item's answers up to k
    against items x k. `waiting` counts items answered by some but fewer than k
    people (and not machine-labeled): what a person who answered everything
    they may is still waiting on from others.
    """
    wanted = project.annotations_per_item
    items, answers, complete, waiting = db.execute(
        "SELECT count(*), coalesce(sum(min(n_labels, ?)), 0), coalesce(sum(n_labels >= ?), 0), "
        "coalesce(sum(n_labels > 0 AND n_labels < ? AND n_auto = 0), 0) "
        "FROM items WHERE project_id = ?",
        [wanted, wanted, wanted, project.id],
    ).fetchone()
    return {"items": int(items), "wanted": wanted, "answers": int(answers),
            "answers_wanted": int(items) * wanted, "complete": int(complete),
            "waiting": int(waiting)}


def labels_per_hour(db: sqlite_utils.Database, project: Project) -> pd.DataFrame:
    """Human throughput per person, from the answers whose time was recorded.

    Only the Label and Review pages time an answer (item shown to answer saved);
    CLI answers, changes made from the history and older rows have no
    duration. Counting those answers while summing only the recorded times
    made the rate look faster than anyone works, so `answers` and `ms` cover
    timed answers alone and `untimed` says how many were left out.
    """
    frame = pd.DataFrame(
        db.query(
            """
            SELECT user, count(duration_ms) AS answers, sum(duration_ms) AS ms,
                   count(*) - count(duration_ms) AS untimed
            FROM annotations
            WHERE project_id = ? AND source IN ('human', 'review') AND retracted_at IS NULL
            GROUP BY user ORDER BY answers DESC, user
            """,
            [project.id],
        ),
        columns=["user", "answers", "ms", "untimed"],
    )
    frame["labels_per_hour"] = (
        frame["answers"] * 3_600_000 / frame["ms"].where(frame["ms"] > 0)
    ).round(1)
    return frame
