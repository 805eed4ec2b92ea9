"""Versioned training sets: which labels a model learned from, kept after people change them.

Labels move on (a review corrects one, an annotator changes an answer), so a
model version is only reproducible and comparable if the exact labels it saw
are kept. A snapshot stores, per item, the curated label, its source and
whether it was held out; it is named by the hash of those rows, so training
twice on unchanged labels reuses one snapshot. `diff_snapshots` answers "what
changed since the model I trust": labels added, removed and corrected.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import pandas as pd
import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.store import utcnow


def save_snapshot(
    db: sqlite_utils.Database,
    project: Project,
    *,
    snapshot_hash: str,
    item_ids: Sequence[int],
    labels: Sequence[Sequence[str]],
    sources: Sequence[str],
    holdout: Sequence[bool],
    include_auto: bool = False,
) -> dict:
    """Store the training set (or find the identical one already stored) and return its row."""
    existing = _find(db, project, snapshot_hash)
    if existing is not None:
        return existing
    counts = Counter(c for answer in labels for c in answer)
    with db.atomic():
        version = (db.execute("SELECT max(version) FROM training_sets WHERE project_id = ?",
                              [project.id]).fetchone()[0] or 0) + 1
        snapshot_id = db["training_sets"].insert({
            "project_id": project.id,
            "version": version,
            "hash": snapshot_hash,
            "size": len(item_ids),
            "holdout_size": int(sum(bool(h) for h in holdout)),
            "include_auto": int(include_auto),
            "sources": json.dumps(dict(Counter(sources))),
            "class_counts": json.dumps(dict(sorted(counts.items()))),
            "created_at": utcnow(),
        }).last_pk
        db["training_set_items"].insert_all(
            ({"training_set_id": snapshot_id, "item_id": int(i), "labels": json.dumps(list(a)),
              "source": s, "holdout": int(bool(h))}
             for i, a, s, h in zip(item_ids, labels, sources, holdout, strict=True)),
            batch_size=5000,
        )
    return _find(db, project, snapshot_hash)  # type: ignore[return-value]


def _find(db: sqlite_utils.Database, project: Project, snapshot_hash: str) -> dict | None:
    row = next(iter(db.query("SELECT * FROM training_sets WHERE project_id = ? AND hash = ?",
                             [project.id, snapshot_hash])), None)
    return _row(row) if row else None


def _row(row: dict) -> dict:
    row = dict(row)
    row["sources"] = json.loads(row["sources"])
    row["class_counts"] = json.loads(row["class_counts"])
    row["include_auto"] = bool(row["include_auto"])
    return row


def list_snapshots(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Every training set of the project, newest first, with the model versions trained on it."""
    rows = [_row(r) for r in db.query(
        "SELECT * FROM training_sets WHERE project_id = ? ORDER BY version DESC", [project.id])]
    models: dict[int, list[int]] = {}
    for r in db.query("SELECT training_set_id, version FROM model_versions WHERE project_id = ? "
                      "AND training_set_id IS NOT NULL ORDER BY version", [project.id]):
        models.setdefault(r["training_set_id"], []).append(r["version"])
    for row in rows:
        row["model_versions"] = models.get(row["id"], [])
    return rows


def get_snapshot(db: sqlite_utils.Database, project: Project, version: int) -> dict:
    row = next(iter(db.query("SELECT * FROM training_sets WHERE project_id = ? AND version = ?",
                             [project.id, int(version)])), None)
    if row is None:
        known = ", ".join(f"{s['version']}" for s in list_snapshots(db, project)) or "none"
        raise GroundworkError(f"project {project.name!r} has no training set {version} "
                              f"(training sets: {known})")
    return _row(row)


def snapshot_items(db: sqlite_utils.Database, snapshot_id: int) -> pd.DataFrame:
    """The rows of a training set: item id and key, labels, source, holdout."""
    frame = pd.DataFrame(list(db.query(
        "SELECT s.item_id, i.key, s.labels, s.source, s.holdout FROM training_set_items s "
        "JOIN items i ON i.id = s.item_id WHERE s.training_set_id = ? ORDER BY s.item_id",
        [snapshot_id])), columns=["item_id", "key", "labels", "source", "holdout"])
    frame["labels"] = [json.loads(v) for v in frame["labels"]]
    frame["holdout"] = frame["holdout"].astype(bool)
    return frame


def diff_snapshots(db: sqlite_utils.Database, project: Project, old: int, new: int) -> dict:
    """Labels added, removed and changed between two training sets (by their versions)."""
    a = snapshot_items(db, get_snapshot(db, project, old)["id"]).set_index("item_id")
    b = snapshot_items(db, get_snapshot(db, project, new)["id"]).set_index("item_id")
    common = a.index.intersection(b.index)
    changed = [int(i) for i in common if sorted(a.at[i, "labels"]) != sorted(b.at[i, "labels"])]
    return {
        "old": int(old),
        "new": int(new),
        "added": int(len(b.index.difference(a.index))),
        "removed": int(len(a.index.difference(b.index))),
        "changed": len(changed),
        "changed_items": [
            {"id": i, "key": b.at[i, "key"], "old": a.at[i, "labels"], "new": b.at[i, "labels"],
             "source": b.at[i, "source"]}
            for i in changed[:100]
        ],
    }


def trained_items(db: sqlite_utils.Database, model_row: dict) -> set[int]:
    """Items a model version learned from (its snapshot's non-holdout rows); empty if unknown."""
    if not model_row.get("training_set_id"):
        return set()
    return {int(r[0]) for r in db.execute(
        "SELECT item_id FROM training_set_items WHERE training_set_id = ? AND holdout = 0",
        [model_row["training_set_id"]])}
