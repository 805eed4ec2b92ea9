"""The bad-input corpus: every input in `tests/bad_inputs/` (and the big ones built here).

Three outcomes, and nothing else:

- refused: a `GroundworkError` that says what was wrong and what to do, the
  same one-line `error: ...` from the CLI with a non-zero exit and no
  traceback, and a store that is byte-for-byte what it was (every table's rows
  and every file under the data folder, media included);
- skipped: inside an otherwise good import, the report names the bad file and
  why, and the store holds exactly what importing the good part alone gives;
- accepted: odd but valid input (BOMs, CMYK, 16-bit, palette, LA, EXIF-rotated
  images, NaN/inf in tables) imports, shows upright in 8 bits, and trains.

Small inputs are committed (regenerate them with `tests/bad_inputs/make_corpus.py`);
decompression bombs and files over the size limits are built by fixtures here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps
from streamlit.elements.lib.image_utils import image_to_url
from streamlit.elements.lib.layout_utils import LayoutConfig

import cli
from automl.features import image_vector
from automl.predict import predict_file
from automl.training import train_project, validate_training
from labeling import importers
from labeling.annotations import record_annotation
from labeling.errors import GroundworkError
from labeling.export import export_project, neutralise
from labeling.importers import import_source, read_prediction_input
from labeling.items import iter_items, media_file
from labeling.media import display_image
from labeling.projects import get_project
from labeling.store import connect
from tests.bad_inputs.make_corpus import (
    digit_image,
    encoded,
    good_members,
    spam_rows,
    zip_bytes,
)

CORPUS = Path(__file__).parent / "bad_inputs"
GOOD_ZIP_COUNT = len(good_members())


# ---------------------------------------------------------------- what "unchanged" means


def store_state(db) -> dict:
    """Every row of every table and every file under the data folder, hashed.

    Two equal states mean nothing an import, an answer or a training run could
    write has changed: not a row, not a media file, not a stray temporary file.
    """
    state: dict = {}
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    for table in tables:
        rows = db.execute(f"SELECT * FROM [{table}] ORDER BY 1").fetchall()
        state[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    state["files"] = {
        p.relative_to(db.data_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db.data_dir.rglob("*"))
        if p.is_file() and not p.name.startswith("groundwork.db")
    }
    return state


def content(db) -> dict:
    """What an import lands, without ids, timestamps and random queue ranks."""
    projects = {r[0]: r[1:] for r in db.execute(
        "SELECT id, name, modality, task, classes FROM projects")}
    items = sorted(
        (projects[r[0]][0], *r[1:]) for r in db.execute(
            "SELECT project_id, key, sha256, content, media_path, metadata, gold, n_labels "
            "FROM items"))
    answers = sorted(db.execute(
        "SELECT p.name, i.key, a.labels, a.source, a.user FROM annotations a "
        "JOIN items i ON i.id = a.item_id JOIN projects p ON p.id = a.project_id").fetchall())
    media = sorted(p.relative_to(db.data_dir).as_posix()
                   for p in (db.data_dir / "media").rglob("*") if p.is_file()) \
        if (db.data_dir / "media").exists() else []
    return {"projects": sorted(projects.values()), "items": items, "answers": answers,
            "media": media}


# ---------------------------------------------------------------- the good data around it


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(zip_bytes(members))
    return path


def good_tree(root: Path) -> Path:
    for name, data in good_members():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def spam_csv_text(n: int = 6) -> str:
    return spam_rows(n).to_csv(index=False, lineterminator="\n")


@pytest.fixture
def seeded(db, tmp_path):
    """A store that already holds work: a text project and an image project, with labels."""
    mail = tmp_path / "seed-mail.csv"
    mail.write_text(spam_csv_text())
    import_source(db, "mail", mail, "text", label_column="label")
    import_source(db, "digits", write_zip(tmp_path / "seed.zip", good_members()), "image")
    return db


class Cli:
    def __init__(self, data_dir: Path, capsys) -> None:
        self.data_dir, self.capsys = data_dir, capsys

    def fails(self, *args: object) -> str:
        """Run `groundwork ARGS`; it must fail with one `error: ...` line and no traceback."""
        self.capsys.readouterr()
        code = cli.main([*map(str, args), "--data-dir", str(self.data_dir)])
        out, err = self.capsys.readouterr()
        assert code != 0, out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err
        return lines[0]


@pytest.fixture
def gw(data_dir, capsys) -> Cli:
    return Cli(data_dir, capsys)


# ---------------------------------------------------------------- inputs built at test time


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encoded(digit_image(0).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encoded(digit_image(0), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def zip_bomb(path: Path, inflated: int) -> Path:
    """A real zip bomb: `inflated` bytes of zeros deflated into a member under 1 MB."""
    with zipfile.ZipFile(path, "w", compresslevel=1) as zf:
        for name, data in good_members():
            zf.writestr(name, data)
        info = zipfile.ZipInfo("1/bomb.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(inflated >> 20):
                fh.write(chunk)
    assert path.stat().st_size < 2 * 1024**2
    return path


def zip_claiming_total(path: Path, each: int) -> Path:
    """Good members whose central directory claims `each` bytes apiece once unpacked."""
    raw = bytearray(zip_bytes(good_members()))
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        struct.pack_into("<I", raw, pos + 24, each)
        pos = raw.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(raw))
    return path


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk space (only its size is ever looked at)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


# ---------------------------------------------------------------- refused: nothing changes


@dataclass
class Refused:
    id: str
    source: str | Callable[[Path], Path]  # a corpus file, or a builder given tmp_path
    modality: str
    match: str
    project: str = "bad"
    options: dict = field(default_factory=dict)


def corpus(rel: str) -> Callable[[Path], Path]:
    """A copy of a corpus file (so a test can never change the corpus)."""
    def build(tmp: Path) -> Path:
        target = tmp / "in" / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / rel, target)
        return target
    return build


def with_good_tree(rel: str) -> Callable[[Path], Path]:
    """A corpus manifest beside the good digit tree it refers to."""
    def build(tmp: Path) -> Path:
        good_tree(tmp / "in")
        return corpus(rel)(tmp)
    return build


def built(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / "in").mkdir(exist_ok=True)
        return make(tmp / "in")
    return build


REFUSED = [
    # zips: an unsafe member refuses the whole archive
    Refused("zip-slip-dotdot", "zips/slip-dotdot.zip", "image",
            r"unsafe member '\.\./evil\.png' \('\.\.' in its path\); nothing was imported: "
            r"re-create the archive"),
    Refused("zip-slip-nested", "zips/slip-nested-dotdot.zip", "image",
            r"unsafe member '0/\.\./\.\./evil\.png' \('\.\.' in its path\)"),
    Refused("zip-slip-absolute", "zips/slip-absolute.zip", "image",
            r"unsafe member '/tmp/evil\.png' \(absolute path\)"),
    Refused("zip-slip-backslash", "zips/slip-backslash.zip", "image",
            r"unsafe member .*evil\.png' \('\.\.' in its path\)"),
    Refused("zip-slip-drive", "zips/slip-drive.zip", "image",
            r"unsafe member 'C:/evil\.png' \(absolute path\)"),
    Refused("zip-symlink-member", "zips/symlink.zip", "image",
            r"unsafe member '1/passwd\.png' \(symbolic link\)"),
    Refused("zip-truncated", "zips/truncated.zip", "image",
            r"truncated\.zip is not a readable zip file .*re-create the archive"),
    Refused("zip-not-a-zip", "zips/not-a-zip.zip", "image",
            r"not-a-zip\.zip is not a readable zip file"),
    Refused("zip-empty", "zips/empty.zip", "image",
            r"nothing to import from empty\.zip: 0 files skipped"),
    Refused("zip-junk-only", "zips/junk-only.zip", "image",
            r"nothing to import from junk-only\.zip"),
    Refused("zip-claims-8gb", built(lambda d: zip_claiming_total(d / "claims.zip", 2**31)),
            "image", r"claims\.zip would unpack to 8589934592 bytes, over the 4294967296 byte "
                     r"limit: split it"),
    Refused("zip-bad-member-strict", "zips/nested-zip.zip", "image",
            r"1 files could not be imported \(first: 1/inner\.zip: not an image.*--strict",
            options={"strict": True}),
    Refused("folder-only-bad-images", built(lambda d: Path(shutil.copytree(
        CORPUS / "images", d / "images"))), "image",
        r"nothing to import from images: 7 files skipped \(first: corrupt\.png: "),
    # CSV: encodings and structure
    Refused("csv-latin1", "csv/latin1.csv", "text",
            r"latin1\.csv is not valid utf-8: byte 0xe9 on line 2 \(position \d+\) cannot be "
            r"decoded; "
            r"save the file as UTF-8 or pass its encoding \(e\.g\. --encoding latin-1",
            options={"label_column": "label"}),
    Refused("csv-cp1252", "csv/cp1252.csv", "text",
            r"cp1252\.csv is not valid utf-8: byte 0xe9 on line 2 .*--encoding cp1252",
            options={"label_column": "label"}),
    Refused("csv-utf16-without-bom", "csv/utf16le-no-bom.csv", "text",
            r"contains NUL bytes, so it is not utf-8 text: it may be UTF-16 without a "
            r"byte-order mark \(pass --encoding utf-16\)", options={"label_column": "label"}),
    Refused("csv-png-bytes", "csv/png-named.csv", "text",
            r"png-named\.csv is not valid utf-8: byte 0x89 on line 1 \(position 0\)"),
    Refused("csv-unknown-encoding", "csv/utf8-bom.csv", "text",
            r"unknown encoding 'klingon': use a Python codec name such as utf-8",
            options={"encoding": "klingon"}),
    Refused("csv-ragged-late-row", "csv/ragged-late-row.csv", "text",
            r"not a well-formed CSV \(Error tokenizing data\. C error: Expected 2 fields in "
            r"line 5, saw 4\): every row needs the same number of fields",
            options={"label_column": "label"}),
    Refused("csv-ragged-first-row", "csv/ragged-first-row.csv", "text",
            r"not a well-formed CSV \(line 2 has 3 fields but the header has 2\)",
            options={"label_column": "label"}),
    Refused("csv-unterminated-quote", "csv/unterminated-quote.csv", "text",
            r"not a well-formed CSV \(line 2: .*so a quote is left open or misplaced\).*close "
            r"every quote",
            options={"label_column": "label"}),
    Refused("csv-duplicate-columns", "csv/duplicate-columns.csv", "text",
            r"duplicate column names \(text\): rename them so each column is unique",
            options={"label_column": "label"}),
    Refused("csv-no-text-column", "csv/no-text-column.csv", "text",
            r"has no text column named 'text': pass --text-column with one of the columns "
            r"found: body, label", options={"label_column": "label"}),
    Refused("csv-missing-named-column", "csv/no-text-column.csv", "text",
            r"has no column 'text' \(asked for as the text column\); columns found: body, label",
            options={"text_column": "text"}),
    Refused("csv-missing-label-column", "csv/utf8-bom.csv", "text",
            r"has no column 'klass' \(asked for as the label column\); columns found: text, "
            r"label", options={"label_column": "klass"}),
    Refused("csv-label-is-gold", "csv/utf8-bom.csv", "text",
            r"the label column and the gold column must differ",
            options={"label_column": "label", "gold_column": "label"}),
    Refused("csv-empty", "csv/empty.csv", "text", r"empty\.csv is empty: there is nothing"),
    Refused("csv-blank", "csv/blank.csv", "text", r"blank\.csv is empty"),
    Refused("csv-header-only", "csv/header-only.csv", "text",
            r"header-only\.csv has a header but no rows"),
    Refused("csv-empty-texts", "csv/empty-texts.csv", "text",
            r"nothing to import from empty-texts\.csv: 2 files skipped \(first: row 0: empty "
            r"'text'\)", options={"label_column": "label"}),
    Refused("csv-over-size-limit",
            built(lambda d: sparse(d / "huge.csv", importers.MAX_TABLE_BYTES + 1,
                                   spam_csv_text().encode())),
            "text", r"huge\.csv is 1073741825 bytes, over the 1073741824 byte limit for a CSV "
                    r"or JSONL file: split it"),
    Refused("csv-missing-file", built(lambda d: d / "nowhere.csv"), "text",
            r"source '.*nowhere\.csv' does not exist"),
    # labels
    Refused("label-not-in-classes", "csv/unknown-label.csv", "text",
            r"labels 'eggs' in the source are not among the classes ham, spam: add them to "
            r"--classes", options={"label_column": "label", "classes": ["ham", "spam"]}),
    Refused("multi-label-in-single-label", "csv/multi-label-in-single.csv", "text",
            r"item '1' has several labels \('ham', 'spam'\) but the project is single-label: "
            r"import with --task multi-label", options={"label_column": "label"}),
    Refused("line-break-in-label", "csv/newline-in-label.csv", "text",
            r"the label 'ha\\nm' of item '2' contains a control character",
            options={"label_column": "label"}),
    Refused("text-column-as-label", "csv/text-as-label.csv", "text",
            r"the label '.*\(\d+ chars\) of item '0' is longer than 200 characters: a class is a "
            r"short name; is the label column really the text column\?",
            options={"label_column": "label"}),
    # modality and shape
    Refused("text-project-as-table", "csv/utf8-bom.csv", "tabular",
            r"project 'mail' holds text items, not tabular: import into another project",
            project="mail"),
    Refused("zip-as-text", "zips/empty.zip", "text",
            r"empty\.zip: a text import takes a CSV or JSONL file"),
    Refused("csv-as-image-manifest", "csv/utf8-bom.csv", "image",
            r"has no image column named 'image' or 'path' or 'file' or 'source-ref': pass "
            r"--image-column"),
    Refused("table-without-features", "csv/label-only-table.csv", "tabular",
            r"has no feature columns besides the label/gold columns",
            options={"label_column": "cultivar"}),
    Refused("jsonl-as-table", "jsonl/utf8-bom.jsonl", "tabular",
            r"utf8-bom\.jsonl: a tabular import takes a CSV file"),
    # JSON Lines
    Refused("jsonl-invalid-line", "jsonl/invalid-line.jsonl", "text",
            r"line 3 of invalid-line\.jsonl is not valid JSON \(.*\): each line of a JSONL file "
            r"must be one JSON object", options={"label_column": "label"}),
    Refused("jsonl-array-line", "jsonl/array-line.jsonl", "text",
            r"line 2 of array-line\.jsonl is a JSON list, not an object",
            options={"label_column": "label"}),
    Refused("jsonl-blank", "jsonl/blank-lines.jsonl", "text", r"blank-lines\.jsonl is empty"),
    Refused("jsonl-list-in-single-label", "jsonl/list-labels.jsonl", "text",
            r"item '1' has several labels \('ham', 'spam'\) but the project is single-label",
            options={"label_column": "label"}),
    # Ground Truth manifests
    Refused("manifest-not-json", "manifest/not-json.manifest", "text",
            r"line 4 of not-json\.manifest is not valid JSON .*\(nothing was imported\)"),
    Refused("manifest-index-not-in-class-map", "manifest/index-not-in-class-map.manifest",
            "text", r"line 3 of index-not-in-class-map\.manifest: class 7 of 'mail' is not in "
                    r"the class-map"),
    Refused("manifest-comma-in-class-name", "manifest/comma-in-class-name.manifest", "text",
            r"the label 'ham,spam' of item '1' contains a separator \(, ; \|\)"),
    Refused("manifest-empty", "manifest/empty.manifest", "text", r"empty\.manifest is empty"),
]


def cli_args(case: Refused, source: Path) -> list[str]:
    args = ["import", case.project, source, "--modality", case.modality]
    for option, value in case.options.items():
        if option == "strict":
            args.append("--strict")
        else:
            flag = "--" + option.replace("_", "-")
            args += [flag, ",".join(value) if isinstance(value, list) else value]
    return args


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_refused_inputs_say_why_and_change_nothing(case, seeded, gw, tmp_path):
    build = corpus(case.source) if isinstance(case.source, str) else case.source
    source = build(tmp_path)
    before = store_state(seeded)
    with pytest.raises(GroundworkError) as err:
        import_source(seeded, case.project, source, case.modality, **case.options)
    message = str(err.value)
    assert re.search(case.match, message), message
    assert "\n" not in message and len(message) < 700, message
    assert store_state(seeded) == before
    line = gw.fails(*cli_args(case, source))
    assert re.search(case.match, line), line
    assert store_state(seeded) == before
    assert not list(tmp_path.glob("evil*")) and not Path("/tmp/evil.png").exists()


# ---------------------------------------------------------------- skipped: listed, rest lands


@dataclass
class Skipped:
    id: str
    build: Callable[[Path], tuple[Path, Path]]  # tmp -> (source with bad parts, good-only source)
    modality: str
    skipped: dict[str, str]  # file -> reason pattern
    options: dict = field(default_factory=dict)


def zip_plus(*bad: tuple[str, bytes | str]) -> Callable[[Path], tuple[Path, Path]]:
    """The good zip plus bad members (bytes, or a corpus file name)."""
    def build(tmp: Path) -> tuple[Path, Path]:
        members = [(name, (CORPUS / data).read_bytes() if isinstance(data, str) else data)
                   for name, data in bad]
        return (write_zip(tmp / "bad.zip", [*good_members(), *members]),
                write_zip(tmp / "good.zip", good_members()))
    return build


def corpus_zip(rel: str) -> Callable[[Path], tuple[Path, Path]]:
    return lambda tmp: (corpus(rel)(tmp), write_zip(tmp / "good.zip", good_members()))


def folder_plus(add: Callable[[Path], None]) -> Callable[[Path], tuple[Path, Path]]:
    def build(tmp: Path) -> tuple[Path, Path]:
        bad = good_tree(tmp / "bad")
        add(bad)
        return bad, good_tree(tmp / "good")
    return build


def manifest_beside_tree(rel: str, good_lines: Callable[[str], bool]):
    """A corpus manifest next to the good tree, and the same manifest with only good lines."""
    def build(tmp: Path) -> tuple[Path, Path]:
        bad = corpus(rel)(tmp)
        good_tree(bad.parent)
        good_dir = tmp / "good"
        good_tree(good_dir)
        lines = (CORPUS / rel).read_text().splitlines(keepends=True)
        good = good_dir / Path(rel).name
        good.write_text(lines[0] * rel.endswith(".csv")
                        + "".join(line for line in lines[rel.endswith(".csv"):]
                                  if good_lines(line)))
        return bad, good
    return build


def text_plus_rows(extra: str, position: int = 2) -> Callable[[Path], tuple[Path, Path]]:
    """The good spam CSV with a bad row inserted; keys are row numbers, so the good-only
    source keeps the same numbering by leaving an empty (skipped) row in its place."""
    def build(tmp: Path) -> tuple[Path, Path]:
        lines = spam_csv_text().splitlines()
        bad = tmp / "bad.csv"
        bad.write_text("\n".join([*lines[: position + 1], extra, *lines[position + 1:]]) + "\n")
        good = tmp / "good.csv"
        good.write_text("\n".join([*lines[: position + 1], ",", *lines[position + 1:]]) + "\n")
        return bad, good
    return build


def jsonl_null_text(tmp: Path) -> tuple[Path, Path]:
    bad = corpus("jsonl/null-text.jsonl")(tmp)
    good = tmp / "good.jsonl"
    good.write_text("".join(
        line if json.loads(line)["text"] is not None else json.dumps({"text": "", "label": "ham"})
        + "\n" for line in bad.read_text().splitlines(keepends=True)))
    return bad, good


def duplicate_manifest(tmp: Path) -> tuple[Path, Path]:
    bad = corpus("manifest/duplicate-keys.manifest")(tmp)
    good = tmp / "good.manifest"
    good.write_text("".join(bad.read_text().splitlines(keepends=True)[:-1]))
    return bad, good


def symlink_to_passwd(folder: Path) -> None:
    (folder / "1" / "passwd.png").symlink_to("/etc/passwd")


def huge_file(folder: Path) -> None:
    sparse(folder / "1" / "huge.png", importers.MAX_FILE_BYTES + 1, encoded(digit_image(9),
                                                                            "PNG"))


SKIPPED = [
    Skipped("image-corrupt", zip_plus(("0/corrupt.png", "images/corrupt.png")), "image",
            {"0/corrupt.png": r"^(not an image Pillow can read|corrupt or truncated image)"}),
    Skipped("image-truncated-png", zip_plus(("0/truncated.png", "images/truncated.png")),
            "image", {"0/truncated.png": r"^corrupt or truncated image \((?i:.*truncated)"}),
    Skipped("image-truncated-jpeg", zip_plus(("1/truncated.jpg", "images/truncated.jpg")),
            "image", {"1/truncated.jpg": r"^corrupt or truncated image \((?i:.*truncated)"}),
    Skipped("image-zero-bytes", zip_plus(("0/empty.png", "images/empty.png")), "image",
            {"0/empty.png": r"^empty file \(0 bytes\)$"}),
    Skipped("image-text-named-png", zip_plus(("1/note.png", "images/text-named.png")),
            "image", {"1/note.png": r"^not an image Pillow can read \(supported: PNG, JPEG"}),
    Skipped("image-postscript-never-run", zip_plus(("1/p.eps", "images/postscript.eps")),
            "image", {"1/p.eps": r"^not an image Pillow can read \(supported:"}),
    Skipped("image-svg-with-script", zip_plus(("1/s.svg", "images/script.svg")), "image",
            {"1/s.svg": r"^not an image Pillow can read"}),
    Skipped("bomb-png-1.6-gigapixels", zip_plus(("1/bomb.png", png_claiming(40_000, 40_000))),
            "image", {"1/bomb.png": r"^image too large, refused as a possible decompression "
                                    r"bomb \(Image size \(1600000000 pixels\)"}),
    Skipped("bomb-png-100-megapixels", zip_plus(("1/bomb.png", png_claiming(10_000, 10_000))),
            "image", {"1/bomb.png": r"decompression bomb \(Image size \(100000000 pixels\) "
                                    r"exceeds limit"}),
    Skipped("bomb-gif", zip_plus(("1/bomb.gif", gif_claiming(65_000, 65_000))), "image",
            {"1/bomb.gif": r"decompression bomb"}),
    Skipped("bomb-jpeg", zip_plus(("1/bomb.jpg", jpeg_claiming(65_000, 65_000))), "image",
            {"1/bomb.jpg": r"decompression bomb"}),
    Skipped("zip-bomb-member-over-limit",
            lambda tmp: (zip_bomb(tmp / "bomb.zip", importers.MAX_FILE_BYTES + (1 << 20)),
                         write_zip(tmp / "good.zip", good_members())),
            "image", {"1/bomb.png": r"^file of 210763776 bytes is over the 209715200 byte "
                                    r"limit$"}),
    Skipped("zip-member-lying-about-size", corpus_zip("zips/lying-size.zip"), "image",
            {"1/lying.png": r"^cannot be read from the archive \(Bad CRC-32"}),
    Skipped("zip-encrypted-member", corpus_zip("zips/encrypted-member.zip"), "image",
            {"1/locked.png": r"^cannot be read from the archive \(.*encrypted"}),
    Skipped("zip-duplicate-member-names", corpus_zip("zips/duplicate-names.zip"), "image",
            {"0/0.png": r"^duplicate key in the source \(the first one was kept\)$"}),
    Skipped("zip-nested-zip", corpus_zip("zips/nested-zip.zip"), "image",
            {"1/inner.zip": r"^not an image Pillow can read"}),
    Skipped("folder-symlink", folder_plus(symlink_to_passwd), "image",
            {"1/passwd.png": r"^symbolic link, not followed$"}),
    Skipped("folder-file-over-upload-limit", folder_plus(huge_file), "image",
            {"1/huge.png": r"^file of 209715201 bytes is over the 209715200 byte limit$"}),
    Skipped("image-manifest-duplicate-rows",
            manifest_beside_tree("csv/image-manifest-duplicates.csv",
                                 lambda line: line != "0/0.png,1\n"),
            "image", {"0/0.png": r"^duplicate key in the source"},
            {"label_column": "label"}),
    Skipped("image-manifest-bad-paths",
            manifest_beside_tree("csv/image-manifest-bad-paths.csv",
                                 lambda line: line.startswith(("0/0.png", "1/1.png"))),
            "image", {"../outside.png": r"^path leaves the manifest's folder$",
                      "/etc/passwd": r"^path leaves the manifest's folder$",
                      "http://example.com/a.png": r"^file not found$",
                      "0/missing.png": r"^file not found$", "0": r"^file not found$"},
            {"label_column": "label"}),
    Skipped("augmented-manifest-bad-refs",
            manifest_beside_tree("manifest/image-refs.manifest",
                                 lambda line: '"0/0.png"' in line or '"1/1.png"' in line),
            "image", {"https://example.com/0.png": r"^not a local file",
                      "/etc/passwd": r"^path leaves the manifest's folder$",
                      "../0/0.png": r"^path leaves the manifest's folder$",
                      "0/nul\x00byte.png": r"^not a usable path \(.*null byte",
                      "0": r"^file not found$"}),
    Skipped("augmented-manifest-duplicate-keys", duplicate_manifest, "text",
            {"0": r"^duplicate key in the source"}),
    Skipped("jsonl-null-text", jsonl_null_text, "text",
            {"row 2": r"^empty 'text'$"}, {"label_column": "label"}),
    Skipped("text-over-a-million-characters",
            text_plus_rows("word " * 200_001 + ",spam"), "text",
            {"row 2": r"^text of 1000005 characters is over the 1000000 character limit: split"},
            {"label_column": "label"}),
]


@pytest.mark.parametrize("case", SKIPPED, ids=[c.id for c in SKIPPED])
def test_a_bad_file_inside_a_good_import_is_skipped_and_named(case, tmp_path):
    bad, good = case.build(tmp_path)
    db = connect(tmp_path / "store")
    reference = connect(tmp_path / "reference")
    try:
        report = import_source(db, "p", bad, case.modality, **case.options)
        reasons = {s["file"]: s["reason"] for s in report.skipped}
        expected_good = import_source(reference, "p", good, case.modality, **case.options)
        good_skips = {s["file"] for s in expected_good.skipped}
        assert set(reasons) == set(case.skipped) | good_skips, reasons
        for name, pattern in case.skipped.items():
            assert re.search(pattern, reasons[name]), (name, reasons[name])
        assert report.imported == expected_good.imported > 0
        assert content(db) == content(reference)  # nothing else landed, nothing is missing
        assert not [p for p in (tmp_path / "store").rglob("*.tmp")]
    finally:
        db.conn.close()
        reference.conn.close()


def test_strict_refuses_what_would_be_skipped(seeded, tmp_path):
    source = write_zip(tmp_path / "b.zip", [*good_members(), ("1/bomb.png",
                                                              png_claiming(40_000, 40_000))])
    before = store_state(seeded)
    with pytest.raises(GroundworkError, match=r"first: 1/bomb\.png: image too large.*--strict"):
        import_source(seeded, "digits", source, "image", strict=True)
    assert store_state(seeded) == before


def test_a_failed_import_takes_its_media_files_back(seeded, tmp_path):
    """SQLite aborts half-way (disk full): no row and no new media file is left behind."""
    before = store_state(seeded)
    new = [(f"{i % 2}/{i}.png", encoded(digit_image(i), "PNG")) for i in range(40, 60)]
    seeded.execute("CREATE TEMP TRIGGER full BEFORE INSERT ON annotations "
                   "WHEN (SELECT count(*) FROM annotations) >= 12 "
                   "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(Exception, match="disk is full"):
        import_source(seeded, "digits", write_zip(tmp_path / "new.zip", new), "image")
    seeded.execute("DROP TRIGGER full")
    assert store_state(seeded) == before
    # ...and the same images import fine once the disk has room again.
    report = import_source(seeded, "digits", tmp_path / "new.zip", "image")
    assert report.imported == 20 and all(
        media_file(seeded, item).is_file()
        for item in iter_items(seeded, get_project(seeded, "digits")))


# ---------------------------------------------------------------- accepted: odd but valid


ODD = {  # corpus file -> the digit it shows (make_corpus.py) and whether the browser gets a copy
    "cmyk.jpg": (1, True), "gray16.png": (3, True), "gray16.tif": (3, True),
    "palette.png": (2, False), "la.png": (3, False), "rgba.png": (3, False),
    "bilevel.png": (4, False), "exif-rotated.jpg": (7, True),
}


def what_the_browser_gets(path: Path) -> Image.Image:
    """The picture a person sees: the file as a browser decodes it (EXIF applied), or the copy."""
    shown = display_image(path)
    if isinstance(shown, str):
        with Image.open(shown) as img:
            assert img.format in ("PNG", "JPEG", "GIF", "WEBP", "BMP")
            return ImageOps.exif_transpose(img).convert("RGBA")
    assert shown.mode in ("L", "RGB", "RGBA")
    return shown.convert("RGBA")


def grey_on_white(img: Image.Image) -> np.ndarray:
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, img).convert("L"), dtype=float)


@pytest.mark.parametrize("name", list(ODD))
def test_odd_image_modes_import_and_show_upright_in_eight_bits(db, tmp_path, name):
    digit, converted = ODD[name]
    folder = tmp_path / "odd" / str(digit)
    folder.mkdir(parents=True)
    shutil.copyfile(CORPUS / "odd" / name, folder / name)
    report = import_source(db, "odd", tmp_path / "odd", "image", classes=[str(digit), "other"])
    assert (report.imported, report.labeled, report.skipped) == (1, 1, [])
    (item,) = iter_items(db, get_project(db, "odd"))
    path = media_file(db, item)
    assert isinstance(display_image(path), str) != converted
    # What st.image does with it (Streamlit re-encodes for the page): a raw 16-bit image
    # raises "cannot write mode I;16 as JPEG" here, which is what the Label page showed.
    image_to_url(display_image(path), LayoutConfig(width=224), False, "RGB", "auto", "odd")
    shown = grey_on_white(what_the_browser_gets(path))
    expected = digit_image(digit)
    if name == "exif-rotated.jpg":
        expected = expected.resize((32, 64), Image.NEAREST)  # upright: tall, as drawn
    assert shown.shape == np.asarray(expected).shape
    # The same picture: ink where the digit has ink (16-bit is stretched, JPEG is lossy).
    correlation = np.corrcoef(shown.ravel(), np.asarray(expected, dtype=float).ravel())[0, 1]
    assert correlation > 0.9, correlation
    # The model sees the same digit as from a plain PNG.
    plain = tmp_path / "plain.png"
    plain.write_bytes(encoded(expected, "PNG"))
    features = np.corrcoef(image_vector(str(path)), image_vector(str(plain)))[0, 1]
    assert features > 0.9, features


def test_a_project_of_odd_images_trains_and_predicts(db, tmp_path):
    """Zeros and ones, each stored in a different odd mode, train a model that tells them apart."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    modes = [
        lambda img: encoded(img.convert("CMYK"), "JPEG", quality=95),
        lambda img: encoded(Image.fromarray(np.asarray(img, dtype=np.uint16) * 257), "PNG"),
        lambda img: encoded(img.convert("RGB").quantize(16), "PNG"),
        lambda img: encoded(img.convert("LA"), "PNG"),
        lambda img: encoded(Image.fromarray(np.asarray(img, dtype=np.uint16) * 200), "TIFF"),
        lambda img: encoded(img.transpose(Image.Transpose.ROTATE_90).convert("RGB"), "JPEG",
                            quality=95, exif=_orientation(6)),
    ]
    members = []
    for cls in (0, 1):
        for n, index in enumerate(np.flatnonzero(target == cls)[:24]):
            members.append((f"{cls}/{index}-{n % len(modes)}",
                            modes[n % len(modes)](digit_image(int(index)))))
    report = import_source(db, "odd", write_zip(tmp_path / "odd.zip", members), "image")
    assert (report.imported, report.skipped) == (48, [])
    project = get_project(db, "odd")
    result = train_project(db, project, budget=3)
    assert result["cv"] > 0.9, result
    markup = CORPUS / "zips" / "markup-names.zip"
    out = tmp_path / "predictions.csv"
    assert predict_file(db, project, markup, out) == 8
    with out.open(newline="") as fh:
        rows = {r["key"]: r for r in csv.DictReader(fh)}
    # File names a spreadsheet would run come out as text; the digits are told apart.
    assert {"'=1+2.png", "'@SUM(A1).png", "'-2+3.png"} <= set(rows)
    assert [rows[f"{c}/{i}.png"]["predicted_label"] for c, ids in (("0", (0, 10)),
                                                                    ("1", (1, 11)))
            for i in ids] == ["0", "0", "1", "1"]


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


@pytest.mark.parametrize("name", ["utf8-bom.csv", "utf16-bom.csv", "utf32-bom.csv"])
def test_byte_order_marks_are_read(db, name):
    report = import_source(db, "bom", CORPUS / "csv" / name, "text", label_column="label")
    assert (report.imported, report.labeled, report.classes) == (6, 6, ["ham", "spam"])
    first = next(iter(iter_items(db, get_project(db, "bom"))))
    assert first.content == spam_rows()["text"][0]  # no BOM glued to the first cell or column


def test_jsonl_with_a_bom_is_read(db):
    report = import_source(db, "bom", CORPUS / "jsonl" / "utf8-bom.jsonl", "text",
                           label_column="label")
    assert report.imported == 6


@pytest.mark.parametrize(("name", "encoding", "needle"),
                         [("latin1.csv", "latin-1", "Café crème à côté"),
                          ("cp1252.csv", "cp1252", "“Smart quotes” – and a dash")])
def test_the_named_encoding_fixes_a_non_utf8_csv(db, name, encoding, needle):
    report = import_source(db, "enc", CORPUS / "csv" / name, "text", label_column="label",
                           encoding=encoding)
    assert report.imported == 6
    assert any(needle in item.content for item in iter_items(db, get_project(db, "enc")))


def test_nan_and_infinity_in_a_table_import_as_missing_train_and_predict(db, tmp_path):
    source = CORPUS / "csv" / "nan-inf-table.csv"
    report = import_source(db, "wine", source, "tabular", label_column="cultivar")
    assert (report.imported, report.labeled, report.skipped) == (8, 8, [])
    project = get_project(db, "wine")
    rows = [item.row() for item in iter_items(db, project)]
    # inf, -inf, 1e999 (too big for a float), NaN and an empty cell are all missing values;
    # -1.5 is a number like any other.
    assert [r["alcohol"] for r in rows] == [14.23, None, None, None, None, None, 13.2, 12.4]
    assert rows[4]["colour"] == -1.5 and rows[2]["colour"] is None
    assert all("cultivar" not in r for r in rows)
    stored = [json.loads(r[0]) for r in db.execute("SELECT content FROM items")]
    assert stored == rows  # valid JSON: no NaN or Infinity literals in the store
    result = train_project(db, project, budget=2)
    assert result["model_version"] == 1
    new = tmp_path / "new.csv"
    pd.read_csv(source).drop(columns=["cultivar"]).to_csv(new, index=False)
    keys, frame = read_prediction_input(new, "tabular")
    assert not np.isinf(frame.select_dtypes("number").to_numpy()).any()
    out = tmp_path / "p.csv"
    assert predict_file(db, project, new, out) == 8
    predictions = pd.read_csv(out)
    assert predictions["confidence"].map(math.isfinite).all()
    assert set(predictions["predicted_label"]) <= {"barolo", "barbera"}


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ("eggs", r"unknown label 'eggs' for project 'mail': classes are ham, spam"),
        ("ham,spam", r"project 'mail' is single-label but got 2 labels \('ham', 'spam'\): "
                     r"give exactly one"),
        (["ham", "spam"], r"single-label but got 2 labels"),
        ("ham;spam", r"single-label but got 2 labels"),
        ("", r"no label given: pick one of ham, spam"),
        (" , |", r"no label given"),
        (None, r"no label given"),
        ("x" * 1_000_000, r"unknown label 'x{50}'\.\.\. \(1000000 chars\) for project 'mail'"),
        ('<img src=x onerror="window.__pwned=1">', r"unknown label '<img src=x onerror="),
        ("ham\nspam", r"unknown label 'ham\\nspam'"),
    ],
    ids=["not-a-class", "two-in-single", "list-in-single", "semicolon-in-single", "empty",
         "only-separators", "none", "a-million-characters", "markup", "line-break"],
)
def test_bad_answers_are_refused_and_nothing_is_recorded(seeded, gw, labels, match):
    project = get_project(seeded, "mail")
    item = next(iter(iter_items(seeded, project)))
    before = store_state(seeded)
    with pytest.raises(GroundworkError, match=match) as err:
        record_annotation(seeded, project, item.id, labels, user="ann")
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)
    assert store_state(seeded) == before
    if isinstance(labels, str) and labels.strip(" ,|") and len(labels) < 1000:
        line = gw.fails("label", "mail", item.id, labels, "--user", "ann")
        assert re.search(match, line), line
        assert store_state(seeded) == before


@pytest.mark.parametrize(
    ("item", "user", "source", "match"),
    [(999_999, "ann", "human", r"no item 999999 in project 'mail'"),
     (None, "  ", "human", r"no user given: pass --user NAME"),
     (None, "ann", "oracle", r"unknown source 'oracle': use one of human, auto")],
    ids=["unknown-item", "blank-user", "unknown-source"],
)
def test_answers_to_nothing_or_from_nobody_are_refused(seeded, item, user, source, match):
    project = get_project(seeded, "mail")
    item_id = item or next(iter(iter_items(seeded, project))).id
    before = store_state(seeded)
    with pytest.raises(GroundworkError, match=match):
        record_annotation(seeded, project, item_id, "ham", user=user, source=source)
    assert store_state(seeded) == before


# ---------------------------------------------------------------- training


def test_training_with_one_class_is_refused_and_changes_nothing(db, gw, tmp_path):
    only_ham = spam_rows(12)
    only_ham = only_ham[only_ham["label"] == "ham"]
    path = tmp_path / "ham.csv"
    only_ham.to_csv(path, index=False)
    import_source(db, "hamonly", path, "text", label_column="label", classes=["ham", "spam"])
    project = get_project(db, "hamonly")
    before = store_state(db)
    match = (r"training needs at least two classes: the 6 curated labels of project 'hamonly' "
             r"are all 'ham'; label some items of another class first")
    with pytest.raises(GroundworkError, match=match):
        validate_training(db, project)
    with pytest.raises(GroundworkError, match=match):
        train_project(db, project, budget=2)
    assert store_state(db) == before
    assert re.search(match, gw.fails("train", "hamonly", "--budget", "2"))
    assert store_state(db) == before


def test_training_without_labels_or_with_a_bad_budget_is_refused(db, gw, tmp_path):
    path = tmp_path / "mail.csv"
    path.write_text(spam_csv_text())
    import_source(db, "unlabeled", path, "text", classes=["ham", "spam"])
    project = get_project(db, "unlabeled")
    before = store_state(db)
    with pytest.raises(GroundworkError, match=r"training needs labels: project 'unlabeled' has "
                                              r"no curated labels yet"):
        train_project(db, project, budget=2)
    for budget in (math.nan, math.inf, -1, 0):
        with pytest.raises(GroundworkError, match="positive number of seconds"):
            train_project(db, project, budget=budget)
    assert "no curated labels" in gw.fails("train", "unlabeled", "--budget", "2")
    assert store_state(db) == before


# ---------------------------------------------------------------- exports


@pytest.mark.parametrize(
    ("cell", "written"),
    [("=1+1", "'=1+1"), ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"), ("-2+3", "'-2+3"),
     ("@SUM(A1)", "'@SUM(A1)"), ("\t=1+1", "'\t=1+1"), ("\r=1+1", "'\r=1+1"),
     ("\uff1d1+1", "'\uff1d1+1"), ("-inf", "'-inf"), ("-nan", "'-nan"), ("-1_000", "'-1_000"),
     ("-1.5", "-1.5"), ("-1", "-1"), ("+3", "+3"), ("-2e-5", "-2e-5"), ("-.5", "-.5"),
     ("1.5", "1.5"), (1.5, "1.5"), (-1, "-1"), ("", ""), (None, ""), ("ham", "ham"),
     ("a=b", "a=b")],
)
def test_neutralise_prefixes_formulas_and_keeps_plain_numbers(cell, written):
    assert neutralise(cell) == written


def test_csv_export_neutralises_formula_labels_and_keys(db, tmp_path):
    import_source(db, "f", CORPUS / "csv" / "formula-cells.csv", "text", label_column="label")
    import_source(db, "names", CORPUS / "zips" / "markup-names.zip", "image")
    out = tmp_path / "f.csv"
    export_project(db, get_project(db, "f"), "csv", out)
    with out.open(newline="") as fh:
        labels = [row["label"] for row in csv.DictReader(fh)]
    assert labels == ["'=cmd", "-1", "+1", "'@me", "-1.5", "ham"]
    export_project(db, get_project(db, "names"), "csv", out)
    with out.open(newline="") as fh:
        keys = {row["key"] for row in csv.DictReader(fh)}
    assert {"'=1+2.png", "'@SUM(A1).png", "'-2+3.png"} <= keys
    assert '1/<img src=x onerror="window.__pwned=1">.png' in keys  # text, not a formula


# ---------------------------------------------------------------- the corpus itself


def test_every_corpus_file_is_exercised_by_a_test():
    source = Path(__file__).read_text() + (
        Path(__file__).parent / "browser" / "test_markup_safety.py").read_text()
    files = [p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".py"
             and p.name != "README.md" and "__pycache__" not in p.parts]
    names = {p.relative_to(CORPUS).as_posix() for p in files}
    used = {n for n in names if n in source or Path(n).name in source
            or n.startswith("images/")  # the whole folder is one case, and each file one more
            or n.startswith("odd/")}
    assert names == used, sorted(names - used)
    cases = len(REFUSED) + len(SKIPPED) + len(ODD)
    assert cases >= 40, cases


def test_corpus_is_what_make_corpus_writes(tmp_path):
    """The committed files are reproducible from real data (so they can be reviewed and fixed)."""
    from tests.bad_inputs import make_corpus

    for group in (make_corpus.tables, make_corpus.jsonl, make_corpus.manifests):
        for rel, data in group().items():
            assert (CORPUS / rel).read_bytes() == data, rel
