"""Page logic through Streamlit's AppTest, against a real store.

Keyboard shortcuts only exist in a browser (tests/browser); here the same
buttons are clicked through AppTest to check what each page records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from labeling.items import add_items
from labeling.projects import create_project
from labeling.queue import store_predictions, store_queue_scores

ROOT_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(db, data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    project = create_project(db, "mail", "text", classes=["ham", "spam"],
                             instructions="Spam sells <b>something</b>.")
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message number {i}",
                                 "sha256": str(i)} for i in range(6)])
    return db, project


def page(path: str, project: str | None = "mail", user: str = "ann") -> AppTest:
    at = AppTest.from_file(str(ROOT_DIR / path), default_timeout=30)
    if project:
        at.session_state["project_name"] = project
    at.session_state["user"] = user
    return at.run()


def button(at: AppTest, key: str):
    """The button keyed `key`, or `key-<id>` (the Label page keys its answer buttons by the
    item shown, the Review page by the task shown, so a stale key press cannot answer
    another one)."""
    exact = [b for b in at.button if b.key == key]
    if exact:
        return exact[0]
    return next(b for b in at.button if re.fullmatch(rf"{re.escape(key)}-\d+", b.key or ""))


def test_label_page_records_answers_skips_and_undoes(store):
    db, project = store
    at = page("labeling/pages/label.py")
    assert not at.exception
    assert "0 of 6 items labeled" in at.markdown[0].value or any(
        "0 of 6 items labeled" in str(p.proto) for p in at.get("progress"))
    shown = at.text[0].value
    button(at, "cls-1").click().run()
    rows = list(db.query("SELECT a.labels, a.user, a.duration_ms, i.content FROM annotations a "
                         "JOIN items i ON i.id = a.item_id"))
    assert len(rows) == 1 and rows[0]["labels"] == '["spam"]' and rows[0]["user"] == "ann"
    assert rows[0]["content"] == shown and rows[0]["duration_ms"] >= 0
    assert at.text[0].value != shown  # auto-advanced
    pace = at.dataframe[0].value  # the pace table (text items are shown with st.text)
    assert pace.set_index("user").loc["ann", "answers"] == 1

    skipped = at.text[0].value
    button(at, "skip").click().run()
    assert at.text[0].value != skipped
    assert db["annotations"].count == 1

    button(at, "undo").click().run()
    assert at.text[0].value == shown  # the undone item comes back
    assert db.execute(
        "SELECT count(*) FROM annotations WHERE retracted_at IS NULL").fetchone()[0] == 0


def test_label_page_shows_the_model_suggestion(store):
    db, project = store
    with db.atomic():
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    store_predictions(db, mv, list(range(1, 7)), ["ham", "spam"],
                      np.array([[0.3, 0.7]] * 6))
    at = page("labeling/pages/label.py")
    assert any("Model suggests **spam** (confidence 0.70)" in c.value for c in at.caption)


def test_label_page_suggests_from_the_quick_refit_before_any_trained_model(store):
    db, project = store
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    store_queue_scores(db, project, ids, list(range(len(ids))), [["spam"]] * len(ids),
                       [0.8] * len(ids), scorer="quick:4")
    at = page("labeling/pages/label.py")
    assert any("Quick model (refit as you label) suggests **spam** (confidence 0.80)" in c.value
               for c in at.caption)
    assert any("chosen by model uncertainty (margin)" in c.value for c in at.caption)
    button(at, "accept").click().run()
    assert json.loads(db.execute("SELECT labels FROM annotations").fetchone()[0]) == ["spam"]


def test_instructions_are_markdown_but_markup_stays_text(store):
    at = page("labeling/pages/label.py")
    md = at.expander[0].markdown[0]
    assert md.value == "Spam sells <b>something</b>."
    assert md.proto.allow_html is False


def test_pages_without_a_project_say_what_to_do(store):
    pages = ("labeling/pages/label.py", "review/pages/review_tasks.py", "automl/pages/train.py")
    for path in pages:
        at = page(path, project=None)
        assert not at.exception, path
        assert "Projects" in at.info[0].value


def test_projects_page_lists_projects_with_counts(store):
    at = page("labeling/pages/projects.py")
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["project"]) == ["mail"] and list(frame["items"]) == [6]


def test_review_page_opens_tasks_and_accepts_with_the_accept_button(store):
    db, project = store
    with db.atomic():
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    probs = np.array([[0.55, 0.45], [0.9, 0.1], [0.4, 0.6], [0.95, 0.05], [0.2, 0.8], [0.5, 0.5]])
    store_predictions(db, mv, list(range(1, 7)), ["ham", "spam"], probs)
    at = page("review/pages/review_tasks.py")
    assert not at.exception
    at.slider(key="review-below").set_value(0.7).run()
    assert any("would open 3 new tasks" in c.value for c in at.caption)
    button(at, "open-review").click().run()
    assert db["review_tasks"].count == 3
    assert any("flagged because confidence < 0.70" in m.value for m in at.markdown)
    button(at, "accept").click().run()
    done = list(db.query("SELECT t.status, a.source, a.labels, a.user FROM review_tasks t "
                         "JOIN annotations a ON a.id = t.annotation_id"))
    # the least confident prediction (0.5/0.5 -> "ham") is reviewed first
    assert done == [{"status": "completed", "source": "review", "labels": '["ham"]',
                     "user": "ann"}]
    button(at, "fix-1").click().run()
    assert db.execute("SELECT count(*) FROM review_tasks WHERE status = 'completed'"
                      ).fetchone()[0] == 2
    button(at, "review-undo").click().run()
    assert db.execute("SELECT count(*) FROM review_tasks WHERE status = 'completed'"
                      ).fetchone()[0] == 1


def test_label_history_back_change_forward_and_backspace_undo(store):
    db, project = store
    at = page("labeling/pages/label.py")
    first = at.text[0].value
    button(at, "cls-1").click().run()  # first item: spam
    second = at.text[0].value
    button(at, "cls-0").click().run()  # second item: ham
    button(at, "back").click().run()
    assert "Your answer 2 of 2" in at.info[0].value and at.text[0].value == second
    button(at, "back").click().run()
    assert "Your answer 1 of 2" in at.info[0].value and at.text[0].value == first
    button(at, "cls-0").click().run()  # change the first answer to ham
    assert "Your answer 2 of 2" in at.info[0].value  # moved on to the next answer
    live = list(db.query("SELECT i.content, a.labels FROM annotations a JOIN items i "
                         "ON i.id = a.item_id WHERE a.retracted_at IS NULL ORDER BY a.id"))
    assert {r["content"]: r["labels"] for r in live} == {first: '["ham"]', second: '["ham"]'}
    assert db["annotations"].count == 3  # the replaced answer stays on record, retracted
    button(at, "forward").click().run()
    assert not at.info and at.text[0].value not in (first, second)  # back to the queue
    button(at, "undo-backspace").click().run()  # Backspace undoes like U
    assert db.execute("SELECT count(*) FROM annotations WHERE retracted_at IS NULL"
                      ).fetchone()[0] == 1


def test_a_second_key_press_for_an_answered_item_never_answers_the_next(store):
    """Issue 3: "1" pressed twice quickly. The browser still shows the first item when the
    second press leaves it, so it reports a press of the first item's button; by then the
    server has moved on to the second item. That press must change nothing."""
    db, project = store
    at = page("labeling/pages/label.py")
    first = at.text[0].value
    pressed = button(at, "cls-0").click()
    stale = pressed._widget_state  # what the browser sends for the second press
    at.run()
    second = at.text[0].value
    assert second != first
    states = at._tree.get_widget_states()  # the page as the server now has it ...
    states.widgets.append(stale)  # ... plus the press for the first item's button
    at._run(states)
    assert not at.exception
    rows = list(db.query("SELECT i.content, a.labels FROM annotations a JOIN items i "
                         "ON i.id = a.item_id"))
    assert rows == [{"content": first, "labels": '["ham"]'}]  # one answer, on the first item
    assert at.text[0].value == second  # the second item waits for an answer of its own
    button(at, "cls-1").click().run()
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == 2


def test_the_label_page_leases_its_item_and_a_reload_shows_it_again(store):
    """Issue 6: the item shown is leased to its annotator; another annotator is shown
    another item, and when all are held the page says so instead of "every item"."""
    db, project = store
    at = page("labeling/pages/label.py")
    shown = at.text[0].value
    assert [r["user"] for r in db.query("SELECT user FROM leases")] == ["ann"]
    assert page("labeling/pages/label.py").text[0].value == shown  # a reload: same item
    from labeling.leases import lease_next_items, release_lease

    held = lease_next_items(db, project, n=10, user="bob")
    assert len(held) == 5
    assert shown not in {db["items"].get(r["id"])["content"] for r in held}
    at = page("labeling/pages/label.py", user="carol")
    assert not at.exception and not at.text and not at.success
    assert at.info[0].value == ("All remaining items are being labeled by others; try again "
                                "in a minute.")
    button(at, "retry").click().run()
    assert "try again in a minute" in at.info[0].value
    release_lease(db, project, held[0]["id"], "bob")  # bob skips one: carol can have it
    button(at, "retry").click().run()
    assert at.text[0].value == db["items"].get(held[0]["id"])["content"]
    button(at, "cls-0").click().run()  # answered; the rest is still held by ann and bob
    assert "being labeled by others" in at.info[0].value


def test_with_two_answers_wanted_the_first_annotator_is_told_items_wait_for_others(store):
    """Issue 3: after ann answered every item of a project wanting two answers, she was told
    "Every item has a label... Train a model" while each item still waited for a second
    person, and the bar counted items answered once as done."""
    db, project = store
    from labeling.projects import set_annotations_per_item

    set_annotations_per_item(db, project, 2)
    at = page("labeling/pages/label.py", user="ann")
    assert at.get("progress")[0].proto.text == "0 of 12 answers (0 of 6 items have all 2)"
    for _ in range(6):
        button(at, "cls-0").click().run()
    assert not at.exception and not at.success
    bar = at.get("progress")[0].proto
    assert bar.text == "6 of 12 answers (0 of 6 items have all 2)" and bar.value == 50
    assert at.info[0].value.startswith("You have answered every item you can. 6 items wait "
                                       "for answers from other annotators")
    bob = page("labeling/pages/label.py", user="bob")
    for _ in range(6):
        button(bob, "cls-0").click().run()
    assert bob.get("progress")[0].proto.text == "12 of 12 answers (6 of 6 items have all 2)"
    assert bob.success[0].value.startswith("Every item has a label")
    assert not bob.info


def test_multi_label_enter_accepts_an_empty_suggested_set_and_0_answers_no_tags(store):
    """A model that gives no tag p >= 0.5 suggests the empty set: Enter accepts it ("Accept
    no tags"), as it accepts any suggestion; "No tags apply" (key 0) answers it outright."""
    db, _ = store
    tags = create_project(db, "tags", "text", task="multi-label", classes=["a", "b", "c"])
    with db.atomic():
        add_items(db, tags, [{"key": f"t{i}", "content": f"note {i}", "sha256": f"t{i}"}
                             for i in range(3)])
    ids = [r[0] for r in db.execute("SELECT id FROM items WHERE project_id = ? ORDER BY id",
                                    [tags.id])]
    store_queue_scores(db, tags, ids[:2], [0, 1], [[], []], [0.6, 0.6], scorer="quick:4")
    at = page("labeling/pages/label.py", project="tags")
    assert any("suggests **(none)**" in c.value for c in at.caption)
    submit = button(at, "submit")
    assert submit.label == "Accept no tags" and not submit.disabled
    assert submit.proto.shortcut.lower() == "enter"
    submit.click().run()
    assert any(c.value == "Saved no tags" for c in at.caption)
    button(at, "none").click().run()
    assert [json.loads(r[0]) for r in db.execute(
        "SELECT labels FROM annotations WHERE project_id = ? ORDER BY id", [tags.id])] == [[], []]
    assert button(at, "submit").label == "Submit" and button(at, "submit").disabled  # nothing
    button(at, "cls-2").click().run()  # suggested, nothing toggled: nothing to submit yet
    assert button(at, "submit").label == "Submit c"


def _stored_curve(db, project, accuracies: list[float]) -> None:
    """Refit measurements as the background refit stores them (one row per refit)."""
    with db.atomic():
        db["learning_curve"].insert_all(
            {"project_id": project.id, "labels": 20 * (i + 1), "accuracy": accuracy,
             "holdout_size": 4 * (i + 1), "strategy": "margin", "model": "logistic regression",
             "seconds": 0.1, "created_at": f"2026-01-0{i + 1}T00:00:00Z"}
            for i, accuracy in enumerate(accuracies))


@pytest.mark.parametrize(("accuracies", "flattened_at"), [
    ([0.60, 0.80, 0.805, 0.807, 0.806, 0.808], 40),  # three refits gain under 0.01 after 40
    ([0.50, 0.60, 0.70, 0.80, 0.90, 0.95], None),  # still rising
], ids=["flat", "rising"])
def test_savings_page_says_when_the_live_curve_has_flattened(store, accuracies, flattened_at):
    db, project = store
    _stored_curve(db, project, accuracies)
    at = page("automl/pages/savings.py")
    assert not at.exception
    assert any("latest: " in c.value and "at 120 labels" in c.value for c in at.caption)
    hints = [i.value for i in at.info if "The curve has flattened" in i.value]
    if flattened_at is None:
        assert hints == []
    else:
        assert hints == [f"The curve has flattened since about {flattened_at} labels: more "
                         "labels of this kind gain little. Consider training (Train), "
                         "auto-labeling the confident rest (Auto-label), or reviewing (Review)."]


@pytest.fixture
def scored(store):
    """600 text items with a promoted model's stored predictions, confidence falling from
    0.99 to 0.51; the held-out ones are answered by a person: right where the model is sure
    (confidence >= 0.8), wrong on every third below."""
    from labeling.annotations import record_annotation
    from labeling.splits import in_holdout

    db, _ = store
    project = create_project(db, "scored", "text", classes=["ham", "spam"])
    n = 600
    with db.atomic():
        add_items(db, project, [{"key": f"s{i}", "content": f"scored {i}", "sha256": f"s{i}"}
                                for i in range(n)])
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    items = list(db.query("SELECT id, key FROM items WHERE project_id = ? ORDER BY id",
                          [project.id]))
    spam = np.linspace(0.99, 0.51, n)
    store_predictions(db, mv, [r["id"] for r in items], ["ham", "spam"],
                      np.column_stack([1 - spam, spam]))
    for i, row in enumerate(items):
        if in_holdout(project.id, row["key"]):
            wrong = spam[i] < 0.8 and i % 3 == 0
            record_annotation(db, project, row["id"], "ham" if wrong else "spam", user="ann")
    return db, project


def test_autolabel_chart_marks_the_chosen_threshold_on_the_chart(scored):
    db, project = scored
    from labeling.autolabel import plan_autolabel

    at = page("labeling/pages/autolabel.py", project="scored")
    assert not at.exception
    at.number_input(key="autolabel-target").set_value(0.9).run()
    plan = plan_autolabel(db, project, 0.9)
    assert plan["threshold"] is not None and 0 < plan["coverage"] < 1
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    layers = {layer.get("name"): layer for layer in spec["layer"]}
    (point,) = layers["chosen-point"]["data"]["values"]
    assert point["threshold"] == pytest.approx(plan["threshold"])
    assert point["coverage"] == pytest.approx(plan["coverage"])
    assert point["accuracy"] == pytest.approx(plan["estimated_accuracy"])
    assert layers["chosen-point"]["mark"]["type"] == "point"
    assert layers["chosen-rule"]["data"]["values"][0]["coverage"] == pytest.approx(
        plan["coverage"])
    assert layers["chosen-label"]["data"]["values"][0]["label"] == (
        f"chosen: confidence ≥ {plan['threshold']:.3f}")
    # The chosen point lies on the drawn curve: the curve's point at that threshold.
    on_curve = next(p for p in plan["curve"] if p["threshold"] == plan["threshold"])
    assert (on_curve["coverage"], on_curve["accuracy"]) == (point["coverage"],
                                                            point["accuracy"])
    target_rule = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule"
                       and "target" in layer["data"]["values"][0])
    assert target_rule["data"]["values"] == [{"target": 0.9}]


def test_autolabel_chart_has_no_chosen_point_when_no_threshold_is_certified(scored):
    at = page("labeling/pages/autolabel.py", project="scored")
    at.number_input(key="autolabel-target").set_value(0.999).run()
    assert not at.exception and at.warning  # the page says why nothing is certified
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert not [layer for layer in spec["layer"] if layer.get("name", "").startswith("chosen")]


def test_label_page_buttons_carry_their_keyboard_shortcuts(store):
    """Issue 3: every action has a key, given to Streamlit as the button's shortcut (which
    the browser shows in the button: tests/browser/test_label_multilabel.py)."""
    db, project = store
    ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    store_queue_scores(db, project, ids, list(range(len(ids))), [["spam"]] * len(ids),
                       [0.8] * len(ids), scorer="quick:4")
    at = page("labeling/pages/label.py")
    keys = {re.sub(r"-\d+$", "", b.key): b.proto.shortcut.lower() for b in at.button
            if b.key and not b.key.startswith(("answers", "examples"))}
    assert keys == {"cls-0": "1", "cls-1": "2", "accept": "enter", "skip": "s", "undo": "u",
                    "undo-backspace": "backspace", "back": "left", "forward": "right"}
    many = create_project(db, "many", "text", classes=[f"c{i}" for i in range(11)])
    with db.atomic():
        add_items(db, many, [{"key": "m", "content": "one", "sha256": "m"}])
    at = page("labeling/pages/label.py", project="many")
    shortcuts = [button(at, f"cls-{i}").proto.shortcut for i in range(11)]
    assert shortcuts == [str(i) for i in range(1, 10)] + ["", ""]  # 1..9, then by click


def test_undo_goes_back_at_most_ten_answers(store):
    db, _ = store
    project = create_project(db, "long", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": f"l{i}", "content": f"long {i}", "sha256": f"l{i}"}
                                for i in range(14)])
    at = page("labeling/pages/label.py", project="long")
    answered = []
    for _ in range(12):
        answered.append(at.text[0].value)
        button(at, "cls-0").click().run()
    for expected in reversed(answered[2:]):  # the last ten, newest first
        button(at, "undo").click().run()
        assert at.text[0].value == expected  # the undone item is back on screen
    assert button(at, "undo").disabled and button(at, "undo-backspace").disabled
    live = [r[0] for r in db.execute(
        "SELECT i.content FROM annotations a JOIN items i ON i.id = a.item_id "
        "WHERE a.project_id = ? AND a.retracted_at IS NULL ORDER BY a.id", [project.id])]
    assert live == answered[:2]  # the two oldest answers stay: undo reaches back ten
    assert db.execute("SELECT count(*) FROM annotations WHERE project_id = ?",
                      [project.id]).fetchone()[0] == 12  # undone answers stay on record
