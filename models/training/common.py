"""Helpers shared by the training scripts (cxr.py, ldct_denoise.py, ldct_nodule.py).

* `lucent_bin`: the `lucent` executable the scripts drive (`$LUCENT_BIN`, else target/release/lucent,
  built when missing).
* `real_data`: a folder of the real data beside the checkout (`$LUCENT_REAL_DATA`, else ../shared/data).
* `record_time`, `auroc`, `fmt`: step timings, the Mann-Whitney AUROC and the cards' number format.
* `lucent_ci_eval`: the small evaluation set that Lucent generates itself (`lucent synth-ct`) and
  evaluates itself (`lucent eval --json`). Its numbers go into the model's metrics.json and card, and
  CI regenerates the same set and checks that `lucent eval` still gives them (app/tests/eval.rs).
"""

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lucent_bin(log=print):
    exe = os.environ.get("LUCENT_BIN") or str(ROOT / "target" / "release" / "lucent")
    if not Path(exe).exists():
        log("building the lucent binary (cargo build --release -p lucent)")
        subprocess.run(["cargo", "build", "--release", "-p", "lucent"], cwd=ROOT, check=True)
    return exe


def real_data(name, marker):
    """`<real data>/NAME` when it holds a file matching MARKER (a glob), else None: absent real data is
    skipped, never fetched."""
    base = Path(os.environ.get("LUCENT_REAL_DATA") or (ROOT.parent / "shared" / "data"))
    d = base / name
    return d if d.is_dir() and any(d.glob(marker)) else None


def record_time(work, step, seconds):
    """Adds STEP's duration to WORK/timings.json."""
    path = Path(work) / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[step] = round(seconds, 1)
    path.write_text(json.dumps(timings, indent=2))


def auroc(y, s):
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def lucent_ci_eval(work, kind, seed, count, model_ids, threads=1, log=print):
    """Writes the set with `lucent synth-ct --kind KIND --seed SEED --count COUNT` under WORK and runs
    `lucent eval --model ID --json` on it for each model. Returns (set folder, {id: model report},
    {"generate": s, id: s})."""
    exe = lucent_bin(log)
    data = Path(work) / f"ci-{kind}"
    if data.exists():
        subprocess.run(["rm", "-rf", str(data)], check=True)
    t0 = time.time()
    subprocess.run([exe, "synth-ct", "--kind", kind, "--seed", seed, "--count", str(count), "--out", str(data)],
                   check=True)
    seconds = {"generate": round(time.time() - t0, 1)}
    reports = {}
    for model_id in model_ids:
        out = Path(work) / f"ci-{kind}-{model_id}.json"
        t0 = time.time()
        subprocess.run([exe, "eval", "--model", model_id, "--data", str(data), "--json", str(out),
                        "--threads", str(threads)], check=True)
        seconds[model_id] = round(time.time() - t0, 1)
        (model,) = json.loads(out.read_text())["models"]
        reports[model_id] = model
        log(f"lucent eval {model_id} on the {kind} CI set: {seconds[model_id]} s")
    return data, reports, seconds


def record_ci_set(metrics_path, entry, log=print):
    """Stores ENTRY as `lucent_ci_set` in the model's metrics.json (where CI reads the seed, the count and
    the figures to reproduce)."""
    m = json.loads(Path(metrics_path).read_text())
    m["lucent_ci_set"] = entry
    Path(metrics_path).write_text(json.dumps(m, indent=2) + "\n")
    log(f"CI set: {json.dumps(entry)[:400]}")
