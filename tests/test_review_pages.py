"""The Review and Workflows pages through Streamlit's AppTest, against a real store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from labeling.annotations import current_labels
from labeling.importers import import_source
from labeling.items import add_items
from labeling.projects import create_project, get_project
from labeling.queue import store_predictions
from review.workflows import run_workflow, save_workflow

ROOT_DIR = Path(__file__).resolve().parents[1]
CONFIDENCES = [0.55, 0.95, 0.6, 0.99, 0.8, 0.5]


def page(path: str, project: str) -> AppTest:
    at = AppTest.from_file(str(ROOT_DIR / path), default_timeout=60)
    at.session_state["project_name"] = project
    at.session_state["user"] = "ann"
    return at.run()


def button(at: AppTest, key: str):
    """The button keyed `key`, or `key-<task id>`: the Review page keys its answer and skip
    buttons by the task shown, so a late key press cannot answer the next task."""
    exact = [b for b in at.button if b.key == key]
    if exact:
        return exact[0]
    return next(b for b in at.button if re.fullmatch(rf"{re.escape(key)}-\d+", b.key or ""))


@pytest.fixture
def mail(db, data_dir, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message number {i}",
                                 "sha256": str(i)} for i in range(len(CONFIDENCES))])
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    store_predictions(db, mv, list(range(1, 7)), ["ham", "spam"],
                      np.array([[p, 1 - p] for p in CONFIDENCES]))
    return db, project


def test_workflow_editor_previews_saves_and_opens(mail):
    db, project = mail
    at = page("review/pages/workflows.py", "mail")
    assert not at.exception
    at.text_input(key="wf-name").set_value("doubts").run()
    at.number_input(key="wf-below").set_value(0.65).run()
    at.checkbox(key="wf-use-above").check().run()
    at.number_input(key="wf-above").set_value(0.98).run()
    assert any("This workflow would open 4 new tasks" in c.value for c in at.caption)
    assert db["review_workflows"].count == 0  # previewing saves nothing
    at.number_input(key="wf-reviewers").set_value(2).run()
    at.number_input(key="wf-expiry").set_value(12.0).run()
    at.text_area(key="wf-instructions").set_value("Read the **whole** message.").run()
    button(at, "wf-save-run").click().run()
    assert not at.exception
    assert any("opened 4 review tasks" in s.value for s in at.success)
    row = db["review_workflows"].get(1)
    assert json.loads(row["conditions"]) == {"any": [{"confidence_below": 0.65},
                                                     {"confidence_above": 0.98}]}
    assert (row["reviewers"], row["expiry_hours"]) == (2, 12.0)
    assert db.execute("SELECT count(*) FROM review_tasks WHERE expires_at IS NOT NULL "
                      "AND reviewers = 2").fetchone()[0] == 4
    frame = at.dataframe[0].value
    assert list(frame["workflow"]) == ["doubts"] and list(frame["open"]) == [4]


def test_bad_json_conditions_say_what_is_wrong_and_save_nothing(mail):
    db, _ = mail
    at = page("review/pages/workflows.py", "mail")
    at.text_input(key="wf-name").set_value("deep").run()
    at.text_area(key="wf-json").set_value(
        '{"any": [{"all": [{"any": [{"sample": 0.1}]}]}]}').run()
    assert any("nest at most 2" in e.value for e in at.error)
    assert button(at, "wf-save").disabled


def test_review_page_shows_why_workflow_and_accuracy(mail):
    db, project = mail
    save_workflow(db, project, "audit", {"any": [{"confidence_below": 0.56},
                                                 {"sample": 1.0}]},
                  instructions="Look twice.")
    run_workflow(db, project, "audit")
    at = page("review/pages/review_tasks.py", "mail")
    assert not at.exception
    assert any("flagged because confidence < 0.56; random 100% audit sample" in m.value
               for m in at.markdown)
    assert any("workflow audit" in c.value for c in at.caption)
    button(at, "fix-1").click().run()  # the model said ham at 0.50: a reviewer says spam
    button(at, "accept").click().run()
    table = next(d.value for d in at.dataframe)
    overall = table.set_index("predictions").loc["all reviewed"]
    assert (overall["reviewed"], overall["correct"]) == (2, 1)
    assert "random audits" in set(table["predictions"])


def test_label_issues_are_checked_routed_and_reviewed_with_given_and_suggested(
        db, data_dir, monkeypatch, wine_csv, tmp_path):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    frame = pd.read_csv(wine_csv)
    names = ["barolo", "grignolino", "barbera"]
    frame["label"] = [names[(names.index(v) + 1) % 3] if i % 15 == 0 else v
                      for i, v in enumerate(frame["cultivar"])]
    path = tmp_path / "noisy.csv"
    frame.drop(columns=["cultivar"]).to_csv(path, index=False)
    import_source(db, "wine", path, "tabular", label_column="label", user="ann")
    at = page("review/pages/workflows.py", "wine")
    button(at, "check-labels").click().run()
    assert not at.exception
    issues = next(d.value for d in at.dataframe if "suggested" in d.value.columns)
    assert len(issues) >= 8 and set(issues["given by"]) == {"ann"}
    button(at, "route-issues").click().run()
    assert any(f"Opened {len(issues)} review tasks" in s.value for s in at.success)

    review = page("review/pages/review_tasks.py", "wine")
    first = issues.iloc[0]
    assert any(f"Given label **{first['given']}** by ann" in m.value
               and f"suggested **{first['suggested']}**" in m.value for m in review.markdown)
    button(review, "keep-given").click().run()  # the reviewer keeps the given label
    project = get_project(db, "wine")
    answer = db.execute("SELECT a.labels, a.source FROM annotations a JOIN review_tasks t "
                        "ON t.annotation_id = a.id WHERE t.project_id = ?",
                        [project.id]).fetchall()
    assert answer == [(json.dumps([first["given"]]), "review")]


def test_the_workflows_page_re_evaluates_the_pool_after_a_promotion(mail):
    """A model promoted elsewhere (the Train page, a worker): opening the Workflows page
    re-runs the pool workflows on its predictions before showing their counts."""
    db, project = mail
    save_workflow(db, project, "low", {"confidence_below": 0.56})
    assert run_workflow(db, project, "low") == 2  # 0.55 and 0.50
    with db.atomic():
        db.execute("UPDATE model_versions SET status = 'archived'")
        v2 = db["model_versions"].insert({
            "project_id": project.id, "version": 2, "created_at": "now",
            "status": "promoted", "estimator": "logreg", "metric_name": "balanced_accuracy",
            "train_size": 0, "snapshot_hash": "-", "artifact_path": "-",
            "artifact_sha256": "-", "classes": '["ham", "spam"]'}).last_pk
    store_predictions(db, v2, list(range(1, 7)), ["ham", "spam"],
                      np.tile([[0.52, 0.48]], (6, 1)))  # v2 doubts everything
    at = page("review/pages/workflows.py", "mail")
    assert not at.exception
    assert db.execute("SELECT count(*) FROM review_tasks WHERE model_version_id = ?",
                      [v2]).fetchone()[0] == 4  # the four without an open task
    assert list(at.dataframe[0].value["open"]) == [6]


def test_two_reviewers_on_the_review_page_are_shown_different_tasks(mail):
    """Each session claims the task it shows: bob is not shown ann's task, and when ann
    skips hers it goes to the next reviewer who asks."""
    db, project = mail
    save_workflow(db, project, "low", {"confidence_below": 0.85})
    assert run_workflow(db, project, "low") == 4  # 0.50, 0.55, 0.60 and 0.80

    def reviewer(name: str) -> AppTest:
        at = AppTest.from_file(str(ROOT_DIR / "review/pages/review_tasks.py"),
                               default_timeout=60)
        at.session_state["project_name"] = "mail"
        at.session_state["user"] = name
        return at.run()

    def shown(at: AppTest) -> str:
        return next(m.value for m in at.markdown if m.value.startswith("Model says"))

    ann, bob = reviewer("ann"), reviewer("bob")
    assert not ann.exception and not bob.exception
    assert "confidence **0.50**" in shown(ann) and "confidence **0.55**" in shown(bob)
    held = db.execute("SELECT count(*) FROM review_tasks WHERE status = 'in progress'"
                      ).fetchone()[0]
    assert held == 2
    button(bob, "accept").click().run()  # bob answers his own task, never ann's
    answered = db.execute("SELECT t.confidence FROM review_tasks t WHERE t.status = "
                          "'completed'").fetchall()
    assert answered == [(0.55,)]
    assert "confidence **0.60**" in shown(bob)  # auto-advance, past ann's task
    button(ann, "review-skip").click().run()
    assert "confidence **0.80**" in shown(ann)  # the one nobody holds
    cy = reviewer("cy")
    assert "confidence **0.50**" in shown(cy)  # ann's skipped task, free for others


def test_review_answer_buttons_are_keyed_by_the_task_shown_and_carry_their_shortcuts(mail):
    """Every button that answers or skips the task on screen is keyed by its id, so the keys
    change with the task (a press of the last task's key cannot answer this one); Undo,
    which acts on the history, keeps one key. Each has its keyboard shortcut."""
    db, project = mail
    save_workflow(db, project, "low", {"confidence_below": 0.85})
    run_workflow(db, project, "low")
    at = page("review/pages/review_tasks.py", "mail")

    def shown() -> int:  # the task on screen, as the page keeps it
        return at.session_state[f"review-{project.id}"]["task"]

    def keys() -> dict[str, str]:
        return {b.key: b.proto.shortcut.lower() for b in at.button
                if b.key.startswith(("accept", "fix-", "review-"))}

    first = shown()
    assert db.execute("SELECT task_id FROM review_claims WHERE user = 'ann'").fetchall() == [
        (first,)]  # the one ann holds
    assert keys() == {f"accept-{first}": "enter", f"fix-0-{first}": "1",
                      f"fix-1-{first}": "2", f"review-skip-{first}": "s",
                      "review-undo": "u"}
    button(at, "fix-1").click().run()
    second = shown()
    assert second != first
    assert set(keys()) == {f"accept-{second}", f"fix-0-{second}", f"fix-1-{second}",
                           f"review-skip-{second}", "review-undo"}
    button(at, "review-undo").click().run()  # the undone task is back, under its own keys
    assert shown() == first and f"accept-{first}" in keys()


@pytest.fixture
def tags(db, data_dir, monkeypatch):
    """A multi-label project (tags a, b, c) and a promoted model unsure about two items."""
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    project = create_project(db, "tags", "text", task="multi-label", classes=["a", "b", "c"])
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"note number {i}",
                                 "sha256": str(i)} for i in range(3)])
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "logreg", "metric_name": "f1_macro", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["a", "b", "c"]'}).last_pk
    store_predictions(db, mv, [1, 2, 3], ["a", "b", "c"],
                      np.array([[0.9, 0.6, 0.1], [0.2, 0.95, 0.55], [0.99, 0.01, 0.02]]),
                      multi_label=True)
    save_workflow(db, project, "unsure", {"confidence_below": 0.5})
    assert run_workflow(db, project, "unsure") == 2  # items 1 (b at 0.6) and 2 (c at 0.55)
    return db, project


def test_multi_label_review_toggles_tags_and_enter_submits_the_set(tags):
    """1..9 toggle tags, Enter submits the toggled set; with nothing toggled Enter accepts
    the model's predicted set; the answers are curated multi-label review labels."""
    db, project = tags
    at = page("review/pages/review_tasks.py", "tags")
    assert not at.exception
    assert any(m.value.startswith("Model says **b, c** with confidence **0.10**")
               for m in at.markdown)  # item 2: c at 0.55 is the least sure decision
    assert any(c.value == "Top 3: b 0.95 · c 0.55 · a 0.20" for c in at.caption)
    assert button(at, "accept").label == "Accept b, c"
    button(at, "fix-0").click().run()  # a on
    button(at, "fix-2").click().run()  # c on
    button(at, "fix-2").click().run()  # c off again
    assert button(at, "fix-0").proto.type == "primary"
    assert button(at, "accept").label == "Submit a"
    button(at, "fix-1").click().run()
    assert button(at, "accept").label == "Submit a, b"
    assert any("selected: a, b" in c.value for c in at.caption)
    button(at, "accept").click().run()
    assert not at.exception
    first = db.execute("SELECT a.labels, a.source, a.user FROM review_tasks t JOIN annotations "
                       "a ON a.id = t.annotation_id WHERE t.item_id = 2").fetchall()
    assert first == [('["a", "b"]', "review", "ann")]
    # auto-advance to item 1; nothing is toggled for it, so Enter accepts the predicted set
    assert any(m.value.startswith("Model says **a, b** with confidence **0.20**")
               for m in at.markdown)
    assert button(at, "accept").label == "Accept a, b"
    assert button(at, "fix-0").proto.type == "secondary"
    button(at, "accept").click().run()
    second = db.execute("SELECT a.labels FROM review_tasks t JOIN annotations a "
                        "ON a.id = t.annotation_id WHERE t.item_id = 1").fetchall()
    assert second == [('["a", "b"]',)]
    labels = current_labels(db, project, curated_only=True).set_index("item_id")["labels"]
    assert labels.to_dict() == {1: ["a", "b"], 2: ["a", "b"]}


def test_the_workflows_page_checks_a_multi_label_project_for_label_issues(tags):
    db, project = tags
    at = page("review/pages/workflows.py", "tags")
    assert not at.exception
    assert not any("single-label" in c.value for c in at.caption)
    button(at, "check-labels").click().run()  # no labels yet: the check says what it needs
    assert any("at least 2 items have and 2 items lack" in e.value for e in at.error)
