"""Consolidation: several people's answers to one item become one label with a confidence.

Dawid-Skene (crowd-kit's implementation) learns how reliable each annotator
is from the items they share and weighs their answers by it; with too little
overlap to learn that (fewer than `MIN_SHARED_ITEMS` items answered twice),
majority vote is used, and the `method` column says which. Agreement is Krippendorff's
alpha (crowd-kit), which allows a different number of answers per item.

Reviewed evidence counts: an item whose label a reviewer settled (a live
answer with source `review`) has a known true label. Given those (`truth`),
Dawid-Skene is anchored on them (crowd-kit's `true_labels`), and below the
overlap Dawid-Skene needs, each person's smoothed accuracy on settled items,
(right + 1) / (settled + 2), weighs their vote (`weighted-majority`): a
person whose answers reviewers keep overturning loses ties to one whose
answers they confirm. Without review data the results are exactly those of
plain Dawid-Skene or majority vote.

Multi-label answers are consolidated as whole answer sets (the set is the
label), so a consolidated answer is always one that somebody gave.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import sqlite_utils

from labeling.annotations import live_annotations
from labeling.projects import Project
from labeling.targets import number_label

# Below this many items answered by two or more people there is too little
# overlap to learn each person's reliability: majority vote decides.
MIN_SHARED_ITEMS = 10

# Laplace smoothing of a person's accuracy on reviewer-settled items: someone with no
# settled items weighs 0.5, like everyone else, so votes without evidence stay equal.
PRIOR_RIGHT, PRIOR_SEEN = 1, 2


def _key(labels) -> str:
    """An answer set as one comparable label (the form crowd-kit sees)."""
    return json.dumps(sorted(labels))


def _answers(frame: pd.DataFrame) -> pd.DataFrame:
    """crowd-kit's shape: one row per (task, worker, label)."""
    return pd.DataFrame({
        "task": frame["item_id"].astype(int),
        "worker": frame["user"].astype(str),
        "label": frame["labels"].map(_key),
    })


def settled_labels(answers: pd.DataFrame) -> pd.Series:
    """Reviewer-settled items: item id -> the latest live review answer's labels.

    `answers` is a frame of live answers as `live_annotations` returns it (any
    sources; only `review` ones count). Review answers are what a person gave
    after looking at the item on purpose, so they are the truth the
    annotators' answers are measured against.
    """
    if answers.empty or "source" not in answers:
        return pd.Series(dtype=object)
    review = answers[answers["source"] == "review"]
    if review.empty:
        return pd.Series(dtype=object)
    order = review["id"] if "id" in review else pd.RangeIndex(len(review))
    latest = review.assign(_order=list(order)).sort_values("_order").drop_duplicates(
        "item_id", keep="last")
    return pd.Series(list(latest["labels"]), index=latest["item_id"].astype(int).to_numpy(),
                     dtype=object)


def reviewed_truth(db: sqlite_utils.Database, project: Project) -> pd.Series:
    """The project's reviewer-settled items (see `settled_labels`)."""
    return settled_labels(live_annotations(db, project))


def _truth_keys(truth: pd.Series | Mapping | None) -> pd.Series:
    if truth is None:
        return pd.Series(dtype=object)
    series = pd.Series(dict(truth)) if isinstance(truth, Mapping) else truth
    if series.empty:
        return pd.Series(dtype=object)
    return pd.Series([_key(v) for v in series.values],
                     index=pd.Index([int(i) for i in series.index], name="task"), dtype=object)


def _skills(answers: pd.DataFrame, truth: pd.Series) -> pd.DataFrame:
    """Per worker: answers on settled tasks, how many matched the truth, and the weight."""
    settled = answers[answers["task"].isin(truth.index)]
    right = settled["label"].to_numpy() == truth.reindex(settled["task"]).to_numpy()
    stats = pd.DataFrame({"worker": settled["worker"].to_numpy(), "right": right.astype(int)})
    grouped = stats.groupby("worker")["right"].agg(["size", "sum"])
    workers = pd.Index(sorted(answers["worker"].unique()), name="worker")
    seen = grouped["size"].reindex(workers, fill_value=0).astype(int)
    good = grouped["sum"].reindex(workers, fill_value=0).astype(int)
    return pd.DataFrame({"settled": seen, "right": good,
                         "skill": (good + PRIOR_RIGHT) / (seen + PRIOR_SEEN)}, index=workers)


def consolidate(human: pd.DataFrame,
                truth: pd.Series | Mapping | None = None) -> pd.DataFrame:
    """One row per item: `item_id, labels, confidence, n_answers, method`.

    `human` holds live human answers (`item_id, user, labels`), at most one
    per person and item (their latest). `truth` (optional) maps reviewer-
    settled item ids to their labels (`settled_labels`); without it, or when
    it is empty, the result is plain Dawid-Skene or majority vote.
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

    known = _truth_keys(truth)
    known = known[known.index.isin(answers["task"])]
    given = set(answers["label"])
    # Only truths somebody answered can anchor crowd-kit (a new label would be a new column);
    # the others still count against everyone in the weights.
    anchors = known[known.isin(given)]
    shared = counts[counts >= 2].index
    shared_workers = answers[answers["task"].isin(shared)]["worker"].nunique()
    with warnings.catch_warnings():
        # crowd-kit 1.4 still uses pandas keywords that pandas 3 deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if len(shared) >= MIN_SHARED_ITEMS and shared_workers >= 2:
            model = DawidSkene(n_iter=100)
            if anchors.empty:
                probas = model.fit(answers).probas_
            else:
                probas = model.fit(answers, true_labels=anchors).probas_
            method = "dawid-skene"
        elif known.empty:
            probas, method = MajorityVote().fit(answers).probas_, "majority"
        else:
            skills = _skills(answers, known)["skill"]
            probas = MajorityVote().fit(answers, skills=skills).probas_
            method = "weighted-majority"
            for task, label in anchors.items():  # settled items are known, as Dawid-Skene has it
                probas.loc[task] = 0.0
                probas.loc[task, label] = 1.0
    label = probas.idxmax(axis=1)
    confidence = probas.max(axis=1)
    return pd.DataFrame({
        "item_id": label.index.astype(int),
        "labels": label.map(json.loads).values,
        "confidence": confidence.values.astype(float),
        "n_answers": counts.reindex(label.index).values.astype(int),
        "method": method,
    })[columns]


def consolidate_numbers(human: pd.DataFrame) -> pd.DataFrame:
    """Numeric answers (regression): the median per item, as `consolidate` lays it out.

    The median, not the mean, so one slip of a finger (1500 for 15.00) cannot
    move the curated value; `confidence` is the share of answers within 10%
    of the median's magnitude of it (1.0 when everyone agrees).
    """
    columns = ["item_id", "labels", "confidence", "n_answers", "method"]
    if human.empty:
        return pd.DataFrame(columns=columns)
    values = human.assign(value=human["labels"].map(lambda a: float(a[0])))
    rows = []
    for item_id, group in values.groupby("item_id"):
        numbers = group["value"].to_numpy(dtype=float)
        middle = float(np.median(numbers))
        close = np.abs(numbers - middle) <= 0.1 * max(abs(middle), 1e-12)
        rows.append({"item_id": int(item_id), "labels": [number_label(middle)],
                     "confidence": float(close.mean()), "n_answers": len(numbers),
                     "method": "median"})
    return pd.DataFrame(rows, columns=columns)


def _interval_distance(answers: pd.DataFrame):
    """Krippendorff's interval distance for numbers, scaled into 0..1 by the answers' range."""
    values = answers["label"].map(lambda k: float(json.loads(k)[0]))
    span = float(values.max() - values.min()) or 1.0

    def distance(a, b) -> float:
        return ((float(json.loads(a)[0]) - float(json.loads(b)[0])) / span) ** 2

    return distance


def _numeric_annotators(out: dict, answers: pd.DataFrame, overlap: pd.DataFrame,
                        medians: pd.Series) -> dict:
    """Each person's share of shared numeric answers within 10% of the item's median."""
    for worker, rows in answers.groupby("worker"):
        shared = rows[rows["task"].isin(overlap["task"])]
        given = shared["label"].map(lambda k: float(json.loads(k)[0])).to_numpy()
        middle = shared["task"].map(medians).to_numpy(dtype=float)
        close = np.abs(given - middle) <= 0.1 * np.maximum(np.abs(middle), 1e-12)
        out["annotators"].append({
            "user": worker, "answers": int(len(rows)),
            "agreement_with_consensus": float(close.mean()) if len(shared) else None,
            "gold_answers": 0, "gold_accuracy": None, "settled": 0, "overturned": 0,
            "weight": 1.0,
        })
    out["distance"] = "interval (squared difference over the answers' range)"
    return out


def latest_human_answers(db: sqlite_utils.Database, project: Project) -> pd.DataFrame:
    """Each person's latest live answer per item (a changed mind replaces the old answer)."""
    answers = live_annotations(db, project)
    human = answers[answers["source"] == "human"]
    return human.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")


def annotator_weights(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Per annotator: how much reviewers' verdicts let their vote weigh in consolidation.

    `settled` counts their answers on items a reviewer settled, `overturned`
    those the reviewer answered differently, and `weight` is the smoothed
    accuracy (right + 1) / (settled + 2) that weighs their vote when there is
    too little overlap for Dawid-Skene (0.5 for someone never checked).
    Pages and the CLI show it beside each person's agreement.
    """
    answers = live_annotations(db, project)
    human = answers[answers["source"] == "human"]
    latest = human.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")
    if latest.empty:
        return []
    frame = _answers(latest)
    skills = _skills(frame, _truth_keys(settled_labels(answers)))
    totals = frame.groupby("worker").size()
    return [{"user": str(worker),
             "answers": int(totals.get(worker, 0)),
             "settled": int(row["settled"]),
             "overturned": int(row["settled"] - row["right"]),
             "weight": float(row["skill"])}
            for worker, row in skills.iterrows()]


def agreement(db: sqlite_utils.Database, project: Project) -> dict:
    """Krippendorff's alpha over items answered twice or more, and each annotator's record.

    Each annotator's entry also carries their consolidation weight from
    reviewer-settled items (`settled`, `overturned`, `weight`; see
    `annotator_weights`).
    """
    from crowdkit.metrics.data import alpha_krippendorff

    everything = live_annotations(db, project)
    human = everything[everything["source"] == "human"]
    human = human.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")
    out: dict = {"alpha": None, "items_with_overlap": 0, "annotators": []}
    if human.empty:
        return out
    answers = _answers(human)
    overlap = answers[answers.groupby("task")["task"].transform("size") >= 2]
    out["items_with_overlap"] = int(overlap["task"].nunique())
    distance = _interval_distance(overlap) if project.regression else None
    if out["items_with_overlap"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out["alpha"] = float(alpha_krippendorff(overlap, distance) if distance
                                 else alpha_krippendorff(overlap))
    truth = settled_labels(everything)
    if project.regression:  # numbers: the median, and "agrees" means within 10% of it
        medians = consolidate_numbers(human).set_index("item_id")["labels"].map(
            lambda a: float(a[0]))
        return _numeric_annotators(out, answers, overlap, medians)
    consolidated = consolidate(human, truth).set_index("item_id")["labels"].map(_key)
    skills = _skills(answers, _truth_keys(truth))
    gold = {
        r[0]: _key(json.loads(r[1]))
        for r in db.execute("SELECT id, gold FROM items WHERE project_id = ? AND gold IS NOT NULL",
                            [project.id])
    }
    for worker, rows in answers.groupby("worker"):
        shared = rows[rows["task"].isin(overlap["task"])]
        with_gold = rows[rows["task"].isin(gold)]
        skill = skills.loc[worker]
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
            "settled": int(skill["settled"]),
            "overturned": int(skill["settled"] - skill["right"]),
            "weight": float(skill["skill"]),
        })
    return out
