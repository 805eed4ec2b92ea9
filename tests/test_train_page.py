"""The Train page over real trained versions (AppTest), and the tables it draws."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from automl.registry import list_models, promoted_model
from automl.training import train_project
from automl.views import (
    confusion_frame,
    family_summary,
    importance_frame,
    leaderboard_frame,
    optimisation_history,
)
from labeling.importers import import_source
from labeling.projects import get_project

ROOT_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(db, data_dir, wine_csv, monkeypatch):
    monkeypatch.setenv("GROUNDWORK_DATA", str(data_dir))
    monkeypatch.setenv("GROUNDWORK_DEMO", "0")
    import_source(db, "wine", wine_csv, "tabular", label_column="cultivar")
    project = get_project(db, "wine")
    train_project(db, project, budget=4)
    train_project(db, project, budget=4)
    return db, project


def table_with(at: AppTest, column: str):
    """AppTest does not expose a dataframe's key: find the table by one of its columns."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT_DIR / "automl/pages/train.py"), default_timeout=60)
    at.session_state["project_name"] = "wine"
    at.session_state["user"] = "lead"
    return at.run()


def test_train_page_shows_the_search_the_holdout_and_the_lineage(trained):
    db, project = trained
    at = page()
    assert not at.exception
    versions = table_with(at, "training set")
    assert list(versions["version"]) == [2, 1] and set(versions["training set"]) == {1}
    board = table_with(at, "CV mean")
    model = promoted_model(db, project)
    assert len(board) == model["metrics"]["trials"]
    assert board.iloc[0]["CV mean"] == pytest.approx(model["cv_score"], abs=1e-4)
    assert any("Leaderboard" in m.value for m in at.markdown)
    assert any("Confusion matrix" in m.value for m in at.markdown)
    assert at.metric[0].value == f"{model['holdout_score']:.3f}"
    # Explanations of the chosen model: intervals, calibration, permutation importance.
    explanation = model["metrics"]["explanation"]
    assert explanation["errors"] == [] and explanation["n"] == model["holdout_size"]
    assert any("Calibration" in m.value for m in at.markdown)
    assert any("Permutation importance" in m.value for m in at.markdown)
    assert any("Wilson" in c.value for c in at.caption)
    # The data report above the button: problem type and objective, no blocking problem.
    assert any("Data report: 178 labels, multiclass, objective balanced accuracy" in e.label
               for e in at.expander)
    metric = at.selectbox(key="metric")  # the objective, default first, then the choices
    assert metric.value == "balanced_accuracy" and "f1_macro" in metric.options[2]
    assert at.json[0].value  # parameters, artifact hash, library versions
    assert model["artifact_sha256"] in at.json[0].value


def test_train_page_promotes_rolls_back_and_compares(trained):
    db, project = trained
    at = page()
    next(s for s in at.selectbox if s.label == "Version").set_value(1).run()
    next(b for b in at.button if b.key == "promote").click().run()
    assert promoted_model(db, project)["version"] == 1
    assert promoted_model(db, project)["promoted_by"] == "lead"
    next(b for b in at.button if b.key == "rollback").click().run()
    assert promoted_model(db, project)["version"] == 2
    assert any("Rolled back to v2" in s.value for s in at.success)
    next(b for b in at.button if b.key == "compare").click().run()
    compared = table_with(at, "95% interval")
    assert len(compared) == 2 and set(compared["version"]) == {"v1", "v2"}
    assert any("McNemar" in c.value for c in at.caption)
    assert [m["status"] for m in list_models(db, project)].count("promoted") == 1


def test_views_reshape_a_leaderboard():
    rows = [
        {"trial": 0, "model": "lr", "params": "C=1", "cv_mean": 0.8, "cv_std": 0.01,
         "fit_seconds": 0.1, "state": "complete", "reason": None, "worker": "main"},
        {"trial": 1, "model": "rf", "params": "trees=50", "cv_mean": None, "cv_std": None,
         "fit_seconds": None, "state": "pruned", "reason": "time budget reached",
         "worker": "w1"},
        {"trial": 2, "model": "rf", "params": "trees=90", "cv_mean": 0.9, "cv_std": 0.02,
         "fit_seconds": 0.3, "state": "complete", "reason": None, "worker": "main"},
        {"trial": 3, "model": "lr", "params": "C=9", "cv_mean": 0.7, "cv_std": 0.02,
         "fit_seconds": 0.1, "state": "complete", "reason": None, "worker": "main"},
    ]
    board = leaderboard_frame(rows)
    assert list(board["trial"]) == [2, 0, 3, 1] and board.iloc[-1]["why"] == "time budget reached"
    history = optimisation_history(rows)
    assert list(history["trial"]) == [0, 2, 3]
    assert list(history["best so far"]) == [0.8, 0.9, 0.9]
    families = family_summary(rows)
    assert families.iloc[0]["model"] == "rf" and families.iloc[0]["completed"] == 1
    assert importance_frame({"within_best_family": {"model": "rf", "importances": {
        "rf_leaf": 0.2, "rf_trees": 0.8}}})["parameter"].tolist() == ["rf_trees", "rf_leaf"]
    assert importance_frame({}).empty
    confusion = confusion_frame({"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]})
    assert confusion.loc["a", "b"] == 1 and confusion.loc["b", "b"] == 4
