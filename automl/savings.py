"""The savings dashboard's numbers: does active learning pay on this project's data?

Two sources, both measured, never assumed:

- the live curve: each background refit's accuracy on the random validation
  items against the number of labels so far (`automl.refit.learning_curve`);
- a side-by-side replay (`automl.simulate`) of the project's strategy and of
  random sampling on the same split and seed, answered by gold labels when
  the project has them, else by its own curated labels.

From the replay: labels each arm needs to reach 95% of the accuracy the same
model gets from every pool answer (the benchmark's definition), the labels the
strategy saves, and what that is in hours at the team's measured pace.
"""

from __future__ import annotations

import json

import sqlite_utils

from automl.simulate import MIN_GOLD, simulate, stop_hint
from labeling.annotations import labels_per_hour
from labeling.projects import Project, project_counts
from labeling.store import get_setting, set_setting, utcnow

GOAL_SHARE = 0.95


def labels_to_reach(curve: list[dict], goal: float) -> int | None:
    """The first number of labels at which the curve reaches `goal`, or None."""
    return next((int(p["labels"]) for p in curve if p["accuracy"] >= goal), None)


def summarise(strategy_run: dict, random_run: dict, pace_per_hour: float | None) -> dict:
    """Labels to the goal per arm, the ratio, labels and hours saved (None when unknown)."""
    full = max(strategy_run["full_accuracy"], random_run["full_accuracy"])
    goal = round(GOAL_SHARE * full, 4)
    ours = labels_to_reach(strategy_run["curve"], goal)
    theirs = labels_to_reach(random_run["curve"], goal)
    saved = theirs - ours if ours is not None and theirs is not None else None
    return {
        "goal": goal,
        "full_accuracy": full,
        "labels_strategy": ours,
        "labels_random": theirs,
        "ratio": round(ours / theirs, 3) if ours is not None and theirs else None,
        "labels_saved": saved,
        "hours_saved": (round(saved / pace_per_hour, 2)
                        if saved is not None and pace_per_hour else None),
        "pace_per_hour": pace_per_hour,
        "stop_hint": stop_hint(strategy_run["curve"]),
    }


def team_pace(db: sqlite_utils.Database, project: Project) -> float | None:
    """Labels per hour over every person's timed answers, or None before any."""
    pace = labels_per_hour(db, project)
    if pace.empty or not pace["ms"].fillna(0).sum():
        return None
    return round(float(pace["answers"].sum() * 3_600_000 / pace["ms"].sum()), 1)


def default_oracle(db: sqlite_utils.Database, project: Project) -> str:
    return "gold" if project_counts(db, project)["with_gold"] >= MIN_GOLD else "labels"


def compare_with_random(
    db: sqlite_utils.Database,
    project: Project,
    *,
    strategy: str | None = None,
    budget: int = 300,
    batch: int = 10,
    seed: int = 0,
    oracle: str | None = None,
) -> dict:
    """Replay the strategy and random sampling side by side; keep the result for the page."""
    strategy = strategy or project.strategy
    if strategy == "random":
        strategy = "margin"  # comparing random with itself says nothing
    oracle = oracle or default_oracle(db, project)
    ours = simulate(db, project, strategy=strategy, budget=budget, batch=batch, seed=seed,
                    oracle=oracle)
    theirs = simulate(db, project, strategy="random", budget=budget, batch=batch, seed=seed,
                      oracle=oracle)
    result = {
        "strategy": strategy, "oracle": oracle, "budget": ours["budget"], "batch": batch,
        "seed": seed, "curve": ours["curve"], "random_curve": theirs["curve"],
        "how_measured": ours["how_measured"], "created_at": utcnow(),
        "summary": summarise(ours, theirs, team_pace(db, project)),
    }
    set_setting(db, f"savings:{project.id}", json.dumps(result))
    return result


def last_comparison(db: sqlite_utils.Database, project: Project) -> dict | None:
    saved = get_setting(db, f"savings:{project.id}")
    return json.loads(saved) if saved else None
