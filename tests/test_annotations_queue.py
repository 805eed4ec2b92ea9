"""Annotations, undo, curated labels and the labeling queue on a real store."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.annotations import (
    current_labels,
    recent_annotations,
    record_annotation,
    retract_annotation,
)
from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.projects import create_project, get_project
from labeling.queue import next_items, store_predictions, uncertainty_scores


@pytest.fixture
def project(db):
    p = create_project(db, "emails", "text", classes=["ham", "spam"])
    with db.atomic():
        add_items(db, p, [{"key": str(i), "content": f"mail {i}", "sha256": str(i)}
                          for i in range(20)])
    return p


def _counts(db):
    return {t: db[t].count for t in ("projects", "items", "annotations")}


def test_record_and_undo_keep_the_label_count_exact(db, project):
    item = next_items(db, project)[0]["id"]
    answer = record_annotation(db, project, item, "spam", user="ann", duration_ms=850)
    assert db["items"].get(item)["n_labels"] == 1
    assert next_items(db, project, n=100)[0]["id"] != item
    assert item not in [i["id"] for i in next_items(db, project, n=100)]
    assert recent_annotations(db, project, "ann")[0]["id"] == answer
    retract_annotation(db, project, answer)
    assert db["items"].get(item)["n_labels"] == 0
    assert item in [i["id"] for i in next_items(db, project, n=100)]
    row = db["annotations"].get(answer)
    assert row["retracted_at"] is not None and row["duration_ms"] == 850  # kept for audit


@pytest.mark.parametrize(
    "label, message",
    [("eggs", "unknown label 'eggs'"), ("ham,spam", "single-label"), ("", "no label given")],
)
def test_bad_labels_are_refused_and_nothing_changes(db, project, label, message):
    before = _counts(db)
    with pytest.raises(GroundworkError, match=message):
        record_annotation(db, project, 1, label, user="ann")
    assert _counts(db) == before


def test_unknown_item_is_refused(db, project):
    with pytest.raises(GroundworkError, match="no item 12345"):
        record_annotation(db, project, 12345, "ham", user="ann")


def test_multi_label_answers(db):
    p = create_project(db, "tags", "text", task="multi-label", classes=["a", "b", "c"])
    with db.atomic():
        add_items(db, p, [{"key": "0", "content": "x", "sha256": "0"}])
    record_annotation(db, p, 1, "c,a", user="ann")
    labels = current_labels(db, p, curated_only=True)
    assert labels.iloc[0]["labels"] == ["a", "c"]  # in class order


def test_curated_labels_exclude_auto_and_review_overrides_human(db, project):
    record_annotation(db, project, 1, "ham", user="ann")
    record_annotation(db, project, 1, "spam", user="rev", source="review")
    record_annotation(db, project, 2, "spam", user="model", source="auto", confidence=0.99)
    curated = current_labels(db, project, curated_only=True)
    assert curated.set_index("item_id").loc[1, "labels"] == ["spam"]
    assert 2 not in set(curated["item_id"])
    everything = current_labels(db, project, curated_only=False)
    assert everything.set_index("item_id").loc[2, "source"] == "auto"


def test_uncertainty_scores_come_from_modal():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    scores = uncertainty_scores(p)
    np.testing.assert_allclose(scores["confidence"], [0.5, 0.9, 0.8])
    np.testing.assert_allclose(scores["margin"], [0.0, 0.8, 0.6])
    assert scores["entropy"].argmax() == 0


def test_queue_asks_about_the_least_certain_items_first_once_a_model_exists(db, project):
    with db.atomic():
        mv = db["model_versions"].insert({
            "project_id": project.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "test", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["ham", "spam"]'}).last_pk
    ids = list(range(1, 21))
    spam_p = np.linspace(0.0, 1.0, 20)  # item 10/11 sit closest to 0.5
    store_predictions(db, mv, ids, ["ham", "spam"], np.c_[1 - spam_p, spam_p])
    first = next_items(db, project, n=2)
    assert {i["id"] for i in first} == {10, 11}
    assert all(i["reason"] == "margin" for i in first)
    # random strategy and exclusions still reach every item
    assert len(next_items(db, project, n=100, strategy="random")) == 20
    assert 10 not in [i["id"] for i in next_items(db, project, n=100, exclude=[10])]


def test_get_project_names_the_projects_there_are(db, project):
    with pytest.raises(GroundworkError, match="projects: emails"):
        get_project(db, "nope")


def test_validation_items_keep_a_random_share_of_the_labels(db):
    """Active learning picks the rest, but a fifth of the answers go to random held-out items,
    so the accuracy measured on them describes the data, not what the model found hard."""
    p = create_project(db, "v", "text", classes=["a", "b"])
    with db.atomic():
        add_items(db, p, [{"key": f"k{i}", "content": f"text {i}", "sha256": str(i)}
                          for i in range(300)])
        mv = db["model_versions"].insert({
            "project_id": p.id, "version": 1, "created_at": "now", "status": "promoted",
            "estimator": "test", "metric_name": "balanced_accuracy", "train_size": 0,
            "snapshot_hash": "-", "artifact_path": "-", "artifact_sha256": "-",
            "classes": '["a", "b"]'}).last_pk
    ids = [r[0] for r in db.execute("SELECT id FROM items WHERE project_id = ?", [p.id])]
    prob = np.random.default_rng(0).uniform(size=len(ids))
    store_predictions(db, mv, ids, ["a", "b"], np.c_[1 - prob, prob])
    holdout = {r[0]: r[1] for r in db.execute("SELECT id, holdout FROM items")}
    assert 0.12 < np.mean(list(holdout.values())) < 0.28  # the hash split is about a fifth
    reasons = {"validation": [], "margin": []}
    for _ in range(100):
        item = next_items(db, p)[0]
        reasons[item["reason"]].append(item["id"])
        record_annotation(db, p, item["id"], "a", user="u")
    assert len(reasons["validation"]) == 20
    assert all(holdout[i] == 1 for i in reasons["validation"])
    assert all(holdout[i] == 0 for i in reasons["margin"])
    assert len(next_items(db, p, n=1000)) == 200  # every other item is still reachable


def test_labels_per_hour_comes_from_the_recorded_time_per_answer(db, project):
    from labeling.annotations import labels_per_hour

    for item_id, user, ms in ((1, "ann", 2000), (2, "ann", 4000), (3, "bob", 1000)):
        record_annotation(db, project, item_id, "ham", user=user, duration_ms=ms)
    record_annotation(db, project, 4, "ham", user="model", source="auto", confidence=0.99)
    pace = labels_per_hour(db, project).set_index("user")
    assert set(pace.index) == {"ann", "bob"}  # machine labels are not anybody's pace
    assert pace.loc["ann", "labels_per_hour"] == pytest.approx(2 * 3600 / 6)
    assert pace.loc["bob", "labels_per_hour"] == pytest.approx(3600)


def test_answers_without_a_recorded_time_do_not_inflate_labels_per_hour(db, project):
    """CLI answers and history edits have no duration: counting them against only the timed
    answers' milliseconds made ann look four times as fast as she is."""
    from automl.savings import team_pace
    from labeling.annotations import labels_per_hour

    record_annotation(db, project, 1, "ham", user="ann", duration_ms=3000)
    record_annotation(db, project, 2, "ham", user="ann", duration_ms=3000)
    for item_id in (3, 4, 5, 6, 7, 8):  # `groundwork label`: no duration
        record_annotation(db, project, item_id, "spam", user="ann")
    record_annotation(db, project, 9, "spam", user="cli")  # only untimed answers
    pace = labels_per_hour(db, project).set_index("user")
    assert pace.loc["ann", "answers"] == 2 and pace.loc["ann", "untimed"] == 6
    assert pace.loc["ann", "labels_per_hour"] == pytest.approx(1200)  # 3 s each
    assert pace.loc["cli", "answers"] == 0 and pace.loc["cli", "untimed"] == 1
    assert np.isnan(pace.loc["cli", "labels_per_hour"])  # no pace from no measurement
    assert team_pace(db, project) == pytest.approx(1200)


def test_a_multi_label_answer_may_say_that_no_tag_applies(db):
    """An empty set is an answer in a multi-label project (the model predicts it, training
    encodes it as zeros), given explicitly: `[]` or "[]". A blank answer is still refused,
    and a single-label item always has exactly one class."""
    from labeling.annotations import validate_labels

    tags = create_project(db, "tags", "text", task="multi-label", classes=["a", "b"])
    with db.atomic():
        add_items(db, tags, [{"key": str(i), "content": f"note {i}", "sha256": str(i)}
                             for i in range(3)])
    assert validate_labels(tags, []) == [] and validate_labels(tags, " [] ") == []
    answer = record_annotation(db, tags, 1, "[]", user="ann", duration_ms=900)
    assert db["annotations"].get(answer)["labels"] == "[]"
    assert db["items"].get(1)["n_labels"] == 1  # answered: it leaves the queue
    assert 1 not in [i["id"] for i in next_items(db, tags, n=10)]
    assert current_labels(db, tags, curated_only=True)["labels"].tolist() == [[]]
    for blank in ("", " , ", None):
        with pytest.raises(GroundworkError, match=r"no label given: .* \(or \[\] for none"):
            validate_labels(tags, blank)
    single = create_project(db, "mail", "text", classes=["ham", "spam"])
    for empty in ([], "[]"):
        with pytest.raises(GroundworkError):
            validate_labels(single, empty)
