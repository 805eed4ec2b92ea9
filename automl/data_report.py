"""A data report before training: what kind of problem this is, and what is wrong with the data.

Training on bad data fails late (an unreadable image stops the feature step
after the job started) or, worse, succeeds with numbers that mean nothing (a
class with one example cannot be both learned and measured; a column that is
a copy of the label scores 1.0; duplicates on both sides of a split inflate
the cross-validated score). These checks run in well under a second or two on
the raw model input (`labeling.inputs.model_input`), so the Train page and
`groundwork train` can show them before a job starts.

Everything here is a pure function of (modality, X, labels, multi_label,
classes): no Streamlit, no SQL. The report is a plain JSON-serialisable dict;
each finding is `{"level": "blocking" | "warning" | "info", "check": name,
"message": what is wrong and what to do}`. Only blocking findings stop a run
(`raise_if_blocking`); warnings are the user's call.

Checks (the `check` names):

- blocking: `no_labels`, `one_class`, `singleton_class`, `unreadable_images`
  (the feature step opens every image, so one missing or broken file stops a
  run late, with Pillow's message instead of this one)
- warning: `unlabeled_class`, `few_labels`, `imbalance`, `duplicates`,
  `conflicting_duplicates`, `missing_values` (> 20% of a column),
  `constant_column`, `leakage`, `empty_texts`
- info: `missing_values` (up to 20%), `sampled` (a check looked at a sample)

Costs are capped: the leakage check fits on at most `LEAKAGE_SAMPLE_ROWS`
rows, images are opened for the readability check on at most
`IMAGE_OPEN_SAMPLE` files and hashed (for duplicates) only when another file
has the same size; every sample is named in a `sampled` finding.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from labeling.errors import GroundworkError
from labeling.targets import is_regression_target  # noqa: F401 - part of this API

# Objective metrics a user can pick, per problem type; the first is the default.
# Names are scikit-learn scorer names (`sklearn.metrics.get_scorer`), except
# multi-label `balanced_accuracy`, which is `automl.training.score`'s mean of
# per-label balanced accuracy. Balanced accuracy is the classification default
# because it scores the always-the-majority model at 1/k whatever the class
# shares, so imbalanced data cannot flatter a useless model; `accuracy` is
# offered for when classes are balanced and errors cost the same. R² is the
# regression default because it is scale-free, so it reads the same on prices
# and on percentages.
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("balanced_accuracy", "accuracy", "f1_macro", "f1", "roc_auc",
               "average_precision", "neg_log_loss"),
    "multiclass": ("balanced_accuracy", "accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr",
                   "neg_log_loss"),
    "multi-label": ("balanced_accuracy", "f1_macro", "f1_micro", "f1_samples",
                    "jaccard_samples", "roc_auc"),
    "regression": ("r2", "neg_mean_absolute_error", "neg_root_mean_squared_error"),
}

MIN_LABELS_PER_CLASS = 10  # below this a class's model and its measurement are guesswork
IMBALANCE_RATIO = 9.0  # largest / smallest class; in a two-class problem: minority < 10%
MISSING_WARNING_SHARE = 0.2  # a column emptier than this is probably a broken import
LEAKAGE_SCORE = 0.98  # cross-validated balanced accuracy of one column alone
LEAKAGE_MIN_LABELS = 20  # below this one column can separate the classes by chance
LEAKAGE_SAMPLE_ROWS = 5_000  # the leakage check's fits stay in milliseconds per column
LEAKAGE_TREE_DEPTH = 4  # 16 leaves: enough to read back a label copy of up to 16 classes
LOOKUP_ONLY_VALUES = 2 * 2**LEAKAGE_TREE_DEPTH  # up to this many values, no tree is fitted
IMAGE_OPEN_SAMPLE = 2_000  # opening images costs; hashing only same-size files is cheap
EXAMPLES = 3  # how many examples a finding names

_LEVEL_ORDER = {"blocking": 0, "warning": 1, "info": 2}


# ---------------------------------------------------------------- problem type and metric


def problem_type(labels: Sequence[Sequence[str]], multi_label: bool, classes: Sequence[str],
                 regression: bool = False) -> str:
    """"multi-label", "binary" or "multiclass" for a project's labels.

    Counted on the classes that have labels, not on the declared ones: training
    fits the classes it sees, so a three-class project with two labeled
    classes trains (and must be measured as) a binary model. With fewer than
    two labeled classes the declared classes decide; that data is blocked
    anyway. Regression targets are numbers, not class lists: see
    `is_regression_target`.
    """
    if regression:
        return "regression"
    if multi_label:
        return "multi-label"
    seen = {a[0] for a in labels if a}
    k = len(seen) if len(seen) >= 2 else len(classes)
    return "multiclass" if k > 2 else "binary"


def default_metric(problem_type: str) -> str:
    """The objective a search optimises unless the user picks another (see `METRICS`)."""
    return metrics_for(problem_type)[0]


def metrics_for(problem_type: str) -> tuple[str, ...]:
    """The metrics a user may choose for a problem type, default first."""
    if problem_type not in METRICS:
        raise GroundworkError(f"unknown problem type {problem_type!r}; "
                              f"expected one of: {', '.join(METRICS)}")
    return METRICS[problem_type]


def choose_metric(problem_type: str, metric: str | None = None) -> str:
    """The user's override if it fits the problem type, else the default.

    A wrong override is an error, not a silent fallback: `roc_auc` on a
    three-class problem would otherwise quietly optimise something else.
    """
    allowed = metrics_for(problem_type)
    if metric is None or metric == "":
        return allowed[0]
    if metric not in allowed:
        raise GroundworkError(
            f"metric {metric!r} does not fit a {problem_type} problem: choose one of "
            f"{', '.join(allowed)} (default {allowed[0]})"
        )
    return metric


# ---------------------------------------------------------------- the report


def data_report(
    modality: str,
    X: Sequence[str] | pd.DataFrame,  # noqa: N803 - scikit-learn's name for model input
    labels: Sequence[Sequence[str]],
    multi_label: bool,
    classes: Sequence[str],
    *,
    metric: str | None = None,
    seed: int = 0,
    item_ids: Sequence[int] | None = None,
    regression: bool = False,
) -> dict:
    """Problem type, metric, class balance and findings for one training set.

    `X` is what `labeling.inputs.model_input` gives (texts, a DataFrame or
    image paths), one entry per label list in `labels`. `metric` is the user's
    override (checked against the problem type). Sampling uses `seed`, so the
    same data gives the same report. `item_ids` (one per row, such as
    `TrainingSet.item_ids`) make findings name items ("items #12, #40", and
    their ids in `examples`) instead of positions in `X`.

    The report: `modality`, `n`, `problem_type`, `metric` (the one to
    optimise), `metrics` (the choices, default first), `class_counts` (project
    order, zero counts kept), `imbalance_ratio` (largest / smallest labeled
    class, or None), `duplicates` ({items, groups, conflicting_groups}),
    `missing` (tables only: column -> share of empty cells, if any),
    `findings` (blocking first) and `blocking` (whether any finding blocks).
    With `regression` (numeric labels, tables only) `target` describes the
    numbers instead of `class_counts`, and the label checks are the ones
    numbers need (`few_labels`, `constant_target`, `skewed_target`,
    leakage by R²).
    """
    if modality not in ("text", "tabular", "image"):
        raise GroundworkError(f"unknown modality {modality!r}: expected text, tabular or image")
    if len(X) != len(labels):
        raise GroundworkError(
            f"the model input has {len(X)} rows but there are {len(labels)} label lists: "
            "pass one label list per item (items without media cannot be reported on)"
        )
    ids = None if item_ids is None else [int(i) for i in item_ids]
    if ids is not None and len(ids) != len(labels):
        raise GroundworkError(f"{len(ids)} item ids for {len(labels)} label lists: pass one "
                              "id per item, or none")
    labels = [list(a) for a in labels]
    kind = problem_type(labels, multi_label, classes, regression)
    chosen = choose_metric(kind, metric)
    if regression:
        return _regression_report(modality, X, labels, chosen, seed, ids)
    counts = _class_counts(labels, multi_label, classes)
    labeled = {c: k for c, k in counts.items() if k > 0}
    ratio = (max(labeled.values()) / min(labeled.values())) if len(labeled) >= 2 else None

    findings: list[dict] = []
    findings += _label_findings(labels, multi_label, counts, ratio, chosen)
    report: dict = {
        "modality": modality,
        "n": len(labels),
        "problem_type": kind,
        "metric": chosen,
        "metrics": list(metrics_for(kind)),
        "class_counts": counts,
        "imbalance_ratio": None if ratio is None else round(float(ratio), 3),
        "duplicates": {"items": 0, "groups": 0, "conflicting_groups": 0},
    }
    label_keys = _label_keys(labels, multi_label)
    if modality == "text":
        texts = ["" if t is None else str(t) for t in X]
        findings += _text_findings(texts, ids)
        normalised = pd.Series([" ".join(t.split()) for t in texts], dtype=object)
        codes = pd.factorize(normalised)[0]
        codes[(normalised == "").to_numpy()] = -1  # empty texts are reported on their own
        findings += _duplicate_findings(codes, label_keys, labels, "text", report, ids)
    elif modality == "tabular":
        frame, table_findings = _table_findings(X, label_keys, labels, report, ids)
        findings += table_findings
        findings += _leakage_findings(frame, label_keys, seed)
    else:
        findings += _image_findings([str(p) for p in X], label_keys, labels, report, seed,
                                    ids)

    findings.sort(key=lambda f: _LEVEL_ORDER[f["level"]])
    report["findings"] = findings
    report["blocking"] = any(f["level"] == "blocking" for f in findings)
    return report


def raise_if_blocking(report: dict) -> None:
    """Stop a training run on blocking findings, with every reason in one message.

    All of them at once, so a user fixes the data in one pass instead of
    meeting the next problem on the next try.
    """
    messages = [f["message"] for f in report.get("findings", []) if f["level"] == "blocking"]
    if messages:
        raise GroundworkError("training cannot start: " + "; ".join(messages))


# ---------------------------------------------------------------- labels


def _finding(level: str, check: str, message: str, **extra: object) -> dict:
    return {"level": level, "check": check, "message": message, **extra}


def _class_counts(labels: list[list[str]], multi_label: bool, classes: Sequence[str]
                  ) -> dict[str, int]:
    """Items per class in the project's class order; zero-count classes kept, unknown ones last.

    Multi-label counts an item once per class it carries.
    """
    counts = dict.fromkeys(map(str, classes), 0)
    extra: dict[str, int] = {}
    for answer in labels:
        for c in (answer if multi_label else answer[:1]):
            target = counts if c in counts else extra
            target[c] = target.get(c, 0) + 1
    counts.update({c: extra[c] for c in sorted(extra)})
    return counts


def _label_keys(labels: list[list[str]], multi_label: bool) -> np.ndarray:
    """One integer per item standing for its answer (the label set for multi-label); -1: none."""
    keys = ["\x1f".join(sorted(a)) if multi_label else (a[0] if a else None) for a in labels]
    return pd.factorize(pd.Series(keys, dtype=object))[0]


def _names(classes: Sequence[str], counts: dict[str, int] | None = None) -> str:
    if counts is None:
        return ", ".join(repr(c) for c in classes)
    return ", ".join(f"{c!r} ({counts[c]})" for c in classes)


def _label_findings(labels: list[list[str]], multi_label: bool, counts: dict[str, int],
                    ratio: float | None, metric: str) -> list[dict]:
    findings: list[dict] = []
    n = len(labels)
    if n == 0:
        return [_finding("blocking", "no_labels",
                         "there are no curated labels: label at least a few items of two "
                         "classes (or import a label column)")]
    labeled = [c for c, k in counts.items() if k > 0]
    # As training requires: two classes; multi-label, a class used and answers that differ
    # (one label present on some items and absent on others is a model to fit).
    answers = {tuple(sorted(a)) for a in labels}
    shown = _names(labeled) or "no class"
    if multi_label and (not labeled or len(answers) < 2):
        findings.append(_finding(
            "blocking", "one_class",
            f"training needs answers that differ: all {n} items carry the same classes "
            f"({shown}), so there is nothing to tell apart; label some items with another "
            "combination of classes first", classes=labeled))
    elif not multi_label and len(labeled) < 2:
        findings.append(_finding(
            "blocking", "one_class",
            f"training needs at least two classes: all {n} labels are {shown}; "
            "label some items of another class first", classes=labeled))
    singletons = [c for c in labeled if counts[c] == 1]
    if singletons:
        findings.append(_finding(
            "blocking", "singleton_class",
            f"{_plural(len(singletons), 'class', 'classes')} {_names(singletons)} "
            f"{'has' if len(singletons) == 1 else 'have'} a single label, too few to both "
            "train and measure a model: label at least one more item of each (10 or more is "
            "better), or relabel that item as another class", classes=singletons))
    few = [c for c in labeled if 1 < counts[c] < MIN_LABELS_PER_CLASS]
    if few:
        findings.append(_finding(
            "warning", "few_labels",
            f"{_names(few, counts)} {'has' if len(few) == 1 else 'have'} fewer than "
            f"{MIN_LABELS_PER_CLASS} labels: the model will be unreliable on "
            f"{'it' if len(few) == 1 else 'them'} and its score a rough guess; label at least "
            f"{MIN_LABELS_PER_CLASS} items of each class", classes=few))
    unlabeled = [c for c, k in counts.items() if k == 0]
    if unlabeled and len(labeled) >= 2:
        findings.append(_finding(
            "warning", "unlabeled_class",
            f"{_names(unlabeled)} {'has' if len(unlabeled) == 1 else 'have'} no labels: a "
            "model trained now can never predict "
            f"{'it' if len(unlabeled) == 1 else 'them'}; label some items of each, or remove "
            "classes the data does not have", classes=unlabeled))
    if ratio is not None and ratio >= IMBALANCE_RATIO:
        smallest = min(labeled, key=lambda c: counts[c])
        largest = max(labeled, key=lambda c: counts[c])
        total = sum(counts[c] for c in labeled)
        if metric in ("accuracy", "f1_micro"):
            advice = f"switch the metric from {metric} to balanced_accuracy or f1_macro"
        else:
            advice = f"keep a metric that weighs classes fairly, such as {metric}"
        findings.append(_finding(
            "warning", "imbalance",
            f"the classes are strongly imbalanced: {smallest!r} has {counts[smallest]} labels "
            f"({counts[smallest] / total:.1%} of them), {largest!r} {counts[largest]} "
            f"({ratio:.1f} times as many); a model can score well by ignoring {smallest!r}: "
            f"label more items of {smallest!r} (the batch query strategy favours "
            f"under-represented classes) and {advice}",
            minority_class=smallest, minority_share=round(counts[smallest] / total, 4)))
    return findings


def _plural(k: int, one: str, many: str) -> str:
    return one if k == 1 else many


def _refs(positions: Sequence[int], ids: list[int] | None) -> list[int]:
    """Positions in the input, or the items' ids when they are known."""
    return [int(p) if ids is None else ids[p] for p in positions]


def _where(ids: list[int] | None) -> str:
    return "positions" if ids is None else "items"


# ---------------------------------------------------------------- duplicates


def _duplicate_findings(codes: np.ndarray, label_keys: np.ndarray, labels: list[list[str]],
                        what: str, report: dict, ids: list[int] | None) -> list[dict]:
    """Items identical to another (`codes` equal, -1 ignored), and copies labeled differently.

    Copies on both sides of a split make cross-validation measure memory, not
    generalisation; copies with different labels mean at least one label is
    wrong.
    """
    frame = pd.DataFrame({"g": codes, "label": label_keys, "pos": np.arange(len(codes))})
    frame = frame[frame["g"] >= 0]
    sizes = frame.groupby("g")["pos"].transform("size")
    dup = frame[sizes > 1]
    if dup.empty:
        return []
    groups = dup.groupby("g", sort=False)
    n_groups = groups.ngroups
    extra_items = len(dup) - n_groups
    conflicting = groups["label"].nunique()
    conflicting = conflicting[conflicting > 1].index
    report["duplicates"] = {"items": int(extra_items), "groups": int(n_groups),
                            "conflicting_groups": int(len(conflicting))}
    positions = groups["pos"].apply(list)
    examples = [_refs(positions[g][:EXAMPLES], ids) for g in positions.index[:EXAMPLES]]
    shown = "; ".join(", ".join(f"#{p}" for p in ex) for ex in examples)
    copies = _plural(extra_items, f"{what} is an exact copy", f"{what}s are exact copies")
    findings = [_finding(
        "warning", "duplicates",
        f"{extra_items} {copies} of another ({n_groups} "
        f"{_plural(n_groups, 'group', 'groups')}; e.g. {_where(ids)} {shown}): copies on both "
        "sides of a cross-validation split inflate the score; keep one item of each group and "
        "skip or delete the others", examples=examples)]
    if len(conflicting):
        bad = [[int(p) for p in positions[g][:EXAMPLES]] for g in conflicting[:EXAMPLES]]
        described = "; ".join(" vs ".join(
            f"#{r} {'/'.join(labels[p]) or 'none'!r}" for p, r in zip(ex, _refs(ex, ids),
                                                                        strict=True))
            for ex in bad)
        findings.append(_finding(
            "warning", "conflicting_duplicates",
            f"{len(conflicting)} {_plural(len(conflicting), 'group', 'groups')} of identical "
            f"{what}s {_plural(len(conflicting), 'carries', 'carry')} different labels (e.g. "
            f"{described}): at most one answer per group can be right; review them and give "
            "each group one label", examples=[_refs(ex, ids) for ex in bad]))
    return findings


def _row_codes(frame: pd.DataFrame) -> np.ndarray:
    """One integer per distinct table row (hashing is linear: fine for 100k rows)."""
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    except TypeError:  # unhashable cells (lists, dicts): compare their text
        hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return pd.factorize(hashed)[0]


# ---------------------------------------------------------------- text


def _text_findings(texts: list[str], ids: list[int] | None) -> list[dict]:
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if not empty:
        return []
    return [_finding(
        "warning", "empty_texts",
        f"{len(empty)} of {len(texts)} texts are empty (e.g. {_where(ids)} "
        f"{', '.join(f'#{i}' for i in _refs(empty[:EXAMPLES], ids))}): the model sees nothing "
        "there and learns only the class share; fix the text column of the import or skip "
        "these items",
        examples=_refs(empty[:EXAMPLES], ids))]


# ---------------------------------------------------------------- tables


def _is_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Null cells, and text cells holding only whitespace (a CSV's empty field)."""
    missing = frame.isna()
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            blank = frame[column].map(lambda v: isinstance(v, str) and not v.strip())
            missing[column] = missing[column] | blank.astype(bool)
    return missing


def _missing_shares(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty:
        return {str(c): 0.0 for c in frame.columns}
    shares = _is_missing(frame).mean()
    return {str(c): float(shares[c]) for c in frame.columns}


def _missing_findings(missing: dict[str, float]) -> list[dict]:
    high = {c: s for c, s in missing.items() if s > MISSING_WARNING_SHARE}
    low = {c: s for c, s in missing.items() if 0 < s <= MISSING_WARNING_SHARE}
    findings = []
    if high:
        findings.append(_finding(
            "warning", "missing_values",
            f"{_shares(high)} of the values are missing in "
            f"{_plural(len(high), 'this column', 'these columns')}: they are filled in "
            "(median or most frequent value) before training, which can hide a broken "
            "import; check the source file, fill them, or drop the column",
            columns=sorted(high, key=lambda c: -high[c])))
    if low:
        findings.append(_finding(
            "info", "missing_values",
            f"some values are missing ({_shares(low)}): they will be filled with the column's "
            "median or most frequent value; fill them yourself if a better value is known",
            columns=sorted(low, key=lambda c: -low[c])))
    return findings


def _shares(shares: dict[str, float], limit: int = 8) -> str:
    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{c!r}: {s:.0%}" for c, s in ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _constant_findings(frame: pd.DataFrame, missing: dict[str, float]) -> list[dict]:
    """Columns with one value in every row (all-empty columns are reported as missing)."""
    if len(frame) < 2:
        return []
    constant = []
    for column in frame.columns:
        if missing.get(str(column), 0.0) >= 1.0:
            continue
        try:
            distinct = frame[column].nunique(dropna=False)
        except TypeError:  # unhashable cells
            distinct = frame[column].astype(str).nunique(dropna=False)
        if distinct <= 1:
            constant.append(str(column))
    if not constant:
        return []
    return [_finding(
        "warning", "constant_column",
        f"{_names(constant)} {'has' if len(constant) == 1 else 'have'} the same value in every "
        "row: a constant column carries no information; drop it (or check that the import "
        "read the right column)", columns=constant)]


def _leakage_findings(frame: pd.DataFrame, label_keys: np.ndarray, seed: int) -> list[dict]:
    """Columns that alone predict the label almost perfectly (cross-validated).

    Two one-column models, so both kinds of leak are caught: a per-value
    majority vote reads back a label copy (any encoding, any number of
    classes) and is blind to IDs, since each held-out ID is unseen; a shallow
    tree catches thresholds, such as IDs assigned in label order. An honest
    column rarely reaches 0.98 balanced accuracy alone; one that does should
    be checked before it is trusted.
    """
    keep = label_keys >= 0
    if keep.sum() < LEAKAGE_MIN_LABELS or frame.shape[1] == 0:
        return []
    rows = np.flatnonzero(keep)
    findings: list[dict] = []
    if len(rows) > LEAKAGE_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, LEAKAGE_SAMPLE_ROWS,
                                                          replace=False))
        findings.append(_finding(
            "info", "sampled",
            f"the leakage check used a random sample of {LEAKAGE_SAMPLE_ROWS:,} of "
            f"{int(keep.sum()):,} labeled rows", check_sampled="leakage"))
    y = pd.factorize(label_keys[rows])[0]
    counts = np.bincount(y)
    if len(counts) < 2 or counts.min() < 2:
        return findings
    k = int(min(3, counts.min()))  # stratified folds: every class in every test fold
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    part = frame.iloc[rows].reset_index(drop=True)
    for column in part.columns:
        values = part[column]
        score, kind = _column_score(values, y, splits, seed)
        if score >= LEAKAGE_SCORE:
            findings.append(_finding(
                "warning", "leakage",
                f"column {str(column)!r} alone predicts the label with cross-validated balanced "
                f"accuracy {score:.2f} ({kind}): a column this predictive usually leaks the "
                "answer (a copy of the label, a value recorded after the fact, or an ID in "
                "label order); drop it before training unless it will truly be known when "
                "predicting", column=str(column), score=round(float(score), 4), kind=kind))
    return findings


def _column_score(values: pd.Series, y: np.ndarray, splits: list, seed: int
                  ) -> tuple[float, str]:
    """The better of per-value majority and a shallow tree, with what the column looks like.

    The tree is fitted only where it can add something: on a column with few
    values, one class per value is already the best any tree on it can do
    (a tree only merges values), and a column the majority vote already
    finds leaking needs no second opinion. That skips most fits on wide
    tables of codes or pixel intensities.
    """
    try:
        codes = pd.factorize(values)[0]
    except TypeError:
        codes = pd.factorize(values.astype(str))[0]
    distinct = int(codes.max()) + 1
    lookup = _lookup_score(codes, y, splits)
    numbers = None
    if lookup < LEAKAGE_SCORE and distinct > LOOKUP_ONLY_VALUES:
        numbers = _as_numbers(values)
    tree = _tree_score(numbers, y, splits, seed) if numbers is not None else 0.0
    if lookup >= tree:
        return lookup, f"each of its {distinct} values goes with one class, like a label copy"
    if distinct > 0.9 * len(values):
        return tree, "ID-like: nearly every value is unique, yet thresholds on it split the classes"
    return tree, "a few thresholds on it split the classes"


def _lookup_score(codes: np.ndarray, y: np.ndarray, splits: list) -> float:
    """Each value predicts its training-fold majority; unseen values the overall majority."""
    k = int(y.max()) + 1
    width = int(codes.max()) + 2  # row 0: missing values, one bucket of their own
    scores = []
    for train, test in splits:
        table = np.zeros((width, k))
        np.add.at(table, (codes[train] + 1, y[train]), 1)
        fallback = int(np.bincount(y[train], minlength=k).argmax())
        rule = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), fallback)
        scores.append(_balanced_accuracy(y[test], rule[codes[test] + 1]))
    return float(np.mean(scores))


def _tree_score(numbers: np.ndarray, y: np.ndarray, splits: list, seed: int) -> float:
    scores = []
    for train, test in splits:
        tree = DecisionTreeClassifier(max_depth=LEAKAGE_TREE_DEPTH, random_state=seed)
        tree.fit(numbers[train], y[train])
        scores.append(_balanced_accuracy(y[test], tree.predict(numbers[test])))
    return float(np.mean(scores))


def _as_numbers(values: pd.Series) -> np.ndarray | None:
    """A numeric column (or text that is all numbers) as a column vector; missing sorts lowest."""
    if pd.api.types.is_bool_dtype(values):
        numbers = values.astype(float)
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values.astype(float)
    else:
        present = values.dropna()
        numbers = pd.to_numeric(values, errors="coerce")
        if present.empty or numbers.notna().sum() < len(present):
            return None
        numbers = numbers.astype(float)
    array = numbers.to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(array)
    if not finite.any():
        return None
    array = np.where(finite, array, np.nanmin(array[finite]) - 1.0)
    return array.reshape(-1, 1)


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y_true` (no warnings, no label checks)."""
    present = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in present]))


# ---------------------------------------------------------------- regression

MIN_REGRESSION_LABELS = 10  # below this, 5 folds of 2 rows: neither fit nor measure means much
SKEW_WARNING = 2.0


def _regression_report(modality: str, X, labels: list[list[str]], metric: str,  # noqa: N803
                       seed: int, ids: list[int] | None) -> dict:
    """The report for numeric targets: what the numbers look like, and what is wrong."""
    y = np.array([float(a[0]) for a in labels], dtype=float)
    findings: list[dict] = []
    n = len(y)
    if n == 0:
        findings.append(_finding("blocking", "no_labels",
                                 "there are no curated labels: import a numeric label column "
                                 "or answer some items with a number"))
    elif np.unique(y).size < 2:
        findings.append(_finding(
            "blocking", "constant_target",
            f"all {n} labels are {labels[0][0]}: a regression model needs targets that vary; "
            "label items with other values first"))
    elif n < MIN_REGRESSION_LABELS:
        findings.append(_finding(
            "blocking", "few_labels",
            f"only {n} labeled rows: regression needs at least {MIN_REGRESSION_LABELS} to fit "
            "and to measure a model; label more rows first"))
    elif n < 50:
        findings.append(_finding(
            "warning", "few_labels",
            f"only {n} labeled rows: the cross-validated score will be noisy; 50 or more is "
            "better"))
    target: dict = {}
    if n:
        skew = float(pd.Series(y).skew()) if n > 2 else 0.0
        target = {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean()),
                  "median": float(np.median(y)), "std": float(y.std()),
                  "distinct": int(np.unique(y).size),
                  "skew": round(skew, 3) if np.isfinite(skew) else None}
        if np.isfinite(skew) and abs(skew) > SKEW_WARNING and y.min() >= 0:
            findings.append(_finding(
                "warning", "skewed_target",
                f"the target is strongly skewed (skewness {skew:.1f}): a few large values will "
                "dominate R² and RMSE; consider the mean absolute error as the metric, or "
                "predicting the logarithm"))
    report: dict = {
        "modality": modality, "n": n, "problem_type": "regression", "metric": metric,
        "metrics": list(metrics_for("regression")), "class_counts": {},
        "imbalance_ratio": None, "target": target,
        "duplicates": {"items": 0, "groups": 0, "conflicting_groups": 0},
    }
    frame, table_findings = _table_findings(X, _label_keys(labels, False), labels, report, ids)
    findings += table_findings
    if n >= LEAKAGE_MIN_LABELS and np.unique(y).size >= 2:
        findings += _regression_leakage(frame, y, seed)
    findings.sort(key=lambda f: _LEVEL_ORDER[f["level"]])
    report["findings"] = findings
    report["blocking"] = any(f["level"] == "blocking" for f in findings)
    return report


def _table_findings(X, label_keys: np.ndarray, labels: list[list[str]], report: dict,  # noqa: N803
                    ids: list[int] | None) -> tuple[pd.DataFrame, list[dict]]:
    """A table's own checks, for classes and numbers alike: missing values (also put in
    `report["missing"]`), constant columns and duplicate rows. Returns the table as a frame."""
    frame = (X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)).reset_index(drop=True)
    missing = _missing_shares(frame)
    report["missing"] = {c: round(s, 4) for c, s in missing.items() if s > 0}
    findings = _missing_findings(missing) + _constant_findings(frame, missing)
    if frame.shape[1]:
        findings += _duplicate_findings(_row_codes(frame), label_keys, labels, "row", report,
                                        ids)
    return frame, findings


def _regression_leakage(frame: pd.DataFrame, y: np.ndarray, seed: int) -> list[dict]:
    """Columns that alone predict the number almost exactly (cross-validated R² >= 0.98).

    The regression form of `_leakage_findings`: a shallow tree on the column
    (thresholds: a copy, a rescaled copy, an ID in target order) and, for
    columns of codes, each value's training-fold mean.
    """
    from sklearn.model_selection import KFold
    from sklearn.tree import DecisionTreeRegressor

    rows = np.arange(len(y))
    findings: list[dict] = []
    if len(rows) > LEAKAGE_SAMPLE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, LEAKAGE_SAMPLE_ROWS,
                                                          replace=False))
    part, target = frame.iloc[rows].reset_index(drop=True), y[rows]
    splits = list(KFold(3, shuffle=True, random_state=seed).split(rows))
    spread = ((target - target.mean()) ** 2).sum()
    for column in part.columns:
        numbers = _as_numbers(part[column])
        predicted = np.empty(len(target))
        for train, test in splits:
            if numbers is not None:
                tree = DecisionTreeRegressor(max_depth=8, random_state=seed)
                predicted[test] = tree.fit(numbers[train], target[train]).predict(numbers[test])
            else:
                codes = pd.factorize(part[column].astype(str))[0]
                means = pd.Series(target[train]).groupby(codes[train]).mean()
                predicted[test] = pd.Series(codes[test]).map(means).fillna(
                    target[train].mean()).to_numpy()
        r2 = 1.0 - ((target - predicted) ** 2).sum() / spread
        if r2 >= LEAKAGE_SCORE:
            findings.append(_finding(
                "warning", "leakage",
                f"column {str(column)!r} alone predicts the target with cross-validated R² "
                f"{r2:.2f}: a column this predictive usually leaks the answer (a copy or "
                "rescaling of the target, or a value recorded after the fact); drop it before "
                "training unless it will truly be known when predicting",
                column=str(column), score=round(float(r2), 4), kind="regression"))
    return findings


# ---------------------------------------------------------------- images


def _image_findings(paths: list[str], label_keys: np.ndarray, labels: list[list[str]],
                    report: dict, seed: int, ids: list[int] | None) -> list[dict]:
    """Unreadable files and identical files (same bytes), without opening every image."""
    findings: list[dict] = []
    sizes = np.full(len(paths), -1, dtype=np.int64)
    problems: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            sizes[i] = os.stat(path).st_size
        except OSError:
            problems[i] = "missing file"
    present = np.flatnonzero(sizes >= 0)
    opened = present
    if len(present) > IMAGE_OPEN_SAMPLE:
        opened = np.sort(np.random.default_rng(seed).choice(present, IMAGE_OPEN_SAMPLE,
                                                            replace=False))
        findings.append(_finding(
            "info", "sampled",
            f"images were opened to check they are readable for a random sample of "
            f"{IMAGE_OPEN_SAMPLE:,} of {len(present):,} files (every file was checked to "
            "exist and compared by content)", check_sampled="unreadable_images"))
    for i in opened:
        reason = _unreadable(paths[i])
        if reason:
            problems[int(i)] = reason
    if problems:
        shown = sorted(problems)[:EXAMPLES]
        described = "; ".join(f"{os.path.basename(paths[i])}: {problems[i]}" for i in shown)
        checked = len(opened) + (len(paths) - len(present))
        findings.append(_finding(
            "blocking", "unreadable_images",
            f"{len(problems)} of {checked} checked images cannot be read ({described}): "
            "training would stop on the first of them; re-import these files or delete their "
            "items", examples=_refs(shown, ids)))
    # Content hashes only where another file has the same size: equal bytes need equal sizes.
    codes = np.full(len(paths), -1, dtype=np.int64)
    same_size = pd.Series(sizes).duplicated(keep=False).to_numpy() & (sizes >= 0)
    digests: dict[str, int] = {}
    for i in np.flatnonzero(same_size):
        digest = _sha256(paths[i])
        if digest is not None:
            codes[i] = digests.setdefault(digest, len(digests))
    findings += _duplicate_findings(codes, label_keys, labels, "image", report, ids)
    return findings


def _unreadable(path: str) -> str | None:
    """Why Pillow cannot read this file (structure checked, pixels not decoded), or None."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Image.DecompressionBombError:
        return "too many pixels (decompression-bomb limit)"
    except OSError as exc:
        return "not an image" if "cannot identify" in str(exc) else f"broken ({exc})"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"broken ({type(exc).__name__})"
    return None


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
