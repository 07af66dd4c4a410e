"""The contract every registered agent keeps, parametrized over ``purerec.agents.REGISTRY``.

* A probe world with a known best slate (four items every user likes, two popular and two
  long-tail, among 40): each agent, trained briefly, finds it (greedy R_each near the optimum,
  far above random exposure).
* A run (``purerec.experiment.run``): no recompilation between chunks; the evaluation compiles
  once per run (nothing for a second seed); a run killed after its first chunk and resumed from
  the checkpoint gives the same numbers, curves and evaluation as the uninterrupted run (same
  seed, same config -> same numbers).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from purerec import evaluation
from purerec.agents import REGISTRY
from purerec.config import apply_overrides
from purerec.env import make_params
from purerec.experiment import run
from purerec.loop import make_train
from purerec.policies import REFERENCE_POLICIES
from purerec.world import World

KINDS = list(REGISTRY)
N_ITEMS, N_USERS, K = 40, 24, 4
BEST = np.array([0, 1, 20, 21])  # items 0-7 are popular; 0, 1 popular and 20, 21 long-tail


def probe_world() -> World:
    """Every user likes exactly the BEST items (true response sigmoid(3) vs sigmoid(-3)); the
    visible item embedding carries that in its first coordinate, with noise in the others."""
    rng = np.random.default_rng(0)
    good = np.isin(np.arange(N_ITEMS), BEST)
    true_item = np.stack([np.where(good, 1.0, -1.0), np.zeros(N_ITEMS)], 1)
    true_user = np.tile([3.0, 1.0], (N_USERS, 1))
    emb = np.concatenate([np.where(good, 1.0, -1.0)[:, None], 0.3 * rng.normal(size=(N_ITEMS, 3))], 1)
    pop = np.where(np.arange(N_ITEMS) < 8, 100.0, 10.0)
    r = 1 / (1 + np.exp(-(true_item @ true_user[0])))
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return World(true_user=f32(true_user), true_item=f32(true_item), item_emb=f32(emb),
                 item_tags=jnp.asarray(rng.random((N_ITEMS, 2)) < 0.5), item_pop=f32(pop),
                 popular=jnp.asarray(np.arange(N_ITEMS) < 8), item_log_reward=f32(r), item_log_true=f32(r),
                 user_ids=jnp.arange(N_USERS), item_ids=jnp.arange(N_ITEMS))


def probe_config(kind: str):
    cfg = small_config()
    return apply_overrides(cfg, {
        "agent.kind": kind, "env.slate_size": K, "env.obs_window": 5, "env.max_len": 10, "env.exit_rule": "none",
        "feedback.conformity": 0.0, "feedback.noise_std": 0.01, "train.num_envs": 32, "train.rollout_len": 10,
        "train.total_updates": 20, "train.chunk_updates": 10, "train.stage1_sessions": 64, "train.seeds": [0],
        "encoder.train_steps": 100, "dsrm.steps": 3, "dsrm.train_steps": 50, "dsrm.hidden": 32,
        "replay.capacity": 4096, "replay.batch_size": 64, "replay.min_size": 256, "replay.grad_steps": 32,
        "eval.n_sessions": N_USERS, "eval.repeats": 1,
        # BCQ keeps to the logging policy's support: items at least tau x as likely as its K-th most
        # likely item. The probe's long-tail best items are 11/101 as likely as a popular one, so
        # below the default tau = 0.6; at 0.05 they are in reach (the test is about finding them).
        "bcq.threshold": 0.05}).validate()


# A finding, not a pass: MOFIR (our reading) starts at the probe's best slate (warm-started query,
# grouped slate at share 0.5: greedy R_each 0.95 with its actor frozen) and DDPG's actor drifts away
# from it (0.73 after 20 updates; 0.75 with actor_lr 1e-5). strict: the day it passes, this fails.
PROBE_KINDS = [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason="MOFIR's actor drifts from the best slate"))
               if k == "mofir" else k for k in KINDS]


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_every_agent_finds_the_best_slate_of_a_probe_world(kind):
    cfg = probe_config(kind)
    params = make_params(probe_world(), cfg)
    fns = make_train(cfg, params)
    key = jax.random.PRNGKey(0)
    frozen, state, logs, _ = jax.jit(fns.train)(key)
    assert all(np.isfinite(np.asarray(v)).all() for v in logs.values())
    row = evaluation.test_protocol(fns.agent.act.greedy, params, cfg.eval, fns.agent.policy_params(frozen, state),
                                   fns.agent.init_carry(N_USERS))
    rand = evaluation.test_protocol(REFERENCE_POLICIES["random"], params, cfg.eval)
    best = 1 / (1 + np.exp(-3.0))  # every slot a liked item
    assert rand["R_each"] < 0.25 * best
    assert row["R_each"] > 0.8 * best, (kind, row["R_each"], best)


def contract_config(kind: str, seeds=(1,)):
    cfg = small_config()
    return apply_overrides(cfg, {
        "agent.kind": kind, "train.num_envs": 16, "train.rollout_len": 8, "train.total_updates": 2,
        "train.chunk_updates": 1, "train.stage1_sessions": 32, "train.seeds": list(seeds), "train.run_dir": "unused",
        "train.target_episodes": 0, "encoder.train_steps": 20, "dsrm.steps": 3, "dsrm.train_steps": 10,
        "dsrm.hidden": 32, "replay.capacity": 1024, "replay.batch_size": 32, "replay.min_size": 64,
        "replay.grad_steps": 4, "ppo.minibatches": 2, "a2c.minibatches": 2, "eval.n_sessions": 32,
        "eval.repeats": 1}).validate()


def _lines(path):
    with open(path) as fh:
        return [json.loads(ln) for ln in fh]


# The fast tier runs the whole-run contract for one agent of each kind of training program (on-policy
# hierarchical PPO, off-policy with replay, a learned model env); the slow tier for every agent.
FAST_RUN_KINDS = ("hrl", "td3", "dorl")
RUN_KINDS = [k if k in FAST_RUN_KINDS else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_run_contract_resume_recompiles_and_evaluation(kind, tmp_path, small_worlds):
    cfg = contract_config(kind, seeds=(1, 2))
    quiet = dict(progress=False, log=lambda *a: None)
    d = str(tmp_path / "run")
    res = run(cfg, run_dir=d, **quiet)
    assert res["recompiles_in_loop"] == 0  # the second chunk reused the first chunk's program
    assert res["eval_compiles_per_seed"][1] == 0 < res["eval_compiles_per_seed"][0]
    assert res["updates"] == 2 and res["method"] == REGISTRY[res["kind"]].row_label(res["purifier"])
    first = _lines(os.path.join(d, "metrics.jsonl"))
    # Kill after the first chunk: the last checkpoint and the results are lost.
    shutil.rmtree(os.path.join(d, "checkpoints", "2"))
    os.remove(os.path.join(d, "results.json"))
    res2 = run(cfg, run_dir=d, resume=True, **quiet)
    assert _lines(os.path.join(d, "metrics.jsonl")) == first
    assert res2["per_seed"] == res["per_seed"] and res2["test"] == res["test"]
