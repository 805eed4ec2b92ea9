"""Two annotators on one project that wants two answers per item: the hand-off, in Chromium.

The first to finish is told the items wait for the other annotator (not "every item has a
label": nothing is consolidated yet), and the bar counts answers of the answers wanted.
"""

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


WAITING = re.compile(r"^You have answered every item you can\. 3 items wait for answers "
                     r"from other annotators")
DONE = re.compile("^Every item has a label")


def label_everything(page, url: str, user: str, expected: int, before: int,
                     end: re.Pattern) -> None:
    """Answer `expected` items with key 1; `before` answers exist already (of 6 wanted).

    Each answer is awaited on the progress bar's count, which changes exactly once per
    answer (the item text and the end message are briefly both on screen while the page
    redraws, so neither alone says the answer landed).
    """
    page.goto(f"{url}/label?project=claims")
    name = page.get_by_label("You are")
    name.fill(user)
    name.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("^Label · claims"))).to_be_visible()
    for done in range(before + 1, before + expected + 1):
        expect(page.get_by_test_id("stText").first).to_be_visible()
        press_key(page, "1")
        expect(page.get_by_text(re.compile(rf"^{done} of 6 answers"))).to_be_visible()
    expect(page.get_by_text(end)).to_be_visible()


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
        for user, before, end, progress in (
                ("ann", 0, WAITING, "3 of 6 answers (0 of 3 items have all 2)"),
                ("bob", 3, DONE, "6 of 6 answers (3 of 3 items have all 2)")):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            page = context.new_page()
            label_everything(page, server.url, user, expected=3, before=before, end=end)
            expect(page.get_by_text(progress)).to_be_visible()
            if user == "ann":  # nothing is finished yet: no "train a model" hint
                expect(page.get_by_text(DONE)).to_have_count(0)
            context.close()
        with sqlite3.connect(data / "groundwork.db") as conn:
            rows = conn.execute("SELECT item_id, group_concat(user) FROM annotations "
                                "WHERE retracted_at IS NULL GROUP BY item_id").fetchall()
        assert len(rows) == 3 and all(sorted(r[1].split(",")) == ["ann", "bob"] for r in rows)
    finally:
        server.stop()
