"""A training run on the host: Stage I, Stage II in compiled chunks, evaluation, run directory.

All seeds share one program: Stage I, the initialisation and every chunk are one program each for all
seeds. The host loop over chunks only drives the progress bar, writes ``metrics.jsonl`` and an
Orbax checkpoint after each chunk, and checks the losses: a NaN or inf stops the run with an
error naming the update and the loss, while the last good checkpoint stays on disk. Checkpoints
are written in the background while the next chunk computes (Orbax commits each one atomically;
``latest_checkpoint`` ignores uncommitted ones), and the loop waits for the last one on any exit.
With ``train.session_shards`` > 1, ``init`` and the chunks run in a ``shard_map`` over that many
local devices (Stage I and the evaluation stay one-device programs).

Run directory::

    config.json      the resolved config
    metrics.jsonl    one line per (seed, update): the learning curves and losses
    evals.jsonl      with train.eval_every_chunks = N: the test-world evaluation every N chunks
    stage1.json      Stage-I loss curves per seed (first/last values)
    checkpoints/N    Orbax checkpoint after N updates
    results.json     final evaluation on the test world, per seed and mean/std
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from purerec.atomic import atomic_write
from purerec.config import Config, _apply, resolve_session_shards
from purerec.datasets import get_worlds
from purerec.env import make_params
from purerec.fidelity import fidelity
from purerec.config import EVAL_ACTIONS
from purerec.evaluation import n_test_sessions, seed_summary, test_protocol, train_report
from purerec.agents import describe, spec_of
from purerec.loop import init_key, make_train, stage1_key
from purerec.state import make_observer

TABLE = ["Len", "R_each", "R_cum", "AD", "Gini", "coverage"]
SESSIONS = "sessions"  # the device axis session shards are split along


class TrainingError(RuntimeError):
    """Training produced a non-finite loss or metric."""


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temp file + rename): a kill never leaves a half-written file."""
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=True))


def load_run_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume {run_dir}: no config.json there; pass a run directory written by train.py")
    with open(path) as fh:
        data = json.load(fh)
    data.get("train", {}).setdefault("session_shards", 1)  # written before session shards existed
    return _apply(Config(), data, "").validate()


def latest_checkpoint(ckpt_dir: str) -> int | None:
    if not os.path.isdir(ckpt_dir):
        return None
    steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()
             and os.path.exists(os.path.join(ckpt_dir, n, "commit_success.txt"))]
    return max(steps) if steps else None


class _CompileCounter:
    """Counts XLA compilations while active (to prove chunks do not recompile)."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


_COUNTER: _CompileCounter | None = None


def _counter() -> _CompileCounter:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = _CompileCounter()
    return _COUNTER


def _check_finite(logs: dict, first_update: int, seeds) -> None:
    for name, arr in logs.items():
        a = np.asarray(arr)
        bad = ~np.isfinite(a)
        if bad.any():
            s_idx, u_idx = np.argwhere(bad)[0]
            raise TrainingError(
                f"non-finite {name} = {a[s_idx, u_idx]} at update {first_update + u_idx + 1} (seed {seeds[s_idx]}); "
                f"training stopped, the last good checkpoint is kept. Lower the learning rates "
                f"(ppo.actor_lr / ppo.critic_lr) or ppo.max_grad_norm and resume or restart.")


def _append_metrics(path: str, logs: dict, first_update: int, seeds) -> None:
    n_upd = next(iter(logs.values())).shape[1]
    with open(path, "a") as fh:
        for u in range(n_upd):
            for s_i, seed in enumerate(seeds):
                row = {"seed": int(seed), "update": first_update + u + 1}
                row.update({k: float(np.asarray(v)[s_i, u]) for k, v in logs.items()})
                fh.write(json.dumps(row) + "\n")


def _line_update(ln: str) -> float:
    try:
        return json.loads(ln)["update"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill
        return float("inf")


def _truncate_metrics(path: str, up_to_update: int) -> None:
    """Drop lines past the checkpoint (written by a chunk whose checkpoint never landed)."""
    if not os.path.exists(path):
        return
    with open(path) as fh:
        keep = [ln for ln in fh if _line_update(ln) <= up_to_update]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.writelines(keep)
    os.replace(tmp, path)


def new_run_dir(cfg: Config) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", describe(cfg)["method"].lower()).strip("-")
    base = os.path.join(cfg.train.run_dir, f"{stamp}-{slug}")
    path, i = base, 1
    while os.path.exists(path):
        path, i = f"{base}-{i}", i + 1
    os.makedirs(path)
    return path


def seed_batcher(mode: str):
    """How one program runs all seeds: ``vmap`` (batched: what accelerators want) or ``map``
    (``lax.map``, one seed after another inside the same program). On CPU vmapping saves no
    compute, and batching the slate scatters/gathers over seeds made an update 2.2x slower than
    the plain one, so ``auto`` maps on CPU and vmaps elsewhere. Both give a leading seed axis."""
    if mode == "auto":
        mode = "map" if jax.default_backend() == "cpu" else "vmap"
    if mode == "vmap":
        return jax.vmap
    return lambda fn: (lambda *args: jax.lax.map(lambda a: fn(*a), args))


def run(cfg: Config, run_dir: str | None = None, resume: bool = False, progress: bool = True,
        log=print, evaluate_at_end: bool = True) -> dict:
    """Train (or resume) and evaluate; returns the results dict also written to results.json."""
    if resume:
        if not run_dir or not os.path.isdir(run_dir):
            raise FileNotFoundError(f"--resume {run_dir!r}: no such run directory")
        cfg = load_run_config(run_dir)
    n_dev = check_session_shards(cfg)
    if not resume:
        # 0 = one shard per device, for agents that split sessions; one shard for the others.
        cfg = resolve_session_shards(cfg, n_dev if spec_of(cfg).session_shards else 1)
        run_dir = run_dir or new_run_dir(cfg)
        os.makedirs(run_dir, exist_ok=True)
        write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(cfg))
    ckpt_dir = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    evals_path = os.path.join(run_dir, "evals.jsonl")
    seeds = list(cfg.train.seeds)
    t_all = time.perf_counter()

    train_w, test_w = get_worlds(cfg, verbose=True)
    p_train, p_test = make_params(train_w, cfg), make_params(test_w, cfg)
    shards = cfg.train.session_shards
    fns = make_train(cfg, p_train, axis_name=SESSIONS if shards > 1 else None)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    k_stage1 = jax.vmap(stage1_key)(keys)
    k_init = jax.vmap(init_key)(keys)
    over_seeds = seed_batcher(cfg.train.seed_batching)
    stage1_v = jax.jit(over_seeds(fns.stage1))
    init_v, chunk_v, replicated, runner_sharding = _stage2_programs(fns, over_seeds, shards)
    timings = {"compile_s": 0.0, "run_s": 0.0, "stage1_s": 0.0, "checkpoint_s": 0.0, "eval_s": 0.0}
    checkpointer = ocp.StandardCheckpointer()

    def timed_compile(fn, *args):
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        timings["compile_s"] += time.perf_counter() - t0
        return compiled

    done_updates = latest_checkpoint(ckpt_dir) if resume else None
    if done_updates is None:
        stage1_c = timed_compile(stage1_v, k_stage1)
        t0 = time.perf_counter()
        frozen, curves = jax.block_until_ready(stage1_c(k_stage1))
        if replicated is not None:
            frozen = jax.device_put(frozen, replicated)
        timings["stage1_s"] = time.perf_counter() - t0
        init_c = timed_compile(init_v, k_init, frozen)
        runner = jax.block_until_ready(init_c(k_init, frozen))
        timings["run_s"] += time.perf_counter() - t0
        stage1_log = {seed: {k: {"first": float(v[i, 0]), "last": float(v[i, -1])} for k, v in curves.items()}
                      for i, seed in enumerate(seeds)}
        write_json(os.path.join(run_dir, "stage1.json"), stage1_log)
        log("stage I: " + ", ".join(f"{k.replace('_', ' ')} {np.mean(v[:, 0]):.4f} -> {np.mean(v[:, -1]):.4f}"
                                    for k, v in curves.items()))
        done_updates = 0
        _truncate_metrics(metrics_path, 0)
        _truncate_metrics(evals_path, 0)
        t0 = time.perf_counter()
        # Host copies: Orbax then writes plain arrays in the background (cheaper than device shards).
        checkpointer.save(os.path.join(ckpt_dir, "0"), jax.device_get({"frozen": frozen, "runner": runner}))
        timings["checkpoint_s"] += time.perf_counter() - t0
    else:
        frozen_abs, _ = jax.eval_shape(stage1_v, k_stage1)
        runner_abs = jax.eval_shape(init_v, k_init, frozen_abs)
        if replicated is not None:
            placed = lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
            frozen_abs = jax.tree.map(lambda a: placed(a, replicated), frozen_abs)
            runner_abs = jax.tree.map(placed, runner_abs, runner_sharding(runner_abs))
        state = checkpointer.restore(os.path.join(ckpt_dir, str(done_updates)),
                                     {"frozen": frozen_abs, "runner": runner_abs})
        frozen, runner = state["frozen"], state["runner"]
        _truncate_metrics(metrics_path, done_updates)
        _truncate_metrics(evals_path, done_updates)
        log(f"resumed {run_dir} after update {done_updates}")

    n_chunks = cfg.train.total_updates // cfg.train.chunk_updates
    first_chunk = done_updates // cfg.train.chunk_updates
    chunk_c = timed_compile(chunk_v, runner, frozen)
    log(f"compiled in {timings['compile_s']:.1f}s ({len(seeds)} seeds in one program, {describe(cfg)['method']})")
    counter = _counter()
    counter.count, counter.active = 0, True
    bar = _progress(n_chunks * cfg.train.chunk_updates, done_updates, progress)
    target = cfg.train.target_episodes
    episodes = _episodes(metrics_path, seeds)  # read once (a resumed run's earlier chunks), then tallied
    every = cfg.train.eval_every_chunks
    last_eval: tuple[int, dict] | None = None  # (updates, evaluation) of the latest periodic one

    def evaluate_now() -> dict:
        t0 = time.perf_counter()
        fz, rn = jax.device_put((frozen, runner), jax.devices()[0])  # evaluation: one device
        out = evaluate_run(cfg, fns.agent, fz, rn, p_train, p_test, metrics_path)
        timings["eval_s"] += time.perf_counter() - t0
        return out
    try:
        for c in range(first_chunk, n_chunks):
            t0 = time.perf_counter()
            new_runner, logs = jax.block_until_ready(chunk_c(runner, frozen))
            timings["run_s"] += time.perf_counter() - t0
            logs = jax.device_get(logs)
            chunk_eps = {seed: float(np.sum(logs["episodes"][i])) for i, seed in enumerate(seeds)}
            if target and done_updates and any(episodes[s] + chunk_eps[s] > target for s in seeds):
                # The episode cap: this chunk would take a seed past it, so it is dropped (nothing of it
                # is written) and the run ends on the previous chunk's state.
                log(f"the next chunk would take a seed past {target} training episodes: stopping after update "
                    f"{done_updates}")
                break
            _check_finite(logs, c * cfg.train.chunk_updates, seeds)
            runner = new_runner
            _append_metrics(metrics_path, logs, c * cfg.train.chunk_updates, seeds)
            for seed in seeds:
                episodes[seed] += chunk_eps[seed]
            done_updates = (c + 1) * cfg.train.chunk_updates
            t0 = time.perf_counter()
            checkpointer.wait_until_finished()
            checkpointer.save(os.path.join(ckpt_dir, str(done_updates)),
                            jax.device_get({"frozen": frozen, "runner": runner}))
            timings["checkpoint_s"] += time.perf_counter() - t0
            if every and (c + 1) % every == 0:
                counter.active = False  # the evaluation's own compilation is not a chunk recompile
                last_eval = (done_updates, evaluate_now())
                counter.active = True
                with open(evals_path, "a") as fh:
                    fh.write(json.dumps({"update": done_updates, **last_eval[1]}, sort_keys=True) + "\n")
            bar.update(cfg.train.chunk_updates)
            bar.set_postfix(Len=f"{np.mean(logs['Len'][:, -1]):.2f}", AD=f"{np.mean(logs['AD'][:, -1]):.3f}",
                            R_cum=f"{np.mean(logs['R_cum'][:, -1]):.2f}")
    finally:
        t0 = time.perf_counter()
        checkpointer.wait_until_finished()  # the last good checkpoint is on disk, whatever happened
        timings["checkpoint_s"] += time.perf_counter() - t0
        counter.active = False
        bar.close()
    recompiles = counter.count
    results = {"run_dir": run_dir, "agent": cfg.agent.kind, **describe(cfg), "seeds": seeds, "recompiles_in_loop": recompiles,
               "updates": done_updates, "session_shards": shards,
               "timings": dict(timings), "episodes": episodes}
    if evaluate_at_end:
        results.update(last_eval[1] if last_eval and last_eval[0] == done_updates else evaluate_now())
        results["timings"]["eval_s"] = timings["eval_s"]
    from purerec.report import plot_run_curves

    results["curves_png"] = plot_run_curves(run_dir)
    results["timings"]["total_s"] = time.perf_counter() - t_all
    write_json(os.path.join(run_dir, "results.json"), results)
    return results


def check_session_shards(cfg: Config) -> int:
    """The local device count, after checking that ``train.session_shards`` fits on it."""
    n_dev = jax.local_device_count()
    if cfg.train.session_shards > n_dev:
        hint = (" On a CPU, start Python with XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{cfg.train.session_shards} (train.py does this for you: one device per core)."
                if jax.default_backend() == "cpu" else "")
        raise ValueError(f"train.session_shards = {cfg.train.session_shards}, but only {n_dev} local device(s): "
                         f"lower it (0 = one shard per device; a resumed run keeps its value).{hint}")
    return n_dev


def _stage2_programs(fns, over_seeds, shards: int):
    """Jitted (init, chunk) over the seeds, shard_mapped over the session shards when there are
    several; then the replicated sharding (for the frozen Stage-I products) and a function giving
    a runner's shardings as ``runner_specs`` says (both None for one shard)."""
    if shards == 1:
        return jax.jit(over_seeds(fns.init)), jax.jit(over_seeds(fns.chunk)), None, None
    mesh = Mesh(np.array(jax.local_devices()[:shards]), (SESSIONS,))
    specs = fns.state_specs()
    smap = lambda f, i, o: jax.jit(jax.shard_map(over_seeds(f), mesh=mesh, in_specs=i, out_specs=o, check_vma=False))
    init_v = smap(fns.init, (P(), P()), specs)
    chunk_v = smap(fns.chunk, (specs, P()), (specs, P()))

    def runner_sharding(runner):
        return jax.tree.map(lambda spec, sub: jax.tree.map(lambda _: NamedSharding(mesh, spec), sub),
                            specs, runner, is_leaf=lambda x: isinstance(x, P))

    return init_v, chunk_v, NamedSharding(mesh, P()), runner_sharding


def _episodes(metrics_path: str, seeds) -> dict:
    """Training episodes per seed recorded in ``metrics.jsonl`` (0 for a seed with no line yet)."""
    per_seed = {int(seed): 0.0 for seed in seeds}
    if os.path.exists(metrics_path):
        with open(metrics_path) as fh:
            for ln in fh:
                row = json.loads(ln)
                per_seed[row["seed"]] += row["episodes"]
    return per_seed


def read_curves(metrics_path: str, seeds) -> dict[int, dict[str, list[float]]]:
    """Per seed, every logged training curve (``metrics.jsonl``) in update order."""
    out: dict[int, dict[str, list[float]]] = {int(s): {} for s in seeds}
    if os.path.exists(metrics_path):
        with open(metrics_path) as fh:
            rows = sorted((json.loads(ln) for ln in fh), key=lambda r: r["update"])
        for row in rows:
            for k, v in row.items():
                if k not in ("seed", "update") and row["seed"] in out:
                    out[row["seed"]].setdefault(k, []).append(v)
    return out


def evaluate_run(cfg: Config, agent, frozen, runner, p_train, p_test, metrics_path: str) -> dict:
    """Every seed under the test protocol with both action rules (+ fidelity) and the train_report
    protocol; ``mean`` / ``std`` / ``per_seed`` are the protocol and action rule the config names."""
    seeds = list(cfg.train.seeds)
    n = n_test_sessions(cfg.eval, p_test)
    observer = make_observer(cfg)
    counter = _counter()
    was_active, count0 = counter.active, counter.count
    compiles = [0] * len(seeds)  # XLA compilations per seed: the agent's evaluation compiles once per run
    test = {}
    for rule in EVAL_ACTIONS:
        per_seed = {}
        for i, seed in enumerate(seeds):
            counter.active, before = True, counter.count
            take = lambda t: jax.tree.map(lambda x: np.asarray(x)[i], t)  # host slicing: no per-seed program
            fz = take(frozen)
            pp = agent.policy_params(fz, take(runner))
            row = test_protocol(getattr(agent.act, rule), p_test, cfg.eval, pp, agent.init_carry(n))
            if rule == "greedy":
                row.update(fidelity(observer, fz, jax.random.PRNGKey(cfg.eval.seed + 1000), p_train, p_test))
            compiles[i] += counter.count - before
            per_seed[str(seed)] = row
        test[rule] = seed_summary(per_seed)
    counter.active, counter.count = was_active, count0
    curves = read_curves(metrics_path, seeds)
    report = seed_summary({str(s): train_report(curves[int(s)], cfg.eval.report_updates) for s in seeds})
    chosen = test[cfg.eval.action] if cfg.eval.protocol == "test" else report
    return {"protocol": cfg.eval.protocol, "action": cfg.eval.action if cfg.eval.protocol == "test" else "sample",
            "n_sessions": n, "repeats": cfg.eval.repeats, "ad_form": cfg.eval.ad_form,
            "test": test, "train_report": report, "eval_compiles_per_seed": compiles, **chosen}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="updates", unit="upd")
