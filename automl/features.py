"""Features per modality, as scikit-learn transformers inside the model's pipeline.

Keeping them in the pipeline makes a saved model self-contained: batch
prediction hands it the same raw input (texts, a table, image paths) that
`labeling.inputs.model_input` produces, and nothing has to be re-derived.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from labeling.errors import GroundworkError


def _grey(path: str, size: int) -> np.ndarray:
    """Any mode (palette, CMYK, 16-bit, alpha) to a size x size grey array in 0..1.

    Pillow's decompression-bomb limit stays on: a bomb raises here as it does
    on import.
    """
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            span = float(arr.max() - arr.min()) or 1.0
            img = Image.fromarray(((arr - arr.min()) / span * 255).astype("uint8"))
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float64) / 255.0


def image_vector(path: str, size: int = 16, bins: int = 8, cells: int = 4) -> np.ndarray:
    """Pixels, colour histograms and a coarse histogram of oriented gradients for one image."""
    rgb = _grey(path, size * 2)
    grey = rgb.mean(axis=2)
    small = grey.reshape(size, 2, size, 2).mean(axis=(1, 3)).ravel()
    hist = np.concatenate(
        [np.histogram(rgb[..., c], bins=bins, range=(0.0, 1.0))[0] for c in range(3)]
    ).astype(float)
    hist /= hist.sum() or 1.0
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    orient = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
    step = grey.shape[0] // cells
    hog = np.zeros((cells, cells, bins))
    for i in range(cells):
        for j in range(cells):
            block = (slice(i * step, (i + 1) * step), slice(j * step, (j + 1) * step))
            hog[i, j] = np.bincount(orient[block].ravel(), magnitude[block].ravel(), bins)
    hog = hog.ravel()
    hog /= np.linalg.norm(hog) or 1.0
    return np.concatenate([small, hist, hog])


class ImageFeatures(TransformerMixin, BaseEstimator):
    """Image paths in, fixed-length numeric vectors out (Pillow + numpy, no downloads)."""

    def __init__(self, size: int = 16, bins: int = 8, cells: int = 4) -> None:
        self.size = size
        self.bins = bins
        self.cells = cells

    def fit(self, X: Sequence[str], y=None) -> ImageFeatures:  # noqa: N803 - sklearn's name
        self.n_features_out_ = len(self._one(X[0])) if len(X) else 0
        return self

    def _one(self, path: str) -> np.ndarray:
        return image_vector(str(path), self.size, self.bins, self.cells)

    def transform(self, X: Sequence[str]) -> np.ndarray:  # noqa: N803
        return np.vstack([self._one(p) for p in X]) if len(X) else np.empty((0, 0))


DATE_SHARE = 0.9  # a text column is a date column when this share of its values parse
DATE_SAMPLE = 500  # values looked at to decide


def _parse_dates(values: pd.Series) -> pd.Series:
    """ISO 8601 first (vectorised, fast), else any format dateutil reads (slow, per value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iso = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        if iso.notna().sum() >= DATE_SHARE * values.notna().sum():
            return iso
        return pd.to_datetime(values, errors="coerce", format="mixed", utc=True)


class DateParts(TransformerMixin, BaseEstimator):
    """Date columns become year, month, day, weekday, day of year (and hour when times vary).

    A date as a category says nothing about a date not seen in training; its
    parts do ("weekends are slow", "December is busy"). A text column counts as
    a date column when at least 90% of its values parse as dates and they are
    not plain numbers. Unparseable values become missing parts (imputed next).
    """

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn's name
        self.date_columns_: dict[str, bool] = {}
        frame = pd.DataFrame(X)
        for column in frame.columns:
            values = frame[column].dropna()
            if values.empty or pd.api.types.is_numeric_dtype(values) or \
                    pd.api.types.is_bool_dtype(values):
                continue
            values = values.astype(str).head(DATE_SAMPLE)
            if pd.to_numeric(values, errors="coerce").notna().mean() > 0.5:
                continue  # numbers stored as text, not dates
            parsed = _parse_dates(values)
            if parsed.notna().mean() >= DATE_SHARE and parsed.nunique() > 1:
                times = parsed.dropna()
                self.date_columns_[str(column)] = bool(
                    (times.dt.hour != 0).any() or (times.dt.minute != 0).any())
        return self

    def transform(self, X):  # noqa: N803
        frame = pd.DataFrame(X).copy()
        for column, with_time in self.date_columns_.items():
            if column not in frame.columns:
                continue
            parsed = _parse_dates(frame[column].astype("string"))
            parts = {"year": parsed.dt.year, "month": parsed.dt.month, "day": parsed.dt.day,
                     "weekday": parsed.dt.day_of_week, "dayofyear": parsed.dt.day_of_year}
            if with_time:
                parts["hour"] = parsed.dt.hour + parsed.dt.minute / 60.0
            for name, part in parts.items():
                frame[f"{column}__{name}"] = part.astype(float)
            frame = frame.drop(columns=[column])
        return frame


def tabular_features(sample: pd.DataFrame) -> Pipeline:
    """Date parts, then impute, scale numbers and one-hot everything else (unknown
    categories ignored)."""
    numeric = Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
         ("scale", StandardScaler())]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", max_categories=50)),
        ]
    )
    columns = ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline([("dates", DateParts()), ("columns", columns)])


def text_features(embeddings: bool = False) -> FeatureUnion:
    """Word 1-2 grams plus character 2-4 grams: robust to short texts and misspellings.

    With `embeddings`, sentence embeddings too (`automl.embeddings`, an optional
    extra): unit-length like the TF-IDF rows, so neither part drowns the other.
    """
    steps = [
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                  max_features=50_000)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True,
                                  min_df=1, max_features=50_000)),
    ]
    if embeddings:
        from automl.embeddings import SentenceEmbeddings, require_available

        require_available()
        steps.append(("sentences", SentenceEmbeddings()))
    return FeatureUnion(steps)


def make_features(modality: str, sample=None, *, embeddings: bool = False):
    """The feature step for a modality; `sample` lets tabular features see the columns."""
    if embeddings and modality != "text":
        raise GroundworkError(f"sentence embeddings are for text projects, not {modality}")
    if modality == "text":
        return text_features(embeddings)
    if modality == "tabular":
        return tabular_features(sample)
    if modality == "image":
        return ImageFeatures()
    raise ValueError(f"unknown modality {modality!r}")


def is_sparse_modality(modality: str) -> bool:
    """Text features are sparse, so dense-only models (HistGradientBoosting) are left out."""
    return modality == "text"
