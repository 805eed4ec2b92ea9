"""Queue leases: several annotators at once on one project, never served the same item twice.

`lease_next_items` is what the Label page and `groundwork next` call. In one
write transaction (`BEGIN IMMEDIATE`, so concurrent processes take turns
instead of both reading the same free item) it:

1. drops leases that expired, and leases on items that need no more answers
   (or whose holder has answered them): a lease is ignored once the item has
   enough answers, and cleaned up here, lazily;
2. hands back the caller's own live leases first (a reload shows the same item);
3. asks `labeling.queue.next_items` for the rest, leaving out items held by
   other people's live leases: an item may be leased to at most
   (answers wanted - answers so far) different people at once, so with one
   answer wanted, one person;
4. leases what it hands out to the caller for `seconds` (default 5 minutes).

An answer (`release_lease` after `record_annotation`), a skip (`release_lease`)
and expiry free an item. Nothing is dropped for good: when every open item is
leased by others the caller gets nothing now (`leased_by_others` says how
many are held) and the items come back when their leases end.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import sqlite_utils

from labeling.errors import GroundworkError
from labeling.projects import Project
from labeling.queue import next_items

DEFAULT_LEASE_SECONDS = 300.0
MAX_LEASE_SECONDS = 86_400.0


def _iso(moment: datetime) -> str:
    """The store's timestamp format (`labeling.store.utcnow`), so times compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_seconds(seconds: float) -> float:
    """A lease lasts more than 0 seconds and at most a day."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise GroundworkError(f"lease length {seconds!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_LEASE_SECONDS:
        raise GroundworkError(
            f"a lease lasts more than 0 and at most {MAX_LEASE_SECONDS:.0f} seconds (a day): "
            f"got {seconds}")
    return value


def check_user(db: sqlite_utils.Database, user: str | None) -> str:
    """Leases are per person: a name is required, and with accounts it must be an account's."""
    name = (user or "").strip() if isinstance(user, str) or user is None else None
    if name is None:
        raise GroundworkError(f"user {user!r} is not a name: pass --user NAME")
    if not name:
        raise GroundworkError("no user given: items are leased to a person (pass --user NAME)")
    if len(name) > 200:
        raise GroundworkError("user name is longer than 200 characters: use a shorter one")
    if db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None:
        row = db.execute("SELECT name FROM users WHERE name = ?", [name]).fetchone()
        if row is None:
            raise GroundworkError(
                f"unknown user {name!r}: this store has accounts and none has that name "
                "(`groundwork users list`)")
        name = row[0]  # as the account spells it
    return name


def _check_n(n: int) -> int:
    try:
        value = operator.index(n) if not isinstance(n, bool) else -1
    except TypeError:
        value = -1
    if value < 0:
        raise GroundworkError(f"n must be a whole number of items, 0 or more: got {n!r}")
    return value


def default_lease_seconds() -> float:
    """How long a served item stays leased: `GROUNDWORK_LEASE_SECONDS`, else 5 minutes."""
    return check_seconds(os.environ.get("GROUNDWORK_LEASE_SECONDS") or DEFAULT_LEASE_SECONDS)


@contextlib.contextmanager
def _write_transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """`BEGIN IMMEDIATE`: the write lock is taken before anything is read.

    sqlite-utils' `db.atomic()` opens a deferred transaction; reading the free
    items there and writing the lease afterwards would let two processes read
    the same free item (and, under WAL, fail the later write with "database is
    locked"). Waiting for the lock up front (the busy timeout) serialises them.
    """
    conn = db.conn
    if conn.in_transaction:
        raise RuntimeError("leases take their own write transaction: call this outside "
                           "db.atomic() or any open transaction")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def _clean(db: sqlite_utils.Database, project: Project, now: str) -> None:
    """Drop expired leases, leases on items that need no more answers, and leases whose
    holder has answered the item (the lease did its job). Few rows: the project's leases."""
    db.execute(
        """
        DELETE FROM leases WHERE project_id = ? AND (
            expires_at <= ?
            OR EXISTS (SELECT 1 FROM items i WHERE i.id = leases.item_id
                       AND (i.n_labels >= ? OR i.n_auto > 0))
            OR EXISTS (SELECT 1 FROM annotations a WHERE a.item_id = leases.item_id
                       AND a.user = leases.user AND a.retracted_at IS NULL
                       AND a.source IN ('human', 'review')))
        """,
        [project.id, now, project.annotations_per_item],
    )


def _blocked(db: sqlite_utils.Database, project: Project, user: str) -> list[int]:
    """Items other people's live leases fill: as many holders as answers still wanted."""
    return [row[0] for row in db.execute(
        """
        SELECT l.item_id, count(*) AS holders, max(i.n_labels) AS answered
        FROM leases l JOIN items i ON i.id = l.item_id
        WHERE l.project_id = ? AND l.user != ?
        GROUP BY l.item_id HAVING holders >= ? - answered
        """,
        [project.id, user, project.annotations_per_item],
    )]


def lease_next_items(
    db: sqlite_utils.Database,
    project: Project,
    n: int = 1,
    user: str | None = None,
    seconds: float = DEFAULT_LEASE_SECONDS,
    strategy: str | None = None,
    exclude: Sequence[int] = (),
) -> list[dict]:
    """Up to `n` items for `user`, each leased to them for `seconds`.

    `[{"id", "key", "reason", "leased_until"}]`: the user's own live leases
    first (oldest first, renewed), then what `next_items` offers among the
    items nobody else holds (`strategy` and `exclude` as there). Empty when
    nothing is open for the user, or every open item is leased by others
    (`leased_by_others` tells the two apart).
    """
    n = _check_n(n)
    seconds = check_seconds(seconds)
    user = check_user(db, user)
    skip = {int(i) for i in exclude}
    out: list[dict] = []
    with _write_transaction(db):
        moment = datetime.now(UTC)
        now, until = _iso(moment), _iso(moment + timedelta(seconds=seconds))
        _clean(db, project, now)
        if not n:
            return out
        for item_id, key, reason in db.execute(
            "SELECT l.item_id, i.key, l.reason FROM leases l JOIN items i ON i.id = l.item_id "
            "WHERE l.project_id = ? AND l.user = ? ORDER BY l.leased_at, l.rowid",
            [project.id, user],
        ).fetchall():
            if item_id not in skip and len(out) < n:
                out.append({"id": item_id, "key": key, "reason": reason})
        if out:
            marks = ",".join("?" * len(out))
            db.execute(f"UPDATE leases SET expires_at = ? WHERE project_id = ? AND user = ? "
                       f"AND item_id IN ({marks})", [until, project.id, user,
                                                    *(r["id"] for r in out)])
        if len(out) < n:
            taken = [*skip, *(r["id"] for r in out), *_blocked(db, project, user)]
            fresh = next_items(db, project, n=n - len(out), strategy=strategy,
                               exclude=taken, user=user)
            db.conn.executemany(
                "INSERT OR REPLACE INTO leases (item_id, user, project_id, reason, leased_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(r["id"], user, project.id, r["reason"], now, until) for r in fresh])
            out += fresh
    return [{**r, "leased_until": until} for r in out]


def lease_item(
    db: sqlite_utils.Database,
    project: Project,
    item_id: int,
    user: str,
    seconds: float = DEFAULT_LEASE_SECONDS,
    reason: str = "undo",
) -> str:
    """Hold one given item for `user` (an undone answer's item, back on their screen).

    Returns when the lease ends. Other people's leases are left as they are.
    """
    seconds = check_seconds(seconds)
    user = check_user(db, user)
    moment = datetime.now(UTC)
    until = _iso(moment + timedelta(seconds=seconds))
    with _write_transaction(db):
        if db.execute("SELECT 1 FROM items WHERE id = ? AND project_id = ?",
                      [int(item_id), project.id]).fetchone() is None:
            raise GroundworkError(f"no item {item_id} in project {project.name!r}")
        db.execute(
            "INSERT OR REPLACE INTO leases (item_id, user, project_id, reason, leased_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            [int(item_id), user, project.id, reason, _iso(moment), until])
    return until


def release_lease(db: sqlite_utils.Database, project: Project, item_id: int, user: str) -> bool:
    """Free `user`'s lease on an item (answered or skipped); True if there was one."""
    with _write_transaction(db):
        cursor = db.execute("DELETE FROM leases WHERE project_id = ? AND item_id = ? AND user = ?",
                            [project.id, int(item_id), (user or "").strip()])
    return cursor.rowcount > 0


def release_leases(db: sqlite_utils.Database, project: Project, user: str) -> int:
    """Free every lease `user` holds in the project (e.g. when they stop); how many there were."""
    with _write_transaction(db):
        cursor = db.execute("DELETE FROM leases WHERE project_id = ? AND user = ?",
                            [project.id, (user or "").strip()])
    return cursor.rowcount


def leased_by_others(db: sqlite_utils.Database, project: Project, user: str) -> int:
    """How many items other people's live leases keep from `user` now (read only)."""
    now = _iso(datetime.now(UTC))
    row = db.execute(
        """
        SELECT count(*) FROM (
            SELECT l.item_id, count(*) AS holders, max(i.n_labels) AS answered
            FROM leases l JOIN items i ON i.id = l.item_id
            WHERE l.project_id = ? AND l.user != ? AND l.expires_at > ?
              AND i.n_labels < ? AND i.n_auto = 0
              AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.item_id = l.item_id
                              AND a.user = l.user AND a.retracted_at IS NULL
                              AND a.source IN ('human', 'review'))
            GROUP BY l.item_id HAVING holders >= ? - answered)
        """,
        [project.id, (user or "").strip(), now, project.annotations_per_item,
         project.annotations_per_item],
    ).fetchone()
    return int(row[0])


def live_leases(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Every live lease of the project: item, user, reason, leased_at, expires_at."""
    now = _iso(datetime.now(UTC))
    return list(db.query(
        "SELECT item_id, user, reason, leased_at, expires_at FROM leases "
        "WHERE project_id = ? AND expires_at > ? ORDER BY item_id, user",
        [project.id, now]))
