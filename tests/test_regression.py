"""Regression projects (issue 4): numeric table targets, from import to batch prediction.

Real data: scikit-learn's diabetes set (442 patients, disease progression
from 25 to 346) on a real store, through the domain API, the CLI and the
Label and Train pages (AppTest; the browser check is in tests/browser).
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from streamlit.testing.v1 import AppTest

import cli
from automl.committee import committee_predictions, quick_refit
from automl.data_report import data_report
from automl.predict import predict_file
from automl.registry import load_model, promoted_model
from automl.residuals import conformal_half_width
from automl.training import train_project, training_report
from labeling.annotations import current_labels, record_annotation
from labeling.autolabel import plan_autolabel
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import create_project, get_project, set_strategy
from labeling.store import connect
from labeling.targets import is_regression_target, number_label, parse_number
from tests.test_pages import ROOT_DIR


@pytest.fixture
def diabetes_csv(tmp_path):
    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def trained(db, diabetes_csv):
    import_source(db, "diabetes", diabetes_csv, "tabular", label_column="progression")
    project = get_project(db, "diabetes")
    # A trial count, not the 8 s budget, ends this search: ten tests share the fixture.
    result = train_project(db, project, budget=8, model_families=["ridge", "extra_trees"],
                           max_trials=10)
    return project, result


def test_numbers_are_read_one_way():
    assert parse_number(" 1,234.5 ") == 1234.5 and parse_number("3.5e0") == 3.5
    assert parse_number("abc") is None and parse_number("") is None
    assert parse_number("nan") is None and parse_number(True) is None
    assert number_label(3.0) == "3" and number_label(0.1) == "0.1"
    assert is_regression_target(load_diabetes().target)


def test_a_numeric_label_column_makes_a_regression_project(db, diabetes_csv):
    report = import_source(db, "diabetes", diabetes_csv, "tabular", label_column="progression")
    project = get_project(db, "diabetes")
    assert project.task == "regression" and project.regression and project.classes == []
    assert report.task == "regression" and report.labeled == 442
    assert any("regression" in note for note in report.notes)
    labels = current_labels(db, project, curated_only=True)
    assert float(labels["labels"].iloc[0][0]) == load_diabetes().target[0]
    assert project.strategy == "uncertainty"
    # Asked for explicitly, the same column stays classes.
    import_source(db, "as-classes", diabetes_csv, "tabular", label_column="progression",
                  task="single-label")
    assert len(get_project(db, "as-classes").classes) == 214


def test_bad_regression_input_is_refused_and_changes_nothing(db, diabetes_csv, tmp_path):
    frame = pd.read_csv(diabetes_csv)
    frame["progression"] = frame["progression"].astype(object)
    frame.loc[3, "progression"] = "high"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(GroundworkError, match=r"not numbers \(row 3 progression='high'\)"):
        import_source(db, "bad", bad, "tabular", label_column="progression", task="regression")
    assert db.execute("SELECT count(*) FROM projects").fetchone()[0] == 0
    with pytest.raises(GroundworkError, match="tabular projects, not text"):
        create_project(db, "t", "text", "regression")
    with pytest.raises(GroundworkError, match="leave out --classes"):
        import_source(db, "c", diabetes_csv, "tabular", label_column="progression",
                      task="regression", classes=["a", "b"])
    import_source(db, "ok", diabetes_csv, "tabular", label_column="progression")
    project = get_project(db, "ok")
    before = db.execute("SELECT count(*) FROM annotations").fetchone()[0]
    with pytest.raises(GroundworkError, match="'lots' is not a number"):
        record_annotation(db, project, 1, "lots", user="ann")
    with pytest.raises(GroundworkError, match="strategy 'margin' needs class probabilities"):
        set_strategy(db, project, "margin")
    # Classes asked for explicitly into a regression project (or numbers into a class
    # project) are refused, not quietly read the project's way.
    for name, task in (("ok", "single-label"), ("as-classes", "regression")):
        if name == "as-classes":
            import_source(db, name, diabetes_csv, "tabular", label_column="progression",
                          task="single-label")
        with pytest.raises(GroundworkError, match=f"is .*, not {task}: import without --task"):
            import_source(db, name, diabetes_csv, "tabular", label_column="progression",
                          task=task)
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == before + 442


def test_several_answers_are_consolidated_by_their_median(db):
    project = create_project(db, "prices", "tabular", "regression")
    db["projects"].update(project.id, {"annotations_per_item": 3})
    project = get_project(db, project.id)
    from labeling.items import add_items

    with db.atomic():
        add_items(db, project, [{"key": "0", "content": json.dumps({"x": 1}), "sha256": "0"}])
    item = db.execute("SELECT id FROM items").fetchone()[0]
    for user, value in (("ann", "10"), ("bob", "12"), ("cy", "1500")):  # one slip
        record_annotation(db, project, item, value, user=user)
    labels = current_labels(db, project, curated_only=True)
    assert labels["labels"].iloc[0] == ["12"] and labels["user"].iloc[0] == "consensus"
    from labeling.consolidation import agreement

    result = agreement(db, project)
    assert result["items_with_overlap"] == 1 and result["alpha"] is not None
    by_user = {a["user"]: a["agreement_with_consensus"] for a in result["annotators"]}
    assert by_user == {"ann": 0.0, "bob": 1.0, "cy": 0.0}  # 10 is 17% below the median 12


def test_training_searches_regressors_and_measures_them(db, trained):
    project, result = trained
    assert result["metric"] == "r2" and result["estimator"] in ("ridge", "extra_trees")
    assert result["holdout"] is not None and 0.2 < result["holdout"] < 0.8
    row = promoted_model(db, project)
    metrics = row["metrics"]
    assert metrics["problem_type"] == "regression"
    explanation = metrics["explanation"]
    r2 = explanation["holdout_metrics"]["r2"]
    assert r2["low"] <= r2["value"] <= r2["high"] and r2["value"] == pytest.approx(
        result["holdout"])
    assert explanation["holdout_metrics"]["mae"]["value"] > 0
    assert {f["feature"] for f in explanation["importance"]["features"][:3]} & {"bmi", "s5"}
    interval = metrics["prediction_interval"]
    model = load_model(db, row)
    assert model.regression and model.interval == pytest.approx(interval["half_width"])
    # The interval is measured: on the holdout it covers at least 90% by construction.
    n = interval["n"]
    assert n == row["holdout_size"] and interval["coverage"] == 0.9
    assert {t["model"] for t in metrics["leaderboard"]} <= {"ridge", "extra_trees"}


def test_conformal_half_width_is_the_right_order_statistic():
    errors = np.arange(1, 20, dtype=float)  # 19 errors: rank ceil(20 * 0.9) = 18
    assert conformal_half_width(errors) == 18.0
    assert conformal_half_width(np.arange(8.0)) is None  # too few for 90%


def test_batch_prediction_gives_numbers_and_intervals(db, trained, diabetes_csv, tmp_path):
    project, _ = trained
    out = tmp_path / "pred.csv"
    assert predict_file(db, project, diabetes_csv, out) == 442
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["key", "predicted_label", "predicted_value", "interval_low",
                                  "interval_high"]
    truth = load_diabetes().target
    inside = (pred["interval_low"] <= truth) & (truth <= pred["interval_high"])
    assert inside.mean() > 0.8  # in-sample rows too: the 90% interval is not a toy
    assert np.corrcoef(pred["predicted_value"], truth)[0, 1] > 0.6


def test_metric_override_and_wrong_metric(db, trained):
    project, _ = trained
    with pytest.raises(GroundworkError, match="does not fit a regression problem"):
        training_report(db, project, metric="balanced_accuracy")
    result = train_project(db, project, budget=4, metric="neg_mean_absolute_error",
                           model_families=["ridge"])
    assert result["metric"] == "neg_mean_absolute_error" and result["holdout"] < 0


def test_data_report_blocks_constant_targets_and_finds_leaks():
    X = pd.DataFrame({"a": np.arange(60.0), "b": np.random.default_rng(0).normal(size=60)})
    same = [["5"]] * 60
    report = data_report("tabular", X, same, False, [], regression=True)
    assert report["blocking"] and report["findings"][0]["check"] == "constant_target"
    y = [[number_label(v)] for v in X["a"] * 3 + 1]
    report = data_report("tabular", X, y, False, [], regression=True)
    assert not report["blocking"] and report["target"]["distinct"] == 60
    assert [f["column"] for f in report["findings"] if f["check"] == "leakage"] == ["a"]


def test_queue_asks_where_a_committee_of_trees_disagrees(db, diabetes_csv, tmp_path):
    frame = pd.read_csv(diabetes_csv)
    frame["gold"] = frame.pop("progression")
    path = tmp_path / "gold.csv"
    frame.to_csv(path, index=False)
    import_source(db, "dg", path, "tabular", gold_column="gold")
    project = get_project(db, "dg")
    gold = {i: json.loads(g) for i, g in db.execute("SELECT id, gold FROM items")}
    for item_id in list(gold)[:80]:
        record_annotation(db, project, item_id, gold[item_id], user="ann")
    result = quick_refit(db, project)
    assert result["scored"] == 442 - 80 and result["r2"] is not None
    rows = db.execute("SELECT item_id, priority FROM queue_scores ORDER BY priority").fetchall()
    assert len(rows) == 362
    # The first item in the queue is the one whose trees spread widest.
    from automl.committee import TREES  # noqa: F401 - the committee's size is a constant
    from automl.features import make_features
    from automl.training import training_set
    from labeling.inputs import model_input
    from labeling.items import get_items

    data = training_set(db, project)
    X_train, y = data.part(~data.holdout)
    from sklearn.ensemble import ExtraTreesRegressor

    features = make_features("tabular", X_train)
    model = ExtraTreesRegressor(n_estimators=50, min_samples_leaf=2, random_state=0, n_jobs=1)
    model.fit(features.fit_transform(X_train), [float(a[0]) for a in y])
    ids = [r[0] for r in rows]
    _, spread = committee_predictions(model, features.transform(
        model_input(db, project, get_items(db, project, ids))))
    assert spread[0] == pytest.approx(spread.max())
    curve = db.execute("SELECT model, accuracy FROM learning_curve").fetchall()
    assert curve and "committee" in curve[0][0]


def test_class_only_features_refuse_regression_clearly(db, trained):
    project, _ = trained
    from automl.simulate import simulate
    from review.label_issues import check_labels
    from review.workflows import check_conditions

    for call in (lambda: plan_autolabel(db, project),
                 lambda: check_conditions({"below": 0.7}, project, "pool"),
                 lambda: check_labels(db, project),
                 lambda: simulate(db, project, "uncertainty")):
        with pytest.raises(GroundworkError, match="regression project"):
            call()


def test_cli_imports_trains_and_predicts(data_dir, diabetes_csv, tmp_path, capsys):
    def run(*args):
        code = cli.main([*map(str, args), "--data-dir", str(data_dir)])
        return code, capsys.readouterr()

    code, (out, _) = run("import", "d", diabetes_csv, "--modality", "tabular",
                         "--label-column", "progression")
    assert code == 0 and "regression: labels are numbers" in out
    code, (out, _) = run("train", "d", "--budget", "4", "--families", "ridge", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["metric"] == "r2"
    code, (out, err) = run("train", "d", "--budget", "4", "--metric", "accuracy")
    assert code != 0 and "does not fit a regression problem" in err
    code, (out, err) = run("autolabel", "d")
    assert code != 0 and "regression project" in err
    code, _ = run("predict", "d", diabetes_csv, "--out", tmp_path / "p.csv")
    assert code == 0 and "predicted_value" in (tmp_path / "p.csv").read_text().splitlines()[0]


def test_migration_from_version_10_allows_regression(tmp_path):
    old = connect(tmp_path / "old", migrate_to=10)
    create_project(old, "wine", "tabular", "single-label", ["a", "b"])
    with pytest.raises(sqlite3.IntegrityError):
        old["projects"].insert({"name": "r", "modality": "tabular", "task": "regression",
                                "classes": "[]", "created_at": "x"})
    old.conn.close()
    new = connect(tmp_path / "old")
    assert get_project(new, "wine").classes == ["a", "b"]
    assert create_project(new, "r", "tabular", "regression").regression
    assert new.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _page(path: str, project: str) -> AppTest:
    at = AppTest.from_file(str(ROOT_DIR / path), default_timeout=60)
    at.session_state["project_name"] = project
    at.session_state["user"] = "ann"
    return at.run()


def test_label_page_takes_a_typed_number(db, data_dir, diabetes_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    frame = pd.read_csv(diabetes_csv).drop(columns="progression")
    path = tmp_path / "unlabeled.csv"
    frame.to_csv(path, index=False)
    import_source(db, "pool", path, "tabular", task="regression")
    at = _page("labeling/pages/label.py", "pool")
    assert not at.exception
    box = next(t for t in at.text_input if t.key.startswith("value-"))
    box.input("lots")  # a form's value goes with its submit
    next(b for b in at.button if b.label.startswith("Save")).click().run()
    assert any("'lots' is not a number" in c.value for c in at.caption)
    assert db.execute("SELECT count(*) FROM annotations").fetchone()[0] == 0
    box = next(t for t in at.text_input if t.key.startswith("value-"))
    box.input("151.5")
    next(b for b in at.button if b.label.startswith("Save")).click().run()
    saved = db.execute("SELECT labels, source FROM annotations").fetchall()
    assert saved == [('["151.5"]', "human")]
    assert not at.exception


def test_train_page_shows_regression_scores(db, data_dir, trained, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    at = _page("automl/pages/train.py", "diabetes")
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "R²" in labels and "Mean absolute error" in labels
    assert any("split conformal" in m.value for m in at.markdown)


def test_exports_carry_the_numbers(db, diabetes_csv, tmp_path):
    from labeling.export import export_project

    import_source(db, "diabetes", diabetes_csv, "tabular", label_column="progression")
    project = get_project(db, "diabetes")
    out = tmp_path / "out.manifest"
    export_project(db, project, "manifest", out)
    first = json.loads(out.read_text().splitlines()[0])
    assert first["diabetes"] == load_diabetes().target[0]
    assert first["diabetes-metadata"]["type"] == "groundwork/tabular-regression"
    assert first["diabetes-metadata"]["human-annotated"] == "yes"
    export_project(db, project, "csv", tmp_path / "out.csv")
    rows = pd.read_csv(tmp_path / "out.csv")
    assert np.allclose(rows.iloc[:, 1].astype(float), load_diabetes().target)


@pytest.mark.parametrize("path", ["review/pages/review_tasks.py", "review/pages/workflows.py",
                                  "labeling/pages/autolabel.py", "automl/pages/savings.py"])
def test_class_only_pages_say_why_on_a_regression_project(db, data_dir, trained, path,
                                                          monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    at = _page(path, "diabetes")
    assert not at.exception
    assert any("is a regression project" in i.value for i in at.info)


def test_two_versions_are_compared_on_the_same_rows(db, trained):
    from automl.compare import compare_versions

    project, _ = trained
    train_project(db, project, budget=3, model_families=["knn"])
    result = compare_versions(db, project, 1, 2)
    assert [v["version"] for v in result["versions"]] == [1, 2]
    assert result["only_a_closer"] + result["only_b_closer"] <= result["holdout_size"]
    assert 0 <= result["p_value"] <= 1 and all(v["mae"] > 0 for v in result["versions"])
    assert "Wilcoxon" in result["how_measured"]


def test_an_ensemble_of_regressors_is_kept_only_if_it_wins(db, diabetes_csv):
    import_source(db, "diabetes", diabetes_csv, "tabular", label_column="progression")
    project = get_project(db, "diabetes")
    result = train_project(db, project, budget=10, ensemble=True,
                           model_families=["ridge", "extra_trees", "knn"])
    info = promoted_model(db, project)["metrics"]["ensemble"]
    assert info["single_holdout"] is not None and info["ensemble_holdout"] is not None
    assert info["chosen"] == (info["ensemble_holdout"] > info["single_holdout"])
    assert result["estimator"].startswith("ensemble(") == info["chosen"]
    model = load_model(db, promoted_model(db, project))
    assert model.regression and len(model.predict_values(pd.read_csv(diabetes_csv).head(3))) == 3
