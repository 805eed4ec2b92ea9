"""The quick queue model's features of every item, computed once and kept on disk.

The background refit (`automl.refit`) runs every `refit_every` labels and
scores the whole open pool. Building the features of 100,000 emails (word
and character n-grams) took most of its time, at every refit, although
nothing about them changes between refits: the featurizer is unsupervised
(vocabulary, idf, scalers) and an item's content never changes. So the
featurizer is fitted once (on a random sample of the project's items plus
the items labeled at that time, as the refit did before), every item is
transformed once, and the rows are kept in one file per project:

    <data>/features/<project id>/quick-features.bin

A later refit only gathers rows (a memory map: nothing is parsed or copied
but the rows it asks for) and multiplies them by the model's weights.

The file is brought up to date on every call of `pool_features`: items
imported since are transformed with the kept featurizer and appended; when
they are more than `REBUILD_SHARE` of the project (a large new import may
bring words the featurizer never saw), or when an item's content differs
from what was cached, the featurizer is fitted again and everything rebuilt.
Which items a file covers is checked against the store on each call (item
ids and the items' sha256), so a restored backup or a re-used project id
cannot serve another project's rows.

The fitted featurizer travels inside the file as a pickle; its sha256 is
recorded in the store (`settings`, key ``pool_features:<project id>``) and
checked before it is unpickled, like the model registry does for model
artifacts: a pickle we did not write is never loaded. Files are written to a
temporary name and renamed (`os.replace`), and builds of one project are
serialized with a lock file, so two refits at once never see half a file.

Rows are stored as float32 values and uint16 column numbers (int32 when the
featurizer has more than 65,536 columns): 6 bytes per non-zero, about 360 MB
for 100,000 emails of 325 characters with word 1-2-grams and char 2-4-grams.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sqlite_utils
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize

from automl.features import make_features
from labeling.inputs import model_input
from labeling.items import get_items
from labeling.projects import Project
from labeling.store import data_dir_of, get_setting, set_setting, utcnow

try:  # POSIX; elsewhere concurrent builds are still safe (atomic rename), only wasteful
    import fcntl
except ImportError:  # pragma: no cover - not on this platform
    fcntl = None  # type: ignore[assignment]

FEATURE_SAMPLE = 2000  # items the featurizer is fitted on (plus the labeled ones)
REBUILD_SHARE = 0.2  # more new items than this share of the project: fit the featurizer again
CHUNK = 5000  # items transformed at once (bounded memory; the text fast path likes it)
FILE_NAME = "quick-features.bin"
MAGIC = b"GWFEATS1"
_ALIGN = 64


class PoolCacheError(Exception):
    """The cache file is missing, torn or not the one the store recorded: rebuild it."""


def cache_path(db: sqlite_utils.Database, project: Project) -> Path:
    """Where the project's quick features live, next to its models (`models/<id>/`)."""
    return data_dir_of(db) / "features" / str(project.id) / FILE_NAME


def settings_key(project: Project) -> str:
    """The store's record of the file (the featurizer's sha256), per project."""
    return f"pool_features:{project.id}"


# --------------------------------------------------------------------------- reading items


class _ItemRow(NamedTuple):
    """What `model_input` reads from an item (its content or media file)."""

    id: int
    content: str | None
    media_path: str | None


# A project's items are stored in id order (one import, one transaction), so they are
# read in one pass over the project's id range (`+project_id` keeps SQLite on that range)
# rather than through an index and one row lookup per item.
_IN_SPAN = "id BETWEEN ? AND ? AND +project_id = ?"


def item_input_chunks(db: sqlite_utils.Database, project: Project, item_ids: Sequence[int],
                      size: int) -> Iterator[tuple[list[int], object]]:
    """The items' model input in chunks of `size`, in ascending id order: `(ids, X)`.

    `item_ids` must be ascending. An image item without a media file has no
    input and is left out of its chunk's ids.
    """
    wanted = set(item_ids)
    lo, hi = (item_ids[0], item_ids[-1]) if len(item_ids) else (0, -1)
    cursor = db.execute(f"SELECT id, content, media_path FROM items WHERE {_IN_SPAN} "
                        "ORDER BY id", [int(lo), int(hi), project.id])
    chunk: list[_ItemRow] = []
    for row in cursor:
        if row[0] in wanted and (project.modality != "image" or row[2]):
            chunk.append(_ItemRow(*row))
            if len(chunk) == size:
                yield [r.id for r in chunk], model_input(db, project, chunk)
                chunk = []
    if chunk:
        yield [r.id for r in chunk], model_input(db, project, chunk)


def _item_digests(db: sqlite_utils.Database, project: Project) -> tuple[np.ndarray, np.ndarray]:
    """Every item's id and sha256 (64 bytes), in id order: what the file must cover."""
    lo, hi = db.execute("SELECT min(id), max(id) FROM items WHERE project_id = ?",
                        [project.id]).fetchone()
    rows = db.execute(f"SELECT id, sha256 FROM items WHERE {_IN_SPAN} ORDER BY id",
                      [lo or 0, -1 if hi is None else hi, project.id]).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    shas = [r[1] for r in rows]
    try:
        return ids, np.array(shas, dtype="S64")
    except UnicodeEncodeError:  # not a hex digest (hand-made records): hash it to one
        return ids, np.array([hashlib.sha256(s.encode()).hexdigest() for s in shas], dtype="S64")


# --------------------------------------------------------------------------- the text fast path


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
    text (about 0.4 ms per email here, 40 s for 100,000). For the word and
    char_wb TF-IDF union the same matrix is built per distinct word instead
    (the equivalence is tested against scikit-learn's own transform); other
    feature steps are used as they are.
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


# --------------------------------------------------------------------------- the file


def _index_dtype(n_features: int) -> np.dtype:
    return np.dtype(np.uint16) if n_features <= 1 << 16 else np.dtype(np.int32)


def _pad(out) -> None:
    out.write(b"\0" * (-out.tell() % _ALIGN))


def _write(path: Path, blocks: Iterator[tuple[np.ndarray, np.ndarray, sp.csr_matrix]],
           n_features: int, featurizer: bytes, meta: dict) -> dict:
    """Stream `(ids, digests, rows)` blocks into `path`, atomically; returns the meta written.

    Layout: MAGIC, then each array (64-byte aligned), then a JSON footer that
    names each array's dtype, shape and offset, its length (8 bytes) and MAGIC
    again. The values go straight to the file and the column numbers to a
    spill file appended after them, so memory holds one block at a time.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    index_dtype = _index_dtype(n_features)
    arrays: dict[str, dict] = {}
    indptr = [np.zeros(1, dtype=np.int64)]
    ids: list[np.ndarray] = []
    digests: list[np.ndarray] = []
    digest_dtype = np.dtype("S64")
    nnz = 0
    try:
        with open(tmp, "wb") as out, tempfile.TemporaryFile(dir=path.parent) as spill:
            out.write(MAGIC)
            _pad(out)
            data_offset = out.tell()
            for block_ids, block_digests, rows in blocks:
                rows = sp.csr_matrix(rows)
                rows.sum_duplicates()  # canonical: sorted column numbers, one entry each
                out.write(np.ascontiguousarray(rows.data, dtype=np.float32).tobytes())
                spill.write(np.ascontiguousarray(rows.indices, dtype=index_dtype).tobytes())
                indptr.append(rows.indptr[1:].astype(np.int64) + nnz)
                nnz += rows.nnz
                ids.append(np.asarray(block_ids, dtype=np.int64))
                digests.append(np.asarray(block_digests, dtype=digest_dtype))
            arrays["data"] = {"dtype": "<f4", "shape": [nnz], "offset": data_offset}
            _pad(out)
            arrays["indices"] = {"dtype": index_dtype.str, "shape": [nnz], "offset": out.tell()}
            spill.seek(0)
            shutil.copyfileobj(spill, out, 1 << 22)
            small = {"indptr": np.concatenate(indptr),
                     "ids": np.concatenate(ids) if ids else np.zeros(0, np.int64),
                     "digests": np.concatenate(digests) if digests else np.zeros(0, digest_dtype),
                     "featurizer": np.frombuffer(featurizer, dtype=np.uint8)}
            for name, array in small.items():
                _pad(out)
                arrays[name] = {"dtype": array.dtype.str, "shape": list(array.shape),
                                "offset": out.tell()}
                out.write(array.tobytes())
            meta = {**meta, "n_features": int(n_features), "rows": int(len(small["ids"])),
                    "nnz": int(nnz), "arrays": arrays}
            footer = json.dumps(meta).encode()
            out.write(footer + len(footer).to_bytes(8, "little") + MAGIC)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return meta


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The footer and each array of a file `_write` wrote, memory-mapped (read-only)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC or size < 2 * len(MAGIC) + 8:
                raise PoolCacheError(f"{path} is not a features file")
            fh.seek(size - 8 - len(MAGIC))
            trailer = fh.read(8 + len(MAGIC))
            length = int.from_bytes(trailer[:8], "little")
            if trailer[8:] != MAGIC or length > size - 2 * len(MAGIC) - 8:
                raise PoolCacheError(f"{path} is torn (no footer)")
            fh.seek(size - 8 - len(MAGIC) - length)
            meta = json.loads(fh.read(length))
        end = size - 8 - len(MAGIC) - length
        arrays = {}
        for name, spec in meta["arrays"].items():
            dtype, shape, offset = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["offset"]
            if dtype.hasobject or offset < len(MAGIC) or \
                    offset + dtype.itemsize * int(np.prod(shape)) > end:
                raise PoolCacheError(f"{path}: array {name} lies outside the file")
            arrays[name] = (np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
                            if np.prod(shape) else np.zeros(shape, dtype=dtype))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PoolCacheError(f"{path}: {exc}") from exc
    indptr, ids = arrays["indptr"], arrays["ids"]
    if (len(indptr) != len(ids) + 1 or len(arrays["digests"]) != len(ids) or indptr[0] != 0
            or indptr[-1] != len(arrays["data"]) or len(arrays["indices"]) != len(arrays["data"])
            or np.any(np.diff(indptr) < 0)):
        raise PoolCacheError(f"{path}: inconsistent row arrays")
    return meta, arrays


# --------------------------------------------------------------------------- the rows


@dataclass
class PoolFeatures:
    """The quick features of a project's items, by item id (a read-only memory map).

    `transformed` counts the items whose features this call had to build
    (0 when every row came from the file); `rebuilt` says the featurizer was
    fitted again.
    """

    path: Path
    n_features: int
    ids: np.ndarray
    _data: np.ndarray = field(repr=False)
    _indices: np.ndarray = field(repr=False)
    _indptr: np.ndarray = field(repr=False)
    transformed: int = 0
    rebuilt: bool = False
    _sorted: np.ndarray | None = field(default=None, repr=False)
    _order: np.ndarray | None = field(default=None, repr=False)

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row numbers of `item_ids` in the file; KeyError for an item it does not hold."""
        if self._sorted is None:
            self._order = np.argsort(self.ids, kind="stable")
            self._sorted = self.ids[self._order]
        assert self._order is not None
        wanted = np.asarray(item_ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted), max(len(self._sorted) - 1, 0))
        if len(wanted) and (not len(self._sorted) or np.any(self._sorted[at] != wanted)):
            missing = wanted[self._sorted[at] != wanted] if len(self._sorted) else wanted
            raise KeyError(f"no cached features for items {missing[:5].tolist()}")
        return self._order[at]

    def rows(self, item_ids: Sequence[int] | np.ndarray) -> sp.csr_matrix:
        """The features of `item_ids`, in that order (float64 CSR, as the featurizer gives)."""
        pos = self.positions(item_ids)
        if len(pos) and np.all(pos[1:] > pos[:-1]) and pos[-1] - pos[0] < 2 * len(pos):
            # Ascending and dense, as a pool chunk is: cut the span out, then pick its rows.
            lo, hi = int(pos[0]), int(pos[-1]) + 1
            indptr = np.asarray(self._indptr[lo : hi + 1], dtype=np.int64)
            span = slice(int(indptr[0]), int(indptr[-1]))
            matrix = self._matrix(self._data[span], self._indices[span], indptr - indptr[0])
            return matrix if hi - lo == len(pos) else matrix[pos - lo]
        starts = np.asarray(self._indptr[pos], dtype=np.int64)
        lengths = np.asarray(self._indptr[pos + 1], dtype=np.int64) - starts
        indptr = np.zeros(len(pos) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        offsets = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1] - starts, lengths)
        return self._matrix(self._data[offsets], self._indices[offsets], indptr)

    def apply(self, item_ids: Sequence[int] | np.ndarray, fn, size: int = CHUNK) -> np.ndarray:
        """`fn` (row-wise, such as `predict_proba`) of the features of `item_ids` (ascending).

        Evaluated span by span of the file: the few rows in a span that were
        not asked for (the labeled items between open ones) are computed and
        dropped, which costs less than copying the asked-for rows out.
        """
        pos = self.positions(item_ids)
        parts = []
        for start in range(0, len(pos), size):
            chunk = pos[start : start + size]
            lo, hi = int(chunk[0]), int(chunk[-1]) + 1
            if np.any(chunk[1:] <= chunk[:-1]) or hi - lo >= 2 * len(chunk):
                parts.append(np.asarray(fn(self.rows(self.ids[chunk]))))
                continue
            indptr = np.asarray(self._indptr[lo : hi + 1], dtype=np.int64)
            span = slice(int(indptr[0]), int(indptr[-1]))
            values = np.asarray(fn(self._matrix(self._data[span], self._indices[span],
                                                indptr - indptr[0])))
            parts.append(values if hi - lo == len(chunk) else values[chunk - lo])
        return np.concatenate(parts) if parts else np.zeros(0)

    def _matrix(self, data: np.ndarray, cols: np.ndarray, indptr: np.ndarray) -> sp.csr_matrix:
        cols = np.asarray(cols, dtype=np.int32)
        if len(cols) and int(cols.max()) >= self.n_features:  # sparsetools does not check
            raise PoolCacheError(f"{self.path}: a column number is out of range")
        return sp.csr_matrix((np.asarray(data, dtype=np.float64), cols, indptr),
                             shape=(len(indptr) - 1, self.n_features))


def _open(path: Path, expected_sha256: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """A file only counts as ours when its featurizer is the one the store recorded."""
    meta, arrays = _read(path)
    if not expected_sha256 or hashlib.sha256(arrays["featurizer"]).hexdigest() != expected_sha256:
        raise PoolCacheError(f"{path} is not the features file the store recorded")
    return meta, arrays


def _features_of(path: Path, meta: dict, arrays: dict, **counts) -> PoolFeatures:
    return PoolFeatures(path=path, n_features=int(meta["n_features"]),
                        ids=np.asarray(arrays["ids"]), _data=arrays["data"],
                        _indices=arrays["indices"], _indptr=arrays["indptr"], **counts)


def load_featurizer(db: sqlite_utils.Database, project: Project):
    """The featurizer the project's file was built with, unpickled only if its hash checks."""
    record = json.loads(get_setting(db, settings_key(project)) or "{}")
    _, arrays = _open(cache_path(db, project), record.get("featurizer_sha256"))
    return pickle.loads(arrays["featurizer"].tobytes())  # noqa: S301 - hash checked above


@contextlib.contextmanager
def _project_lock(path: Path):
    """One builder per project at a time; a second refit waits, then finds the file fresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(".lock"), "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _transformed_blocks(features, db: sqlite_utils.Database, project: Project,
                        ids: np.ndarray, all_ids: np.ndarray, digests: np.ndarray):
    """`(ids, digests, rows)` of the items `ids` (ascending), transformed `CHUNK` at a time."""
    for chunk_ids, X in item_input_chunks(db, project, ids.tolist(), CHUNK):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = _transform(features, X)
        yield (np.asarray(chunk_ids, dtype=np.int64),
               digests[np.searchsorted(all_ids, chunk_ids)], rows)


def _cached_blocks(cached: PoolFeatures, keep: np.ndarray, digests: np.ndarray):
    """The file's rows at positions `keep`, `CHUNK` at a time (float32 to float64 and back is
    exact, so copied rows stay bit for bit the same)."""
    for start in range(0, len(keep), CHUNK):
        block_ids = cached.ids[keep[start : start + CHUNK]]
        yield block_ids, digests[keep[start : start + CHUNK]], cached.rows(block_ids)


def _fit_featurizer(db: sqlite_utils.Database, project: Project, ids: np.ndarray,
                    fit_ids: Sequence[int], seed: int):
    """Fit on a random sample of the items plus `fit_ids` (the labeled ones), unsupervised."""
    rng = np.random.default_rng(seed)
    sample = rng.choice(ids, size=min(FEATURE_SAMPLE, len(ids)), replace=False) if len(ids) \
        else ids
    chosen = sorted(set(sample.tolist()) | {int(i) for i in fit_ids})
    X = model_input(db, project, get_items(db, project, chosen))
    features = make_features(project.modality, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features.fit(X)
    return features


def pool_features(db: sqlite_utils.Database, project: Project, *,
                  fit_ids: Sequence[int] = (), seed: int = 0) -> PoolFeatures:
    """The quick features of every item of the project, built or brought up to date as needed.

    `fit_ids` (the labeled items) join the featurizer's fitting sample when it
    has to be fitted, so its vocabulary covers what the model trains on.
    """
    path = cache_path(db, project)
    key = settings_key(project)
    with _project_lock(path):
        ids, digests = _item_digests(db, project)
        record = json.loads(get_setting(db, key) or "{}")
        try:
            meta, arrays = _open(path, record.get("featurizer_sha256"))
        except PoolCacheError:
            meta, arrays = {}, {}
        if arrays and meta.get("modality") == project.modality:
            cached = _features_of(path, meta, arrays)
            cached_digests = np.asarray(arrays["digests"])
            if np.array_equal(cached.ids, ids) and np.array_equal(cached_digests, digests):
                return cached  # the usual case: nothing changed since the file was written
            order = np.argsort(cached.ids, kind="stable")
            at = np.minimum(np.searchsorted(cached.ids[order], ids), max(len(order) - 1, 0))
            known = cached.ids[order][at] == ids if len(order) else np.zeros(len(ids), bool)
            still = order[at[known]]  # file rows of items the project still has, in id order
            changed = np.any(cached_digests[still] != digests[known])
            new = ids[~known]
            if not changed and len(new) <= REBUILD_SHARE * len(ids):
                if not len(new):
                    return cached  # items were only removed: their rows are never asked for
                # A small import: the kept featurizer transforms only the new items.
                features = pickle.loads(arrays["featurizer"].tobytes())  # noqa: S301 - checked
                blocks = chain(_cached_blocks(cached, still, cached_digests),
                               _transformed_blocks(features, db, project, new, ids, digests))
                meta = _write(path, blocks, cached.n_features, arrays["featurizer"].tobytes(),
                              {"modality": project.modality, "built_at": meta.get("built_at"),
                               "appended_at": utcnow()})
                set_setting(db, key, json.dumps({**record, "rows": meta["rows"]}))
                return _features_of(path, meta, _read(path)[1], transformed=len(new))
        # No usable file, or too much changed: fit the featurizer, transform everything.
        features = _fit_featurizer(db, project, ids, fit_ids, seed)
        featurizer = pickle.dumps(features, protocol=pickle.HIGHEST_PROTOCOL)
        blocks = _transformed_blocks(features, db, project, ids, ids, digests)
        first = next(blocks, None)
        n_features = first[2].shape[1] if first is not None else 0
        meta = _write(path, chain([first] if first is not None else [], blocks), n_features,
                      featurizer, {"modality": project.modality, "built_at": utcnow()})
        set_setting(db, key, json.dumps({
            "featurizer_sha256": hashlib.sha256(featurizer).hexdigest(), "file": str(
                path.relative_to(data_dir_of(db))), "rows": meta["rows"],
            "built_at": meta["built_at"]}))
        return _features_of(path, meta, _read(path)[1], transformed=int(meta["rows"]),
                            rebuilt=True)


def drop_pool_features(db: sqlite_utils.Database, project: Project) -> None:
    """Remove a project's features file and its record (when the project is deleted)."""
    shutil.rmtree(cache_path(db, project).parent, ignore_errors=True)
    set_setting(db, settings_key(project), "{}")
