"""``train.py claims``: test the paper's claims in purerec and write ``claims.md`` (``purerec.report.claims``).

The claims read six sweeps (each a directory of run records under ``DIR``, so a killed command
continues where it stopped and finished runs are reused), Stage I's checks (the fidelity probe and
Stage I's feedback predictor as a fixed policy on ŝ and on s~; one JSON per world, DSRM target and
seed under ``DIR/stage1``) and the world cards (Observation 1):

==============  ================================================  ==============================
part            what                                              claims
==============  ================================================  ==============================
table2          ``sweeps/table2.toml`` (every agent, both blocks   3, 4, 6, 7, 9
                of heads, frozen twins)
ablation        HRL + T-CE / R-CE / BOD (``state.purifier``) with  4
                HRL's tuned hyperparameters, Table 2's heads
diffusion_steps DSRM-HRL at K in 5..500 (``sweeps/diffusion_steps``) 5
seeds           DSRM-HRL, 16 seeds (``sweeps/seeds.toml``'s)       6
pareto          DSRM-HRL at lambda 0, 0.1, 1                       7
dose_response   ``sweeps/dose_response.toml``                      8
==============  ================================================  ==============================

Every part applies the tuned hyperparameters (``sweeps/tuned``) and Table 2's episode cap. With
``--budget`` < 1 the command is a **quick look**: the budget scales every run (as ``train.py sweep
--budget``) and the plan shrinks to fit about 40 minutes on 2 cores (``QUICK``: the KuaiRec-like
world only, Table 2's native block and its grouped head with the learned tail, the denoisers under
that grouped head only, K in 5 / 10 / 20 / 50 / 500, conformity 0 / 0.8 / 0.95 without the noise grid); the report marks every
verdict as a quick look. Runs of the same config in two parts (e.g. DSRM-HRL at K = 20 in Table 2
and in the K sweep) run once: each part reuses the records of the parts before it.

At the full budget each part also reuses the finished runs of the same configs in
``runs/sweeps/<name>`` (what ``train.py sweep sweeps/<name>.toml`` writes), and ``--reuse`` adds
more directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import time

from purerec.config import load_config, view
from purerec.core import interrupts
from purerec.core.errors import ConfigError
from purerec.run.experiment import write_json
from purerec.run.sweep import expand, load_sweep, run_sweep, scale_budget, SweepSpec

CLAIMS = tuple(range(1, 10))
PARTS = ("table2", "ablation", "diffusion_steps", "seeds", "pareto", "dose_response")
NEEDS = {1: (), 2: (), 3: ("table2",), 4: ("table2", "ablation"), 5: ("diffusion_steps",),
         6: ("seeds", "table2"), 7: ("pareto", "table2"), 8: ("dose_response",), 9: ("table2",)}
ENVS = ("envs/kuairec.toml", "envs/kuairand.toml")
WORLD_SEEDS = (0, 1, 2)  # Observation 1's interval: one world card per world seed
FIDELITY_TARGETS = ("paper", "unbiased")
QUICK = {"envs": ENVS[:1], "table2_heads": ("native", "learned"), "conformity": (0.0, 0.8, 0.95), "noise": False,
         "K": (5, 10, 20, 50, 500)}


def _spec(name: str, path: str | None = None, **kw) -> SweepSpec:
    if path:
        s = load_sweep(path)
        return dataclasses.replace(s, **kw)
    base = dict(name=name, envs=ENVS, seeds=(11, 15, 19), base={"train.total_updates": 60}, grid={},
                tuned="sweeps/tuned")
    return SweepSpec(**{**base, **kw})


def parts(quick: bool, envs: tuple[str, ...] | None = None, agents: tuple[str, ...] = (),
          overrides: dict | None = None) -> dict[str, SweepSpec]:
    """The sweeps the claims read, as specs (``quick``: the reduced plan). ``envs`` replaces every
    part's worlds, ``agents`` keeps only those agents in the grids (a smaller check), ``overrides``
    are added to every run (e.g. a tiny world for a test)."""
    table2 = load_sweep(os.path.join("sweeps", "table2.toml"))
    heads = []
    for g in table2.grids:
        if quick and g.get("slate.head") == ["grouped"]:
            g = {**g, "slate.tail": ["learned"]}
        elif quick and g.get("slate.head") == ["native"] and "native" not in QUICK["table2_heads"]:
            continue
        heads.append(g)
    # Table 2's heads for the denoisers: every block table2 has (head and tail lists).
    blocks = [{k: v for k, v in g.items() if k != "agent.kind"} for g in heads
              if not quick or g.get("slate.head") != ["native"]]  # quick: the grouped head alone
    ablation = [{"agent.kind": ["hrl"], "state.purifier": ["tce", "rce", "bod"], **b} for b in blocks]
    seeds = load_sweep(os.path.join("sweeps", "seeds.toml"))
    dose = load_sweep(os.path.join("sweeps", "dose_response.toml"))
    dose_grids = dose.grids
    if quick:
        dose_grids = [{**g, "feedback.conformity": list(QUICK["conformity"])} for g in dose_grids
                      if "feedback.conformity" in g] + ([g for g in dose_grids if "feedback.noise_std" in g]
                                                        if QUICK["noise"] else [])
    k_spec = load_sweep(os.path.join("sweeps", "diffusion_steps.toml"))
    default_head = {"slate.head": "grouped", "slate.tail": "learned"}  # DSRM-HRL's default (auto) head, named
    out = {
        "table2": dataclasses.replace(table2, grid=heads),
        "ablation": _spec("claims-ablation", grid=ablation, frozen=False),
        "diffusion_steps": dataclasses.replace(k_spec, tuned="sweeps/tuned", base={**k_spec.base, **default_head},
                                               grid={**k_spec.grids[0], "dsrm.steps": list(QUICK["K"])} if quick
                                               else k_spec.grid),
        "seeds": dataclasses.replace(seeds, tuned="sweeps/tuned", envs=ENVS[:1],
                                     base={**seeds.base, **default_head, "agent.kind": "dsrm_hrl"}),
        "pareto": _spec("claims-pareto", envs=ENVS[:1], base={"train.total_updates": 60, **default_head},
                        grid={"agent.kind": ["dsrm_hrl"], "agent.lambda_fair": [0.0, 0.1, 1.0]}),
        "dose_response": dataclasses.replace(dose, grid=dose_grids),
    }
    for name, s in list(out.items()):
        e = tuple(envs) if envs else (QUICK["envs"] if quick else s.envs)
        grids = s.grids
        if agents:  # keep only these agents (a grid without agent.kind has the base's)
            grids = [{**g, "agent.kind": [a for a in g.get("agent.kind", [s.base.get("agent.kind")]) if a in agents]}
                     for g in grids]
            grids = [g for g in grids if g["agent.kind"]]
            if not grids:
                out.pop(name)
                continue
        out[name] = dataclasses.replace(s, envs=e, grid=grids, base={**s.base, **(overrides or {})})
    return out


def _git_commit() -> str:
    """The checkout's commit, marked when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------------------------
# Observation 1 and the fidelity probe: computed here, cached as JSON under DIR


def world_cards(envs: tuple[str, ...], overrides: dict, log=print) -> dict:
    """{preset: [Observation 1 of each world seed]} (worlds come from the cache, built on a miss)."""
    from purerec.config import world_sections
    from purerec.data.calibration import observation1
    from purerec.data.datasets import get_worlds

    out = {}
    for env in envs:
        for ws in WORLD_SEEDS:
            cfg = load_config(env, {**overrides, "world.seed": ws})
            interrupts.check()
            train, _ = get_worlds(world_sections(cfg))
            out.setdefault(cfg.world.preset, []).append(dataclasses.asdict(observation1(train)))
        log(f"  world cards: {env} ({len(WORLD_SEEDS)} world seeds)")
    return out


def stage1_checks(out_dir: str, envs: tuple[str, ...], seeds: tuple[int, ...], budget: float, overrides: dict,
                  log=print) -> dict:
    """{preset: {target: {seed: {probe figures, "policy": {"purified": row, "observed": row}}}}}: per world,
    DSRM target and seed, DSRM-HRL's Stage I (budget scaled as the sweeps'), then the fidelity probe
    (``purerec.state.fidelity``) and Stage I's feedback predictor as a fixed policy under the shared
    grouped head with the fixed long-tail share (``purerec.agents.predictor``), acting on ŝ and on s~,
    through the test protocol. One JSON per (world, target, seed) in ``out_dir/stage1``, reused."""
    import jax
    import jax.numpy as jnp

    from purerec.agents import heads, predictor
    from purerec.config import (AGENT_ID_SECTIONS, env_sections, EVAL_WORLD_SECTIONS, HEAD_SECTIONS, STATE_SECTIONS,
                                world_sections)
    from purerec.data.datasets import get_worlds
    from purerec.data.validation import eval_world
    from purerec.run.evaluation import n_test_sessions, test_protocol
    from purerec.run.loop import make_train, stage1_key
    from purerec.sim.env import make_params
    from purerec.state.fidelity import fidelity
    from purerec.state.purifier import make_observer

    d = os.path.join(out_dir, "stage1")
    os.makedirs(d, exist_ok=True)
    out: dict = {}
    for env in envs:
        for target in FIDELITY_TARGETS:
            cfg = scale_budget(load_config(env, {**overrides, "agent.kind": "dsrm_hrl", "dsrm.target": target,
                                                 "slate.head": "grouped", "slate.tail": "fixed"}), budget)
            key = hashlib.sha256(json.dumps([dataclasses.asdict(cfg.world), dataclasses.asdict(cfg.feedback),
                                             dataclasses.asdict(cfg.env), dataclasses.asdict(cfg.encoder),
                                             dataclasses.asdict(cfg.dsrm), dataclasses.asdict(cfg.eval),
                                             dataclasses.asdict(cfg.slate), cfg.train.stage1_sessions,
                                             cfg.train.stage1_behaviour], sort_keys=True,
                                            default=str).encode()).hexdigest()[:12]
            ready = None
            for seed in seeds:
                path = os.path.join(d, f"{cfg.world.preset}-{target}-{seed}-{key}.json")
                if os.path.exists(path):
                    with open(path) as fh:
                        out.setdefault(cfg.world.preset, {}).setdefault(target, {})[str(seed)] = json.load(fh)
                    continue
                interrupts.check()
                if ready is None:
                    train_w, test_w = get_worlds(world_sections(cfg))
                    p_train = make_params(train_w, env_sections(cfg))
                    p_test = make_params(eval_world(view(cfg, EVAL_WORLD_SECTIONS), train_w, test_w), env_sections(cfg))
                    observer = make_observer(view(cfg, STATE_SECTIONS + AGENT_ID_SECTIONS))
                    head = heads.resolve(view(cfg, HEAD_SECTIONS))
                    policies = {s: predictor.make_policy(observer, head, cfg.env.slate_size, cfg.slate.tail_share, s)
                                for s in predictor.STATES}
                    ready = (p_train, p_test, jax.jit(make_train(cfg, p_train).stage1), observer, policies)
                p_train, p_test, stage1, observer, policies = ready
                t0 = time.perf_counter()
                frozen, _ = stage1(stage1_key(jax.random.PRNGKey(seed)))
                res = fidelity(observer, frozen, jax.random.PRNGKey(cfg.eval.seed + 1000), p_train, p_test)
                carry = jnp.zeros((n_test_sessions(cfg.eval, p_test),))
                res["policy"] = {s: test_protocol(pol, p_test, cfg.eval, frozen, carry) for s, pol in policies.items()}
                write_json(path, res)
                out.setdefault(cfg.world.preset, {}).setdefault(target, {})[str(seed)] = res
                log(f"  Stage I {cfg.world.preset} target={target} seed {seed}: probe ŝ {res['probe_cos_purified']:.4f}"
                    f" vs s~ {res['probe_cos_observed']:.4f}; predictor R_cum on ŝ "
                    f"{res['policy']['purified']['R_cum']:.3f} vs s~ {res['policy']['observed']['R_cum']:.3f} "
                    f"({time.perf_counter() - t0:.1f}s)")
    return out


# --------------------------------------------------------------------------------------------
# the command


def run_claims(out_dir: str, budget: float = 1.0, only: tuple[int, ...] = CLAIMS, envs: tuple[str, ...] = (),
               agents: tuple[str, ...] = (), overrides: dict | None = None, reuse: tuple[str, ...] = (),
               dry_run: bool = False, command: str = "python train.py claims", log=print) -> str | None:
    """Run what the chosen claims need (resumable), then write ``out_dir/claims.md``; returns its path
    (None for a dry run)."""
    from purerec.report import claims as C
    from purerec.report.tables import load_runs

    if not 0 < budget <= 10:
        raise ConfigError("--budget", budget, "a number in (0, 10], e.g. 0.1 for the quick look")
    bad = [c for c in only if c not in CLAIMS]
    if bad or not only:
        raise ConfigError("--only", ",".join(map(str, only)), "claim numbers from 1 to 9, e.g. 1,3,5")
    quick = budget < 1.0
    overrides = dict(overrides or {})
    specs = parts(quick, envs or None, agents, overrides)
    needed = [p for p in PARTS if p in specs and any(p in NEEDS[c] for c in only)]
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    part_dirs = {p: os.path.join(out_dir, p) for p in needed}
    for p in needed:
        interrupts.check()
        s = specs[p]
        own = os.path.join("runs", "sweeps", s.name)
        pool = tuple(x for x in (*reuse, *(d for q, d in part_dirs.items() if q != p))
                     if os.path.isdir(os.path.join(x, "runs")))
        if budget == 1.0 and os.path.isdir(os.path.join(own, "runs")):
            pool = (own, *pool)
        log(f"== part {p} (claims {', '.join(str(c) for c in only if p in NEEDS[c])})")
        run_sweep(s, part_dirs[p], budget=budget, dry_run=dry_run, reuse=pool, log=log)
    first_envs = tuple(envs) if envs else (QUICK["envs"] if quick else ENVS)
    if dry_run:
        log(f"== then: world cards (claim 1) for {', '.join(first_envs)} x world seeds {list(WORLD_SEEDS)}; "
            f"Stage I, its fidelity probe and its predictor as a fixed policy on ŝ and s~ (claim 2) for targets "
            f"{list(FIDELITY_TARGETS)} x seeds 11/15/19")
        return None
    cards = world_cards(first_envs, overrides, log) if 1 in only else {}
    checks = stage1_checks(out_dir, first_envs, (11, 15, 19), budget, overrides, log) if 2 in only else {}
    # The records of this plan only (a part's directory may hold other plans' runs, e.g. a fuller K grid).
    planned = {p: {r.run_id for r in expand(specs[p], budget)} for p in part_dirs}
    runs = {p: ([r for r in load_runs(part_dirs[p])[0] if r.run_id in planned[p]] if p in part_dirs else [])
            for p in PARTS}
    figs = out_dir
    made = {1: lambda: C.claim_observation1(cards),
            2: lambda: C.claim_purified_state(checks),
            3: lambda: C.claim_table2(runs["table2"]),
            4: lambda: C.claim_table3(runs["table2"], runs["ablation"]),
            5: lambda: C.claim_diffusion_steps(runs["diffusion_steps"], figs),
            6: lambda: C.claim_stability(runs["seeds"], runs["table2"], figs),
            7: lambda: C.claim_pareto(runs["pareto"], runs["table2"], figs),
            8: lambda: C.claim_dose_response(runs["dose_response"], figs),
            9: lambda: C.claim_protocol(runs["table2"])}
    claims = []
    for n in CLAIMS:
        if n in only:
            claims.append(made[n]())
    wall = time.perf_counter() - t_start
    unique = {r.run_id: r for p in runs for r in runs[p]}  # a run reused by two parts counts once
    cpu = sum((float((r.timing or {}).get("group_run_s", 0.0)) + float((r.timing or {}).get("group_compile_s", 0.0)))
              / max(1, int((r.timing or {}).get("group_runs", 1))) for r in unique.values())
    header = [f"Written by `{command}` on "
              f"{time.strftime('%Y-%m-%d')}, commit {_git_commit()}, {platform.machine()} with {os.cpu_count()} cores; "
              f"this invocation {wall / 60:.1f} min; the runs' own compute (compile + run of their groups, each run "
              f"once, records reused from earlier invocations included) {cpu / 60:.1f} min.",
              "",
              "Runs: " + "; ".join(f"{p}: {len(runs[p])} records ({part_dirs[p]})" for p in needed) + "."]
    if quick:
        header += ["", f"**Quick look** (budget {budget:g}): the plan is reduced to {', '.join(QUICK['envs'])}, Table 2's "
                   "native block and its grouped head with the learned tail (the denoisers under that head only), "
                   f"K in {', '.join(map(str, QUICK['K']))}, conformity "
                   f"{', '.join(format(x, 'g') for x in QUICK['conformity'])} without the noise grid."]
    if set(only) != set(CLAIMS):
        header += ["", f"Claims run: {', '.join(map(str, only))} (`--only`)."]
    if agents:
        header += ["", f"Agents kept: {', '.join(agents)} (`--agents`)."]
    return C.write(out_dir, claims, header, quick)
