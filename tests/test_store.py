"""The store: pragmas, migrations, and upgrading a file written by an older schema."""

from __future__ import annotations

import json
import sqlite3

import pytest

from labeling.store import SCHEMA_VERSION, connect, schema_version


def test_new_store_is_wal_with_foreign_keys_and_current_schema(data_dir):
    db = connect(data_dir)
    assert (data_dir / "groundwork.db").exists()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert schema_version(db) == SCHEMA_VERSION
    for table in ("projects", "items", "annotations", "model_versions", "predictions",
                  "review_tasks", "review_claims", "jobs", "settings"):
        assert table in db.table_names()


def test_upgrading_a_version_1_file_keeps_its_data_and_fills_new_columns(data_dir):
    old = connect(data_dir, migrate_to=1)
    assert schema_version(old) == 1
    assert "rank" not in old["items"].columns_dict
    old["projects"].insert({"id": 1, "name": "p", "modality": "text", "task": "single-label",
                            "classes": json.dumps(["a", "b"]), "created_at": "2026-01-01"})
    old["items"].insert_all(
        [{"id": i, "project_id": 1, "key": str(i), "content": f"text {i}", "sha256": "x",
          "created_at": "2026-01-01"} for i in range(1, 4)]
    )
    old["annotations"].insert_all([
        {"project_id": 1, "item_id": 1, "user": "u", "labels": '["a"]', "source": "human",
         "created_at": "2026-01-01"},
        {"project_id": 1, "item_id": 2, "user": "u", "labels": '["b"]', "source": "auto",
         "created_at": "2026-01-01"},
    ])
    old.conn.commit()
    old.conn.close()

    db = connect(data_dir)
    assert schema_version(db) == SCHEMA_VERSION
    rows = {r["id"]: r for r in db.query("SELECT id, content, rank, n_labels, n_auto FROM items")}
    assert [rows[i]["content"] for i in (1, 2, 3)] == ["text 1", "text 2", "text 3"]
    assert rows[1]["n_labels"] == 1  # human answer counts
    assert rows[2]["n_labels"] == 0  # auto-labels are not curated
    assert [rows[i]["n_auto"] for i in (1, 2, 3)] == [0, 1, 0]  # ...but are counted (v3)
    assert len({r["rank"] for r in rows.values()}) == 3  # every item got its own queue rank
    assert db["annotations"].count == 2


def test_a_store_from_a_newer_groundwork_is_refused(data_dir):
    db = connect(data_dir)
    db["schema_version"].insert({"version": SCHEMA_VERSION + 1, "applied_at": "later"})
    db.conn.commit()
    db.conn.close()
    with pytest.raises(RuntimeError, match="newer than this Groundwork"):
        connect(data_dir)


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sqlite3.IntegrityError):
        with db.atomic():
            db["items"].insert({"project_id": 999, "key": "k", "sha256": "s",
                                "created_at": "now"})
