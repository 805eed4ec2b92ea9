"""Shared fixtures: a real store in a temporary folder and small real data sets.

Images are scikit-learn's `load_digits` rendered to PNG; tables are
scikit-learn's wine data; text is a small SpamAssassin subset (tests/data).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_wine

from labeling.store import connect

TESTS = Path(__file__).parent


_MAIN = sys.modules["__main__"]
BROWSER_TESTS = TESTS / "browser"


def pytest_collection_modifyitems(config, items):
    """Browser tests share one xdist worker (`make test` runs `-n 2 --dist loadgroup`).

    Two Streamlit servers and two Chromiums at once on a 2-core machine make the
    keyboard tests' waits flaky; one browser test at a time beside the unit tests
    halves the suite's wall time without that.
    """
    for item in items:
        if BROWSER_TESTS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(autouse=True)
def _restore_main():
    """Put pytest's `__main__` back after each test.

    Streamlit's AppTest runs a page as `__main__` and leaves it there; a process
    started later with multiprocessing's "spawn" re-runs the parent's `__main__`
    file first, and would then run that page (and die) instead of the test's
    worker function.
    """
    yield
    sys.modules["__main__"] = _MAIN


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def db(data_dir: Path):
    database = connect(data_dir)
    yield database
    database.conn.close()


def digit_png(pixels: np.ndarray, size: int = 32) -> bytes:
    """One 8x8 digit (values 0..16) as a grey PNG, upscaled so a person can see it."""
    img = Image.fromarray((255 - pixels.reshape(8, 8) * 15).astype("uint8"), mode="L")
    buf = io.BytesIO()
    img.resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def write_digits_folder(root: Path, per_class: int = 10, classes=(0, 1), offset: int = 0) -> Path:
    """Class sub-folders of real digit images: root/<digit>/<index>.png."""
    digits = load_digits()
    for cls in classes:
        idx = np.flatnonzero(digits.target == cls)[offset : offset + per_class]
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        for i in idx:
            (root / str(cls) / f"{i}.png").write_bytes(digit_png(digits.data[i]))
    return root


@pytest.fixture
def digits_folder(tmp_path: Path) -> Path:
    return write_digits_folder(tmp_path / "digits", per_class=12, classes=(0, 1, 2))


@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    wine = load_wine(as_frame=True)
    frame = wine.frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def spam_csv() -> Path:
    return TESTS / "data" / "spam.csv"


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)
