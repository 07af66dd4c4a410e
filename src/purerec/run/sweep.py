"""Sweeps: a grid of configs x seeds, compiled into as few programs as shapes allow.

Spec (``sweeps/*.toml``)::

    [sweep]
    name = "diffusion_steps"
    budget = "what one run costs, in words"
    envs = ["envs/kuairec.toml", "envs/kuairand.toml"]   # environment specs (a grid axis)
    seeds = [11, 15, 19]
    [base]                      # overrides for every run
    "train.total_updates" = 80
    [grid]                      # the grid: dotted config field -> values
    "dsrm.steps" = [5, 10, 20]

Several grids (``[[grid]]`` tables, one after another) make a union of their products: e.g. a
lambda grid for the HRL family and a preference grid for MOFIR in one Pareto sweep, without the
cross product of the two.

Grouping: runs that differ only in seeds and in fields declared ``traced`` (``purerec.config``:
lambda, learning rates, entropy coefficient, ...) form one group, run by one compiled program;
any other difference (K, max_len, slate size, agent, world) starts a new group. A run's id hashes
only the config sections it reads (the shared ones and its agent's), so changing one agent's
defaults never invalidates another agent's records.

Devices: the group's run axis is sharded over all devices (``jax.sharding.Mesh`` +
``jax.shard_map``), padded to a multiple of the device count; on each device its runs are mapped
(CPU) or vmapped (accelerators) as ``train.seed_batching`` says. Under several processes
(``purerec.run.distributed``) every process runs the plan process 0 makes from the sweep directory it
reads, and process 0 alone writes.

Safety: one JSON record per run in ``DIR/runs/``, written atomically once its group finishes;
re-running skips runs whose record says ``ok``; a kill loses at most the group in flight; a run
with a non-finite loss, or a group that raises, is recorded as ``failed`` with its error and the
sweep goes on. One sweep at a time per directory: process 0 holds ``DIR/.lock``
(``purerec.core.runlock``) from before its checks to the end; a sweep is never written into a run
directory (nor a run into a sweep directory). SIGINT / SIGTERM stop it between groups (or at once
while a group computes), never halfway through writing a group's records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from purerec.agents import describe, heads, spec_of
from purerec.agents.base import env_params
from purerec.config import (
    agent_id, apply_overrides, component_sections, Config, env_identity, env_sections, EVAL_WORLD_SECTIONS,
    HEAD_SECTIONS, load_config, load_toml, resolve_override_name, run_sections, view, world_sections,
)
from purerec.core import interrupts
from purerec.core.errors import ConfigError, RunDirError, SweepSpecError
from purerec.data.datasets import get_worlds
from purerec.data.validation import eval_world
from purerec.run import distributed
from purerec.run.evaluation import n_test_sessions, reference_rows, test_metrics
from purerec.run.experiment import seed_batcher, write_json
from purerec.report.tables import world_key
from purerec.run.hyper import frozen_config, hyper_of, hyper_paths, is_frozen, learning_rate_paths
from purerec.run.loop import make_train
from purerec.run.sections import EVAL_ACTIONS
from purerec.sim.env import make_params


@dataclass(frozen=True)
class SweepSpec:
    name: str
    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    base: dict
    grid: dict | list  # one grid (field -> values) or a list of grids (their union)
    budget: str = ""
    frozen: bool = False  # also run every point's frozen twin (RL learning rates 0)
    actions: tuple[str, ...] = ()  # evaluate under these action rules (default: eval.action alone)
    tune: bool = False  # a tuning sweep: validation split only, seeds disjoint from REPORTING_SEEDS
    tuned: str = ""  # a directory of chosen configs (<preset>/<agent>.toml) applied before the grid

    @property
    def grids(self) -> list[dict]:
        return list(self.grid) if isinstance(self.grid, list) else [self.grid]


@dataclass
class RunSpec:
    run_id: str
    cfg: Config  # with train.seeds == (seed,)
    seed: int
    point: dict  # the grid values (and env file) of this run


@dataclass
class Group:
    key: str
    runs: list[RunSpec] = field(default_factory=list)
    actions: tuple[str, ...] = ()  # action rules to evaluate besides eval.action


SPEC_SECTIONS = ("sweep", "base", "grid")
SPEC_KEYS = ("name", "budget", "envs", "seeds", "frozen", "actions", "tune", "tuned")
# The seeds every published table reports; a tuning sweep may not use them (nor the test split).
REPORTING_SEEDS = (11, 15, 19)


def _spec_error(path: str, key: str, value, allowed: str) -> SweepSpecError:
    return SweepSpecError(f"sweep spec {path}: '{key}' = {value!r} is invalid: {allowed}")


def load_sweep(path: str) -> SweepSpec:
    """Read and check a sweep spec; every error names the spec file and the key."""
    data = load_toml(path, what="sweep spec")
    for name in data:
        if name not in SPEC_SECTIONS:
            raise _spec_error(path, name, "...", f"an unknown section; a spec has {list(SPEC_SECTIONS)}")
    head = data.get("sweep", {})
    if not isinstance(head, dict):
        raise _spec_error(path, "sweep", head, "a [sweep] table")
    for name in head:
        if name not in SPEC_KEYS:
            raise _spec_error(path, f"sweep.{name}", head[name], f"an unknown key; [sweep] has {list(SPEC_KEYS)}")
    for name in ("envs", "seeds"):
        if name not in head:
            raise _spec_error(path, f"sweep.{name}", None, "required in [sweep]")
    envs, seeds = head["envs"], head["seeds"]
    if not isinstance(envs, list) or not envs or not all(isinstance(e, str) for e in envs):
        raise _spec_error(path, "sweep.envs", envs, 'a non-empty list of env files, e.g. ["envs/kuairec.toml"]')
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**31 for x in seeds)):
        raise _spec_error(path, "sweep.seeds", seeds, "a non-empty list of integers in [0, 2^31), e.g. [11, 15, 19]")
    if len(set(seeds)) != len(seeds):
        raise _spec_error(path, "sweep.seeds", seeds, "distinct seeds (a repeated seed would run twice)")
    if len(set(envs)) != len(envs):
        raise _spec_error(path, "sweep.envs", envs, "distinct env files")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise _spec_error(path, "base", base, "a [base] table of dotted field = value")
    grid = data.get("grid", {})
    if isinstance(grid, list):
        if not all(isinstance(g, dict) for g in grid):
            raise _spec_error(path, "grid", grid, "a [grid] table or [[grid]] tables")
        grid = [dict(g) for g in grid]
    elif isinstance(grid, dict):
        grid = dict(grid)
    else:
        raise _spec_error(path, "grid", grid, "a [grid] table or [[grid]] tables")
    for name in ("frozen", "tune"):
        if not isinstance(head.get(name, False), bool):
            raise _spec_error(path, f"sweep.{name}", head[name], "true or false")
    actions = head.get("actions", [])
    if not isinstance(actions, list) or not all(a in EVAL_ACTIONS for a in actions) or len(set(actions)) != len(actions):
        raise _spec_error(path, "sweep.actions", actions, f"a list of distinct action rules from {list(EVAL_ACTIONS)}")
    tuned = head.get("tuned", "")
    if not isinstance(tuned, str) or (tuned and not os.path.isdir(tuned)):
        raise _spec_error(path, "sweep.tuned", tuned, "a directory of chosen configs (<preset>/<agent>.toml), "
                          "e.g. \"sweeps/tuned\" (run `python train.py tune sweeps/tune/<world>.toml` to write them)")
    spec = SweepSpec(name=str(head.get("name", os.path.splitext(os.path.basename(path))[0])),
                     envs=tuple(envs), seeds=tuple(seeds), base=dict(base), grid=grid,
                     budget=str(head.get("budget", "")), frozen=head.get("frozen", False),
                     actions=tuple(actions), tune=head.get("tune", False), tuned=tuned)
    if spec.tune and set(spec.seeds) & set(REPORTING_SEEDS):
        raise _spec_error(path, "sweep.seeds", seeds, f"seeds disjoint from the reporting seeds {list(REPORTING_SEEDS)} "
                          f"in a tuning sweep (tune = true)")
    for g in spec.grids:
        for k, v in g.items():
            _check_field(path, f"grid.{k}", k)
            if not isinstance(v, list) or not v:
                raise _spec_error(path, f"grid.{k}", v, "a non-empty list of values")
            if len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
                raise _spec_error(path, f"grid.{k}", v, "distinct values (a repeated value would run twice)")
    for k in spec.base:
        _check_field(path, f"base.{k}", k)
    for e in spec.envs:
        if not os.path.isfile(e):
            raise _spec_error(path, "sweep.envs", e, "existing environment TOML files (see envs/)")
    return spec


def _check_field(path: str, key: str, name: str) -> None:
    try:
        resolve_override_name(Config(), name)
    except ConfigError as e:
        raise _spec_error(path, key, name, str(e).split(" is invalid: ", 1)[-1]) from None


def scale_budget(cfg: Config, budget: float) -> Config:
    """Scale the training budget (updates, Stage-I steps, eval sessions) by ``budget``.

    Updates round to at least one; a budget smaller than one chunk shrinks the chunk with it.
    """
    if budget == 1.0:
        return cfg
    if not 0 < budget <= 10:
        raise ConfigError("--budget", budget, "a factor in (0, 10]")
    t, ch = cfg.train, cfg.train.chunk_updates
    updates = max(1, int(round(t.total_updates * budget)))
    ch = min(ch, updates)
    updates = -(-updates // ch) * ch
    return dataclasses.replace(
        cfg, train=dataclasses.replace(t, total_updates=updates, chunk_updates=ch),
        encoder=dataclasses.replace(cfg.encoder, train_steps=max(1, int(cfg.encoder.train_steps * budget))),
        dsrm=dataclasses.replace(cfg.dsrm, train_steps=max(1, int(cfg.dsrm.train_steps * budget))),
        eval=dataclasses.replace(cfg.eval, n_sessions=max(64, int(cfg.eval.n_sessions * min(budget, 1.0)))),
    ).validate()


def _cfg_hash(cfg: Config) -> str:
    """Run id: a hash of the config sections the run reads (``purerec.config.run_sections``)
    without ``train.session_shards``, which is 1 in every sweep."""
    full = dataclasses.asdict(cfg)
    d = {name: full[name] for name in run_sections(cfg, spec_of(agent_id(cfg)).sections)}
    d["train"].pop("session_shards")
    d["env"] = env_identity(cfg)
    d.pop("attraction", None)  # inside env_identity
    d.pop("platform", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def expand(spec: SweepSpec, budget: float = 1.0) -> list[RunSpec]:
    """Every (env, grid point, seed) as a validated single-seed config."""
    runs, seen = [], set()
    points = [dict(zip(g, values)) for g in spec.grids for values in itertools.product(*g.values())]
    for env_file in spec.envs:
        for point in points:
            overrides = {**spec.base, **point}
            if spec.tuned:
                overrides = {**spec.base, **tuned_overrides(spec.tuned, load_config(env_file, overrides)), **point}
            cfg = scale_budget(load_config(env_file, overrides), budget)
            if cfg.train.session_shards > 1:
                raise ConfigError("train.session_shards", cfg.train.session_shards,
                                  "0 or 1 in a sweep: a sweep spreads whole runs over the devices")
            if spec.tune and cfg.eval.split != "validation":
                raise SweepSpecError(f"sweep {spec.name}: a tuning sweep (tune = true) evaluates on the validation "
                                     f"split only; point {point} has eval.split = {cfg.eval.split!r}: set "
                                     f'"eval.split" = "validation" in [base]')
            twins = [(cfg, point)]
            if spec.frozen:
                twins.append((frozen_config(cfg), {**point, "frozen": True}))
            for c0, pt in twins:
                for seed in spec.seeds:
                    c = dataclasses.replace(c0, train=dataclasses.replace(c0.train, seeds=(seed,), session_shards=1))
                    c = c.validate()
                    rid = _cfg_hash(c)
                    if rid not in seen:  # grids of a union may overlap
                        seen.add(rid)
                        runs.append(RunSpec(run_id=rid, cfg=c, seed=seed, point={"env": env_file, **pt}))
    return runs


def tuned_overrides(tuned_dir: str, cfg: Config) -> dict:
    """The chosen hyperparameters of ``cfg``'s world preset and agent (``<dir>/<preset>/<agent>.toml``,
    written by ``python train.py tune``), or {} when none were chosen."""
    path = os.path.join(tuned_dir, cfg.world.preset, f"{cfg.agent.kind}.toml")
    if not os.path.isfile(path):
        return {}
    data = load_toml(path, what="tuned config")
    return {k: v for k, v in data.get("chosen", {}).items()}


def group_key(cfg: Config) -> str:
    """Hash of the config with seeds and traced fields blanked: equal keys share a program."""
    blank = {p: 0.0 for p in hyper_paths(cfg)}
    c = apply_overrides(cfg, blank)
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, seeds=(0,)))
    return _cfg_hash(c)


def plan(runs: list[RunSpec], actions: tuple[str, ...] = ()) -> list[Group]:
    groups: dict[str, Group] = {}
    for r in runs:
        k = group_key(r.cfg)
        groups.setdefault(k, Group(key=k, actions=actions)).runs.append(r)
    return list(groups.values())


def describe_plan(spec: SweepSpec, groups: list[Group], done: set[str], n_devices: int) -> str:
    n_runs = sum(len(g.runs) for g in groups)
    todo = [g for g in groups if any(r.run_id not in done for r in g.runs)]
    lines = [f"sweep {spec.name}: {n_runs} runs in {len(groups)} groups "
             f"({len(todo)} programs to compile, {n_runs - sum(r.run_id in done for g in groups for r in g.runs)} "
             f"runs to do), {n_devices} device(s)", f"budget: {spec.budget or 'see the spec'}"]
    for i, g in enumerate(groups):
        c = g.runs[0].cfg
        left = sum(r.run_id not in done for r in g.runs)
        fixed = {k: v for k, v in g.runs[0].point.items() if all(r.point.get(k) == v for r in g.runs)}
        lines.append(f"  group {i + 1}: {len(g.runs)} runs ({left} to do), {describe(agent_id(c))['method']}, "
                     f"world {c.world.preset} {c.world.n_items} items, max_len {c.env.max_len}, K {c.dsrm.steps}, "
                     f"{c.train.total_updates} updates; fixed {fixed}")
    return "\n".join(lines)


def _read_records(out_dir: str, log=None) -> dict[str, dict]:
    """The run records in ``out_dir/runs``; a file that is not one (unreadable, foreign JSON) is
    skipped with a warning (its run, if any, is run again)."""
    d = os.path.join(out_dir, "runs")
    recs = {}
    if os.path.isdir(d):
        for f in sorted(os.listdir(d)):
            if not f.endswith(".json"):
                continue
            try:
                with open(os.path.join(d, f)) as fh:
                    rec = json.load(fh)
                if not (isinstance(rec, dict) and isinstance(rec.get("run_id"), str) and "status" in rec):
                    raise ValueError("not a run record (no run_id / status)")
            except (OSError, ValueError, UnicodeDecodeError) as e:
                if log:
                    log(f"warning: skipping {os.path.join(d, f)}: {e}")
                continue
            recs[rec["run_id"]] = rec
    return recs


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("runs",))


def _shard(x: np.ndarray, mesh: Mesh) -> jax.Array:
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def run_group(group: Group, log=print) -> list[dict]:
    """Train and evaluate every run of a group in one device-sharded program."""
    cfg = group.runs[0].cfg
    mesh = _mesh()
    n_dev = mesh.devices.size
    n = len(group.runs)
    padded = int(math.ceil(n / n_dev) * n_dev)
    order = list(range(n)) + [n - 1] * (padded - n)
    train_w, test_w = get_worlds(world_sections(cfg))
    p_train = make_params(train_w, env_sections(cfg))
    p_test = make_params(eval_world(view(cfg, EVAL_WORLD_SECTIONS), train_w, test_w), env_sections(cfg))
    fns = make_train(cfg, p_train)
    agent = fns.agent
    keys = np.stack([np.asarray(jax.random.PRNGKey(group.runs[i].seed)) for i in order])
    hypers = [hyper_of(group.runs[i].cfg) for i in order]
    hyper = {k: np.stack([np.asarray(h[k]) for h in hypers]) for k in hypers[0]}
    keys_s = _shard(keys, mesh)
    hyper_s = {k: _shard(v, mesh) for k, v in hyper.items()}

    actions = tuple(dict.fromkeys((cfg.eval.action, *group.actions)))
    rates = learning_rate_paths(cfg)
    any_frozen = any(is_frozen(r.cfg) for r in group.runs)

    def trained(key, h):
        """A run's training; a frozen twin's (every RL rate 0) skips its updates (``lax.cond``:
        no compute on CPU), since they would leave its policy as initialised."""
        if not any_frozen:
            return fns.train(key, h)
        is_twin = jnp.all(jnp.stack([h[p] == 0 for p in rates]))
        return jax.lax.cond(is_twin, fns.untrained, fns.train, key, h)

    def train_eval(key, h):
        frozen, state, logs, curves = trained(key, h)
        tp = env_params(p_test, h)
        # The test protocol (on eval.split) under each action rule; the mean over its repeats.
        carry = agent.init_carry(n_test_sessions(cfg.eval, tp))
        metrics = {}
        pp = agent.for_world(agent.policy_params(frozen, state), tp)
        for action in actions:
            per_rep = test_metrics(getattr(agent.act, action), tp, cfg.eval, pp, carry)
            metrics[action] = jax.tree.map(lambda v: v.mean(0), per_rep)
        return logs, curves, metrics

    # Each device runs its share of the runs: mapped one after another on CPU, vmapped on
    # accelerators (``train.seed_batching``). Mapped, a run's numbers do not depend on how many
    # runs share its program, so a resumed sweep reproduces lost runs exactly.
    per_device = seed_batcher(cfg.train.seed_batching)(train_eval)
    spec = PartitionSpec("runs")
    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    t0 = time.perf_counter()
    compiled = fn.lower(keys_s, hyper_s).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logs, curves, metrics = jax.block_until_ready(compiled(keys_s, hyper_s))
    run_s = time.perf_counter() - t0
    distributed.barrier("gather")  # the processes may be apart by more than the collectives wait
    logs, curves, metrics = (_gather(x) for x in (logs, curves, metrics))
    records = []
    for i, r in enumerate(group.runs):
        rec = {"run_id": r.run_id, "seed": r.seed, "point": r.point, "group": group.key, **_row_of(r.cfg),
               "config": dataclasses.asdict(r.cfg), "status": "ok",
               "timing": {"group_compile_s": compile_s, "group_run_s": run_s, "group_runs": n, "devices": n_dev}}
        kept = int(np.sum(logs["kept"][i]))  # updates within the episode cap (train.target_episodes)
        bad = [k for k, v in logs.items() if not np.all(np.isfinite(v[i][:kept]))]
        if bad:
            u = int(np.argwhere(~np.isfinite(logs[bad[0]][i]))[0, 0]) + 1
            rec.update(status="failed", error=f"non-finite {bad[0]} at update {u}")
        by_action = {a: {k: float(v[i]) for k, v in m.items()} for a, m in metrics.items()}
        rec["metrics"] = by_action[cfg.eval.action]
        rec["metrics_by_action"] = by_action
        rec["curves"] = {k: [float(x) for x in logs[k][i][:kept]] for k in sorted(logs) if k != "kept"}
        rec["updates"] = kept
        rec["episodes"] = float(np.sum(logs["episodes"][i][:kept]))
        rec["env_steps"] = kept * r.cfg.train.num_envs * r.cfg.train.rollout_len
        spec = spec_of(agent_id(r.cfg))
        rec["grad_steps"] = kept * spec.grad_steps(view(r.cfg, component_sections(r.cfg, spec.sections)))
        rec["stage1"] = {k: {"first": float(v[i, 0]), "last": float(v[i, -1])} for k, v in curves.items()}
        records.append(rec)
    log(f"  group done: compile {compile_s:.1f}s, run {run_s:.1f}s for {n} runs on {n_dev} device(s)")
    return records


def _row_of(cfg: Config) -> dict:
    """What the report needs to place a run: its row label and table (``purerec.agents.describe``),
    its slate head, whether it is a frozen twin, the split and the action rule of ``metrics``."""
    d = describe(agent_id(cfg))
    return {"method": d["method"], "table": d["group"], "kind": d["kind"], "purifier": d["purifier"],
            "family": d["family"], "tradeoff": d["tradeoff"], "paper_train_s": d["paper_train_s"],
            "slate_head": cfg.slate.head, "head": heads.resolve(view(cfg, HEAD_SECTIONS)).label, "frozen": is_frozen(cfg),
            "split": cfg.eval.split, "action": cfg.eval.action}


def _gather(tree):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def reuse_records(runs: list[RunSpec], out_dir: str, other_dirs: tuple[str, ...], writer: bool) -> int:
    """Copy into ``out_dir`` the finished records of other sweeps (``--reuse DIR``) whose run id is one
    of this sweep's runs: the same id is the same config, so the run would give the same numbers.
    The copy keeps its ``point`` as this sweep's. Returns how many were copied."""
    ours = {r.run_id: r for r in runs}
    have = _read_records(out_dir)
    n = 0
    for d in other_dirs:
        for rid, rec in _read_records(d).items():
            if rid in ours and rec.get("status") == "ok" and have.get(rid, {}).get("status") != "ok":
                rec = {**rec, "point": ours[rid].point, "reused_from": os.path.abspath(d)}
                if writer:
                    write_json(os.path.join(out_dir, "runs", f"{rid}.json"), rec)
                have[rid] = rec
                n += 1
    return n


def run_sweep(spec: SweepSpec, out_dir: str, budget: float = 1.0, dry_run: bool = False, log=print,
              reuse: tuple[str, ...] = ()) -> dict:
    """Run every missing run of the sweep (after copying the finished ones of the sweeps in
    ``reuse``); returns {'plan': text, 'records': {...}}."""
    runs = expand(spec, budget)
    groups = plan(runs, spec.actions)
    writer = jax.process_index() == 0
    held = []
    try:
        return _run_sweep(spec, out_dir, budget, dry_run, log, reuse, runs, groups, writer, held)
    finally:
        with interrupts.deferred():
            for lock in held:
                lock.release()


def check_sweep_dir(out_dir: str) -> None:
    """A sweep's ``--out`` (locked): empty, new, or a sweep directory; never a run directory nor a
    directory of other files (the sweep would be written among them)."""
    from purerec.core.runlock import visible
    from purerec.run.experiment import is_run_dir, is_sweep_dir

    if is_run_dir(out_dir):
        raise RunDirError(f"--out {out_dir}: is a run directory (config.json); a sweep is not written into a run; "
                          f"nothing was changed, choose another --out")
    if visible(os.listdir(out_dir)) and not is_sweep_dir(out_dir):
        raise RunDirError(f"--out {out_dir}: holds files that are not a sweep's (no sweep.json or runs/); nothing was "
                          f"changed, choose a new or empty --out")


def _run_sweep(spec, out_dir, budget, dry_run, log, reuse, runs, groups, writer, held) -> dict:
    """``run_sweep`` once the plan is made: process 0 locks the directory (``purerec.core.runlock``)
    before checking it, and holds the lock to the end."""
    from purerec.core.runlock import DirLock

    def prepare() -> dict:  # process 0 reads and writes the sweep directory; the others get its records
        with interrupts.deferred():  # a lock is taken whole (or not at all)
            held.append(DirLock(out_dir, "--out", create=True, log=log).acquire())
        interrupts.check()
        check_sweep_dir(out_dir)
        os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
        write_json(os.path.join(out_dir, "sweep.json"), {**dataclasses.asdict(spec), "budget_factor": budget})
        if reuse and not dry_run:
            log(f"reused {reuse_records(runs, out_dir, reuse, writer)} finished run(s) from {', '.join(reuse)}")
        return _read_records(out_dir, log)

    records = distributed.agree(prepare)
    done = {k for k, r in records.items() if r["status"] == "ok"}
    text = describe_plan(spec, groups, done, len(jax.devices()))
    log(text)
    if dry_run:
        return {"plan": text, "records": records}
    for i, g in enumerate(groups):
        interrupts.check()  # a safe point: every finished group's records are written
        todo = [r for r in g.runs if r.run_id not in done]
        if not todo:
            continue
        log(f"group {i + 1}/{len(groups)}: {len(todo)} runs")
        try:
            new = run_group(Group(key=g.key, runs=todo, actions=g.actions), log=log)
        except Exception as e:  # a failing group is recorded; the sweep goes on
            interrupts.check()  # ... unless it is an interrupt that library code wrapped in another error
            msg = f"{type(e).__name__}: {e}"
            log(f"  group failed: {msg}")
            new = [{"run_id": r.run_id, "seed": r.seed, "point": r.point, "group": g.key, **_row_of(r.cfg),
                    "config": dataclasses.asdict(r.cfg), "status": "failed", "error": msg,
                    "traceback": traceback.format_exc(limit=5)} for r in todo]
        if writer:
            with interrupts.deferred():  # a group's records are written whole
                for rec in new:
                    write_json(os.path.join(out_dir, "runs", f"{rec['run_id']}.json"), rec)
                    records[rec["run_id"]] = rec
    if writer:
        write_json(os.path.join(out_dir, "reference.json"), reference_for(runs))
    return {"plan": text, "records": records}


def reference_for(runs: list[RunSpec]) -> dict:
    """{preset: {world key: {policy: row}}}: the reference rows (test protocol, cached) for every world
    and session length of a sweep, shown under the agents in its report's tables; the key is the
    max_len, with preference dynamics also the attraction strengths (``report.tables.world_key``)."""
    out: dict = {}
    for r in runs:
        c = r.cfg
        by_world = out.setdefault(c.world.preset, {})
        key = world_key(dataclasses.asdict(c))  # the max_len; with dynamics also the attraction strengths
        if key not in by_world:
            by_world[key] = reference_rows(c)
    return out
