"""Simulated labeling: replay a project's labeling with its hidden gold as the annotator.

Lets a team see, before paying annotators, how many labels a query strategy
needs on *their* data compared with random sampling. Nothing is written to the
store. The model is deliberately cheap (logistic regression on the project's
features, as the background refit uses) so a whole curve takes seconds.

How it is measured: the gold items are split at random (by `seed`) into a
test part (`test_share`) that is never queried, and a pool. Labeling starts
from a diverse seed batch (k-means centres; random for the random strategy),
then each round fits the model on the labels so far, records its accuracy on
the test part, and queries the next batch with the strategy.
"""

from __future__ import annotations

import warnings

import numpy as np
import sqlite_utils
from sklearn.linear_model import LogisticRegression

from automl.features import make_features
from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items, iter_items
from labeling.projects import Project, require_classes
from labeling.strategies import (
    STRATEGIES,
    balance_by_class,
    diverse_seed,
    ranked_batch_indices,
    top,
    usefulness,
)

MIN_GOLD = 30


def _subset(X, idx):
    return X.iloc[idx].reset_index(drop=True) if hasattr(X, "iloc") else [X[i] for i in idx]


def stop_hint(curve: list[dict], gain: float = 0.01, patience: int = 3) -> int | None:
    """Labels after which the next `patience` rounds never beat the best so far by `gain`."""
    best = -1.0
    for i, point in enumerate(curve[: len(curve) - patience]):
        best = max(best, point["accuracy"])
        ahead = max(p["accuracy"] for p in curve[i + 1 : i + 1 + patience])
        if ahead - best < gain:
            return int(point["labels"])
    return None


def simulate(
    db: sqlite_utils.Database,
    project: Project,
    strategy: str = "margin",
    budget: int = 200,
    batch: int = 10,
    seed: int = 0,
    test_share: float = 0.3,
    oracle: str = "gold",
) -> dict:
    """The learning curve of `strategy` on the project's gold labels: see the module doc.

    `oracle="labels"` replays the project's own curated labels instead, for
    projects without gold: the pool is then only what people labeled, which
    the live strategy chose, so the comparison is indicative, not unbiased.
    """
    require_classes(project, "simulation")
    if strategy not in STRATEGIES:
        raise GroundworkError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if project.multi_label:
        raise GroundworkError("simulation supports single-label projects for now")
    for name, value, low in (("budget", budget, 2), ("batch", batch, 1)):
        if not isinstance(value, int) or value < low:
            raise GroundworkError(f"--{name} must be a whole number of at least {low}")
    if oracle == "gold":
        items = [i for i in iter_items(db, project) if i.gold]
        answers = [i.gold[0] for i in items]
    elif oracle == "labels":
        curated = current_labels(db, project, curated_only=True)
        by_id = dict(zip(curated.get("item_id", []), curated.get("labels", []), strict=True))
        items = get_items(db, project, [int(i) for i in by_id])
        answers = [by_id[i.id][0] for i in items]
    else:
        raise GroundworkError(f"unknown oracle {oracle!r}: use gold or labels")
    if len(items) < MIN_GOLD:
        what = ("hidden gold labels" if oracle == "gold" else "curated labels")
        fix = ("import with --gold-column or --folders-as gold, or replay your own labels"
               if oracle == "gold" else "label more items first")
        raise GroundworkError(
            f"simulation needs {what} on at least {MIN_GOLD} items; project "
            f"{project.name!r} has {len(items)} ({fix})"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    n_test = max(int(round(test_share * len(items))), 10)
    test_idx, pool_idx = order[:n_test], order[n_test:]
    X = model_input(db, project, items)
    y = np.array(answers)
    X_pool, X_test = _subset(X, pool_idx), _subset(X, test_idx)
    y_pool, y_test = y[pool_idx], y[test_idx]
    features = make_features(project.modality, X_pool).fit(X_pool)
    F_pool, F_test = features.transform(X_pool), features.transform(X_test)
    budget = min(budget, len(pool_idx))

    first = min(batch, budget)
    if strategy == "random":
        labeled = list(rng.permutation(len(pool_idx))[:first])
    else:
        labeled = list(diverse_seed(F_pool, first, seed))
    curve: list[dict] = []
    while True:
        # A model needs two classes; until then, add random items (counted as labels).
        while len(set(y_pool[labeled])) < 2 and len(labeled) < len(pool_idx):
            rest = np.setdiff1d(np.arange(len(pool_idx)), labeled)
            labeled.append(int(rng.choice(rest)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(max_iter=1000).fit(F_pool[labeled], y_pool[labeled])
            accuracy = float((model.predict(F_test) == y_test).mean())
        curve.append({"labels": len(labeled), "accuracy": round(accuracy, 4)})
        remaining = np.setdiff1d(np.arange(len(pool_idx)), labeled)
        k = min(batch, budget - len(labeled), len(remaining))
        if k <= 0:
            break
        if strategy == "random":
            picks = rng.choice(remaining, size=k, replace=False)
        else:
            proba = model.predict_proba(F_pool[remaining])
            if strategy == "batch":
                ranked = ranked_batch_indices(proba, F_pool[remaining], F_pool[labeled], k)
                predicted = model.classes_[proba.argmax(axis=1)].astype(str)
                counts = {str(c): int(n) for c, n in
                          zip(*np.unique(y_pool[labeled], return_counts=True), strict=True)}
                picks = remaining[balance_by_class(ranked, predicted, counts, k)]
            else:
                picks = remaining[top(usefulness(strategy, proba), k)]
        labeled.extend(int(i) for i in picks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        everything = LogisticRegression(max_iter=1000).fit(F_pool, y_pool)
        full_accuracy = float((everything.predict(F_test) == y_test).mean())
    return {
        "strategy": strategy,
        "oracle": oracle,
        "full_accuracy": round(full_accuracy, 4),
        "budget": budget,
        "batch": batch,
        "seed": seed,
        "model": "logistic_regression",
        "pool_size": int(len(pool_idx)),
        "test_size": int(n_test),
        "curve": curve,
        "stop_hint": stop_hint(curve),
        "how_measured": (
            f"accuracy on {n_test} {'gold' if oracle == 'gold' else 'labeled'} items held out "
            f"at random (seed {seed}) and never queried; the "
            f"{'gold' if oracle == 'gold' else 'curated labels'} answer the queries; "
            f"full_accuracy is the same model on all {len(pool_idx)} pool answers"
        ),
    }
