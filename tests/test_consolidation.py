"""Several annotators per item: queue hand-off, Dawid-Skene consolidation and agreement."""

from __future__ import annotations

import json

import pytest

from labeling.annotations import current_labels, record_annotation
from labeling.consolidation import agreement, consolidate, latest_human_answers
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
