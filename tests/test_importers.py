"""Importers on real files: images (folder, zip, manifest), text and tables, and bad input.

Every bad input must give a clear error (or a skip listed in the report) and
leave the store exactly as it was.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from labeling.annotations import current_labels
from labeling.errors import GroundworkError
from labeling.importers import import_source, read_prediction_input
from labeling.items import iter_items
from labeling.projects import get_project
from tests.conftest import write_digits_folder


def snapshot(db) -> dict:
    """Everything an import could touch, to prove a refused import changed nothing."""
    return {
        t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("projects", "items", "annotations")
    } | {"classes": [r[0] for r in db.execute("SELECT classes FROM projects ORDER BY id")]}


def zip_of(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims 1.6 billion pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # signature, then the IHDR chunk: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def png_bytes(colour: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- images


def test_folder_import_labels_from_subfolders_keys_and_idempotent_reimport(db, digits_folder):
    report = import_source(db, "digits", digits_folder, "image")
    assert (report.imported, report.labeled, report.duplicates) == (36, 36, 0)
    assert report.created and report.classes == ["0", "1", "2"]
    project = get_project(db, "digits")
    items = list(iter_items(db, project))
    assert {i.key.split("/")[0] for i in items} == {"0", "1", "2"}
    assert all((db.data_dir / i.media_path).is_file() for i in items)
    assert all(i.media_path.startswith(f"media/{i.sha256[:2]}/{i.sha256}") for i in items)
    labels = current_labels(db, project, curated_only=True)
    assert set(labels["source"]) == {"import"}
    assert all(k.split("/")[0] == lab[0] for k, lab in zip(labels["key"], labels["labels"],
                                                            strict=True))

    again = import_source(db, "digits", digits_folder, "image")
    assert (again.imported, again.duplicates, again.created) == (0, 36, False)
    assert db["items"].count == 36 and db["annotations"].count == 36


def test_identical_images_are_stored_once(db, tmp_path):
    folder = tmp_path / "same"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "x.png").write_bytes(png_bytes(10))
    (folder / "b" / "y.png").write_bytes(png_bytes(10))
    import_source(db, "same", folder, "image")
    media = list((db.data_dir / "media").rglob("*.png"))
    assert db["items"].count == 2 and len(media) == 1


def test_gold_folders_are_hidden_from_labels(db, digits_folder):
    report = import_source(db, "g", digits_folder, "image", folders_as="gold")
    assert report.labeled == 0 and report.gold == 36
    project = get_project(db, "g")
    assert current_labels(db, project, curated_only=False).empty
    assert {tuple(i.gold) for i in iter_items(db, project)} == {("0",), ("1",), ("2",)}


def test_zip_with_corrupt_and_non_image_members_skips_and_lists_them(db, tmp_path):
    good = write_digits_folder(tmp_path / "src", per_class=3, classes=(4, 7))
    members = {f"{p.parent.name}/{p.name}": p.read_bytes() for p in good.rglob("*.png")}
    members["4/broken.png"] = png_bytes()[:40]
    noisy = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(noisy, format="PNG")
    members["4/truncated.png"] = noisy.getvalue()[:-200]
    members["7/notes.txt"] = b"not an image"
    members["__MACOSX/4/._x.png"] = b"junk"
    members["7/bomb.png"] = bomb_png()
    report = import_source(db, "z", zip_of(tmp_path / "d.zip", members), "image")
    assert report.imported == 6 and report.labeled == 6
    reasons = {s["file"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"4/broken.png", "4/truncated.png", "7/notes.txt", "7/bomb.png"}
    assert "not an image" in reasons["4/broken.png"]
    assert "truncated" in reasons["4/truncated.png"]
    assert "not an image" in reasons["7/notes.txt"]
    assert "decompression bomb" in reasons["7/bomb.png"]


def test_strict_import_refuses_a_source_with_bad_files(db, tmp_path):
    path = zip_of(tmp_path / "s.zip", {"a/1.png": png_bytes(), "b/2.png": png_bytes(200),
                                       "b/x.txt": b"hello"})
    with pytest.raises(GroundworkError, match="--strict"):
        import_source(db, "s", path, "image", strict=True)
    assert snapshot(db)["items"] == 0


@pytest.mark.parametrize(
    ("member", "why"),
    [("../evil.png", "'..'"), ("a/../../evil.png", "'..'"), ("/etc/evil.png", "absolute")],
)
def test_zip_slip_members_refuse_the_whole_archive(db, tmp_path, member, why):
    import_source(db, "z", zip_of(tmp_path / "ok.zip", {"a/1.png": png_bytes(),
                                                         "b/1.png": png_bytes(99)}), "image")
    before = snapshot(db)
    path = zip_of(tmp_path / "evil.zip", {"a/2.png": png_bytes(5), member: png_bytes(7)})
    with pytest.raises(GroundworkError, match=f"unsafe member.*{why}") as err:
        import_source(db, "z", path, "image")
    assert "nothing was imported" in str(err.value)
    assert snapshot(db) == before
    assert not (tmp_path / "evil.png").exists()


def test_symlink_member_is_refused(db, tmp_path):
    path = zip_of(tmp_path / "l.zip", {"a/1.png": png_bytes()}, symlinks={"b/link.png": "/etc"})
    with pytest.raises(GroundworkError, match="symbolic link"):
        import_source(db, "l", path, "image")
    assert snapshot(db)["projects"] == 0


def test_not_a_zip_and_nothing_importable(db, tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip")
    with pytest.raises(GroundworkError, match="not a readable zip"):
        import_source(db, "f", fake, "image")
    only_bad = zip_of(tmp_path / "bad.zip", {"a/x.txt": b"x", "b/y.png": b"\x89PNG broken"})
    with pytest.raises(GroundworkError, match="nothing to import.*2 files skipped"):
        import_source(db, "f", only_bad, "image", classes=["a", "b"])
    assert snapshot(db)["projects"] == 0


def test_image_manifest_with_relative_paths(db, tmp_path):
    folder = write_digits_folder(tmp_path / "m", per_class=4, classes=(1, 9))
    rows = [{"image": f"{p.parent.name}/{p.name}", "truth": p.parent.name}
            for p in sorted(folder.rglob("*.png"))]
    rows.append({"image": "../outside.png", "truth": "1"})
    rows.append({"image": "1/missing.png", "truth": "1"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    report = import_source(db, "m", folder / "manifest.csv", "image", label_column="truth")
    assert report.imported == 8 and report.labeled == 8
    assert {s["reason"] for s in report.skipped} == {"path leaves the manifest's folder",
                                                     "file not found"}
    keys = {i.key for i in iter_items(db, get_project(db, "m"))}
    assert keys == {r["image"] for r in rows[:8]}


# ---------------------------------------------------------------- text and tables


def test_text_csv_with_label_and_gold_columns(db, spam_csv, tmp_path):
    frame = pd.read_csv(spam_csv)
    half = frame.assign(given=[v if i < 20 else "" for i, v in enumerate(frame["label"])],
                        truth=frame["label"])
    path = tmp_path / "mail.csv"
    half.drop(columns=["label"]).to_csv(path, index=False)
    report = import_source(db, "mail", path, "text", label_column="given", gold_column="truth")
    assert (report.imported, report.labeled, report.gold) == (120, 20, 120)
    project = get_project(db, "mail")
    items = {i.key: i for i in iter_items(db, project)}
    assert items["0"].content == frame["text"][0]
    assert "truth" not in items["0"].metadata and "given" not in items["0"].metadata
    labels = current_labels(db, project, curated_only=True)
    assert sorted(labels["key"].astype(int)) == list(range(20))


def test_jsonl_multi_label_import(db, tmp_path):
    path = tmp_path / "t.jsonl"
    lines = [{"text": "cheap pills now", "tags": ["spam", "pharma"]},
             {"text": "meeting at noon", "tags": ["work"]},
             {"text": "lunch?", "tags": []}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = import_source(db, "tags", path, "text", task="multi-label", label_column="tags")
    assert report.labeled == 2 and set(report.classes) == {"spam", "pharma", "work"}
    labels = current_labels(db, get_project(db, "tags"), curated_only=True)
    assert sorted(map(sorted, labels["labels"])) == [["pharma", "spam"], ["work"]]


def test_tabular_rows_keep_types_and_missing_values(db, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,colour,y\n1.5,,red,yes\n2,3,,no\n,4,blue,yes\n")
    import_source(db, "tab", path, "tabular", label_column="y")
    items = list(iter_items(db, get_project(db, "tab")))
    assert [i.row() for i in items] == [
        {"a": 1.5, "b": None, "colour": "red"},
        {"a": 2.0, "b": 3.0, "colour": None},
        {"a": None, "b": 4.0, "colour": "blue"},
    ]


def test_utf8_bom_is_accepted(db, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\nhello,a\nbye,b\n".encode())
    report = import_source(db, "bom", path, "text", label_column="label")
    assert report.imported == 2


def test_missing_column_lists_the_columns_found(db, spam_csv, tmp_path):
    with pytest.raises(GroundworkError, match=r"no column 'body'.*columns found: text, label"):
        import_source(db, "mail", spam_csv, "text", text_column="body")
    with pytest.raises(GroundworkError, match=r"no column 'klass'.*columns found: text, label"):
        import_source(db, "mail", spam_csv, "text", label_column="klass")
    table = tmp_path / "t.csv"
    table.write_text("content,label\nhi,a\n")
    with pytest.raises(GroundworkError, match=r"--text-column.*content, label"):
        import_source(db, "t", table, "text", label_column="label")
    assert snapshot(db)["projects"] == 0


@pytest.mark.parametrize("content", [b"", b"   \n", b"text,label\n"])
def test_empty_csv_is_refused(db, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(GroundworkError, match="empty|no rows"):
        import_source(db, "e", path, "text", classes=["a", "b"])
    assert snapshot(db)["projects"] == 0


def test_non_utf8_csv_names_the_encoding_and_the_fix(db, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé crème,a\nplain,b\n".encode("latin-1"))
    with pytest.raises(GroundworkError, match=r"not valid utf-8.*--encoding latin-1"):
        import_source(db, "l", path, "text", label_column="label")
    assert snapshot(db)["projects"] == 0
    report = import_source(db, "l", path, "text", label_column="label", encoding="latin-1")
    assert report.imported == 2
    items = list(iter_items(db, get_project(db, "l")))
    assert items[0].content == "café crème"


def test_ragged_csv_and_duplicate_columns(db, tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\nhello,a\nhi,b,extra,more\n")
    with pytest.raises(GroundworkError, match="not a well-formed CSV"):
        import_source(db, "r", ragged, "text", label_column="label")
    dup = tmp_path / "d.csv"
    dup.write_text("text,text,label\na,b,c\n")
    with pytest.raises(GroundworkError, match="duplicate column names"):
        import_source(db, "d", dup, "text", label_column="label")
    assert snapshot(db)["projects"] == 0


def test_labels_outside_the_given_classes_are_refused(db, spam_csv):
    with pytest.raises(GroundworkError, match="not among the classes"):
        import_source(db, "m", spam_csv, "text", label_column="label", classes=["ham", "eggs"])
    assert snapshot(db)["projects"] == 0


def test_wrong_modality_for_an_existing_project(db, spam_csv, wine_csv):
    import_source(db, "m", spam_csv, "text", label_column="label")
    before = snapshot(db)
    with pytest.raises(GroundworkError, match="holds text items, not tabular"):
        import_source(db, "m", wine_csv, "tabular", label_column="cultivar")
    assert snapshot(db) == before


def test_an_import_lands_whole_or_not_at_all(db, spam_csv):
    """A failure in the middle of the write (here SQLite itself aborts) rolls everything back."""
    import_source(db, "first", spam_csv, "text", label_column="label")
    before = snapshot(db)
    db.execute(
        "CREATE TEMP TRIGGER stop_midway BEFORE INSERT ON annotations "
        "WHEN (SELECT count(*) FROM annotations) >= 150 "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(Exception, match="disk full"):
        import_source(db, "second", spam_csv, "text", label_column="label")
    assert snapshot(db) == before


def test_prediction_input_matches_the_model_input_shapes(tmp_path, spam_csv, wine_csv):
    keys, texts = read_prediction_input(spam_csv, "text")
    assert keys[:3] == ["0", "1", "2"] and isinstance(texts[0], str)
    keys, table = read_prediction_input(wine_csv, "tabular", exclude_columns=["cultivar"])
    assert len(keys) == 178 and "cultivar" not in table.columns
    folder = write_digits_folder(tmp_path / "p", per_class=2, classes=(3,))
    work = tmp_path / "work"
    work.mkdir()
    zipped = zip_of(tmp_path / "p.zip", {f"3/{p.name}": p.read_bytes()
                                         for p in folder.rglob("*.png")})
    keys, paths = read_prediction_input(zipped, "image", workdir=work)
    assert len(keys) == 2 and all(Path(p).is_file() for p in paths)
