"""Train page in a real browser: start a run, reload mid-run, see the progress, then promote."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from automl.training import train_project
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.store import connect
from tests.browser.conftest import AppServer
from tests.browser.test_full_loop import shot

pytestmark = pytest.mark.browser


def promoted(data) -> int:
    with sqlite3.connect(data / "groundwork.db") as conn:
        rows = conn.execute("SELECT version FROM model_versions WHERE status = 'promoted'"
                            ).fetchall()
    assert len(rows) == 1
    return rows[0][0]


def pick(page, box: str, option: str) -> None:
    """Choose in a select box; a rerun that lands while the list is open closes it: open again."""
    for attempt in range(5):
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        page.get_by_role("combobox", name=box, exact=True).click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=5_000)
            return
        except PlaywrightTimeout:
            if attempt == 4:
                raise
            page.keyboard.press("Escape")


def test_training_survives_a_reload_shows_progress_and_promotes(page, tmp_path, wine_csv):
    data = tmp_path / "store"
    db = connect(data)
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    train_project(db, get_project(db, "wine"), budget=2)  # v1
    db.conn.close()
    server = AppServer(data)
    try:
        page.goto(f"{server.url}/train?project=wine")
        expect(page.get_by_role("heading", name=re.compile("^Train · wine"))).to_be_visible(
            timeout=30_000)
        expect(page.get_by_text(re.compile(r"^Data report: 178 labels, multiclass"))
               ).to_be_visible(timeout=30_000)
        page.get_by_label("Search time budget (seconds)").fill("12")
        # The objective: macro F1 instead of the default balanced accuracy.
        pick(page, "Objective metric", "macro F1 (f1_macro)")
        page.locator('[data-test-script-state="notRunning"]').wait_for()
        page.get_by_role("button", name="Retrain from corrected labels").click()
        running = page.get_by_text(re.compile(r"^Training job \d+ running: \d+ trials done"))
        expect(running).to_be_visible(timeout=30_000)
        # A reload starts a new session: the run goes on in its own process, and the
        # page finds it again in the store.
        page.reload()
        expect(running).to_be_visible(timeout=30_000)
        # The choice is remembered for the project: the reloaded page shows it.
        expect(page.get_by_text(re.compile(r"^Data report: 178 labels, multiclass, objective "
                                           r"f1 macro"))).to_be_visible(timeout=30_000)
        expect(page.get_by_test_id("stProgress")).to_be_visible()
        expect(page.get_by_text(re.compile(r"finished: model v2"))).to_be_visible(
            timeout=90_000)
        expect(page.get_by_text(re.compile(r"^Leaderboard: \d+ trials"))).to_be_visible()
        with sqlite3.connect(data / "groundwork.db") as conn:
            assert conn.execute("SELECT metric_name FROM model_versions WHERE version = 2"
                                ).fetchone()[0] == "f1_macro"
        shot(page, "5-train")

        # Promote the other version by hand, then roll back to the one promoted before.
        before = promoted(data)
        other = 1 if before == 2 else 2
        pick(page, "Version", f"v{other}")
        expect(page.get_by_text(re.compile(rf"^v{other}: cv"))).to_be_visible()
        page.get_by_role("button", name="Promote this version").click()
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        page.wait_for_function(
            "() => !document.querySelector('[data-test-script-state=\"running\"]')")
        deadline_ok = False
        for _ in range(50):
            if promoted(data) == other:
                deadline_ok = True
                break
            page.wait_for_timeout(200)
        assert deadline_ok, "promotion did not reach the store"
        page.get_by_role("button", name="Roll back").click()
        expect(page.get_by_text(f"Rolled back to v{before}.")).to_be_visible()
        assert promoted(data) == before
    finally:
        server.stop()
