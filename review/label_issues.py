"""Label-issue detection: which of the project's own labels are probably wrong.

Out-of-fold probabilities over the curated labels (`review.confident`: the
few model families that agree best with the labels, the project's tuned one
among the candidates) feed confident learning: cleanlab estimates how many
labels are wrong, and the labels the models find least likely are flagged,
most likely error first. The latest scan is kept in `label_checks`, so a
workflow over the project's labels (`source = 'labels'`, condition
`label_error`) can preview and open review tasks without refitting anything;
a scan is redone when the labels changed since.

Labels a reviewer already gave (source `review`) train the models but are
never flagged again: a person has just looked at them.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings

import numpy as np
import pandas as pd
import sqlite_utils

from automl.features import is_sparse_modality, make_features
from automl.registry import promoted_model
from labeling.annotations import current_labels, live_annotations
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project, require_classes
from labeling.store import get_setting, set_setting, utcnow
from review.confident import MIN_PER_CLASS, candidates_for, label_issue_ranking, out_of_fold

CHECKED_SOURCES = ("human", "import")


def _setting_key(project: Project) -> str:
    return f"label_check:{project.id}"


def _labels(db: sqlite_utils.Database, project: Project) -> pd.DataFrame:
    return current_labels(db, project, curated_only=True)


def labels_hash(labels: pd.DataFrame) -> str:
    rows = sorted(zip(labels["item_id"].astype(int).tolist(),
                      [json.dumps(v) for v in labels["labels"]],
                      labels["source"].tolist(), strict=True))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def last_check(db: sqlite_utils.Database, project: Project) -> dict | None:
    """The latest scan's summary (when, over how many labels, which models), if any."""
    raw = get_setting(db, _setting_key(project))
    return json.loads(raw) if raw else None


def is_fresh(db: sqlite_utils.Database, project: Project) -> bool:
    check = last_check(db, project)
    if check is None:
        return False
    labels = current_labels(db, project, curated_only=True)
    return not labels.empty and check.get("labels_hash") == labels_hash(labels)


def _given_by(
    db: sqlite_utils.Database, project: Project
) -> dict[int, list[tuple[str, list[str]]]]:
    """Who gave each item's label: the people whose latest live answer is that label."""
    answers = live_annotations(db, project)
    answers = answers[answers["source"].isin(CHECKED_SOURCES)]
    latest = answers.sort_values("id").drop_duplicates(["item_id", "user"], keep="last")
    out: dict[int, list[tuple[str, list[str]]]] = {}
    for item_id, user, labels in zip(latest["item_id"], latest["user"], latest["labels"],
                                     strict=True):
        out.setdefault(int(item_id), []).append((str(user), list(labels)))
    return out


def check_labels(
    db: sqlite_utils.Database, project: Project, *, seed: int = 0,
    candidates: list[dict] | None = None,
) -> dict:
    """Scan the project's curated labels now and store the result; return its summary."""
    require_classes(project, "label-issue detection (confident learning)")
    started = time.monotonic()
    labels = _labels(db, project)
    if project.multi_label:
        return _check_multi_label(db, project, labels, started, seed)
    given = [v[0] for v in labels["labels"]] if not labels.empty else []
    counts = pd.Series(given, dtype=object).value_counts()
    kept_classes = [c for c in project.classes if counts.get(c, 0) >= MIN_PER_CLASS]
    if len(kept_classes) < 2:
        raise GroundworkError(
            f"label-issue detection needs at least {MIN_PER_CLASS} labels in each of two "
            f"classes; project {project.name!r} has {len(labels)} curated labels "
            f"({', '.join(f'{c}: {n}' for c, n in counts.items()) or 'none'})")
    mask = np.array([g in kept_classes for g in given])
    rows = labels[mask].reset_index(drop=True)
    y = np.array([kept_classes.index(v[0]) for v in rows["labels"]])
    ids = [int(i) for i in rows["item_id"]]
    items = get_items(db, project, ids)
    X = model_input(db, project, items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F = make_features(project.modality, X).fit_transform(X)
    if hasattr(F, "tocsr"):
        F = F.tocsr()
    tuned = promoted_model(db, project)
    menu = candidates if candidates is not None else candidates_for(
        is_sparse_modality(project.modality), tuned["params"] if tuned else None)
    oof = out_of_fold(F, y, kept_classes, candidates=menu, seed=seed)
    issues, quality = label_issue_ranking(y, oof.probabilities)
    probabilities = oof.probabilities
    return _save_scan(
        db, project, labels, rows, kept_classes, probabilities, quality, issues, started,
        given=[[kept_classes[int(v)]] for v in y],
        suggested=[[kept_classes[int(p.argmax())]] for p in probabilities],
        folds=oof.folds, models=oof.members,
        method=("confident learning: the labels of lowest out-of-fold probability "
                "(cleanlab self-confidence), as many as cleanlab.count.num_label_issues "
                "(off_diagonal_calibrated) estimates, probabilities averaged over "
                f"{len(oof.members)} model families "
                f"({', '.join(m['model'] for m in oof.members)}), {oof.folds}-fold"))


def _check_multi_label(db: sqlite_utils.Database, project: Project, labels: pd.DataFrame,
                       started: float, seed: int) -> dict:
    """Multi-label: each item's label set against out-of-fold per-label probabilities.

    One-vs-rest per label, 5-fold (extra trees on dense features, logistic
    regression on sparse text features: on digits tagged "even"/"big" with 8%
    of tags flipped, trees found 88-100% of the flips at 81-91% precision, logistic
    regression 71-85% at 44-53%); cleanlab's multi-label
    confident learning (`cleanlab.multilabel_classification`) flags items whose
    given set is probably wrong in some label, ranked by its label-quality
    score. The suggestion is the set of labels the model gives p >= 0.5.
    """
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    given = [list(v) for v in labels["labels"]] if not labels.empty else []
    counts = {c: sum(c in g for g in given) for c in project.classes}
    kept = [c for c in project.classes
            if MIN_PER_CLASS <= counts[c] <= len(given) - MIN_PER_CLASS]
    if not kept:
        raise GroundworkError(
            f"label-issue detection needs a label that at least {MIN_PER_CLASS} items have and "
            f"{MIN_PER_CLASS} items lack; project {project.name!r} has {len(given)} curated "
            f"labels ({', '.join(f'{c}: {n}' for c, n in counts.items()) or 'none'})")
    ids = [int(i) for i in labels["item_id"]]
    Y = np.array([[int(c in g) for c in kept] for g in given])
    X = model_input(db, project, get_items(db, project, ids))
    folds = int(min(5, len(ids)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F = make_features(project.modality, X).fit_transform(X)
        sparse = is_sparse_modality(project.modality)
        base = (LogisticRegression(max_iter=1000, class_weight="balanced") if sparse else
                ExtraTreesClassifier(n_estimators=300, random_state=seed, n_jobs=1))
        model = OneVsRestClassifier(base)
        oof = cross_val_predict(model, F, Y, cv=KFold(folds, shuffle=True, random_state=seed),
                                method="predict_proba")
        sets = [[j for j in range(len(kept)) if row[j]] for row in Y]
        quality = get_label_quality_scores(sets, oof)
        issues = find_label_issues(sets, oof, return_indices_ranked_by="self_confidence")
    family = "logistic regression" if sparse else "extra trees"
    return _save_scan(
        db, project, labels, labels, kept, oof, quality, issues, started, given=given,
        suggested=[[c for j, c in enumerate(kept) if row[j] >= 0.5] for row in oof],
        folds=folds, models=[{"model": f"one-vs-rest {family}"}],
        method=("cleanlab.multilabel_classification.filter.find_label_issues on out-of-fold "
                f"per-label probabilities of one-vs-rest {family}, {folds}-fold"))


def _save_scan(db: sqlite_utils.Database, project: Project, labels: pd.DataFrame,
               rows: pd.DataFrame, kept: list[str], probabilities: np.ndarray,
               quality: np.ndarray, issues, started: float, *, given: list[list[str]],
               suggested: list[list[str]], folds: int, models: list[dict],
               method: str) -> dict:
    """Store a scan (one row per checkable label, issues ranked) and its summary.

    `rows` are the scanned labels in the order of `probabilities` (one column per
    class in `kept`); labels a reviewer gave are scanned but never flagged.
    """
    ids = [int(i) for i in rows["item_id"]]
    checkable = rows["source"].isin(CHECKED_SOURCES).to_numpy()
    rank = {int(i): r for r, i in enumerate(i for i in issues if checkable[i])}
    full = np.zeros((len(ids), len(project.classes)))
    for j, name in enumerate(kept):
        full[:, project.classes.index(name)] = probabilities[:, j]
    now = utcnow()
    records = [{
        "item_id": item_id,
        "project_id": project.id,
        "given": json.dumps(given[i]),
        "suggested": json.dumps(suggested[i]),
        "probabilities": json.dumps([round(float(p), 6) for p in full[i]]),
        "quality": float(quality[i]),
        "issue": int(i in rank),
        "rank": rank.get(i),
        "checked_at": now,
    } for i, item_id in enumerate(ids) if checkable[i]]
    summary = {
        "labels_hash": labels_hash(labels),
        "checked_at": now,
        "labels": int(len(labels)),
        "checked": int(checkable.sum()),
        "issues": len(rank),
        "classes": kept,
        "skipped_classes": [c for c in project.classes if c not in kept],
        "folds": folds,
        "models": models,
        "seconds": round(time.monotonic() - started, 2),
        "method": method,
    }
    with db.atomic():
        db.execute("DELETE FROM label_checks WHERE project_id = ?", [project.id])
        db["label_checks"].insert_all(records, batch_size=1000)
    set_setting(db, _setting_key(project), json.dumps(summary))
    return summary


def ensure_checked(db: sqlite_utils.Database, project: Project, *, seed: int = 0) -> dict:
    """The latest scan, redone first if the labels changed since."""
    if not is_fresh(db, project):
        return check_labels(db, project, seed=seed)
    return last_check(db, project)  # type: ignore[return-value]


def stored_checks(db: sqlite_utils.Database, project: Project, *, issues_only: bool) -> list[dict]:
    """The latest scan's rows: item, given and suggested label, probabilities, quality."""
    where = "AND c.issue = 1" if issues_only else ""
    rows = db.query(
        f"""
        SELECT c.*, i.key FROM label_checks c JOIN items i ON i.id = c.item_id
        WHERE c.project_id = ? {where}
        ORDER BY c.rank IS NULL, c.rank, c.quality
        """,
        [project.id],
    )
    given_by = _given_by(db, project)
    out = []
    for row in rows:
        given = json.loads(row["given"])
        people = given_by.get(int(row["item_id"]), [])
        same = [u for u, labs in people if labs == given]
        out.append({
            "id": int(row["item_id"]),
            "key": row["key"],
            "given": given,
            "suggested": json.loads(row["suggested"]),
            "score": round(1.0 - float(row["quality"]), 6),
            "quality": float(row["quality"]),
            "probabilities": json.loads(row["probabilities"]),
            "issue": bool(row["issue"]),
            "rank": row["rank"],
            "users": same or [u for u, _ in people],
        })
    return out


def label_issues(
    db: sqlite_utils.Database, project: Project, *, limit: int | None = None,
    refresh: bool = True, seed: int = 0,
) -> list[dict]:
    """Suspected label errors, most likely first: id, key, given, suggested, score, users.

    `score` is 1 - the out-of-fold probability of the given label: how likely
    it is wrong. Only labels people gave (or imported) are checked.
    """
    if refresh:
        ensure_checked(db, project, seed=seed)
    issues = stored_checks(db, project, issues_only=True)
    return issues if limit is None else issues[: max(int(limit), 0)]


def annotator_error_rates(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Per person: labels given, label issues reviewed, and how many a reviewer overturned.

    An issue is confirmed when the review answer differs from the given label;
    `error_rate` is confirmed errors / reviewed issues of that person, and
    `error_share` is confirmed errors / all their labels (a lower bound on
    their error rate, since not every label was reviewed).
    """
    rows = db.query(
        """
        SELECT t.given, t.given_by, a.labels AS answer
        FROM review_tasks t JOIN annotations a ON a.id = t.annotation_id
        WHERE t.project_id = ? AND t.status = 'completed' AND t.given IS NOT NULL
          AND a.retracted_at IS NULL
        """,
        [project.id],
    )
    stats: dict[str, dict] = {}
    for row in rows:
        wrong = json.loads(row["answer"]) != json.loads(row["given"])
        for user in json.loads(row["given_by"] or "[]"):
            entry = stats.setdefault(user, {"reviewed": 0, "confirmed_errors": 0})
            entry["reviewed"] += 1
            entry["confirmed_errors"] += int(wrong)
    answers = live_annotations(db, project)
    answers = answers[answers["source"].isin(CHECKED_SOURCES)]
    given = answers.drop_duplicates(["item_id", "user"]).groupby("user").size()
    out = []
    for user in sorted(set(stats) | set(given.index)):
        entry = stats.get(user, {"reviewed": 0, "confirmed_errors": 0})
        n = int(given.get(user, 0))
        out.append({
            "user": user,
            "labels": n,
            "reviewed": entry["reviewed"],
            "confirmed_errors": entry["confirmed_errors"],
            "error_rate": (entry["confirmed_errors"] / entry["reviewed"]
                           if entry["reviewed"] else None),
            "error_share": entry["confirmed_errors"] / n if n else None,
        })
    return out
