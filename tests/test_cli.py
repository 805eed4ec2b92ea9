"""The `groundwork` CLI contract, end to end on an image set, a text CSV and a table CSV.

Most calls go through `cli.main` in-process (same code path as the console
script, much faster); one test runs the installed console script itself.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import cli
from tests.conftest import write_digits_folder


class Run:
    """`groundwork ...` against one store; returns (exit code, stdout, stderr)."""

    def __init__(self, data_dir: Path, capsys) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main([*map(str, args), "--data-dir", str(self.data_dir)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> dict:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == 1, out  # one JSON object on stdout
        return json.loads(lines[0])

    def fails(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err  # one line, no traceback
        assert "Traceback" not in err
        return lines[0]


@pytest.fixture
def gw(data_dir, capsys) -> Run:
    return Run(data_dir, capsys)


def store_counts(data_dir: Path) -> dict:
    import sqlite3

    with sqlite3.connect(data_dir / "groundwork.db") as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("projects", "items", "annotations", "model_versions", "predictions",
                      "review_tasks")
        }


def label_some(gw: Run, project: str, truth: dict[str, str], n: int) -> None:
    """Label `n` items the queue offers, answering with the true class like a careful person."""
    for _ in range(n):
        item = gw.json("next", project)["items"][0]
        code, _, err = gw("label", project, item["id"], truth[item["key"]], "--user", "ann")
        assert code == 0, err


def test_text_project_through_the_whole_cli_loop(gw, spam_csv, tmp_path):
    frame = pd.read_csv(spam_csv)
    truth = {str(i): label for i, label in enumerate(frame["label"])}
    report = gw.json("import", "mail", spam_csv, "--modality", "text", "--text-column", "text",
                     "--gold-column", "label")
    assert report["imported"] == len(frame) and report["gold"] == len(frame)

    nxt = gw.json("next", "mail", "--n", "3")
    assert len(nxt["items"]) == 3 and {"id", "key"} <= set(nxt["items"][0])
    label_some(gw, "mail", truth, 30)

    trained = gw.json("train", "mail", "--budget", "3")
    assert {"model_version", "metric", "holdout"} <= set(trained)
    assert trained["model_version"] == 1 and trained["metric"] == "balanced_accuracy"
    assert trained["holdout"] is None or 0.0 <= trained["holdout"] <= 1.0

    # after training the queue serves the least certain items first
    # (a share of random validation items keeps the holdout a random sample)
    after = [i["reason"] for i in gw.json("next", "mail", "--n", "10")["items"]]
    assert "margin" in after and set(after) <= {"margin", "validation"}

    opened = gw.json("review", "open", "mail", "--below", "0.9")
    assert opened["opened"] >= 1
    task = gw.json("review", "next", "mail")["tasks"][0]
    gw.json("review", "answer", "mail", task["id"], truth[task["key"]], "--user", "rev")
    assert store_counts(gw.data_dir)["review_tasks"] >= 1

    retrained = gw.json("train", "mail", "--budget", "3")
    assert retrained["model_version"] == 2

    out = tmp_path / "pred.csv"
    gw.json("predict", "mail", spam_csv, "--out", out, "--text-column", "text")
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["key", "predicted_label", "confidence", "p_ham", "p_spam"]
    assert len(pred) == len(frame) and pred["confidence"].between(0, 1).all()

    manifest = tmp_path / "mail.manifest"
    gw.json("export", "mail", "--format", "manifest", "--out", manifest)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == 31  # 30 human labels + 1 review answer
    first = lines[0]
    assert {"source", "mail", "mail-metadata", "key"} <= set(first)
    assert first["mail-metadata"]["human-annotated"] == "yes"
    assert first["mail-metadata"]["class-name"] in ("ham", "spam")

    table = tmp_path / "mail.csv"
    gw.json("export", "mail", "--format", "csv", "--out", table)
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(frame) and list(rows[0]) == ["key", "label", "source", "confidence"]


def test_image_project_from_a_folder_with_labels(gw, tmp_path):
    folder = write_digits_folder(tmp_path / "imgs", per_class=10, classes=(3, 8))
    report = gw.json("import", "digits", folder, "--modality", "image")
    assert report["imported"] == 20 and report["labeled"] == 20
    assert report["classes"] == ["3", "8"]
    # labels came from the folders: train straight away
    trained = gw.json("train", "digits", "--budget", "3")
    assert trained["model_version"] == 1
    more = write_digits_folder(tmp_path / "more", per_class=3, classes=(3, 8), offset=20)
    gw.json("import", "digits", more, "--modality", "image", "--folders-as", "none")
    out = tmp_path / "pred.csv"
    gw.json("predict", "digits", more, "--out", out)
    pred = pd.read_csv(out)
    assert len(pred) == 6 and list(pred.columns)[-2:] == ["p_3", "p_8"]
    assert (pred["key"].str.split("/").str[0] == pred["predicted_label"].astype(str)).mean() >= 0.5
    manifest = tmp_path / "d.manifest"
    gw.json("export", "digits", "--format", "manifest", "--out", manifest)
    first = json.loads(manifest.read_text().splitlines()[0])
    assert Path(first["source-ref"]).exists()
    assert first["digits-metadata"]["type"] == "groundtruth/image-classification"


def test_tabular_project_with_label_column(gw, wine_csv, tmp_path):
    report = gw.json("import", "wine", wine_csv, "--modality", "tabular",
                     "--label-column", "cultivar")
    assert report["imported"] == 178 and report["labeled"] == 178
    trained = gw.json("train", "wine", "--budget", "3")
    assert trained["holdout"] is not None and trained["holdout"] > 0.8
    out = tmp_path / "pred.csv"
    gw.json("predict", "wine", wine_csv, "--out", out)
    pred = pd.read_csv(out)
    truth = pd.read_csv(wine_csv)["cultivar"]
    assert (pred["predicted_label"] == truth).mean() > 0.9
    # --progress draws the bar on stderr even when stderr is not a terminal.
    code, out_text, err = gw("predict", "wine", wine_csv, "--out", out, "--progress")
    assert code == 0 and "178/178" in err and "wrote 178 predictions" in out_text
    gw.json("export", "wine", "--format", "csv", "--out", tmp_path / "w.csv")


def test_unknown_label_is_one_clear_line_and_changes_nothing(gw, spam_csv):
    gw.json("import", "mail", spam_csv, "--modality", "text", "--label-column", "label")
    before = store_counts(gw.data_dir)
    line = gw.fails("label", "mail", "1", "eggs")
    assert "unknown label 'eggs'" in line and "ham, spam" in line
    assert gw.fails("label", "mail", "not-a-number", "ham").startswith("error: item id")
    assert "no item 99999" in gw.fails("label", "mail", "99999", "ham")
    assert store_counts(gw.data_dir) == before


def test_training_with_one_class_is_refused_and_changes_nothing(gw, tmp_path):
    folder = write_digits_folder(tmp_path / "one", per_class=8, classes=(5,))
    gw.json("import", "fives", folder, "--modality", "image", "--classes", "5,6")
    before = store_counts(gw.data_dir)
    line = gw.fails("train", "fives", "--budget", "2")
    assert "two classes" in line
    assert store_counts(gw.data_dir) == before


def test_unknown_project_and_usage_errors_are_one_line(gw):
    assert "no project named 'ghost'" in gw.fails("next", "ghost")
    assert "invalid choice" in gw.fails("import", "p", "x.csv", "--modality", "audio")


def test_review_open_needs_a_model(gw, spam_csv):
    gw.json("import", "mail", spam_csv, "--modality", "text", "--label-column", "label")
    assert "no promoted model" in gw.fails("review", "open", "mail", "--below", "0.5")


def test_console_script_is_installed_and_speaks_json(tmp_path, wine_csv):
    exe = shutil.which("groundwork", path=str(Path(sys.executable).parent))
    assert exe, "the groundwork console script is not installed in this environment"
    proc = subprocess.run(
        [exe, "import", "wine", str(wine_csv), "--modality", "tabular",
         "--gold-column", "cultivar", "--json", "--data-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gold"] == 178
    bad = subprocess.run([exe, "next", "nope", "--data-dir", str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def _sources(tmp_path, spam_csv, wine_csv) -> dict:
    images = write_digits_folder(tmp_path / "imgs", per_class=12, classes=(2, 7))
    return {
        "image": (images, ["--folders-as", "gold"], []),
        "text": (spam_csv, ["--gold-column", "label", "--text-column", "text"],
                 ["--text-column", "text"]),
        "tabular": (wine_csv, ["--gold-column", "cultivar"], []),
    }


@pytest.mark.parametrize("modality", ["image", "text", "tabular"])
def test_every_command_on_every_modality(gw, tmp_path, spam_csv, wine_csv, modality):
    """import, projects, next, label, train, predict, review, export: the same loop per modality."""
    source, import_flags, predict_flags = _sources(tmp_path, spam_csv, wine_csv)[modality]
    report = gw.json("import", "p", source, "--modality", modality, *import_flags)
    assert report["imported"] == report["gold"] > 0 and report["labeled"] == 0
    listed = gw.json("projects")["projects"]
    assert listed[0]["name"] == "p" and listed[0]["modality"] == modality

    import sqlite3

    with sqlite3.connect(gw.data_dir / "groundwork.db") as conn:
        gold = {k: json.loads(g)[0] for k, g in conn.execute("SELECT key, gold FROM items")}
    label_some(gw, "p", gold, 16)
    trained = gw.json("train", "p", "--budget", "2")
    assert trained["model_version"] == 1 and trained["metric"] == "balanced_accuracy"
    assert "holdout" in trained

    out = tmp_path / "pred.csv"
    gw.json("predict", "p", source, "--out", out, *predict_flags)
    pred = pd.read_csv(out, dtype={"key": str, "predicted_label": str})
    assert list(pred.columns[:3]) == ["key", "predicted_label", "confidence"]
    assert len(pred) == report["imported"]
    assert (pred["predicted_label"] == pred["key"].map(gold)).mean() > 0.6

    # A 2 s search on 16 labels may pick a model sure of everything (k-NN with k=1):
    # the audit sample opens tasks whatever the confidences are.
    assert gw.json("review", "open", "p", "--below", "1.0", "--sample", "0.5")["opened"] >= 1
    task = gw.json("review", "next", "p")["tasks"][0]
    gw.json("review", "answer", "p", task["id"], gold[task["key"]])

    manifest = tmp_path / "p.manifest"
    assert gw.json("export", "p", "--format", "manifest", "--out", manifest)["rows"] == 17
    table = tmp_path / "p.csv"
    assert gw.json("export", "p", "--format", "csv", "--out", table)["rows"] == report["imported"]


def test_serve_starts_the_app(tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("groundwork", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=1) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("groundwork serve did not answer on /_stcore/health")
    finally:
        proc.terminate()
        proc.wait(20)
