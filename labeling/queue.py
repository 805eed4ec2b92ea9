"""The labeling queue: which item a person sees next.

Model outputs are scored with modAL's uncertainty measures when predictions
are stored (in the background, after training), so choosing the next item is
an indexed query: no model is called and no table is scanned on the click path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import sqlite_utils
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty

from labeling.projects import Project
from labeling.splits import HOLDOUT_SHARE
from labeling.store import utcnow


class _StoredProbabilities:
    """Lets modAL's measures read probabilities already computed by the model.

    modAL's functions call `predict_proba(X)`; X here is row indices into the
    precomputed matrix, so the model runs once per item, not once per measure.
    """

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self.probabilities[rows]


def uncertainty_scores(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """modAL's confidence, margin and entropy for each row of a probability matrix."""
    probabilities = np.asarray(probabilities, dtype=float)
    adapter = _StoredProbabilities(probabilities)
    rows = np.arange(len(probabilities))
    return {
        "confidence": 1.0 - classifier_uncertainty(adapter, rows),
        "margin": classifier_margin(adapter, rows),
        "entropy": classifier_entropy(adapter, rows),
    }


def store_predictions(
    db: sqlite_utils.Database,
    model_version_id: int,
    item_ids: Sequence[int],
    classes: Sequence[str],
    probabilities: np.ndarray,
    multi_label: bool = False,
) -> int:
    """Save a model's probabilities for pool items with their queue scores.

    For multi-label models each column is an independent probability; the
    prediction is every class at or above 0.5 and confidence is the least
    certain of those yes/no decisions.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    if multi_label:
        certainty = np.abs(probabilities - 0.5) * 2
        confidence = certainty.min(axis=1)
        margin = confidence
        entropy = 1.0 - confidence
        predicted = [
            [c for c, p in zip(classes, row, strict=True) if p >= 0.5] for row in probabilities
        ]
    else:
        scores = uncertainty_scores(probabilities)
        confidence, margin, entropy = scores["confidence"], scores["margin"], scores["entropy"]
        predicted = [[classes[int(i)]] for i in probabilities.argmax(axis=1)]
    rows = (
        {
            "model_version_id": model_version_id,
            "item_id": int(item_id),
            "predicted": json.dumps(pred),
            "probabilities": json.dumps([round(float(p), 6) for p in probs]),
            "confidence": float(conf),
            "margin": float(marg),
            "entropy": float(ent),
        }
        for item_id, pred, probs, conf, marg, ent in zip(
            item_ids, predicted, probabilities, confidence, margin, entropy, strict=True
        )
    )
    with db.atomic():
        db["predictions"].insert_all(rows, batch_size=2000, replace=True)
    return len(item_ids)


def store_value_predictions(
    db: sqlite_utils.Database,
    model_version_id: int,
    item_ids: Sequence[int],
    values: np.ndarray,
) -> int:
    """Save a regression model's predicted numbers (no probabilities, so no class confidence).

    `confidence`, `margin` and `entropy` are 0: a number has no class
    probabilities to rank by, and nothing that acts on confidence (review
    rules, automated labeling) runs on regression projects.
    """
    from labeling.targets import number_label

    rows = (
        {"model_version_id": model_version_id, "item_id": int(item_id),
         "predicted": json.dumps([number_label(v)]), "probabilities": "[]",
         "confidence": 0.0, "margin": 0.0, "entropy": 0.0}
        for item_id, v in zip(item_ids, np.asarray(values, dtype=float), strict=True)
    )
    with db.atomic():
        db["predictions"].insert_all(rows, batch_size=2000, replace=True)
    return len(item_ids)


def interval_half_width(db: sqlite_utils.Database, model_version_id: int) -> float | None:
    """A regression version's measured prediction interval (± half-width), if it has one."""
    row = db.execute("SELECT json_extract(metrics, '$.prediction_interval.half_width') FROM "
                     "model_versions WHERE id = ?", [model_version_id]).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def promoted_model_id(db: sqlite_utils.Database, project: Project) -> int | None:
    row = db.execute(
        "SELECT id FROM model_versions WHERE project_id = ? AND status = 'promoted' "
        "ORDER BY id DESC LIMIT 1",
        [project.id],
    ).fetchone()
    return row[0] if row else None


def validation_slots(db: sqlite_utils.Database, project: Project, n: int) -> int:
    """How many of the next `n` items should be random validation items.

    Enough that held-out items stay at their share of all labels: validation
    labels then form a random sample of the data, which is what makes the
    accuracy measured on them (training holdout, automated labeling) hold for
    the pool, whatever active learning chose to show people.
    """
    # `holdout IN (0, 1)` (every item is one or the other) lets SQLite count inside the
    # (project_id, holdout, n_labels) index instead of reading each labeled item's row.
    labeled, held = db.execute(
        "SELECT count(*), coalesce(sum(holdout), 0) FROM items "
        "WHERE project_id = ? AND holdout IN (0, 1) AND n_labels > 0",
        [project.id],
    ).fetchone()
    return int(min(max(math.ceil(HOLDOUT_SHARE * (labeled + n)) - held, 0), n))


def store_queue_scores(
    db: sqlite_utils.Database,
    project: Project,
    item_ids: Sequence[int],
    order: Sequence[int],
    predicted: Sequence[Sequence[str]],
    confidence: Sequence[float],
    scorer: str,
) -> int:
    """Replace the project's queue scores: `order` lists row positions, most useful first.

    One transaction, so the queue switches from the old order to the new one
    at once and a person labeling meanwhile is never shown a half-written order.
    """
    priority = np.empty(len(item_ids), dtype=float)
    priority[np.asarray(order, dtype=int)] = np.arange(len(order), dtype=float)
    now = utcnow()
    encoded: dict[tuple, str] = {}  # a pool has few distinct predictions: encode each once
    rows = [
        (item_id, project.id, p, encoded.get(key) or encoded.setdefault(key, json.dumps(list(key))),
         conf, scorer, now)
        for item_id, p, key, conf in zip(
            np.asarray(item_ids, dtype=np.int64).tolist(), priority.tolist(),
            map(tuple, predicted), np.asarray(confidence, dtype=float).tolist(), strict=True)
    ]
    with db.atomic():
        db.execute("DELETE FROM queue_scores WHERE project_id = ?", [project.id])
        db.conn.executemany(
            "INSERT OR REPLACE INTO queue_scores (item_id, project_id, priority, predicted, "
            "confidence, scorer, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def labeling_progress(db: sqlite_utils.Database, project: Project) -> dict[str, int]:
    """Items and labeled items, for the Label page's progress bar on every answer.

    The same two numbers as `project_counts`, read from indexes only: the item
    count from the narrowest covering index, the labeled count from the
    `n_labels > 0` range (which holds only the labeled items), so no item row
    is read on the click path.
    """
    items = db.execute("SELECT count(*) FROM items WHERE project_id = ?",
                       [project.id]).fetchone()[0]
    labeled = db.execute("SELECT count(*) FROM items WHERE project_id = ? AND n_labels > 0",
                         [project.id]).fetchone()[0]
    return {"items": int(items), "labeled": int(labeled)}


def queue_suggestion(db: sqlite_utils.Database, item_id: int) -> dict | None:
    """What the latest queue model (quick refit or promoted) predicts for an item."""
    row = db.execute("SELECT predicted, confidence, scorer, scored_at FROM queue_scores "
                     "WHERE item_id = ?", [int(item_id)]).fetchone()
    if row is None:
        return None
    return {"predicted": json.loads(row[0]), "confidence": row[1], "scorer": row[2],
            "scored_at": row[3]}


def _has_queue_scores(db: sqlite_utils.Database, project: Project) -> bool:
    return db.execute("SELECT 1 FROM queue_scores WHERE project_id = ? LIMIT 1",
                      [project.id]).fetchone() is not None


def next_items(
    db: sqlite_utils.Database,
    project: Project,
    n: int = 1,
    strategy: str | None = None,
    exclude: Sequence[int] = (),
    user: str | None = None,
) -> list[dict]:
    """Up to `n` unlabeled items, most useful first: `[{"id", "key", "reason"}]`.

    Once a model has scored the pool: random validation items for their share
    (`validation_slots`), the rest in the order the project's strategy gave
    them (`queue_scores`, written by the background refit and by promotion),
    then any items imported since, at random. An explicit `strategy` other
    than the project's orders by the promoted model's stored margin or entropy.
    Before any model: random order (after the cold-start seed). Items with a
    live machine label are left to the model until it is reverted.
    `exclude` holds items this session skipped, so skipping moves on.
    Every unlabeled item stays reachable: nothing is filtered out for good.

    When a project wants several answers per item, an item stays in the queue
    until it has them, and `user` is never offered an item they answered.
    """
    n = max(int(n), 0)
    out: list[dict] = []
    use_scores = strategy in (None, project.strategy)
    strategy = strategy or project.strategy
    wanted = project.annotations_per_item
    mine_sql, mine_args = "", []  # never offer `user` an item they answered
    if wanted > 1 and user:
        mine_sql = (" AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.item_id = i.id "
                    "AND a.user = ? AND a.retracted_at IS NULL)")
        mine_args = [user]
    if wanted <= 1:
        open_sql, open_args = "i.n_labels = 0 AND i.n_auto = 0", []
    else:
        open_sql = "i.n_labels < ? AND i.n_auto = 0" + mine_sql
        open_args: list = [wanted, *mine_args]

    def skip_sql(extra: Sequence[int] = ()) -> tuple[str, list[int]]:
        taken = list(dict.fromkeys([int(i) for i in exclude] + [r["id"] for r in out]
                                   + list(extra)))
        return (f"AND i.id NOT IN ({','.join('?' * len(taken))})" if taken else ""), taken

    scored = strategy != "random" and use_scores and _has_queue_scores(db, project)
    model_id = (promoted_model_id(db, project)
                if strategy != "random" and not scored else None)

    def by_rank(holdout: int | None, limit: int) -> list[tuple[int, str]]:
        """Open items (of the validation split when `holdout` is 1) in their random `rank` order.

        One indexed range per answer count (`n_labels = 0`, `= 1`, ...), each read
        in rank order, merged here: a project wanting several answers per item is
        then never sorted whole on a call.
        """
        sql, taken = skip_sql()
        split_sql, split_args = ("", []) if holdout is None else ("AND i.holdout = ?", [holdout])
        found: list[tuple[float, int, str]] = []
        for answers in range(max(wanted, 1)):
            found += db.execute(
                f"""
                SELECT i.rank, i.id, i.key FROM items i
                WHERE i.project_id = ? {split_sql} AND i.n_labels = ? AND i.n_auto = 0
                {mine_sql} {sql} ORDER BY i.rank LIMIT ?
                """,
                [project.id, *split_args, answers, *mine_args, *taken, limit],
            ).fetchall()
        return [(row[1], row[2]) for row in sorted(found)[:limit]]

    if (scored or model_id is not None) and n:
        slots = validation_slots(db, project, n)
        if slots:
            for item_id, key in by_rank(1, slots):
                out.append({"id": item_id, "key": key, "reason": "validation"})
    if scored and len(out) < n:
        sql, taken = skip_sql()
        for row in db.execute(
            f"""
            SELECT i.id, i.key FROM queue_scores q JOIN items i ON i.id = q.item_id
            WHERE q.project_id = ? AND i.holdout = 0 AND {open_sql}
            {sql} ORDER BY q.priority LIMIT ?
            """,
            [project.id, *open_args, *taken, n - len(out)],
        ):
            out.append({"id": row[0], "key": row[1], "reason": strategy})
    elif model_id is not None and len(out) < n:
        order = {"entropy": "p.entropy DESC", "uncertainty": "p.confidence ASC"}.get(
            strategy, "p.margin ASC")
        sql, taken = skip_sql()
        for row in db.execute(
            f"""
            SELECT i.id, i.key FROM predictions p JOIN items i ON i.id = p.item_id
            WHERE p.model_version_id = ? AND i.holdout = 0 AND {open_sql}
            {sql} ORDER BY {order} LIMIT ?
            """,
            [model_id, *open_args, *taken, n - len(out)],
        ):
            out.append({"id": row[0], "key": row[1], "reason": strategy})
    if len(out) < n:
        for item_id, key in by_rank(None, n - len(out)):
            out.append({"id": item_id, "key": key, "reason": "random"})
    return out


def prediction_for(db: sqlite_utils.Database, model_version_id: int, item_id: int) -> dict | None:
    row = next(
        iter(
            db.query(
                "SELECT * FROM predictions WHERE model_version_id = ? AND item_id = ?",
                [model_version_id, item_id],
            )
        ),
        None,
    )
    if row is None:
        return None
    row["predicted"] = json.loads(row["predicted"])
    row["probabilities"] = json.loads(row["probabilities"])
    return row
