"""The objective metric: scored like scikit-learn, optimised by the search, judged on the holdout.

Real data: scikit-learn's breast cancer table (binary) and wine (three classes).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer

import cli
from automl.metrics import metric_value
from automl.registry import list_models, load_model
from automl.search import tune_decision
from automl.training import project_metric, train_project, training_set
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project


@pytest.fixture
def cancer_csv(tmp_path):
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = frame["diagnosis"].map({0: "malignant", 1: "benign"})
    path = tmp_path / "cancer.csv"
    frame.iloc[::2].to_csv(path, index=False)  # 285 rows keep the runs short
    return path


def test_values_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    proba = rng.dirichlet(np.ones(3), 200)
    proba[np.arange(200), y] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    assert metric_value("balanced_accuracy", y, pred) == pytest.approx(
        skm.balanced_accuracy_score(y, pred))
    assert metric_value("f1_weighted", y, pred) == pytest.approx(
        skm.f1_score(y, pred, average="weighted"))
    assert metric_value("roc_auc_ovr", y, proba=proba) == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert metric_value("neg_log_loss", y, proba=proba) == pytest.approx(-skm.log_loss(y, proba))
    # Class names and a binary positive class (the second one).
    names = np.array(["ham", "spam"])[y % 2]
    two = np.column_stack([1 - proba[:, 0], proba[:, 0]])
    assert metric_value("roc_auc", names, proba=two, classes=["ham", "spam"]) == pytest.approx(
        skm.roc_auc_score(names == "spam", two[:, 1]))
    assert metric_value("average_precision", names, proba=two, classes=["ham", "spam"]) == \
        pytest.approx(skm.average_precision_score(names == "spam", two[:, 1]))
    assert metric_value("f1", names, np.where(two[:, 1] > 0.5, "spam", "ham")) == pytest.approx(
        skm.f1_score(names, np.where(two[:, 1] > 0.5, "spam", "ham"), pos_label="spam"))
    # One class only: a ranking metric is undefined, not a crash or a fake 0.5.
    assert np.isnan(metric_value("roc_auc", np.zeros(5, int), proba=np.full((5, 2), 0.5)))
    with pytest.raises(ValueError, match="needs probabilities"):
        metric_value("roc_auc", y, pred)


def test_the_decision_rule_is_tuned_for_the_chosen_metric():
    """On imbalanced classes balanced accuracy wants a lower threshold than accuracy does."""
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.08).astype(int)
    score = rng.normal(0, 1, 2000) + 1.6 * y
    p1 = 1 / (1 + np.exp(-(score - 3.0)))  # a model that under-predicts the rare class
    proba = np.column_stack([1 - p1, p1])
    splits = [(np.flatnonzero(np.arange(2000) % 3 != f), np.flatnonzero(np.arange(2000) % 3 == f))
              for f in range(3)]
    balanced = tune_decision(y, proba, splits, 2, "balanced_accuracy")
    plain = tune_decision(y, proba, splits, 2, "accuracy")
    assert balanced["threshold"] is not None
    assert plain["threshold"] is None or plain["threshold"] > balanced["threshold"]
    auc = tune_decision(y, proba, splits, 2, "roc_auc")
    assert auc["threshold"] is None and auc["weights"] is None  # nothing to tune for a ranking
    assert np.mean(auc["fold_scores"]) == pytest.approx(
        np.mean([skm.roc_auc_score(y[va], p1[va]) for _, va in splits]))


def test_training_optimises_and_reports_the_chosen_metric_and_remembers_it(db, cancer_csv):
    import_source(db, "cancer", cancer_csv, "tabular", label_column="diagnosis")
    project = get_project(db, "cancer")
    result = train_project(db, project, budget=4, metric="roc_auc")
    assert result["metric"] == "roc_auc"
    model = list_models(db, project)[0]
    assert model["metric_name"] == "roc_auc"
    assert "ROC AUC" in model["metrics"]["how_measured"]
    # The stored holdout score is ROC AUC of the saved model on the holdout labels.
    data = training_set(db, project)
    X_hold, y_hold = data.part(data.holdout)
    proba = load_model(db, model).predict_proba(X_hold)
    truth = np.array([a[0] for a in y_hold]) == project.classes[1]
    assert model["holdout_score"] == pytest.approx(skm.roc_auc_score(truth, proba[:, 1]))
    assert result["cv"] <= 1.0 and result["cv"] > 0.9  # an AUC, not a balanced accuracy
    # Remembered: the next run (the one-click retrain) optimises it again.
    assert project_metric(db, project) == "roc_auc"
    again = train_project(db, project, budget=3)
    assert again["metric"] == "roc_auc"
    assert again["promoted"] == (again["holdout"] >= result["holdout"])


def test_a_metric_that_does_not_fit_is_refused_and_nothing_changes(db, wine_csv):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    before = {t: db[t].count for t in ("model_versions", "training_sets", "settings")}
    for wrong, hint in (("r2", "multiclass"), ("f1", "multiclass"), ("roc-auc", "choose one")):
        with pytest.raises(GroundworkError, match=hint):
            train_project(db, project, budget=2, metric=wrong)
    assert {t: db[t].count for t in before} == before
    assert project_metric(db, project) is None


def test_cli_train_metric_and_data_report(db, data_dir, wine_csv, capsys):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    args = ["--data-dir", str(data_dir)]
    assert cli.main(["data-report", "wine", "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "balanced_accuracy" and "f1_macro" in report["metrics"]
    assert cli.main(["train", "wine", "--budget", "3", "--metric", "f1_macro", "--json",
                     *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "f1_macro"
    assert cli.main(["data-report", "wine", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "f1_macro"  # remembered
    code = cli.main(["train", "wine", "--budget", "2", "--metric", "r2", *args])
    err = capsys.readouterr().err
    assert code != 0 and "r2" in err and "balanced_accuracy" in err


def test_multi_label_roc_auc(db, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(160):
        a, b = rng.random() < 0.5, rng.random() < 0.4
        rows.append({"x1": a + rng.normal(0, 0.3), "x2": b + rng.normal(0, 0.3),
                     "tags": "|".join(t for t, on in (("a", a), ("b", b)) if on)})
    path = tmp_path / "tags.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    import_source(db, "tags", path, "tabular", label_column="tags", task="multi-label",
                  classes=["a", "b"])
    result = train_project(db, get_project(db, "tags"), budget=3, metric="roc_auc")
    assert result["metric"] == "roc_auc" and 0.8 < result["cv"] <= 1.0


def test_the_search_can_be_restricted_to_some_families(db, data_dir, wine_csv, capsys):
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    result = train_project(db, project, budget=4, model_families=["knn", "random_forest"])
    model = list_models(db, project)[0]
    tried = {row["model"] for row in model["metrics"]["leaderboard"]}
    assert tried <= {"knn", "random_forest"} and result["estimator"] in tried
    assert model["metrics"]["families"] == ["random_forest", "knn"]
    before = db["model_versions"].count
    with pytest.raises(GroundworkError, match="choose from logistic_regression"):
        train_project(db, project, budget=2, model_families=["deep_net"])
    code = cli.main(["train", "wine", "--families", "linear_svm,nope", "--budget", "2",
                     "--data-dir", str(data_dir)])
    assert code != 0 and "'nope'" in capsys.readouterr().err
    assert db["model_versions"].count == before
    assert cli.main(["train", "wine", "--families", "linear_svm", "--budget", "2", "--json",
                     "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["estimator"] == "linear_svm"


def test_a_trial_cap_ends_the_search_the_same_way_on_any_machine(db, data_dir, wine_csv,
                                                               capsys):
    """A generous budget with a cap of 4 trials: the cap, not the clock, ends the search,
    so two runs with the same seed pick the same model (a loaded machine included)."""
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    runs = [train_project(db, project, budget=120, model_families=["logistic_regression"],
                          max_trials=4) for _ in range(2)]
    assert [r["trials"] for r in runs] == [4, 4]
    first, second = list_models(db, project)[-2:]
    assert first["params"] == second["params"] and first["cv_score"] == second["cv_score"]
    before = db["model_versions"].count
    for bad in (0, -3, 2.5, True):
        with pytest.raises(GroundworkError, match="whole number of at least 1"):
            train_project(db, project, budget=2, max_trials=bad)
    code = cli.main(["train", "wine", "--max-trials", "0", "--data-dir", str(data_dir)])
    assert code != 0 and "whole number of at least 1, not 0" in capsys.readouterr().err
    assert db["model_versions"].count == before
    assert cli.main(["train", "wine", "--max-trials", "2", "--budget", "60", "--json",
                     "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 2


def test_fast_balanced_accuracy_is_scikit_learns():
    rng = np.random.default_rng(0)
    for k in (2, 3, 10):
        for n in (1, 7, 200):
            y = rng.integers(0, k, n)
            pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
            pred[: n // 3] = 0  # some classes never predicted, some never present
            assert metric_value("balanced_accuracy", y, pred) == pytest.approx(
                skm.balanced_accuracy_score(y, pred))
    # Strings and floats still go to scikit-learn.
    assert metric_value("balanced_accuracy", ["a", "b", "b"], ["a", "a", "b"]) == 0.75
