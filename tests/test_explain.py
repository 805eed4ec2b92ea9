"""Explanations of fitted models on real holdouts: digits, wine, breast cancer, spam mail.

Models are built from the same parts training uses (features per modality,
the search's estimators, integer-encoded targets wrapped in a TrainedModel);
one test runs training itself on a real store. Every number is checked
against an independent computation (scikit-learn, scipy, a plain bootstrap)
or against what the data must show (blank digit borders, spam words).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer

from automl.explain import (
    calibration,
    explain,
    holdout_metrics,
    importance,
    per_class,
    wilson_interval,
)
from automl.features import make_features
from automl.model import TrainedModel
from automl.search import build_estimator, score
from tests.conftest import digit_png

LOGISTIC = {"model": "logistic_regression", "lr_C": 10.0}
FOREST = {"model": "random_forest", "rf_trees": 60, "rf_features": "sqrt", "rf_leaf": 1}
SPAM_WORDS = {"click", "free", "money", "offer", "guaranteed", "investment", "business",
              "order", "remove", "visit", "income", "credit", "marketing", "cash", "save",
              "receive", "opportunity", "dollars", "million"}
LIST_WORDS = {"listinfo", "mailman", "unsubscribe"}  # the ham here is mailing-list traffic


def fit(modality: str, X, labels, params: dict, classes: list[str]) -> TrainedModel:  # noqa: N803
    """A single-label model as training builds it: integer targets, names kept by the wrapper."""
    names = [a[0] if isinstance(a, list) else str(a) for a in labels]
    encoder = LabelEncoder().fit(names)
    pipeline = Pipeline([("features", make_features(modality, X)),
                         ("model", build_estimator(params, 0, len(names)))])
    pipeline.fit(X, encoder.transform(names))
    return TrainedModel(pipeline=pipeline, classes=classes,
                        fitted_classes=[str(c) for c in encoder.classes_], modality=modality,
                        multi_label=False,
                        columns=list(X.columns) if modality == "tabular" else None)


def split(n: int, train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:train]), np.sort(order[train:])


def rows(frame: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
    return frame.iloc[idx].reset_index(drop=True)


@pytest.fixture(scope="module")
def wine():
    data = load_wine(as_frame=True)
    names = [str(c) for c in data.target_names]
    y = np.array([names[t] for t in data.target], dtype=object)
    X = data.data.copy()
    X["lot_number"] = np.random.default_rng(3).normal(size=len(X))  # pure noise
    train, hold = split(len(y), 90)
    model = fit("tabular", rows(X, train), y[train], LOGISTIC, names)
    return {"model": model, "X": rows(X, hold), "y": y[hold], "classes": names}


@pytest.fixture(scope="module")
def spam():
    frame = pd.read_csv(Path(__file__).parent / "data" / "spam.csv")
    texts, y = frame["text"].tolist(), frame["label"].astype(str).to_numpy(dtype=object)
    train, hold = split(len(y), 70, seed=1)
    return {"texts": texts, "y_train": y[train], "train": train,
            "model": fit("text", [texts[i] for i in train], y[train], LOGISTIC, ["ham", "spam"]),
            "X": [texts[i] for i in hold], "y": y[hold]}


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """600 real digits as PNG files (as an image import stores them); 300 train, 300 holdout."""
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    paths = []
    for i in range(600):
        path = root / f"{i}.png"
        path.write_bytes(digit_png(digits.data[i]))
        paths.append(str(path))
    y = np.array([str(t) for t in digits.target[:600]], dtype=object)
    classes = [str(d) for d in range(10)]
    model = fit("image", paths[:300], y[:300], LOGISTIC, classes)
    return {"model": model, "X": paths[300:], "y": y[300:], "classes": classes}


# ---------------------------------------------------------------- intervals


def test_wilson_interval_matches_scipy_and_narrows_with_n():
    for k, n in [(8, 10), (0, 12), (12, 12), (57, 80), (940, 1000)]:
        low, high = wilson_interval(k, n)
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)
        assert low <= k / n <= high
    widths = [np.subtract(*wilson_interval(9 * n // 10, n)[::-1]) for n in (20, 200, 2000)]
    assert widths[0] > widths[1] > widths[2] > 0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_holdout_metrics_agree_with_scikit_learn(wine):
    model, X, y = wine["model"], wine["X"], wine["y"]
    out = holdout_metrics(model, X, y)
    predicted = [p[0] for p in model.predict(X)]
    assert out["n"] == len(y) == 88 and out["primary"] == "balanced_accuracy"
    assert out["accuracy"]["value"] == pytest.approx(accuracy_score(y, predicted))
    assert out["balanced_accuracy"]["value"] == pytest.approx(
        balanced_accuracy_score(y, predicted))
    assert out["balanced_accuracy"]["value"] == pytest.approx(score(y, predicted, False))
    for key in ("accuracy", "balanced_accuracy"):
        part = out[key]
        assert 0 <= part["low"] <= part["value"] <= part["high"] <= 1
        assert part["high"] - part["low"] < 0.2
    assert out["accuracy"]["method"] == "wilson" and out["balanced_accuracy"]["method"] == \
        "bootstrap"
    assert holdout_metrics(model, X, y) == out  # a fixed seed: the same interval every run
    # Labels as the store gives them (one list per item) mean the same.
    assert holdout_metrics(model, X, [[v] for v in y]) == out
    json.dumps(out, allow_nan=False)


def test_bootstrap_interval_is_a_plain_bootstrap_and_narrows_with_n():
    data = load_breast_cancer(as_frame=True)
    names = [str(c) for c in data.target_names]
    y = np.array([names[t] for t in data.target], dtype=object)
    train, hold = split(len(y), len(y) - 100)  # a holdout of 100: a visibly wide interval
    model = fit("tabular", rows(data.data, train), y[train], FOREST, names)
    X_hold, y_hold = rows(data.data, hold), y[hold]
    proba = model.predict_proba(X_hold)
    full = holdout_metrics(model, X_hold, y_hold, proba=proba, n_boot=4000)
    # The same bootstrap done the slow way: resample holdout items, score each resample.
    predicted = np.array(names, dtype=object)[proba.argmax(axis=1)]
    idx = np.random.default_rng(5).integers(0, len(y_hold), (4000, len(y_hold)))
    right = (predicted == y_hold)[idx]
    plain = np.mean([(right & (y_hold == c)[idx]).sum(1) / (y_hold == c)[idx].sum(1)
                     for c in names], axis=0)  # both classes are in every resample here
    assert balanced_accuracy_score(y_hold[idx[0]], predicted[idx[0]]) == pytest.approx(plain[0])
    low, high = np.percentile(plain, [2.5, 97.5])
    assert high - low > 0.08
    assert full["balanced_accuracy"]["low"] == pytest.approx(low, abs=0.006)
    assert full["balanced_accuracy"]["high"] == pytest.approx(high, abs=0.006)
    widths = []
    for n in (25, 50, len(y_hold)):
        part = holdout_metrics(model, X_hold.iloc[:n], y_hold[:n], proba=proba[:n])
        for key in ("accuracy", "balanced_accuracy"):
            assert part[key]["low"] <= part[key]["value"] <= part[key]["high"]
        widths.append(part["balanced_accuracy"]["high"] - part["balanced_accuracy"]["low"])
    assert widths[0] > widths[1] > widths[2]
    assert any("only" in r for r in holdout_metrics(model, X_hold.iloc[:20], y_hold[:20],
                                                    proba=proba[:20])["reasons"])


def test_per_class_rows_and_confusion_matrix(wine):
    model, X, y, classes = wine["model"], wine["X"], wine["y"], wine["classes"]
    out = per_class(model, X, y)
    predicted = [p[0] for p in model.predict(X)]
    p, r, f, s = precision_recall_fscore_support(y, predicted, labels=classes, zero_division=0)
    assert [row["class"] for row in out["rows"]] == classes
    assert [row["precision"] for row in out["rows"]] == pytest.approx(list(p))
    assert [row["recall"] for row in out["rows"]] == pytest.approx(list(r))
    assert [row["support"] for row in out["rows"]] == list(s)
    assert out["confusion_matrix"]["matrix"] == confusion_matrix(y, predicted,
                                                                 labels=classes).tolist()
    assert sum(map(sum, out["confusion_matrix"]["matrix"])) == len(y)
    # A project class nobody labeled in the holdout is listed, and said to be unmeasured.
    wider = per_class(model, X, y, classes=[*classes, "class_3"])
    assert wider["rows"][-1] == {"class": "class_3", "precision": 0.0, "recall": 0.0,
                                 "f1": 0.0, "support": 0}
    assert any("class_3" in reason for reason in wider["reasons"])


def test_calibration_bins_hold_every_item_and_confidences_fall_in_their_bin(wine):
    model, X, y = wine["model"], wine["X"], wine["y"]
    out = calibration(model, X, y)
    assert sum(b["count"] for b in out["bins"]) == out["n"] == len(y) == out["pairs"]
    assert len(out["bins"]) == 10
    confidence = model.predict_proba(X).max(axis=1)
    for b in out["bins"]:
        if b["count"]:
            assert b["lower"] <= b["mean_confidence"] <= b["upper"]
            assert 0 <= b["accuracy"] <= 1
        else:
            assert b["mean_confidence"] is None and b["accuracy"] is None
    # Top-class confidences of three classes are at least 1/3: the low bins are empty.
    assert all(b["count"] == 0 for b in out["bins"][:3])
    gaps = [b["count"] / len(y) * abs(b["accuracy"] - b["mean_confidence"])
            for b in out["bins"] if b["count"]]
    assert out["ece"] == pytest.approx(sum(gaps)) and 0 <= out["ece"] <= out["max_gap"] <= 1
    assert np.mean(confidence) == pytest.approx(
        sum(b["count"] * b["mean_confidence"] for b in out["bins"] if b["count"]) / len(y))
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------------- importance


def test_table_importance_ranks_real_columns_over_noise_and_finds_a_leak(wine):
    model, X, y = wine["model"], wine["X"], wine["y"]
    out = importance(model, X, y, budget_seconds=math.inf)  # all 5 shuffles, however busy
    assert out["kind"] == "tabular" and out["method"] == "permutation"
    assert out["n_features"] == 14 and len(out["features"]) == 14
    ranked = [f["feature"] for f in out["features"]]
    by_name = {f["feature"]: f for f in out["features"]}
    assert out["features"][0]["mean"] > 0.02  # shuffling the best column costs accuracy
    assert ranked.index("lot_number") >= 7 and by_name["lot_number"]["mean"] < 0.02
    assert out["n_repeats"] == 5 and importance(model, X, y, budget_seconds=math.inf) == out

    # A model given a copy of the label leans on it alone: it must top the list.
    X_train = X.copy()
    X_train["assessor_grade"] = [wine["classes"].index(v) for v in y]
    leaky = fit("tabular", X_train, y, FOREST, wine["classes"])
    top, runner_up = importance(leaky, X_train, y, budget_seconds=math.inf)["features"][:2]
    assert top["feature"] == "assessor_grade" and top["mean"] > 2 * max(runner_up["mean"], 0.01)


def test_image_heat_map_has_the_grid_shape_and_lights_up_the_centre(digit_images):
    model, X, y = digit_images["model"], digit_images["X"], digit_images["y"]
    # 80 images, 3 shuffles per cell, however busy the machine.
    out = importance(model, X[:80], y[:80], budget_seconds=math.inf)
    assert out["kind"] == "image" and out["rows"] == out["cols"] == 4
    heat = np.array(out["grid"])
    assert heat.shape == (4, 4)
    centre = heat[1:3, 1:3].mean()
    corners = heat[[0, 0, 3, 3], [0, 3, 0, 3]].mean()
    assert centre > 0.03 and centre > 3 * corners  # digits differ in the middle, not the edge
    assert heat.argmax() in (5, 6, 9, 10)  # the hottest cell is one of the four central ones
    assert out["n"] == 80 and out["n_repeats"] == 3 and out["side"] == 32
    assert np.array(out["std"]).shape == (4, 4)
    # A finer grid: the left pixel column of every digit is blank, so shuffling it changes
    # no image and costs exactly nothing.
    fine = importance(model, X, y, grid=8, budget_seconds=1.0)
    assert np.array(fine["grid"]).shape == (8, 8)
    assert fine["grid"][0][0] == 0.0 and fine["grid"][3][0] == 0.0
    assert max(max(r) for r in fine["grid"]) > 0


def test_image_heat_map_points_at_a_shortcut(tmp_path):
    """Every 8 was scanned with a stamp in the top right corner: the model reads the stamp."""
    digits = load_digits()
    paths, y = [], []
    for i in np.flatnonzero(np.isin(digits.target, (3, 8)))[:200]:
        pixels = np.asarray(Image.open(io.BytesIO(digit_png(digits.data[i])))).copy()
        if digits.target[i] == 8:
            pixels[1:7, 25:31] = 0  # rows 1-6 of 32, columns 25-30: cell (0, 3) of a 4x4 grid
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
        y.append(str(digits.target[i]))
    y = np.array(y, dtype=object)
    model = fit("image", paths[:120], y[:120], LOGISTIC, ["3", "8"])
    heat = np.array(importance(model, paths[120:], y[120:], budget_seconds=math.inf)["grid"])
    assert np.unravel_index(heat.argmax(), heat.shape) == (0, 3)  # row 0 from the top, col 3
    assert heat[0, 3] > 0.1 and heat[0, 3] > 3 * np.delete(heat.ravel(), 3).max(initial=0.0)


def test_text_importance_names_spam_words(spam):
    out = importance(spam["model"], spam["X"], spam["y"])
    assert out["method"] == "coefficients"
    spam_terms = {t["term"] for t in out["per_class"]["spam"]}
    ham_terms = {t["term"] for t in out["per_class"]["ham"]}
    assert len(spam_terms & SPAM_WORDS) >= 3
    assert not ham_terms & SPAM_WORDS
    assert all(t["weight"] > 0 for t in out["per_class"]["spam"])
    assert all(" " not in t["term"] or len(t["term"].split()) == 2
               for t in out["per_class"]["spam"])  # word 1-2 grams, not character n-grams


def test_text_importance_without_coefficients_deletes_terms(spam):
    texts = spam["texts"]
    nb = fit("text", [texts[i] for i in spam["train"]], spam["y_train"],
             {"model": "complement_nb", "nb_alpha": 0.1}, ["ham", "spam"])
    out = importance(nb, spam["X"], spam["y"], budget_seconds=math.inf)  # all 20 terms
    assert out["method"] == "term_deletion" and out["n"] == len(spam["X"])
    assert len(out["terms"]) == 15  # the top 15 of the 20 most frequent terms tried
    spam_terms = [t["term"] for t in out["per_class"]["spam"]]
    ham_terms = [t["term"] for t in out["per_class"]["ham"]]
    assert spam_terms[0] in SPAM_WORDS  # deleting it costs spam mail the most
    assert LIST_WORDS & set(ham_terms) and not LIST_WORDS & set(spam_terms)
    assert all(t["weight"] > 0 for t in out["per_class"]["spam"])


# ---------------------------------------------------------------- multi-label


def test_multi_label_metrics_calibration_and_importance():
    digits = load_digits(as_frame=True)
    tags = {"even": lambda d: d % 2 == 0, "big": lambda d: d >= 5,
            "round": lambda d: d in (0, 6, 8, 9)}
    classes = list(tags)
    labels = [[t for t, rule in tags.items() if rule(int(d))] for d in digits.target]
    X = digits.data
    train, hold = split(len(labels), 600)
    binarizer = MultiLabelBinarizer(classes=classes)
    pipeline = Pipeline([("features", make_features("tabular", X)),
                         ("model", OneVsRestClassifier(build_estimator(LOGISTIC, 0, 600)))])
    pipeline.fit(rows(X, train), binarizer.fit_transform([labels[i] for i in train]))
    model = TrainedModel(pipeline=pipeline, classes=classes, fitted_classes=classes,
                         modality="tabular", multi_label=True, columns=list(X.columns))
    X_hold, y_hold = rows(X, hold), [labels[i] for i in hold]
    truth = binarizer.transform(y_hold).astype(bool)
    predicted = model.predict_proba(X_hold) >= 0.5

    out = holdout_metrics(model, X_hold, y_hold)
    assert out["primary"] == "mean_label_balanced_accuracy" and out["multi_label"] is True
    assert out["subset_accuracy"]["value"] == pytest.approx((truth == predicted).all(1).mean())
    assert out["mean_label_balanced_accuracy"]["value"] == pytest.approx(
        score(truth, predicted, True))
    for key in ("subset_accuracy", "mean_label_balanced_accuracy"):
        assert out[key]["low"] <= out[key]["value"] <= out[key]["high"]
    assert holdout_metrics(model, X_hold, truth.astype(int)) == out  # a 0/1 matrix too

    rows_ = per_class(model, X_hold, y_hold)["rows"]
    assert [r["support"] for r in rows_] == truth.sum(axis=0).tolist()
    cal = calibration(model, X_hold, y_hold)
    assert cal["pairs"] == 3 * len(y_hold) == sum(b["count"] for b in cal["bins"])

    imp = importance(model, X_hold.iloc[:200], y_hold[:200], budget_seconds=math.inf)
    assert imp["kind"] == "tabular" and len(imp["features"]) == 15  # the top 15 of 64
    blank = {"pixel_0_0", "pixel_4_0", "pixel_4_7"}  # no ink in any digit
    assert not blank & {f["feature"] for f in imp["features"]}
    assert any("top 15 of 64" in c for c in imp["capped"])


# ---------------------------------------------------------------- the bundle


def test_explain_bundle_is_complete_json_for_a_project(wine, db):
    from labeling.projects import create_project

    project = create_project(db, "wine", "tabular", classes=wine["classes"])
    out = explain(wine["model"], wine["X"], wine["y"], project)
    assert set(out) == {"n", "classes", "modality", "multi_label", "holdout_metrics",
                        "per_class", "calibration", "importance", "reasons", "errors",
                        "seconds"}
    assert out["errors"] == [] and out["n"] == 88 and out["modality"] == "tabular"
    for part in ("holdout_metrics", "per_class", "calibration", "importance"):
        assert isinstance(out[part], dict)
    assert out["importance"]["kind"] == "tabular" and out["seconds"] > 0
    assert json.loads(json.dumps(out, allow_nan=False))["n"] == 88
    # Parts are what the single functions give.
    assert out["holdout_metrics"] == holdout_metrics(wine["model"], wine["X"], wine["y"])


def test_explain_on_images_and_text(digit_images, spam):
    out = explain(digit_images["model"], digit_images["X"], digit_images["y"])
    assert out["errors"] == [] and out["importance"]["kind"] == "image"
    assert out["per_class"]["classes"] == digit_images["classes"]
    out = explain(spam["model"], spam["X"], spam["y"], {"modality": "text"})
    assert out["errors"] == [] and out["importance"]["method"] == "coefficients"
    assert out["holdout_metrics"]["accuracy"]["value"] > 0.7


def test_explain_never_raises_on_broken_input(wine, digit_images, tmp_path):
    image_model = digit_images["model"]
    missing = [str(tmp_path / f"gone-{i}.png") for i in range(12)]
    out = explain(image_model, missing, digit_images["y"][:12])
    assert out["holdout_metrics"] is None and out["importance"] is None
    assert len(out["errors"]) == 1 and out["errors"][0].startswith("holdout: the model could "
                                                                    "not score it")
    assert "gone-0.png" in out["errors"][0]

    without_column = wine["X"].drop(columns=["proline"])
    out = explain(wine["model"], without_column, wine["y"])
    assert "proline" in out["errors"][0] and out["per_class"] is None

    out = explain(wine["model"], wine["X"].iloc[:10], wine["y"])
    assert out["errors"] == ["holdout: 10 inputs but 88 labels; they must pair up, so "
                             "nothing was measured"]
    out = explain(None, wine["X"], wine["y"], {"classes": wine["classes"]})
    assert out["errors"] and out["holdout_metrics"] is None
    json.dumps(out, allow_nan=False)

    # One part failing leaves the others: a modality no importance knows.
    out = explain(wine["model"], wine["X"], wine["y"], {"modality": "audio"})
    assert out["holdout_metrics"] is not None and out["calibration"] is not None
    assert out["importance"] is None
    assert out["errors"] == ["importance: ValueError: unknown modality 'audio'"]


def test_explain_on_a_tiny_or_empty_holdout_says_what_it_could_not_measure(wine):
    model, X, y = wine["model"], wine["X"], wine["y"]
    empty = explain(model, X.iloc[:0], [])
    assert empty["n"] == 0 and empty["errors"] == [] and empty["holdout_metrics"] is None
    assert any("no holdout items" in r for r in empty["reasons"])
    assert explain(model, None, None)["n"] == 0

    one_class = [i for i, v in enumerate(y) if v == "class_1"][:6]
    tiny = explain(model, X.iloc[one_class], y[one_class])
    assert tiny["errors"] == [] and tiny["n"] == 6
    assert tiny["holdout_metrics"]["accuracy"]["low"] < tiny["holdout_metrics"]["accuracy"][
        "value"]
    reasons = " | ".join(tiny["reasons"])
    assert "holds one class only" in reasons and "only 6 holdout items" in reasons
    assert "importance: only 6 holdout items" in reasons and "class_0" in reasons
    assert tiny["importance"] == {"kind": "tabular", "n": 6, "reasons": tiny["importance"][
        "reasons"]}
    # A true label the model never knew counts as an error, not as nothing.
    renamed = np.array(["class_9" if v == "class_0" else v for v in y], dtype=object)
    out = explain(model, X, renamed)
    wrong = sum(v == "class_9" for v in renamed)
    assert out["holdout_metrics"]["accuracy"]["value"] <= 1 - wrong / len(y) + 1e-12
    assert "class_9" in out["per_class"]["classes"]
    assert math.isclose(out["per_class"]["rows"][-1]["recall"], 0.0)


def test_explain_a_model_from_training_on_its_own_holdout(db, wine_csv):
    """The lead's wiring: a trained version, the training set's holdout, the project."""
    from automl.registry import load_model, promoted_model
    from automl.training import train_project, training_set
    from labeling.importers import import_source
    from labeling.projects import get_project

    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    result = train_project(db, project, budget=2)
    model = load_model(db, promoted_model(db, project))
    data = training_set(db, project)
    X_hold, y_hold = data.part(data.holdout)
    assert len(y_hold) == result["holdout_size"] > 10
    out = explain(model, X_hold, y_hold, project)
    assert out["errors"] == []
    assert out["holdout_metrics"]["balanced_accuracy"]["value"] == pytest.approx(
        result["holdout"])
    assert {f["feature"] for f in out["importance"]["features"]} <= set(data.X.columns)
    assert sum(b["count"] for b in out["calibration"]["bins"]) == len(y_hold)
