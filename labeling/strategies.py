"""Query strategies: which pool items a person should label next, as small pure functions.

Like modAL's, each takes what a model said about the pool and returns indices
into it, most useful first. The uncertainty measures are modAL's own
(`classifier_uncertainty`, `classifier_margin`, `classifier_entropy`); the
batch strategy is modAL's ranked batch (Cardoso et al.), which on today's
scikit-learn needs the small adapter below instead of a modAL learner.
"""

from __future__ import annotations

import numpy as np
from modAL.batch import ranked_batch
from modAL.disagreement import max_std_sampling
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin

STRATEGIES = ("uncertainty", "margin", "entropy", "random", "batch")


class StoredProbabilities:
    """What modAL's measures need from a classifier: `predict_proba` over row indices."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = np.asarray(probabilities, dtype=float)

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        return self.probabilities[np.asarray(rows, dtype=int)]


class RankedBatchLearner:
    """The attributes `modAL.batch.ranked_batch` reads from a modAL learner.

    modAL's own `ActiveLearner` cannot be fitted on scikit-learn >= 1.8, but
    ranked batch only needs the labeled examples (`X_training`) and whether
    to transform them (`on_transformed`): we pass features directly.
    """

    on_transformed = False

    def __init__(self, labeled_features) -> None:
        self.X_training = labeled_features


class StoredSpread:
    """What modAL's `max_std_sampling` needs from a regressor: `predict(rows, return_std=True)`.

    The spread is a committee's (the trees of a forest), computed once by the
    background refit; modAL ranks by it without calling a model.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=float)
        self.std = np.asarray(std, dtype=float)

    def predict(self, rows: np.ndarray, return_std: bool = False):
        rows = np.asarray(rows, dtype=int).ravel()
        return (self.mean[rows], self.std[rows]) if return_std else self.mean[rows]


def regression_order(strategy: str, mean: np.ndarray, std: np.ndarray, seed: int = 0
                     ) -> np.ndarray:
    """Every pool row, most useful first, for numeric answers.

    `uncertainty`: modAL's `max_std_sampling` (the committee disagrees most
    first); `random`: a seeded permutation. Nothing is dropped.
    """
    n_rows = len(mean)
    if n_rows == 0:
        return np.array([], dtype=int)
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n_rows)
    rows = np.arange(n_rows).reshape(-1, 1)
    picked = max_std_sampling(StoredSpread(mean, std), rows, n_instances=n_rows)
    order = np.asarray(picked[0] if isinstance(picked, tuple) else picked, dtype=int)
    # modAL's argmax order among equal spreads is not stable: sort by spread, then by row.
    return order[np.lexsort((order, -np.asarray(std, dtype=float)[order]))]


def usefulness(strategy: str, probabilities: np.ndarray) -> np.ndarray:
    """A score per pool row where higher means "ask a person about this first"."""
    learner = StoredProbabilities(probabilities)
    rows = np.arange(len(learner.probabilities))
    if strategy in ("uncertainty", "batch"):
        return classifier_uncertainty(learner, rows)
    if strategy == "margin":
        return -classifier_margin(learner, rows)
    if strategy == "entropy":
        return classifier_entropy(learner, rows)
    raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")


def top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` highest scores, best first (stable for ties)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return order[: max(int(n), 0)]


def ranked_batch_indices(
    probabilities: np.ndarray,
    pool_features,
    labeled_features,
    n: int,
    *,
    candidates: int | None = None,
) -> np.ndarray:
    """modAL's ranked batch: uncertain *and* unlike what is labeled or already picked.

    To keep it fast on big pools, only the most uncertain `candidates` rows
    (default 10 x n) are ranked; the others stay reachable in later batches.
    `pool_features` is a matrix, or a function from row indices to their
    features, so a big pool need not be held in memory to rank its shortlist.
    """
    uncertainty = usefulness("uncertainty", probabilities)
    shortlist = top(uncertainty, candidates or max(10 * n, 50))
    learner = RankedBatchLearner(labeled_features)
    pool = pool_features(shortlist) if callable(pool_features) else pool_features[shortlist]
    picked, _ = ranked_batch(learner, unlabeled=pool, uncertainty_scores=uncertainty[shortlist],
                             n_instances=min(n, len(shortlist)), metric="euclidean", n_jobs=None)
    return shortlist[np.asarray(picked, dtype=int)]


def balance_by_class(
    ranked: np.ndarray, predicted: np.ndarray, labeled_counts: dict, n: int
) -> np.ndarray:
    """Re-order a ranking so under-represented predicted classes get their share of a batch.

    Each class's quota is inversely proportional to how many labels it has
    already (plus one); slots are filled from the ranking in order, and any
    left over go to the best remaining items, so nothing is dropped.
    """
    ranked = np.asarray(ranked, dtype=int)
    classes = sorted({*labeled_counts, *map(str, np.unique(predicted[ranked]))})
    weights = np.array([1.0 / (1 + labeled_counts.get(c, 0)) for c in classes])
    quotas = dict(zip(classes, np.floor(weights / weights.sum() * n).astype(int), strict=True))
    chosen: list[int] = []
    for i in ranked:
        c = str(predicted[i])
        if quotas.get(c, 0) > 0 and len(chosen) < n:
            chosen.append(int(i))
            quotas[c] -= 1
    for i in ranked:
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return np.array(chosen, dtype=int)


def diverse_seed(features, n: int, seed: int = 0) -> np.ndarray:
    """Cold start: the items nearest k-means centres, so the first labels cover the data."""
    n_rows = features.shape[0]
    k = min(int(n), n_rows)
    if k <= 0:
        return np.array([], dtype=int)
    centres = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(features).cluster_centers_
    nearest = pairwise_distances_argmin(centres, features)
    seen: list[int] = []
    for i in nearest:  # two centres can share a nearest item; keep each item once
        if int(i) not in seen:
            seen.append(int(i))
    rest = [i for i in np.random.default_rng(seed).permutation(n_rows) if i not in seen]
    return np.array((seen + rest)[:k], dtype=int)


def queue_order(
    strategy: str,
    probabilities: np.ndarray,
    predicted: np.ndarray,
    labeled_counts: dict,
    *,
    batch: int = 20,
    pool_features=None,
    labeled_features=None,
    seed: int = 0,
) -> np.ndarray:
    """A full ordering of the pool for the live queue: every row appears exactly once.

    `uncertainty`, `margin` and `entropy` rank by modAL's measure. `batch`
    puts a class-balanced ranked batch (modAL's ranked batch over the
    features, when given) of `batch` rows first, then the rest by uncertainty,
    so the next refit sees diverse labels from every predicted class.
    `random` is a seeded permutation. Nothing is dropped.
    """
    n_rows = len(probabilities)
    if n_rows == 0:
        return np.array([], dtype=int)
    if strategy == "random":
        return np.random.default_rng(seed).permutation(n_rows)
    ranked = top(usefulness(strategy, probabilities), n_rows)
    if strategy != "batch":
        return ranked
    k = min(int(batch), n_rows)
    if pool_features is not None and labeled_features is not None and labeled_features.shape[0]:
        head = ranked_batch_indices(probabilities, pool_features, labeled_features, k)
        head = np.concatenate([head, ranked[~np.isin(ranked, head)]])
    else:
        head = ranked
    first = balance_by_class(head[: max(10 * k, 50)], np.asarray(predicted).astype(str),
                             labeled_counts, k)
    return np.concatenate([first, ranked[~np.isin(ranked, first)]])
