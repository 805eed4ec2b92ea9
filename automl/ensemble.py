"""Optional ensembling: soft voting over the best trials of different model families.

Averaging the probabilities of models that err differently often beats the
best single one, but not always, and it costs a fit per member. So the
members are the best completed trial of each of the top families (distinct
families err more differently than two settings of one), the ensemble is
only built when the time left allows it, and it is kept only if it wins on
the holdout; otherwise the best single model stands.
"""

from __future__ import annotations

import optuna
from sklearn.ensemble import VotingClassifier, VotingRegressor

DEFAULT_MEMBERS = 3
REFIT_MARGIN = 1.6  # a member's refit on all training labels vs. one of its folds


def candidates(study: optuna.Study, k: int = DEFAULT_MEMBERS) -> list[optuna.trial.FrozenTrial]:
    """The best completed trial of each family, best families first, at most `k`."""
    done = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: -float(t.value))
    chosen: list[optuna.trial.FrozenTrial] = []
    families: set[str] = set()
    for trial in done:
        family = trial.params.get("model")
        if family not in families:
            chosen.append(trial)
            families.add(family)
        if len(chosen) == k:
            break
    return chosen


def refit_seconds(members: list[optuna.trial.FrozenTrial]) -> float:
    """Expected time to fit every member once more on all training labels."""
    return sum(float(t.user_attrs.get("fold_seconds", 0.0)) for t in members) * REFIT_MARGIN


def voting(make, members: list[optuna.trial.FrozenTrial], params_of,
           regression: bool = False) -> VotingClassifier | VotingRegressor:
    """Fresh estimators built like the members' trials, voting: soft for classes (averaged
    probabilities), the mean prediction for numbers."""
    estimators = [(f"{t.params['model']}_{t.number}", make(params_of(t))) for t in members]
    if regression:
        return VotingRegressor(estimators)
    return VotingClassifier(estimators, voting="soft")


def describe(members: list[optuna.trial.FrozenTrial]) -> str:
    return "ensemble(" + " + ".join(t.params["model"] for t in members) + ")"
