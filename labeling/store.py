"""The one module that owns Groundwork's SQLite schema.

Every table lives here, created and upgraded by numbered migrations, so that a
store written by any earlier version opens in this one. Other modules reach
the tables through sqlite-utils' table API inside domain functions; none of
them creates or alters a table.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

DB_FILENAME = "groundwork.db"
BUSY_TIMEOUT_MS = 10_000


def utcnow() -> str:
    """ISO-8601 UTC timestamps sort as text, which keeps time queries indexable."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_data_dir() -> Path:
    """`GROUNDWORK_DATA` wins so a team can keep the store outside the checkout."""
    return Path(os.environ.get("GROUNDWORK_DATA") or Path.cwd() / "data").resolve()


def _migration_1(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE projects (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            modality TEXT NOT NULL CHECK (modality IN ('image', 'text', 'tabular')),
            task TEXT NOT NULL CHECK (task IN ('single-label', 'multi-label')),
            classes TEXT NOT NULL,
            instructions TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL
        );
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            content TEXT,
            media_path TEXT,
            sha256 TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            gold TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (project_id, key)
        );
        CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            user TEXT NOT NULL,
            labels TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('human', 'auto', 'review', 'import')),
            created_at TEXT NOT NULL,
            duration_ms INTEGER,
            confidence REAL,
            model_version_id INTEGER,
            retracted_at TEXT
        );
        CREATE INDEX annotations_item ON annotations(item_id);
        CREATE INDEX annotations_project_user ON annotations(project_id, user, created_at);
        CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'candidate',
            estimator TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            metric_name TEXT NOT NULL,
            cv_score REAL,
            holdout_score REAL,
            holdout_size INTEGER NOT NULL DEFAULT 0,
            train_size INTEGER NOT NULL,
            metrics TEXT NOT NULL DEFAULT '{}',
            snapshot_hash TEXT NOT NULL,
            artifact_path TEXT NOT NULL,
            artifact_sha256 TEXT NOT NULL,
            classes TEXT NOT NULL,
            job_id INTEGER,
            UNIQUE (project_id, version)
        );
        CREATE TABLE predictions (
            model_version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            predicted TEXT NOT NULL,
            probabilities TEXT NOT NULL,
            confidence REAL NOT NULL,
            margin REAL NOT NULL,
            entropy REAL NOT NULL,
            PRIMARY KEY (model_version_id, item_id)
        );
        CREATE INDEX predictions_margin ON predictions(model_version_id, margin);
        CREATE INDEX predictions_entropy ON predictions(model_version_id, entropy);
        CREATE INDEX predictions_confidence ON predictions(model_version_id, confidence);
        CREATE TABLE review_tasks (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            model_version_id INTEGER REFERENCES model_versions(id),
            predicted TEXT NOT NULL,
            confidence REAL NOT NULL,
            rule TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'in progress', 'completed', 'expired')),
            created_at TEXT NOT NULL,
            completed_at TEXT,
            annotation_id INTEGER REFERENCES annotations(id)
        );
        CREATE INDEX review_tasks_status ON review_tasks(project_id, status, confidence);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            params TEXT NOT NULL DEFAULT '{}',
            progress TEXT NOT NULL DEFAULT '{}',
            result TEXT,
            error TEXT,
            pid INTEGER,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE INDEX jobs_project ON jobs(project_id, status);
        """
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Queue columns: a per-item random rank and a curated-label count.

    Both are kept up to date on write so that choosing the next item is an
    indexed lookup, never a scan or a model call.
    """
    db.executescript(
        """
        ALTER TABLE items ADD COLUMN rank REAL NOT NULL DEFAULT 0;
        ALTER TABLE items ADD COLUMN n_labels INTEGER NOT NULL DEFAULT 0;
        UPDATE items SET rank = (abs(random()) % 1000000000) / 1000000000.0;
        UPDATE items SET n_labels = (
            SELECT count(*) FROM annotations a
            WHERE a.item_id = items.id AND a.retracted_at IS NULL
              AND a.source IN ('human', 'review', 'import')
        );
        CREATE INDEX items_queue ON items(project_id, n_labels, rank);
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    """Automated labeling: machine-label counts and the validation split on each item.

    Items a model labeled leave the human queue (as in Ground Truth) until the
    auto-labels are reverted; the count is kept on write like `n_labels`.
    `holdout` marks the random validation items (`labeling.splits`) so the
    queue can serve them at random, keeping the validation labels a random
    sample of the data rather than whatever active learning picked.
    """
    from labeling.splits import in_holdout

    db.executescript(
        """
        ALTER TABLE items ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX items_validation ON items(project_id, holdout, n_labels, rank);
        ALTER TABLE items ADD COLUMN n_auto INTEGER NOT NULL DEFAULT 0;
        UPDATE items SET n_auto = (
            SELECT count(*) FROM annotations a
            WHERE a.item_id = items.id AND a.retracted_at IS NULL AND a.source = 'auto'
        );
        CREATE INDEX annotations_project_source ON annotations(project_id, source, retracted_at);
        """
    )
    held = [pk for pk, project_id, key in db.execute("SELECT id, project_id, key FROM items")
            if in_holdout(project_id, key)]
    for start in range(0, len(held), 500):
        chunk = held[start : start + 500]
        db.execute(f"UPDATE items SET holdout = 1 WHERE id IN ({','.join('?' * len(chunk))})",
                   chunk)


def _migration_4(db: sqlite_utils.Database) -> None:
    """Several annotators per item: how many answers a project wants for each item."""
    db.executescript(
        """
        ALTER TABLE projects ADD COLUMN annotations_per_item INTEGER NOT NULL DEFAULT 1
            CHECK (annotations_per_item BETWEEN 1 AND 5);
        CREATE INDEX annotations_item_user ON annotations(item_id, user);
        """
    )


def _migration_5(db: sqlite_utils.Database) -> None:
    """The live queue: a query strategy and refit interval per project, stored queue scores.

    A cheap model refit in the background every `refit_every` labels (and each
    promotion) writes a `priority` per open item, so the next item is the first
    row of an index. `learning_curve` keeps each refit's holdout accuracy against
    the number of labels: the savings dashboard draws it.
    """
    db.executescript(
        """
        ALTER TABLE projects ADD COLUMN strategy TEXT NOT NULL DEFAULT 'margin'
            CHECK (strategy IN ('uncertainty', 'margin', 'entropy', 'random', 'batch'));
        ALTER TABLE projects ADD COLUMN refit_every INTEGER NOT NULL DEFAULT 20
            CHECK (refit_every BETWEEN 0 AND 100000);
        CREATE TABLE queue_scores (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            priority REAL NOT NULL,
            predicted TEXT NOT NULL,
            confidence REAL NOT NULL,
            scorer TEXT NOT NULL,
            scored_at TEXT NOT NULL
        );
        CREATE INDEX queue_scores_priority ON queue_scores(project_id, priority);
        CREATE TABLE learning_curve (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            labels INTEGER NOT NULL,
            accuracy REAL,
            holdout_size INTEGER NOT NULL,
            strategy TEXT NOT NULL,
            model TEXT NOT NULL,
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX learning_curve_project ON learning_curve(project_id, id);
        """
    )


def _migration_6(db: sqlite_utils.Database) -> None:
    """Versioned training sets: the exact labels a model learned from, kept after they change.

    A snapshot is identified by the hash of its (item, labels, holdout) rows, so
    training twice on unchanged labels reuses one snapshot; every model version
    points to the snapshot it was trained on (lineage). When and by whom a
    version was last promoted makes "roll back" mean the one promoted before.
    """
    db.executescript(
        """
        CREATE TABLE training_sets (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            hash TEXT NOT NULL,
            size INTEGER NOT NULL,
            holdout_size INTEGER NOT NULL,
            include_auto INTEGER NOT NULL DEFAULT 0,
            sources TEXT NOT NULL DEFAULT '{}',
            class_counts TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            UNIQUE (project_id, version),
            UNIQUE (project_id, hash)
        );
        CREATE TABLE training_set_items (
            training_set_id INTEGER NOT NULL REFERENCES training_sets(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            labels TEXT NOT NULL,
            source TEXT NOT NULL,
            holdout INTEGER NOT NULL,
            PRIMARY KEY (training_set_id, item_id)
        ) WITHOUT ROWID;
        ALTER TABLE model_versions ADD COLUMN training_set_id INTEGER
            REFERENCES training_sets(id);
        ALTER TABLE model_versions ADD COLUMN promoted_at TEXT;
        ALTER TABLE model_versions ADD COLUMN promoted_by TEXT;
        UPDATE model_versions SET promoted_at = created_at WHERE status = 'promoted';
        """
    )


def _migration_submission_ids(db: sqlite_utils.Database) -> None:
    """Idempotent submit: a client-chosen id per answer, unique within a project.

    A double-clicked or re-sent answer carries the same id and is recorded
    once (`record_annotation(..., submission_id=...)` returns the first one).
    Statement by statement (not `executescript`, which commits first), so the
    column and its index land in the migration's one transaction.
    """
    db.execute("ALTER TABLE annotations ADD COLUMN submission_id TEXT")
    db.execute("CREATE UNIQUE INDEX annotations_submission ON annotations(project_id, "
               "submission_id) WHERE submission_id IS NOT NULL")


def _migration_review_workflows(db: sqlite_utils.Database) -> None:
    """Review workflows (A2I's flow definitions), human loops with their why, label checks.

    A workflow names what it watches (`pool`: the promoted model's predictions
    on unlabeled items; `labels`: the project's own labels, for error checks;
    `batch` is reserved for batch-prediction files), its activation
    conditions (JSON), reviewers per task and expiry. Each task keeps the
    prediction and probabilities it was opened with and the conditions that
    fired; `review_answers` holds every reviewer's answer to it, consolidated
    into one `review` annotation when the last wanted reviewer answers.
    `label_checks` keeps the latest out-of-fold scan of a project's labels.
    Statement by statement, so everything lands in the migration's transaction.
    """
    for sql in (
        """CREATE TABLE review_workflows (
            id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'pool' CHECK (source IN ('pool', 'labels', 'batch')),
            conditions TEXT NOT NULL,
            reviewers INTEGER NOT NULL DEFAULT 1 CHECK (reviewers BETWEEN 1 AND 3),
            expiry_hours REAL,
            instructions TEXT NOT NULL DEFAULT '',
            active INTEGER NOT NULL DEFAULT 0,
            last_model_version_id INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (project_id, name)
        )""",
        "ALTER TABLE review_tasks ADD COLUMN workflow_id INTEGER "
        "REFERENCES review_workflows(id) ON DELETE SET NULL",
        "ALTER TABLE review_tasks ADD COLUMN source TEXT NOT NULL DEFAULT 'pool'",
        "ALTER TABLE review_tasks ADD COLUMN probabilities TEXT",
        "ALTER TABLE review_tasks ADD COLUMN fired TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE review_tasks ADD COLUMN reviewers INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE review_tasks ADD COLUMN expires_at TEXT",
        "ALTER TABLE review_tasks ADD COLUMN given TEXT",
        "ALTER TABLE review_tasks ADD COLUMN given_by TEXT",
        "ALTER TABLE review_tasks ADD COLUMN issue_score REAL",
        "CREATE INDEX review_tasks_item ON review_tasks(item_id, status)",
        "CREATE INDEX review_tasks_workflow ON review_tasks(workflow_id, status)",
        """CREATE TABLE review_answers (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES review_tasks(id) ON DELETE CASCADE,
            user TEXT NOT NULL,
            labels TEXT NOT NULL,
            created_at TEXT NOT NULL,
            duration_ms INTEGER,
            retracted_at TEXT
        )""",
        "CREATE INDEX review_answers_task ON review_answers(task_id, user)",
        """CREATE TABLE label_checks (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            given TEXT NOT NULL,
            suggested TEXT NOT NULL,
            probabilities TEXT NOT NULL,
            quality REAL NOT NULL,
            issue INTEGER NOT NULL,
            rank INTEGER,
            checked_at TEXT NOT NULL
        )""",
        "CREATE INDEX label_checks_project ON label_checks(project_id, issue, rank)",
    ):
        db.execute(sql)


def _migration_users(db: sqlite_utils.Database) -> None:
    """Users and roles (`labeling.users`): accounts, project assignments, login sessions, audit.

    Sessions keep only the SHA-256 of the browser's token. The audit log keeps
    the project's name beside its id so an event stays readable after the
    project is gone. Statement by statement, in the migration's transaction.
    """
    for sql in (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            role TEXT NOT NULL CHECK (role IN ('admin', 'annotator', 'reviewer')),
            email TEXT COLLATE NOCASE,
            password_hash TEXT,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT,
            created_at TEXT NOT NULL,
            last_login_at TEXT
        )""",
        "CREATE UNIQUE INDEX users_email ON users(email) WHERE email IS NOT NULL",
        """CREATE TABLE user_projects (
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            assigned_at TEXT NOT NULL,
            assigned_by TEXT,
            PRIMARY KEY (user_id, project_id)
        )""",
        "CREATE INDEX user_projects_project ON user_projects(project_id)",
        """CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            method TEXT NOT NULL DEFAULT 'password',
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        "CREATE INDEX sessions_user ON sessions(user_id)",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,
            project_id INTEGER,
            project TEXT,
            target TEXT,
            details TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_log_at ON audit_log(at)",
        "CREATE INDEX audit_log_project ON audit_log(project_id, at)",
        "CREATE INDEX audit_log_user ON audit_log(user, at)",
    ):
        db.execute(sql)


def _migration_leases(db: sqlite_utils.Database) -> None:
    """Queue leases (`labeling.leases`): which item is being shown to whom, until when.

    While a lease is live the queue keeps the item from other people (up to the
    answers the project still wants for it), so two annotators are not served
    the same item. A lease is short, renewed when its holder asks again, freed
    by an answer, a skip or expiry, and never the only record of anything: an
    expired or lost lease just makes the item available again. One row per
    (item, person); `reason` keeps why the queue chose the item. Statement by
    statement, in the migration's transaction.
    """
    for sql in (
        """CREATE TABLE leases (
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            user TEXT NOT NULL,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            reason TEXT NOT NULL DEFAULT 'random',
            leased_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (item_id, user)
        )""",
        "CREATE INDEX leases_project ON leases(project_id, expires_at)",
        "CREATE INDEX leases_user ON leases(project_id, user, leased_at)",
    ):
        db.execute(sql)


_TASK_CHECK_OLD = "CHECK (task IN ('single-label', 'multi-label'))"
_TASK_CHECK_NEW = "CHECK (task IN ('single-label', 'multi-label', 'regression'))"


def _migration_regression(db: sqlite_utils.Database) -> None:
    """Regression projects: `projects.task` may be 'regression' (numbers, not classes).

    SQLite cannot alter a CHECK constraint, and rebuilding `projects` would
    cascade-delete every item through the foreign keys. Widening a CHECK does
    not touch stored rows, which is the case SQLite's documentation allows
    editing the schema text for (ALTER TABLE, "making other kinds of table
    schema changes"); the integrity check afterwards proves the file sound.
    """
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'projects'"
                     ).fetchone()
    if row is None or _TASK_CHECK_OLD not in row[0]:
        return
    version = db.execute("PRAGMA schema_version").fetchone()[0]
    db.execute("PRAGMA writable_schema = ON")
    try:
        db.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' "
                   "AND name = 'projects'", [_TASK_CHECK_OLD, _TASK_CHECK_NEW])
        db.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        db.execute("PRAGMA writable_schema = OFF")
    problems = db.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        raise RuntimeError(f"the store failed its check after the regression migration: "
                           f"{problems[:3]}")


_CLAIM_PREFIX = "review-claim:"


def _migration_review_claims(db: sqlite_utils.Database) -> None:
    """Review task claims (`review.tasks`): which task is on whose screen, until when.

    A claim keeps other reviewers off a task the way a lease keeps other
    annotators off an item: one row per (task, reviewer), renewed while the
    task is on screen, freed by an answer, a skip or expiry. Until this table
    existed, claims were rows of `settings` keyed
    `review-claim:<project>:<task>:<user>` holding when the claim ends; those
    rows move here (a claim on a task that is gone is dropped, as the foreign
    key would drop it), so a claim taken just before the upgrade still holds
    after it. The foreign key cascades a deleted task's claims away, and the
    indexes make the per-project scan `claim_tasks` does in its write
    transaction, and a reviewer's own claims, index lookups. Statement by
    statement, in the migration's transaction.
    """
    for sql in (
        """CREATE TABLE review_claims (
            task_id INTEGER NOT NULL REFERENCES review_tasks(id) ON DELETE CASCADE,
            user TEXT NOT NULL,
            project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
            expires_at TEXT NOT NULL,
            PRIMARY KEY (task_id, user)
        )""",
        "CREATE INDEX review_claims_project ON review_claims(project_id, expires_at)",
        "CREATE INDEX review_claims_user ON review_claims(project_id, user, expires_at)",
    ):
        db.execute(sql)
    # Keys sort as text: everything from "review-claim:" up to "review-claim;" has the prefix.
    span = [_CLAIM_PREFIX, _CLAIM_PREFIX[:-1] + ";"]
    rows = db.execute("SELECT key, value FROM settings WHERE key >= ? AND key < ?",
                      span).fetchall()
    moved = []
    for key, until in rows:
        parts = key.split(":", 3)
        if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit() and parts[3]:
            moved.append((int(parts[2]), parts[3], int(parts[1]), until))
    db.conn.executemany(
        "INSERT INTO review_claims (task_id, user, project_id, expires_at) "
        "SELECT t.id, ?2, t.project_id, ?4 FROM review_tasks t WHERE t.id = ?1 "
        "AND t.project_id = ?3 ON CONFLICT (task_id, user) DO UPDATE "
        "SET expires_at = max(expires_at, excluded.expires_at)", moved)
    db.execute("DELETE FROM settings WHERE key >= ? AND key < ?", span)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_submission_ids,
    _migration_review_workflows,
    _migration_users,
    _migration_leases,
    _migration_regression,
    _migration_review_claims,
]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION) -> int:
    """Apply each missing migration in its own transaction, recording it as it lands."""
    if "schema_version" not in db.table_names():
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"this store has schema version {current}, newer than this Groundwork "
            f"({SCHEMA_VERSION}); upgrade Groundwork before opening it"
        )
    for number in range(current + 1, target + 1):
        with db.atomic():
            MIGRATIONS[number - 1](db)
            db["schema_version"].insert({"version": number, "applied_at": utcnow()})
    return schema_version(db)


def connect(
    data_dir: str | Path | None = None, *, migrate_to: int = SCHEMA_VERSION
) -> sqlite_utils.Database:
    """Open (and create or upgrade) the store under `data_dir`.

    WAL lets the page read while a training process writes; the busy timeout
    makes concurrent writers wait instead of failing with "database is locked".
    """
    root = Path(data_dir).resolve() if data_dir else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        root / DB_FILENAME, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
    )
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # 32 MB of page cache (SQLite's default is 2 MB): the queue's next item skips the
    # items answered since the last refit, whose rows then stay cached from call to call.
    db.execute("PRAGMA cache_size=-32768")
    migrate(db, migrate_to)
    db.data_dir = root  # type: ignore[attr-defined]
    return db


def data_dir_of(db: sqlite_utils.Database) -> Path:
    return db.data_dir  # type: ignore[attr-defined,no-any-return]


def get_setting(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_setting(db: sqlite_utils.Database, key: str, value: str) -> None:
    with db.atomic():
        db["settings"].upsert({"key": key, "value": value}, pk="key")
