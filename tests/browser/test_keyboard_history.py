"""The keyboard flow beyond class keys: arrows through the session's answers, Backspace undo."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project
from labeling.store import connect
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def test_arrows_change_an_earlier_answer_and_backspace_undoes(page, tmp_path):
    data = tmp_path / "store"
    db = connect(data)
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                                for i in range(5)])
    db.conn.close()
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/label?project=mail")
        expect(page.get_by_text("0 of 5 items labeled")).to_be_visible()
        first = page.get_by_test_id("stText").first.inner_text()
        press_key(page, "2")  # spam
        expect(page.get_by_text("1 of 5 items labeled")).to_be_visible()
        press_key(page, "1")  # ham
        expect(page.get_by_text("2 of 5 items labeled")).to_be_visible()
        press_key(page, "ArrowLeft")
        expect(page.get_by_text(re.compile("^Your answer 2 of 2"))).to_be_visible()
        press_key(page, "ArrowLeft")
        expect(page.get_by_text(re.compile("^Your answer 1 of 2"))).to_be_visible()
        expect(page.get_by_test_id("stText").first).to_have_text(first)
        press_key(page, "1")  # change the first answer from spam to ham
        expect(page.get_by_text(re.compile("^Your answer 2 of 2"))).to_be_visible()
        press_key(page, "ArrowRight")
        expect(page.get_by_text(re.compile("^Your answer"))).to_have_count(0)
        press_key(page, "Backspace")
        expect(page.get_by_text("1 of 5 items labeled")).to_be_visible()
        with sqlite3.connect(data / "groundwork.db") as conn:
            live = conn.execute("SELECT i.content, a.labels FROM annotations a JOIN items i "
                                "ON i.id = a.item_id WHERE a.retracted_at IS NULL").fetchall()
        assert live == [(first, '["ham"]')]
    finally:
        server.stop()
