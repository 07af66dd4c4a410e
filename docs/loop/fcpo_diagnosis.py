"""Why FCPO's cost limit does not bind on the loop preset: the CPO step's own diagnostics, read
from the run records of ``sweeps/loop.toml`` (no training; plain JSON and NumPy).

    python3 docs/loop/fcpo_diagnosis.py runs/sweeps/loop

Per (alpha', cost labels), trained runs only, mean over seeds: the share of updates CPO classed
infeasible (the recovery step), the accepted step fraction, the per-step cost (popular items per
slate, on the labels the run's cost counts) at the first update and over the last fifth, and the
long-tail share of the training slates on the platform's current labels over the last fifth. Then
whether the alpha' 0.4 and 0.8 runs of each seed are identical curve for curve.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

CASE_INFEASIBLE = 2  # purerec.agents.cpo.INFEASIBLE


def load(sweep_dir: str) -> list[dict]:
    runs = []
    for f in sorted(glob.glob(os.path.join(sweep_dir, "runs", "*.json"))):
        with open(f) as fh:
            r = json.load(fh)
        if r.get("kind") == "fcpo" and not r.get("frozen") and r.get("status", "ok") == "ok":
            runs.append(r)
    if not runs:
        sys.exit(f"no trained FCPO run records under {sweep_dir}/runs (run `python train.py sweep sweeps/loop.toml`)")
    return runs


def last_fifth(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(v[-max(1, len(v) // 5):].mean())


def main(sweep_dir: str) -> None:
    runs = load(sweep_dir)
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        p = r["point"]
        cells.setdefault((float(p["fcpo.cost_limit"]), p["platform.cost_labels"]), []).append(r)
    k = runs[0]["config"]["env"]["slate_size"]
    print(f"{len(runs)} trained FCPO runs from {sweep_dir}; slate size {k}, limit = alpha' x {k} + 0.5\n")
    print("| alpha' | cost labels | seeds | infeasible updates | accepted step | cost, 1st update | cost, last fifth"
          " | long-tail share (current labels), last fifth |")
    print("|---|---|---|---|---|---|---|---|")
    for (a, lab), rs in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        c = [r["curves"] for r in rs]
        inf = np.mean([np.mean(np.asarray(x["case"]) == CASE_INFEASIBLE) for x in c])
        frac = np.mean([np.mean(x["step_frac"]) for x in c])
        c0 = np.mean([x["cost"][0] for x in c])
        cl = np.mean([last_fifth(x["cost"]) for x in c])
        tail = np.mean([last_fifth(x["tail_share"]) for x in c])
        print(f"| {a:g} | {lab} | {len(rs)} | {inf:.0%} | {frac:.2f} | {c0:.2f} | {cl:.2f} | {tail:.3f} |")
    print()
    for lab in ("current", "frozen"):
        by_seed = {}
        for (a, l), rs in cells.items():
            if l == lab and a in (0.4, 0.8):
                for r in rs:
                    by_seed.setdefault(r["seed"], {})[a] = r["curves"]
        same = [s for s, d in by_seed.items() if len(d) == 2 and all(
            np.array_equal(np.asarray(d[0.4][k]), np.asarray(d[0.8][k])) for k in d[0.4] if k not in ("constraint",))]
        print(f"{lab} labels: alpha' 0.4 and 0.8 identical (every curve but the constraint value) in "
              f"{len(same)} of {len(by_seed)} seeds")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweeps/loop")
