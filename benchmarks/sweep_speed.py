#!/usr/bin/env python
"""Sweep engine vs one-by-one: the diffusion-step sweep at a reduced budget.

Runs ``sweeps/diffusion_steps.toml`` restricted to ``--ks`` and ``--envs`` with its budget scaled
by ``--budget`` (default 0.05: 2 updates of 8,192 env steps per run; Stage-I steps and
evaluation sessions scaled alike) through the sweep engine, then launches the same runs one by
one as ``python train.py`` processes (one seed each, same overrides), and prints both wall times
and their ratio. The one-by-one runs also compute the fidelity probe, which the sweep skips;
that cost is part of what a user pays today.

    python benchmarks/sweep_speed.py [--ks 5 20] [--envs envs/kuairec.toml] [--budget 0.05]

Target on the 2-core CPU: sweep >= 1.5x faster than one by one.

Both sides see one CPU device per core, as under ``train.py`` (``purerec.core.hostdevices``): the sweep
spreads its runs over the devices, and each one-by-one run splits its sessions over them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from purerec.core.hostdevices import expose_host_cores  # noqa: E402

expose_host_cores()  # before JAX starts

from purerec.run.sweep import SweepSpec, expand, load_sweep, run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--envs", nargs="+", default=["envs/kuairec.toml"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 15, 19])
    ap.add_argument("--budget", type=float, default=0.05)
    args = ap.parse_args()
    os.chdir(ROOT)
    full = load_sweep("sweeps/diffusion_steps.toml")
    spec = SweepSpec(name="sweep_speed", envs=tuple(args.envs), seeds=tuple(args.seeds), base=full.base,
                     grid={"dsrm.steps": list(args.ks)}, budget=f"{full.budget}; budget factor {args.budget}")
    runs = expand(spec, args.budget)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_sweep(spec, os.path.join(tmp, "sweep"), budget=args.budget, log=lambda *a: None)
        t_sweep = time.perf_counter() - t0
        print(f"sweep engine: {len(runs)} runs in {t_sweep:.1f}s", flush=True)
        t0 = time.perf_counter()
        for i, r in enumerate(runs):
            c = r.cfg
            cmd = [sys.executable, "train.py", "--env", r.point["env"], "--diffusion-steps", str(c.dsrm.steps),
                   "--seeds", str(r.seed), "--total-updates", str(c.train.total_updates),
                   "--chunk-updates", str(c.train.chunk_updates), "--encoder.train-steps", str(c.encoder.train_steps),
                   "--dsrm.train-steps", str(c.dsrm.train_steps), "--n-sessions", str(c.eval.n_sessions),
                   "--out", os.path.join(tmp, f"one{i}"), "--no-progress"]
            subprocess.run(cmd, check=True, capture_output=True)
        t_one = time.perf_counter() - t0
    print(f"one by one:   {len(runs)} runs in {t_one:.1f}s")
    ratio = t_one / t_sweep
    print(f"speed-up {ratio:.2f}x  (target >= 1.5x: {'PASS' if ratio >= 1.5 else 'MISS'})")


if __name__ == "__main__":
    main()
