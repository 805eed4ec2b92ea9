"""Importers: images (folder, zip, CSV manifest), text (CSV, JSONL), table rows (CSV),
and Ground Truth augmented manifests (what `groundwork export --format manifest` writes).

Reading and checking happen before the store is touched, and everything the
import writes to the store happens in one transaction: an import lands whole or
not at all. Files that cannot be read (corrupt images, non-images in a zip) are
skipped and listed in the report, never a crash; a source that is wrong as a
whole (missing column, wrong encoding, unsafe zip) is a clear error.

Every item has a stable key from its source, so importing the same source again
adds nothing (the duplicates are counted), and batch prediction on a file
reports the same keys: the 0-based row number for CSV/JSONL, the relative path
for an image folder or zip, the image column's value for an image manifest,
the `key` an exported augmented manifest carries (else its `source-ref`, or the
line's row number for text).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
import sqlite_utils
from PIL import Image, UnidentifiedImageError

from labeling.annotations import parse_labels
from labeling.errors import GroundworkError
from labeling.items import add_items, existing_keys, item_ids_by_key
from labeling.media import IMAGE_FORMATS, discard_media, sha256_bytes, store_media
from labeling.projects import (
    MODALITIES,
    TASKS,
    Project,
    clean_classes,
    create_project,
    find_project,
    get_project,
    set_classes,
    validate_name,
)
from labeling.store import data_dir_of, utcnow
from labeling.targets import is_regression_target, number_label, parse_number

FOLDERS_AS = ("label", "gold", "none")
TABLE_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Whole-archive limits: a zip that inflates beyond these is refused before reading.
MAX_ZIP_TOTAL_BYTES = 4 * 1024**3
MAX_FILE_BYTES = 200 * 1024**2
# A CSV, JSONL or manifest is read whole into memory: larger ones are refused up front.
MAX_TABLE_BYTES = 1024**3
# A text item longer than this is skipped (and listed): nobody labels a book in one go.
MAX_TEXT_CHARS = 1_000_000
# Class names are short names people pick by key; a longer one is a column mix-up.
MAX_CLASS_CHARS = 200
_LABEL_SEPARATORS = (",", ";", "|")
# Byte-order marks that say which encoding a file is in (UTF-32 before UTF-16: its LE mark
# starts with UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# Files an OS or archiver adds that are nobody's data: ignored, not reported.
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class ImportReport:
    """What an import did; `to_dict` is the `groundwork import --json` output."""

    project: str
    created: bool
    imported: int = 0
    labeled: int = 0
    gold: int = 0
    duplicates: int = 0
    skipped: list[dict] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    task: str = "single-label"  # regression when a numeric label column made it one
    # Augmented manifests: labels marked `human-annotated: no` are not imported as labels.
    machine_labels_not_imported: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Record:
    key: str
    sha256: str
    content: str | None = None
    media: bytes | None = None
    suffix: str = ""
    labels: list[str] | None = None
    gold: list[str] | None = None
    metadata: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reading files


def _decode(path: Path, encoding: str) -> str:
    """The file's text; a byte-order mark (UTF-8, UTF-16, UTF-32) picks the encoding itself."""
    if not path.is_file():
        raise GroundworkError(f"{path.name} is not a regular file (a folder or a device): give "
                              "the CSV or JSONL file itself")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise GroundworkError(
            f"{path.name} is {size} bytes, over the {MAX_TABLE_BYTES} byte limit for a CSV or "
            "JSONL file: split it into smaller files and import them one after another"
        )
    data = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if codec == "utf-8-sig":
        codec = next((name for bom, name in _BOMS if data.startswith(bom)), codec)
    try:
        text = data.decode(codec)
    except LookupError:
        raise GroundworkError(
            f"unknown encoding {encoding!r}: use a Python codec name such as utf-8, latin-1 "
            "or cp1252"
        ) from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise GroundworkError(
            f"{path.name} is not valid {encoding}: byte 0x{data[exc.start]:02x} on line "
            f"{line} (position {exc.start}) cannot be decoded; "
            "save the file as UTF-8 or pass its encoding "
            "(e.g. --encoding latin-1 or --encoding cp1252)"
        ) from None
    if not text.strip():
        raise GroundworkError(f"{path.name} is empty: there is nothing to import")
    if "\x00" in text:
        raise GroundworkError(
            f"{path.name} contains NUL bytes, so it is not {encoding} text: it may be UTF-16 "
            "without a byte-order mark (pass --encoding utf-16) or not a text file at all"
        )
    return text


def _ragged_line(text: str, sep: str) -> str:
    """Where a CSV first has more fields than its header (pandas' own message lacks it)."""
    rows = csv.reader(io.StringIO(text), delimiter=sep, strict=True)
    try:
        header = next(rows, [])
        for row in rows:
            if len(row) > len(header):
                return (f"line {rows.line_num} has {len(row)} fields but the header has "
                        f"{len(header)}")
    except csv.Error as exc:
        return f"line {rows.line_num}: {exc}, so a quote is left open or misplaced"
    return "a row has more fields than the header"


def _duplicate_columns(text: str, sep: str) -> list[str]:
    header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    names = [h.strip() for h in header]
    return sorted({n for n in names if names.count(n) > 1})


def read_table(path: Path, encoding: str = "utf-8", *, typed: bool = False) -> pd.DataFrame:
    """A CSV, TSV or JSONL file as a frame; every way it can be wrong is one clear error.

    Untyped (the default) keeps every cell as the text it was, so labels like
    "01" or "NA" survive; `typed` lets pandas infer numbers for table features.
    A UTF-8/16/32 byte-order mark is honoured; NUL bytes, ragged rows (a row
    with more fields than the header) and duplicate column names are errors.
    """
    path = Path(path)
    text = _decode(path, encoding)
    if path.suffix.lower() in JSONL_SUFFIXES:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GroundworkError(
                    f"line {number} of {path.name} is not valid JSON ({exc.msg}): each line of a "
                    "JSONL file must be one JSON object"
                ) from None
            if not isinstance(row, dict):
                raise GroundworkError(
                    f"line {number} of {path.name} is a JSON {type(row).__name__}, not an "
                    "object: each line must look like {\"text\": ...}"
                )
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            raise GroundworkError(f"{path.name} has no rows: there is nothing to import")
        frame.columns = [str(c) for c in frame.columns]
        return frame if typed else frame.map(_as_text)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    dupes = _duplicate_columns(text, sep)
    if dupes:
        raise GroundworkError(
            f"{path.name} has duplicate column names ({', '.join(dupes)}): rename them so "
            "each column is unique"
        )
    try:
        # index_col=False: a first row with an extra field is an error, not a silent index.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            if typed:
                frame = pd.read_csv(io.StringIO(text), sep=sep, index_col=False)
            else:
                frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str,
                                    keep_default_na=False, index_col=False)
    except pd.errors.EmptyDataError:
        raise GroundworkError(f"{path.name} is empty: there is nothing to import") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        detail = (_ragged_line(text, sep) if isinstance(exc, pd.errors.ParserWarning)
                  else " ".join(str(exc).split()))
        raise GroundworkError(
            f"{path.name} is not a well-formed CSV ({detail}): every row needs the same "
            "number of fields as the header; quote fields that contain the separator and "
            "close every quote"
        ) from None
    frame.columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise GroundworkError(
            f"{path.name} has a header but no rows: there is nothing to import"
        )
    return frame


def _as_text(value: object) -> str | None:
    """A JSON value as the text a CSV cell would hold (lists stay JSON for multi-label)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return ",".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
    return str(value)


def _require_column(frame: pd.DataFrame, column: str, role: str, path: Path) -> None:
    if column not in frame.columns:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise GroundworkError(
            f"{path.name} has no column {column!r} (asked for as the {role}); "
            f"columns found: {found}"
        )


def _pick_column(frame: pd.DataFrame, given: str | None, defaults: Sequence[str], role: str,
                 flag: str, path: Path) -> str:
    if given:
        _require_column(frame, given, role, path)
        return given
    for name in defaults:
        if name in frame.columns:
            return name
    found = ", ".join(map(str, frame.columns)) or "none"
    raise GroundworkError(
        f"{path.name} has no {role} named {' or '.join(repr(d) for d in defaults)}: pass "
        f"{flag} with one of the columns found: {found}"
    )


def _cell_labels(value: object, multi_label: bool) -> list[str] | None:
    """A label cell as class names; "a,b" (or a;b, a|b) is two labels in either task.

    A single-label project then refuses such a cell instead of inventing a
    class "a,b" that no key or `groundwork label` could ever give.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_CLASS_CHARS and not multi_label:
        return [text]  # not split: refused whole as too long to be a class name
    return parse_labels(text) or None


def json_safe(value: object) -> object:
    """Table cells as JSON: NaN and infinities become null, numpy scalars plain numbers."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- images


def check_image(data: bytes) -> tuple[dict | None, str | None]:
    """Decode an image fully with Pillow's bomb limit on; return (info, None) or (None, why).

    `verify` catches broken structure, `load` catches truncated pixel data, and
    the decompression-bomb warning is turned into a refusal. Only the formats in
    `labeling.media.IMAGE_FORMATS` are opened (never EPS, which runs Ghostscript).
    """
    if not data:
        return None, "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                img.verify()
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                img.load()
                info = {"format": img.format, "width": img.width, "height": img.height,
                        "mode": img.mode}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"image too large, refused as a possible decompression bomb ({exc})"
    except UnidentifiedImageError:
        return None, ("not an image Pillow can read (supported: "
                      f"{', '.join(IMAGE_FORMATS)})")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return None, f"corrupt or truncated image ({' '.join(str(exc).split())})"
    return info, None


_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
                  "TIFF": ".tif", "PPM": ".ppm", "ICO": ".ico"}


def _image_suffix(name: str, info: dict) -> str:
    return _FORMAT_SUFFIX.get(info.get("format") or "", Path(name).suffix.lower() or ".img")


def _is_junk(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in _JUNK_NAMES


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in its path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _image_files(source: Path) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(relative key, bytes or None, why-unreadable) for each file of a folder or zip."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file() or p.is_symlink()):
            rel = path.relative_to(source)
            if _is_junk(rel.parts):
                continue
            if path.is_symlink():
                yield rel.as_posix(), None, "symbolic link, not followed"
                continue
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                yield rel.as_posix(), None, (f"file of {size} bytes is over the "
                                             f"{MAX_FILE_BYTES} byte limit")
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                yield rel.as_posix(), None, f"cannot be read ({exc.strerror or exc})"
                continue
            yield rel.as_posix(), data, None
        return
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise GroundworkError(
            f"{source.name} is not a readable zip file ({exc}): re-create the archive"
        ) from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for member in members:
            why = _unsafe_member(member)
            if why:
                raise GroundworkError(
                    f"{source.name} has an unsafe member {member.filename!r} ({why}); nothing "
                    "was imported: re-create the archive with plain relative paths"
                )
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_TOTAL_BYTES:
            raise GroundworkError(
                f"{source.name} would unpack to {total} bytes, over the "
                f"{MAX_ZIP_TOTAL_BYTES} byte limit: split it into smaller archives"
            )
        for member in sorted(members, key=lambda m: m.filename):
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if _is_junk(parts):
                continue
            key = "/".join(parts)
            if member.file_size > MAX_FILE_BYTES:
                yield key, None, (f"file of {member.file_size} bytes is over the "
                                  f"{MAX_FILE_BYTES} byte limit")
                continue
            try:
                with archive.open(member) as fh:
                    data = fh.read(MAX_FILE_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, ValueError,
                    NotImplementedError) as exc:
                yield key, None, f"cannot be read from the archive ({exc})"
                continue
            if len(data) > MAX_FILE_BYTES:
                yield key, None, f"file is over the {MAX_FILE_BYTES} byte limit"
                continue
            yield key, data, None


def _read_image_tree(source: Path, folders_as: str, multi_label: bool,
                     skipped: list[dict]) -> list[_Record]:
    records = []
    for key, data, why in _image_files(source):
        if why is None and data is not None:
            info, why = check_image(data)
        if why is not None or data is None:
            skipped.append({"file": key, "reason": why})
            continue
        parts = key.split("/")
        folder = parts[-2] if len(parts) > 1 else None
        labels = [folder] if folder else None
        record = _Record(
            key=key,
            sha256=sha256_bytes(data),
            media=data,
            suffix=_image_suffix(key, info),
            metadata={"file": parts[-1], **info},
        )
        if folders_as == "label":
            record.labels = labels
        elif folders_as == "gold":
            record.gold = labels
        records.append(record)
    return records


def _read_image_manifest(source: Path, image_column: str | None, label_column: str | None,
                         gold_column: str | None, multi_label: bool, encoding: str,
                         skipped: list[dict]) -> list[_Record]:
    frame = read_table(source, encoding)
    column = _pick_column(frame, image_column, ("image", "path", "file", "source-ref"),
                          "image column", "--image-column", source)
    for col, role in ((label_column, "label column"), (gold_column, "gold column")):
        if col:
            _require_column(frame, col, role, source)
    base = source.parent.resolve()
    records = []
    for number, row in frame.iterrows():
        ref = str(row[column]).strip()
        if not ref:
            skipped.append({"file": f"row {number}", "reason": f"empty {column!r}"})
            continue
        try:
            path = (base / ref).resolve()
        except (OSError, ValueError) as exc:
            skipped.append({"file": ref, "reason": f"not a usable path ({exc})"})
            continue
        if not path.is_relative_to(base):
            skipped.append({"file": ref, "reason": "path leaves the manifest's folder"})
            continue
        if not path.is_file():
            skipped.append({"file": ref, "reason": "file not found"})
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            skipped.append({"file": ref, "reason": f"file is over the {MAX_FILE_BYTES} byte "
                                                   "limit"})
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append({"file": ref, "reason": f"cannot be read ({exc.strerror or exc})"})
            continue
        info, why = check_image(data)
        if why:
            skipped.append({"file": ref, "reason": why})
            continue
        others = {c: row[c] for c in frame.columns if c not in (column, label_column, gold_column)}
        records.append(
            _Record(
                key=ref,
                sha256=sha256_bytes(data),
                media=data,
                suffix=_image_suffix(ref, info),
                labels=_cell_labels(row[label_column], multi_label) if label_column else None,
                gold=_cell_labels(row[gold_column], multi_label) if gold_column else None,
                metadata={"file": path.name, **info, **others},
            )
        )
    return records


# ---------------------------------------------------------------- text and tables


def _read_rows(source: Path, modality: str, text_column: str | None, label_column: str | None,
               gold_column: str | None, multi_label: bool, encoding: str,
               skipped: list[dict], numbers: bool = False,
               frame: pd.DataFrame | None = None) -> list[_Record]:
    frame = read_table(source, encoding) if frame is None else frame
    for col, role in ((label_column, "label column"), (gold_column, "gold column")):
        if col:
            _require_column(frame, col, role, source)
    label_cols = [c for c in (label_column, gold_column) if c]
    if modality == "text":
        text_col = _pick_column(frame, text_column, ("text",), "text column", "--text-column",
                                source)
        feature_cols = [text_col]
    else:
        feature_cols = [c for c in frame.columns if c not in label_cols]
        if not feature_cols:
            raise GroundworkError(
                f"{source.name} has no feature columns besides the label/gold columns: "
                "a table needs at least one column to learn from"
            )
        typed = read_table(source, encoding, typed=True)[feature_cols]
    records = []
    read_cell = _number_cell if numbers else _cell_labels
    bad: list[str] = []
    for number in range(len(frame)):
        row = frame.iloc[number]
        if numbers:
            for col in label_cols:
                if read_cell(row[col], False) is None and _cell_labels(row[col], False):
                    bad.append(f"row {number} {col}={shorten(row[col], 30)}")
        if modality == "text":
            cell = row[text_col]
            content = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) \
                else str(cell)
            if not content.strip():
                skipped.append({"file": f"row {number}", "reason": f"empty {text_col!r}"})
                continue
            if len(content) > MAX_TEXT_CHARS:
                skipped.append({"file": f"row {number}", "reason": (
                    f"text of {len(content)} characters is over the {MAX_TEXT_CHARS} character "
                    "limit: split it into smaller items")})
                continue
            metadata = {c: row[c] for c in frame.columns if c not in (text_col, *label_cols)}
        else:
            values = {c: json_safe(v) for c, v in typed.iloc[number].items()}
            content = json.dumps(values, ensure_ascii=False)
            metadata = {}
        records.append(
            _Record(
                key=str(number),
                sha256=sha256_bytes(content.encode("utf-8")),
                content=content,
                labels=read_cell(row[label_column], multi_label) if label_column else None,
                gold=read_cell(row[gold_column], multi_label) if gold_column else None,
                metadata=metadata,
            )
        )
    if bad:
        raise GroundworkError(
            f"{len(bad)} label cells of {source.name} are not numbers ({', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}), but a regression project's labels are "
            "numbers: fix those cells or leave them empty (nothing was imported)")
    return records


def _number_cell(value: object, multi_label: bool = False) -> list[str] | None:
    """A regression label cell as one canonical number; None when empty or not a number."""
    number = parse_number(value)
    return None if number is None else [number_label(number)]


def _read_source(source: Path, modality: str, *, text_column: str | None,
                 image_column: str | None, label_column: str | None, gold_column: str | None,
                 folders_as: str, multi_label: bool, encoding: str,
                 skipped: list[dict], numbers: bool = False,
                 frame: pd.DataFrame | None = None) -> list[_Record]:
    suffix = source.suffix.lower()
    if modality == "image":
        if source.is_dir() or suffix == ".zip":
            if label_column or gold_column:
                raise GroundworkError(
                    "--label-column and --gold-column apply to a CSV manifest; for a folder or "
                    "zip, class sub-folders give labels (see --folders-as)"
                )
            return _read_image_tree(source, folders_as, multi_label, skipped)
        if suffix in TABLE_SUFFIXES + JSONL_SUFFIXES:
            return _read_image_manifest(source, image_column, label_column, gold_column,
                                        multi_label, encoding, skipped)
        raise GroundworkError(
            f"{source.name}: an image import takes a folder, a .zip or a CSV manifest"
        )
    if source.is_dir() or suffix not in TABLE_SUFFIXES + JSONL_SUFFIXES:
        kinds = "a CSV or JSONL file" if modality == "text" else "a CSV file"
        raise GroundworkError(f"{source.name}: a {modality} import takes {kinds}")
    if modality == "tabular" and suffix in JSONL_SUFFIXES:
        raise GroundworkError(f"{source.name}: a tabular import takes a CSV file")
    return _read_rows(source, modality, text_column, label_column, gold_column, multi_label,
                      encoding, skipped, numbers=numbers, frame=frame)


# ---------------------------------------------------------------- augmented manifests


MANIFEST_SUFFIXES = (".manifest",)
_MEDIA_NAME = re.compile(r"^[0-9a-f]{64}\.[a-z0-9]{1,5}$")


@dataclass
class _Manifest:
    """What a Ground Truth augmented manifest holds besides its records."""

    attribute: str
    records: list[_Record]
    multi_label: bool | None  # None when no line carries a human label
    classes: list[str]  # in the manifest's class-index order
    machine: list[str]  # keys of items whose label was a machine label


def _manifest_objects(source: Path, encoding: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not an object is an error."""
    objects = []
    for number, line in enumerate(_decode(source, encoding).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GroundworkError(
                f"line {number} of {source.name} is not valid JSON ({exc.msg} at column "
                f"{exc.colno}): each line of an augmented manifest is one JSON object; fix or "
                "remove that line and import again (nothing was imported)"
            ) from None
        if not isinstance(obj, dict):
            raise GroundworkError(
                f"line {number} of {source.name} is a JSON {type(obj).__name__}, not an object: "
                "each line of an augmented manifest looks like {\"source\": ..., \"<job-name>\": "
                "..., \"<job-name>-metadata\": {...}}; fix that line (nothing was imported)"
            )
        objects.append((number, obj))
    if not objects:
        raise GroundworkError(f"{source.name} has no lines: there is nothing to import")
    return objects


def _label_attributes(obj: dict) -> list[str]:
    """Keys that have a `<key>-metadata` object beside them (Ground Truth's label attributes)."""
    return [k for k in obj if isinstance(obj.get(f"{k}-metadata"), dict)
            and k not in ("source", "source-ref")]


def is_augmented_manifest(source: str | Path, encoding: str = "utf-8") -> bool:
    """A `.manifest` file, or JSON Lines whose first line has a source and a label attribute."""
    source = Path(source)
    suffix = source.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return True
    if suffix not in JSONL_SUFFIXES or not source.is_file():
        return False
    try:
        text = _decode(source, encoding)
    except GroundworkError:
        return False  # the ordinary reader gives the error
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return False
    return (isinstance(obj, dict) and ("source" in obj or "source-ref" in obj)
            and bool(_label_attributes(obj)))


def _manifest_image(ref: str, base: Path, skipped: list[dict]) -> tuple[bytes, dict] | None:
    """The image a `source-ref` names, or None (and a skip) when it cannot be used."""
    try:
        return _manifest_image_at(ref, base, skipped)
    except (OSError, ValueError) as exc:  # a NUL byte in the path, a file that cannot be read
        skipped.append({"file": ref, "reason": f"not a usable path ({exc})"})
        return None


def _manifest_image_at(ref: str, base: Path,
                       skipped: list[dict]) -> tuple[bytes, dict] | None:
    """`_manifest_image` without the guard for paths the OS refuses.

    A relative path is read from the manifest's folder and may not leave it. An
    absolute path is read only when it is a Groundwork media file (what our
    export writes: `.../media/ab/<sha256>.<ext>` whose bytes have that sha256),
    so a manifest cannot pull arbitrary files into the store; when that file is
    gone, the same `media/ab/<name>` next to the manifest is used (a copied store).
    """
    if "://" in ref:
        skipped.append({"file": ref, "reason": "not a local file (download it and use a "
                                               "path relative to the manifest)"})
        return None
    path = Path(ref)
    candidates: list[tuple[Path, bool]] = []  # (path, must be a content-addressed media file)
    if path.is_absolute():
        tail = Path(*path.parts[-3:]) if len(path.parts) >= 3 else None
        media_like = (tail is not None and tail.parts[0] == "media"
                      and _MEDIA_NAME.match(path.name) is not None
                      and tail.parts[1] == path.name[:2])
        resolved = path.resolve()
        if resolved.is_relative_to(base):
            candidates.append((resolved, False))
        elif media_like:
            candidates.append((path, True))
        else:
            skipped.append({"file": ref, "reason": "path leaves the manifest's folder"})
            return None
        if media_like and tail is not None:
            candidates.append(((base / tail).resolve(), True))
    else:
        resolved = (base / ref).resolve()
        if not resolved.is_relative_to(base):
            skipped.append({"file": ref, "reason": "path leaves the manifest's folder"})
            return None
        candidates.append((resolved, False))
    for candidate, content_addressed in candidates:
        if not candidate.is_file():
            continue
        if candidate.stat().st_size > MAX_FILE_BYTES:
            skipped.append({"file": ref, "reason": "file is over the size limit"})
            return None
        data = candidate.read_bytes()
        if content_addressed and sha256_bytes(data) != candidate.name.split(".")[0]:
            skipped.append({"file": ref, "reason": "media file does not match its sha256 name"})
            return None
        info, why = check_image(data)
        if why or info is None:
            skipped.append({"file": ref, "reason": why})
            return None
        return data, info
    skipped.append({"file": ref, "reason": "file not found"})
    return None


def _read_augmented_manifest(source: Path, modality: str, attribute: str | None,
                             encoding: str, skipped: list[dict]) -> _Manifest:
    """Read a Ground Truth augmented manifest (ours or Ground Truth's) into records.

    Each line names its item in `source-ref` (images) or `source` (text; for
    tables the row as a JSON object) and its label in the label attribute
    (a class index, or a list of them for multi-label) with
    `<attribute>-metadata` holding `class-name` (single-label) or `class-map`
    (multi-label). An empty list is a multi-label answer that no tag applies,
    imported as the empty set, as it was given. Labels marked `human-annotated:
    no` are machine labels (an empty set too): their items are imported without
    a label. Any line that is malformed stops the whole import with the line
    number.
    """
    objects = _manifest_objects(source, encoding)
    name = source.name
    if attribute is None:
        found = _label_attributes(objects[0][1])
        if not found:
            raise GroundworkError(
                f"line {objects[0][0]} of {name} has no label attribute: an augmented manifest "
                "line holds the label under the job name and its '<job-name>-metadata' object; "
                "if this file is plain JSON Lines, rename it to .jsonl and pass --text-column"
            )
        if len(found) > 1:
            raise GroundworkError(
                f"{name} has several label attributes ({', '.join(found)}): pass "
                "--label-column with the one to import"
            )
        attribute = found[0]
    meta_key = f"{attribute}-metadata"
    ref_key = "source-ref" if modality == "image" else "source"
    base = source.parent.resolve()
    index_names: dict[int, str] = {}
    records: list[_Record] = []
    machine: list[str] = []
    multi: bool | None = None
    multi_line = 0
    for row_number, (number, obj) in enumerate(objects):
        where = f"line {number} of {name}"
        if ref_key not in obj:
            other = "source" if ref_key == "source-ref" else "source-ref"
            hint = (f"; it has {other!r}: import it as "
                    f"{'an image' if other == 'source-ref' else 'a text or table'} project"
                    if other in obj else "")
            raise GroundworkError(
                f"{where} has no {ref_key!r}: {'an' if modality == 'image' else 'a'} "
                f"{modality} manifest names each item in "
                f"{ref_key!r}{hint} (nothing was imported)"
            )
        if attribute not in obj or not isinstance(obj.get(meta_key), dict):
            raise GroundworkError(
                f"{where} has no label attribute {attribute!r} with a {meta_key!r} object: "
                f"every line needs both; fix or remove that line (nothing was imported)"
            )
        value, meta = obj[attribute], obj[meta_key]
        labels: list[str] | None = _manifest_labels(where, attribute, value, meta,
                                                    index_names)
        is_multi = isinstance(value, list)
        if multi is None:
            multi, multi_line = is_multi, number
        elif multi != is_multi:
            raise GroundworkError(
                f"{where} has a {'multi' if is_multi else 'single'}-label answer but line "
                f"{multi_line} has a {'multi' if multi else 'single'}-label one: a manifest "
                "holds one kind (nothing was imported)"
            )
        key = obj.get("key")
        ref = obj[ref_key]
        if not isinstance(ref, str) or not ref.strip():
            skipped.append({"file": f"line {number}", "reason": f"empty {ref_key!r}"})
            continue
        if key is None:
            key = ref if modality == "image" else str(row_number)
        key = str(key)
        if str(meta.get("human-annotated", "yes")).strip().lower() == "no" \
                and labels is not None:
            machine.append(key)
            labels = None
        others = {k: v for k, v in obj.items() if k not in (ref_key, "key", attribute, meta_key)}
        if modality == "image":
            found_image = _manifest_image(ref, base, skipped)
            if found_image is None:
                continue
            data, info = found_image
            records.append(_Record(key=key, sha256=sha256_bytes(data), media=data,
                                   suffix=_image_suffix(ref, info), labels=labels,
                                   metadata={"file": Path(ref).name, **info, **others}))
            continue
        if modality == "tabular":
            try:
                values = json.loads(ref)
            except json.JSONDecodeError:
                values = None
            if not isinstance(values, dict):
                raise GroundworkError(
                    f"{where}: 'source' of a table row must be a JSON object of its columns, "
                    "as `groundwork export --format manifest` writes it (nothing was imported)"
                )
            content = json.dumps(values, ensure_ascii=False)
            others = {}
        else:
            content = ref
            if len(content) > MAX_TEXT_CHARS:
                skipped.append({"file": key, "reason": (
                    f"text of {len(content)} characters is over the {MAX_TEXT_CHARS} character "
                    "limit: split it into smaller items")})
                continue
        records.append(_Record(key=key, sha256=sha256_bytes(content.encode("utf-8")),
                               content=content, labels=labels, metadata=others))
    classes = [index_names[i] for i in sorted(index_names)]
    return _Manifest(attribute, records, multi, classes, machine)


def _manifest_labels(where: str, attribute: str, value: object, meta: dict,
                     index_names: dict[int, str]) -> list[str]:
    """The class names of one manifest answer; records which index each name had."""
    meta_key = f"{attribute}-metadata"

    def is_index(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def remember(index: int, class_name: object) -> str:
        if not isinstance(class_name, str) or not class_name.strip():
            raise GroundworkError(
                f"{where}: class {index} in {meta_key!r} has no name (nothing was imported)")
        index_names.setdefault(index, class_name.strip())
        return class_name.strip()

    if isinstance(value, list):
        class_map = meta.get("class-map")
        if not isinstance(class_map, dict):
            if value:
                raise GroundworkError(
                    f"{where}: the multi-label answer {value} needs a 'class-map' in "
                    f"{meta_key!r} naming each class index (nothing was imported)"
                )
            class_map = {}
        names = []
        for index in value:
            if not is_index(index):
                raise GroundworkError(
                    f"{where}: {attribute!r} holds {index!r}, not a class index "
                    "(nothing was imported)")
            if str(index) not in class_map:
                raise GroundworkError(
                    f"{where}: class {index} of {attribute!r} is not in the class-map of "
                    f"{meta_key!r} ({json.dumps(class_map, ensure_ascii=False)}): add it to "
                    "the class-map or remove it from the answer (nothing was imported)"
                )
            names.append(remember(index, class_map[str(index)]))
        # `[]` is an answer (no tag applies; the Label page's 0), not a missing label: the
        # caller drops it only when it is a machine label.
        return list(dict.fromkeys(names))
    if not is_index(value):
        raise GroundworkError(
            f"{where}: {attribute!r} holds {value!r}; a label attribute holds a class index "
            "(single-label) or a list of them (multi-label) (nothing was imported)"
        )
    class_map = meta.get("class-map")
    class_name = meta.get("class-name")
    if class_name is None and isinstance(class_map, dict):
        if str(value) not in class_map:
            raise GroundworkError(
                f"{where}: class {value} of {attribute!r} is not in the class-map of "
                f"{meta_key!r} ({json.dumps(class_map, ensure_ascii=False)}): add it to the "
                "class-map (nothing was imported)"
            )
        class_name = class_map[str(value)]
    if class_name is None:
        raise GroundworkError(
            f"{where}: {meta_key!r} has no 'class-name' for class {value}: a single-label "
            "answer names its class there (nothing was imported)"
        )
    return [remember(int(value), class_name)]


# ---------------------------------------------------------------- the import


def _classes_for(records: Iterable[_Record], given: list[str] | None,
                 existing: Project | None) -> list[str]:
    """The project's classes after the import: given or existing first, then new ones found."""
    found: list[str] = []
    where: dict[str, str] = {}
    for record in records:
        for labels in (record.labels, record.gold):
            for label in labels or ():
                if label not in found:
                    found.append(label)
                    where[label] = record.key
    old = existing.classes if existing else []
    for name in given or ():
        _check_class_name(str(name).strip(), "--classes")
    for name in found:
        if name not in old:
            _check_class_name(name, f"item {shorten(where[name])}")
    base = clean_classes(old + (given or []))
    if given:
        unknown = [c for c in found if c not in base]
        if unknown:
            raise GroundworkError(
                f"labels {', '.join(shorten(c) for c in unknown[:5])} in the source are not "
                f"among the classes {', '.join(base)}: add them to --classes or fix the data"
            )
    return clean_classes(base + sorted(found, key=_natural))


def shorten(value: object, limit: int = 60) -> str:
    """A value as it appears in an error message: quoted, one line, at most `limit` characters."""
    text = repr(str(value))
    return text if len(text) <= limit else f"{text[: limit - 5]}...' ({len(str(value))} chars)"


def _check_class_name(name: str, where: str) -> None:
    """A class is a short name a person picks by key; refuse what can never be picked."""
    if len(name) > MAX_CLASS_CHARS:
        raise GroundworkError(
            f"the label {shorten(name)} of {where} is longer than {MAX_CLASS_CHARS} characters: "
            "a class is a short name; is the label column really the text column? "
            "(nothing was imported)"
        )
    if any(sep in name for sep in _LABEL_SEPARATORS):
        raise GroundworkError(
            f"the label {shorten(name)} of {where} contains a separator (, ; |), so it would "
            "be read as several labels: rename the class (nothing was imported)"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise GroundworkError(
            f"the label {shorten(name)} of {where} contains a control character (a line break "
            "or tab): rename the class (nothing was imported)"
        )


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def import_source(
    db: sqlite_utils.Database,
    project_name: str,
    source: str | Path,
    modality: str,
    *,
    task: str | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    gold_column: str | None = None,
    classes: list[str] | None = None,
    folders_as: str = "label",
    encoding: str = "utf-8",
    user: str = "import",
    strict: bool = False,
) -> ImportReport:
    """Import a source into a project (created if missing), in one transaction.

    Without `task`, a new project is single-label, except a table whose label
    (or gold) column holds quantities (`labeling.targets.is_regression_target`):
    that one becomes a regression project, and the report's notes say so.
    """
    name = validate_name(project_name)
    if modality not in MODALITIES:
        raise GroundworkError(f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}")
    explicit = task is not None
    task = task or "single-label"
    if task not in TASKS:
        raise GroundworkError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if folders_as not in FOLDERS_AS:
        raise GroundworkError(
            f"unknown --folders-as {folders_as!r}: use one of {', '.join(FOLDERS_AS)}"
        )
    if label_column and label_column == gold_column:
        raise GroundworkError("the label column and the gold column must differ")
    source = Path(source)
    if not source.exists():
        raise GroundworkError(f"source {str(source)!r} does not exist")
    existing = find_project(db, name)
    if existing is not None:
        if existing.modality != modality:
            raise GroundworkError(
                f"project {name!r} holds {existing.modality} items, not {modality}: import into "
                "another project"
            )
        # One class per item fits a multi-label project; any other mismatch is refused.
        if explicit and existing.task != task and (task, existing.task) != (
                "single-label", "multi-label"):
            raise GroundworkError(f"project {name!r} is {existing.task}, not {task}: import "
                                  f"without --task, or into another project")
        task = existing.task
    if task == "regression" and modality != "tabular":
        raise GroundworkError(f"regression (a number per item) is for tabular projects, not "
                              f"{modality}: use --task single-label or multi-label")
    multi_label = task == "multi-label"
    inferred_from = None
    frame = None
    if (modality == "tabular" and existing is None and not explicit and classes is None
            and (label_column or gold_column) and source.suffix.lower() in TABLE_SUFFIXES
            and source.is_file()):
        frame = read_table(source, encoding)
        for col in (label_column, gold_column):
            if col and col in frame.columns and is_regression_target(frame[col]):
                task, inferred_from = "regression", col
                break

    skipped: list[dict] = []
    manifest = None
    if is_augmented_manifest(source, encoding) and (
        source.suffix.lower() in MANIFEST_SUFFIXES or not (text_column or image_column)
    ):
        if gold_column:
            raise GroundworkError(
                "--gold-column does not apply to an augmented manifest: its labels come from "
                "the label attribute (choose it with --label-column)"
            )
        manifest = _read_augmented_manifest(source, modality, label_column, encoding, skipped)
        records = manifest.records
        if manifest.multi_label and not multi_label:
            if existing is not None:
                raise GroundworkError(
                    f"{source.name} holds multi-label answers but project {name!r} is "
                    "single-label: import it into a new or a multi-label project"
                )
            task, multi_label = "multi-label", True
    else:
        records = _read_source(
            source, modality, text_column=text_column, image_column=image_column,
            label_column=label_column, gold_column=gold_column, folders_as=folders_as,
            multi_label=multi_label, encoding=encoding, skipped=skipped,
            numbers=task == "regression", frame=frame,
        )
    records = _unique_keys(records, skipped)
    if strict and skipped:
        first = skipped[0]
        raise GroundworkError(
            f"{len(skipped)} files could not be imported (first: {first['file']}: "
            f"{first['reason']}); nothing was imported (--strict)"
        )
    if not records:
        detail = f" (first: {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
        raise GroundworkError(
            f"nothing to import from {source.name}: {len(skipped)} files skipped{detail}"
        )
    for record in records:
        if not multi_label and record.labels and len(record.labels) > 1:
            raise GroundworkError(
                f"item {shorten(record.key)} has several labels "
                f"({', '.join(shorten(label, 40) for label in record.labels[:5])}) but the "
                "project is single-label: import with --task multi-label, or give each item "
                "one label (nothing was imported)"
            )
    if task == "regression":
        if manifest is not None:
            raise GroundworkError("an augmented manifest holds class labels; a regression "
                                  "project imports a CSV table with a numeric label column")
        if classes:
            raise GroundworkError("a regression project has no classes (its labels are "
                                  "numbers): leave out --classes")
        return _import_records(db, name, modality, task, [], existing, records, skipped,
                               user, inferred_from)
    # A manifest's classes keep its class-index order unless --classes says otherwise.
    given = classes if classes is not None or manifest is None else manifest.classes
    new_classes = _classes_for(records, given, existing)
    if not new_classes:
        raise GroundworkError(
            "no classes: pass --classes a,b,c, or a --label-column/--gold-column, or class "
            "sub-folders"
        )
    if len(new_classes) < 2 and classes is None and existing is None:
        raise GroundworkError(
            f"only one class found ({new_classes[0]}): a classifier needs at least two; pass "
            "--classes with every class the project should have"
        )

    report = _import_records(db, name, modality, task, new_classes, existing, records, skipped,
                             user, None, manifest)
    return report


def _import_records(db: sqlite_utils.Database, name: str, modality: str, task: str,
                    new_classes: list[str], existing: Project | None, records: list[_Record],
                    skipped: list[dict], user: str, inferred_from: str | None,
                    manifest: _Manifest | None = None) -> ImportReport:
    """Write the read records in one transaction (media removed again if it fails)."""
    report = ImportReport(project=name, created=existing is None, classes=new_classes)
    if inferred_from is not None:
        report.notes.append(
            f"column {inferred_from!r} holds quantities (many distinct numbers), so the project "
            "was created for regression: its labels are numbers; import with --task "
            "single-label to treat them as classes instead")
    if manifest is not None and manifest.machine:
        report.machine_labels_not_imported = len(manifest.machine)
        report.notes.append(
            f"{len(manifest.machine)} machine labels (human-annotated: no) were not imported "
            "as labels; their items were imported unlabeled"
        )
    data_dir = data_dir_of(db)
    created: list[str] = []  # media files this import wrote, removed again if it fails
    try:
        with db.atomic():
            _write(db, report, name, modality, task, new_classes, existing, records, data_dir,
                   user, created)
    except BaseException:
        discard_media(db, data_dir, created)
        raise
    report.skipped = skipped
    project = get_project(db, name)
    report.classes = project.classes
    report.task = project.task
    return report


def _unique_keys(records: list[_Record], skipped: list[dict]) -> list[_Record]:
    """The first record of each key; later ones are listed as skipped duplicates."""
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.key in seen:
            skipped.append({"file": record.key, "reason": "duplicate key in the source (the "
                                                          "first one was kept)"})
            continue
        seen.add(record.key)
        unique.append(record)
    return unique


def _write(db: sqlite_utils.Database, report: ImportReport, name: str, modality: str,
           task: str, new_classes: list[str], existing: Project | None,
           records: list[_Record], data_dir: Path, user: str, created: list[str]) -> None:
    """The import's writes; the caller holds the transaction."""
    project = existing or create_project(db, name, modality, task, new_classes)
    if project.classes != new_classes:
        project = set_classes(db, project, new_classes)
    known = existing_keys(db, project)
    fresh: list[_Record] = []
    for record in records:
        if record.key in known:
            report.duplicates += 1
        else:
            fresh.append(record)
    rows = []
    for record in fresh:
        row = {"key": record.key, "sha256": record.sha256, "content": record.content,
               "metadata": record.metadata, "gold": record.gold}
        if record.media is not None:
            row["media_path"], _ = store_media(data_dir, record.media, record.suffix,
                                               created=created)
        rows.append(row)
    report.imported = add_items(db, project, rows)
    report.gold = sum(1 for r in fresh if r.gold)
    # An empty set is a label (a multi-label "no tags" answer read from a manifest); no
    # reader gives one for a blank cell, which is None.
    labeled = [r for r in fresh if r.labels is not None]
    if labeled:
        ids = item_ids_by_key(db, project, [r.key for r in labeled])
        now = utcnow()
        db["annotations"].insert_all(
            (
                {
                    "project_id": project.id,
                    "item_id": ids[r.key],
                    "user": user or "import",
                    "labels": json.dumps(r.labels),
                    "source": "import",
                    "created_at": now,
                    "duration_ms": None,
                    "confidence": None,
                    "model_version_id": None,
                    "retracted_at": None,
                }
                for r in labeled
            ),
            batch_size=1000,
        )
        id_list = [ids[r.key] for r in labeled]
        for start in range(0, len(id_list), 500):
            chunk = id_list[start : start + 500]
            db.execute(
                f"UPDATE items SET n_labels = n_labels + 1 WHERE id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            )
    report.labeled = len(labeled)


# ---------------------------------------------------------------- batch prediction input


def read_prediction_input(
    source: str | Path,
    modality: str,
    *,
    text_column: str | None = None,
    image_column: str | None = None,
    exclude_columns: Sequence[str] = (),
    workdir: str | Path | None = None,
    encoding: str = "utf-8",
) -> tuple[list[str], list[str] | pd.DataFrame]:
    """Keys and model input for a new file, shaped like `labeling.inputs.model_input`.

    Unreadable images are left out (their keys are absent from the output);
    images from a zip are unpacked into `workdir`, which the caller removes.
    """
    source = Path(source)
    if not source.exists():
        raise GroundworkError(f"input {str(source)!r} does not exist")
    if modality == "image":
        skipped: list[dict] = []
        if source.is_dir() or source.suffix.lower() == ".zip":
            records = _read_image_tree(source, "none", False, skipped)
        else:
            records = _read_image_manifest(source, image_column, None, None, False, encoding,
                                           skipped)
        if not records:
            raise GroundworkError(f"no readable images in {source.name}")
        if workdir is None:
            raise GroundworkError("image prediction needs a working folder")
        paths = []
        for record in records:
            target = Path(workdir) / f"{record.sha256}{record.suffix}"
            target.write_bytes(record.media or b"")
            paths.append(str(target))
        return [r.key for r in records], paths
    if modality == "text":
        frame = read_table(source, encoding)
        column = _pick_column(frame, text_column, ("text",), "text column", "--text-column",
                              source)
        return [str(i) for i in range(len(frame))], frame[column].fillna("").astype(str).tolist()
    if modality != "tabular":
        raise GroundworkError(f"unknown modality {modality!r}")
    frame = read_table(source, encoding, typed=True)
    frame = frame.drop(columns=[c for c in exclude_columns if c in frame.columns])
    # As on import: infinities (and numbers too large for a float) are missing values.
    frame = frame.replace([math.inf, -math.inf], math.nan)
    return [str(i) for i in range(len(frame))], frame.reset_index(drop=True)
