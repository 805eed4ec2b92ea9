"""The demo project: real handwritten digits, so a new user can label within a minute.

scikit-learn ships `load_digits` (1,797 8x8 scans from UCI) offline; each is
rendered to a PNG and imported with its true digit as hidden gold, which the
simulation and evaluation use but no annotator sees.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import sqlite_utils
from PIL import Image

from labeling.importers import import_source
from labeling.projects import find_project
from labeling.store import get_setting, set_setting

DEMO_PROJECT = "digits-demo"
INSTRUCTIONS = (
    "Each image is a scanned handwritten digit (8x8 pixels, enlarged). "
    "Pick the digit you see; press **1..9** for the first nine classes, **S** to skip, "
    "**U** to undo."
)


def render_digit(pixels: np.ndarray, size: int = 64) -> bytes:
    """Dark ink on white, enlarged with nearest-neighbour so the pixels stay honest."""
    grey = (255 - np.clip(pixels.reshape(8, 8), 0, 16) * 255 / 16).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def seed_demo(db: sqlite_utils.Database, *, force: bool = False, limit: int | None = None) -> str:
    """Create the demo project once per store (a user who deletes it is not overruled)."""
    if find_project(db, DEMO_PROJECT) is not None:
        return DEMO_PROJECT
    if get_setting(db, "demo_seeded") and not force:
        return DEMO_PROJECT
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = len(digits.target) if limit is None else min(limit, len(digits.target))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        for i in range(count):
            folder = root / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"digit-{i:04d}.png").write_bytes(render_digit(digits.data[i]))
        import_source(
            db,
            DEMO_PROJECT,
            root,
            "image",
            folders_as="gold",
            classes=[str(d) for d in range(10)],
        )
    from labeling.projects import get_project, set_instructions

    set_instructions(db, get_project(db, DEMO_PROJECT), INSTRUCTIONS)
    set_setting(db, "demo_seeded", "1")
    return DEMO_PROJECT
