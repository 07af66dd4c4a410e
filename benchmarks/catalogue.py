#!/usr/bin/env python
"""HSRL vs a flat softmax as the catalogue grows (issue "HSRL", item 3), from ``sweeps/catalogue.toml``.

Each (catalogue size, agent) cell of the spec is one ``train.py`` process training the spec's seeds
in one program, so its peak memory (the process's max RSS, ``os.wait4``) is the cell's own. Per
cell it prints the test protocol's Len and R_cum (greedy, mean +- std over the seeds), the
update-to-update variance of the training curve (variance of R_cum(t + 1) - R_cum(t) over updates,
mean over seeds: how jumpy learning is), the seconds per update (Stage II time / updates), the
compile time and the peak memory; then writes ``catalogue.png`` (test R_cum and curve variance
against the catalogue size, and the training curves) and ``catalogue.json`` into ``--out``.

``--sizes N [N ...]`` keeps the spec's cells of those sizes; a size the spec does not have runs
with the spec's first grid's other values. A cell the machine cannot hold stops at the run's
memory check before anything is computed: its row says what it would need.

    python benchmarks/catalogue.py [--spec sweeps/catalogue.toml] [--out runs/catalogue] [--sizes N ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cells(spec, sizes: list[int] | None) -> list[dict]:
    """The spec's grid points (one dict of dotted overrides each), filtered or extended by size."""
    import itertools

    points = [dict(zip(g, vals)) for g in spec.grids for vals in itertools.product(*g.values())]
    if sizes:
        have = {p["world.n_items"] for p in points}
        template = [p for p in points if p["world.n_items"] == min(have)]
        for n in sizes:
            if n not in have:
                points += [{**p, "world.n_items": n, "world.n_test_items": n} for p in template]
        points = [p for p in points if p["world.n_items"] in sizes]
    return points


def _flag(k: str, v) -> list[str]:
    vals = v if isinstance(v, list) else [v]
    return [f"--{k}", *[str(x).lower() if isinstance(x, bool) else str(x) for x in vals]]


def run_cell(env: str, overrides: dict, seeds: list[int], out: str) -> dict:
    """One train.py process; returns its results (or its one-line error) with peak memory and wall time."""
    argv = [sys.executable, os.path.join(ROOT, "train.py"), "--env", env, "--out", out, "--no-progress",
            "--train.seeds", *map(str, seeds)]
    for k, v in overrides.items():
        argv += _flag(k, v)
    t0 = time.perf_counter()
    with open(out + ".log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    peak_gib = usage.ru_maxrss / 2 ** 20  # KiB on Linux
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        lines = open(out + ".log").read().strip().splitlines()
        err = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        return {"ok": False, "error": err, "peak_gib": peak_gib, "wall_s": wall}
    res = json.load(open(os.path.join(out, "results.json")))
    curves: dict[int, list[float]] = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        row = json.loads(line)
        curves.setdefault(row["seed"], []).append(row["R_cum"])
    jumps = [float(np.var(np.diff(c))) for c in curves.values() if len(c) > 2]
    t = res["timings"]
    stage2 = t["run_s"] - t.get("stage1_s", 0.0)
    test = res["test"]["greedy"]
    return {"ok": True, "Len": test["mean"]["Len"], "Len_std": test["std"]["Len"], "R_cum": test["mean"]["R_cum"],
            "R_cum_std": test["std"]["R_cum"], "frozen_R_cum": res.get("untrained", {}).get("mean", {}).get("R_cum"),
            "curve_jump_var": float(np.mean(jumps)) if jumps else float("nan"), "s_per_update": stage2 / res["updates"],
            "compile_s": t["compile_s"], "peak_gib": peak_gib, "wall_s": wall, "updates": res["updates"],
            "curves": {str(s): c for s, c in curves.items()}}


def table(rows: list[dict]) -> str:
    head = ("| items | agent | test Len | test R_cum | frozen R_cum | curve jump var | s / update | compile s | "
            "peak GiB |\n|---|---|---|---|---|---|---|---|---|")
    body = []
    for r in rows:
        if r["ok"]:
            body.append(f"| {r['items']:,} | {r['agent']} | {r['Len']:.2f} ± {r['Len_std']:.2f} | {r['R_cum']:.2f} ± "
                        f"{r['R_cum_std']:.2f} | {r['frozen_R_cum']:.2f} | {r['curve_jump_var']:.3f} | "
                        f"{r['s_per_update']:.2f} | {r['compile_s']:.0f} | {r['peak_gib']:.1f} |")
        else:
            body.append(f"| {r['items']:,} | {r['agent']} | did not run: {r['error']} | | | | | | {r['peak_gib']:.1f} |")
    return "\n".join([head, *body])


def figure(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["ok"]]
    agents = sorted({r["agent"] for r in ok})
    sizes = sorted({r["items"] for r in ok})
    fig, ax = plt.subplots(1, 2 + len(sizes), figsize=(4.2 * (2 + len(sizes)), 3.6))
    for a in agents:
        rs = sorted((r for r in ok if r["agent"] == a), key=lambda r: r["items"])
        x = [r["items"] for r in rs]
        ax[0].errorbar(x, [r["R_cum"] for r in rs], yerr=[r["R_cum_std"] for r in rs], marker="o", capsize=3, label=a)
        ax[1].plot(x, [r["curve_jump_var"] for r in rs], marker="o", label=a)
    for i, title in enumerate(("test R_cum (greedy, 3 seeds)", "update-to-update variance of R_cum")):
        ax[i].set_xscale("log")
        ax[i].set_xlabel("catalogue size (items)")
        ax[i].set_title(title, fontsize=9)
        ax[i].legend(fontsize=8)
    for j, n in enumerate(sizes):
        a_ = ax[2 + j]
        for k, a in enumerate(agents):
            for r in ok:
                if r["agent"] == a and r["items"] == n:
                    for s, c in r["curves"].items():
                        a_.plot(np.arange(1, len(c) + 1), c, color=f"C{k}", alpha=0.7, lw=1,
                                label=a if s == next(iter(r["curves"])) else None)
        a_.set_title(f"training R_cum, {n:,} items", fontsize=9)
        a_.set_xlabel("update")
        a_.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=os.path.join(ROOT, "sweeps", "catalogue.toml"), help="the sweep spec of the study")
    ap.add_argument("--out", default=os.path.join("runs", "catalogue"), help="where the runs, table and figure go")
    ap.add_argument("--sizes", type=int, nargs="+", help="only these catalogue sizes")
    args = ap.parse_args(argv)
    from purerec.run.sweep import load_sweep

    spec = load_sweep(args.spec)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    done_path = os.path.join(args.out, "catalogue.json")
    if os.path.exists(done_path):  # re-running keeps the finished cells
        rows = [r for r in json.load(open(done_path))["rows"] if r["ok"]]
    for env in spec.envs:
        for point in cells(spec, args.sizes):
            overrides = {**spec.base, **point}
            kind, n = overrides["agent.kind"], overrides["world.n_items"]
            if any(r["agent"] == kind and r["items"] == n for r in rows):
                continue
            print(f"{kind} on {n:,} items ...", flush=True)
            r = run_cell(env, overrides, list(spec.seeds), os.path.join(args.out, f"{kind}-{n}"))
            rows.append({"agent": kind, "items": n, **r})
            rows.sort(key=lambda r: (r["items"], r["agent"]))
            with open(done_path + ".tmp", "w") as fh:
                json.dump({"spec": args.spec, "rows": rows}, fh)
            os.replace(done_path + ".tmp", done_path)
            print(f"  {'done' if r['ok'] else r['error']} in {r['wall_s']:.0f}s, peak {r['peak_gib']:.1f} GiB", flush=True)
    print(f"\nHSRL vs a flat softmax over the catalogue ({args.spec}; {spec.budget}; seeds {list(spec.seeds)})\n")
    print(table(rows))
    if any(r["ok"] for r in rows):
        figure(rows, os.path.join(args.out, "catalogue.png"))
        print(f"\nfigure: {os.path.join(args.out, 'catalogue.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
