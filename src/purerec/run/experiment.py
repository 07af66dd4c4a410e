"""A training run on the host: Stage I, Stage II in compiled chunks, evaluation, run directory.

All seeds share one program: Stage I, the initialisation and every chunk are one program each for all
seeds. The host loop over chunks only drives the progress bar, writes ``metrics.jsonl`` and an
Orbax checkpoint after each chunk, and checks the losses: a NaN or inf stops the run with an
error naming the update and the loss, while the last good checkpoint stays on disk. Checkpoints
are written in the background while the next chunk computes (Orbax commits each one atomically;
``latest_checkpoint`` ignores uncommitted ones), and the loop waits for the last one on any exit.
With ``train.session_shards`` > 1, ``init`` and the chunks run in a ``shard_map`` over that many
devices, or vmapped over the shards on one device when there are fewer devices (Stage I and the
evaluation stay one-device programs). Launched over several processes
(``purerec.run.distributed``; ``train.py --distributed``), the shards are every device of every
process: each process steps its own devices' sessions, process 0 alone reads and writes the run
directory (config, metrics, checkpoints, results) and hands the others what they need from it.

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
from dataclasses import dataclass, field
from typing import Any, Callable
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from purerec.agents import describe, spec_of
from purerec.config import (
    _apply, agent_id, AGENT_ID_SECTIONS, Config, env_sections, EVAL_WORLD_SECTIONS, MEMORY_SECTIONS,
    resolve_session_shards, STATE_SECTIONS, view, world_sections,
)
from purerec.core import interrupts
from purerec.core.atomic import atomic_write
from purerec.core.errors import CheckpointError, Interrupted, PurerecError, RunDirError, TrainingError, write_error
from purerec.core.hostdevices import FLAG
from purerec.core.memory import check_run
from purerec.core.runlock import DirLock, visible
from purerec.data.datasets import get_worlds
from purerec.data.validation import eval_world
from purerec.run import distributed as dist
from purerec.run.evaluation import n_test_sessions, seed_summary, test_protocol, train_report
from purerec.run.loop import init_key, make_train, stage1_key
from purerec.run.sections import DEFAULT_SESSION_SHARDS, EVAL_ACTIONS
from purerec.sim.env import make_params
from purerec.state.fidelity import fidelity
from purerec.state.purifier import make_observer

TABLE = ["Len", "R_each", "R_cum", "AD", "Gini", "coverage"]
SESSIONS = "sessions"  # the device axis session shards are split along


def write_json(path: str, obj) -> None:
    """Write JSON atomically (temp file + rename): a kill never leaves a half-written file."""
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=True))


def load_run_config(run_dir: str) -> Config:
    if not os.path.isdir(run_dir):
        raise RunDirError(f"--resume {run_dir}: no such run directory")
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise RunDirError(f"--resume {run_dir}: no config.json there; pass a run directory written by train.py")
    try:
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"--resume {run_dir}: {path} is damaged ({e}); it cannot be resumed -- start a new run "
                          f"with --out NEW_DIR") from None
    data.get("train", {}).setdefault("session_shards", 1)  # written before session shards existed
    return _apply(Config(), data, "").validate()


def is_run_dir(path: str) -> bool:
    """A run directory (``train.py`` wrote its ``config.json``)."""
    return os.path.isfile(os.path.join(path, "config.json"))


def is_sweep_dir(path: str) -> bool:
    """A sweep directory (``train.py sweep`` wrote ``sweep.json`` or ``runs/``)."""
    return os.path.isfile(os.path.join(path, "sweep.json")) or os.path.isdir(os.path.join(path, "runs"))


def check_new_run_dir(run_dir: str) -> None:
    """A new run's ``--out``: refused when it is a file, holds anything, or cannot be written,
    before anything is written (a finished run is never overwritten: ``--resume`` continues one)."""
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise RunDirError(f"--out {run_dir}: is a file, not a directory; choose another --out")
        if visible(os.listdir(run_dir)):
            if is_sweep_dir(run_dir):
                raise RunDirError(f"--out {run_dir}: is a sweep directory (sweep.json, runs/); a run is not written "
                                  f"into a sweep; nothing was changed, choose a new --out")
            what = "a run (config.json)" if os.path.exists(os.path.join(run_dir, "config.json")) else "files"
            raise RunDirError(f"--out {run_dir}: already holds {what}; nothing was changed. Continue it with "
                              f"--resume {run_dir}, or choose a new --out")
        probe = run_dir
    else:
        probe = os.path.dirname(os.path.abspath(run_dir))
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {run_dir}: {probe} is not writable; choose a writable --out")


def checkpoint_steps(ckpt_dir: str) -> list[int]:
    """The committed checkpoints (Orbax writes ``commit_success.txt`` last), newest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    steps = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()
             and os.path.exists(os.path.join(ckpt_dir, n, "commit_success.txt"))]
    return sorted(steps, reverse=True)


def latest_checkpoint(ckpt_dir: str) -> int | None:
    steps = checkpoint_steps(ckpt_dir)
    return steps[0] if steps else None


def set_aside(ckpt_dir: str, name: str, why: str, log=print) -> str:
    """Move ``checkpoints/name`` to ``checkpoints/set_aside/name-<why>[-i]`` (kept, never deleted)."""
    d = os.path.join(ckpt_dir, "set_aside")
    os.makedirs(d, exist_ok=True)
    dst, i = os.path.join(d, f"{name}-{why}"), 1
    while os.path.exists(dst):
        dst, i = os.path.join(d, f"{name}-{why}-{i}"), i + 1
    os.replace(os.path.join(ckpt_dir, name), dst)
    log(f"checkpoint {name} set aside ({why}): {dst}")
    return dst


def _shapes(tree) -> list:
    return sorted(tuple(int(d) for d in a.shape) for a in jax.tree.leaves(tree))


def restore_checkpoint(checkpointer, ckpt_dir: str, target, cfg: Config, log=print):
    """(updates, state) of the newest intact checkpoint that fits ``target`` (abstract arrays), or
    (None, None) when there is none. Uncommitted directories (a kill mid-save) and checkpoints
    that cannot be read are set aside (``checkpoints/set_aside/``), saying which; a readable
    checkpoint whose arrays do not fit the run's config, or one beyond its budget, is refused
    (``CheckpointError``): it belongs to another run."""
    if not os.path.isdir(ckpt_dir):
        return None, None
    for name in sorted(os.listdir(ckpt_dir)):
        p = os.path.join(ckpt_dir, name)
        if name != "set_aside" and os.path.isdir(p) and not os.path.exists(os.path.join(p, "commit_success.txt")):
            set_aside(ckpt_dir, name, "uncommitted", log)
    want = _shapes(target)
    for step in checkpoint_steps(ckpt_dir):
        if step > cfg.train.total_updates or step % cfg.train.chunk_updates:
            raise CheckpointError(f"checkpoint {os.path.join(ckpt_dir, str(step))} is at update {step}, which this "
                                  f"run's config (total_updates {cfg.train.total_updates}, chunk_updates "
                                  f"{cfg.train.chunk_updates}) never writes: the directory mixes runs; start a new "
                                  f"run with --out NEW_DIR")
        path = os.path.join(ckpt_dir, str(step))
        try:
            meta = checkpointer.metadata(path)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            have = sorted(tuple(int(d) for d in a.shape) for a in jax.tree.leaves(
                tree, is_leaf=lambda x: hasattr(x, "shape")))
            if not have:
                raise ValueError("no array metadata")
        except Exception as e:  # unreadable metadata: a damaged checkpoint
            set_aside(ckpt_dir, str(step), "damaged", log)
            log(f"  ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
            continue
        if have != want:
            raise CheckpointError(f"checkpoint {path} holds arrays of other shapes than this run's config makes "
                                  f"(other seeds, sizes or agent): it belongs to another run; start a new run "
                                  f"with --out NEW_DIR")
        try:
            state = checkpointer.restore(path, target)
            jax.block_until_ready(state)
        except Exception as e:  # unreadable data: a damaged checkpoint
            set_aside(ckpt_dir, str(step), "damaged", log)
            log(f"  ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
            continue
        return step, state
    return None, None


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


def _append_metrics(path: str, logs: dict, first_update: int, seeds, after: int = 0) -> list[dict]:
    """Append one line per (seed, update) of a chunk; updates up to ``after`` (already in the file)
    are never appended again. A write error names the file."""
    n_upd = next(iter(logs.values())).shape[1]
    rows = []
    for u in range(n_upd):
        for s_i, seed in enumerate(seeds):
            row = {"seed": int(seed), "update": first_update + u + 1}
            row.update({k: float(np.asarray(v)[s_i, u]) for k, v in logs.items()})
            if row["update"] > after:
                rows.append(row)
    try:
        with open(path, "a") as fh:
            fh.write("".join(json.dumps(row) + "\n" for row in rows))
    except OSError as e:
        raise write_error(path, e) from None
    return rows


def _line_key(ln: str) -> tuple | None:
    """(seed, update) of a metrics / evals line (seed None in evals.jsonl); None for a line cut
    short by a kill."""
    try:
        row = json.loads(ln)
        return row.get("seed"), float(row["update"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _truncate_metrics(path: str, up_to_update: int) -> int:
    """Make ``metrics.jsonl`` (or ``evals.jsonl``) the record of the updates up to the checkpoint:
    drop lines past it (written by a chunk whose checkpoint never landed), lines cut short, and
    repeated (seed, update) lines, keeping the first of each (two writers at once, before locks
    existed, left e.g. updates 1..8, 7, 8, 9..30; the rows of a deterministic run are equal, and
    keeping the first leaves every kept line where it was). Returns the last update kept (0 if
    none); the file is rewritten atomically, and only when something is dropped."""
    if not os.path.exists(path):
        return 0
    with open(path) as fh:
        lines = fh.readlines()
    keep, seen = [], set()
    for ln in lines:
        key = _line_key(ln)
        if key is None or key[1] > up_to_update or key in seen:
            continue
        seen.add(key)
        keep.append(ln if ln.endswith("\n") else ln + "\n")
    if keep != lines:
        atomic_write(path, lambda fh: fh.writelines(keep))
    return int(max((k[1] for k in seen), default=0))


def new_run_dir(cfg: Config) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", describe(agent_id(cfg))["method"].lower()).strip("-")
    base = os.path.join(cfg.train.run_dir, f"{stamp}-{slug}")
    os.makedirs(cfg.train.run_dir, exist_ok=True)
    path, i = base, 1
    while True:
        try:
            os.mkdir(path)  # atomic: two runs started in the same second get two directories
            return path
        except FileExistsError:
            path, i = f"{base}-{i}", i + 1


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
        log=print, evaluate_at_end: bool = True, tensorboard: bool = False) -> dict:
    """Train (or resume) and evaluate; returns the results dict also written to results.json.
    Several processes (``purerec.run.distributed``) call it alike; process 0 reads and writes.

    Process 0 holds the run directory's lock (``purerec.core.runlock``) from before its first check to
    the end: a second run or resume of the same directory is refused naming this one's PID. A new
    run's directory is created (atomically) under the lock, and removed again if the run stops
    before writing anything into it. ``--resume`` of a finished run (``results.json`` there)
    re-runs nothing and returns its results unchanged. Signals (``purerec.core.interrupts``) stop the
    run at its next safe point; the ``Interrupted`` error carries the run directory to resume."""
    main = dist.is_main()
    if resume and not run_dir:
        raise RunDirError("--resume: name the run directory to continue")
    if resume and os.path.isdir(os.path.join(run_dir, "tensorboard")):
        tensorboard = True  # a resumed run keeps logging where it did
    if tensorboard:
        from purerec.report.tensorboard import require

        require()  # a missing extra fails before anything is written
    if not main:
        log, progress = (lambda *a, **k: None), False
    held = []

    def take_lock() -> str:
        if resume:
            lock = DirLock(run_dir, "--resume", create=False, log=log)
        elif run_dir:
            lock = DirLock(run_dir, "--out", create=True, log=log)
        else:
            lock = DirLock(new_run_dir(cfg), "--out", made=True, log=log)
        held.append(lock.acquire())
        return lock.path

    with interrupts.deferred():  # a lock is taken whole (or not at all)
        run_dir = dist.agree(take_lock)
    try:
        interrupts.check()
        cfg, done = _open_run_dir(cfg, run_dir, resume, log)
        if done is not None:
            return done
        cfg, train_w, test_w = _worlds(cfg, resume, main, log)
        interrupts.check()
        with interrupts.deferred():
            if not resume:
                def new_dir():
                    write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(cfg))
                    return run_dir
                dist.agree(new_dir)
            checkpointer = _checkpointer()
            ckpt_dir = os.path.abspath(os.path.join(run_dir, "checkpoints"))
            try:
                res = _train_and_evaluate(cfg, run_dir, resume, progress, log, evaluate_at_end, tensorboard, main,
                                          train_w, test_w, checkpointer)
            except BaseException:
                try:  # the last good checkpoint is on disk, whatever happened
                    checkpointer.wait_until_finished()
                except Exception:  # the error under way is the one to report
                    pass
                raise
            checkpoint_io(checkpointer.wait_until_finished, ckpt_dir)
            return res
    except Interrupted as e:
        e.run_dir = run_dir if os.path.exists(os.path.join(run_dir, "config.json")) else None
        raise
    finally:
        with interrupts.deferred():
            for lock in held:
                lock.release()


def _open_run_dir(cfg: Config, run_dir: str, resume: bool, log) -> tuple[Config, dict | None]:
    """Stage "run directory": a resumed run's own config (and its results when it is finished:
    nothing to resume), or a new directory checked empty."""
    if not resume:
        dist.agree(lambda: check_new_run_dir(run_dir))
        return cfg, None
    cfg = _apply(Config(), dist.agree(lambda: dataclasses.asdict(load_run_config(run_dir))), "").validate()
    done = dist.agree(lambda: finished_results(run_dir))
    if done is not None:
        log(f"{run_dir} is finished ({done.get('updates')} updates, results.json): nothing to resume; "
            f"its results are left as they were")
    return cfg, done


def _worlds(cfg: Config, resume: bool, main: bool, log) -> tuple[Config, Any, Any]:
    """Stage "worlds": the (cached) train and test worlds, what only they can tell (the slate fits),
    the memory estimate before anything is compiled, and the session shards resolved for a new run."""
    n_dev = check_session_shards(cfg)
    train_w, test_w = get_worlds(world_sections(cfg), verbose=main)
    check_loaded_worlds(cfg, train_w, test_w)
    check_run(view(cfg, MEMORY_SECTIONS), train_w, test_w, spec_of(agent_id(cfg)).sections)
    if not resume:
        # 0 = DEFAULT_SESSION_SHARDS for agents that split their sessions (every device over several
        # processes), one shard for the others: never the machine's device count.
        most = (n_dev if dist.multi() else DEFAULT_SESSION_SHARDS) if spec_of(agent_id(cfg)).session_shards else 1
        cfg = resolve_session_shards(cfg, most)
    check_process_shards(cfg, n_dev, log)
    if n_dev < cfg.train.session_shards:
        hint = (f"; PUREREC_HOST_DEVICES={cfg.train.session_shards} (or XLA_FLAGS={FLAG}="
                f"{cfg.train.session_shards}) gives one CPU device per shard, and the very same numbers"
                if jax.default_backend() == "cpu" else "")
        log(f"train.session_shards = {cfg.train.session_shards} on {n_dev} device(s): the shards run vmapped on "
            f"one device (the same shards, random streams and sums; equal to one device per shard up to float "
            f"rounding){hint}")
    return cfg, train_w, test_w


def finished_results(run_dir: str) -> dict | None:
    """A finished run's ``results.json`` (None when there is none, or it cannot be read)."""
    path = os.path.join(run_dir, "results.json")
    try:
        with open(path) as fh:
            res = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return res if isinstance(res, dict) and "updates" in res else None


@dataclass
class _Run:
    """What the stages of one run hand each other (this process's view; ``run``'s work once the
    directory is locked and checked and the worlds are built)."""

    cfg: Config
    run_dir: str
    main: bool
    log: Callable
    progress: bool
    checkpointer: Any
    seeds: list
    timings: dict
    fns: Any = None
    p_train: Any = None
    p_test: Any = None
    k_stage1: Any = None
    k_init: Any = None
    stage1_v: Any = None
    init_v: Any = None
    chunk_v: Any = None
    replicated: Any = None
    runner_sharding: Any = None
    frozen: Any = None
    runner: Any = None
    init_c: Any = None  # the compiled init (a fresh run's; a resumed run compiles it for the untrained row)
    done_updates: int = 0
    written: tuple = (0, 0)  # the last update in metrics.jsonl / evals.jsonl: nothing is appended twice
    tb: Any = None
    episodes: dict = field(default_factory=dict)
    recompiles: int = 0

    @property
    def ckpt_dir(self) -> str:
        return os.path.abspath(os.path.join(self.run_dir, "checkpoints"))

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.run_dir, "metrics.jsonl")

    @property
    def evals_path(self) -> str:
        return os.path.join(self.run_dir, "evals.jsonl")

    def timed_compile(self, fn, *args):
        t0 = time.perf_counter()
        compiled = fn.lower(*args).compile()
        self.timings["compile_s"] += time.perf_counter() - t0
        return compiled

    def save_checkpoint(self, updates: int) -> None:
        """Host copies (gathered from every process): Orbax then writes plain arrays in the background."""
        t0 = time.perf_counter()
        host = dist.host_copy({"frozen": self.frozen, "runner": self.runner})
        if self.main:
            path = os.path.join(self.ckpt_dir, str(updates))
            checkpoint_io(self.checkpointer.wait_until_finished, self.ckpt_dir)
            checkpoint_io(lambda: self.checkpointer.save(path, host), path)
        self.timings["checkpoint_s"] += time.perf_counter() - t0

    def evaluate(self, untrained: bool = False) -> dict | None:
        """The test-world evaluation on one device (process 0's; None on the other processes);
        ``untrained`` adds the same agent with learning rates 0 (its runner as initialised)."""
        t0 = time.perf_counter()
        r0 = None
        if untrained:
            compiled = self.init_c if self.init_c is not None else self.timed_compile(self.init_v, self.k_init,
                                                                                         self.frozen)
            r0 = compiled(self.k_init, self.frozen)
        if dist.multi():
            fz, rn, r0 = dist.host_copy((self.frozen, self.runner, r0))
            if not self.main:
                return None
        else:
            fz, rn, r0 = jax.device_put((self.frozen, self.runner, r0), jax.devices()[0])
        out = evaluate_run(self.cfg, self.fns.agent, fz, rn, self.p_train, self.p_test, self.metrics_path, runner0=r0)
        self.timings["eval_s"] += time.perf_counter() - t0
        return out


def _train_and_evaluate(cfg: Config, run_dir: str, resume: bool, progress: bool, log, evaluate_at_end: bool,
                        tensorboard: bool, main: bool, train_w, test_w, checkpointer) -> dict:
    """``run``'s work once the directory is locked and checked and the worlds are built, as named
    stages: the agent's programs, its start (Stage I and init, or the last checkpoint), training in
    chunks, the evaluation, the record. Signals are deferred to its safe points
    (``interrupts.check()``)."""
    t_all = time.perf_counter()
    r = _Run(cfg=cfg, run_dir=run_dir, main=main, log=log, progress=progress, checkpointer=checkpointer,
             seeds=list(cfg.train.seeds), timings={"compile_s": 0.0, "run_s": 0.0, "stage1_s": 0.0, "checkpoint_s": 0.0, "eval_s": 0.0})
    _agent_programs(r, train_w, test_w)
    _start(r, resume)
    _train(r, tensorboard)
    timings = dict(r.timings)  # the record's timings: the final evaluation's own compiles are not training's
    final = r.evaluate(untrained=True) if evaluate_at_end else None
    interrupts.check()  # the evaluation is done; results.json is written whole or not at all
    return dist.agree(lambda: _record(r, final, timings, t_all))


def _agent_programs(r: _Run, train_w, test_w) -> None:
    """Stage "agent": the env params of the train world and of the evaluation world (the test world,
    or the validation users on its items: eval.split), the agent's pure pieces and their batched,
    sharded programs (compiled where they are first run)."""
    cfg = r.cfg
    r.p_train = make_params(train_w, env_sections(cfg))
    r.p_test = make_params(eval_world(view(cfg, EVAL_WORLD_SECTIONS), train_w, test_w), env_sections(cfg))
    shards = cfg.train.session_shards
    r.fns = make_train(cfg, r.p_train, axis_name=SESSIONS if shards > 1 else None)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in r.seeds])
    r.k_stage1 = jax.vmap(stage1_key)(keys)
    r.k_init = jax.vmap(init_key)(keys)
    over_seeds = seed_batcher(cfg.train.seed_batching)
    r.stage1_v = jax.jit(over_seeds(r.fns.stage1))
    r.init_v, r.chunk_v, r.replicated, r.runner_sharding = _stage2_programs(r.fns, over_seeds, shards,
                                                                            jax.device_count())
    if dist.multi():
        r.k_init = np.asarray(r.k_init)  # host values, the same on every process


def _start(r: _Run, resume: bool) -> None:
    """Stage "start": a resumed run's last intact checkpoint, else Stage I and the agent's init (and
    checkpoint 0)."""
    state, done = None, None
    if resume:
        done, state = _restore(r)
        if done is None:
            r.log(f"no intact checkpoint in {r.ckpt_dir}: starting {r.run_dir} over from Stage I")
    if done is None:
        _stage1_and_init(r)
    else:
        r.frozen, r.runner, r.done_updates = state["frozen"], state["runner"], done
        if r.main:
            r.written = _truncate_metrics(r.metrics_path, done), _truncate_metrics(r.evals_path, done)
        r.log(f"resumed {r.run_dir} after update {done}")


def _restore(r: _Run):
    """(updates, {"frozen", "runner"}) of the last intact checkpoint, placed as the programs expect;
    (None, None) when there is none."""
    frozen_abs, _ = jax.eval_shape(r.stage1_v, r.k_stage1)
    runner_abs = jax.eval_shape(r.init_v, r.k_init, frozen_abs)
    placed = lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
    if dist.multi():
        done, state = _restore_on_main(r.checkpointer, r.ckpt_dir, {"frozen": frozen_abs, "runner": runner_abs},
                                       r.cfg, r.log)
        if state is not None and r.replicated is not None:
            state = {"frozen": dist.place(state["frozen"], r.replicated),
                     "runner": dist.place(state["runner"], r.runner_sharding(runner_abs))}
        return done, state
    if r.replicated is not None:
        frozen_abs = jax.tree.map(lambda a: placed(a, r.replicated), frozen_abs)
        runner_abs = jax.tree.map(placed, runner_abs, r.runner_sharding(runner_abs))
    return restore_checkpoint(r.checkpointer, r.ckpt_dir, {"frozen": frozen_abs, "runner": runner_abs}, r.cfg, r.log)


def _stage1_and_init(r: _Run) -> None:
    """Stage I (process 0's; the others receive its products), the agent's init, ``stage1.json`` and
    checkpoint 0."""
    t0 = time.perf_counter()
    if r.main:
        stage1_c = r.timed_compile(r.stage1_v, r.k_stage1)
        t0 = time.perf_counter()
        frozen, curves = jax.block_until_ready(stage1_c(r.k_stage1))
    else:
        frozen = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(r.stage1_v, r.k_stage1)[0])
    if dist.multi():
        frozen = dist.broadcast(frozen)
    if r.replicated is not None:
        frozen = dist.place(frozen, r.replicated)
    r.frozen = frozen
    r.timings["stage1_s"] = time.perf_counter() - t0
    compiled_before = r.timings["compile_s"]
    r.init_c = r.timed_compile(r.init_v, r.k_init, frozen)
    dist.barrier("init")
    r.runner = jax.block_until_ready(r.init_c(r.k_init, frozen))
    r.timings["run_s"] += time.perf_counter() - t0 - (r.timings["compile_s"] - compiled_before)
    if r.main:
        stage1_log = {seed: {k: {"first": float(v[i, 0]), "last": float(v[i, -1])} for k, v in curves.items()}
                      for i, seed in enumerate(r.seeds)}
        write_json(os.path.join(r.run_dir, "stage1.json"), stage1_log)
        r.log("stage I: " + ", ".join(f"{k.replace('_', ' ')} {np.mean(v[:, 0]):.4f} -> {np.mean(v[:, -1]):.4f}"
                                      for k, v in curves.items()))
        r.written = _truncate_metrics(r.metrics_path, 0), _truncate_metrics(r.evals_path, 0)
    r.done_updates = 0
    r.save_checkpoint(0)


def _train(r: _Run, tensorboard: bool) -> None:
    """Stage "train": the remaining chunks of ``train.chunk_updates`` updates until
    ``train.total_updates`` or the episode cap, each appended to metrics.jsonl and checkpointed
    (every ``train.eval_every_chunks`` chunks also evaluated into evals.jsonl)."""
    cfg, seeds = r.cfg, r.seeds
    if tensorboard and r.main:
        from purerec.report.tensorboard import TensorBoardLog

        # Events rebuilt from the (truncated) metrics.jsonl / evals.jsonl: empty for a fresh run.
        r.tb = TensorBoardLog.from_run_dir(r.run_dir, seeds, results=False)
    tb = r.tb
    n_chunks = cfg.train.total_updates // cfg.train.chunk_updates
    first_chunk = r.done_updates // cfg.train.chunk_updates
    chunk_c = r.timed_compile(r.chunk_v, r.runner, r.frozen)
    r.log(f"compiled in {r.timings['compile_s']:.1f}s ({len(seeds)} seeds in one program, "
          f"{describe(agent_id(cfg))['method']})")
    counter = _counter()
    counter.count, counter.active = 0, True
    bar = _progress(n_chunks * cfg.train.chunk_updates, r.done_updates, r.progress)
    target = cfg.train.target_episodes
    # Read once (a resumed run's earlier chunks), then tallied.
    r.episodes = {int(k): v for k, v in dist.agree(
        lambda: {str(k): v for k, v in _episodes(r.metrics_path, seeds).items()}).items()}
    every = cfg.train.eval_every_chunks
    try:
        for c in range(first_chunk, n_chunks):
            interrupts.check()  # a safe point: the previous chunk and its checkpoint are handed over
            dist.barrier("chunk")  # the processes may have drifted apart (compiling, writing, evaluating)
            t0 = time.perf_counter()
            new_runner, logs = jax.block_until_ready(chunk_c(r.runner, r.frozen))
            r.timings["run_s"] += time.perf_counter() - t0
            logs = dist.host_copy(logs)
            chunk_eps = {seed: float(np.sum(logs["episodes"][i])) for i, seed in enumerate(seeds)}
            if target and r.done_updates and any(r.episodes[s] + chunk_eps[s] > target for s in seeds):
                # The episode cap: this chunk would take a seed past it, so it is dropped (nothing of it
                # is written) and the run ends on the previous chunk's state.
                r.log(f"the next chunk would take a seed past {target} training episodes: stopping after update "
                      f"{r.done_updates}")
                break
            _check_finite(logs, c * cfg.train.chunk_updates, seeds)
            r.runner = new_runner
            if r.main:
                rows = _append_metrics(r.metrics_path, logs, c * cfg.train.chunk_updates, seeds, after=r.written[0])
                r.written = (max([r.written[0], *(row["update"] for row in rows)]), r.written[1])
                if tb:
                    tb.scalars(rows)
            for seed in seeds:
                r.episodes[seed] += chunk_eps[seed]
            r.done_updates = (c + 1) * cfg.train.chunk_updates
            r.save_checkpoint(r.done_updates)
            if every and (c + 1) % every == 0:
                counter.active = False  # the evaluation's own compilation is not a chunk recompile
                evaluation = r.evaluate()
                counter.active = True
                if r.main and r.done_updates > r.written[1]:
                    try:
                        with open(r.evals_path, "a") as fh:
                            fh.write(json.dumps({"update": r.done_updates, **evaluation}, sort_keys=True) + "\n")
                    except OSError as e:
                        raise write_error(r.evals_path, e) from None
                    r.written = (r.written[0], r.done_updates)
                    if tb:
                        tb.evaluation(r.done_updates, evaluation)
            if tb:
                tb.flush()
            bar.update(cfg.train.chunk_updates)
            bar.set_postfix(Len=f"{np.mean(logs['Len'][:, -1]):.2f}", AD=f"{np.mean(logs['AD'][:, -1]):.3f}",
                            R_cum=f"{np.mean(logs['R_cum'][:, -1]):.2f}")
        interrupts.check()
        t0 = time.perf_counter()
        checkpoint_io(r.checkpointer.wait_until_finished, r.ckpt_dir)  # before the evaluation: every checkpoint on disk
        r.timings["checkpoint_s"] += time.perf_counter() - t0
    finally:
        counter.active = False
        bar.close()
    r.recompiles = counter.count


def _record(r: _Run, final: dict | None, timings: dict, t_all: float) -> dict:
    """Stage "record" (process 0's): results.json (written whole), the run's curves.png and the
    TensorBoard events' last evaluation."""
    cfg = r.cfg
    results = {"run_dir": r.run_dir, "agent": cfg.agent.kind, **describe(agent_id(cfg)), "seeds": r.seeds,
               "recompiles_in_loop": r.recompiles, "updates": r.done_updates,
               "session_shards": cfg.train.session_shards, "timings": timings, "episodes": r.episodes}
    if final is not None:
        results.update(final)
        results["timings"]["eval_s"] = r.timings["eval_s"]
    from purerec.report.tables import plot_run_curves

    results["curves_png"] = plot_run_curves(r.run_dir)
    if r.tb:
        r.tb.evaluation(r.done_updates, final, figures={"curves": results["curves_png"]})
        r.tb.close()
    results["timings"]["total_s"] = time.perf_counter() - t_all
    if dist.multi():
        results["processes"] = jax.process_count()
    write_json(os.path.join(r.run_dir, "results.json"), results)
    return results


def check_loaded_worlds(cfg: Config, train_w, test_w) -> None:
    """What only the loaded worlds can tell (real data sets their sizes): the slate fits in each."""
    n = min(train_w.n_items, test_w.n_items)
    if cfg.env.slate_size > n:
        from purerec.core.errors import ConfigError

        raise ConfigError("env.slate_size", cfg.env.slate_size,
                          f"at most {n}: the loaded {'train' if train_w.n_items == n else 'test'} world has only "
                          f"{n} items")


def check_session_shards(cfg: Config) -> int:
    """The device count (of every process). One process runs any shard count (more shards than
    devices run vmapped on one device); over several processes the shards are the devices, so
    ``train.session_shards`` must not exceed them."""
    n_dev = jax.device_count()
    if dist.multi() and cfg.train.session_shards > n_dev:
        from purerec.core.errors import ConfigError

        raise ConfigError("train.session_shards", cfg.train.session_shards,
                          f"at most the {n_dev} device(s) of the {jax.process_count()} processes: lower it (0 = every "
                          f"device; a resumed run keeps its value)")
    return n_dev


def check_process_shards(cfg: Config, n_dev: int, log=print) -> None:
    """Several processes: a run's shards are every device of every process, or (agents that do not
    split their sessions) one, and then every process computes the whole run alike."""
    if not dist.multi():
        return
    s = cfg.train.session_shards
    if s == 1:
        log(f"distributed: {describe(agent_id(cfg))['method']} runs on one device: every process computes the whole run and "
            f"process 0 writes it")
    elif s != n_dev:
        from purerec.core.errors import ConfigError

        raise ConfigError("train.session_shards", s,
                          f"{n_dev} (every device of the {jax.process_count()} processes) or 0 when several "
                          f"processes share a run: choose train.num_envs and the minibatch count so that {n_dev} "
                          f"shards split the batch evenly")


class _NoCheckpointer:
    """What processes other than 0 hold instead of a checkpointer: they write nothing."""

    def save(self, *a, **k):
        pass

    def wait_until_finished(self):
        pass


_TS_ERRNO = re.compile(r"os_error_code='?(\d+)")
_TS_FILE = re.compile(r'(?:Failed writing|Error opening|Failed to open|file): "([^"]+)"')


def fs_error(e: BaseException) -> tuple[str | None, OSError] | None:
    """(file, OS error) behind ``e``: an ``OSError`` in its chain, or TensorStore's message (what
    Orbax's writer threads raise, as ``ValueError``: 'Failed writing: "FILE" ... [os_error_code=28]')."""
    seen, x = 0, e
    while x is not None and seen < 10:
        if isinstance(x, OSError) and not isinstance(x, PurerecError):
            return x.filename, x
        m = _TS_ERRNO.search(str(x))
        if m:
            code = int(m.group(1))
            f = _TS_FILE.search(str(x))
            return (f.group(1) if f else None), OSError(code, os.strerror(code))
        x, seen = x.__cause__ or x.__context__, seen + 1
    return None


def checkpoint_io(fn, path: str):
    """``fn()`` (an Orbax save or wait); a file-system error, also one raised in Orbax's background
    threads, becomes the one-line ``WriteError`` naming the file (or else the checkpoint's path)."""
    try:
        return fn()
    except Exception as e:
        found = fs_error(e)
        if found is None:
            raise
        raise write_error(found[0] or path, found[1]) from None


def _checkpointer():
    """Orbax's checkpointer; with several processes, process 0's alone (Orbax's barriers then span
    process 0 only) and none on the others."""
    if not dist.multi():
        return ocp.StandardCheckpointer()
    if not dist.is_main():
        return _NoCheckpointer()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))


def _restore_on_main(checkpointer, ckpt_dir: str, target, cfg: Config, log):
    """``restore_checkpoint`` on process 0 (into its first device), its outcome and arrays handed to
    every process as host copies."""
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local), target)
    held = {}

    def on_main():
        step, state = restore_checkpoint(checkpointer, ckpt_dir, target, cfg, log)
        held["state"] = state
        return step

    step = dist.agree(on_main)
    if step is None:
        return None, None
    state = held.get("state") or jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), target)
    return step, dist.broadcast(state)


def _stage2_programs(fns, over_seeds, shards: int, n_devices: int | None = None):
    """Jitted (init, chunk) over the seeds, split over the session shards when there are several;
    then the replicated sharding (for the frozen Stage-I products) and a function giving a
    runner's shardings as ``runner_specs`` says (both None when the shards share one device).

    With at least ``shards`` devices (``n_devices``, default all), the shards are a ``shard_map``
    over the first ``shards`` of them; with fewer (one GPU; a CPU with fewer host devices), they are
    a ``vmap`` with the same axis name on one device (``_vmapped_shards``): the same shards, random
    streams and cross-shard sums, the same numbers up to float rounding (XLA's batched kernels sum
    in another order; on a CPU, ``purerec.core.hostdevices`` gives one device per default shard)."""
    if shards == 1:
        return jax.jit(over_seeds(fns.init)), jax.jit(over_seeds(fns.chunk)), None, None
    specs = fns.state_specs()
    if (jax.device_count() if n_devices is None else n_devices) < shards:
        vm = lambda f, i, o: jax.jit(_vmapped_shards(over_seeds(f), shards, i, o))
        return vm(fns.init, (P(), P()), specs), vm(fns.chunk, (specs, P()), (specs, P())), None, None
    mesh = Mesh(np.array(jax.devices()[:shards]), (SESSIONS,))
    smap = lambda f, i, o: jax.jit(jax.shard_map(over_seeds(f), mesh=mesh, in_specs=i, out_specs=o, check_vma=False))
    init_v = smap(fns.init, (P(), P()), specs)
    chunk_v = smap(fns.chunk, (specs, P()), (specs, P()))

    def runner_sharding(runner):
        return jax.tree.map(lambda spec, sub: jax.tree.map(lambda _: NamedSharding(mesh, spec), sub),
                            specs, runner, is_leaf=lambda x: isinstance(x, P))

    return init_v, chunk_v, NamedSharding(mesh, P()), runner_sharding


def _vmapped_shards(fn, shards: int, in_specs, out_specs):
    """``shard_map(fn, in_specs, out_specs)`` over ``shards`` shards on one device: a ``vmap``
    named ``SESSIONS`` (``lax.psum`` / ``axis_index`` inside see the same axis). Arrays keep the
    global shapes of the ``shard_map``: a leaf split along its dimension d (``P(..., SESSIONS)``)
    is cut into ``shards`` contiguous blocks there; a replicated one (``P()``) is given to every
    shard and shard 0's copy is returned (they are identical: the shards sum what they share)."""
    is_spec = lambda x: isinstance(x, P)

    def dim(spec: P) -> int | None:
        return list(spec).index(SESSIONS) if SESSIONS in tuple(spec) else None

    def split(spec, sub):
        d = dim(spec)
        cut = lambda a: jnp.moveaxis(a.reshape(a.shape[:d] + (shards, a.shape[d] // shards) + a.shape[d + 1:]), d, 0)
        return sub if d is None else jax.tree.map(cut, sub)

    def merge(spec, sub):
        d = dim(spec)
        glue = lambda a: (a[0] if d is None else
                          jnp.moveaxis(a, 0, d).reshape(a.shape[1:d + 1] + (shards * a.shape[d + 1],) + a.shape[d + 2:]))
        return jax.tree.map(glue, sub)

    def mapped(*args):
        args = tuple(jax.tree.map(split, i, a, is_leaf=is_spec) for i, a in zip(in_specs, args))
        axes = tuple(jax.tree.map(lambda s: None if dim(s) is None else 0, i, is_leaf=is_spec) for i in in_specs)
        out = jax.vmap(fn, in_axes=axes, out_axes=0, axis_name=SESSIONS, axis_size=shards)(*args)
        return jax.tree.map(merge, out_specs, out, is_leaf=is_spec)

    return mapped


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


def evaluate_run(cfg: Config, agent, frozen, runner, p_train, p_test, metrics_path: str, runner0=None) -> dict:
    """Every seed under the test protocol with both action rules (+ fidelity) and the train_report
    protocol; ``mean`` / ``std`` / ``per_seed`` are the protocol and action rule the config names.

    The two action rules' programs and the fidelity probe's two (train- and test-world shapes)
    are independent, so they compile and run side by side in threads, each action rule on its
    own device when there are several (``purerec.core.hostdevices``: one CPU device per core): XLA
    compiles with the GIL released, and each program is the one-device program it always was, so
    the numbers are unchanged. Compilations are counted per seed (the first seed's include
    every compile; later seeds must compile nothing).

    ``runner0`` (the runner as initialised, before any update) adds ``untrained``: the test
    protocol under ``eval.action`` for the same agent with learning rates 0 (Adam at rate 0 moves
    no parameter, so the frozen twin's policy is its initial one: tested), through the same
    compiled program, and ``gain``: trained minus untrained per seed (Len, R_cum, AD)."""
    seeds = list(cfg.train.seeds)
    n = n_test_sessions(cfg.eval, p_test)
    observer = make_observer(view(cfg, STATE_SECTIONS + AGENT_ID_SECTIONS))
    devices = jax.local_devices()
    lane = {rule: devices[i % len(devices)] for i, rule in enumerate(EVAL_ACTIONS)}
    on_lane = {rule: jax.device_put(p_test, lane[rule]) for rule in EVAL_ACTIONS}
    counter = _counter()
    was_active, count0 = counter.active, counter.count
    compiles = [0] * len(seeds)  # XLA compilations per seed: the agent's evaluation compiles once per run
    per_rule: dict[str, dict] = {rule: {} for rule in EVAL_ACTIONS}

    def rule_row(rule: str, pp) -> dict:
        pp, carry = jax.device_put((agent.for_world(pp, p_test), agent.init_carry(n)), lane[rule])
        return test_protocol(getattr(agent.act, rule), on_lane[rule], cfg.eval, pp, carry)

    with ThreadPoolExecutor(max_workers=len(EVAL_ACTIONS) + 2) as pool:
        for i, seed in enumerate(seeds):
            interrupts.check()  # a safe point between evaluations
            counter.active, before = True, counter.count
            take = lambda t: jax.tree.map(lambda x: np.asarray(x)[i], t)  # host slicing: no per-seed program
            fz = take(frozen)
            pp = agent.policy_params(fz, take(runner))
            rows = {rule: pool.submit(rule_row, rule, pp) for rule in EVAL_ACTIONS}
            if runner0 is not None:
                rows["untrained"] = pool.submit(rule_row, cfg.eval.action, agent.policy_params(fz, take(runner0)))
            fid = fidelity(observer, fz, jax.random.PRNGKey(cfg.eval.seed + 1000), p_train, p_test, pool=pool)
            for rule in rows:
                per_rule.setdefault(rule, {})[str(seed)] = rows[rule].result()
            per_rule["greedy"][str(seed)].update(fid)
            compiles[i] += counter.count - before
    counter.active, counter.count = was_active, count0
    test = {rule: seed_summary(per_rule[rule]) for rule in EVAL_ACTIONS}
    curves = read_curves(metrics_path, seeds)
    report = seed_summary({str(s): train_report(curves[int(s)], cfg.eval.report_updates) for s in seeds})
    chosen = test[cfg.eval.action] if cfg.eval.protocol == "test" else report
    extra = {}
    if runner0 is not None:
        trained = per_rule[cfg.eval.action]
        gain = {s: {k: trained[s][k] - per_rule["untrained"][s][k] for k in ("Len", "R_cum", "AD")} for s in trained}
        extra = {"untrained": seed_summary(per_rule["untrained"]),
                 "gain": {k: {"mean": float(np.mean([g[k] for g in gain.values()])),
                              "min": float(np.min([g[k] for g in gain.values()])),
                              "max": float(np.max([g[k] for g in gain.values()]))} for k in ("Len", "R_cum", "AD")},
                 "gain_per_seed": gain}
    return {"protocol": cfg.eval.protocol, "action": cfg.eval.action if cfg.eval.protocol == "test" else "sample",
            "n_sessions": n, "repeats": cfg.eval.repeats, "ad_form": cfg.eval.ad_form, "split": cfg.eval.split,
            "test": test, "train_report": report, "eval_compiles_per_seed": compiles, **extra, **chosen}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="updates", unit="upd")
