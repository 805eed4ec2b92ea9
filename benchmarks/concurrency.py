"""Concurrent annotators: 8 processes x 1,000 labels on one store, one answer wanted per item.

    .venv/bin/python benchmarks/concurrency.py [--workers 8] [--labels 1000] [--items 10000]

Each annotator is its own process with its own connection, labeling the way
the Label page and `groundwork next` + `groundwork label` do: `lease_next_items(db,
project, n=1, user=name)` (the item is leased to them, in one `BEGIN IMMEDIATE`
write transaction), then `record_annotation(..., submission_id=...)` on the
item it was served and `release_lease`, as fast as it can (no think time, the
worst case for contention). `--no-leases` labels through plain `next_items`
instead, the path before queue leases, for comparison.
They start together behind a barrier. The project wants one answer per item
(`annotations_per_item` 1; `--annotations-per-item K` for up to 5) and
automatic refits are off (`--refit-every 0`; the CLI would otherwise start a
background refit process every 20 labels).

Counted at the end, from the store:
- lost: answers `record_annotation` returned an id for that are not in the
  store, live, with the annotator and label that were sent;
- duplicated: items with more live answers than were wanted (two annotators
  served the same item before either answered: what leases prevent;
  reported as measured), and answers from someone who had answered the item;
- "database is locked" (and any other) errors raised to an annotator. A
  locked error is retried with the same submission id, which makes the retry
  safe; the count is of errors an annotator would have seen.
Plus how often an annotator was served nothing because every open item was
leased by others (it waits 10 ms and asks again), throughput and per-answer
latency (lease + record + release), and
`PRAGMA integrity_check`. Results go to benchmarks/results/concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labeling.annotations import record_annotation  # noqa: E402
from labeling.items import add_items  # noqa: E402
from labeling.leases import lease_next_items, release_lease  # noqa: E402
from labeling.projects import (  # noqa: E402
    create_project,
    get_project,
    set_annotations_per_item,
    set_refit_every,
)
from labeling.queue import next_items  # noqa: E402
from labeling.store import connect  # noqa: E402

PROJECT = "mail"
CLASSES = ["ham", "spam"]


def build_store(data_dir: Path, items: int, refit_every: int, wanted: int = 1) -> None:
    """`items` text items cut from the SpamAssassin subset in tests/data (keys are unique)."""
    import pandas as pd

    texts = pd.read_csv(ROOT / "tests" / "data" / "spam.csv")["text"].tolist()
    db = connect(data_dir)
    project = create_project(db, PROJECT, "text", classes=CLASSES)
    set_refit_every(db, project, refit_every)
    set_annotations_per_item(db, project, wanted)
    with db.atomic():
        add_items(db, project, [{"key": f"mail-{i}", "content": texts[i % len(texts)][:2000],
                                 "sha256": f"{i:064d}"} for i in range(items)])
    db.conn.close()


def _retry(errors: dict[str, int], call, *args, **kwargs):
    """Call until it does not raise a SQLite error, counting each error an annotator saw."""
    while True:
        try:
            return call(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            errors[str(exc)] = errors.get(str(exc), 0) + 1


def annotator(data_dir: str, name: str, labels: int, leases: bool, barrier, results) -> None:
    """One person labeling as fast as possible; reports every acknowledged answer and error."""
    db = connect(data_dir)
    project = get_project(db, PROJECT)
    acked: list[tuple[int, int, str]] = []
    errors: dict[str, int] = {}
    latencies: list[float] = []
    waits = 0
    barrier.wait()
    started = time.perf_counter()
    for n in range(labels):
        t0 = time.perf_counter()
        if leases:
            served = _retry(errors, lease_next_items, db, project, n=1, user=name)
            while not served and next_items(db, project, n=1, user=name):
                waits += 1  # every open item is leased by others: ask again shortly
                time.sleep(0.01)
                served = _retry(errors, lease_next_items, db, project, n=1, user=name)
        else:
            served = _retry(errors, next_items, db, project, n=1, user=name)
        if not served:
            break
        item_id = served[0]["id"]
        label = CLASSES[(item_id + n) % 2]
        while True:
            try:
                answer = record_annotation(db, project, item_id, label, user=name,
                                           submission_id=f"{name}-{n}")
                break
            except sqlite3.OperationalError as exc:  # retried: the same id cannot double up
                errors[str(exc)] = errors.get(str(exc), 0) + 1
        if leases:
            _retry(errors, release_lease, db, project, item_id, name)
        latencies.append(time.perf_counter() - t0)
        acked.append((answer, item_id, label))
    results.put({"name": name, "acked": acked, "errors": errors, "latencies": latencies,
                 "waits": waits, "seconds": time.perf_counter() - started})
    db.conn.close()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(q * len(values)), len(values) - 1)] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--labels", type=int, default=1000, help="labels per annotator")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--refit-every", type=int, default=0)
    parser.add_argument("--annotations-per-item", type=int, default=1, choices=range(1, 6))
    parser.add_argument("--no-leases", action="store_true",
                        help="label through plain next_items (the path before queue leases)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                              "concurrency.json"))
    args = parser.parse_args(argv)

    load_before = [round(x, 2) for x in os.getloadavg()]
    data_dir = Path(tempfile.mkdtemp(prefix="groundwork-concurrency-")) / "store"
    build_store(data_dir, args.items, args.refit_every, args.annotations_per_item)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(args.workers), ctx.Queue()
    names = [f"annotator-{i + 1}" for i in range(args.workers)]
    procs = [ctx.Process(target=annotator, args=(str(data_dir), name, args.labels,
                                                 not args.no_leases, barrier, results))
             for name in names]
    started = time.perf_counter()
    for p in procs:
        p.start()
    reports = [results.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - started

    conn = sqlite3.connect(data_dir / "groundwork.db")
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    stored = {row[0]: row[1:] for row in conn.execute(
        "SELECT id, item_id, user, labels FROM annotations WHERE retracted_at IS NULL")}
    wanted = args.annotations_per_item
    per_item = conn.execute(
        "SELECT count(*), coalesce(sum(n - ?), 0) FROM (SELECT item_id, count(*) AS n "
        "FROM annotations WHERE retracted_at IS NULL GROUP BY item_id HAVING n > ?)",
        [wanted, wanted]).fetchone()
    same_person = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM annotations WHERE retracted_at IS NULL "
        "GROUP BY item_id, user HAVING count(*) > 1)").fetchone()[0]
    counters_ok = conn.execute(
        "SELECT count(*) FROM items i WHERE n_labels != (SELECT count(*) FROM annotations a "
        "WHERE a.item_id = i.id AND a.retracted_at IS NULL)").fetchone()[0] == 0
    conn.close()

    acked = [(r["name"], *a) for r in reports for a in r["acked"]]
    lost = [a for a in acked if stored.get(a[1]) != (a[2], a[0], json.dumps([a[3]]))]
    errors: dict[str, int] = {}
    for r in reports:
        for message, count in r["errors"].items():
            errors[message] = errors.get(message, 0) + count
    latencies = [x for r in reports for x in r["latencies"]]
    labeling = max(r["seconds"] for r in reports)  # from the barrier to the last one done
    result = {
        "command": " ".join(["benchmarks/concurrency.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "workers": args.workers,
        "labels_per_worker": args.labels,
        "items": args.items,
        "annotations_per_item": wanted,
        "refit_every": args.refit_every,
        "path": "next_items + record_annotation" if args.no_leases else
                "lease_next_items + record_annotation + release_lease",
        "acknowledged": len(acked),
        "stored": len(stored),
        "lost": len(lost),
        "duplicated_items": per_item[0],
        "duplicate_answers": per_item[1],
        "answered_twice_by_one_person": same_person,
        "database_locked_errors": sum(c for m, c in errors.items() if "locked" in m),
        "other_errors": {m: c for m, c in errors.items() if "locked" not in m},
        "waits_all_leased_by_others": sum(r["waits"] for r in reports),
        "integrity_check": integrity,
        "item_counters_consistent": counters_ok,
        "wall_seconds_with_process_start": round(wall, 1),
        "labeling_seconds": round(labeling, 2),
        "labels_per_second": round(len(acked) / labeling, 1) if labeling else None,
        "answer_ms_p50": round(percentile(latencies, 0.5) * 1000, 2),
        "answer_ms_p95": round(percentile(latencies, 0.95) * 1000, 2),
        "answer_ms_max": round(max(latencies, default=0) * 1000, 1),
        "answer_ms_mean": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "sqlite": sqlite3.sqlite_version},
        "load_average_1_5_15_min": {"before": load_before,
                                    "after": [round(x, 2) for x in os.getloadavg()]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
