"""Every earlier schema version opens in this one with its data intact and usable.

For each version k below the current one: a store is created at version k
(`connect(..., migrate_to=k)`), filled with the rows a Groundwork of that
version would have written (projects, items, human, machine, review and
import answers, a retracted one, a model version with predictions, review
tasks, jobs, queue scores, training sets...), then opened with today's code.
The rows are written only to the tables and columns that exist at version k,
so a migration appended later is covered without touching this file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from automl.registry import list_models, promoted_model
from labeling.annotations import current_labels, record_annotation, retract_annotation
from labeling.errors import GroundworkError
from labeling.leases import lease_next_items, live_leases, release_lease
from labeling.projects import get_project, project_counts
from labeling.queue import next_items
from labeling.splits import in_holdout
from labeling.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    _migration_leases,
    _migration_review_claims,
    connect,
    schema_version,
)
from review.tasks import answer_task, claim_tasks, live_claims, next_tasks

T0 = "2026-01-05T09:00:00.000Z"
LATER = "2999-01-01T00:00:00.000Z"
CLAIM = "review-claim:"
CURATED = ("human", "review", "import")


def _rows() -> dict[str, list[dict]]:
    """What a store in use holds, with every column any version has (extra ones are dropped)."""
    projects = [
        {"id": 1, "name": "mail", "modality": "text", "task": "single-label",
         "classes": json.dumps(["ham", "spam"]), "instructions": "Spam is *unsolicited*.",
         "created_at": T0, "annotations_per_item": 1, "strategy": "margin", "refit_every": 20},
        {"id": 2, "name": "topics", "modality": "text", "task": "multi-label",
         "classes": json.dumps(["sport", "money", "tech"]), "instructions": "",
         "created_at": T0, "annotations_per_item": 2, "strategy": "entropy", "refit_every": 0},
    ]
    items = []
    for pid, count in ((1, 30), (2, 8)):
        for n in range(count):
            key = f"{pid}-{n}"
            items.append({
                "id": len(items) + 1, "project_id": pid, "key": key,
                "content": f"message {n} of project {pid}: win money now" if n % 3 else
                f"message {n}: lunch at noon?", "media_path": None, "sha256": f"{pid:02d}{n:062d}",
                "metadata": json.dumps({"source": "inbox.csv", "row": n}),
                "gold": json.dumps(["spam" if n % 3 else "ham"]) if pid == 1 else None,
                "created_at": T0, "rank": (n * 7919 % 101) / 101, "n_labels": 0, "n_auto": 0,
                "holdout": int(in_holdout(pid, key)),
            })
    a = []

    def answer(item_id, labels, user, source, **extra):
        a.append({"id": len(a) + 1, "project_id": 1 if item_id <= 30 else 2, "item_id": item_id,
                  "user": user, "labels": json.dumps(labels), "source": source,
                  "created_at": f"2026-01-05T10:{len(a):02d}:00.000Z", "duration_ms": 1200,
                  "confidence": extra.get("confidence"),
                  "model_version_id": extra.get("model_version_id"),
                  "retracted_at": extra.get("retracted_at")})

    for item_id in range(1, 11):
        answer(item_id, ["spam" if item_id % 3 else "ham"], "ann", "human")
    answer(11, ["ham"], "ann", "human", retracted_at="2026-01-05T11:00:00.000Z")  # undone
    answer(12, ["spam"], "model", "auto", confidence=0.97, model_version_id=1)
    answer(13, ["ham"], "import", "import")
    answer(14, ["spam"], "rev", "review", model_version_id=1)
    answer(31, ["sport", "money"], "ann", "human")
    answer(31, ["sport"], "bob", "human")
    answer(32, ["tech"], "ann", "human")
    for row in a:
        item = items[row["item_id"] - 1]
        if row["retracted_at"] is None:
            item["n_labels"] += row["source"] in CURATED
            item["n_auto"] += row["source"] == "auto"
    predictions = [
        {"model_version_id": 1, "item_id": i, "predicted": json.dumps(["spam"]),
         "probabilities": json.dumps({"ham": 0.4, "spam": 0.6}), "confidence": 0.6 + i / 100,
         "margin": 0.2 + i / 50, "entropy": 0.9 - i / 100}
        for i in range(12, 31)
    ]
    return {
        "projects": projects,
        "items": items,
        "annotations": a,
        "training_sets": [{"id": 1, "project_id": 1, "version": 1, "hash": "ab" * 32,
                           "size": 11, "holdout_size": 2, "include_auto": 0,
                           "sources": json.dumps({"human": 10, "import": 1}),
                           "class_counts": json.dumps({"ham": 4, "spam": 7}),
                           "created_at": T0}],
        "training_set_items": [{"training_set_id": 1, "item_id": i,
                                "labels": json.dumps(["spam" if i % 3 else "ham"]),
                                "source": "human", "holdout": int(in_holdout(1, f"1-{i - 1}"))}
                               for i in range(1, 11)],
        "model_versions": [{
            "id": 1, "project_id": 1, "version": 1, "created_at": T0, "status": "promoted",
            "estimator": "logistic_regression", "params": json.dumps({"model": "logreg",
                                                                     "C": 1.0}),
            "metric_name": "balanced_accuracy", "cv_score": 0.91, "holdout_score": 0.9,
            "holdout_size": 2, "train_size": 9, "metrics": json.dumps({"trials": 12}),
            "snapshot_hash": "ab" * 32, "artifact_path": "models/1/v1.joblib",
            "artifact_sha256": "cd" * 32, "classes": json.dumps(["ham", "spam"]), "job_id": 1,
            "training_set_id": 1, "promoted_at": T0, "promoted_by": "ann"}],
        "predictions": predictions,
        "review_tasks": [
            {"id": 1, "project_id": 1, "item_id": 14, "model_version_id": 1,
             "predicted": json.dumps(["ham"]), "confidence": 0.55,
             "rule": json.dumps({"below": 0.7}), "status": "completed", "created_at": T0,
             "completed_at": T0, "annotation_id": 14},
            {"id": 2, "project_id": 1, "item_id": 20, "model_version_id": 1,
             "predicted": json.dumps(["spam"]), "confidence": 0.6,
             "rule": json.dumps({"below": 0.7}), "status": "open", "created_at": T0},
        ],
        "jobs": [{"id": 1, "project_id": 1, "kind": "train", "status": "succeeded",
                  "params": json.dumps({"budget": 30}), "progress": json.dumps({"trials": 12}),
                  "result": json.dumps({"model_version": 1}), "pid": 4242, "created_at": T0,
                  "started_at": T0, "finished_at": T0}],
        "settings": [{"key": "coldstart:1", "value": "done"}, {"key": "demo_seeded", "value": "1"},
                     # Review claims as settings rows (before their table): rev holds open
                     # task 2, old's claim on task 1 ended, task 99 is gone.
                     {"key": "review-claim:1:2:rev", "value": LATER},
                     {"key": "review-claim:1:1:old", "value": T0},
                     {"key": "review-claim:1:99:ghost", "value": LATER}],
        "queue_scores": [{"item_id": i, "project_id": 1, "priority": 30 - i,
                          "predicted": json.dumps(["spam"]), "confidence": 0.6,
                          "scorer": "quick:20", "scored_at": T0} for i in range(15, 31)],
        "learning_curve": [{"id": 1, "project_id": 1, "labels": 10, "accuracy": 0.8,
                            "holdout_size": 2, "strategy": "margin", "model": "logreg",
                            "seconds": 0.4, "created_at": T0}],
    }


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def _build(data_dir: Path, version: int) -> dict[str, list[dict]]:
    """A store at `version` holding the rows that version can hold; returns what was written."""
    db = connect(data_dir, migrate_to=version)
    assert schema_version(db) == version
    written: dict[str, list[dict]] = {}
    with db.atomic():
        for table, rows in _rows().items():
            if table not in db.table_names():
                continue
            columns = set(_columns(db.conn, table))
            kept = [{k: v for k, v in row.items() if k in columns} for row in rows]
            db[table].insert_all(kept)
            written[table] = kept
    db.conn.close()
    return written


def _key(table: str, row: dict) -> tuple[str, list]:
    if table == "settings":
        return "key = ?", [row["key"]]
    if table == "queue_scores":
        return "item_id = ?", [row["item_id"]]
    if table == "predictions":
        return "model_version_id = ? AND item_id = ?", [row["model_version_id"], row["item_id"]]
    if table == "training_set_items":
        return "training_set_id = ? AND item_id = ?", [row["training_set_id"], row["item_id"]]
    return "id = ?", [row["id"]]


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_a_store_of_every_earlier_version_opens_intact_and_usable(version, tmp_path):
    data_dir = tmp_path / f"v{version}"
    written = _build(data_dir, version)
    db = connect(data_dir)
    assert schema_version(db) == SCHEMA_VERSION
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []

    # Every value written at version k reads back unchanged, but the review claims kept in
    # settings, which moved to their own table (below).
    claims = [r for r in written.get("settings", []) if r["key"].startswith(CLAIM)]
    if claims:
        written["settings"] = [r for r in written["settings"] if r not in claims]
    for table, rows in written.items():
        assert db[table].count == len(rows), table
        for row in rows:
            where, args = _key(table, row)
            got = db.execute(f'SELECT {", ".join(row)} FROM "{table}" WHERE {where}',
                             args).fetchone()
            assert got == tuple(row.values()), (table, row)

    # The counters the queue reads are right, whatever version filled them.
    for item_id, n_labels, n_auto in db.execute("SELECT id, n_labels, n_auto FROM items"):
        live = [r for r in written["annotations"] if r["item_id"] == item_id
                and r.get("retracted_at") is None]
        assert n_labels == sum(r["source"] in CURATED for r in live), item_id
        assert n_auto == sum(r["source"] == "auto" for r in live), item_id

    mail, topics = get_project(db, "mail"), get_project(db, "topics")
    labels = current_labels(db, mail, curated_only=True)
    assert set(labels["item_id"]) == {*range(1, 11), 13, 14}  # the undone answer is gone
    assert current_labels(db, mail, curated_only=False)["item_id"].tolist().count(12) == 1
    assert promoted_model(db, mail)["version"] == 1  # the model trained then still drives
    assert [m["version"] for m in list_models(db, mail)] == [1]

    # Label, undo and review as today's pages and CLI do.
    served = [i["id"] for i in next_items(db, mail, n=40)]
    assert 11 in served  # its answer was undone
    assert not {*range(1, 11), 12, 13, 14} & set(served)  # nothing answered is served again
    answer = record_annotation(db, mail, served[0], "ham", user="carol", duration_ms=700,
                               submission_id="carol-1")
    assert record_annotation(db, mail, served[0], "ham", user="carol",
                             submission_id="carol-1") == answer
    assert db["items"].get(served[0])["n_labels"] == 1
    assert project_counts(db, mail)["labeled"] == 13
    retract_annotation(db, mail, answer)
    assert served[0] in [i["id"] for i in next_items(db, mail, n=40)]
    open_tasks = next_tasks(db, mail, n=5)
    assert [t["id"] for t in open_tasks] == [2]
    # Review claims: those in settings moved (the one on a gone task dropped) and still hold.
    assert db.execute("SELECT count(*) FROM settings WHERE key LIKE 'review-claim:%'"
                      ).fetchone()[0] == 0
    if claims:
        assert live_claims(db, mail) == {2: {"rev": LATER}}
        assert claim_tasks(db, mail, "bob") == []  # rev's claim keeps bob off task 2
        with pytest.raises(GroundworkError, match="being reviewed by rev"):
            answer_task(db, mail, 2, "spam", user="bob")
    else:
        assert live_claims(db, mail) == {}
        assert [t["id"] for t in claim_tasks(db, mail, "rev")] == [2]
    answer_task(db, mail, 2, "spam", user="rev")
    assert db["review_claims"].count == 0  # the answer freed rev's claim
    assert 20 in set(current_labels(db, mail, curated_only=True)["item_id"])

    # The multi-label project wanting two answers per item (from v4 on) still consolidates.
    record_annotation(db, topics, 33, ["money", "tech"], user="ann")
    assert len(current_labels(db, topics, curated_only=True)) >= 1

    # Several annotators at once (queue leases): an upgraded store serves disjoint items.
    assert db["leases"].count == 0
    ann = [i["id"] for i in lease_next_items(db, mail, n=3, user="ann")]
    bob = [i["id"] for i in lease_next_items(db, mail, n=3, user="bob")]
    assert len(set(ann)) == 3 and len(set(bob)) == 3 and not set(ann) & set(bob)
    assert not set(ann + bob) & {*range(1, 11), 12, 13, 14}  # nothing answered is leased
    assert [i["id"] for i in lease_next_items(db, mail, n=1, user="ann")] == ann[:1]
    release_lease(db, mail, ann[0], "ann")
    assert {lease["user"] for lease in live_leases(db, mail)} == {"ann", "bob"}
    # topics wants two answers: ann answered item 31, so she is not handed it again.
    assert 31 not in {i["id"] for i in lease_next_items(db, topics, n=10, user="ann")}
    db.conn.close()


def test_the_leases_migration_adds_its_table_and_indexes_in_one_step(tmp_path):
    data_dir = tmp_path / "store"
    before = MIGRATIONS.index(_migration_leases)  # the version just before leases
    db = connect(data_dir, migrate_to=before)
    assert "leases" not in db.table_names()
    db.conn.close()
    db = connect(data_dir, migrate_to=before + 1)
    assert "leases" in db.table_names()
    db.conn.close()
    db = connect(data_dir)
    assert {"leases_project", "leases_user"} <= {
        r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                 "AND tbl_name = 'leases'")}
    assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    db.conn.close()



def test_the_review_claims_migration_moves_claims_out_of_settings(tmp_path):
    """Claims kept as `settings` rows before their table land in `review_claims`, keyed by
    task and reviewer with a foreign key to the task; malformed keys and claims on tasks
    that are gone are dropped, other settings stay."""
    data_dir = tmp_path / "store"
    before = MIGRATIONS.index(_migration_review_claims)
    written = _build(data_dir, before)
    db = connect(data_dir, migrate_to=before)
    db["settings"].insert_all([{"key": "review-claim:1:2:ann:with:colons", "value": LATER},
                               {"key": "review-claim:x:2:bad", "value": LATER},
                               {"key": "review-claim:2:2:wrong-project", "value": LATER}])
    db.conn.close()
    db = connect(data_dir, migrate_to=before + 1)
    rows = db.execute("SELECT task_id, user, project_id, expires_at FROM review_claims "
                      "ORDER BY task_id, user").fetchall()
    assert rows == [(1, "old", 1, T0), (2, "ann:with:colons", 1, LATER), (2, "rev", 1, LATER)]
    assert sorted(r[0] for r in db.execute("SELECT key FROM settings")) == sorted(
        r["key"] for r in written["settings"] if not r["key"].startswith(CLAIM))
    assert {"review_claims_project", "review_claims_user"} <= {
        r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                 "AND tbl_name = 'review_claims'")}
    parents = {(r[2], r[3], r[4], r[6]) for r in db.execute(
        "PRAGMA foreign_key_list(review_claims)")}
    assert parents == {("review_tasks", "task_id", "id", "CASCADE"),
                       ("projects", "project_id", "id", "CASCADE")}
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.execute("DELETE FROM review_tasks WHERE id = 1")  # a task's claims go with it
    assert [r[0] for r in db.execute("SELECT DISTINCT task_id FROM review_claims")] == [2]
    db.conn.close()
