"""The role matrix in AppTest: every role against every page.

A page a role may use is in its navigation and renders; any other page is not
in its navigation, and run directly (as a crafted request past the navigation
would) its action is refused with a clear error and nothing changes. Also:
login and logout through the app, the embedded no-account default, and the
single-sign-on button (shown only when a provider is configured).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

from labeling.annotations import record_annotation
from labeling.items import add_items
from labeling.projects import create_project
from labeling.queue import store_predictions
from labeling.users import (
    ACTIONS,
    add_user,
    assign,
    audit_events,
    get_user,
    session_account,
    start_session,
)
from review.rules import open_review

ROOT = Path(__file__).resolve().parents[1]

# Every page and the action a role needs for it (the brief: admin everything, annotators
# label, reviewers review), written out independently of app.py.
PAGES = {
    "labeling/pages/projects.py": "import",
    "labeling/pages/label.py": "label",
    "labeling/pages/autolabel.py": "autolabel",
    "automl/pages/savings.py": "settings",
    "review/pages/review_tasks.py": "review",
    "review/pages/workflows.py": "manage_review",
    "automl/pages/train.py": "train",
    "labeling/pages/users.py": "manage_users",
    "labeling/pages/audit.py": "view_audit",
}
ROLES = {"admin": "boss", "annotator": "ann", "reviewer": "rev"}
MAY = {"admin": set(PAGES.values()), "annotator": {"label"}, "reviewer": {"review"}}


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch):
    monkeypatch.setattr("labeling.users._hasher",
                        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def store(db, data_dir, monkeypatch):
    """A text project with a promoted model, open review tasks and one machine label, and
    an admin, an annotator and a reviewer (both assigned to it) with live sessions."""
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message number {i}",
                                 "sha256": str(i)} for i in range(6)])
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    store_predictions(db, mv, ids, ["ham", "spam"], np.array([[0.3, 0.7]] * 6))
    open_review(db, project, 0.9)
    record_annotation(db, project, ids[-1], "spam", user="model", source="auto")
    tokens = {}
    for role, name in ROLES.items():
        add_user(db, name, role, "password1")
        if role != "admin":
            assign(db, name, "mail")
        tokens[role] = start_session(db, get_user(db, name))
    return db, project, tokens


def run(path: str, token: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    if token:
        at.session_state["session_token"] = token
    at.session_state["project_name"] = "mail"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def messages(at: AppTest) -> str:
    return " | ".join([e.value for e in at.error] + [e.message for e in at.exception]
                      + [c.value for c in at.caption])


@pytest.mark.parametrize("role", list(ROLES))
def test_navigation_holds_exactly_the_pages_a_role_may_use(store, role):
    db, project, tokens = store
    at = run("app.py", tokens[role])
    assert not at.exception
    first = {"admin": "Projects", "annotator": "Label · mail", "reviewer": "Review · mail"}[role]
    assert at.title[0].value == first  # the root URL opens the role's own page
    for path, action in PAGES.items():
        if action in MAY[role]:
            at.switch_page(path).run()
            assert not at.exception, (role, path, at.exception)
            assert at.title, (role, path)
        else:
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page(path)


def class_button(at: AppTest, index: int):
    """The Label page's button for class `index`: keyed by the item shown, `cls-{i}-{item}`."""
    return next(b for b in at.button if re.fullmatch(rf"cls-{index}-\d+", b.key or ""))


def accept_button(at: AppTest):
    """The Review page's Accept button: keyed by the task shown, `accept-{task}`."""
    return next(b for b in at.button if re.fullmatch(r"accept-\d+", b.key or ""))


def _trigger(at: AppTest, path: str) -> AppTest:
    """Do the page's main action, the way the page offers it."""
    if Path(path).name == "label.py":
        return class_button(at, 0).click().run()
    if Path(path).name == "review_tasks.py":
        return accept_button(at).click().run()
    if path.endswith("projects.py"):
        at.text_input[0].input("new-project")
        at.file_uploader[0].set_value(("notes.csv", b"text\nhello\n", "text/csv"))
        return next(b for b in at.button if b.label == "Import").click().run()
    key = {"autolabel.py": "autolabel-revert", "savings.py": "refit-now",
           "workflows.py": "check-labels",
           "train.py": "train"}.get(Path(path).name)
    if key is None:  # users, audit: the page itself is the action
        return at
    return at.button(key=key).click().run()


FORBIDDEN = [(role, path) for role in ROLES for path, action in PAGES.items()
             if action not in MAY[role]]


@pytest.mark.parametrize(("role", "path"), FORBIDDEN)
def test_a_forbidden_action_is_refused_on_the_server(store, role, path):
    db, project, tokens = store
    before = {t: db[t].count for t in ("annotations", "review_tasks", "jobs", "projects",
                                       "review_answers", "leases")}
    at = _trigger(run(path, tokens[role]), path)
    name = ROLES[role]
    refusal = f"{name} is an? {role} and may not {ACTIONS[PAGES[path]]}: ask an admin"
    assert re.search(refusal, messages(at)), (role, path, messages(at))
    assert {t: db[t].count for t in before} == before
    if path.endswith(("users.py", "audit.py")):
        assert not at.title and not at.dataframe  # nothing of the page is shown


def test_an_annotator_labels_under_their_own_name_only(store):
    db, project, tokens = store
    at = run("labeling/pages/label.py", tokens["annotator"], user="mallory")
    class_button(at, 1).click().run()
    assert not at.exception
    rows = list(db.query("SELECT user, labels FROM annotations WHERE source = 'human'"))
    assert rows == [{"user": "ann", "labels": '["spam"]'}]
    assert [r["user"] for r in db.query("SELECT user FROM leases")] == ["ann"]  # the next item


def test_answers_per_item_is_shown_as_a_setting_only_to_who_may_change_it(store):
    """Issue 6: the project setting is an admin's widget; annotators see it read only, with
    the agreement and pace."""
    db, project, tokens = store
    at = run("labeling/pages/label.py", tokens["annotator"])
    assert not at.exception
    assert not [w for w in at.number_input if w.key == "answers-per-item"]
    assert any(c.value.startswith("Each item goes to one person") for c in at.caption)
    labels = [e.label for e in at.expander]
    assert "Annotators: answers per item and agreement" in labels
    assert "Pace: labels per hour, per person" in labels
    assert not at.error
    at = run("labeling/pages/label.py", tokens["admin"])
    setting = at.number_input(key="answers-per-item")
    assert setting.value == 1
    setting.set_value(2).run()
    assert not at.exception and not at.error
    assert db["projects"].get(project.id)["annotations_per_item"] == 2
    at = run("labeling/pages/label.py", tokens["annotator"])
    assert any(c.value.startswith("Each item goes to 2 different people") for c in at.caption)


def test_a_reviewer_answers_review_tasks(store):
    db, project, tokens = store
    at = run("review/pages/review_tasks.py", tokens["reviewer"])
    accept_button(at).click().run()
    assert not at.exception
    assert [r["user"] for r in db.query("SELECT user FROM review_answers")] == ["rev"]
    export = next(b for b in at.get("download_button"))
    assert export.proto.disabled  # exports are an admin's
    # The admin's parts of the Review page refuse a reviewer too.
    at.button(key="open-review").click().run()
    assert "rev is a reviewer and may not open review tasks" in at.error[0].value
    at.button(key="retrain").click().run()
    assert "rev is a reviewer and may not train models" in at.error[0].value
    assert db["jobs"].count == 0


def test_an_unassigned_project_stays_closed(store):
    db, project, tokens = store
    other = create_project(db, "secret", "text", classes=["a", "b"])
    at = run("labeling/pages/label.py", tokens["annotator"], project_name=other.name)
    assert "No project is assigned to you" in at.info[0].value
    assert not at.button
    at = run("app.py", tokens["annotator"])
    assert at.sidebar.selectbox[0].options == ["mail"]


def test_login_lockout_and_logout_in_the_app(store):
    db, project, tokens = store
    at = run("app.py")
    assert at.title[0].value == "Log in to Groundwork"
    for _ in range(5):
        at.text_input(key="login-name").input("ann")
        at.text_input(key="login-password").input("wrong password")
        next(b for b in at.button if b.label == "Log in").click().run()
    assert "locked until" in at.error[0].value
    db.execute("UPDATE users SET locked_until = NULL WHERE name = 'ann'")
    at.text_input(key="login-name").input("ann")
    at.text_input(key="login-password").input("password1")
    next(b for b in at.button if b.label == "Log in").click().run()
    assert not at.exception and at.title[0].value == "Label · mail"
    assert "Signed in as **ann** · annotator" in [c.value for c in at.sidebar.caption]
    token = at.session_state["session_token"]
    assert session_account(db, token).name == "ann"
    at.sidebar.button(key="logout").click().run()
    assert at.title[0].value == "Log in to Groundwork"
    assert session_account(db, token) is None
    assert [e["action"] for e in audit_events(db, user="ann")][:2] == ["logout", "login"]


def test_an_ended_session_goes_back_to_the_login(store):
    db, project, tokens = store
    db.execute("UPDATE sessions SET expires_at = '2000-01-01T00:00:00.000Z'")
    at = run("app.py", tokens["annotator"])
    assert at.title[0].value == "Log in to Groundwork"
    assert "session_token" not in at.session_state


def test_without_accounts_there_is_one_local_admin_and_no_login(db, data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    create_project(db, "mail", "text", classes=["ham", "spam"])
    at = run("app.py")
    assert at.title[0].value == "Projects"
    assert at.sidebar.text_input[0].label == "You are"
    for path in PAGES:
        at.switch_page(path).run()
        assert not at.exception, path


AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "a long random secret for the tests"}
GOOGLE = {"client_id": "id", "client_secret": "secret",
          "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration"}


def _login_page(db, secrets: dict | None = None, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    if secrets:
        at.secrets = secrets
    if user:
        at.user = user
    return at.run()


def test_single_sign_on_is_offered_only_when_configured(store):
    db, project, tokens = store
    labels = [b.label for b in _login_page(db).button]
    assert not any(label.startswith("Log in with") for label in labels)
    labels = [b.label for b in _login_page(db, {"auth": {**AUTH, **GOOGLE}}).button]
    assert "Log in with accounts.google.com" in labels
    labels = [b.label for b in _login_page(db, {"auth": {**AUTH, "microsoft": GOOGLE}}).button]
    assert "Log in with Microsoft" in labels


def test_single_sign_on_maps_the_email_to_an_account(store):
    db, project, tokens = store
    db.execute("UPDATE users SET email = 'ann@example.com' WHERE name = 'ann'")
    at = _login_page(db, {"auth": {**AUTH, **GOOGLE}},
                     {"is_logged_in": True, "email": "Ann@example.com"})
    assert not at.exception and at.title[0].value == "Label · mail"
    login = audit_events(db, user="ann", actions=["login"])[0]
    assert login["details"] == {"method": "sso"}
    at = _login_page(db, {"auth": {**AUTH, **GOOGLE}},
                     {"is_logged_in": True, "email": "eve@example.com"})
    assert at.title[0].value == "Log in to Groundwork"
    assert "No Groundwork account has the email eve@example\\.com" in at.error[0].value
    assert json.loads(json.dumps(at.session_state["sso_unknown"])) == "eve@example.com"


def test_an_admin_manages_accounts_on_the_users_page(store):
    db, project, tokens = store
    at = run("labeling/pages/users.py", tokens["admin"])
    assert not at.exception and at.title[0].value == "Users"
    at.text_input(key="new-name").input("newbie")
    at.selectbox(key="new-role").set_value("annotator")
    at.text_input(key="new-password").input("password1")
    next(b for b in at.button if b.label == "Add account").click().run()
    assert not at.exception and at.success[0].value == "Added newbie (annotator)"
    at.selectbox(key="edit-user").set_value("newbie").run()
    at.multiselect(key="assigned-newbie").set_value(["mail"])
    at.button(key="save-assignments").click().run()
    assert get_user(db, "newbie").projects == {project.id}
    added = audit_events(db, actions=["user_added", "assigned"])
    assert [(e["action"], e["user"], e["target"]) for e in added][:2] == [
        ("assigned", "boss", "newbie"), ("user_added", "boss", "newbie")]


def test_the_first_account_made_in_the_app_must_be_an_admin(db, data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    at = run("labeling/pages/users.py")
    at.text_input(key="new-name").input("ann")
    at.selectbox(key="new-role").set_value("annotator")
    at.text_input(key="new-password").input("password1")
    next(b for b in at.button if b.label == "Add account").click().run()
    assert "The first account must be an admin" in at.error[0].value
    assert db["users"].count == 0
