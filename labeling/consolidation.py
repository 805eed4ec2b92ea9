"""Consolidation: several people's answers to one item become one label with a confidence.

Dawid-Skene (crowd-kit's implementation) learns how reliable each annotator
is from the items they share and weighs their answers by it; with too little
overlap to learn that (fewer than `MIN_SHARED_ITEMS` items answered twice),
majority vote is used, and the `method` column says which. Agreement is Krippendorff's
alpha (crowd-kit), which allows a different number of answers per item.

Multi-label answers are consolidated as whole answer sets (the set is the
label), so a consolidated answer is always one that somebody gave.
"""

from __future__ import annotations

import json
import warnings

import pandas as pd
import sqlite_utils

from labeling.annotations import live_annotations
from labeling.projects import Project

# Below this many items answered by two or more people there is too little
# overlap to learn each person's reliability: majority vote decides.
MIN_SHARED_ITEMS = 10


def _answers(frame: pd.DataFrame) -> pd.DataFrame:
    """crowd-kit's shape: one row per (task, worker, label)."""
    return pd.DataFrame({
        "task": frame["item_id"].astype(int),
        "worker": frame["user"].astype(str),
        "label": frame["labels"].map(lambda v: json.dumps(sorted(v))),
    })


def consolidate(human: pd.DataFrame) -> pd.DataFrame:
    """One row per item: `item_id, labels, confidence, n_answers, method`.

    `human` holds live human answers (`item_id, user, labels`), at most one
    per person and item (their latest).
    """
    columns = ["item_id", "labels", "confidence", "n_answers", "method"]
    if human.empty:
        return pd.DataFrame(columns=columns)
    answers = _answers(human).drop_duplicates(["task", "worker"], keep="last")
    counts = answers.groupby("task").size()
    if counts.max() < 2:
        out = answers.assign(confidence=1.0, n_answers=1, method="single")
        return pd.DataFrame({
            "item_id": out["task"], "labels": out["label"].map(json.loads),
            "confidence": out["confidence"], "n_answers": out["n_answers"],
            "method": out["method"],
        }).reset_index(drop=True)[columns]
    from crowdkit.aggregation import DawidSkene, MajorityVote

    shared = counts[counts >= 2].index
    shared_workers = answers[answers["task"].isin(shared)]["worker"].nunique()
    with warnings.catch_warnings():
        # crowd-kit 1.4 still uses pandas keywords that pandas 3 deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if len(shared) >= MIN_SHARED_ITEMS and shared_workers >= 2:
            probas, method = DawidSkene(n_iter=100).fit(answers).probas_, "dawid-skene"
        else:
            probas, method = MajorityVote().fit(answers).probas_, "majority"
    label = probas.idxmax(axis=1)
    confidence = probas.max(axis=1)
    return pd.DataFrame({
        "item_id": label.index.astype(int),
        "labels": label.map(json.loads).values,
        "confidence": confidence.values.astype(float),
        "n_answers": counts.reindex(label.index).values.astype(int),
        "method": method,
    })[columns]


def latest_human_answers(db: sqlite_utils.Database, project: Project) -> pd.DataFrame:
    """Each person's latest live answer per item (a changed mind replaces the old answer)."""
    answers = live_annotations(db, project)
    human = answers[answers["source"] == "human"]
    return human.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")


def agreement(db: sqlite_utils.Database, project: Project) -> dict:
    """Krippendorff's alpha over items answered twice or more, and each annotator's record."""
    from crowdkit.metrics.data import alpha_krippendorff

    human = latest_human_answers(db, project)
    out: dict = {"alpha": None, "items_with_overlap": 0, "annotators": []}
    if human.empty:
        return out
    answers = _answers(human)
    overlap = answers[answers.groupby("task")["task"].transform("size") >= 2]
    out["items_with_overlap"] = int(overlap["task"].nunique())
    if out["items_with_overlap"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out["alpha"] = float(alpha_krippendorff(overlap))
    consolidated = consolidate(human).set_index("item_id")["labels"].map(
        lambda v: json.dumps(sorted(v)))
    gold = {
        r[0]: json.dumps(sorted(json.loads(r[1])))
        for r in db.execute("SELECT id, gold FROM items WHERE project_id = ? AND gold IS NOT NULL",
                            [project.id])
    }
    for worker, rows in answers.groupby("worker"):
        shared = rows[rows["task"].isin(overlap["task"])]
        with_gold = rows[rows["task"].isin(gold)]
        out["annotators"].append({
            "user": worker,
            "answers": int(len(rows)),
            "agreement_with_consensus": (
                float((shared["label"].values == consolidated.reindex(shared["task"]).values)
                      .mean()) if len(shared) else None),
            "gold_answers": int(len(with_gold)),
            "gold_accuracy": (
                float((with_gold["label"].values == with_gold["task"].map(gold).values).mean())
                if len(with_gold) else None),
        })
    return out
