"""Two annotators on one project that wants two answers per item: the hand-off, in Chromium."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project, set_annotations_per_item
from labeling.store import connect
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def label_everything(page, url: str, user: str, expected: int) -> None:
    page.goto(f"{url}/label?project=claims")
    name = page.get_by_label("You are")
    name.fill(user)
    name.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("^Label · claims"))).to_be_visible()
    for _ in range(expected):
        text = page.get_by_test_id("stText").first
        expect(text).to_be_visible()
        shown = text.inner_text()
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        press_key(page, "1")
        expect(page.get_by_test_id("stText").first.or_(
            page.get_by_text(re.compile("^Every item has a label")))).not_to_have_text(shown)
    expect(page.get_by_text(re.compile("^Every item has a label"))).to_be_visible()


def test_each_item_goes_to_two_different_people(browser, tmp_path):
    data = tmp_path / "store"
    db = connect(data)
    project = create_project(db, "claims", "text", classes=["true", "false"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"claim number {i}",
                                 "sha256": str(i)} for i in range(3)])
    set_annotations_per_item(db, project, 2)
    db.conn.close()
    server = AppServer(data)
    try:
        for user in ("ann", "bob"):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            label_everything(context.new_page(), server.url, user, expected=3)
            context.close()
        with sqlite3.connect(data / "groundwork.db") as conn:
            rows = conn.execute("SELECT item_id, group_concat(user) FROM annotations "
                                "WHERE retracted_at IS NULL GROUP BY item_id").fetchall()
        assert len(rows) == 3 and all(sorted(r[1].split(",")) == ["ann", "bob"] for r in rows)
    finally:
        server.stop()
