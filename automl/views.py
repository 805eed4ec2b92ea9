"""What the Train page draws, as plain tables: pure reshaping of a model version's metrics.

A page should read like a script (call, show); the small reshaping a chart
needs (best-so-far, sorted importances, a confusion matrix in long form)
lives here, where it can be tested without a browser.
"""

from __future__ import annotations

import pandas as pd

LEADERBOARD_COLUMNS = {
    "trial": "trial", "model": "model", "params": "key parameters", "cv_mean": "CV mean",
    "cv_std": "CV spread (std)", "fit_seconds": "fit s", "state": "state", "reason": "why",
    "worker": "worker",
}


def leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    """Every trial, best first; pruned and failed trials after the completed ones, with why."""
    frame = pd.DataFrame(rows, columns=list(LEADERBOARD_COLUMNS))
    if frame.empty:
        return frame.rename(columns=LEADERBOARD_COLUMNS)
    frame["_done"] = frame["state"].eq("complete")
    frame = frame.sort_values(["_done", "cv_mean", "trial"], ascending=[False, False, True],
                              na_position="last").drop(columns="_done")
    return frame.rename(columns=LEADERBOARD_COLUMNS).reset_index(drop=True)


def optimisation_history(rows: list[dict]) -> pd.DataFrame:
    """Optuna's optimisation history: each completed trial's CV score and the best so far."""
    done = sorted((r for r in rows if r.get("state") == "complete" and r.get("cv_mean")
                   is not None), key=lambda r: r["trial"])
    best, out = float("-inf"), []
    for r in done:
        best = max(best, float(r["cv_mean"]))
        out.append({"trial": r["trial"], "CV score": float(r["cv_mean"]), "best so far": best})
    return pd.DataFrame(out, columns=["trial", "CV score", "best so far"])


def family_summary(rows: list[dict]) -> pd.DataFrame:
    """Per model family: trials, completed, best and mean CV score."""
    frame = pd.DataFrame(rows, columns=["model", "state", "cv_mean"])
    if frame.empty:
        return pd.DataFrame(columns=["model", "trials", "completed", "best CV", "mean CV"])
    grouped = frame.groupby("model", dropna=False)
    out = pd.DataFrame({
        "trials": grouped.size(),
        "completed": grouped["state"].apply(lambda s: int((s == "complete").sum())),
        "best CV": grouped["cv_mean"].max(),
        "mean CV": grouped["cv_mean"].mean().round(4),
    }).reset_index()
    return out.sort_values("best CV", ascending=False, na_position="last").reset_index(drop=True)


def importance_frame(importances: dict) -> pd.DataFrame:
    """Optuna's parameter importances (within the best family), largest first."""
    inner = (importances or {}).get("within_best_family") or {}
    values = inner.get("importances") or {}
    return pd.DataFrame(sorted(values.items(), key=lambda kv: -kv[1]),
                        columns=["parameter", "importance"])


def confusion_frame(confusion: dict | None) -> pd.DataFrame:
    """A confusion matrix as a table: rows are the true class, columns the predicted one."""
    if not confusion:
        return pd.DataFrame()
    labels = [str(c) for c in confusion["labels"]]
    frame = pd.DataFrame(confusion["matrix"], index=labels, columns=labels)
    frame.index.name = "true \\ predicted"
    return frame
