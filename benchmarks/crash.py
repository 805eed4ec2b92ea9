"""Durability: every answer the Label page showed as saved survives kill -9 of the app.

    .venv/bin/python benchmarks/crash.py [--kills 30] [--seed 0] [--out FILE]

The real app (`python -m streamlit run app.py`, as the browser tests start it)
runs on a store holding scikit-learn's 1,797 handwritten digits as PNGs.
Debian's Chromium, driven by Playwright, labels on the real Label page with
the keyboard: it reads the item shown ("Item N · chosen by ..."), presses a
class key, and counts the answer as *acknowledged* only once the page shows
the next item (the fragment reruns after the answer is stored). After the
session's first acknowledged answer, a timer sends SIGKILL to the server at a
random moment (uniform in `--min-gap`..`--max-gap` seconds), so kills land
while an answer is in flight (pressed, not yet shown as saved) and between
answers; the script then starts the server again, opens the page afresh and
goes on, `--kills` times. Background refits (every 20 answers, as for a
person) run and are orphaned by the kills.

At the end (after the last kill and after the orphaned refits finish) the
store is opened the way the app opens it, and the script checks that every
acknowledged answer is there, live, with its label and user; that no
acknowledged item was served again; and `PRAGMA integrity_check`.
Answers stored but not acknowledged (the kill came between commit and
redraw) are counted too; they are not losses.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from labeling.store import connect  # noqa: E402

CHROMIUM = os.environ.get("GROUNDWORK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PROJECT = "digits"
FIRST_ITEM_TIMEOUT_MS = 120_000
USER = "crash-bench"
CURRENT_ITEM_JS = r"""() => {
  const m = document.body.innerText.match(/Item (\d+) · chosen by/);
  return m ? Number(m[1]) : null;
}"""
IDLE_ITEM_JS = r"""() => /Item (\d+) · chosen by/.test(document.body.innerText)
  && document.querySelector('[data-test-script-state="notRunning"]') !== null"""
NEXT_ITEM_JS = r"""(answered) => {
  const m = document.body.innerText.match(/Item (\d+) · chosen by/);
  return m !== null && Number(m[1]) !== answered
    && document.querySelector('[data-test-script-state="notRunning"]') !== null;
}"""


class ServerDied(Exception):
    """The server was killed before the page acknowledged the answer."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run app.py` on the store; `kill()` is SIGKILL, nothing graceful."""

    def __init__(self, data_dir: Path, log_dir: Path, n: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "GROUNDWORK_DATA": str(data_dir), "GROUNDWORK_DEMO": "0",
               "GROUNDWORK_USER": USER}
        self.log = open(log_dir / f"streamlit-{n}.log", "w")  # noqa: SIM115
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.headless", "true", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        while time.monotonic() - started < 60:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        self.start_seconds = time.monotonic() - started
                        return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"streamlit did not start; see {self.log.name}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()


def build_store(data_dir: Path) -> int:
    """The digits as PNG images, their true digit hidden as gold; returns the item count."""
    from sklearn.datasets import load_digits

    from labeling.demo import render_digit
    from labeling.importers import import_source

    digits = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (pixels, target) in enumerate(zip(digits.data, digits.target, strict=True)):
            folder = Path(tmp) / str(target)
            folder.mkdir(exist_ok=True)
            (folder / f"{i:04d}.png").write_bytes(render_digit(pixels))
        db = connect(data_dir)
        report = import_source(db, PROJECT, tmp, "image", folders_as="gold",
                               classes=[str(d) for d in range(10)])
        db.conn.close()
    return report.imported


def wait_for(page, server: Server, js: str, arg=None, timeout_ms: int = 15_000) -> None:
    """Wait for `js` to hold in short slices, so a dead server is noticed at once."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            page.wait_for_function(js, arg=arg, timeout=200)
            return
        except PlaywrightTimeout:
            if not server.alive():
                raise ServerDied from None
            if time.monotonic() > deadline:
                raise


def label_until_killed(page, server: Server, acks: list[dict], rng: random.Random,
                       timeout_ms: int, arm_kill, stats: dict, log=None) -> None:
    """Answer items on the Label page until the server dies; record each acknowledged answer.

    `arm_kill` is called after the session's first acknowledged answer: the
    kill then lands at a random moment while the page is labeling.
    """
    while True:
        # The first item of a session may wait for the app's first run on a new project
        # (the k-means cold-start seed over every image); later ones are quick.
        wait_for(page, server, IDLE_ITEM_JS,
                 timeout_ms=timeout_ms if stats["presses"] else FIRST_ITEM_TIMEOUT_MS)
        item_id = page.evaluate(CURRENT_ITEM_JS)
        digit = rng.randrange(9)  # keys 1..9 are the classes "0".."8"
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press(str(digit + 1))
        stats["presses"] += 1
        stats["in_flight"] = True
        try:
            wait_for(page, server, NEXT_ITEM_JS, arg=item_id, timeout_ms=timeout_ms)
        except PlaywrightTimeout:
            stats["timeouts_alive"] += 1
            raise
        stats["in_flight"] = False
        acks.append({"item_id": item_id, "label": str(digit), "at": time.time()})
        if log is not None:
            log.write(json.dumps(acks[-1]) + "\n")
            log.flush()
        if stats["presses"] == 1:
            arm_kill()


def verify(data_dir: Path, acks: list[dict]) -> dict:
    # Plain sqlite3 (recovery of the WAL happens on open), not `connect`: the store may have
    # been migrated by a newer checkout of the app while this script ran.
    db = sqlite3.connect(data_dir / "groundwork.db", timeout=30)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        live = {}
        for item_id, labels in db.execute(
            "SELECT item_id, labels FROM annotations WHERE user = ? AND retracted_at IS NULL",
            [USER],
        ):
            live.setdefault(item_id, []).append(json.loads(labels))
        counts = db.execute("SELECT count(*), count(DISTINCT item_id) FROM annotations "
                            "WHERE user = ?", [USER]).fetchone()
        n_labels_ok = db.execute(
            "SELECT count(*) FROM items i WHERE i.n_labels != (SELECT count(*) FROM annotations a "
            "WHERE a.item_id = i.id AND a.retracted_at IS NULL AND a.source IN "
            "('human', 'review', 'import'))").fetchone()[0] == 0
    finally:
        db.close()
    lost = [a for a in acks if [a["label"]] not in live.get(a["item_id"], [])]
    acked_ids = [a["item_id"] for a in acks]
    return {
        "integrity_check": integrity,
        "lost": len(lost),
        "lost_examples": lost[:10],
        "acknowledged_items_served_again": len(acked_ids) - len(set(acked_ids)),
        "stored_answers": counts[0],
        "stored_but_not_acknowledged": counts[0] - len(acks),
        "items_answered_twice": counts[0] - counts[1],
        "item_counters_consistent": n_labels_ok,
    }


def wait_for_orphans(data_dir: Path, limit: float = 120.0) -> int:
    """Refit processes the kills orphaned keep writing; wait for them before checking."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        conn = sqlite3.connect(data_dir / "groundwork.db", timeout=30)
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM jobs WHERE status IN ('queued', 'running') AND pid IS NOT NULL")]
        conn.close()
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().split(") ")[-1][:1] != "Z"]
        if not alive:
            return 0
        time.sleep(0.5)
    return len(alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--min-gap", type=float, default=0.0,
                        help="earliest kill, seconds after the session's first saved answer")
    parser.add_argument("--max-gap", type=float, default=5.0, help="latest kill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds to wait for an answer's acknowledgement")
    parser.add_argument("--data-dir", help="store folder (default: a temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "crash.json"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="groundwork-crash-"))
    data_dir = Path(args.data_dir).resolve() if args.data_dir else work / "store"
    started = time.monotonic()
    items = build_store(data_dir)
    acks: list[dict] = []
    sessions: list[dict] = []
    ack_log = open(work / "acknowledged.jsonl", "a")  # noqa: SIM115 - kept for a re-check
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for n in range(args.kills):
            server = Server(data_dir, work, n)
            gap = rng.uniform(args.min_gap, args.max_gap)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            before = len(acks)
            stats: dict = {"presses": 0, "timeouts_alive": 0, "in_flight": False}
            timer = threading.Timer(gap, server.kill)  # SIGKILL at a random moment

            def arm(timer=timer) -> None:
                timer.start()

            try:
                page.goto(f"{server.url}/label?project={PROJECT}", timeout=60_000)
                label_until_killed(page, server, acks, rng, int(args.timeout * 1000), arm,
                                   stats, ack_log)
            except Exception as exc:  # noqa: BLE001 - expected: the server died under the page
                stats["ended_by"] = type(exc).__name__
            finally:
                if timer.is_alive():
                    timer.join()
                server.kill()
                context.close()
            stats["killed"] = "while an answer was in flight" if stats.pop("in_flight") \
                else "between answers"
            sessions.append({"kill": n + 1, "kill_after_first_answer_s": round(gap, 2),
                             "start_s": round(server.start_seconds, 2),
                             "acknowledged": len(acks) - before, **stats})
            print(f"kill {n + 1}/{args.kills}: {len(acks) - before} acknowledged "
                  f"(total {len(acks)}), killed {stats['killed']}", flush=True)
        browser.close()
    ack_log.close()
    orphans = wait_for_orphans(data_dir)
    checks = verify(data_dir, acks)
    result = {
        "command": " ".join(["benchmarks/crash.py", *(argv if argv is not None else sys.argv[1:])]),
        "store": f"{items} digit images (PNG), one project, annotations_per_item 1",
        "kills": args.kills,
        "kills_while_an_answer_was_in_flight": sum(
            s["killed"].startswith("while") for s in sessions),
        "kills_at_a_random_moment": sum(s.get("ended_by") == "ServerDied" for s in sessions),
        "kills_after_no_reply_within_timeout": sum(
            s.get("ended_by") == "TimeoutError" for s in sessions),
        "acknowledged": len(acks),
        **checks,
        "refits_still_running_at_check": orphans,
        "seconds": round(time.monotonic() - started, 1),
        "sessions": sessions,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "sqlite": sqlite3.sqlite_version},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("sessions",)}, indent=1))
    print(f"wrote {out}")
    return 0 if checks["lost"] == 0 and checks["integrity_check"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
