"""A class key pressed twice quickly on the Review page answers the task shown once, never
the next one.

The Review page keys its answer buttons by the task on screen (as the Label page keys
them by item: test_label_double_press.py). The second press is sent by the browser while
it still shows the first task, and reaches the server after the server has already moved
on (the answer saved, the next task claimed). To make that order certain, the server's
messages to the browser are held back (Playwright's WebSocket routing) from the first
press until after the second: exactly what a slow connection or a busy browser does.
Under one key for every task, that late press would correct the second task unseen.
"""

from __future__ import annotations

import re
import sqlite3
import time

import numpy as np
import pytest
from playwright.sync_api import expect

from labeling.items import add_items
from labeling.projects import create_project
from labeling.queue import store_predictions
from labeling.store import connect
from review.workflows import run_workflow, save_workflow
from tests.browser.conftest import AppServer, press_key

pytestmark = pytest.mark.browser


def _rows(data, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(data / "groundwork.db") as conn:
        return conn.execute(sql, args).fetchall()


def _seed(data) -> None:
    """Three items a promoted model is unsure about (0.55, 0.60, 0.65 for ham), each with
    an open review task, served least confident first."""
    db = connect(data)
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                                for i in range(3)])
        model = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    store_predictions(db, model, [1, 2, 3], ["ham", "spam"],
                      np.array([[0.55, 0.45], [0.60, 0.40], [0.65, 0.35]]))
    save_workflow(db, project, "unsure", {"confidence_below": 0.7})
    assert run_workflow(db, project, "unsure") == 3
    db.conn.close()


def _claimed(data) -> list[int]:
    """The tasks held now (the one on the reviewer's screen)."""
    return [t for (t,) in _rows(
        data, "SELECT task_id FROM review_claims WHERE expires_at > "
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') ORDER BY task_id")]


def test_pressing_a_class_key_twice_answers_only_the_task_shown(page, tmp_path):
    data = tmp_path / "store"
    _seed(data)
    server = AppServer(data)
    held = {"on": False, "messages": [], "routes": []}

    def route(ws) -> None:
        upstream = ws.connect_to_server()

        def to_browser(message) -> None:
            if held["on"]:
                held["messages"].append((ws, message))
            else:
                ws.send(message)

        ws.on_message(upstream.send)
        upstream.on_message(to_browser)
        held["routes"].append(ws)

    def shown(confidence: str):
        return page.get_by_text(re.compile(rf"^Model says ham with confidence {confidence}"))

    try:
        page.route_web_socket(re.compile(r".*/_stcore/stream$"), route)
        page.goto(f"{server.url}/review?project=mail")
        # The whole page drawn, down to its last button, before any key is pressed.
        expect(page.get_by_role("button", name="Retrain from corrected labels")).to_be_visible()
        expect(shown("0.55")).to_be_visible()
        expect(page.get_by_text("3 open · 0 completed · 0 expired")).to_be_visible()
        (first,) = _claimed(data)
        assert held["routes"], "the app's WebSocket was not routed"

        held["on"] = True  # from here the browser keeps showing the first task
        press_key(page, "1")
        deadline = time.monotonic() + 30
        while not (_rows(data, "SELECT 1 FROM review_answers")
                   and [t for t in _claimed(data) if t != first]):
            assert time.monotonic() < deadline, "the first press was not answered"
            page.wait_for_timeout(50)  # lets Playwright pass the browser's messages on
        (second,) = _claimed(data)
        # The server has saved the answer and claimed the next task; the browser has not
        # heard yet, so this press is one of the first task's "1" (ham) button.
        expect(shown("0.55")).to_be_visible()
        page.keyboard.press("1")
        page.wait_for_timeout(1500)  # the server handles the second press meanwhile
        held["on"] = False
        for ws, message in held["messages"]:
            ws.send(message)
        held["messages"].clear()

        expect(shown("0.60")).to_be_visible()
        expect(page.get_by_text("2 open · 1 completed · 0 expired")).to_be_visible()
        page.wait_for_timeout(500)
        answers = _rows(data, "SELECT task_id, labels FROM review_answers")
        assert answers == [(first, '["ham"]')], answers  # once, on the first task only
        assert _rows(data, "SELECT status FROM review_tasks WHERE id = ?", [second]) == [
            ("in progress",)]  # on screen, held, unanswered
        # The second task is answered only when it is shown and its key is pressed.
        press_key(page, "2")
        expect(shown("0.65")).to_be_visible()
        answers = _rows(data, "SELECT task_id, labels FROM review_answers ORDER BY id")
        assert answers == [(first, '["ham"]'), (second, '["spam"]')]
    finally:
        server.stop()
