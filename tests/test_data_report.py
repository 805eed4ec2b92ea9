"""The pre-training data report on real data: digits, wine, breast cancer, spam mail.

Each finding is provoked by a real defect (a copy of the label, one class, a
class with one example, copies, holes, a broken image) and checked to be
absent from the clean data, so a check that fires always or never fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine

from automl.data_report import (
    METRICS,
    choose_metric,
    data_report,
    default_metric,
    is_regression_target,
    problem_type,
    raise_if_blocking,
)
from automl.training import training_set
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project


def table(loader) -> tuple[pd.DataFrame, list[list[str]], list[str]]:
    """A scikit-learn data set as the store gives it: features, one label list per row, classes."""
    data = loader(as_frame=True)
    names = [str(c) for c in data.target_names]
    return data.data.copy(), [[names[int(t)]] for t in data.target], names


def checks(report: dict, level: str | None = None) -> list[str]:
    return [f["check"] for f in report["findings"] if level in (None, f["level"])]


def finding(report: dict, check: str) -> dict:
    found = [f for f in report["findings"] if f["check"] == check]
    assert len(found) == 1, f"expected one {check!r} finding, got {report['findings']}"
    return found[0]


# ---------------------------------------------------------------- problem type and metric


def test_problem_type_counts_the_labeled_classes():
    _, wine_labels, wine_classes = table(load_wine)
    _, cancer_labels, cancer_classes = table(load_breast_cancer)
    assert problem_type(wine_labels, False, wine_classes) == "multiclass"
    assert problem_type(cancer_labels, False, cancer_classes) == "binary"
    # Three declared classes, two labeled: training fits (and must measure) a binary model.
    two_of_three = [a for a in wine_labels if a[0] != wine_classes[2]]
    assert problem_type(two_of_three, False, wine_classes) == "binary"
    # Fewer than two labeled classes: the declared ones decide (the data is blocked anyway).
    assert problem_type([["class_0"]] * 5, False, wine_classes) == "multiclass"
    assert problem_type([["a"], ["b"]], True, ["a", "b"]) == "multi-label"


def test_metric_defaults_to_balanced_accuracy_and_refuses_a_misfit():
    for kind in ("binary", "multiclass", "multi-label"):
        assert default_metric(kind) == "balanced_accuracy" == choose_metric(kind)
        assert choose_metric(kind, "") == "balanced_accuracy"
    assert choose_metric("regression") == "r2"
    assert choose_metric("binary", "roc_auc") == "roc_auc"
    assert choose_metric("multiclass", "f1_macro") == "f1_macro"
    with pytest.raises(GroundworkError, match="does not fit a multiclass problem.*roc_auc_ovr"):
        choose_metric("multiclass", "roc_auc")
    with pytest.raises(GroundworkError, match="unknown problem type"):
        choose_metric("ranking")
    # Every offered name is a real scorer (multi-label balanced accuracy is training's own).
    from sklearn.metrics import get_scorer

    for kind, names in METRICS.items():
        for name in names:
            if not (kind == "multi-label" and name == "balanced_accuracy"):
                get_scorer(name)


def test_regression_targets_are_quantities_not_codes():
    diabetes = load_diabetes(as_frame=True).frame
    assert is_regression_target(diabetes["target"])  # disease progression, 214 values
    assert is_regression_target(diabetes["bmi"])  # fractional measurements
    assert is_regression_target(load_breast_cancer(as_frame=True).data["mean radius"])
    assert is_regression_target(np.random.default_rng(0).integers(18, 90, 300))  # ages
    assert is_regression_target([f"{v:.2f}" for v in diabetes["bmi"]])  # numbers read as text
    assert is_regression_target(list(diabetes["target"]) + [None, float("nan")])
    assert not is_regression_target(load_digits().target)  # digits 0-9 are classes
    assert not is_regression_target(load_wine().target)
    assert not is_regression_target([1, 2, 3, 4, 5] * 40)  # star ratings
    assert not is_regression_target([0.5, 1.5, 2.5] * 40)  # few fractional values
    assert not is_regression_target(load_wine(as_frame=True).target.map(str) + "x")
    assert not is_regression_target([True, False] * 30)
    assert not is_regression_target([])
    assert not is_regression_target([1.0, 2.0, float("inf")] * 10)


# ---------------------------------------------------------------- tables


def test_clean_wine_from_the_store_is_not_blocked(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    data = training_set(db, project)
    report = data_report(project.modality, data.X, data.labels, project.multi_label,
                         project.classes)
    assert report["blocking"] is False
    assert report["problem_type"] == "multiclass" and report["metric"] == "balanced_accuracy"
    assert report["n"] == 178 and sum(report["class_counts"].values()) == 178
    assert report["class_counts"] == {"barbera": 48, "barolo": 59, "grignolino": 71}
    assert "cultivar" not in data.X.columns  # the label column is not model input
    assert checks(report) == []  # no leakage, holes, copies or constant columns
    assert report["duplicates"] == {"items": 0, "groups": 0, "conflicting_groups": 0}
    json.dumps(report, allow_nan=False)  # stored and shown as JSON
    raise_if_blocking(report)


@pytest.mark.parametrize("loader", [load_wine, load_breast_cancer])
def test_a_copy_of_the_label_is_leakage_and_honest_columns_are_not(loader):
    X, labels, classes = table(loader)
    clean = data_report("tabular", X, labels, False, classes)
    assert "leakage" not in checks(clean)  # strong honest columns stay below the bar

    leaky = X.copy()
    leaky["verdict"] = [a[0].upper() for a in labels]  # the label under another spelling
    leaky["verdict_code"] = [classes.index(a[0]) * 7 + 3 for a in labels]  # ... as a number
    report = data_report("tabular", leaky, labels, False, classes)
    leaks = [f for f in report["findings"] if f["check"] == "leakage"]
    assert sorted(f["column"] for f in leaks) == ["verdict", "verdict_code"]
    for f in leaks:
        assert f["level"] == "warning" and f["score"] >= 0.98
        assert repr(f["column"]) in f["message"] and "drop it before training" in f["message"]
    assert report["blocking"] is False  # a warning: the user may know better


def test_an_id_in_label_order_is_leakage_but_a_shuffled_id_is_not():
    X, labels, classes = table(load_breast_cancer)
    order = np.argsort([a[0] for a in labels], kind="stable")
    X = X.iloc[order].reset_index(drop=True)
    labels = [labels[i] for i in order]
    X["record_id"] = np.arange(len(X)) + 1000
    report = data_report("tabular", X, labels, False, classes)
    leak = finding(report, "leakage")
    assert leak["column"] == "record_id" and "ID-like" in leak["kind"]
    X["record_id"] = np.random.default_rng(1).permutation(len(X))
    assert "leakage" not in checks(data_report("tabular", X, labels, False, classes))


def test_holes_and_constant_columns_are_named():
    X, labels, classes = table(load_wine)
    rng = np.random.default_rng(0)
    X["magnesium"] = X["magnesium"].mask(rng.random(len(X)) < 0.4)  # a broken import
    X["hue"] = X["hue"].astype(object)
    X.loc[X.index[:9], "hue"] = "  "  # a CSV's empty field: 5% missing
    X["batch"] = "2024-A"  # the same in every row
    X["notes"] = None  # an empty column is missing, not constant
    report = data_report("tabular", X, labels, False, classes)
    high = [f for f in report["findings"] if f["check"] == "missing_values"
            and f["level"] == "warning"]
    low = [f for f in report["findings"] if f["check"] == "missing_values"
           and f["level"] == "info"]
    assert [f["columns"] for f in high] == [["notes", "magnesium"]]
    assert [f["columns"] for f in low] == [["hue"]]
    assert 0.3 < report["missing"]["magnesium"] < 0.5 and report["missing"]["notes"] == 1.0
    assert report["missing"]["hue"] == pytest.approx(9 / 178, abs=1e-4)
    constant = finding(report, "constant_column")
    assert constant["columns"] == ["batch"] and "'batch'" in constant["message"]
    assert report["blocking"] is False
    assert "'notes'" in high[0]["message"] and "100%" in high[0]["message"]


def test_duplicate_rows_and_copies_with_different_labels():
    X, labels, classes = table(load_wine)
    # Rows 0-2 imported twice, row 5 three times with another cultivar on one copy.
    extra = [0, 1, 2, 5, 5]
    X2 = pd.concat([X, X.iloc[extra]], ignore_index=True)
    labels2 = labels + [labels[i] for i in extra[:4]] + [["class_2"]]
    assert labels[5] != ["class_2"]
    report = data_report("tabular", X2, labels2, False, classes)
    assert report["duplicates"] == {"items": 5, "groups": 4, "conflicting_groups": 1}
    dup = finding(report, "duplicates")
    assert "5 rows are exact copies" in dup["message"] and [0, 178] in dup["examples"]
    conflict = finding(report, "conflicting_duplicates")
    assert conflict["examples"] == [[5, 181, 182]]
    assert "'class_0'" in conflict["message"] and "'class_2'" in conflict["message"]
    clean = data_report("tabular", X, labels, False, classes)
    assert "duplicates" not in checks(clean)


def test_leakage_on_many_rows_looks_at_a_named_sample():
    X, labels, classes = table(load_digits)
    X = pd.concat([X] * 3, ignore_index=True)  # 5,391 rows: over the 5,000-row sample
    labels = labels * 3
    X["digit_again"] = [a[0] for a in labels]
    report = data_report("tabular", X, labels, False, classes)
    assert finding(report, "leakage")["column"] == "digit_again"
    sampled = finding(report, "sampled")
    assert sampled["level"] == "info" and sampled["check_sampled"] == "leakage"
    assert "5,000 of 5,391" in sampled["message"]
    assert finding(report, "duplicates")["level"] == "warning"  # the copies themselves
    assert sorted(finding(report, "constant_column")["columns"]) == [
        "pixel_0_0", "pixel_4_0", "pixel_4_7"]
    assert data_report("tabular", X, labels, False, classes) == report  # same seed, same report


# ---------------------------------------------------------------- labels


def test_one_class_blocks_with_what_to_do():
    X, labels, classes = table(load_wine)
    keep = [i for i, a in enumerate(labels) if a == ["class_1"]]
    report = data_report("tabular", X.iloc[keep], [labels[i] for i in keep], False, classes)
    assert report["blocking"] is True
    one = finding(report, "one_class")
    assert one["level"] == "blocking" and one["classes"] == ["class_1"]
    assert "all 71 labels are 'class_1'" in one["message"]
    assert "label some items of another class first" in one["message"]
    with pytest.raises(GroundworkError, match="training cannot start: .*another class first"):
        raise_if_blocking(report)


def test_a_class_with_one_example_blocks_and_every_reason_is_given_at_once():
    spam = pd.read_csv(Path(__file__).parent / "data" / "spam.csv")
    texts = spam["text"].tolist()[:40]
    labels = [[v] for v in spam["label"].tolist()[:40]]
    labels[0] = ["phishing"]  # one example of a third class
    labels[1] = ["newsletter"]  # and of a fourth
    report = data_report("text", texts, labels, False, ["ham", "spam", "phishing", "newsletter",
                                                         "unused"])
    single = finding(report, "singleton_class")
    assert single["level"] == "blocking" and single["classes"] == ["phishing", "newsletter"]
    assert "label at least one more item of each" in single["message"]
    assert finding(report, "unlabeled_class")["classes"] == ["unused"]
    assert report["findings"][0]["level"] == "blocking"  # blocking findings come first
    with pytest.raises(GroundworkError) as raised:
        raise_if_blocking(report)
    assert "'phishing', 'newsletter'" in str(raised.value)
    # Two of each and the block is gone; ten of each and the "few labels" warning too.
    labels[2], labels[3] = ["phishing"], ["newsletter"]
    report = data_report("text", texts, labels, False, ["ham", "spam", "phishing", "newsletter"])
    assert not report["blocking"]
    assert finding(report, "few_labels")["classes"] == ["phishing", "newsletter"]
    raise_if_blocking(report)


def test_no_labels_blocks():
    report = data_report("text", [], [], False, ["ham", "spam"])
    assert report["blocking"] and checks(report, "blocking") == ["no_labels"]
    with pytest.raises(GroundworkError, match="no curated labels"):
        raise_if_blocking(report)


def test_imbalance_is_named_with_its_minority_and_metric_advice():
    X, labels, classes = table(load_breast_cancer)
    malignant = [i for i, a in enumerate(labels) if a == ["malignant"]][:20]
    benign = [i for i, a in enumerate(labels) if a == ["benign"]]
    keep = sorted(malignant + benign)
    Xs, ys = X.iloc[keep], [labels[i] for i in keep]
    report = data_report("tabular", Xs, ys, False, classes)
    imbalance = finding(report, "imbalance")
    assert imbalance["minority_class"] == "malignant"
    assert imbalance["minority_share"] == pytest.approx(20 / (20 + len(benign)), abs=1e-4)
    assert report["imbalance_ratio"] == pytest.approx(len(benign) / 20, abs=1e-3)
    assert "keep a metric that weighs classes fairly, such as balanced_accuracy" in \
        imbalance["message"]
    with_accuracy = data_report("tabular", Xs, ys, False, classes, metric="accuracy")
    assert with_accuracy["metric"] == "accuracy"
    assert "switch the metric from accuracy to balanced_accuracy" in \
        finding(with_accuracy, "imbalance")["message"]
    assert "imbalance" not in checks(data_report("tabular", X, labels, False, classes))
    with pytest.raises(GroundworkError, match="does not fit a binary problem"):
        data_report("tabular", Xs, ys, False, classes, metric="roc_auc_ovr")


def test_multi_label_answers_must_differ():
    spam = pd.read_csv(Path(__file__).parent / "data" / "spam.csv")
    texts = spam["text"].tolist()[:30]
    same = [["work", "urgent"]] * 30
    report = data_report("text", texts, same, True, ["work", "urgent", "personal"])
    assert report["problem_type"] == "multi-label" and report["metric"] == "balanced_accuracy"
    one = finding(report, "one_class")
    assert one["level"] == "blocking" and "another combination of classes" in one["message"]
    # One label present on some items and absent on others is something to learn.
    varied = [["work", "urgent"] if i % 3 else ["work"] for i in range(30)]
    report = data_report("text", texts, varied, True, ["work", "urgent", "personal"])
    assert not report["blocking"]
    assert report["class_counts"] == {"work": 30, "urgent": 20, "personal": 0}
    assert report["metrics"] == list(METRICS["multi-label"])


# ---------------------------------------------------------------- text and images


def test_text_copies_ignore_whitespace_and_empty_texts_are_named():
    spam = pd.read_csv(Path(__file__).parent / "data" / "spam.csv")
    texts = spam["text"].tolist()
    labels = [[v] for v in spam["label"]]
    base = data_report("text", texts, labels, False, ["ham", "spam"])
    before = base["duplicates"]["items"]
    flipped = "spam" if labels[3] == ["ham"] else "ham"
    texts2 = texts + ["  " + texts[3].replace(" ", "\n  ") + "\n", "", "   "]
    labels2 = labels + [[flipped], ["ham"], ["spam"]]
    report = data_report("text", texts2, labels2, False, ["ham", "spam"])
    assert report["duplicates"]["items"] == before + 1  # the empty texts are not copies
    conflict = finding(report, "conflicting_duplicates")
    assert [3, len(texts)] in conflict["examples"]
    empty = finding(report, "empty_texts")
    assert empty["examples"] == [len(texts) + 1, len(texts) + 2]
    assert "2 of 123 texts are empty" in empty["message"]


def test_images_from_the_store_and_broken_files(db, digits_folder):
    import_source(db, "digits", digits_folder, "image")
    project = get_project(db, "digits")
    data = training_set(db, project)
    report = data_report("image", data.X, data.labels, False, project.classes)
    assert report["problem_type"] == "multiclass" and not report["blocking"]
    assert checks(report, "blocking") == [] and "duplicates" not in checks(report)

    paths, labels = list(data.X), list(data.labels)
    folder = Path(paths[0]).parent
    broken = folder / "broken.png"
    broken.write_bytes(Path(paths[1]).read_bytes()[:60])  # a cut-off download
    text = folder / "notes.png"
    text.write_text("not a picture")
    copy = folder / "copy.png"
    shutil.copy(paths[2], copy)
    other = next(c for c in project.classes if [c] != labels[2])
    paths += [str(broken), str(text), str(folder / "gone.png"), str(copy)]
    labels += [labels[1], labels[1], labels[1], [other]]
    report = data_report("image", paths, labels, False, [*project.classes, "7"])
    unreadable = finding(report, "unreadable_images")
    assert unreadable["level"] == "blocking" and report["blocking"]
    assert report["findings"][0] == unreadable  # before the warnings (an unlabeled class)
    assert finding(report, "unlabeled_class")["classes"] == ["7"]
    assert unreadable["examples"] == [36, 37, 38]
    for part in ("broken.png: broken", "notes.png: not an image", "gone.png: missing file"):
        assert part in unreadable["message"]
    assert finding(report, "conflicting_duplicates")["examples"] == [[2, 39]]
    with pytest.raises(GroundworkError, match="re-import these files"):
        raise_if_blocking(report)
    # With the items' ids, findings name items a person can look up instead of positions.
    ids = [*data.item_ids, 901, 902, 903, 904]
    named = data_report("image", paths, labels, False, project.classes, item_ids=ids)
    assert finding(named, "unreadable_images")["examples"] == [901, 902, 903]
    conflict = finding(named, "conflicting_duplicates")
    assert conflict["examples"] == [[ids[2], 904]]
    assert f"#{ids[2]} {labels[2][0]!r} vs #904 {other!r}" in conflict["message"]
    assert f"e.g. items #{ids[2]}, #904" in finding(named, "duplicates")["message"]
    with pytest.raises(GroundworkError, match="39 item ids for 40 label lists"):
        data_report("image", paths, labels, False, project.classes, item_ids=ids[:-1])


def test_inputs_that_do_not_pair_up_are_refused():
    X, labels, classes = table(load_wine)
    with pytest.raises(GroundworkError, match="178 rows but there are 177 label lists"):
        data_report("tabular", X, labels[:-1], False, classes)
    with pytest.raises(GroundworkError, match="unknown modality"):
        data_report("audio", X, labels, False, classes)
