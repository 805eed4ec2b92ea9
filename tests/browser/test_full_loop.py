"""The whole loop as a new user walks it, in a real Chromium against a real server.

import (upload) -> label with the keyboard -> train -> model appears -> review a
flagged prediction with the keyboard -> retrain; the store is checked after each step.
Screenshots land in docs/screenshots for the README.
"""

from __future__ import annotations

import re
import sqlite3
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import press_key
from tests.conftest import write_digits_folder

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def query(data_dir: Path, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(data_dir / "groundwork.db") as conn:
        return conn.execute(sql, args).fetchall()


def count(data_dir: Path, sql: str, args=()) -> int:
    return query(data_dir, sql, args)[0][0]


def make_zip(tmp_path: Path) -> Path:
    folder = write_digits_folder(tmp_path / "digits", per_class=16, classes=(0, 1))
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            zf.write(f, f.relative_to(folder).as_posix())
    return archive


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def current_key(page) -> str:
    """The item key is the image caption ("<true digit>/<n>.png" from the zip's folders)."""
    caption = page.get_by_test_id("stImageCaption").first
    expect(caption).to_be_visible()
    return caption.inner_text().strip()


def go(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(rf"^{title}"))).to_be_visible()


def test_whole_loop_import_label_train_review_retrain(app_server, page, tmp_path):
    data = app_server.data_dir
    archive = make_zip(tmp_path)

    # 1. Import by upload, with the zip's class folders kept as hidden gold.
    page.goto(app_server.url)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    page.get_by_label("Project name").fill("digits")
    page.get_by_test_id("stSelectbox").filter(has_text="Zip sub-folders are").click()
    page.get_by_role("option", name="gold").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(archive))
    expect(page.get_by_text("digits.zip")).to_be_visible()
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("Imported 32 items into digits")).to_be_visible()
    shot(page, "1-import")
    assert count(data, "SELECT count(*) FROM items") == 32
    assert count(data, "SELECT count(*) FROM items WHERE gold IS NOT NULL") == 32
    assert count(data, "SELECT count(*) FROM annotations") == 0

    # 2. Label with the keyboard: "1" is class 0, "2" is class 1; undo once with "u".
    go(page, "Label")
    page.locator('[data-test-script-state="notRunning"]').wait_for()
    labeled = 0
    for _ in range(12):
        key = current_key(page)
        press_key(page, "1" if key.startswith("0/") else "2")
        labeled += 1
        expect(page.get_by_text(f"{labeled} of 32 items labeled")).to_be_visible()
        expect(page.get_by_test_id("stImageCaption").first).not_to_have_text(key)
    press_key(page, "u")
    labeled -= 1
    expect(page.get_by_text(f"{labeled} of 32 items labeled")).to_be_visible()
    key = current_key(page)
    press_key(page, "1" if key.startswith("0/") else "2")
    labeled += 1
    expect(page.get_by_text(f"{labeled} of 32 items labeled")).to_be_visible()
    shot(page, "2-label")
    rows = query(data, "SELECT a.labels, i.gold, a.source, a.user, a.duration_ms, a.retracted_at "
                       "FROM annotations a JOIN items i ON i.id = a.item_id")
    live = [r for r in rows if r[5] is None]
    assert len(rows) == 13 and len(live) == 12  # the undone answer stays, retracted
    assert all(r[0] == r[1] for r in live)  # every keyboard answer matches the hidden gold
    assert {r[2] for r in live} == {"human"} and {r[3] for r in live} == {"local-admin"}
    assert all(r[4] is not None and r[4] >= 0 for r in live)

    # 3. Train in the background and see the model appear.
    go(page, "Train")
    page.get_by_label("Search time budget (seconds)").fill("5")
    page.get_by_role("button", name="Train model").click()
    expect(page.get_by_text(re.compile(r"finished: model v1"))).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    shot(page, "3-train")
    model = query(data, "SELECT id, status, train_size, holdout_size FROM model_versions")
    assert len(model) == 1 and model[0][1] == "promoted"
    assert model[0][2] + model[0][3] == 12
    assert count(data, "SELECT count(*) FROM predictions p JOIN items i ON i.id = p.item_id "
                       "WHERE p.model_version_id = ? AND i.n_labels = 0",
                 (model[0][0],)) == 20  # the unlabeled pool is scored

    # 4. Review: flag every prediction (threshold 1.0), correct one with the keyboard.
    go(page, "Review")
    slider = page.get_by_role("slider")
    slider.focus()
    slider.press("End")
    expect(page.get_by_text("This rule would open 20 new tasks.")).to_be_visible()
    page.get_by_role("button", name="Open review tasks").click()
    expect(page.get_by_text(re.compile(r"^20 open"))).to_be_visible()
    expect(page.get_by_text("Opened 20 review tasks")).to_be_visible()
    # Shortcuts are ignored while a form control has focus: take it off the slider/button.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.locator('[data-test-script-state="notRunning"]').wait_for()
    key = current_key(page)
    press_key(page, "1" if key.startswith("0/") else "2")
    expect(page.get_by_text(re.compile(r"^19 open · 1 completed"))).to_be_visible()
    shot(page, "4-review")
    review = query(data, "SELECT a.labels, i.gold, i.key FROM annotations a "
                         "JOIN items i ON i.id = a.item_id WHERE a.source = 'review'")
    assert len(review) == 1 and review[0][0] == review[0][1] and review[0][2] == key
    assert count(data, "SELECT count(*) FROM review_tasks WHERE status = 'completed'") == 1

    # 5. Retrain from corrected labels: the review answer is in the new training set.
    page.get_by_role("button", name="Retrain from corrected labels").click()
    expect(page.get_by_text(re.compile(r"Started training job"))).to_be_visible()
    go(page, "Train")
    expect(page.get_by_text(re.compile(r"finished: model v2"))).to_be_visible(timeout=120_000)
    shot(page, "5-retrain")
    v2 = query(data, "SELECT train_size + holdout_size FROM model_versions WHERE version = 2")
    assert v2 == [(13,)]
