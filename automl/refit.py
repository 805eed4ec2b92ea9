"""The quick queue model: refit in the background every N new labels, then re-score the pool.

Active learning only pays if the model that picks the next item has seen
the latest labels, but nobody labeling should wait for a training run. So
after every `project.refit_every` curated labels a job process fits a cheap
model (logistic regression on the project's features, the same model the
simulation uses), scores every open item with the project's query strategy
and stores the order in `queue_scores`; the queue reads it with an indexed
query and never calls a model.

Each refit also measures the quick model on the held-out human labels (the
random validation items) and appends a point to the project's learning
curve, which the savings dashboard draws.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from itertools import chain
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sqlite_utils
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import MultiLabelBinarizer, normalize

from automl.features import make_features
from automl.training import training_set
from labeling.errors import GroundworkError
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project, get_project
from labeling.queue import store_queue_scores, uncertainty_scores
from labeling.store import utcnow
from labeling.strategies import queue_order

QUICK_MODEL = "logistic regression (quick refit)"
CHUNK = 5000
FEATURE_SAMPLE = 2000


class _PoolRow(NamedTuple):
    """What `model_input` reads from an item (its content or media file)."""

    id: int
    content: str | None
    media_path: str | None


def _id_span(db: sqlite_utils.Database, project: Project) -> tuple[int, int]:
    lo, hi = db.execute("SELECT min(id), max(id) FROM items WHERE project_id = ?",
                        [project.id]).fetchone()
    return (0, -1) if lo is None else (int(lo), int(hi))


# A project's items are stored in id order (one import, one transaction), so the pool is
# read in one pass over the project's id range (`+project_id` keeps SQLite on that range)
# rather than through an index and one row lookup per item.
_IN_SPAN = "id BETWEEN ? AND ? AND +project_id = ?"


def open_item_ids(db: sqlite_utils.Database, project: Project) -> list[int]:
    """Items the queue can still offer: fewer answers than wanted and no machine label."""
    return [r[0] for r in db.execute(
        f"SELECT id FROM items WHERE {_IN_SPAN} AND n_labels < ? AND n_auto = 0 ORDER BY id",
        [*_id_span(db, project), project.id, project.annotations_per_item])]


def _pool_chunks(db: sqlite_utils.Database, project: Project, pool_ids: list[int], size: int):
    """The pool items' model input in chunks of `size`, in `pool_ids` order (ascending ids):
    `(rows, X)` per chunk."""
    wanted = set(pool_ids)
    lo, hi = (pool_ids[0], pool_ids[-1]) if pool_ids else (0, -1)
    cursor = db.execute(f"SELECT id, content, media_path FROM items WHERE {_IN_SPAN} "
                        "ORDER BY id", [lo, hi, project.id])
    chunk: list[_PoolRow] = []
    for row in cursor:
        if row[0] in wanted:
            chunk.append(_PoolRow(*row))
            if len(chunk) == size:
                yield len(chunk), model_input(db, project, chunk)
                chunk = []
    if chunk:
        yield len(chunk), model_input(db, project, chunk)


def labeled_count(db: sqlite_utils.Database, project: Project) -> int:
    return int(db.execute("SELECT count(*) FROM items WHERE project_id = ? AND n_labels > 0",
                          [project.id]).fetchone()[0])


def _rows(X, idx):
    return X.iloc[idx].reset_index(drop=True) if hasattr(X, "iloc") else [X[i] for i in idx]


def _concat(a, b):
    if hasattr(a, "iloc"):
        return pd.concat([a, b], ignore_index=True)
    return list(a) + list(b)


def _class_probabilities(model, features, project: Project, classes) -> np.ndarray:
    """Probabilities in the project's class order (a class not seen in training gets 0)."""
    proba = model.predict_proba(features)
    out = np.zeros((proba.shape[0], len(project.classes)))
    for j, c in enumerate(classes):
        if c in project.classes:
            out[:, project.classes.index(c)] = proba[:, j]
    return out


def _word_counts(vectorizer: TfidfVectorizer, lowered: list[str]) -> sp.csr_matrix:
    """A word (1, 1) or (1, 2)-gram vectorizer's counts, looked up once per distinct token."""
    tokenize = vectorizer.build_tokenizer()
    tokens = [tokenize(text) for text in lowered]
    rows = np.repeat(np.arange(len(lowered)), [len(t) for t in tokens])
    codes, uniques = pd.factorize(pd.Series(list(chain.from_iterable(tokens)), dtype=object))
    vocabulary = vectorizer.vocabulary_
    column = np.array([vocabulary.get(u, -1) for u in uniques], dtype=np.int64)
    found_rows, found_cols = [rows], [column[codes]]
    if vectorizer.ngram_range[1] == 2 and len(codes) > 1:
        # A bigram is two consecutive tokens of one text: code the pair, look it up.
        position = {u: i for i, u in enumerate(uniques)}
        known = [(position[a] * len(uniques) + position[b], col) for term, col in vocabulary.items()
                 if " " in term for a, b in [term.split(" ", 1)] if a in position and b in position]
        pair_codes = np.array(sorted(known), dtype=np.int64).reshape(-1, 2)
        same = rows[1:] == rows[:-1]
        pairs = codes[:-1][same].astype(np.int64) * len(uniques) + codes[1:][same]
        at = np.minimum(np.searchsorted(pair_codes[:, 0], pairs), max(len(pair_codes) - 1, 0))
        hit = pair_codes[at, 0] == pairs if len(pair_codes) else np.zeros(len(pairs), bool)
        found_rows.append(rows[1:][same][hit])
        found_cols.append(pair_codes[at[hit], 1])
    rows, cols = np.concatenate(found_rows), np.concatenate(found_cols)
    keep = cols >= 0
    return sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                         shape=(len(lowered), len(vocabulary)))


def _char_wb_counts(vectorizer: TfidfVectorizer, lowered: list[str]) -> sp.csr_matrix:
    """A char_wb vectorizer's counts: texts x words times words x n-grams.

    `char_wb` n-grams never cross a word, so a text's counts are the sum of its
    words' counts: each distinct word is analysed once, and one sparse product
    adds them up.
    """
    analyze = vectorizer.build_analyzer()
    words = [text.split() for text in lowered]
    rows = np.repeat(np.arange(len(lowered)), [len(w) for w in words])
    codes, uniques = pd.factorize(pd.Series(list(chain.from_iterable(words)), dtype=object))
    vocabulary = vectorizer.vocabulary_
    word_rows: list[int] = []
    word_cols: list[int] = []
    for i, word in enumerate(uniques):
        for gram in analyze(word):
            col = vocabulary.get(gram)
            if col is not None:
                word_rows.append(i)
                word_cols.append(col)
    per_word = sp.csr_matrix((np.ones(len(word_cols)), (word_rows, word_cols)),
                             shape=(len(uniques), len(vocabulary)))
    per_text = sp.csr_matrix((np.ones(len(codes)), (rows, codes)),
                             shape=(len(lowered), len(uniques)))
    return per_text @ per_word  # a product sums the words' counts: no duplicate entries


def _tfidf(vectorizer: TfidfVectorizer, counts: sp.csr_matrix) -> sp.csr_matrix:
    """What `TfidfVectorizer.transform` does to its counts (sublinear tf, idf, l2 norm)."""
    if vectorizer.sublinear_tf:
        np.log(counts.data, counts.data)
        counts.data += 1
    if vectorizer.use_idf:
        counts.data *= vectorizer.idf_[counts.indices]
    return normalize(counts, norm=vectorizer.norm, copy=False) if vectorizer.norm else counts


def _plain_text_vectorizer(step) -> bool:
    return (isinstance(step, TfidfVectorizer) and step.input == "content"
            and step.lowercase and step.preprocessor is None and step.tokenizer is None
            and step.strip_accents is None and step.stop_words is None and not step.binary
            and step.dtype == np.float64 and not callable(step.analyzer)
            and (step.analyzer == "char_wb"
                 or (step.analyzer == "word" and step.ngram_range in ((1, 1), (1, 2))
                     and step.token_pattern == r"(?u)\b\w\w+\b")))


def _transform(features, X):
    """`features.transform(X)`, faster for the text features of `automl.features`.

    scikit-learn's text vectorizers run Python code for every n-gram of every
    text (about 0.4 ms per email here, 40 s for 100,000), which is most of a
    refit. For the word and char_wb TF-IDF union the same matrix is built per
    distinct word instead (the equivalence is tested against scikit-learn's own
    transform); other feature steps are used as they are.
    """
    steps = getattr(features, "transformer_list", None)
    if (not isinstance(features, FeatureUnion) or features.transformer_weights is not None
            or not steps or not all(_plain_text_vectorizer(step) for _, step in steps)
            or not isinstance(X, list)):
        return features.transform(X)
    lowered = [str(x).lower() for x in X]  # each step's preprocessor: lowercase, no more
    blocks = [_tfidf(step, _char_wb_counts(step, lowered) if step.analyzer == "char_wb"
                     else _word_counts(step, lowered)) for _, step in steps]
    return sp.hstack(blocks, format="csr")


def refit(db: sqlite_utils.Database, project: Project, *, seed: int = 0) -> dict:
    """Fit the quick model on curated labels, re-score the open pool, record a curve point."""
    started = time.monotonic()
    project = get_project(db, project.id)  # the strategy may have changed since queuing
    data = training_set(db, project)
    train = np.flatnonzero(~data.holdout)
    held = np.flatnonzero(data.holdout)
    X_train, y_train = data.part(~data.holdout)
    pool_ids = open_item_ids(db, project)

    rng = np.random.default_rng(seed)
    sample_ids = sorted(rng.choice(pool_ids, size=min(FEATURE_SAMPLE, len(pool_ids)),
                                   replace=False).tolist()) if pool_ids else []
    X_sample = model_input(db, project, get_items(db, project, sample_ids))
    features = make_features(project.modality, X_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Unsupervised feature fitting also sees pool items, so text vocabularies
        # and tabular scalers cover what the queue will score.
        features.fit(_concat(X_train, X_sample))
        F_train = features.transform(X_train)
        if project.multi_label:
            binarizer = MultiLabelBinarizer(classes=project.classes).fit([project.classes])
            model = OneVsRestClassifier(LogisticRegression(max_iter=1000))
            model.fit(F_train, binarizer.transform(y_train))
            classes = list(binarizer.classes_)
        else:
            model = LogisticRegression(max_iter=1000)
            model.fit(F_train, [a[0] for a in y_train])
            classes = [str(c) for c in model.classes_]

    accuracy = None
    if len(held):
        X_held, y_held = data.part(data.holdout)
        proba = _class_probabilities(model, features.transform(X_held), project, classes)
        accuracy = float(np.mean(_exact(proba, y_held, project)))

    probabilities = np.zeros((len(pool_ids), len(project.classes)))
    start = 0
    for rows, X in _pool_chunks(db, project, pool_ids, CHUNK):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probabilities[start : start + rows] = _class_probabilities(
                model, _transform(features, X), project, classes)
        start += rows

    predicted, confidence = _decisions(probabilities, project)
    counts = Counter(c for labels in data.labels for c in labels)

    def pool_features(rows: np.ndarray):
        chunk = [pool_ids[int(r)] for r in rows]
        by_id = {i.id: i for i in get_items(db, project, chunk)}
        return features.transform(model_input(db, project, [by_id[i] for i in chunk]))

    order = queue_order(
        project.strategy if not project.multi_label or project.strategy != "batch" else "margin",
        _as_single(probabilities, project),
        np.array([p[0] if p else "" for p in predicted], dtype=object),
        dict(counts),
        batch=max(project.refit_every, 10),
        pool_features=pool_features,
        labeled_features=F_train,
        seed=seed,
    ) if pool_ids else np.array([], dtype=int)
    store_queue_scores(db, project, pool_ids, order, predicted, confidence,
                       scorer=f"quick:{len(data.item_ids)}")
    seconds = round(time.monotonic() - started, 3)
    point = {
        "project_id": project.id,
        "labels": len(data.item_ids),
        "accuracy": accuracy,
        "holdout_size": int(len(held)),
        "strategy": project.strategy,
        "model": QUICK_MODEL,
        "seconds": seconds,
        "created_at": utcnow(),
    }
    with db.atomic():
        db["learning_curve"].insert(point)
    return {"labels": len(data.item_ids), "train_size": int(len(train)),
            "holdout_size": int(len(held)), "accuracy": accuracy, "scored": len(pool_ids),
            "strategy": project.strategy, "seconds": seconds}


def _exact(proba: np.ndarray, answers: list[list[str]], project: Project) -> list[bool]:
    predicted, _ = _decisions(proba, project)
    return [sorted(p) == sorted(a) for p, a in zip(predicted, answers, strict=True)]


def _decisions(proba: np.ndarray, project: Project) -> tuple[list[list[str]], np.ndarray]:
    """Predicted labels and the confidence the queue and the Label page show."""
    if project.multi_label:
        predicted = [[c for c, p in zip(project.classes, row, strict=True) if p >= 0.5]
                     for row in proba]
        confidence = (np.abs(proba - 0.5) * 2).min(axis=1) if proba.size else np.zeros(0)
        return predicted, confidence
    predicted = [[project.classes[int(i)]] for i in proba.argmax(axis=1)] if proba.size else []
    confidence = uncertainty_scores(proba)["confidence"] if len(proba) else np.zeros(0)
    return predicted, confidence


def _as_single(proba: np.ndarray, project: Project) -> np.ndarray:
    """For multi-label, a two-column yes/no view of the least certain class, for the measures."""
    if not project.multi_label or not proba.size:
        return proba
    closest = np.abs(proba - 0.5).argmin(axis=1)
    p = proba[np.arange(len(proba)), closest]
    return np.column_stack([p, 1 - p])


def learning_curve(db: sqlite_utils.Database, project: Project) -> list[dict]:
    """Every refit's holdout accuracy against the number of labels, oldest first."""
    return list(db.query(
        "SELECT labels, accuracy, holdout_size, strategy, model, seconds, created_at "
        "FROM learning_curve WHERE project_id = ? ORDER BY id", [project.id]))


def refit_due(db: sqlite_utils.Database, project: Project) -> bool:
    """True when `refit_every` labels arrived since the last refit started and none is running."""
    if project.refit_every <= 0:
        return False
    last = db.execute(
        "SELECT status, params FROM jobs WHERE project_id = ? AND kind = 'refit' "
        "ORDER BY id DESC LIMIT 1", [project.id]).fetchone()
    since = 0
    if last is not None:
        if last[0] in ("queued", "running"):
            from automl.jobs import reap_stale_jobs

            if not reap_stale_jobs(db):
                return False
        since = int(json.loads(last[1] or "{}").get("labels", 0))
    return labeled_count(db, project) - since >= project.refit_every


def start_refit(db: sqlite_utils.Database, project: Project) -> int:
    """Queue a refit job and start its process; returns at once (the page never waits)."""
    from automl.jobs import spawn

    labels = labeled_count(db, project)
    with db.atomic():
        job_id = db["jobs"].insert({
            "project_id": project.id, "kind": "refit", "status": "queued",
            "params": json.dumps({"labels": labels, "strategy": project.strategy}),
            "progress": "{}", "created_at": utcnow(),
        }).last_pk
    spawn(db, job_id)
    return int(job_id)


def maybe_refit(db: sqlite_utils.Database, project: Project) -> int | None:
    """Called after answers are saved: start a background refit when one is due."""
    try:
        return start_refit(db, project) if refit_due(db, project) else None
    except (GroundworkError, OSError):
        return None
