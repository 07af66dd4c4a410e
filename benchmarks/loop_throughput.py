#!/usr/bin/env python
"""The cost of a platform with memory: env-steps/s on a loop preset vs its static world.

"Worlds with memory" asks that the platform state (exposure counts of every slate, the decayed
mass, relabelling every ``relabel_every`` steps; ``purerec.sim.platform``) keep env-steps/s within
1.5x of the static world's. Each case is one jitted ``lax.scan`` of T batched steps
(``purerec.sim.env.batch_step``, auto-reset inside) of B sessions on the train world, with
  env    -- random slates (the env step alone: the platform's share of the cost is largest here);
  score  -- a scoring policy (masked mean of ``item_emb`` over the observed items, a dot product
            with every item, ``lax.top_k``): what a training rollout costs per step.
Static and loop runs alternate (``--repeats`` timed runs each, median), so a busy machine slows
both alike; compile time is reported apart. Prints the ratio per case and PASS / MISS at 1.5x.

    python benchmarks/loop_throughput.py                      # KuaiRec-like, B 256 and 4096
    python benchmarks/loop_throughput.py --env envs/kuairand-loop.toml --batch-sizes 256
    python benchmarks/loop_throughput.py --quick              # tiny world (smoke run)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

TARGET = 1.5
QUICK_WORLD = {"world.n_users": 300, "world.n_items": 400, "world.n_test_users": 120, "world.n_test_items": 150,
               "world.n_tags": 12, "world.true_dim": 8, "world.emb_dim": 8, "world.log_density": 0.2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="envs/kuairec-loop.toml", help="a loop preset (platform.loop = true)")
    ap.add_argument("--batch-sizes", default="256,4096", help="sessions per batched step, comma-separated")
    ap.add_argument("--steps", type=int, default=64, help="batched steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    ap.add_argument("--quick", action="store_true", help="tiny world, B 64, few steps")
    a = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from purerec.config import load_config
    from purerec.data.datasets import get_worlds
    from purerec.sim import env as E

    overrides = dict(QUICK_WORLD) if a.quick else {}
    loop_cfg = load_config(a.env, overrides)
    if not loop_cfg.platform.loop:
        print(f"error: {a.env} has platform.loop = false; give a loop preset (envs/*-loop.toml)", file=sys.stderr)
        return 2
    static_cfg = dataclasses.replace(loop_cfg, platform=dataclasses.replace(loop_cfg.platform, loop=False))
    train, _ = get_worlds(static_cfg)
    params = {"static": E.make_params(train, static_cfg), "loop": E.make_params(train, loop_cfg)}
    K, n_items = loop_cfg.env.slate_size, train.n_items
    sizes = [64] if a.quick else [int(b) for b in a.batch_sizes.split(",")]
    steps, repeats = (8, 2) if a.quick else (a.steps, a.repeats)
    print(f"{a.env}: train world {n_items} items, K {K}, rho {loop_cfg.platform.rho:g}, relabel every "
          f"{loop_cfg.platform.relabel_every} steps; {steps} steps x {repeats} timed runs; "
          f"load average {os.getloadavg()[0]:.1f}; {jax.device_count()} device(s)")

    def random_slates(key, obs, B):  # uniform ids (repeats possible: the JAX env accepts them)
        return jax.random.randint(key, (B, K), 0, n_items)

    def scored_slates(key, obs, B):
        emb = train.item_emb
        q = jnp.sum(emb[obs.items] * obs.valid[..., None], 1) / jnp.maximum(obs.valid.sum(1, keepdims=True), 1)
        return jax.lax.top_k(q @ emb.T, K)[1]

    def program(policy, p, B):
        def run(key):
            obs, state = E.batch_reset(key, p, B)

            def body(c, k):
                obs, state = c
                k_a, k_e = jax.random.split(k)
                obs, state, reward, *_ = E.batch_step(k_e, state, policy(k_a, obs, B), p)
                return (obs, state), reward.mean()

            return jax.lax.scan(body, (obs, state), jax.random.split(key, steps))[1]

        return jax.jit(run)

    rows = []
    for case, policy in (("env", random_slates), ("score", scored_slates)):
        for B in sizes:
            progs, times, compile_s = {}, {"static": [], "loop": []}, {}
            for name, p in params.items():
                t0 = time.perf_counter()
                progs[name] = program(policy, p, B).lower(jax.random.PRNGKey(0)).compile()
                compile_s[name] = time.perf_counter() - t0
                jax.block_until_ready(progs[name](jax.random.PRNGKey(0)))  # warm
            for r in range(repeats):
                for name in ("static", "loop"):
                    t0 = time.perf_counter()
                    jax.block_until_ready(progs[name](jax.random.PRNGKey(r + 1)))
                    times[name].append(time.perf_counter() - t0)
            rate = {n: B * steps / statistics.median(t) for n, t in times.items()}
            ratio = rate["static"] / rate["loop"]
            rows.append((case, B, rate["static"], rate["loop"], ratio, compile_s["static"], compile_s["loop"]))
            print(f"  {case:5s} B {B:5d}: static {rate['static']:>11,.0f} env-steps/s, loop {rate['loop']:>11,.0f} "
                  f"(static / loop {ratio:.2f}x: {'PASS' if ratio <= TARGET else 'MISS'} at <= {TARGET}x); compile "
                  f"{compile_s['static']:.1f} s / {compile_s['loop']:.1f} s", flush=True)
    worst = max(r[4] for r in rows)
    print(f"summary: worst static / loop ratio {worst:.2f}x ({'PASS' if worst <= TARGET else 'MISS'} at <= {TARGET}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
