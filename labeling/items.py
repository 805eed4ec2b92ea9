"""Items: the things a person labels, one row each, keyed by where they came from."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.splits import in_holdout
from labeling.store import data_dir_of, utcnow


@dataclass(frozen=True)
class Item:
    id: int
    project_id: int
    key: str
    content: str | None
    media_path: str | None
    sha256: str
    metadata: dict
    gold: list[str] | None
    n_labels: int

    def row(self) -> dict:
        """A tabular item's fields (its content is a JSON object)."""
        return json.loads(self.content or "{}")


def _from_row(row: dict) -> Item:
    return Item(
        id=row["id"],
        project_id=row["project_id"],
        key=row["key"],
        content=row["content"],
        media_path=row["media_path"],
        sha256=row["sha256"],
        metadata=json.loads(row["metadata"] or "{}"),
        gold=json.loads(row["gold"]) if row["gold"] else None,
        n_labels=row["n_labels"],
    )


def add_items(db: sqlite_utils.Database, project: Project, records: Iterable[dict]) -> int:
    """Insert new items in one batch; call inside the importer's transaction.

    Each record has `key`, `sha256`, optionally `content`, `media_path`,
    `metadata` (dict) and `gold` (list of labels). Items get a random queue
    rank so the cold-start queue is an indexed lookup.
    """
    now = utcnow()
    rows = [
        {
            "project_id": project.id,
            "key": str(r["key"]),
            "content": r.get("content"),
            "media_path": r.get("media_path"),
            "sha256": r["sha256"],
            "metadata": json.dumps(r.get("metadata") or {}),
            "gold": json.dumps(r["gold"]) if r.get("gold") else None,
            "created_at": now,
            "rank": random.random(),
            "n_labels": 0,
            "holdout": int(in_holdout(project.id, str(r["key"]))),
        }
        for r in records
    ]
    db["items"].insert_all(rows, batch_size=1000)
    return len(rows)


def existing_keys(db: sqlite_utils.Database, project: Project) -> set[str]:
    return {r[0] for r in db.execute("SELECT key FROM items WHERE project_id = ?", [project.id])}


def item_ids_by_key(db: sqlite_utils.Database, project: Project, keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for key, pk in db.execute(
            f"SELECT key, id FROM items WHERE project_id = ? AND key IN ({marks})",
            [project.id, *chunk],
        ):
            out[key] = pk
    return out


def get_item(db: sqlite_utils.Database, project: Project, item_id: int) -> Item:
    row = next(
        iter(
            db.query(
                "SELECT * FROM items WHERE id = ? AND project_id = ?", [int(item_id), project.id]
            )
        ),
        None,
    )
    if row is None:
        raise GroundworkError(
            f"no item {item_id} in project {project.name!r}: use `groundwork next` to get ids"
        )
    return _from_row(row)


def get_items(db: sqlite_utils.Database, project: Project, item_ids: list[int]) -> list[Item]:
    by_id: dict[int, Item] = {}
    for start in range(0, len(item_ids), 500):
        chunk = item_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.query(
            f"SELECT * FROM items WHERE project_id = ? AND id IN ({marks})", [project.id, *chunk]
        ):
            by_id[row["id"]] = _from_row(row)
    return [by_id[i] for i in item_ids if i in by_id]


def iter_items(db: sqlite_utils.Database, project: Project) -> Iterable[Item]:
    for row in db.query("SELECT * FROM items WHERE project_id = ? ORDER BY id", [project.id]):
        yield _from_row(row)


def media_file(db: sqlite_utils.Database, item: Item) -> Path:
    if not item.media_path:
        raise GroundworkError(f"item {item.key!r} has no media file")
    return data_dir_of(db) / item.media_path
