"""Content-addressed media under `<data>/media/`: the same bytes are stored once.

Also what a page hands `st.image` for a stored image: the file itself when a
browser shows it as it is, else an 8-bit, upright, RGB(A) copy (CMYK, 16-bit,
float, TIFF, EXIF-rotated), so an odd image looks the way a person expects.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sqlite_utils
from PIL import Image, ImageOps

from labeling.errors import GroundworkError

# The only formats an import opens: what browsers show plus TIFF. Never EPS/PS (Pillow
# hands those to Ghostscript) or other plugins nobody labels.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO")
# What browsers show as they are (format, mode), so st.image can serve the file untouched.
_BROWSER_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "ICO")
_BROWSER_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
_EXIF_ORIENTATION = 0x0112


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_relpath(digest: str, suffix: str) -> str:
    suffix = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
    return f"media/{digest[:2]}/{digest}{suffix}"


def store_media(data_dir: Path, data: bytes, suffix: str,
                created: list[str] | None = None) -> tuple[str, str]:
    """Write `data` once under its sha256; return (relative path, digest).

    Written to a temporary name and renamed, so a crash never leaves a
    half-written file under a digest name, and a failed write leaves no
    temporary file behind. A file this call wrote is appended to `created`
    (relative path), so an import that fails can take it back.
    """
    digest = sha256_bytes(data)
    rel = media_relpath(digest, suffix)
    target = data_dir / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        if created is not None:
            created.append(rel)
    return rel, digest


def discard_media(db: sqlite_utils.Database, data_dir: Path, rels: Iterable[str]) -> None:
    """Remove media files a failed import wrote, unless an item (of a concurrent import) uses one.

    Call after the import's transaction rolled back; emptied digest folders go too.
    """
    for rel in rels:
        in_use = db.execute("SELECT 1 FROM items WHERE media_path = ? LIMIT 1", [rel]).fetchone()
        if in_use:
            continue
        path = data_dir / rel
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty: other media share the folder


def _needs_conversion(img: Image.Image) -> bool:
    if img.format not in _BROWSER_FORMATS or img.mode not in _BROWSER_MODES:
        return True
    return img.getexif().get(_EXIF_ORIENTATION, 1) != 1


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and float grey stretched to 0..255 (Pillow's own convert would clip at 255)."""
    arr = np.asarray(img, dtype=np.float64)
    low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
    span = (high - low) or 1.0
    return Image.fromarray(np.nan_to_num((arr - low) / span * 255).astype("uint8"), mode="L")


def browser_image(img: Image.Image) -> Image.Image:
    """An upright 8-bit L, RGB or RGBA copy of any image Pillow opened."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I") or img.mode == "F":
        return _eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode in ("1", "L"):
        return img.convert("L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, P, RGBX


def display_image(path: str | Path) -> str | Image.Image:
    """What a page hands `st.image`: the path when a browser shows the file as it is.

    Otherwise an upright 8-bit copy: a CMYK JPEG, a 16-bit PNG or TIFF, a float
    TIFF, or a photo whose EXIF says "rotate me" (Streamlit re-encodes images
    wider than the page asks for and drops that tag) would look wrong.
    """
    try:
        with Image.open(path) as img:
            if not _needs_conversion(img):
                return str(path)
            img.load()
            return browser_image(img)
    except (OSError, ValueError, Image.DecompressionBombError):
        return str(path)  # st.image says what is wrong with the file


def orphaned_media(db: sqlite_utils.Database, data_dir: Path,
                   min_age_seconds: float = 3600.0) -> list[Path]:
    """Files under `media/` that no item points to, untouched for `min_age_seconds`.

    An import killed mid-way (kill -9, power loss) rolls its rows back but
    cannot take back the files it already wrote: they are what is left. The
    age guard keeps the files of an import still running in another process
    (written, not yet committed) out of the list. Leftover temporary files of
    `store_media` count too.
    """
    root = data_dir / "media"
    if not root.is_dir():
        return []
    used = {r[0] for r in db.execute(
        "SELECT DISTINCT media_path FROM items WHERE media_path IS NOT NULL")}
    cutoff = time.time() - float(min_age_seconds)
    out = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(data_dir).as_posix()
        if rel not in used and path.stat().st_mtime <= cutoff:
            out.append(path)
    return out


def sweep_media(db: sqlite_utils.Database, data_dir: Path, *, min_age_seconds: float = 3600.0,
                dry_run: bool = False) -> dict:
    """Remove orphaned media (see `orphaned_media`): `{"files": n, "bytes": b, "paths": [...]}`."""
    if min_age_seconds < 0:
        raise GroundworkError("the minimum age must be zero or more seconds")
    found = orphaned_media(db, data_dir, min_age_seconds)
    size = 0
    for path in found:
        size += path.stat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass  # not empty
    return {"files": len(found), "bytes": size, "dry_run": dry_run,
            "paths": [p.relative_to(data_dir).as_posix() for p in found]}
