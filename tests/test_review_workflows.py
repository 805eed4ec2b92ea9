"""Review workflows: conditions (pure), human loops, reviewers, expiry, export, accuracy.

The store is real; the model is a promoted model version row with stored
predictions of known confidence, so every count below is exact.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.projects import create_project
from labeling.queue import store_predictions
from review.conditions import Candidate, describe, evaluate, in_sample, inline, validate
from review.report import export_loops, reviewed_accuracy, wilson
from review.tasks import answer_task, get_task, next_tasks, task_counts, undo_answer
from review.workflows import (
    delete_workflow,
    get_workflow,
    list_workflows,
    open_tasks,
    preview,
    refresh_workflows,
    run_workflow,
    save_workflow,
)

CLASSES = ["ham", "spam"]


def c(item_id: int, predicted: str, confidence: float, label_error: bool = False) -> Candidate:
    return Candidate(item_id, [predicted], confidence, label_error)


# ---------------------------------------------------------------- conditions (pure)


def test_conditions_validate_two_levels_and_refuse_what_they_cannot_mean():
    two = {"any": [{"all": [{"confidence_below": 0.8}, {"confidence_above": 0.2}]},
                   {"sample": 0.05}]}
    assert validate(two, CLASSES) == two
    assert validate(json.dumps(two), CLASSES) == two
    three = {"any": [{"all": [{"any": [{"sample": 0.1}]}]}]}
    bad = [
        (three, "nest at most 2"),
        ({"any": []}, "non-empty list"),
        ({"confidence_below": 0}, "threshold 0 is outside"),
        ({"confidence_below": 1.5}, "outside"),
        ({"confidence_above": 1}, "outside"),
        ({"sample": 0}, "sample share"),
        ({"confidence_below": "high"}, "not a number"),
        ({"confidence_below": 0.5, "class": "eggs"}, "unknown class 'eggs'"),
        ({"sample": 0.1, "class": "ham"}, "only confidence conditions"),
        ({"below": 0.5, "sample": 0.1}, "exactly one"),
        ({"label_error": True}, "source is the project's labels"),
        ("{not json", "not valid JSON"),
        ({"any": [{"sample": 0.1}], "all": [{"sample": 0.1}]}, "one key"),
    ]
    for conditions, message in bad:
        with pytest.raises(GroundworkError, match=message):
            validate(conditions, CLASSES)
    assert validate({"label_error": True}, CLASSES, "labels") == {"label_error": True}


def test_evaluate_and_or_per_class_and_what_fired():
    rule = {"any": [{"confidence_below": 0.6},
                    {"all": [{"confidence_below": 0.9, "class": "spam"}, {"sample": 1.0}]}]}
    assert evaluate(rule, c(1, "ham", 0.5), "w") == ["confidence < 0.60"]
    assert evaluate(rule, c(1, "ham", 0.7), "w") == []  # the per-class branch needs spam
    assert evaluate(rule, c(1, "spam", 0.7), "w") == [
        "confidence < 0.90 when predicted spam", "random 100% audit sample"]
    assert evaluate(rule, c(1, "spam", 0.5), "w") == [
        "confidence < 0.60", "confidence < 0.90 when predicted spam",
        "random 100% audit sample"]
    assert evaluate({"confidence_above": 0.99}, c(1, "ham", 0.995), "w") == ["confidence > 0.99"]
    assert evaluate({"label_error": True}, c(1, "ham", 0.9, label_error=True), "w") == [
        "suspected label error"]
    assert describe(rule) == ("confidence < 0.60 OR (confidence < 0.90 when predicted spam "
                              "AND random 100% audit sample)")
    assert describe({"below": 0.7}) == "confidence < 0.70"  # tasks from before workflows
    assert inline(below=0.7, sample=0.05) == {"any": [{"confidence_below": 0.7},
                                                      {"sample": 0.05}]}


def test_random_sample_is_deterministic_per_workflow_and_near_its_share():
    ids = range(20_000)
    first = [i for i in ids if in_sample("audit", i, 0.1)]
    assert first == [i for i in ids if in_sample("audit", i, 0.1)]
    assert 0.09 < len(first) / 20_000 < 0.11
    other = {i for i in ids if in_sample("other", i, 0.1)}
    assert len(other & set(first)) < 0.2 * len(first)  # another workflow draws another sample
    assert {i for i in ids if in_sample("audit", i, 0.05)} <= set(first)  # nested shares


# ---------------------------------------------------------------- workflows on a store

CONFIDENCES = [0.55, 0.95, 0.6, 0.99, 0.8, 0.5, 0.65, 0.9, 0.7, 0.52]


@pytest.fixture
def scored(db):
    """Ten unlabeled messages and a promoted model whose confidences are known."""
    project = create_project(db, "mail", "text", classes=CLASSES)
    with db.atomic():
        add_items(db, project, [{"key": f"m{i}", "content": f"message {i}", "sha256": str(i)}
                                for i in range(len(CONFIDENCES))])
    model_id = _model(db, project, 1)
    probs = np.array([[p, 1 - p] if i % 2 == 0 else [1 - p, p]
                      for i, p in enumerate(CONFIDENCES)])
    store_predictions(db, model_id, list(range(1, 11)), CLASSES, probs)
    return project


def _model(db, project, version: int) -> int:
    with db.atomic():
        db.execute("UPDATE model_versions SET status = 'archived' WHERE project_id = ?",
                   [project.id])
        return db["model_versions"].insert({
            "project_id": project.id, "version": version, "created_at": "now",
            "status": "promoted", "estimator": "logistic_regression",
            "metric_name": "balanced_accuracy", "train_size": 0, "snapshot_hash": "-",
            "artifact_path": "-", "artifact_sha256": "-", "classes": json.dumps(CLASSES),
        }).last_pk


def test_a_saved_workflow_previews_then_opens_exactly_that_and_never_twice(db, scored):
    rule = {"any": [{"confidence_below": 0.6}, {"confidence_above": 0.98}]}
    before = db["review_tasks"].count
    shown = preview(db, scored, rule, salt="low")
    assert shown["would_open"] == 4 and shown["candidates"] == 10  # .55 .5 .52 and .99
    assert shown["by_condition"] == {"confidence < 0.60": 3, "confidence > 0.98": 1}
    assert db["review_tasks"].count == before  # a preview saves nothing
    workflow = save_workflow(db, scored, "low", rule, reviewers=1, instructions="Read it all.")
    assert [w.name for w in list_workflows(db, scored)] == ["low"]
    assert run_workflow(db, scored, "low") == 4
    assert run_workflow(db, scored, "low") == 0
    tasks = next_tasks(db, scored, n=10)
    assert [t["confidence"] for t in tasks] == [0.5, 0.52, 0.55, 0.99]
    assert tasks[-1]["fired"] == ["confidence > 0.98"]
    assert {t["workflow"] for t in tasks} == {"low"}
    assert tasks[0]["instructions"] == "Read it all."
    assert len(tasks[0]["probabilities"]) == 2 and tasks[0]["predicted"] == ["ham"]
    assert get_workflow(db, scored, "low").active and workflow.description.startswith("conf")
    with pytest.raises(GroundworkError, match="no review workflow 'nope'.*workflows: low"):
        run_workflow(db, scored, "nope")
    delete_workflow(db, scored, "low")
    assert next_tasks(db, scored, n=10)[0]["workflow"] is None  # tasks stay, unlinked


@pytest.mark.parametrize("settings,message", [
    ({"reviewers": 4}, "1, 2 or 3"), ({"reviewers": 0}, "1, 2 or 3"),
    ({"expiry_hours": 0}, "positive"), ({"name": " "}, "name"),
    ({"source": "files"}, "unknown workflow source"),
])
def test_bad_workflow_settings_are_refused_and_nothing_is_saved(db, scored, settings, message):
    args = {"name": "w", "reviewers": 1, **settings}
    name = args.pop("name")
    with pytest.raises(GroundworkError, match=message):
        save_workflow(db, scored, name, {"confidence_below": 0.7}, **args)
    assert db["review_workflows"].count == 0


def test_three_reviewers_per_task_are_consolidated_into_one_review_label(db, scored):
    save_workflow(db, scored, "triple", {"confidence_below": 0.51}, reviewers=3)
    assert run_workflow(db, scored, "triple") == 1
    task = next_tasks(db, scored)[0]
    assert answer_task(db, scored, task["id"], "spam", user="ann", duration_ms=900) is None
    assert get_task(db, scored, task["id"])["status"] == "in progress"
    assert current_labels(db, scored, curated_only=True).empty  # not a label yet
    with pytest.raises(GroundworkError, match="ann has already answered"):
        answer_task(db, scored, task["id"], "ham", user="ann")
    assert next_tasks(db, scored, user="ann") == []  # not offered to ann again
    assert next_tasks(db, scored, user="bob")[0]["id"] == task["id"]
    assert answer_task(db, scored, task["id"], "ham", user="bob") is None
    annotation = answer_task(db, scored, task["id"], "spam", user="cy", duration_ms=1500)
    row = db["annotations"].get(annotation)
    assert (row["source"], row["user"], json.loads(row["labels"])) == ("review", "consensus",
                                                                        ["spam"])
    assert row["confidence"] == pytest.approx(2 / 3)
    assert get_task(db, scored, task["id"])["status"] == "completed"
    # undo takes back one reviewer's answer: the label goes, the task waits again
    undo_answer(db, scored, task["id"], user="cy")
    assert get_task(db, scored, task["id"])["status"] == "in progress"
    assert db["annotations"].get(annotation)["retracted_at"] is not None
    assert current_labels(db, scored, curated_only=True).empty


def test_an_expired_task_is_no_longer_offered_or_answerable(db, scored):
    save_workflow(db, scored, "quick", {"confidence_below": 0.6}, expiry_hours=1e-6)
    save_workflow(db, scored, "slow", {"confidence_above": 0.98}, expiry_hours=24)
    assert run_workflow(db, scored, "quick") == 3
    assert run_workflow(db, scored, "slow") == 1
    stale = db.execute("SELECT id FROM review_tasks WHERE workflow_id = "
                       "(SELECT id FROM review_workflows WHERE name = 'quick')").fetchone()[0]
    time.sleep(0.05)  # 1e-6 hours is 3.6 ms
    offered = next_tasks(db, scored, n=10)
    assert [t["workflow"] for t in offered] == ["slow"]
    assert task_counts(db, scored) == {"open": 1, "in progress": 0, "completed": 0,
                                       "expired": 3}
    with pytest.raises(GroundworkError, match="expired"):
        answer_task(db, scored, stale, "ham", user="ann")


def test_inline_sample_is_the_same_items_every_time(db, scored):
    rule = {"sample": 0.5}
    chosen = {i for i in range(1, 11) if in_sample("inline", i, 0.5)}
    assert preview(db, scored, rule)["would_open"] == len(chosen)
    open_tasks(db, scored, rule)
    assert {t["item_id"] for t in next_tasks(db, scored, n=10)} == chosen
    assert all(t["fired"] == ["random 50% audit sample"] for t in next_tasks(db, scored, n=10))


def test_open_needs_a_promoted_model(db):
    project = create_project(db, "empty", "text", classes=CLASSES)
    assert preview(db, project, {"confidence_below": 0.7})["would_open"] == 0
    with pytest.raises(GroundworkError, match="no promoted model"):
        open_tasks(db, project, {"confidence_below": 0.7})


def test_a_newer_promoted_model_re_evaluates_active_pool_workflows(db, scored):
    save_workflow(db, scored, "low", {"confidence_below": 0.6})
    save_workflow(db, scored, "never-run", {"confidence_below": 0.99})
    assert refresh_workflows(db, scored) == {}  # nothing has run yet
    assert run_workflow(db, scored, "low") == 3
    assert refresh_workflows(db, scored) == {}  # same model: nothing to re-evaluate
    model_id = _model(db, scored, 2)  # v2 is unsure about everything
    store_predictions(db, model_id, list(range(1, 11)), CLASSES,
                      np.tile([[0.45, 0.55]], (10, 1)))
    # items with an open task are not flagged twice; the other seven are
    assert refresh_workflows(db, scored) == {"low": 7}
    assert refresh_workflows(db, scored) == {}


def test_export_writes_one_json_line_per_loop_with_answers_and_why(db, scored, tmp_path):
    save_workflow(db, scored, "pair", {"confidence_below": 0.56}, reviewers=2)
    run_workflow(db, scored, "pair")
    first, second, third = next_tasks(db, scored, n=3)
    answer_task(db, scored, first["id"], "spam", user="ann", duration_ms=1200)
    answer_task(db, scored, first["id"], "spam", user="bob", duration_ms=800)
    answer_task(db, scored, second["id"], "ham", user="ann", duration_ms=500)
    out = tmp_path / "loops.jsonl"
    assert export_loops(db, scored, out) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in records] == ["completed", "in progress", "open"]
    done = next(r for r in records if r["status"] == "completed")
    assert done["workflow"] == "pair" and done["conditions_fired"] == ["confidence < 0.56"]
    assert done["input"]["content"].startswith("message ")
    assert set(done["prediction"]["probabilities"]) == set(CLASSES)
    assert [(a["reviewer"], a["time_taken_ms"]) for a in done["answers"]] == [
        ("ann", 1200), ("bob", 800)]
    assert all(a["submitted_at"] for a in done["answers"])
    assert done["final"]["labels"] == ["spam"] and done["final"]["by"] == "consensus"
    with pytest.raises(GroundworkError, match="does not exist"):
        export_loops(db, scored, tmp_path / "missing" / "x.jsonl")


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) is None
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)


def test_reviewed_accuracy_per_predicted_class_and_on_audits(db, scored):
    open_tasks(db, scored, {"any": [{"confidence_below": 0.7}, {"sample": 0.3}]})
    tasks = next_tasks(db, scored, n=10)
    wrong = tasks[0]
    for task in tasks:
        answer = task["predicted"] if task is not wrong else [
            c for c in CLASSES if c not in task["predicted"]]
        answer_task(db, scored, task["id"], answer, user="rev")
    report = reviewed_accuracy(db, scored)
    overall = report["overall"]
    assert overall["reviewed"] == len(tasks) and overall["correct"] == len(tasks) - 1
    assert overall["low"] < overall["accuracy"] < overall["high"] <= 1
    by_class = {r["class"]: r for r in report["per_class"]}
    assert sum(r["reviewed"] for r in by_class.values()) == len(tasks)
    assert by_class[wrong["predicted"][0]]["correct"] == by_class[wrong["predicted"][0]][
        "reviewed"] - 1
    audits = [t for t in tasks if any(f.startswith("random") for f in t["fired"])]
    assert report["audit"]["reviewed"] == len(audits)


def test_tasks_from_a_store_before_workflows_still_show_why_and_undo(data_dir):
    from labeling.store import MIGRATIONS, connect

    before = [m.__name__ for m in MIGRATIONS].index("_migration_review_workflows")
    old = connect(data_dir, migrate_to=before)
    project = create_project(old, "mail", "text", classes=CLASSES)
    with old.atomic():
        add_items(old, project, [{"key": "a", "content": "hello", "sha256": "a"}])
        old["review_tasks"].insert({"project_id": project.id, "item_id": 1,
                                    "predicted": '["ham"]', "confidence": 0.4,
                                    "rule": '{"below": 0.7}', "status": "open",
                                    "created_at": "2024-01-01T00:00:00.000Z"})
    old.conn.close()
    db = connect(data_dir)
    task = next_tasks(db, project)[0]
    assert task["fired"] == ["confidence < 0.70"] and task["workflow"] is None
    answer_task(db, project, task["id"], "spam", user="ann")
    with pytest.raises(GroundworkError, match="no answer to undo"):
        undo_answer(db, project, task["id"], user="bob")
    undo_answer(db, project, task["id"], user="ann")
    assert get_task(db, project, task["id"])["status"] == "open"
    # a task answered before answers were kept: undo retracts its label
    answer = answer_task(db, project, task["id"], "ham", user="ann")
    db.execute("DELETE FROM review_answers")
    undo_answer(db, project, task["id"])
    assert db["annotations"].get(answer)["retracted_at"] is not None
    db.conn.close()


# ---------------------------------------------------------------- claims


def test_two_reviewers_are_given_different_tasks_and_a_claim_keeps_others_off(db, scored):
    from review.tasks import claim_tasks, held_by_others, release_claim

    save_workflow(db, scored, "low", {"confidence_below": 0.6})
    assert run_workflow(db, scored, "low") == 3  # 0.5, 0.52, 0.55
    ann = claim_tasks(db, scored, "ann")[0]
    bob = claim_tasks(db, scored, "bob")[0]
    assert (ann["confidence"], bob["confidence"]) == (0.5, 0.52)  # not the same task
    assert get_task(db, scored, ann["id"])["status"] == "in progress" and ann["claimed_until"]
    assert claim_tasks(db, scored, "ann")[0]["id"] == ann["id"]  # a reload: the same task
    assert [t["id"] for t in next_tasks(db, scored, n=10, user="bob")] == [
        bob["id"], next_tasks(db, scored, n=10)[2]["id"]]  # ann's is not offered to bob
    with pytest.raises(GroundworkError, match="being reviewed by ann"):
        answer_task(db, scored, ann["id"], "spam", user="bob")
    assert task_counts(db, scored) == {"open": 1, "in progress": 2, "completed": 0,
                                       "expired": 0}
    cy = claim_tasks(db, scored, "cy", n=5)
    assert [t["confidence"] for t in cy] == [0.55]
    assert claim_tasks(db, scored, "dan") == [] and held_by_others(db, scored, "dan") == 3

    # an answer frees the task for good; a skip (release) hands it to the next reviewer
    answer_task(db, scored, bob["id"], "ham", user="bob")
    assert release_claim(db, scored, ann["id"], "ann")
    assert get_task(db, scored, ann["id"])["status"] == "open"  # not answered, nobody holds it
    assert claim_tasks(db, scored, "dan")[0]["id"] == ann["id"]


def test_a_claim_ends_after_its_time_and_the_task_is_open_again(db, scored):
    from review.tasks import claim_tasks, live_claims

    save_workflow(db, scored, "low", {"confidence_below": 0.51})
    run_workflow(db, scored, "low")
    task = claim_tasks(db, scored, "ann", seconds=0.05)[0]
    assert claim_tasks(db, scored, "bob") == []
    time.sleep(0.1)
    assert task_counts(db, scored)["open"] == 1 and live_claims(db, scored) == {}
    assert claim_tasks(db, scored, "bob")[0]["id"] == task["id"]
    assert db.execute("SELECT user FROM review_claims").fetchall() == [
        ("bob",)]  # ann's ended claim was dropped


def test_a_task_wanting_two_reviewers_is_held_by_two_people_at_most(db, scored):
    from review.tasks import claim_task, claim_tasks

    save_workflow(db, scored, "pair", {"confidence_below": 0.51}, reviewers=2)
    run_workflow(db, scored, "pair")
    task = claim_tasks(db, scored, "ann")[0]
    assert claim_tasks(db, scored, "bob")[0]["id"] == task["id"]
    assert claim_tasks(db, scored, "cy") == []
    with pytest.raises(GroundworkError, match="being reviewed by ann, bob"):
        claim_task(db, scored, task["id"], "cy")
    answer_task(db, scored, task["id"], "spam", user="ann")  # one answer, one slot left
    assert claim_tasks(db, scored, "cy") == []  # bob still holds it
    assert claim_tasks(db, scored, "ann") == []  # ann answered: never again for her
    annotation = answer_task(db, scored, task["id"], "spam", user="bob")
    assert annotation and get_task(db, scored, task["id"])["status"] == "completed"
    undo_answer(db, scored, task["id"], user="bob")  # no stale claim keeps it held
    assert get_task(db, scored, task["id"])["status"] == "in progress"  # ann's answer stays
    assert claim_tasks(db, scored, "cy")[0]["id"] == task["id"]


def _claimer(data_dir: str, name: str, rounds: int, barrier, out) -> None:
    """Claim two tasks per round as a fresh reviewer, the way `review next --user` does."""
    from labeling.projects import get_project
    from labeling.store import connect
    from review.tasks import claim_tasks

    db = connect(data_dir)
    project = get_project(db, "mail")
    got, errors = [], []
    barrier.wait()
    for r in range(rounds):
        try:
            got += [t["id"] for t in claim_tasks(db, project, f"{name}-{r}", n=2)]
        except Exception as exc:  # noqa: BLE001 - reported to the test, not swallowed
            errors.append(repr(exc))
    out.put({"got": got, "errors": errors})
    db.conn.close()


def test_reviewers_racing_in_separate_processes_never_claim_the_same_task(db, data_dir):
    import multiprocessing

    project = create_project(db, "mail", "text", classes=CLASSES)
    with db.atomic():
        add_items(db, project, [{"key": f"m{i}", "content": f"message {i}", "sha256": str(i)}
                                for i in range(60)])
    model_id = _model(db, project, 1)
    store_predictions(db, model_id, list(range(1, 61)), CLASSES,
                      np.tile([[0.55, 0.45]], (60, 1)))
    assert open_tasks(db, project, {"confidence_below": 0.6}) == 60
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(data_dir), f"p{i}", 8, barrier, out))
             for i in range(3)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert [e for r in reports for e in r["errors"]] == []
    got = [t for r in reports for t in r["got"]]
    assert len(got) == 3 * 8 * 2 and len(set(got)) == len(got)  # no task twice
    assert task_counts(db, project)["in progress"] == len(got)
