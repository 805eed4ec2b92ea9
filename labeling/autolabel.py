"""Automated labeling at a measured accuracy, Ground Truth-style but with a guarantee.

Ground Truth labels the items its model is confident about, with a fixed 95%
target and a point estimate. Here the user picks the target, and the threshold
is chosen so that a *lower confidence bound* on the accuracy of machine labels
reaches it:

- Validation: human (or review) labels on held-out items (`labeling.splits`),
  which the promoted model never trained on, with that model's predictions.
- For each candidate threshold t the machine labels at confidence >= t are
  right k times out of n on validation; the one-sided Clopper-Pearson bound
  at the stated confidence (default 95%) is the guaranteed accuracy.
- Thresholds are tested in a fixed order, most confident first, by the
  fallback procedure (Wiens 2003), so scanning many thresholds does not
  inflate the error rate: most of the error allowance (`FIRST_SHARE`) goes
  to the first threshold that could pass, the rest to the thresholds whose
  validation slice first reaches 2x, 4x, 8x ... that size, and a threshold
  that passes hands its allowance on to the next. Plain fixed-sequence
  testing (stop at the first failure) let one confident validation error
  among the first dozen answers block every threshold of a 97%-accurate
  model; here a later checkpoint can still pass. Thresholds whose validation
  slice is too small to ever pass are skipped, and the checkpoints depend
  only on confidences, not on whether the answers were right.

The pure functions (`lower_bound`, `coverage_curve`, `choose_threshold`) hold
the maths; `plan_autolabel` reads the store, `run_autolabel` writes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import sqlite_utils
from scipy.stats import beta

from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.projects import Project, require_classes
from labeling.queue import promoted_model_id
from labeling.splits import HOLDOUT_SOURCES, in_holdout
from labeling.store import utcnow

DEFAULT_TARGET = 0.95
DEFAULT_CONFIDENCE = 0.95
# Share of the error allowance on the first threshold that could pass. Measured
# on simulated validation sets and on the stored curves of the auto-labeling
# benchmark: 0.8 certifies as often as plain fixed-sequence testing where the
# most confident answers are clean (an even split lost a certification there),
# and still certifies 91% of the time when one confident error sits at the top
# (fixed-sequence: never).
FIRST_SHARE = 0.8


def lower_bound(correct: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound on a success rate (exact, never optimistic)."""
    if n <= 0 or correct <= 0:
        return 0.0
    return float(beta.ppf(1.0 - confidence, correct, n - correct + 1))


def min_validation(target: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The fewest validation answers that could certify `target` even if all were right."""
    return int(math.ceil(math.log(1.0 - confidence) / math.log(target)))


def coverage_curve(
    val_confidence: np.ndarray,
    val_correct: np.ndarray,
    pool_confidence: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[dict]:
    """Accuracy, its lower bound and pool coverage at every validation confidence, high to low."""
    val_confidence = np.asarray(val_confidence, dtype=float)
    val_correct = np.asarray(val_correct, dtype=bool)
    pool_confidence = np.sort(np.asarray(pool_confidence, dtype=float))
    order = np.argsort(-val_confidence, kind="stable")
    conf_sorted, correct_sorted = val_confidence[order], val_correct[order]
    hits = np.cumsum(correct_sorted)
    points = []
    for i, t in enumerate(conf_sorted):
        if i + 1 < len(conf_sorted) and conf_sorted[i + 1] == t:
            continue  # one point per distinct threshold, after all its ties
        n, k = i + 1, int(hits[i])
        covered = len(pool_confidence) - np.searchsorted(pool_confidence, t, side="left")
        points.append({
            "threshold": float(t),
            "validation_n": n,
            "validation_correct": k,
            "accuracy": k / n,
            "lower_bound": lower_bound(k, n, confidence),
            "pool_covered": int(covered),
            "coverage": float(covered / len(pool_confidence)) if len(pool_confidence) else 0.0,
        })
    return points


def fallback_weights(sizes: list[int], alpha: float) -> list[float]:
    """The error allowance each threshold starts with, given its validation slice size.

    `FIRST_SHARE` at the first threshold; the rest shared by the thresholds
    where the slice first reaches 2x, 4x, 8x ... the first one's size (all of
    it at the first when there is no such threshold). Sizes come from confidences
    alone, so the weights are fixed before any answer is checked.
    """
    if not sizes:
        return []
    checkpoints, goal = [], 2 * sizes[0]
    for i, n in enumerate(sizes):
        if n >= goal:
            checkpoints.append(i)
            while goal <= n:
                goal *= 2
    weights = [0.0] * len(sizes)
    weights[0] = alpha * FIRST_SHARE if checkpoints else alpha
    for i in checkpoints:
        weights[i] = alpha * (1 - FIRST_SHARE) / len(checkpoints)
    return weights


def choose_threshold(curve: list[dict], target: float, confidence: float) -> dict | None:
    """The lowest threshold certified by the fallback procedure, or None if none is.

    Each threshold is tested at its own allowance plus whatever the threshold
    before it passed on; the family-wise error stays within 1 - confidence, so
    every certified threshold holds at once and the lowest can be used. The
    chosen point's `lower_bound` is the bound at the level it was tested at
    (`tested_confidence`, never below `confidence`): at least as strict as the
    curve's.
    """
    alpha = 1.0 - confidence
    # The first threshold is tested at part of the allowance, so it needs a bigger slice.
    # With no slice twice that size there are no checkpoints: plain fixed-sequence
    # testing, everything on the first threshold that could pass at the full allowance.
    first_need = min_validation(target, 1 - alpha * FIRST_SHARE)
    eligible = [p for p in curve if p["validation_n"] >= first_need]
    if eligible and eligible[-1]["validation_n"] >= 2 * eligible[0]["validation_n"]:
        weights = fallback_weights([p["validation_n"] for p in eligible], alpha)
    else:
        eligible = [p for p in curve if p["validation_n"] >= min_validation(target, confidence)]
        weights = [alpha] + [0.0] * (len(eligible) - 1) if eligible else []
    chosen, carried = None, 0.0
    for point, weight in zip(eligible, weights, strict=True):
        level = weight + carried
        bound = (lower_bound(point["validation_correct"], point["validation_n"], 1.0 - level)
                 if level > 0 else 0.0)
        if bound >= target:
            chosen = {**point, "lower_bound": bound, "tested_confidence": 1.0 - level}
            carried = level
        else:
            carried = 0.0
    return chosen


def _validate_target(target: float, confidence: float) -> None:
    for name, value in (("target accuracy", target), ("confidence", confidence)):
        if not isinstance(value, (int, float)) or not 0.5 <= float(value) < 1.0:
            raise GroundworkError(
                f"the {name} must be a number from 0.5 up to (not including) 1, not {value!r}"
            )


def _validation(db: sqlite_utils.Database, project: Project, model_id: int):
    labels = current_labels(db, project, curated_only=True)
    truth = {
        int(r["item_id"]): sorted(r["labels"])
        for r in labels.to_dict("records")
        if r["source"] in HOLDOUT_SOURCES and in_holdout(project.id, r["key"])
    }
    conf, correct = [], []
    if truth:
        rows = db.execute(
            "SELECT p.item_id, p.predicted, p.confidence FROM predictions p "
            "JOIN items i ON i.id = p.item_id WHERE p.model_version_id = ? AND i.n_labels > 0",
            [model_id],
        ).fetchall()
        for item_id, predicted, c in rows:
            if item_id in truth:
                conf.append(c)
                correct.append(sorted(json.loads(predicted)) == truth[item_id])
    return np.array(conf, dtype=float), np.array(correct, dtype=bool)


def plan_autolabel(
    db: sqlite_utils.Database,
    project: Project,
    target: float = DEFAULT_TARGET,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """What an automated-labeling run would do now, without writing anything."""
    require_classes(project, "automated labeling")
    _validate_target(target, confidence)
    model_id = promoted_model_id(db, project)
    if model_id is None:
        raise GroundworkError(
            f"no promoted model for project {project.name!r}: train one first "
            f"(`groundwork train {project.name}`)"
        )
    val_conf, val_correct = _validation(db, project, model_id)
    pool = np.array([r[0] for r in db.execute(
        "SELECT p.confidence FROM predictions p JOIN items i ON i.id = p.item_id "
        "WHERE p.model_version_id = ? AND i.n_labels = 0", [model_id])], dtype=float)
    curve = coverage_curve(val_conf, val_correct, pool, confidence)
    chosen = choose_threshold(curve, target, confidence)
    need = min_validation(target, confidence)
    plan = {
        "target_accuracy": target,
        "confidence": confidence,
        "model_version_id": model_id,
        "validation_size": len(val_conf),
        "validation_accuracy": float(val_correct.mean()) if len(val_correct) else None,
        "min_validation": need,
        "pool_size": len(pool),
        "threshold": chosen["threshold"] if chosen else None,
        "estimated_accuracy": chosen["accuracy"] if chosen else None,
        "lower_bound": chosen["lower_bound"] if chosen else None,
        "tested_confidence": chosen["tested_confidence"] if chosen else None,
        "validation_above_threshold": chosen["validation_n"] if chosen else 0,
        "coverage": chosen["coverage"] if chosen else 0.0,
        "would_label": chosen["pool_covered"] if chosen else 0,
        "curve": curve,
        "how_measured": (
            f"accuracy of the promoted model's labels on {len(val_conf)} held-out human labels "
            f"it never trained on; lower_bound is a one-sided Clopper-Pearson bound, "
            "thresholds tested most-confident first with the fallback procedure so that the "
            f"bound holds for the chosen threshold with {confidence:.0%} confidence"
        ),
    }
    if chosen is None:
        plan["reason"] = (
            f"no threshold certifies {target:.0%} at {confidence:.0%} confidence: "
            + (f"only {len(val_conf)} held-out human labels with predictions (at least {need} "
               "are needed); label more items and retrain"
               if len(val_conf) < need else
               "the model is not accurate enough on held-out labels; label more items and "
               "retrain, or lower the target")
        )
    return plan


def revert_auto_labels(db: sqlite_utils.Database, project: Project) -> int:
    """Take back every live machine label of the project in one step (kept on record)."""
    with db.atomic():
        count = db.execute(
            "SELECT count(*) FROM annotations WHERE project_id = ? AND source = 'auto' "
            "AND retracted_at IS NULL", [project.id]).fetchone()[0]
        db.execute("UPDATE annotations SET retracted_at = ? WHERE project_id = ? AND "
                   "source = 'auto' AND retracted_at IS NULL", [utcnow(), project.id])
        db.execute("UPDATE items SET n_auto = 0 WHERE project_id = ? AND n_auto > 0",
                   [project.id])
    return int(count)


def auto_label_count(db: sqlite_utils.Database, project: Project) -> int:
    return int(db.execute("SELECT count(*) FROM items WHERE project_id = ? AND n_auto > 0",
                          [project.id]).fetchone()[0])


def run_autolabel(
    db: sqlite_utils.Database,
    project: Project,
    target: float = DEFAULT_TARGET,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Label every unlabeled item above the certified threshold, replacing earlier auto-labels.

    One transaction: the previous run's machine labels are retracted and the
    new ones written together, so a re-run at another target never mixes two
    thresholds. Nothing a person answered is touched.
    """
    plan = plan_autolabel(db, project, target, confidence)
    model_id = plan["model_version_id"]
    version = db.execute("SELECT version FROM model_versions WHERE id = ?",
                         [model_id]).fetchone()[0]
    now = utcnow()
    with db.atomic():
        reverted = revert_auto_labels(db, project)
        labeled = 0
        if plan["threshold"] is not None:
            rows = db.execute(
                "SELECT p.item_id, p.predicted, p.confidence FROM predictions p "
                "JOIN items i ON i.id = p.item_id WHERE p.model_version_id = ? "
                "AND i.n_labels = 0 AND p.confidence >= ?",
                [model_id, plan["threshold"]],
            ).fetchall()
            rows = [r for r in rows if json.loads(r[1])]  # multi-label: no empty answers
            db["annotations"].insert_all(
                (
                    {"project_id": project.id, "item_id": item_id, "user": f"model-v{version}",
                     "labels": predicted, "source": "auto", "created_at": now,
                     "duration_ms": None, "confidence": conf, "model_version_id": model_id,
                     "retracted_at": None}
                    for item_id, predicted, conf in rows
                ),
                batch_size=2000,
            )
            ids = [r[0] for r in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                db.execute(f"UPDATE items SET n_auto = n_auto + 1 WHERE id IN "
                           f"({','.join('?' * len(chunk))})", chunk)
            labeled = len(ids)
    return {**plan, "auto_labeled": labeled, "reverted": reverted}
