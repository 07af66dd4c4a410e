#!/usr/bin/env python
"""Env throughput: env-steps/s of the batched JAX env, alone and with a scoring policy, vs NumPy.

One env-step is one session step: B sessions stepping once are B env-steps.

Cases (each a jitted ``lax.scan`` of T steps of ``purerec.sim.env.batch_step``, auto-reset inside):
  env       -- random slates (``jax.random.randint`` ids, K = slate_size) and the env step.
  score     -- a per-session query (masked mean of ``item_emb`` over ``obs.items``), a dot product
               with every item's ``item_emb``, ``jax.lax.top_k`` for the slate, and the env step.
               ``--topk two_stage`` adds the same policy with an exact two-stage top-k (group maxima
               -> top-k groups -> top-k among their items; identical slates, ties included).
for B in ``--batch-sizes`` sessions, on the test (3,327 items) and train (10,728 items) worlds
of the default KuaiRec-like config (``get_worlds``; built once, then cached under
``~/.cache/purerec``). Compile time (``jit(...).lower(...).compile()``) is timed apart from
running; the first run is reported on its own, then the median of ``--repeats`` timed runs
(``block_until_ready``) gives env-steps/s = B * T / median.

``--devices 1,2``: with more than one, XLA is given that many host devices
(``--xla_force_host_platform_device_count``) and the sessions are split across them with
``jax.shard_map`` (independent sessions, no communication). With one device XLA's CPU
backend keeps only ~1.2-1.6 cores busy (TopK, the RNG and the scan loop run on one thread);
sharding is how the second core gets used. ``--threefry-partitionable false`` switches JAX to
the older threefry layout, faster on CPU (other random streams).

NumPy reference: the same step (true response via the factors, contamination with NumPy's RNG,
the temper rule with the fairness penalty, history push, auto-reset) written per session and
run one session at a time in a Python loop over ``--numpy-sessions`` sessions for
``--numpy-steps`` session-steps (random slates drawn in the loop, as in the env case). Before
timing it is checked against ``purerec.sim.env.step_env`` (noise off) step by step.

Targets (2-core CPU; printed with PASS/MISS): env >= 1M steps/s at B = 4096 (test world) and
>= 30x the NumPy reference; env + scoring + top-k >= 90k steps/s at 3,327 items (B = 4096, and
the best B). Other processes on the machine lower every number; the load average is printed,
and each row also gives env-steps per CPU-second (process CPU time, all threads summed).

    python benchmarks/env_throughput.py                         # full run (a few minutes)
    python benchmarks/env_throughput.py --quick                 # tiny world and sizes (smoke run)
    python benchmarks/env_throughput.py --batch-sizes 4096 --steps 200 --devices 1
    python benchmarks/env_throughput.py --json env_throughput.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

TARGET_ENV_STEPS = 1_000_000.0
TARGET_RATIO = 30.0
TARGET_SCORE_STEPS = 90_000.0
TARGET_B = 4096

QUICK_WORLD = {"world.n_users": 300, "world.n_items": 400, "world.n_test_users": 120,
               "world.n_test_items": 150, "world.n_tags": 12, "world.true_dim": 8,
               "world.emb_dim": 8, "world.log_density": 0.2}


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.replace(",", " ").split()]


def _strs(s: str) -> list[str]:
    return [v for v in s.replace(",", " ").split()]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=_ints, default=None, help="sessions B, e.g. 1024,4096,16384")
    ap.add_argument("--steps", type=int, default=None, help="scan length T of the env case (default 100)")
    ap.add_argument("--score-steps", type=int, default=None,
                    help="scan length T of the scoring cases (default 20; a step costs ~50x more)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case; the median is reported")
    ap.add_argument("--worlds", type=_strs, default=["test", "train"], help="test,train")
    ap.add_argument("--cases", type=_strs, default=["env", "score"], help="env,score")
    ap.add_argument("--topk", type=_strs, default=["lax", "two_stage"],
                    help="top-k variants of the scoring case: lax (jax.lax.top_k), two_stage")
    ap.add_argument("--topk-group", type=int, default=0,
                    help="group size of the two-stage top-k (0 = about sqrt(n_items / K))")
    ap.add_argument("--devices", type=_ints, default=None,
                    help="XLA host device counts to run with (default 1 and the CPU count)")
    ap.add_argument("--threefry-partitionable", choices=["default", "true", "false"], default="default",
                    help="set jax_threefry_partitionable (false: the older, ~2x faster on CPU threefry "
                         "layout; other random streams)")
    ap.add_argument("--numpy-steps", type=int, default=None, help="session-steps of the NumPy reference")
    ap.add_argument("--numpy-sessions", type=int, default=64, help="sessions the NumPy loop cycles through")
    ap.add_argument("--env", default=None, help="TOML config (default: the built-in KuaiRec-like defaults)")
    ap.add_argument("--quick", action="store_true", help="tiny world and sizes: a smoke run")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    quick = args.quick
    if args.batch_sizes is None:
        args.batch_sizes = [256, 1024] if quick else [1024, 4096, 16384]
    if args.steps is None:
        args.steps = 10 if quick else 100
    if args.score_steps is None:
        args.score_steps = 5 if quick else 20
    if args.repeats is None:
        args.repeats = 2 if quick else 3
    if args.numpy_steps is None:
        args.numpy_steps = 300 if quick else 2000
    if args.devices is None:
        n = os.cpu_count() or 1
        args.devices = [1] if quick or n == 1 else [1, n]
    args.devices = sorted(set(args.devices))
    for name in ("steps", "score_steps", "repeats", "numpy_steps", "numpy_sessions"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.batch_sizes) < 1 or min(args.devices) < 1:
        ap.error("--batch-sizes and --devices must be >= 1")
    for b in args.batch_sizes:
        for d in args.devices:
            if b % d:
                ap.error(f"batch size {b} is not divisible by device count {d}")
    bad = [w for w in args.worlds if w not in ("test", "train")]
    bad += [c for c in args.cases if c not in ("env", "score")]
    bad += [t for t in args.topk if t not in ("lax", "two_stage")]
    if bad:
        ap.error(f"unknown value(s) {bad}")
    return args


# --------------------------------------------------------------------------- NumPy reference


class _Session:
    __slots__ = ("user", "t", "temper", "hist_items", "hist_feedback", "hist_true", "n_shown",
                 "n_popular", "ret")


class NumpyEnv:
    """``purerec.sim.env.step`` (exit rule ``temper``) for one session at a time, in NumPy."""

    def __init__(self, world, params, seed: int = 0, noise_std: float | None = None):
        import numpy as np

        if params.exit_rule != "temper":
            raise ValueError("the NumPy reference implements exit_rule = 'temper' only")
        self.np = np
        self.true_user = np.asarray(world.true_user, np.float32)
        self.true_item = np.asarray(world.true_item, np.float32)
        pop = np.asarray(world.item_pop, np.float32)
        self.pop_norm = pop / max(float(pop.max()), 1.0)
        self.popular = np.asarray(world.popular, bool)
        self.n_users = self.true_user.shape[0]
        self.n_items = self.true_item.shape[0]
        self.conformity = float(params.conformity)
        self.noise_std = float(params.noise_std) if noise_std is None else noise_std
        self.temper_start = float(params.temper_start)
        self.temper_offset = float(params.temper_offset)
        self.fair_threshold = float(params.fair_threshold)
        self.fair_penalty = float(params.fair_penalty)
        self.fair_scope = params.fair_scope  # the popular share p: this slate's, or the session's so far
        self.K = params.slate_size
        self.W = params.obs_window
        self.H = params.history_len
        self.max_len = params.max_len
        self.rng = np.random.default_rng(seed)

    def reset(self, s: _Session | None = None, user: int | None = None) -> _Session:
        np = self.np
        if s is None:
            s = _Session()
            s.hist_items = np.empty(self.H, np.int32)
            s.hist_feedback = np.empty(self.H, np.float32)
            s.hist_true = np.empty(self.H, np.float32)
        s.user = int(self.rng.integers(self.n_users)) if user is None else user
        s.t = 0
        s.temper = self.temper_start
        s.hist_items.fill(-1)
        s.hist_feedback.fill(0.0)
        s.hist_true.fill(0.0)
        s.n_shown = 0
        s.n_popular = 0
        s.ret = 0.0
        return s

    def observe(self, s: _Session):
        items = s.hist_items[-self.W:]
        valid = items >= 0
        return self.np.maximum(items, 0), s.hist_feedback[-self.W:] * valid, valid, s.t

    def _push(self, hist, new) -> None:
        k = new.shape[0]
        if k >= hist.shape[0]:
            hist[:] = new[-hist.shape[0]:]
        else:
            hist[:-k] = hist[k:]
            hist[-k:] = new

    def step_env(self, s: _Session, slate):
        """One step without auto-reset (mutates ``s``): (reward, terminated, truncated, r_true)."""
        np = self.np
        r_true = 1.0 / (1.0 + np.exp(-(self.true_item[slate] @ self.true_user[s.user])))
        w = self.conformity * self.pop_norm[slate]
        fb = (1.0 - w) * r_true + w
        if self.noise_std:
            fb += self.noise_std * self.rng.standard_normal(slate.shape[0], dtype=np.float32)
        np.clip(fb, 0.0, 1.0, out=fb)
        reward = float(fb.mean())
        slate_popular = int(np.count_nonzero(self.popular[slate]))
        s.n_shown += slate.shape[0]
        s.n_popular += slate_popular
        if self.fair_scope == "slate":
            p_u = slate_popular / slate.shape[0]
        else:
            p_u = s.n_popular / max(s.n_shown, 1)
        s.temper += min(max(reward - self.temper_offset, -2.0), 0.0)
        if abs(2.0 * p_u - 1.0) >= self.fair_threshold:
            s.temper -= self.fair_penalty
        terminated = s.temper < 1.0
        s.t += 1
        truncated = s.t >= self.max_len and not terminated
        self._push(s.hist_items, slate)
        self._push(s.hist_feedback, fb)
        self._push(s.hist_true, r_true)
        s.ret += reward
        return reward, terminated, truncated, r_true

    def step(self, s: _Session, slate):
        """``step_env`` with auto-reset: (obs, reward, terminated, truncated)."""
        reward, terminated, truncated, _ = self.step_env(s, slate)
        if terminated or truncated:
            self.reset(s)
        return self.observe(s), reward, terminated, truncated


def check_numpy_reference(E, params, world, n_users: int = 6) -> int:
    """Compare ``NumpyEnv.step_env`` with ``purerec.sim.env.step_env`` (noise off); returns steps compared."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    p0 = params.replace(noise_std=jnp.float32(0.0))
    ref = NumpyEnv(world, p0, seed=1)
    step = jax.jit(E.step_env)
    rng = np.random.default_rng(2)
    n = 0
    for i in range(n_users):
        _, st = E.reset(jax.random.key(100 + i), p0)
        s = ref.reset(user=int(st.user))
        for _ in range(p0.max_len):
            slate = rng.integers(0, ref.n_items, ref.K).astype(np.int32)
            _, st, r, term, trunc, info = step(jax.random.key(0), st, jnp.asarray(slate), p0)
            r_np, term_np, trunc_np, rt_np = ref.step_env(s, slate)
            ok = (np.allclose(float(r), r_np, atol=2e-5) and bool(term) == term_np
                  and bool(trunc) == trunc_np and np.allclose(float(st.temper), s.temper, atol=1e-4)
                  and np.array_equal(np.asarray(st.hist_items), s.hist_items)
                  and np.allclose(np.asarray(info["true_feedback"]), rt_np, atol=2e-5))
            if not ok:
                raise AssertionError(f"NumPy reference differs from purerec.sim.env.step_env at user {i} "
                                     f"step {s.t}: reward {float(r)} vs {r_np}, terminated {bool(term)} "
                                     f"vs {term_np}, temper {float(st.temper)} vs {s.temper}")
            n += 1
            if term_np or trunc_np:
                break
    return n


def time_numpy(world, params, n_steps: int, n_sessions: int, repeats: int) -> dict:
    import numpy as np

    env = NumpyEnv(world, params, seed=0)
    rng = np.random.default_rng(1)
    sessions = [env.reset() for _ in range(n_sessions)]
    n_items, K = env.n_items, env.K

    def run(n):
        done = 0
        while done < n:
            for s in sessions:
                slate = rng.integers(0, n_items, K, dtype=np.int32)
                env.step(s, slate)
                done += 1
                if done == n:
                    break
        return done

    run(min(n_steps, 200))  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        run(n_steps)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    cpu_s = statistics.median(cpu)
    return {"steps": n_steps, "run_s": med, "steps_per_s": n_steps / med, "cpu_s": cpu_s,
            "steps_per_cpu_s": n_steps / cpu_s}


# --------------------------------------------------------------------------- JAX cases


def _order_key(x):
    """int32 keys ordered as IEEE totalOrder of f32 ``x`` (-0 < +0), the order XLA's TopK compares by."""
    import jax
    import jax.numpy as jnp

    i = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)


def two_stage_top_k(scores, k: int, group: int, n_valid: int | None = None):
    """Indices of ``jax.lax.top_k(scores, k)`` (same order and ties), via group maxima.

    Items are split into contiguous groups of ``group``; the k groups with the largest maxima
    (ties: lower group) hold every top-k item, so top-k runs on G group maxima and then on
    k * group candidates instead of on all items. Needs k <= number of groups. Maxima are taken
    on ``_order_key`` so that ties (-0 vs +0 included) break exactly as in ``jax.lax.top_k``.
    ``n_valid``: ``scores`` is already [b, G * group] wide and only its first ``n_valid``
    columns are items (the rest is ignored), so no padded copy of the scores is made.
    """
    import jax
    import jax.numpy as jnp

    b, n = scores.shape
    if n_valid is None:
        n_valid = n
        pad = -n % group
        if pad:
            scores = jnp.pad(scores, ((0, 0), (0, pad)))
            n += pad
    g_count = n // group
    if n != g_count * group or n_valid > n or n_valid <= n - group:
        raise ValueError(f"scores width {n} must be the item count {n_valid} padded to a multiple of {group}")
    if k > g_count:
        return jax.lax.top_k(jnp.where(jnp.arange(n) < n_valid, scores, -jnp.inf), k)[1]
    # the float lowest in totalOrder (-NaN, all bits set) masks padding; ties go to lower indices
    lowest = jax.lax.bitcast_convert_type(jnp.int32(-1), scores.dtype)
    s = scores.reshape(b, g_count, group)
    col = jnp.arange(n).reshape(g_count, group)
    gkey = jnp.where(col < n_valid, _order_key(s), jnp.iinfo(jnp.int32).min).max(axis=-1)  # fused
    gmax = jax.lax.bitcast_convert_type(_order_key(gkey), scores.dtype)  # the key map is an involution
    gi = jnp.sort(jax.lax.top_k(gmax, k)[1], axis=-1)  # [b, k] ascending: index order (ties) kept
    cand = jnp.take_along_axis(s, gi[:, :, None], axis=1)  # [b, k, group]
    idx = (gi[:, :, None] * group + jnp.arange(group)).reshape(b, k * group)
    cand = jnp.where(idx < n_valid, cand.reshape(b, k * group), lowest)
    j = jax.lax.top_k(cand, k)[1]  # float top-k: XLA's fast TopK (an int32 top-k is much slower)
    return jnp.take_along_axis(idx, j, axis=1)


def check_two_stage(world, k: int, group: int) -> None:
    """``two_stage_top_k`` gives ``jax.lax.top_k``'s indices: random, all-tied and rounded (tied) scores."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    emb = world.item_emb
    q = jax.random.normal(jax.random.key(5), (64, emb.shape[1]))
    s = q @ emb.T
    signed_zeros = jnp.where(jax.random.bernoulli(jax.random.key(6), 0.5, s.shape), 0.0, -0.0)
    for scores in (s, jnp.zeros_like(s), jnp.round(s * 2.0) / 2.0, signed_zeros):
        a = np.asarray(jax.lax.top_k(scores, k)[1])
        b = np.asarray(jax.jit(two_stage_top_k, static_argnums=(1, 2))(scores, k, group))
        if not np.array_equal(a, b):
            raise AssertionError("two_stage_top_k differs from jax.lax.top_k")


def build_runner(E, case: str, topk: str, group: int, b_local: int, n_steps: int, slate_size: int,
                 n_items: int):
    """fn(key, obs, state, params) -> (state, reward_sum, n_done) for one shard of sessions."""
    import jax
    import jax.numpy as jnp

    def run(key, obs, state, params):
        def env_body(carry, k):  # the obs is not carried: a random policy never reads it
            state, rsum, ndone = carry
            k_slate, k_env = jax.random.split(k)
            slates = jax.random.randint(k_slate, (b_local, slate_size), 0, n_items)
            _, state, reward, term, trunc, _ = E.batch_step(k_env, state, slates, params)
            return (state, rsum + reward.sum(), ndone + (term | trunc).sum(dtype=jnp.int32)), None

        emb = params.world.item_emb
        if topk == "two_stage":  # zero rows up to a multiple of the group size: no padded score copy
            emb_scores = jnp.pad(emb, ((0, -n_items % group), (0, 0)))
            select = lambda s: two_stage_top_k(s, slate_size, group, n_valid=n_items)
        else:
            emb_scores = emb
            select = lambda s: jax.lax.top_k(s, slate_size)[1]

        def score_body(carry, k):
            obs, state, rsum, ndone = carry
            m = obs.valid.astype(emb.dtype)
            q = (emb[obs.items] * m[..., None]).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)[:, None]
            slates = select(q @ emb_scores.T)
            obs, state, reward, term, trunc, _ = E.batch_step(k, state, slates, params)
            return (obs, state, rsum + reward.sum(), ndone + (term | trunc).sum(dtype=jnp.int32)), None

        keys = jax.random.split(key, n_steps)
        zero = (jnp.float32(0.0), jnp.int32(0))
        if case == "env":
            (state, rsum, ndone), _ = jax.lax.scan(env_body, (state, *zero), keys)
        else:
            (_, state, rsum, ndone), _ = jax.lax.scan(score_body, (obs, state, *zero), keys)
        return state, rsum, ndone

    return run


def make_case(E, case, topk, group, batch, n_steps, params, n_dev):
    """(jitted fn, args) running ``batch`` sessions for ``n_steps`` on ``n_dev`` host devices."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    k = params.slate_size
    n_items = params.world.n_items
    run = build_runner(E, case, topk, group, batch // n_dev, n_steps, k, n_items)
    obs, state = jax.jit(E.batch_reset, static_argnums=2)(jax.random.key(0), params, batch)
    if n_dev == 1:
        return jax.jit(run), (jax.random.key(1), obs, state, params)

    mesh = jax.make_mesh((n_dev,), ("s",), devices=jax.devices()[:n_dev])

    def shard(keys, obs, state, params):
        state, rsum, ndone = run(keys[0], obs, state, params)
        return state, rsum[None], ndone[None]

    fn = jax.jit(jax.shard_map(shard, mesh=mesh, in_specs=(P("s"), P("s"), P("s"), P()),
                               out_specs=(P("s"), P("s"), P("s")), check_vma=False))
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("s")))
    keys = put(jax.random.split(jax.random.key(1), n_dev))
    return fn, (keys, jax.tree.map(put, obs), jax.tree.map(put, state),
                jax.device_put(params, NamedSharding(mesh, P())))


def time_jax(fn, args, repeats: int) -> dict:
    import jax

    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    _, rsum, ndone = out
    return {"compile_s": compile_s, "first_run_s": first_s, "run_s": statistics.median(times),
            "run_s_min": min(times), "cpu_s": statistics.median(cpu),
            "reward_sum": float(rsum.sum()), "n_done": int(ndone.sum())}


# --------------------------------------------------------------------------- report


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    n_dev_max = max(args.devices)
    if n_dev_max > 1:
        flag = f"--xla_force_host_platform_device_count={n_dev_max}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

    import jax
    import numpy as np

    if args.threefry_partitionable != "default":
        jax.config.update("jax_threefry_partitionable", args.threefry_partitionable == "true")

    from purerec.config import env_sections, world_sections

    from purerec.config import load_config
    from purerec.data.datasets import get_worlds
    from purerec.sim import env as E

    if len(jax.devices()) < n_dev_max:
        raise SystemExit(f"asked for {n_dev_max} devices, XLA has {len(jax.devices())}")

    overrides = dict(QUICK_WORLD) if args.quick else {}
    cfg = load_config(args.env, overrides)
    t0 = time.perf_counter()
    train, test = get_worlds(world_sections(cfg), use_cache=not args.quick, verbose=True)
    worlds = {"test": test, "train": train}
    load_start = _load()
    meta = {
        "jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "prng_impl": str(jax.config.jax_default_prng_impl), "world_load_s": time.perf_counter() - t0,
        "slate_size": cfg.env.slate_size, "max_len": cfg.env.max_len, "exit_rule": cfg.env.exit_rule,
        "quick": args.quick, "loadavg_start": load_start,
    }
    print(f"jax {meta['jax']} ({meta['backend']}), {meta['cpu_count']} CPUs, XLA_FLAGS='{meta['xla_flags']}', "
          f"slate {cfg.env.slate_size}, max_len {cfg.env.max_len}, exit rule {cfg.env.exit_rule}")
    for name in args.worlds:
        w = worlds[name]
        print(f"  {name} world: {w.n_users:,} users x {w.n_items:,} items, emb_dim {w.item_emb.shape[1]}")
    print(f"load average at start: {load_start}", flush=True)

    rows: list[dict] = []
    numpy_rows: dict[str, dict] = {}
    for wname in args.worlds:
        world = worlds[wname]
        params = E.make_params(world, env_sections(cfg))
        group = args.topk_group or max(1, round(math.sqrt(world.n_items / params.slate_size)))
        if "score" in args.cases and "two_stage" in args.topk:
            check_two_stage(world, params.slate_size, group)
        if params.exit_rule == "temper":
            n_chk = check_numpy_reference(E, params, world)
            print(f"[{wname}] NumPy reference matches purerec.sim.env.step_env ({n_chk} steps, noise off)")
            r = time_numpy(world, params, args.numpy_steps, args.numpy_sessions, args.repeats)
            numpy_rows[wname] = {"world": wname, "n_items": world.n_items, **r}
            print(f"[{wname}] numpy per-session: {_fmt_int(r['steps_per_s'])} steps/s "
                  f"({r['steps']} steps in {r['run_s']:.3f} s)", flush=True)
        else:
            print(f"[{wname}] NumPy reference skipped: exit_rule {params.exit_rule!r} (only 'temper')")
        for case in args.cases:
            variants = ["-"] if case == "env" else args.topk
            n_steps = args.steps if case == "env" else args.score_steps
            for topk in variants:
                for n_dev in args.devices:
                    for batch in args.batch_sizes:
                        fn, fargs = make_case(E, case, topk, group, batch, n_steps, params, n_dev)
                        r = time_jax(fn, fargs, args.repeats)
                        row = {"world": wname, "n_items": world.n_items, "case": case, "topk": topk,
                               "topk_group": group if topk == "two_stage" else None, "devices": n_dev,
                               "batch": batch, "steps": n_steps, **r,
                               "steps_per_s": batch * n_steps / r["run_s"],
                               "steps_per_cpu_s": batch * n_steps / max(r["cpu_s"], 1e-9)}
                        rows.append(row)
                        print(f"[{wname}] {case:5s} topk={topk:9s} dev={n_dev} B={batch:6d} T={n_steps:4d}: "
                              f"compile {r['compile_s']:6.2f} s, first run {r['first_run_s']:7.3f} s, "
                              f"run {r['run_s']:7.3f} s -> {_fmt_int(row['steps_per_s']):>11s} steps/s",
                              flush=True)
                        del fn, fargs
    meta["loadavg_end"] = _load()

    # ---- markdown table
    print()
    print("| world | items | case | top-k | devices | B | T | compile s | first run s | run s (median) "
          "| env-steps/s | vs NumPy | steps/CPU-s |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        npr = numpy_rows.get(r["world"])
        ratio = f"{r['steps_per_s'] / npr['steps_per_s']:.1f}x" if npr and r["case"] == "env" else ""
        print(f"| {r['world']} | {r['n_items']:,} | {r['case']} | {r['topk']} | {r['devices']} | {r['batch']:,} "
              f"| {r['steps']} | {r['compile_s']:.2f} | {r['first_run_s']:.3f} | {r['run_s']:.3f} "
              f"| {_fmt_int(r['steps_per_s'])} | {ratio} | {_fmt_int(r['steps_per_cpu_s'])} |")
    for npr in numpy_rows.values():
        print(f"| {npr['world']} | {npr['n_items']:,} | numpy per-session | - | 1 | 1 | {npr['steps']} | - | - "
              f"| {npr['run_s']:.3f} | {_fmt_int(npr['steps_per_s'])} | 1.0x | {_fmt_int(npr['steps_per_cpu_s'])} |")
    print("(steps/CPU-s: env-steps per second of process CPU time, all threads summed; less sensitive to other "
          "load than wall time, but not a throughput when XLA runs on both cores)")

    # ---- targets
    targets = []

    def find(case, topk, n_dev, batch=None, world="test"):
        hits = [r for r in rows if r["world"] == world and r["case"] == case and r["topk"] == topk
                and r["devices"] == n_dev and (batch is None or r["batch"] == batch)]
        return hits

    def verdict(name, value, target, detail):
        ok = value >= target
        targets.append({"target": name, "value": value, "threshold": target, "pass": ok, "detail": detail})
        shown = f"{value:.1f}x" if name.startswith("ratio") else _fmt_int(value)
        need = f"{target:.0f}x" if name.startswith("ratio") else _fmt_int(target)
        print(f"{'PASS' if ok else 'MISS'}  {name} >= {need}: {shown}  ({detail})")

    print()
    if args.quick:
        print("targets: n/a (--quick uses a tiny world)")
    else:
        print(f"targets (2-core CPU; load average start {load_start}, end {meta['loadavg_end']}):")
        npr = numpy_rows.get("test")
        for n_dev in args.devices:
            hit = find("env", "-", n_dev, TARGET_B)
            if not hit:
                print(f"n/a   env targets with {n_dev} device(s): B={TARGET_B} on the test world was not run")
                continue
            v = hit[0]["steps_per_s"]
            verdict("env-only steps/s", v, TARGET_ENV_STEPS, f"B={TARGET_B}, test world, {n_dev} device(s)")
            if npr:
                verdict("ratio env-only / NumPy", v / npr["steps_per_s"], TARGET_RATIO,
                        f"B={TARGET_B}, test world, {n_dev} device(s); NumPy {_fmt_int(npr['steps_per_s'])} steps/s")
        for topk in (args.topk if "score" in args.cases else []):
            for n_dev in args.devices:
                hits = find("score", topk, n_dev)
                if not hits:
                    continue
                at_b = [r for r in hits if r["batch"] == TARGET_B]
                if at_b:
                    verdict(f"env+scoring+top-k ({topk}) steps/s", at_b[0]["steps_per_s"], TARGET_SCORE_STEPS,
                            f"B={TARGET_B}, {test.n_items:,} items, {n_dev} device(s)")
                best = max(hits, key=lambda r: r["steps_per_s"])
                verdict(f"env+scoring+top-k ({topk}) steps/s, best B", best["steps_per_s"], TARGET_SCORE_STEPS,
                        f"B={best['batch']}, {test.n_items:,} items, {n_dev} device(s)")
        try:
            busy = float(load_start.split()[0]) > 0.75 * (os.cpu_count() or 1)
        except ValueError:
            busy = False
        if busy:
            print("note: the 1-min load average was high at the start: other work may have been running, "
                  "so these numbers can be lower bounds")

    if args.json:
        out = {"meta": meta, "rows": rows, "numpy": list(numpy_rows.values()), "targets": targets}
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
