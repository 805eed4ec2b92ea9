"""Several annotators per item: queue hand-off, Dawid-Skene consolidation and agreement."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from labeling.annotations import current_labels, record_annotation
from labeling.consolidation import (
    agreement,
    annotator_weights,
    consolidate,
    latest_human_answers,
    reviewed_truth,
)
from labeling.errors import GroundworkError
from labeling.items import add_items
from labeling.projects import create_project, set_annotations_per_item
from labeling.queue import next_items


@pytest.fixture
def project(db):
    p = create_project(db, "votes", "text", classes=["yes", "no"])
    with db.atomic():
        add_items(db, p, [{"key": str(i), "content": f"claim {i}", "sha256": str(i),
                           "gold": ["yes" if i % 2 else "no"]} for i in range(12)])
    return set_annotations_per_item(db, p, 3)


def test_the_queue_gives_an_item_to_each_person_once_until_it_has_enough_answers(db, project):
    seen: dict[str, list[int]] = {"ann": [], "bob": [], "cat": [], "dan": []}
    for user in ("ann", "bob", "cat"):
        while items := next_items(db, project, user=user):
            item = items[0]["id"]
            assert item not in seen[user]  # never the same item twice to one person
            seen[user].append(item)
            record_annotation(db, project, item, "yes", user=user)
    assert all(len(v) == 12 for k, v in seen.items() if k != "dan")
    assert next_items(db, project, user="dan") == []  # every item has its three answers
    with pytest.raises(GroundworkError, match="from 1 to 5"):
        set_annotations_per_item(db, project, 6)


def test_dawid_skene_trusts_the_reliable_annotators(db, project):
    gold = {r[0]: json.loads(r[1])[0] for r in db.execute("SELECT id, gold FROM items")}
    for item_id, truth in gold.items():
        wrong = "no" if truth == "yes" else "yes"
        record_annotation(db, project, item_id, truth, user="ann")  # always right
        record_annotation(db, project, item_id, truth if item_id % 4 else wrong, user="bob")
        record_annotation(db, project, item_id, wrong, user="spammer")  # always wrong
    consensus = consolidate(latest_human_answers(db, project)).set_index("item_id")
    assert set(consensus["method"]) == {"dawid-skene"}
    assert all(consensus.loc[i, "labels"] == [gold[i]] for i in gold)
    assert (consensus["n_answers"] == 3).all() and consensus["confidence"].between(0, 1).all()
    curated = current_labels(db, project, curated_only=True).set_index("item_id")
    assert len(curated) == 12 and set(curated["user"]) == {"consensus"}
    assert all(curated.loc[i, "labels"] == [gold[i]] for i in gold)
    report = agreement(db, project)
    assert report["items_with_overlap"] == 12 and report["alpha"] < 0.5
    by_user = {a["user"]: a for a in report["annotators"]}
    assert by_user["ann"]["gold_accuracy"] == 1.0 and by_user["spammer"]["gold_accuracy"] == 0.0
    assert by_user["ann"]["agreement_with_consensus"] == 1.0


def test_items_waiting_for_answers_do_not_train_and_majority_is_the_fallback(db, project):
    record_annotation(db, project, 1, "yes", user="ann")
    assert current_labels(db, project, curated_only=True).empty  # 1 of 3 answers: not yet
    record_annotation(db, project, 1, "yes", user="bob")
    record_annotation(db, project, 1, "no", user="cat")
    curated = current_labels(db, project, curated_only=True)
    assert curated["labels"].tolist() == [["yes"]]
    single = consolidate(latest_human_answers(db, project))
    assert single["method"].tolist() == ["majority"]  # one shared item: nothing to learn from
    assert single["confidence"].tolist() == [pytest.approx(2 / 3)]


def test_cli_settings_and_agreement(db, project, data_dir, capsys):
    from tests.test_cli import Run

    gw = Run(data_dir, capsys)
    assert gw.json("settings", "votes", "--annotations-per-item", "2")[
        "annotations_per_item"] == 2
    assert "from 1 to 5" in gw.fails("settings", "votes", "--annotations-per-item", "0")
    for user in ("ann", "bob"):
        item = gw.json("next", "votes", "--user", user)["items"][0]
        gw.json("label", "votes", item["id"], "yes", "--user", user)
    report = gw.json("agreement", "votes")
    assert {a["user"] for a in report["annotators"]} == {"ann", "bob"}


# ---------------------------------------------------------------- reviewed evidence


@pytest.fixture
def trio(db):
    """Items 1-2 answered by bob, dan and cat and settled by a reviewer; items 3-4 open.

    Returns the project; its items' ids are 1..4 by key (`trio_ids`).
    """
    p = create_project(db, "trio", "text", classes=["yes", "no"])
    with db.atomic():
        add_items(db, p, [{"key": str(i), "content": f"claim {i}", "sha256": str(i)}
                          for i in range(1, 5)])
    p = set_annotations_per_item(db, p, 2)
    ids = trio_ids(db, p)
    for item in (ids[1], ids[2]):  # bob and dan say no, cat says yes; the reviewer sides with cat
        record_annotation(db, p, item, "no", user="bob")
        record_annotation(db, p, item, "no", user="dan")
        record_annotation(db, p, item, "yes", user="cat")
        record_annotation(db, p, item, "yes", user="rev", source="review")
    record_annotation(db, p, ids[3], "no", user="bob")  # a 1-vs-1 tie: bob vs cat
    record_annotation(db, p, ids[3], "yes", user="cat")
    for user, label in (("bob", "no"), ("dan", "no"), ("cat", "yes")):  # 2 vs 1
        record_annotation(db, p, ids[4], label, user=user)
    return p


def trio_ids(db, project) -> dict[int, int]:
    return {int(k): i for k, i in db.execute("SELECT key, id FROM items WHERE project_id = ?",
                                             [project.id])}


def test_an_overturned_annotator_loses_the_ties_he_would_win(db, trio):
    ids = trio_ids(db, trio)
    human = latest_human_answers(db, trio)
    plain = consolidate(human).set_index("item_id")
    assert plain.loc[ids[3], "labels"] == ["no"]  # a tie goes to the first label in order: bob's
    assert plain.loc[ids[4], "labels"] == ["no"]  # two against one
    assert set(plain["method"]) == {"majority"}

    truth = reviewed_truth(db, trio)
    assert truth.to_dict() == {ids[1]: ["yes"], ids[2]: ["yes"]}
    weighted = consolidate(human, truth).set_index("item_id")
    assert set(weighted["method"]) == {"weighted-majority"}
    # bob and dan were overturned twice each: (0+1)/(2+2) = 0.25; cat confirmed twice: 0.75
    assert weighted.loc[ids[3], "labels"] == ["yes"]
    assert weighted.loc[ids[3], "confidence"] == pytest.approx(0.75 / (0.75 + 0.25))
    assert weighted.loc[ids[4], "labels"] == ["yes"]
    assert weighted.loc[ids[4], "confidence"] == pytest.approx(0.75 / 1.25)
    assert weighted.loc[ids[1], "labels"] == ["yes"]
    assert weighted.loc[ids[1], "confidence"] == 1.0

    weights = {w["user"]: w for w in annotator_weights(db, trio)}
    assert weights["bob"] == {"user": "bob", "answers": 4, "settled": 2, "overturned": 2,
                              "weight": 0.25}
    assert weights["cat"]["weight"] == 0.75 and weights["cat"]["overturned"] == 0
    assert "rev" not in weights  # reviewers are the truth, not weighed
    report = {a["user"]: a for a in agreement(db, trio)["annotators"]}
    assert (report["dan"]["settled"], report["dan"]["overturned"]) == (2, 2)
    assert report["dan"]["weight"] == 0.25


def test_without_review_data_results_are_unchanged(db, project, trio):
    gold = {r[0]: json.loads(r[1])[0] for r in db.execute(
        "SELECT id, gold FROM items WHERE project_id = ?", [project.id])}
    for item_id, truth in gold.items():
        wrong = "no" if truth == "yes" else "yes"
        record_annotation(db, project, item_id, truth, user="ann")
        record_annotation(db, project, item_id, truth if item_id % 4 else wrong, user="bob")
        record_annotation(db, project, item_id, wrong, user="spammer")
    for p in (project, trio):
        human = latest_human_answers(db, p)
        before = consolidate(human)
        for empty in (None, {}, pd.Series(dtype=object)):
            pd.testing.assert_frame_equal(consolidate(human, empty), before)
    assert reviewed_truth(db, project).empty
    assert {w["weight"] for w in annotator_weights(db, project)} == {0.5}


def test_dawid_skene_is_anchored_on_reviewed_items(db):
    p = create_project(db, "pair", "text", classes=["yes", "no"])
    with db.atomic():
        add_items(db, p, [{"key": str(i), "content": f"claim {i}", "sha256": str(i)}
                          for i in range(12)])
    ids = [r[0] for r in db.execute("SELECT id FROM items WHERE project_id = ? ORDER BY id",
                                    [p.id])]
    for n, item in enumerate(ids):  # two people who never agree: nothing says who is right
        truth = "yes" if n % 2 else "no"
        record_annotation(db, p, item, truth, user="zoe")
        record_annotation(db, p, item, "no" if truth == "yes" else "yes", user="abe")
    human = latest_human_answers(db, p)
    zoe_says = human[human["user"] == "zoe"].set_index("item_id")["labels"]
    plain = consolidate(human).set_index("item_id")
    assert plain["method"].iloc[0] == "dawid-skene"
    assert sum(plain.loc[i, "labels"] == zoe_says[i] for i in ids) < 12  # a coin toss
    for item in ids[:3]:  # a reviewer settles three items, each time as zoe answered
        zoe = human[(human["item_id"] == item) & (human["user"] == "zoe")]["labels"].iloc[0]
        record_annotation(db, p, item, zoe, user="rev", source="review")
    anchored = consolidate(human, reviewed_truth(db, p)).set_index("item_id")
    assert set(anchored["method"]) == {"dawid-skene"}
    assert all(anchored.loc[i, "labels"] == zoe_says[i] for i in ids)

