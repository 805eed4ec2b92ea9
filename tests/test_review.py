"""Review rules and tasks over a real trained model's predictions."""

from __future__ import annotations

import pandas as pd
import pytest

from automl.training import train_project
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project
from review.rules import open_review, preview_review
from review.tasks import answer_task, get_task, next_tasks, task_counts, undo_answer


@pytest.fixture
def trained(db, spam_csv, tmp_path):
    """Spam subset: 40 labeled rows (the rest unlabeled), a model trained on them."""
    frame = pd.read_csv(spam_csv)
    labeled = frame.assign(label=[lab if i % 3 == 0 else None
                                  for i, lab in enumerate(frame["label"])])
    path = tmp_path / "mail.csv"
    labeled.to_csv(path, index=False)
    import_source(db, "mail", path, "text", label_column="label")
    project = get_project(db, "mail")
    train_project(db, project, budget=3)
    return project


def _counts(db):
    return {t: db[t].count for t in ("annotations", "review_tasks")}


def test_preview_matches_what_open_creates_and_reopening_adds_nothing(db, trained):
    expected = preview_review(db, trained, 0.9)
    assert expected > 0
    assert open_review(db, trained, 0.9) == expected
    assert open_review(db, trained, 0.9) == 0  # items with an open task are not flagged twice
    assert preview_review(db, trained, 0.9) == 0
    tasks = next_tasks(db, trained, n=100)
    confidences = [t["confidence"] for t in tasks]
    assert confidences == sorted(confidences) and max(confidences) < 0.9
    assert all(t["rule"] == {"confidence_below": 0.9} for t in tasks)
    assert all(t["fired"] == ["confidence < 0.90"] for t in tasks)


def test_answer_becomes_a_curated_review_label_and_undo_reopens(db, trained):
    open_review(db, trained, 1.0)
    task = next_tasks(db, trained)[0]
    other = [c for c in trained.classes if c not in task["predicted"]][0]
    annotation = answer_task(db, trained, task["id"], other, user="rev", duration_ms=1200)
    assert get_task(db, trained, task["id"])["status"] == "completed"
    curated = current_labels(db, trained, curated_only=True).set_index("item_id")
    assert curated.loc[task["item_id"], "labels"] == [other]
    assert curated.loc[task["item_id"], "source"] == "review"
    assert task_counts(db, trained)["completed"] == 1
    undo_answer(db, trained, task["id"])
    assert get_task(db, trained, task["id"])["status"] == "open"
    assert db["annotations"].get(annotation)["retracted_at"] is not None


@pytest.mark.parametrize("below", [0, 1.5, "high"])
def test_bad_thresholds_are_refused(db, trained, below):
    before = _counts(db)
    with pytest.raises(GroundworkError, match="threshold"):
        open_review(db, trained, below)
    assert _counts(db) == before


def test_bad_answers_are_refused_and_a_task_is_answered_once(db, trained):
    open_review(db, trained, 1.0)
    task = next_tasks(db, trained)[0]
    before = _counts(db)
    with pytest.raises(GroundworkError, match="unknown label"):
        answer_task(db, trained, task["id"], "eggs", user="rev")
    with pytest.raises(GroundworkError, match="no review task 9999"):
        answer_task(db, trained, 9999, "ham", user="rev")
    assert _counts(db) == before
    answer_task(db, trained, task["id"], "ham", user="rev")
    with pytest.raises(GroundworkError, match="not open"):
        answer_task(db, trained, task["id"], "spam", user="rev")


def test_review_answers_flow_into_the_next_training_set(db, trained):
    first = db.execute("SELECT train_size + holdout_size FROM model_versions").fetchone()[0]
    open_review(db, trained, 1.0)
    for task in next_tasks(db, trained, n=3):
        answer_task(db, trained, task["id"], task["predicted"], user="rev")
    result = train_project(db, trained, budget=2)
    assert result["train_size"] + result["holdout_size"] == first + 3
