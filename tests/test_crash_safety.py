"""A saved answer survives kill -9: a writer process is killed mid-run, again and again.

The writer labels through `record_annotation` (what the Label page and the
CLI call) and prints each annotation id once the call has returned: that
line is the acknowledgement. The test kills it with SIGKILL at a random
moment after it started writing, several times, each time starting a new
writer on the same store. Afterwards every acknowledged answer is in the
store, live, the item counters agree with the answers, and the store passes
`PRAGMA integrity_check`. (The full-app version, killing the Streamlit server
under a browser, is `benchmarks/crash.py`.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from labeling.items import add_items
from labeling.projects import create_project, set_refit_every
from labeling.store import connect

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import sys
from labeling.annotations import record_annotation
from labeling.projects import get_project
from labeling.queue import next_items
from labeling.store import connect

db = connect(sys.argv[1])
project = get_project(db, "mail")
round_, n = sys.argv[2], 0
while True:
    served = next_items(db, project, n=1, user="writer")
    if not served:
        break
    item_id = served[0]["id"]
    label = "spam" if item_id % 3 else "ham"
    answer = record_annotation(db, project, item_id, label, user="writer", duration_ms=5,
                               submission_id=f"{round_}-{n}")
    n += 1
    print(answer, item_id, label, flush=True)  # acknowledged: the call returned
"""


def _run_and_kill(data_dir: Path, round_: int, rng: random.Random) -> list[tuple[int, int, str]]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), str(round_)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[tuple[int, int, str]] = []
    first = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if line.endswith("\n"):  # a line cut by the kill is not an acknowledgement
                answer, item, label = line.split()
                acked.append((int(answer), int(item), label))
                first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(60), (f"writer exited {proc.returncode}: {proc.stderr.read()!r}"
                            if proc.poll() is not None else "no answer within 60 s")
    time.sleep(rng.uniform(0.05, 0.6))  # somewhere in the middle of writing
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    reader.join(30)
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_acknowledged_answers_survive_sigkill(tmp_path):
    data_dir = tmp_path / "store"
    db = connect(data_dir)
    project = create_project(db, "mail", "text", classes=["ham", "spam"])
    set_refit_every(db, project, 0)
    # Enough items that five rounds never empty the queue: a writer on a quiet
    # machine records a few thousand answers a second.
    with db.atomic():
        add_items(db, project, [{"key": str(i), "content": f"message {i}", "sha256": str(i)}
                                for i in range(40_000)])
    db.conn.close()

    rng = random.Random(6)
    acked: list[tuple[int, int, str]] = []
    kills = 5
    for round_ in range(kills):
        acked += _run_and_kill(data_dir, round_, rng)

    db = connect(data_dir)  # recovers the WAL as the app would on restart
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0]: (r[1], r[2]) for r in db.execute(
            "SELECT id, item_id, labels FROM annotations WHERE retracted_at IS NULL")}
        missing = [a for a in acked if stored.get(a[0]) != (a[1], f'["{a[2]}"]')]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged answers lost"
        assert len(stored) >= len(acked)  # at most the unacknowledged last one on top
        assert len(stored) <= len(acked) + kills
        assert db.execute(
            "SELECT count(*) FROM items i WHERE n_labels != (SELECT count(*) FROM annotations a "
            "WHERE a.item_id = i.id AND a.retracted_at IS NULL)").fetchone()[0] == 0
    finally:
        db.conn.close()
