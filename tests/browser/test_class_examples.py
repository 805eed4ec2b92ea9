"""Per-class examples in the Label page's Instructions, as Chromium draws them.

AppTest sees what the script sends; only a browser shows that the thumbnails
really load and that markup in a text example or a class name stays text.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from labeling.annotations import record_annotation
from labeling.examples import pin_example
from labeling.importers import import_source
from labeling.items import add_items, iter_items
from labeling.projects import create_project, get_project
from labeling.store import connect
from tests.browser.conftest import AppServer
from tests.conftest import write_digits_folder

pytestmark = pytest.mark.browser

HOSTILE = '<b>buy now</b> <img src="x" alt="injected"> **not bold**'


def open_instructions(page, url: str, project: str):
    page.goto(f"{url}/label?project={project}")
    expect(page.get_by_role("heading", name=re.compile(f"^Label · {project}"))).to_be_visible()
    box = page.get_by_test_id("stExpander").filter(has_text="Instructions")
    box.get_by_text("Instructions", exact=True).click()
    return box


def test_examples_show_thumbnails_and_keep_markup_as_text(page, tmp_path):
    data = tmp_path / "store"
    db = connect(data)
    import_source(db, "digits", write_digits_folder(tmp_path / "digits", per_class=5,
                                                    classes=(3, 8)), "image", folders_as="gold")
    digits = get_project(db, "digits")
    for item in list(iter_items(db, digits))[:-1]:  # one item is left to label
        record_annotation(db, digits, item.id, item.gold, user="ann")
    mail = create_project(db, "mail", "text", classes=["ham", "spam *now*"])
    with db.atomic():
        add_items(db, mail, [{"key": "evil", "content": HOSTILE, "sha256": "evil"},
                             {"key": "plain", "content": "lunch at noon?", "sha256": "plain"},
                             {"key": "todo", "content": "still to label", "sha256": "todo"}])
    ids = dict(db.execute("SELECT key, id FROM items WHERE project_id = ?", [mail.id]))
    record_annotation(db, mail, ids["evil"], "spam *now*", user="ann")
    record_annotation(db, mail, ids["plain"], "ham", user="ann")
    pin_example(db, mail, "spam *now*", ids["todo"])
    db.conn.close()
    server = AppServer(data)
    try:
        # Images: each class under its own heading, three thumbnails that really loaded.
        box = open_instructions(page, server.url, "digits")
        for index, digit in enumerate(("3", "8")):
            block = box.locator(f".st-key-examples-{index}")
            expect(block.locator("strong").first).to_have_text(digit)
            thumbs = block.get_by_role("img", name=f"example of {digit}: {digit}/")
            expect(thumbs).to_have_count(3)
            for i in range(3):
                expect(thumbs.nth(i)).to_be_visible()
                assert thumbs.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        # the item being labeled is still drawn below, with its own caption
        expect(page.get_by_test_id("stImageCaption").first).to_have_text(
            re.compile(r"^8\W\d+\.png$"))
        assert "gold" not in page.content().lower()  # hidden gold ranks examples, unseen

        # Text: markup in an example and in a class name is shown, never rendered.
        box = open_instructions(page, server.url, "mail")
        spam = box.locator(".st-key-examples-1")
        expect(spam.locator("strong").first).to_have_text("spam *now*")
        shown = spam.get_by_test_id("stCode")
        expect(shown).to_have_count(2)
        expect(shown.nth(0)).to_contain_text("still to label")  # the pin comes first
        expect(shown.nth(1)).to_contain_text(HOSTILE)
        assert box.locator("img").count() == 0 and box.locator("b").count() == 0
        expect(spam.get_by_text(re.compile("pinned by the project"))).to_be_visible()
        expect(box.locator(".st-key-examples-0").get_by_test_id("stCode")).to_have_text(
            "lunch at noon?")
    finally:
        server.stop()
