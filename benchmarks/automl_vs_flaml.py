"""Our AutoML search against FLAML, side by side, same splits, same budget, same objective.

    python benchmarks/automl_vs_flaml.py [--budgets 30 120] [--seeds 3]
        [--datasets breast_cancer digits ...] [--quick] [--no-distributed]

The script runs in its own environment, `benchmarks/.venv-flaml` (git-ignored):
if it is started from any other interpreter it creates that venv when missing
(the repo installed editable, plus flaml, lightgbm, `xgboost-cpu<3`,
palmerpenguins, bokeh-sampledata and ISLP) and re-runs itself inside it.
ISLP is installed without its dependencies (torch and friends): only its
`load_data`, which needs pandas, is used.

For every data set x seed there is one stratified 75/25 train/test split that
both systems share; each gets the train part and the budget, and is scored by
balanced accuracy on the test part.

- Ours goes through the product's domain API: a fresh store in a temp folder,
  the train part imported as a table with its labels as imported (curated)
  labels, `automl.training.train_project(budget=B, seed=s)`, then the test part
  predicted by the saved, promoted model through `automl.predict.predict_file`.
  One deviation, for fairness: the product holds 20% of the labels out of
  training to measure the model itself (`labeling.splits.in_holdout`). Here the
  test part plays that role, so the benchmark switches the product's holdout
  off (it patches `in_holdout` as seen by `automl.training` to "never") and
  both systems train on exactly the same rows. Wall time is the whole
  `train_project` call (features, search, refit, registry, saving).
- FLAML: `flaml.AutoML(task="classification", metric=<balanced accuracy>,
  time_budget=B, n_jobs=1, seed=s)` on the same raw table (text columns as
  pandas categories, FLAML's documented input); wall time is the `fit` call,
  which includes FLAML's own final retrain.
- Both are single-process; BLAS/OpenMP threads are pinned to 1.

The distributed measurement starts a throwaway PostgreSQL (tests/postgres.py),
creates a study the way `groundwork train --storage` does, and runs 1, then 2
`groundwork worker` processes on it for a fixed window: trials per minute.

Results: `benchmarks/results/automl_vs_flaml.json` (machine, load average,
command, every run) and a table on stdout. Targets (issue 4): geometric mean
of ours/FLAML >= 1.00, no run below 0.95, our wall time <= 1.1x the budget,
2 workers >= 1.7x the trials per minute of one.
"""

from __future__ import annotations

import os

# Single-threaded numerics for both systems (set before numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "benchmarks" / ".venv-flaml"
OUT = ROOT / "benchmarks" / "results" / "automl_vs_flaml.json"
PACKAGES = ["flaml", "lightgbm", "xgboost-cpu<3", "palmerpenguins", "bokeh-sampledata"]
NO_DEPS = ["ISLP"]  # its load_data needs only pandas; its torch stack is not wanted
DATASETS = ["breast_cancer", "digits", "wine", "penguins", "titanic", "caravan"]
TARGETS = {"geomean_ratio": 1.00, "min_run_ratio": 0.95, "max_wall_over_budget": 1.1,
           "two_worker_speedup": 1.7}


# ---------------------------------------------------------------- environment


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> None:
    """Create benchmarks/.venv-flaml when missing and re-run this script inside it."""
    if in_venv():
        return
    python = VENV / "bin" / "python"
    marker = VENV / ".groundwork-ready"
    if not marker.exists():
        print(f"creating {VENV} (once) ...", flush=True)
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-e", str(ROOT), *PACKAGES], check=True)
        subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True)
        marker.write_text("ok\n")
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------- data sets


def load_dataset(name: str):
    """(features frame, labels as strings, note) for one offline data set."""
    import pandas as pd
    from sklearn import datasets

    if name in ("breast_cancer", "digits", "wine"):
        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        X = bunch.data.copy()
        names = getattr(bunch, "target_names", None)
        y = bunch.target.map(lambda t: str(names[t]) if names is not None else str(t))
        X.columns = [str(c).replace(" ", "_") for c in X.columns]
        note = f"scikit-learn load_{name}"
    elif name == "penguins":
        import palmerpenguins

        frame = palmerpenguins.load_penguins()
        y = frame.pop("species").astype(str)
        X = frame
        note = "palmerpenguins.load_penguins (species; missing values kept)"
    elif name == "titanic":
        from bokeh_sampledata.titanic import data

        frame = data.copy()
        y = frame.pop("survived").map({0: "died", 1: "survived"})
        X = frame.drop(columns=["name"])
        note = "bokeh_sampledata.titanic (survived; passenger name dropped)"
    elif name == "caravan":
        from ISLP import load_data

        frame = load_data("Caravan")
        y = frame.pop("Purchase").astype(str)
        X = frame
        note = "ISLP load_data('Caravan') (Purchase, 6% Yes)"
    else:
        raise SystemExit(f"unknown data set {name!r}: use some of {', '.join(DATASETS)}")
    X = X.reset_index(drop=True)
    y = pd.Series(y, name="label").reset_index(drop=True).astype(str)
    return X, y, note


# ---------------------------------------------------------------- the two systems


@contextmanager
def product_holdout_off():
    """Train on every imported label: the benchmark's own test part is the holdout."""
    import automl.training as training

    original = training.in_holdout
    training.in_holdout = lambda project_id, key, share=0.2: False
    try:
        yield
    finally:
        training.in_holdout = original


def run_ours(X_tr, y_tr, X_te, budget: float, seed: int) -> dict:
    import pandas as pd

    from automl.predict import predict_file
    from automl.training import train_project
    from labeling.importers import import_source
    from labeling.projects import get_project
    from labeling.store import connect

    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        tmp = Path(tmp)
        train_csv, test_csv, out_csv = tmp / "train.csv", tmp / "test.csv", tmp / "pred.csv"
        X_tr.assign(bench_label=y_tr.values).to_csv(train_csv, index=False)
        X_te.to_csv(test_csv, index=False)
        db = connect(tmp / "store")
        try:
            import_source(db, "bench", train_csv, "tabular", label_column="bench_label")
            project = get_project(db, "bench")
            with product_holdout_off():
                started = time.perf_counter()
                result = train_project(db, project, budget=budget, seed=seed)
                wall = time.perf_counter() - started
            predict_file(db, project, test_csv, out_csv)
            predicted = pd.read_csv(out_csv, dtype={"predicted_label": str})
        finally:
            db.conn.close()
    if len(predicted) != len(X_te):
        raise RuntimeError(f"predicted {len(predicted)} of {len(X_te)} test rows")
    model = result["params"]["model"]
    return {"pred": predicted["predicted_label"].astype(str).to_numpy(), "wall": wall,
            "search_and_refit": result["search_and_refit_seconds"],
            "trials": result["trials"], "best": model, "cv": result["cv"],
            "threshold": result["params"].get("threshold")}


def flaml_table(X):
    X = X.copy()
    for col in X.columns:
        if X[col].dtype.kind not in "biuf":
            X[col] = X[col].astype("object").astype("category")
    return X


def balanced_accuracy_metric(X_val, y_val, estimator, labels, X_train, y_train,
                             weight_val=None, weight_train=None, *args, **kwargs):
    """FLAML custom metric: it minimises the returned loss."""
    from sklearn.metrics import balanced_accuracy_score

    score = balanced_accuracy_score(y_val, estimator.predict(X_val))
    return 1.0 - score, {"balanced_accuracy": score}


def run_flaml(X_tr, y_tr, X_te, budget: float, seed: int) -> dict:
    import warnings

    from flaml import AutoML

    automl = AutoML()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        automl.fit(X_train=flaml_table(X_tr), y_train=y_tr.to_numpy(), task="classification",
                   metric=balanced_accuracy_metric, time_budget=budget, n_jobs=1, seed=seed,
                   verbose=0)
    wall = time.perf_counter() - started
    pred = automl.predict(flaml_table(X_te))
    return {"pred": [str(p) for p in pred], "wall": wall,
            # config_history holds improvements only; _iter_per_learner counts every trial.
            "trials": int(sum(getattr(automl, "_iter_per_learner", {}).values())
                          or len(automl.config_history)),
            "best": automl.best_estimator,
            "cv": 1.0 - float(automl.best_loss)}


# ---------------------------------------------------------------- distributed


def measure_workers(dataset: str, window: float, repeats: int, log) -> dict:
    """Trials per minute of 1 and of 2 `groundwork worker` processes on one PostgreSQL study."""
    import optuna

    sys.path.insert(0, str(ROOT))
    from automl.search import create_study, storage_for
    from automl.training import training_set
    from labeling.importers import import_source
    from labeling.projects import get_project
    from labeling.store import connect
    from tests.postgres import PostgresServer

    X, y, _ = load_dataset(dataset)
    server = PostgresServer()
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="gw-dist-") as tmp:
            tmp = Path(tmp)
            csv = tmp / "table.csv"
            X.assign(bench_label=y.values).to_csv(csv, index=False)
            store = tmp / "store"
            db = connect(store)
            import_source(db, "bench", csv, "tabular", label_column="bench_label")
            project = get_project(db, "bench")
            data = training_set(db, project)
            storage = storage_for(store, project.id, server.url)
            for rep in range(repeats):
                for n_workers in (1, 2):
                    name = f"dist-{n_workers}-{rep}"
                    startup = 8.0
                    deadline = time.time() + startup + window
                    create_study(storage, name, rep, {
                        "deadline": deadline, "snapshot_hash": data.snapshot_hash,
                        "project_id": project.id, "include_auto": False, "seed": rep,
                        "budget": window})
                    load_before = os.getloadavg()
                    cpu_before = _children_cpu()
                    wall_start = time.time()
                    procs = [subprocess.Popen(
                        [sys.executable, "-m", "cli", "worker", "bench", "--study", name,
                         "--storage", server.url, "--name", f"w{i + 1}", "--json",
                         "--data-dir", str(store)],
                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                        for i in range(n_workers)]
                    for p in procs:
                        _, err = p.communicate(timeout=startup + window + 300)
                        if p.returncode != 0:
                            raise RuntimeError(f"worker failed: {err[-2000:]}")
                    cpu = _children_cpu() - cpu_before
                    study = optuna.load_study(study_name=name, storage=server.url)
                    runs.append(_rate(study, n_workers, rep, window, load_before))
                    # How many cores the workers actually got (other load shares them).
                    runs[-1]["worker_cpu_seconds"] = round(cpu, 1)
                    runs[-1]["cores_used"] = round(cpu / (time.time() - wall_start), 2)
                    log(f"  distributed {n_workers} worker(s), repeat {rep}: "
                        f"{runs[-1]['trials_per_minute']:.1f} trials/min "
                        f"({runs[-1]['trials']} trials in {runs[-1]['seconds']:.1f} s)")
            db.conn.close()
    finally:
        server.stop()

    def mean_rate(k: int) -> float:
        rates = [r["trials_per_minute"] for r in runs if r["workers"] == k]
        return sum(rates) / len(rates)

    one, two = mean_rate(1), mean_rate(2)
    cores = {k: round(sum(r["cores_used"] for r in runs if r["workers"] == k)
                      / max(1, sum(r["workers"] == k for r in runs)), 2) for k in (1, 2)}
    return {"dataset": dataset, "window_seconds": window, "repeats": repeats, "runs": runs,
            "trials_per_minute_1": round(one, 2), "trials_per_minute_2": round(two, 2),
            "speedup": round(two / one, 3) if one else None,
            "cores_used_1": cores[1], "cores_used_2": cores[2],
            "speedup_per_core_used": (round((two / cores[2]) / (one / cores[1]), 3)
                                      if one and cores[1] and cores[2] else None),
            "how_measured": (
                "a study created as `groundwork train --storage` creates it (deadline = now + "
                f"8 s start-up + {window:g} s), then 1 or 2 `groundwork worker` processes; "
                "rate = trials finished (completed or pruned by the median pruner; not those "
                "stopped by the deadline) / (last finish - first start) x 60"),
            }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rate(study, n_workers: int, rep: int, window: float, load_before) -> dict:
    import optuna

    finished = [t for t in study.trials
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                and t.user_attrs.get("pruned_reason") != "time budget reached"
                and t.datetime_complete is not None]
    if not finished:
        return {"workers": n_workers, "repeat": rep, "trials": 0, "seconds": 0.0,
                "trials_per_minute": 0.0}
    first = min(t.datetime_start for t in finished)
    last = max(t.datetime_complete for t in finished)
    seconds = (last - first).total_seconds()
    per_worker: dict = {}
    for t in finished:
        w = t.user_attrs.get("worker", "?")
        per_worker[w] = per_worker.get(w, 0) + 1
    return {"workers": n_workers, "repeat": rep, "trials": len(finished),
            "seconds": round(seconds, 2), "per_worker": per_worker,
            "trials_per_minute": round(len(finished) / seconds * 60, 2) if seconds else 0.0,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------- reporting


def machine_info() -> dict:
    import flaml
    import lightgbm
    import numpy
    import optuna
    import pandas
    import sklearn
    import xgboost

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory": mem, "python": platform.python_version(),
            "versions": {"flaml": flaml.__version__, "lightgbm": lightgbm.__version__,
                         "xgboost": xgboost.__version__, "scikit-learn": sklearn.__version__,
                         "optuna": optuna.__version__, "numpy": numpy.__version__,
                         "pandas": pandas.__version__}}


def summarise(runs: list[dict]) -> dict:
    groups: dict = {}
    for r in runs:
        if r.get("ratio") is None:
            continue
        groups.setdefault((r["dataset"], r["budget"]), []).append(r)
    rows = []
    for (dataset, budget), rs in groups.items():
        ratios = [r["ratio"] for r in rs]
        rows.append({
            "dataset": dataset, "budget": budget, "seeds": len(rs),
            "ours": round(_mean([r["ours"]["balanced_accuracy"] for r in rs]), 4),
            "flaml": round(_mean([r["flaml"]["balanced_accuracy"] for r in rs]), 4),
            "ratio": round(_geomean(ratios), 4), "min_ratio": round(min(ratios), 4),
            "ours_wall_over_budget": round(max(r["ours"]["wall"] for r in rs) / budget, 3),
            "flaml_wall_over_budget": round(max(r["flaml"]["wall"] for r in rs) / budget, 3),
            "ours_trials": round(_mean([r["ours"]["trials"] for r in rs]), 1),
            "flaml_trials": round(_mean([r["flaml"]["trials"] for r in rs]), 1),
        })
    ratios = [r["ratio"] for r in runs if r.get("ratio") is not None]
    walls = [r["ours"]["wall"] / r["budget"] for r in runs if "ours" in r]
    out = {"rows": rows}
    if ratios:
        out.update({
            "geomean_ratio": round(_geomean(ratios), 4),
            "min_run_ratio": round(min(ratios), 4),
            "runs_below_0.95": sum(x < TARGETS["min_run_ratio"] for x in ratios),
            "max_wall_over_budget": round(max(walls), 3),
        })
        out["targets_met"] = {
            "geomean_ratio": out["geomean_ratio"] >= TARGETS["geomean_ratio"],
            "min_run_ratio": out["min_run_ratio"] >= TARGETS["min_run_ratio"],
            "max_wall_over_budget": out["max_wall_over_budget"] <= TARGETS["max_wall_over_budget"],
        }
        for budget in sorted({r["budget"] for r in runs}):
            sub = [r["ratio"] for r in runs if r["budget"] == budget and r.get("ratio")]
            if sub:
                out[f"geomean_ratio_{budget:g}s"] = round(_geomean(sub), 4)
    return out


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _geomean(xs) -> float:
    xs = list(xs)
    return math.exp(sum(math.log(max(x, 1e-9)) for x in xs) / len(xs)) if xs else float("nan")


def table(summary: dict) -> str:
    head = (f"{'dataset':<14} {'budget':>6} {'ours':>7} {'flaml':>7} {'ratio':>7} "
            f"{'min':>7} {'wall/B':>7} {'trials ours/flaml':>18}")
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        lines.append(f"{r['dataset']:<14} {r['budget']:>5g}s {r['ours']:>7.4f} "
                     f"{r['flaml']:>7.4f} {r['ratio']:>7.4f} {r['min_ratio']:>7.4f} "
                     f"{r['ours_wall_over_budget']:>7.3f} "
                     f"{r['ours_trials']:>8.1f}/{r['flaml_trials']:<8.1f}")
    if "geomean_ratio" in summary:
        lines.append(f"geometric mean ours/FLAML {summary['geomean_ratio']:.4f}; worst run "
                     f"{summary['min_run_ratio']:.4f}; worst wall/budget "
                     f"{summary['max_wall_over_budget']:.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 120])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 10 s budget, 1 seed, three small data sets, "
                             "a 20 s distributed window")
    parser.add_argument("--no-distributed", action="store_true")
    parser.add_argument("--only-distributed", action="store_true",
                        help="skip the comparison, measure only the workers' trials per minute")
    parser.add_argument("--dist-dataset", default="titanic", choices=DATASETS)
    parser.add_argument("--dist-window", type=float, default=90.0)
    parser.add_argument("--dist-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in
                                   ["benchmarks/automl_vs_flaml.py", *sys.argv[1:]])
    ensure_venv()
    sys.path.insert(0, str(ROOT))
    if args.quick:
        args.budgets, args.seeds = [10.0], 1
        args.datasets = [d for d in args.datasets if d in ("breast_cancer", "wine", "penguins")]
        args.dist_window, args.dist_repeats = 20.0, 1

    import numpy as np
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split

    def log(msg: str) -> None:
        print(msg, flush=True)

    result = {"command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine_info(), "load_average_start": list(os.getloadavg()),
              "settings": {"budgets": args.budgets, "seeds": args.seeds,
                           "datasets": args.datasets, "test_size": args.test_size},
              "method": __doc__.split("\n\n", 2)[2].strip(), "datasets": {}, "runs": []}

    def save() -> None:
        result["summary"] = summarise(result["runs"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")

    frames = {}
    for name in args.datasets:
        X, y, note = load_dataset(name)
        frames[name] = (X, y)
        counts = y.value_counts()
        result["datasets"][name] = {"rows": len(y), "columns": X.shape[1], "note": note,
                                    "classes": counts.to_dict(),
                                    "minority_share": round(float(counts.min() / len(y)), 4)}
    for budget in [] if args.only_distributed else args.budgets:
        for name in args.datasets:
            X, y = frames[name]
            for seed in range(args.seeds):
                X_tr, X_te, y_tr, y_te = train_test_split(
                    X, y, test_size=args.test_size, stratify=y, random_state=seed)
                X_tr, X_te = X_tr.reset_index(drop=True), X_te.reset_index(drop=True)
                y_tr, y_te = y_tr.reset_index(drop=True), y_te.reset_index(drop=True)
                run = {"dataset": name, "budget": budget, "seed": seed,
                       "train_rows": len(y_tr), "test_rows": len(y_te),
                       "load_average_before": [round(x, 2) for x in os.getloadavg()]}
                for system, fn in (("ours", run_ours), ("flaml", run_flaml)):
                    try:
                        out = fn(X_tr, y_tr, X_te, budget, seed)
                    except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                        run[system] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                        log(f"{name} {budget:g}s seed {seed} {system}: FAILED {exc}")
                        continue
                    pred = np.asarray(out.pop("pred"), dtype=str)
                    out["balanced_accuracy"] = round(
                        float(balanced_accuracy_score(y_te.to_numpy(dtype=str), pred)), 5)
                    out["wall"] = round(out["wall"], 2)
                    run[system] = out
                run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
                if "balanced_accuracy" in run.get("ours", {}) and \
                        "balanced_accuracy" in run.get("flaml", {}):
                    run["ratio"] = round(run["ours"]["balanced_accuracy"]
                                         / run["flaml"]["balanced_accuracy"], 5)
                result["runs"].append(run)
                o, f = run.get("ours", {}), run.get("flaml", {})
                log(f"{name:<14} {budget:>4g}s seed {seed}: ours {o.get('balanced_accuracy')} "
                    f"({o.get('best')}, {o.get('trials')} trials, {o.get('wall')} s)  "
                    f"flaml {f.get('balanced_accuracy')} ({f.get('best')}, {f.get('trials')} "
                    f"trials, {f.get('wall')} s)  ratio {run.get('ratio')}  "
                    f"load {run['load_average_before'][0]}")
                save()
    if not args.no_distributed:
        log(f"distributed: {args.dist_dataset}, window {args.dist_window:g} s")
        result["distributed"] = measure_workers(args.dist_dataset, args.dist_window,
                                                args.dist_repeats, log)
        result["distributed"]["target_met"] = (
            (result["distributed"]["speedup"] or 0) >= TARGETS["two_worker_speedup"])
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    result["load_average_end"] = list(os.getloadavg())
    save()
    log("")
    log(table(result["summary"]))
    if "distributed" in result:
        d = result["distributed"]
        log(f"distributed ({d['dataset']}): 1 worker {d['trials_per_minute_1']} trials/min, "
            f"2 workers {d['trials_per_minute_2']} trials/min, speedup {d['speedup']} "
            f"(machine: {os.cpu_count()} cores; the workers got {d['cores_used_1']} and "
            f"{d['cores_used_2']} cores; per core used: x{d['speedup_per_core_used']})")
    log(f"results: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
