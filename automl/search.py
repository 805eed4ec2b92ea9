"""The search: an Optuna study over scikit-learn model families and their hyperparameters.

- The space: logistic regression, a linear SVM (SGD, modified Huber loss so it
  has probabilities), random forest, extra trees, histogram gradient boosting,
  k-NN, complement naive Bayes for sparse text, and LightGBM / XGBoost when
  they are installed; class weighting is a parameter of every family that has
  it. A good default trial is enqueued first, and a retrain enqueues the
  previous promoted model's parameters (warm start), so a retrain after
  corrections starts from what worked.
- The budget is a wall-clock deadline shared by every process on the study
  (a study user attribute), checked before each fold: a fold that would end
  past it is not started and the trial is pruned, and the search stops early
  enough to leave room for the final refit, estimated from the best trial's
  own fold times. Each fold reports to a median pruner.
- The study lives in an Optuna storage: a journal file under the store by
  default; with a PostgreSQL URL, `groundwork worker` processes on any
  machine join the same study (Optuna advises against SQLite for that).
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.neighbors import KNeighborsClassifier

from automl.features import is_sparse_modality
from labeling.errors import GroundworkError

METRIC = "balanced_accuracy"
DEFAULT_TRIAL = {"model": "logistic_regression", "lr_C": 1.0, "lr_balanced": True}
LEADERBOARD_LIMIT = 1000

# Failed and pruned trials are recorded on the study; they are not console noise.
optuna.logging.set_verbosity(optuna.logging.ERROR)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def families(modality: str) -> list[str]:
    """Model families for a modality; gradient-boosting libraries join when installed."""
    if is_sparse_modality(modality):
        return ["logistic_regression", "linear_svm", "complement_nb", "knn"]
    out = ["logistic_regression", "linear_svm", "random_forest", "extra_trees",
           "hist_gradient_boosting", "knn"]
    if installed("lightgbm"):
        out.append("lightgbm")
    if installed("xgboost"):
        out.append("xgboost")
    return out


PREFIX = {"logistic_regression": "lr", "linear_svm": "svm", "complement_nb": "nb",
          "knn": "knn", "random_forest": "rf", "extra_trees": "et",
          "hist_gradient_boosting": "hgb", "lightgbm": "lgbm", "xgboost": "xgb"}
WEIGHTED = ("logistic_regression", "linear_svm", "random_forest", "extra_trees",
            "hist_gradient_boosting", "lightgbm", "xgboost")


def build_estimator(params: dict, seed: int, n_samples: int):
    """A scikit-learn classifier from a flat parameter dict (what Optuna's trials hold)."""
    family = params["model"]
    balanced = "balanced" if params.get(f"{PREFIX[family]}_balanced") else None
    if family == "logistic_regression":
        return LogisticRegression(C=params["lr_C"], class_weight=balanced, max_iter=2000)
    if family == "linear_svm":
        return SGDClassifier(loss="modified_huber", alpha=params["svm_alpha"],
                             class_weight=balanced, random_state=seed, max_iter=2000, tol=1e-4)
    if family == "complement_nb":
        return ComplementNB(alpha=params["nb_alpha"])
    if family == "knn":
        k = max(1, min(params["knn_k"], n_samples - 1))
        return KNeighborsClassifier(n_neighbors=k, weights=params["knn_weights"],
                                    metric="cosine")
    if family in ("random_forest", "extra_trees"):
        cls = RandomForestClassifier if family == "random_forest" else ExtraTreesClassifier
        p = PREFIX[family]
        return cls(n_estimators=params[f"{p}_trees"], max_features=params[f"{p}_features"],
                   min_samples_leaf=params[f"{p}_leaf"], class_weight=balanced,
                   random_state=seed, n_jobs=1)
    if family == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            learning_rate=params["hgb_lr"], max_leaf_nodes=params["hgb_leaves"],
            l2_regularization=params["hgb_l2"], class_weight=balanced, random_state=seed,
            early_stopping=False, max_iter=params["hgb_iter"])
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=params["lgbm_trees"], learning_rate=params["lgbm_lr"],
            num_leaves=params["lgbm_leaves"], min_child_samples=params["lgbm_min_child"],
            reg_lambda=params["lgbm_l2"], class_weight=balanced, random_state=seed,
            n_jobs=1, verbose=-1)
    if family == "xgboost":
        return BalancedXGBClassifier(
            balanced=bool(balanced), n_estimators=params["xgb_trees"],
            learning_rate=params["xgb_lr"], max_depth=params["xgb_depth"],
            reg_lambda=params["xgb_l2"], random_state=seed)
    raise ValueError(f"unknown model family {family!r}")


class BalancedXGBClassifier(ClassifierMixin, BaseEstimator):
    """XGBoost with class weighting like the other families (XGBoost takes sample weights).

    It also encodes labels itself, since a cross-validation fold may lack a
    class and XGBoost wants labels 0..k-1.
    """

    def __init__(self, balanced: bool = False, n_estimators: int = 100,
                 learning_rate: float = 0.1, max_depth: int = 6, reg_lambda: float = 1.0,
                 random_state: int = 0) -> None:
        self.balanced = balanced
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.reg_lambda = reg_lambda
        self.random_state = random_state

    def fit(self, X, y):  # noqa: N803 - scikit-learn's name
        from sklearn.utils.class_weight import compute_sample_weight
        from xgboost import XGBClassifier

        self.classes_, encoded = np.unique(y, return_inverse=True)
        weight = compute_sample_weight("balanced", encoded) if self.balanced else None
        self.model_ = XGBClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            max_depth=self.max_depth, reg_lambda=self.reg_lambda,
            random_state=self.random_state, n_jobs=1, verbosity=0, tree_method="hist")
        if len(self.classes_) < 2:
            self.constant_ = True
            return self
        self.constant_ = False
        self.model_.fit(X, encoded, sample_weight=weight)
        return self

    def predict_proba(self, X):  # noqa: N803
        if self.constant_:
            return np.ones((X.shape[0], 1))
        proba = self.model_.predict_proba(X)
        return proba if proba.ndim == 2 else np.column_stack([1 - proba, proba])

    def predict(self, X):  # noqa: N803
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def suggest(trial: optuna.Trial, choices: list[str]) -> dict:
    family = trial.suggest_categorical("model", choices)
    p = PREFIX[family]
    params = {"model": family}
    if family == "logistic_regression":
        params["lr_C"] = trial.suggest_float("lr_C", 1e-3, 1e3, log=True)
    elif family == "linear_svm":
        params["svm_alpha"] = trial.suggest_float("svm_alpha", 1e-6, 1e-1, log=True)
    elif family == "complement_nb":
        params["nb_alpha"] = trial.suggest_float("nb_alpha", 1e-3, 10.0, log=True)
    elif family == "knn":
        params["knn_k"] = trial.suggest_int("knn_k", 1, 30, log=True)
        params["knn_weights"] = trial.suggest_categorical("knn_weights", ["uniform", "distance"])
    elif family in ("random_forest", "extra_trees"):
        params[f"{p}_trees"] = trial.suggest_int(f"{p}_trees", 50, 300, log=True)
        params[f"{p}_features"] = trial.suggest_categorical(f"{p}_features", ["sqrt", "log2"])
        params[f"{p}_leaf"] = trial.suggest_int(f"{p}_leaf", 1, 8, log=True)
    elif family == "hist_gradient_boosting":
        params["hgb_lr"] = trial.suggest_float("hgb_lr", 0.02, 0.3, log=True)
        params["hgb_leaves"] = trial.suggest_int("hgb_leaves", 8, 64, log=True)
        params["hgb_l2"] = trial.suggest_float("hgb_l2", 1e-6, 1.0, log=True)
        params["hgb_iter"] = trial.suggest_int("hgb_iter", 50, 300, log=True)
    elif family == "lightgbm":
        params["lgbm_trees"] = trial.suggest_int("lgbm_trees", 50, 400, log=True)
        params["lgbm_lr"] = trial.suggest_float("lgbm_lr", 0.01, 0.3, log=True)
        params["lgbm_leaves"] = trial.suggest_int("lgbm_leaves", 8, 128, log=True)
        params["lgbm_min_child"] = trial.suggest_int("lgbm_min_child", 2, 50, log=True)
        params["lgbm_l2"] = trial.suggest_float("lgbm_l2", 1e-6, 10.0, log=True)
    elif family == "xgboost":
        params["xgb_trees"] = trial.suggest_int("xgb_trees", 50, 400, log=True)
        params["xgb_lr"] = trial.suggest_float("xgb_lr", 0.01, 0.3, log=True)
        params["xgb_depth"] = trial.suggest_int("xgb_depth", 2, 10)
        params["xgb_l2"] = trial.suggest_float("xgb_l2", 1e-6, 10.0, log=True)
    if family in WEIGHTED:
        params[f"{p}_balanced"] = trial.suggest_categorical(f"{p}_balanced", [True, False])
    return params


def score(y_true, y_pred, multi_label: bool) -> float:
    """Balanced accuracy; for multi-label, its mean over the labels that vary in y_true."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not multi_label:
            return float(balanced_accuracy_score(y_true, y_pred))
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        scores = [balanced_accuracy_score(y_true[:, j], y_pred[:, j])
                  for j in range(y_true.shape[1]) if len(np.unique(y_true[:, j])) > 1]
        return float(np.mean(scores)) if scores else float((y_true == y_pred).mean())


def cv_splits(y, multi_label: bool, seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds when every class has two examples, else plain folds.

    Under four labels there is nothing to cross-validate: the model is scored
    on its own training labels, and the result says so (`cv_folds` = 0).
    """
    if n < 4:
        everything = np.arange(n)
        return [(everything, everything)]
    if not multi_label:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            k = int(min(3, counts.min()))
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))
    return list(KFold(3, shuffle=True, random_state=seed).split(np.zeros(n)))


@dataclass
class SearchProblem:
    """Everything a trial needs, rebuilt identically by every worker on the study."""

    F_train: object  # the training features (dense or sparse matrix)
    y_train: np.ndarray
    multi_label: bool
    choices: list[str]
    seed: int = 0
    worker: str = "main"
    splits: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.splits:
            self.splits = cv_splits(self.y_train, self.multi_label, self.seed, len(self.y_train))

    def make(self, params: dict):
        est = build_estimator(params, self.seed, len(self.y_train))
        return OneVsRestClassifier(est) if self.multi_label else est

    def objective(self, deadline: float) -> Callable[[optuna.Trial], float]:
        """Cross-validated balanced accuracy, fold by fold, never starting a fold it cannot end."""

        def run(trial: optuna.Trial) -> float:
            params = suggest(trial, self.choices)
            trial.set_user_attr("worker", self.worker)
            fold_scores: list[float] = []
            fold_times: list[float] = []
            t0 = time.time()
            for fold, (tr, va) in enumerate(self.splits):
                expected = float(np.mean(fold_times)) if fold_times else 0.0
                # The study's first trial (the enqueued default) always finishes, so a
                # run on a tiny budget or a loaded machine still ends with a model.
                if trial.number > 0 and time.time() + expected > deadline and (
                        fold_times or time.time() > deadline):
                    trial.set_user_attr("pruned_reason", "time budget reached")
                    raise optuna.TrialPruned("time budget reached")
                started = time.time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = self.make(params).fit(self.F_train[tr], self.y_train[tr])
                    predicted = model.predict(self.F_train[va])
                fold_times.append(time.time() - started)
                fold_scores.append(score(self.y_train[va], predicted, self.multi_label))
                trial.report(float(np.mean(fold_scores)), fold)
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", "below the median of earlier trials")
                    raise optuna.TrialPruned()
            trial.set_user_attr("cv_std", float(np.std(fold_scores)))
            trial.set_user_attr("fit_seconds", round(time.time() - t0, 3))
            trial.set_user_attr("fold_seconds", round(float(np.mean(fold_times)), 3))
            return float(np.mean(fold_scores))

        return run


# ---------------------------------------------------------------- storage and studies


def storage_for(data_dir: Path, project_id: int, url: str | None = None):
    """The project's study storage: a journal file under the store, or a database URL."""
    if url:
        if url.startswith("sqlite"):
            raise GroundworkError(
                "Optuna advises against SQLite storage for parallel workers: use a PostgreSQL "
                "URL (postgresql://user:password@host/db), or no --storage for one process")
        # Processes starting together race to create Optuna's tables: retry briefly.
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # Heartbeats let a crashed worker's running trial be marked failed.
                    return optuna.storages.RDBStorage(url, heartbeat_interval=30,
                                                      grace_period=120)
            except Exception as exc:  # noqa: BLE001 - driver and connection errors vary
                message = " ".join(str(exc).split())
                if "already exists" not in message or attempt == 4:
                    raise GroundworkError(f"cannot open the study storage {url!r}: "
                                          f"{message[:300]}") from None
                time.sleep(0.5 * (attempt + 1))
    folder = Path(data_dir) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(folder / f"{project_id}.log"))
    return optuna.storages.JournalStorage(backend)


def create_study(storage, name: str, seed: int, attrs: dict,
                 warm_start: list[dict] = ()) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    seen: list[dict] = []
    for params in [DEFAULT_TRIAL, *warm_start]:
        if params and params not in seen:
            study.enqueue_trial(params, skip_if_exists=True)
            seen.append(params)
    return study


def load_study(storage, name: str, seed: int = 0) -> optuna.Study:
    try:
        return optuna.load_study(
            study_name=name, storage=storage,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    except KeyError:
        raise GroundworkError(f"no study named {name!r} in that storage: start the training "
                              "run first (`groundwork train P --storage URL`), then the "
                              "workers with the study name it prints") from None


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def run_search(
    problem: SearchProblem,
    study: optuna.Study,
    deadline: float,
    *,
    on_trial: Callable[[optuna.Study], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    refit_factor: float = 1.6,
) -> None:
    """Run trials until the deadline, leaving room for the refit of the best one.

    The refit fits the best model once on all training labels: about the
    time of one of its folds times the data growth (1.5x with 3 folds),
    `refit_factor` with a margin.
    """

    def callback(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(study)
        if should_stop is not None and should_stop():
            study.stop()
        if completed(study):
            refit = float(study.best_trial.user_attrs.get("fold_seconds", 0.0)) * refit_factor
            if time.time() + refit >= deadline:
                study.stop()

    remaining = deadline - time.time()
    if remaining <= 0:
        if not completed(study):  # over budget before any model: fit the default one
            study.optimize(problem.objective(deadline), n_trials=1,
                           catch=(ValueError, MemoryError))
        return
    study.optimize(problem.objective(deadline), timeout=remaining, callbacks=[callback],
                   catch=(ValueError, MemoryError))


# ---------------------------------------------------------------- what the user sees


def _key_params(params: dict) -> str:
    return ", ".join(f"{k.split('_', 1)[1]}={_fmt(v)}" for k, v in params.items()
                     if k != "model")


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def leaderboard(study: optuna.Study) -> list[dict]:
    """Every trial: model, key parameters, CV mean and spread, fit time, state and why."""
    rows = []
    for t in study.trials[:LEADERBOARD_LIMIT]:
        state = t.state.name.lower()
        reason = None
        if t.state == optuna.trial.TrialState.PRUNED:
            reason = t.user_attrs.get("pruned_reason", "pruned")
        elif t.state == optuna.trial.TrialState.FAIL:
            reason = t.system_attrs.get("fail_reason") or "failed"
        rows.append({
            "trial": t.number,
            "model": t.params.get("model"),
            "params": _key_params(t.params),
            "cv_mean": None if t.value is None else round(float(t.value), 4),
            "cv_std": t.user_attrs.get("cv_std"),
            "fit_seconds": t.user_attrs.get("fit_seconds"),
            "state": state,
            "reason": " ".join(str(reason).split())[:200] if reason else None,
            "worker": t.user_attrs.get("worker", "main"),
        })
    return rows


def param_importances(study: optuna.Study) -> dict:
    """Optuna's fANOVA importances: of the model family overall, and within the best family.

    Parameters differ between families, so importances within a family are
    computed on that family's completed trials only (at least five needed).
    """
    out: dict = {}
    done = completed(study)
    families_seen = {t.params.get("model") for t in done}
    if len(done) >= 5 and len(families_seen) > 1:
        try:
            out["overall"] = {k: round(v, 4) for k, v in
                              optuna.importance.get_param_importances(study,
                                                                      params=["model"]).items()}
        except (RuntimeError, ValueError):
            pass
    if done:
        best = study.best_trial.params.get("model")
        same = [t for t in done if t.params.get("model") == best]
        names = [k for k in study.best_trial.params if k != "model"]
        if len(same) >= 5 and names:
            sub = optuna.create_study(direction="maximize")
            sub.add_trials(same)
            try:
                out["within_best_family"] = {
                    "model": best,
                    "importances": {k: round(v, 4) for k, v in
                                    optuna.importance.get_param_importances(sub).items()},
                }
            except (RuntimeError, ValueError):
                pass
    return out
