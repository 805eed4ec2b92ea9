"""Logging in, in Chromium: an annotator sees only Label, labels, stays logged in across a
reload, logs out; five wrong passwords lock the account."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project
from labeling.store import connect
from labeling.users import add_user, assign
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "store"
    db = connect(data)
    project = create_project(db, "claims", "text", classes=["true", "false"])
    create_project(db, "secret", "text", classes=["a", "b"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"claim number {i}",
                                 "sha256": str(i)} for i in range(3)])
    add_user(db, "boss", "admin", "admin password")
    add_user(db, "ann", "annotator", "ann password")
    assign(db, "ann", "claims")
    add_user(db, "rita", "reviewer", "rita password")
    assign(db, "rita", "claims")
    db.conn.close()
    app = AppServer(data)
    yield app
    app.stop()


def failures(server) -> int:
    with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
        return conn.execute("SELECT failed_logins FROM users WHERE name = 'ann'").fetchone()[0]


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def log_in(page, name: str, password: str) -> None:
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()


def test_an_annotator_logs_in_labels_reloads_and_logs_out(page, server):
    page.goto(f"{server.url}/label")
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible(timeout=60_000)
    expect(page.get_by_label("You are")).to_have_count(0)  # no free-text name with accounts
    log_in(page, "ann", "ann password")
    expect(page.get_by_role("heading", name=re.compile("^Label · claims"))).to_be_visible(
        timeout=30_000)
    expect(page.get_by_text("Signed in as")).to_be_visible()
    # Only Label: no other page in the navigation, and no other project to pick.
    for title in ("Projects", "Train", "Review", "Auto-label", "Users", "Audit"):
        expect(page.get_by_role("link", name=title)).to_have_count(0)
    shown = page.get_by_test_id("stText").first.inner_text()
    press_key(page, "2")
    expect(page.get_by_text("1 of 3 items labeled")).to_be_visible()
    with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
        rows = conn.execute("SELECT a.user, a.labels, i.content FROM annotations a "
                            "JOIN items i ON i.id = a.item_id").fetchall()
    assert rows == [("ann", '["false"]', shown)]

    page.reload()
    expect(page.get_by_role("heading", name=re.compile("^Label · claims"))).to_be_visible(
        timeout=30_000)
    expect(page.get_by_text("1 of 3 items labeled")).to_be_visible()
    page.goto(f"{server.url}/train")  # another role's page: it never runs for ann
    expect(page.get_by_text("That page is not open to annotators")).to_be_visible(
        timeout=30_000)
    expect(page.get_by_role("heading", name=re.compile("^Train"))).to_have_count(0)
    page.get_by_role("link", name="Go to Label").click()
    expect(page.get_by_role("heading", name=re.compile("^Label · claims"))).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible()
    page.reload()  # the session is over on the server and the cookie is gone
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible()
    with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
        assert conn.execute("SELECT count(*) FROM sessions WHERE revoked_at IS NULL"
                            ).fetchone()[0] == 0


def test_five_wrong_passwords_lock_the_account(page, server):
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible(timeout=60_000)
    for attempt in range(1, 5):
        log_in(page, "ann", f"wrong {attempt}")
        expect(page.get_by_text("Login failed: wrong user name or password")).to_be_visible()
        wait_until(lambda n=attempt: failures(server) == n)  # this attempt, not the last one
    log_in(page, "ann", "wrong 5")
    expect(page.get_by_text(re.compile(r"Login failed: too many failed logins: ann is locked "
                                       r"until \d{4}-\d\d-\d\d \d\d:\d\d UTC"))).to_be_visible()
    log_in(page, "ann", "ann password")  # even the right password waits for the lock
    expect(page.get_by_text(re.compile("ann is locked until"))).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("^Label"))).to_have_count(0)
    with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
        assert conn.execute("SELECT locked_until FROM users WHERE name = 'ann'"
                            ).fetchone()[0] is not None


def test_an_admin_sees_every_page(page, server):
    page.goto(server.url)
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible(timeout=60_000)
    log_in(page, "boss", "admin password")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible(timeout=30_000)
    for title in ("Label", "Train", "Review", "Users", "Audit"):
        expect(page.get_by_role("link", name=title, exact=True)).to_be_visible()
    page.get_by_role("link", name="Audit", exact=True).click()
    expect(page.get_by_role("heading", name="Audit")).to_be_visible()


def test_a_reviewer_sees_only_review_and_other_pages_refuse(page, server):
    page.goto(f"{server.url}/review")
    expect(page.get_by_role("heading", name="Log in to Groundwork")).to_be_visible(timeout=60_000)
    log_in(page, "rita", "rita password")
    expect(page.get_by_role("heading", name=re.compile("^Review"))).to_be_visible(timeout=30_000)
    for title in ("Projects", "Label", "Train", "Workflows", "Auto-label", "Users", "Audit"):
        expect(page.get_by_role("link", name=title, exact=True)).to_have_count(0)
    for url, heading in (("label", "^Label"), ("train", "^Train"), ("users", "^Users")):
        page.goto(f"{server.url}/{url}")  # typed by hand: the page never runs for her
        expect(page.get_by_text("That page is not open to reviewers")).to_be_visible(
            timeout=30_000)
        expect(page.get_by_role("heading", name=re.compile(heading))).to_have_count(0)
    with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
        assert conn.execute("SELECT count(*) FROM annotations").fetchone()[0] == 0
