"""Users and roles: accounts, what each role may do, login sessions, lock-out and the audit log.

Three roles, deny by default:

- **admin**: projects and imports, settings, training and promotion, auto-labeling,
  review workflows, exports, user accounts and the audit log; labels and reviews
  any project.
- **annotator**: labels the projects assigned to them.
- **reviewer**: answers the review tasks of the projects assigned to them.

`require(user, action, project)` is the one check; pages call it right before
each action, so a request crafted past the navigation is refused too. A store
with no account has one implicit local admin and no login (the embedded
default); as soon as one account exists, the app asks everyone to log in. The
CLI is the local administrator's tool: whoever has the store's files is admin.

Passwords are hashed with Argon2id (argon2-cffi). A login opens a session: an
unguessable random token (256 bits) handed to the browser as a cookie, of which
the store keeps only the SHA-256 and the expiry, so logging out, removing the
account and expiry end it server-side. Five failed logins in a row lock the
account for fifteen minutes.

The audit log keeps who did what and when for events that have no table of
their own (logins, account changes, exports, promotions); annotations and
review answers carry their user and time already.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from labeling.errors import GroundworkError
from labeling.projects import Project, get_project

ROLES: dict[str, str] = {
    "admin": "projects, imports, training, promotion, users and exports; labels and reviews "
             "every project",
    "annotator": "labels the projects assigned to them",
    "reviewer": "reviews the tasks of the projects assigned to them",
}

# Every action a page or a domain call can be asked to do. Anything not here is refused.
ACTIONS: dict[str, str] = {
    "import": "create projects and import data",
    "settings": "change a project's settings",
    "label": "label items",
    "autolabel": "auto-label or revert machine labels",
    "review": "answer review tasks",
    "manage_review": "open review tasks and manage review workflows",
    "train": "train models",
    "promote": "promote or roll back models",
    "export": "export labels",
    "manage_users": "manage user accounts",
    "view_audit": "see the audit log",
}

GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(ACTIONS),
    "annotator": frozenset({"label"}),
    "reviewer": frozenset({"review"}),
}

MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(days=7)
MIN_PASSWORD = 8
LOCAL_ADMIN = "local-admin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")

_hasher = PasswordHasher()
_dummy_hash: str | None = None


@dataclass(frozen=True)
class Account:
    """Who is acting: a stored account, or the implicit local admin (`id` None)."""

    name: str
    role: str
    id: int | None = None
    email: str | None = None
    projects: frozenset[int] = field(default_factory=frozenset)

    @property
    def local(self) -> bool:
        return self.id is None


def local_admin(name: str | None = None) -> Account:
    """The embedded default: whoever runs the app or the CLI on a store without accounts."""
    return Account(name=name or local_user(), role="admin")


def local_user() -> str:
    """The name the CLI records for the local administrator."""
    try:
        return os.environ.get("GROUNDWORK_USER") or getpass.getuser() or LOCAL_ADMIN
    except (OSError, KeyError):
        return LOCAL_ADMIN


def _now(now: datetime | None = None) -> datetime:
    return now or datetime.now(UTC)


def _iso(moment: datetime) -> str:
    """The store's timestamp format (`labeling.store.utcnow`), so times compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _hhmm(text: str) -> str:
    return _parse(text).strftime("%Y-%m-%d %H:%M UTC")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---- permissions -------------------------------------------------------------------------


def may(role: str, action: str) -> bool:
    """Whether a role may do an action in some project (the navigation's question)."""
    return action in GRANTS.get(role, frozenset())


def allowed(user: Account | None, action: str, project: Project | None = None) -> bool:
    try:
        require(user, action, project)
    except GroundworkError:
        return False
    return True


def require(user: Account | None, action: str, project: Project | None = None) -> Account:
    """Refuse, with what to do about it, unless `user` may do `action` (in `project`).

    Admins may do everything everywhere; annotators and reviewers only their
    role's action, and only in the projects assigned to them. Unknown actions
    and unknown roles are refused (deny by default).
    """
    if user is None:
        raise GroundworkError("log in first: this store has user accounts")
    if action not in ACTIONS:
        raise GroundworkError(f"unknown action {action!r}: refused")
    if not may(user.role, action):
        raise GroundworkError(
            f"{user.name} is {'an' if user.role[:1] in 'aeiou' else 'a'} {user.role} and may not "
            f"{ACTIONS[action]}: ask an admin")
    if user.role != "admin":
        if project is None:
            raise GroundworkError(f"choose a project to {ACTIONS[action]}")
        if project.id not in user.projects:
            raise GroundworkError(
                f"{user.name} is not assigned to project {project.name!r}: an admin can assign "
                f"it (`groundwork users assign {user.name} {project.name}`)")
    return user


# ---- accounts ----------------------------------------------------------------------------


def has_accounts(db: sqlite_utils.Database) -> bool:
    """True once any account exists: from then on the app asks everyone to log in."""
    return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


def validate_user_name(name: str) -> str:
    name = str(name or "").strip()
    if not _NAME.fullmatch(name):
        raise GroundworkError(
            f"user name {name!r} is not allowed: use letters, digits and . _ @ + - "
            "(an email address works), starting with a letter or digit")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise GroundworkError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise GroundworkError(f"the password is too short: use at least {MIN_PASSWORD} "
                              "characters")
    return password


def _row(db: sqlite_utils.Database, name: str) -> dict | None:
    return next(iter(db.query("SELECT * FROM users WHERE name = ? COLLATE NOCASE",
                              [str(name).strip()])), None)


def _account(db: sqlite_utils.Database, row: dict) -> Account:
    projects = frozenset(r[0] for r in db.execute(
        "SELECT project_id FROM user_projects WHERE user_id = ?", [row["id"]]))
    return Account(name=row["name"], role=row["role"], id=row["id"], email=row["email"],
                   projects=projects)


def get_user(db: sqlite_utils.Database, name: str) -> Account:
    row = _row(db, name)
    if row is None:
        known = ", ".join(r[0] for r in db.execute("SELECT name FROM users ORDER BY name"))
        raise GroundworkError(f"no user named {name!r} (users: {known or 'none yet'}); add one "
                              "with `groundwork users add`")
    return _account(db, row)


def add_user(db: sqlite_utils.Database, name: str, role: str, password: str | None, *,
             email: str | None = None, by: str | None = None) -> Account:
    """Create an account. `password` None makes a single-sign-on-only account (needs an email
    or an email as its name, which `st.user.email` is matched against)."""
    name = validate_user_name(name)
    _check_role(role)
    email = (email or "").strip() or None
    if email is not None and not _EMAIL.fullmatch(email):
        raise GroundworkError(f"{email!r} is not an email address")
    if password is None and email is None and not _EMAIL.fullmatch(name):
        raise GroundworkError("an account without a password can only log in by single sign-on: "
                              "give it --email (or a password)")
    hashed = _hasher.hash(_check_password(password)) if password is not None else None
    if _row(db, name) is not None:
        raise GroundworkError(f"user {name!r} already exists: remove it first, or use "
                              "`groundwork users passwd` / `users role`")
    if email and db.execute("SELECT 1 FROM users WHERE email = ? COLLATE NOCASE",
                            [email]).fetchone():
        raise GroundworkError(f"another account already has the email {email!r}")
    with db.atomic():
        db["users"].insert({"name": name, "role": role, "email": email, "password_hash": hashed,
                            "created_at": _iso(_now())})
        record_event(db, by or local_user(), "user_added", None, name, role=role)
    return get_user(db, name)


def list_users(db: sqlite_utils.Database) -> list[dict]:
    names = {p: n for p, n in db.execute("SELECT id, name FROM projects")}
    rows = []
    for row in db.query("SELECT * FROM users ORDER BY name COLLATE NOCASE"):
        account = _account(db, row)
        locked = row["locked_until"] if row["locked_until"] and \
            row["locked_until"] > _iso(_now()) else None
        rows.append({"name": row["name"], "role": row["role"], "email": row["email"],
                     "password": row["password_hash"] is not None,
                     "projects": sorted(names[p] for p in account.projects if p in names),
                     "created_at": row["created_at"], "last_login_at": row["last_login_at"],
                     "locked_until": locked})
    return rows


def _admins(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchone()[0]


def remove_user(db: sqlite_utils.Database, name: str, *, by: str | None = None) -> None:
    """Delete an account (its sessions and assignments go with it; its answers stay)."""
    account = get_user(db, name)
    others = db.execute("SELECT count(*) FROM users WHERE id != ?", [account.id]).fetchone()[0]
    if account.role == "admin" and _admins(db) == 1 and others:
        raise GroundworkError(
            f"{account.name} is the last admin and {others} other account(s) exist: add another "
            "admin first, or remove the others (with no account left the store has a local "
            "admin again)")
    with db.atomic():
        db.execute("DELETE FROM users WHERE id = ?", [account.id])
        record_event(db, by or local_user(), "user_removed", None, account.name)


def set_role(db: sqlite_utils.Database, name: str, role: str, *,
             by: str | None = None) -> Account:
    account = get_user(db, name)
    _check_role(role)
    if account.role == "admin" and role != "admin" and _admins(db) == 1:
        raise GroundworkError(f"{account.name} is the last admin: make another account admin "
                              "first")
    with db.atomic():
        db.execute("UPDATE users SET role = ? WHERE id = ?", [role, account.id])
        record_event(db, by or local_user(), "role_changed", None, account.name, role=role)
    return get_user(db, name)


def set_password(db: sqlite_utils.Database, name: str, password: str, *,
                 by: str | None = None) -> None:
    """A new password; it also unlocks the account and ends its open sessions."""
    account = get_user(db, name)
    hashed = _hasher.hash(_check_password(password))
    with db.atomic():
        db.execute("UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL "
                   "WHERE id = ?", [hashed, account.id])
        db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                   [_iso(_now()), account.id])
        record_event(db, by or local_user(), "password_changed", None, account.name)


def unlock_user(db: sqlite_utils.Database, name: str, *, by: str | None = None) -> None:
    account = get_user(db, name)
    with db.atomic():
        db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?",
                   [account.id])
        record_event(db, by or local_user(), "unlocked", None, account.name)


def assign(db: sqlite_utils.Database, name: str, project: str | Project, *,
           by: str | None = None) -> bool:
    """Give an account a project to work on; False when it already had it."""
    account = get_user(db, name)
    project = project if isinstance(project, Project) else get_project(db, project)
    if project.id in account.projects:
        return False
    with db.atomic():
        db["user_projects"].insert({"user_id": account.id, "project_id": project.id,
                                    "assigned_at": _iso(_now()), "assigned_by": by})
        record_event(db, by or local_user(), "assigned", project, account.name)
    return True


def unassign(db: sqlite_utils.Database, name: str, project: str | Project, *,
             by: str | None = None) -> bool:
    account = get_user(db, name)
    project = project if isinstance(project, Project) else get_project(db, project)
    if project.id not in account.projects:
        return False
    with db.atomic():
        db.execute("DELETE FROM user_projects WHERE user_id = ? AND project_id = ?",
                   [account.id, project.id])
        record_event(db, by or local_user(), "unassigned", project, account.name)
    return True


def visible_projects(db: sqlite_utils.Database, user: Account) -> list[Project]:
    """The projects a person works on: every one for an admin, the assigned ones otherwise."""
    from labeling.projects import list_projects

    projects = list_projects(db)
    return projects if user.role == "admin" else [p for p in projects if p.id in user.projects]


# ---- login, lock-out, sessions -----------------------------------------------------------


def authenticate(db: sqlite_utils.Database, name: str, password: str, *,
                 now: datetime | None = None) -> Account:
    """Check a name and password; count failures and lock after `MAX_FAILURES` in a row.

    A locked account is refused even with the right password, with the time
    it opens again. Unknown names get the same message as wrong passwords (and
    cost the same hashing time), so names cannot be probed.
    """
    global _dummy_hash
    moment = _now(now)
    row = _row(db, name) if _NAME.fullmatch(str(name or "").strip()) else None
    wrong = GroundworkError("wrong user name or password")
    if row is None or row["password_hash"] is None:
        _dummy_hash = _dummy_hash or _hasher.hash("not a password at all")
        try:
            _hasher.verify(_dummy_hash, password or "")
        except VerificationError:
            pass
        with db.atomic():
            record_event(db, str(name)[:100] or "?", "login_failed", None, None,
                         reason="no such account" if row is None else "single sign-on only",
                         now=moment)
        raise wrong
    if row["locked_until"] and row["locked_until"] > _iso(moment):
        raise GroundworkError(
            f"too many failed logins: {row['name']} is locked until "
            f"{_hhmm(row['locked_until'])}; try again then, or ask an admin "
            f"(`groundwork users unlock {row['name']}`)")
    try:
        _hasher.verify(row["password_hash"], password or "")
    except (VerificationError, InvalidHashError):
        failures = int(row["failed_logins"] or 0) + 1
        with db.atomic():
            if failures >= MAX_FAILURES:
                until = _iso(moment + LOCKOUT)
                db.execute("UPDATE users SET failed_logins = 0, locked_until = ? WHERE id = ?",
                           [until, row["id"]])
                record_event(db, row["name"], "locked", None, row["name"], until=until,
                             now=moment)
            else:
                db.execute("UPDATE users SET failed_logins = ? WHERE id = ?",
                           [failures, row["id"]])
                record_event(db, row["name"], "login_failed", None, None, failures=failures,
                             now=moment)
        if failures >= MAX_FAILURES:
            raise GroundworkError(
                f"too many failed logins: {row['name']} is locked until {_hhmm(until)}; try "
                f"again then, or ask an admin (`groundwork users unlock {row['name']}`)"
            ) from None
        raise wrong from None
    with db.atomic():
        updates = {"failed_logins": 0, "locked_until": None}
        if _hasher.check_needs_rehash(row["password_hash"]):
            updates["password_hash"] = _hasher.hash(password)
        db["users"].update(row["id"], updates)
    return _account(db, row)


def start_session(db: sqlite_utils.Database, user: Account, *, method: str = "password",
                  lifetime: timedelta = SESSION_LIFETIME, now: datetime | None = None) -> str:
    """Open a session and return its token (for the cookie); the store keeps only its hash."""
    if user.id is None:
        raise GroundworkError("the local admin has no login session")
    moment = _now(now)
    token = secrets.token_urlsafe(32)
    with db.atomic():
        db.execute("DELETE FROM sessions WHERE expires_at < ?", [_iso(moment)])
        db["sessions"].insert({"token_hash": _token_hash(token), "user_id": user.id,
                               "method": method, "created_at": _iso(moment),
                               "expires_at": _iso(moment + lifetime)})
        db.execute("UPDATE users SET last_login_at = ? WHERE id = ?", [_iso(moment), user.id])
        record_event(db, user.name, "login", None, None, method=method, now=moment)
    return token


def session_account(db: sqlite_utils.Database, token: str | None, *,
                    now: datetime | None = None) -> Account | None:
    """The account a live session token belongs to; None when unknown, ended or expired."""
    if not token:
        return None
    row = next(iter(db.query(
        "SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? "
        "AND s.revoked_at IS NULL AND s.expires_at > ?",
        [_token_hash(token), _iso(_now(now))])), None)
    return _account(db, row) if row else None


def session_expiry(db: sqlite_utils.Database, token: str) -> str | None:
    row = db.execute("SELECT expires_at FROM sessions WHERE token_hash = ?",
                     [_token_hash(token)]).fetchone()
    return row[0] if row else None


def end_session(db: sqlite_utils.Database, token: str | None) -> None:
    """Log out: the token stops working at once, whatever the browser still holds."""
    if not token:
        return
    row = next(iter(db.query(
        "SELECT s.token_hash, u.name FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.revoked_at IS NULL", [_token_hash(token)])), None)
    if row is None:
        return
    with db.atomic():
        db.execute("UPDATE sessions SET revoked_at = ? WHERE token_hash = ?",
                   [_iso(_now()), row["token_hash"]])
        record_event(db, row["name"], "logout", None, None)


def account_for_email(db: sqlite_utils.Database, email: str | None) -> Account | None:
    """Single sign-on: the account whose email (or name) is the identity provider's email."""
    email = (email or "").strip()
    if not email:
        return None
    row = next(iter(db.query(
        "SELECT * FROM users WHERE email = ? COLLATE NOCASE OR name = ? COLLATE NOCASE "
        "ORDER BY email IS NULL LIMIT 1", [email, email])), None)
    return _account(db, row) if row else None


# ---- audit -------------------------------------------------------------------------------


def record_event(db: sqlite_utils.Database, user: str | None, action: str,
                 project: Project | None = None, target: str | None = None, *,
                 now: datetime | None = None, **details: object) -> None:
    """One audit row: who, what, when, in which project, on what (call inside a transaction
    with the change it records, so the two land together)."""
    db["audit_log"].insert({
        "at": _iso(_now(now)), "user": user or local_user(), "action": action,
        "project_id": project.id if project else None,
        "project": project.name if project else None, "target": target,
        "details": json.dumps(details, default=str, sort_keys=True)})


def audit_events(db: sqlite_utils.Database, *, project: Project | None = None,
                 user: str | None = None, actions: list[str] | None = None,
                 since: str | None = None, limit: int = 500) -> list[dict]:
    """Recent audit events, newest first, filtered by project, user, action and time."""
    where, params = [], []
    if project is not None:
        where.append("project_id = ?")
        params.append(project.id)
    if user:
        where.append("user = ?")
        params.append(user)
    if actions:
        where.append(f"action IN ({','.join('?' * len(actions))})")
        params.extend(actions)
    if since:
        where.append("at >= ?")
        params.append(since)
    sql = ("SELECT at, user, action, project, target, details FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY at DESC, id DESC LIMIT ?")
    rows = []
    for row in db.query(sql, [*params, int(limit)]):
        row["details"] = json.loads(row["details"] or "{}")
        rows.append(row)
    return rows


def audit_actions(db: sqlite_utils.Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT action FROM audit_log ORDER BY action")]


def annotations_per_user(db: sqlite_utils.Database, *, project: Project | None = None,
                         user: str | None = None, since: str | None = None) -> list[dict]:
    """Answers per person and project: labels (live, taken back), review answers, first/last."""
    where, params = ["1 = 1"], []
    if project is not None:
        where.append("a.project_id = ?")
        params.append(project.id)
    if user:
        where.append("a.user = ?")
        params.append(user)
    if since:
        where.append("a.created_at >= ?")
        params.append(since)
    rows = list(db.query(
        "SELECT a.user, p.name AS project, "
        "sum(a.source = 'human' AND a.retracted_at IS NULL) AS labels, "
        "sum(a.source = 'human' AND a.retracted_at IS NOT NULL) AS taken_back, "
        "sum(a.source = 'review' AND a.retracted_at IS NULL) AS review_labels, "
        "sum(a.source = 'import') AS imported, sum(a.source = 'auto') AS machine, "
        "min(a.created_at) AS first_at, max(a.created_at) AS last_at "
        "FROM annotations a JOIN projects p ON p.id = a.project_id "
        f"WHERE {' AND '.join(where)} GROUP BY a.user, p.name ORDER BY labels DESC, a.user",
        params))
    if "review_answers" in db.table_names():
        where = [w.replace("a.project_id", "t.project_id").replace("a.user", "r.user")
                 .replace("a.created_at", "r.created_at") for w in where]
        answers = {(r["user"], r["project"]): r for r in db.query(
            "SELECT r.user, p.name AS project, count(*) AS n, max(r.created_at) AS last_at "
            "FROM review_answers r JOIN review_tasks t ON t.id = r.task_id "
            "JOIN projects p ON p.id = t.project_id "
            f"WHERE r.retracted_at IS NULL AND {' AND '.join(where)} "
            "GROUP BY r.user, p.name", params)}
        for row in rows:
            row["review_answers"] = answers.pop((row["user"], row["project"]), {}).get("n", 0)
        for (who, name), extra in answers.items():
            rows.append({"user": who, "project": name, "labels": 0, "taken_back": 0,
                         "review_labels": 0, "imported": 0, "machine": 0, "first_at": None,
                         "last_at": extra["last_at"], "review_answers": extra["n"]})
    return rows


def promotions(db: sqlite_utils.Database, *, project: Project | None = None) -> list[dict]:
    """Every model promotion: who (a person, or automatic after a training run) and when.

    Manual promotions and roll backs are audit events (each one kept); a version
    a training run promoted by itself is read from the model registry.
    """
    where = "WHERE m.project_id = ?" if project else ""
    params = [project.id] if project else []
    rows = [{"at": r["at"], "project": r["project"], "version": r["target"], "by": r["user"],
             "how": json.loads(r["details"] or "{}").get("how", "promoted")}
            for r in db.query(
                "SELECT at, project, target, user, details FROM audit_log WHERE action = "
                "'promote'" + (" AND project_id = ?" if project else ""), params)]
    for r in db.query(
            "SELECT m.promoted_at, m.version, m.promoted_by, p.name FROM model_versions m "
            f"JOIN projects p ON p.id = m.project_id {where} "
            + ("AND" if where else "WHERE") + " m.promoted_at IS NOT NULL AND NOT EXISTS ("
            "SELECT 1 FROM audit_log l WHERE l.action = 'promote' AND l.project_id = m.project_id"
            " AND l.target = 'v' || m.version)", params):
        rows.append({"at": r["promoted_at"], "project": r["name"], "version": f"v{r['version']}",
                     "by": r["promoted_by"] or "automatic (training run)",
                     "how": "promoted" if r["promoted_by"] else "training run"})
    return sorted(rows, key=lambda r: r["at"] or "", reverse=True)


def people(db: sqlite_utils.Database) -> list[str]:
    """Everyone who appears anywhere: accounts, audit events, annotations, review answers."""
    sql = ["SELECT name FROM users", "SELECT DISTINCT user FROM audit_log",
           "SELECT DISTINCT user FROM annotations"]
    if "review_answers" in db.table_names():
        sql.append("SELECT DISTINCT user FROM review_answers")
    return [r[0] for r in db.execute(" UNION ".join(sql) + " ORDER BY 1")]
