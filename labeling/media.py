"""Content-addressed media under `<data>/media/`: the same bytes are stored once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def media_relpath(digest: str, suffix: str) -> str:
    suffix = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
    return f"media/{digest[:2]}/{digest}{suffix}"


def store_media(data_dir: Path, data: bytes, suffix: str) -> tuple[str, str]:
    """Write `data` once under its sha256; return (relative path, digest).

    Written to a temporary name and renamed, so a crash never leaves a
    half-written file under a digest name.
    """
    digest = sha256_bytes(data)
    rel = media_relpath(digest, suffix)
    target = data_dir / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return rel, digest
