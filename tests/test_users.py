"""Users and roles: password hashing, lock-out, sessions and expiry, the permissions matrix
(every role x every action), assignments, the audit log, and `groundwork users` / `audit`."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

import cli
from labeling.errors import GroundworkError
from labeling.export import export_project
from labeling.items import add_items
from labeling.projects import create_project
from labeling.users import (
    ACTIONS,
    LOCKOUT,
    MAX_FAILURES,
    ROLES,
    SESSION_LIFETIME,
    account_for_email,
    add_user,
    allowed,
    annotations_per_user,
    assign,
    audit_events,
    authenticate,
    end_session,
    get_user,
    has_accounts,
    list_users,
    local_admin,
    promotions,
    record_event,
    remove_user,
    require,
    session_account,
    set_password,
    set_role,
    start_session,
    unassign,
    unlock_user,
    visible_projects,
)

# The brief's roles, written out here independently of labeling.users.GRANTS.
EXPECTED = {
    "admin": set(ACTIONS),
    "annotator": {"label"},
    "reviewer": {"review"},
}


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch):
    """Argon2id as in production, with test-sized cost (the default takes ~0.1 s a hash)."""
    monkeypatch.setattr("labeling.users._hasher",
                        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def projects(db):
    mail = create_project(db, "mail", "text", classes=["ham", "spam"])
    other = create_project(db, "other", "text", classes=["a", "b"])
    with db.atomic():
        add_items(db, mail, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                             for i in range(4)])
    return mail, other


def test_no_accounts_means_one_local_admin_who_may_do_everything(db, projects):
    mail, _ = projects
    assert not has_accounts(db)
    me = local_admin("ann")
    assert me.local and me.role == "admin" and me.name == "ann"
    assert all(allowed(me, action, mail) for action in ACTIONS)


def test_passwords_are_argon2_hashes_never_plain_text(db):
    add_user(db, "ann", "annotator", "correct horse")
    stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert authenticate(db, "ann", "correct horse").name == "ann"
    assert authenticate(db, "ANN", "correct horse").name == "ann"  # names ignore case
    with pytest.raises(GroundworkError, match="wrong user name or password"):
        authenticate(db, "ann", "Correct horse")
    with pytest.raises(GroundworkError, match="at least 8 characters"):
        add_user(db, "bob", "admin", "short")


def test_account_names_roles_and_duplicates_are_checked(db):
    add_user(db, "ann", "annotator", "password1")
    with pytest.raises(GroundworkError, match="already exists"):
        add_user(db, "Ann", "reviewer", "password1")
    with pytest.raises(GroundworkError, match="unknown role"):
        add_user(db, "bob", "owner", "password1")
    with pytest.raises(GroundworkError, match="not allowed"):
        add_user(db, "<script>", "admin", "password1")
    with pytest.raises(GroundworkError, match="single sign-on"):
        add_user(db, "carol", "annotator", None)  # no password, no email: could never log in
    sso = add_user(db, "dave", "reviewer", None, email="dave@example.com")
    assert sso.email == "dave@example.com"
    with pytest.raises(GroundworkError, match="wrong user name or password"):
        authenticate(db, "dave", "anything at all")  # SSO-only accounts have no password


def test_unknown_names_get_the_same_answer_and_no_lockout(db):
    add_user(db, "ann", "annotator", "password1")
    for _ in range(MAX_FAILURES + 1):
        with pytest.raises(GroundworkError, match="^wrong user name or password$"):
            authenticate(db, "nobody", "password1")
    assert authenticate(db, "ann", "password1").name == "ann"


def test_five_failures_lock_the_account_for_fifteen_minutes(db):
    add_user(db, "ann", "annotator", "password1")
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    for i in range(MAX_FAILURES - 1):
        with pytest.raises(GroundworkError, match="wrong user name or password"):
            authenticate(db, "ann", "nope", now=start + timedelta(seconds=i))
    with pytest.raises(GroundworkError, match="locked until 2026-03-01 09:15 UTC"):
        authenticate(db, "ann", "nope", now=start + timedelta(seconds=5))
    # Locked: even the right password is refused, with the time it opens again.
    with pytest.raises(GroundworkError, match="locked until 2026-03-01 09:15 UTC"):
        authenticate(db, "ann", "password1", now=start + timedelta(minutes=10))
    assert list_users(db)[0]["locked_until"] is None  # the lock is in the past by now
    assert authenticate(db, "ann", "password1",
                        now=start + LOCKOUT + timedelta(seconds=6)).name == "ann"
    actions = [e["action"] for e in audit_events(db, user="ann")]
    assert actions.count("login_failed") == MAX_FAILURES - 1 and actions.count("locked") == 1


def test_a_success_resets_the_count_and_an_admin_can_unlock(db):
    add_user(db, "ann", "annotator", "password1")
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(GroundworkError):
            authenticate(db, "ann", "nope")
    authenticate(db, "ann", "password1")
    for _ in range(MAX_FAILURES - 1):  # counting starts again: still not locked
        with pytest.raises(GroundworkError, match="wrong"):
            authenticate(db, "ann", "nope")
    with pytest.raises(GroundworkError, match="locked until"):
        authenticate(db, "ann", "nope")
    unlock_user(db, "ann")
    assert authenticate(db, "ann", "password1").name == "ann"


def test_sessions_survive_until_logout_or_expiry_and_keep_only_a_hash(db):
    ann = add_user(db, "ann", "annotator", "password1")
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    token = start_session(db, ann, now=now)
    assert len(token) >= 40
    assert token not in json.dumps(list(db.query("SELECT * FROM sessions")))
    assert session_account(db, token, now=now + timedelta(hours=1)).name == "ann"
    assert session_account(db, token, now=now + SESSION_LIFETIME + timedelta(seconds=1)) is None
    assert session_account(db, "forged-token", now=now) is None
    assert session_account(db, None) is None
    live = start_session(db, ann)
    end_session(db, live)
    assert session_account(db, live) is None
    with pytest.raises(GroundworkError):
        start_session(db, local_admin())


def test_a_new_password_or_removing_the_account_ends_its_sessions(db):
    add_user(db, "boss", "admin", "password1")
    ann = add_user(db, "ann", "annotator", "password1")
    token = start_session(db, ann)
    set_password(db, "ann", "password2")
    assert session_account(db, token) is None
    token = start_session(db, ann)
    remove_user(db, "ann")
    assert session_account(db, token) is None


def test_a_role_change_applies_to_a_live_session_at_once(db, projects):
    mail, _ = projects
    add_user(db, "boss", "admin", "password1")
    ann = add_user(db, "ann", "annotator", "password1")
    assign(db, "ann", "mail")
    token = start_session(db, ann)
    assert not allowed(session_account(db, token), "train", mail)
    set_role(db, "ann", "admin")
    assert allowed(session_account(db, token), "train", mail)


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_permissions_matrix(db, projects, role, action):
    """Every role x every action, in an assigned project, another project and no project."""
    mail, other = projects
    add_user(db, "someone", role, "password1")
    assign(db, "someone", "mail")
    user = get_user(db, "someone")
    granted = action in EXPECTED[role]
    assert allowed(user, action, mail) is granted
    # Annotators and reviewers only ever act in the projects assigned to them.
    assert allowed(user, action, other) is (granted and role == "admin")
    assert allowed(user, action, None) is (granted and role == "admin")
    if not granted:
        with pytest.raises(GroundworkError, match=f"is an? {role} and may not "
                                                  f"{ACTIONS[action]}: ask an admin"):
            require(user, action, mail)


def test_deny_by_default(db, projects):
    mail, _ = projects
    with pytest.raises(GroundworkError, match="log in first"):
        require(None, "label", mail)
    with pytest.raises(GroundworkError, match="unknown action"):
        require(local_admin(), "drop_tables", mail)
    add_user(db, "ann", "annotator", "password1")
    with pytest.raises(GroundworkError, match="not assigned to project 'mail'.*users assign ann "
                                              "mail"):
        require(get_user(db, "ann"), "label", mail)


def test_assignments_decide_which_projects_a_person_sees(db, projects):
    mail, other = projects
    add_user(db, "ann", "annotator", "password1")
    add_user(db, "boss", "admin", "password1")
    assert visible_projects(db, get_user(db, "ann")) == []
    assert assign(db, "ann", "mail") and not assign(db, "ann", "mail")
    assert [p.name for p in visible_projects(db, get_user(db, "ann"))] == ["mail"]
    assert [p.name for p in visible_projects(db, get_user(db, "boss"))] == ["mail", "other"]
    assert list_users(db)[0]["projects"] == ["mail"]
    assert unassign(db, "ann", mail) and not unassign(db, "ann", mail)
    assert visible_projects(db, get_user(db, "ann")) == []
    with pytest.raises(GroundworkError, match="no project named"):
        assign(db, "ann", "nope")
    with pytest.raises(GroundworkError, match="no user named"):
        assign(db, "nobody", "mail")


def test_the_last_admin_stays_while_other_accounts_exist(db):
    add_user(db, "boss", "admin", "password1")
    add_user(db, "ann", "annotator", "password1")
    with pytest.raises(GroundworkError, match="last admin"):
        remove_user(db, "boss")
    with pytest.raises(GroundworkError, match="last admin"):
        set_role(db, "boss", "reviewer")
    add_user(db, "chief", "admin", "password1")
    remove_user(db, "boss")
    remove_user(db, "ann")
    remove_user(db, "chief")  # alone: removing it returns the store to its local admin
    assert not has_accounts(db)


def test_single_sign_on_email_maps_to_an_account(db):
    add_user(db, "ann", "annotator", None, email="Ann@Example.com")
    add_user(db, "bob@example.com", "reviewer", None)
    assert account_for_email(db, "ann@example.com").name == "ann"
    assert account_for_email(db, "BOB@example.com").name == "bob@example.com"
    assert account_for_email(db, "eve@example.com") is None
    assert account_for_email(db, "") is None


def test_the_audit_log_records_who_and_when(db, projects, tmp_path):
    mail, _ = projects
    add_user(db, "boss", "admin", "password1", by="root")
    assign(db, "boss", "mail", by="root")
    boss = authenticate(db, "boss", "password1")
    token = start_session(db, boss)
    end_session(db, token)
    export_project(db, mail, "csv", tmp_path / "mail.csv", user="boss")
    events = audit_events(db)
    assert [e["action"] for e in events] == ["export", "logout", "login", "assigned",
                                             "user_added"]
    export = events[0]
    assert export["user"] == "boss" and export["project"] == "mail"
    assert export["target"] == "mail.csv" and export["details"] == {"format": "csv", "rows": 4}
    assert all(e["at"].endswith("Z") for e in events)
    assert [e["action"] for e in audit_events(db, project=mail)] == ["export", "assigned"]
    assert [e["action"] for e in audit_events(db, actions=["login", "logout"])] == \
        ["logout", "login"]
    assert audit_events(db, since="2999-01-01") == []


def test_answers_per_person_and_promotions(db, projects):
    from labeling.annotations import record_annotation

    mail, _ = projects
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    record_annotation(db, mail, ids[0], "ham", user="ann")
    record_annotation(db, mail, ids[1], "spam", user="ann")
    record_annotation(db, mail, ids[0], "ham", user="bob")
    rows = {r["user"]: r for r in annotations_per_user(db, project=mail)}
    assert rows["ann"]["labels"] == 2 and rows["bob"]["labels"] == 1
    assert [r["user"] for r in annotations_per_user(db, user="bob")] == ["bob"]
    with db.atomic():
        for version, by in ((1, None), (2, "boss")):
            db["model_versions"].insert({
                "project_id": mail.id, "version": version, "created_at": "2026-01-01T00:00:00Z",
                "status": "archived", "estimator": "logreg", "metric_name": "balanced_accuracy",
                "train_size": 1, "snapshot_hash": "-", "artifact_path": "-",
                "artifact_sha256": "-", "classes": "[]",
                "promoted_at": f"2026-01-0{version}T00:00:00.000Z", "promoted_by": by})
        record_event(db, "boss", "promote", mail, "v2")
    rows = promotions(db, project=mail)
    assert [(r["version"], r["by"]) for r in rows] == [("v2", "boss"),
                                                       ("v1", "automatic (training run)")]


# ---- the CLI -----------------------------------------------------------------------------


class Run:
    def __init__(self, data_dir, capsys) -> None:
        self.data_dir, self.capsys = data_dir, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main([*map(str, args), "--data-dir", str(self.data_dir)])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def run(data_dir, capsys, projects):
    return Run(data_dir, capsys)


def test_cli_users_add_list_assign_remove(run, db, monkeypatch):
    code, out, err = run("users", "list")
    assert code == 0 and "no accounts" in out
    code, out, err = run("users", "add", "boss", "--role", "admin", "--password", "password1",
                         "--json")
    assert code == 0 and json.loads(out) == {"name": "boss", "role": "admin", "email": None}
    assert run("users", "add", "ann", "--role", "annotator", "--password", "password1")[0] == 0
    code, out, _ = run("users", "assign", "ann", "mail", "--json")
    assert code == 0 and json.loads(out)["changed"] is True
    code, out, _ = run("users", "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)["users"]}
    assert listed["ann"]["projects"] == ["mail"] and listed["boss"]["role"] == "admin"
    assert run("users", "role", "ann", "reviewer")[0] == 0
    assert get_user(db, "ann").role == "reviewer"
    code, out, _ = run("users", "unassign", "ann", "mail")
    assert code == 0 and "no longer works on mail" in out
    code, _, err = run("users", "remove", "boss")
    assert code == 2 and err.startswith("error: boss is the last admin")
    assert run("users", "remove", "ann")[0] == 0
    code, _, err = run("users", "add", "x", "--role", "owner", "--password", "password1")
    assert code == 2 and "invalid choice" in err


def test_cli_asks_for_the_password_only_on_a_terminal(run, db, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt, an error
    code, _, err = run("users", "add", "ann", "--role", "annotator")
    assert code == 2 and "give --password" in err and not has_accounts(db)
    answers = iter(["password1", "password1"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run("users", "add", "ann", "--role", "annotator")[0] == 0
    assert authenticate(db, "ann", "password1").name == "ann"
    answers = iter(["password2", "typo"])
    code, _, err = run("users", "passwd", "ann")
    assert code == 2 and "differ" in err
    code, _, _ = run("users", "add", "sso@example.com", "--role", "reviewer", "--sso-only")
    assert code == 0


def test_cli_unlock_and_audit(run, db):
    run("users", "add", "ann", "--role", "annotator", "--password", "password1")
    for _ in range(MAX_FAILURES):
        with pytest.raises(GroundworkError):
            authenticate(db, "ann", "wrong")
    code, out, _ = run("users", "list")
    assert "locked until" in out
    assert run("users", "unlock", "ann")[0] == 0
    assert authenticate(db, "ann", "password1").name == "ann"
    code, out, _ = run("audit", "--user", "ann", "--action", "locked", "--json")
    assert code == 0 and [e["action"] for e in json.loads(out)["events"]] == ["locked"]
    code, out, _ = run("audit", "--project", "mail")
    assert code == 0 and out == ""
