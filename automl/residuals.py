"""Regression models on their holdout: how far off, how sure, and what they lean on.

The regression counterpart of `automl.explain`, pure and UI-free, returning
JSON-ready dicts the Train page draws:

- `holdout_scores`: R², MAE and RMSE with percentile-bootstrap 95% intervals,
  because one number from a small holdout hides how little it can tell.
- `conformal_half_width`: the split-conformal prediction interval. The
  holdout's absolute errors were never seen by the fit, so their
  ceil((n+1)c)/n quantile is a half-width that covers at least a share `c`
  of new rows from the same distribution, whatever the model (Vovk et al.;
  Lei et al. 2018). Batch prediction and the Label page show it.
- `residual_view`: predicted against actual, the points a person checks for
  a model that only predicts the mean, or that fails on large values.
- `explain_regression`: the bundle a training run stores; never raises.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from automl.explain import compute_parts
from automl.model import TrainedModel

N_BOOT = 1000
COVERAGE = 0.9
MAX_POINTS = 500  # predicted-vs-actual points stored for the chart
MAX_IMPORTANCE_ROWS = 500
MIN_IMPORTANCE_ROWS = 10
TOP = 20

SCORES = {"r2": r2_score, "mae": mean_absolute_error, "rmse": root_mean_squared_error}


def holdout_scores(y_true: np.ndarray, y_pred: np.ndarray, *, seed: int = 0,
                   n_boot: int = N_BOOT) -> dict:
    """R², MAE and RMSE on the holdout, each with a percentile bootstrap 95% interval."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    n = len(y_true)
    out: dict = {"n": n}
    if n < 2:
        out["reasons"] = [f"only {n} holdout rows: no scores with intervals"]
        return out
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    for name, fn in SCORES.items():
        value = float(fn(y_true, y_pred))
        boot = []
        for idx in draws:
            t = y_true[idx]
            if name == "r2" and np.ptp(t) == 0:
                continue  # R² of a resample with one value is undefined
            boot.append(float(fn(t, y_pred[idx])))
        low, high = (np.percentile(boot, [2.5, 97.5]) if boot else (value, value))
        out[name] = {"value": value, "low": float(min(low, value)),
                     "high": float(max(high, value)), "method": "bootstrap"}
    out["reasons"] = [] if n >= 30 else [
        f"only {n} holdout rows: the intervals are wide, trust the cross-validated score too"]
    out["how"] = (f"on {n} held-out rows never seen by the search or the fit; 95% intervals "
                  f"from {n_boot} bootstrap resamples of those rows (seed {seed})")
    return out


def conformal_half_width(abs_errors: np.ndarray, coverage: float = COVERAGE) -> float | None:
    """The split-conformal half-width for `coverage`; None when the holdout is too small.

    With n held-out errors the ceil((n+1)·coverage)-th smallest is the bound;
    if that rank exceeds n (n < coverage/(1-coverage), 9 rows for 90%), no
    finite interval has the guarantee.
    """
    errors = np.sort(np.abs(np.asarray(abs_errors, dtype=float)))
    n = len(errors)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return None
    return float(errors[rank - 1])


def residual_view(y_true: np.ndarray, y_pred: np.ndarray, *, seed: int = 0,
                  limit: int = MAX_POINTS) -> dict:
    """Predicted against actual (a random `limit` of the rows) and the residual spread."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    idx = np.arange(len(y_true))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=limit, replace=False))
    residual = y_true - y_pred
    return {
        "points": [{"actual": float(y_true[i]), "predicted": float(y_pred[i])} for i in idx],
        "residual_mean": float(residual.mean()) if len(residual) else None,
        "residual_std": float(residual.std()) if len(residual) else None,
        "shown": int(len(idx)), "n": int(len(y_true)),
    }


def column_importance(model: TrainedModel, X: pd.DataFrame, y_true: np.ndarray,  # noqa: N803
                      *, seed: int = 0, top: int = TOP) -> dict:
    """Permutation importance of each raw column through the whole pipeline, as drops in R²."""
    X = model.prepare(X).reset_index(drop=True)
    y_true = np.asarray(y_true, dtype=float)
    n = len(y_true)
    if n < MIN_IMPORTANCE_ROWS or np.ptp(y_true) == 0:
        return {"kind": "tabular", "n": n, "reasons": [
            f"only {n} holdout rows (or one value): importance needs at least "
            f"{MIN_IMPORTANCE_ROWS} varied rows, below that score drops are noise"]}
    capped = []
    if n > MAX_IMPORTANCE_ROWS:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=MAX_IMPORTANCE_ROWS,
                                                          replace=False))
        X, y_true = X.iloc[idx].reset_index(drop=True), y_true[idx]
        capped.append(f"a random {MAX_IMPORTANCE_ROWS} of the {n} holdout rows (seed {seed})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = permutation_importance(model.pipeline, X, y_true, scoring="r2", n_repeats=5,
                                        random_state=seed)
    order = np.argsort(-result.importances_mean, kind="stable")
    features = [{"feature": str(X.columns[i]), "mean": float(result.importances_mean[i]),
                 "std": float(result.importances_std[i])} for i in order[:top]]
    return {
        "kind": "tabular", "method": "permutation", "n": int(len(y_true)),
        "n_features": int(X.shape[1]), "features": features, "capped": capped, "reasons": [],
        "how": (f"sklearn permutation_importance on the whole pipeline over the raw columns: "
                f"each column shuffled across {len(y_true)} holdout rows 5 times (seed "
                f"{seed}); mean and std of the drop in R²"),
    }


def explain_regression(model: TrainedModel, X_hold: Any, y_hold: Any,  # noqa: N803
                       *, seed: int = 0) -> dict:
    """Scores with intervals, the prediction interval, residuals and importance; never raises."""
    out: dict = {"regression": True, "n": 0, "holdout_metrics": None, "interval": None,
                 "residuals": None, "importance": None, "reasons": [], "errors": [],
                 "seconds": 0.0}
    started = time.monotonic()
    try:
        y_true = np.asarray(y_hold if y_hold is not None else [], dtype=float)
        out["n"] = int(len(y_true))
        if not len(y_true):
            out["reasons"].append("no holdout rows: every label was needed for training")
            return _done(out, started)
        y_pred = model.predict_values(X_hold)
    except Exception as exc:  # noqa: BLE001 - an explanation must not cost the model
        out["errors"].append(f"holdout: the model could not predict it: {exc}")
        return _done(out, started)
    parts = {
        "holdout_metrics": lambda: holdout_scores(y_true, y_pred, seed=seed),
        "interval": lambda: interval_summary(y_true, y_pred),
        "residuals": lambda: residual_view(y_true, y_pred, seed=seed),
        "importance": lambda: column_importance(model, X_hold, y_true, seed=seed),
    }
    compute_parts(out, parts)
    return _done(out, started)


def interval_summary(y_true: np.ndarray, y_pred: np.ndarray,
                     coverage: float = COVERAGE) -> dict:
    """The conformal half-width and how it was measured (what the registry stores)."""
    errors = np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))
    half = conformal_half_width(errors, coverage)
    if half is None:
        return {"half_width": None, "coverage": coverage, "n": int(len(errors)), "reasons": [
            f"{len(errors)} holdout rows are too few for a {coverage:.0%} conformal interval"]}
    return {"half_width": half, "coverage": coverage, "n": int(len(errors)),
            "method": "split conformal", "reasons": [],
            "how": (f"the error ranked {math.ceil((len(errors) + 1) * coverage)} (smallest "
                    f"first) of {len(errors)} held-out absolute errors: prediction ± {half:.4g} "
                    f"covers at least {coverage:.0%} of new rows like these (split conformal)")}


def _done(out: dict, started: float) -> dict:
    out["seconds"] = round(time.monotonic() - started, 3)
    return out
