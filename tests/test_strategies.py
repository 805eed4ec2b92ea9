"""Query strategies (modAL's measures and ranked batch through our adapter) and simulation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from automl.simulate import simulate, stop_hint
from labeling.errors import GroundworkError
from labeling.importers import import_source
from labeling.projects import get_project
from labeling.strategies import (
    balance_by_class,
    diverse_seed,
    ranked_batch_indices,
    top,
    usefulness,
)
from tests.test_cli import Run


def test_usefulness_orders_by_modal_measures():
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
    for strategy in ("uncertainty", "margin", "entropy"):
        assert list(top(usefulness(strategy, p), 4)) == [1, 2, 0, 3]
    three = np.array([[0.4, 0.4, 0.2], [0.5, 0.25, 0.25]])
    assert top(usefulness("margin", three), 1)[0] == 0  # a tie at the top is least certain
    with pytest.raises(ValueError, match="unknown strategy"):
        usefulness("magic", p)


def test_ranked_batch_runs_on_todays_sklearn_and_spreads_the_batch():
    """Ten copies of the most uncertain point: top-k takes three copies, ranked batch does not."""
    rng = np.random.default_rng(0)
    pool = np.vstack([np.zeros((10, 2)), rng.normal(5, 2, size=(40, 2))])
    proba = np.vstack([np.full((10, 2), 0.5), np.c_[np.full(40, 0.6), np.full(40, 0.4)]])
    proba[10:, 0] += rng.uniform(0, 0.3, 40)
    proba[10:, 1] = 1 - proba[10:, 0]
    labeled = np.array([[10.0, 10.0]])
    naive = top(usefulness("uncertainty", proba), 3)
    assert set(naive) <= set(range(10))
    picked = ranked_batch_indices(proba, pool, labeled, 3)
    assert len(set(picked)) == 3
    assert sum(i < 10 for i in picked) == 1  # one copy of the duplicate, then other regions


def test_class_balance_gives_rare_classes_their_share_and_drops_nothing():
    ranked = np.arange(10)
    predicted = np.array(["a"] * 8 + ["b"] * 2)
    chosen = balance_by_class(ranked, predicted, {"a": 50, "b": 2}, 4)
    assert {8, 9} <= set(chosen) and len(chosen) == 4
    assert list(balance_by_class(ranked, predicted, {}, 10)) != []
    assert sorted(balance_by_class(ranked, predicted, {"a": 1, "b": 1}, 10)) == list(range(10))


def test_cold_start_seed_covers_the_data_not_the_first_rows():
    digits = load_digits()
    order = np.argsort(digits.target, kind="stable")  # the first rows are all zeros
    X, y = digits.data[order], digits.target[order]
    seed = diverse_seed(X, 10, seed=0)
    assert len(set(seed)) == 10
    assert len(set(y[seed])) >= 7 and len(set(y[:10])) == 1


def test_stop_hint_finds_the_flat_part():
    rising = [{"labels": 10 * i, "accuracy": min(0.5 + 0.1 * i, 0.9)} for i in range(1, 10)]
    assert stop_hint(rising) == 40
    assert stop_hint(rising[:4]) is None


@pytest.fixture
def digits_gold(db, tmp_path):
    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    frame.to_csv(tmp_path / "d.csv", index=False)
    import_source(db, "dg", tmp_path / "d.csv", "tabular", gold_column="digit")
    return get_project(db, "dg")


def test_simulation_replays_labeling_without_touching_the_store(db, digits_gold):
    before = {t: db[t].count for t in ("annotations", "model_versions", "predictions")}
    for strategy in ("margin", "batch", "random"):
        result = simulate(db, digits_gold, strategy=strategy, budget=60, batch=20, seed=1)
        assert [p["labels"] for p in result["curve"]] == [20, 40, 60]
        assert all(0 <= p["accuracy"] <= 1 for p in result["curve"])
        assert result["curve"][-1]["accuracy"] > 0.8
    assert {t: db[t].count for t in before} == before
    with pytest.raises(GroundworkError, match="unknown strategy"):
        simulate(db, digits_gold, strategy="oracle")
    with pytest.raises(GroundworkError, match="--batch"):
        simulate(db, digits_gold, batch=0)


def test_cli_simulate_json_contract(db, digits_gold, data_dir, capsys, spam_csv):
    gw = Run(data_dir, capsys)
    out = gw.json("simulate", "dg", "--strategy", "entropy", "--budget", "40", "--batch", "20",
                  "--seed", "3", "--compare-random")
    assert out["strategy"] == "entropy"
    assert [set(p) for p in out["curve"]] == [{"labels", "accuracy"}] * 2
    assert [p["labels"] for p in out["random_curve"]] == [20, 40]
    gw.json("import", "mail", spam_csv, "--modality", "text", "--label-column", "label")
    assert "hidden gold labels" in gw.fails("simulate", "mail")
