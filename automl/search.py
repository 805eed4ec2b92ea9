"""The search: an Optuna study over scikit-learn model families and their hyperparameters.

- The space: logistic regression, a linear SVM (SGD, modified Huber loss so it
  has probabilities), an RBF-kernel SVM, random forest, extra trees, k-NN
  (its votes smoothed by a Dirichlet prior, so that agreeing neighbours are
  not all exactly 1.0), complement naive Bayes for sparse text, LightGBM
  (scikit-learn's HistGradientBoosting when LightGBM is missing) and XGBoost
  when installed; class weighting is a parameter of every family that has it.
- The decision rule is part of each trial: the folds' out-of-fold
  probabilities are kept, and for a single-label problem the rule that
  maximises balanced accuracy on them is chosen (binary: a probability
  threshold on a logit grid, smoothed over its neighbours so one lucky row
  does not pick it; multiclass: dividing probabilities by the class shares to
  a power 0..1). The trial's value is the CV score under that rule, and the
  refit model applies it (`DecisionWeights`: probabilities re-weighted per
  class, so every arg-max consumer makes the tuned decision).
- Good defaults, one per family, are enqueued first (cheap ones first), and a
  retrain enqueues the previous promoted model's parameters (warm start), so
  a retrain after corrections starts from what worked.
- The budget is a wall-clock deadline shared by every process on the study
  (a study user attribute), checked before each fold: a fold that would end
  past it (less the time the final refit needs) is not started and the trial
  is pruned, and the search stops early enough to leave room for the final
  refit, estimated from the best trial's own fold times. Each fold reports to
  a median pruner. Small training sets (under 1,000 labels) get 5 folds,
  larger ones 3: model selection over many trials needs less noisy scores
  when the folds are small and cheap.
- The study lives in an Optuna storage: a journal file under the store by
  default; with a PostgreSQL URL, `groundwork worker` processes on any
  machine join the same study (Optuna advises against SQLite for that).
"""

from __future__ import annotations

import importlib.util
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from automl.features import is_sparse_modality
from automl.metrics import DEFAULT as METRIC
from automl.metrics import metric_value, needs_probabilities
from labeling.errors import GroundworkError

DEFAULT_TRIAL = {"model": "logistic_regression", "lr_C": 1.0, "lr_balanced": True}
REGRESSION_DEFAULT_TRIAL = {"model": "ridge", "ridge_alpha": 1.0}
LEADERBOARD_LIMIT = 1000
SMALL_DATA = 1000  # under this many training labels, 5 CV folds instead of 3
DECISION_KEYS = ("decision_weights", "threshold")  # a trial's tuned decision, not searched
NEIGHBOUR_CAP = 100.0  # a k-NN neighbour counts at most this many votes (see KNeighbors)

# One good default per family, enqueued after DEFAULT_TRIAL, cheapest first.
FAMILY_DEFAULTS = [
    {"model": "lightgbm", "lgbm_trees": 200, "lgbm_lr": 0.05, "lgbm_leaves": 15,
     "lgbm_min_child": 10, "lgbm_l2": 1e-3, "lgbm_colsample": 0.8, "lgbm_balanced": True},
    {"model": "svm_rbf", "svc_C": 3.0, "svc_gamma": 1.0, "svc_balanced": True},
    {"model": "knn", "knn_k": 7, "knn_weights": "distance"},
    {"model": "complement_nb", "nb_alpha": 0.3},
    {"model": "linear_svm", "svm_alpha": 1e-4, "svm_balanced": True},
    {"model": "xgboost", "xgb_trees": 200, "xgb_lr": 0.05, "xgb_depth": 5, "xgb_l2": 1.0,
     "xgb_colsample": 0.8, "xgb_balanced": True},
    {"model": "extra_trees", "et_trees": 200, "et_features": "sqrt", "et_leaf": 1,
     "et_balanced": True},
    {"model": "random_forest", "rf_trees": 200, "rf_features": "sqrt", "rf_leaf": 1,
     "rf_balanced": True},
    # LightGBM's histogram boosting is the same idea, faster: this one only without it.
    {"model": "hist_gradient_boosting", "hgb_lr": 0.1, "hgb_leaves": 15, "hgb_l2": 1e-3,
     "hgb_iter": 100, "hgb_balanced": True, "unless": "lightgbm"},
]

# A candidate's fit may raise anything (LightGBM has its own error class): its trial fails
# with the reason recorded and the search goes on. KeyboardInterrupt still stops it.
CAUGHT = (Exception,)

# Failed and pruned trials are recorded on the study; they are not console noise.
optuna.logging.set_verbosity(optuna.logging.ERROR)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def families(modality: str, regression: bool = False) -> list[str]:
    """Model families for a modality; gradient-boosting libraries join when installed.

    Regression (numeric table targets) gets each family's regressor; ridge
    stands in for logistic regression, and the kernel SVM, the linear SVM and
    naive Bayes have no place there (an RBF SVR's cubic fit time buys little
    that the forests and boosting do not).
    """
    if regression:
        out = ["ridge", "random_forest", "extra_trees", "knn"]
        out.append("lightgbm" if installed("lightgbm") else "hist_gradient_boosting")
        if installed("xgboost"):
            out.append("xgboost")
        return out
    if is_sparse_modality(modality):
        return ["logistic_regression", "linear_svm", "complement_nb", "knn"]
    out = ["logistic_regression", "linear_svm", "svm_rbf", "random_forest", "extra_trees",
           "knn"]
    # LightGBM is the same histogram boosting, 10-30x faster single-threaded here:
    # scikit-learn's version only stands in for it.
    out.append("lightgbm" if installed("lightgbm") else "hist_gradient_boosting")
    if installed("xgboost"):
        out.append("xgboost")
    return out


def check_max_trials(value: object) -> int | None:
    """A trial cap is a whole number of at least 1 (or none); refuse anything else up front."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GroundworkError(f"the maximum number of trials must be a whole number of at "
                              f"least 1, not {value!r}")
    return value


def choose_families(modality: str, wanted: list[str] | None, regression: bool = False
                    ) -> list[str]:
    """The families a search may use: all of the modality's, or the user's subset of them.

    Like Autopilot's algorithm selection: a team that must ship, say, a linear
    model (to explain it, or for its speed) restricts the search to it.
    """
    available = families(modality, regression)
    if not wanted:
        return available
    wanted = [w.strip() for w in wanted if w and w.strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown or not wanted:
        raise GroundworkError(
            f"model families {', '.join(repr(u) for u in unknown) or '(none)'} are not "
            f"available for {'regression' if regression else modality} projects here: choose "
            f"from {', '.join(available)}")
    return [f for f in available if f in wanted]


PREFIX = {"logistic_regression": "lr", "linear_svm": "svm", "complement_nb": "nb",
          "knn": "knn", "random_forest": "rf", "extra_trees": "et",
          "hist_gradient_boosting": "hgb", "lightgbm": "lgbm", "xgboost": "xgb",
          "svm_rbf": "svc", "ridge": "ridge"}
WEIGHTED = ("logistic_regression", "linear_svm", "random_forest", "extra_trees",
            "hist_gradient_boosting", "lightgbm", "xgboost", "svm_rbf")


def build_estimator(params: dict, seed: int, n_samples: int, regression: bool = False):
    """A scikit-learn classifier (or regressor) from a flat parameter dict (a trial's).

    A tuned decision rule in the dict (`decision_weights`, see `final_params`)
    wraps the classifier in `DecisionWeights`.
    """
    if regression:
        return _bare_regressor(params, seed, n_samples)
    est = _bare_estimator(params, seed, n_samples)
    if params.get("decision_weights"):
        return DecisionWeights(est, list(params["decision_weights"]))
    return est


def _bare_estimator(params: dict, seed: int, n_samples: int):
    family = params["model"]
    balanced = "balanced" if params.get(f"{PREFIX[family]}_balanced") else None
    if family == "logistic_regression":
        return LogisticRegression(C=params["lr_C"], class_weight=balanced, max_iter=2000)
    if family == "linear_svm":
        return LinearSVM(loss="modified_huber", alpha=params["svm_alpha"],
                         class_weight=balanced, random_state=seed, max_iter=2000, tol=1e-4)
    if family == "svm_rbf":
        return KernelSVM(C=params["svc_C"], gamma=params["svc_gamma"],
                         class_weight=balanced, random_state=seed)
    if family == "complement_nb":
        return ComplementNB(alpha=params["nb_alpha"])
    if family == "knn":
        k = max(1, min(params["knn_k"], n_samples - 1))
        return KNeighbors(n_neighbors=k, weights=params["knn_weights"], metric="cosine")
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
            reg_lambda=params["lgbm_l2"], colsample_bytree=params.get("lgbm_colsample", 1.0),
            class_weight=balanced, random_state=seed, n_jobs=1, verbose=-1)
    if family == "xgboost":
        return BalancedXGBClassifier(
            balanced=bool(balanced), n_estimators=params["xgb_trees"],
            learning_rate=params["xgb_lr"], max_depth=params["xgb_depth"],
            reg_lambda=params["xgb_l2"], colsample_bytree=params.get("xgb_colsample", 1.0),
            random_state=seed)
    raise ValueError(f"unknown model family {family!r}")


def _bare_regressor(params: dict, seed: int, n_samples: int):
    """The regressor of each family, with the same parameter names as its classifier."""
    family = params["model"]
    if family == "ridge":
        return Ridge(alpha=params["ridge_alpha"])
    if family == "knn":
        k = max(1, min(params["knn_k"], n_samples - 1))
        return KNeighborsRegressor(n_neighbors=k, weights=params["knn_weights"])
    if family in ("random_forest", "extra_trees"):
        cls = RandomForestRegressor if family == "random_forest" else ExtraTreesRegressor
        p = PREFIX[family]
        # "sqrt" and "log2" feature sampling, as for classes; regression forests often want
        # more, so 1.0 (every feature, scikit-learn's regression default) is in the space too.
        return cls(n_estimators=params[f"{p}_trees"], max_features=params[f"{p}_features"],
                   min_samples_leaf=params[f"{p}_leaf"], random_state=seed, n_jobs=1)
    if family == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(
            learning_rate=params["hgb_lr"], max_leaf_nodes=params["hgb_leaves"],
            l2_regularization=params["hgb_l2"], random_state=seed, early_stopping=False,
            max_iter=params["hgb_iter"])
    if family == "lightgbm":
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            n_estimators=params["lgbm_trees"], learning_rate=params["lgbm_lr"],
            num_leaves=params["lgbm_leaves"], min_child_samples=params["lgbm_min_child"],
            reg_lambda=params["lgbm_l2"], colsample_bytree=params.get("lgbm_colsample", 1.0),
            random_state=seed, n_jobs=1, verbose=-1)
    if family == "xgboost":
        from xgboost import XGBRegressor

        return XGBRegressor(
            n_estimators=params["xgb_trees"], learning_rate=params["xgb_lr"],
            max_depth=params["xgb_depth"], reg_lambda=params["xgb_l2"],
            colsample_bytree=params.get("xgb_colsample", 1.0), random_state=seed, n_jobs=1,
            verbosity=0, tree_method="hist")
    raise ValueError(f"model family {family!r} has no regressor")


class BalancedXGBClassifier(ClassifierMixin, BaseEstimator):
    """XGBoost with class weighting like the other families (XGBoost takes sample weights).

    It also encodes labels itself, since a cross-validation fold may lack a
    class and XGBoost wants labels 0..k-1.
    """

    def __init__(self, balanced: bool = False, n_estimators: int = 100,
                 learning_rate: float = 0.1, max_depth: int = 6, reg_lambda: float = 1.0,
                 colsample_bytree: float = 1.0, random_state: int = 0) -> None:
        self.balanced = balanced
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.reg_lambda = reg_lambda
        self.colsample_bytree = colsample_bytree
        self.random_state = random_state

    def fit(self, X, y):  # noqa: N803 - scikit-learn's name
        from sklearn.utils.class_weight import compute_sample_weight
        from xgboost import XGBClassifier

        self.classes_, encoded = np.unique(y, return_inverse=True)
        weight = compute_sample_weight("balanced", encoded) if self.balanced else None
        self.model_ = XGBClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            max_depth=self.max_depth, reg_lambda=self.reg_lambda,
            colsample_bytree=self.colsample_bytree,
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


class LinearSVM(SGDClassifier):
    """A linear SVM (SGD, modified Huber loss) whose probabilities do not saturate.

    SGDClassifier's own modified-Huber probabilities are (clip(d, -1, 1) + 1) / 2:
    exactly 0 or 1 beyond the margin, so most predictions tie at confidence 1.0
    and no confidence threshold can pick the least sure 10%. Here: a sigmoid
    of the decision value (a softmax of the one-vs-rest values for more
    classes) divided by its spread on the training rows, monotone in it, so
    predictions are unchanged. The spread matters: with little regularisation
    the decision values run to the hundreds, and a plain sigmoid of those is
    1.0 in floating point for nearly every row again.
    """

    def fit(self, X, y, *args, **kwargs):  # noqa: N803 - scikit-learn's names
        super().fit(X, y, *args, **kwargs)
        spread = float(np.std(self.decision_function(X)))
        self.scale_ = spread if np.isfinite(spread) and spread > 0 else 1.0
        return self

    def predict_proba(self, X):  # noqa: N803
        d = self.decision_function(X) / getattr(self, "scale_", 1.0)
        if d.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-2.0 * d))
            return np.column_stack([1 - p1, p1])
        z = np.exp(2.0 * (d - d.max(axis=1, keepdims=True)))
        return z / z.sum(axis=1, keepdims=True)


class KernelSVM(ClassifierMixin, BaseEstimator):
    """An RBF-kernel SVM with cheap probabilities.

    `gamma` is relative to scikit-learn's "scale" (1 / (n_features * X.var())),
    so one range fits every table. SVC's own probabilities cost an internal
    5-fold fit; here they come from the one-vs-one decision values at no extra
    cost: a sigmoid of each pair's decision (slope 4, sure at the margin),
    coupled into class probabilities (Price et al., 1995); for two classes,
    a sigmoid of the decision value. A softmax of SVC's "ovr" values (vote
    counts plus a small tie-break) ranked the model's errors badly: a 10%
    review of the least sure predictions caught 43% of its errors on digits
    (300 labels), the coupled probabilities 85% (Platt's: 87%), with the same
    accuracy and a lower log loss.
    """

    def __init__(self, C: float = 1.0, gamma: float = 1.0,  # noqa: N803 - SVC's name
                 class_weight=None, random_state: int = 0) -> None:
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y):  # noqa: N803
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            self.model_ = None
            return self
        var = X.var() if not hasattr(X, "toarray") else X.toarray().var()
        scale = 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        self.model_ = SVC(C=self.C, gamma=self.gamma * scale, class_weight=self.class_weight,
                          decision_function_shape="ovo", random_state=self.random_state,
                          cache_size=500)
        self.model_.fit(X, y)
        return self

    def predict_proba(self, X):  # noqa: N803
        if self.model_ is None:
            return np.ones((X.shape[0], 1))
        d = self.model_.decision_function(X)
        if d.ndim == 1:
            p1 = 1.0 / (1.0 + np.exp(-2.0 * d))
            return np.column_stack([1 - p1, p1])
        return pairwise_coupling(d, len(self.classes_))

    def predict(self, X):  # noqa: N803
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def pairwise_coupling(ovo: np.ndarray, k: int, slope: float = 4.0) -> np.ndarray:
    """Class probabilities from one-vs-one decision values (columns (0,1), (0,2), ..., (1,2), ...).

    Each pair's decision becomes P(i | i or j) = sigmoid(slope * d_ij); Price et
    al.'s coupling p_i = 1 / (sum_j 1 / P(i | i or j) - (k - 2)), rows normalised.
    """
    r = np.full((len(ovo), k, k), 0.5)
    i, j = np.triu_indices(k, 1)
    s = 1.0 / (1.0 + np.exp(-slope * np.asarray(ovo, dtype=float)))
    r[:, i, j] = s
    r[:, j, i] = 1.0 - s
    inverse = 1.0 / np.clip(r, 1e-12, 1.0)
    inverse[:, np.arange(k), np.arange(k)] = 0.0
    p = 1.0 / np.maximum(inverse.sum(axis=2) - (k - 2), 1e-12)
    return p / p.sum(axis=1, keepdims=True)


class KNeighbors(KNeighborsClassifier):
    """k-NN whose probabilities say how much evidence the neighbours are, not only how they vote.

    scikit-learn's probabilities are the neighbours' (distance-weighted) vote
    shares: exactly 1.0 whenever the k neighbours agree, for every 1-NN
    prediction, so on digits at 300 labels >= 90% of the pool tied at 1.0 and
    a "confidence below" rule reviewed nothing. Here they are the mean of a
    Dirichlet posterior: a symmetric prior of total weight `prior_` (a
    pseudo-vote spread evenly over the classes) plus the neighbours'
    evidence, split in scikit-learn's own vote shares,

        p_c = (e * share_c + prior_ / K) / (e + prior_),   e = sum_i s / d_i,

    where each neighbour counts s / d_i votes: one at s, the training set's
    median distance to its k-th neighbour, more when closer (at most
    `NEIGHBOUR_CAP`, so an exact duplicate of a labelled item, whose label may
    be wrong, is not certain). For distance weighting that is the Dirichlet
    posterior on scikit-learn's distance-weighted votes themselves. So
    unanimous neighbours that are far away are less sure than unanimous close
    ones. Per row the map is increasing in the shares, so the arg-max (and
    `predict`, scikit-learn's own) is unchanged.

    `prior_` is fitted, not guessed: the value on a log grid that best predicts
    each training label from its other neighbours (leave-one-out likelihood),
    and no lower than Laplace's rule of succession allows: with n labels and
    no error seen, a typical unanimous prediction may claim an error rate of
    1 / (n + 2), not less (without that floor easy data drives the prior to 0
    and the confidences back to 1.0).
    """

    def fit(self, X, y):  # noqa: N803 - scikit-learn's names
        super().fit(X, y)
        self.scale_, self.prior_ = 1.0, 1.0
        codes = np.unique(np.asarray(y), return_inverse=True)[1].ravel()
        n, k = len(codes), min(self.n_neighbors, len(codes) - 1)
        if k < 1 or len(self.classes_) < 2:
            return self
        dist, idx = self.kneighbors(n_neighbors=k)  # every training row without itself
        positive = dist[dist > 0]
        scale = float(np.median(dist[:, -1])) or (float(positive.mean()) if positive.size else 1.0)
        self.scale_ = scale
        votes = np.zeros((n, len(self.classes_)))
        np.add.at(votes, (np.repeat(np.arange(n), k), codes[idx].ravel()),
                  self._vote_weights(dist).ravel())
        right = votes[np.arange(n), codes] / votes.sum(axis=1)
        evidence = self._evidence(dist)
        typical = float(np.median(evidence))
        classes = len(self.classes_)
        floor = typical / max((n + 2) * (classes - 1) / classes - 1, 1e-12)
        grid = np.concatenate([[floor], typical * np.logspace(-4, 2, 25)])
        grid = grid[grid >= floor]
        loglik = [np.mean(np.log((evidence * right + a / classes) / (evidence + a)))
                  for a in grid]
        self.prior_ = float(grid[int(np.argmax(loglik))])
        return self

    def _vote_weights(self, dist: np.ndarray) -> np.ndarray:
        """scikit-learn's neighbour weights (a neighbour at distance 0 takes the whole vote)."""
        if self.weights == "uniform" or self.weights is None:
            return np.ones_like(dist)
        if callable(self.weights):
            return np.asarray(self.weights(dist), dtype=float)
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        exact = np.isinf(w)
        return np.where(exact.any(axis=1, keepdims=True), exact.astype(float), w)

    def _evidence(self, dist: np.ndarray) -> np.ndarray:
        """Votes' worth of the neighbours: s / d each, at most NEIGHBOUR_CAP."""
        near = np.maximum(dist, self.scale_ / NEIGHBOUR_CAP)
        return (self.scale_ / near).sum(axis=1)

    def predict_proba(self, X):  # noqa: N803
        share = super().predict_proba(X)
        prior = getattr(self, "prior_", None)
        if prior is None or share.shape[1] < 2:
            return share
        evidence = self._evidence(self.kneighbors(X)[0])[:, None]
        return (evidence * share + prior / share.shape[1]) / (evidence + prior)


class DecisionWeights(ClassifierMixin, BaseEstimator):
    """A classifier whose probabilities are re-weighted per class: the tuned decision rule.

    `weights[i]` multiplies the probability of the i-th class (the training
    labels' sorted order, which is the encoded class index) before the rows
    are normalised again. This is a prior shift: the probabilities become the
    ones the model would give under different class shares, and their arg-max
    is the decision the search tuned (for two classes, weights (t, 1 - t)
    make the threshold t on the positive class the new 0.5). Every consumer
    that takes an arg-max (predictions, review, batch prediction) then makes
    the tuned decision without knowing about it.
    """

    def __init__(self, estimator=None, weights=None) -> None:
        self.estimator = estimator
        self.weights = weights

    def fit(self, X, y):  # noqa: N803
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def _class_weights(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=float)
        if len(w) == len(self.classes_):
            return w
        try:  # a subset of the classes: weights are indexed by encoded class
            return w[np.asarray(self.classes_, dtype=int)]
        except (ValueError, IndexError):
            return np.ones(len(self.classes_))

    def predict_proba(self, X):  # noqa: N803
        return reweight(self.estimator_.predict_proba(X), self._class_weights())

    def predict(self, X):  # noqa: N803
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def reweight(proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Probabilities times per-class weights, rows normalised again (a prior shift)."""
    out = np.asarray(proba, dtype=float) * np.asarray(weights, dtype=float)
    totals = out.sum(axis=1, keepdims=True)
    return np.divide(out, totals, out=np.full_like(out, 1.0 / out.shape[1]), where=totals > 0)


def suggest(trial: optuna.Trial, choices: list[str], regression: bool = False) -> dict:
    family = trial.suggest_categorical("model", choices)
    p = PREFIX[family]
    params = {"model": family}
    if family == "ridge":
        params["ridge_alpha"] = trial.suggest_float("ridge_alpha", 1e-3, 1e3, log=True)
    elif family == "logistic_regression":
        params["lr_C"] = trial.suggest_float("lr_C", 1e-3, 1e3, log=True)
    elif family == "linear_svm":
        params["svm_alpha"] = trial.suggest_float("svm_alpha", 1e-6, 1e-1, log=True)
    elif family == "svm_rbf":
        params["svc_C"] = trial.suggest_float("svc_C", 1e-2, 1e3, log=True)
        params["svc_gamma"] = trial.suggest_float("svc_gamma", 1e-2, 1e1, log=True)
    elif family == "complement_nb":
        params["nb_alpha"] = trial.suggest_float("nb_alpha", 1e-3, 10.0, log=True)
    elif family == "knn":
        params["knn_k"] = trial.suggest_int("knn_k", 1, 30, log=True)
        params["knn_weights"] = trial.suggest_categorical("knn_weights", ["uniform", "distance"])
    elif family in ("random_forest", "extra_trees"):
        params[f"{p}_trees"] = trial.suggest_int(f"{p}_trees", 50, 300, log=True)
        params[f"{p}_features"] = trial.suggest_categorical(
            f"{p}_features", [1.0, "sqrt", "log2"] if regression else ["sqrt", "log2"])
        params[f"{p}_leaf"] = trial.suggest_int(f"{p}_leaf", 1, 8, log=True)
    elif family == "hist_gradient_boosting":
        params["hgb_lr"] = trial.suggest_float("hgb_lr", 0.02, 0.3, log=True)
        params["hgb_leaves"] = trial.suggest_int("hgb_leaves", 8, 64, log=True)
        params["hgb_l2"] = trial.suggest_float("hgb_l2", 1e-6, 1.0, log=True)
        params["hgb_iter"] = trial.suggest_int("hgb_iter", 50, 300, log=True)
    elif family == "lightgbm":
        params["lgbm_trees"] = trial.suggest_int("lgbm_trees", 50, 400, log=True)
        params["lgbm_lr"] = trial.suggest_float("lgbm_lr", 0.01, 0.3, log=True)
        params["lgbm_leaves"] = trial.suggest_int("lgbm_leaves", 4, 128, log=True)
        params["lgbm_min_child"] = trial.suggest_int("lgbm_min_child", 2, 50, log=True)
        params["lgbm_l2"] = trial.suggest_float("lgbm_l2", 1e-6, 10.0, log=True)
        params["lgbm_colsample"] = trial.suggest_float("lgbm_colsample", 0.3, 1.0)
    elif family == "xgboost":
        params["xgb_trees"] = trial.suggest_int("xgb_trees", 50, 400, log=True)
        params["xgb_lr"] = trial.suggest_float("xgb_lr", 0.01, 0.3, log=True)
        params["xgb_depth"] = trial.suggest_int("xgb_depth", 2, 10)
        params["xgb_l2"] = trial.suggest_float("xgb_l2", 1e-6, 10.0, log=True)
        params["xgb_colsample"] = trial.suggest_float("xgb_colsample", 0.3, 1.0)
    if family in WEIGHTED and not regression:
        params[f"{p}_balanced"] = trial.suggest_categorical(f"{p}_balanced", [True, False])
    return params


def score(y_true, y_pred, multi_label: bool, metric: str = METRIC, *,
          proba: np.ndarray | None = None, classes=None) -> float:
    """`metric` (balanced accuracy by default; multi-label: its mean over the labels that vary).

    See `automl.metrics.metric_value`: probability metrics read `proba`.
    """
    return metric_value(metric, y_true, y_pred, proba, multi_label=multi_label, classes=classes)


def cv_splits(y, multi_label: bool, seed: int, n: int, regression: bool = False
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds when every class has two examples, else plain folds (regression too).

    5 folds under `SMALL_DATA` labels, else 3. Under four labels there is
    nothing to cross-validate: the model is scored on its own training
    labels, and the result says so (`cv_folds` = 0).
    """
    if n < 4:
        everything = np.arange(n)
        return [(everything, everything)]
    folds = 5 if n < SMALL_DATA else 3
    if not multi_label and not regression:
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            k = int(min(folds, counts.min()))
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y))
    return list(KFold(min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))


# ---------------------------------------------------------------- the decision rule

THRESHOLD_GRID = 1.0 / (1.0 + np.exp(-np.linspace(-4.5, 4.5, 37)))  # logit steps of 0.25
PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _fold_scores(y, pred, splits, metric: str = METRIC) -> list[float]:
    return [metric_value(metric, y[va], pred[va]) for _, va in splits]


def tune_decision(y: np.ndarray, proba: np.ndarray, splits, n_classes: int,
                  metric: str = METRIC) -> dict:
    """The decision rule that maximises the mean-fold metric on out-of-fold probabilities.

    `y` holds encoded classes 0..k-1 and `proba` one column per class. Binary:
    a threshold on the positive class from a logit grid, chosen on the curve
    smoothed over neighbouring thresholds (robust to a lucky row), kept only
    if it beats the arg-max. Multiclass: probabilities divided by the class
    shares to a power in 0..1. Returns {"weights": list or None, "threshold":
    float or None, "fold_scores": [...]} for the chosen rule. A probability
    metric (ROC AUC, log loss) does not depend on a decision: no rule is tuned.
    """
    if needs_probabilities(metric):
        return {"weights": None, "threshold": None,
                "fold_scores": [metric_value(metric, y[va], proba=proba[va]) for _, va in splits]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = _fold_scores(y, proba.argmax(axis=1), splits, metric)
        best = {"weights": None, "threshold": None, "fold_scores": plain}
        if n_classes == 2:
            curve = np.array([np.mean(_fold_scores(y, (proba[:, 1] > t).astype(int), splits,
                                                   metric)) for t in THRESHOLD_GRID])
            smooth = np.convolve(np.pad(curve, 1, mode="edge"), np.ones(3) / 3, mode="valid")
            i = int(np.argmax(smooth))
            t = float(THRESHOLD_GRID[i])
            scores = _fold_scores(y, (proba[:, 1] > t).astype(int), splits, metric)
            if np.mean(scores) > np.mean(plain) + 1e-9:
                best = {"weights": [t, 1.0 - t], "threshold": round(t, 4), "fold_scores": scores}
            return best
        shares = np.bincount(y, minlength=n_classes) / len(y)
        shares = np.where(shares > 0, shares, 1.0)
        for power in PRIOR_POWERS[1:]:
            w = shares ** -power
            scores = _fold_scores(y, reweight(proba, w).argmax(axis=1), splits, metric)
            if np.mean(scores) > np.mean(best["fold_scores"]) + 1e-9:
                best = {"weights": (w / w.sum()).tolist(), "threshold": None,
                        "fold_scores": scores}
        return best


def prior_weights(y_fit: np.ndarray, n_classes: int) -> np.ndarray:
    """Weights that divide probabilities by the class shares of the fold's training part."""
    shares = np.bincount(y_fit, minlength=n_classes) / max(len(y_fit), 1)
    return 1.0 / np.where(shares > 0, shares, 1.0)


def final_params(trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's parameters plus the decision rule it tuned: what the refit model is built from."""
    params = dict(trial.params)
    decision = trial.user_attrs.get("decision") or {}
    if decision.get("weights"):
        params["decision_weights"] = [float(w) for w in decision["weights"]]
        if decision.get("threshold") is not None:
            params["threshold"] = float(decision["threshold"])
    return params


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _proba_columns(model, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """A fold model's probabilities with one column per encoded class (absent classes: 0)."""
    out = np.zeros((proba.shape[0], n_classes))
    for j, c in enumerate(np.asarray(model.classes_, dtype=int)):
        out[:, c] = proba[:, j]
    return out


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
    metric: str = METRIC  # a name from automl.data_report.METRICS for the problem type
    regression: bool = False  # numeric targets: regressors, plain folds, no decision rule

    def __post_init__(self) -> None:
        if not self.splits:
            self.splits = cv_splits(self.y_train, self.multi_label, self.seed, len(self.y_train),
                                    self.regression)

    def make(self, params: dict):
        est = build_estimator(params, self.seed, len(self.y_train), self.regression)
        return OneVsRestClassifier(est) if self.multi_label else est

    def _tunable(self) -> int:
        """The number of classes when a decision rule can be tuned (encoded 0..k-1), else 0."""
        y = np.asarray(self.y_train)
        if (self.multi_label or self.regression or y.ndim != 1 or y.dtype.kind not in "iu"
                or len(y) == 0):
            return 0
        k = int(y.max()) + 1
        if k < 2 or y.min() < 0 or self.splits[0][0] is self.splits[0][1]:
            return 0
        return k

    def objective(self, deadline: float,
                  refit_factor: float = 0.0) -> Callable[[optuna.Trial], float]:
        """The cross-validated metric, fold by fold, never starting a fold it cannot end.

        With `refit_factor`, a fold must also leave time for the final refit
        of the best trial so far (its fold time times the factor).
        """
        k = self._tunable()
        by_proba = needs_probabilities(self.metric)

        def run(trial: optuna.Trial) -> float:
            params = suggest(trial, self.choices, self.regression)
            trial.set_user_attr("worker", self.worker)
            reserve = _refit_reserve(trial.study, refit_factor) if refit_factor else 0.0
            stop_at = deadline - reserve
            # A first fold is only started if a fold of this family (or, for a family
            # not seen yet, the slowest fold so far) still ends in time.
            first = _expected_fold_seconds(trial.study, params["model"]) if refit_factor else 0.0
            try:
                return body(trial, params, stop_at, first)
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                # Optuna 5 records no reason for a failed trial: keep it where the
                # leaderboard reads it, then let the trial fail (run_search catches it).
                message = " ".join(str(exc).split()) or "no message"
                trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {message}"[:300])
                raise

        def body(trial: optuna.Trial, params: dict, stop_at: float, first: float) -> float:
            fold_scores: list[float] = []
            fold_times: list[float] = []
            oof = np.zeros((len(self.y_train), k)) if k else None
            t0 = time.time()
            for fold, (tr, va) in enumerate(self.splits):
                expected = float(np.mean(fold_times)) if fold_times else first
                # The study's first trial (the enqueued default) always finishes, so a
                # run on a tiny budget or a loaded machine still ends with a model.
                if trial.number > 0 and time.time() + expected > stop_at:
                    trial.set_user_attr("pruned_reason", "time budget reached")
                    raise optuna.TrialPruned("time budget reached")
                started = time.time()
                # One thread per trial: parallelism is more workers, and OpenMP threads
                # spinning on a busy machine cost more than they bring.
                with warnings.catch_warnings(), threadpool_limits(1):
                    warnings.simplefilter("ignore")
                    model = self.make(params).fit(self.F_train[tr], self.y_train[tr])
                    proba = plain = None
                    if k:
                        proba = _proba_columns(model, model.predict_proba(self.F_train[va]), k)
                        oof[va] = proba
                        plain = proba.argmax(axis=1)
                        shifted = reweight(proba, prior_weights(self.y_train[tr], k)).argmax(1)
                    elif by_proba:
                        proba = np.asarray(model.predict_proba(self.F_train[va]))
                    else:
                        plain = model.predict(self.F_train[va])
                fold_times.append(time.time() - started)
                y_va = self.y_train[va]
                fold_score = score(y_va, plain, self.multi_label, self.metric, proba=proba)
                if k and not by_proba:  # what a decision rule can reach: the pruner is fair
                    fold_score = max(fold_score, score(y_va, shifted, False, self.metric))
                fold_scores.append(fold_score)
                # A fold with one class has no ROC AUC: it is left out of the mean.
                trial.report(_mean(fold_scores), fold)
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", "below the median of earlier trials")
                    raise optuna.TrialPruned()
            if k:
                decision = tune_decision(self.y_train, oof, self.splits, k, self.metric)
                fold_scores = decision.pop("fold_scores")
                if decision["weights"]:
                    trial.set_user_attr("decision", decision)
            trial.set_user_attr("cv_std", float(np.nanstd(fold_scores)) if
                                not np.all(np.isnan(fold_scores)) else None)
            trial.set_user_attr("fit_seconds", round(time.time() - t0, 3))
            trial.set_user_attr("fold_seconds", round(float(np.mean(fold_times)), 3))
            trial.set_user_attr("metric", self.metric)
            value = _mean(fold_scores)
            if not math.isfinite(value):
                raise ValueError(f"{self.metric} is undefined on every fold of these labels "
                                 "(one class per fold): choose another metric")
            return value

        return run


def _expected_fold_seconds(study: optuna.Study, family: str) -> float:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    times = [(t.params.get("model"), t.user_attrs.get("fold_seconds")) for t in done]
    same = [s for m, s in times if m == family and s is not None]
    if same:
        return float(np.median(same))
    every = [s for _, s in times if s is not None]
    return float(max(every)) if every else 0.0


def _refit_reserve(study: optuna.Study, refit_factor: float) -> float:
    try:
        best = study.best_trial
    except ValueError:  # no completed trial yet
        return 0.0
    return float(best.user_attrs.get("fold_seconds", 0.0)) * refit_factor


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
                 warm_start: list[dict] = (), choices: list[str] | None = None) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    # Attributes land one write at a time: a worker that joins waits for this last one,
    # or it could read the deadline before the project it belongs to.
    study.set_user_attr("ready", True)
    seen: list[dict] = []
    defaults = [DEFAULT_TRIAL, REGRESSION_DEFAULT_TRIAL] if choices is not None else [DEFAULT_TRIAL]
    for params in [*defaults, *warm_start]:
        # A tuned decision rule is measured again by the trial, not fixed.
        params = {k: v for k, v in (params or {}).items() if k not in DECISION_KEYS}
        if choices is not None and params.get("model") not in choices:
            continue  # a family the user left out of this search
        if params and params not in seen:
            study.enqueue_trial(params, skip_if_exists=True)
            seen.append(params)
    return study


def enqueue_defaults(study: optuna.Study, choices: list[str], regression: bool = False) -> None:
    """One good default per family of this problem, once per study (the first search does it)."""
    if study.user_attrs.get("defaults_enqueued"):
        return
    study.set_user_attr("defaults_enqueued", True)
    for params in FAMILY_DEFAULTS:
        if params["model"] in choices and params.get("unless") not in choices:
            study.enqueue_trial({k: v for k, v in params.items() if k != "unless"
                                 and not (regression and k.endswith("_balanced"))},
                                skip_if_exists=True)


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
    """The finished trials, read without copies: called after every trial, by every worker."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def trials_run(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran or are running: enqueued defaults the budget never reached are not
    trials a user should count or see."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.WAITING]


def run_search(
    problem: SearchProblem,
    study: optuna.Study,
    deadline: float,
    *,
    on_trial: Callable[[optuna.Study], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    refit_factor: float = 1.6,
    max_trials: int | None = None,
) -> str:
    """Run trials until the deadline, leaving room for the refit of the best one.

    Returns why the search ended: "time budget", "max trials" or "cancelled".
    A candidate whose fit raises (any exception: a library's own error class
    as much as a ValueError) fails its trial with the reason recorded, and
    the search goes on with the next one.

    The refit fits the best model once on all training labels: about the
    time of one of its folds times the data growth (1.5x with 3 folds),
    `refit_factor` with a margin. `max_trials` also stops the study (every
    worker on it) after that many trials, whatever their state: a search
    that ends the same way on a fast or a loaded machine, like Autopilot's
    maximum number of candidates.
    """

    stopped_by: list[str] = []

    def stop(why: str) -> None:
        if not stopped_by:
            stopped_by.append(why)
        study.stop()

    def callback(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(study)
        if should_stop is not None and should_stop():
            stop("cancelled")
        # Enqueued defaults wait as trials too: count the finished ones (as Optuna's
        # MaxTrialsCallback does with these states).
        if max_trials is not None and _ended(study) >= max_trials:
            stop("max trials")
        if completed(study):
            refit = float(study.best_trial.user_attrs.get("fold_seconds", 0.0)) * refit_factor
            if time.time() + refit >= deadline:
                stop("time budget")

    remaining = deadline - time.time()
    if remaining <= 0:
        if not completed(study):  # over budget before any model: fit the default one
            study.optimize(problem.objective(deadline), n_trials=1, catch=CAUGHT)
        return "time budget"
    enqueue_defaults(study, problem.choices, problem.regression)
    if max_trials is not None and _ended(study) >= max_trials:
        return "max trials"
    study.optimize(problem.objective(deadline, refit_factor), timeout=remaining,
                   callbacks=[callback], catch=CAUGHT)
    return stopped_by[0] if stopped_by else "time budget"  # Optuna's own timeout


def _ended(study: optuna.Study) -> int:
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
             optuna.trial.TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=ended))


# ---------------------------------------------------------------- what the user sees


def _key_params(params: dict) -> str:
    return ", ".join(f"{k.split('_', 1)[1]}={_fmt(v)}" for k, v in params.items()
                     if k != "model")


def _decision_text(t: optuna.trial.FrozenTrial) -> str:
    decision = t.user_attrs.get("decision") or {}
    if decision.get("threshold") is not None:
        return f", threshold={decision['threshold']:.3g}"
    if decision.get("weights"):
        return ", decision=class-share weighted"
    return ""


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    """Why a trial failed, as "<ExceptionType>: message" (the objective records it).

    Optuna 5 no longer writes a `fail_reason` system attribute; a trial from
    an older study may still carry one.
    """
    return (trial.user_attrs.get("fail_reason") or trial.system_attrs.get("fail_reason")
            or "failed (no reason recorded)")


def leaderboard(study: optuna.Study) -> list[dict]:
    """Every trial: model, key parameters, CV mean and spread, fit time, state and why."""
    rows = []
    for t in trials_run(study)[:LEADERBOARD_LIMIT]:
        state = t.state.name.lower()
        reason = None
        if t.state == optuna.trial.TrialState.PRUNED:
            reason = t.user_attrs.get("pruned_reason", "pruned")
        elif t.state == optuna.trial.TrialState.FAIL:
            reason = fail_reason(t)
        rows.append({
            "trial": t.number,
            "model": t.params.get("model"),
            "params": _key_params(t.params) + _decision_text(t),
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
