"""Regenerate the committed bad-input corpus from real data (digits, SpamAssassin subset).

    .venv/bin/python tests/bad_inputs/make_corpus.py

Every file is small and deterministic. Inputs that must be big (decompression
bombs, files over the size limits, a text of a million characters) are not
committed: `tests/test_bad_inputs.py` builds them at test time from the same
real data. README.md beside this script lists each file and what must happen.
"""

from __future__ import annotations

import codecs
import io
import json
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
XSS_IMG = '<img src=x onerror="window.__pwned=1">'


def digit_image(index: int, size: int = 32) -> Image.Image:
    """One of scikit-learn's 8x8 digits as a grey image a person can see (dark ink on white)."""
    pixels = load_digits().data[index].reshape(8, 8)
    img = Image.fromarray((255 - pixels * 15).astype("uint8"), mode="L")
    return img.resize((size, size), Image.NEAREST)


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def spam_rows(n: int = 6) -> pd.DataFrame:
    """The first n ham and spam mails of the shipped subset, first 80 characters on one line."""
    frame = pd.read_csv(ROOT / "tests" / "data" / "spam.csv")
    frame["text"] = frame["text"].map(lambda t: " ".join(t.split())[:80])
    ham = frame[frame["label"] == "ham"].head(n // 2)
    spam = frame[frame["label"] == "spam"].head(n - n // 2)
    return pd.concat([ham, spam]).reset_index(drop=True)


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------- images


def images() -> dict[str, bytes]:
    digit = digit_image(0)
    png = encoded(digit, "PNG")
    noisy = encoded(digit_image(5, size=96), "PNG", compress_level=0)
    jpeg = encoded(digit_image(5, size=96).convert("RGB"), "JPEG", quality=90)
    grey = np.asarray(digit_image(3), dtype=np.uint16)
    # 16 bits: ink and paper at 0..16 * 4000, far beyond what 8 bits can hold.
    gray16 = Image.fromarray((65535 - (255 - grey) * 250).astype(np.uint16))
    rgba = digit_image(3).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.asarray(digit_image(3)) < 128, 255, 0)
                                  .astype("uint8")))
    tall = digit_image(7).resize((32, 64), Image.NEAREST)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return {
        "images/corrupt.png": png[:16] + bytes(range(256)) * 2,
        "images/truncated.png": noisy[: len(noisy) // 2],
        "images/truncated.jpg": jpeg[: len(jpeg) // 2],
        "images/empty.png": b"",
        "images/text-named.png": b"This is a note, not a picture.\n",
        "images/postscript.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
                                  b"newpath 0 0 moveto 10 10 lineto stroke showpage\n"),
        "images/script.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
                              b'<script>window.__pwned=1</script></svg>\n'),
        # Odd but valid: these import, show and train like any other digit.
        "odd/cmyk.jpg": encoded(digit_image(1).convert("CMYK"), "JPEG", quality=95),
        "odd/gray16.png": encoded(gray16, "PNG"),
        "odd/gray16.tif": encoded(gray16, "TIFF"),
        "odd/palette.png": encoded(digit_image(2).convert("RGB").quantize(8), "PNG"),
        "odd/la.png": encoded(rgba.convert("LA"), "PNG"),
        "odd/rgba.png": encoded(rgba, "PNG"),
        "odd/bilevel.png": encoded(digit_image(4).convert("1", dither=Image.Dither.NONE), "PNG"),
        # Stored lying on its side (64 wide, 32 tall) with EXIF orientation 6: upright it is
    # 32 wide and 64 tall.
        "odd/exif-rotated.jpg": encoded(tall.transpose(Image.Transpose.ROTATE_90).convert("RGB"),
                                        "JPEG", quality=95, exif=exif),
    }


# ---------------------------------------------------------------- zips


def zip_bytes(members: list[tuple[str, bytes]], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def good_members() -> list[tuple[str, bytes]]:
    """Two classes of two real digits each: the good part of every bad archive."""
    return [(f"{cls}/{i}.png", encoded(digit_image(i), "PNG"))
            for cls, ids in (("0", (0, 10)), ("1", (1, 11))) for i in ids]


def patch_local_and_central(data: bytes, name: bytes, local_off: int, central_off: int,
                            fmt: str, value: int, *, combine: bool = False) -> bytes:
    raw = bytearray(data)
    local = raw.find(b"PK\x03\x04")
    while local >= 0:
        if raw[local + 30 : local + 30 + len(name)] == name:
            break
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central >= 0:
        if raw[central + 46 : central + 46 + len(name)] == name:
            break
        central = raw.find(b"PK\x01\x02", central + 4)
    for pos in (local + local_off, central + central_off):
        old = struct.unpack_from(fmt, raw, pos)[0]
        struct.pack_into(fmt, raw, pos, old | value if combine else value)
    return bytes(raw)


def zips() -> dict[str, bytes]:
    good = good_members()
    digit = encoded(digit_image(20), "PNG")
    rng = np.random.default_rng(0)
    noisy = encoded(Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)), "PNG")
    lying = zip_bytes([*good, ("1/lying.png", noisy)])
    # The headers claim 100 bytes; the member inflates to far more: reading stops at the
    # claimed size and the CRC check fails.
    lying = patch_local_and_central(lying, b"1/lying.png", 22, 24, "<I", 100)
    encrypted = patch_local_and_central(zip_bytes([*good, ("1/locked.png", digit)]),
                                        b"1/locked.png", 6, 8, "<H", 0x1, combine=True)
    whole = zip_bytes(good)
    return {
        "zips/slip-dotdot.zip": zip_bytes([*good, ("../evil.png", digit)]),
        "zips/slip-nested-dotdot.zip": zip_bytes([*good, ("0/../../evil.png", digit)]),
        "zips/slip-absolute.zip": zip_bytes([*good, ("/tmp/evil.png", digit)]),
        "zips/slip-backslash.zip": zip_bytes([*good, ("..\\evil.png", digit)]),
        "zips/slip-drive.zip": zip_bytes([*good, ("C:/evil.png", digit)]),
        "zips/symlink.zip": zip_bytes(good, symlinks={"1/passwd.png": "/etc/passwd"}),
        "zips/encrypted-member.zip": encrypted,
        "zips/lying-size.zip": lying,
        "zips/duplicate-names.zip": zip_bytes([*good, ("0/0.png", digit)]),
        "zips/nested-zip.zip": zip_bytes([*good, ("1/inner.zip", whole)]),
        "zips/junk-only.zip": zip_bytes([("__MACOSX/0/._0.png", b"junk"), (".DS_Store", b"x"),
                                         ("0/Thumbs.db", b"x")]),
        "zips/empty.zip": zip_bytes([]),
        "zips/truncated.zip": whole[: len(whole) // 2],
        "zips/not-a-zip.zip": b"PK but not really a zip archive\n",
        # File names a spreadsheet would run (at the root: unlabeled) or a browser would.
        "zips/markup-names.zip": zip_bytes(
            [*good, ("=1+2.png", encoded(digit_image(30), "PNG")),
             ("@SUM(A1).png", encoded(digit_image(31), "PNG")),
             ("-2+3.png", encoded(digit_image(32), "PNG")),
             (f"1/{XSS_IMG}.png", encoded(digit_image(21), "PNG"))]),
    }


# ---------------------------------------------------------------- CSV, JSONL, manifests


def tables() -> dict[str, bytes]:
    rows = spam_rows()
    text = csv_text(rows)
    accented = rows.copy()
    accented.loc[0, "text"] = "Café crème à côté " + rows["text"][0]
    quoted = accented.copy()
    quoted.loc[1, "text"] = "“Smart quotes” – and a dash " + rows["text"][1]
    lines = text.splitlines()
    header, body = lines[0], lines[1:]
    multi = rows.copy()
    multi.loc[1, "label"] = "ham,spam"
    newline = rows.copy()
    newline.loc[2, "label"] = "ha\nm"
    long_label = rows.copy()
    long_label["label"] = long_label["text"] + " " + long_label["text"] + " " + long_label["text"]
    markup = rows.copy()
    markup.loc[0, "text"] = XSS_IMG + " and <script>window.__pwned=1</script> " + rows["text"][0]
    unknown = rows.copy()
    unknown.loc[3, "label"] = "eggs"
    table = pd.DataFrame({
        "alcohol": ["14.23", "inf", "-inf", "", "NaN", "1e999", "13.2", "12.4"],
        "colour": ["5.64", "4.38", "nan", "5.68", "-1.5", "3.0", "4.1", "2.2"],
        "cultivar": ["barolo", "barolo", "barbera", "barbera", "barolo", "barbera",
                     "barolo", "barbera"],
    })
    return {
        "csv/latin1.csv": csv_text(accented).encode("latin-1"),
        "csv/cp1252.csv": csv_text(quoted).encode("cp1252"),
        "csv/utf8-bom.csv": codecs.BOM_UTF8 + text.encode("utf-8"),
        "csv/utf16-bom.csv": text.encode("utf-16"),  # Python writes the BOM
        "csv/utf16le-no-bom.csv": text.encode("utf-16-le"),
        "csv/utf32-bom.csv": text.encode("utf-32"),
        "csv/ragged-late-row.csv": "\n".join([header, *body[:3], body[3] + ",extra,fields",
                                              *body[4:]]).encode() + b"\n",
        "csv/ragged-first-row.csv": "\n".join([header, body[0] + ",extra", *body[1:]]).encode()
        + b"\n",
        "csv/unterminated-quote.csv": "\n".join([header, '"' + body[0], *body[1:]]).encode()
        + b"\n",
        "csv/duplicate-columns.csv": csv_text(rows.assign(extra=rows["text"])).replace(
            "text,label,extra", "text,label,text", 1).encode(),
        "csv/no-text-column.csv": csv_text(rows.rename(columns={"text": "body"})).encode(),
        "csv/empty.csv": b"",
        "csv/blank.csv": b"  \n\n \n",
        "csv/header-only.csv": b"text,label\n",
        "csv/png-named.csv": encoded(digit_image(0), "PNG"),
        "csv/unknown-label.csv": csv_text(unknown).encode(),
        "csv/multi-label-in-single.csv": csv_text(multi).encode(),
        "csv/newline-in-label.csv": csv_text(newline).encode(),
        "csv/text-as-label.csv": csv_text(long_label).encode(),
        "csv/empty-texts.csv": b"text,label\n,ham\n  ,spam\n",
        "csv/markup-text.csv": csv_text(markup).encode(),
        "csv/formula-cells.csv": csv_text(rows.assign(
            text=['=HYPERLINK("http://x","click")', "+1+cmd|' /C calc'!A0", "-2+3",
                  "@SUM(A1:A9)", "\t=1+1", "-1.5"],
            label=["=cmd", "-1", "+1", "@me", "-1.5", "ham"])).encode(),
        "csv/nan-inf-table.csv": csv_text(table).encode(),
        "csv/label-only-table.csv": b"cultivar\nbarolo\nbarbera\n",
        "csv/image-manifest-duplicates.csv": b"image,label\n0/0.png,0\n0/0.png,1\n1/1.png,1\n",
        "csv/image-manifest-bad-paths.csv": (
            b"image,label\n0/0.png,0\n1/1.png,1\n../outside.png,0\n/etc/passwd,1\n"
            b"http://example.com/a.png,0\n0/missing.png,0\n0,0\n"),
    }


def jsonl() -> dict[str, bytes]:
    rows = spam_rows().to_dict("records")
    lines = [json.dumps(r) for r in rows]
    return {
        "jsonl/invalid-line.jsonl": "\n".join([*lines[:2], '{"text": "oops", "label": ',
                                               *lines[2:]]).encode() + b"\n",
        "jsonl/array-line.jsonl": "\n".join([lines[0], '["ham", "spam"]', *lines[1:]]).encode()
        + b"\n",
        "jsonl/utf8-bom.jsonl": codecs.BOM_UTF8 + "\n".join(lines).encode() + b"\n",
        "jsonl/blank-lines.jsonl": b"\n   \n\n",
        "jsonl/null-text.jsonl": "\n".join([*lines[:2], json.dumps({"text": None,
                                                                   "label": "ham"}),
                                            *lines[2:]]).encode() + b"\n",
        "jsonl/list-labels.jsonl": "\n".join(
            [*lines[:1], json.dumps({"text": rows[1]["text"], "label": ["ham", "spam"]}),
             *lines[2:]]).encode() + b"\n",
    }


def manifests() -> dict[str, bytes]:
    rows = spam_rows().to_dict("records")
    classes = ["ham", "spam"]

    def line(i: int, row: dict, **extra) -> dict:
        return {"source": row["text"], "mail": classes.index(row["label"]),
                "mail-metadata": {"class-name": row["label"], "human-annotated": "yes",
                                  "type": "groundtruth/text-classification",
                                  **extra.pop("meta", {})}, "key": str(i), **extra}

    good = [line(i, r) for i, r in enumerate(rows)]

    def dump(objs: list) -> bytes:
        return ("\n".join(json.dumps(o) if not isinstance(o, str) else o for o in objs)
                + "\n").encode()

    not_in_map = [dict(o) for o in good]
    not_in_map[2] = {"source": rows[2]["text"], "mail": [0, 7],
                     "mail-metadata": {"class-map": {"0": "ham"}}}
    comma = [dict(o) for o in good]
    comma[1] = line(1, rows[1], meta={"class-name": "ham,spam"})
    duplicate = [*good, line(0, rows[3])]
    images_ = [{"source-ref": ref, "digits": 0,
                "digits-metadata": {"class-name": "0", "human-annotated": "yes"}}
               for ref in ("0/0.png", "https://example.com/0.png", "/etc/passwd",
                           "../0/0.png", "0/nul\x00byte.png", "0")]
    images_.append({"source-ref": "1/1.png", "digits": 1,
                    "digits-metadata": {"class-name": "1", "human-annotated": "yes"}})
    return {
        "manifest/not-json.manifest": dump([*good[:3], "{not json", *good[3:]]),
        "manifest/index-not-in-class-map.manifest": dump(not_in_map),
        "manifest/comma-in-class-name.manifest": dump(comma),
        "manifest/duplicate-keys.manifest": dump(duplicate),
        "manifest/empty.manifest": b"\n\n",
        "manifest/image-refs.manifest": dump(images_),
    }


def main() -> int:
    warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" is the point
    files = {**images(), **zips(), **tables(), **jsonl(), **manifests()}
    for rel, data in files.items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} files under {HERE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
