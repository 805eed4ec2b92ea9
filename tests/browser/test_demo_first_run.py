"""`make run` on an empty store: the demo project is seeded and can be labeled at once."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def test_first_run_seeds_the_digits_demo_and_a_keypress_labels_it(page, tmp_path):
    server = AppServer(tmp_path / "store", env={"GROUNDWORK_DEMO": "1"})
    try:
        page.goto(server.url)
        # The projects table is drawn on a canvas; its accessible cells carry the text.
        expect(page.get_by_test_id("glide-cell-0-0")).to_have_text("digits-demo",
                                                                   timeout=60_000)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Label", exact=True).click()
        expect(page.get_by_role("heading", name=re.compile("^Label · digits-demo"))).to_be_visible()
        expect(page.get_by_text("0 of 1797 items labeled")).to_be_visible()
        expect(page.get_by_test_id("stImage").first).to_be_visible()
        press_key(page, "4")
        expect(page.get_by_text("1 of 1797 items labeled")).to_be_visible()
        with sqlite3.connect(server.data_dir / "groundwork.db") as conn:
            rows = conn.execute("SELECT labels, source FROM annotations").fetchall()
            gold_shown = conn.execute("SELECT count(*) FROM items WHERE gold IS NOT NULL")
            assert gold_shown.fetchone()[0] == 1797
        assert rows == [('["3"]', "human")]  # key 4 is the fifth class, digit "3"
        # Hidden gold is never on the page an annotator sees.
        assert "gold" not in page.content().lower()
    finally:
        server.stop()
