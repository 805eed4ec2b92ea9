"""The search's own behaviour: the tuned decision rule, SVM and k-NN probabilities,
defaults, folds.

Real data: scikit-learn's breast cancer table made imbalanced (every benign
row, one malignant row in ten: about 6% positive, like ISLR's Caravan), and
the digits.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from automl.search import (
    DEFAULT_TRIAL,
    FAMILY_DEFAULTS,
    DecisionWeights,
    KernelSVM,
    SearchProblem,
    build_estimator,
    create_study,
    cv_splits,
    enqueue_defaults,
    families,
    final_params,
    leaderboard,
    reweight,
    tune_decision,
)

UNWEIGHTED_LR = {"model": "logistic_regression", "lr_C": 0.05, "lr_balanced": False}


@pytest.fixture(scope="module")
def imbalanced():
    """Breast cancer with malignant (class 0 in scikit-learn) cut to one row in ten."""
    data = load_breast_cancer()
    X, y = data.data, 1 - data.target  # 1 = malignant, the rare class here
    rng = np.random.default_rng(0)
    keep = (y == 0) | (rng.random(len(y)) < 0.1)
    X, y = StandardScaler().fit_transform(X[keep]), y[keep]
    assert 0.04 < y.mean() < 0.10
    return train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)


def one_trial(problem: SearchProblem, params: dict) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params)
    study.optimize(problem.objective(time.time() + 300), n_trials=1)
    return study.trials[0]


def test_threshold_tuning_raises_balanced_accuracy_on_an_imbalanced_set(imbalanced):
    X_tr, X_te, y_tr, y_te = imbalanced
    problem = SearchProblem(F_train=X_tr, y_train=y_tr, multi_label=False,
                            choices=["logistic_regression"])
    trial = one_trial(problem, UNWEIGHTED_LR)
    decision = trial.user_attrs["decision"]
    # An unweighted, strongly regularised model under-predicts the rare class:
    # the tuned threshold sits well under 0.5.
    assert decision["threshold"] < 0.4
    # The trial's CV score is the tuned one, above the plain arg-max's.
    plain = SearchProblem(F_train=X_tr, y_train=y_tr, multi_label=False,
                          choices=["logistic_regression"], splits=problem.splits)
    oof = np.zeros((len(y_tr), 2))
    for tr, va in plain.splits:
        oof[va] = build_estimator(UNWEIGHTED_LR, 0, len(y_tr)).fit(X_tr[tr], y_tr[tr]) \
            .predict_proba(X_tr[va])
    argmax_cv = np.mean([balanced_accuracy_score(y_tr[va], oof[va].argmax(1))
                         for _, va in plain.splits])
    assert trial.value > argmax_cv + 0.02

    # The refit model applies it: on rows no step of the search saw, it is better.
    params = final_params(trial)
    assert params["threshold"] == decision["threshold"]
    tuned = problem.make(params).fit(X_tr, y_tr)
    untuned = problem.make(trial.params).fit(X_tr, y_tr)
    assert isinstance(tuned, DecisionWeights)
    tuned_ba = balanced_accuracy_score(y_te, tuned.predict(X_te))
    untuned_ba = balanced_accuracy_score(y_te, untuned.predict(X_te))
    assert tuned_ba > untuned_ba + 0.02
    # ... and its probabilities' arg-max is the threshold rule on the raw model.
    raw = untuned.predict_proba(X_te)[:, 1]
    assert np.array_equal(tuned.predict(X_te), (raw > params["threshold"]).astype(int))
    assert np.allclose(tuned.predict_proba(X_te).sum(axis=1), 1.0)


def test_no_rule_is_kept_when_the_arg_max_is_already_best():
    y = np.array([0, 0, 0, 1, 1, 1] * 5)
    proba = np.column_stack([1 - y, y]) * 0.8 + 0.1  # perfectly separated at 0.5
    splits = cv_splits(y, False, 0, len(y))
    decision = tune_decision(y, proba, splits, 2)
    assert decision["weights"] is None and decision["threshold"] is None
    assert np.mean(decision["fold_scores"]) == 1.0


def test_multiclass_rule_divides_by_class_shares_when_that_helps():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [80, 15, 5])
    # A model that leans to the majority: the true class gets a modest bump only.
    proba = np.tile([0.6, 0.25, 0.15], (len(y), 1)) + 0.3 * np.eye(3)[y] * rng.random((100, 1))
    proba /= proba.sum(axis=1, keepdims=True)
    splits = cv_splits(y, False, 0, len(y))
    decision = tune_decision(y, proba, splits, 3)
    assert decision["weights"] is not None and decision["threshold"] is None
    plain = np.mean([balanced_accuracy_score(y[va], proba[va].argmax(1)) for _, va in splits])
    assert np.mean(decision["fold_scores"]) > plain + 0.1
    shifted = reweight(proba, np.array(decision["weights"]))
    assert np.allclose(shifted.sum(axis=1), 1.0)


def test_kernel_svm_probabilities_follow_its_decisions():
    digits = load_digits()
    X = StandardScaler().fit_transform(digits.data)
    X_tr, X_te, y_tr, y_te = train_test_split(X, digits.target, test_size=0.3,
                                              stratify=digits.target, random_state=0)
    svm = KernelSVM(C=3.0, gamma=1.0).fit(X_tr, y_tr)
    proba = svm.predict_proba(X_te)
    assert proba.shape == (len(y_te), 10) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(svm.predict(X_te), svm.classes_[proba.argmax(axis=1)])
    assert balanced_accuracy_score(y_te, svm.predict(X_te)) > 0.95
    binary = KernelSVM().fit(X_tr, y_tr == 3)
    assert binary.predict_proba(X_te).shape == (len(y_te), 2)


def _errors_in_least_sure(proba: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of the model's errors among its 10% least confident predictions (review's view)."""
    least = np.argsort(proba.max(axis=1), kind="stable")[: len(truth) // 10]
    wrong = predicted != truth
    return wrong[least].sum() / max(wrong.sum(), 1)


def test_kernel_svm_confidences_rank_its_errors():
    """The coupled one-vs-one probabilities put the SVM's mistakes among its least sure
    predictions (a softmax of SVC's one-vs-rest vote counts caught 43% here)."""
    digits = load_digits()
    X = StandardScaler().fit_transform(digits.data)
    X_tr, X_te, y_tr, y_te = train_test_split(X, digits.target, train_size=300,
                                              stratify=digits.target, random_state=0)
    svm = KernelSVM(C=3.0, gamma=1.0).fit(X_tr, y_tr)
    proba = svm.predict_proba(X_te)
    assert _errors_in_least_sure(proba, svm.predict(X_te), y_te) >= 0.6


def test_linear_svm_probabilities_do_not_saturate():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import SGDClassifier

    from automl.search import LinearSVM

    data = load_breast_cancer()
    X = StandardScaler().fit_transform(data.data)
    params = dict(loss="modified_huber", alpha=1e-4, random_state=0, max_iter=2000, tol=1e-4)
    ours = LinearSVM(**params).fit(X, data.target)
    plain = SGDClassifier(**params).fit(X, data.target)
    assert np.array_equal(ours.predict(X), plain.predict(X))  # the same decisions
    assert (plain.predict_proba(X).max(axis=1) == 1.0).mean() > 0.5  # scikit-learn's: saturated
    assert (ours.predict_proba(X).max(axis=1) == 1.0).mean() < 0.05


@pytest.fixture(scope="module")
def digits_300():
    """The digits as the image pipeline hands them to k-NN (raw, cosine), 300 labels."""
    digits = load_digits()
    return train_test_split(digits.data, digits.target, train_size=300,
                            stratify=digits.target, random_state=0)


@pytest.mark.parametrize("k", [1, 2, 7])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_probabilities_do_not_saturate_and_keep_scikit_learns_decisions(
        digits_300, k, weights):
    """The search's k-NN gave >= 90% of the digits pool confidence exactly 1.0 (every 1-NN
    prediction, and whenever the neighbours agree), so 'confidence below' reviewed none."""
    from sklearn.neighbors import KNeighborsClassifier

    from automl.search import KNeighbors

    X_tr, X_te, y_tr, y_te = digits_300
    params = {"model": "knn", "knn_k": k, "knn_weights": weights}
    ours = build_estimator(params, 0, len(y_tr)).fit(X_tr, y_tr)
    plain = KNeighborsClassifier(n_neighbors=k, weights=weights, metric="cosine").fit(X_tr, y_tr)
    assert isinstance(ours, KNeighbors)
    proba, theirs = ours.predict_proba(X_te), plain.predict_proba(X_te)
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba > 0).all()
    assert np.array_equal(ours.predict(X_te), plain.predict(X_te))  # the same decisions
    assert np.array_equal(ours.classes_[proba.argmax(axis=1)], plain.predict(X_te))
    assert (theirs.max(axis=1) >= 0.9999).mean() > 0.5  # scikit-learn's: mostly saturated
    assert (proba.max(axis=1) >= 0.9999).mean() < 0.02
    # ... and the least sure 10% now hold a good share of the errors (1-NN: 7% before).
    assert _errors_in_least_sure(proba, ours.predict(X_te), y_te) >= 0.45


def test_knn_unanimous_neighbours_far_away_are_less_sure_than_close_ones(digits_300):
    """Where all neighbours agree (scikit-learn: 1.0 for all), closeness decides, and the
    farthest tenth of them is where those predictions are wrong (5% against 0.8% measured)."""
    X_tr, X_te, y_tr, y_te = digits_300
    knn = build_estimator({"model": "knn", "knn_k": 3, "knn_weights": "distance"}, 0,
                          len(y_tr)).fit(X_tr, y_tr)
    dist, idx = knn.kneighbors(X_te)
    unanimous = (y_tr[idx] == y_tr[idx][:, :1]).all(axis=1)
    assert unanimous.mean() > 0.8
    confidence = knn.predict_proba(X_te).max(axis=1)[unanimous]
    closeness = (1.0 / np.maximum(dist[unanimous], knn.scale_ / 100)).sum(axis=1)
    assert (np.diff(confidence[np.argsort(closeness)]) >= -1e-12).all()  # the closer, surer
    assert confidence.max() < 1.0 and confidence.max() - confidence.min() > 0.03
    wrong = (knn.predict(X_te) != y_te)[unanimous][np.argsort(confidence)]
    tenth = len(wrong) // 10
    assert wrong[:tenth].mean() > 3 * wrong[tenth:].mean()


def test_knn_is_a_scikit_learn_estimator_that_loads_in_a_fresh_process(digits_300, tmp_path):
    """Saved models are unpickled by other processes (the app, workers, batch prediction)."""
    import pickle
    import subprocess
    import sys

    from sklearn.base import clone

    X_tr, X_te, y_tr, _ = digits_300
    knn = build_estimator({"model": "knn", "knn_k": 5, "knn_weights": "uniform"}, 0,
                          len(y_tr)).fit(X_tr, y_tr)
    assert clone(knn).get_params() == knn.get_params()
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(knn))
    np.save(tmp_path / "rows.npy", X_te[:50])
    script = ("import pickle, sys, numpy as np; d = sys.argv[1]; "
              "m = pickle.load(open(d + '/model.pkl', 'rb')); "
              "np.save(d + '/out.npy', m.predict_proba(np.load(d + '/rows.npy')))")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120,
                   cwd=str(tmp_path.parent), env={"PYTHONPATH": str(Path(__file__).parents[1])})
    assert np.allclose(np.load(tmp_path / "out.npy"), knn.predict_proba(X_te[:50]))


def test_folds_five_for_small_sets_three_for_large():
    small = np.array([0, 1] * 100)
    large = np.array([0, 1] * 600)
    assert len(cv_splits(small, False, 0, len(small))) == 5
    assert len(cv_splits(large, False, 0, len(large))) == 3
    assert len(cv_splits(np.array([0, 0, 1, 1, 0, 1]), False, 0, 6)) == 3  # 3 per class


def test_defaults_are_enqueued_once_for_the_problem_families_and_warm_start_drops_decisions(
        tmp_path):
    warm = {**UNWEIGHTED_LR, "decision_weights": [0.2, 0.8], "threshold": 0.2}
    study = create_study(optuna.storages.InMemoryStorage(), "s", 0, {}, [warm])
    waiting = [t.params or t.system_attrs.get("fixed_params") for t in study.trials]
    assert waiting == [DEFAULT_TRIAL, UNWEIGHTED_LR]
    choices = families("text")
    enqueue_defaults(study, choices)
    enqueue_defaults(study, choices)  # a worker joining later adds nothing
    fixed = [t.system_attrs.get("fixed_params") for t in study.trials]
    models = [p["model"] for p in fixed[2:]]
    assert models == [p["model"] for p in FAMILY_DEFAULTS if p["model"] in choices]
    assert "lightgbm" not in models and "svm_rbf" not in models


def test_a_study_runs_every_default_and_the_leaderboard_shows_a_tuned_threshold(imbalanced):
    X_tr, _, y_tr, _ = imbalanced
    choices = ["logistic_regression", "knn", "svm_rbf"]
    problem = SearchProblem(F_train=X_tr, y_train=y_tr, multi_label=False, choices=choices)
    study = create_study(optuna.storages.InMemoryStorage(), "s", 0, {}, [UNWEIGHTED_LR])
    enqueue_defaults(study, choices)
    study.optimize(problem.objective(time.time() + 300), n_trials=4)
    assert [t.params["model"] for t in study.trials] == ["logistic_regression",
                                                         "logistic_regression", "svm_rbf", "knn"]
    board = leaderboard(study)
    assert "threshold=" in board[1]["params"]


@pytest.mark.filterwarnings("ignore:Fixed parameter lgbm_leaves:UserWarning")
def test_a_candidate_that_raises_fails_its_trial_with_the_reason_and_the_search_goes_on(
        imbalanced):
    """LightGBM refuses one leaf with its own error class (not a ValueError): that trial
    fails with the reason on the leaderboard, and the next candidate still runs."""
    from automl.search import run_search

    X_tr, _, y_tr, _ = imbalanced
    choices = ["logistic_regression", "lightgbm"]
    problem = SearchProblem(F_train=X_tr, y_train=y_tr, multi_label=False, choices=choices)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({**FAMILY_DEFAULTS[0], "lgbm_leaves": 1})  # LightGBM needs two or more
    study.enqueue_trial(DEFAULT_TRIAL)
    stopped = run_search(problem, study, time.time() + 300, max_trials=2)
    assert stopped == "max trials"
    states = [t.state for t in study.trials[:2]]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    board = leaderboard(study)
    assert board[0]["state"] == "fail" and board[0]["model"] == "lightgbm"
    assert board[0]["reason"].startswith("LightGBMError: ")
    assert "num_leaves" in board[0]["reason"]
    assert board[1]["state"] == "complete" and board[1]["reason"] is None


def test_a_passed_deadline_prunes_every_trial_after_the_first_with_its_reason(imbalanced):
    """The deadline check inside a trial, without a clock race: with the deadline already
    past, the study's first trial (the default) still ends with a model and every later one
    is pruned before its first fold, saying why."""
    X_tr, _, y_tr, _ = imbalanced
    choices = ["logistic_regression", "knn", "random_forest"]
    problem = SearchProblem(F_train=X_tr, y_train=y_tr, multi_label=False, choices=choices)
    study = create_study(optuna.storages.InMemoryStorage(), "s", 0, {})
    enqueue_defaults(study, choices)
    study.optimize(problem.objective(time.time() - 1, refit_factor=1.6), n_trials=3)
    board = leaderboard(study)
    assert [r["state"] for r in board] == ["complete", "pruned", "pruned"]
    assert [r["reason"] for r in board[1:]] == ["time budget reached"] * 2
    assert all(r["fit_seconds"] is None for r in board[1:])  # no fold was started
