"""Media an import wrote before it was killed (kill -9) are found and removed, nothing else is.

A real import runs in its own process on a real store and is killed with
SIGKILL once it has written some media files: its transaction rolls back, the
files stay. The sweep removes exactly those, keeps every file an item uses,
and keeps young files (an import still running elsewhere) unless told not to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli
from labeling.importers import import_source
from labeling.media import orphaned_media, sweep_media
from labeling.store import connect
from tests.conftest import write_digits_folder

ROOT = Path(__file__).resolve().parents[1]
IMPORTER = """
import sys
from labeling.importers import import_source
from labeling.store import connect
db = connect(sys.argv[1])
import_source(db, "big", sys.argv[2], "image")
"""


def _media_files(data_dir: Path) -> set[str]:
    return {p.relative_to(data_dir).as_posix() for p in (data_dir / "media").rglob("*")
            if p.is_file()}


def test_an_import_killed_mid_way_leaves_orphans_that_the_sweep_removes(tmp_path, capsys):
    data_dir = tmp_path / "store"
    db = connect(data_dir)
    import_source(db, "kept", write_digits_folder(tmp_path / "kept", per_class=5), "image")
    kept = _media_files(data_dir)
    assert len(kept) == 10
    db.conn.close()

    big = write_digits_folder(tmp_path / "big", per_class=170, classes=range(10))
    proc = subprocess.Popen([sys.executable, "-c", IMPORTER, str(data_dir), str(big)], cwd=ROOT,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_media_files(data_dir)) < len(kept) + 50:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the import wrote no media in 2 minutes"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)

    db = connect(data_dir)
    try:
        assert db.execute("SELECT count(*) FROM projects WHERE name = 'big'").fetchone()[0] == 0
        left = _media_files(data_dir) - kept
        assert len(left) >= 50  # written by the killed import, used by nothing
        # Young files are spared by default: they may belong to an import still running.
        assert sweep_media(db, data_dir)["files"] == 0
        assert {p.relative_to(data_dir).as_posix() for p in orphaned_media(db, data_dir, 0)} \
            == left
        args = ["media-sweep", "--min-age-minutes", "0", "--json", "--data-dir", str(data_dir)]
        assert cli.main([*args, "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert dry["files"] == len(left) and _media_files(data_dir) - kept == left
        assert cli.main(args) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["files"] == len(left) and report["bytes"] > 0
        assert _media_files(data_dir) == kept  # every file an item uses is still there
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.conn.close()


def test_a_negative_age_is_refused(db, data_dir, capsys):
    code = cli.main(["media-sweep", "--min-age-minutes", "-1", "--data-dir", str(data_dir)])
    assert code != 0 and "zero or more" in capsys.readouterr().err
