#!/usr/bin/env python
"""The popularity loop's course under fixed policies: does exposure make the rich richer?

On a loop preset (``platform.loop = true``, ``purerec.sim.platform``), each reference policy
(random, most-popular, balanced, the truth-knowing oracle) runs ``--sessions`` concurrent sessions
on the train world for as many batched steps as a default training run takes (60 updates x 32
steps), and the same policy runs on the static world (the preset with ``platform.loop = false``).
Printed per policy: the Gini of the exposure mass at the end (the logs' at the start), label flips
and popular-group turnover summed over the run, the long-tail share of the mass, and the mean
observed and true reward per step on the loop vs the static world; the course of the Gini, the
flips and the tail share is drawn to ``--figure``.

    python benchmarks/loop_course.py                              # KuaiRec-like, docs/loop_course.png
    python benchmarks/loop_course.py --env envs/kuairand-loop.toml --figure /tmp/kuairand_loop.png
    python benchmarks/loop_course.py --quick                       # tiny world (smoke run)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

QUICK_WORLD = {"world.n_users": 300, "world.n_items": 400, "world.n_test_users": 120, "world.n_test_items": 150,
               "world.n_tags": 12, "world.true_dim": 8, "world.emb_dim": 8, "world.log_density": 0.2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="envs/kuairec-loop.toml", help="a loop preset (platform.loop = true)")
    ap.add_argument("--sessions", type=int, default=256, help="concurrent sessions (train.num_envs)")
    ap.add_argument("--steps", type=int, default=1920, help="batched steps (60 updates x 32 by default)")
    ap.add_argument("--figure", default="docs/loop_course.png", help="where to draw the course ('' = no figure)")
    ap.add_argument("--quick", action="store_true", help="tiny world and run (smoke run)")
    a = ap.parse_args(argv)

    import jax
    import numpy as np

    from purerec.config import load_config
    from purerec.data.datasets import get_worlds
    from purerec.sim import env as E, metrics as M
    from purerec.sim.policies import REFERENCE_POLICIES
    from purerec.sim.rollout import rollout

    cfg = load_config(a.env, dict(QUICK_WORLD) if a.quick else {})
    if not cfg.platform.loop:
        print(f"error: {a.env} has platform.loop = false; give a loop preset (envs/*-loop.toml)", file=sys.stderr)
        return 2
    static = dataclasses.replace(cfg, platform=dataclasses.replace(cfg.platform, loop=False))
    train, _ = get_worlds(static)
    B, T = (32, 96) if a.quick else (a.sessions, a.steps)
    p_loop, p_static = E.make_params(train, cfg), E.make_params(train, static)
    pf = cfg.platform
    print(f"{a.env}: train world {train.n_items} items, K {cfg.env.slate_size}, conformity {cfg.feedback.conformity:g}, "
          f"rho {pf.rho:g}, relabel every {pf.relabel_every} steps; {B} sessions x {T} batched steps per policy")
    logs_gini = float(np.asarray(jax.jit(lambda w: M.gini(w.item_pop))(train)))
    print(f"the logs' exposure Gini: {logs_gini:.4f}\n")
    print("| policy | Gini of the mass (end) | label flips | turnover per relabel | long-tail share of mass | "
          "reward / step (loop / static) | true reward / step (loop / static) | s |")
    print("|---|---|---|---|---|---|---|---|")
    courses = {}
    for name in ("random", "most_popular", "balanced", "oracle"):
        t0 = time.perf_counter()
        key = jax.random.PRNGKey(0)
        tr = jax.device_get(rollout(key, REFERENCE_POLICIES[name], p_loop, B, T))
        st = jax.device_get(rollout(key, REFERENCE_POLICIES[name], p_static, B, T))
        info, end = tr["platform"], tr["platform_end"]
        g_end = float(M.gini(end.pop))
        rel = np.asarray(info.relabelled)
        courses[name] = info
        print(f"| {name} | {g_end:.4f} | {int(np.sum(info.flips))} | {float(np.sum(info.turnover) / max(rel.sum(), 1)):.4f} "
              f"| {float(info.tail_share_pop[-1]):.4f} | {float(np.mean(tr['reward'])):.4f} / {float(np.mean(st['reward'])):.4f} "
              f"| {float(np.mean(tr['true_reward'])):.4f} / {float(np.mean(st['true_reward'])):.4f} "
              f"| {time.perf_counter() - t0:.1f} |", flush=True)
    if a.figure:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(matplotlib not installed: no figure)")
            return 0
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        for name, info in courses.items():
            rel = np.asarray(info.relabelled)
            steps = np.flatnonzero(rel) + 1
            axes[0].plot(steps, np.asarray(info.gini_pop)[rel], label=name)
            axes[1].plot(steps, np.cumsum(np.asarray(info.flips)[rel]), label=name)
            axes[2].plot(np.arange(1, len(rel) + 1), np.asarray(info.tail_share_pop), label=name)
        axes[0].axhline(logs_gini, color="grey", ls=":", lw=1, label="the logs")
        for ax, title in zip(axes, ("Gini of the exposure mass (at relabels)", "popular labels flipped (cumulative)",
                                    "long-tail items' share of the mass")):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("batched step", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{os.path.basename(a.env)}: the popularity loop under fixed policies ({B} sessions, rho {pf.rho:g})",
                     fontsize=9)
        fig.tight_layout()
        os.makedirs(os.path.dirname(a.figure) or ".", exist_ok=True)
        fig.savefig(a.figure, dpi=110)
        print(f"\nwrote {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
