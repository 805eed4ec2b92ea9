"""Auto-labeling: the accuracy machine labels really reach against gold, at a target.

    .venv/bin/python benchmarks/autolabel_accuracy.py [--labels 300,500] [--target 0.95]

For each data set of `label_efficiency.py` and each number of human labels on
its ladder (`LADDER`, or `--labels` / `--labels-for`): import into a fresh
store with hidden gold, label that many items the way the app serves them
(random first, then active learning with random validation items mixed in),
answering with the gold; train (`--budget` seconds per round, two rounds); run
automated labeling at `--target` with a 95% lower bound; then compare every
machine label with the gold nobody looked at. Target: achieved accuracy >=
target on every set; the sweep also shows how many human labels each set needs
before the bound certifies a threshold (a validation set of 20% of the labels
needs at least 59 answers, all right, to certify 95%).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from label_efficiency import (  # noqa: E402
    cancer_source,
    digits_source,
    fashion_source,
    spam_source,
    write_results,
)

from automl.training import train_project  # noqa: E402
from labeling.annotations import record_annotation  # noqa: E402
from labeling.autolabel import run_autolabel  # noqa: E402
from labeling.importers import import_source  # noqa: E402
from labeling.projects import get_project  # noqa: E402
from labeling.queue import next_items  # noqa: E402
from labeling.store import connect  # noqa: E402


def one(name: str, made, work: Path, labels: int, target: float, budget: float) -> dict:
    source, modality, options = made
    db = connect(work / f"store-{name}")
    import_source(db, name, source, modality, **options)
    project = get_project(db, name)
    gold = {r[0]: json.loads(r[1]) for r in db.execute("SELECT id, gold FROM items")}
    if labels >= len(gold):
        raise SystemExit(f"{name}: {labels} human labels leave no pool of its {len(gold)} items "
                         "to label by machine: give that set fewer with --labels-for")
    started = time.monotonic()
    for round_size in (labels // 2, labels - labels // 2):
        for _ in range(round_size):
            item_id = next_items(db, project)[0]["id"]
            record_annotation(db, project, item_id, gold[item_id], user="oracle")
        trained = train_project(db, project, budget=budget)
    result = run_autolabel(db, project, target=target)
    auto = db.execute("SELECT item_id, labels FROM annotations WHERE source = 'auto' "
                      "AND retracted_at IS NULL").fetchall()
    correct = sum(json.loads(labels_) == gold[item] for item, labels_ in auto)
    entry = {
        "modality": modality,
        "items": len(gold),
        "human_labels": labels,
        "model": trained["estimator"],
        "holdout": trained["holdout"],
        "validation_size": result["validation_size"],
        "threshold": result["threshold"],
        "estimated_accuracy": result["estimated_accuracy"],
        "lower_bound": result["lower_bound"],
        "auto_labeled": result["auto_labeled"],
        "pool_size": result["pool_size"],
        "coverage": result["auto_labeled"] / result["pool_size"] if result["pool_size"] else 0,
        "validation_accuracy": result["validation_accuracy"],
        "achieved_accuracy": correct / len(auto) if auto else None,
        "target_met": (correct / len(auto) >= target) if auto else None,
        "seconds": round(time.monotonic() - started, 1),
        # The validation answers, most confident first: [threshold, answers, right].
        "validation_curve": [[round(p["threshold"], 4), p["validation_n"],
                              round(p["accuracy"] * p["validation_n"])] for p in result["curve"]],
    }
    db.conn.close()
    return entry


# Human labels tried per set, fewest first: the sweep finds how many each set needs
# before the 95% bound certifies anything (a set's items minus its labels is the pool).
LADDER = {"digits": (300, 500, 1000), "fashion": (1000, 1500, 2000),
          "spam": (300, 500, 1000), "breast-cancer": (300, 450)}


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("+", ",").split(",") if v)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="",
                        help="human labels for every set, one count or several (300,500); "
                             "default: the ladder per set in LADDER")
    parser.add_argument("--labels-for", default="",
                        help="per set, e.g. fashion=1500+2000,breast-cancer=450")
    parser.add_argument("--sets", default="digits,fashion,spam,breast-cancer")
    parser.add_argument("--fashion-items", type=int, default=3000,
                        help="Fashion-MNIST test images to use (up to 10,000): a bigger pool "
                             "gives the bound more validation answers at the same share")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"
                                             / "autolabel_accuracy.json"))
    args = parser.parse_args()
    ladder = {name: _counts(args.labels) or counts for name, counts in LADDER.items()}
    ladder.update({k: _counts(v) for k, v in (p.split("=") for p in args.labels_for.split(",")
                                              if p)})
    results: dict = {"command": " ".join(["benchmarks/autolabel_accuracy.py", *sys.argv[1:]]),
                     "target": args.target, "train_budget_seconds": args.budget, "datasets": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, make in (("digits", digits_source), ("fashion", fashion_source),
                           ("spam", spam_source), ("breast-cancer", cancer_source)):
            if name not in args.sets.split(","):
                continue
            (work / name).mkdir()
            made = (make(work / name, args.fashion_items) if name == "fashion"
                    else make(work / name))
            if made is None:
                results["datasets"][name] = {"skipped": "data not available offline here"}
                continue
            runs = []
            for labels in ladder[name]:
                entry = one(f"{name}-{labels}", made, work, labels, args.target, args.budget)
                runs.append(entry)
                print(name, json.dumps({k: v for k, v in entry.items()
                                        if k != "validation_curve"}), flush=True)
            certified = [r["human_labels"] for r in runs if r["threshold"] is not None]
            results["datasets"][name] = {
                "runs": runs,
                "fewest_labels_certified": min(certified) if certified else None,
                "every_auto_label_set_meets_target": all(
                    r["target_met"] for r in runs if r["auto_labeled"]),
            }
    results["seconds"] = round(time.monotonic() - started, 1)
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
